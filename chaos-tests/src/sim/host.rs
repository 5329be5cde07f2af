//! One simulated host's answers to the agent protocol (pure: no I/O, time given): what
//! it holds (containers, layers, ports, volumes) and what each request does to it. It
//! runs nothing: a started container gets a made-up PID and "runs" until it is killed,
//! or exits at once when its command is one whose end is known ([`planned_exit`]).
//!
//! ```text
//!  request ─► SimHost::answer(req, now_ns) ─► Answer::Reply(resp)      answered at once
//!                                           ├► Answer::Wait(id)        held: wait_answer
//!                                           ├► Answer::Load             upload, then loaded
//!                                           └► Answer::Stream(bytes)    Done, then bytes
//! ```

use std::collections::{BTreeMap, BTreeSet};
use wharf_protocol::agent::container::{ContainerLocal, ContainerRequest, ContainerResponse};
use wharf_protocol::agent::host::{
    HostContainer, HostInfo, HostRequest, HostResponse, LayerInventory,
};
use wharf_protocol::agent::image::{CollectTicket, ImageRequest, ImageResponse, LeaseId};
use wharf_protocol::agent::network::{NetworkHost, NetworkRequest, NetworkResponse};
use wharf_protocol::agent::volume::{VolumeRequest, VolumeResponse};
use wharf_protocol::agent::{AgentFailure, AgentRequest, AgentResponse, FailureKind};
use wharf_protocol::image::LoadedImage;
use wharf_protocol::network::{PortMapping, Subnet};
use wharf_protocol::runtime::CgroupSample;
use wharf_protocol::shim::Exit;
use wharf_protocol::{ChainId, ContainerId};

/// A container as a simulated host holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimContainer {
    /// Its made-up PID while it "runs".
    pub pid: Option<u32>,
    /// When it was last started.
    pub started_at_ns: u64,
    /// How its last run ended.
    pub exit: Option<Exit>,
}

/// What a request makes the connection do.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Answer this now.
    Reply(AgentResponse),
    /// Hold the call until the container no longer runs, then answer
    /// [`SimHost::wait_answer`].
    Wait(ContainerId),
    /// Read the upload (a `docker save` archive), then answer [`SimHost::loaded`].
    Load,
    /// Answer `Done`, then send these bytes as the call's output.
    Stream(Vec<u8>),
}

/// Counts of what a host was asked, for the benches' tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `Host(Beat)`: the controllers' heartbeats.
    pub heartbeats: u64,
    /// The stretch of the controllers' heartbeat period the last beat carried, in
    /// thousandths (a fleet's: the largest of its hosts').
    pub stretch_milli: u32,
    /// Containers created (placements acknowledged).
    pub creates: u64,
    /// Containers started.
    pub starts: u64,
    /// Runs that ended (by themselves or killed).
    pub exits: u64,
    /// Every request.
    pub requests: u64,
}

/// One simulated host.
#[derive(Debug, Default)]
pub struct SimHost {
    /// Containers created and not removed.
    pub containers: BTreeMap<ContainerId, SimContainer>,
    /// The layers it holds.
    pub inventory: LayerInventory,
    /// The `docker save` archive of the images it holds, for a `Save` (a copy to another
    /// host); empty when it holds none.
    pub archive: Vec<u8>,
    /// Host ports held, with their owner.
    pub ports: BTreeMap<PortMapping, ContainerId>,
    /// Volumes that exist.
    pub volumes: BTreeSet<String>,
    /// What it was asked.
    pub counters: Counters,
    next_pid: u32,
    next_lease: u64,
}

/// How a run of `args` ends by itself, when the simulation knows: `true` → 0, `false`
/// → 1, `sh -c "exit N"` → N; `None`: it runs until killed.
pub fn planned_exit(args: &[String]) -> Option<i32> {
    match args {
        [cmd] if cmd == "true" => Some(0),
        [cmd] if cmd == "false" => Some(1),
        [sh, c, script] if (sh == "sh" || sh == "/bin/sh") && c == "-c" => script
            .trim()
            .strip_prefix("exit")
            .and_then(|n| n.trim().parse().ok()),
        _ => None,
    }
}

