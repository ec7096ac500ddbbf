//! Issue 14, item 1, end to end: two routers, each running the real `manycast-verifier` with
//! `[announce]` and FRR (zebra, bfdd, bgpd, started by the test), in front of the same two
//! VIP-mode members on one segment; an upstream router (FRR) spreads the clients over both by
//! ECMP on the routes they announce. Every source reaches the same member through either
//! router (each verifies the same joins on its own; no state is shared), a router that fails
//! silently is withdrawn by BFD, pinned connections it carried go on through the other, and a
//! verifier that stops withdraws its router's route (SPEC.md §10.6).
//!
//! ```text
//!  cli ── up ──u1── r1 ──┐
//!          ╲──u2── r2 ──┤ seg: r1 .1, r2 .2, up .254, srv1 .11, srv2 .12 (10.0.0.0/24)
//!           ╲───m9──────┘ (members answer clients through up: direct server return)
//! ```

use crate::harness::{verifier_status, wait_for, Lab, GROUP};
use crate::support::frr::{self, Speaker};
use crate::vip::{curl, start_vip_member, KeepAlive, VIP};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

const R1_UP: Ipv4Addr = Ipv4Addr::new(10, 2, 1, 2);
const R2_UP: Ipv4Addr = Ipv4Addr::new(10, 2, 2, 2);
const UP_AS: u32 = 65000;
const ROUTERS_AS: u32 = 65001;

fn sources() -> Vec<Ipv4Addr> {
    [2u8, 3, 4, 5, 66, 67, 130, 131, 132, 133, 194, 195]
        .iter()
        .map(|&b| Ipv4Addr::new(10, 1, 0, b))
        .collect()
}

