//! VIP mode over IPv6 (issue 15, item 3): an IPv6 VIP bound to the fixture's GROUP6. Each
//! member's signed MLDv2 join claims a quarter of the /56 site slicing; packets from client
//! sources to the VIP (sent raw from the client's namespace, as a router upstream would forward
//! them) reach only the member owning their source's slice, with the VIP kept as destination
//! (counted per source and port by an nft counter at each member's link). With pin, UDP flows
//! and TCP connections stay on their member after their slice moves while new ones follow, also
//! across a verifier SIGKILL and restart; `[announce]` holds a /128 route for the VIP while the
//! router steers it and withdraws it on a clean stop.

use super::mld::send_raw_v6;
use crate::harness::netns::Netns;
use crate::harness::topo::{wait_for, wall_now, RouterLab};
use igmp_ext::fixtures::{Fixture, GROUP6};
use igmp_ext::mld_join::{build_mld_datagram, build_signed_mld_report};
use igmp_ext::{Slice6, SliceSet6};
use manycast_verifier::keyfile::FileKeySource;
use manycast_verifier::sys::bpf;
use std::net::Ipv6Addr;

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x80);
const UDP: u8 = 17;
const TCP: u8 = 6;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN_ACK: u8 = 0x11;

/// An IPv6 packet from `src` port `sport` to the VIP's port 80, UDP or TCP (with `flags`), hop
/// limit 8. The checksum is left zero: nothing on the way checks it, the members' counters
/// see the packet at ingress.
fn packet(proto: u8, src: Ipv6Addr, sport: u16, flags: u8) -> Vec<u8> {
    let l4 = if proto == TCP { 20 } else { 8 };
    let mut p = vec![0u8; 40 + l4];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(l4 as u16).to_be_bytes());
    p[6] = proto;
    p[7] = 8;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&VIP6.octets());
    p[40..42].copy_from_slice(&sport.to_be_bytes());
    p[42..44].copy_from_slice(&80u16.to_be_bytes());
    if proto == TCP {
        p[52] = 5 << 4;
        p[53] = flags;
    } else {
        p[44..46].copy_from_slice(&(l4 as u16).to_be_bytes());
    }
    p
}

/// A client source in `unit` (a /56 site's prefix with the unit's bits), host part `host`.
fn source_in(unit: &Slice6, host: u16) -> Ipv6Addr {
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, host));
    let a = Ipv6Addr::from((base & !unit.mask()) | unit.value());
    assert!(unit.contains_addr(a));
    a
}

/// Counts, at the ingress of each member's link, packets to the VIP per (source, port).
fn count_flows(lab: &RouterLab, flows: &[(Ipv6Addr, u16)]) {
    for s in &lab.servers {
        let mut text = format!(
            "table netdev count6 {{\n\tchain in {{\n\t\ttype filter hook ingress device \"{}\" priority 0; policy accept;\n",
            s.ifname
        );
        for (src, port) in flows {
            text += &format!("\t\tip6 daddr {VIP6} ip6 saddr {src} th sport {port} counter\n");
        }
        text += "\t}\n}\n";
        let file = std::env::temp_dir().join(format!("{}-count6.nft", s.ns.name()));
        std::fs::write(&file, text).expect("nft file");
        let _ = try_exec(&s.ns, &["nft", "delete", "table", "netdev", "count6"]);
        s.ns.exec("nft", &["-f", &file.to_string_lossy()]);
    }
}

/// Packets of flow (`src`, `port`) counted at member `i` (0-based).
fn counted(lab: &RouterLab, i: usize, src: Ipv6Addr, port: u16) -> u64 {
    let listing = lab.servers[i]
        .ns
        .exec("nft", &["list", "table", "netdev", "count6"]);
    let needle = format!("ip6 saddr {src} th sport {port} counter packets ");
    listing
        .lines()
        .find_map(|l| l.split_once(&needle))
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counter for {src} port {port} in\n{listing}"))
}

/// Where the flow's packets went so far: (at member 1, at member 2).
fn at(lab: &RouterLab, src: Ipv6Addr, port: u16) -> (u64, u64) {
    (counted(lab, 0, src, port), counted(lab, 1, src, port))
}

fn send(lab: &RouterLab, proto: u8, src: Ipv6Addr, port: u16, flags: u8) {
    send_raw_v6(&lab.client, "cl0", &packet(proto, src, port, flags));
}

/// The router's `netdev manycast_vip6` table, if there is one.
fn table(lab: &RouterLab) -> Option<String> {
    try_exec(
        &lab.router,
        &["nft", "list", "table", "netdev", "manycast_vip6"],
    )
}

