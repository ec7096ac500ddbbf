//! Slice exclusivity (brief decision 3, last step): at most one owner per (group, slice). A claim
//! in a later epoch displaces overlapping claims of earlier epochs; in the same epoch the lower
//! member id keeps the slice. Claims expire unless refreshed. A member's epoch stays fenced for
//! a while after its claim is gone, so that a captured older join cannot bring the claim back.
//! Claims expire on monotonic time (a step of the router's wall clock expires none); fences,
//! which guard the wall-clock timeliness window, last on the wall clock.
//!
//! One table serves both address families ([`OwnershipTable`] for IGMPv3 joins,
//! [`OwnershipTable6`] for MLDv2 ones, issue 15): the rules are the same word for word.

use crate::cert::{KeyId, MemberId};
use crate::join::AllocationEpoch;
use crate::liveness::LivenessAnchor;
use crate::slice::{Bits, SliceSetOf};
use crate::time::{Clock, Instant, Timestamp};
use core::fmt::Debug;
use core::hash::Hash;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::time::Duration;
use std::collections::{BTreeMap, HashMap};

/// An address family's addresses, as groups and as member senders: IPv4 or IPv6.
pub trait FamilyAddr: Copy + Eq + Ord + Hash + Debug + Into<Self::Bits> {
    /// The source addresses' bits, what the family's slices are over.
    type Bits: Bits;
}

impl FamilyAddr for Ipv4Addr {
    type Bits = u32;
}

impl FamilyAddr for Ipv6Addr {
    type Bits = u128;
}

/// A set of slices of family `A`'s source space.
type Slices<A> = SliceSetOf<<A as FamilyAddr>::Bits>;

/// One member's current claim on one IPv4 group.
pub type Claim = ClaimOf<Ipv4Addr>;
/// One member's current claim on one IPv6 group.
pub type Claim6 = ClaimOf<Ipv6Addr>;

/// One member's current claim on one group of family `A`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOf<A: FamilyAddr> {
    pub slices: Slices<A>,
    pub epoch: AllocationEpoch,
    /// The interface the join arrived on: where the kernel sends this member's traffic.
    pub ifindex: u32,
    /// The member's address on that link.
    pub sender: A,
    /// Monotonic time after which the claim is gone unless refreshed.
    pub expires: Instant,
    /// The member key that signed the join, and the group key that certified it: a claim
    /// lasts only while the keystore neither revokes the one nor retires the other.
    pub member_key: KeyId,
    pub issuer: KeyId,
    /// Units the member takes at `epoch` if their owner fails (SPEC.md §5.5), within its
    /// certificate; they are not owned until [`OwnershipTable::failover_view`] gives them.
    pub standby: Slices<A>,
    /// Where the member's liveness beacons stand, as of its join; empty: it sends none.
    pub liveness: Vec<LivenessAnchor>,
    /// Slices the member's join claims that a member the router vouches for still holds
    /// (SPEC.md §5.2): given when that member releases them or stops being vouched for. Not
    /// owned meanwhile; `slices` holds only what is.
    pub waiting: Slices<A>,
}

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    #[error("epoch {claimed} is older than the member's accepted epoch {current}")]
    StaleEpoch {
        claimed: AllocationEpoch,
        current: AllocationEpoch,
    },
    #[error("slices held by {holder} at epoch {epoch}")]
    Conflict {
        holder: MemberId,
        epoch: AllocationEpoch,
    },
}

/// What one accepted claim or one expiry did to an IPv4 group's owners.
pub type OwnershipChange = OwnershipChangeOf<Ipv4Addr>;
/// What one accepted claim or one expiry did to an IPv6 group's owners.
pub type OwnershipChange6 = OwnershipChangeOf<Ipv6Addr>;

/// What one accepted claim or one expiry did to a group's owners: the router re-points its
/// kernel state from this, without recomputing the whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipChangeOf<A: FamilyAddr> {
    pub group: Option<A>,
    /// Slices that now belong to a member and did not before.
    pub gained: Vec<(MemberId, Slices<A>)>,
    /// Slices a member no longer owns.
    pub lost: Vec<(MemberId, Slices<A>)>,
}

