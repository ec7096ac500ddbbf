//! When a member's signed reports go, for the IGMPv3 join agent and the MLDv2 one alike (RFC
//! 3376 §5, RFC 3810 §6): a state change at once and robustness − 1 more times within the
//! unsolicited report interval; a query answered within its maximum delay unless an answer is
//! due sooner, never sooner than `min_answer_interval` after the last answer (so a query flood
//! gets at most one answer per interval); a refresh every `refresh` while a claim is held.

use super::AgentConfig;
use igmp_ext::wire::record::RecordType;
use igmp_ext::Instant;
use std::time::Duration;

/// The pending reports of one join agent.
#[derive(Debug, Default)]
pub struct ReportSchedule {
    /// State-change reports still to send, at these times.
    change_reports: Vec<Instant>,
    /// When to answer the last query, if one is pending.
    query_answer: Option<Instant>,
    /// When the last query answer went out.
    last_answer: Option<Instant>,
    next_refresh: Option<Instant>,
}

impl ReportSchedule {
    /// The claim changed (`claiming`: it is not empty): report it now and robustness − 1 more
    /// times; a pending query answer is superseded.
    pub fn changed(
        &mut self,
        now: Instant,
        claiming: bool,
        config: &AgentConfig,
        random: &mut dyn FnMut() -> u64,
    ) {
        self.change_reports =
            std::iter::once(now)
                .chain((1..config.robustness).map(|_| {
                    now.saturating_add(jitter(config.unsolicited_report_interval, random))
                }))
                .collect();
        self.change_reports.sort_unstable();
        self.query_answer = None;
        self.next_refresh = claiming.then(|| now.saturating_add(config.refresh));
    }

    /// A query for the group (or a general one) allows an answer within `max_delay`.
    pub fn queried(
        &mut self,
        now: Instant,
        max_delay: Duration,
        config: &AgentConfig,
        random: &mut dyn FnMut() -> u64,
    ) {
        let mut at = now.saturating_add(jitter(max_delay, random));
        if let Some(last) = self.last_answer {
            at = at.max(last.saturating_add(config.min_answer_interval));
        }
        if self.query_answer.is_none_or(|t| at < t) {
            self.query_answer = Some(at);
        }
    }

    /// The next moment a report is due.
    pub fn next(&self) -> Option<Instant> {
        self.change_reports
            .first()
            .copied()
            .into_iter()
            .chain(self.query_answer)
            .chain(self.next_refresh)
            .min()
    }

    /// The report due at `now`, if any, taken off the schedule: a state change, else a query
    /// answer or a refresh (both current state). Any report sent while `claiming` restarts the
    /// refresh timer.
    pub fn take_due(
        &mut self,
        now: Instant,
        claiming: bool,
        config: &AgentConfig,
    ) -> Option<RecordType> {
        let record_type = if self.change_reports.first().is_some_and(|&t| t <= now) {
            self.change_reports.remove(0);
            RecordType::ChangeToIncludeMode
        } else if self.query_answer.is_some_and(|t| t <= now) {
            self.query_answer = None;
            self.last_answer = Some(now);
            RecordType::ModeIsInclude
        } else if self.next_refresh.is_some_and(|t| t <= now) {
            RecordType::ModeIsInclude
        } else {
            return None;
        };
        if claiming {
            self.next_refresh = Some(now.saturating_add(config.refresh));
        }
        Some(record_type)
    }
}

/// A uniform random delay in [0, max].
fn jitter(max: Duration, random: &mut dyn FnMut() -> u64) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(if ms == 0 { 0 } else { random() % (ms + 1) })
}
