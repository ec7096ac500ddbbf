//! The duplicate check of Fig 6 (step 610): remembers (member, nonce) of every accepted join for
//! as long as a copy could still pass the timeliness check, in bounded memory and constant time,
//! with a share per member so that one member cannot fill it for the others (issue 13, item 7).

use crate::cert::MemberId;
use crate::join::NONCE_LEN;
use crate::time::Timestamp;
use core::time::Duration;
use std::collections::{HashMap, HashSet, VecDeque};

type Key = (MemberId, [u8; NONCE_LEN]);

/// A fixed-capacity set of recently accepted (member, nonce) pairs.
///
/// Only joins that passed every other check are recorded, so a flood of forged joins cannot fill
/// it. Entries leave in acceptance order once `retention` has passed: with a timeliness window
/// of ±w, a join accepted at `t` is timely only until `t + 2w`, so `retention = 2w` suffices.
/// When full of live entries, the cache refuses new joins rather than forget a live one.
///
/// Each member may hold at most `per_member` live entries: only a certified member can add
/// entries (a replay is refused as a duplicate before it is recorded, a forgery before its
/// signature passes), so a member that signs fresh joins faster than its share refuses only its
/// own joins. The overall `capacity` stays as a memory bound; it is reached only when more than
/// `capacity / per_member` members fill their shares at once.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    per_member: usize,
    retention: Duration,
    seen: HashSet<Key>,
    order: VecDeque<(Timestamp, Key)>,
    /// Live entries per member (members with none are absent).
    live: HashMap<MemberId, usize>,
}

/// Why a join cannot be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This member already holds its share of live entries.
    Member(usize),
    /// The whole cache is full of live entries.
    Total(usize),
}

impl ReplayCache {
    pub fn new(capacity: usize, retention: Duration) -> Self {
        Self::with_share(capacity, capacity, retention)
    }

    /// A cache of `capacity` entries of which one member may hold at most `per_member`.
    pub fn with_share(capacity: usize, per_member: usize, retention: Duration) -> Self {
        ReplayCache {
            capacity,
            per_member,
            retention,
            seen: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            live: HashMap::new(),
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
            if let Some(n) = self.live.get_mut(&key.0) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.live.remove(&key.0);
                }
            }
        }
    }

    /// Whether one more entry of `member` fits after expiring old ones.
    pub fn room_for(&mut self, now: Timestamp, member: MemberId) -> Result<(), Full> {
        self.expire(now);
        if self.live.get(&member).copied().unwrap_or(0) >= self.per_member {
            return Err(Full::Member(self.per_member));
        }
        if self.seen.len() >= self.capacity {
            return Err(Full::Total(self.capacity));
        }
        Ok(())
    }

    /// Records an accepted join. Returns false (and records nothing) when full or already present.
    pub fn insert(&mut self, now: Timestamp, member: MemberId, nonce: [u8; NONCE_LEN]) -> bool {
        if self.room_for(now, member).is_err() || !self.seen.insert((member, nonce)) {
            return false;
        }
        self.order.push_back((now, (member, nonce)));
        *self.live.entry(member).or_insert(0) += 1;
        true
    }

    /// Live entries of `member`.
    pub fn live_of(&self, member: MemberId) -> usize {
        self.live.get(&member).copied().unwrap_or(0)
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
    fn a_member_at_its_share_leaves_room_for_the_others() {
        let mut c = ReplayCache::with_share(8, 2, Duration::from_secs(60));
        let t0 = Timestamp::from_secs(1000);
        assert!(c.insert(t0, MemberId(1), [1; 16]));
        assert!(c.insert(t0, MemberId(1), [2; 16]));
        assert_eq!(c.room_for(t0, MemberId(1)), Err(Full::Member(2)));
        assert!(!c.insert(t0, MemberId(1), [3; 16]), "its share is full");
        assert!(
            c.insert(t0, MemberId(2), [1; 16]),
            "another member still fits"
        );
        assert_eq!(c.live_of(MemberId(1)), 2);
        c.expire(Timestamp::from_secs(1060));
        assert_eq!(c.live_of(MemberId(1)), 0);
        assert!(c.insert(Timestamp::from_secs(1060), MemberId(1), [3; 16]));
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
