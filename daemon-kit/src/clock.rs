//! The one place a daemon reads the wall clock. The cores take `now` as an argument; only
//! their drivers call [`wall_clock`].

use igmp_ext::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

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
}