impl<A: FamilyAddr> Default for OwnershipChangeOf<A> {
    fn default() -> Self {
        OwnershipChangeOf {
            group: None,
            gained: Vec::new(),
            lost: Vec::new(),
        }
    }
}

impl<A: FamilyAddr> OwnershipChangeOf<A> {
    pub fn is_empty(&self) -> bool {
        self.gained.is_empty() && self.lost.is_empty()
    }
}

/// The epoch of a claim that is gone (left, expired or taken over), remembered until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fence {
    epoch: AllocationEpoch,
    until: Timestamp,
}

/// (group, slice) → member, for every IPv4 group the router serves.
pub type OwnershipTable = OwnershipTableOf<Ipv4Addr>;
/// (group, slice) → member, for every IPv6 group the router serves.
pub type OwnershipTable6 = OwnershipTableOf<Ipv6Addr>;

/// (group, slice) → member, for every group of family `A` the router serves.
#[derive(Debug)]
pub struct OwnershipTableOf<A: FamilyAddr> {
    groups: HashMap<A, BTreeMap<MemberId, ClaimOf<A>>>,
    /// Epochs of members whose claim on a group is gone, kept for `fence_retention`.
    fences: HashMap<(A, MemberId), Fence>,
    fence_retention: Duration,
    /// Members the router has fresh liveness evidence of (SPEC.md §5.5): a later epoch does not
    /// take their slices until they release them.
    vouched: std::collections::HashSet<(A, MemberId)>,
}

impl<A: FamilyAddr> Default for OwnershipTableOf<A> {
    fn default() -> Self {
        OwnershipTableOf {
            groups: HashMap::new(),
            fences: HashMap::new(),
            fence_retention: Duration::ZERO,
            vouched: Default::default(),
        }
    }
}

impl<A: FamilyAddr> OwnershipTableOf<A> {
    /// A table that fences a gone claim's epoch for twice the default timeliness window (±30 s)
    /// plus a millisecond; see [`OwnershipTable::with_fence_retention`].
    pub fn new() -> Self {
        Self::with_fence_retention(Duration::from_millis(60_001))
    }

    /// A table that remembers a gone claim's epoch for `fence_retention`: as long as a join
    /// signed before the claim went could still be timely (the verifier passes twice its
    /// timeliness window, plus a millisecond).
    pub fn with_fence_retention(fence_retention: Duration) -> Self {
        OwnershipTableOf {
            fence_retention,
            ..Self::default()
        }
    }

    /// The epoch `member` last held on `group`: its live claim's, or a fence's.
    fn accepted_epoch(&self, group: A, member: MemberId) -> Option<AllocationEpoch> {
        self.groups
            .get(&group)
            .and_then(|claims| claims.get(&member))
            .map(|c| c.epoch)
            .or_else(|| self.fences.get(&(group, member)).map(|f| f.epoch))
    }

    /// Checks `claim` by `member` against the others without changing anything.
    pub fn check(&self, group: A, member: MemberId, claim: &ClaimOf<A>) -> Result<(), ClaimError> {
        if let Some(current) = self.accepted_epoch(group, member) {
            if current > claim.epoch {
                return Err(ClaimError::StaleEpoch {
                    claimed: claim.epoch,
                    current,
                });
            }
        }
        let Some(claims) = self.groups.get(&group) else {
            return Ok(());
        };
        for (&other, held) in claims {
            if other == member || !held.slices.overlaps(&claim.slices) {
                continue;
            }
            let other_wins =
                held.epoch > claim.epoch || (held.epoch == claim.epoch && other < member);
            if other_wins {
                return Err(ClaimError::Conflict {
                    holder: other,
                    epoch: held.epoch,
                });
            }
        }
        Ok(())
    }

