//! Container requests: lifecycle, processes and their streams, counters.

use super::failure;
use crate::agent::{Agent, AgentError};
use crate::runtime::{AttachEvent, AttachStream};
use wharf_link::{ItemReceiver, ItemSender, ServerCall};
use wharf_protocol::agent::container::{ContainerLocal, ContainerRequest, ContainerResponse};
use wharf_protocol::agent::{AgentFailure, AgentResponse, FailureKind, HostSpec};
use wharf_protocol::wire::StreamItem;
use wharf_protocol::ContainerId;

fn done(r: Result<(), AgentError>) -> Result<AgentResponse, AgentFailure> {
    r.map(|()| AgentResponse::Done).map_err(|e| failure(&e))
}

fn answer(r: ContainerResponse) -> Result<AgentResponse, AgentFailure> {
    Ok(AgentResponse::Container(r))
}

/// Carry out one container request.
pub(super) async fn handle(agent: &Agent, request: ContainerRequest, mut call: ServerCall) {
    use ContainerRequest as R;
    let result = match request {
        R::Create { spec } => done(agent.create(&spec).await),
        R::Start {
            spec,
            options,
            setup,
        } => match agent.start_networked(&spec, options, setup).await {
            Ok(pid) => answer(ContainerResponse::Started { pid }),
            Err(e) => Err(failure(&e)),
        },
        R::Attach {
            id,
            stdin,
            next_start: false,
        } => match agent.attach(&id, stdin).await {
            Ok(stream) => {
                call.respond(AgentResponse::Done);
                return pump(stream, call).await;
            }
            Err(e) => Err(failure(&e)),
        },
        R::Attach {
            id,
            stdin,
            next_start: true,
        } => {
            let pending = agent.attach_after_start(&id, stdin);
            call.respond(AgentResponse::Done);
            match pending.await {
                Ok(Ok(stream)) => return pump(stream, call).await,
                Ok(Err(e)) => call.output.abort(failure(&e)),
                Err(_) => call.output.abort(AgentFailure::new(
                    FailureKind::NotRunning,
                    "the container's start did not happen",
                )),
            }
            return;
        }
        R::CancelAttaches { id } => {
            agent.cancel_pending(&id);
            Ok(AgentResponse::Done)
        }
        R::Kill { id, signal } => done(agent.kill(&id, signal).await),
        R::Wait { id } => answer(ContainerResponse::Exited(agent.wait(&id).await)),
        R::Cleanup { id } => {
            agent.cleanup(&id).await;
            Ok(AgentResponse::Done)
        }
        R::Remove { id } => done(agent.remove(&id).await),
        R::Exec { id, spec } => match agent.exec(&id, spec).await {
            Ok((pid, stream)) => {
                call.respond(AgentResponse::Container(ContainerResponse::ExecStarted {
                    pid,
                }));
                return pump(stream, call).await;
            }
            Err(e) => Err(failure(&e)),
        },
        R::Resize { id, height, width } => done(agent.resize(&id, height, width).await),
        R::ResizeExec {
            id,
            exec_id,
            height,
            width,
        } => done(agent.resize_exec(&id, &exec_id, height, width).await),
        R::Pause { id, freeze } => done(agent.pause(&id, freeze).await),
        R::Pids { id } => answer(ContainerResponse::Pids(agent.container_pids(&id))),
        R::Health { id } => answer(ContainerResponse::Health(agent.health(&id))),
        R::WatchHealth { id } => {
            call.respond(AgentResponse::Done);
            return watch_health(agent.clone(), id, call).await;
        }
        R::Stats { id } => answer(ContainerResponse::Stats(agent.stats(&id))),
        R::Paths { id } => answer(ContainerResponse::Paths {
            state_dir: agent.state_dir(&id).display().to_string(),
            log_path: agent.log_path(&id).display().to_string(),
        }),
        R::Local { id } => {
            let pid = agent.main_pid(&id).await;
            answer(ContainerResponse::Local(ContainerLocal {
                state_dir: agent.state_dir(&id).display().to_string(),
                log_path: agent.log_path(&id).display().to_string(),
                pid: pid.unwrap_or(0),
                sandbox_key: pid
                    .map(|p| crate::agent::netns_path(p).display().to_string())
                    .unwrap_or_default(),
            }))
        }
        R::Check { host, bind_sources } => check(&host, &bind_sources),
        R::Usage { id } => {
            let a = agent.clone();
            match tokio::task::spawn_blocking(move || a.disk_usage(&id)).await {
                Ok((state_bytes, rw_bytes)) => answer(ContainerResponse::Usage {
                    state_bytes,
                    rw_bytes,
                }),
                Err(e) => Err(failure(&AgentError::Join(e.to_string()))),
            }
        }
    };
    call.respond_with(result);
}

