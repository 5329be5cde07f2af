//! A test harness of controllers in one process: certificates from a temporary cluster
//! [`Authority`], and per controller ([`Peer`]) its own database and a loopback TLS listener
//! that checks ALPN and serves [`serve_peer`], as the controller's cluster port does. A peer
//! can be told to lose its next answers to forwarded writes ([`Peer::drop_forward_replies`]):
//! the write is done, then the connection breaks instead of carrying the answer.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::Config;
use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use wharf_protocol::state::{ClusterState, Command, ImageRecord};
use wharf_protocol::{DiffId, Digest, ImageId};

use super::rpc::Reply;
use super::{serve_peer, OpenMode, OpenOptions, RaftError, Store, TlsNetwork, RAFT_ALPN};
use crate::certs::Authority;

/// Generous: two cores shared with other builds.
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// The cluster CA of a test: an [`Authority`] in a temporary directory, which signs each
/// controller's node certificate as a join does.
pub(super) struct TestCa {
    _dir: tempfile::TempDir,
    authority: Authority,
}

impl TestCa {
    pub(super) fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::open_or_create(dir.path()).unwrap();
        TestCa {
            _dir: dir,
            authority,
        }
    }

    pub(super) fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.authority.ca_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }

    /// A controller's node certificate: IP SAN 127.0.0.1, serverAuth and clientAuth.
    pub(super) fn issue_peer(
        &self,
        id: u64,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let uri = crate::cluster::identity::node_uri(
            wharf_protocol::node_state::NodeRole::Controller,
            wharf_protocol::NodeId(id),
        );
        let pem = self
            .authority
            .issue_node(
                &uri,
                Some("127.0.0.1".parse().unwrap()),
                key.public_key_raw(),
            )
            .unwrap();
        let chain = rustls_pemfile::certs(&mut pem.as_bytes())
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (chain, key)
    }

    pub(super) fn client_config(&self, id: u64) -> Arc<rustls::ClientConfig> {
        let (chain, key) = self.issue_peer(id);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_client_auth_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    pub(super) fn server_config(&self, id: u64) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.issue_peer(id);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()),
            provider.clone(),
        )
        .build()
        .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![RAFT_ALPN.to_vec()];
        Arc::new(config)
    }
}

/// One controller: its data directory, its listener and the store it serves (none while
/// stopped).
pub(super) struct Peer {
    pub(super) id: u64,
    pub(super) addr: String,
    dir: tempfile::TempDir,
    client: Arc<rustls::ClientConfig>,
    serving: Arc<Mutex<Option<Store>>>,
    faults: Arc<ReplyFaults>,
    listener: JoinHandle<()>,
}

/// Answers to forwarded writes a peer is to lose, and those it lost.
#[derive(Debug, Default)]
struct ReplyFaults {
    to_drop: AtomicU32,
    dropped: AtomicU32,
}

/// A peer connection that fails the write of a successful [`Reply::Forward`] while
/// `faults` asks for it: the leader did the write, the follower never hears of it.
struct LoseReplies<S> {
    inner: S,
    faults: Arc<ReplyFaults>,
}

