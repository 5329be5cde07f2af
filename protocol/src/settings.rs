//! Cluster-wide settings (`wharf cluster update`): how the scheduler ranks nodes, how far
//! it may overcommit, and whether agents fence themselves when they lose every
//! controller. Part of the replicated state (format 7), changed by
//! [`crate::state::Command::UpdateSettings`].

use serde::{Deserialize, Serialize};

/// How the scheduler ranks the nodes that pass its filters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Fewest containers first.
    #[default]
    Spread,
    /// Fullest node that still fits first.
    Binpack,
}

impl Strategy {
    /// The name users write (`spread`, `binpack`).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Spread => "spread",
            Strategy::Binpack => "binpack",
        }
    }

    /// Parse a name users write.
    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "spread" => Some(Strategy::Spread),
            "binpack" => Some(Strategy::Binpack),
            _ => None,
        }
    }
}

/// The cluster's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// How the scheduler ranks nodes.
    pub strategy: Strategy,
    /// CPU and memory that may be reserved on a node, in thousandths of what it has
    /// (1000: no overcommit; 1500: half as much again).
    pub overcommit_milli: u32,
    /// Agents that lose every controller for `lease_ms` stop their movable containers
    /// (so that a partitioned host runs no copy of a container moved elsewhere).
    pub fencing: bool,
    /// The lease of an agent without any controller, in milliseconds.
    pub lease_ms: u64,
}

/// Fewest thousandths `overcommit_milli` may be (no overcommit) and the most (10×).
pub const OVERCOMMIT_RANGE: (u32, u32) = (1000, 10_000);

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            strategy: Strategy::Spread,
            overcommit_milli: 1000,
            fencing: false,
            lease_ms: 3000,
        }
    }
}

impl ClusterSettings {
    /// Why these settings cannot be recorded, if they cannot (pure): the overcommit
    /// outside [`OVERCOMMIT_RANGE`], a lease of zero or longer than `grace_ms` (a fenced
    /// agent must stop its containers before the leader moves them).
    pub fn check(&self, grace_ms: u64) -> Result<(), String> {
        let (lo, hi) = OVERCOMMIT_RANGE;
        if !(lo..=hi).contains(&self.overcommit_milli) {
            return Err(format!(
                "invalid overcommit {}: it must be between {} and {}",
                f64::from(self.overcommit_milli) / 1000.0,
                f64::from(lo) / 1000.0,
                f64::from(hi) / 1000.0
            ));
        }
        if self.lease_ms == 0 || self.lease_ms >= grace_ms {
            return Err(format!(
                "invalid lease {} s: it must be above 0 and shorter than the heartbeat grace ({} s)",
                self.lease_ms as f64 / 1000.0,
                grace_ms as f64 / 1000.0
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn settings_are_checked_and_keep_their_bytes() {
        let s = ClusterSettings::default();
        assert_eq!(s.check(4000), Ok(()));
        let over = |m| ClusterSettings {
            overcommit_milli: m,
            ..s
        };
        assert!(over(999)
            .check(4000)
            .unwrap_err()
            .contains("between 1 and 10"));
        assert!(over(10_001).check(4000).is_err());
        assert_eq!(over(1500).check(4000), Ok(()));
        let lease = |ms| ClusterSettings { lease_ms: ms, ..s };
        assert!(lease(0).check(4000).is_err());
        assert!(lease(4000)
            .check(4000)
            .unwrap_err()
            .contains("shorter than the heartbeat grace (4 s)"));
        assert_eq!(Strategy::parse("binpack"), Some(Strategy::Binpack));
        assert_eq!(Strategy::parse("random"), None);
        let b = ClusterSettings {
            strategy: Strategy::Binpack,
            overcommit_milli: 0x0102,
            fencing: true,
            lease_ms: 0x0304,
        };
        // The codec's version byte, then the fields in order.
        let mut want = vec![1u8, 1, 0, 0, 0, 2, 1, 0, 0, 1];
        want.extend(0x0304u64.to_le_bytes());
        assert_eq!(encode(&b).unwrap(), want);
        assert_eq!(decode::<ClusterSettings>(&want).unwrap(), b);
    }
}