fn failure(kind: FailureKind, message: impl Into<String>) -> AgentResponse {
    AgentResponse::Failed(AgentFailure::new(kind, message))
}

fn not_running(id: &ContainerId) -> AgentResponse {
    failure(
        FailureKind::NotRunning,
        format!("container {id} is not running"),
    )
}

impl SimHost {
    /// A host holding the images of the `docker save` archive `archive` (empty: none),
    /// whose images are `images`.
    pub fn new(archive: Vec<u8>, images: &[LoadedImage]) -> SimHost {
        SimHost {
            inventory: super::archive::inventory_of(images),
            archive,
            next_pid: 10_000,
            ..SimHost::default()
        }
    }

    /// What `request` does, at `now_ns` (nanoseconds since the Unix epoch).
    pub fn answer(&mut self, request: AgentRequest, now_ns: u64) -> Answer {
        self.counters.requests += 1;
        let reply = match request {
            AgentRequest::Container(r) => return self.container(r, now_ns),
            AgentRequest::Host(r) => self.host(r),
            AgentRequest::Network(r) => self.network(r),
            AgentRequest::Volume(r) => self.volume(r),
            AgentRequest::Image(r) => return self.image(r),
            AgentRequest::Files(_) => {
                failure(FailureKind::Unsupported, "a simulated host holds no files")
            }
        };
        Answer::Reply(reply)
    }

    /// The answer of a `Wait` on `id` once it no longer runs; `None` while it runs.
    pub fn wait_answer(&self, id: &ContainerId) -> Option<AgentResponse> {
        match self.containers.get(id) {
            None => Some(AgentResponse::Container(ContainerResponse::Exited(None))),
            Some(c) if c.pid.is_none() => {
                Some(AgentResponse::Container(ContainerResponse::Exited(c.exit)))
            }
            Some(_) => None,
        }
    }

    /// The answer of a `Load` whose upload was `archive` holding `images` (or why it
    /// could not be read); the host holds them from now on.
    pub fn loaded(
        &mut self,
        archive: Vec<u8>,
        images: Result<Vec<LoadedImage>, String>,
    ) -> AgentResponse {
        match images {
            Err(e) => failure(FailureKind::InvalidInput, e),
            Ok(images) => {
                let inv = super::archive::inventory_of(&images);
                self.inventory.chains.extend(inv.chains);
                self.inventory.tars.extend(inv.tars);
                self.archive = archive;
                self.next_lease += 1;
                AgentResponse::Image(ImageResponse::Loaded {
                    images,
                    lease: LeaseId(self.next_lease),
                })
            }
        }
    }

    fn end_run(&mut self, id: &ContainerId, code: i32, now_ns: u64) -> bool {
        let Some(c) = self.containers.get_mut(id) else {
            return false;
        };
        if c.pid.take().is_none() {
            return false;
        }
        c.exit = Some(Exit {
            code,
            oom_killed: false,
            started_at_ns: c.started_at_ns,
            finished_at_ns: now_ns,
        });
        self.counters.exits += 1;
        true
    }

