//! VIP mode with pin: real TCP from many client addresses to a VIP that every member holds on
//! loopback; each connection reaches the owner of its source's slice; after a reallocation new
//! connections follow the new owner while established ones stay where they started.

use crate::harness::topo::{client_sources, wait_for, RouterLab};
use igmp_ext::Slice;
use manycast_verifier::sys::bpf;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;

/// Packets the fast path forwarded at ingress (issue 16, item 5), per hop chain, from the
/// counters of `nft list table netdev manycast_vip`.
fn fast_forwarded(lab: &RouterLab) -> BTreeMap<String, u64> {
    let listing = lab
        .router
        .exec("nft", &["list", "table", "netdev", "manycast_vip"]);
    let mut out = BTreeMap::new();
    let mut chain = String::new();
    for line in listing.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("chain ") {
            chain = c.trim_end_matches('{').trim().to_owned();
        } else if let Some((_, rest)) = line.split_once("counter packets ") {
            let n: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a packet count");
            *out.entry(chain.clone()).or_default() += n;
        }
    }
    // The tc program's (pin mode on `bpf`): member → [ifindex, next hop, packets (two halves)],
    // under the hop chain's name.
    let hops = bpf::pinned_entries::<u32, [u32; 4]>(&lab.pin_dir.join(bpf::HOPS));
    for (m, [_, via, lo, hi]) in hops.unwrap_or_default() {
        let via = Ipv4Addr::from(via.to_ne_bytes())
            .to_string()
            .replace('.', "_");
        *out.entry(format!("m{m}_{via}")).or_default() += u64::from(hi) << 32 | u64::from(lo);
    }
    out
}

/// The tc program's flow table (pin mode on `bpf`): (source, sport, dport, protocol) →
/// (member, state: 0 new, 1 open, 2 closing, 3 UDP).
fn bpf_flows(lab: &RouterLab) -> BTreeMap<(SocketAddrV4, u16, u32), (u32, u32)> {
    bpf::pinned_entries::<[u32; 4], [u32; 4]>(&lab.pin_dir.join(bpf::FLOWS))
        .expect("the pinned flow table")
        .into_iter()
        .map(|([saddr, _, ports, proto], [member, state, ..])| {
            let p = ports.to_ne_bytes();
            let src = SocketAddrV4::new(
                Ipv4Addr::from(saddr.to_ne_bytes()),
                u16::from_be_bytes([p[0], p[1]]),
            );
            (
                (src, u16::from_be_bytes([p[2], p[3]]), proto),
                (member, state),
            )
        })
        .collect()
}

/// Whether the tc program is attached at `dev`'s ingress in the router.
fn bpf_attached(lab: &RouterLab, dev: &str) -> bool {
    lab.router
        .exec("tc", &["filter", "show", "dev", dev, "ingress"])
        .contains("vip_pin")
}

/// Pin mode's data plane in a test's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pin {
    Bpf,
    Nft,
}

impl Pin {
    fn config(self) -> &'static str {
        match self {
            Pin::Bpf => "[vip_pin]\ndataplane = \"bpf\"\n",
            Pin::Nft => "[vip_pin]\ndataplane = \"nft\"\n",
        }
    }
}

/// Connections whose original direction (client → VIP) conntrack has seen in the router: the
/// fast path forwards them before conntrack, so none (the servers' replies, routed back through
/// the router, are seen from the other side).
fn conntracked_to_vip(lab: &RouterLab) -> usize {
    lab.router
        .proc_net("nf_conntrack")
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("dst="))
                .is_some_and(|d| d == "dst=10.200.0.1")
        })
        .count()
}

/// Each server answers every byte with its own number; byte 0xff also closes the connection
/// after the answer (the server closes first, so the client's tuple is free at once).
fn serve(lab: &RouterLab, i: usize) {
    let s = &lab.servers[i];
    s.ns.ip(&["addr", "add", "10.200.0.1/32", "dev", "lo"]);
    let listener: TcpListener = s
        .ns
        .run(|| TcpListener::bind(SocketAddrV4::new(VIP, TCP_PORT)).expect("listen on the VIP"));
    let me = (i + 1) as u8;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                while matches!(c.read(&mut b), Ok(1)) {
                    if c.write_all(&[me]).is_err() || b[0] == 0xff {
                        return;
                    }
                }
            });
        }
    });
}

