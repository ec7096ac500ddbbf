//! Tests of the allocation within a scope and of site-aware quotas (SPEC.md §6).

use super::*;
use proptest::prelude::*;

/// `rebalanced` as it was before scopes (session 12), kept to check that the scoped rule with
/// a full scope is the same rule.
fn reference_rebalanced(a: &Allocation, members: &[(MemberId, u32)]) -> Allocation {
    let quota = quotas(a.owners.len(), members);
    let mut owners = a.owners.clone();
    let mut held: BTreeMap<MemberId, usize> = quota.keys().map(|&m| (m, 0)).collect();
    for o in owners.iter_mut() {
        match o.and_then(|m| held.get_mut(&m)) {
            Some(n) => *n += 1,
            None => *o = None,
        }
    }
    for i in (0..owners.len()).rev() {
        if let Some(m) = owners[i] {
            let n = held.get_mut(&m).unwrap();
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
        *held.get_mut(&m).unwrap() += 1;
    }
    Allocation {
        slicing: a.slicing,
        owners,
    }
}

/// The fewest moves any allocation honouring `quota` within `scope` must make from `a`: owned
/// units outside the scope or of a member not in `quota`, plus each member's excess in scope.
fn minimum_moves_to(a: &Allocation, scope: &[bool], quota: &BTreeMap<MemberId, usize>) -> usize {
    let mut held: BTreeMap<MemberId, usize> = BTreeMap::new();
    let mut forced = 0;
    for (i, o) in a.owners.iter().enumerate() {
        let Some(m) = o else { continue };
        if !scope[i] || !quota.contains_key(m) {
            forced += 1;
        } else {
            *held.entry(*m).or_default() += 1;
        }
    }
    forced
        + held
            .iter()
            .map(|(m, &n)| n.saturating_sub(quota[m]))
            .sum::<usize>()
}

fn arbitrary_allocation(slicing: Slicing, owners: &[Option<u32>]) -> Allocation {
    let owners = owners
        .iter()
        .cycle()
        .take(slicing.unit_count())
        .map(|o| o.map(MemberId))
        .collect();
    Allocation::from_unit_owners(slicing, owners).unwrap()
}

fn sited(list: &[(u32, u32, u32)]) -> Vec<(MemberId, u32, SiteId)> {
    list.iter()
        .map(|&(m, w, s)| (MemberId(m), w, SiteId(s)))
        .collect()
}

#[test]
fn site_quotas_split_sites_then_members() {
    // Two sites of two agents at weight 1: a quarter each, as flat quotas would give.
    let four = sited(&[(1, 1, 10), (2, 1, 10), (3, 1, 20), (4, 1, 20)]);
    let q = site_quotas(256, &four);
    assert_eq!(q.values().copied().collect::<Vec<_>>(), vec![64; 4]);
    // One agent of site 10 gone: the site keeps its half, all of it on the other agent.
    let q = site_quotas(256, &four[1..]);
    assert_eq!(
        (q[&MemberId(2)], q[&MemberId(3)], q[&MemberId(4)]),
        (128, 64, 64)
    );
    // Site weight is the largest of its agents', not their sum: 2 against 1.
    let q = site_quotas(9, &sited(&[(1, 2, 10), (2, 1, 10), (3, 1, 20)]));
    assert_eq!(
        (q[&MemberId(1)], q[&MemberId(2)], q[&MemberId(3)]),
        (4, 2, 3)
    );
    // Ties between sites go to the lower site id, whatever the member ids.
    let q = site_quotas(3, &sited(&[(1, 1, 20), (2, 1, 10)]));
    assert_eq!((q[&MemberId(1)], q[&MemberId(2)]), (1, 2));
    // A site whose agents all weigh 0 gets nothing; its units go to the other site.
    let q = site_quotas(8, &sited(&[(1, 0, 10), (2, 0, 10), (3, 1, 20), (4, 3, 20)]));
    assert_eq!(
        (
            q[&MemberId(1)],
            q[&MemberId(2)],
            q[&MemberId(3)],
            q[&MemberId(4)]
        ),
        (0, 0, 2, 6)
    );
    assert!(site_quotas(8, &sited(&[(1, 0, 10)]))
        .values()
        .all(|&n| n == 0));
}

#[test]
fn group_quotas_are_flat_unless_every_member_names_a_site() {
    let some = [
        (MemberId(1), 1, Some(SiteId(10))),
        (MemberId(2), 1, Some(SiteId(10))),
        (MemberId(3), 1, None),
    ];
    let flat = [(MemberId(1), 1), (MemberId(2), 1), (MemberId(3), 1)];
    assert_eq!(group_quotas(30, &some), quotas(30, &flat));
    let all = [
        (MemberId(1), 1, Some(SiteId(10))),
        (MemberId(2), 1, Some(SiteId(10))),
        (MemberId(3), 1, Some(SiteId(20))),
    ];
    let q = group_quotas(30, &all);
    assert_eq!(
        (q[&MemberId(1)], q[&MemberId(2)], q[&MemberId(3)]),
        (8, 7, 15)
    );
}

#[test]
fn standby_in_a_site_group_is_the_other_agent_of_the_site() {
    let slicing = Slicing::LowOrder { bits: 6 };
    let members: Vec<_> = [(1, 10), (2, 10), (3, 20), (4, 20)]
        .iter()
        .map(|&(m, s)| (MemberId(m), 1, Some(SiteId(s))))
        .collect();
    let scope = vec![true; 64];
    let a = Allocation::empty(slicing).rebalanced_to(&scope, &group_quotas(64, &members));
    let standby: SliceSet = a
        .standby_in(&scope, &members, MemberId(2))
        .into_iter()
        .collect();
    assert_eq!(
        standby,
        a.slices_of(MemberId(1)),
        "2 stands by for all of 1's units"
    );
    // Flat quotas would have spread 1's units over 2, 3 and 4, and 3's over 1, 2 and 4.
    let flat: Vec<_> = members.iter().map(|&(m, w, _)| (m, w)).collect();
    let flat_standby: SliceSet = a.standby_of(&flat, MemberId(2)).into_iter().collect();
    assert!(flat_standby.overlaps(&a.slices_of(MemberId(3))));
    let inherited = (0..64)
        .filter(|&i| a.unit_owners()[i] == Some(MemberId(1)))
        .filter(|&i| flat_standby.contains(slicing.unit(i).value()))
        .count();
    assert!(inherited < a.units_of(MemberId(1)), "{inherited}");
    // Within a scope, out-of-scope units are nobody's and so nobody's standby.
    let half: Vec<bool> = (0..64).map(|i| i % 2 == 0).collect();
    let b = a.rebalanced_to(&half, &group_quotas(32, &members));
    let all: SliceSet = members
        .iter()
        .flat_map(|&(m, _, _)| b.standby_in(&half, &members, m))
        .collect();
    let owned: SliceSet = (0..64)
        .filter(|i| half[*i])
        .map(|i| slicing.unit(i))
        .collect();
    assert_eq!(
        all, owned,
        "every unit of the scope has a standby, no other unit"
    );
}

proptest! {
    #[test]
    fn rebalanced_is_rebalanced_in_a_full_scope_and_the_old_rule(
        prior in prop::collection::vec(prop::option::of(1u32..12), 1..64),
        after in prop::collection::btree_map(1u32..12, 0u32..5, 0..8),
        bits in 0u8..8,
    ) {
        let slicing = Slicing::LowOrder { bits };
        let a = arbitrary_allocation(slicing, &prior);
        let after: Vec<_> = after.into_iter().map(|(m, w)| (MemberId(m), w)).collect();
        let b = a.rebalanced(&after);
        prop_assert_eq!(&b, &reference_rebalanced(&a, &after));
        prop_assert_eq!(&b, &a.rebalanced_in(&vec![true; slicing.unit_count()], &after));
    }

    #[test]
    fn rebalance_in_a_scope_stays_in_it_and_is_complete_and_minimal(
        prior in prop::collection::vec(prop::option::of(1u32..12), 1..64),
        scope in prop::collection::vec(any::<bool>(), 1..64),
        after in prop::collection::btree_map(1u32..12, 0u32..5, 0..8),
        bits in 0u8..8,
    ) {
        let slicing = Slicing::LowOrder { bits };
        let n = slicing.unit_count();
        let a = arbitrary_allocation(slicing, &prior);
        let scope: Vec<bool> = scope.iter().copied().cycle().take(n).collect();
        let after: Vec<_> = after.into_iter().map(|(m, w)| (MemberId(m), w)).collect();
        let b = a.rebalanced_in(&scope, &after);
        let size = scope_size(&scope, n);
        let quota = quotas(size, &after);
        for (i, o) in b.unit_owners().iter().enumerate() {
            prop_assert!(scope[i] || o.is_none(), "unit {} outside the scope is owned", i);
        }
        for (&m, &q) in &quota {
            prop_assert_eq!(b.units_of(m), q);
        }
        let positive = after.iter().any(|&(_, w)| w > 0);
        prop_assert_eq!(
            b.unit_owners().iter().filter(|o| o.is_some()).count(),
            if positive { size } else { 0 }
        );
        prop_assert_eq!(a.moved(&b), minimum_moves_to(&a, &scope, &quota));
        prop_assert_eq!(b.rebalanced_in(&scope, &after), b);
    }

    /// Sites of 2-3 agents whose agents share the site's weight.
    #[test]
    fn losing_one_agent_moves_its_units_only_to_its_site(
        sites in prop::collection::vec((1u32..5, 2usize..4), 2..5),
        lost in any::<prop::sample::Index>(),
        bits in 2u8..9,
    ) {
        let slicing = Slicing::LowOrder { bits };
        let n = slicing.unit_count();
        let mut members = Vec::new();
        for (s, &(w, agents)) in sites.iter().enumerate() {
            for _ in 0..agents {
                members.push((MemberId(members.len() as u32 + 1), w, SiteId(s as u32)));
            }
        }
        let scope = vec![true; n];
        let a = Allocation::empty(slicing).rebalanced_to(&scope, &site_quotas(n, &members));
        let (gone, _, site) = members[lost.index(members.len())];
        let rest: Vec<_> = members.iter().copied().filter(|&(m, _, _)| m != gone).collect();
        let quota = site_quotas(n, &rest);
        let b = a.rebalanced_to(&scope, &quota);
        let site_of: BTreeMap<MemberId, SiteId> = members.iter().map(|&(m, _, s)| (m, s)).collect();
        for (i, (x, y)) in a.unit_owners().iter().zip(b.unit_owners()).enumerate() {
            if x != y {
                prop_assert_eq!(*x, Some(gone), "unit {} moved from another member", i);
                prop_assert_eq!(site_of[&y.unwrap()], site, "unit {} left the site", i);
            }
        }
        prop_assert_eq!(a.moved(&b), a.units_of(gone));
        prop_assert_eq!(a.moved(&b), minimum_moves_to(&a, &scope, &quota));
    }

    #[test]
    fn losing_a_site_spreads_its_units_over_the_others(
        sites in prop::collection::vec((prop::collection::vec(0u32..4, 1..4), 0u32..3), 2..5),
        lost in any::<prop::sample::Index>(),
        drained in any::<bool>(),
        bits in 2u8..9,
    ) {
        let slicing = Slicing::LowOrder { bits };
        let n = slicing.unit_count();
        let mut members = Vec::new();
        for (agents, site) in &sites {
            for &w in agents {
                members.push((MemberId(members.len() as u32 + 1), w, SiteId(*site)));
            }
        }
        let scope = vec![true; n];
        let a = Allocation::empty(slicing).rebalanced_to(&scope, &site_quotas(n, &members));
        let site = members[lost.index(members.len())].2;
        // The site's agents die, or announce weight 0 (their site lost its members).
        let rest: Vec<_> = if drained {
            members.iter().map(|&(m, w, s)| (m, if s == site { 0 } else { w }, s)).collect()
        } else {
            members.iter().copied().filter(|&(_, _, s)| s != site).collect()
        };
        let quota = site_quotas(n, &rest);
        let b = a.rebalanced_to(&scope, &quota);
        let site_of: BTreeMap<MemberId, SiteId> = members.iter().map(|&(m, _, s)| (m, s)).collect();
        let others_weigh = rest.iter().any(|&(_, w, s)| s != site && w > 0);
        for (x, y) in a.unit_owners().iter().zip(b.unit_owners()) {
            if x.is_some_and(|m| site_of[&m] == site) {
                if others_weigh {
                    prop_assert!(y.is_some_and(|m| site_of[&m] != site));
                } else {
                    prop_assert!(y.is_none());
                }
            }
        }
        prop_assert_eq!(a.moved(&b), minimum_moves_to(&a, &scope, &quota));
        // Weight back: the site takes its share again, moving only what it needs.
        let back = b.rebalanced_to(&scope, &site_quotas(n, &members));
        for &(m, _, _) in &members {
            prop_assert_eq!(back.units_of(m), site_quotas(n, &members)[&m]);
        }
        prop_assert_eq!(b.moved(&back), minimum_moves_to(&b, &scope, &site_quotas(n, &members)));
    }
}
