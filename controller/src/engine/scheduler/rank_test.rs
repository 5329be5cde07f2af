//! The strategies, layer locality between equals, the node ID last, and the reason's
//! deciding factor.

use super::testkit::{add_container, add_image, hold, req, state};
use super::*;

fn binpack() -> Settings {
    Settings {
        strategy: Strategy::Binpack,
        ..Settings::default()
    }
}

fn placed(s: &ClusterState, r: &Request, settings: &Settings) -> Placement {
    match schedule(s, r, settings) {
        Ok(p) => p,
        Err(e) => panic!("not placed: {e}"),
    }
}

#[test]
fn spread_takes_the_fewest_containers_then_the_most_free_resources_then_the_lowest_id() {
    let (mut s, img) = state();
    let p = placed(&s, &req(img), &Settings::default());
    assert_eq!(p.node, NodeId(1));
    assert_eq!(
        p.reason,
        "spread: a, 0 containers as b, lowest node ID; holds 1/1 layers"
    );
    add_container(&mut s, 1, "x1", 1, 0, 0);
    let p = placed(&s, &req(img), &Settings::default());
    assert_eq!(p.node, NodeId(2));
    add_container(&mut s, 2, "x2", 2, 0, 0);
    add_container(&mut s, 3, "x3", 3, 0, 0);
    add_container(&mut s, 4, "x4", 1, 0, 0);
    let p = placed(&s, &req(img), &Settings::default());
    assert_eq!(p.node, NodeId(2));
    assert_eq!(
        p.reason,
        "spread: b, 1 container as c, lowest node ID; holds 1/1 layers"
    );
    // b and c have one container each; c has more memory free.
    s.containers.clear();
    s.index.reset();
    add_container(&mut s, 2, "x2", 2, 0, 512 << 20);
    add_container(&mut s, 3, "x3", 3, 0, 0);
    add_container(&mut s, 4, "x4", 1, 0, 0);
    add_container(&mut s, 6, "x6", 1, 0, 0);
    let p = placed(&s, &req(img), &Settings::default());
    assert_eq!(p.node, NodeId(3));
    assert_eq!(
        p.reason,
        "spread: c, 1 container as b, most free CPU and memory (0% CPU, 0% memory reserved with it); holds 1/1 layers"
    );
    add_container(&mut s, 7, "x7", 3, 0, 0);
    let p = placed(&s, &req(img), &Settings::default());
    assert_eq!(p.node, NodeId(2));
    assert_eq!(
        p.reason,
        "spread: b, 1 container, fewest of 3 candidates; holds 1/1 layers"
    );
}

#[test]
fn binpack_takes_the_fullest_node_that_fits_then_the_most_containers() {
    let (mut s, img) = state();
    // a: 1 of 2 CPUs; b: 1.5 of 2 CPUs; c: nothing reserved, two containers.
    add_container(&mut s, 1, "x1", 1, 1_000_000_000, 0);
    add_container(&mut s, 2, "x2", 2, 1_500_000_000, 0);
    add_container(&mut s, 3, "x3", 3, 0, 0);
    add_container(&mut s, 4, "x4", 3, 0, 0);
    let half = Request {
        nano_cpus: 500_000_000,
        ..req(img)
    };
    let p = placed(&s, &half, &binpack());
    assert_eq!(p.node, NodeId(2), "b fills up exactly");
    assert_eq!(
        p.reason,
        "binpack: b, 100% CPU, 0% memory reserved with it, the fullest that fits of 3 candidates; holds 1/1 layers"
    );
    let one = Request {
        nano_cpus: 1_000_000_000,
        ..req(img)
    };
    assert_eq!(
        placed(&s, &one, &binpack()).node,
        NodeId(1),
        "b no longer fits"
    );
    assert_eq!(placed(&s, &one, &Settings::default()).node, NodeId(1));
    // Nothing asked, nothing reserved anywhere: the most containers.
    s.containers.clear();
    s.index.reset();
    add_container(&mut s, 3, "x3", 3, 0, 0);
    add_container(&mut s, 4, "x4", 3, 0, 0);
    add_container(&mut s, 5, "x5", 2, 0, 0);
    let p = placed(&s, &req(img), &binpack());
    assert_eq!(p.node, NodeId(3));
    assert!(
        p.reason.ends_with("most containers (2); holds 1/1 layers"),
        "{}",
        p.reason
    );
    assert_eq!(placed(&s, &req(img), &Settings::default()).node, NodeId(1));
}

