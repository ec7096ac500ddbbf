//! Deterministic allocation of slices to members (patent Fig 10, 11; brief decision 4): the
//! address space is cut into 2^k equal units (low-order or prefix bits), each member gets a share
//! proportional to its weight, and a change of members moves the fewest units possible.

use crate::cert::{MemberId, SiteId};
use crate::slice::{Slice, SliceSet};
use std::collections::BTreeMap;

mod sites;
pub use sites::{group_quotas, site_quotas};

/// How the space is cut into units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slicing {
    /// By the `bits` lowest address bits: every unit takes a share of every subnet, the
    /// hash-like spread of the patent's "every third portion". The default.
    LowOrder { bits: u8 },
    /// By the `bits` highest bits: CIDR prefixes, for operators who want topological slices.
    Prefix { bits: u8 },
}

/// Smallest gain, as a fraction of the mean weighted load, for which
/// [`Allocation::rebalanced_by_load`] makes a swap.
pub const MIN_SWAP_GAIN: f64 = 0.01;

/// Most units an allocation may have: 2^16 keeps per-member joins and tables small.
pub const MAX_BITS: u8 = 16;

impl Slicing {
    pub fn bits(&self) -> u8 {
        match *self {
            Slicing::LowOrder { bits } | Slicing::Prefix { bits } => bits.min(MAX_BITS),
        }
    }

    pub fn unit_count(&self) -> usize {
        1 << self.bits()
    }

    /// Unit `i` as a slice.
    pub fn unit(&self, i: usize) -> Slice {
        let bits = u32::from(self.bits());
        let i = i as u32 & ((1u32 << bits) - 1);
        match self {
            Slicing::LowOrder { .. } => Slice::new(i, (1u32 << bits) - 1),
            Slicing::Prefix { .. } if bits == 0 => Slice::ALL,
            Slicing::Prefix { .. } => Slice::new(i << (32 - bits), u32::MAX << (32 - bits)),
        }
    }

    /// The unit that holds `addr`.
    pub fn unit_of(&self, addr: u32) -> usize {
        let bits = u32::from(self.bits());
        match self {
            Slicing::LowOrder { .. } => (addr & ((1u32 << bits) - 1)) as usize,
            Slicing::Prefix { .. } if bits == 0 => 0,
            Slicing::Prefix { .. } => (addr >> (32 - bits)) as usize,
        }
    }
}

/// Units per member for `n` units, proportional to weight: floors first, then one more unit to
/// the largest remainders, ties to the lower member id (largest-remainder method). Members of
/// weight zero get nothing; if every weight is zero nobody gets anything.
pub fn quotas(n: usize, members: &[(MemberId, u32)]) -> BTreeMap<MemberId, usize> {
    largest_remainder(n, members)
}

/// [`quotas`] for any kind of sharer (members, or sites in [`site_quotas`]).
fn largest_remainder<K: Ord + Copy>(n: usize, members: &[(K, u32)]) -> BTreeMap<K, usize> {
    let total: u128 = members.iter().map(|&(_, w)| u128::from(w)).sum();
    let mut out: BTreeMap<K, usize> = members.iter().map(|&(m, _)| (m, 0)).collect();
    if total == 0 {
        return out;
    }
    let mut remainders = Vec::with_capacity(members.len());
    let mut given = 0usize;
    for &(m, w) in members {
        let exact = n as u128 * u128::from(w);
        let floor = (exact / total) as usize;
        *out.entry(m).or_default() = floor;
        given += floor;
        remainders.push((exact % total, m));
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, m) in remainders.iter().take(n - given) {
        *out.entry(m).or_default() += 1;
    }
    out
}

/// Which member owns each unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    slicing: Slicing,
    owners: Vec<Option<MemberId>>,
}

impl Allocation {
    /// Nobody owns anything.
    pub fn empty(slicing: Slicing) -> Self {
        Allocation {
            slicing,
            owners: vec![None; slicing.unit_count()],
        }
    }

    /// A fresh allocation among `members` (id, weight).
    pub fn new(slicing: Slicing, members: &[(MemberId, u32)]) -> Self {
        Allocation::empty(slicing).rebalanced(members)
    }

