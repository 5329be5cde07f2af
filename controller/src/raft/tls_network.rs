//! The Raft network between controllers: [`PeerRequest`]s over mutual TLS to a peer's
//! cluster address.
//!
//! [`TlsNetwork`] dials `BasicNode::addr` (`IP:port`, the TLS server name is the IP) with
//! the controller's client certificate and ALPN [`RAFT_ALPN`], and keeps the connections it
//! opened in a small pool per peer; a connection counts as made once the peer's hello (its
//! node id) arrived, so a failure before it means the request was not sent. A call takes a connection out of the pool (or dials one)
//! and puts it back only after a complete answer, so a call that fails or is cancelled half
//! way never leaves a connection in an unknown state behind. It remembers when each peer last
//! answered ([`TlsNetwork::last_contacts`]), which is what [`Store::members`] reports as
//! reachable.
//!
//! ```text
//!   openraft replication ─┐                       ┌──> serve_peer (peer 2)
//!   Store::propose ───────┼─ TlsNetwork::call ──TLS──> serve_peer (peer 3)
//!   Store::read_linearizable ┘   (pool per peer)
//! ```
//!
//! [`Store::members`]: super::Store::members

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError as ApiError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use wharf_protocol::codec;

use super::rpc::{read_frame, write_frame, Call, Hello, PeerRequest, Reply, RAFT_ALPN};
use super::{RaftError, TypeConfig};

/// Idle connections kept per peer; more concurrent calls dial more, and close them after.
const IDLE_PER_PEER: usize = 16;

type Conn = TlsStream<TcpStream>;

/// Why a [`TlsNetwork::call`] got no answer.
#[derive(Debug)]
pub(super) enum CallError {
    /// No connection could be made: the request was not sent.
    Connect(RaftError),
    /// The connection broke or the peer sent junk after the request was (maybe) sent.
    Io(RaftError),
    /// No answer within the time allowed; the request may have been received.
    Timeout(Duration),
}

impl CallError {
    /// This failure as a [`RaftError`] about a call to `target`.
    pub(super) fn into_raft(self, target: u64) -> RaftError {
        match self {
            CallError::Connect(e) | CallError::Io(e) => RaftError::Peer {
                target,
                source: Box::new(e),
            },
            CallError::Timeout(t) => RaftError::PeerTimeout {
                target,
                millis: t.as_millis() as u64,
            },
        }
    }
}

/// The TLS Raft network of a controller; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct TlsNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    connector: TlsConnector,
    /// Idle connections by (peer id, address).
    idle: Mutex<HashMap<(u64, String), Vec<Conn>>>,
    /// When each peer last answered a call.
    contacts: Mutex<BTreeMap<u64, Instant>>,
}

impl std::fmt::Debug for TlsNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsNetwork").finish_non_exhaustive()
    }
}

