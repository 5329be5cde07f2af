//! Network requests: the host's bridges, container interfaces, rules and port
//! reservations, carried out on the agent's [`crate::network::NetHost`], and the user
//! networks' resolvers ([`crate::dns::Resolvers`]).
//!
//! Everything the kernel is asked runs in `spawn_blocking`; a container's pid is looked
//! up here, from its shim, never taken from the controller.

use crate::agent::Agent;
use crate::network::{NetError, NetHost};
use crate::runtime::ShimClient;
use std::sync::Arc;
use wharf_link::ServerCall;
use wharf_protocol::agent::network::{NetworkHost, NetworkRequest, NetworkResponse};
use wharf_protocol::agent::{AgentFailure, AgentResponse, FailureKind};
use wharf_protocol::network::host_veth;
use wharf_protocol::ContainerId;

/// What crosses the boundary of a network failure: a port in use is a conflict, a
/// container without a namespace to enter is not running.
pub fn net_failure(e: &NetError) -> AgentFailure {
    let kind = match e {
        NetError::PortBusy { .. } => FailureKind::Conflict,
        NetError::Netns { .. } => FailureKind::NotRunning,
        NetError::BridgeName(_) => FailureKind::InvalidInput,
        _ => FailureKind::Internal,
    };
    AgentFailure::new(kind, e.to_string())
}

/// Run blocking network work `f` on the agent's network host.
async fn blocking<T: Send + 'static>(
    net: &Arc<NetHost>,
    f: impl FnOnce(&NetHost) -> Result<T, NetError> + Send + 'static,
) -> Result<T, AgentFailure> {
    let net = net.clone();
    tokio::task::spawn_blocking(move || f(&net))
        .await
        .map_err(|e| AgentFailure::new(FailureKind::Internal, format!("network task failed: {e}")))?
        .map_err(|e| net_failure(&e))
}

/// The host PID of the container's main process, from its shim.
async fn init_pid(agent: &Agent, id: &ContainerId) -> Result<u32, AgentFailure> {
    let not_running = || {
        AgentFailure::new(
            FailureKind::NotRunning,
            format!("container {id} is not running"),
        )
    };
    let mut client = ShimClient::connect(&agent.state_dir(id))
        .await
        .map_err(|_| not_running())?;
    let state = client.state().await.map_err(|_| not_running())?;
    match state.pid {
        0 => Err(not_running()),
        pid => Ok(pid),
    }
}

/// Carry out one network request.
pub(super) async fn handle(agent: &Agent, request: NetworkRequest, mut call: ServerCall) {
    use NetworkRequest as R;
    let net = agent.net();
    let done = |r: Result<(), AgentFailure>| r.map(|()| AgentResponse::Done);
    let result = match request {
        R::Host => {
            let (bridge, subnet) = net.default_bridge();
            Ok(AgentResponse::Network(NetworkResponse::Host(NetworkHost {
                default_bridge: bridge.to_string(),
                default_subnet: subnet,
                routes: net.host_routes(),
            })))
        }
        R::EnsureBridge {
            bridge,
            subnet,
            gateway,
            icc,
        } => done(
            blocking(net, move |n| {
                n.ensure_bridge(&bridge, subnet, gateway)?;
                if !icc {
                    n.ensure_bridge_netfilter()?;
                }
                Ok(())
            })
            .await,
        ),
        R::RemoveBridge { bridge } => done(blocking(net, move |n| n.remove_bridge(&bridge)).await),
        R::Attach { id, plans } => match init_pid(agent, &id).await {
            Ok(pid) => done(blocking(net, move |n| n.attach(pid, &plans)).await),
            Err(e) => Err(e),
        },
        R::Detach { id, network } => {
            // The host end goes, and its peer in the container with it.
            let veth = host_veth(id.as_str(), &network);
            done(blocking(net, move |n| n.remove_bridge(&veth)).await)
        }
        R::SyncRules { rules } => done(blocking(net, move |n| n.sync_rules(|| rules)).await),
        R::EnsureJumps => done(blocking(net, NetHost::ensure_jumps).await),
        R::RemoveRules => done(
            blocking(net, |n| {
                n.remove_rules();
                Ok(())
            })
            .await,
        ),
        R::Reserve { id, ports } => done(
            ports
                .iter()
                .try_for_each(|p| net.reserve(id.as_str(), p))
                .map_err(|e| net_failure(&e)),
        ),
        R::Release { id } => {
            net.release_ports(id.as_str());
            Ok(AgentResponse::Done)
        }
        R::SetDnsTable { table } => agent
            .resolvers()
            .set(table)
            .await
            .map(|()| AgentResponse::Done)
            .map_err(|e| AgentFailure::new(FailureKind::Internal, e.to_string())),
        R::StopDns { network } => {
            agent.resolvers().stop(&network).await;
            Ok(AgentResponse::Done)
        }
    };
    call.respond_with(result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_port_in_use_is_a_conflict_with_dockers_text() {
        let f = net_failure(&NetError::PortBusy {
            addr: Ipv4Addr::UNSPECIFIED,
            port: 8080,
            message: "port is already allocated".into(),
        });
        assert_eq!(f.kind, FailureKind::Conflict);
        assert_eq!(
            f.message,
            "Bind for 0.0.0.0:8080 failed: port is already allocated"
        );
        let f = net_failure(&NetError::Netns {
            pid: 7,
            message: "gone".into(),
        });
        assert_eq!(f.kind, FailureKind::NotRunning);
        let f = net_failure(&NetError::NoInterface("br-x".into()));
        assert_eq!(f.kind, FailureKind::Internal);
    }
}
