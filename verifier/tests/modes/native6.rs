//! IPv6 native steering on nftables (issue 15, item 3): the real verifier with
//! `verifier.protected6` hears each member's signed MLDv2 join for a quarter of the /56 site
//! slicing and writes its `netdev manycast6` table; UDP datagrams to the fixture's GROUP6 from
//! client IPv6 sources arrive only at the member that owns the source's slice (counted by an
//! nft counter per source on each member's link), a source in the unowned half reaches nobody,
//! and a clean stop removes the table. A re-point moves the table's map elements and keeps its
//! counters; a restarted verifier holds the table it finds through the adopt grace, so IPv6
//! clients are steered without a gap across the restart.

use super::mld::{join6, send_raw_v6};
use crate::harness::netns::Netns;
use crate::harness::topo::{wait_for, wall_now, RouterLab};
use igmp_ext::fixtures::{Fixture, GROUP6};
use igmp_ext::mld_join::{build_mld_datagram, build_signed_mld_report};
use igmp_ext::{Slice6, SliceSet6};
use manycast_verifier::keyfile::FileKeySource;
use std::net::Ipv6Addr;

/// An IPv6/UDP datagram from `src` to `dst` port 5000 with hop limit `hops`, checksum filled.
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, hops: u8, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut p = vec![0u8; 40 + udp_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[6] = 17;
    p[7] = hops;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&4000u16.to_be_bytes());
    p[42..44].copy_from_slice(&5000u16.to_be_bytes());
    p[44..46].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[48..].copy_from_slice(payload);
    // The pseudo-header, then the UDP header and payload (checksum field zero).
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&p[8..40]);
    add(&(udp_len as u32).to_be_bytes());
    add(&[0, 0, 0, 17]);
    add(&p[40..]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = !(sum as u16);
    p[46..48].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
    p
}

/// Counts, at the ingress of `ifname` in `ns`, datagrams to GROUP6 from each of `sources`.
fn count_sources(ns: &Netns, ifname: &str, sources: &[Ipv6Addr]) {
    let mut text = format!(
        "table netdev count6 {{\n\tchain in {{\n\t\ttype filter hook ingress device \"{ifname}\" priority 0; policy accept;\n"
    );
    for s in sources {
        text += &format!("\t\tip6 daddr {GROUP6} ip6 saddr {s} counter\n");
    }
    text += "\t}\n}\n";
    let file = std::env::temp_dir().join(format!("{}-count6.nft", ns.name()));
    std::fs::write(&file, text).expect("nft file");
    ns.exec("nft", &["-f", &file.to_string_lossy()]);
}

/// The packets counted from `src` by [`count_sources`].
fn counted(ns: &Netns, src: Ipv6Addr) -> u64 {
    let listing = ns.exec("nft", &["list", "table", "netdev", "count6"]);
    let needle = format!("ip6 saddr {src} counter packets ");
    listing
        .lines()
        .find_map(|l| l.split_once(&needle))
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counter for {src} in\n{listing}"))
}

/// The router's `netdev manycast6` table, if there is one.
fn table6(lab: &RouterLab) -> Option<String> {
    let out = crate::harness::cmd::run_with_timeout(
        "ip",
        &[
            "netns",
            "exec",
            lab.router.name(),
            "nft",
            "list",
            "table",
            "netdev",
            "manycast6",
        ],
        crate::harness::cmd::DEFAULT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A client source in `unit` (a /56 site's prefix with the unit's bits), host part `host`.
fn source_in(unit: &Slice6, host: u16) -> Ipv6Addr {
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, host));
    let a = Ipv6Addr::from((base & !unit.mask()) | unit.value());
    assert!(unit.contains_addr(a));
    a
}

/// A running verifier with `protected6` whose table steers member 1's quarter of the /56 site
/// slicing (`units[0]`) and member 2's (`units[1]`); the other half is nobody's.
fn two_quarters() -> (RouterLab, Vec<Slice6>) {
    two_quarters_with("")
}