impl<S> LoseReplies<S> {
    /// Whether `buf` is one frame holding a successful forward answer to be lost now.
    fn loses(&self, buf: &[u8]) -> bool {
        let is_answer = buf.len() > 4
            && matches!(
                wharf_protocol::codec::decode::<Reply>(&buf[4..]),
                Ok(Reply::Forward(Ok(_)))
            );
        is_answer
            && self
                .faults
                .to_drop
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LoseReplies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LoseReplies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.loses(buf) {
            self.faults.dropped.fetch_add(1, Ordering::SeqCst);
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "test: the answer to a forwarded write is lost",
            )));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Peer {
    pub(super) async fn new(ca: &TestCa, id: u64) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serving: Arc<Mutex<Option<Store>>> = Arc::new(Mutex::new(None));
        let faults = Arc::new(ReplyFaults::default());
        let acceptor = TlsAcceptor::from(ca.server_config(id));
        let slot = Arc::clone(&serving);
        let lose = Arc::clone(&faults);
        let listener = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                // As the controller's cluster listener must: small frames, sent at once.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let slot = Arc::clone(&slot);
                let faults = Arc::clone(&lose);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() != Some(RAFT_ALPN) {
                        return;
                    }
                    let store = slot.lock().unwrap().clone();
                    if let Some(store) = store {
                        let _ = serve_peer(store, LoseReplies { inner: tls, faults }).await;
                    }
                });
            }
        });
        Peer {
            id,
            addr,
            dir: tempfile::tempdir().unwrap(),
            client: ca.client_config(id),
            serving,
            faults,
            listener,
        }
    }

    /// Lose the next `n` answers this peer gives to forwarded writes it did.
    pub(super) fn drop_forward_replies(&self, n: u32) {
        self.faults.to_drop.store(n, Ordering::SeqCst);
    }

    /// Answers to forwarded writes this peer lost.
    pub(super) fn dropped_forward_replies(&self) -> u32 {
        self.faults.dropped.load(Ordering::SeqCst)
    }

    /// Open (or reopen) this peer's store and serve it.
    pub(super) async fn open(&self, mode: OpenMode, config: Config) -> Store {
        let options = OpenOptions {
            node_id: self.id,
            addr: self.addr.clone(),
            mode,
            network: TlsNetwork::new(Arc::clone(&self.client)).into(),
        };
        // After a stop, peer connections still being served let go of their clones of the
        // old store (and its database lock) a moment later.
        let deadline = tokio::time::Instant::now() + WAIT;
        let dir = self.dir.path().join("raft");
        let store = loop {
            match Store::open_with_config(&dir, options.clone(), config.clone()).await {
                Ok(store) => break store,
                Err(RaftError::Open { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open node {}: {e}", self.id),
            }
        };
        *self.serving.lock().unwrap() = Some(store.clone());
        store
    }

    pub(super) fn store(&self) -> Store {
        self.serving
            .lock()
            .unwrap()
            .clone()
            .expect("peer is running")
    }

    /// Stop serving and shut the store down (its data stays).
    pub(super) async fn stop(&self) {
        let store = self
            .serving
            .lock()
            .unwrap()
            .take()
            .expect("peer is running");
        store.shutdown().await.unwrap();
    }
}

pub(super) fn image(n: u32) -> ImageRecord {
    let config = format!("{{\"n\":{n}}}").into_bytes();
    ImageRecord {
        id: ImageId(Digest::of(&config)),
        config,
        diff_ids: vec![DiffId(Digest::of(&n.to_le_bytes()))],
        size: 10,
        loaded_ns: 1,
    }
}

pub(super) fn put(n: u32) -> Command {
    Command::PutImage { image: image(n) }
}

pub(super) fn has(s: &ClusterState, n: u32) -> bool {
    s.images.contains_key(&image(n).id)
}

/// Wait until `store`'s applied state satisfies `cond`.
pub(super) async fn wait_state(store: &Store, what: &str, cond: impl Fn(&ClusterState) -> bool) {
    let mut applied = store.watch();
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            if store.read(&cond) {
                return;
            }
            applied.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "node {}: {what} not applied within {WAIT:?}",
        store.node_id()
    );
}

/// Wait until some store of `stores` leads and the others know it; returns its index.
pub(super) async fn wait_leader(stores: &[Store]) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let leaders: Vec<usize> = (0..stores.len())
            .filter(|&i| stores[i].is_leader())
            .collect();
        if let [l] = leaders[..] {
            let id = stores[l].node_id();
            if stores
                .iter()
                .all(|s| s.leader().map(|(i, _)| i) == Some(id))
            {
                return l;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single leader within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three peers: node 1 bootstrapped, 2 and 3 joined and added as voters.
pub(super) async fn three(ca: &TestCa, config: impl Fn() -> Config) -> Vec<Peer> {
    let peers = vec![
        Peer::new(ca, 1).await,
        Peer::new(ca, 2).await,
        Peer::new(ca, 3).await,
    ];
    let first = peers[0].open(OpenMode::Bootstrap, config()).await;
    assert!(first.is_leader());
    for p in &peers[1..] {
        let joined = p.open(OpenMode::Join, config()).await;
        assert!(!joined.is_leader());
        first.add_controller(p.id, p.addr.clone()).await.unwrap();
    }
    peers
}
