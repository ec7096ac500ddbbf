//! Operator requests (SPEC.md §9.4, "Requests") in the simulator: a rebalance by reported load,
//! a move, a drain and a resume of another member reach the right member, the resulting
//! allocations pass every member's validity rule, and refused requests change nothing.

use control_channel::sim::{Sim, SimConfig};
use control_channel::wire::RequestAction;
use control_channel::{Event, RequestOutcome, RequestRefusal};
use igmp_ext::MemberId;
use std::time::Duration;

fn committed(sim: &Sim, i: usize) -> control_channel::CommittedAllocation {
    sim.endpoint(i)
        .and_then(|e| e.committed())
        .cloned()
        .expect("committed")
}

/// Runs until the members agree, then 300 ms more so that the coordinator has every
/// acknowledgement (it takes one change at a time).
fn settle(sim: &mut Sim) {
    assert!(sim.run_until_converged(Duration::from_secs(2)).is_some());
    let until = sim.now_ms() + 300;
    sim.run_until(until);
}

/// Sends `action` from node `i` with an operator's authority and runs the simulation for
/// 200 ms.
fn request(sim: &mut Sim, i: usize, action: RequestAction) -> u64 {
    let id = sim.operator_request(i, action);
    let until = sim.now_ms() + 200;
    sim.run_until(until);
    id
}