/// Each server answers every UDP datagram to the VIP with its own number (after [`serve`],
/// which puts the VIP on its loopback).
fn serve_udp(lab: &RouterLab, i: usize) {
    let sock = lab.servers[i]
        .ns
        .run(|| UdpSocket::bind(SocketAddrV4::new(VIP, UDP_PORT)).expect("UDP on the VIP"));
    let me = (i + 1) as u8;
    std::thread::spawn(move || {
        let mut b = [0u8; 16];
        while let Ok((_, from)) = sock.recv_from(&mut b) {
            let _ = sock.send_to(&[me], from);
        }
    });
}

/// One datagram from `from` to the VIP: the number of the server that answered.
fn ask_udp(lab: &RouterLab, from: SocketAddrV4) -> u8 {
    lab.client.run(|| {
        let s = UdpSocket::bind(from).expect("bind");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        s.send_to(&[0], SocketAddrV4::new(VIP, UDP_PORT))
            .expect("send");
        let mut b = [0u8; 1];
        s.recv(&mut b)
            .unwrap_or_else(|e| panic!("UDP answer to {from}: {e}"));
        b[0]
    })
}

fn connect(lab: &RouterLab, src: Ipv4Addr) -> TcpStream {
    connect_from(lab, SocketAddrV4::new(src, 0))
}

fn connect_from(lab: &RouterLab, from: SocketAddrV4) -> TcpStream {
    let src = *from.ip();
    lab.client.run(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("tcp");
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        s.bind(&SockAddr::from(from)).expect("bind");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        s.connect_timeout(
            &SockAddr::from(SocketAddrV4::new(VIP, TCP_PORT)),
            std::time::Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("connect from {src}: {e}"));
        s.into()
    })
}

fn ask(c: &mut TcpStream) -> u8 {
    c.write_all(&[0]).expect("write");
    let mut b = [0u8; 1];
    c.read_exact(&mut b).expect("reply");
    b[0]
}

#[test]
fn vip_mode_steers_tcp_by_slice_and_pin_keeps_established_connections() {
    steers_and_pins(Pin::Nft);
}

/// Issue 16, item 5: the same on the tc program: the pinned connection and UDP flow stay on
/// their member after the re-point, with their pins in the program's flow table (none in
/// nftables' flow tables), and the program forwarded them.
#[test]
fn bpf_pin_keeps_established_connections_on_their_member_after_a_repoint() {
    steers_and_pins(Pin::Bpf);
}

