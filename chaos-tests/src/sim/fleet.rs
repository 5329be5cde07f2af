//! A fleet of simulated agents in one process: their shapes (pure), the file-descriptor
//! limit they need, and starting them a bounded number at a time.

use super::agent::{FleetConfig, Shape, SimAgent};
use super::host::Counters;
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

/// The sizes a mixed fleet cycles through: (CPUs, memory).
pub const MIXED_SIZES: [(u32, u64); 4] =
    [(2, 4 * GIB), (4, 8 * GIB), (8, 32 * GIB), (16, 64 * GIB)];

/// `n` agents named `sim-00001`.. (pure); `mixed`: sizes cycle through [`MIXED_SIZES`],
/// else every one is 4 CPUs, 8 GiB.
pub fn shapes(n: usize, mixed: bool) -> Vec<Shape> {
    shapes_from(0, n, mixed)
}

/// [`shapes`] `first..first + n` of a larger fleet (one of several processes' share).
pub fn shapes_from(first: usize, n: usize, mixed: bool) -> Vec<Shape> {
    (first..first + n)
        .map(|i| {
            let (cpus, memory) = if mixed {
                MIXED_SIZES[i % MIXED_SIZES.len()]
            } else {
                (4, 8 * GIB)
            };
            Shape {
                hostname: format!("sim-{:05}", i + 1),
                cpus,
                memory,
                labels: Default::default(),
            }
        })
        .collect()
}

/// File descriptors `agents` agents of `controllers` connections each need, with room for
/// the rest of the process (pure).
pub fn fds_needed(agents: usize, controllers: usize) -> u64 {
    (agents * controllers) as u64 + 4096
}

/// Raise this process' open-file limit to at least `want` (up to the hard limit, raised
/// too when running as root); the limit now in force.
pub fn raise_nofile(want: u64) -> Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(u64::MAX);
    if soft >= want {
        return Ok(soft);
    }
    let hard = now.maximum.unwrap_or(u64::MAX);
    let raised = Rlimit {
        current: Some(want),
        maximum: Some(want.max(hard)),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return Ok(want);
    }
    let capped = Rlimit {
        current: Some(want.min(hard)),
        maximum: now.maximum,
    };
    setrlimit(Resource::Nofile, capped)?;
    Ok(want.min(hard))
}

/// Agents that have joined and keep their connections.
pub struct Fleet {
    /// The agents, in the order of their shapes.
    pub agents: Vec<SimAgent>,
}

impl Fleet {
    /// Join `shapes.len()` agents, `parallel` joins at a time.
    pub async fn start(cfg: &FleetConfig, shapes: Vec<Shape>, parallel: usize) -> Result<Fleet> {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let tasks: Vec<_> = shapes
            .into_iter()
            .map(|shape| {
                let (cfg, gate) = (cfg.clone(), gate.clone());
                tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await?;
                    SimAgent::join(&cfg, shape).await
                })
            })
            .collect();
        let mut agents = Vec::with_capacity(tasks.len());
        for t in tasks {
            agents.push(t.await??);
        }
        Ok(Fleet { agents })
    }

    /// Agents with all `per_agent` connections up.
    pub fn connected(&self, per_agent: usize) -> usize {
        self.agents
            .iter()
            .filter(|a| a.connections() >= per_agent)
            .count()
    }

    /// Wait until every agent has `per_agent` connections up, or fail after `limit`.
    pub async fn wait_connected(&self, per_agent: usize, limit: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            let n = self.connected(per_agent);
            if n == self.agents.len() {
                return Ok(());
            }
            if t.elapsed() > limit {
                bail!(
                    "{n} of {} simulated agents have {per_agent} connections after {limit:?}",
                    self.agents.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the whole fleet was asked.
    pub fn counters(&self) -> Counters {
        self.agents
            .iter()
            .map(SimAgent::counters)
            .fold(Counters::default(), |a, c| Counters {
                heartbeats: a.heartbeats + c.heartbeats,
                creates: a.creates + c.creates,
                starts: a.starts + c.starts,
                exits: a.exits + c.exits,
                requests: a.requests + c.requests,
                stretch_milli: a.stretch_milli.max(c.stretch_milli),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_unique_and_mixed_ones_cycle() {
        let s = shapes(6, true);
        assert_eq!(s[0].hostname, "sim-00001");
        assert_eq!((s[0].cpus, s[4].cpus, s[3].cpus), (2, 2, 16));
        let names: std::collections::BTreeSet<_> = s.iter().map(|s| &s.hostname).collect();
        assert_eq!(names.len(), 6);
        assert!(shapes(3, false).iter().all(|s| s.cpus == 4));
        assert_eq!(fds_needed(10_000, 3), 34_096);
        let tail = shapes_from(4, 2, true);
        assert_eq!(tail[0].hostname, "sim-00005");
        assert_eq!(tail[1], s[5]);
    }
}
