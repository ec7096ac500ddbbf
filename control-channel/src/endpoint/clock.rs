//! Whose wall clock is off (SPEC.md §9.3, "Clocks"): each peer's clock offset as this member
//! sees it (its authentic messages' timestamps against our wall clock, untimely ones included),
//! and whether most peers refuse this member's messages as untimely. The timeliness check is
//! symmetric, so a member that finds most of its peers' timestamps out of the window knows they
//! refuse its own messages too.

use super::{Endpoint, Event};
use crate::time::Clock;
use core::time::Duration;
use igmp_ext::MemberId;

/// An offset observation counts this long after the message it came from.
const OFFSET_FRESH_FOR: Duration = Duration::from_secs(5);

impl Endpoint {
    /// `member`'s wall clock minus ours in ms (positive: it runs ahead), from its last authentic
    /// message, timely or not; it includes one network delay.
    pub fn peer_clock_offset(&self, member: MemberId) -> Option<i64> {
        self.peers
            .get(&member)?
            .clock_offset
            .map(|(offset, _)| offset)
    }

    /// This member's wall clock minus the median of its recently heard peers' (ms), or `None`
    /// when no peer was heard in the last few seconds.
    pub fn clock_offset(&self) -> Option<i64> {
        let mut offsets = self.recent_offsets(None);
        if offsets.is_empty() {
            return None;
        }
        offsets.sort_unstable();
        Some(offsets[offsets.len() / 2].saturating_neg())
    }

    /// True while most recently heard peers (at least two) refuse this member's messages as
    /// untimely: its wall clock is the one that is off.
    pub fn clock_untimely(&self) -> bool {
        self.clock_untimely
    }

    fn recent_offsets(&self, now: Option<Clock>) -> Vec<i64> {
        let latest = now.map(|n| n.mono).or_else(|| {
            self.peers
                .values()
                .filter_map(|p| p.clock_offset.map(|(_, at)| at))
                .max()
        });
        let Some(latest) = latest else {
            return Vec::new();
        };
        self.peers
            .values()
            .filter(|p| p.left_at.is_none())
            .filter_map(|p| p.clock_offset)
            .filter(|&(_, at)| latest.saturating_duration_since(at) < OFFSET_FRESH_FOR)
            .map(|(offset, _)| offset)
            .collect()
    }

    /// Re-judges this member's own clock against its peers' and reports a change.
    pub(super) fn check_own_clock(&mut self, now: Clock) {
        let offsets = self.recent_offsets(Some(now));
        let window = i64::try_from(self.config.timeliness_window.as_millis()).unwrap_or(i64::MAX);
        let refusing = offsets
            .iter()
            .filter(|o| o.unsigned_abs() > window.unsigned_abs())
            .count();
        let untimely = refusing >= 2 && 2 * refusing > offsets.len();
        if untimely == self.clock_untimely {
            return;
        }
        self.clock_untimely = untimely;
        let offset_ms = self.clock_offset().unwrap_or(0);
        if untimely {
            self.counters.clock_untimely += 1;
            self.events.push_back(Event::ClockUntimely {
                offset_ms,
                refused_by: refusing,
            });
        } else {
            self.events.push_back(Event::ClockTimely { offset_ms });
        }
    }
}
