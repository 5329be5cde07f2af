//! Typed container calls, and [`AttachCall`], the stream of an attach or exec.

use super::Agents;
use bytes::Bytes;
use wharf_link::{unexpected, ClientCall, ItemReceiver, ItemSender};
use wharf_protocol::agent::container::{ContainerLocal, ContainerRequest, ContainerResponse};
use wharf_protocol::agent::{AgentFailure, AgentRequest, AgentResponse, ContainerRunSpec};
use wharf_protocol::network::NetworkSetup;
use wharf_protocol::runtime::{AttachEvent, CgroupSample, HealthState, ShimOptions};
use wharf_protocol::shim::{ExecSpec, Exit};
use wharf_protocol::wire::StreamItem;
use wharf_protocol::{ContainerId, NodeId};

fn req(r: ContainerRequest) -> AgentRequest {
    AgentRequest::Container(r)
}

fn container(what: &str, r: AgentResponse) -> Result<ContainerResponse, AgentFailure> {
    match r {
        AgentResponse::Container(c) => Ok(c),
        other => Err(unexpected(what, &other)),
    }
}

impl Agents {
    /// Start a container; returns its host PID.
    pub async fn start(
        &self,
        node: &NodeId,
        spec: &ContainerRunSpec,
        options: ShimOptions,
        setup: NetworkSetup,
    ) -> Result<u32, AgentFailure> {
        let r = req(ContainerRequest::Start {
            spec: spec.clone(),
            options,
            setup,
        });
        match container("start", self.call(node, r).await?)? {
            ContainerResponse::Started { pid } => Ok(pid),
            other => Err(unexpected("start", &AgentResponse::Container(other))),
        }
    }

    /// Attach to a running container's stdio.
    pub async fn attach(
        &self,
        node: &NodeId,
        id: &ContainerId,
        stdin: bool,
    ) -> Result<AttachCall, AgentFailure> {
        self.open_attach(node, id, stdin, false).await
    }

    /// Register an attach to the container's next start; returns once the agent holds the
    /// registration, so a start that follows cannot run ahead of it. Its items arrive
    /// once the start has happened; a start that fails aborts it.
    pub async fn attach_next_start(
        &self,
        node: &NodeId,
        id: &ContainerId,
        stdin: bool,
    ) -> Result<AttachCall, AgentFailure> {
        self.open_attach(node, id, stdin, true).await
    }

