//! When the keystore client asks the keystore again (SPEC.md §8.5): the retry schedule after
//! failed fetches and the rate limit on the early fetches that lookup misses ask for. Sans-IO:
//! callers pass `now` (a monotonic instant) and the jitter draw; nothing here sleeps or reads a
//! clock, so the schedule is unit-tested step by step.

use std::time::{Duration, Instant};

/// The schedule's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failure; each further failure doubles it.
    pub first: Duration,
    /// Where the doubling stops while the group's stale keys are still served: the refresh
    /// interval (nobody is refused meanwhile, so the keystore is spared).
    pub max: Duration,
    /// Where it stops while the group has no usable keys (its joins are refused): the
    /// keystore's return must be seen within a second.
    pub max_unusable: Duration,
    /// The least time between two fetches of one group, whatever asks for them: a flood of
    /// lookup misses cannot make the client hammer the keystore.
    pub min_gap: Duration,
}

impl RetryPolicy {
    /// 250 ms doubling to `refresh` (to 750 ms while no usable keys are cached), at most one
    /// fetch per group every 250 ms.
    pub fn new(refresh: Duration) -> Self {
        let min_gap = Duration::from_millis(250);
        RetryPolicy {
            first: min_gap,
            max: refresh.max(min_gap),
            max_unusable: Duration::from_millis(750).min(refresh.max(min_gap)),
            min_gap,
        }
    }

    /// The delay after `failures` (≥ 1) failures in a row, before jitter.
    pub fn backoff(&self, failures: u32, usable: bool) -> Duration {
        let cap = if usable { self.max } else { self.max_unusable };
        let doublings = failures.saturating_sub(1).min(20);
        self.first.saturating_mul(1 << doublings).min(cap)
    }
}

/// One group's retry state: consecutive failures and when the next fetch may start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retry {
    failures: u32,
    last_attempt: Option<Instant>,
    /// `None` while no failure is pending: the record's TTL decides when to ask again.
    next_attempt: Option<Instant>,
}

impl Retry {
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next fetch is due after a failure (`None`: no failure pending). While the
    /// group has no usable keys the wait is cut to `max_unusable` after the last attempt, so
    /// that keys expiring during a long backoff do not leave the group refused for it.
    pub fn due_at(&self, policy: &RetryPolicy, usable: bool) -> Option<Instant> {
        let next = self.next_attempt?;
        match (usable, self.last_attempt) {
            (false, Some(last)) => Some(next.min(last + policy.max_unusable)),
            _ => Some(next),
        }
    }

    /// May a fetch start at `now`? `ttl_due`: the cached record's TTL ran out (or nothing was
    /// fetched yet). `missed`: a lookup found no usable keys since the refresher last ran, which
    /// may bring a pending retry forward, but never closer than `min_gap` to the last attempt.
    pub fn may_fetch(
        &self,
        policy: &RetryPolicy,
        now: Instant,
        usable: bool,
        ttl_due: bool,
        missed: bool,
    ) -> bool {
        let gap_passed = self
            .last_attempt
            .is_none_or(|last| now >= last + policy.min_gap);
        match self.due_at(policy, usable) {
            None => ttl_due && gap_passed,
            Some(at) => gap_passed && (now >= at || (missed && !usable)),
        }
    }

    /// A fetch failed at `now`; `jitter` in [0, 1) spreads the delay over its upper half so
    /// that routers that lost the keystore together do not come back in step.
    pub fn failed(&mut self, policy: &RetryPolicy, now: Instant, usable: bool, jitter: f64) {
        self.failures = self.failures.saturating_add(1);
        let delay = policy.backoff(self.failures, usable);
        let jittered = delay.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        self.last_attempt = Some(now);
        self.next_attempt = Some(now + jittered.max(policy.min_gap));
    }

