//! A fake agent for tests without root: it answers the agent protocol from memory (over
//! the real frames, as youki's tests fake the kernel behind its `Syscall` trait), records
//! what it was asked, and fails when told to.

use super::{AgentClient, NodeConnection};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use wharf_link::{ClientCall, ServerCall};
use wharf_protocol::agent::container::{ContainerLocal, ContainerRequest, ContainerResponse};
use wharf_protocol::agent::host::{
    HostContainer, HostInfo, HostRequest, HostResponse, LayerInventory,
};
use wharf_protocol::agent::image::{CollectTicket, ImageRequest, ImageResponse};
use wharf_protocol::agent::network::{NetworkHost, NetworkRequest, NetworkResponse};
use wharf_protocol::agent::volume::{VolumeRequest, VolumeResponse};
use wharf_protocol::agent::{AgentEvent, AgentFailure, AgentRequest, AgentResponse, FailureKind};
use wharf_protocol::dns::DnsTable;
use wharf_protocol::network::{PortMapping, Subnet};
use wharf_protocol::runtime::{CgroupSample, NetnsMode};
use wharf_protocol::shim::{ErrorKind, Exit};
use wharf_protocol::wire::StreamItem;
use wharf_protocol::{ContainerId, NodeId};

/// A container as the fake holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeContainer {
    /// Host PID while it runs.
    pub pid: Option<u32>,
    /// Its last exit.
    pub exit: Option<Exit>,
}

/// What the fake holds and what it was asked.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Containers created and not removed.
    pub containers: BTreeMap<ContainerId, FakeContainer>,
    /// Every request, in order.
    pub requests: Vec<AgentRequest>,
    /// Containers whose start fails as a command that is not found.
    pub fail_start: HashSet<ContainerId>,
    /// Answer every call as a lost agent.
    pub lost: bool,
    /// Refuse the requests this picks, as an agent that failed at them (`Internal`).
    pub fail: Option<fn(&AgentRequest) -> bool>,
    /// The layers the host holds.
    pub inventory: LayerInventory,
    /// Host ports held, with their owner.
    pub ports: BTreeMap<PortMapping, ContainerId>,
    /// Volumes whose directory exists.
    pub volumes: BTreeSet<String>,
    /// The health status each container's checks found, as its shim would record it.
    pub health: BTreeMap<ContainerId, String>,
    /// How long ago every container's folder changed, as the host lists them.
    pub age_secs: u64,
    /// The fence last set: lease in ms and the movable containers.
    pub fence: Option<(u64, Vec<ContainerId>)>,
    /// The resolvers running, by network ID, with the newest table each got.
    pub dns: BTreeMap<String, DnsTable>,
    /// How long each `Create` takes (none by default), to see calls overlap.
    pub create_delay: Option<std::time::Duration>,
    /// `Create` calls in progress now, and the most there ever were at once.
    pub creating: (usize, usize),
    next_pid: u32,
}

/// The fake agent of one node.
pub struct FakeAgent {
    conn: NodeConnection,
    state: Arc<Mutex<FakeState>>,
    exits: watch::Sender<u64>,
    events: Arc<Mutex<Option<wharf_link::EventSender>>>,
}

