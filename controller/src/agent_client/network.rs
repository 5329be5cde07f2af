//! Typed network calls: bridges, container interfaces, rules, host-port reservations,
//! user networks' resolvers.

use super::Agents;
use std::net::Ipv4Addr;
use wharf_link::unexpected;
use wharf_protocol::agent::network::{NetworkHost, NetworkRequest, NetworkResponse};
use wharf_protocol::agent::{AgentFailure, AgentRequest, AgentResponse};
use wharf_protocol::dns::DnsTable;
use wharf_protocol::network::{AttachPlan, PortMapping, RuleSet, Subnet};
use wharf_protocol::{ContainerId, NodeId};

fn req(r: NetworkRequest) -> AgentRequest {
    AgentRequest::Network(r)
}

impl Agents {
    /// The host's default bridge (name, subnet) and its routes.
    pub async fn network_host(&self, node: &NodeId) -> Result<NetworkHost, AgentFailure> {
        match self.call(node, req(NetworkRequest::Host)).await? {
            AgentResponse::Network(NetworkResponse::Host(h)) => Ok(h),
            other => Err(unexpected("network host", &other)),
        }
    }

    /// Make a network's bridge (and, without `icc`, let iptables see bridged traffic).
    pub async fn ensure_bridge(
        &self,
        node: &NodeId,
        bridge: &str,
        subnet: Subnet,
        gateway: Ipv4Addr,
        icc: bool,
    ) -> Result<(), AgentFailure> {
        let bridge = bridge.to_string();
        let r = NetworkRequest::EnsureBridge {
            bridge,
            subnet,
            gateway,
            icc,
        };
        self.done(node, req(r)).await
    }

    /// Delete a bridge; absent is fine.
    pub async fn remove_bridge(&self, node: &NodeId, bridge: &str) -> Result<(), AgentFailure> {
        let bridge = bridge.to_string();
        self.done(node, req(NetworkRequest::RemoveBridge { bridge }))
            .await
    }

    /// Give a running container the interfaces of `plans`.
    pub async fn attach_interfaces(
        &self,
        node: &NodeId,
        id: &ContainerId,
        plans: Vec<AttachPlan>,
    ) -> Result<(), AgentFailure> {
        let id = id.clone();
        self.done(node, req(NetworkRequest::Attach { id, plans }))
            .await
    }

    /// Take a container's interface on network `network` (its ID) away.
    pub async fn detach_interface(
        &self,
        node: &NodeId,
        id: &ContainerId,
        network: &str,
    ) -> Result<(), AgentFailure> {
        let (id, network) = (id.clone(), network.to_string());
        self.done(node, req(NetworkRequest::Detach { id, network }))
            .await
    }

    /// Make the host's rules equal `rules`.
    pub async fn sync_rules(&self, node: &NodeId, rules: RuleSet) -> Result<(), AgentFailure> {
        self.done(node, req(NetworkRequest::SyncRules { rules }))
            .await
    }

    /// Create the instance's chains and jumps if missing (start-up).
    pub async fn ensure_jumps(&self, node: &NodeId) -> Result<(), AgentFailure> {
        self.done(node, req(NetworkRequest::EnsureJumps)).await
    }

    /// Remove the instance's chains and jumps (`wharf down`).
    pub async fn remove_rules(&self, node: &NodeId) -> Result<(), AgentFailure> {
        self.done(node, req(NetworkRequest::RemoveRules)).await
    }

    /// Hold host ports for a container; a port in use fails as `Conflict`.
    pub async fn reserve_ports(
        &self,
        node: &NodeId,
        id: &ContainerId,
        ports: Vec<PortMapping>,
    ) -> Result<(), AgentFailure> {
        let id = id.clone();
        self.done(node, req(NetworkRequest::Reserve { id, ports }))
            .await
    }

    /// Let go of every host port held for a container.
    pub async fn release_ports(&self, node: &NodeId, id: &ContainerId) -> Result<(), AgentFailure> {
        let id = id.clone();
        self.done(node, req(NetworkRequest::Release { id })).await
    }

    /// Have the resolver of `table.network` on `node` answer from `table` (started if it
    /// is not running; an older table than it has is ignored).
    pub async fn set_dns_table(&self, node: &NodeId, table: DnsTable) -> Result<(), AgentFailure> {
        self.done(node, req(NetworkRequest::SetDnsTable { table }))
            .await
    }

    /// Stop the resolver of network `network` on `node`; absent is fine.
    pub async fn stop_dns(&self, node: &NodeId, network: &str) -> Result<(), AgentFailure> {
        let network = network.to_string();
        self.done(node, req(NetworkRequest::StopDns { network }))
            .await
    }
}
