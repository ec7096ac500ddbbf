//! Issue 14, item 1, end to end (SPEC.md §10.6), in the layout of
//! [`crate::support::redundant_lab`]: every source reaches the same member through either
//! router (each verifies the same joins on its own; no state is shared), a router that fails
//! silently is withdrawn by BFD, pinned connections it carried go on through the other, and a
//! verifier that stops withdraws its router's route.

use crate::harness::verifier_status;
use crate::support::frr;
use crate::support::redundant_lab::{
    freeze, ip, sources, verifier_config, Redundant, R1_UP, R2_UP,
};
use crate::support::vip_member::{KeepAlive, VIP};
use std::process::Command;

#[test]
fn redundant_verifiers_steer_alike_and_a_failed_or_stopped_router_is_withdrawn() {
    let mut r = Redundant::new();
    r.wait_for_two_owners_at_both();
    for s in &r.sockets {
        let status = verifier_status(s).expect("status");
        assert_eq!(
            status.announced,
            [VIP],
            "each verifier holds the VIP's route"
        );
    }

    // Every source through r1 alone, then through r2 alone: the same member answers.
    ip(&r.up, &["link", "set", "u2", "down"]);
    r.wait_for_hops(&[R1_UP], "only r1 carries the VIP");
    let via_r1 = r.answers();
    let members: std::collections::BTreeSet<&String> = via_r1.values().collect();
    assert_eq!(members.len(), 2, "both members serve: {via_r1:?}");
    // Pinned keep-alive connections, all carried by r1.
    let mut conns: Vec<(KeepAlive, String)> = sources()
        .into_iter()
        .map(|s| {
            let mut c = KeepAlive::open(&r.client, s);
            let who = c.ask().expect("first request");
            assert_eq!(who, via_r1[&s]);
            (c, who)
        })
        .collect();
    ip(&r.up, &["link", "set", "u2", "up"]);
    r.wait_for_hops(&[R1_UP, R2_UP], "r2 announces again");

    // r1 fails silently: its link stays up and nothing gets through it either way. BFD
    // withdraws it (BGP's hold time alone would take 9 s).
    freeze(&r, 0, true);
    r.wait_for_hops(&[R2_UP], "BFD withdraws the silent r1");
    let bfd = frr::vtysh(&r.up, &r.frr_up, &format!("show bfd peer {R1_UP}"));
    assert!(bfd.contains("Status: down"), "BFD found r1 down: {bfd}");
    assert_eq!(
        r.answers(),
        via_r1,
        "through r2, every source reaches the same member"
    );
    for (c, who) in &mut conns {
        let again = c
            .ask()
            .unwrap_or_else(|e| panic!("a pinned connection r1 carried broke: {e}"));
        assert_eq!(&again, who, "pinned connection moved to another member");
    }
    freeze(&r, 0, false);
    r.wait_for_hops(&[R1_UP, R2_UP], "r1 comes back");

    // r1's verifier is killed: it cannot withdraw, but its route went through a device only
    // the process held, so the kernel removed both and BGP withdraws r1.
    r.lab.kill("verifier-r1");
    r.wait_for_hops(&[R2_UP], "the killed verifier's router is withdrawn");
    assert!(
        announced(&r.routers[0]).is_empty(),
        "r1 still holds a route"
    );
    assert_eq!(r.answers(), via_r1);
    // A new verifier on r1 announces once members have answered it (the adopt grace).
    let again = r.lab.spawn_named_verifier(
        "verifier-r1-again",
        &r.routers[0],
        &["x0", "s0"],
        &verifier_config(),
        Some("debug"),
    );
    r.wait_for_hops(&[R1_UP, R2_UP], "the restarted verifier announces r1 again");
    assert!(verifier_status(&again).is_some_and(|s| s.announced == [VIP]));

    // r2's verifier stops: it withdraws its route, though its steering could stay.
    r.lab.send_term("verifier-r2");
    r.lab
        .wait_exit("verifier-r2", std::time::Duration::from_secs(10));
    r.wait_for_hops(&[R1_UP], "the stopped verifier's router is withdrawn");
    assert!(
        announced(&r.routers[1]).is_empty(),
        "r2 still holds a route"
    );
    assert_eq!(r.answers(), via_r1);
    let bgp = frr::vtysh(&r.up, &r.frr_up, "show ip bgp");
    assert!(bgp.contains(&VIP.to_string()), "{bgp}");
}

/// The routes `ns` holds with the announce protocol (77).
fn announced(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "route", "show", "proto", "77"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
