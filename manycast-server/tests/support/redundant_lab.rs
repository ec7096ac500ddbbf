//! The redundant-verifier layout (SPEC.md §10.6) for the end-to-end test and the topology
//! bench: two routers, each running the real `manycast-verifier` with `[announce]` and FRR
//! (zebra, bfdd, bgpd, started here), in front of the same two VIP-mode members on one
//! segment; an upstream router (FRR) spreads the clients over both by ECMP on the routes they
//! announce.
//!
//! ```text
//!  cli ── up ──u1── r1 ──┐
//!          ╲──u2── r2 ──┤ seg: r1 .1, r2 .2, up .254, srv1 .11, srv2 .12 (10.0.0.0/24)
//!           ╲───m9──────┘ (members answer clients through up: direct server return)
//! ```

use crate::harness::{verifier_status, wait_for, Lab, GROUP};
use crate::support::frr::{self, Speaker};
use crate::support::vip_member::{curl, start_vip_member, VIP};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

pub const R1_UP: Ipv4Addr = Ipv4Addr::new(10, 2, 1, 2);
pub const R2_UP: Ipv4Addr = Ipv4Addr::new(10, 2, 2, 2);
pub const UP_AS: u32 = 65000;
pub const ROUTERS_AS: u32 = 65001;

pub fn sources() -> Vec<Ipv4Addr> {
    [2u8, 3, 4, 5, 66, 67, 130, 131, 132, 133, 194, 195]
        .iter()
        .map(|&b| Ipv4Addr::new(10, 1, 0, b))
        .collect()
}

pub fn ip(ns: &str, args: &[&str]) {
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

pub fn nft(ns: &str, script: &str) {
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

/// Fails router `r`'s upstream link silently (`on`), or brings it back: everything dropped at
/// ingress and at egress on both ends (the router's `x0`, the upstream router's `u<r+1>`), the
/// link staying up, so only BFD can tell. Egress too: the verifier's pin program runs at tc
/// ingress, before any netdev ingress chain, and redirects a pinned VIP's packets past an
/// ingress drop (with ingress drops alone a "failed" router went on carrying every source while
/// BFD withdrew it).
pub fn freeze(lab: &Redundant, r: usize, on: bool) {
    let ends = [
        (&lab.routers[r], "x0".to_owned()),
        (&lab.up, format!("u{}", r + 1)),
    ];
    for (ns, dev) in ends {
        if on {
            nft(
                ns,
                &format!(
                    "add table netdev freeze; add chain netdev freeze in \
                     {{ type filter hook ingress device {dev} priority -500; policy drop; }}; \
                     add chain netdev freeze out \
                     {{ type filter hook egress device {dev} priority -500; policy drop; }}"
                ),
            );
        } else {
            nft(ns, "delete table netdev freeze");
        }
    }
}

pub struct Redundant {
    pub lab: Lab,
    pub up: String,
    pub client: String,
    pub routers: [String; 2],
    /// The members' namespaces (the benches run their UDP responders there).
    #[allow(dead_code)]
    pub servers: Vec<String>,
    pub sockets: [PathBuf; 2],
    pub frr_up: PathBuf,
}

impl Redundant {
    /// The layout with the test's clients and BFD at 100 ms × 3.
    pub fn new() -> Redundant {
        Redundant::with(&sources(), 100)
    }

    /// The layout with `clients` as the client's source addresses and BFD every `bfd_ms`.
    pub fn with(clients: &[Ipv4Addr], bfd_ms: u32) -> Redundant {
        let mut lab = Lab::new(2);
        let up = lab.netns("up");
        let client = lab.netns("cli");
        let routers = [lab.netns("r1"), lab.netns("r2")];
        let seg = lab.switch("seg");
        let backend = lab.switch("ctl");
        lab.veth(&up, "c0", &client, "cl0");
        lab.addr(&up, "c0", "10.1.0.1/24");
        for &a in clients {
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
                bfd_ms,
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
                    bfd_ms,
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
            servers,
            sockets,
            frr_up,
        };
        r.wait_for_hops(&[R1_UP, R2_UP], "both routers announce the VIP");
        r
    }

    /// Waits until the upstream router's route to the VIP goes through `hops` (in any order).
    pub fn wait_for_hops(&self, hops: &[Ipv4Addr], what: &str) {
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
    pub fn answers(&self) -> BTreeMap<Ipv4Addr, String> {
        sources()
            .into_iter()
            .map(|s| (s, curl(&self.client, s)))
            .collect()
    }

    /// Both verifiers steer the VIP by both members' claims at one epoch.
    pub fn wait_for_two_owners_at_both(&self) {
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

pub fn verifier_config() -> String {
    format!(
        "[[vip]]\naddress = \"{VIP}\"\ngroup = \"{GROUP}\"\npin = true\n\
         [announce]\nenabled = true\n[native]\nadopt_grace_ms = 2000\n"
    )
}