fn ip(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nft(ns: &str, script: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", script])
        .output()
        .expect("nft");
    assert!(
        out.status.success(),
        "nft {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Redundant {
    lab: Lab,
    up: String,
    client: String,
    routers: [String; 2],
    sockets: [PathBuf; 2],
    frr_up: PathBuf,
}

impl Redundant {
    fn new() -> Redundant {
        let mut lab = Lab::new(2);
        let up = lab.netns("up");
        let client = lab.netns("cli");
        let routers = [lab.netns("r1"), lab.netns("r2")];
        let seg = lab.switch("seg");
        let backend = lab.switch("ctl");
        lab.veth(&up, "c0", &client, "cl0");
        lab.addr(&up, "c0", "10.1.0.1/24");
        for a in sources() {
            lab.addr(&client, "cl0", &format!("{a}/24"));
        }
        lab.route_default(&client, "10.1.0.1");
        lab.plug(&seg, "pu", &up, "m9");
        lab.addr(&up, "m9", "10.0.0.254/24");
        for (i, r) in routers.iter().enumerate() {
            let n = i + 1;
            lab.veth(&up, &format!("u{n}"), r, "x0");
            lab.addr(&up, &format!("u{n}"), &format!("10.2.{n}.1/30"));
            lab.addr(r, "x0", &format!("10.2.{n}.2/30"));
            lab.plug(&seg, &format!("pr{n}"), r, "s0");
            lab.addr(r, "s0", &format!("10.0.0.{n}/24"));
            lab.router_forwarding(r, &["x0", "s0"]);
        }
        lab.router_forwarding(&up, &["c0", "m9", "u1", "u2"]);
        let mut servers = Vec::new();
        for i in 1..=2usize {
            let ns = lab.netns(&format!("srv{i}"));
            lab.plug(&seg, &format!("p{i}"), &ns, "m0");
            lab.addr(&ns, "m0", &format!("10.0.0.{}/24", 10 + i));
            lab.plug(&backend, &format!("c{i}"), &ns, "ctl0");
            lab.addr(&ns, "ctl0", &format!("10.77.0.{i}/24"));
            lab.route_default(&ns, "10.0.0.254");
            servers.push(ns);
        }
        let frr_up = frr::start(
            &mut lab,
            &up,
            "up",
            &Speaker {
                asn: UP_AS,
                router_id: Ipv4Addr::new(10, 2, 0, 1),
                neighbours: vec![(R1_UP, ROUTERS_AS), (R2_UP, ROUTERS_AS)],
                export: Vec::new(),
            },
        );
        for (i, r) in routers.iter().enumerate() {
            let n = i as u8 + 1;
            frr::start(
                &mut lab,
                r,
                &format!("r{n}"),
                &Speaker {
                    asn: ROUTERS_AS,
                    router_id: Ipv4Addr::new(10, 2, n, 2),
                    neighbours: vec![(Ipv4Addr::new(10, 2, n, 1), UP_AS)],
                    export: vec![VIP],
                },
            );
        }
        let sockets = [0, 1].map(|i| {
            let name = format!("verifier-r{}", i + 1);
            lab.spawn_named_verifier(
                &name,
                &routers[i],
                &["x0", "s0"],
                &verifier_config(),
                Some("debug"),
            )
        });
        for s in &sockets {
            wait_for("the verifier's status socket", || {
                verifier_status(s).is_some()
            });
        }
        for (i, ns) in servers.iter().enumerate() {
            start_vip_member(&mut lab, i, ns, "m0", "reset");
        }
        let r = Redundant {
            lab,
            up,
            client,
            routers,
            sockets,
            frr_up,
        };
        r.wait_for_hops(&[R1_UP, R2_UP], "both routers announce the VIP");
        r
    }

    /// Waits until the upstream router's route to the VIP goes through `hops` (in any order).
    fn wait_for_hops(&self, hops: &[Ipv4Addr], what: &str) {
        let mut want = hops.to_vec();
        want.sort();
        let mut seen = Vec::new();
        wait_for(what, || {
            seen = frr::next_hops(&self.up, VIP);
            seen.sort();
            seen == want
        });
    }

    /// The member that answers each source on a new connection.
    fn answers(&self) -> BTreeMap<Ipv4Addr, String> {
        sources()
            .into_iter()
            .map(|s| (s, curl(&self.client, s)))
            .collect()
    }

    /// Both verifiers steer the VIP by both members' claims at one epoch.
    fn wait_for_two_owners_at_both(&self) {
        wait_for("both verifiers steer the VIP to both members", || {
            let tables: Vec<_> = self
                .sockets
                .iter()
                .filter_map(|s| verifier_status(s))
                .map(|s| {
                    let mut owners: Vec<(u32, u64)> =
                        s.ownership.iter().map(|r| (r.member, r.epoch)).collect();
                    owners.sort();
                    (owners, s.vips.first().map(|v| v.members.len()))
                })
                .collect();
            tables.len() == 2
                && tables[0] == tables[1]
                && tables[0].0.len() == 2
                && tables[0].1 == Some(2)
        });
    }
}

fn verifier_config() -> String {
    format!(
        "[[vip]]\naddress = \"{VIP}\"\ngroup = \"{GROUP}\"\npin = true\n\
         [announce]\nenabled = true\n[native]\nadopt_grace_ms = 2000\n"
    )
}

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
    for (ns, dev) in [(&r.routers[0], "x0"), (&r.up, "u1")] {
        nft(
            ns,
            &format!(
                "add table netdev freeze; add chain netdev freeze in \
                 {{ type filter hook ingress device {dev} priority -500; policy drop; }}"
            ),
        );
    }
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
    for ns in [&r.routers[0], &r.up] {
        nft(ns, "delete table netdev freeze");
    }
    r.wait_for_hops(&[R1_UP, R2_UP], "r1 comes back");

    // r1's verifier stops: it withdraws its route, though its steering could stay.
    r.lab.send_term("verifier-r1");
    r.lab
        .wait_exit("verifier-r1", std::time::Duration::from_secs(10));
    r.wait_for_hops(&[R2_UP], "the stopped verifier's router is withdrawn");
    let held = Command::new("ip")
        .args(["-n", &r.routers[0], "route", "show", "proto", "77"])
        .output()
        .expect("ip route");
    assert!(held.stdout.is_empty(), "r1 still holds an announced route");
    assert_eq!(r.answers(), via_r1);
    let bgp = frr::vtysh(&r.up, &r.frr_up, "show ip bgp");
    assert!(bgp.contains(&VIP.to_string()), "{bgp}");
}