fn steers_and_pins(dataplane: Pin) {
    let mut lab = RouterLab::new(
        2,
        &format!(
            "{}[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\npin = true\n",
            dataplane.config()
        ),
    );
    serve(&lab, 0);
    serve(&lab, 1);
    serve_udp(&lab, 0);
    serve_udp(&lab, 1);
    lab.start();
    lab.join(0, &[Slice::new(0, 1)], 1);
    lab.join(1, &[Slice::new(1, 1)], 1);
    wait_for("both members routed", || {
        let s = lab.status();
        s.ownership.len() == 2 && s.vips.first().is_some_and(|v| v.members.len() == 2)
    });
    // Routes and rules (written over rtnetlink, issue 16): one fwmark rule and one route per
    // member, in the member's table.
    let rules = lab.router.ip(&["rule", "show"]);
    assert_eq!(rules.matches("fwmark").count(), 2, "{rules}");
    for (m, server) in [(1u32, 0usize), (2, 1)] {
        let table = (0x4d43_0000 + m).to_string();
        assert!(
            rules.contains(&format!("fwmark {:#x} lookup {table}", 0x4d43_0000 | m)),
            "{rules}"
        );
        let routes = lab.router.ip(&["route", "show", "table", &table]);
        assert!(
            routes.contains(&format!("10.200.0.1 via {}", lab.servers[server].addr)),
            "{routes}"
        );
    }
    let sources = client_sources(6);
    for &src in &sources {
        let want = if u32::from(src) & 1 == 0 { 1 } else { 2 };
        assert_eq!(ask(&mut connect(&lab, src)), want, "{src}");
    }
    let even = sources[0];
    let mut pinned = connect(&lab, even);
    assert_eq!(ask(&mut pinned), 1);
    // A connection from a port used again after the reallocation (closed by the server first,
    // so the tuple is free at once).
    let reused = SocketAddrV4::new(sources[2], 41_000);
    c_close(connect_from(&lab, reused));
    // Issue 16, item 5: the client's packets were forwarded at ingress by the fast path, with
    // the pin in its flow table, not in conntrack.
    let fast = fast_forwarded(&lab);
    assert!(
        fast.get("m1_10_0_1_2").is_some_and(|&n| n > 0)
            && fast.get("m2_10_0_2_2").is_some_and(|&n| n > 0),
        "{fast:?}"
    );
    assert_eq!(conntracked_to_vip(&lab), 0);
    let udp_flow = SocketAddrV4::new(even, 42_000);
    assert_eq!(
        ["c0", "s1", "s2"].map(|d| bpf_attached(&lab, d)),
        [dataplane == Pin::Bpf; 3]
    );
    // Status says what carries the pins.
    let path = if dataplane == Pin::Bpf { "tc" } else { "nft" };
    assert_eq!(lab.status().pin_dataplane, path);
    if dataplane == Pin::Bpf {
        assert_eq!(ask_udp(&lab, udp_flow), 1);
        let flows = bpf_flows(&lab);
        let pinned_at = pinned.local_addr().expect("local address");
        let std::net::SocketAddr::V4(pinned_at) = pinned_at else {
            panic!("IPv4")
        };
        // The open connection: member 1, open (5 days); the closed one: closing (120 s); the
        // UDP flow: member 1, UDP's state.
        assert_eq!(flows.get(&(pinned_at, 8080, 6)), Some(&(1, 1)), "{flows:?}");
        assert_eq!(flows.get(&(reused, 8080, 6)), Some(&(1, 2)), "{flows:?}");
        assert_eq!(flows.get(&(udp_flow, 5353, 17)), Some(&(1, 3)), "{flows:?}");
        // nftables' flow tables saw none of it.
        for map in ["pin_10_200_0_1", "fin_10_200_0_1", "upin_10_200_0_1"] {
            let pins = lab
                .router
                .exec("nft", &["list", "map", "netdev", "manycast_vip", map]);
            assert!(!pins.contains("0xa01"), "{pins}");
        }
    } else {
        nft_pins_sit_where_conntrack_would(&lab, even, udp_flow);
    }

    // Member 2 takes everything: new connections go to server 2, the established one stays.
    lab.join(1, &[Slice::ALL], 2);
    wait_for("member 2 owns everything", || {
        lab.status().ownership.len() == 1
    });
    let before = fast_forwarded(&lab);
    assert_eq!(ask(&mut connect(&lab, even)), 2);
    assert_eq!(ask(&mut pinned), 1, "pinned connection moved");
    // The UDP flow keeps its member too; a new one from the same source follows the map.
    assert_eq!(ask_udp(&lab, udp_flow), 1, "pinned UDP flow moved");
    assert_eq!(ask_udp(&lab, SocketAddrV4::new(even, 42_001)), 2);
    // The pinned connection stayed on the fast path: member 1's chain counted its segment.
    assert!(fast_forwarded(&lab)["m1_10_0_1_2"] > before["m1_10_0_1_2"]);
    // A new connection on a tuple pinned before follows the map (its SYN drops the old pin).
    assert_eq!(
        ask(&mut connect_from(&lab, reused)),
        2,
        "a reused tuple kept its pin"
    );
    for &src in &sources {
        assert_eq!(ask(&mut connect(&lab, src)), 2, "{src}");
    }
    assert!(lab.status().counters.nft_transactions >= 2);

    // Clean shutdown removes the table and the rules (and the tc program with its pins).
    assert!(lab.stop().success());
    let tables = lab.router.exec("nft", &["list", "tables"]);
    assert!(!tables.contains("manycast_verifier"), "{tables}");
    let rules = lab.router.ip(&["rule", "show"]);
    assert!(!rules.contains("fwmark"), "{rules}");
    assert!(!["c0", "s1", "s2"].iter().any(|d| bpf_attached(&lab, d)));
    assert!(!lab.pin_dir.join(bpf::FLOWS).exists());
}