    async fn open_attach(
        &self,
        node: &NodeId,
        id: &ContainerId,
        stdin: bool,
        next_start: bool,
    ) -> Result<AttachCall, AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.open(
            node,
            req(ContainerRequest::Attach {
                id: id.clone(),
                stdin,
                next_start,
            }),
        )?;
        response.get().await?;
        Ok(AttachCall {
            output: AttachOutput { rx: input },
            input: AttachInput { tx: Some(output) },
        })
    }

    /// Send `signal` to the container's main process.
    pub async fn kill(
        &self,
        node: &NodeId,
        id: &ContainerId,
        signal: i32,
    ) -> Result<(), AgentFailure> {
        let id = id.clone();
        self.done(node, req(ContainerRequest::Kill { id, signal }))
            .await
    }

    /// Wait for the container's main process to end; `None` when it left no record.
    pub async fn wait(
        &self,
        node: &NodeId,
        id: &ContainerId,
    ) -> Result<Option<Exit>, AgentFailure> {
        let id = id.clone();
        match container(
            "wait",
            self.call(node, req(ContainerRequest::Wait { id })).await?,
        )? {
            ContainerResponse::Exited(e) => Ok(e),
            other => Err(unexpected("wait", &AgentResponse::Container(other))),
        }
    }

    /// Release what a finished run holds.
    pub async fn cleanup(&self, node: &NodeId, id: &ContainerId) -> Result<(), AgentFailure> {
        let id = id.clone();
        self.done(node, req(ContainerRequest::Cleanup { id })).await
    }

    /// Run a process in the running container; returns its host PID and stream.
    pub async fn exec(
        &self,
        node: &NodeId,
        id: &ContainerId,
        spec: ExecSpec,
    ) -> Result<(u32, AttachCall), AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.open(
            node,
            req(ContainerRequest::Exec {
                id: id.clone(),
                spec,
            }),
        )?;
        match container("exec", response.get().await?)? {
            ContainerResponse::ExecStarted { pid } => Ok((
                pid,
                AttachCall {
                    output: AttachOutput { rx: input },
                    input: AttachInput { tx: Some(output) },
                },
            )),
            other => Err(unexpected("exec", &AgentResponse::Container(other))),
        }
    }

    /// Resize the container's terminal.
    pub async fn resize(
        &self,
        node: &NodeId,
        id: &ContainerId,
        height: u16,
        width: u16,
    ) -> Result<(), AgentFailure> {
        let id = id.clone();
        self.done(node, req(ContainerRequest::Resize { id, height, width }))
            .await
    }

    /// Resize an exec process' terminal.
    pub async fn resize_exec(
        &self,
        node: &NodeId,
        id: &ContainerId,
        exec_id: &str,
        height: u16,
        width: u16,
    ) -> Result<(), AgentFailure> {
        let r = ContainerRequest::ResizeExec {
            id: id.clone(),
            exec_id: exec_id.to_string(),
            height,
            width,
        };
        self.done(node, req(r)).await
    }

    /// Freeze (`true`) or thaw the container's processes.
    pub async fn pause(
        &self,
        node: &NodeId,
        id: &ContainerId,
        freeze: bool,
    ) -> Result<(), AgentFailure> {
        let id = id.clone();
        self.done(node, req(ContainerRequest::Pause { id, freeze }))
            .await
    }

    /// Host PIDs of the container's processes.
    pub async fn pids(&self, node: &NodeId, id: &ContainerId) -> Result<Vec<u32>, AgentFailure> {
        let id = id.clone();
        match container(
            "pids",
            self.call(node, req(ContainerRequest::Pids { id })).await?,
        )? {
            ContainerResponse::Pids(p) => Ok(p),
            other => Err(unexpected("pids", &AgentResponse::Container(other))),
        }
    }

    /// The health the container's shim last recorded.
    pub async fn health(
        &self,
        node: &NodeId,
        id: &ContainerId,
    ) -> Result<Option<HealthState>, AgentFailure> {
        let id = id.clone();
        match container(
            "health",
            self.call(node, req(ContainerRequest::Health { id }))
                .await?,
        )? {
            ContainerResponse::Health(h) => Ok(h),
            other => Err(unexpected("health", &AgentResponse::Container(other))),
        }
    }

    /// The container's health status as its agent pushes it: at once, then at every
    /// change. Dropping the watch ends it on the agent.
    pub async fn watch_health(
        &self,
        node: &NodeId,
        id: &ContainerId,
    ) -> Result<HealthWatch, AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.open(node, req(ContainerRequest::WatchHealth { id: id.clone() }))?;
        match response.get().await? {
            AgentResponse::Done => Ok(HealthWatch {
                rx: input,
                _stop: output,
            }),
            other => Err(unexpected("watch health", &other)),
        }
    }

    /// The container's cgroup counters.
    pub async fn stats(
        &self,
        node: &NodeId,
        id: &ContainerId,
    ) -> Result<CgroupSample, AgentFailure> {
        let id = id.clone();
        match container(
            "stats",
            self.call(node, req(ContainerRequest::Stats { id })).await?,
        )? {
            ContainerResponse::Stats(s) => Ok(s),
            other => Err(unexpected("stats", &AgentResponse::Container(other))),
        }
    }
}

impl Agents {
    /// What only the container's host knows of it (for `docker inspect`): its files'
    /// paths, its process' host PID and network namespace while it runs.
    pub async fn local(
        &self,
        node: &NodeId,
        id: &ContainerId,
    ) -> Result<ContainerLocal, AgentFailure> {
        let id = id.clone();
        match container(
            "local",
            self.call(node, req(ContainerRequest::Local { id })).await?,
        )? {
            ContainerResponse::Local(local) => Ok(local),
            other => Err(unexpected("local", &AgentResponse::Container(other))),
        }
    }

