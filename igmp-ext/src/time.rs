//! Time as the protocol and its timers use it: [`Timestamp`], the wall clock that signed joins,
//! control messages and certificates carry; [`Instant`], monotonic time for every timer, timeout
//! and ordering decision; and [`Clock`], the same moment on both (SPEC.md §9.3, "Clocks"). The
//! crate never reads a clock: callers pass `now`.

use core::fmt;
use core::time::Duration;

/// Milliseconds since the Unix epoch (UTC), as carried in joins and certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub const fn from_secs(s: u64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// |self - other|.
    pub fn abs_diff(self, other: Timestamp) -> Duration {
        Duration::from_millis(self.0.abs_diff(other.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// Monotonic time in milliseconds since an arbitrary origin (the process's first reading in the
/// daemons; tests and the simulator pick their own). Only differences between two `Instant`s of
/// one process mean anything; it never goes back, and a step of the wall clock does not move it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    pub const fn from_secs(s: u64) -> Self {
        Instant(s.saturating_mul(1000))
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

/// What a sans-IO core is told about time at each call: the same moment on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Drives timers, timeouts, liveness and retransmissions.
    pub mono: Instant,
    /// Stamps outgoing signed messages and judges the timeliness of incoming ones; may step.
    pub wall: Timestamp,
}

impl Clock {
    pub const fn new(mono: Instant, wall: Timestamp) -> Self {
        Clock { mono, wall }
    }
}

/// One reading for both clocks, for callers that have only the wall clock (tests, offline
/// tools): their timers then follow the wall clock, steps included. The daemons pass a real
/// [`Clock`].
impl From<Timestamp> for Clock {
    fn from(t: Timestamp) -> Clock {
        Clock::new(Instant(t.0), t)
    }
}