/// Whether this host can run a container with `host`'s settings and has every path of
/// `bind_sources` (moby: "bind source path does not exist").
fn check(host: &HostSpec, bind_sources: &[String]) -> Result<AgentResponse, AgentFailure> {
    let invalid = |m: String| AgentFailure::new(FailureKind::InvalidInput, m);
    crate::runtime::spec::validate_host(host).map_err(|e| invalid(e.to_string()))?;
    if let Some(missing) = bind_sources
        .iter()
        .find(|s| !std::path::Path::new(s).exists())
    {
        return Err(invalid(format!(
            "invalid mount config for type \"bind\": bind source path does not exist: {missing}"
        )));
    }
    Ok(AgentResponse::Done)
}

/// How often the host reads a watched container's health (its shim writes it after each
/// check, whose interval is at least 1 s by default).
const HEALTH_READ: std::time::Duration = std::time::Duration::from_millis(250);

/// Push the container's health status at once and at every change, until the controller
/// ends its stream (it does when the container stops) or goes away.
async fn watch_health(agent: Agent, id: ContainerId, call: ServerCall) {
    let (_responder, mut input, mut output) = call.into_parts();
    let mut last: Option<String> = None;
    let mut tick = tokio::time::interval(HEALTH_READ);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ended = input.recv() => {
                if !matches!(ended, Ok(Some(_))) {
                    return output.end();
                }
            }
            _ = tick.tick() => {
                let Some(status) = agent.health(&id).map(|h| h.status) else {
                    continue;
                };
                if last.as_ref() != Some(&status) {
                    last = Some(status.clone());
                    if output.send(StreamItem::Health(status)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Carry an attach or exec stream: the process' output to the controller, its stdin from
/// it. Input that ends without closing stdin lets go of it and leaves it open.
async fn pump(stream: AttachStream, call: ServerCall) {
    let (_responder, input, output) = call.into_parts();
    let (out, sink) = stream.into_split();
    let stdin = tokio::spawn(forward_stdin(input, sink));
    forward_output(out, output).await;
    // The process ended (or the controller went away): nothing more goes to its stdin.
    stdin.abort();
}

async fn forward_output(mut out: crate::runtime::client::AttachOutputStream, mut tx: ItemSender) {
    loop {
        let item = match out.next().await {
            Ok(Some(AttachEvent::Output { stream, data })) => StreamItem::Output {
                stream,
                data: data.to_vec(),
            },
            Ok(Some(AttachEvent::Exit(exit))) => StreamItem::Exit(exit),
            Ok(None) => return tx.end(),
            Err(e) => {
                return tx.abort(AgentFailure::new(
                    FailureKind::Internal,
                    format!("attach stream: {e}"),
                ))
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

async fn forward_stdin(mut rx: ItemReceiver, mut sink: crate::runtime::client::AttachInputSink) {
    loop {
        let sent = match rx.recv().await {
            Ok(Some(StreamItem::Stdin(data))) => sink.send_stdin(&data).await,
            Ok(Some(StreamItem::CloseStdin)) => sink.close_stdin().await,
            Ok(Some(StreamItem::Detach)) | Ok(None) | Err(_) => {
                let _ = sink.detach().await;
                return;
            }
            Ok(Some(_)) => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}
