//! A container moved off a Down node (`RescheduleContainer`), containers that cannot
//! move (`SetPending`) and the cluster's settings (`UpdateSettings`).

use crate::fixtures::container;
use crate::ids::NodeId;
use crate::settings::{ClusterSettings, Strategy};
use crate::state::{ClusterState, Command, ContainerStatus, RestartState, StateError};

fn with(cmds: &[Command]) -> ClusterState {
    let mut s = ClusterState::default();
    for c in cmds {
        s.apply(c).unwrap();
    }
    s
}

#[test]
fn a_move_replaces_the_record_once_and_keeps_the_name() {
    let mut old = container(1, "web");
    old.node = NodeId(1);
    old.status = ContainerStatus::Running;
    let mut s = with(&[Command::CreateContainer {
        container: Box::new(old.clone()),
    }]);
    s.restarts.insert(old.id.clone(), RestartState::default());
    s.pending.insert(old.id.clone(), "nowhere to go".into());
    let mut new = container(2, "web");
    new.node = NodeId(2);
    let moved = Command::RescheduleContainer {
        old: old.id.clone(),
        container: Box::new(new.clone()),
    };
    s.apply(&moved).unwrap();
    assert_eq!(s.containers.len(), 1);
    assert_eq!(s.containers[&new.id].node, NodeId(2));
    assert!(!s.restarts.contains_key(&old.id) && s.pending.is_empty());
    // Once: a second move of the same container finds it gone.
    let mut again = container(3, "web");
    again.node = NodeId(3);
    let err = s
        .apply(&Command::RescheduleContainer {
            old: old.id.clone(),
            container: Box::new(again),
        })
        .unwrap_err();
    assert!(matches!(err, StateError::NoSuchContainer(_)), "{err:?}");
    assert_eq!(s.containers.len(), 1);

    // The successor's name must be free but for the container it replaces.
    let other = container(4, "db");
    s.apply(&Command::CreateContainer {
        container: Box::new(other),
    })
    .unwrap();
    let mut clash = container(5, "db");
    clash.node = NodeId(3);
    let err = s
        .apply(&Command::RescheduleContainer {
            old: new.id.clone(),
            container: Box::new(clash),
        })
        .unwrap_err();
    assert!(matches!(err, StateError::NameInUse { .. }), "{err:?}");
    assert!(s.containers.contains_key(&new.id), "nothing changed");
}

#[test]
fn pending_reasons_follow_their_container() {
    let c = container(1, "web");
    let mut s = with(&[Command::CreateContainer {
        container: Box::new(c.clone()),
    }]);
    let set = |reason: Option<&str>| Command::SetPending {
        id: c.id.clone(),
        reason: reason.map(str::to_string),
    };
    s.apply(&set(Some("pinned by volume data on node-2")))
        .unwrap();
    assert_eq!(s.pending[&c.id], "pinned by volume data on node-2");
    s.apply(&set(None)).unwrap();
    assert!(s.pending.is_empty());
    s.apply(&set(Some("again"))).unwrap();
    s.apply(&Command::RemoveContainer { id: c.id.clone() })
        .unwrap();
    assert!(s.pending.is_empty(), "removed with its container");
    assert!(s.apply(&set(Some("gone"))).is_err());
}

#[test]
fn settings_are_replaced_as_a_whole() {
    let mut s = ClusterState::default();
    assert_eq!(s.settings, ClusterSettings::default());
    let new = ClusterSettings {
        strategy: Strategy::Binpack,
        overcommit_milli: 1500,
        fencing: true,
        lease_ms: 2000,
    };
    s.apply(&Command::UpdateSettings { settings: new }).unwrap();
    assert_eq!(s.settings, new);
}
