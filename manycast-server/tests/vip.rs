//! End to end in VIP mode with the real binaries: the real `manycast-verifier` steers TCP to a
//! VIP by slice (SPEC.md §10.3), two real `manycast-server`s in VIP mode on different subnets
//! hold the VIP on loopback (SPEC.md §11.7), and a real HTTP server (Python's `http.server`,
//! HTTP/1.1 keep-alive) bound to the VIP in each server namespace is the application. Clients:
//! curl, wrk, and keep-alive HTTP/1.1 connections held by the test.

use crate::harness::{verifier_status, wait_for, Lab, GROUP};
pub(crate) use crate::support::vip_member::{
    curl, lo_has_vip, start_vip_member, KeepAlive, HTTP_PORT, VIP,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ARP_IGNORE: &str = "net.ipv4.conf.all.arp_ignore";
const ARP_ANNOUNCE: &str = "net.ipv4.conf.all.arp_announce";
const IP_FORWARD: &str = "net.ipv4.ip_forward";
const TCP_LOOSE: &str = "net.netfilter.nf_conntrack_tcp_loose";

/// Client sources: the low byte decides the slice (low-order slicing, SPEC.md §6), so they
/// spread over both halves of it.
fn sources() -> Vec<Ipv4Addr> {
    [2u8, 3, 4, 5, 66, 67, 130, 131, 132, 133, 194, 195]
        .iter()
        .map(|&b| Ipv4Addr::new(10, 1, 0, b))
        .collect()
}

/// The namespaces: router, a client segment (a bridge) with the test's client namespace and
/// `wrk_clients` more namespaces of one address each (wrk cannot pick its source address), two
/// servers on their own subnets with the control group on a back-end segment.
pub(crate) struct VipLab {
    pub(crate) lab: Lab,
    pub(crate) client: String,
    wrk: Vec<(String, Ipv4Addr)>,
    pub(crate) servers: Vec<String>,
    socket: PathBuf,
}

fn sysctl_get(ns: &str, key: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-n", key])
        .output()
        .expect("sysctl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `ip <args>` in `ns`: its standard output (empty when it failed).
pub(crate) fn ip_out(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft <args>` in `ns`: success and standard output.
pub(crate) fn nft_in(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .output()
        .expect("nft");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

impl VipLab {
    pub(crate) fn new(pin: bool, wrk_clients: &[u8]) -> VipLab {
        let mut lab = Lab::new(2);
        let router = lab.netns("rtr");
        let seg = lab.switch("seg");
        let client = lab.netns("cli");
        let backend = lab.switch("ctl");
        lab.plug(&seg, "pr", &router, "c0");
        lab.addr(&router, "c0", "10.1.0.1/24");
        lab.plug(&seg, "pc", &client, "cl0");
        for a in sources() {
            lab.addr(&client, "cl0", &format!("{a}/24"));
        }
        lab.route_default(&client, "10.1.0.1");
        let mut wrk = Vec::new();
        for (j, b) in wrk_clients.iter().enumerate() {
            let ns = lab.netns(&format!("w{j}"));
            lab.plug(&seg, &format!("pw{j}"), &ns, "cl0");
            let a = Ipv4Addr::new(10, 1, 0, *b);
            lab.addr(&ns, "cl0", &format!("{a}/24"));
            lab.route_default(&ns, "10.1.0.1");
            wrk.push((ns, a));
        }
        let mut servers = Vec::new();
        for i in 1..=2u8 {
            let ns = lab.routed_member(&router, &backend, usize::from(i), None);
            // Strict reverse-path filtering on the members: VIP mode does not need it off.
            for k in ["all", "default", "m0", "ctl0"] {
                lab.sysctl(&ns, &format!("net.ipv4.conf.{k}.rp_filter=1"));
            }
            servers.push(ns);
        }
        lab.router_forwarding(&router, &["c0", "s1", "s2"]);
        let socket = lab.start_verifier(
            &router,
            &["c0", "s1", "s2"],
            &format!("[[vip]]\naddress = \"{VIP}\"\ngroup = \"{GROUP}\"\npin = {pin}\n"),
            Some("debug"),
        );
        VipLab {
            lab,
            client,
            wrk,
            servers,
            socket,
        }
    }

    /// Starts member `i` (0-based) in VIP mode with `strategy`, then, once it holds the VIP,
    /// the HTTP server bound to the VIP whose `/whoami` answers `m<i+1>`.
    pub(crate) fn start_member(&mut self, i: usize, strategy: &str) {
        let ns = self.servers[i].clone();
        start_vip_member(&mut self.lab, i, &ns, "m0", strategy);
    }

    /// Both members own slices at one epoch and the verifier routes the VIP by both claims at
    /// that epoch. Read together on each poll: on a loaded machine a false failure suspicion can
    /// move the members to a later epoch between two separate waits.
    pub(crate) fn wait_for_two_owners(&self) -> u64 {
        let mut agreed = 0;
        wait_for(
            "both members own slices at one epoch and the verifier steers the VIP by both claims",
            || {
                let epoch = self.lab.metric(0, "epoch");
                if self.lab.metric(0, "slices") == 0
                    || self.lab.metric(1, "slices") == 0
                    || self.lab.metric(1, "epoch") != epoch
                {
                    return false;
                }
                agreed = epoch;
                verifier_status(&self.socket).is_some_and(|s| {
                    let owners: BTreeSet<_> = s
                        .ownership
                        .iter()
                        .filter(|r| r.epoch == epoch)
                        .map(|r| r.member)
                        .collect();
                    owners.len() == 2 && s.vips.first().is_some_and(|v| v.members.len() == 2)
                })
            },
        );
        agreed
    }

    fn wait_for_one_owner(&self) {
        wait_for("member 1 owns everything", || {
            self.lab.metric(0, "slice_addresses") == 1 << 32
        });
        wait_for("the verifier steers the VIP to member 1", || {
            verifier_status(&self.socket)
                .is_some_and(|s| s.ownership.len() == 1 && s.ownership[0].member == 1)
        });
    }
}

#[test]
fn vip_reset_closes_moved_connections_and_restores_the_host_on_sigterm() {
    let mut v = VipLab::new(false, &[]);
    // A non-default value on member 1 shows that the previous value comes back, not a default.
    v.lab.sysctl(&v.servers[0], &format!("{ARP_ANNOUNCE}=1"));
    let before: Vec<(String, String)> = v
        .servers
        .iter()
        .map(|ns| (sysctl_get(ns, ARP_IGNORE), sysctl_get(ns, ARP_ANNOUNCE)))
        .collect();
    assert_eq!(before[0].1, "1");

    v.start_member(0, "reset");
    v.wait_for_one_owner();
    for ns in &v.servers[..1] {
        assert_eq!(sysctl_get(ns, ARP_IGNORE), "1");
        assert_eq!(sysctl_get(ns, ARP_ANNOUNCE), "2");
    }
    let client = v.client.clone();
    for src in sources() {
        assert_eq!(curl(&client, src), "m1", "{src}");
    }
    let mut conns: Vec<KeepAlive> = sources()
        .into_iter()
        .map(|s| KeepAlive::open(&client, s))
        .collect();
    for c in &mut conns {
        assert_eq!(c.ask().expect("first request"), "m1", "{}", c.src);
    }

    // Member 2 arrives: half the slices move to it. Member 1 destroys the connections of the
    // moved clients (the client sees a RST without sending anything); the others carry on.
    v.start_member(1, "reset");
    v.wait_for_two_owners();
    // Each source reaches exactly one server, the same one on every new connection.
    let mut owner: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for src in sources() {
        let first = curl(&client, src);
        assert_eq!(curl(&client, src), first, "{src} changed server");
        owner.insert(src, first);
    }
    let moved: BTreeSet<Ipv4Addr> = owner
        .iter()
        .filter(|(_, o)| *o == "m2")
        .map(|(s, _)| *s)
        .collect();
    assert!(owner.values().all(|o| o == "m1" || o == "m2"), "{owner:?}");
    assert!(
        !moved.is_empty() && moved.len() < owner.len(),
        "both servers serve some sources: {owner:?}"
    );
    wait_for("member 1 destroyed the moved connections", || {
        v.lab.metric(0, "vip_resets_total") >= moved.len() as u64
    });
    for c in &mut conns {
        let closed = c.was_closed();
        if moved.contains(&c.src) {
            let why = closed.unwrap_or_else(|| panic!("{}: moved but not closed", c.src));
            assert!(
                why.contains("reset") || why == "EOF",
                "{}: ended by {why}",
                c.src
            );
            // The client reconnects and lands on the new owner.
            *c = KeepAlive::open(&client, c.src);
            assert_eq!(c.ask().expect("after reconnect"), "m2", "{}", c.src);
        } else {
            assert_eq!(closed, None, "{}: not moved but closed", c.src);
            assert_eq!(c.ask().expect("unmoved"), "m1", "{}", c.src);
        }
    }
    assert_eq!(v.lab.metric(0, "vip_resets_total"), moved.len() as u64);
    assert_eq!(v.lab.metric(0, "vip_reset_failures_total"), 0);
    assert_eq!(v.lab.metric(1, "vip_resets_total"), 0);

    // SIGTERM: each member removes the VIP and puts the sysctls back as they were.
    for (i, name) in ["m1", "m2"].iter().enumerate() {
        assert!(v.lab.terminate(name).success(), "{}", v.lab.logs());
        let ns = &v.servers[i];
        assert!(!lo_has_vip(ns), "{ns}: VIP left on lo");
        assert_eq!(
            (sysctl_get(ns, ARP_IGNORE), sysctl_get(ns, ARP_ANNOUNCE)),
            before[i],
            "{ns}: sysctls not restored"
        );
    }
}

/// `wrk` from `ns` for `secs` seconds on keep-alive connections.
fn start_wrk(ns: &str, secs: u32) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "wrk", "-t1", "-c2", "--timeout", "3s"])
        .arg(format!("-d{secs}s"))
        .arg(format!("http://{VIP}:{HTTP_PORT}/whoami"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk (is wrk installed? scripts/setup.sh)")
}

/// wrk's summary: (requests, socket errors of every kind, non-2xx/3xx responses).
fn wrk_figures(out: &str) -> (u64, u64, u64) {
    let requests = out
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{out}"));
    // "Socket errors: connect 0, read 1, write 0, timeout 0": absent when all are zero.
    let errors = out
        .lines()
        .find(|l| l.contains("Socket errors:"))
        .map_or(0, |l| {
            l.split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        });
    let non2xx = out
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses:"))
        .and_then(|l| l.split(':').nth(1)?.trim().parse().ok())
        .unwrap_or(0);
    (requests, errors, non2xx)
}

/// The sources whose new connections now reach member 2: some, not all (the allocation moved
/// part of the space).
fn sources_now_at_member_2(client: &str) -> BTreeSet<Ipv4Addr> {
    let moved: BTreeSet<Ipv4Addr> = sources()
        .into_iter()
        .filter(|&src| curl(client, src) == "m2")
        .collect();
    assert!(
        !moved.is_empty() && moved.len() < sources().len(),
        "new connections follow the new allocation: {moved:?}"
    );
    moved
}

/// Every held connection, moved slice or not, still answers from member 1, where it started
/// (`what` heads the panic when one does not).
fn assert_held_on_member_1(conns: &mut [KeepAlive], what: &str) {
    for c in conns {
        assert_eq!(
            c.ask().unwrap_or_else(|e| panic!("{}: {what}: {e}", c.src)),
            "m1",
            "{}",
            c.src
        );
    }
}

/// Waits for every wrk run: requests made, no socket error, no failed request. After it a new
/// connection from each wrk source goes to its current owner; at least one must be member 2,
/// or the strategy was not exercised (`what` names it).
fn assert_wrks_clean(v: &VipLab, wrks: Vec<(Ipv4Addr, Child)>, what: &str) {
    let mut wrk_moved = 0;
    for ((ns, a), (_, w)) in v.wrk.iter().zip(wrks) {
        let out = w.wait_with_output().expect("wrk");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "wrk from {a}: {text}");
        let (requests, errors, non2xx) = wrk_figures(&text);
        eprintln!("wrk from {a}: {requests} requests, {errors} socket errors, {non2xx} non-2xx");
        assert!(requests > 0, "{text}");
        assert_eq!(errors, 0, "broken connections from {a}:\n{text}");
        assert_eq!(non2xx, 0, "failed requests from {a}:\n{text}");
        if curl(ns, *a) == "m2" {
            wrk_moved += 1;
        }
    }
    assert!(
        wrk_moved > 0,
        "no wrk source changed owner: the {what} would be untested"
    );
}

#[test]
fn vip_pin_keeps_every_connection_across_a_reallocation() {
    let wrk_sources = [40u8, 41, 168, 169];
    let mut v = VipLab::new(true, &wrk_sources);
    v.start_member(0, "pin");
    v.wait_for_one_owner();
    let client = v.client.clone();
    let mut conns: Vec<KeepAlive> = sources()
        .into_iter()
        .map(|s| KeepAlive::open(&client, s))
        .collect();
    for c in &mut conns {
        assert_eq!(c.ask().expect("first request"), "m1", "{}", c.src);
    }
    let mut wrks: Vec<(Ipv4Addr, Child)> = v
        .wrk
        .iter()
        .map(|(ns, a)| (*a, start_wrk(ns, 10)))
        .collect();

    // Member 2 arrives while wrk runs: slices move, established connections stay pinned.
    v.start_member(1, "pin");
    v.wait_for_two_owners();
    for (a, w) in &mut wrks {
        assert!(
            w.try_wait().expect("wrk").is_none(),
            "wrk from {a} ended before the reallocation; the test needs a longer run"
        );
    }
    sources_now_at_member_2(&client);
    assert_held_on_member_1(&mut conns, "pinned connection broke");
    assert_wrks_clean(&v, wrks, "pin claim");
    // The pinned member kept the VIP and destroyed nothing.
    assert!(lo_has_vip(&v.servers[0]));
}

#[test]
fn vip_pin_drain_waits_for_pinned_connections_before_leaving() {
    let mut v = VipLab::new(true, &[]);
    v.start_member(0, "pin");
    v.start_member(1, "pin");
    v.wait_for_two_owners();
    let client = v.client.clone();
    // Held connections to member 1 from the sources it owns now.
    let mut held: Vec<KeepAlive> = sources()
        .into_iter()
        .filter(|&s| curl(&client, s) == "m1")
        .map(|s| KeepAlive::open(&client, s))
        .collect();
    assert!(!held.is_empty(), "member 1 owns no source");
    for c in &mut held {
        assert_eq!(c.ask().expect("first request"), "m1", "{}", c.src);
    }

    // SIGTERM: member 1 drains; its slices move to member 2 but it stays for the held ones.
    v.lab.send_term("m1");
    wait_for("the verifier holds only member 2's claim", || {
        verifier_status(&v.socket)
            .is_some_and(|s| !s.ownership.is_empty() && s.ownership.iter().all(|r| r.member == 2))
    });
    wait_for(
        "member 1 counts the held connections while draining",
        || {
            v.lab.metric(0, "slices") == 0
                && v.lab.metric(0, "drain_connections") == held.len() as u64
        },
    );
    for c in &mut held {
        assert_eq!(
            c.ask()
                .unwrap_or_else(|e| panic!("{}: pinned connection broke in the drain: {e}", c.src)),
            "m1",
            "{}",
            c.src
        );
    }
    assert_eq!(
        v.lab.exited("m1"),
        None,
        "member 1 left with held connections"
    );
    assert!(
        lo_has_vip(&v.servers[0]),
        "member 1 removed the VIP while draining"
    );
    // New connections from the same sources go to member 2.
    for c in &held {
        assert_eq!(curl(&client, c.src), "m2", "{}", c.src);
    }

    // The clients close: the drain ends, member 1 exits cleanly and takes the VIP off lo.
    drop(held);
    let st = v.lab.wait_exit("m1", Duration::from_secs(20));
    assert!(st.success(), "member 1: {st}\n{}", v.lab.logs());
    assert!(!lo_has_vip(&v.servers[0]), "VIP left on member 1's lo");
}

#[test]
fn vip_forward_serves_moved_connections_on_the_old_owner_and_restores_the_host() {
    let wrk_sources = [40u8, 41, 168, 169];
    // No pin: the router sends every packet of a moved source to the new owner.
    let mut v = VipLab::new(false, &wrk_sources);
    let before: Vec<(String, String)> = v
        .servers
        .iter()
        .map(|ns| {
            (
                ip_out(ns, &["-4", "rule", "show"]),
                sysctl_get(ns, IP_FORWARD),
            )
        })
        .collect();
    assert!(
        before[0].0.contains("0:\tfrom all lookup local"),
        "{}",
        before[0].0
    );
    v.start_member(0, "forward");
    v.wait_for_one_owner();
    // The host changes of the forward strategy are in place on member 1.
    let srv1 = v.servers[0].clone();
    assert!(ip_out(&srv1, &["-4", "addr", "show", "dev", "mcfwd0"]).contains("10.99.0.1/24"));
    let rules = ip_out(&srv1, &["-4", "rule", "show"]);
    assert!(
        rules.lines().any(|l| l == "100:\tfrom all lookup local")
            && !rules.lines().any(|l| l == "0:\tfrom all lookup local"),
        "{rules}"
    );

    assert_eq!(sysctl_get(&srv1, IP_FORWARD), "1");
    assert_eq!(sysctl_get(&srv1, TCP_LOOSE), "0");

    let client = v.client.clone();
    let mut conns: Vec<KeepAlive> = sources()
        .into_iter()
        .map(|s| KeepAlive::open(&client, s))
        .collect();
    for c in &mut conns {
        assert_eq!(c.ask().expect("first request"), "m1", "{}", c.src);
    }
    let mut wrks: Vec<(Ipv4Addr, Child)> = v
        .wrk
        .iter()
        .map(|(ns, a)| (*a, start_wrk(ns, 10)))
        .collect();

    // Member 2 arrives while wrk runs: half the slices move; the router sends the moved
    // sources' packets to member 2, which passes those of connections it never saw to member 1.
    v.start_member(1, "forward");
    v.wait_for_two_owners();
    for (a, w) in &mut wrks {
        assert!(
            w.try_wait().expect("wrk").is_none(),
            "wrk from {a} ended before the reallocation; the test needs a longer run"
        );
    }
    wait_for(
        "member 2 forwards the units it gained from member 1",
        || v.lab.metric(1, "vip_forward_units") > 0,
    );
    let moved = sources_now_at_member_2(&client);
    // The moved ones answer through member 2's forward.
    assert_held_on_member_1(&mut conns, "connection broke across the move");
    assert_wrks_clean(&v, wrks, "forward");
    assert_eq!(
        v.lab.metric(0, "vip_forward_units"),
        0,
        "member 1 gained nothing"
    );

    // Without member 2's marking rule the held connections of moved sources break: member 2
    // answers their segments itself, with a RST. The others carry on at member 1.
    let srv2 = v.servers[1].clone();
    let (ok, _) = nft_in(
        &srv2,
        &["flush", "chain", "ip", "manycast_vip_forward", "prerouting"],
    );
    assert!(ok, "flushing member 2's forwarding rule");
    for c in &mut conns {
        let answer = c.ask();
        if moved.contains(&c.src) {
            let e = answer.expect_err("a moved connection survived without the forward");
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "{}: {e}",
                c.src
            );
        } else {
            assert_eq!(answer.expect("unmoved"), "m1", "{}", c.src);
        }
    }
    drop(conns);

    // SIGTERM: each member drains and puts the host back. Member 2 has no connection left.
    // Member 1 still holds the moved connections the RSTs above ended at the clients only, so
    // its drain would wait for them until its timeout: a second SIGTERM makes it leave at once.
    for (i, name) in [(1, "m2"), (0, "m1")] {
        v.lab.send_term(name);
        if name == "m1" {
            wait_for("member 1 drains", || v.lab.metric(0, "draining") == 1);
            v.lab.send_term(name);
        }
        let st = v.lab.wait_exit(name, Duration::from_secs(20));
        assert!(st.success(), "{name}: {st}\n{}", v.lab.logs());
        let ns = &v.servers[i];
        assert!(!lo_has_vip(ns), "{ns}: VIP left on lo");
        assert_eq!(
            ip_out(ns, &["link", "show", "mcfwd0"]),
            "",
            "{ns}: overlay device left"
        );
        assert_eq!(
            (
                ip_out(ns, &["-4", "rule", "show"]),
                sysctl_get(ns, IP_FORWARD)
            ),
            before[i],
            "{ns}: rules or ip_forward not restored"
        );
        assert_eq!(
            sysctl_get(ns, TCP_LOOSE),
            "1",
            "{ns}: tcp_loose not restored"
        );
        assert!(
            !nft_in(ns, &["list", "table", "ip", "manycast_vip_forward"]).0,
            "{ns}: nft table left"
        );
    }
}

#[test]
fn vip_forward_drain_serves_held_connections_to_their_end() {
    let mut v = VipLab::new(false, &[]);
    v.start_member(0, "forward");
    // Member 1 alone first, so that member 2 gains half of the units from it when it arrives
    // (two members that commit their first allocation together gain nothing from each other,
    // and member 2 would forward only the drained half: seen on a loaded machine).
    v.wait_for_one_owner();
    v.start_member(1, "forward");
    v.wait_for_two_owners();
    let client = v.client.clone();
    // Held connections to member 1 from the sources it owns now.
    let mut held: Vec<KeepAlive> = sources()
        .into_iter()
        .filter(|&s| curl(&client, s) == "m1")
        .map(|s| KeepAlive::open(&client, s))
        .collect();
    assert!(!held.is_empty(), "member 1 owns no source");
    for c in &mut held {
        assert_eq!(c.ask().expect("first request"), "m1", "{}", c.src);
    }

    // Member 2 gained every unit from member 1: half when it arrived (the transfer of its first
    // commit named them) and the rest in the drain; slice_bits 8, so 256 units. (Comparing with
    // member 1's `slice_addresses` before the drain passed only when its metrics file was still
    // a second old and showed the whole space.)
    const ALL_UNITS: u64 = 1 << 8;
    // SIGTERM: member 1 drains; every slice moves to member 2, which forwards member 1's
    // connections back to it. Member 1 stays until they end.
    v.lab.send_term("m1");
    wait_for("the verifier holds only member 2's claim", || {
        verifier_status(&v.socket)
            .is_some_and(|s| !s.ownership.is_empty() && s.ownership.iter().all(|r| r.member == 2))
    });
    wait_for(
        "member 1 counts the held connections while draining",
        || {
            v.lab.metric(0, "slices") == 0
                && v.lab.metric(0, "drain_connections") == held.len() as u64
        },
    );
    wait_for(
        "member 2 forwards every unit it gained from member 1",
        || v.lab.metric(1, "vip_forward_units") == ALL_UNITS,
    );
    for c in &mut held {
        assert_eq!(
            c.ask()
                .unwrap_or_else(|e| panic!("{}: connection broke in the drain: {e}", c.src)),
            "m1",
            "{}",
            c.src
        );
    }
    assert_eq!(
        v.lab.exited("m1"),
        None,
        "member 1 left with held connections"
    );
    // New connections from the same sources go to member 2.
    for c in &held {
        assert_eq!(curl(&client, c.src), "m2", "{}", c.src);
    }

    // The clients close (their FINs also cross the overlay): member 1 exits cleanly and puts
    // its host back; member 2 stops forwarding to it once it has left.
    drop(held);
    let st = v.lab.wait_exit("m1", Duration::from_secs(20));
    assert!(st.success(), "member 1: {st}\n{}", v.lab.logs());
    let srv1 = &v.servers[0];
    assert!(!lo_has_vip(srv1), "VIP left on member 1's lo");
    assert_eq!(
        ip_out(srv1, &["link", "show", "mcfwd0"]),
        "",
        "overlay device left"
    );
    wait_for("member 2 stops forwarding to the member that left", || {
        v.lab.metric(1, "vip_forward_units") == 0
    });
}
