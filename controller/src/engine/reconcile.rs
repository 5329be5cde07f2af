//! Reconcile a node's containers with the replicated state (pure): what the controller
//! does when the node's agent connects (after a restart of the agent, of the controller,
//! or a new leader taking over the node's duties) and every [`PERIOD`] after.
//!
//! ```text
//!  ClusterState ─ records on the node ──► desired ─┐
//!                                                  ├─► reconcile ─► [Adopt | Stop | Remove]
//!  agent ─ HostRequest::Containers ──► observed ───┘        │
//!                                                           ▼
//!                              engine/nodes.rs carries each action out on the node
//! ```
//!
//! | recorded on this node        | on the host                    | action            |
//! |------------------------------|--------------------------------|-------------------|
//! | running or paused            | anything, or nothing           | `Adopt`: watch it; an exit while nobody watched, or a missing container (255), is recorded by its monitor, and its restart policy applies |
//! | created, exited or dead      | running, for `GRACE_SECS`      | `Stop`: a run the state does not know of (a start whose record was lost with its controller) |
//! | created, exited or dead      | not running, or nothing        | nothing           |
//! | no record (or another node's)| anything                       | `Remove`: removed or moved while the node was away, or a create undone halfway |
//!
//! A record always comes before its host's copy (a create records the container, then
//! its agent makes it) and the copy goes before its record (a removal, an undone create),
//! and the host is listed before the records are read (linearizably): so a copy without a
//! record is never a request under way, and goes at once. A run the state does not know
//! is different: a start runs the process before it records it, so one that changed
//! less than [`GRACE_SECS`] ago is left for the next round.

use std::collections::BTreeMap;
use std::time::Duration;
use wharf_protocol::agent::host::HostContainer;
use wharf_protocol::state::ContainerStatus;
use wharf_protocol::ContainerId;

/// How long a container on a host must have been left unchanged before the state may
/// overrule it: longer than any request takes between its agent call and its record.
pub const GRACE_SECS: u64 = 30;

/// How often the containers of a connected node are reconciled again.
pub const PERIOD: Duration = Duration::from_secs(30);

/// A container the state records on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Its ID.
    pub id: ContainerId,
    /// Its recorded status.
    pub status: ContainerStatus,
}

/// What to do about one container of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Recorded as running or paused: watch its process (a monitor records its exit).
    Adopt(ContainerId),
    /// Recorded as not running, yet its process runs: kill it and release its run.
    Stop(ContainerId),
    /// On the host without a record on this node: kill it if it runs, release its
    /// network and remove its files.
    Remove {
        /// The container.
        id: ContainerId,
        /// Its process runs.
        running: bool,
    },
}

