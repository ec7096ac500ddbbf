//! Rate-limited logging of refused reports (issue 13, defect 16): a flood of junk must not become
//! a flood of log lines. Per reason, the first few refusals of each window are logged one by one;
//! the rest are counted and logged as one summary line when the window ends. Sans-IO: the daemon
//! passes `now` and writes the lines. Every refusal is still counted in status and metrics.

use igmp_ext::{Reason, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long one window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Refusals per reason logged one by one in each window.
pub const PER_WINDOW: u32 = 10;

/// Whether to log one refusal on its own line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Log,
    /// Counted for the window's summary instead.
    Suppressed,
}

#[derive(Debug, Default)]
pub struct RejectionLog {
    /// When the current window started; `None` before the first refusal.
    started: Option<Timestamp>,
    /// Per reason: (logged on their own, suppressed) in the current window.
    seen: BTreeMap<Reason, (u32, u64)>,
}

impl RejectionLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// One refusal for `reason` at `now`. Call [`RejectionLog::summaries`] first, so that a window
    /// that ended is summarised before a new one starts.
    pub fn admit(&mut self, now: Timestamp, reason: Reason) -> Admit {
        self.started.get_or_insert(now);
        let (logged, suppressed) = self.seen.entry(reason).or_default();
        if *logged < PER_WINDOW {
            *logged += 1;
            Admit::Log
        } else {
            *suppressed += 1;
            Admit::Suppressed
        }
    }

    /// When the window has ended by `now` (a clock step back ends it too): the refusals it
    /// suppressed, per reason, and a fresh window. Otherwise nothing.
    pub fn summaries(&mut self, now: Timestamp) -> Vec<(Reason, u64)> {
        let Some(started) = self.started else {
            return Vec::new();
        };
        let ended =
            now < started || now.as_millis() - started.as_millis() >= WINDOW.as_millis() as u64;
        if !ended {
            return Vec::new();
        }
        let out = self
            .seen
            .iter()
            .filter(|(_, (_, suppressed))| *suppressed > 0)
            .map(|(reason, (_, suppressed))| (*reason, *suppressed))
            .collect();
        self.started = None;
        self.seen.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_a_few_lines_and_one_summary_per_reason_and_window() {
        let mut log = RejectionLog::new();
        let t0 = Timestamp::from_secs(100);
        let mut lines = 0;
        for i in 0..10_000u64 {
            let now = Timestamp::from_millis(t0.as_millis() + i / 2); // 5 s of flood
            assert!(log.summaries(now).is_empty(), "the window has not ended");
            for reason in [Reason::BadSignature, Reason::Malformed] {
                if log.admit(now, reason) == Admit::Log {
                    lines += 1;
                }
            }
        }
        assert_eq!(lines, 2 * PER_WINDOW);
        let end = Timestamp::from_millis(t0.as_millis() + WINDOW.as_millis() as u64);
        assert_eq!(
            log.summaries(end),
            vec![
                (Reason::Malformed, 10_000 - u64::from(PER_WINDOW)),
                (Reason::BadSignature, 10_000 - u64::from(PER_WINDOW)),
            ]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        // A new window logs again; a quiet window has nothing to summarise.
        assert_eq!(log.admit(end, Reason::Malformed), Admit::Log);
        assert!(log.summaries(Timestamp::from_secs(200)).is_empty());
        assert!(log.summaries(Timestamp::from_secs(300)).is_empty());
    }

    #[test]
    fn a_clock_step_back_ends_the_window() {
        let mut log = RejectionLog::new();
        for _ in 0..=PER_WINDOW {
            log.admit(Timestamp::from_secs(100), Reason::Untimely);
        }
        assert_eq!(
            log.summaries(Timestamp::from_secs(50)),
            vec![(Reason::Untimely, 1)]
        );
    }
}
