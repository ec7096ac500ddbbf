//! The member side of the site scope (issue 14, item 2; SPEC.md §3.10): the scope notices in
//! the queries our site's routers send, verified with the group keys the server already trusts
//! for its peers (our group key, or the keystore's published keys and revocations), the newest
//! kept per group. Sans-IO: the node hands it each query and the wall clock.
//!
//! With `control.site_scope` the daemon keeps one; the control endpoint allocating only the
//! scope's units (`Endpoint::set_scope`) is wired by the lead.

use igmp_ext::ed25519_dalek::VerifyingKey;
use igmp_ext::scope::{
    NewestScopes, ScopeError, ScopeReason, ScopeUpdate, UnverifiedScopeNotice, VerifiedScope,
};
use igmp_ext::verify::GroupKey;
use igmp_ext::wire::igmp::QueryRepr;
use igmp_ext::{GroupKeys, KeyId, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// How far a notice's timestamp may be from our clock: the verifier's default timeliness
/// window for joins (SPEC.md §5.1). A router signs each query's notice afresh.
pub const SCOPE_WINDOW: Duration = Duration::from_secs(30);

/// What the tracker counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeCounters {
    /// Notices that verified and were kept (changed, refreshed or repeated).
    pub accepted: u64,
    /// Notices refused, by reason ([`ScopeReason::as_str`] is the label).
    pub refused: BTreeMap<ScopeReason, u64>,
}

impl ScopeCounters {
    pub fn refused(&self, reason: ScopeReason) -> u64 {
        self.refused.get(&reason).copied().unwrap_or(0)
    }
}

/// The newest verified site scope per group, from the queries heard on the member link.
#[derive(Debug, Clone)]
pub struct SiteScopeTracker {
    /// The keys the notices' router certificates must be issued by: our group's.
    keys: HashMap<Ipv4Addr, Arc<GroupKeys>>,
    group: Ipv4Addr,
    window: Duration,
    newest: NewestScopes,
    counters: ScopeCounters,
}

impl SiteScopeTracker {
    /// A tracker for `group` whose routers are certified by one of `keys` (a rotation publishes
    /// two) and whose keys are not in `revoked`.
    pub fn new(group: Ipv4Addr, keys: &[VerifyingKey], revoked: &[KeyId]) -> Self {
        let mut t = SiteScopeTracker {
            keys: HashMap::new(),
            group,
            window: SCOPE_WINDOW,
            newest: NewestScopes::new(),
            counters: ScopeCounters::default(),
        };
        t.set_keys(keys, revoked);
        t
    }

    /// The keys as the keystore publishes them now (a rotation, a revocation): later notices
    /// are checked against these. The scope kept stays until a newer one comes.
    pub fn set_keys(&mut self, keys: &[VerifyingKey], revoked: &[KeyId]) {
        let published = GroupKeys {
            group: self.group,
            keys: keys.iter().copied().map(GroupKey::new).collect(),
            revoked_members: revoked.to_vec(),
        };
        self.keys = HashMap::from([(self.group, Arc::new(published))]);
    }

    /// A query heard on the link at wall time `now`: `None` when it carries no scope notice,
    /// else what keeping it did or why it was refused (counted either way). A refused notice
    /// changes nothing.
    pub fn handle_query(
        &mut self,
        now: Timestamp,
        query: &QueryRepr,
    ) -> Option<Result<ScopeUpdate, ScopeError>> {
        let v3 = query.v3.as_ref()?;
        let outcome = match UnverifiedScopeNotice::from_query(v3) {
            Ok(None) => return None,
            Ok(Some(notice)) => self
                .newest
                .precheck(notice.unverified())
                .and_then(|()| notice.verify(&self.keys, now, self.window))
                .and_then(|scope| self.newest.offer(scope)),
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(_) => self.counters.accepted += 1,
            Err(e) => *self.counters.refused.entry(e.reason).or_default() += 1,
        }
        Some(outcome)
    }

    /// The newest verified scope for `group`.
    pub fn current(&self, group: Ipv4Addr) -> Option<&VerifiedScope> {
        self.newest.current(group)
    }

    pub fn counters(&self) -> &ScopeCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::alloc::Slicing;
    use igmp_ext::fixtures::{Fixture, NOW};
    use igmp_ext::scope::ScopeNotice;
    use igmp_ext::wire::igmp::QueryV3Fields;
    use igmp_ext::SiteId;

    const BITS3: Slicing = Slicing::LowOrder { bits: 3 };

    fn query(additional_data: Vec<u8>) -> QueryRepr {
        QueryRepr {
            max_resp_code: 100,
            group: Ipv4Addr::UNSPECIFIED,
            v3: Some(QueryV3Fields {
                flags: 0x80,
                suppress: false,
                qrv: 2,
                qqic: 125,
                sources: vec![],
                additional_data,
            }),
        }
    }

