//! IPv6 native steering (issue 15): the verifier's `netdev manycast6` table (SPEC.md §10.2.2)
//! against plain IPv6 routing of the same datagrams, in one lab and one run, measured as IPv4
//! native mode is (`main.rs`): the same generator (whole Ethernet frames from a packet socket,
//! 64 flows, same payload), the same sinks (an `ip6` table at each server's prerouting), the same
//! interleaved rounds and the same new-source steps.
//!
//! The lab is the IPv4 native one made dual-stack, as the namespace test `tests/modes/native6.rs`
//! builds it: members certified for every IPv6 slice of the fixture's GROUP6, `protected6`, the
//! group's keys in the key file, both member links on the fixture's LINK6 with the members at
//! fe80::1 and fe80::2. Member 1 joins for the even half of the one-bit /56 site slicing (bit 72
//! of the source clear), member 2 for the odd half, so the table's map for the group has one
//! element per member (`ip6 saddr & mask` looked up once). Plain routing needs addresses of its own: each server also has
//! 2001:db8:10:i::2 on its link (the router ::1), and a flow's plain datagram goes there.
//!
//! `vip6_ratio`: in a second lab of the same kind with an IPv6 VIP (SPEC.md §10.3.1, no pin)
//! bound to GROUP6, the same 64 flows sent to the VIP in frames to the router (steered by the
//! `manycast_vip6` table) against plain IPv6 routing of the same datagrams to the owners'
//! addresses in the same namespaces, 7 interleaved rounds, as `native6_ratio` is measured. There
//! is no IPv6 multicast routing in the verifier (no MFC6 data plane): new sources cost the table
//! nothing more than any other packet, as IPv4's on nft.
//!
//! `vip6_pin_ratio`: the same with the VIP pinned on the tc program (`pin = true`, `[vip_pin]
//! dataplane = "bpf"`, SPEC.md §10.3.1), in a third lab, measured as `vip6_ratio` is: each of
//! the 64 flows is pinned at its first datagram and every later one takes the program's flow
//! table (`mc_flows6`) and hop (`mc_hops6`, whose counters the run prints).

use crate::harness::cmd::{run_with_timeout, DEFAULT_TIMEOUT};
use crate::harness::netns::Netns;
use crate::harness::topo::{wait_for, wall_now, RouterLab, PORT};
use crate::{
    compare, delivered, install_sinks, link_addr, perf_start, perf_stop, refreshing, send_batch,
    send_paced, Verdict, Workload, FLOWS, NEW_SOURCE_RATES, VERIFIER_NICE,
};
use igmp_ext::fixtures::{Fixture, GROUP6};
use igmp_ext::mld_join::{build_mld_datagram, build_signed_mld_report};
use igmp_ext::SliceSet6;
use manycast_verifier::keyfile::FileKeySource;
use nix::sys::socket::{MultiHeaders, SockaddrIn6};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where the forwarding phases' sources live (flow k: bit 72 = k's low bit, host part k + 1).
/// New sources count up from NEW_SOURCE6_BASE the same way.
const FLOW6_BASE: u128 = 0x2001_0db8_0100_0000_0000_0000_0000_0000;
const NEW_SOURCE6_BASE: u128 = 0x2001_0db8_8000_0000_0000_0000_0000_0000;
/// The IPv4 datagrams' payload length, so that only the headers differ.
const PAYLOAD: usize = 18;
static NONCE6: AtomicU64 = AtomicU64::new(1);

/// The IPv6 figures of one run.
pub(crate) struct Figures6 {
    /// Median of the per-round ratios steered / plain, and the medians of each (pps).
    pub native6_ratio: f64,
    pub steered: f64,
    pub plain: f64,
    pub new_sources6_per_s: u32,
    pub first_packet_loss6: f64,
    /// The IPv6 VIP against plain IPv6 routing: median ratio, steered and plain medians (pps).
    pub vip6: (f64, f64, f64),
    /// The same, the VIP pinned on the tc program.
    pub vip6_pin: (f64, f64, f64),
}

/// The IPv6 VIP bench's VIP (the tests' one).
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x80);

/// Source `n` of a series from `base`: the one-bit site slice of `n`'s low bit, so that
/// consecutive sources alternate between the two members.
fn source(base: u128, n: u64) -> Ipv6Addr {
    Ipv6Addr::from(base | (u128::from(n & 1) << 72) | u128::from((n >> 1) + 1))
}