/// What to do to bring the node's containers (`observed`) in line with the records on
/// the node (`desired`), in ID order. Pure.
pub fn reconcile(desired: &[Desired], observed: &[HostContainer], grace_secs: u64) -> Vec<Action> {
    let on_host: BTreeMap<&ContainerId, &HostContainer> =
        observed.iter().map(|o| (&o.id, o)).collect();
    let recorded: BTreeMap<&ContainerId, ContainerStatus> =
        desired.iter().map(|d| (&d.id, d.status)).collect();
    let mut actions = Vec::new();
    for (id, status) in &recorded {
        let host = on_host.get(id);
        match status {
            ContainerStatus::Running | ContainerStatus::Paused => {
                actions.push((*id, Action::Adopt((*id).clone())));
            }
            ContainerStatus::Created | ContainerStatus::Exited | ContainerStatus::Dead => {
                if host.is_some_and(|h| h.running && h.age_secs >= grace_secs) {
                    actions.push((*id, Action::Stop((*id).clone())));
                }
            }
        }
    }
    for (id, h) in &on_host {
        if !recorded.contains_key(id) {
            actions.push((
                *id,
                Action::Remove {
                    id: (*id).clone(),
                    running: h.running,
                },
            ));
        }
    }
    actions.sort_by(|a, b| a.0.cmp(b.0));
    actions.into_iter().map(|(_, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ContainerId {
        ContainerId::from_bytes([n; 32])
    }

    fn want(n: u8, status: ContainerStatus) -> Desired {
        Desired { id: id(n), status }
    }

    fn seen(n: u8, running: bool, age_secs: u64) -> HostContainer {
        HostContainer {
            id: id(n),
            running,
            age_secs,
        }
    }

    #[test]
    fn running_records_are_adopted_whatever_the_host_shows() {
        let desired = [
            want(1, ContainerStatus::Running),
            want(2, ContainerStatus::Running),
            want(3, ContainerStatus::Paused),
        ];
        // 1 still runs, 2 ended while nobody watched, 3 is gone from the host.
        let observed = [seen(1, true, 500), seen(2, false, 500)];
        assert_eq!(
            reconcile(&desired, &observed, GRACE_SECS),
            vec![
                Action::Adopt(id(1)),
                Action::Adopt(id(2)),
                Action::Adopt(id(3))
            ]
        );
    }

    #[test]
    fn a_run_the_state_does_not_know_is_stopped_once_it_is_old_enough() {
        for status in [
            ContainerStatus::Created,
            ContainerStatus::Exited,
            ContainerStatus::Dead,
        ] {
            let desired = [want(1, status)];
            assert_eq!(
                reconcile(&desired, &[seen(1, true, GRACE_SECS)], GRACE_SECS),
                vec![Action::Stop(id(1))],
                "{status:?}"
            );
            // A start under way: its process is younger than the grace.
            assert!(reconcile(&desired, &[seen(1, true, GRACE_SECS - 1)], GRACE_SECS).is_empty());
            // Not running, or not made yet (a create under way): as recorded.
            assert!(reconcile(&desired, &[seen(1, false, 900)], GRACE_SECS).is_empty());
            assert!(reconcile(&desired, &[], GRACE_SECS).is_empty());
        }
    }

    #[test]
    fn containers_without_a_record_are_removed_whatever_their_age() {
        let observed = [
            seen(1, true, GRACE_SECS),
            seen(2, false, 10_000),
            seen(3, true, 0),
        ];
        assert_eq!(
            reconcile(&[], &observed, GRACE_SECS),
            vec![
                Action::Remove {
                    id: id(1),
                    running: true
                },
                Action::Remove {
                    id: id(2),
                    running: false
                },
                Action::Remove {
                    id: id(3),
                    running: true
                },
            ],
        );
    }

    #[test]
    fn a_node_in_line_with_its_records_needs_nothing_but_its_monitors() {
        let desired = [
            want(1, ContainerStatus::Created),
            want(2, ContainerStatus::Exited),
            want(3, ContainerStatus::Running),
        ];
        let observed = [seen(1, false, 99), seen(2, false, 99), seen(3, true, 99)];
        assert_eq!(
            reconcile(&desired, &observed, GRACE_SECS),
            vec![Action::Adopt(id(3))]
        );
    }

    #[test]
    fn actions_come_in_id_order_whatever_the_input_order() {
        let desired = [
            want(9, ContainerStatus::Running),
            want(4, ContainerStatus::Exited),
        ];
        let observed = [seen(7, false, 99), seen(4, true, 99), seen(2, true, 99)];
        let a = reconcile(&desired, &observed, GRACE_SECS);
        let mut d2 = desired.to_vec();
        d2.reverse();
        let mut o2 = observed.to_vec();
        o2.reverse();
        assert_eq!(a, reconcile(&d2, &o2, GRACE_SECS));
        assert_eq!(
            a,
            vec![
                Action::Remove {
                    id: id(2),
                    running: true
                },
                Action::Stop(id(4)),
                Action::Remove {
                    id: id(7),
                    running: false
                },
                Action::Adopt(id(9)),
            ]
        );
    }
}