/// Issue 16, item 5: where the tc program cannot run (here its pin directory is on no bpf
/// filesystem, as on a host without one mounted), pin mode runs on nftables, saying so once,
/// and still keeps a pinned connection on its member across a re-point.
#[test]
fn bpf_pin_falls_back_to_nft_with_one_warning() {
    let dir = std::env::temp_dir().join(format!("mc-not-bpffs-{}", std::process::id()));
    let mut lab = RouterLab::new(
        2,
        &format!(
            "[vip_pin]\ndataplane = \"bpf\"\npin_dir = \"{}\"\n[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\npin = true\n",
            dir.display()
        ),
    );
    serve(&lab, 0);
    serve(&lab, 1);
    lab.start();
    lab.join(0, &[Slice::new(0, 1)], 1);
    lab.join(1, &[Slice::new(1, 1)], 1);
    wait_for("both members routed", || {
        let s = lab.status();
        s.ownership.len() == 2 && s.vips.first().is_some_and(|v| v.members.len() == 2)
    });
    let even = client_sources(2)[0];
    let mut pinned = connect(&lab, even);
    assert_eq!(ask(&mut pinned), 1);
    lab.join(1, &[Slice::ALL], 2);
    wait_for("member 2 owns everything", || {
        lab.status().ownership.len() == 1
    });
    assert_eq!(ask(&mut connect(&lab, even)), 2);
    assert_eq!(ask(&mut pinned), 1, "pinned connection moved");
    assert!(!bpf_attached(&lab, "c0"));
    assert_eq!(
        lab.status().pin_dataplane,
        "nft",
        "status says pins fell back"
    );
    let pins = lab.router.exec(
        "nft",
        &["list", "map", "netdev", "manycast_vip", "pin_10_200_0_1"],
    );
    assert!(pins.contains("0xa010002 . 0x"), "{pins}");
    let log = lab.log();
    assert_eq!(
        log.matches("VIP pin mode runs on nftables").count(),
        1,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// nftables' flow tables after the first connections (pin mode on `nft`).
fn nft_pins_sit_where_conntrack_would(lab: &RouterLab, even: Ipv4Addr, udp_flow: SocketAddrV4) {
    // Flow keys are `source . sport << 16 | dport`, both raw (hexadecimal in `nft list`), one
    // set of tables per protocol (issue 16, item 5): 10.1.0.2 is 0xa010002, 41000 . 8080
    // 0xa0281f90, UDP's 42000 . 5353 0xa41014e9.
    let pins = lab.router.exec(
        "nft",
        &["list", "map", "netdev", "manycast_vip", "pin_10_200_0_1"],
    );
    assert!(pins.contains("0xa010002 . 0x"), "{pins}");
    // Timeouts like conntrack's: the open connection's pin lasts days; the closed one's tuple
    // is not forgotten at its FIN but moved to the closing table (120 s).
    assert!(
        pins.lines()
            .any(|l| l.contains("0xa010002 . 0x") && l.contains("expires 4d")),
        "{pins}"
    );
    assert!(!pins.contains("0xa010004 . 0xa0281f90 "), "{pins}");
    let closing = lab.router.exec(
        "nft",
        &["list", "map", "netdev", "manycast_vip", "fin_10_200_0_1"],
    );
    assert!(closing.contains("0xa010004 . 0xa0281f90 "), "{closing}");
    // A UDP flow: pinned in UDP's own table (with UDP's 120 s), not in TCP's.
    assert_eq!(ask_udp(lab, udp_flow), 1);
    let udp_pins = lab.router.exec(
        "nft",
        &["list", "map", "netdev", "manycast_vip", "upin_10_200_0_1"],
    );
    assert!(
        udp_pins
            .lines()
            .any(|l| l.contains("0xa010002 . 0xa41014e9 ") && l.contains("timeout 2m")),
        "{udp_pins}"
    );
    let pins = lab.router.exec(
        "nft",
        &["list", "map", "netdev", "manycast_vip", "pin_10_200_0_1"],
    );
    assert!(!pins.contains("0xa41014e9"), "{pins}");
    let _ = even;
}

/// One request on an established connection; `Err` when it was reset or went quiet.
fn try_ask(c: &mut TcpStream) -> std::io::Result<u8> {
    c.write_all(&[0])?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b)?;
    Ok(b[0])
}

#[test]
fn vip_mode_without_pin_moves_established_connections_with_their_slice() {
    let mut lab = RouterLab::new(
        2,
        "[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\n",
    );
    serve(&lab, 0);
    serve(&lab, 1);
    lab.start();
    lab.join(0, &[Slice::new(0, 1)], 1);
    lab.join(1, &[Slice::new(1, 1)], 1);
    wait_for("both members routed", || {
        let s = lab.status();
        s.ownership.len() == 2 && s.vips.first().is_some_and(|v| v.members.len() == 2)
    });
    let sources = client_sources(2);
    let (even, odd) = (sources[0], sources[1]);
    let mut moved = connect(&lab, even);
    assert_eq!(ask(&mut moved), 1);
    let mut stays = connect(&lab, odd);
    assert_eq!(ask(&mut stays), 2);
    let fast = fast_forwarded(&lab);
    assert!(
        fast.get("m1_10_0_1_2").is_some_and(|&n| n > 0)
            && fast.get("m2_10_0_2_2").is_some_and(|&n| n > 0),
        "{fast:?}"
    );

    // Member 2 takes everything. Without pin, the even source's next segment is routed to
    // server 2, which has no such connection and answers with a reset: the connection breaks
    // (with pin it would stay on server 1, see the test above). The odd source's connection
    // was on server 2 already and carries on.
    lab.join(1, &[Slice::ALL], 2);
    wait_for("member 2 owns everything", || {
        lab.status().ownership.len() == 1
    });
    let r = try_ask(&mut moved);
    assert!(
        r.is_err(),
        "an established connection kept its server without pin: {r:?}"
    );
    assert_eq!(ask(&mut stays), 2);
    assert_eq!(ask(&mut connect(&lab, even)), 2);
    let ruleset = lab
        .router
        .exec("nft", &["list", "table", "ip", "manycast_verifier"]);
    assert!(!ruleset.contains("ct mark"), "{ruleset}");
    // Issue 16, item 5: forwarded at ingress by the fast path (no mark, no policy route); member
    // 1's chain went with its last slice.
    let fast = fast_forwarded(&lab);
    assert!(fast.get("m2_10_0_2_2").is_some_and(|&n| n > 0), "{fast:?}");
    assert!(!fast.contains_key("m1_10_0_1_2"), "{fast:?}");
}

/// Asks once with the closing byte, reads the server's close, and closes.
fn c_close(mut c: TcpStream) {
    c.write_all(&[0xff]).expect("write");
    let mut b = [0u8; 2];
    let n = c.read(&mut b).expect("reply");
    assert_eq!(n, 1);
    assert_eq!(c.read(&mut b).expect("the server's close"), 0);
}

/// SIGKILLs the running verifier and waits until it is gone (a zombie of the test process).
fn kill_verifier(lab: &RouterLab) {
    let pid = lab.daemon_pid().expect("verifier running");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    wait_for("the verifier killed", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    });
}