/// One IPv6/UDP datagram to `PORT` with the IPv4 datagram's payload (a sequence number first),
/// hop limit 16, the UDP checksum filled in (IPv6 requires one).
fn datagram6(src: Ipv6Addr, dst: Ipv6Addr, seq: u32) -> Vec<u8> {
    let udp_len = 8 + PAYLOAD;
    let mut p = vec![0u8; 40 + udp_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 16;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&40_000u16.to_be_bytes());
    p[42..44].copy_from_slice(&PORT.to_be_bytes());
    p[44..46].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[48..52].copy_from_slice(&seq.to_be_bytes());
    // The pseudo-header (addresses, length, next header), then the UDP header and payload.
    let words = |b: &[u8]| {
        b.chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum::<u32>()
    };
    let mut sum = words(&p[8..40]) + words(&(udp_len as u32).to_be_bytes()) + 17 + words(&p[40..]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = !(sum as u16);
    p[46..48].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
    p
}

/// `datagram6` in an Ethernet frame to `dst_mac`.
fn frame6(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40 + 8 + PAYLOAD);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&datagram6(src, dst, seq));
    f
}

/// The multicast MAC address of an IPv6 group (RFC 2464 §7).
fn group_mac6(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Server `i`'s (0-based) own address for plain routing, and the router's on that link.
fn plain_addr(i: usize, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x10, i as u16 + 1, 0, 0, 0, host)
}

/// The dual-stack native lab (see the module's comment), verifier started.
fn lab6() -> RouterLab {
    let mut lab = dual_stack_lab();
    lab.start();
    lab
}

/// [`lab6`] before its verifier starts.
fn dual_stack_lab() -> RouterLab {
    dual_stack_lab_with("")
}

/// [`dual_stack_lab`] with `extra` appended to the verifier's config.
fn dual_stack_lab_with(extra: &str) -> RouterLab {
    let fixture = Fixture::dual_stack(2, SliceSet6::full());
    let mut lab = RouterLab::with_fixture(
        fixture.clone(),
        &format!("[verifier]\nprotected6 = [\"ff3e::/32\"]\n{extra}"),
    );
    lab.log_filter = "info".into();
    lab.nice = Some(VERIFIER_NICE);
    let keys = FileKeySource::render(&[fixture.group_keys()])
        + &FileKeySource::render6(&[(*fixture.key_source6()[&GROUP6]).clone()]);
    std::fs::write(lab.dir.join("keys.toml"), keys).expect("key file");
    let add = |ns: &Netns, addr: String, dev: &str| {
        ns.ip(&["-6", "addr", "add", &addr, "dev", dev, "nodad"]);
    };
    for (i, s) in lab.servers.iter().enumerate() {
        let rif = format!("s{}", i + 1);
        // LINK6, which the verifier reads from its interfaces at start and every join signs.
        add(&lab.router, format!("2001:db8:0:1::{}/64", 0x100 + i), &rif);
        add(&s.ns, format!("{}/64", fixture.addr6(i)), &s.ifname);
        add(&lab.router, format!("{}/64", plain_addr(i, 1)), &rif);
        add(&s.ns, format!("{}/64", plain_addr(i, 2)), &s.ifname);
    }
    add(&lab.router, "2001:db8:1::1/64".into(), "c0");
    add(&lab.client, "2001:db8:1::2/64".into(), "cl0");
    lab.router.sysctl("net.ipv6.conf.all.forwarding", "1");
    install_sinks(&lab, "ip6");
    lab
}

/// Sends one complete IPv6 packet as it is out of `ifname` of `ns` (IPPROTO_RAW implies
/// IPV6_HDRINCL on Linux), as `tests/modes/mld.rs` does.
fn send_raw_v6(ns: &Netns, ifname: &str, packet: &[u8]) {
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).expect("16 bytes"));
    let dst = SocketAddrV6::new(dst, 0, 0, ns.ifindex(ifname));
    let sent = ns.run(|| {
        raw_socket6(ifname)
            .send_to(packet, &SockAddr::from(dst))
            .expect("send raw IPv6 packet")
    });
    assert_eq!(sent, packet.len(), "short raw send");
}

fn raw_socket6(ifname: &str) -> Socket {
    let s = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("raw IPv6 socket");
    s.bind_device(Some(ifname.as_bytes()))
        .expect("SO_BINDTODEVICE");
    s
}

/// Signed MLDv2 joins for the even half (member 1) and the odd half (member 2) of the one-bit
/// site slicing; sent again before every phase, as the IPv4 owners' (claims expire).
fn refresh6(lab: &RouterLab) {
    let f = &lab.fixture;
    for (i, unit) in SliceSet6::site_slicing(1).into_iter().enumerate() {
        let claims = f.claims6(
            &[unit],
            1,
            wall_now(),
            NONCE6.fetch_add(1, Ordering::Relaxed),
        );
        let m = &f.members[i];
        let mld = build_signed_mld_report(&claims, f.addr6(i), &m.cert, &m.key).expect("fits");
        let s = &lab.servers[i];
        send_raw_v6(&s.ns, &s.ifname, &build_mld_datagram(f.addr6(i), &mld));
    }
}

