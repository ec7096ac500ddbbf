//! Router-checked liveness end to end (SPEC.md §5.5, issue 16 item 2): the real verifier and two
//! real servers. A SIGKILLed member's sources go to the standby its epoch named, on the
//! verifier's own evidence, while the control group has not yet found it down; an on-link host
//! sending beacons for the dead member from its own address and link keeps nothing alive.

use crate::harness::{ask, in_netns, verifier_status, wait_for, Lab, Routed, GROUP};
use igmp_ext::liveness::Beacon;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn sources() -> Vec<Ipv4Addr> {
    (2..14).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect()
}

/// The one server address that answered each source.
fn answered_by(
    replies: &BTreeMap<Ipv4Addr, Vec<(Ipv4Addr, String)>>,
) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
    replies
        .iter()
        .map(|(src, got)| {
            let servers: BTreeSet<_> = got.iter().map(|(s, _)| *s).collect();
            assert_eq!(servers.len(), 1, "{src} answered by {servers:?}");
            (*src, got[0].0)
        })
        .collect()
}

#[test]
fn a_killed_members_sources_go_to_its_standby_before_the_control_group_commits() {
    let mut lab = Lab::new(3);
    lab.liveness_misses = None;
    let srcs = sources();
    let Routed {
        router,
        client,
        servers,
        ..
    } = lab.routed(3, &srcs);
    let socket = lab.start_verifier(&router, &["c0", "s1", "s2", "s3"], "", Some("debug"));
    // The control group takes a minute to find a member down here: whatever moves the dead
    // member's sources within this test is the verifier's doing alone.
    for (i, ns) in servers.iter().enumerate() {
        lab.start_server_with(
            i,
            ns,
            "m0",
            "ctl0",
            "strategy = \"handoff\"",
            "down_after_ms = 60000\n",
        );
    }
    lab.wait_split();
    let m2 = lab.fixture.members[1].id;
    let mut epoch = 0;
    wait_for(
        "three claims live at one epoch, each with a standby",
        || {
            verifier_status(&socket).is_some_and(|s| {
                epoch = s.ownership.first().map_or(0, |r| r.epoch);
                s.ownership.len() == 3
                    && s.ownership.iter().all(|r| {
                        r.epoch == epoch
                            && r.liveness.as_deref() == Some("live")
                            && !r.standby.is_empty()
                    })
            })
        },
    );
    wait_for("every member committed that epoch", || {
        (0..3).all(|i| lab.metric(i, "epoch") == epoch)
    });
    let before = answered_by(&ask(&client, &srcs, 1));
    let s2 = Ipv4Addr::new(10, 0, 2, 2);
    assert_eq!(
        before.values().copied().collect::<BTreeSet<_>>().len(),
        3,
        "all three serve some sources: {before:?}"
    );
    assert!(before.values().any(|&s| s == s2));

    // Member 2 dies. From then on a host on its link, with its address, sends beacons for it
    // every 5 ms: values it made up, at the index due.
    lab.kill(&m2.to_string());
    let forger = in_netns(&servers[1], || {
        let s = UdpSocket::bind(SocketAddrV4::new(s2, 0)).expect("bind");
        s.set_multicast_ttl_v4(1).expect("ttl");
        s
    });
    let stop = Arc::new(AtomicBool::new(false));
    let forging = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut index = 1_000u32;
            while !stop.load(Ordering::Relaxed) {
                index += 1;
                let b = Beacon {
                    group: GROUP,
                    member: m2,
                    chain: 0x5eed,
                    index,
                    value: [index as u8; 16],
                };
                let _ = forger.send_to(&b.encode(), (Ipv4Addr::new(224, 0, 0, 2), 7410));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    wait_for("the verifier finds member 2 dead", || {
        verifier_status(&socket).is_some_and(|s| {
            s.counters.members_found_dead >= 1
                && s.ownership
                    .iter()
                    .any(|r| r.member == m2.0 && r.liveness.as_deref() == Some("dead"))
        })
    });
    let after = answered_by(&ask(&client, &srcs, 1));
    stop.store(true, Ordering::Relaxed);
    forging.join().expect("forger");
    assert_eq!(after.len(), srcs.len(), "every source answered: {after:?}");
    // Under handoff a unit gained from a member the router found dead is not held (issue 16
    // item 4): the standbys answer at once.
    assert!(
        after.values().all(|&s| s != s2),
        "the standbys answer member 2's sources: {after:?}"
    );
    // The control group has not committed: member 2's claim is still the verified one, at the
    // same epoch; the verifier only steered around it.
    let s = verifier_status(&socket).expect("status");
    assert!(
        s.ownership
            .iter()
            .any(|r| r.member == m2.0 && r.epoch == epoch),
        "{:?}",
        s.ownership
    );
    assert_eq!(lab.metric(0, "epoch"), epoch, "no commit happened");
    assert!(
        s.counters.beacons_refused > 0,
        "the forged beacons were refused"
    );
    wait_for("the standbys took the router's notices", || {
        lab.metric(0, "standby_notices_total") + lab.metric(2, "standby_notices_total") >= 1
    });
}
