//! Deterministic allocation of slices to members (patent Fig 10, 11; brief decision 4): the
//! address space is cut into 2^k equal units (low-order or prefix bits), each member gets a share
//! proportional to its weight, and a change of members moves the fewest units possible.

use crate::cert::MemberId;
use crate::slice::{Slice, SliceSet};
use std::collections::BTreeMap;

/// How the space is cut into units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slicing {
    /// By the `bits` lowest address bits: every unit takes a share of every subnet, the
    /// hash-like spread of the patent's "every third portion". The default.
    LowOrder { bits: u8 },
    /// By the `bits` highest bits: CIDR prefixes, for operators who want topological slices.
    Prefix { bits: u8 },
}

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
    let total: u128 = members.iter().map(|&(_, w)| u128::from(w)).sum();
    let mut out: BTreeMap<MemberId, usize> = members.iter().map(|&(m, _)| (m, 0)).collect();
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
    pub fn rebalanced(&self, members: &[(MemberId, u32)]) -> Allocation {
        let quota = quotas(self.owners.len(), members);
        let mut owners = self.owners.clone();
        let mut held: BTreeMap<MemberId, usize> = quota.keys().map(|&m| (m, 0)).collect();
        for o in owners.iter_mut() {
            match o.and_then(|m| held.get_mut(&m)) {
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
        for o in owners.iter_mut().filter(|o| o.is_none()) {
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

    /// An allocation received from elsewhere (a control-channel proposal): `owners` must have
    /// exactly one entry per unit of `slicing`. Returns `None` otherwise; whether the owners honour
    /// the quotas is the caller's rule to check.
    pub fn from_unit_owners(slicing: Slicing, owners: Vec<Option<MemberId>>) -> Option<Self> {
        (owners.len() == slicing.unit_count()).then_some(Allocation { slicing, owners })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(ids: &[u32]) -> Vec<(MemberId, u32)> {
        ids.iter().map(|&i| (MemberId(i), 1)).collect()
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
    }
}