/// Members 1 and 2 join `halves` at `epoch` after a verifier restart; waits until both are
/// routed and the adopt grace's rewrite has replaced the tables the verifier found.
fn rejoin_after_grace(lab: &RouterLab, halves: [Slice; 2], epoch: u64) {
    lab.join(0, &[halves[0]], epoch);
    lab.join(1, &[halves[1]], epoch);
    wait_for("both members routed", || {
        let s = lab.status();
        s.ownership.len() == 2 && s.vips.first().is_some_and(|v| v.members.len() == 2)
    });
    // The kept tables steer until the grace ends, then are rewritten.
    wait_for("the table rewritten after the grace", || {
        lab.status().counters.nft_rewrites >= 1
    });
}

/// Issue 16, item 5: pins outlive the verifier. A pinned keep-alive connection stays on the
/// member it started on across a SIGKILL and restart (the new verifier rewrites the whole
/// fast-path table), and another across SIGTERM with `keep_kernel_state`, while its slice moved
/// to the other member meanwhile; new connections follow the map.
#[test]
fn pins_survive_a_verifier_restart_and_a_table_rewrite() {
    pins_survive_restarts(Pin::Nft);
}

/// Issue 16, item 5: the same on the tc program: its maps are pinned and its filter stays
/// attached, so the killed verifier's program keeps forwarding the pins, and the next one
/// replaces it in place and keeps the flow table.
#[test]
fn bpf_pins_survive_a_verifier_restart() {
    pins_survive_restarts(Pin::Bpf);
}

