//! The cluster port end to end over loopback TLS: joins (right token, wrong token,
//! another cluster's token), an agent's connection making its node Ready and then Down,
//! a client certificate refused as an agent, a removed node refused for good.

use super::dial::dial_controller;
use super::identity::{JoinTokens, Token};
use super::join::{ensure_own_node_cert, install, join, JoinService};
use super::listener::ClusterPort;
use super::registry::{Liveness, NodeHooks, Registry};
use crate::certs::Authority;
use crate::raft::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use wharf_protocol::agent::host::{HostInfo, HostRequest, HostResponse};
use wharf_protocol::agent::{AgentEvent, AgentRequest, AgentResponse};
use wharf_protocol::node_state::{NodeDescription, NodeRole, NodeState};
use wharf_protocol::state::Command;
use wharf_protocol::NodeId;

#[derive(Default)]
struct Hooks {
    seen: Mutex<Vec<(NodeId, bool)>>,
}

impl NodeHooks for Hooks {
    fn connected(
        &self,
        node: NodeId,
        _events: Option<mpsc::UnboundedReceiver<AgentEvent>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        self.seen.lock().unwrap().push((node, true));
        Box::pin(async { Ok(()) })
    }

    fn lost(&self, node: NodeId) {
        self.seen.lock().unwrap().push((node, false));
    }
}

struct Controller {
    addr: SocketAddr,
    store: Store,
    hooks: Arc<Hooks>,
    tokens: JoinTokens,
    dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn controller() -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let ca = Authority::open_or_create(&certs).unwrap();
    ensure_own_node_cert(
        &certs,
        &ca,
        NodeRole::Controller,
        NodeId(1),
        "127.0.0.1".parse().unwrap(),
    )
    .unwrap();
    let digest = ca.digest().unwrap();
    let tokens = JoinTokens {
        agent: Token::generate(digest).to_string(),
        controller: Token::generate(digest).to_string(),
    };
    let store = Store::open(&dir.path().join("raft"), 1, "127.0.0.1:0".into())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hooks = Arc::new(Hooks::default());
    let liveness = Liveness {
        period: Duration::from_millis(100),
        grace: Duration::from_millis(500),
        ..Liveness::default()
    };
    let port = Arc::new(ClusterPort {
        store: store.clone(),
        join: Arc::new(JoinService {
            authority: ca,
            tokens: tokens.clone(),
            store: store.clone(),
        }),
        registry: Registry::new(store.clone(), liveness),
        hooks: hooks.clone(),
        raft: None,
        engine: None,
    });
    let tls = super::tls::cluster_server_config(&certs).unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(port.serve(listener, tls, stop_rx));
    Controller {
        addr,
        store,
        hooks,
        tokens,
        dir,
        _stop: stop,
    }
}

fn description(name: &str) -> NodeDescription {
    NodeDescription {
        hostname: name.into(),
        addr: "127.0.0.1".into(),
        cpus: 2,
        memory: 1 << 30,
        engine_version: "test".into(),
        runs_containers: true,
        ..Default::default()
    }
}

/// Join as an agent; its certificates end up in `dir`.
async fn join_agent(c: &Controller, dir: &Path, name: &str) -> NodeId {
    let key = rcgen::KeyPair::generate().unwrap();
    let token = Token::parse(&c.tokens.agent).unwrap();
    let admission = join(c.addr, &token, NodeRole::Agent, description(name), &key)
        .await
        .unwrap();
    install(dir, &admission, &key).unwrap();
    admission.node
}