    /// Checks and records `claim` as `member`'s whole claim on `group` at `now`; overlapping
    /// slices of claims it beats are taken from them. An empty claim is a leave.
    pub fn apply(
        &mut self,
        now: Timestamp,
        group: A,
        member: MemberId,
        claim: ClaimOf<A>,
    ) -> Result<OwnershipChangeOf<A>, ClaimError> {
        self.check(group, member, &claim)?;
        self.fences.remove(&(group, member));
        let until = now.saturating_add(self.fence_retention);
        let claims = self.groups.entry(group).or_default();
        let mut change = OwnershipChangeOf {
            group: Some(group),
            ..Default::default()
        };
        let mut claim = claim;
        claim.waiting = SliceSetOf::new();
        for (&other, held) in claims.iter_mut() {
            if other == member {
                continue;
            }
            let taken = held.slices.intersection(&claim.slices);
            if taken.is_empty() {
                continue;
            }
            // A member the router vouches for keeps its slices until it releases them: a later
            // epoch from anyone else waits (a compromised member cannot take a live one's).
            if self.vouched.contains(&(group, other)) {
                claim.waiting = claim.waiting.union(&taken);
                claim.slices = claim.slices.difference(&taken);
                continue;
            }
            held.slices = held.slices.difference(&taken);
            change.lost.push((other, taken));
        }
        let (before, moved) = claims
            .get(&member)
            .map(|c| {
                let moved = c.ifindex != claim.ifindex || c.sender != claim.sender;
                (c.slices.clone(), moved)
            })
            .unwrap_or_default();
        // A member that now speaks from another interface or address: every slice it keeps
        // changes kernel target, so the change names them all (lost from the old place, gained
        // at the new one) and the router re-points them.
        let (gained, dropped) = if moved {
            (claim.slices.clone(), before)
        } else {
            (
                claim.slices.difference(&before),
                before.difference(&claim.slices),
            )
        };
        if !gained.is_empty() {
            change.gained.push((member, gained));
        }
        if !dropped.is_empty() {
            change.lost.push((member, dropped));
        }
        claims.insert(member, claim);
        // A leave, or a claim emptied by a later one: gone, but its epoch stays fenced.
        self.retire_emptied(group, until);
        self.grant_waiting(now, group, &mut change);
        Ok(change)
    }

    /// Records whether the router vouches for `member` on `group` (fresh liveness evidence,
    /// SPEC.md §5.5). When it stops, slices waiting on it go to their claimants.
    pub fn set_vouched(
        &mut self,
        now: impl Into<Clock>,
        group: A,
        member: MemberId,
        vouched: bool,
    ) -> Option<OwnershipChangeOf<A>> {
        if vouched {
            self.vouched.insert((group, member));
            return None;
        }
        if !self.vouched.remove(&(group, member)) {
            return None;
        }
        let mut change = OwnershipChangeOf {
            group: Some(group),
            ..Default::default()
        };
        self.grant_waiting(now.into().wall, group, &mut change);
        (!change.is_empty()).then_some(change)
    }

    /// Gives waiting slices of `group` that are free now, or held by a claim they beat whose
    /// member is not vouched for, to their claimants: later epochs first, then lower ids.
    fn grant_waiting(&mut self, now: Timestamp, group: A, change: &mut OwnershipChangeOf<A>) {
        let Some(claims) = self.groups.get_mut(&group) else {
            return;
        };
        let mut waiters: Vec<(AllocationEpoch, MemberId)> = claims
            .iter()
            .filter(|(_, c)| !c.waiting.is_empty())
            .map(|(&m, c)| (c.epoch, m))
            .collect();
        waiters.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (epoch, waiter) in waiters {
            let wanted = claims[&waiter].waiting.clone();
            let mut given = wanted.clone();
            for (&other, held) in claims.iter_mut() {
                if other == waiter {
                    continue;
                }
                let overlap = held.slices.intersection(&wanted);
                if overlap.is_empty() {
                    continue;
                }
                let beats = held.epoch < epoch || (held.epoch == epoch && waiter < other);
                if !beats || self.vouched.contains(&(group, other)) {
                    given = given.difference(&overlap);
                    continue;
                }
                held.slices = held.slices.difference(&overlap);
                change.lost.push((other, overlap));
            }
            if given.is_empty() {
                continue;
            }
            let w = claims.get_mut(&waiter).expect("a waiter of this group");
            w.waiting = w.waiting.difference(&given);
            w.slices = w.slices.union(&given);
            change.gained.push((waiter, given));
        }
        self.retire_emptied(group, now.saturating_add(self.fence_retention));
    }