#[test]
fn layer_locality_decides_between_nodes_the_strategy_rates_equal() {
    let (mut s, _) = state();
    let app = add_image(&mut s, "app", &[1, 2, 3]);
    hold(&mut s, 2, &[2, 3]);
    hold(&mut s, 3, &[3]);
    let mut r = req(app);
    r.image.as_mut().unwrap().must_hold = false;
    // Equal containers: c holds 3 of 3 layers, b 2, a 1.
    let p = placed(&s, &r, &Settings::default());
    assert_eq!(p.node, NodeId(3));
    assert_eq!(
        p.reason,
        "spread: c, 0 containers as b, more of the image's layers than b (3 against 2); holds 3/3 layers"
    );
    assert_eq!(placed(&s, &r, &binpack()).node, NodeId(3));
    // Locality never overrides spread: c is busier.
    add_container(&mut s, 1, "x1", 3, 0, 0);
    assert_eq!(placed(&s, &r, &Settings::default()).node, NodeId(2));
    // Nor binpack: a is fuller.
    add_container(&mut s, 2, "x2", 1, 0, 64 << 20);
    let p = placed(&s, &r, &binpack());
    assert_eq!(p.node, NodeId(1));
    assert!(p.reason.contains("holds 1/3 layers"), "{}", p.reason);
    // But it comes before spread's free resources.
    s.containers.clear();
    s.index.reset();
    add_container(&mut s, 6, "x6", 3, 0, 512 << 20);
    add_container(&mut s, 7, "x7", 2, 0, 0);
    add_container(&mut s, 8, "x8", 1, 0, 0);
    assert_eq!(
        placed(&s, &r, &Settings::default()).node,
        NodeId(3),
        "more layers beats more free memory"
    );
}

#[test]
fn the_only_candidate_says_so() {
    let (s, img) = state();
    let r = super::testkit::with(req(img), &["node==b"]);
    let p = placed(&s, &r, &Settings::default());
    assert_eq!(
        p.reason,
        "spread: b, 0 containers, the only candidate; holds 1/1 layers; constraint node==b"
    );
    let p = placed(&s, &r, &binpack());
    assert!(
        p.reason
            .starts_with("binpack: b, 0% CPU, 0% memory reserved with it, the only candidate"),
        "{}",
        p.reason
    );
}

#[test]
fn new_images_go_to_the_least_loaded_nodes_first() {
    let (mut s, _) = state();
    add_container(&mut s, 1, "x1", 1, 0, 0);
    add_container(&mut s, 2, "x2", 1, 0, 0);
    add_container(&mut s, 3, "x3", 3, 0, 0);
    assert_eq!(image_targets(&s), vec![NodeId(2), NodeId(3), NodeId(1)]);
    s.nodes.get_mut(&NodeId(2)).unwrap().state = wharf_protocol::node_state::NodeState::Down;
    assert_eq!(image_targets(&s), vec![NodeId(3), NodeId(1)]);
}

/// 24 nodes holding the image, with 0 to 3 containers each (many equal), some holding
/// reservations: the fast path's inputs, at and around every kind of tie.
fn mixed_fleet(seed: u64) -> (ClusterState, ImageId) {
    let mut s = ClusterState::default();
    for id in 1..=24u64 {
        let n = super::testkit::node(id, &format!("n{id:02}"), &[]);
        s.nodes.insert(n.id, n);
    }
    let img = add_image(&mut s, "img", &[1]);
    hold(&mut s, 1, &(1..=24).collect::<Vec<_>>());
    let mut c = 0u32;
    for id in 1..=24u64 {
        let k = (id.wrapping_mul(seed | 1) >> 3) % 4;
        for j in 0..k {
            c += 1;
            let cpus = if (id + j) % 5 == 0 { 500_000_000 } else { 0 };
            add_container(&mut s, c, &format!("x{c}"), id, cpus, 0);
        }
    }
    (s, img)
}