impl FakeAgent {
    /// A fake agent for `node`, with nothing on it.
    pub fn new(node: NodeId) -> FakeAgent {
        let state = Arc::new(Mutex::new(FakeState {
            next_pid: 1000,
            ..FakeState::default()
        }));
        let (exits, _) = watch::channel(0u64);
        let (ours, theirs) = tokio::io::duplex(1024 * 1024);
        let (r, w) = tokio::io::split(theirs);
        let (s, x) = (state.clone(), exits.clone());
        let events: Arc<Mutex<Option<wharf_link::EventSender>>> = Arc::default();
        let e = events.clone();
        tokio::spawn(wharf_link::serve(
            r,
            w,
            move |sender| *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender),
            move |request, call| handle(s.clone(), x.clone(), request, call),
        ));
        let (r, w) = tokio::io::split(ours);
        FakeAgent {
            conn: NodeConnection::new(node, wharf_link::connect(r, w)),
            state,
            exits,
            events,
        }
    }

    /// Report `event` as the agent does unasked; false before the connection is up.
    pub fn report(&self, event: AgentEvent) -> bool {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|e| e.send(event))
    }

    /// Look at or change what the fake holds.
    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// End a running container's process with `code`, as if it exited by itself.
    pub fn exit(&self, id: &ContainerId, code: i32) {
        exit(&self.state, &self.exits, id, code);
    }

    /// Lose the connection (`true`) or have it back (`false`): while lost, every call,
    /// and every `Wait` in flight, fails as a closed connection does (`Unavailable`); the
    /// containers keep running (live-restore).
    pub fn set_lost(&self, lost: bool) {
        self.with(|s| s.lost = lost);
        self.exits.send_modify(|n| *n += 1);
    }
}

/// Several fake agents, one per node: the [`AgentClient`] of a cluster of many hosts in
/// tests, routing each call to the fake of its node.
pub struct FakeCluster {
    agents: BTreeMap<NodeId, Arc<FakeAgent>>,
    /// Nodes whose agent this controller has no connection to now ([`AgentClient::reaches`]).
    unreached: std::sync::Mutex<std::collections::BTreeSet<NodeId>>,
}

impl FakeCluster {
    /// A fake agent for each of `nodes`.
    pub fn new(nodes: &[NodeId]) -> FakeCluster {
        FakeCluster {
            agents: nodes
                .iter()
                .map(|n| (*n, Arc::new(FakeAgent::new(*n))))
                .collect(),
            unreached: Default::default(),
        }
    }

    /// Whether this controller reaches the agent of `node` (all do at first).
    pub fn set_reached(&self, node: NodeId, reached: bool) {
        let mut u = self.unreached.lock().unwrap_or_else(|p| p.into_inner());
        if reached {
            u.remove(&node);
        } else {
            u.insert(node);
        }
    }

    /// The fake agent of `node`.
    ///
    /// # Panics
    /// When `node` is not one of the cluster's (a test's mistake).
    pub fn agent(&self, node: NodeId) -> &Arc<FakeAgent> {
        &self.agents[&node]
    }
}

impl AgentClient for FakeCluster {
    fn open(&self, node: &NodeId, request: AgentRequest) -> Result<ClientCall, AgentFailure> {
        match self.agents.get(node) {
            Some(a) => a.open(node, request),
            None => Err(super::no_agent(node)),
        }
    }

    fn events(&self, node: &NodeId) -> Option<tokio::sync::mpsc::UnboundedReceiver<AgentEvent>> {
        self.agents.get(node).and_then(|a| a.events(node))
    }

    fn reaches(&self, node: &NodeId) -> bool {
        self.agents.contains_key(node)
            && !self
                .unreached
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(node)
    }
}

impl AgentClient for FakeAgent {
    fn open(&self, node: &NodeId, request: AgentRequest) -> Result<ClientCall, AgentFailure> {
        self.conn.open(node, request)
    }

    fn events(&self, node: &NodeId) -> Option<tokio::sync::mpsc::UnboundedReceiver<AgentEvent>> {
        self.conn.events(node)
    }
}

fn lock_state(state: &Mutex<FakeState>) -> std::sync::MutexGuard<'_, FakeState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn exit(state: &Mutex<FakeState>, exits: &watch::Sender<u64>, id: &ContainerId, code: i32) {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = s.containers.get_mut(id) {
        if c.pid.take().is_some() {
            c.exit = Some(Exit {
                code,
                oom_killed: false,
                started_at_ns: 1,
                finished_at_ns: 2,
            });
        }
    }
    drop(s);
    exits.send_modify(|n| *n += 1);
}

