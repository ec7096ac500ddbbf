//! The SWIM prototype of the simulator (`sim::swim`, feature `swim`; NOTES.md "Scale"): foca
//! detects a crash, its datagrams are authenticated, runs are deterministic, and its downs
//! drive today's agreement through `Endpoint::sim_external_down`.

use control_channel::sim::hierarchy::Hierarchy;
use control_channel::sim::hybrid;
use control_channel::sim::swim::{self, SwimSim, SwimTiming};
use control_channel::sim::Rng;
use std::time::Duration;

#[test]
fn foca_reports_a_crashed_member_down_at_every_survivor_and_no_one_else() {
    let (detect, false_downs) =
        swim::crash_trial(11, 6, SwimTiming::fast(), Duration::from_secs(3));
    assert!(detect.is_some(), "not every survivor reported the crash");
    assert_eq!(false_downs, 0);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let mut sim = SwimSim::new(5, 5, SwimTiming::fast());
        sim.run_until(400);
        sim.crash(3);
        sim.run_until(1500);
        let received: Vec<u64> = (0..sim.len()).map(|i| sim.received(i)).collect();
        (sim.downs().to_vec(), received)
    };
    let (a, b) = (run(), run());
    assert!(!a.0.is_empty(), "the crash was reported");
    assert_eq!(a, b);
}

#[test]
fn tampered_replayed_and_impostor_datagrams_are_refused() {
    let mut sim = SwimSim::new(3, 4, SwimTiming::fast());
    sim.tap(0);
    sim.run_until(300);
    let authentic = sim
        .tapped()
        .last()
        .expect("member 0 heard something")
        .clone();
    let (refused, foca_errors) = (sim.refused(0), sim.foca_errors(0));
    // An authentic datagram again: replayed.
    sim.inject(0, authentic.clone());
    // A flipped payload bit: bad signature.
    let mut tampered = authentic.clone();
    tampered[14] ^= 1;
    sim.inject(0, tampered);
    // Member 2 signing what claims to come from member 1: checked against 1's key.
    let mut impostor = sim.sign_as(2, &authentic[12..authentic.len() - 64]);
    impostor[..4].copy_from_slice(&1u32.to_be_bytes());
    sim.inject(0, impostor);
    // Authentic wrapper around bytes that are not foca's: refused before foca.
    let garbage = sim.sign_as(1, b"not foca");
    sim.inject(0, garbage);
    sim.run_until(301);
    assert_eq!(sim.refused(0) - refused, 4);
    assert_eq!(sim.foca_errors(0), foca_errors);
    assert!(sim.downs().is_empty());
}

#[test]
fn foca_downs_drive_todays_agreement_to_an_allocation_without_the_crashed_member() {
    let o = hybrid::hybrid_crash_trial(21, 4, SwimTiming::fast(), Duration::from_millis(500));
    assert!(o.violations.is_empty(), "{:?}", o.violations);
    assert!(
        o.detect_ms.is_some(),
        "foca did not report the crash everywhere"
    );
    assert!(
        o.converge_ms.is_some(),
        "no allocation without the crashed member"
    );
}

/// Three sites of five members, two agents each in an upper group of six (issue 14 item 4):
/// a member crash is settled inside its site and nowhere else; a lost site leaves the upper
/// group's allocation.
#[test]
fn a_member_crash_stays_in_its_site_and_a_lost_site_leaves_the_upper_group() {
    let mut h = Hierarchy::new(7, 3, 5, 2, SwimTiming::fast(), Duration::from_millis(500));
    assert!(h.converge(10_000), "every group reaches an allocation");
    h.run_for(300);
    let load = h.load(1000);
    assert!(
        load.max > load.mean && load.upper_swim > 0.0,
        "an agent carries its site's and the upper group's load: {load:?}"
    );
    let mut rng = Rng::new(3);
    h.member_crash(&mut rng, 1, 3000)
        .expect("the site commits without its crashed member, the others commit nothing");
    assert_eq!(h.sites[1].sim().running().len(), 4);
    h.site_loss(2, 3000)
        .expect("the upper group commits without the lost site's agents");
    assert_eq!(h.upper.sim().running().len(), 4);
}
