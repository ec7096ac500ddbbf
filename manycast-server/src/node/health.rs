//! What the node does with its health checks (SPEC.md §11.9): when each check runs, and what a
//! change of the member's health does to its weight and its claim. The checks' state machine
//! is [`crate::health::Health`]; the daemon runs the probes.
//!
//! Rule: every check up → the member serves with its configured weight. Any check down → weight
//! 0 over the control channel (as `manycastctl drain`), so the next allocation moves its units
//! with the strategy; if the failure that took it down was [`Outcome::Dead`] (refused, reset,
//! a failed command) the claim at the router is also withdrawn at once ([`Exit::Immediate`]):
//! nothing is left to answer, and a dropped SYN is retried toward the next owner where a
//! refused one is final. It comes back (resume) only when every check is up again, and never
//! undoes an operator's drain or a SIGTERM drain.

use super::{Action, Node};
use crate::health::{Exit, HealthReport, Outcome};
use control_channel::wire::RequestAction;
use control_channel::{Event, RequestOutcome};
use igmp_ext::{Clock, Instant};
use tracing::{info, warn};

impl Node {
    /// The health checks' state for status and metrics.
    pub fn health_report(&self) -> HealthReport {
        HealthReport {
            checks: self.health.status(),
            out: self.health_out,
            operator_drained: self.operator_drained,
        }
    }

    /// A check's outcome (the answer to [`Action::RunCheck`]).
    pub fn handle_health(&mut self, now: Clock, check: usize, outcome: Outcome) {
        let now = now.mono;
        if let Some(spec) = self.health.spec(check) {
            if outcome != Outcome::Pass {
                tracing::debug!(check = %spec.name, ?outcome, "health check failed");
            }
        }
        self.health.handle_result(now, check, outcome);
        self.follow_health(now);
    }

    /// Starts the checks due at `now`.
    pub(super) fn start_health_checks(&mut self, now: Instant) {
        for check in self.health.start_due(now) {
            self.actions.push_back(Action::RunCheck(check));
        }
    }

    /// At start: with checks, the member is out until every check passed `rise` times.
    pub(super) fn start_health(&mut self) {
        if self.health.exit().is_some() {
            info!("health checks: weight 0 until every check passes rise times");
            self.health_out = self.health.exit();
            self.actions.push_back(Action::Drain);
        }
    }

    /// Acts on a change of the member's health.
    fn follow_health(&mut self, now: Instant) {
        let exit = self.health.exit();
        if exit == self.health_out {
            return;
        }
        let was = std::mem::replace(&mut self.health_out, exit);
        let failing: Vec<String> = self
            .health
            .status()
            .into_iter()
            .filter(|c| !c.up)
            .map(|c| format!("{} ({})", c.name, c.last.unwrap_or_default()))
            .collect();
        match (was, exit) {
            (None, Some(e)) => {
                warn!(exit = ?e, failing = ?failing, "health checks failing: leaving the allocation");
                if !self.operator_drained && self.drain.is_none() {
                    self.actions.push_back(Action::Drain);
                }
            }
            (Some(_), None) => {
                if self.operator_drained || self.drain.is_some() {
                    info!("health checks up again; staying drained (operator drain or SIGTERM)");
                } else {
                    info!("health checks up again: resuming");
                    self.actions.push_back(Action::Resume);
                }
            }
            _ => {}
        }
        if exit == Some(Exit::Immediate) && !self.claim_withdrawn {
            warn!("health check says the service is dead: claim withdrawn at once");
            self.claim_withdrawn = true;
            self.agent.leave(now, &mut self.random);
        } else if exit.is_none() && self.claim_withdrawn {
            // Claim again what the last commit gave us (the next commit may change it).
            self.claim_withdrawn = false;
            let (entries, epoch) = self.last_claim.clone();
            self.claim_after_forwarding(now, entries, epoch);
        }
    }

    /// An operator's drain or resume of this member, acted on by the endpoint: remembered, so
    /// that health recovering does not undo a drain, and a resume while a check is down is
    /// undone (the member stays out until its checks are up).
    pub(super) fn note_request(&mut self, event: &Event) {
        let Event::Request {
            action, outcome, ..
        } = event
        else {
            return;
        };
        match (action, outcome) {
            (RequestAction::Drain { .. }, RequestOutcome::Drained) => self.operator_drained = true,
            (RequestAction::Resume { .. }, RequestOutcome::Resumed) => {
                self.operator_drained = false;
                if self.health_out.is_some() {
                    warn!("resume refused by the health checks: staying at weight 0 until every check is up");
                    self.actions.push_back(Action::Drain);
                }
            }
            _ => {}
        }
    }
}