    /// The allocation for a new member list that moves the fewest units: a unit moves only when
    /// its owner left or holds more than its quota. Members over quota give up their
    /// highest-numbered units; free units go, lowest first, to the member furthest below its
    /// quota (ties to the lower id), which keeps each member's units spread over the space.
    /// [`Allocation::rebalanced_in`] with every unit in scope.
    pub fn rebalanced(&self, members: &[(MemberId, u32)]) -> Allocation {
        self.rebalanced_in(&vec![true; self.owners.len()], members)
    }

    /// [`Allocation::rebalanced`] within a scope (SPEC.md §6): only the units with `scope[i]`
    /// set are shared (a missing entry is out of scope), by quotas over their count; units
    /// outside it are left unowned. A unit moves only when its owner left, it left the scope,
    /// or its owner is over quota.
    pub fn rebalanced_in(&self, scope: &[bool], members: &[(MemberId, u32)]) -> Allocation {
        self.rebalanced_to(
            scope,
            &quotas(scope_size(scope, self.owners.len()), members),
        )
    }

    /// The minimal-move rule of [`Allocation::rebalanced_in`] for quotas computed elsewhere
    /// (site-aware ones: [`group_quotas`]); the members are the quota's keys, and the quotas
    /// must not add up to more than the scope's units (units beyond stay unowned).
    pub fn rebalanced_to(&self, scope: &[bool], quota: &BTreeMap<MemberId, usize>) -> Allocation {
        let in_scope = |i: usize| scope.get(i).copied().unwrap_or(false);
        let mut owners = self.owners.clone();
        let mut held: BTreeMap<MemberId, usize> = quota.keys().map(|&m| (m, 0)).collect();
        for (i, o) in owners.iter_mut().enumerate() {
            match o.filter(|_| in_scope(i)).and_then(|m| held.get_mut(&m)) {
                Some(n) => *n += 1,
                None => *o = None,
            }
        }
        for i in (0..owners.len()).rev() {
            if let Some(m) = owners[i] {
                let n = held.get_mut(&m).expect("owners are members here");
                if *n > quota[&m] {
                    *n -= 1;
                    owners[i] = None;
                }
            }
        }
        for (_, o) in owners
            .iter_mut()
            .enumerate()
            .filter(|(i, o)| o.is_none() && in_scope(*i))
        {
            let neediest = quota
                .iter()
                .map(|(&m, &q)| (q.saturating_sub(held[&m]), m))
                .filter(|&(deficit, _)| deficit > 0)
                .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            let Some((_, m)) = neediest else { break };
            *o = Some(m);
            *held.get_mut(&m).expect("quota members are held") += 1;
        }
        Allocation {
            slicing: self.slicing,
            owners,
        }
    }

    /// The units `me` would take if their owner failed (SPEC.md §5.5): for each other member of
    /// `members`, those of its units that [`Allocation::rebalanced`] without it gives to `me`,
    /// which is the allocation the control group commits when it finds that member down.
    /// The units come one by one (not merged), as a join's STANDBY bitmap names them.
    /// For a group with a scope or sites, [`Allocation::standby_in`].
    pub fn standby_of(&self, members: &[(MemberId, u32)], me: MemberId) -> Vec<Slice> {
        let unsited: Vec<_> = members.iter().map(|&(m, w)| (m, w, None)).collect();
        self.standby_in(&vec![true; self.owners.len()], &unsited, me)
    }

    /// [`Allocation::standby_of`] under the rule a control group with a scope and sites uses:
    /// the allocation without each other member is [`Allocation::rebalanced_to`] the scope by
    /// [`group_quotas`] of the rest.
    pub fn standby_in(
        &self,
        scope: &[bool],
        members: &[(MemberId, u32, Option<SiteId>)],
        me: MemberId,
    ) -> Vec<Slice> {
        let size = scope_size(scope, self.owners.len());
        let mut out = Vec::new();
        for &(gone, _, _) in members.iter().filter(|&&(m, _, _)| m != me) {
            if self.units_of(gone) == 0 {
                continue;
            }
            let rest: Vec<_> = members
                .iter()
                .copied()
                .filter(|&(m, _, _)| m != gone)
                .collect();
            let after = self.rebalanced_to(scope, &group_quotas(size, &rest));
            out.extend(
                (0..self.owners.len())
                    .filter(|&i| self.owners[i] == Some(gone) && after.owners[i] == Some(me))
                    .map(|i| self.slicing.unit(i)),
            );
        }
        out.sort_unstable_by_key(|u| u.value());
        out
    }

