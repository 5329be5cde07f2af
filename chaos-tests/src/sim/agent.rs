//! One simulated agent on the wire: it joins with the token as `wharf node` does (its own
//! key, its own node certificate), then keeps one connection to every controller, each
//! speaking the real agent protocol (`wharf_link` over TLS with its node certificate),
//! and answers from its [`SimHost`].
//!
//! ```text
//!  SimAgent::join ─► cluster::join::join (token, wharf-join/1) ─► node cert in DIR/certs
//!       └─ per controller: cluster::dial::dial_controller (wharf-agent/2, AgentHello)
//!              └─ wharf_link::serve ─► SimHost::answer ─► the reply, a held Wait, ...
//! ```
//!
//! For benchmarks and scale tests only: nothing of the product starts one.

use super::host::{Answer, SimHost};
use anyhow::{Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wharf_controller::cluster::dial::dial_controller;
use wharf_controller::cluster::identity::Token;
use wharf_controller::cluster::join;
use wharf_link::{EventSender, ServerCall};
use wharf_protocol::agent::host::LayerInventory;
use wharf_protocol::agent::{AgentEvent, AgentRequest, AgentResponse};
use wharf_protocol::image::LoadedImage;
use wharf_protocol::node_state::{NodeDescription, NodeRole};
use wharf_protocol::wire::StreamItem;
use wharf_protocol::NodeId;

/// What every agent of a simulated fleet shares.
#[derive(Clone)]
pub struct FleetConfig {
    /// A controller to join through.
    pub join: SocketAddr,
    /// The agent join token.
    pub token: Token,
    /// The address the agents say they have (the one the controllers see them from).
    pub addr: IpAddr,
    /// Where each agent's certificates go (`DIR/<hostname>/certs`).
    pub dir: PathBuf,
    /// The `docker save` archive of the images every agent holds from the start (empty:
    /// none), and those images.
    pub preload: Arc<(Vec<u8>, Vec<LoadedImage>)>,
}

/// One agent's size and labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shape {
    /// Its host name (unique in the fleet).
    pub hostname: String,
    /// CPUs it says it has.
    pub cpus: u32,
    /// Memory it says it has, bytes.
    pub memory: u64,
    /// Its engine labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

struct Shared {
    host: Mutex<SimHost>,
    /// Bumped whenever a run may have ended.
    changed: watch::Sender<u64>,
    /// The event senders of its live connections, by connection number.
    events: Mutex<Vec<(u64, EventSender)>>,
    next_conn: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn host(&self) -> std::sync::MutexGuard<'_, SimHost> {
        self.host.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn senders(&self) -> std::sync::MutexGuard<'_, Vec<(u64, EventSender)>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A simulated agent that has joined; its connections run until it is dropped or killed.
pub struct SimAgent {
    /// Its node ID.
    pub node: NodeId,
    /// Its host name.
    pub hostname: String,
    shared: Arc<Shared>,
    conns: Vec<JoinHandle<()>>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl SimAgent {
    /// Join the cluster as a new agent of `shape`, then connect to every controller the
    /// admission names.
    pub async fn join(cfg: &FleetConfig, shape: Shape) -> Result<SimAgent> {
        let description = NodeDescription {
            hostname: shape.hostname.clone(),
            addr: cfg.addr.to_string(),
            api_addr: String::new(),
            cluster_addr: String::new(),
            cpus: shape.cpus,
            memory: shape.memory,
            engine_version: format!("{}-sim", env!("CARGO_PKG_VERSION")),
            engine_labels: shape.labels.clone(),
            runs_containers: true,
        };
        let key = rcgen::KeyPair::generate().context("make the node key")?;
        let admission = join::join(
            cfg.join,
            &cfg.token,
            NodeRole::Agent,
            description.clone(),
            &key,
        )
        .await
        .with_context(|| format!("{} joins through {}", shape.hostname, cfg.join))?;
        let certs = cfg.dir.join(&shape.hostname).join("certs");
        std::fs::create_dir_all(&certs).with_context(|| format!("create {}", certs.display()))?;
        join::install(&certs, &admission, &key)?;
        let (archive, images) = &*cfg.preload;
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            host: Mutex::new(SimHost::new(archive.clone(), images)),
            changed,
            events: Mutex::default(),
            next_conn: Default::default(),
        });
        let mut controllers: Vec<SocketAddr> = admission
            .controllers
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        if !controllers.contains(&cfg.join) {
            controllers.push(cfg.join);
        }
        let conns = controllers
            .into_iter()
            .map(|addr| {
                tokio::spawn(keep_connected(
                    shared.clone(),
                    addr,
                    certs.clone(),
                    description.clone(),
                ))
            })
            .collect();
        Ok(SimAgent {
            node: admission.node,
            hostname: shape.hostname,
            shared,
            conns,
        })
    }

    /// What its host has been asked so far.
    pub fn counters(&self) -> super::host::Counters {
        self.shared.host().counters
    }

    /// Look at its host.
    pub fn with_host<T>(&self, f: impl FnOnce(&mut SimHost) -> T) -> T {
        f(&mut self.shared.host())
    }

    /// How many of its connections (one per controller) are up.
    pub fn connections(&self) -> usize {
        self.shared.senders().len()
    }

    /// Die as a host that loses power: every connection drops at once, nothing is said.
    pub fn kill(&mut self) {
        for c in self.conns.drain(..) {
            c.abort();
        }
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keep a connection to the controller at `addr`, dialing again with back-off.
async fn keep_connected(
    shared: Arc<Shared>,
    addr: SocketAddr,
    certs: PathBuf,
    description: NodeDescription,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if let Ok((tls, _controllers)) = dial_controller(addr, &certs, description.clone()).await {
            backoff = Duration::from_millis(200);
            let (r, w) = tokio::io::split(tls);
            let conn = shared
                .next_conn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let s = shared.clone();
            let _ = wharf_link::serve(
                r,
                w,
                move |events: EventSender| s.senders().push((conn, events)),
                {
                    let shared = shared.clone();
                    move |request, call| serve_call(shared.clone(), request, call)
                },
            )
            .await;
            shared.senders().retain(|(c, _)| *c != conn);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn serve_call(shared: Arc<Shared>, request: AgentRequest, mut call: ServerCall) {
    let is_container = matches!(request, AgentRequest::Container(_));
    let answer = shared.host().answer(request, now_ns());
    if is_container {
        shared.changed.send_modify(|n| *n += 1);
    }
    match answer {
        Answer::Reply(r) => call.respond(r),
        Answer::Wait(id) => {
            let mut rx = shared.changed.subscribe();
            loop {
                if let Some(r) = shared.host().wait_answer(&id) {
                    return call.respond(r);
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
        Answer::Load => {
            let mut archive = Vec::new();
            loop {
                match call.input.recv().await {
                    Ok(Some(StreamItem::Bytes(b))) => archive.extend_from_slice(&b),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => return call.respond(AgentResponse::Failed(e)),
                }
            }
            let images = super::archive::images_of(&archive).map_err(|e| format!("{e:#}"));
            let (response, inventory) = {
                let mut host = shared.host();
                let r = host.loaded(archive, images);
                (r, host.inventory.clone())
            };
            call.respond(response);
            report(&shared, inventory);
        }
        Answer::Stream(bytes) => {
            call.respond(AgentResponse::Done);
            let (_responder, _input, mut out) = call.into_parts();
            if out.send_bytes(&bytes).await.is_ok() {
                out.end();
            }
        }
    }
}

/// Tell every controller the host's layers changed.
fn report(shared: &Shared, inventory: LayerInventory) {
    shared
        .senders()
        .retain(|(_, e)| e.send(AgentEvent::Inventory(inventory.clone())));
}
