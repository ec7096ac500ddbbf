//! Allocation within a scope (SPEC.md §9.4, issue 14 item 2) in the simulator: a site's group of
//! four members allocates only the units its scope names, a scope change is a new epoch within
//! the new scope, a member whose scope differs commits only once its own scope matches, and
//! operator requests stay inside the scope.

use control_channel::sim::{Sim, SimConfig};
use control_channel::wire::{Message, RequestAction};
use control_channel::{
    CommittedAllocation, DropReason, Event, RequestOutcome, RequestRefusal, Scope,
};
use igmp_ext::alloc::{group_quotas, scope_size};
use igmp_ext::{MemberId, SliceSet};
use std::time::Duration;

fn committed(sim: &Sim, i: usize) -> CommittedAllocation {
    sim.endpoint(i)
        .and_then(|e| e.committed())
        .cloned()
        .expect("committed")
}

fn scope(upper_epoch: u64, inside: impl Fn(usize) -> bool) -> Scope {
    Scope {
        upper_epoch,
        units: (0..256).map(inside).collect(),
    }
}

/// The allocation honours the scope: nothing outside it is owned, every member owns its quota
/// of the scope's units (so every unit inside is owned), and the proposal names the scope.
fn assert_within(c: &CommittedAllocation, s: &Scope) {
    assert_eq!(c.proposal.scope.as_ref().map(|p| &p.units), Some(&s.units));
    for (u, o) in c.allocation.unit_owners().iter().enumerate() {
        assert_eq!(o.is_some(), s.units[u], "unit {u}: {o:?}");
    }
    let members: Vec<_> = c.members().iter().map(|&(m, w)| (m, w, None)).collect();
    for (m, q) in group_quotas(scope_size(&s.units, 256), &members) {
        assert_eq!(c.allocation.units_of(m), q, "{m}");
    }
}

/// Four members, settled, then `s` given to every one of them.
fn scoped_group(seed: u64, s: &Scope) -> Sim {
    let mut sim = Sim::new(&SimConfig::new(seed, 4));
    assert!(sim.run_until_converged(Duration::from_secs(2)).is_some());
    for i in 0..4 {
        sim.set_scope(i, Some(s.clone()));
    }
    sim.run_for(Duration::from_millis(300));
    sim
}