    pub fn slicing(&self) -> Slicing {
        self.slicing
    }

    /// Owner of each unit, by unit number.
    pub fn unit_owners(&self) -> &[Option<MemberId>] {
        &self.owners
    }

    pub fn owner_of(&self, addr: u32) -> Option<MemberId> {
        self.owners[self.slicing.unit_of(addr)]
    }

    /// The slices `member` owns, merged.
    pub fn slices_of(&self, member: MemberId) -> SliceSet {
        (0..self.owners.len())
            .filter(|&i| self.owners[i] == Some(member))
            .map(|i| self.slicing.unit(i))
            .collect()
    }

    /// Units owned by `member`.
    pub fn units_of(&self, member: MemberId) -> usize {
        self.owners.iter().filter(|&&o| o == Some(member)).count()
    }

    /// Units that had an owner in `self` and another (or none) in `other`: the units whose
    /// connections a reallocation disturbs. Giving out an unowned unit is not a move.
    pub fn moved(&self, other: &Allocation) -> usize {
        self.owners
            .iter()
            .zip(&other.owners)
            .filter(|(a, b)| a.is_some() && a != b)
            .count()
    }

    /// The fewest units any allocation honouring `quotas(members)` must move from `self`: units
    /// whose owner is gone plus each member's excess over its quota.
    pub fn minimum_moves(&self, members: &[(MemberId, u32)]) -> usize {
        let quota = quotas(self.owners.len(), members);
        let orphaned = self
            .owners
            .iter()
            .filter(|o| o.is_some_and(|m| !quota.contains_key(&m)))
            .count();
        let excess: usize = quota
            .iter()
            .map(|(&m, &q)| self.units_of(m).saturating_sub(q))
            .sum();
        orphaned + excess
    }

    /// Sum of `unit_load` over each member's units (a missing entry counts as zero load).
    pub fn member_loads(&self, unit_load: &[u64]) -> BTreeMap<MemberId, u128> {
        let mut out = BTreeMap::new();
        for (i, o) in self.owners.iter().enumerate() {
            if let Some(m) = o {
                *out.entry(*m).or_default() += u128::from(unit_load.get(i).copied().unwrap_or(0));
            }
        }
        out
    }

    /// Max over mean of the weighted load (a member's load divided by its weight) among `members`
    /// of non-zero weight: 1.0 is perfectly even. `None` when there is no load or no weight.
    pub fn load_imbalance(&self, members: &[(MemberId, u32)], unit_load: &[u64]) -> Option<f64> {
        let loads = self.member_loads(unit_load);
        let weighted: Vec<(u128, u32)> = members
            .iter()
            .filter(|&&(_, w)| w > 0)
            .map(|&(m, w)| (loads.get(&m).copied().unwrap_or(0), w))
            .collect();
        let total_load: u128 = weighted.iter().map(|&(l, _)| l).sum();
        let total_weight: u128 = weighted.iter().map(|&(_, w)| u128::from(w)).sum();
        if total_load == 0 || total_weight == 0 {
            return None;
        }
        let mean = total_load as f64 / total_weight as f64;
        let max = weighted
            .iter()
            .map(|&(l, w)| l as f64 / f64::from(w))
            .fold(0.0, f64::max);
        Some(max / mean)
    }

    /// Load-aware rebalance (SPEC.md §6.1): the same unit count per member (so the quotas of
    /// [`quotas`] still hold), with units swapped between members so that the most loaded member,
    /// by load per weight, carries less. Each step takes the member of highest weighted load and
    /// makes the single swap of one of its units for a lighter unit of another member that lowers
    /// the larger of the two members' new weighted loads the most (on a tie, the one that leaves
    /// the other member lighter); it stops when no swap lowers it
    /// by at least [`MIN_SWAP_GAIN`] of the mean, or after `unit_count / 2` swaps. Each swap moves two units; max/mean never rises.
    /// Deterministic: remaining ties go to the lower member id, then the lower unit numbers. Units with no
    /// owner, or owned by a member not in `members` or of weight zero, are left alone.
    pub fn rebalanced_by_load(&self, members: &[(MemberId, u32)], unit_load: &[u64]) -> Allocation {
        self.load_swaps(members, unit_load).0
    }