/// [`two_quarters`] with `extra` appended to the verifier's config.
fn two_quarters_with(extra: &str) -> (RouterLab, Vec<Slice6>) {
    let fixture = Fixture::dual_stack(2, SliceSet6::full());
    let mut lab = RouterLab::with_fixture(
        fixture.clone(),
        &format!("[verifier]\nprotected6 = [\"ff3e::/32\"]\n{extra}"),
    );
    let keys = lab.dir.join("keys.toml");
    let text = FileKeySource::render(&[fixture.group_keys()])
        + &FileKeySource::render6(&[(*fixture.key_source6()[&GROUP6]).clone()]);
    std::fs::write(&keys, text).expect("key file");
    // Both member links carry the fixture's LINK6 (2001:db8:0:1::/64), which every fixture
    // join names; the router's addresses there are what it resolves the members' link-local
    // addresses from (no DAD: usable at once).
    for (i, s) in lab.servers.iter().enumerate() {
        let rif = format!("s{}", i + 1);
        let addr = format!("2001:db8:0:1::{}/64", 0x100 + i);
        lab.router
            .ip(&["-6", "addr", "add", &addr, "dev", &rif, "nodad"]);
        let ll = format!("{}/64", fixture.addr6(i));
        s.ns.ip(&["-6", "addr", "add", &ll, "dev", &s.ifname, "nodad"]);
    }
    // The client's raw sends need an IPv6 source of its own to route from.
    lab.client.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "cl0",
        "nodad",
    ]);
    lab.start();
    wait_for("the verifier's status", || lab.try_status().is_some());

    let units = SliceSet6::site_slicing(2);
    let now = wall_now();
    for i in 0..2 {
        let join = join6(&fixture, i, &units[i..=i], 1, now);
        send_raw_v6(&lab.servers[i].ns, &lab.servers[i].ifname, &join);
    }
    wait_for("the IPv6 table steers both members", || {
        table6(&lab).is_some_and(|t| {
            t.contains("fwd ip6 to fe80::1 device \"s1\"")
                && t.contains("fwd ip6 to fe80::2 device \"s2\"")
        })
    });
    (lab, units)
}

#[test]
fn ipv6_datagrams_reach_only_the_owner_of_their_sources_slice() {
    let (mut lab, units) = two_quarters();

    let sources: Vec<Ipv6Addr> = (0..4)
        .map(|u| source_in(&units[u], 0x10 + u as u16))
        .collect();
    for s in &lab.servers {
        count_sources(&s.ns, &s.ifname, &sources);
    }
    // The unowned sources first: once the owned ones' datagrams have arrived, theirs were
    // handled.
    for (k, &src) in sources.iter().enumerate().rev() {
        for seq in 0..3 {
            send_raw_v6(&lab.client, "cl0", &udp6(src, GROUP6, 8, &[k as u8, seq]));
        }
    }
    wait_for("the owned sources' datagrams at their owners", || {
        counted(&lab.servers[0].ns, sources[0]) == 3 && counted(&lab.servers[1].ns, sources[1]) == 3
    });
    for (i, s) in lab.servers.iter().enumerate() {
        for (u, &src) in sources.iter().enumerate() {
            let want = if u == i { 3 } else { 0 };
            assert_eq!(
                counted(&s.ns, src),
                want,
                "member {} from {src} (unit {u})\n{}",
                i + 1,
                table6(&lab).unwrap_or_default()
            );
        }
    }
    // The unowned half was dropped by the table's gap rule.
    let table = table6(&lab).expect("the table");
    let gap = table
        .lines()
        .find(|l| l.contains(&format!("ip6 daddr {GROUP6} counter packets")))
        .unwrap_or_else(|| panic!("no gap rule in\n{table}"));
    assert!(gap.contains("counter packets 6 "), "{gap}");

    // A clean stop removes the table.
    let status = lab.stop();
    assert!(status.success(), "{status:?}\n{}", lab.log());
    assert_eq!(table6(&lab), None, "the IPv6 table outlived a clean stop");
}