/// `nft -j list table netdev manycast6` in the router; `None` while there is no table.
fn table6_json(lab: &RouterLab) -> Option<serde_json::Value> {
    let out = run_with_timeout(
        "ip",
        &[
            "netns",
            "exec",
            lab.router.name(),
            "nft",
            "-j",
            "list",
            "table",
            "netdev",
            "manycast6",
        ],
        DEFAULT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("nft JSON"))
}

/// Per member: datagrams its hop chain's `counter fwd` sent toward it (chains `m<member>_…`).
fn forwarded6(lab: &RouterLab) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    let Some(v) = table6_json(lab) else {
        return out;
    };
    for rule in v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"))
    {
        let member = rule["chain"]
            .as_str()
            .and_then(|c| c.strip_prefix('m')?.split('_').next()?.parse::<u32>().ok());
        let packets = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| e.pointer("/counter/packets")?.as_u64());
        if let (Some(m), Some(p)) = (member, packets) {
            *out.entry(m).or_insert(0) += p;
        }
    }
    out
}

/// Whether the table sends each half to its member's hop (`fwd` to fe80::1 on s1, ::2 on s2).
fn steering_both(lab: &RouterLab) -> bool {
    let hops: Vec<String> = table6_json(lab)
        .into_iter()
        .flat_map(|v| v["nftables"].as_array().cloned().unwrap_or_default())
        .filter_map(|o| o.get("rule").cloned())
        .filter_map(|r| r["expr"].as_array().cloned())
        .flatten()
        .filter_map(|e| e.get("fwd").map(|f| f.to_string()))
        .collect();
    ["fe80::1", "fe80::2"]
        .iter()
        .all(|a| hops.iter().any(|h| h.contains(&format!("\"{a}\""))))
}

/// Steered: each flow's datagram to GROUP6, in a frame to the group's MAC address. Plain: the
/// same source's datagram to its owner's own address, in a frame to the router.
fn workloads(lab: &RouterLab) -> (Workload, Workload) {
    let router_mac = lab.router.run(|| link_addr("c0")).addr().expect("c0 MAC");
    let client_mac = lab.client.run(|| link_addr("cl0")).addr().expect("cl0 MAC");
    let w = |dst: &dyn Fn(u32) -> (Ipv6Addr, [u8; 6])| Workload {
        packets: (0..FLOWS)
            .map(|k| {
                let (d, mac) = dst(k);
                frame6(mac, client_mac, source(FLOW6_BASE, u64::from(k)), d, k)
            })
            .collect(),
        dsts: vec![None; FLOWS as usize],
    };
    let steered = w(&|_| (GROUP6, group_mac6(GROUP6)));
    let plain = w(&|k| (plain_addr((k & 1) as usize, 2), router_mac));
    (steered, plain)
}

/// IPv6 native steering vs plain IPv6 routing, then the new-source steps, in a fresh lab.
pub(crate) fn run() -> Figures6 {
    // Flow and new sources alternate between the two members' units (a check of this file's
    // arithmetic, not of a figure).
    let units = SliceSet6::site_slicing(1);
    for n in 0..4 {
        assert!(units[(n & 1) as usize].contains_addr(source(FLOW6_BASE, n)));
        assert!(units[(n & 1) as usize].contains_addr(source(NEW_SOURCE6_BASE, n)));
    }
    let lab = lab6();
    refresh6(&lab);
    wait_for("the IPv6 table steering both halves", || {
        steering_both(&lab)
    });
    let (steered, plain) = workloads(&lab);
    // Neighbours (the members' link-local hops, the servers' addresses) resolved before the
    // figures, as the IPv4 native lab's are by the time it measures.
    steered.blast(&lab, Duration::from_millis(50));
    plain.blast(&lab, Duration::from_millis(50));
    let before = forwarded6(&lab);
    let refresh = || refresh6(&lab);
    let (ratio, s, p) = compare(
        "native6",
        (&lab, &steered, &refresh),
        (&lab, &plain, &refresh),
    );
    let after = forwarded6(&lab);
    // Both members' chains carried their half (a rewrite would reset the counters: then the
    // sums go down and the line says so).
    eprintln!(
        "dataplane: native6: forwarded by the table during the phases, per member: {:?} (before {:?})",
        after, before
    );
    let (new_per_s, first_loss) = new_sources6(&lab);
    if std::env::var_os("DATAPLANE_V6_TWIN").is_some() {
        plain_twin(&lab, &plain);
    }
    drop(lab);
    let (vip6, vip6_pin) = (vip6_lab(false), vip6_lab(true));
    Figures6 {
        vip6,
        vip6_pin,
        native6_ratio: ratio,
        steered: s,
        plain: p,
        new_sources6_per_s: new_per_s,
        first_packet_loss6: first_loss,
    }
}