    /// [`Allocation::rebalanced_by_load`] and the number of swaps it made.
    fn load_swaps(&self, members: &[(MemberId, u32)], unit_load: &[u64]) -> (Allocation, usize) {
        let weight: BTreeMap<MemberId, u128> = members
            .iter()
            .filter(|&&(_, w)| w > 0)
            .map(|&(m, w)| (m, u128::from(w)))
            .collect();
        let load_of = |i: usize| u128::from(unit_load.get(i).copied().unwrap_or(0));
        let mut owners = self.owners.clone();
        // Each member's units sorted by (load, unit number), and its total load.
        let mut units: BTreeMap<MemberId, Vec<(u128, usize)>> =
            weight.keys().map(|&m| (m, Vec::new())).collect();
        for (i, o) in owners.iter().enumerate() {
            if let Some(list) = o.and_then(|m| units.get_mut(&m)) {
                list.push((load_of(i), i));
            }
        }
        let mut total: BTreeMap<MemberId, u128> = BTreeMap::new();
        for (m, list) in units.iter_mut() {
            list.sort_unstable();
            total.insert(*m, list.iter().map(|&(l, _)| l).sum());
        }
        // A swap must lower the heaviest weighted load by at least MIN_SWAP_GAIN of the mean:
        // moving connections for a gain inside measurement noise is worse than not moving.
        let total_weight: u128 = weight.values().sum();
        let min_gain =
            total.values().sum::<u128>() as f64 / total_weight.max(1) as f64 * MIN_SWAP_GAIN;
        let mut swaps = 0;
        while swaps < owners.len() / 2 {
            // Heaviest member by total/weight (exact rational compare), ties to the lower id.
            let Some(&heavy) = weight.keys().reduce(|a, b| {
                if total[b] * weight[a] > total[a] * weight[b] {
                    b
                } else {
                    a
                }
            }) else {
                break;
            };
            let (lh, wh) = (total[&heavy], weight[&heavy]);
            // Best swap so far: its cost (the larger new weighted load, as num/den), the other
            // member's new weighted load (lower wins a tie: the load spreads over the lightest
            // members instead of piling onto one and moving again), the units and that member.
            type Ratio = (u128, u128);
            let mut best: Option<(Ratio, Ratio, usize, usize, MemberId)> = None;
            for (&other, other_units) in &units {
                if other == heavy || other_units.is_empty() {
                    continue;
                }
                let (lo, wo) = (total[&other], weight[&other]);
                // Delta that would equalise the two: (lh - d)/wh = (lo + d)/wo.
                let target = (wo * lh).saturating_sub(wh * lo) / (wh + wo);
                for &(a, u) in &units[&heavy] {
                    // Candidates in `other`: the lighter units whose load is nearest a - target.
                    let want = a.saturating_sub(target);
                    let below_a = other_units.partition_point(|&(b, _)| b < a);
                    let at = other_units[..below_a].partition_point(|&(b, _)| b < want);
                    for k in [at.checked_sub(1), Some(at)].into_iter().flatten() {
                        if k >= below_a {
                            continue;
                        }
                        // The lowest unit number among units of that same load.
                        let b = other_units[k].0;
                        let first = other_units.partition_point(|&(x, _)| x < b);
                        let v = other_units[first].1;
                        let d = a - b;
                        let (nh, no) = (lh - d, lo + d);
                        // Larger of nh/wh and no/wo.
                        let cost = if nh * wo >= no * wh {
                            (nh, wh)
                        } else {
                            (no, wo)
                        };
                        // Must beat the heavy member's current weighted load lh/wh, by enough.
                        let gain = lh as f64 / wh as f64 - cost.0 as f64 / cost.1 as f64;
                        if cost.0 * wh >= lh * cost.1 || gain < min_gain {
                            continue;
                        }
                        let other_new = (no, wo);
                        let better = match best {
                            None => true,
                            Some((c, on, bu, bv, bo)) => {
                                let (x, y) = (cost.0 * c.1, c.0 * cost.1);
                                let (p, q) = (other_new.0 * on.1, on.0 * other_new.1);
                                x < y
                                    || (x == y && p < q)
                                    || (x == y && p == q && (other, u, v) < (bo, bu, bv))
                            }
                        };
                        if better {
                            best = Some((cost, other_new, u, v, other));
                        }
                    }
                }
            }
            let Some((_, _, u, v, other)) = best else {
                break;
            };
            let (a, b) = (load_of(u), load_of(v));
            owners[u] = Some(other);
            owners[v] = Some(heavy);
            for (m, out, inn) in [(heavy, (a, u), (b, v)), (other, (b, v), (a, u))] {
                let list = units.get_mut(&m).expect("swap members have units");
                let pos = list.binary_search(&out).expect("unit is listed");
                list.remove(pos);
                let pos = list.binary_search(&inn).unwrap_or_else(|p| p);
                list.insert(pos, inn);
                let t = total.get_mut(&m).expect("member has a total");
                *t = *t - out.0 + inn.0;
            }
            swaps += 1;
        }
        let allocation = Allocation {
            slicing: self.slicing,
            owners,
        };
        (allocation, swaps)
    }