    /// Removes `group`'s claims that own and wait for nothing (a leave, or emptied by others),
    /// fencing their epochs until `until`.
    fn retire_emptied(&mut self, group: A, until: Timestamp) {
        let Some(claims) = self.groups.get_mut(&group) else {
            return;
        };
        let fences = &mut self.fences;
        claims.retain(|&m, c| {
            let live = !c.slices.is_empty() || !c.waiting.is_empty();
            if !live {
                fences.insert(
                    (group, m),
                    Fence {
                        epoch: c.epoch,
                        until,
                    },
                );
            }
            live
        });
        if claims.is_empty() {
            self.groups.remove(&group);
        }
    }

    /// Drops the claims `gone` says no longer hold (their member key revoked, their issuer
    /// retired), fencing their epochs like an expiry.
    pub fn drop_where(
        &mut self,
        now: impl Into<Clock>,
        mut gone: impl FnMut(A, MemberId, &ClaimOf<A>) -> bool,
    ) -> Vec<OwnershipChangeOf<A>> {
        let now: Clock = now.into();
        let until = now.wall.saturating_add(self.fence_retention);
        let mut changes = Vec::new();
        for (&group, claims) in self.groups.iter_mut() {
            let mut change = OwnershipChangeOf {
                group: Some(group),
                ..Default::default()
            };
            let fences = &mut self.fences;
            claims.retain(|&m, c| {
                if !gone(group, m, c) {
                    return true;
                }
                change.lost.push((m, c.slices.clone()));
                fences.insert(
                    (group, m),
                    Fence {
                        epoch: c.epoch,
                        until,
                    },
                );
                false
            });
            if !change.is_empty() {
                changes.push(change);
            }
        }
        self.groups.retain(|_, c| !c.is_empty());
        // What the dropped claims held may be what others wait for.
        for change in &mut changes {
            if let Some(group) = change.group {
                self.grant_waiting(now.wall, group, change);
            }
        }
        changes
    }

    /// Drops claims not refreshed by `now.mono` (fencing their epochs) and fences that ran out
    /// by `now.wall`.
    pub fn expire(&mut self, now: impl Into<Clock>) -> Vec<OwnershipChangeOf<A>> {
        let now: Clock = now.into();
        self.fences.retain(|_, f| f.until > now.wall);
        self.drop_where(now, |_, _, c| c.expires <= now.mono)
    }

    /// Keeps `member`'s claim on `group` until at least `until` (monotonic), if that claim is at
    /// `sender` on `ifindex`; returns whether there was such a claim. The router's answer to a
    /// flood it could not check all of: a copy claiming to be this member, from where its claim
    /// is, was dropped unverified and may have been the member's refresh (SPEC.md §5.4).
    /// A later epoch still takes the claim's slices at once; a leave still removes it.
    pub fn hold(
        &mut self,
        group: A,
        member: MemberId,
        sender: A,
        ifindex: u32,
        until: Instant,
    ) -> bool {
        match self.groups.get_mut(&group).and_then(|c| c.get_mut(&member)) {
            Some(c) if c.sender == sender && c.ifindex == ifindex => {
                c.expires = c.expires.max(until);
                true
            }
            _ => false,
        }
    }

    /// Keeps every claim until at least `until`: the router lost datagrams it cannot attribute
    /// (its socket's queue overflowed), any of which may have been a refresh. Returns how many
    /// claims there are.
    pub fn hold_all(&mut self, until: Instant) -> usize {
        let mut n = 0;
        for c in self.groups.values_mut().flat_map(|g| g.values_mut()) {
            c.expires = c.expires.max(until);
            n += 1;
        }
        n
    }