fn pins_survive_restarts(dataplane: Pin) {
    let mut lab = RouterLab::new(
        2,
        &format!(
            "{}[shutdown]\nkeep_kernel_state = true\n[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\npin = true\n",
            dataplane.config()
        ),
    );
    serve(&lab, 0);
    serve(&lab, 1);
    lab.start();
    let both = |lab: &RouterLab| {
        wait_for("both members routed", || {
            let s = lab.status();
            s.ownership.len() == 2 && s.vips.first().is_some_and(|v| v.members.len() == 2)
        })
    };
    lab.join(0, &[Slice::new(0, 1)], 1);
    lab.join(1, &[Slice::new(1, 1)], 1);
    both(&lab);
    let sources = client_sources(2);
    let (even, odd) = (sources[0], sources[1]);
    let mut first = connect(&lab, even);
    assert_eq!(ask(&mut first), 1);

    // SIGKILL; the next verifier writes the whole table (what the kernel holds is unknown to
    // it); the members come back with their halves swapped.
    kill_verifier(&lab);
    if dataplane == Pin::Bpf {
        // With no verifier running, the filter it attached still forwards the pin.
        assert!(bpf_attached(&lab, "c0"));
        let before = fast_forwarded(&lab)["m1_10_0_1_2"];
        assert_eq!(ask(&mut first), 1);
        assert!(fast_forwarded(&lab)["m1_10_0_1_2"] > before);
    }
    lab.start();
    rejoin_after_grace(&lab, [Slice::new(1, 1), Slice::new(0, 1)], 2);
    assert_eq!(
        ask(&mut connect(&lab, even)),
        2,
        "new connections follow the map"
    );
    assert_eq!(
        try_ask(&mut first).ok(),
        Some(1),
        "a pinned connection left its member after SIGKILL and a rewrite"
    );
    let mut second = connect(&lab, odd);
    assert_eq!(ask(&mut second), 1);

    // SIGTERM with keep_kernel_state: the table stays; the next verifier rewrites it.
    assert!(lab.stop().success());
    lab.start();
    rejoin_after_grace(&lab, [Slice::new(0, 1), Slice::new(1, 1)], 3);
    assert_eq!(
        ask(&mut connect(&lab, odd)),
        2,
        "new connections follow the map"
    );
    assert_eq!(
        try_ask(&mut second).ok(),
        Some(1),
        "a pinned connection left its member after SIGTERM (kept state) and a rewrite"
    );
    assert_eq!(try_ask(&mut first).ok(), Some(1));
    if dataplane == Pin::Bpf {
        // Both connections were carried by the program, pinned to member 1, and it is still
        // attached once (replaced in place, not stacked).
        let flows = bpf_flows(&lab);
        for c in [&first, &second] {
            let std::net::SocketAddr::V4(at) = c.local_addr().expect("local address") else {
                panic!("IPv4")
            };
            assert_eq!(flows.get(&(at, 8080, 6)), Some(&(1, 1)), "{flows:?}");
        }
        let filters = lab
            .router
            .exec("tc", &["filter", "show", "dev", "c0", "ingress"]);
        assert_eq!(filters.matches(" name vip_pin ").count(), 1, "{filters}");
        let pins = lab.router.exec(
            "nft",
            &["list", "map", "netdev", "manycast_vip", "pin_10_200_0_1"],
        );
        assert!(!pins.contains("0xa01"), "{pins}");
    }
}

/// A verifier killed and restarted leaves the service up while its members re-join: the VIP
/// table the killed one left steers every client until the adopt grace ends, even after some
/// members have answered. The first join used to rewrite it with that member alone, and the
/// clients of every member not yet back were dropped.
#[test]
fn a_restarted_verifier_keeps_the_vip_table_it_found_until_its_grace_ends() {
    let mut lab = RouterLab::new(
        2,
        "[native]\nadopt_grace_ms = 8000\n[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\n",
    );
    serve(&lab, 0);
    serve(&lab, 1);
    lab.start();
    lab.join(0, &[Slice::new(0, 1)], 1);
    lab.join(1, &[Slice::new(1, 1)], 1);
    wait_for("both members routed", || {
        lab.status()
            .vips
            .first()
            .is_some_and(|v| v.members.len() == 2)
    });
    let sources = client_sources(2);
    let (even, odd) = (sources[0], sources[1]);
    assert_eq!(ask(&mut connect(&lab, odd)), 2);

    kill_verifier(&lab);
    lab.start();
    // Member 1 answers the startup query first; member 2 has not yet.
    lab.join(0, &[Slice::new(0, 1)], 2);
    wait_for("member 1 back", || lab.status().ownership.len() == 1);
    assert_eq!(
        ask(&mut connect(&lab, odd)),
        2,
        "a client of the member not yet back is still served"
    );
    assert_eq!(ask(&mut connect(&lab, even)), 1);
    assert_eq!(lab.status().counters.nft_rewrites, 0, "held, not rewritten");

    rejoin_after_grace(&lab, [Slice::new(0, 1), Slice::new(1, 1)], 2);
    assert_eq!(ask(&mut connect(&lab, odd)), 2);
    assert_eq!(ask(&mut connect(&lab, even)), 1);
}
