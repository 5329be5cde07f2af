//! Agent requests about the host's network side: bridges, container interfaces,
//! iptables rules, host-port reservations and the user networks' embedded DNS resolvers.
//!
//! The controller decides (networks, addresses, host ports, the whole [`RuleSet`], all in
//! the replicated state); the agent makes the kernel match and keeps what is a host fact
//! (which interfaces exist, a container's pid, the sockets holding published ports).

use crate::dns::DnsTable;
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
    /// Serve the names of `table` on its gateway, port 53 UDP (the network's embedded
    /// resolver), starting it if needed; a table older than the one served (a lower
    /// revision) is ignored. Answer: `Done`, or `Internal` when the address cannot be
    /// bound.
    SetDnsTable {
        /// The network's whole table.
        table: DnsTable,
    },
    /// Stop the resolver of network `network`; absent is fine. Answer: `Done`.
    StopDns {
        /// The network's ID.
        network: String,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentRequest;
    use crate::codec::{decode, encode};
    use crate::dns::DnsRecord;

    fn text(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend(s.as_bytes());
        v
    }

    /// The resolver's requests: after every older variant (10 and 11), so agents and
    /// controllers of other builds read the others unchanged.
    #[test]
    fn golden_bytes_of_the_dns_requests() {
        let table = DnsTable {
            network: "n".into(),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            subnet: Subnet::parse("10.0.0.0/24").unwrap(),
            internal: false,
            revision: 9,
            records: vec![DnsRecord {
                id: ContainerId::from_bytes([0xab; 32]),
                names: vec!["web".into(), "alias".into()],
                ip: Ipv4Addr::new(10, 0, 0, 2),
            }],
        };
        let request = AgentRequest::Network(NetworkRequest::SetDnsTable {
            table: table.clone(),
        });
        let mut want = vec![1u8, 2, 0, 0, 0, 10, 0, 0, 0];
        want.extend(text("n"));
        want.extend([10, 0, 0, 1, 10, 0, 0, 0, 24, 0]);
        want.extend(9u64.to_le_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend(text(&"ab".repeat(32)));
        want.extend(2u64.to_le_bytes());
        want.extend(text("web"));
        want.extend(text("alias"));
        want.extend([10, 0, 0, 2]);
        assert_eq!(encode(&request).unwrap(), want);
        assert_eq!(decode::<AgentRequest>(&want).unwrap(), request);

        let stop = AgentRequest::Network(NetworkRequest::StopDns {
            network: "n".into(),
        });
        let mut want = vec![1u8, 2, 0, 0, 0, 11, 0, 0, 0];
        want.extend(text("n"));
        assert_eq!(encode(&stop).unwrap(), want);
        assert_eq!(decode::<AgentRequest>(&want).unwrap(), stop);

        let release = AgentRequest::Network(NetworkRequest::Release {
            id: ContainerId::from_bytes([0xab; 32]),
        });
        assert_eq!(
            encode(&release).unwrap()[..9],
            [1, 2, 0, 0, 0, 9, 0, 0, 0],
            "the last variant before them keeps its number"
        );
    }
}