/// The IPv6 new-source steps, as IPv4's on nft: first a burst of 64 with the verifier stopped,
/// then one datagram from each never-seen source at each rate of NEW_SOURCE_RATES; counted as
/// forwarded by the table's member chains and delivered at the servers.
fn new_sources6(lab: &RouterLab) -> (u32, f64) {
    use nix::sys::signal::{kill, Signal};
    let mut next = 0u64;
    let dst = SockaddrIn6::from(SocketAddrV6::new(GROUP6, 0, 0, lab.client.ifindex("cl0")));
    let datagram = |n: u64| datagram6(source(NEW_SOURCE6_BASE, n), GROUP6, n as u32);

    let pid = lab.daemon_pid().expect("verifier running");
    refresh6(lab);
    std::thread::sleep(Duration::from_millis(100));
    let d0 = delivered(lab);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP the verifier");
    let probe: Vec<Vec<u8>> = (0..64).map(datagram).collect();
    let sent = lab.client.run(|| {
        let mut hdrs = MultiHeaders::<SockaddrIn6>::preallocate(probe.len(), None);
        send_batch(
            &raw_socket6("cl0"),
            &mut hdrs,
            &probe,
            &vec![Some(dst); probe.len()],
        )
    });
    next += 64;
    std::thread::sleep(Duration::from_millis(200));
    let while_stopped = delivered(lab) - d0;
    kill(pid, Signal::SIGCONT).expect("SIGCONT the verifier");
    std::thread::sleep(Duration::from_millis(1500));
    eprintln!(
        "dataplane: {sent} new IPv6 sources in one burst while the verifier was stopped: \
         {while_stopped} datagrams delivered while it was stopped, {} once it resumed",
        delivered(lab) - d0
    );

    let mut verdict = Verdict::default();
    for rate in NEW_SOURCE_RATES {
        refresh6(lab);
        let d0 = delivered(lab);
        let f0: u64 = forwarded6(lab).values().sum();
        let perf = (Some(&rate) == NEW_SOURCE_RATES.last())
            .then(|| perf_start(&format!("new-sources6-{rate}")))
            .flatten();
        let first = next;
        let (sent, send_secs) = refreshing(&|| refresh6(lab), || {
            lab.client
                .run(|| send_paced(&raw_socket6("cl0"), dst, rate, |n| datagram(first + n)))
        });
        perf_stop(perf);
        next += sent;
        // As long as IPv4's wait for queued first datagrams, though nothing queues here.
        std::thread::sleep(Duration::from_millis(1500));
        let forwarded = forwarded6(lab).values().sum::<u64>().saturating_sub(f0);
        let got = delivered(lab) - d0;
        let (achieved, loss) = verdict.step(rate, sent, got, send_secs);
        eprintln!(
            "dataplane: new IPv6 sources offered at {rate}/s, achieved {achieved}/s: sent {sent}, \
             forwarded {forwarded}, delivered {got} (lost {loss:.4})"
        );
    }
    verdict.result()
}

