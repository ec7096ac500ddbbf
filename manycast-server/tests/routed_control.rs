//! The routed control group (issue 14 item 3, SPEC.md §3.9, §10.7), end to end with the real
//! daemons: two members on two subnets behind one verifier router, with no shared back-end
//! segment, coordinate over the control group the verifier carries for them; a host on one
//! subnet that sends to the control group without a verified join is not carried to the other;
//! and once a member has left, datagrams from its address are not carried either.
//!
//! Every "not carried" is a mechanism check, not a wait: the router's own drop counter for the
//! control group shows the datagrams reached it and were refused (the `dup` would have run in
//! the same ingress pass), and only then is the far side's count read.

use crate::harness::{ask, in_netns, verifier_status, wait_for, Lab, CONTROL, GROUP};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;

const M1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const M2: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const INTRUDER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 9);
/// Test datagrams go to this port of the control group, so the far side counts them apart
/// from the members' own control traffic (port 4790).
const MARK_PORT: u16 = 4791;

fn nft(ns: &str, args: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args.split(' '))
        .output()
        .expect("nft");
    assert!(out.status.success(), "nft {args}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The packet count of the first rule in `listing` whose line contains `rule`.
fn counted(listing: &str, rule: &str) -> u64 {
    let line = listing
        .lines()
        .find(|l| l.contains(rule) && l.contains("counter packets"))
        .unwrap_or_else(|| panic!("no counted rule {rule:?} in {listing}"));
    let after = line.split("counter packets ").nth(1).expect("count");
    after
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

/// Datagrams to the control group from `src` in `ns` (out of its link, the default route, with
/// `ttl`).
fn send(ns: &str, src: Ipv4Addr, ttl: u32, n: usize) {
    in_netns(ns, || {
        let s = UdpSocket::bind(SocketAddrV4::new(src, 0)).expect("bind");
        s.set_multicast_ttl_v4(ttl).expect("ttl");
        for i in 0..n {
            s.send_to(
                format!("mark {i}").as_bytes(),
                SocketAddrV4::new(CONTROL, MARK_PORT),
            )
            .expect("send");
        }
    });
}

struct Counts<'a> {
    router: &'a str,
    far: &'a str,
}

impl Counts<'_> {
    /// Datagrams to the control group the router's control table refused.
    fn refused(&self) -> u64 {
        let l = nft(self.router, "list chain netdev manycast_ctl ingress");
        counted(&l, &format!("ip daddr {CONTROL} counter"))
    }

    /// Test datagrams from `src` that reached the far member's link.
    fn far(&self, src: Ipv4Addr) -> u64 {
        counted(
            &nft(self.far, "list chain ip count pre"),
            &format!("saddr {src}"),
        )
    }
}

