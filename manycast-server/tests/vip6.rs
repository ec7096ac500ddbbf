//! VIP mode over IPv6 in the server (issue 15, item 5; SPEC.md §11.7.2), end to end with two
//! real `manycast-server`s holding the IPv6 VIP (`vip.address6`) on loopback beside the IPv4
//! one, a real HTTP server (Python's `http.server`) bound to the IPv6 VIP on each, and curl and
//! keep-alive connections from IPv6 client sources in many /56s.
//!
//! The router is a plain IPv6 router standing in for the verifier, with what its `[[vip]]` for
//! an IPv6 address does per /56 unit (the packet to the VIP sent to the owning member's
//! link-local address, destination kept): a route for the VIP to member 1's link-local
//! address, and, once units moved, a source rule per moved client to member 2's. Behind the
//! real verifier: `vip6_verified.rs`.

use crate::harness::{wait_for, Lab};
use crate::native6::{certify_dual_stack, ip_in, server6, sources6, unit_of};
use crate::support::vip_member::{lo_has_vip, whoami_server, KeepAlive, HTTP_PORT, OVERLAY, VIP};
use igmp_ext::fixtures::GROUP6;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

pub(crate) const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 1);
/// The policy-routing table that sends the moved clients' packets to member 2.
const MOVED_TABLE: &str = "200";