    /// The table the data plane follows while the router has found members dead (SPEC.md
    /// §5.5): each dead member's slices go to the live members whose standby, at the dead
    /// claim's epoch, covers them (lower member ids first); what no standby covers stays with
    /// the dead member. `None` when nothing moves. The verified table is not changed: the next
    /// join of a later epoch, or the dead member's return, decides from it as before.
    pub fn failover_view(&self, dead: impl Fn(A, MemberId) -> bool) -> Option<OwnershipTableOf<A>> {
        let mut view: Option<OwnershipTableOf<A>> = None;
        for (&group, claims) in &self.groups {
            for (&gone, claim) in claims.iter().filter(|(&m, _)| dead(group, m)) {
                let mut left = claim.slices.clone();
                for (&heir, standby) in claims.iter().filter(|(&m, c)| {
                    m != gone && c.epoch == claim.epoch && !c.standby.is_empty() && !dead(group, m)
                }) {
                    let given = standby.standby.intersection(&left);
                    if given.is_empty() {
                        continue;
                    }
                    left = left.difference(&given);
                    let table = view.get_or_insert_with(|| OwnershipTableOf {
                        groups: self.groups.clone(),
                        fences: HashMap::new(),
                        fence_retention: self.fence_retention,
                        vouched: Default::default(),
                    });
                    let claims = table.groups.get_mut(&group).expect("cloned from self");
                    let heir_claim = claims.get_mut(&heir).expect("cloned from self");
                    heir_claim.slices = heir_claim.slices.union(&given);
                    let gone_claim = claims.get_mut(&gone).expect("cloned from self");
                    gone_claim.slices = gone_claim.slices.difference(&given);
                    if left.is_empty() {
                        break;
                    }
                }
            }
        }
        if let Some(table) = view.as_mut() {
            for claims in table.groups.values_mut() {
                claims.retain(|_, c| !c.slices.is_empty());
            }
            table.groups.retain(|_, c| !c.is_empty());
        }
        view
    }

    /// The member whose claim on `group` holds `source`.
    pub fn owner_of(&self, group: A, source: A) -> Option<(MemberId, &ClaimOf<A>)> {
        let source: A::Bits = source.into();
        self.groups
            .get(&group)?
            .iter()
            .find(|(_, c)| c.slices.contains(source))
            .map(|(&m, c)| (m, c))
    }

    pub fn claims(&self, group: A) -> impl Iterator<Item = (MemberId, &ClaimOf<A>)> {
        self.groups
            .get(&group)
            .into_iter()
            .flat_map(|c| c.iter().map(|(&m, c)| (m, c)))
    }

    pub fn groups(&self) -> impl Iterator<Item = A> + '_ {
        self.groups.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slice::{Slice, SliceSet};

    const G: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
    const NOW: Timestamp = Timestamp::from_secs(10);
    const FENCE: Duration = Duration::from_secs(60);

    fn claim(slices: &[Slice], epoch: u64) -> Claim {
        Claim {
            slices: slices.iter().copied().collect(),
            epoch: AllocationEpoch(epoch),
            ifindex: 1,
            sender: Ipv4Addr::new(10, 0, 0, 1),
            expires: Instant::from_secs(100),
            member_key: KeyId([1; 8]),
            issuer: KeyId([2; 8]),
            standby: SliceSet::default(),
            liveness: Vec::new(),
            waiting: SliceSet::default(),
        }
    }

    fn standing_by(slices: &[Slice], epoch: u64, standby: &[Slice]) -> Claim {
        Claim {
            standby: standby.iter().copied().collect(),
            ..claim(slices, epoch)
        }
    }

    /// A planned move while the old owner is vouched for: the new owner's later epoch waits,
    /// and the old owner's own join at that epoch, which leaves the unit out, gives it over.
    #[test]
    fn a_later_epoch_waits_for_a_vouched_holder_to_release() {
        let u = SliceSet::low_order_slicing(2);
        let mut t = OwnershipTable::new();
        let (a, b) = (MemberId(1), MemberId(2));
        t.apply(NOW, G, a, claim(&[u[0], u[1]], 5)).unwrap();
        t.set_vouched(NOW, G, a, true);
        let change = t.apply(NOW, G, b, claim(&[u[1], u[2]], 6)).unwrap();
        let owner = |t: &OwnershipTable, s: Slice| t.owner_of(G, s.base()).map(|(m, _)| m);
        assert_eq!(owner(&t, u[1]), Some(a), "a keeps u1 until it lets go");
        assert_eq!(owner(&t, u[2]), Some(b));
        assert!(change.lost.is_empty(), "{change:?}");
        let waiting = |t: &OwnershipTable, m| {
            t.claims(G)
                .find(|(x, _)| *x == m)
                .unwrap()
                .1
                .waiting
                .clone()
        };
        assert_eq!(waiting(&t, b), SliceSet::from(u[1]));
        let change = t.apply(NOW, G, a, claim(&[u[0]], 6)).unwrap();
        assert_eq!(owner(&t, u[1]), Some(b));
        assert!(
            change.gained.contains(&(b, SliceSet::from(u[1]))),
            "{change:?}"
        );
        assert!(waiting(&t, b).is_empty());
    }