#[test]
fn the_best_two_in_one_pass_are_the_first_two_of_the_full_order() {
    // Differential: the one-pass scan a placement uses against the full sort, for both
    // strategies, with and without a tie seed.
    for fleet in 0..8u64 {
        let (s, img) = mixed_fleet(fleet * 7 + 3);
        let v = ClusterView::new(&s);
        for strategy in [Strategy::Spread, Strategy::Binpack] {
            for tie_seed in (0..40u64).map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
                let settings = Settings {
                    strategy,
                    tie_seed,
                    ..Settings::default()
                };
                let r = req(img);
                let f = filter::filter(&v, &r, &settings).unwrap();
                let full = rank::rank(&f, &r, &settings);
                let (best, next) = rank::best_two(&f, &r, &settings);
                assert_eq!(best, full.first().copied());
                assert_eq!(next, full.get(1).copied());
            }
        }
    }
}

#[test]
fn a_tie_seed_spreads_equal_nodes_and_seed_zero_takes_the_lowest_id() {
    let (s, img) = state();
    let winners: std::collections::BTreeSet<NodeId> = (1..=60u64)
        .map(|seed| {
            let settings = Settings {
                tie_seed: seed,
                ..Settings::default()
            };
            let p = placed(&s, &req(img), &settings);
            assert!(
                p.reason.contains("picked at random among equals"),
                "{}",
                p.reason
            );
            p.node
        })
        .collect();
    assert_eq!(winners.len(), 3, "every equal node wins for some seed");
    // The same seed, the same node: deterministic for a state and a seed.
    let one = Settings {
        tie_seed: 42,
        ..Settings::default()
    };
    assert_eq!(
        placed(&s, &req(img), &one).node,
        placed(&s, &req(img), &one).node
    );
    assert_eq!(placed(&s, &req(img), &Settings::default()).node, NodeId(1));
}

/// `n` nodes holding the image (one layer), with 0 to 5 containers each, some with
/// reservations, some Down or paused: the sampled path's inputs.
fn fleet_of(n: u64, seed: u64) -> (ClusterState, ImageId) {
    let mut s = ClusterState::default();
    for id in 1..=n {
        let mut node = super::testkit::node(id, &format!("n{id:04}"), &[]);
        match (id.wrapping_mul(0x9e37_79b9_7f4a_7c15 ^ seed) >> 40) % 23 {
            0 => node.state = wharf_protocol::node_state::NodeState::Down,
            1 => node.availability = wharf_protocol::node_state::Availability::Pause,
            _ => {}
        }
        s.nodes.insert(node.id, node);
    }
    let img = add_image(&mut s, "img", &[1]);
    hold(&mut s, 1, &(1..=n).collect::<Vec<_>>());
    let mut c = 0u32;
    for id in 1..=n {
        let k = (id.wrapping_mul(0xbf58_476d_1ce4_e5b9 ^ seed) >> 40) % 6;
        for j in 0..k {
            c += 1;
            let cpus = if (id + j) % 7 == 0 { 500_000_000 } else { 0 };
            add_container(&mut s, c, &format!("x{c}"), id, cpus, 0);
        }
    }
    (s, img)
}

/// Differential: a placement among a sample is the plain path's placement over the
/// nodes of that sample (the others avoided, no sampling), for fleets at, just past and
/// far past the sample size; at or under it nothing is sampled and the plain path
/// decides over every node.
#[test]
fn a_sampled_placement_is_the_plain_placement_over_the_sample() {
    let k = 16;
    for n in [k as u64 - 1, k as u64, k as u64 + 1, 40, 300] {
        for seed in 1..=30u64 {
            let (s, img) = fleet_of(n, seed);
            let v = ClusterView::new(&s);
            let tie_seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let sampled = Settings {
                tie_seed,
                sample: k,
                ..Settings::default()
            };
            let plain = Settings {
                sample: 0,
                ..sampled
            };
            let r = req(img);
            let got = schedule_view(&v, &r, &sampled)
                .unwrap_or_else(|e| panic!("n {n}, seed {seed}: {e}"));
            let accepting: Vec<&wharf_protocol::node_state::NodeRecord> = s
                .nodes
                .values()
                .filter(|n| n.accepts_placements())
                .collect();
            let drawn: Vec<_> = if accepting.len() > k {
                filter::drawn_positions(accepting.len(), k, tie_seed)
                    .into_iter()
                    .map(|i| accepting[i])
                    .collect()
            } else {
                accepting.clone()
            };
            assert_eq!(drawn.len(), accepting.len().min(k), "n {n}");
            assert!(drawn.windows(2).all(|w| w[0].id < w[1].id), "in ID order");
            let mut over_sample = r.clone();
            over_sample.avoid = accepting
                .iter()
                .filter(|a| !drawn.iter().any(|d| d.id == a.id))
                .map(|a| a.id)
                .collect();
            let want = schedule_view(&v, &over_sample, &plain).unwrap();
            assert_eq!(got.node, want.node, "n {n}, seed {seed}");
            if accepting.len() > k {
                assert!(
                    got.reason
                        .contains(&format!("among {k} nodes drawn of {}", accepting.len())),
                    "{}",
                    got.reason
                );
            } else {
                assert_eq!(got, schedule_view(&v, &r, &plain).unwrap(), "not sampled");
            }
        }
    }
}