    fn tracker(f: &Fixture) -> SiteScopeTracker {
        SiteScopeTracker::new(f.group, &[f.group_key.verifying_key()], &[])
    }

    fn notice(f: &Fixture, epoch: u64, at: Timestamp, units: &[usize]) -> ScopeNotice {
        let mut n = f.scope_notice(SiteId(1), epoch, BITS3, units);
        n.timestamp = at;
        n
    }

    fn later(s: u64) -> Timestamp {
        NOW.saturating_add(Duration::from_secs(s))
    }

    #[test]
    fn keeps_the_newest_verified_scope_and_counts() {
        let f = Fixture::routers(&[SiteId(1), SiteId(1)]);
        let mut t = tracker(&f);
        // A plain query (no E flag, or no notice) is none of the tracker's business.
        let mut plain = query(vec![]);
        assert_eq!(t.handle_query(NOW, &plain), None);
        plain.v3.as_mut().unwrap().flags = 0;
        assert_eq!(t.handle_query(NOW, &plain), None);
        assert_eq!(t.counters(), &ScopeCounters::default());
        let q = query(f.scope_data(0, &notice(&f, 4, NOW, &[0, 3])));
        assert_eq!(t.handle_query(NOW, &q), Some(Ok(ScopeUpdate::Changed)));
        let kept = t.current(f.group).expect("a scope");
        assert_eq!(
            (kept.site, kept.upper_epoch, kept.unit_count()),
            (SiteId(1), 4, 2)
        );
        assert!(kept.units[0] && kept.units[3]);
        // The site's other router refreshes it; then the upper group moves on.
        let q2 = query(f.scope_data(1, &notice(&f, 4, later(5), &[0, 3])));
        assert_eq!(
            t.handle_query(later(5), &q2),
            Some(Ok(ScopeUpdate::Refreshed))
        );
        let q3 = query(f.scope_data(1, &notice(&f, 5, later(6), &[0, 3, 6])));
        assert_eq!(
            t.handle_query(later(6), &q3),
            Some(Ok(ScopeUpdate::Changed))
        );
        // The first notice replayed: stale, refused, the scope stays.
        let r = t.handle_query(later(7), &q).unwrap();
        assert_eq!(r.unwrap_err().reason, ScopeReason::Stale);
        // Found stale before its signatures are checked: a broken one is stale too.
        let mut broken = q.clone();
        let data = &mut broken.v3.as_mut().unwrap().additional_data;
        let last = data.len() - 1;
        data[last] ^= 1;
        let r = t.handle_query(later(7), &broken).unwrap();
        assert_eq!(r.unwrap_err().reason, ScopeReason::Stale);
        assert_eq!(t.current(f.group).unwrap().upper_epoch, 5);
        assert_eq!(t.counters().accepted, 3);
        assert_eq!(t.counters().refused(ScopeReason::Stale), 2);
        assert_eq!(t.current(Ipv4Addr::new(232, 9, 9, 9)), None);
    }

    #[test]
    fn refused_notices_change_nothing_and_are_counted_by_reason() {
        let f = Fixture::routers(&[SiteId(1)]);
        let mut t = tracker(&f);
        let good = query(f.scope_data(0, &notice(&f, 4, NOW, &[1])));
        // Malformed: the value cut short.
        let mut cut = good.clone();
        cut.v3.as_mut().unwrap().additional_data.truncate(40);
        // Untimely: heard a minute later.
        let reasons = [
            (t.handle_query(NOW, &cut), ScopeReason::Malformed),
            (t.handle_query(later(60), &good), ScopeReason::Untimely),
        ];
        for (r, want) in reasons {
            assert_eq!(r.unwrap().unwrap_err().reason, want);
        }
        // Another group key: a router the keystore does not back.
        let mut other = SiteScopeTracker::new(
            f.group,
            &[igmp_ext::ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key()],
            &[],
        );
        let r = other.handle_query(NOW, &good).unwrap();
        assert_eq!(r.unwrap_err().reason, ScopeReason::UnknownKey);
        // Revoked after a keystore refresh.
        let router = KeyId::of(&f.members[0].key.verifying_key());
        t.set_keys(&[f.group_key.verifying_key()], &[router]);
        let r = t.handle_query(NOW, &good).unwrap();
        assert_eq!(r.unwrap_err().reason, ScopeReason::Revoked);
        assert_eq!(t.current(f.group), None);
        assert_eq!(t.counters().accepted, 0);
        assert_eq!(t.counters().refused(ScopeReason::Malformed), 1);
        assert_eq!(t.counters().refused(ScopeReason::Untimely), 1);
        assert_eq!(t.counters().refused(ScopeReason::Revoked), 1);
        // Back in the keystore's favour: accepted.
        t.set_keys(&[f.group_key.verifying_key()], &[]);
        assert_eq!(t.handle_query(NOW, &good), Some(Ok(ScopeUpdate::Changed)));
    }
}
