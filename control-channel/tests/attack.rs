//! A compromised but certified member (issue 13, SPEC.md §9.7) in a simulated cluster: forged
//! proposals, extreme epochs, faked hearing, oversized weights, requests against other members,
//! and its revocation. The honest members must keep a full allocation (no unit lost) and keep
//! committing.

use control_channel::sim::{Sim, SimConfig};
use control_channel::wire::{EpochId, Heartbeat, RequestAction};
use control_channel::{DropReason, Event};
use igmp_ext::MemberId;
use std::time::Duration;

/// The compromised node (member 4): not the coordinator.
const BAD: usize = 3;
const HONEST: [usize; 3] = [0, 1, 2];

fn settled(seed: u64) -> Sim {
    let mut sim = Sim::new(&SimConfig::new(seed, 4));
    assert!(sim.run_until_converged(Duration::from_secs(3)).is_some());
    let until = sim.now_ms() + 300;
    sim.run_until(until);
    assert_eq!(sim.units_lost(&HONEST, &[]), 0);
    sim
}

fn run(sim: &mut Sim, ms: u64) {
    let until = sim.now_ms() + ms;
    sim.run_until(until);
}

fn committed_members(sim: &Sim, i: usize) -> Vec<MemberId> {
    sim.endpoint(i)
        .and_then(|e| e.committed())
        .map(|c| c.members().iter().map(|&(m, _)| m).collect())
        .unwrap_or_default()
}

fn forged_proposals(sim: &mut Sim) {
    let last = |proposer| EpochId {
        epoch: u64::MAX,
        proposer,
        incarnation: u64::MAX,
    };
    // Zero quotas: every listed weight 0, so "nobody owns anything" is a valid allocation.
    sim.forge_proposal(
        BAD,
        u64::MAX,
        last(1),
        vec![(1, 0), (2, 0), (3, 0), (4, 0)],
        vec![0xff; 256],
    );
    // Everything to the compromised member, proposed in its own name.
    sim.forge_proposal(BAD, u64::MAX, last(4), vec![(4, 1)], vec![0; 256]);
    // Everything to a member that does not exist.
    sim.forge_proposal(BAD, 7, last(1), vec![(1, 0), (9, 1)], vec![1; 256]);
}