/// A killed verifier leaves the table, which keeps steering while no verifier runs.
#[test]
fn a_killed_verifier_leaves_the_ipv6_table_steering() {
    let (lab, units) = two_quarters();
    let pid = lab.daemon_pid().expect("verifier running");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    wait_for("the verifier killed", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    });
    assert!(table6(&lab).is_some(), "the table went with the verifier");
    let src = source_in(&units[1], 0x42);
    for s in &lab.servers {
        count_sources(&s.ns, &s.ifname, &[src]);
    }
    send_raw_v6(&lab.client, "cl0", &udp6(src, GROUP6, 8, &[9, 0]));
    wait_for("member 2's source at member 2 with no verifier", || {
        counted(&lab.servers[1].ns, src) == 1
    });
    assert_eq!(counted(&lab.servers[0].ns, src), 0);
}

/// Member `i`'s signed MLDv2 join for `units` at `epoch`.
fn join6_at(f: &Fixture, i: usize, units: &[Slice6], epoch: u64, nonce: u64) -> Vec<u8> {
    let claims = f.claims6(units, epoch, wall_now(), nonce);
    let m = &f.members[i];
    let mld = build_signed_mld_report(&claims, f.addr6(i), &m.cert, &m.key).expect("join fits");
    build_mld_datagram(f.addr6(i), &mld)
}

/// The packets the hop chain of member `m` (from 1) in the router's IPv6 table forwarded.
fn chain_packets(table: &str, m: usize) -> u64 {
    let head = format!("chain m{m}_fe80_0_0_0_0_0_0_{m} {{");
    let chain = &table[table
        .find(&head)
        .unwrap_or_else(|| panic!("no {head} in\n{table}"))..];
    chain
        .lines()
        .find_map(|l| l.split_once("counter packets "))
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {head}\n{table}"))
}

/// Sends `n` datagrams from each of `sources` (round `round` in the payload).
fn send_round(lab: &RouterLab, sources: &[Ipv6Addr], round: u8, n: u8) {
    for (k, &src) in sources.iter().enumerate() {
        for seq in 0..n {
            let payload = [round, k as u8, seq];
            send_raw_v6(&lab.client, "cl0", &udp6(src, GROUP6, 8, &payload));
        }
    }
}

/// Issue 15: a unit that moves between members is an element update of the table's map, sent
/// as one nfnetlink batch: no table write, so the hop chains' counters carry on, the member
/// that lost the unit's as well as the one that gained it. It failed before: every change
/// rewrote the table, which started its counters at zero.
#[test]
fn a_repoint_moves_map_elements_and_keeps_the_members_counters() {
    let (lab, units) = two_quarters();
    let sources = [source_in(&units[0], 0x10), source_in(&units[1], 0x11)];
    for s in &lab.servers {
        count_sources(&s.ns, &s.ifname, &sources);
    }
    send_round(&lab, &sources, 1, 3);
    wait_for("each source's datagrams at its owner", || {
        counted(&lab.servers[0].ns, sources[0]) == 3 && counted(&lab.servers[1].ns, sources[1]) == 3
    });
    let table = table6(&lab).expect("the table");
    assert_eq!((chain_packets(&table, 1), chain_packets(&table, 2)), (3, 3));
    let before = lab.status().counters;

    // Member 2, at a later epoch, takes member 1's unit.
    let f = &lab.fixture;
    let join = join6_at(f, 1, &[units[0], units[1]], 2, 7);
    send_raw_v6(&lab.servers[1].ns, &lab.servers[1].ifname, &join);
    wait_for("unit 0 steered to member 2", || {
        table6(&lab).is_some_and(|t| {
            t.lines()
                .filter(|l| l.contains(": jump m2_fe80_0_0_0_0_0_0_2"))
                .count()
                >= 1
                && !t.contains(": jump m1_")
        })
    });
    let after = lab.status().counters;
    assert_eq!(
        after.nft_rewrites, before.nft_rewrites,
        "a re-point rewrote the table"
    );
    assert_eq!(after.nfnl_batches, before.nfnl_batches + 1, "one batch");
    assert!(after.repoints > before.repoints, "the re-point was timed");
    let table = table6(&lab).expect("the table");
    assert_eq!(
        (chain_packets(&table, 1), chain_packets(&table, 2)),
        (3, 3),
        "the counters went back\n{table}"
    );
    send_round(&lab, &sources, 2, 3);
    wait_for("both sources' datagrams at member 2", || {
        counted(&lab.servers[1].ns, sources[0]) == 3 && counted(&lab.servers[1].ns, sources[1]) == 6
    });
    assert_eq!(
        counted(&lab.servers[0].ns, sources[0]),
        3,
        "member 1 got more"
    );
    let table = table6(&lab).expect("the table");
    assert_eq!((chain_packets(&table, 1), chain_packets(&table, 2)), (3, 9));
}

