//! The tokio driver over real multicast between network namespaces (needs root).

use super::harness::{is_root, start_member, Lab};
use control_channel::{EpochId, Event};
use igmp_ext::fixtures::Fixture;
use igmp_ext::MemberId;
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Waits until every member in `who` has committed an allocation whose members are `who`.
fn wait_for_commit(
    rx: &mpsc::Receiver<(usize, Instant, Event)>,
    latest: &mut BTreeMap<usize, (EpochId, Vec<u8>)>,
    who: &[usize],
    limit: Duration,
) -> bool {
    let end = Instant::now() + limit;
    let mut slices: BTreeMap<usize, usize> = BTreeMap::new();
    loop {
        let ids: Vec<_> = who.iter().filter_map(|i| latest.get(i)).collect();
        if ids.len() == who.len()
            && ids.windows(2).all(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
            && who.iter().all(|i| slices.get(i).copied().unwrap_or(0) > 0)
        {
            return true;
        }
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            return false;
        };
        match rx.recv_timeout(left) {
            Ok((
                i,
                _,
                Event::Committed {
                    id,
                    digest,
                    slices: s,
                },
            )) => {
                // With equal weights every member of the allocation serves some slices.
                slices.insert(i, usize::from(!s.is_empty()));
                latest.insert(i, (id, digest.to_vec()));
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[test]
fn three_namespaces_agree_then_survive_a_crash() {
    if !is_root() {
        panic!("the namespace tests need root (they create network namespaces)");
    }
    let lab = Lab::new(3);
    let fixture = Fixture::new(3);
    let (tx, rx) = mpsc::channel();
    let mut members: Vec<_> = (0..3)
        .map(|i| start_member(&lab.members[i], i, &fixture, tx.clone()))
        .collect();
    let mut latest = BTreeMap::new();
    assert!(
        wait_for_commit(&rx, &mut latest, &[0, 1, 2], Duration::from_secs(10)),
        "three members did not agree over multicast: {latest:?}"
    );
    members[2].crash();
    let crashed = Instant::now();
    let mut downs = Vec::new();
    let mut survivors_latest: BTreeMap<usize, (EpochId, Vec<u8>)> = BTreeMap::new();
    let end = crashed + Duration::from_secs(10);
    while survivors_latest.len() < 2 || survivors_latest.values().any(|(id, _)| id.epoch == 0) {
        let left = end
            .checked_duration_since(Instant::now())
            .expect("survivors did not re-allocate");
        match rx.recv_timeout(left) {
            Ok((i, _, Event::MemberDown(MemberId(3)))) => downs.push(i),
            Ok((i, _, Event::Committed { id, digest, .. })) if i < 2 => {
                survivors_latest.insert(i, (id, digest.to_vec()));
            }
            Ok(_) => {}
            Err(e) => panic!("no re-allocation after the crash: {e}"),
        }
    }
    let ids: Vec<_> = survivors_latest.values().collect();
    assert_eq!(ids[0], ids[1], "survivors committed different allocations");
    // A survivor may commit the coordinator's new allocation a moment before its own detector
    // reports the crash (under load): wait for both reports, within the same deadline.
    while downs.len() < 2 {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            break;
        };
        match rx.recv_timeout(left) {
            Ok((i, _, Event::MemberDown(MemberId(3)))) => downs.push(i),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    downs.sort();
    assert_eq!(downs, vec![0, 1], "both survivors declared member 3 down");
    drop(members);
}

/// An overloaded host stalls a member's process for longer than the down timeout. When it wakes,
/// the heartbeats queued meanwhile must be read before its timers run: the stalled member must not
/// declare its live peers down (its peers may rightly declare it down: it was silent).
#[test]
fn a_stalled_member_reads_queued_heartbeats_before_declaring_peers_down() {
    if !is_root() {
        panic!("the namespace tests need root (they create network namespaces)");
    }
    let lab = Lab::new(3);
    let fixture = Fixture::new(3);
    let (tx, rx) = mpsc::channel();
    let members: Vec<_> = (0..3)
        .map(|i| start_member(&lab.members[i], i, &fixture, tx.clone()))
        .collect();
    let mut latest = BTreeMap::new();
    assert!(
        wait_for_commit(&rx, &mut latest, &[0, 1, 2], Duration::from_secs(10)),
        "three members did not agree over multicast: {latest:?}"
    );
    // Each stall is 2.5 down timeouts; with the timer raced fairly against the socket after a
    // stall, one stall in two would end in false downs, so five stalls show the order is fixed.
    let mut false_downs = Vec::new();
    for _ in 0..5 {
        members[0].stall(Duration::from_millis(500));
        let end = Instant::now() + Duration::from_millis(1_000);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok((0, _, Event::MemberDown(m))) => false_downs.push(m),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    assert!(
        false_downs.is_empty(),
        "the stalled member declared live peers down: {false_downs:?}"
    );
    drop(members);
}