#[test]
fn commits_stay_inside_the_scope() {
    let even = scope(7, |u| u % 2 == 0);
    let sim = scoped_group(31, &even);
    assert!(sim.converged());
    let c = committed(&sim, 0);
    assert_within(&c, &even);
    assert_eq!(c.allocation.units_of(MemberId(1)), 32);
    for i in 1..4 {
        assert_eq!(committed(&sim, i).id(), c.id());
    }
    // Standby follows the scope: every unit of it has a standby among the others, no unit
    // outside it has one (the flat rule over all units would have handed those out too).
    let mut covered = SliceSet::new();
    for i in 0..4 {
        let standby: SliceSet = sim
            .endpoint(i)
            .expect("running")
            .standby()
            .into_iter()
            .collect();
        assert!(!standby.overlaps(&c.allocation.slices_of(Sim::member_id(i))));
        assert!(!standby.overlaps(&covered), "two standbys for a unit");
        covered = covered.union(&standby);
    }
    let inside: SliceSet = (0..256)
        .filter(|&u| even.units[u])
        .map(|u| c.allocation.slicing().unit(u))
        .collect();
    assert_eq!(covered, inside);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_scope_change_is_a_new_epoch_within_it_and_a_new_upper_epoch_alone_is_not() {
    let even = scope(7, |u| u % 2 == 0);
    let mut sim = scoped_group(32, &even);
    let before = committed(&sim, 0);
    // The same units under a later upper epoch: nothing to propose.
    for i in 0..4 {
        sim.set_scope(i, Some(scope(8, |u| u % 2 == 0)));
    }
    sim.run_for(Duration::from_millis(300));
    assert_eq!(committed(&sim, 0).id(), before.id());
    // The site gains the odd units below 64 and loses the even ones from 192.
    let next = scope(9, |u| (u % 2 == 0 && u < 192) || u < 64);
    for i in 0..4 {
        sim.set_scope(i, Some(next.clone()));
    }
    sim.run_for(Duration::from_millis(300));
    assert!(sim.converged());
    let after = committed(&sim, 0);
    assert!(after.id() > before.id());
    assert_within(&after, &next);
    // Only the units that left the scope moved (the gained ones were nobody's), and the
    // members' counts were equal before and after, so none moved between members.
    let left = (192..256).filter(|u| u % 2 == 0).count();
    assert_eq!(before.allocation.moved(&after.allocation), left);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_member_with_another_scope_commits_once_its_own_scope_matches() {
    let even = scope(7, |u| u % 2 == 0);
    let mut sim = scoped_group(33, &even);
    let before = committed(&sim, 3);
    let low = scope(8, |u| u < 128);
    for i in 0..3 {
        sim.set_scope(i, Some(low.clone()));
    }
    sim.run_for(Duration::from_millis(150));
    let proposed = committed(&sim, 0);
    assert!(proposed.id() > before.id());
    assert_within(&proposed, &low);
    // Member 4 still has the old scope: it keeps the proposal but does not commit it.
    assert_eq!(committed(&sim, 3).id(), before.id());
    sim.set_scope(3, Some(low.clone()));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(committed(&sim, 3).id(), proposed.id());
    assert!(sim.converged());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_member_without_a_scope_never_commits_a_scoped_proposal() {
    let mut sim = Sim::new(&SimConfig::new(34, 4));
    assert!(sim.run_until_converged(Duration::from_secs(2)).is_some());
    let before = committed(&sim, 3);
    let even = scope(7, |u| u % 2 == 0);
    for i in 0..3 {
        sim.set_scope(i, Some(even.clone()));
    }
    // Past the proposal's twenty retransmissions.
    sim.run_for(Duration::from_secs(3));
    assert!(committed(&sim, 0).id() > before.id());
    assert_eq!(committed(&sim, 3).id(), before.id());
    let unauthorized = sim
        .endpoint(3)
        .expect("running")
        .counters()
        .dropped
        .get(&DropReason::Unauthorized)
        .copied();
    assert!(
        unauthorized.unwrap_or(0) > 0,
        "the kept proposal expired and was counted"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// The coordinator's outcome for request `id`.
fn outcome(sim: &Sim, id: u64) -> Option<RequestOutcome> {
    sim.observations().iter().find_map(|o| match &o.event {
        Event::Request {
            request_id,
            outcome,
            ..
        } if *request_id == id && o.observer == MemberId(1) => Some(*outcome),
        _ => None,
    })
}

#[test]
fn requests_keep_units_inside_the_scope() {
    let even = scope(7, |u| u % 2 == 0);
    let mut sim = scoped_group(35, &even);
    let before = committed(&sim, 0);
    // An odd unit is outside the scope: refused, nothing changes.
    let id = sim.operator_request(
        1,
        RequestAction::Move {
            units: vec![1],
            to: 2,
        },
    );
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        outcome(&sim, id),
        Some(RequestOutcome::Refused(RequestRefusal::BadUnit))
    );
    assert_eq!(committed(&sim, 0).id(), before.id());
    // An even unit of member 3 moves to member 2, within the scope.
    let unit = (0..256u16)
        .find(|&u| before.allocation.unit_owners()[usize::from(u)] == Some(MemberId(3)))
        .expect("member 3 owns units");
    let id = sim.operator_request(
        1,
        RequestAction::Move {
            units: vec![unit],
            to: 2,
        },
    );
    sim.run_for(Duration::from_millis(200));
    assert!(
        matches!(outcome(&sim, id), Some(RequestOutcome::Proposed(_))),
        "{:?}",
        outcome(&sim, id)
    );
    let moved = committed(&sim, 0);
    assert_within(&moved, &even);
    assert_eq!(
        moved.allocation.unit_owners()[usize::from(unit)],
        Some(MemberId(2))
    );
    // A rebalance by load, the load reported on units inside and outside the scope.
    for i in 0..4 {
        let load: Vec<(u16, u32)> = (0..256u16).map(|u| (u, u32::from(u % 7) * 100)).collect();
        sim.endpoint_mut(i).expect("running").set_load(load);
    }
    sim.run_for(Duration::from_millis(200));
    let id = sim.operator_request(2, RequestAction::Rebalance);
    sim.run_for(Duration::from_millis(200));
    assert!(
        matches!(outcome(&sim, id), Some(RequestOutcome::Proposed(_))),
        "{:?}",
        outcome(&sim, id)
    );
    assert_within(&committed(&sim, 0), &even);
    assert!(sim.converged());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_proposal_owning_a_unit_outside_its_scope_is_refused() {
    let even = scope(7, |u| u % 2 == 0);
    let mut sim = scoped_group(36, &even);
    let f = igmp_ext::fixtures::Fixture::new(4);
    let invalid = |sim: &Sim, i: usize| {
        let c = sim.endpoint(i).expect("running").counters();
        c.dropped
            .get(&DropReason::InvalidProposal)
            .copied()
            .unwrap_or(0)
    };
    // The coordinator's own proposal again, at the next epoch: committed by everyone (and
    // the coordinator, which did not make it, then proposes above it).
    let before = committed(&sim, 1);
    let mut p = before.proposal.clone();
    p.id.epoch += 1;
    p.sign(u32::from(f.group), &f.members[0].key);
    sim.forge(0, p.id.epoch, &Message::Proposal(p.clone()));
    sim.run_for(Duration::from_millis(300));
    assert!(sim.converged());
    assert!(committed(&sim, 1).id() >= p.id);
    let mut p = committed(&sim, 1).proposal;
    // The same member's count, but unit 1 (outside the scope) instead of unit 0: refused.
    let refused_before: Vec<u64> = (1..4).map(|i| invalid(&sim, i)).collect();
    p.id.epoch += 1;
    p.owners.swap(0, 1);
    p.sign(u32::from(f.group), &f.members[0].key);
    sim.forge(0, p.id.epoch, &Message::Proposal(p.clone()));
    sim.run_for(Duration::from_millis(50));
    for i in 1..4 {
        assert!(committed(&sim, i).id() < p.id);
        assert!(invalid(&sim, i) > refused_before[i - 1]);
    }
}

#[test]
fn a_member_whose_scope_comes_late_still_commits_the_current_epoch() {
    let even = scope(7, |u| u % 2 == 0);
    let mut sim = scoped_group(37, &even);
    let low = scope(8, |u| u < 128);
    for i in 0..3 {
        sim.set_scope(i, Some(low.clone()));
    }
    // Past the proposal's retransmissions and the anti-entropy queries for what the others
    // advertise: member 4 has stopped asking.
    sim.run_for(Duration::from_secs(3));
    let current = committed(&sim, 0);
    assert!(committed(&sim, 3).id() < current.id());
    sim.set_scope(3, Some(low));
    sim.run_for(Duration::from_millis(300));
    assert_eq!(committed(&sim, 3).id(), current.id());
    assert!(sim.converged());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
