//! The server's signed MLDv2 join end to end (issue 15, item 5): two real `manycast-server`s
//! behind the real verifier with `protected6 = ["ff3e::/32"]`; member 1 has `group6` and a
//! version 2 certificate listing it. The verifier's status shows its IPv6 claim, from its
//! link-local address, with the IPv6 counterparts of its IPv4 units (unit i ↔ unit i of the
//! /56 site slicing); after a clean stop the claim is gone (the signed leave).

use crate::harness::{verifier_status, wait_for, Lab, CONTROL, GROUP};
use igmp_ext::alloc::Slicing;
use igmp_ext::cert::Ipv6Grant;
use igmp_ext::fixtures::GROUP6;
use igmp_ext::{CertificateBody, KeyId, Slice, SliceEntry, SliceSet6, Timestamp};
use manycast_server::keys;
use manycast_server::mld_agent::units6;
use std::time::Duration;

#[test]
fn a_member_with_group6_claims_its_units_over_mld_and_leaves_at_a_clean_stop() {
    let mut lab = Lab::new(2);
    // Member 1's certificate: version 2, listing GROUP6 with every IPv6 slice.
    let f = lab.fixture.clone();
    let m = &f.members[0];
    let now = daemon_kit::wall_clock();
    let body = CertificateBody {
        member_id: m.id,
        member_key: m.key.verifying_key(),
        issuer: KeyId::of(&f.group_key.verifying_key()),
        not_before: Timestamp(now.0.saturating_sub(3_600_000)),
        not_after: now.saturating_add(Duration::from_secs(86_400)),
        groups: vec![GROUP, CONTROL],
        slices: igmp_ext::SliceSet::full(),
    };
    let grant = Ipv6Grant {
        groups: vec![GROUP6],
        slices: SliceSet6::full(),
    };
    let cert = body.issue_with_ipv6(&grant, &f.group_key).expect("issue");
    let d = lab.dir.path().to_owned();
    let path = d.join(format!("{}.cert", m.id));
    std::fs::remove_file(&path).expect("the lab's version 1 certificate");
    keys::write_certificate(&path, &cert).expect("cert");
    lab.key_groups6 = vec![(*f.key_source6()[&GROUP6]).clone()];

    let routed = lab.routed(2, &[std::net::Ipv4Addr::new(10, 1, 0, 2)]);
    let (router, servers) = (routed.router.clone(), routed.servers.clone());
    // The member link's IPv6 prefix on both sides; the member's addresses go through DAD
    // (its link-local one is tentative for a while: the server waits).
    in_ns(
        &router,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:0:1::1/64",
            "dev",
            "s1",
            "nodad",
        ],
    );
    in_ns(
        &servers[0],
        &["-6", "addr", "add", "2001:db8:0:1::2/64", "dev", "m0"],
    );
    let socket = lab.start_verifier(
        &router,
        &["c0", "s1", "s2"],
        "[verifier]\nprotected6 = [\"ff3e::/32\"]\n",
        Some("debug"),
    );
    lab.start_server_with(
        0,
        &servers[0],
        "m0",
        "ctl0",
        &format!("group6 = \"{GROUP6}\"\nstrategy = \"reset\""),
        "",
    );
    lab.start_server(1, &servers[1], "m0", "ctl0");
    lab.wait_split();
    let epoch = lab.metric(0, "epoch");
    let id = f.members[0].id.0;
    wait_for(
        "the verifier holds member 1's IPv4 and IPv6 claims at that epoch",
        || {
            verifier_status(&socket).is_some_and(|s| {
                let mine: Vec<_> = s
                    .ownership
                    .iter()
                    .filter(|r| r.member == id && r.epoch == epoch)
                    .collect();
                mine.iter().any(|r| r.group == GROUP.to_string())
                    && mine.iter().any(|r| r.group == GROUP6.to_string())
            })
        },
    );
    let s = verifier_status(&socket).expect("status");
    let row = |g: String| {
        s.ownership
            .iter()
            .find(|r| r.member == id && r.epoch == epoch && r.group == g)
            .expect("the claim")
            .clone()
    };
    let (v4, v6) = (row(GROUP.to_string()), row(GROUP6.to_string()));
    let entries: Vec<SliceEntry> = v4
        .slices
        .split(' ')
        .map(|t| SliceEntry::include(t.parse::<Slice>().expect("an IPv4 slice")))
        .collect();
    let expected: SliceSet6 = units6(Slicing::LowOrder { bits: 8 }, &entries)
        .iter()
        .map(|e| e.slice)
        .collect();
    assert!(
        !expected.is_empty() && !expected.is_full(),
        "half the units: {expected}"
    );
    assert_eq!(v6.slices, expected.to_string(), "unit i ↔ unit i");
    assert!(
        v6.sender.starts_with("fe80::"),
        "from the link-local address: {}",
        v6.sender
    );
    assert_eq!(v6.interface, "s1");
    assert!(
        verifier_status(&socket).is_some_and(|s| s.counters.mld_joins_accepted >= 1),
        "MLDv2 joins accepted"
    );
    let sent = lab
        .admin_status(0)
        .expect("member 1's status")
        .counters
        .mld_joins_sent;
    assert!(sent >= 1, "member 1 counts its MLDv2 joins");
    assert!(lab.metric(0, "mld_joins_sent_total") >= 1);

    // A clean stop: the signed leave (an empty claim) empties the IPv6 claim.
    assert!(
        lab.terminate(&f.members[0].id.to_string()).success(),
        "{}",
        lab.logs()
    );
    wait_for("the verifier dropped member 1's IPv6 claim", || {
        verifier_status(&socket).is_some_and(|s| {
            !s.ownership
                .iter()
                .any(|r| r.member == id && r.group == GROUP6.to_string())
        })
    });
}

/// `ip` with `args` in namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .status()
        .expect("ip");
    assert!(st.success(), "ip -n {ns} {args:?}");
}