    /// The keystore answered at `now` (keys, or a denial): back to the TTL's schedule.
    pub fn answered(&mut self, now: Instant) {
        self.failures = 0;
        self.last_attempt = Some(now);
        self.next_attempt = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_from_250_ms_to_the_refresh_interval_or_750_ms_without_usable_keys() {
        let p = RetryPolicy::new(Duration::from_secs(10));
        let usable: Vec<u64> = (1..=8)
            .map(|n| p.backoff(n, true).as_millis() as u64)
            .collect();
        assert_eq!(usable, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
        let unusable: Vec<u64> = (1..=4)
            .map(|n| p.backoff(n, false).as_millis() as u64)
            .collect();
        assert_eq!(unusable, [250, 500, 750, 750]);
        // A refresh interval shorter than the caps bounds both; no overflow after many failures.
        let short = RetryPolicy::new(ms(300));
        assert_eq!(short.backoff(3, true), ms(300));
        assert_eq!(short.backoff(3, false), ms(300));
        assert_eq!(p.backoff(u32::MAX, true), Duration::from_secs(10));
    }

    #[test]
    fn jitter_keeps_the_delay_in_its_upper_half_and_never_below_the_gap() {
        let p = RetryPolicy::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for (failures_before, jitter, want) in [
            (0, 0.0, 250),  // half of 250 is below the gap: the gap wins
            (3, 0.0, 1000), // the fourth failure: 2 s, jittered over [1 s, 2 s)
            (3, 0.999_999, 2000),
            (3, 0.5, 1500),
        ] {
            let mut r = Retry {
                failures: failures_before,
                ..Retry::default()
            };
            r.failed(&p, t0, true, jitter);
            let wait = r.due_at(&p, true).expect("a failure is pending") - t0;
            assert!(
                wait.abs_diff(ms(want)) <= ms(1),
                "{failures_before} failures, jitter {jitter}: waited {wait:?}"
            );
        }
    }

    #[test]
    fn a_failed_group_waits_its_backoff_and_an_answer_returns_it_to_the_ttl() {
        let p = RetryPolicy::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut r = Retry::default();
        assert!(r.may_fetch(&p, t0, false, true, false), "first fetch");
        assert!(!r.may_fetch(&p, t0, true, false, false), "TTL not run out");
        r.failed(&p, t0, true, 0.999_999);
        r.failed(&p, t0, true, 0.999_999);
        r.failed(&p, t0, true, 0.999_999);
        assert_eq!(r.failures(), 3);
        // With stale keys served the third failure waits its full second...
        assert!(!r.may_fetch(&p, t0 + ms(999), true, true, false));
        assert!(r.may_fetch(&p, t0 + ms(1000), true, true, false));
        // ...and once they expire, 750 ms after the last attempt at most.
        assert!(r.may_fetch(&p, t0 + ms(750), false, true, false));
        r.answered(t0 + ms(800));
        assert_eq!(r.due_at(&p, false), None);
        assert!(!r.may_fetch(&p, t0 + ms(900), true, false, true));
        assert!(r.may_fetch(&p, t0 + ms(1050), true, true, false));
    }

    #[test]
    fn keys_expiring_during_a_long_backoff_bring_the_retry_within_750_ms() {
        let p = RetryPolicy::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut r = Retry::default();
        for _ in 0..7 {
            r.failed(&p, t0, true, 0.999_999);
        }
        assert!(r.due_at(&p, true).expect("pending") >= t0 + ms(9_999));
        assert_eq!(r.due_at(&p, false), Some(t0 + ms(750)));
    }

    #[test]
    fn misses_bring_a_retry_forward_at_most_once_per_gap_and_only_without_usable_keys() {
        let p = RetryPolicy::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut r = Retry::default();
        r.failed(&p, t0, false, 0.999_999);
        r.failed(&p, t0, false, 0.999_999); // next at t0 + 500 ms
                                            // A flood of misses right after the attempt: nothing before the gap.
        assert!(!r.may_fetch(&p, t0 + ms(249), false, true, true));
        assert!(r.may_fetch(&p, t0 + ms(250), false, true, true));
        // Misses do not hurry a group whose stale keys still serve (there are none then).
        assert!(!r.may_fetch(&p, t0 + ms(250), true, true, true));
        // Count the fetches a continuous flood allows in 10 s, each failing at once.
        let mut fetches = 0;
        let mut now = t0;
        let end = t0 + Duration::from_secs(10);
        let mut r = Retry::default();
        while now < end {
            if r.may_fetch(&p, now, false, true, true) {
                fetches += 1;
                r.failed(&p, now, false, 0.0);
            }
            now += ms(1);
        }
        assert_eq!(fetches, 40, "one fetch per 250 ms");
    }
}
