//! Agent requests about the host's network side: bridges, container interfaces,
//! iptables rules and host-port reservations.
//!
//! The controller decides (networks, addresses, host ports, the whole [`RuleSet`], all in
//! the replicated state); the agent makes the kernel match and keeps what is a host fact
//! (which interfaces exist, a container's pid, the sockets holding published ports).

use crate::network::{AttachPlan, PortMapping, RuleSet, Subnet};
use crate::ContainerId;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A request about the host's network (see [`super::AgentRequest::Network`]).
/// bincode does not describe itself: new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkRequest {
    /// The host's default bridge and routes. Answer: `Host`.
    Host,
    /// Create bridge `bridge` with the gateway address if missing and bring it up; with
    /// `icc` false also let iptables see bridged traffic. Idempotent. Answer: `Done`.
    EnsureBridge {
        /// Interface name.
        bridge: String,
        /// Its subnet.
        subnet: Subnet,
        /// The bridge's own address.
        gateway: Ipv4Addr,
        /// Containers on the bridge may reach each other.
        icc: bool,
    },
    /// Delete bridge `bridge`; absent is fine. Answer: `Done`.
    RemoveBridge {
        /// Interface name.
        bridge: String,
    },
    /// Give the running container one interface per plan. Answer: `Done`, or
    /// `NotRunning` when the container has no process on this host.
    Attach {
        /// The container; the agent finds its process.
        id: ContainerId,
        /// The interfaces.
        plans: Vec<AttachPlan>,
    },
    /// Take the container's interface on network `network` away; absent is fine.
    /// Answer: `Done`.
    Detach {
        /// The container.
        id: ContainerId,
        /// The network's ID.
        network: String,
    },
    /// Make the instance's chains hold exactly `rules`. Answer: `Done`.
    SyncRules {
        /// The whole rule set, computed from the state.
        rules: RuleSet,
    },
    /// Create the instance's chains and their jumps if missing (start-up). Answer: `Done`.
    EnsureJumps,
    /// Remove the instance's jumps and chains (`wharf down`). Answer: `Done`.
    RemoveRules,
    /// Hold the host ports `ports` for container `id`, in order, with bound idle sockets;
    /// those already held for `id` are fine. Answer: `Done`, or `Conflict` at the first
    /// port that is in use (the ports held before it stay held; see `Release`).
    Reserve {
        /// The container owning the ports.
        id: ContainerId,
        /// Host ports to hold.
        ports: Vec<PortMapping>,
    },
    /// Let go of every host port held for container `id`. Answer: `Done`.
    Release {
        /// The container.
        id: ContainerId,
    },
}

/// What a [`NetworkRequest`] answers beyond `Done`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkResponse {
    /// The host's network facts.
    Host(NetworkHost),
}

/// The network facts of a host the controller plans with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkHost {
    /// The default bridge's interface name.
    pub default_bridge: String,
    /// The default bridge's subnet.
    pub default_subnet: Subnet,
    /// The host's routes, which new networks' subnets must not overlap.
    pub routes: Vec<Subnet>,
}