/// Serve a minimal agent (it answers heartbeats) over a dialed connection; the task
/// ends when the connection does.
fn serve_agent(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> tokio::task::JoinHandle<()> {
    let (r, w) = tokio::io::split(tls);
    tokio::spawn(async move {
        let _ = wharf_link::serve(
            r,
            w,
            |_| {},
            |request, mut call| async move {
                match request {
                    AgentRequest::Host(HostRequest::Info) => {
                        call.respond(AgentResponse::Host(HostResponse::Info(HostInfo {
                            root_dir: "/x".into(),
                        })))
                    }
                    _ => call.respond(AgentResponse::Done),
                }
            },
        )
        .await;
    })
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn state_of(store: &Store, id: NodeId) -> Option<NodeState> {
    store.read(|s| s.nodes.get(&id).map(|n| n.state))
}

#[tokio::test]
async fn an_agent_joins_is_ready_while_connected_and_down_after() {
    let c = controller().await;
    let agent_dir = tempfile::tempdir().unwrap();
    let id = join_agent(&c, agent_dir.path(), "node-1").await;
    assert_eq!(
        state_of(&c.store, id),
        Some(NodeState::Down),
        "recorded at join"
    );
    let (tls, controllers) = dial_controller(c.addr, agent_dir.path(), description("node-1"))
        .await
        .unwrap();
    assert!(
        controllers.is_empty(),
        "no controller registered in this test"
    );
    let task = serve_agent(tls);
    until("Ready", || state_of(&c.store, id) == Some(NodeState::Ready)).await;
    until("connected hook", || {
        c.hooks.seen.lock().unwrap().contains(&(id, true))
    })
    .await;
    let n = c.store.read(|s| s.nodes[&id].clone());
    assert_eq!(n.role, NodeRole::Agent);
    assert_eq!(n.description.hostname, "node-1");
    task.abort();
    until("Down", || state_of(&c.store, id) == Some(NodeState::Down)).await;
    assert!(c.hooks.seen.lock().unwrap().contains(&(id, false)));

    // Removed: its certificate no longer admits it.
    c.store
        .propose(Command::RemoveNode { id })
        .await
        .unwrap()
        .unwrap();
    let e = dial_controller(c.addr, agent_dir.path(), description("node-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            super::ClusterError::Io { .. } | super::ClusterError::Tls(_)
        ),
        "the controller closes the connection: {e}"
    );
}

#[tokio::test]
async fn wrong_tokens_are_refused_with_the_reason() {
    let c = controller().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let controller_token = Token::parse(&c.tokens.controller).unwrap();
    let mut wrong = Token::parse(&c.tokens.agent).unwrap();
    wrong.secret = "0123456789abcdef0123".into();
    let e = join(c.addr, &wrong, NodeRole::Agent, description("x1"), &key)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not this cluster's agent token"), "{e}");
    // A controller token used for an agent.
    let e = join(
        c.addr,
        &controller_token,
        NodeRole::Agent,
        description("x2"),
        &key,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("agent token"), "{e}");
    // Another cluster's token: the joining host refuses the controller.
    let mut other = Token::parse(&c.tokens.agent).unwrap();
    other.ca_digest = [9; 32];
    let e = join(c.addr, &other, NodeRole::Agent, description("x3"), &key)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not the one the join token names"), "{e}");
    assert!(c.store.read(|s| s.nodes.is_empty()), "nothing recorded");
}

#[tokio::test]
async fn a_client_certificate_cannot_act_as_an_agent() {
    let c = controller().await;
    let ca = Authority::open_or_create(&c.dir.path().join("certs")).unwrap();
    let client = tempfile::tempdir().unwrap();
    ca.issue_client("someone", client.path()).unwrap();
    // Lay the client certificate out as a node's.
    std::fs::copy(
        client.path().join("cert.pem"),
        client.path().join("node.pem"),
    )
    .unwrap();
    std::fs::copy(
        client.path().join("key.pem"),
        client.path().join("node-key.pem"),
    )
    .unwrap();
    let e = dial_controller(c.addr, client.path(), description("fake"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            super::ClusterError::Io { .. } | super::ClusterError::Tls(_)
        ),
        "{e}"
    );
    assert!(c.store.read(|s| s.nodes.is_empty()));
}
