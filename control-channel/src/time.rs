//! The two clocks the endpoint is given (SPEC.md §9.3, "Clocks"): a monotonic [`Instant`] for
//! every timer, liveness and retransmission decision, and the wall clock only where signed
//! messages need it (the timestamp in each header, the timeliness check of incoming ones,
//! certificate validity, the incarnation). A step of the wall clock moves no timer.

use igmp_ext::Timestamp;

pub use igmp_ext::time::{Clock, Instant};

/// `a - b` in ms, signed (saturating at the ends of `i64`).
pub(crate) fn signed_diff_ms(a: Timestamp, b: Timestamp) -> i64 {
    let d = i128::from(a.0) - i128::from(b.0);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}