    /// An allocation received from elsewhere (a control-channel proposal): `owners` must have
    /// exactly one entry per unit of `slicing`. Returns `None` otherwise; whether the owners honour
    /// the quotas is the caller's rule to check.
    pub fn from_unit_owners(slicing: Slicing, owners: Vec<Option<MemberId>>) -> Option<Self> {
        (owners.len() == slicing.unit_count()).then_some(Allocation { slicing, owners })
    }
}

/// Units in `scope` among the first `units` (entries beyond the allocation's units do not count).
pub fn scope_size(scope: &[bool], units: usize) -> usize {
    scope.iter().take(units).filter(|&&b| b).count()
}

#[cfg(test)]
mod scope_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(ids: &[u32]) -> Vec<(MemberId, u32)> {
        ids.iter().map(|&i| (MemberId(i), 1)).collect()
    }

    /// Each unit has exactly one standby among the others, and it is the member the
    /// allocation without the owner gives it to.
    #[test]
    fn standbys_cover_every_unit_once_and_match_the_allocation_after_a_loss() {
        let all4 = members(&[1, 2, 3, 4]);
        let a = Allocation::new(Slicing::LowOrder { bits: 6 }, &all4);
        let standby: Vec<SliceSet> = all4
            .iter()
            .map(|&(m, _)| a.standby_of(&all4, m).into_iter().collect())
            .collect();
        for (k, &(m, _)) in all4.iter().enumerate() {
            assert!(
                !standby[k].overlaps(&a.slices_of(m)),
                "{m} stands by for its own units"
            );
            for (j, _) in all4.iter().enumerate().filter(|&(j, _)| j != k) {
                assert!(
                    !standby[k].overlaps(&standby[j]),
                    "two standbys for one unit"
                );
            }
        }
        let all = standby.iter().fold(SliceSet::default(), |u, s| u.union(s));
        assert!(all.is_full(), "every unit has a standby");
        let after = a.rebalanced(&members(&[1, 3, 4]));
        for u in a.slices_of(MemberId(2)).iter() {
            let heir = after.owner_of(u.value()).unwrap();
            let k = all4.iter().position(|&(m, _)| m == heir).unwrap();
            assert!(standby[k].contains(u.value()));
        }
    }

    #[test]
    fn units_tile_the_space() {
        for slicing in [
            Slicing::LowOrder { bits: 4 },
            Slicing::Prefix { bits: 4 },
            Slicing::Prefix { bits: 0 },
        ] {
            let all: SliceSet = (0..slicing.unit_count()).map(|i| slicing.unit(i)).collect();
            assert!(all.is_full());
            for addr in [0u32, 1, 0x0a00_0001, u32::MAX, 0x8000_0000] {
                assert!(slicing.unit(slicing.unit_of(addr)).contains(addr));
            }
        }
    }

    #[test]
    fn from_unit_owners_round_trips_and_checks_length() {
        let slicing = Slicing::LowOrder { bits: 3 };
        let a = Allocation::new(slicing, &members(&[1, 2, 3]));
        let back = Allocation::from_unit_owners(slicing, a.unit_owners().to_vec());
        assert_eq!(back, Some(a));
        assert_eq!(Allocation::from_unit_owners(slicing, vec![None; 7]), None);
    }

    #[test]
    fn quotas_follow_weights() {
        let q = quotas(30, &[(MemberId(1), 1), (MemberId(2), 1), (MemberId(3), 1)]);
        assert_eq!(q.values().copied().collect::<Vec<_>>(), vec![10, 10, 10]);
        let q = quotas(8, &[(MemberId(1), 3), (MemberId(2), 1)]);
        assert_eq!((q[&MemberId(1)], q[&MemberId(2)]), (6, 2));
        let q = quotas(4, &[(MemberId(9), 1), (MemberId(2), 1), (MemberId(5), 1)]);
        assert_eq!(
            (q[&MemberId(2)], q[&MemberId(5)], q[&MemberId(9)]),
            (2, 1, 1),
            "ties to the lower id"
        );
        assert!(quotas(4, &[(MemberId(1), 0)]).values().all(|&n| n == 0));
    }

    #[test]
    fn every_third_portion() {
        // Fig 10: thirty-two units among three servers; each unit has one owner.
        let a = Allocation::new(Slicing::LowOrder { bits: 5 }, &members(&[1, 2, 3]));
        let counts: Vec<usize> = (1..=3).map(|m| a.units_of(MemberId(m))).collect();
        assert_eq!(counts, vec![11, 11, 10]);
        let union = (1..=3).fold(SliceSet::new(), |u, m| u.union(&a.slices_of(MemberId(m))));
        assert!(union.is_full());
    }

    #[test]
    fn a_leaving_member_moves_only_its_units() {
        let a = Allocation::new(Slicing::LowOrder { bits: 8 }, &members(&[1, 2, 3, 4]));
        let b = a.rebalanced(&members(&[1, 2, 4]));
        assert_eq!(a.moved(&b), 64);
        assert_eq!(a.moved(&b), a.minimum_moves(&members(&[1, 2, 4])));
        for (x, y) in a.unit_owners().iter().zip(b.unit_owners()) {
            if x != &Some(MemberId(3)) {
                assert_eq!(x, y);
            }
        }
    }

    /// Max weighted load as an exact rational (num, den) for comparisons in tests.
    fn max_weighted(a: &Allocation, members: &[(MemberId, u32)], load: &[u64]) -> (u128, u128) {
        let loads = a.member_loads(load);
        members
            .iter()
            .filter(|&&(_, w)| w > 0)
            .map(|&(m, w)| (loads.get(&m).copied().unwrap_or(0), u128::from(w)))
            .fold(
                (0, 1),
                |best, x| if x.0 * best.1 > best.0 * x.1 { x } else { best },
            )
    }

    #[test]
    fn load_rebalance_swaps_a_hot_unit_for_a_cold_one() {
        // Two members, four units each; member 1 holds the two hot units.
        let slicing = Slicing::LowOrder { bits: 3 };
        let m = members(&[1, 2]);
        let a = Allocation::new(slicing, &m);
        let mut load = vec![1u64; 8];
        for (i, o) in a.unit_owners().iter().enumerate() {
            if *o == Some(MemberId(1)) && load.iter().filter(|&&l| l == 100).count() < 2 {
                load[i] = 100;
            }
        }
        assert_eq!(a.member_loads(&load)[&MemberId(1)], 202);
        let b = a.rebalanced_by_load(&m, &load);
        assert_eq!(b.member_loads(&load)[&MemberId(1)], 103);
        assert_eq!(b.member_loads(&load)[&MemberId(2)], 103);
        assert_eq!(a.moved(&b), 2, "one swap");
        assert_eq!(b.units_of(MemberId(1)), 4);
        assert!(b.load_imbalance(&m, &load).unwrap() < a.load_imbalance(&m, &load).unwrap());
        // Balanced already: nothing moves.
        assert_eq!(b.rebalanced_by_load(&m, &load), b);
    }

    #[test]
    fn load_rebalance_ignores_gains_inside_the_noise() {
        // Member 1 carries 201, member 2 199: the best swap (101 for 100) gains 0.5% of the
        // mean, below MIN_SWAP_GAIN, so nothing moves.
        let slicing = Slicing::LowOrder { bits: 2 };
        let (one, two) = (Some(MemberId(1)), Some(MemberId(2)));
        let a = Allocation::from_unit_owners(slicing, vec![one, one, two, two]).unwrap();
        let m = members(&[1, 2]);
        assert_eq!(a.rebalanced_by_load(&m, &[101, 100, 100, 99]), a);
        // Ten times the imbalance is worth a swap.
        let b = a.rebalanced_by_load(&m, &[110, 100, 100, 90]);
        assert_eq!(a.moved(&b), 2);
    }

    #[test]
    fn load_rebalance_spreads_hot_units_without_moving_any_twice() {
        // Member 1 holds all 24 hot units of 96; the even result needs 16 swaps (8 hot units to
        // each other member) and no more.
        let slicing = Slicing::LowOrder { bits: 7 };
        let m = members(&[1, 2, 3]);
        let a = Allocation::new(slicing, &m);
        let mut load = vec![0u64; 128];
        let hot: Vec<usize> = (0..128)
            .filter(|&u| a.unit_owners()[u] == Some(MemberId(1)))
            .take(24)
            .collect();
        for &u in &hot {
            load[u] = 100;
        }
        let b = a.rebalanced_by_load(&m, &load);
        assert_eq!(b.load_imbalance(&m, &load), Some(1.0));
        assert_eq!(a.moved(&b), 32);
    }

    #[test]
    fn load_rebalance_counts_weight() {
        // Member 1 has weight 3 (6 units), member 2 weight 1 (2 units); equal unit loads are
        // already even per weight, so nothing moves even though member 1 carries three times more.
        let slicing = Slicing::LowOrder { bits: 3 };
        let m = vec![(MemberId(1), 3), (MemberId(2), 1)];
        let a = Allocation::new(slicing, &m);
        let load = vec![10u64; 8];
        assert_eq!(a.load_imbalance(&m, &load), Some(1.0));
        assert_eq!(a.rebalanced_by_load(&m, &load), a);
        assert_eq!(a.load_imbalance(&m, &[0; 8]), None);
    }

    #[test]
    fn load_rebalance_leaves_foreign_and_unowned_units_alone() {
        let slicing = Slicing::LowOrder { bits: 3 };
        let (one, two, nine) = (Some(MemberId(1)), Some(MemberId(2)), Some(MemberId(9)));
        let owners = vec![one, one, two, two, nine, None, None, None];
        let a = Allocation::from_unit_owners(slicing, owners).unwrap();
        let load = [100, 100, 0, 0, 500];
        let b = a.rebalanced_by_load(&members(&[1, 2]), &load);
        assert_eq!(b.unit_owners()[4..], [nine, None, None, None]);
        assert_eq!(
            b.unit_owners()[..4],
            [two, one, one, two],
            "lowest unit numbers swap"
        );
        // A short load vector counts missing units as zero and does not panic.
        assert_eq!(a.rebalanced_by_load(&members(&[1, 2]), &[]), a);
    }

    proptest! {
        #[test]
        fn rebalance_is_minimal_complete_and_proportional(
            before in prop::collection::btree_map(1u32..20, 1u32..5, 0..8),
            after in prop::collection::btree_map(1u32..20, 1u32..5, 1..8),
            bits in 0u8..8,
        ) {
            let before: Vec<_> = before.into_iter().map(|(m, w)| (MemberId(m), w)).collect();
            let after: Vec<_> = after.into_iter().map(|(m, w)| (MemberId(m), w)).collect();
            let slicing = Slicing::LowOrder { bits };
            let a = Allocation::new(slicing, &before);
            let b = a.rebalanced(&after);
            // Complete: every unit owned, by a current member, to the quota.
            prop_assert!(b.unit_owners().iter().all(|o| o.is_some_and(|m| after.iter().any(|&(x, _)| x == m))));
            let q = quotas(slicing.unit_count(), &after);
            for (&m, &n) in &q {
                prop_assert_eq!(b.units_of(m), n);
            }
            // Minimal: no more moves than the lower bound.
            prop_assert_eq!(a.moved(&b), a.minimum_moves(&after));
            // Deterministic and idempotent.
            prop_assert_eq!(&a.rebalanced(&after), &b);
            prop_assert_eq!(b.rebalanced(&after).moved(&b), 0);
        }

        #[test]
        fn load_rebalance_keeps_quotas_never_worsens_and_is_locally_optimal(
            weights in prop::collection::btree_map(1u32..20, 0u32..4, 1..6),
            bits in 0u8..7,
            loads in prop::collection::vec(0u64..1000, 0..80),
            skew in 0usize..64,
        ) {
            let m: Vec<_> = weights.into_iter().map(|(m, w)| (MemberId(m), w)).collect();
            let slicing = Slicing::LowOrder { bits };
            let a = Allocation::new(slicing, &m);
            // Some skewed cases: a few hot units.
            let mut load = loads;
            if let Some(x) = load.get_mut(skew) {
                *x *= 1000;
            }
            let (b, swaps) = a.load_swaps(&m, &load);
            prop_assert_eq!(&a.rebalanced_by_load(&m, &load), &b);
            // Quotas kept: every member owns as many units as before, so the result is valid.
            for &(id, _) in &m {
                prop_assert_eq!(b.units_of(id), a.units_of(id));
            }
            // Max weighted load never rises (the mean is fixed, so max/mean neither).
            let (before, after) = (max_weighted(&a, &m, &load), max_weighted(&b, &m, &load));
            prop_assert!(after.0 * before.1 <= before.0 * after.1);
            // Moves bounded: swaps move two units each, at most unit_count / 2 swaps.
            prop_assert!(swaps <= slicing.unit_count() / 2);
            prop_assert!(a.moved(&b) <= 2 * swaps);
            // Deterministic.
            prop_assert_eq!(&a.rebalanced_by_load(&m, &load), &b);
            // Locally optimal unless the swap budget ran out: no single swap between the
            // heaviest member and another one lowers the pair's larger weighted load below the
            // heaviest's (brute force over all pairs of units).
            if swaps < slicing.unit_count() / 2 {
                let (hn, hd) = after;
                let loads_b = b.member_loads(&load);
                let w: BTreeMap<_, _> = m.iter().copied().collect();
                let l = |i: usize| u128::from(load.get(i).copied().unwrap_or(0));
                let heavy = m.iter().filter(|&&(_, w)| w > 0).map(|&(id, _)| id).find(|id| {
                    loads_b.get(id).copied().unwrap_or(0) * hd == hn * u128::from(w[id])
                });
                let weighted: Vec<_> = m.iter().filter(|&&(_, w)| w > 0).collect();
                let total_w: u128 = weighted.iter().map(|&&(_, w)| u128::from(w)).sum();
                let total_l: u128 = weighted
                    .iter()
                    .map(|&&(id, _)| loads_b.get(&id).copied().unwrap_or(0))
                    .sum();
                let min_gain = total_l as f64 / total_w.max(1) as f64 * MIN_SWAP_GAIN;
                if let Some(h) = heavy {
                    let wh = u128::from(w[&h]);
                    for (u, ou) in b.unit_owners().iter().enumerate() {
                        if *ou != Some(h) { continue; }
                        for (v, ov) in b.unit_owners().iter().enumerate() {
                            let Some(o) = *ov else { continue };
                            if o == h || w.get(&o).copied().unwrap_or(0) == 0 || l(v) >= l(u) { continue; }
                            let wo = u128::from(w[&o]);
                            let d = l(u) - l(v);
                            let nh = loads_b[&h] - d;
                            let no = loads_b.get(&o).copied().unwrap_or(0) + d;
                            // Both new weighted loads below hn/hd, by the minimum gain, would
                            // have been an improvement.
                            let max_new = (nh as f64 / wh as f64).max(no as f64 / wo as f64);
                            let gain = hn as f64 / hd as f64 - max_new;
                            prop_assert!(!(nh * hd < hn * wh && no * hd < hn * wo && gain >= min_gain),
                                "improving swap left: {} -> {}", u, v);
                        }
                    }
                }
            }
        }
    }
}
