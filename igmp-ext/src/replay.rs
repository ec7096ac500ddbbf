//! The duplicate check of Fig 6 (step 610): remembers (member, nonce) of every accepted join for
//! as long as a copy could still pass the timeliness check, in bounded memory and constant time.

use crate::cert::MemberId;
use crate::join::NONCE_LEN;
use crate::time::Timestamp;
use core::time::Duration;
use std::collections::{HashSet, VecDeque};

type Key = (MemberId, [u8; NONCE_LEN]);

/// A fixed-capacity set of recently accepted (member, nonce) pairs.
///
/// Only joins that passed every other check are recorded, so a flood of forged joins cannot fill
/// it. Entries leave in acceptance order once `retention` has passed: with a timeliness window
/// of ±w, a join accepted at `t` is timely only until `t + 2w`, so `retention = 2w` suffices.
/// When full of live entries, the cache refuses new joins rather than forget a live one.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    retention: Duration,
    seen: HashSet<Key>,
    order: VecDeque<(Timestamp, Key)>,
}

impl ReplayCache {
    pub fn new(capacity: usize, retention: Duration) -> Self {
        ReplayCache {
            capacity,
            retention,
            seen: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
        }
    }

    pub fn contains(&self, member: MemberId, nonce: &[u8; NONCE_LEN]) -> bool {
        self.seen.contains(&(member, *nonce))
    }

    /// Forgets entries older than the retention; amortised O(1) per insert. If the clock steps
    /// back, entries are kept longer, never forgotten early.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some(&(at, key)) = self.order.front() {
            if now < at.saturating_add(self.retention) {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }

    /// True when one more entry fits after expiring old ones.
    pub fn has_room(&mut self, now: Timestamp) -> bool {
        self.expire(now);
        self.seen.len() < self.capacity
    }

    /// Records an accepted join. Returns false (and records nothing) when full or already present.
    pub fn insert(&mut self, now: Timestamp, member: MemberId, nonce: [u8; NONCE_LEN]) -> bool {
        if !self.has_room(now) || !self.seen.insert((member, nonce)) {
            return false;
        }
        self.order.push_back((now, (member, nonce)));
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_then_forgets() {
        let mut c = ReplayCache::new(2, Duration::from_secs(60));
        let t0 = Timestamp::from_secs(1000);
        assert!(c.insert(t0, MemberId(1), [1; 16]));
        assert!(c.contains(MemberId(1), &[1; 16]));
        assert!(!c.contains(MemberId(2), &[1; 16]), "keyed by member too");
        assert!(!c.insert(t0, MemberId(1), [1; 16]), "duplicate");
        assert!(c.insert(t0, MemberId(1), [2; 16]));
        assert!(!c.insert(t0, MemberId(1), [3; 16]), "full of live entries");
        let later = Timestamp::from_secs(1060);
        assert!(c.insert(later, MemberId(1), [3; 16]), "old entries expired");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_clock_step_back_forgets_nothing() {
        let mut c = ReplayCache::new(4, Duration::from_secs(60));
        let t0 = Timestamp::from_secs(1000);
        assert!(c.insert(t0, MemberId(1), [1; 16]));
        c.expire(Timestamp::from_secs(10));
        assert!(c.contains(MemberId(1), &[1; 16]));
        c.expire(Timestamp::from_secs(1059));
        assert!(c.contains(MemberId(1), &[1; 16]));
        c.expire(Timestamp::from_secs(1060));
        assert!(c.is_empty());
    }
}