fn use_oif_addrs_only(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-n"])
        .arg("net.ipv6.conf.m0.use_oif_addrs_only")
        .output()
        .expect("sysctl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `ip -6 -o addr show dev <dev>` in `ns`.
fn addrs6(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-6", "-o", "addr", "show", "dev", dev])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lo_has_vip6(ns: &str) -> bool {
    addrs6(ns, "lo").contains(&format!("inet6 {VIP6}/128"))
}

/// The member's link-local address on `m0`, once its duplicate address detection is done.
fn link_local(ns: &str) -> Ipv6Addr {
    let mut found = None;
    wait_for("the member's link-local address", || {
        found = addrs6(ns, "m0")
            .lines()
            .find(|l| l.contains("scope link") && !l.contains("tentative"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok());
        found.is_some()
    });
    found.expect("link-local")
}

/// Starts member `i` (0-based) in VIP mode with both VIPs and `group6`, then, once it holds
/// the IPv6 VIP, the HTTP server bound to it whose `/whoami` answers `m<i+1>`.
pub(crate) fn start_member6(lab: &mut Lab, i: usize, ns: &str, strategy: &str) {
    lab.start_server_with(
        i,
        ns,
        "m0",
        "ctl0",
        &format!(
            "group6 = \"{GROUP6}\"\nmode = \"vip\"\nstrategy = \"{strategy}\"\n\
             [vip]\naddress = \"{VIP}\"\naddress6 = \"{VIP6}\"\n{}",
            if strategy == "forward" {
                format!("forward_overlay = \"{OVERLAY}\"\n")
            } else {
                String::new()
            }
        ),
        "",
    );
    wait_for("the member holds both VIPs on lo", || {
        lo_has_vip(ns) && lo_has_vip6(ns)
    });
    whoami_server(lab, i, ns, IpAddr::V6(VIP6), "6-");
}

/// `curl -6` from `src` in `ns`: the body of `/whoami` at the IPv6 VIP on a new connection.
pub(crate) fn curl6(ns: &str, src: Ipv6Addr) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-6",
            "-g",
            "-sS",
            "--max-time",
            "5",
        ])
        .args(["--interface", &src.to_string()])
        .arg(format!("http://[{VIP6}]:{HTTP_PORT}/whoami"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl -6 from {src}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn ipv6_vip_under_reset_moved_connections_are_reset_and_sigterm_restores_the_host() {
    ipv6_vip("reset");
}

/// The new owner passes the moved IPv6 connections' segments to the old owner over the
/// overlay (SPEC.md §11.7.2); new connections are its own.
#[test]
fn ipv6_vip_under_forward_moved_connections_go_on_at_the_old_owner() {
    ipv6_vip("forward");
}

/// The member keeps every connection (the verifier's pin keeps established ones where they are).
#[test]
fn ipv6_vip_under_pin_keeps_connections_and_sigterm_restores_the_host() {
    ipv6_vip("pin");
}

/// The routed layout of two members with IPv6 as in native6.rs: the client's sources in
/// 2001:db8:1::/48 (a default route via the router), member i on 2001:db8:0:i::/64 behind the
/// router's s{i}, IPv6 forwarding on. Returns (router, client, servers, sources, interfaces).
pub(crate) fn layout6(lab: &mut Lab) -> (String, String, Vec<String>, Vec<Ipv6Addr>, Vec<String>) {
    certify_dual_stack(lab);
    let routed = lab.routed(2, &[std::net::Ipv4Addr::new(10, 1, 0, 2)]);
    let (router, client, servers) = (
        routed.router.clone(),
        routed.client.clone(),
        routed.servers.clone(),
    );
    let interfaces = routed.interfaces().iter().map(|i| i.to_string()).collect();
    lab.sysctl(&router, "net.ipv6.conf.all.forwarding=1");
    ip_in(
        &router,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/48",
            "dev",
            "c0",
            "nodad",
        ],
    );
    let srcs = sources6();
    for a in &srcs {
        let cidr = format!("{a}/48");
        ip_in(
            &client,
            &["-6", "addr", "add", &cidr, "dev", "cl0", "nodad"],
        );
    }
    ip_in(
        &client,
        &["-6", "route", "add", "default", "via", "2001:db8:1::1"],
    );
    for (i, ns) in servers.iter().enumerate() {
        let i = i + 1;
        let ours = format!("2001:db8:0:{i}::1/64");
        ip_in(
            &router,
            &["-6", "addr", "add", &ours, "dev", &format!("s{i}"), "nodad"],
        );
        let theirs = format!("{}/64", server6(i));
        ip_in(ns, &["-6", "addr", "add", &theirs, "dev", "m0", "nodad"]);
        let via = format!("2001:db8:0:{i}::1");
        ip_in(ns, &["-6", "route", "add", "default", "via", &via]);
    }
    (router, client, servers, srcs, interfaces)
}

/// Member 1 alone, then member 2 arrives and half the units move; then SIGTERM to both. No
/// verifier: the router only routes (see the module's documentation).
fn ipv6_vip(strategy: &str) {
    let mut lab = Lab::new(2);
    let (router, client, servers, srcs, _) = layout6(&mut lab);
    let before: Vec<String> = servers.iter().map(|ns| use_oif_addrs_only(ns)).collect();
    assert_eq!(before, ["0", "0"], "the kernel's default");
    // What forward changes too: IPv6 forwarding, router advertisements on the link, the rules.
    let host6 = |ns: &str| {
        let sysctl = |k: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-n", k])
                .output()
                .expect("sysctl");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let rules = Command::new("ip")
            .args(["-n", ns, "-6", "rule", "show"])
            .output()
            .expect("ip rule");
        (
            sysctl("net.ipv6.conf.all.forwarding"),
            sysctl("net.ipv6.conf.m0.accept_ra"),
            String::from_utf8_lossy(&rules.stdout).into_owned(),
        )
    };
    let before6: Vec<_> = servers.iter().map(|ns| host6(ns)).collect();

    // Member 1 alone: it holds the IPv6 VIP (no DAD: not tentative), keeps it out of source
    // selection on its link, and claims group6 in a signed MLDv2 join as in native mode.
    start_member6(&mut lab, 0, &servers[0], strategy);
    let lo = addrs6(&servers[0], "lo");
    assert!(!lo.contains("tentative"), "{lo}");
    assert_eq!(use_oif_addrs_only(&servers[0]), "1");
    if strategy == "forward" {
        let (forwarding, accept_ra, rules) = host6(&servers[0]);
        assert_eq!((forwarding.as_str(), accept_ra.as_str()), ("1", "2"));
        assert!(rules.starts_with("100:\tfrom all lookup local"), "{rules}");
    }
    let ll1 = link_local(&servers[0]).to_string();
    let vip6 = format!("{VIP6}/128");
    ip_in(
        &router,
        &["-6", "route", "add", &vip6, "via", &ll1, "dev", "s1"],
    );
    wait_for("member 1 owns everything", || {
        lab.metric(0, "slice_addresses") == 1 << 32
    });
    wait_for("member 1 sends its signed MLDv2 join in VIP mode", || {
        lab.metric(0, "mld_joins_sent_total") > 0
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

    // Member 2 arrives: half the units move to it. Member 1 destroys the IPv6 connections of
    // the clients whose /56 unit moved (they see a RST without sending anything); the others
    // carry on. The router, standing in for the verifier, then sends the moved ones to member 2.
    start_member6(&mut lab, 1, &servers[1], strategy);
    lab.wait_split();
    let status = lab.admin_status(0).expect("member 1's status");
    let m2 = lab.fixture.members[1].id.0;
    let moved: BTreeSet<Ipv6Addr> = srcs
        .iter()
        .copied()
        .filter(|&s| status.unit_owner[usize::from(unit_of(s))] == Some(m2))
        .collect();
    assert!(
        !moved.is_empty() && moved.len() < srcs.len(),
        "both members own some sources' units: {:?}",
        status.unit_owner
    );
    let resets = strategy == "reset";
    if resets {
        wait_for("member 1 destroyed the moved IPv6 connections", || {
            lab.metric(0, "vip_resets_total") >= moved.len() as u64
        });
    }
    assert_eq!(
        lab.admin_status(0).map(|s| s.epoch_number()),
        Some(status.epoch_number()),
        "the allocation moved again meanwhile (a false down?): {}",
        lab.logs()
    );
    if strategy == "forward" {
        let gained = status.unit_owner.iter().filter(|o| **o == Some(m2)).count();
        wait_for(
            "member 2 forwards the units it gained from member 1",
            || lab.metric(1, "vip_forward_units") == gained as u64,
        );
    }
    if strategy == "pin" {
        // Pin: every connection stays on member 1, moved or not.
        for c in &mut conns {
            assert_eq!(c.was_closed(), None, "{}: closed under pin", c.src);
            assert_eq!(c.ask().expect("pinned"), "m1", "{}", c.src);
        }
        // New connections follow the allocation (below): the router's source rules would
        // send these to member 2 too, which the verifier's pin would not.
        conns.clear();
    }
    let ll2 = link_local(&servers[1]).to_string();
    ip_in(
        &router,
        &[
            "-6",
            "route",
            "add",
            &vip6,
            "via",
            &ll2,
            "dev",
            "s2",
            "table",
            MOVED_TABLE,
        ],
    );
    for src in &moved {
        let from = format!("{src}/128");
        ip_in(
            &router,
            &[
                "-6",
                "rule",
                "add",
                "from",
                &from,
                "to",
                &vip6,
                "lookup",
                MOVED_TABLE,
            ],
        );
    }
    // Reset: the moved ones were ended by a RST. Forward: they reach member 2 now, which
    // passes their segments to member 1 over the overlay; member 1 answers them.
    for c in &mut conns {
        let closed = c.was_closed();
        if strategy == "forward" {
            assert_eq!(closed, None, "{}: closed under forward", c.src);
            assert_eq!(c.ask().expect("forwarded"), "m1", "{}", c.src);
        } else if moved.contains(&c.src) {
            let why = closed.unwrap_or_else(|| panic!("{}: moved but not closed", c.src));
            assert!(why.contains("reset"), "{}: ended by {why}", c.src);
            *c = KeepAlive::open6(&client, c.src, VIP6);
            assert_eq!(c.ask().expect("after reconnect"), "m2", "{}", c.src);
        } else {
            assert_eq!(closed, None, "{}: not moved but closed", c.src);
            assert_eq!(c.ask().expect("unmoved"), "m1", "{}", c.src);
        }
    }
    for &src in &srcs {
        let want = if moved.contains(&src) { "m2" } else { "m1" };
        assert_eq!(curl6(&client, src), want, "{src}");
    }
    let destroyed = if resets { moved.len() as u64 } else { 0 };
    assert_eq!(lab.metric(0, "vip_resets_total"), destroyed);
    assert_eq!(lab.metric(0, "vip_reset_failures_total"), 0);
    assert_eq!(lab.metric(1, "vip_resets_total"), 0);
    drop(conns);

    // SIGTERM: each member removes both VIPs and puts the sysctl back. Under forward and pin it
    // drains first (SPEC.md §11.6, not this test's business): a second SIGTERM leaves at once.
    for (i, ns) in servers.iter().enumerate() {
        let name = lab.fixture.members[i].id.to_string();
        lab.send_term(&name);
        if strategy != "reset" {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while lab.exited(&name).is_none() && lab.metric(i, "draining") == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} does not drain"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            if lab.exited(&name).is_none() {
                lab.send_term(&name);
            }
        }
        let st = lab.wait_exit(&name, Duration::from_secs(20));
        assert!(st.success(), "{name}: {st}\n{}", lab.logs());
        assert!(!lo_has_vip6(ns), "{ns}: IPv6 VIP left on lo");
        assert!(!lo_has_vip(ns), "{ns}: VIP left on lo");
        assert_eq!(
            use_oif_addrs_only(ns),
            before[i],
            "{ns}: sysctl not restored"
        );
        assert_eq!(
            host6(ns),
            before6[i],
            "{ns}: IPv6 forwarding, accept_ra or rules"
        );
    }
}
