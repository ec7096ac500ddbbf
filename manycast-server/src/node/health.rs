//! What the node does with its health checks (SPEC.md §11.9): when each check runs, and what a
//! change of the member's health does to its weight and its claim. The checks' state machine
//! is [`crate::health::Health`]; the daemon runs the probes.
//!
//! Rule: every check up → the member serves with its weight. Any check down → held at weight 0
//! over the control channel (`Endpoint::set_held`, announced like `manycastctl drain`), so the
//! next allocation moves its units with the strategy; if the failure that took it down was
//! [`Outcome::Dead`] (refused, reset, a failed command) the claim at the router is also
//! withdrawn at once ([`Exit::Immediate`]): nothing is left to answer, and a dropped SYN is
//! retried toward the next owner where a refused one is final. It is released only when every
//! check is up again. The hold is apart from drain and resume in the endpoint, so a release
//! never undoes an operator's drain or a SIGTERM drain, and an operator's resume while held
//! takes effect only at the release.

use super::{Action, Node};
use crate::health::{Exit, HealthReport, Outcome};
use igmp_ext::{Clock, Instant};
use tracing::{info, warn};

impl Node {
    /// The health checks' state for status and metrics.
    pub fn health_report(&self) -> HealthReport {
        HealthReport {
            checks: self.health.status(),
            out: self.health_out,
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
            self.actions.push_back(Action::Hold(true));
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
                self.actions.push_back(Action::Hold(true));
            }
            (Some(_), None) => {
                info!("health checks up again: released (an operator's or SIGTERM drain stays)");
                self.actions.push_back(Action::Hold(false));
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
}