    /// Bytes the container uses on its host: (state folder, writable layer changes).
    pub async fn usage(&self, node: &NodeId, id: &ContainerId) -> Result<(u64, u64), AgentFailure> {
        let id = id.clone();
        match container(
            "usage",
            self.call(node, req(ContainerRequest::Usage { id })).await?,
        )? {
            ContainerResponse::Usage {
                state_bytes,
                rw_bytes,
            } => Ok((state_bytes, rw_bytes)),
            other => Err(unexpected("usage", &AgentResponse::Container(other))),
        }
    }
}

/// The stream of an attach or exec: the process' output, then its exit; its stdin.
pub struct AttachCall {
    output: AttachOutput,
    input: AttachInput,
}

impl AttachCall {
    /// The next output or the exit; `None` after the exit.
    pub async fn next(&mut self) -> Result<Option<AttachEvent>, AgentFailure> {
        self.output.next().await
    }

    /// Separate the output and stdin halves.
    pub fn into_split(self) -> (AttachOutput, AttachInput) {
        (self.output, self.input)
    }
}

/// The output half of an [`AttachCall`].
pub struct AttachOutput {
    rx: ItemReceiver,
}

impl AttachOutput {
    /// The next output or the exit; `None` after the exit or the end of the stream; an
    /// error when the agent aborted it (a start that failed, a lost agent).
    pub async fn next(&mut self) -> Result<Option<AttachEvent>, AgentFailure> {
        loop {
            return match self.rx.recv().await? {
                Some(StreamItem::Output { stream, data }) => Ok(Some(AttachEvent::Output {
                    stream,
                    data: Bytes::from(data),
                })),
                Some(StreamItem::Exit(e)) => Ok(Some(AttachEvent::Exit(e))),
                Some(_) => continue,
                None => Ok(None),
            };
        }
    }
}

/// The stdin half of an [`AttachCall`]. Dropped, it lets go of stdin and leaves it open.
pub struct AttachInput {
    tx: Option<ItemSender>,
}

impl AttachInput {
    async fn send(&mut self, item: StreamItem) -> Result<(), AgentFailure> {
        match self.tx.as_mut() {
            Some(tx) => tx.send(item).await,
            None => Err(wharf_link::connection_lost()),
        }
    }

    /// Send bytes to the process' stdin.
    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<(), AgentFailure> {
        for chunk in data.chunks(wharf_protocol::wire::ITEM_BYTES) {
            self.send(StreamItem::Stdin(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Close the process' stdin (once every stdin attacher has).
    pub async fn close_stdin(&mut self) -> Result<(), AgentFailure> {
        self.send(StreamItem::CloseStdin).await
    }

    /// Stop sending stdin but leave it open (Docker's detach keys).
    pub async fn detach(&mut self) -> Result<(), AgentFailure> {
        let r = self.send(StreamItem::Detach).await;
        if let Some(tx) = self.tx.take() {
            tx.end();
        }
        r
    }
}

impl Drop for AttachInput {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.end();
        }
    }
}

/// A container's health statuses as its agent pushes them ([`Agents::watch_health`]).
pub struct HealthWatch {
    rx: ItemReceiver,
    /// Held open while watching; dropped, it tells the agent to stop.
    _stop: ItemSender,
}

impl HealthWatch {
    /// The next status (`starting`, `healthy`, `unhealthy`); `None` when the agent ended
    /// the watch.
    pub async fn next(&mut self) -> Result<Option<String>, AgentFailure> {
        match self.rx.recv().await? {
            Some(StreamItem::Health(status)) => Ok(Some(status)),
            Some(other) => Err(AgentFailure::new(
                wharf_protocol::agent::FailureKind::Internal,
                format!("agent sent {other:?} for a health status"),
            )),
            None => Ok(None),
        }
    }
}