/// `ip netns exec <ns> args…`: its stdout if it succeeded.
fn try_exec(ns: &Netns, args: &[&str]) -> Option<String> {
    let mut full = vec!["netns", "exec", ns.name()];
    full.extend_from_slice(args);
    let out =
        crate::harness::cmd::run_with_timeout("ip", &full, crate::harness::cmd::DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Member `i`'s signed MLDv2 join for `units` at `epoch`.
fn join(lab: &RouterLab, i: usize, units: &[Slice6], epoch: u64, nonce: u64) {
    let f = &lab.fixture;
    let claims = f.claims6(units, epoch, wall_now(), nonce);
    let m = &f.members[i];
    let mld = build_signed_mld_report(&claims, f.addr6(i), &m.cert, &m.key).expect("join fits");
    let datagram = build_mld_datagram(f.addr6(i), &mld);
    send_raw_v6(&lab.servers[i].ns, &lab.servers[i].ifname, &datagram);
}

/// A verifier with `protected6` and an IPv6 VIP on GROUP6 (`vip` is the rest of its
/// `[[vip]]`), members' links addressed as in `native6.rs`, not started.
fn lab6(vip: &str, extra: &str) -> RouterLab {
    let fixture = Fixture::dual_stack(2, SliceSet6::full());
    let lab = RouterLab::with_fixture(
        fixture.clone(),
        &format!(
            "{extra}[verifier]\nprotected6 = [\"ff3e::/32\"]\n[native]\nadopt_grace_ms = 300\n\
             [[vip]]\naddress = \"{VIP6}\"\ngroup = \"{GROUP6}\"\n{vip}"
        ),
    );
    let keys = lab.dir.join("keys.toml");
    let text = FileKeySource::render(&[fixture.group_keys()])
        + &FileKeySource::render6(&[(*fixture.key_source6()[&GROUP6]).clone()]);
    std::fs::write(&keys, text).expect("key file");
    for (i, s) in lab.servers.iter().enumerate() {
        let rif = format!("s{}", i + 1);
        let addr = format!("2001:db8:0:1::{}/64", 0x100 + i);
        lab.router
            .ip(&["-6", "addr", "add", &addr, "dev", &rif, "nodad"]);
        let ll = format!("{}/64", fixture.addr6(i));
        s.ns.ip(&["-6", "addr", "add", &ll, "dev", &s.ifname, "nodad"]);
    }
    // The client reaches the VIP through the router, as from upstream.
    lab.client.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "cl0",
        "nodad",
    ]);
    lab.router.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::ff/64",
        "dev",
        "c0",
        "nodad",
    ]);
    lab.client.ip(&[
        "-6",
        "route",
        "add",
        &format!("{VIP6}/128"),
        "via",
        "2001:db8:1::ff",
    ]);
    lab
}

/// Member 1 owns `units[0]`, member 2 `units[1]` of the /56 site slicing in quarters; the
/// table steers both.
fn start_and_join(lab: &mut RouterLab) -> Vec<Slice6> {
    lab.start();
    let units = SliceSet6::site_slicing(2);
    join(lab, 0, &units[0..1], 1, 1);
    join(lab, 1, &units[1..2], 1, 1);
    wait_for("the IPv6 VIP table steers both members", || {
        table(lab).is_some_and(|t| {
            t.contains("fwd ip6 to fe80::1 device \"s1\"")
                && t.contains("fwd ip6 to fe80::2 device \"s2\"")
        })
    });
    units
}