/// A sample that holds no node able to take the container falls back to every node:
/// the image is on one node only, and the create still lands there.
#[test]
fn a_sample_that_cannot_take_the_container_falls_back_to_every_node() {
    let (mut s, _) = fleet_of(200, 3);
    let only = add_image(&mut s, "rare", &[9]);
    hold(&mut s, 9, &[137]);
    let v = ClusterView::new(&s);
    for seed in 1..=20u64 {
        let settings = Settings {
            tie_seed: seed,
            sample: 8,
            ..Settings::default()
        };
        let p = schedule_view(&v, &req(only), &settings).unwrap();
        assert_eq!(p.node, NodeId(137), "seed {seed}");
        assert!(!p.reason.contains("drawn"), "{}", p.reason);
    }
}

/// Requests a sample could answer otherwise than the whole fleet are never sampled:
/// constraints and affinities (hard or soft), published ports; nor is binpack or seed 0.
#[test]
fn only_plain_spread_requests_with_a_seed_are_sampled() {
    let (s, img) = fleet_of(100, 5);
    let v = ClusterView::new(&s);
    let base = Settings {
        tie_seed: 77,
        sample: 8,
        ..Settings::default()
    };
    let sampled = |r: &Request, st: &Settings| {
        schedule_view(&v, r, st)
            .map(|p| p.reason.contains("drawn"))
            .unwrap_or(false)
    };
    assert!(sampled(&req(img), &base));
    let soft = super::testkit::with(req(img), &["constraint:node!=~n0001"]);
    assert!(!sampled(&soft, &base));
    let hard = super::testkit::with(req(img), &["constraint:node!=n0001"]);
    assert!(!sampled(&hard, &base));
    let mut ports = req(img);
    ports.host_ports = vec![wharf_protocol::network::PortMapping {
        proto: wharf_protocol::network::Proto::Tcp,
        container_port: 80,
        host_ip: std::net::Ipv4Addr::UNSPECIFIED,
        host_port: 8080,
    }];
    assert!(!sampled(&ports, &base));
    let binpack = Settings {
        strategy: Strategy::Binpack,
        ..base
    };
    assert!(!sampled(&req(img), &binpack));
    let seedless = Settings {
        tie_seed: 0,
        ..base
    };
    assert!(!sampled(&req(img), &seedless));
}

/// The dense partial Fisher-Yates shuffle the sample was first drawn with (an index per
/// node): the reference for [`filter::drawn_positions`].
fn dense_draw(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        rank::mix(state)
    };
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + (next() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    let mut chosen = idx[..k].to_vec();
    chosen.sort_unstable();
    chosen
}

/// Differential: the O(k) draw picks exactly the positions the dense shuffle does, for
/// fleets just past, well past and far past the sample, and a sample of all but one.
#[test]
fn the_sparse_draw_is_the_dense_shuffle() {
    for (n, k) in [
        (17, 16),
        (65, 64),
        (100, 64),
        (1000, 64),
        (10_000, 64),
        (50, 49),
        (9, 1),
    ] {
        for seed in [1u64, 3, 0x9e37_79b9_7f4a_7c15, u64::MAX, 12345] {
            let got = filter::drawn_positions(n, k, seed);
            assert_eq!(got, dense_draw(n, k, seed), "n {n}, k {k}, seed {seed}");
            assert_eq!(got.len(), k);
            assert!(got.windows(2).all(|w| w[0] < w[1]), "distinct, ascending");
            assert!(got.iter().all(|p| *p < n));
        }
    }
}