/// Issue 15: a verifier killed and started again finds the IPv6 table and holds it through
/// the adopt grace while members re-join, then replaces it with the rebuilt plan: every
/// IPv6 datagram sent meanwhile reaches its owner, and only its owner. It failed before: the
/// new verifier rewrote the table at its first IPv6 claim, and the sources of members not yet
/// heard again were dropped until they were.
#[test]
fn ipv6_clients_are_steered_across_a_verifier_restart_without_a_gap() {
    // A grace long enough for the steps below on a loaded machine.
    let (mut lab, units) = two_quarters_with("[native]\nadopt_grace_ms = 8000\n");
    let sources = [source_in(&units[0], 0x20), source_in(&units[1], 0x21)];
    for s in &lab.servers {
        count_sources(&s.ns, &s.ifname, &sources);
    }
    let mut sent = 0;
    let mut round = |lab: &RouterLab, what: &str| {
        sent += 3;
        send_round(lab, &sources, sent as u8, 3);
        wait_for(what, || {
            counted(&lab.servers[0].ns, sources[0]) == sent
                && counted(&lab.servers[1].ns, sources[1]) == sent
        });
    };
    round(&lab, "steered before the restart");

    let pid = lab.daemon_pid().expect("verifier running");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    // Reaps the killed process (a signal to it changes nothing now).
    lab.stop();
    round(&lab, "steered with no verifier");

    lab.start();
    let s = lab.status();
    assert_eq!(s.counters.nft_transactions, 0, "the kept table was written");
    round(&lab, "steered by the kept table");
    let f = lab.fixture.clone();
    // Member 1 answers first: its claim alone must not take member 2's sources off the table.
    let join = join6_at(&f, 0, &units[0..1], 1, 11);
    send_raw_v6(&lab.servers[0].ns, &lab.servers[0].ifname, &join);
    wait_for("member 1's IPv6 claim", || {
        lab.status()
            .ownership
            .iter()
            .any(|r| r.group == GROUP6.to_string())
    });
    round(&lab, "steered while only member 1 is back");
    let join = join6_at(&f, 1, &units[1..2], 1, 12);
    send_raw_v6(&lab.servers[1].ns, &lab.servers[1].ifname, &join);
    wait_for("the grace over and the table rebuilt", || {
        lab.status().counters.nft_transactions >= 1
    });
    let table = table6(&lab).expect("the rebuilt table");
    assert!(
        table.contains("fwd ip6 to fe80::1 device \"s1\"")
            && table.contains("fwd ip6 to fe80::2 device \"s2\""),
        "{table}"
    );
    round(&lab, "steered by the rebuilt table");
    for (i, s) in lab.servers.iter().enumerate() {
        assert_eq!(
            counted(&s.ns, sources[1 - i]),
            0,
            "member {} got the other's source",
            i + 1
        );
    }
    assert!(
        lab.log().contains("IPv6 nft table taken over at start"),
        "{}",
        lab.log()
    );
    assert!(lab.stop().success());
    assert_eq!(table6(&lab), None, "the IPv6 table outlived a clean stop");
}