#[test]
fn ipv6_vip_packets_reach_the_owner_of_their_source_and_the_route_is_announced() {
    let mut lab = lab6("", "[announce]\nenabled = true\n");
    let units = start_and_join(&mut lab);
    let flows: Vec<(Ipv6Addr, u16)> = (0..4)
        .map(|u| (source_in(&units[u], 0x10 + u as u16), 4000))
        .collect();
    count_flows(&lab, &flows);
    // The unowned sources first: once the owned ones' packets arrived, theirs were handled.
    for &(src, port) in flows.iter().rev() {
        for _ in 0..3 {
            send(&lab, UDP, src, port, 0);
            send(&lab, TCP, src, port, ACK);
        }
    }
    wait_for("the owned sources' packets at their owners", || {
        at(&lab, flows[0].0, 4000) == (6, 0) && at(&lab, flows[1].0, 4000) == (0, 6)
    });
    for &(src, port) in &flows[2..] {
        assert_eq!(at(&lab, src, port), (0, 0), "{src}: no owner, dropped");
    }
    let t = table(&lab).expect("the table");
    let gap = t
        .lines()
        .find(|l| l.contains("counter packets") && !l.contains("fwd"))
        .unwrap_or_else(|| panic!("no gap rule in\n{t}"));
    assert!(gap.contains("counter packets 12 "), "{gap}\n{t}");

    // The status lists the VIP and its members; the /128 route is held.
    let status = lab.status();
    let row = status
        .vips
        .iter()
        .find(|v| v.address == VIP6.to_string())
        .unwrap_or_else(|| panic!("no IPv6 VIP in {:?}", status.vips));
    assert_eq!(row.group, GROUP6.to_string());
    let members: Vec<u32> = row.members.iter().map(|m| m.0).collect();
    assert_eq!(members, [1, 2]);
    let route = |lab: &RouterLab| {
        lab.router
            .exec("ip", &["-6", "route", "show", "proto", "77"])
    };
    wait_for("the VIP's /128 announced", || {
        route(&lab).contains(&VIP6.to_string())
    });
    assert!(lab.status().announced.contains(&std::net::IpAddr::V6(VIP6)));

    // A clean stop withdraws the route and removes the table.
    let st = lab.stop();
    assert!(st.success(), "{st:?}\n{}", lab.log());
    assert!(!route(&lab).contains(&VIP6.to_string()), "{}", route(&lab));
    assert_eq!(table(&lab), None, "the table outlived a clean stop");
}

/// Packets the hop chain to `via` forwarded, by its counter in the table.
fn hop_packets(lab: &RouterLab, via: &str) -> u64 {
    let t = table(lab).expect("the table");
    let needle = format!(" fwd ip6 to {via} ");
    t.lines()
        .find(|l| l.contains(&needle))
        .and_then(|l| {
            l.split_once("counter packets ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no hop chain to {via} in\n{t}"))
}

/// The tc program's IPv6 flows: (source, sport, protocol) → (member, state: 0 new, 1 open,
/// 2 closing, 3 UDP).
fn bpf_flows6(lab: &RouterLab) -> std::collections::BTreeMap<(Ipv6Addr, u16, u32), (u32, u32)> {
    let octets = |w: &[u32]| {
        let b: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
        Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))
    };
    bpf::pinned_entries::<[u32; 10], [u32; 4]>(&lab.pin_dir.join(bpf::FLOWS6))
        .expect("the pinned IPv6 flow table")
        .into_iter()
        .map(|(k, [member, state, ..])| {
            let p = k[8].to_ne_bytes();
            let sport = u16::from_be_bytes([p[0], p[1]]);
            ((octets(&k[0..4]), sport, k[9]), (member, state))
        })
        .collect()
}

/// Pin mode's data plane in a test's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pin {
    Bpf,
    Nft,
}

#[test]
fn pinned_ipv6_flows_stay_on_their_member_across_a_repoint_and_a_restart() {
    pins_survive_repoints_and_restarts(Pin::Nft);
}

/// Issue 15 item 3: the same on the tc program (`[vip_pin] dataplane = "bpf"`), whose flow
/// table holds the whole 5-tuple.
#[test]
fn bpf_pinned_ipv6_flows_stay_on_their_member_across_a_repoint_and_a_restart() {
    pins_survive_repoints_and_restarts(Pin::Bpf);
}