    /// A compromised member's join at a far later epoch takes nothing from a member the router
    /// vouches for (issue 13), only from one it does not; once vouching ends (beacons stopped)
    /// the waiting slices go to it as a later epoch always did.
    #[test]
    fn a_far_later_epoch_takes_nothing_from_a_vouched_member_until_vouching_ends() {
        let u = SliceSet::low_order_slicing(2);
        let mut t = OwnershipTable::new();
        let (a, b, m) = (MemberId(1), MemberId(2), MemberId(3));
        t.apply(NOW, G, a, claim(&[u[0], u[1]], 5)).unwrap();
        t.apply(NOW, G, b, claim(&[u[2]], 5)).unwrap();
        t.set_vouched(NOW, G, a, true);
        t.apply(NOW, G, m, claim(&[u[0], u[1], u[2]], 1 << 40))
            .unwrap();
        let owner = |t: &OwnershipTable, s: Slice| t.owner_of(G, s.base()).map(|(m, _)| m);
        assert_eq!((owner(&t, u[0]), owner(&t, u[1])), (Some(a), Some(a)));
        assert_eq!(
            owner(&t, u[2]),
            Some(m),
            "b sends no beacons: taken as before"
        );
        // Refreshes change nothing.
        t.apply(NOW, G, m, claim(&[u[0], u[1], u[2]], 1 << 40))
            .unwrap();
        assert_eq!(owner(&t, u[0]), Some(a));
        let change = t.set_vouched(NOW, G, a, false).expect("a's slices go");
        assert_eq!(owner(&t, u[0]), Some(m));
        assert!(change.lost.iter().any(|(x, _)| *x == a));
        assert!(t.claims(G).all(|(x, _)| x != a), "a has nothing left");
    }

    /// A dead owner's units go to the standbys of its epoch that cover them; a standby of
    /// another epoch, or of a dead member, takes nothing; the verified table is unchanged.
    #[test]
    fn failover_view_gives_a_dead_owners_units_to_live_standbys_of_its_epoch() {
        let u = SliceSet::low_order_slicing(3);
        let mut t = OwnershipTable::new();
        let (a, b, c, d) = (MemberId(1), MemberId(2), MemberId(3), MemberId(4));
        t.apply(NOW, G, a, claim(&[u[0], u[1]], 5)).unwrap();
        t.apply(NOW, G, b, standing_by(&[u[2]], 5, &[u[0]]))
            .unwrap();
        // c stands by for u1 but signed at another epoch: its standby names another allocation.
        t.apply(NOW, G, c, standing_by(&[u[3]], 6, &[u[1]]))
            .unwrap();
        assert!(t.failover_view(|_, _| false).is_none(), "nobody dead");
        let view = t.failover_view(|_, m| m == a).expect("a is dead");
        let owner = |t: &OwnershipTable, s: Slice| t.owner_of(G, s.base()).map(|(m, _)| m);
        assert_eq!(owner(&view, u[0]), Some(b));
        assert_eq!(
            owner(&view, u[1]),
            Some(a),
            "no standby of epoch 5 covers u1"
        );
        assert_eq!(owner(&view, u[2]), Some(b));
        assert_eq!(owner(&t, u[0]), Some(a), "the verified table is unchanged");
        // d stands by for u1 at epoch 5: the view gives it u1, but not while d is dead too.
        t.apply(NOW, G, d, standing_by(&[u[4]], 5, &[u[1]]))
            .unwrap();
        let view = t.failover_view(|_, m| m == a).unwrap();
        assert_eq!(owner(&view, u[1]), Some(d));
        assert!(view.claims(G).all(|(m, _)| m != a), "a has nothing left");
        let view = t.failover_view(|_, m| m == a || m == d).unwrap();
        assert_eq!(owner(&view, u[1]), Some(a));
    }

