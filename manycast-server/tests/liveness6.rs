//! Fast failover for IPv6 clients end to end (SPEC.md §5.5, §5.6; issue 15): the real verifier
//! with `protected6` and two real dual-stack servers. Each member's MLDv2 join names the IPv6
//! counterparts of its standby units and the chain of its one (IPv4) beacon stream; when one is
//! SIGKILLed, the verifier finds it dead by its beacons and steers the IPv6 sources of its units
//! to the survivor, which answers them, while the control group has not committed (its
//! `down_after_ms` is a minute here): the verifier's doing alone.

use crate::harness::{verifier_status, wait_for, Lab};
use crate::native6::{
    ask6, certify_dual_stack, ip_in, owners6, server6, socket6, sources6, unit_of,
};
use igmp_ext::fixtures::GROUP6;
use igmp_ext::{Slice6, SliceSet6};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

#[test]
fn a_killed_members_ipv6_sources_go_to_its_standby_before_the_control_group_commits() {
    let mut lab = Lab::new(2);
    certify_dual_stack(&mut lab);
    let routed = lab.routed(2, &[Ipv4Addr::new(10, 1, 0, 2)]);
    let (router, client, servers) = (
        routed.router.clone(),
        routed.client.clone(),
        routed.servers.clone(),
    );
    // The IPv6 layout of `native6.rs`: the client's sites in 2001:db8:1::/48 on c0, member i
    // on 2001:db8:0:i::/64 behind s{i}.
    lab.sysctl(&router, "net.ipv6.conf.all.forwarding=1");
    let c0 = [
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/48",
        "dev",
        "c0",
        "nodad",
    ];
    ip_in(&router, &c0);
    let srcs = sources6();
    for a in &srcs {
        let cidr = format!("{a}/48");
        ip_in(
            &client,
            &["-6", "addr", "add", &cidr, "dev", "cl0", "nodad"],
        );
    }
    for (i, ns) in servers.iter().enumerate() {
        let i = i + 1;
        let (ours, dev) = (format!("2001:db8:0:{i}::1/64"), format!("s{i}"));
        ip_in(&router, &["-6", "addr", "add", &ours, "dev", &dev, "nodad"]);
        let theirs = format!("{}/64", server6(i));
        ip_in(ns, &["-6", "addr", "add", &theirs, "dev", "m0", "nodad"]);
        let via = format!("2001:db8:0:{i}::1");
        ip_in(ns, &["-6", "route", "add", "default", "via", &via]);
    }
    let socket = lab.start_verifier(
        &router,
        &routed.interfaces(),
        "[verifier]\nprotected6 = [\"ff3e::/32\"]\n",
        Some("debug"),
    );
    let top = format!("group6 = \"{GROUP6}\"\nstrategy = \"reset\"");
    for (i, ns) in servers.iter().enumerate() {
        lab.start_server_with(i, ns, "m0", "ctl0", &top, "down_after_ms = 60000\n");
    }
    lab.wait_split();
    let ids: Vec<u32> = lab.fixture.members.iter().map(|m| m.id.0).collect();
    let mut epoch = 0;
    wait_for(
        "both IPv6 claims live at one epoch, each judged by beacons and with a standby",
        || {
            epoch = lab.metric(0, "epoch");
            verifier_status(&socket).is_some_and(|s| {
                let rows6: Vec<_> = s
                    .ownership
                    .iter()
                    .filter(|r| r.group == GROUP6.to_string() && r.epoch == epoch)
                    .collect();
                rows6.len() == 2
                    && rows6
                        .iter()
                        .all(|r| r.liveness.as_deref() == Some("live") && !r.standby.is_empty())
            })
        },
    );
    wait_for("both members committed that epoch", || {
        (0..2).all(|i| lab.metric(i, "epoch") == epoch)
    });
    // Member 2's IPv6 units as the verifier holds them, and the standby member 1 named for them.
    let s = verifier_status(&socket).expect("status");
    let set_of = |text: &str| -> SliceSet6 {
        text.split(' ')
            .map(|t| t.parse::<Slice6>().expect("an IPv6 slice"))
            .collect()
    };
    let row = |m: u32| {
        s.ownership
            .iter()
            .find(|r| r.group == GROUP6.to_string() && r.member == m)
            .expect("an IPv6 row")
    };
    let (held2, standby1) = (set_of(&row(ids[1]).slices), set_of(&row(ids[0]).standby));
    let of_m2: Vec<Ipv6Addr> = srcs
        .iter()
        .copied()
        .filter(|a| held2.contains_addr(*a))
        .collect();
    assert!(
        !of_m2.is_empty() && of_m2.len() < srcs.len(),
        "member 2 holds some sources"
    );
    assert!(
        of_m2.iter().all(|a| standby1.contains_addr(*a)),
        "member 1 stands by for every unit of member 2"
    );
    let socks: Vec<(Ipv6Addr, std::net::UdpSocket)> = srcs
        .iter()
        .map(|&a| (a, socket6(&client, a, "cl0", 8)))
        .collect();
    let before = owners6(&ask6(&socks, 1));
    let servers_before: BTreeSet<Ipv6Addr> = before.values().map(|(a, ..)| *a).collect();
    assert_eq!(
        servers_before,
        BTreeSet::from([server6(1), server6(2)]),
        "{before:?}"
    );

    // Member 2 dies: the verifier finds it dead by its beacons, its IPv6 claim with it.
    lab.kill(&lab.fixture.members[1].id.to_string());
    wait_for("the verifier finds member 2's IPv6 claim dead", || {
        verifier_status(&socket).is_some_and(|s| {
            s.counters.mld_claims_found_dead >= 1
                && s.ownership.iter().any(|r| {
                    r.group == GROUP6.to_string()
                        && r.member == ids[1]
                        && r.liveness.as_deref() == Some("dead")
                })
        })
    });
    wait_for("member 1 took the router's standby notice", || {
        lab.metric(0, "standby_notices_total") >= 1
    });
    let socks: Vec<(Ipv6Addr, std::net::UdpSocket)> = srcs
        .iter()
        .map(|&a| (a, socket6(&client, a, "cl0", 8)))
        .collect();
    let after = owners6(&ask6(&socks, 1));
    assert_eq!(
        after.len(),
        srcs.len(),
        "every IPv6 source answered: {after:?}"
    );
    for a in &of_m2 {
        let (addr, member, _) = &after[a];
        assert_eq!(
            (*addr, member.as_str()),
            (server6(1), format!("m{}", ids[0]).as_str()),
            "{a} (unit {}) answered by the standby",
            unit_of(*a)
        );
    }
    // All of that before the control group's commit: member 2's IPv6 claim is still the
    // verified one at the same epoch, and no member moved to a later one.
    let s = verifier_status(&socket).expect("status");
    assert!(
        s.ownership
            .iter()
            .any(|r| r.group == GROUP6.to_string() && r.member == ids[1] && r.epoch == epoch),
        "{:?}",
        s.ownership
    );
    assert_eq!(lab.metric(0, "epoch"), epoch, "no commit happened");
    assert_eq!(
        lab.metric(0, "filtered6_total"),
        0,
        "the survivor's IPv6 filter let its standby units in"
    );
}