fn not_found(id: &ContainerId) -> AgentFailure {
    AgentFailure::new(
        FailureKind::NotFound,
        format!("no container {id} on this host"),
    )
}

/// The fake's network side: fixed host facts, port reservations and resolver tables from
/// memory, the kernel calls accepted and forgotten.
fn network(
    state: &Mutex<FakeState>,
    request: NetworkRequest,
) -> Result<AgentResponse, AgentFailure> {
    use NetworkRequest as R;
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    match request {
        R::Host => Ok(AgentResponse::Network(NetworkResponse::Host(NetworkHost {
            default_bridge: "wharf0".into(),
            default_subnet: Subnet {
                addr: std::net::Ipv4Addr::new(10, 128, 0, 0),
                prefix: 24,
            },
            routes: vec![],
        }))),
        R::Attach { id, .. } => match s.containers.get(&id) {
            Some(c) if c.pid.is_some() => Ok(AgentResponse::Done),
            _ => Err(AgentFailure::new(
                FailureKind::NotRunning,
                format!("container {id} is not running"),
            )),
        },
        R::Reserve { id, ports } => {
            for p in ports {
                match s.ports.get(&p) {
                    Some(owner) if *owner != id => {
                        return Err(AgentFailure::new(
                            FailureKind::Conflict,
                            format!(
                                "Bind for {}:{} failed: port is already allocated",
                                p.host_ip, p.host_port
                            ),
                        ))
                    }
                    _ => {
                        s.ports.insert(p, id.clone());
                    }
                }
            }
            Ok(AgentResponse::Done)
        }
        R::Release { id } => {
            s.ports.retain(|_, owner| *owner != id);
            Ok(AgentResponse::Done)
        }
        R::SetDnsTable { table } => {
            match s.dns.get(&table.network) {
                Some(served) if served.revision > table.revision => {}
                _ => {
                    s.dns.insert(table.network.clone(), table);
                }
            }
            Ok(AgentResponse::Done)
        }
        R::StopDns { network } => {
            s.dns.remove(&network);
            Ok(AgentResponse::Done)
        }
        R::EnsureBridge { .. }
        | R::RemoveBridge { .. }
        | R::Detach { .. }
        | R::SyncRules { .. }
        | R::EnsureJumps
        | R::RemoveRules => Ok(AgentResponse::Done),
    }
}

/// The fake's volumes: names in memory, every one empty.
fn volume(state: &Mutex<FakeState>, request: VolumeRequest) -> Result<AgentResponse, AgentFailure> {
    use VolumeRequest as R;
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    match request {
        R::Root => Ok(AgentResponse::Volume(VolumeResponse::Root(
            "/fake/volumes".into(),
        ))),
        R::Create { name } => {
            s.volumes.insert(name);
            Ok(AgentResponse::Done)
        }
        R::Remove { name } => {
            s.volumes.remove(&name);
            Ok(AgentResponse::Done)
        }
        R::Sizes { names } => Ok(AgentResponse::Volume(VolumeResponse::Sizes(vec![
            0;
            names
                .len()
        ]))),
    }
}