/// Differential: the layers each node holds are counted alike whichever way
/// `layers_held` goes (holders looked up per node, nodes per holder, or a merge of both
/// lists), at and past each side's one-in-eight threshold.
#[test]
fn layers_held_counts_alike_on_every_path() {
    for holders_n in [0u64, 1, 7, 8, 9, 63, 64, 65, 200, 1000] {
        for nodes_n in [1u64, 7, 8, 9, 64, 65, 300, 1000] {
            let mut s = ClusterState::default();
            for id in 1..=1000 {
                let node = super::testkit::node(id, &format!("n{id:04}"), &[]);
                s.nodes.insert(node.id, node);
            }
            let img = add_image(&mut s, "img", &[1, 2, 2]);
            // Layer 1 on `holders_n` nodes spread over the fleet; layer 2 on every third.
            let holders: Vec<u64> = (0..holders_n).map(|i| 1 + (i * 997) % 1000).collect();
            hold(&mut s, 1, &holders);
            hold(
                &mut s,
                2,
                &(1..=1000).filter(|i| i % 3 == 0).collect::<Vec<_>>(),
            );
            let nodes: Vec<&wharf_protocol::node_state::NodeRecord> = s
                .nodes
                .values()
                .filter(|n| (n.id.0 * 31) % 1000 < nodes_n)
                .collect();
            let got = filter::layers_held(&s, &s.images[&img], &nodes);
            let want: Vec<usize> = nodes
                .iter()
                .map(|n| usize::from(holders.contains(&n.id.0)) + usize::from(n.id.0 % 3 == 0))
                .collect();
            assert_eq!(got, want, "{holders_n} holders, {} nodes", nodes.len());
        }
    }
}

/// The engine's sampled path draws from the state's list of placeable nodes: that list
/// is the nodes accepting placements, and follows node commands as they apply.
#[test]
fn the_placeable_list_follows_node_commands() {
    use wharf_protocol::node_state::{Availability, NodeState};
    use wharf_protocol::state::Command;
    let (mut s, _) = fleet_of(40, 7);
    let listed = |s: &ClusterState| -> Vec<NodeId> {
        s.nodes
            .values()
            .filter(|n| n.accepts_placements())
            .map(|n| n.id)
            .collect()
    };
    assert_eq!(s.placeable_nodes(), listed(&s).as_slice());
    let first = s.placeable_nodes()[0];
    s.apply(&Command::SetNodeState {
        id: first,
        state: NodeState::Down,
        at_ns: 1,
    })
    .unwrap();
    assert!(!s.placeable_nodes().contains(&first));
    assert_eq!(s.placeable_nodes(), listed(&s).as_slice());
    let (desc, role) = (s.nodes[&first].description.clone(), s.nodes[&first].role);
    s.apply(&Command::UpdateNode {
        id: first,
        availability: Availability::Drain,
        labels: Default::default(),
        at_ns: 2,
    })
    .unwrap();
    s.apply(&Command::SetNodeState {
        id: first,
        state: NodeState::Ready,
        at_ns: 3,
    })
    .unwrap();
    assert!(!s.placeable_nodes().contains(&first), "drained");
    s.apply(&Command::UpdateNode {
        id: first,
        availability: Availability::Active,
        labels: Default::default(),
        at_ns: 4,
    })
    .unwrap();
    assert!(s.placeable_nodes().contains(&first));
    s.apply(&Command::RegisterNode {
        id: NodeId(5000),
        role,
        description: desc,
        at_ns: 5,
    })
    .unwrap();
    // Registered Down: not placeable until Ready.
    assert!(!s.placeable_nodes().contains(&NodeId(5000)));
    s.apply(&Command::SetNodeState {
        id: NodeId(5000),
        state: NodeState::Ready,
        at_ns: 6,
    })
    .unwrap();
    assert!(s.placeable_nodes().contains(&NodeId(5000)));
    assert_eq!(s.placeable_nodes(), listed(&s).as_slice());
}
