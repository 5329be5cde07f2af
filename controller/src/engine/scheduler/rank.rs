//! Ranking the candidates: the strategy's order, layer locality between equals, the
//! node ID last, and the words of the placement reason that say what decided.
//!
//! ```text
//!  spread : fewest containers ─► most image layers held ─► least reserved ─► tie
//!  binpack: most reserved     ─► most image layers held ─► most containers ─► tie
//!  tie    : lowest ID, or (a seed per placement) a hash of the ID and the seed
//! ```
//!
//! "Reserved" is the share of the node's CPU and of its memory (capacity × overcommit)
//! its containers would reserve with this one, in millionths, summed; a resource the
//! node did not report counts 0. Integer keys: the same state gives the same order on
//! every controller.

use super::filter::{Candidate, Filtered};
use super::view::ClusterView;
use super::{Request, Settings, Strategy};
use std::cmp::Reverse;
use wharf_protocol::node_state::NodeRecord;
use wharf_protocol::NodeId;

/// One candidate's figures, as the ranking compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Score {
    /// The node.
    pub node: NodeId,
    /// Containers on it now.
    pub containers: u32,
    /// Distinct layers of the container's image it holds.
    pub layers: usize,
    /// Its CPU reserved with this container, in millionths of its capacity.
    pub cpu_ppm: u64,
    /// Its memory reserved with this container, in millionths of its capacity.
    pub mem_ppm: u64,
}

impl Score {
    fn reserved(&self) -> u64 {
        self.cpu_ppm + self.mem_ppm
    }

    /// The strategy's sort key: smaller is better; equals are ordered by [`tie`].
    fn key(&self, settings: &Settings) -> (u64, Reverse<usize>, u64, u64, NodeId) {
        let tie = tie(self.node, settings.tie_seed);
        match settings.strategy {
            Strategy::Spread => (
                u64::from(self.containers),
                Reverse(self.layers),
                self.reserved(),
                tie,
                self.node,
            ),
            Strategy::Binpack => (
                u64::MAX - self.reserved(),
                Reverse(self.layers),
                u64::MAX - u64::from(self.containers),
                tie,
                self.node,
            ),
        }
    }
}

/// The order of nodes the strategy rates equal: by ID for seed 0, else by a hash of the
/// ID and the seed (splitmix64's finalizer: a different order for each seed).
fn tie(node: NodeId, seed: u64) -> u64 {
    if seed == 0 {
        return 0;
    }
    mix(node.0 ^ seed)
}

/// splitmix64's finalizer: a well-spread 64-bit hash of `z` (pure). The tie order and
/// the node sample ([`super::filter::drawn_positions`]) both draw from it.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `(used + asked) / capacity` in millionths; 0 when the node reported no capacity.
fn share(used: i64, asked: i64, capacity: u128, overcommit: f64) -> u64 {
    let cap = (capacity as f64 * overcommit) as u128;
    if cap == 0 {
        return 0;
    }
    let used = u128::try_from(used.max(0).saturating_add(asked.max(0))).unwrap_or(0);
    u64::try_from(used * 1_000_000 / cap).unwrap_or(u64::MAX / 4)
}

/// The figures of candidate `c` for `req`.
pub fn score(c: &Candidate, req: &Request, settings: &Settings) -> Score {
    let (n, u) = (c.node, c.usage);
    Score {
        node: n.id,
        containers: u.containers,
        layers: c.layers,
        cpu_ppm: share(
            u.nano_cpus,
            req.nano_cpus,
            u128::from(n.description.cpus) * 1_000_000_000,
            settings.overcommit,
        ),
        mem_ppm: share(
            u.memory,
            req.memory,
            u128::from(n.description.memory),
            settings.overcommit,
        ),
    }
}

/// The candidates of `f`, best first (pure, a total order: the node ID breaks ties). A
/// placement needs only the first two, [`best_two`]; this full order is what that one
/// pass is tested against.
pub fn rank(f: &Filtered, req: &Request, settings: &Settings) -> Vec<Score> {
    let mut scores: Vec<Score> = f
        .candidates
        .iter()
        .map(|c| score(c, req, settings))
        .collect();
    scores.sort_unstable_by_key(|s| s.key(settings));
    scores
}

/// The first two of [`rank`]'s order, in one pass (a placement needs the best and the
/// runner-up its reason compares with, not the whole order of 1,000s of nodes).
pub fn best_two(
    f: &Filtered,
    req: &Request,
    settings: &Settings,
) -> (Option<Score>, Option<Score>) {
    let mut best: Option<(Score, _)> = None;
    let mut next: Option<(Score, _)> = None;
    for c in &f.candidates {
        let s = score(c, req, settings);
        let k = s.key(settings);
        match &best {
            Some((_, bk)) if k >= *bk => {
                if next.as_ref().is_none_or(|(_, nk)| k < *nk) {
                    next = Some((s, k));
                }
            }
            _ => {
                next = best.take();
                best = Some((s, k));
            }
        }
    }
    (best.map(|b| b.0), next.map(|n| n.0))
}

fn pct(ppm: u64) -> u64 {
    ppm / 10_000
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What made `best` win over `next` (the runner-up), in the reason's words:
/// `3 containers, fewest of 5 candidates`.
pub fn deciding_factor(
    v: &ClusterView,
    settings: &Settings,
    best: &Score,
    next: Option<&Score>,
    candidates: usize,
) -> String {
    let strategy = settings.strategy;
    let tie = if settings.tie_seed == 0 {
        "lowest node ID"
    } else {
        "picked at random among equals"
    };
    let c = best.containers;
    let containers = format!("{c} container{}", plural(c));
    let reserved = format!(
        "{}% CPU, {}% memory reserved with it",
        pct(best.cpu_ppm),
        pct(best.mem_ppm)
    );
    let Some(next) = next else {
        return match strategy {
            Strategy::Spread => format!("{containers}, the only candidate"),
            Strategy::Binpack => format!("{reserved}, the only candidate"),
        };
    };
    let other = v.name(next.node);
    let more_layers = format!(
        "more of the image's layers than {other} ({} against {})",
        best.layers, next.layers
    );
    match strategy {
        Strategy::Spread if best.containers != next.containers => {
            format!("{containers}, fewest of {candidates} candidates")
        }
        Strategy::Spread if best.layers != next.layers => {
            format!("{containers} as {other}, {more_layers}")
        }
        Strategy::Spread if best.reserved() != next.reserved() => {
            format!("{containers} as {other}, most free CPU and memory ({reserved})")
        }
        Strategy::Spread => format!("{containers} as {other}, {tie}"),
        Strategy::Binpack if best.reserved() != next.reserved() => {
            format!("{reserved}, the fullest that fits of {candidates} candidates")
        }
        Strategy::Binpack if best.layers != next.layers => {
            format!("as full as {other} ({reserved}), {more_layers}")
        }
        Strategy::Binpack if best.containers != next.containers => {
            format!("as full as {other} ({reserved}), most containers ({c})")
        }
        Strategy::Binpack => format!("as full as {other} ({reserved}), {tie}"),
    }
}

/// The nodes of `nodes` by load: fewest containers, then node ID (where new images go).
pub fn by_load<'a>(v: &ClusterView, mut nodes: Vec<&'a NodeRecord>) -> Vec<&'a NodeRecord> {
    nodes.sort_by_key(|n| (v.usage(n.id).containers, n.id));
    nodes
}