fn pins_survive_repoints_and_restarts(dataplane: Pin) {
    let config = match dataplane {
        Pin::Bpf => "[vip_pin]\ndataplane = \"bpf\"\n",
        Pin::Nft => "[vip_pin]\ndataplane = \"nft\"\n",
    };
    let mut lab = lab6("pin = true\n", config);
    let units = start_and_join(&mut lab);
    let a = source_in(&units[0], 0x21);
    // Flows from one source of member 1's unit: a UDP flow, a TCP connection, and the new
    // ones opened after the re-point.
    let (udp_old, tcp_old, udp_new, tcp_new) = (4000, 4100, 4001, 4101);
    count_flows(
        &lab,
        &[(a, udp_old), (a, tcp_old), (a, udp_new), (a, tcp_new)],
    );
    send(&lab, UDP, a, udp_old, 0);
    send(&lab, TCP, a, tcp_old, SYN);
    send(&lab, TCP, a, tcp_old, ACK);
    wait_for("the first flows at member 1", || {
        at(&lab, a, udp_old) == (1, 0) && at(&lab, a, tcp_old) == (2, 0)
    });
    if dataplane == Pin::Bpf {
        let flows = bpf_flows6(&lab);
        assert_eq!(flows.get(&(a, udp_old, 17)), Some(&(1, 3)), "{flows:?}");
        assert_eq!(flows.get(&(a, tcp_old, 6)), Some(&(1, 1)), "{flows:?}");
        assert_eq!(lab.status().pin_dataplane6, "tc");
    }
    // Member 1's hop counted the flows' three packets: its nft chain, or the program's hop.
    let m1 = |lab: &RouterLab| match dataplane {
        Pin::Nft => hop_packets(lab, "fe80::1"),
        Pin::Bpf => {
            let hops = bpf::pinned_entries::<u32, [u32; 8]>(&lab.pin_dir.join(bpf::HOPS6));
            let h = hops.expect("the IPv6 hops")[&1];
            u64::from(h[7]) << 32 | u64::from(h[6])
        }
    };
    assert_eq!(m1(&lab), 3);

    // Member 1 moves to the unowned quarter, member 2 takes member 1's.
    join(&lab, 0, &units[2..3], 2, 2);
    join(&lab, 1, &units[0..2], 2, 2);
    // Probe with new UDP flows until one reaches member 2: then the re-point is in the kernel.
    let mut port = 6000;
    wait_for("a new flow at member 2", || {
        port += 1;
        count_flows(&lab, &[(a, port)]);
        send(&lab, UDP, a, port, 0);
        std::thread::sleep(std::time::Duration::from_millis(50));
        counted(&lab, 1, a, port) == 1
    });
    count_flows(
        &lab,
        &[(a, udp_old), (a, tcp_old), (a, udp_new), (a, tcp_new)],
    );
    send(&lab, UDP, a, udp_new, 0);
    send(&lab, TCP, a, tcp_new, SYN);
    send(&lab, UDP, a, udp_old, 0);
    send(&lab, TCP, a, tcp_old, ACK);
    wait_for(
        "the pinned flows at member 1, the new ones at member 2",
        || {
            at(&lab, a, udp_new) == (0, 1)
                && at(&lab, a, tcp_new) == (0, 1)
                && at(&lab, a, udp_old).0 + at(&lab, a, udp_old).1 == 1
                && at(&lab, a, tcp_old).0 + at(&lab, a, tcp_old).1 == 1
        },
    );
    assert_eq!(at(&lab, a, udp_old), (1, 0), "the UDP flow left its member");
    assert_eq!(
        at(&lab, a, tcp_old),
        (1, 0),
        "the connection left its member"
    );
    // The re-point moved map elements only: member 1's hop kept its counter (a rewrite
    // started it again from zero), raised by the pinned flows' two packets.
    assert_eq!(m1(&lab), 5, "{:?}", table(&lab));

    // SIGKILL and a new verifier: members answer it, its first write keeps the pins.
    let pid = lab.daemon_pid().expect("running");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    wait_for("the verifier killed", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    });
    assert!(table(&lab).is_some(), "the table went with the verifier");
    lab.start();
    join(&lab, 0, &units[2..3], 2, 3);
    join(&lab, 1, &units[0..2], 2, 3);
    // Its first write (after the adopt grace) makes the hop chains anew: their counters,
    // which member 1's packets had raised, start again from zero.
    assert!(dataplane == Pin::Bpf || hop_packets(&lab, "fe80::1") > 0);
    wait_for("the restarted verifier rewrote the table", || {
        table(&lab).is_some_and(|t| t.contains("packets 0 bytes 0 fwd ip6 to fe80::1 "))
            && lab.status().vips.iter().any(|v| !v.members.is_empty())
    });
    count_flows(&lab, &[(a, udp_old), (a, tcp_old), (a, tcp_new)]);
    send(&lab, UDP, a, udp_old, 0);
    send(&lab, TCP, a, tcp_old, ACK);
    send(&lab, TCP, a, tcp_new, ACK);
    // The connection's FIN and its last ACK stay on member 1 too (the closing table).
    send(&lab, TCP, a, tcp_old, FIN_ACK);
    send(&lab, TCP, a, tcp_old, ACK);
    wait_for("every flow counted once more", || {
        let n = |p| {
            let (x, y) = at(&lab, a, p);
            x + y
        };
        n(udp_old) == 1 && n(tcp_old) == 3 && n(tcp_new) == 1
    });
    assert_eq!(at(&lab, a, udp_old), (1, 0), "a restart moved the UDP flow");
    assert_eq!(
        at(&lab, a, tcp_old),
        (3, 0),
        "a restart moved the connection"
    );
    assert_eq!(
        at(&lab, a, tcp_new),
        (0, 1),
        "the newer connection left member 2"
    );
    let t = table(&lab).expect("table");
    assert!(t.contains("map fin_2001_db8_ffff_0_0_0_0_80"), "{t}");
    let path = match dataplane {
        Pin::Bpf => "tc",
        Pin::Nft => "nft",
    };
    assert_eq!(lab.status().pin_dataplane6, path);
    if dataplane == Pin::Bpf {
        assert_eq!(
            bpf_flows6(&lab).get(&(a, tcp_old, 6)),
            Some(&(1, 2)),
            "closing"
        );
        // A clean stop removes the program and its pins.
        let st = lab.stop();
        assert!(st.success(), "{st:?}\n{}", lab.log());
        assert!(!lab.pin_dir.join(bpf::FLOWS6).exists());
        assert!(!lab
            .router
            .exec("tc", &["filter", "show", "dev", "c0", "ingress"])
            .contains("vip_pin"));
    }
}

