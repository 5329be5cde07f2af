//! Three controllers' [`Store`]s in one process, each with its own database and its own
//! loopback TLS listener serving [`serve_peer`], certificates from a temporary cluster
//! [`Authority`]: membership changes, forwarded writes, linearizable reads on followers,
//! a new leader after the leader stops, restarts, and catching up by snapshot after a purge.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use wharf_protocol::state::{ClusterState, Command, ImageRecord};
use wharf_protocol::{DiffId, Digest, ImageId};

use super::store::default_config;
use super::{serve_peer, OpenMode, OpenOptions, RaftError, Store, TlsNetwork, RAFT_ALPN};
use crate::certs::Authority;

/// Generous: two cores shared with other builds.
const WAIT: Duration = Duration::from_secs(30);

/// The cluster CA of a test: an [`Authority`] in a temporary directory, and the same CA
/// rebuilt from its key to sign peer certificates (certs.rs issues server-only and
/// client-only certificates; a controller's serves and dials with one).
struct TestCa {
    _dir: tempfile::TempDir,
    ca_pem: String,
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::open_or_create(dir.path()).unwrap();
        let ca_pem = authority.ca_pem().to_string();
        let key_pem = std::fs::read_to_string(dir.path().join("ca-key.pem")).unwrap();
        let key = KeyPair::from_pem(&key_pem).unwrap();
        // The parameters certs.rs gives the CA: same subject and key, so the same issuer.
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Wharf cluster CA");
        dn.push(DnType::OrganizationName, "Wharf");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = p.self_signed(&key).unwrap();
        TestCa {
            _dir: dir,
            ca_pem,
            key,
            cert,
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }

    /// A controller's certificate: IP SAN 127.0.0.1, serverAuth and clientAuth.
    fn issue_peer(&self, id: u64) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("wharf-controller-{id}"));
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    fn client_config(&self, id: u64) -> Arc<rustls::ClientConfig> {
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

    fn server_config(&self, id: u64) -> Arc<rustls::ServerConfig> {
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
struct Peer {
    id: u64,
    addr: String,
    dir: tempfile::TempDir,
    client: Arc<rustls::ClientConfig>,
    serving: Arc<Mutex<Option<Store>>>,
    listener: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Peer {
    async fn new(ca: &TestCa, id: u64) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serving: Arc<Mutex<Option<Store>>> = Arc::new(Mutex::new(None));
        let acceptor = TlsAcceptor::from(ca.server_config(id));
        let slot = Arc::clone(&serving);
        let listener = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let slot = Arc::clone(&slot);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() != Some(RAFT_ALPN) {
                        return;
                    }
                    let store = slot.lock().unwrap().clone();
                    if let Some(store) = store {
                        let _ = serve_peer(store, tls).await;
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
            listener,
        }
    }

    /// Open (or reopen) this peer's store and serve it.
    async fn open(&self, mode: OpenMode, config: Config) -> Store {
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

    fn store(&self) -> Store {
        self.serving
            .lock()
            .unwrap()
            .clone()
            .expect("peer is running")
    }

    /// Stop serving and shut the store down (its data stays).
    async fn stop(&self) {
        let store = self
            .serving
            .lock()
            .unwrap()
            .take()
            .expect("peer is running");
        store.shutdown().await.unwrap();
    }
}

fn image(n: u32) -> ImageRecord {
    let config = format!("{{\"n\":{n}}}").into_bytes();
    ImageRecord {
        id: ImageId(Digest::of(&config)),
        config,
        diff_ids: vec![DiffId(Digest::of(&n.to_le_bytes()))],
        size: 10,
        loaded_ns: 1,
    }
}

fn put(n: u32) -> Command {
    Command::PutImage { image: image(n) }
}

fn has(s: &ClusterState, n: u32) -> bool {
    s.images.contains_key(&image(n).id)
}

/// Wait until `store`'s applied state satisfies `cond`.
async fn wait_state(store: &Store, what: &str, cond: impl Fn(&ClusterState) -> bool) {
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
async fn wait_leader(stores: &[Store]) -> usize {
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
async fn three(ca: &TestCa, config: impl Fn() -> Config) -> Vec<Peer> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_replicate_forward_and_read_linearizably() {
    let ca = TestCa::new();
    let peers = three(&ca, default_config).await;
    let stores: Vec<Store> = peers.iter().map(Peer::store).collect();

    let members = stores[0].members();
    let seen: Vec<(u64, &str, bool, bool, bool)> = members
        .iter()
        .map(|m| (m.id, m.addr.as_str(), m.voter, m.leader, m.reachable))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, peers[0].addr.as_str(), true, true, true),
            (2, peers[1].addr.as_str(), true, false, true),
            (3, peers[2].addr.as_str(), true, false, true),
        ]
    );
    assert_eq!(stores[2].leader(), Some((1, peers[0].addr.clone())));
    let err = stores[1].add_controller(4, "127.0.0.1:1".into()).await;
    assert!(
        matches!(
            err,
            Err(RaftError::NotLeader {
                leader: Some(1),
                ..
            })
        ),
        "{err:?}"
    );

    // A write on a follower is forwarded to the leader and applied everywhere.
    assert_eq!(stores[1].propose(put(1)).await.unwrap(), Ok(()));
    for s in &stores {
        wait_state(s, "image 1", |st| has(st, 1)).await;
    }

    // Concurrent writes on a follower go to the leader as groups; each gets its answer.
    let writes: Vec<_> = (10..30)
        .map(|n| {
            let s = stores[2].clone();
            tokio::spawn(async move { s.propose(put(n)).await })
        })
        .collect();
    for w in writes {
        assert_eq!(w.await.unwrap().unwrap(), Ok(()));
    }

    // A write committed through one follower is seen by a linearizable read on the other.
    for n in 100..105 {
        stores[1].propose(put(n)).await.unwrap().unwrap();
        let seen = stores[2].read_linearizable(|s| has(s, n)).await.unwrap();
        assert!(seen, "read on node 3 after write {n} through node 2");
    }
    assert!(stores[0].read_linearizable(|s| has(s, 104)).await.unwrap());
    assert!(stores[2].read(|s| (10..30).all(|n| has(s, n))));

    // Removing a follower leaves two voters that still accept writes.
    stores[0].remove_member(3).await.unwrap();
    peers[2].stop().await;
    let ids: Vec<u64> = stores[0].members().iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(stores[1].propose(put(200)).await.unwrap(), Ok(()));
    wait_state(&stores[0], "image 200", |s| has(s, 200)).await;
    let err = stores[0].remove_member(3).await;
    assert!(
        matches!(err, Err(RaftError::UnknownMember { id: 3 })),
        "{err:?}"
    );

    for p in &peers[..2] {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_voter_cannot_be_removed() {
    let ca = TestCa::new();
    let peer = Peer::new(&ca, 1).await;
    let store = peer.open(OpenMode::Bootstrap, default_config()).await;
    let err = store.remove_member(1).await;
    assert!(
        matches!(err, Err(RaftError::LastVoter { id: 1 })),
        "{err:?}"
    );
    assert_eq!(store.propose(put(1)).await.unwrap(), Ok(()));
    assert!(store.read_linearizable(|s| has(s, 1)).await.unwrap());
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_a_restarted_member_catches_up() {
    let ca = TestCa::new();
    let peers = three(&ca, default_config).await;
    let stores: Vec<Store> = peers.iter().map(Peer::store).collect();
    stores[2].propose(put(1)).await.unwrap().unwrap();

    // The leader stops: one of the other two leads, and both accept writes.
    let old = wait_leader(&stores).await;
    peers[old].stop().await;
    let rest: Vec<Store> = (0..3)
        .filter(|&i| i != old)
        .map(|i| stores[i].clone())
        .collect();
    drop(stores);
    let new = wait_leader(&rest).await;
    assert_ne!(rest[new].node_id(), peers[old].id);
    for (i, s) in rest.iter().enumerate() {
        let n = 10 + i as u32;
        assert_eq!(
            s.propose(put(n)).await.unwrap(),
            Ok(()),
            "write on node {}",
            s.node_id()
        );
    }
    for s in &rest {
        assert!(s
            .read_linearizable(|st| has(st, 10) && has(st, 11))
            .await
            .unwrap());
    }

    // The old leader restarts with its data, follows, and catches up.
    let back = peers[old].open(OpenMode::Join, default_config()).await;
    wait_state(&back, "writes made while it was down", |s| {
        has(s, 1) && has(s, 10) && has(s, 11)
    })
    .await;
    assert!(!back.is_leader() || back.node_id() == rest[new].node_id());
    assert_eq!(back.propose(put(20)).await.unwrap(), Ok(()));
    for s in &rest {
        wait_state(s, "image 20", |st| has(st, 20)).await;
    }

    for p in &peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_a_purge_catches_up_by_snapshot() {
    let small = || Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..default_config()
    };
    let ca = TestCa::new();
    let peers = three(&ca, small).await;
    let stores: Vec<Store> = peers.iter().map(Peer::store).collect();
    let leader = wait_leader(&stores).await;
    let lagging = (leader + 1) % 3;
    stores[leader].propose(put(1)).await.unwrap().unwrap();
    wait_state(&stores[lagging], "image 1", |s| has(s, 1)).await;
    let behind = stores[lagging]
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    let others: Vec<Store> = (0..3)
        .filter(|&i| i != lagging)
        .map(|i| stores[i].clone())
        .collect();
    let leader = others
        .iter()
        .position(|s| s.node_id() == stores[leader].node_id())
        .unwrap();
    drop(stores);
    peers[lagging].stop().await;

    for n in 10..40 {
        others[leader].propose(put(n)).await.unwrap().unwrap();
    }
    // The leader has purged past everything the stopped member has: it can only catch up
    // from a snapshot.
    others[leader]
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > behind + 5),
            "leader purged past the stopped member",
        )
        .await
        .unwrap();

    let back = peers[lagging].open(OpenMode::Join, small()).await;
    wait_state(&back, "writes made while it was down", |s| {
        (10..40).all(|n| has(s, n))
    })
    .await;
    let snapshot = back.raft().metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|s| s.index > behind),
        "installed snapshot {snapshot:?}, was at {behind}"
    );

    for p in &peers {
        p.stop().await;
    }
}
