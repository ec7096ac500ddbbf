//! The one place a daemon reads the clocks. The cores take `now` as an argument; only their
//! drivers call [`now`] (both clocks) or [`wall_clock`].

use igmp_ext::{Clock, Instant, Timestamp};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The process's monotonic origin: every [`Instant`] a daemon hands its cores counts from it.
static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();

/// Now, on both clocks: monotonic time since the process's first reading (CLOCK_MONOTONIC,
/// which a step of the wall clock does not move), and the wall clock.
pub fn now() -> Clock {
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    let mono = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
    Clock::new(Instant(mono), wall_clock())
}

/// Milliseconds since the Unix epoch, as the signed timestamps of joins and control messages
/// carry them. A clock set before 1970 reads as 0 and one past `u64::MAX` ms saturates.
pub fn wall_clock() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_plausible_time() {
        // 2020-01-01 in ms: any machine running this is later than that.
        assert!(super::wall_clock().as_millis() > 1_577_836_800_000);
    }

    #[test]
    fn monotonic_time_never_goes_back() {
        let a = super::now().mono;
        let b = super::now().mono;
        assert!(b >= a);
    }
}
