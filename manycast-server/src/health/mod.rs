//! Health checks (SPEC.md §11.9), sans-IO: per check a rise/fall state machine fed with the
//! outcomes the daemon's probes report, the schedule of the next run, and the member's health
//! as a whole (every check up, or out and how). The node decides what a change does; the
//! daemon (`daemon/health.rs`) runs the probes. No clock is read here: `now` is passed in, and
//! every timer is monotonic.
//!
//! A check starts down and comes up after `rise` passes in a row (HAProxy's `init-state down`):
//! a member whose service is not yet answering takes no units. It goes down after `fall`
//! failures in a row of either kind ([`Outcome::Slow`], [`Outcome::Dead`]); which kind the
//! failure that took it down was decides how the member leaves the allocation ([`Exit`]).

pub mod config;

pub use config::{CheckKind, CheckSpec, HealthCheckConfig, Probe, Verify};

use igmp_ext::Instant;
use serde::{Deserialize, Serialize};

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The service is there but not well: no answer within the timeout, or an HTTP status
    /// other than the expected one.
    Slow(String),
    /// Nothing is there: connection refused or reset, or the command failed (non-zero exit,
    /// or it could not be started).
    Dead(String),
}

impl Outcome {
    /// The metrics label: `pass`, `slow` or `dead`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Slow(_) => "slow",
            Outcome::Dead(_) => "dead",
        }
    }

    fn text(&self) -> String {
        match self {
            Outcome::Pass => "pass".to_owned(),
            Outcome::Slow(why) => format!("slow: {why}"),
            Outcome::Dead(why) => format!("dead: {why}"),
        }
    }
}

/// How a member whose health failed leaves the allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// Degraded (or not yet up): weight 0 over the control channel, the units move with the
    /// strategy like `manycastctl drain`, and the claim stays until the commit moves it.
    Planned,
    /// Dead: the same, and the claim at the router is withdrawn at once.
    Immediate,
}

/// One check as status and metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub up: bool,
    /// The last run's outcome (`pass`, `slow: ...`, `dead: ...`); none before the first.
    pub last: Option<String>,
    /// Passes and failures in a row now.
    pub passes: u32,
    pub fails: u32,
    pub rise: u32,
    pub fall: u32,
    /// Runs so far by outcome.
    pub pass_total: u64,
    pub slow_total: u64,
    pub dead_total: u64,
}

/// The member's health as status and metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub checks: Vec<CheckStatus>,
    /// How the health checks hold the member out (weight 0), if they do.
    pub out: Option<Exit>,
}

#[derive(Debug, Clone)]
struct Check {
    spec: CheckSpec,
    up: bool,
    passes: u32,
    fails: u32,
    last: Option<Outcome>,
    /// The failure that took the check down (and later failures while it is down).
    down_by: Option<Outcome>,
    next_due: Instant,
    /// Started and not reported yet: the next run waits for it.
    running: Option<Instant>,
    totals: [u64; 3],
}

/// Every check of one member.
#[derive(Debug, Clone, Default)]
pub struct Health {
    checks: Vec<Check>,
}

impl Health {
    /// Checks that all start down and run first at `now`.
    pub fn new(specs: Vec<CheckSpec>, now: Instant) -> Health {
        Health {
            checks: specs
                .into_iter()
                .map(|spec| Check {
                    spec,
                    up: false,
                    passes: 0,
                    fails: 0,
                    last: None,
                    down_by: None,
                    next_due: now,
                    running: None,
                    totals: [0; 3],
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    pub fn spec(&self, check: usize) -> Option<&CheckSpec> {
        self.checks.get(check).map(|c| &c.spec)
    }

    /// `None` when every check is up (or there is none); else how the member is out: immediate
    /// when a down check went (or stays) down by a [`Outcome::Dead`] failure.
    pub fn exit(&self) -> Option<Exit> {
        self.checks
            .iter()
            .filter(|c| !c.up)
            .map(|c| match c.down_by {
                Some(Outcome::Dead(_)) => Exit::Immediate,
                _ => Exit::Planned,
            })
            .max()
    }

    /// When the next check is due (none while every check is running).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.checks
            .iter()
            .filter(|c| c.running.is_none())
            .map(|c| c.next_due)
            .min()
    }

    /// The checks due at `now`, marked running: the shell runs each and reports with
    /// [`Health::handle_result`].
    pub fn start_due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, c) in self.checks.iter_mut().enumerate() {
            if c.running.is_none() && c.next_due <= now {
                c.running = Some(now);
                due.push(i);
            }
        }
        due
    }

    /// A check's outcome at `now`. The next run starts `interval` after this one started.
    /// A result for a check that is not running (or unknown) is ignored.
    pub fn handle_result(&mut self, now: Instant, check: usize, outcome: Outcome) {
        let Some(c) = self.checks.get_mut(check) else {
            return;
        };
        let Some(started) = c.running.take() else {
            return;
        };
        c.next_due = started.saturating_add(c.spec.interval).max(now);
        c.totals[match outcome {
            Outcome::Pass => 0,
            Outcome::Slow(_) => 1,
            Outcome::Dead(_) => 2,
        }] += 1;
        if outcome == Outcome::Pass {
            c.passes = c.passes.saturating_add(1);
            c.fails = 0;
            if !c.up && c.passes >= c.spec.rise {
                c.up = true;
                c.down_by = None;
            }
        } else {
            c.fails = c.fails.saturating_add(1);
            c.passes = 0;
            if c.up && c.fails >= c.spec.fall {
                c.up = false;
            }
            if !c.up {
                c.down_by = Some(outcome.clone());
            }
        }
        c.last = Some(outcome);
    }

    pub fn status(&self) -> Vec<CheckStatus> {
        self.checks
            .iter()
            .map(|c| CheckStatus {
                name: c.spec.name.clone(),
                kind: c.spec.kind().as_str().to_owned(),
                target: c.spec.target(),
                up: c.up,
                last: c.last.as_ref().map(Outcome::text),
                passes: c.passes,
                fails: c.fails,
                rise: c.spec.rise,
                fall: c.spec.fall,
                pass_total: c.totals[0],
                slow_total: c.totals[1],
                dead_total: c.totals[2],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