async fn handle(
    state: Arc<Mutex<FakeState>>,
    exits: watch::Sender<u64>,
    request: AgentRequest,
    mut call: ServerCall,
) {
    let (lost, fail) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(request.clone());
        (s.lost, s.fail.is_some_and(|f| f(&request)))
    };
    if lost {
        return call.respond(AgentResponse::Failed(wharf_link::connection_lost()));
    }
    if fail {
        return call.respond(AgentResponse::Failed(AgentFailure::new(
            FailureKind::Internal,
            "the fake agent was told to fail this",
        )));
    }
    let request = match request {
        AgentRequest::Container(r) => r,
        AgentRequest::Host(HostRequest::Inventory) => {
            let inv = lock_state(&state).inventory.clone();
            return call.respond(AgentResponse::Host(HostResponse::Inventory(inv)));
        }
        AgentRequest::Host(HostRequest::Containers) => {
            let st = lock_state(&state);
            let list = st
                .containers
                .iter()
                .map(|(id, c)| HostContainer {
                    id: id.clone(),
                    running: c.pid.is_some(),
                    age_secs: st.age_secs,
                })
                .collect();
            return call.respond(AgentResponse::Host(HostResponse::Containers(list)));
        }
        AgentRequest::Host(HostRequest::Fence { lease_ms, movable }) => {
            lock_state(&state).fence = Some((lease_ms, movable));
            return call.respond(AgentResponse::Done);
        }
        AgentRequest::Host(HostRequest::Beat { .. }) => return call.respond(AgentResponse::Done),
        AgentRequest::Host(HostRequest::Info) => {
            let info = HostInfo {
                root_dir: "/fake".into(),
            };
            return call.respond(AgentResponse::Host(HostResponse::Info(info)));
        }
        AgentRequest::Network(r) => return call.respond_with(network(&state, r)),
        AgentRequest::Volume(r) => return call.respond_with(volume(&state, r)),
        // A collection frees nothing: the fake holds no layer files.
        AgentRequest::Image(ImageRequest::BeginCollect) => {
            return call.respond(AgentResponse::Image(ImageResponse::Ticket(CollectTicket(
                1,
            ))));
        }
        AgentRequest::Image(ImageRequest::Collect { .. }) => {
            return call.respond(AgentResponse::Image(ImageResponse::Collected(
                Default::default(),
            )));
        }
        AgentRequest::Image(_) => {
            return call.respond(AgentResponse::Failed(AgentFailure::new(
                FailureKind::Unsupported,
                "the fake agent holds no images",
            )))
        }
        AgentRequest::Files(_) => {
            return call.respond(AgentResponse::Failed(AgentFailure::new(
                FailureKind::Unsupported,
                "the fake agent holds no files",
            )))
        }
    };
    use ContainerRequest as R;
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let result = match request {
        R::Create { spec } => {
            let delay = {
                let mut s = lock();
                s.creating.0 += 1;
                s.creating.1 = s.creating.1.max(s.creating.0);
                s.create_delay
            };
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let mut s = lock();
            s.creating.0 -= 1;
            s.containers.insert(spec.id, FakeContainer::default());
            Ok(AgentResponse::Done)
        }
        R::Start { spec, options, .. } => {
            let mut s = lock();
            let fail = s.fail_start.contains(&spec.id);
            let pid = s.next_pid;
            // As the agent: the namespace to join is that of the target's process.
            let target_gone = match &options.netns {
                NetnsMode::JoinContainer(t) => s.containers.get(t).is_none_or(|c| c.pid.is_none()),
                _ => false,
            };
            match s.containers.get_mut(&spec.id) {
                None => Err(not_found(&spec.id)),
                Some(_) if target_gone => Err(AgentFailure::new(
                    FailureKind::NotRunning,
                    "the container whose network namespace to join is not running",
                )),
                Some(_) if fail => Err(AgentFailure {
                    kind: FailureKind::Internal,
                    shim: Some(ErrorKind::CommandNotFound),
                    message: "exec: \"nope\": executable file not found in $PATH".into(),
                }),
                Some(c) => {
                    c.pid = Some(pid);
                    s.next_pid += 1;
                    Ok(AgentResponse::Container(ContainerResponse::Started { pid }))
                }
            }
        }
        R::Kill { id, signal } => {
            let running = lock().containers.get(&id).is_some_and(|c| c.pid.is_some());
            if running {
                exit(&state, &exits, &id, 128 + signal);
                Ok(AgentResponse::Done)
            } else {
                Err(AgentFailure::new(
                    FailureKind::NotRunning,
                    format!("container {id} is not running"),
                ))
            }
        }
        R::Wait { id } => {
            let mut rx = exits.subscribe();
            loop {
                let (now, lost) = {
                    let s = lock();
                    (s.containers.get(&id).cloned(), s.lost)
                };
                match now {
                    _ if lost => break Err(wharf_link::connection_lost()),
                    None => break Ok(AgentResponse::Container(ContainerResponse::Exited(None))),
                    Some(c) if c.pid.is_none() => {
                        break Ok(AgentResponse::Container(ContainerResponse::Exited(c.exit)))
                    }
                    Some(_) => {
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        R::Remove { id } => match lock().containers.remove(&id) {
            Some(c) if c.pid.is_some() => Err(AgentFailure::new(
                FailureKind::Conflict,
                format!("container {id} is running"),
            )),
            _ => Ok(AgentResponse::Done),
        },
        R::Pids { id } => {
            let pid = lock().containers.get(&id).and_then(|c| c.pid);
            Ok(AgentResponse::Container(ContainerResponse::Pids(
                pid.into_iter().collect(),
            )))
        }
        R::Stats { .. } => Ok(AgentResponse::Container(ContainerResponse::Stats(
            CgroupSample::default(),
        ))),
        R::Health { .. } => Ok(AgentResponse::Container(ContainerResponse::Health(None))),
        // Pushes each change of `FakeState::health` until the controller ends the watch.
        R::WatchHealth { id } => {
            call.respond(AgentResponse::Done);
            let (_, mut input, mut out) = call.into_parts();
            let mut last = None;
            loop {
                let now = lock().health.get(&id).cloned();
                if now.is_some() && now != last {
                    last = now.clone();
                    if out
                        .send(StreamItem::Health(now.unwrap_or_default()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                tokio::select! {
                    ended = input.recv() => if !matches!(ended, Ok(Some(_))) {
                        return out.end();
                    },
                    _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                }
            }
        }
        R::Paths { id } => Ok(AgentResponse::Container(ContainerResponse::Paths {
            state_dir: format!("/fake/containers/{id}"),
            log_path: format!("/fake/containers/{id}/{id}-json.log"),
        })),
        R::Local { id } => {
            let pid = lock().containers.get(&id).and_then(|c| c.pid);
            Ok(AgentResponse::Container(ContainerResponse::Local(
                ContainerLocal {
                    state_dir: format!("/fake/containers/{id}"),
                    log_path: format!("/fake/containers/{id}/{id}-json.log"),
                    pid: pid.unwrap_or(0),
                    sandbox_key: pid.map(|p| format!("/proc/{p}/ns/net")).unwrap_or_default(),
                },
            )))
        }
        R::Usage { .. } => Ok(AgentResponse::Container(ContainerResponse::Usage {
            state_bytes: 0,
            rw_bytes: 0,
        })),
        R::Cleanup { .. }
        | R::Check { .. }
        | R::CancelAttaches { .. }
        | R::Resize { .. }
        | R::ResizeExec { .. }
        | R::Pause { .. } => Ok(AgentResponse::Done),
        // An exec in a running container prints its argv and exits 0.
        R::Exec { id, spec } => {
            let running = lock().containers.get(&id).is_some_and(|c| c.pid.is_some());
            if !running {
                Err(AgentFailure::new(
                    FailureKind::NotRunning,
                    format!("container {id} is not running"),
                ))
            } else {
                call.respond(AgentResponse::Container(ContainerResponse::ExecStarted {
                    pid: 4242,
                }));
                let (_, _, mut out) = call.into_parts();
                let line = format!("{}\n", spec.args.join(" ")).into_bytes();
                let exit = Exit {
                    code: 0,
                    oom_killed: false,
                    started_at_ns: 1,
                    finished_at_ns: 2,
                };
                let sent = async {
                    out.send(StreamItem::Output {
                        stream: 1,
                        data: line,
                    })
                    .await?;
                    out.send(StreamItem::Exit(exit)).await
                };
                if sent.await.is_ok() {
                    out.end();
                }
                return;
            }
        }
        R::Attach { .. } => Err(AgentFailure::new(
            FailureKind::Unsupported,
            "the fake agent attaches to no process",
        )),
    };
    call.respond_with(result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_client::Agents;
    use wharf_protocol::agent::ContainerRunSpec;

    fn spec(n: u8) -> ContainerRunSpec {
        ContainerRunSpec {
            id: format!("{n:064x}").parse().unwrap(),
            image_id: wharf_protocol::ImageId(wharf_protocol::Digest::of(b"i")),
            diff_ids: vec![],
            args: vec!["true".into()],
            env: vec![],
            working_dir: "/".into(),
            user: String::new(),
            hostname: "h".into(),
            tty: false,
            open_stdin: false,
            stop_signal: 15,
            host: Default::default(),
        }
    }

    /// The request that makes `spec`'s writable layer (the create plan's last step).
    fn create(spec: &ContainerRunSpec) -> AgentRequest {
        ContainerRequest::Create { spec: spec.clone() }.into()
    }

    #[tokio::test]
    async fn typed_calls_reach_the_agent_of_their_node_only() {
        let fake = Arc::new(FakeAgent::new(NodeId(1)));
        let agents = Agents::new(fake.clone());
        let s = spec(1);
        agents.done(&NodeId(1), create(&s)).await.unwrap();
        let pid = agents
            .start(&NodeId(1), &s, Default::default(), Default::default())
            .await
            .unwrap();
        assert_eq!(agents.pids(&NodeId(1), &s.id).await.unwrap(), vec![pid]);
        let waiter = {
            let (a, id) = (agents.clone(), s.id.clone());
            tokio::spawn(async move { a.wait(&NodeId(1), &id).await })
        };
        agents.kill(&NodeId(1), &s.id, 9).await.unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().unwrap().code, 137);
        let err = agents.kill(&NodeId(1), &s.id, 9).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::NotRunning);
        let err = agents.done(&NodeId(2), create(&s)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Unavailable);
        agents
            .done(
                &NodeId(1),
                ContainerRequest::Remove { id: s.id.clone() }.into(),
            )
            .await
            .unwrap();
        assert!(fake.with(|st| st.containers.is_empty()));
    }

    #[tokio::test]
    async fn a_start_failure_carries_the_shims_kind_across() {
        let fake = Arc::new(FakeAgent::new(NodeId(1)));
        let agents = Agents::new(fake.clone());
        let s = spec(2);
        fake.with(|st| st.fail_start.insert(s.id.clone()));
        agents.done(&NodeId(1), create(&s)).await.unwrap();
        let err = agents
            .start(&NodeId(1), &s, Default::default(), Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.shim, Some(ErrorKind::CommandNotFound));
    }

    #[tokio::test]
    async fn a_port_held_for_another_container_is_a_conflict() {
        let fake = Arc::new(FakeAgent::new(NodeId(1)));
        let agents = Agents::new(fake.clone());
        let (a, b) = (spec(4).id, spec(5).id);
        let p = PortMapping {
            proto: wharf_protocol::network::Proto::Tcp,
            container_port: 80,
            host_ip: std::net::Ipv4Addr::UNSPECIFIED,
            host_port: 8080,
        };
        agents.reserve_ports(&NodeId(1), &a, vec![p]).await.unwrap();
        agents.reserve_ports(&NodeId(1), &a, vec![p]).await.unwrap();
        let err = agents
            .reserve_ports(&NodeId(1), &b, vec![p])
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Conflict);
        assert_eq!(
            err.message,
            "Bind for 0.0.0.0:8080 failed: port is already allocated"
        );
        agents.release_ports(&NodeId(1), &a).await.unwrap();
        agents.reserve_ports(&NodeId(1), &b, vec![p]).await.unwrap();
    }

    #[tokio::test]
    async fn a_lost_agent_answers_every_call_as_unavailable() {
        let fake = Arc::new(FakeAgent::new(NodeId(1)));
        let agents = Agents::new(fake.clone());
        fake.with(|st| st.lost = true);
        let err = agents.done(&NodeId(1), create(&spec(3))).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Unavailable);
    }
}
