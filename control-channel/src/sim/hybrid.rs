//! One control group with foca's failure detection and today's agreement (feature `swim`):
//! today's endpoints in a [`Sim`] with heartbeats slowed and their own down timeout out of the
//! way, beside a [`SwimSim`] of the same members in the same virtual time; each `MemberDown`
//! foca reports is handed to that member's endpoint ([`Endpoint::sim_external_down`]), and the
//! decision rule, proposals and commits run as today. A measurement model (NOTES.md "Scale"),
//! not used by any daemon.
//!
//! [`Endpoint::sim_external_down`]: crate::endpoint::Endpoint::sim_external_down

use super::swim::{Down, SwimSim, SwimTiming};
use super::{Rng, Sim, SimConfig};
use core::time::Duration;

/// A [`Sim`] and a [`SwimSim`] of the same members, stepped together 1 ms at a time.
#[derive(Debug)]
pub struct HybridGroup {
    sim: Sim,
    swim: SwimSim,
    /// foca downs already handed to the endpoints.
    seen: usize,
}

impl HybridGroup {
    /// `members` members with endpoint heartbeats every `endpoint_heartbeat` (hellos ten times
    /// rarer) and foca detection with `timing`.
    pub fn new(seed: u64, members: u32, timing: SwimTiming, endpoint_heartbeat: Duration) -> Self {
        let mut sim = Sim::with_config(&SimConfig::new(seed, members), |c| {
            c.heartbeat_interval = endpoint_heartbeat;
            c.hello_interval = endpoint_heartbeat * 10;
            c.down_after = Duration::from_secs(3600);
        });
        sim.record_all = false;
        HybridGroup {
            sim,
            swim: SwimSim::new(seed, members, timing),
            seen: 0,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.sim.now_ms()
    }

    pub fn len(&self) -> usize {
        self.sim.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sim.is_empty()
    }

    /// Every running member committed one allocation of exactly the running members.
    pub fn converged(&self) -> bool {
        self.sim.converged()
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    pub fn swim(&self) -> &SwimSim {
        &self.swim
    }

    /// Both halves one millisecond on; foca's new downs go to the endpoints.
    pub fn step(&mut self) {
        let next = self.sim.now_ms() + 1;
        self.sim.run_until(next);
        self.swim.run_until(next);
        let fresh: Vec<Down> = self.swim.downs()[self.seen..].to_vec();
        self.seen = self.swim.downs().len();
        for (_, obs, m) in fresh {
            let now = self.sim.local_now(obs);
            if let Some(ep) = self.sim.endpoint_mut(obs) {
                ep.sim_external_down(now, Sim::member_id(m));
                self.sim.flush(obs);
            }
        }
    }

    /// Steps until [`HybridGroup::converged`] or `limit` ms pass; the ms taken.
    pub fn run_until_converged(&mut self, limit_ms: u64) -> Option<u64> {
        let start = self.now_ms();
        while !self.converged() {
            if self.now_ms() >= start + limit_ms {
                return None;
            }
            self.step();
        }
        Some(self.now_ms() - start)
    }

    pub fn run_for(&mut self, ms: u64) {
        let until = self.now_ms() + ms;
        while self.now_ms() < until {
            self.step();
        }
    }

    /// Member `i` stops at once in both halves, losing its state.
    pub fn crash(&mut self, i: usize) {
        self.sim.crash(i);
        self.swim.crash(i);
    }

    /// Datagrams member `i` has received so far: its endpoint's and its foca's.
    pub fn received(&self, i: usize) -> (u64, u64) {
        (self.sim.received(i), self.swim.received(i))
    }

    /// Every running member's committed allocation leaves out `victim`.
    pub fn committed_without(&self, victim: usize) -> bool {
        let id = Sim::member_id(victim);
        self.sim.running().iter().all(|&i| {
            self.sim
                .endpoint(i)
                .and_then(|e| e.committed())
                .is_some_and(|c| c.members().iter().all(|&(m, _)| m != id))
        })
    }

    /// Every running member's committed epoch (to check a group was left alone).
    pub fn committed_epochs(&self) -> Vec<Option<u64>> {
        self.sim
            .running()
            .iter()
            .map(|&i| {
                self.sim
                    .endpoint(i)
                    .and_then(|e| e.committed())
                    .map(|c| c.id().epoch)
            })
            .collect()
    }
}

/// What [`hybrid_crash_trial`] measured.
#[derive(Debug, Clone, Default)]
pub struct HybridOutcome {
    /// ms from the crash until every survivor's foca reported the victim down.
    pub detect_ms: Option<u64>,
    /// ms from the crash until every survivor committed one allocation without the victim.
    pub converge_ms: Option<u64>,
    /// Datagrams each member received per second before the crash: foca's, and the
    /// endpoints' (their slow heartbeats and hellos), per member.
    pub swim_recv_per_member_s: f64,
    pub endpoint_recv_per_member_s: f64,
    pub violations: Vec<String>,
}

/// One [`HybridGroup`] of `members`: converge, settle, count two seconds of load, crash one
/// member, measure until every survivor's foca found it down and every survivor committed.
pub fn hybrid_crash_trial(
    seed: u64,
    members: u32,
    timing: SwimTiming,
    endpoint_heartbeat: Duration,
) -> HybridOutcome {
    let mut out = HybridOutcome::default();
    let mut rng = Rng::new(seed ^ 0xbeef);
    let mut g = HybridGroup::new(seed, members, timing, endpoint_heartbeat);
    if g.run_until_converged(10_000).is_none() {
        out.violations.push("no convergence at start".into());
        return out;
    }
    g.run_for(1000 + rng.below(50));
    let (e, s) = load_per_member_s(&mut g, 2000);
    out.endpoint_recv_per_member_s = e;
    out.swim_recv_per_member_s = s;
    let victim = rng.below(u64::from(members)) as usize;
    g.crash(victim);
    let crashed = g.now_ms();
    let crashed_us = g.swim.now_ms() * 1000;
    let survivors = g.sim.running();
    while g.now_ms() < crashed + 3000 {
        g.step();
        if out.detect_ms.is_none() {
            let mut down = vec![false; g.len()];
            for &(at, obs, m) in g.swim.downs() {
                if m == victim && at >= crashed_us {
                    down[obs] = true;
                }
            }
            if survivors.iter().all(|&i| down[i]) {
                out.detect_ms = Some(g.now_ms() - crashed);
            }
        }
        if g.committed_without(victim) && g.converged() {
            out.converge_ms = Some(g.now_ms() - crashed);
            break;
        }
    }
    out.violations.extend(g.sim.violations().iter().cloned());
    out
}

/// Runs `g` for `ms` and returns the datagrams each member received per second: its
/// endpoint's and its foca's, means over the members.
pub fn load_per_member_s(g: &mut HybridGroup, ms: u64) -> (f64, f64) {
    let total = |g: &HybridGroup| {
        (0..g.len())
            .map(|i| g.received(i))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    };
    let (e0, s0) = total(g);
    g.run_for(ms);
    let (e1, s1) = total(g);
    let per = |d: u64| d as f64 / g.len() as f64 / (ms as f64 / 1000.0);
    (per(e1 - e0), per(s1 - s0))
}
