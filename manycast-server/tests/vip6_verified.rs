//! VIP mode over IPv6 end to end behind the real verifier (issue 15, items 3 and 5): its
//! `[[vip]]` for an IPv6 address steers each client's /56 unit to the member that claims it
//! in its signed MLDv2 join, and the members answer from the VIP they hold on `lo` (direct
//! server return). Under `reset` a moved client's connection is reset by its old owner and
//! its next one reaches the new owner; under `pin` the router keeps established connections
//! on the member they started on, and under `forward` the new owner passes them back to the
//! old one over the overlay; new connections follow the allocation. (`vip6.rs` runs the member
//! side behind a plain IPv6 router.)

use crate::harness::{verifier_status, wait_for, Lab};
use crate::native6::unit_of;
use crate::support::vip_member::KeepAlive;
use crate::vip6::{curl6, layout6, start_member6, VIP6};
use igmp_ext::fixtures::GROUP6;
use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::path::Path;

#[test]
fn ipv6_vip_behind_the_verifier_under_reset() {
    behind_the_verifier("reset");
}

#[test]
fn ipv6_vip_behind_the_verifier_under_pin() {
    behind_the_verifier("pin");
}

/// The router sends moved clients to their new owner, which passes the segments of
/// connections it never saw to the old owner over the overlay; the old owner answers them.
#[test]
fn ipv6_vip_behind_the_verifier_under_forward() {
    behind_the_verifier("forward");
}

/// Whether the verifier steers the IPv6 VIP to exactly the members `ids`, from claims at the
/// members' committed epoch.
fn steers(lab: &Lab, socket: &Path, ids: &[u32]) -> bool {
    let epoch = lab.metric(0, "epoch");
    verifier_status(socket).is_some_and(|s| {
        let claims: BTreeSet<u32> = s
            .ownership
            .iter()
            .filter(|r| r.group == GROUP6.to_string() && r.epoch == epoch)
            .map(|r| r.member)
            .collect();
        let vip: BTreeSet<u32> = s
            .vips
            .iter()
            .filter(|v| v.address == VIP6.to_string())
            .flat_map(|v| v.members.iter().map(|(m, ..)| *m))
            .collect();
        let want: BTreeSet<u32> = ids.iter().copied().collect();
        claims == want && vip == want
    })
}

fn behind_the_verifier(strategy: &str) {
    let mut lab = Lab::new(2);
    let (router, client, servers, srcs, interfaces) = layout6(&mut lab);
    let interfaces: Vec<&str> = interfaces.iter().map(String::as_str).collect();
    let pin = strategy == "pin";
    let socket = lab.start_verifier(
        &router,
        &interfaces,
        &format!(
            "[verifier]\nprotected6 = [\"ff3e::/32\"]\n\n\
             [[vip]]\naddress = \"{VIP6}\"\ngroup = \"{GROUP6}\"\npin = {pin}\n"
        ),
        Some("debug"),
    );
    let ids: Vec<u32> = lab.fixture.members.iter().map(|m| m.id.0).collect();

    // Member 1 alone answers every IPv6 client from the VIP.
    start_member6(&mut lab, 0, &servers[0], strategy);
    wait_for("member 1 owns everything", || {
        lab.metric(0, "slice_addresses") == 1 << 32
    });
    wait_for("the verifier steers the IPv6 VIP to member 1", || {
        steers(&lab, &socket, &ids[..1])
    });
    for &src in &srcs {
        assert_eq!(curl6(&client, src), "m1", "{src}");
    }
    let mut conns: Vec<KeepAlive<Ipv6Addr>> = srcs
        .iter()
        .map(|&s| KeepAlive::open6(&client, s, VIP6))
        .collect();
    for c in &mut conns {
        assert_eq!(c.ask().expect("first request"), "m1", "{}", c.src);
    }

    // Member 2 arrives; the verifier steers the units it takes to it.
    start_member6(&mut lab, 1, &servers[1], strategy);
    lab.wait_split();
    wait_for("the verifier steers the IPv6 VIP to both members", || {
        steers(&lab, &socket, &ids)
    });
    let status = lab.admin_status(0).expect("member 1's status");
    let moved: BTreeSet<Ipv6Addr> = srcs
        .iter()
        .copied()
        .filter(|&s| status.unit_owner[usize::from(unit_of(s))] == Some(ids[1]))
        .collect();
    assert!(
        !moved.is_empty() && moved.len() < srcs.len(),
        "both members own some sources' units: {:?}",
        status.unit_owner
    );
    let kept = strategy != "reset";
    if !kept {
        wait_for("member 1 reset the moved IPv6 connections", || {
            lab.metric(0, "vip_resets_total") >= moved.len() as u64
        });
    }
    if strategy == "forward" {
        let gained = status
            .unit_owner
            .iter()
            .filter(|o| **o == Some(ids[1]))
            .count();
        wait_for(
            "member 2 forwards the units it gained from member 1",
            || lab.metric(1, "vip_forward_units") == gained as u64,
        );
    }
    for c in &mut conns {
        let closed = c.was_closed();
        if kept || !moved.contains(&c.src) {
            // Pin: the router keeps every established connection on member 1; forward: member
            // 2 passes the moved ones back to it.
            assert_eq!(closed, None, "{}: closed", c.src);
            assert_eq!(c.ask().expect("kept"), "m1", "{}", c.src);
        } else {
            let why = closed.unwrap_or_else(|| panic!("{}: moved but not closed", c.src));
            assert!(why.contains("reset"), "{}: ended by {why}", c.src);
            *c = KeepAlive::open6(&client, c.src, VIP6);
            assert_eq!(c.ask().expect("after reconnect"), "m2", "{}", c.src);
        }
    }
    // New connections follow the allocation, through the verifier, under both strategies.
    for &src in &srcs {
        let want = if moved.contains(&src) { "m2" } else { "m1" };
        assert_eq!(curl6(&client, src), want, "{src}");
    }
    assert_eq!(
        lab.admin_status(0).map(|s| s.epoch_number()),
        Some(status.epoch_number()),
        "the allocation moved again meanwhile (a false down?): {}",
        lab.logs()
    );
    let resets = if kept { 0 } else { moved.len() as u64 };
    assert_eq!(lab.metric(0, "vip_resets_total"), resets);
    drop(conns);
    drop(router);
}