/// The outcome the coordinator (node 0) reported for request `id`.
fn coordinator_outcome(sim: &Sim, id: u64) -> Option<RequestOutcome> {
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
fn rebalance_by_reported_load_lowers_max_over_mean() {
    let mut sim = Sim::new(&SimConfig::new(21, 3));
    settle(&mut sim);
    let before = committed(&sim, 0);
    let members = before.members();
    // Member 2's first four units are hot; every member reports the load of its own units.
    let mut load = vec![1u64; 256];
    let hot: Vec<usize> = (0..256)
        .filter(|&u| before.allocation.unit_owners()[u] == Some(MemberId(2)))
        .take(4)
        .collect();
    for &u in &hot {
        load[u] = 500;
    }
    for i in 0..3 {
        let me = Sim::member_id(i);
        let mine: Vec<(u16, u32)> = (0..256)
            .filter(|&u| before.allocation.unit_owners()[u] == Some(me))
            .map(|u| (u as u16, load[u] as u32))
            .collect();
        sim.endpoint_mut(i).expect("running").set_load(mine);
    }
    sim.run_until(sim.now_ms() + 200); // heartbeats carry the loads
    assert_eq!(sim.endpoint(0).expect("running").unit_loads(), load);
    let id = request(&mut sim, 2, RequestAction::Rebalance);
    let after = committed(&sim, 0);
    assert!(
        matches!(coordinator_outcome(&sim, id), Some(RequestOutcome::Proposed(e)) if e == after.id()),
        "{:?}",
        coordinator_outcome(&sim, id)
    );
    assert!(after.id() > before.id());
    for &(m, _) in &members {
        assert_eq!(after.allocation.units_of(m), before.allocation.units_of(m));
    }
    let imbalance = |c: &control_channel::CommittedAllocation| {
        c.allocation.load_imbalance(&members, &load).expect("load")
    };
    assert!(imbalance(&after) < imbalance(&before));
    assert!(
        sim.converged(),
        "every member committed the rebalanced epoch"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    // Asked again with the same load: already balanced, nothing changes.
    let again = request(&mut sim, 1, RequestAction::Rebalance);
    assert_eq!(
        coordinator_outcome(&sim, again),
        Some(RequestOutcome::Unchanged)
    );
    assert_eq!(committed(&sim, 0).id(), after.id());
}

#[test]
fn move_is_a_swap_within_quotas() {
    let mut sim = Sim::new(&SimConfig::new(22, 3));
    settle(&mut sim);
    let before = committed(&sim, 0);
    let of3: Vec<u16> = (0..256u16)
        .filter(|&u| before.allocation.unit_owners()[usize::from(u)] == Some(MemberId(3)))
        .take(3)
        .collect();
    let id = request(
        &mut sim,
        1,
        RequestAction::Move {
            units: of3.clone(),
            to: 2,
        },
    );
    assert!(
        matches!(
            coordinator_outcome(&sim, id),
            Some(RequestOutcome::Proposed(_))
        ),
        "{:?}",
        coordinator_outcome(&sim, id)
    );
    let after = committed(&sim, 2);
    for &u in &of3 {
        assert_eq!(
            after.allocation.unit_owners()[usize::from(u)],
            Some(MemberId(2))
        );
    }
    assert_eq!(before.allocation.moved(&after.allocation), 6);
    for m in 1..=3 {
        assert_eq!(
            after.allocation.units_of(MemberId(m)),
            before.allocation.units_of(MemberId(m))
        );
    }
    assert!(sim.converged());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn drain_and_resume_another_member() {
    let mut sim = Sim::new(&SimConfig::new(23, 3));
    settle(&mut sim);
    let quota = committed(&sim, 0).allocation.units_of(MemberId(3));
    assert!(quota > 0);
    request(&mut sim, 0, RequestAction::Drain { member: 3 });
    assert_eq!(committed(&sim, 1).allocation.units_of(MemberId(3)), 0);
    assert!(sim.observations().iter().any(|o| o.observer == MemberId(3)
        && matches!(
            o.event,
            Event::Request {
                outcome: RequestOutcome::Drained,
                ..
            }
        )));
    request(&mut sim, 1, RequestAction::Resume { member: 3 });
    assert_eq!(committed(&sim, 1).allocation.units_of(MemberId(3)), quota);
    assert!(sim.converged());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// Runs `f` on member `i`'s endpoint now, then 300 ms of the simulation.
fn on_endpoint(
    sim: &mut Sim,
    i: usize,
    f: impl FnOnce(&mut control_channel::Endpoint, control_channel::Clock),
) {
    let now = sim.local_now(i);
    f(sim.endpoint_mut(i).expect("running"), now);
    sim.flush(i);
    let until = sim.now_ms() + 300;
    sim.run_until(until);
}

/// A member's health hold (SPEC.md §11.9) is apart from drain and resume: held, it has no units
/// whatever an operator resumes; released, an operator's drain stays.
#[test]
fn a_health_hold_is_apart_from_drain_and_resume() {
    let mut sim = Sim::new(&SimConfig::new(25, 3));
    settle(&mut sim);
    let quota = committed(&sim, 0).allocation.units_of(MemberId(3));
    assert!(quota > 0);
    on_endpoint(&mut sim, 2, |ep, now| ep.set_held(now, true));
    assert_eq!(committed(&sim, 0).allocation.units_of(MemberId(3)), 0);
    assert_eq!(
        sim.endpoint(2).map(|e| e.weight_of(MemberId(3))),
        Some(Some(0))
    );
    // An operator's resume while held: still no units.
    request(&mut sim, 0, RequestAction::Resume { member: 3 });
    assert_eq!(committed(&sim, 0).allocation.units_of(MemberId(3)), 0);
    on_endpoint(&mut sim, 2, |ep, now| ep.set_held(now, false));
    assert_eq!(committed(&sim, 0).allocation.units_of(MemberId(3)), quota);
    // An operator's drain, then a hold and its release: the drain stays.
    request(&mut sim, 0, RequestAction::Drain { member: 3 });
    on_endpoint(&mut sim, 2, |ep, now| ep.set_held(now, true));
    on_endpoint(&mut sim, 2, |ep, now| ep.set_held(now, false));
    assert!(!sim.endpoint(2).expect("running").held());
    assert_eq!(committed(&sim, 0).allocation.units_of(MemberId(3)), 0);
    request(&mut sim, 0, RequestAction::Resume { member: 3 });
    assert_eq!(committed(&sim, 0).allocation.units_of(MemberId(3)), quota);
    assert!(sim.converged());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let mut sim = Sim::new(&SimConfig::new(24, 3));
    settle(&mut sim);
    let before = committed(&sim, 0).id();
    let of1: Vec<u16> = (0..256u16)
        .filter(|&u| {
            committed(&sim, 0).allocation.unit_owners()[usize::from(u)] == Some(MemberId(1))
        })
        .collect();
    let cases = [
        (
            RequestAction::Move {
                units: vec![256],
                to: 2,
            },
            RequestRefusal::BadUnit,
        ),
        (
            RequestAction::Move {
                units: vec![0],
                to: 9,
            },
            RequestRefusal::UnknownMember,
        ),
        // Everything member 1 has, to member 2: member 2 cannot give that many back.
        (
            RequestAction::Move {
                units: of1.iter().chain(&of1).copied().chain(0..256).collect(),
                to: 2,
            },
            RequestRefusal::NotEnoughUnits,
        ),
    ];
    for (action, refusal) in cases {
        let id = request(&mut sim, 2, action);
        assert_eq!(
            coordinator_outcome(&sim, id),
            Some(RequestOutcome::Refused(refusal))
        );
        assert_eq!(committed(&sim, 0).id(), before);
        assert_eq!(committed(&sim, 2).id(), before);
    }
    // A drain of a member nobody has is nobody's business.
    request(&mut sim, 2, RequestAction::Drain { member: 77 });
    assert_eq!(committed(&sim, 0).id(), before);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn peers_incarnations_come_from_their_sequence_numbers() {
    let mut sim = Sim::new(&SimConfig::new(25, 3));
    settle(&mut sim);
    let me = sim.endpoint(0).expect("running");
    for i in 1..3 {
        let peer = sim.endpoint(i).expect("running");
        assert_eq!(
            me.peer_incarnation(Sim::member_id(i)),
            Some(peer.incarnation()),
            "fewer than 2^20 messages: exact"
        );
    }
    assert_eq!(me.peer_incarnation(MemberId(77)), None);
}

/// An operator's signature covers one action once: the same authority on another action, or
/// replayed by another member, is refused everywhere and changes nothing.
#[test]
fn an_operator_request_cannot_be_altered_or_replayed() {
    let mut sim = Sim::new(&SimConfig::new(26, 3));
    settle(&mut sim);
    let authority = sim.operator_authority(2, &RequestAction::Drain { member: 2 });
    // Altered: the signature was for draining member 2, the request drains member 1.
    let now = sim.local_now(2);
    sim.endpoint_mut(2)
        .expect("running")
        .request_with_authority(
            now,
            RequestAction::Drain { member: 1 },
            Some(authority.clone()),
        );
    sim.flush(2);
    let until = sim.now_ms() + 200;
    sim.run_until(until);
    assert_eq!(
        sim.endpoint(0).and_then(|e| e.weight_of(MemberId(1))),
        Some(1)
    );
    // Used once by member 3 (it drains member 2), then replayed by member 1: refused.
    let now = sim.local_now(2);
    sim.endpoint_mut(2)
        .expect("running")
        .request_with_authority(
            now,
            RequestAction::Drain { member: 2 },
            Some(authority.clone()),
        );
    sim.flush(2);
    let until = sim.now_ms() + 300;
    sim.run_until(until);
    assert_eq!(committed(&sim, 0).allocation.units_of(MemberId(2)), 0);
    let now = sim.local_now(1);
    sim.endpoint_mut(1)
        .expect("running")
        .request(now, RequestAction::Resume { member: 2 });
    sim.flush(1);
    let until = sim.now_ms() + 300;
    sim.run_until(until);
    assert!(committed(&sim, 0).allocation.units_of(MemberId(2)) > 0);
    let now = sim.local_now(0);
    sim.endpoint_mut(0)
        .expect("running")
        .request_with_authority(now, RequestAction::Drain { member: 2 }, Some(authority));
    sim.flush(0);
    let until = sim.now_ms() + 300;
    sim.run_until(until);
    assert!(committed(&sim, 0).allocation.units_of(MemberId(2)) > 0);
    let refused = sim
        .observations()
        .iter()
        .filter(|o| {
            matches!(
                o.event,
                Event::Request {
                    outcome: RequestOutcome::Refused(RequestRefusal::Unauthorized),
                    ..
                }
            )
        })
        .count();
    assert!(refused >= 2, "{refused}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