#[test]
fn members_on_two_subnets_coordinate_through_the_verifier_and_only_they_are_carried() {
    let mut lab = Lab::new(2);
    let mut control_keys = lab.fixture.group_keys();
    control_keys.group = CONTROL;
    lab.extra_key_groups.push(control_keys);

    // Router `rtr`: clients on c0, member 1 and an intruder on one switch behind s1
    // (10.0.1.0/24), member 2 behind s2 (10.0.2.0/24). No back-end segment.
    let router = lab.netns("rtr");
    let client = lab.netns("cli");
    let srv1 = lab.netns("srv1");
    let srv2 = lab.netns("srv2");
    let intruder = lab.netns("x");
    let link1 = lab.switch("l1");
    lab.veth(&router, "c0", &client, "cl0");
    lab.addr(&router, "c0", "10.1.0.1/24");
    let sources: Vec<Ipv4Addr> = (2..14).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
    for a in &sources {
        lab.addr(&client, "cl0", &format!("{a}/24"));
    }
    lab.route_default(&client, "10.1.0.1");
    lab.plug(&link1, "p1", &router, "s1");
    lab.plug(&link1, "p2", &srv1, "m0");
    lab.plug(&link1, "p3", &intruder, "x0");
    lab.veth(&router, "s2", &srv2, "m0");
    lab.addr(&router, "s1", "10.0.1.1/24");
    lab.addr(&router, "s2", "10.0.2.1/24");
    lab.addr(&srv1, "m0", &format!("{M1}/24"));
    lab.addr(&srv2, "m0", &format!("{M2}/24"));
    lab.addr(&intruder, "x0", &format!("{INTRUDER}/24"));
    for (ns, gw) in [
        (&srv1, "10.0.1.1"),
        (&srv2, "10.0.2.1"),
        (&intruder, "10.0.1.1"),
    ] {
        lab.route_default(ns, gw);
    }
    lab.router_forwarding(&router, &["c0", "s1", "s2"]);
    // The far side counts what reaches member 2's link from subnet 1.
    let counter = format!(
        "add table ip count\n\
         add chain ip count pre {{ type filter hook prerouting priority -300; policy accept; }}\n\
         add rule ip count pre ip daddr {CONTROL} ip saddr {INTRUDER} counter\n\
         add rule ip count pre ip daddr {CONTROL} udp dport {MARK_PORT} ip saddr {M1} ip ttl 1 counter\n"
    );
    let file = lab.dir.path().join("count.nft");
    std::fs::write(&file, counter).expect("count.nft");
    nft(&srv2, &format!("-f {}", file.display()));

    let socket = lab.start_verifier(
        &router,
        &["c0", "s1", "s2"],
        &format!("control_groups = [\"{CONTROL}\"]\n"),
        Some("info"),
    );
    for (i, ns) in [(0, &srv1), (1, &srv2)] {
        lab.start_server_with(i, ns, "m0", "m0", "strategy = \"reset\"", "routed = true\n");
    }
    // Coordination across the router: both members agree on one allocation.
    lab.wait_split();
    assert_eq!(
        lab.metric(0, "slice_addresses") + lab.metric(1, "slice_addresses"),
        1 << 32,
        "the two members' slices cover the address space"
    );
    let status = verifier_status(&socket).expect("status");
    let members: BTreeSet<(u32, String)> = status
        .control
        .iter()
        .map(|r| (r.member, r.interface.clone()))
        .collect();
    assert_eq!(
        members,
        BTreeSet::from([(1, "s1".to_owned()), (2, "s2".to_owned())]),
        "{:?}",
        status.control
    );
    // Both serve their slices.
    wait_for("the verifier steers to both members", || {
        verifier_status(&socket).is_some_and(|s| {
            s.ownership
                .iter()
                .filter(|r| r.group == GROUP.to_string())
                .map(|r| r.member)
                .collect::<BTreeSet<_>>()
                .len()
                == 2
        })
    });
    let got = ask(&client, &sources, 1);
    let servers: BTreeSet<Ipv4Addr> = got.values().flatten().map(|(s, _)| *s).collect();
    assert_eq!(servers, BTreeSet::from([M1, M2]), "{got:?}");
    assert_eq!(got.len(), sources.len(), "every source answered: {got:?}");

    let counts = Counts {
        router: &router,
        far: &srv2,
    };
    // A member's datagrams are carried (the check that the far count counts), as they were
    // sent: `dup` copies the frame before routing, so TTL 1 arrives as TTL 1.
    send(&srv1, M1, 1, 20);
    wait_for("member 1's datagrams reach subnet 2", || {
        counts.far(M1) >= 20
    });

    // The intruder, on member 1's link, without a verified join: refused at the router, with
    // TTL 1 and with TTL 64 alike, and none reaches subnet 2.
    let refused = counts.refused();
    send(&intruder, INTRUDER, 1, 20);
    send(&intruder, INTRUDER, 64, 20);
    wait_for("the router refused the intruder's 40 datagrams", || {
        counts.refused() >= refused + 40
    });
    assert_eq!(counts.far(INTRUDER), 0, "an unverified host was carried");

    // Member 1 stops: its signed leave ends its membership, and its address is carried no more.
    assert!(lab.terminate("m1").success(), "{}", lab.logs());
    wait_for(
        "the verifier dropped member 1 from the control group",
        || verifier_status(&socket).is_some_and(|s| s.control.iter().all(|r| r.member != 1)),
    );
    let carried = counts.far(M1);
    let refused = counts.refused();
    send(&srv1, M1, 1, 20);
    wait_for("the router refused the left member's 20 datagrams", || {
        counts.refused() >= refused + 20
    });
    assert_eq!(
        counts.far(M1),
        carried,
        "a member that left was still carried"
    );
}