    /// A hold (a copy shed unverified from where the claim is) keeps the claim past its
    /// expiry; a copy from anywhere else, or for a member with no claim, holds nothing.
    #[test]
    fn a_hold_keeps_only_the_claim_at_the_copys_place() {
        let mut t = OwnershipTable::with_fence_retention(FENCE);
        t.apply(NOW, G, MemberId(1), claim(&[Slice::ALL], 1))
            .unwrap();
        let at = Ipv4Addr::new(10, 0, 0, 1);
        let later = Instant::from_secs(130);
        assert!(!t.hold(G, MemberId(1), Ipv4Addr::new(10, 0, 0, 9), 1, later));
        assert!(!t.hold(G, MemberId(1), at, 2, later));
        assert!(!t.hold(G, MemberId(2), at, 1, later));
        assert!(t.hold(G, MemberId(1), at, 1, later));
        assert!(
            t.expire(Timestamp::from_secs(100)).is_empty(),
            "held past 100 s"
        );
        assert!(t.hold(G, MemberId(1), at, 1, Instant::from_secs(110)));
        let expires = t.claims(G).next().map(|(_, c)| c.expires);
        assert_eq!(expires, Some(later), "a hold never shortens a claim");
        assert_eq!(t.expire(Timestamp::from_secs(130)).len(), 1);
    }

    #[test]
    fn later_epoch_takes_over_and_ties_go_to_lower_id() {
        let (even, odd) = (Slice::new(0, 1), Slice::new(1, 1));
        let mut t = OwnershipTable::with_fence_retention(FENCE);
        t.apply(NOW, G, MemberId(1), claim(&[even, odd], 1))
            .unwrap();
        assert_eq!(
            t.owner_of(G, Ipv4Addr::new(1, 2, 3, 5)).unwrap().0,
            MemberId(1)
        );
        // Same epoch, higher id: refused.
        assert!(matches!(
            t.apply(NOW, G, MemberId(2), claim(&[odd], 1)),
            Err(ClaimError::Conflict { .. })
        ));
        // Later epoch: member 2 takes the odd addresses from member 1.
        let change = t.apply(NOW, G, MemberId(2), claim(&[odd], 2)).unwrap();
        assert_eq!(change.lost, vec![(MemberId(1), SliceSet::from(odd))]);
        assert_eq!(
            t.owner_of(G, Ipv4Addr::new(1, 2, 3, 5)).unwrap().0,
            MemberId(2)
        );
        assert_eq!(
            t.owner_of(G, Ipv4Addr::new(1, 2, 3, 4)).unwrap().0,
            MemberId(1)
        );
        // Member 1 cannot go back to an older epoch, nor reclaim at its old epoch.
        assert!(matches!(
            t.apply(NOW, G, MemberId(1), claim(&[odd], 1)),
            Err(ClaimError::Conflict { .. })
        ));
        // Equal epoch, lower id wins the tie.
        let change = t
            .apply(NOW, G, MemberId(1), claim(&[even, odd], 2))
            .unwrap();
        assert_eq!(change.lost, vec![(MemberId(2), SliceSet::from(odd))]);
        assert!(t.claims(G).all(|(m, _)| m == MemberId(1)));
    }