/// `DATAPLANE_V6_TWIN=1`, after everything else: plain IPv6 routing in the verifier's namespace
/// against the same through a twin router of the same topology where no verifier ever ran,
/// four times: as measured above (the verifier and its table), with the verifier killed (its
/// table stays, as after a crash), with the table deleted too, and beside a packet socket like
/// the verifier's MLD socket before session 11 (a baseline for a tap's cost; the verifier now
/// receives MLD on a raw ICMPv6 socket). What the verifier's presence
/// costs the IPv6 traffic it does not steer, which the plain side of `native6_ratio` pays, and
/// which part of it is the table's ingress chain. A measuring aid, printed only; in its lines
/// "steered" is plain routing beside the verifier.
fn plain_twin(lab: &RouterLab, plain: &Workload) {
    let twin = dual_stack_lab();
    let (_, twin_plain) = workloads(&twin);
    twin_plain.blast(&twin, Duration::from_millis(50));
    let against_twin = |what: &str| {
        let (ratio, beside, alone) = compare(
            &format!("native6-twin-{what}"),
            (lab, plain, &|| {}),
            (&twin, &twin_plain, &|| {}),
        );
        eprintln!(
            "dataplane: plain IPv6 routing beside {what} {beside:.0} pps vs in a twin without a \
             verifier {alone:.0} pps (medians), ratio {ratio:.3}"
        );
    };
    refresh6(lab);
    against_twin("the-verifier");
    let pid = lab.daemon_pid().expect("verifier running");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        table6_json(lab).is_some(),
        "the table went with the verifier"
    );
    against_twin("its-table-alone");
    lab.router
        .exec("nft", &["delete", "table", "netdev", "manycast6"]);
    against_twin("nothing");
    // Then a socket like the verifier's MLD receive socket alone (`AF_PACKET`, `SOCK_DGRAM`,
    // ETH_P_IPV6, no interface bound, its Hop-by-Hop-only filter), held by this process in the
    // router's namespace: whether that is what the verifier's process costs.
    let tap = lab.router.run(|| {
        let proto = i32::from(0x86ddu16.to_be());
        let s = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(proto)))
            .expect("packet socket");
        s.attach_filter(&[
            socket2::SockFilter::new(0x30, 0, 0, 6),
            socket2::SockFilter::new(0x15, 0, 1, 0),
            socket2::SockFilter::new(0x06, 0, 0, 65_535),
            socket2::SockFilter::new(0x06, 0, 0, 0),
        ])
        .expect("filter");
        s
    });
    against_twin("an-mld-like-packet-socket");
    drop(tap);
}

/// The IPv6 VIP (without pin, or pinned on the tc program) against plain IPv6 routing, in a
/// dual-stack lab of its own.
fn vip6_lab(pin: bool) -> (f64, f64, f64) {
    let (name, pinned) = match pin {
        true => ("vip6-pin", "pin = true\n[vip_pin]\ndataplane = \"bpf\"\n"),
        false => ("vip6", ""),
    };
    let mut lab = dual_stack_lab_with(&format!(
        "[native]\nadopt_grace_ms = 300\n[[vip]]\naddress = \"{VIP6}\"\ngroup = \"{GROUP6}\"\n{pinned}"
    ));
    lab.start();
    refresh6(&lab);
    let table = |lab: &RouterLab| {
        run_with_timeout(
            "ip",
            &[
                "netns",
                "exec",
                lab.router.name(),
                "nft",
                "list",
                "table",
                "netdev",
                "manycast_vip6",
            ],
            DEFAULT_TIMEOUT,
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
    };
    wait_for("the IPv6 VIP table steering both halves", || {
        let t = table(&lab);
        t.contains("fwd ip6 to fe80::1 ") && t.contains("fwd ip6 to fe80::2 ")
    });
    if pin {
        assert_eq!(lab.status().pin_dataplane6, "tc", "{}", lab.log());
    }
    let (_, plain) = workloads(&lab);
    let router_mac = lab.router.run(|| link_addr("c0")).addr().expect("c0 MAC");
    let client_mac = lab.client.run(|| link_addr("cl0")).addr().expect("cl0 MAC");
    let steered = Workload {
        packets: (0..FLOWS)
            .map(|k| {
                frame6(
                    router_mac,
                    client_mac,
                    source(FLOW6_BASE, u64::from(k)),
                    VIP6,
                    k,
                )
            })
            .collect(),
        dsts: vec![None; FLOWS as usize],
    };
    steered.blast(&lab, Duration::from_millis(50));
    plain.blast(&lab, Duration::from_millis(50));
    let refresh = || refresh6(&lab);
    let figures = compare(name, (&lab, &steered, &refresh), (&lab, &plain, &refresh));
    let t = table(&lab);
    eprintln!(
        "dataplane: {name}: the table's hop chains after the phases: {:?}",
        t.lines()
            .filter(|l| l.contains("fwd ip6"))
            .map(str::trim)
            .collect::<Vec<_>>()
    );
    if pin {
        // The program's hops: member → [ifindex, 0, next hop, packets (two halves)].
        let hops = manycast_verifier::sys::bpf::pinned_entries::<u32, [u32; 8]>(
            &lab.pin_dir.join(manycast_verifier::sys::bpf::HOPS6),
        );
        let packets: BTreeMap<u32, u64> = hops
            .unwrap_or_default()
            .into_iter()
            .map(|(m, h)| (m, u64::from(h[7]) << 32 | u64::from(h[6])))
            .collect();
        eprintln!("dataplane: {name}: the tc program forwarded per member {packets:?}");
    }
    figures
}
