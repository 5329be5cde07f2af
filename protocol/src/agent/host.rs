//! Agent requests about the host as a whole: what it holds.

use crate::ids::{ChainId, DiffId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A request about the host (see [`super::AgentRequest::Host`]).
/// bincode does not describe itself: new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostRequest {
    /// The layers the host holds. Answer: `Inventory`.
    Inventory,
    /// What `docker info` shows of the host. Answer: `Info`.
    Info,
    /// The containers the host holds (its containers directory), with whether each
    /// runs, for the controller's reconcile. Answer: `Containers`. Protocol 3.
    Containers,
    /// How the host fences itself: once no controller has been heard for `lease_ms`, it
    /// kills `movable` (the containers the leader would move elsewhere); `lease_ms` 0
    /// turns fencing off. Replaces what was sent before; kept on disk. Answer: `Done`.
    /// Protocol 3.
    Fence {
        /// The lease in milliseconds, 0: off.
        lease_ms: u64,
        /// The containers to stop when the lease runs out.
        movable: Vec<crate::ContainerId>,
    },
    /// A controller's heartbeat: the host has heard a controller (its fence's lease
    /// starts again), and learns how much that controller stretches its heartbeat period
    /// and grace now, in thousandths (1000: as configured). In a large fleet a controller
    /// beats less often; the host stretches its lease by as much, so that a longer
    /// period does not fence it and the lease stays shorter than the grace. Answer:
    /// `Done`. Protocol 4.
    Beat {
        /// The controller's stretch, in thousandths (at least 1000).
        stretch_milli: u32,
    },
}

/// What a [`HostRequest`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostResponse {
    /// The layers the host holds.
    Inventory(LayerInventory),
    /// What `docker info` shows of the host.
    Info(HostInfo),
    /// The containers the host holds, by ID.
    Containers(Vec<HostContainer>),
}

/// A container as its host finds it (see [`HostRequest::Containers`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostContainer {
    /// Its ID (the name of its state folder).
    pub id: crate::ContainerId,
    /// Its main process runs (its shim answers and has no exit recorded).
    pub running: bool,
    /// Seconds since its state folder last changed (made, started, stopped): a young
    /// one may belong to a request still under way.
    pub age_secs: u64,
}

/// What `docker info` shows of a host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The agent's data directory (`DockerRootDir`).
    pub root_dir: String,
}

/// The layers a host holds: unpacked layers by chain (what containers run on) and the
/// canonical tars kept by DiffID. The controller names them by DiffID with the images it
/// knows (a chain is its image's layers up to one DiffID).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInventory {
    /// Unpacked image layers.
    pub chains: BTreeSet<ChainId>,
    /// Canonical layer tars.
    pub tars: BTreeSet<DiffId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{AgentRequest, AgentResponse};
    use crate::codec::{decode, encode};
    use crate::ContainerId;

    /// The host's container list: variants after every older one, so the other requests
    /// keep their bytes.
    #[test]
    fn golden_bytes_of_the_container_list() {
        let request = AgentRequest::Host(HostRequest::Containers);
        let want = vec![1u8, 1, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(encode(&request).unwrap(), want);
        assert_eq!(decode::<AgentRequest>(&want).unwrap(), request);

        let answer = AgentResponse::Host(HostResponse::Containers(vec![HostContainer {
            id: ContainerId::from_bytes([0xab; 32]),
            running: true,
            age_secs: 0x0102,
        }]));
        let mut want = vec![1u8, 3, 0, 0, 0, 2, 0, 0, 0];
        want.extend(1u64.to_le_bytes());
        want.extend(64u64.to_le_bytes());
        want.extend("ab".repeat(32).as_bytes());
        want.push(1);
        want.extend(0x0102u64.to_le_bytes());
        assert_eq!(encode(&answer).unwrap(), want);
        assert_eq!(decode::<AgentResponse>(&want).unwrap(), answer);
    }

    #[test]
    fn golden_bytes_of_a_fence() {
        let request = AgentRequest::Host(HostRequest::Fence {
            lease_ms: 0x0102,
            movable: vec![ContainerId::from_bytes([0xab; 32])],
        });
        let mut want = vec![1u8, 1, 0, 0, 0, 3, 0, 0, 0];
        want.extend(0x0102u64.to_le_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend(64u64.to_le_bytes());
        want.extend("ab".repeat(32).as_bytes());
        assert_eq!(encode(&request).unwrap(), want);
        assert_eq!(decode::<AgentRequest>(&want).unwrap(), request);
    }

    #[test]
    fn golden_bytes_of_a_beat() {
        let request = AgentRequest::Host(HostRequest::Beat {
            stretch_milli: 0x0102_0304,
        });
        let want = vec![1u8, 1, 0, 0, 0, 4, 0, 0, 0, 4, 3, 2, 1];
        assert_eq!(encode(&request).unwrap(), want);
        assert_eq!(decode::<AgentRequest>(&want).unwrap(), request);
    }
}