    #[test]
    fn stale_own_epoch_and_leave_and_expiry() {
        let mut t = OwnershipTable::with_fence_retention(FENCE);
        t.apply(NOW, G, MemberId(1), claim(&[Slice::ALL], 5))
            .unwrap();
        assert!(matches!(
            t.apply(NOW, G, MemberId(1), claim(&[Slice::ALL], 4)),
            Err(ClaimError::StaleEpoch { .. })
        ));
        let change = t.apply(NOW, G, MemberId(1), claim(&[], 5)).unwrap();
        assert_eq!(change.lost.len(), 1);
        assert!(t.owner_of(G, Ipv4Addr::new(1, 1, 1, 1)).is_none());
        t.apply(NOW, G, MemberId(3), claim(&[Slice::ALL], 6))
            .unwrap();
        assert!(t.expire(Timestamp::from_secs(99)).is_empty());
        assert_eq!(t.expire(Timestamp::from_secs(100)).len(), 1);
        assert_eq!(t.groups().count(), 0);
    }

    #[test]
    fn a_gone_claim_keeps_its_epoch_fenced_until_the_retention_ends() {
        let all = [Slice::ALL];
        // Left at epoch 5: an older join (captured before the leave) cannot bring it back.
        let mut t = OwnershipTable::with_fence_retention(FENCE);
        t.apply(NOW, G, MemberId(1), claim(&all, 5)).unwrap();
        t.apply(NOW, G, MemberId(1), claim(&[], 5)).unwrap();
        assert!(matches!(
            t.apply(NOW, G, MemberId(1), claim(&all, 4)),
            Err(ClaimError::StaleEpoch { .. })
        ));
        // The same or a later epoch is a rejoin.
        t.apply(NOW, G, MemberId(1), claim(&all, 5)).unwrap();
        t.apply(NOW, G, MemberId(1), claim(&[], 5)).unwrap();

        // Expired at epoch 6, then taken over: the fences hold, and go with the retention.
        let mut t = OwnershipTable::with_fence_retention(FENCE);
        t.apply(NOW, G, MemberId(2), claim(&all, 6)).unwrap();
        assert_eq!(t.expire(Timestamp::from_secs(100)).len(), 1);
        assert!(matches!(
            t.apply(NOW, G, MemberId(2), claim(&all, 5)),
            Err(ClaimError::StaleEpoch { .. })
        ));
        t.apply(NOW, G, MemberId(3), claim(&all, 7)).unwrap();
        t.apply(NOW, G, MemberId(4), claim(&all, 8)).unwrap();
        assert!(matches!(
            t.apply(NOW, G, MemberId(3), claim(&all, 6)),
            Err(ClaimError::StaleEpoch { .. })
        ));
        // Member 2's fence was set at 100 s; member 3's at NOW. Past both retentions, old
        // epochs are refused by the timeliness check instead and the fences are forgotten.
        t.expire(Timestamp::from_secs(161));
        assert!(!t.fences.contains_key(&(G, MemberId(2))));
        assert!(!t.fences.contains_key(&(G, MemberId(3))));
        t.apply(NOW, G, MemberId(3), claim(&all, 9)).unwrap();
    }

    #[test]
    fn a_member_that_moves_loses_and_regains_all_its_slices() {
        // The router re-points from the change: a claim from a new interface or address must
        // name every slice, even when the slices are the same.
        let mut t = OwnershipTable::new();
        let odd = Slice::new(1, 1);
        t.apply(NOW, G, MemberId(1), claim(&[odd], 1)).unwrap();
        assert!(t
            .apply(NOW, G, MemberId(1), claim(&[odd], 1))
            .unwrap()
            .is_empty());
        let mut moved = claim(&[odd], 1);
        moved.ifindex = 2;
        let change = t.apply(NOW, G, MemberId(1), moved).unwrap();
        assert_eq!(change.lost, vec![(MemberId(1), SliceSet::from(odd))]);
        assert_eq!(change.gained, vec![(MemberId(1), SliceSet::from(odd))]);
        let mut readdressed = claim(&[odd], 1);
        readdressed.ifindex = 2;
        readdressed.sender = Ipv4Addr::new(10, 0, 0, 9);
        let change = t.apply(NOW, G, MemberId(1), readdressed).unwrap();
        assert_eq!(change.gained, vec![(MemberId(1), SliceSet::from(odd))]);
        assert_eq!(
            t.owner_of(G, Ipv4Addr::new(1, 2, 3, 5)).unwrap().1.ifindex,
            2
        );
    }
}
