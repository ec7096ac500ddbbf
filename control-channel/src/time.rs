//! The two clocks the endpoint is given (SPEC.md §9.3, "Clocks"): a monotonic [`Instant`] for
//! every timer, liveness and retransmission decision, and the wall clock only where signed
//! messages need it (the timestamp in each header, the timeliness check of incoming ones,
//! certificate validity, the incarnation). A step of the wall clock moves no timer.

use core::fmt;
use core::time::Duration;
use igmp_ext::Timestamp;

/// Monotonic time in milliseconds since an arbitrary origin (the driver's first reading; the
/// simulator picks one per member). Only differences between two `Instant`s of one member mean
/// anything; it never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// What the endpoint is told about time at each call: the same moment on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Drives timers, liveness and retransmissions.
    pub mono: Instant,
    /// Stamps outgoing messages and judges the timeliness of incoming ones; may step.
    pub wall: Timestamp,
}

impl Clock {
    pub const fn new(mono: Instant, wall: Timestamp) -> Self {
        Clock { mono, wall }
    }
}

/// `a - b` in ms, signed (saturating at the ends of `i64`).
pub(crate) fn signed_diff_ms(a: Timestamp, b: Timestamp) -> i64 {
    let d = i128::from(a.0) - i128::from(b.0);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}