/// Issue 15 item 3: the tc program keys a flow by the whole source. Two flows from one /64 with
/// the same low 32 bits of the interface identifier and the same ports (one key for the nft
/// flow tables) are pinned apart: the first to member 1, the second, which starts after the
/// slice moved, to member 2, and each stays there.
#[test]
fn bpf_pins_two_flows_of_one_slash_64_apart() {
    let mut lab = lab6("pin = true\n", "[vip_pin]\ndataplane = \"bpf\"\n");
    let units = start_and_join(&mut lab);
    let a = source_in(&units[0], 0x21);
    let b = Ipv6Addr::from(u128::from(a) | 0x0000_0000_0000_0000_1234_0000_0000_0000);
    assert!(units[0].contains_addr(b));
    let port = 4000;
    count_flows(&lab, &[(a, port), (b, port)]);
    send(&lab, UDP, a, port, 0);
    wait_for("the first flow at member 1", || at(&lab, a, port) == (1, 0));
    assert_eq!(lab.status().pin_dataplane6, "tc");
    // Member 2 takes member 1's quarter (member 1 moves to an unowned one).
    join(&lab, 0, &units[2..3], 2, 2);
    join(&lab, 1, &units[0..2], 2, 2);
    let mut probe = 6000;
    wait_for("a new flow at member 2", || {
        probe += 1;
        count_flows(&lab, &[(a, probe)]);
        send(&lab, UDP, a, probe, 0);
        std::thread::sleep(std::time::Duration::from_millis(50));
        counted(&lab, 1, a, probe) == 1
    });
    count_flows(&lab, &[(a, port), (b, port)]);
    send(&lab, UDP, b, port, 0);
    send(&lab, UDP, a, port, 0);
    send(&lab, UDP, b, port, 0);
    wait_for("every packet counted", || {
        let n = |s| {
            let (x, y) = at(&lab, s, port);
            x + y
        };
        n(a) == 1 && n(b) == 2
    });
    assert_eq!(at(&lab, a, port), (1, 0), "the first flow left member 1");
    assert_eq!(
        at(&lab, b, port),
        (0, 2),
        "the second flow took the first's pin"
    );
    let flows = bpf_flows6(&lab);
    assert_eq!(flows.get(&(a, port, 17)), Some(&(1, 3)), "{flows:?}");
    assert_eq!(flows.get(&(b, port, 17)), Some(&(2, 3)), "{flows:?}");
}

/// Where the tc program cannot run (its pin directory on no bpf filesystem), an IPv6 VIP's
/// pins fall back to the nftables flow tables with one warning, as IPv4's do.
#[test]
fn bpf_pin6_falls_back_to_nft_with_one_warning() {
    let dir = std::env::temp_dir().join(format!("mc-not-bpffs6-{}", std::process::id()));
    let config = format!(
        "[vip_pin]\ndataplane = \"bpf\"\npin_dir = \"{}\"\n",
        dir.display()
    );
    let mut lab = lab6("pin = true\n", &config);
    let units = start_and_join(&mut lab);
    let a = source_in(&units[0], 0x21);
    count_flows(&lab, &[(a, 4000)]);
    send(&lab, UDP, a, 4000, 0);
    wait_for("the flow at member 1", || at(&lab, a, 4000) == (1, 0));
    let pins = table(&lab).expect("the table");
    assert!(
        pins.contains("0x20010db801000000 . 0x21 . 0xfa00050"),
        "pinned in the nft flow table: {pins}"
    );
    assert_eq!(lab.status().pin_dataplane6, "nft");
    assert!(!lab
        .router
        .exec("tc", &["filter", "show", "dev", "c0", "ingress"])
        .contains("vip_pin"));
    let log = lab.log();
    assert_eq!(
        log.matches("VIP pin mode runs on nftables").count(),
        1,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