impl TlsNetwork {
    /// A network that authenticates with `client` (the controller's certificate and the
    /// cluster CA as roots); [`RAFT_ALPN`] is set on a copy of it. Build once per controller
    /// and pass to [`Store::open_with`](super::Store::open_with).
    pub fn new(client: Arc<rustls::ClientConfig>) -> TlsNetwork {
        let mut config = (*client).clone();
        config.alpn_protocols = vec![RAFT_ALPN.to_vec()];
        TlsNetwork {
            inner: Arc::new(Inner {
                connector: TlsConnector::from(Arc::new(config)),
                idle: Mutex::new(HashMap::new()),
                contacts: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// When each peer last answered a call of this node.
    pub fn last_contacts(&self) -> BTreeMap<u64, Instant> {
        self.inner
            .contacts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A Raft client of peer `target` at `addr`.
    pub(super) fn client(&self, target: u64, addr: String) -> TlsClient {
        TlsClient {
            network: self.clone(),
            target,
            addr,
        }
    }

    /// Send `call` to peer `target` at `addr` and wait for its reply, all within `timeout`.
    ///
    /// `idempotent` calls that fail on a pooled connection before any answer are tried once
    /// more on a new connection (the pooled one may have been closed by the peer while idle);
    /// others are sent only on a new connection, so that a failure after sending is never a
    /// stale connection's.
    pub(super) async fn call(
        &self,
        target: u64,
        addr: &str,
        call: Call,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<Reply, CallError> {
        let request = PeerRequest { to: target, call };
        let bytes =
            codec::encode(&request).map_err(|e| CallError::Connect(RaftError::PeerEncode(e)))?;
        let attempt = async {
            if idempotent {
                if let Some(conn) = self.take_idle(target, addr) {
                    if let Ok(reply) = self.exchange(target, addr, conn, &bytes).await {
                        return Ok(reply);
                    }
                }
            }
            let conn = self.dial(target, addr).await.map_err(CallError::Connect)?;
            self.exchange(target, addr, conn, &bytes)
                .await
                .map_err(CallError::Io)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| CallError::Timeout(timeout))?
    }

    /// Write a request on `conn`, read its reply, and pool `conn` again.
    async fn exchange(
        &self,
        target: u64,
        addr: &str,
        mut conn: Conn,
        request: &[u8],
    ) -> Result<Reply, RaftError> {
        write_frame(&mut conn, request)
            .await
            .map_err(RaftError::PeerIo)?;
        let frame = read_frame(&mut conn).await?.ok_or(RaftError::PeerClosed)?;
        let reply: Reply = codec::decode(&frame).map_err(RaftError::PeerDecode)?;
        self.put_idle(target, addr, conn);
        self.inner
            .contacts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target, Instant::now());
        Ok(reply)
    }

    /// Connect to `target` at `addr` and read its [`Hello`]: a request sent on the
    /// connection reaches a running `target`.
    async fn dial(&self, target: u64, addr: &str) -> Result<Conn, RaftError> {
        let sock: SocketAddr = addr.parse().map_err(|_| RaftError::PeerAddr {
            addr: addr.to_string(),
        })?;
        let tcp = TcpStream::connect(sock)
            .await
            .map_err(|source| RaftError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        // Raft messages are small and latency bound.
        let _ = tcp.set_nodelay(true);
        let name = ServerName::IpAddress(sock.ip().into());
        let mut conn = self
            .inner
            .connector
            .connect(name, tcp)
            .await
            .map_err(|source| RaftError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let frame = read_frame(&mut conn).await?.ok_or(RaftError::PeerClosed)?;
        let hello: Hello = codec::decode(&frame).map_err(RaftError::PeerDecode)?;
        if hello.node != target {
            return Err(RaftError::WrongNode {
                addr: addr.to_string(),
                want: target,
                found: hello.node,
            });
        }
        Ok(conn)
    }

    fn take_idle(&self, target: u64, addr: &str) -> Option<Conn> {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        idle.get_mut(&(target, addr.to_string()))?.pop()
    }

    fn put_idle(&self, target: u64, addr: &str, conn: Conn) {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pool = idle.entry((target, addr.to_string())).or_default();
        if pool.len() < IDLE_PER_PEER {
            pool.push(conn);
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for TlsNetwork {
    type Network = TlsClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> TlsClient {
        self.client(target, node.addr.clone())
    }
}

/// openraft's client of one peer over a [`TlsNetwork`].
pub struct TlsClient {
    network: TlsNetwork,
    target: u64,
    addr: String,
}

impl TlsClient {
    /// Do a Raft RPC; `pick` takes the matching reply out of [`Reply`].
    async fn rpc<T, E: std::error::Error>(
        &self,
        call: Call,
        action: RPCTypes,
        option: &RPCOption,
        pick: impl FnOnce(Reply) -> Option<Result<T, E>>,
    ) -> Result<T, RPCError<u64, BasicNode, E>> {
        // openraft drops the call at the hard TTL anyway (for AppendEntries it is the
        // heartbeat interval); ending it ourselves earlier would only fail slow followers.
        let ttl = option.hard_ttl();
        let reply = self
            .network
            .call(self.target, &self.addr, call, ttl, true)
            .await
            .map_err(|e| match e {
                CallError::Connect(e) => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Io(e) => RPCError::Network(NetworkError::new(&e)),
                CallError::Timeout(timeout) => RPCError::Timeout(Timeout {
                    action,
                    // openraft does not read who timed out; the target is what matters.
                    id: self.target,
                    target: self.target,
                    timeout,
                }),
            })?;
        if let Reply::WrongNode { id } = reply {
            let e = RaftError::WrongNode {
                addr: self.addr.clone(),
                want: self.target,
                found: id,
            };
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        match pick(reply) {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(self.addr.clone()),
                remote,
            ))),
            None => {
                let e = RaftError::PeerReply {
                    target: self.target,
                };
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for TlsClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, ApiError<u64>>> {
        self.rpc(
            Call::AppendEntries(rpc),
            RPCTypes::AppendEntries,
            &option,
            |r| match r {
                Reply::AppendEntries(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, ApiError<u64, InstallSnapshotError>>,
    > {
        self.rpc(
            Call::InstallSnapshot(rpc),
            RPCTypes::InstallSnapshot,
            &option,
            |r| match r {
                Reply::InstallSnapshot(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, ApiError<u64>>> {
        self.rpc(Call::Vote(rpc), RPCTypes::Vote, &option, |r| match r {
            Reply::Vote(r) => Some(r),
            _ => None,
        })
        .await
    }
}
