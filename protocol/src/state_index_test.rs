//! The state's derived index (names, per-node usage) stays what a fresh build from the
//! containers gives, through creates, moves, renames, removes and refused commands,
//! whether it was built before the changes or only read after them.

use crate::fixtures::container;
use crate::ids::NodeId;
use crate::state::{ClusterState, Command};
use crate::state_index::{StateIndex, Usage};

/// A small deterministic generator (no dependency): xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn fresh(s: &ClusterState) -> StateIndex {
    StateIndex::build(s.containers.values())
}

/// One random command over a pool of 40 IDs, 12 names and 4 nodes: many clash.
fn random_command(r: &mut Rng) -> Command {
    let n = r.below(40) as u8 + 1;
    let name = format!("c{}", r.below(12));
    let mut c = container(n, &name);
    c.node = NodeId(r.below(4) + 1);
    c.run.host.resources.nano_cpus = r.below(3) as i64 * 500_000_000;
    c.run.host.resources.memory = r.below(3) as i64 * (64 << 20);
    match r.below(4) {
        0 | 1 => Command::CreateContainer {
            container: Box::new(c),
        },
        2 => Command::RenameContainer {
            id: c.id,
            name: name.parse().unwrap(),
        },
        _ if r.below(2) == 0 => Command::RemoveContainer { id: c.id },
        _ => {
            let old = container(r.below(40) as u8 + 1, "x0").id;
            Command::RescheduleContainer {
                old,
                container: Box::new(c),
            }
        }
    }
}

#[test]
fn the_index_is_a_fresh_build_after_every_command() {
    for seed in 1..=16u64 {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut built = ClusterState::default();
        built.index(); // kept up to date by apply from here on
        let mut lazy = ClusterState::default();
        for step in 0..400 {
            let cmd = random_command(&mut r);
            let a = built.apply(&cmd);
            let b = lazy.apply(&cmd);
            assert_eq!(a, b, "seed {seed} step {step}");
            assert_eq!(
                *built.index(),
                fresh(&built),
                "seed {seed} step {step}: {cmd:?}"
            );
        }
        assert_eq!(*lazy.index(), fresh(&lazy), "seed {seed}");
        assert_eq!(built, lazy);
    }
}

#[test]
fn names_and_usage_answer_from_the_index() {
    let mut s = ClusterState::default();
    let mut web = container(1, "web");
    web.node = NodeId(2);
    web.run.host.resources.nano_cpus = 1_500_000_000;
    web.run.host.resources.memory = 256 << 20;
    s.apply(&Command::CreateContainer {
        container: Box::new(web.clone()),
    })
    .unwrap();
    assert_eq!(s.name_holder("web"), Some(&web.id));
    assert_eq!(s.name_holder("db"), None);
    assert_eq!(
        s.index().usage(NodeId(2)),
        Usage {
            containers: 1,
            nano_cpus: 1_500_000_000,
            memory: 256 << 20
        }
    );
    // A second container may not take the name; a rename frees the old one.
    let err = s.apply(&Command::CreateContainer {
        container: Box::new(container(2, "web")),
    });
    assert!(err.is_err());
    s.apply(&Command::RenameContainer {
        id: web.id.clone(),
        name: "front".parse().unwrap(),
    })
    .unwrap();
    assert_eq!(s.name_holder("web"), None);
    assert_eq!(s.name_holder("front"), Some(&web.id));
    s.apply(&Command::RemoveContainer { id: web.id.clone() })
        .unwrap();
    assert_eq!(s.name_holder("front"), None);
    assert_eq!(s.index().usage(NodeId(2)), Usage::default());
    // A decoded state has no cache and builds it on first read.
    s.apply(&Command::CreateContainer {
        container: Box::new(web.clone()),
    })
    .unwrap();
    let bytes = crate::codec::encode(&s).unwrap();
    let back: ClusterState = crate::codec::decode(&bytes).unwrap();
    assert_eq!(back.name_holder("web"), Some(&web.id));
    assert_eq!(back.index().usage(NodeId(2)).containers, 1);
}