    fn container(&mut self, request: ContainerRequest, now_ns: u64) -> Answer {
        use ContainerRequest as R;
        let reply = match request {
            R::Create { spec } => {
                self.counters.creates += 1;
                self.containers.entry(spec.id).or_default();
                AgentResponse::Done
            }
            R::Start { spec, .. } => match self.containers.get_mut(&spec.id) {
                None => failure(
                    FailureKind::NotFound,
                    format!("no container {} on this host", spec.id),
                ),
                Some(c) => {
                    let pid = self.next_pid;
                    self.next_pid = self.next_pid.wrapping_add(1).max(10_000);
                    c.pid = Some(pid);
                    c.started_at_ns = now_ns;
                    c.exit = None;
                    self.counters.starts += 1;
                    if let Some(code) = planned_exit(&spec.args) {
                        self.end_run(&spec.id, code, now_ns);
                    }
                    AgentResponse::Container(ContainerResponse::Started { pid })
                }
            },
            R::Kill { id, signal } => {
                if self.end_run(&id, 128 + signal, now_ns) {
                    AgentResponse::Done
                } else {
                    not_running(&id)
                }
            }
            R::Wait { id } => return Answer::Wait(id),
            R::Remove { id } => match self.containers.get(&id) {
                Some(c) if c.pid.is_some() => {
                    failure(FailureKind::Conflict, format!("container {id} is running"))
                }
                _ => {
                    self.containers.remove(&id);
                    self.ports.retain(|_, owner| *owner != id);
                    AgentResponse::Done
                }
            },
            R::Pids { id } => {
                let pid = self.containers.get(&id).and_then(|c| c.pid);
                AgentResponse::Container(ContainerResponse::Pids(pid.into_iter().collect()))
            }
            R::Stats { .. } => {
                AgentResponse::Container(ContainerResponse::Stats(CgroupSample::default()))
            }
            R::Health { .. } => AgentResponse::Container(ContainerResponse::Health(None)),
            R::Paths { id } => AgentResponse::Container(ContainerResponse::Paths {
                state_dir: format!("/sim/containers/{id}"),
                log_path: format!("/sim/containers/{id}/{id}-json.log"),
            }),
            R::Local { id } => {
                let pid = self.containers.get(&id).and_then(|c| c.pid);
                AgentResponse::Container(ContainerResponse::Local(ContainerLocal {
                    state_dir: format!("/sim/containers/{id}"),
                    log_path: format!("/sim/containers/{id}/{id}-json.log"),
                    pid: pid.unwrap_or(0),
                    sandbox_key: String::new(),
                }))
            }
            R::Usage { .. } => AgentResponse::Container(ContainerResponse::Usage {
                state_bytes: 0,
                rw_bytes: 0,
            }),
            R::Cleanup { .. }
            | R::Check { .. }
            | R::CancelAttaches { .. }
            | R::Resize { .. }
            | R::ResizeExec { .. }
            | R::Pause { .. } => AgentResponse::Done,
            R::Attach { .. } | R::Exec { .. } | R::WatchHealth { .. } => failure(
                FailureKind::Unsupported,
                "a simulated host runs no process to attach to",
            ),
        };
        Answer::Reply(reply)
    }

    fn host(&mut self, request: HostRequest) -> AgentResponse {
        match request {
            HostRequest::Info => AgentResponse::Host(HostResponse::Info(HostInfo {
                root_dir: "/sim".into(),
            })),
            HostRequest::Beat { stretch_milli } => {
                self.counters.heartbeats += 1;
                self.counters.stretch_milli = stretch_milli;
                AgentResponse::Done
            }
            HostRequest::Inventory => {
                AgentResponse::Host(HostResponse::Inventory(self.inventory.clone()))
            }
            HostRequest::Containers => AgentResponse::Host(HostResponse::Containers(
                self.containers
                    .iter()
                    .map(|(id, c)| HostContainer {
                        id: id.clone(),
                        running: c.pid.is_some(),
                        // Old enough that a reconcile takes the list as it stands.
                        age_secs: 3600,
                    })
                    .collect(),
            )),
            // A simulated host runs nothing: there is nothing to fence.
            HostRequest::Fence { .. } => AgentResponse::Done,
        }
    }

    fn network(&mut self, request: NetworkRequest) -> AgentResponse {
        use NetworkRequest as R;
        match request {
            R::Host => AgentResponse::Network(NetworkResponse::Host(NetworkHost {
                default_bridge: "wharf0".into(),
                default_subnet: Subnet {
                    addr: std::net::Ipv4Addr::new(10, 128, 0, 0),
                    prefix: 24,
                },
                routes: vec![],
            })),
            R::Attach { id, .. } => match self.containers.get(&id) {
                Some(c) if c.pid.is_some() => AgentResponse::Done,
                _ => not_running(&id),
            },
            R::Reserve { id, ports } => {
                if let Some(p) = ports
                    .iter()
                    .find(|p| self.ports.get(p).is_some_and(|owner| *owner != id))
                {
                    return failure(
                        FailureKind::Conflict,
                        format!(
                            "Bind for {}:{} failed: port is already allocated",
                            p.host_ip, p.host_port
                        ),
                    );
                }
                for p in ports {
                    self.ports.insert(p, id.clone());
                }
                AgentResponse::Done
            }
            R::Release { id } => {
                self.ports.retain(|_, owner| *owner != id);
                AgentResponse::Done
            }
            R::SetDnsTable { .. }
            | R::StopDns { .. }
            | R::EnsureBridge { .. }
            | R::RemoveBridge { .. }
            | R::Detach { .. }
            | R::SyncRules { .. }
            | R::EnsureJumps
            | R::RemoveRules => AgentResponse::Done,
        }
    }