#[test]
fn forged_proposals_with_the_last_epoch_lose_no_unit() {
    for seed in 1..=3 {
        let mut sim = settled(seed);
        let before = sim.endpoint(0).and_then(|e| e.committed()).map(|c| c.id());
        forged_proposals(&mut sim);
        run(&mut sim, 500);
        assert_eq!(sim.units_lost(&HONEST, &[]), 0, "seed {seed}");
        for i in HONEST {
            let id = sim.endpoint(i).and_then(|e| e.committed()).map(|c| c.id());
            assert_eq!(id, before, "seed {seed}: node {i} committed a forged epoch");
        }
        // Agreement goes on: a crash is still reallocated among the living.
        sim.crash(1);
        run(&mut sim, 1000);
        assert_eq!(sim.units_lost(&[0, 2], &[]), 0, "seed {seed}");
        assert_eq!(
            committed_members(&sim, 0),
            [MemberId(1), MemberId(3), MemberId(4)],
            "seed {seed}"
        );
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
}

#[test]
fn a_header_with_the_last_epoch_does_not_freeze_agreement() {
    let mut sim = settled(4);
    let hb = Heartbeat {
        weight: 1,
        heard: vec![],
        committed: EpochId {
            epoch: u64::MAX,
            proposer: 1,
            incarnation: u64::MAX,
        },
        digest: 0,
        load: vec![],
    };
    sim.forge_heartbeat(BAD, u64::MAX, hb);
    run(&mut sim, 100);
    // Two changes of view after it: each must be committed by every honest member.
    sim.crash(1);
    run(&mut sim, 1000);
    assert_eq!(
        committed_members(&sim, 0),
        [MemberId(1), MemberId(3), MemberId(4)]
    );
    sim.restart(1);
    run(&mut sim, 1500);
    assert!(sim.converged(), "{:?}", sim.committed_ids());
    assert_eq!(sim.units_lost(&HONEST, &[]), 0);
    let epoch = sim
        .endpoint(0)
        .and_then(|e| e.committed())
        .map_or(0, |c| c.id().epoch);
    assert!(epoch < 1_000, "epoch {epoch} jumped");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_member_cannot_drain_move_or_rebalance_the_others() {
    let mut sim = settled(5);
    let before = sim.endpoint(0).and_then(|e| e.committed()).cloned();
    let before = before.expect("committed");
    sim.forge_request(BAD, 1 << 40, RequestAction::Drain { member: 2 });
    sim.forge_request(BAD, (1 << 40) + 1, RequestAction::Rebalance);
    let units: Vec<u16> = (0..256u16)
        .filter(|&u| before.allocation.unit_owners()[usize::from(u)] == Some(MemberId(1)))
        .collect();
    sim.forge_request(BAD, (1 << 40) + 2, RequestAction::Move { units, to: 4 });
    run(&mut sim, 500);
    assert_eq!(
        sim.endpoint(1).and_then(|e| e.weight_of(MemberId(2))),
        Some(1)
    );
    let after = sim.endpoint(0).and_then(|e| e.committed()).cloned();
    assert_eq!(after.map(|c| c.allocation), Some(before.allocation.clone()));
    // Draining itself stays allowed.
    let now = sim.local_now(BAD);
    sim.endpoint_mut(BAD)
        .expect("running")
        .request(now, RequestAction::Drain { member: 4 });
    sim.flush(BAD);
    run(&mut sim, 500);
    let c = sim.endpoint(0).and_then(|e| e.committed()).cloned();
    assert_eq!(c.map(|c| c.allocation.units_of(MemberId(4))), Some(0));
    assert_eq!(sim.units_lost(&HONEST, &[]), 0);
}

#[test]
fn faked_hearing_cannot_keep_a_crashed_member_alive() {
    let mut sim = settled(6);
    sim.crash(1);
    // Every heartbeat interval the compromised member says it heard member 2 just now.
    for _ in 0..30 {
        let committed = sim
            .endpoint(BAD)
            .and_then(|e| e.committed())
            .map(|c| c.id())
            .unwrap_or_default();
        let hb = Heartbeat {
            weight: 1,
            heard: vec![(1, 0), (2, 0), (3, 0)],
            committed,
            digest: 0,
            load: vec![],
        };
        sim.forge_heartbeat(BAD, committed.epoch, hb);
        run(&mut sim, 50);
    }
    for i in [0, 2] {
        let live = sim.endpoint(i).expect("running").live_members();
        assert!(!live.contains(&MemberId(2)), "node {i}: {live:?}");
    }
    assert_eq!(sim.units_lost(&[0, 2], &[]), 0);
}

#[test]
fn an_announced_weight_is_bounded() {
    // The compromised member is configured with the largest weight there is, and says so.
    let mut cfg = SimConfig::new(7, 4);
    cfg.weights = vec![1, 1, 1, u32::MAX];
    let mut sim = Sim::new(&cfg);
    assert!(sim.run_until_converged(Duration::from_secs(3)).is_some());
    let committed = sim
        .endpoint(BAD)
        .and_then(|e| e.committed())
        .map(|c| c.id())
        .unwrap_or_default();
    for _ in 0..20 {
        let hb = Heartbeat {
            weight: u32::MAX,
            heard: vec![],
            committed,
            digest: 0,
            load: vec![],
        };
        sim.forge_heartbeat(BAD, committed.epoch, hb);
        run(&mut sim, 25);
    }
    let max = sim.endpoint(0).expect("running").config().max_weight;
    assert_eq!(
        sim.endpoint(0).and_then(|e| e.weight_of(MemberId(4))),
        Some(max)
    );
    let c = sim.endpoint(0).and_then(|e| e.committed()).cloned();
    let c = c.expect("committed");
    let quota = 256 * u64::from(max) / (3 + u64::from(max)) + 1;
    assert!(c.allocation.units_of(MemberId(4)) as u64 <= quota);
    assert_eq!(sim.units_lost(&HONEST, &[]), 0);
}

#[test]
fn a_revoked_member_is_dropped_at_once_and_its_units_reallocated() {
    let mut sim = settled(8);
    let bad = sim.member_key_id(BAD);
    sim.publish_revocations(&[bad]);
    // At once: out of every honest view and cache.
    for i in HONEST {
        let e = sim.endpoint(i).expect("running");
        assert!(!e.live_members().contains(&MemberId(4)), "node {i}");
        assert!(!e.known_peers().contains(&MemberId(4)), "node {i}");
    }
    // It keeps talking (it is compromised): every message is refused, and it stays out.
    forged_proposals(&mut sim);
    run(&mut sim, 1000);
    for i in HONEST {
        assert!(
            !committed_members(&sim, i).contains(&MemberId(4)),
            "node {i}"
        );
        let e = sim.endpoint(i).expect("running");
        assert!(!e.known_peers().contains(&MemberId(4)), "node {i}");
        assert!(e.counters().dropped(DropReason::Revoked) > 0, "node {i}");
    }
    assert_eq!(sim.units_lost(&HONEST, &[BAD]), 0);
    let left = sim
        .observations()
        .iter()
        .any(|o| o.observer == MemberId(1) && matches!(o.event, Event::MemberRevoked(MemberId(4))));
    assert!(left, "the coordinator reports the revocation");
}