    fn volume(&mut self, request: VolumeRequest) -> AgentResponse {
        use VolumeRequest as R;
        match request {
            R::Root => AgentResponse::Volume(VolumeResponse::Root("/sim/volumes".into())),
            R::Create { name } => {
                self.volumes.insert(name);
                AgentResponse::Done
            }
            R::Remove { name } => {
                self.volumes.remove(&name);
                AgentResponse::Done
            }
            R::Sizes { names } => {
                AgentResponse::Volume(VolumeResponse::Sizes(vec![0; names.len()]))
            }
        }
    }

    fn holds(&self, diff_ids: &[wharf_protocol::DiffId]) -> bool {
        ChainId::chain(diff_ids)
            .iter()
            .all(|c| self.inventory.chains.contains(c))
    }

    fn image(&mut self, request: ImageRequest) -> Answer {
        use ImageRequest as R;
        let reply = match request {
            R::Load => return Answer::Load,
            R::Save { images } => {
                if images.iter().all(|i| self.holds(&i.diff_ids)) && !self.archive.is_empty() {
                    return Answer::Stream(self.archive.clone());
                }
                failure(
                    FailureKind::NotFound,
                    "a layer has no stored tar on this simulated host",
                )
            }
            R::HasLayers { diff_ids } => {
                AgentResponse::Image(ImageResponse::Present(self.holds(&diff_ids)))
            }
            R::LayerSizes { diff_ids } => {
                AgentResponse::Image(ImageResponse::Sizes(vec![0; diff_ids.len()]))
            }
            R::GraphDriver { .. } => {
                AgentResponse::Image(ImageResponse::GraphDriver(BTreeMap::new()))
            }
            R::Release { .. } => AgentResponse::Done,
            R::BeginCollect => AgentResponse::Image(ImageResponse::Ticket(CollectTicket(1))),
            // A simulated host keeps its layers: nothing is collected.
            R::Collect { .. } => AgentResponse::Image(ImageResponse::Collected(Default::default())),
            R::Export { .. } | R::Commit { .. } | R::Changes { .. } | R::Import { .. } => failure(
                FailureKind::Unsupported,
                "a simulated host has no files to export, commit or import",
            ),
        };
        Answer::Reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::agent::ContainerRunSpec;

    fn spec(n: u8, args: &[&str]) -> ContainerRunSpec {
        ContainerRunSpec {
            id: format!("{n:064x}").parse().unwrap(),
            image_id: wharf_protocol::ImageId(wharf_protocol::Digest::of(b"i")),
            diff_ids: vec![],
            args: args.iter().map(|a| a.to_string()).collect(),
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

    fn start(spec: &ContainerRunSpec) -> AgentRequest {
        ContainerRequest::Start {
            spec: spec.clone(),
            options: Default::default(),
            setup: Default::default(),
        }
        .into()
    }

    fn reply(a: Answer) -> AgentResponse {
        match a {
            Answer::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn known_commands_end_by_themselves() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(planned_exit(&v(&["true"])), Some(0));
        assert_eq!(planned_exit(&v(&["false"])), Some(1));
        assert_eq!(planned_exit(&v(&["sh", "-c", "exit 3"])), Some(3));
        assert_eq!(planned_exit(&v(&["sleep", "1000"])), None);
        assert_eq!(planned_exit(&v(&["sh", "-c", "sleep 1"])), None);
    }

    #[test]
    fn a_container_is_created_started_waited_killed_and_removed() {
        let mut h = SimHost::new(vec![], &[]);
        let s = spec(1, &["sleep", "1000"]);
        let create = ContainerRequest::Create { spec: s.clone() }.into();
        assert_eq!(reply(h.answer(create, 1)), AgentResponse::Done);
        let started = reply(h.answer(start(&s), 5));
        assert!(matches!(
            started,
            AgentResponse::Container(ContainerResponse::Started { .. })
        ));
        let wait = h.answer(ContainerRequest::Wait { id: s.id.clone() }.into(), 6);
        assert_eq!(wait, Answer::Wait(s.id.clone()));
        assert_eq!(h.wait_answer(&s.id), None, "it runs");
        let remove = ContainerRequest::Remove { id: s.id.clone() };
        assert!(matches!(
            reply(h.answer(remove.clone().into(), 7)),
            AgentResponse::Failed(AgentFailure {
                kind: FailureKind::Conflict,
                ..
            })
        ));
        let kill = ContainerRequest::Kill {
            id: s.id.clone(),
            signal: 9,
        };
        assert_eq!(reply(h.answer(kill.clone().into(), 9)), AgentResponse::Done);
        let exit = Exit {
            code: 137,
            oom_killed: false,
            started_at_ns: 5,
            finished_at_ns: 9,
        };
        assert_eq!(
            h.wait_answer(&s.id),
            Some(AgentResponse::Container(ContainerResponse::Exited(Some(
                exit
            ))))
        );
        assert!(matches!(
            reply(h.answer(kill.into(), 10)),
            AgentResponse::Failed(AgentFailure {
                kind: FailureKind::NotRunning,
                ..
            })
        ));
        assert_eq!(reply(h.answer(remove.into(), 11)), AgentResponse::Done);
        assert!(h.containers.is_empty());
        assert_eq!(
            (h.counters.creates, h.counters.starts, h.counters.exits),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_run_of_true_has_ended_when_its_start_is_answered() {
        let mut h = SimHost::new(vec![], &[]);
        let s = spec(2, &["sh", "-c", "exit 7"]);
        h.answer(ContainerRequest::Create { spec: s.clone() }.into(), 1);
        h.answer(start(&s), 2);
        let Some(AgentResponse::Container(ContainerResponse::Exited(Some(exit)))) =
            h.wait_answer(&s.id)
        else {
            panic!("the run should have ended");
        };
        assert_eq!(exit.code, 7);
    }

    #[test]
    fn heartbeats_are_counted_and_a_load_adds_layers() {
        let mut h = SimHost::new(vec![], &[]);
        let info = reply(h.answer(HostRequest::Info.into(), 1));
        assert!(matches!(info, AgentResponse::Host(HostResponse::Info(_))));
        assert_eq!(h.counters.heartbeats, 0, "a question, not a heartbeat");
        let beat = reply(
            h.answer(
                HostRequest::Beat {
                    stretch_milli: 2500,
                }
                .into(),
                1,
            ),
        );
        assert_eq!(beat, AgentResponse::Done);
        assert_eq!(h.counters.heartbeats, 1);
        assert_eq!(h.counters.stretch_milli, 2500);
        assert_eq!(h.answer(ImageRequest::Load.into(), 2), Answer::Load);
        let d = wharf_protocol::DiffId(wharf_protocol::Digest::of(b"layer"));
        let image = LoadedImage {
            id: wharf_protocol::ImageId(wharf_protocol::Digest::of(b"{}")),
            config: b"{}".to_vec(),
            diff_ids: vec![d],
            repo_tags: vec![],
            size: 0,
        };
        let r = h.loaded(b"archive".to_vec(), Ok(vec![image]));
        assert!(matches!(
            r,
            AgentResponse::Image(ImageResponse::Loaded { .. })
        ));
        assert_eq!(h.inventory.tars.len(), 1);
        let save = ImageRequest::Save {
            images: vec![wharf_protocol::image::SaveImage {
                config: b"{}".to_vec(),
                diff_ids: vec![d],
                repo_tags: vec![],
            }],
        };
        assert_eq!(
            h.answer(save.into(), 3),
            Answer::Stream(b"archive".to_vec())
        );
        let bad = h.loaded(vec![], Err("bad tar".into()));
        assert!(matches!(bad, AgentResponse::Failed(_)));
    }
}
