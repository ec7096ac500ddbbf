//! `make bench B=dataplane`: the router's data plane in namespaces (client → router → servers),
//! with the real `manycast-verifier` in the router namespace (needs root).
//!
//! - Forwarding: packets per second the router forwards with Manycast steering, against plain
//!   kernel unicast routing of the same packets (same sources, same owners, same router) in the
//!   same run. Native mode: UDP to the group, steered by MFC entries (mroute data plane) or by
//!   the netdev table's `ip saddr & mask` map and `fwd` (nft data plane, kernels without
//!   CONFIG_IP_MROUTE; whichever the verifier chose, `native_dataplane` in the JSON line), vs
//!   the same datagrams sent to the owners' unicast addresses. VIP mode, without and with pin:
//!   UDP to the VIP, steered by the verifier's tables (the fast path at ingress, SPEC.md
//!   §10.3), vs the same datagrams to the owners' addresses through a twin router namespace
//!   where no verifier ran (see [`vip`]). The two variants alternate
//!   several times within the run (the machine is shared, so load changes under us) and the
//!   medians are compared.
//! - New sources: one datagram from each never-seen source address, paced at increasing rates.
//!   On mroute each needs an upcall and an MFC entry before the kernel releases it; per step,
//!   each stage is counted: upcalls received, upcalls the mroute socket dropped, entries
//!   installed, datagrams forwarded (VIF counters) and delivered. On nft there is no upcall and
//!   no per-source state (a new source is forwarded by the same map lookup as any other), so
//!   the same steps measure the table alone: forwarded (the member chains' nft counters) and
//!   delivered. Either way: the highest rate achieved with no first datagram lost, and the
//!   share lost at the target rate (20,000/s). Before the steps, a burst of new sources with
//!   the verifier stopped (SIGSTOP): on mroute it shows how many unresolved (S,G) the kernel
//!   holds; on nft that everything is delivered with no verifier running.
//! - IPv6 ([`v6`], issue 15): native steering on the verifier's `netdev manycast6` table
//!   (SPEC.md §10.2.2) against plain IPv6 routing in the same dual-stack lab, measured as IPv4
//!   native is, and the same new-source steps: `native6_ratio`, `new_sources6_per_s`,
//!   `first_packet_loss6`, and the IPv6 VIP's `vip6_ratio` and, pinned on the tc program,
//!   `vip6_pin_ratio` (`v6.rs`). `DATAPLANE_V6=0`
//!   leaves IPv6 out (its figures null); `DATAPLANE_V6_ONLY=1` runs it alone (no JSON line);
//!   `DATAPLANE_V6_TWIN=1` adds plain IPv6 routing beside the verifier, beside its table alone,
//!   beside nothing and beside a packet socket like its MLD socket against the same through a
//!   twin router without one (printed only).
//! - `DATAPLANE_PERF=<dir>`: one extra phase of each variant under `perf record -a -g`, outside
//!   the figures, into `<dir>/{native,vip}-{steered,plain}.data`, and the last new-source step
//!   (40,000/s; its figures then include perf's cost) into `<dir>/new-sources-40000.data`.
//! - `DATAPLANE_PIN=nft`: the pinned VIP on the nftables flow tables (`[vip_pin] dataplane`);
//!   default the tc program (`bpf`), whose forwarded packets the run prints.
//!
//! The forwarding phases send whole Ethernet frames from a packet socket in the client namespace
//! (any source address, `sendmmsg` batches), so that the generator costs the same in both
//! variants (an IP socket allocates a fresh output dst per multicast packet); the new-source
//! steps send IP datagrams from an `IP_HDRINCL` raw socket. Every server counts and drops them
//! in an nftables rule at prerouting, so
//! what is counted is exactly what the router delivered, and both variants cost the servers the
//! same. No assertion on any figure: a benchmark measures, it does not judge.

#[path = "../../tests/harness/mod.rs"]
mod harness;
mod v6;
mod vip;

use harness::topo::{wait_for, Dataplane, RouterLab, GROUP, PORT};
use igmp_ext::Slice;
use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrIn, SockaddrLike};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Length of one forwarding phase; ROUNDS phases of each variant, interleaved.
const PHASE: Duration = Duration::from_millis(1000);
const ROUNDS: usize = 7;
/// Distinct (source, owner) flows in the forwarding phases: one `sendmmsg` batch.
const FLOWS: u32 = 64;
/// Offered rates of new sources per second, one step of STEP each.
const NEW_SOURCE_RATES: [u32; 6] = [2_000, 5_000, 10_000, 20_000, 30_000, 40_000];
const STEP: Duration = Duration::from_secs(1);
const TARGET_NEW_SOURCES: u32 = 20_000;
/// Takes and give-backs in the re-point phase (each is one or two ownership changes).
const REPOINTS: u64 = 40;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// Niceness of the verifier in the native lab (README: run it above bulk work).
const VERIFIER_NICE: i32 = -15;
/// Where the forwarding phases' sources live: 10.1.1.0/24 (not the client's own addresses, the
/// raw socket writes any source). New sources count up from 10.128.0.0.
const FLOW_BASE: u32 = 0x0a01_0100;
const NEW_SOURCE_BASE: u32 = 0x0a80_0000;

/// One IPv4/UDP datagram to `PORT`, 46 bytes, with a sequence number. The kernel fills in the
/// header checksum, total length and ID on an IPPROTO_RAW socket; the UDP checksum is left 0.
fn datagram(src: Ipv4Addr, dst: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; 46];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&46u16.to_be_bytes());
    p[8] = 16; // TTL: above the MFC threshold of 1
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&40_000u16.to_be_bytes());
    p[22..24].copy_from_slice(&PORT.to_be_bytes());
    p[24..26].copy_from_slice(&26u16.to_be_bytes());
    p[28..32].copy_from_slice(&seq.to_be_bytes());
    p
}

/// The IPv4 header checksum of `ip` (header only, the checksum field taken as zero).
fn fill_ip_checksum(ip: &mut [u8]) {
    ip[10..12].copy_from_slice(&[0, 0]);
    let mut sum: u32 = ip[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// `datagram` in an Ethernet frame to `dst_mac`, with the IP header checksum filled in (a
/// packet socket sends the bytes as they are).
fn frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut ip = datagram(src, dst, seq);
    fill_ip_checksum(&mut ip);
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

/// The link-layer address of `ifname` in the calling thread's namespace.
fn link_addr(ifname: &str) -> nix::sys::socket::LinkAddr {
    nix::ifaddrs::getifaddrs()
        .expect("getifaddrs")
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
        .unwrap_or_else(|| panic!("no link address for {ifname}"))
}

/// The multicast MAC address of an IPv4 group (RFC 1112 §6.4).
fn group_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// A packet socket bound to the client's link, for the forwarding phases: it sends whole
/// frames, so the generator costs the same in both variants. Through an IP socket it does not:
/// a multicast output route is a fresh dst per packet (allocated, then freed by RCU), where
/// unicast reuses the nexthop's cached one (`perf`, NOTES.md).
fn packet_socket() -> Socket {
    let s = Socket::new(Domain::PACKET, Type::RAW, None).expect("packet socket");
    nix::sys::socket::bind(s.as_raw_fd(), &link_addr("cl0")).expect("bind to cl0");
    s
}

fn raw_socket() -> Socket {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("raw socket");
    // Multicast has no route to choose an interface by; all traffic leaves by the client link.
    s.bind_device(Some(b"cl0")).expect("SO_BINDTODEVICE");
    s
}

/// Sends `packets` (one `sendmmsg` each) to `dsts` in a loop; returns datagrams handed to the
/// kernel. `ENOBUFS` just means the link was momentarily full.
fn send_batch<A: SockaddrLike + Copy>(
    s: &Socket,
    hdrs: &mut MultiHeaders<A>,
    packets: &[Vec<u8>],
    dsts: &[Option<A>],
) -> u64 {
    let iovs: Vec<[IoSlice<'_>; 1]> = packets.iter().map(|p| [IoSlice::new(p)]).collect();
    match sendmmsg(s.as_raw_fd(), hdrs, &iovs, dsts, [], MsgFlags::empty()) {
        Ok(r) => r.count() as u64,
        Err(nix::errno::Errno::ENOBUFS | nix::errno::Errno::EAGAIN) => 0,
        Err(e) => panic!("sendmmsg: {e}"),
    }
}

/// One forwarding workload: FLOWS datagrams, each to its flow's destination; Ethernet frames
/// when `dsts` is all `None` (sent through [`packet_socket`]), else IP datagrams.
struct Workload {
    packets: Vec<Vec<u8>>,
    dsts: Vec<Option<SockaddrIn>>,
}

impl Workload {
    /// Flow k comes from FLOW_BASE + k and goes to `dst(k)`, in a frame to the router's
    /// interface on the client link, or to the group's MAC address for a group.
    fn new(lab: &RouterLab, dst: impl Fn(u32) -> Ipv4Addr) -> Workload {
        let router_mac = lab.router.run(|| link_addr("c0")).addr().expect("c0 MAC");
        let client_mac = lab.client.run(|| link_addr("cl0")).addr().expect("cl0 MAC");
        let packets = (0..FLOWS)
            .map(|k| {
                let d = dst(k);
                let mac = if d.is_multicast() {
                    group_mac(d)
                } else {
                    router_mac
                };
                frame(mac, client_mac, Ipv4Addr::from(FLOW_BASE + k), d, k)
            })
            .collect();
        Workload {
            packets,
            dsts: vec![None; FLOWS as usize],
        }
    }

    /// Blasts for `dur` from the client namespace; returns (datagrams sent, seconds).
    /// (datagrams sent, seconds, CPU seconds of the sending thread).
    fn blast(&self, lab: &RouterLab, dur: Duration) -> (u64, f64, f64) {
        lab.client.run(|| {
            let s = packet_socket();
            let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(self.packets.len(), None);
            let start = Instant::now();
            let cpu0 = thread_cpu_secs();
            let mut sent = 0;
            while start.elapsed() < dur {
                for _ in 0..16 {
                    sent += send_batch(&s, &mut hdrs, &self.packets, &self.dsts);
                }
            }
            (
                sent,
                start.elapsed().as_secs_f64(),
                thread_cpu_secs() - cpu0,
            )
        })
    }
}

/// CPU time of the calling thread, in seconds. The forwarding phases' packets are routed, steered
/// and delivered in softirq on the sending thread's own time (veth hands each one to the
/// backlog of the same CPU, run when the sender re-enables bottom halves: `perf`, NOTES.md), so
/// the sender's CPU time per delivered datagram is the whole path's cost per packet, which the
/// other engineers' builds on this shared machine change far less than the packets per second.
fn thread_cpu_secs() -> f64 {
    // `/proc/thread-self/schedstat`: nanoseconds on the CPU first. This kernel has no
    // CONFIG_IRQ_TIME_ACCOUNTING, so softirq work done on the thread's time is counted in it.
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat's first field");
    ns as f64 * 1e-9
}

/// Every server counts and drops the benchmark's datagrams before routing: the count is what
/// the router delivered, and multicast and unicast cost the server the same. `family` is `ip`
/// or `ip6` (the IPv6 lab's, [`v6`]); an IPv4 lab has no IPv6 hook, so nothing else runs for
/// its packets.
fn install_sinks(lab: &RouterLab, family: &str) {
    for s in &lab.servers {
        s.ns.exec("nft", &["add", "table", family, "sink"]);
        s.ns.exec(
            "nft",
            &[&format!(
                "add chain {family} sink pre {{ type filter hook prerouting priority -300; policy accept; }}"
            )],
        );
        s.ns.exec(
            "nft",
            &[&format!(
                "add rule {family} sink pre udp dport 5000 counter drop"
            )],
        );
    }
}

/// Datagrams the servers' sinks (either family) have counted so far, all servers together.
fn delivered(lab: &RouterLab) -> u64 {
    lab.servers
        .iter()
        .map(|s| {
            let json = s.ns.exec("nft", &["-j", "list", "ruleset"]);
            let v: serde_json::Value = serde_json::from_str(&json).expect("nft JSON");
            v["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o.get("rule"))
                .filter(|r| r["table"] == "sink")
                .filter_map(|r| r["expr"].as_array())
                .flatten()
                .filter_map(|e| e.pointer("/counter/packets").and_then(|p| p.as_u64()))
                .sum::<u64>()
        })
        .sum()
}

/// Upcalls the kernel could not queue on the verifier's mroute socket (each loses its first
/// datagram), as the verifier counts them (SO_RXQ_OVFL). The `drops` column of `/proc/net/raw`
/// would also count what the filter of its setsockopt-only IGMP socket refuses.
fn mroute_socket_drops(lab: &RouterLab) -> u64 {
    metric(lab, "socket_drops_total")
}

/// Datagrams the router's kernel counted as multicast forwarded (`/proc/net/snmp`
/// `Ip: ForwDatagrams` counts unicast; multicast shows in the VIFs' PktsOut).
fn vif_packets_out(lab: &RouterLab) -> u64 {
    lab.router
        .proc_net("ip_mr_vif")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(5)?.parse::<u64>().ok())
        .sum()
}

/// A counter from the verifier's Prometheus text (`--metrics`).
fn metric(lab: &RouterLab, name: &str) -> u64 {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_manycast-verifier"))
        .args(["--metrics", "--socket"])
        .arg(&lab.socket)
        .output()
        .expect("manycast-verifier --metrics");
    let text = String::from_utf8_lossy(&out.stdout);
    let key = format!("manycast_verifier_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// With `DATAPLANE_PERF=<dir>`, `perf record -a -g` (the whole machine: the client's sending,
/// the router's forwarding and the servers' sinks run in softirq on whichever CPU) over one
/// phase, into `<dir>/<name>.data`.
fn perf_start(name: &str) -> Option<std::process::Child> {
    let dir = std::env::var("DATAPLANE_PERF").ok()?;
    std::fs::create_dir_all(&dir).ok()?;
    let child = std::process::Command::new("perf")
        .args(["record", "-a", "-g", "-q", "-o"])
        .arg(format!("{dir}/{name}.data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("dataplane: perf record: {e}"))
        .ok()?;
    std::thread::sleep(Duration::from_millis(300)); // perf's own start-up outside the phase
    Some(child)
}

fn perf_stop(child: Option<std::process::Child>) {
    if let Some(mut c) = child {
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = c.wait();
    }
}

/// Delivered datagrams per second for one phase of `w`, run after `refresh()` (the owners'
/// joins again: claims expire); profiled as `profile` when given (see [`perf_start`]).
/// Also the sending thread's CPU nanoseconds per delivered datagram ([`thread_cpu_secs`]).
fn phase(lab: &RouterLab, w: &Workload, refresh: &dyn Fn(), profile: Option<String>) -> (f64, f64) {
    refresh();
    let perf = profile.and_then(|p| perf_start(&p));
    let d0 = delivered(lab);
    let (_, secs, cpu) = w.blast(lab, PHASE);
    perf_stop(perf);
    // Let the backlog drain into the counters.
    std::thread::sleep(Duration::from_millis(100));
    let n = (delivered(lab) - d0) as f64;
    (n / secs, cpu * 1e9 / n.max(1.0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (median of the per-round ratios steered / plain, steered median pps, plain median pps)
/// over ROUNDS interleaved rounds. The order inside a round alternates so that neither variant
/// always runs first, and each ratio pairs two phases a second apart, so that a build starting
/// on the shared machine shifts both sides of one ratio rather than one side of the medians.
/// Beside it, printed only: the sender's CPU time per delivered datagram on each side (the
/// whole path's cost per packet, [`thread_cpu_secs`]) and the median of plain / steered of it
/// per round, the ratio the packets per second would show on a machine of its own.
fn compare(
    what: &str,
    steered: (&RouterLab, &Workload, &dyn Fn()),
    plain: (&RouterLab, &Workload, &dyn Fn()),
) -> (f64, f64, f64) {
    let (mut a, mut b, mut ratios, mut cpu_ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut a_ns, mut b_ns) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        let (s, p) = if r % 2 == 0 {
            let s = phase(steered.0, steered.1, steered.2, None);
            (s, phase(plain.0, plain.1, plain.2, None))
        } else {
            let p = phase(plain.0, plain.1, plain.2, None);
            (phase(steered.0, steered.1, steered.2, None), p)
        };
        a.push(s.0);
        b.push(p.0);
        a_ns.push(s.1);
        b_ns.push(p.1);
        ratios.push(a[r] / b[r]);
        cpu_ratios.push(p.1 / s.1);
        eprintln!(
            "dataplane: {what} round {r}: steered {:.0} pps, plain routing {:.0} pps, ratio {:.3}; \
             sender CPU per datagram: steered {:.0} ns, plain {:.0} ns, plain/steered {:.3}",
            a[r], b[r], ratios[r], s.1, p.1, cpu_ratios[r]
        );
    }
    eprintln!(
        "dataplane: {what}: median sender CPU per datagram: steered {:.0} ns, plain {:.0} ns; \
         median per-round plain/steered {:.3}",
        median(a_ns),
        median(b_ns),
        median(cpu_ratios)
    );
    if std::env::var_os("DATAPLANE_PERF").is_some() {
        // One more phase of each under `perf record`, outside the figures (perf costs CPU).
        let s = phase(
            steered.0,
            steered.1,
            steered.2,
            Some(format!("{what}-steered")),
        );
        let p = phase(plain.0, plain.1, plain.2, Some(format!("{what}-plain")));
        eprintln!(
            "dataplane: {what} profiled (not counted): steered {:.0} pps, plain {:.0} pps",
            s.0, p.0
        );
    }
    (median(ratios), median(a), median(b))
}

/// Owner of flow k: member 1 (server 0) for even sources, member 2 (server 1) for odd.
fn owner_addr(lab: &RouterLab, k: u32) -> Ipv4Addr {
    lab.servers[((FLOW_BASE + k) & 1) as usize].addr
}

/// Signed joins for the even half (member 1) and the odd half (member 2). Sent again before
/// every phase: claims live for the Group Membership Interval (22 s in the lab) and no member
/// agent refreshes them here; an expired claim would turn every new entry into a drop entry.
fn refresh_owners(lab: &RouterLab) {
    lab.join(0, &[Slice::new(0, 1)], 1);
    lab.join(1, &[Slice::new(1, 1)], 1);
}

fn two_owners(lab: &RouterLab) {
    refresh_owners(lab);
    wait_for("two owners", || lab.status().ownership.len() == 2);
}

fn native(lab: &mut RouterLab, dataplane: Dataplane) -> (f64, f64, f64) {
    two_owners(lab);
    let steered = Workload::new(lab, |_| GROUP);
    let plain = Workload::new(lab, |k| owner_addr(lab, k));
    match dataplane {
        Dataplane::Mroute => {
            // One round of upcalls sets up the flows' MFC entries before anything is measured.
            steered.blast(lab, Duration::from_millis(50));
            wait_for("MFC entries for every flow", || {
                lab.status().mfc.len() == FLOWS as usize
            });
        }
        Dataplane::Nft => wait_for("the nft map steering both halves", || {
            lab.steered(GROUP) == BTreeMap::from([(1, 1), (2, 1)])
        }),
    }
    let refresh = || refresh_owners(lab);
    compare("native", (lab, &steered, &refresh), (lab, &plain, &refresh))
}

/// What one step of new sources did, counted at each stage.
struct Step {
    /// Datagrams from new sources handed to the client's kernel.
    sent: u64,
    /// Upcalls the verifier received.
    upcalls: u64,
    /// Upcalls the kernel could not queue on the verifier's socket.
    socket_drops: u64,
    /// MFC entries the verifier installed.
    installs: u64,
    /// Datagrams the router sent toward members: VIF counters (mroute), the member chains'
    /// `fwd` counters (nft).
    forwarded: u64,
    /// Datagrams the servers received.
    delivered: u64,
    /// The verifier's kernel errors during the step.
    kernel_errors: u64,
    /// How long sending took: more than STEP when the sender fell behind its schedule on a
    /// busy host, so the rate achieved is `sent / send_secs`, not the rate offered.
    send_secs: f64,
}

/// Datagrams the router forwarded toward members so far (see [`Step::forwarded`]).
fn forwarded(lab: &RouterLab, dataplane: Dataplane) -> u64 {
    match dataplane {
        Dataplane::Mroute => vif_packets_out(lab),
        Dataplane::Nft => lab.native_counters().forwarded.values().sum(),
    }
}

/// Upcalls the mroute socket dropped so far (none exist on nft).
fn socket_drops(lab: &RouterLab, dataplane: Dataplane) -> u64 {
    match dataplane {
        Dataplane::Mroute => mroute_socket_drops(lab),
        Dataplane::Nft => 0,
    }
}

/// One step of new sources at `rate` per second.
fn new_sources_step(lab: &RouterLab, dataplane: Dataplane, next: &mut u32, rate: u32) -> Step {
    refresh_owners(lab);
    let d0 = delivered(lab);
    let u0 = metric(lab, "upcalls_total");
    let i0 = metric(lab, "mfc_installs_total");
    let e0 = metric(lab, "kernel_errors_total");
    let q0 = socket_drops(lab, dataplane);
    let f0 = forwarded(lab, dataplane);
    // The last (highest) step only, so that perf's cost leaves the target step alone.
    let perf = (Some(&rate) == NEW_SOURCE_RATES.last())
        .then(|| perf_start(&format!("new-sources-{rate}")))
        .flatten();
    let first = *next;
    let (sent, send_secs) = refreshing(&|| refresh_owners(lab), || {
        send_new_sources(lab, first, rate)
    });
    perf_stop(perf);
    *next = first + sent as u32;
    // Queued first datagrams leave when their entry is installed; give the verifier time.
    std::thread::sleep(Duration::from_millis(1500));
    Step {
        sent,
        upcalls: metric(lab, "upcalls_total") - u0,
        socket_drops: socket_drops(lab, dataplane) - q0,
        installs: metric(lab, "mfc_installs_total") - i0,
        forwarded: forwarded(lab, dataplane).saturating_sub(f0),
        delivered: delivered(lab) - d0,
        kernel_errors: metric(lab, "kernel_errors_total") - e0,
        send_secs,
    }
}

/// Runs `send` while `refresh` (the owners' joins) runs every 5 s beside it, as member agents
/// refresh theirs: a step that falls behind on a busy host can outlast the claims (22 s), and
/// expiring claims would re-point every entry to drop in the middle of the step.
fn refreshing<T>(refresh: &(dyn Fn() + Sync), send: impl FnOnce() -> T) -> T {
    let sending = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut last = Instant::now();
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() > Duration::from_secs(5) {
                    refresh();
                    last = Instant::now();
                }
            }
        });
        let r = send();
        sending.store(false, std::sync::atomic::Ordering::Relaxed);
        r
    })
}

/// Sends one datagram from each of `rate` × STEP new sources, starting at `first`, paced at
/// `rate` per second from the client namespace; returns (sent, seconds it took).
fn send_new_sources(lab: &RouterLab, first: u32, rate: u32) -> (u64, f64) {
    lab.client.run(|| {
        let dst = SockaddrIn::from(SocketAddrV4::new(GROUP, 0));
        send_paced(&raw_socket(), dst, rate, |n| {
            datagram(Ipv4Addr::from(first + n as u32), GROUP, n as u32)
        })
    })
}

/// Sends `rate` × STEP datagrams, the n-th `packet(n)`, to `dst` through `s`, paced at `rate`
/// per second; returns (sent, seconds it took).
fn send_paced<A: SockaddrLike + Copy>(
    s: &Socket,
    dst: A,
    rate: u32,
    packet: impl Fn(u64) -> Vec<u8>,
) -> (u64, f64) {
    let mut hdrs = MultiHeaders::<A>::preallocate(64, None);
    let start = Instant::now();
    let total = u64::from(rate) * STEP.as_millis() as u64 / 1000;
    let mut sent = 0u64;
    while sent < total {
        // As many as the schedule allows by now, at most one batch.
        let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as u64).min(total);
        let n = due.saturating_sub(sent).min(64);
        if n == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let packets: Vec<Vec<u8>> = (sent..sent + n).map(&packet).collect();
        let dsts = vec![Some(dst); packets.len()];
        sent += send_batch(s, &mut hdrs, &packets, &dsts);
    }
    (sent, start.elapsed().as_secs_f64())
}

/// The kernel's limit on unresolved (S,G) at once (older kernels: 10 per table). With the
/// verifier stopped, so that no upcall is answered, one burst of PROBE new sources; the
/// unresolved entries the kernel then holds are counted (none on nft: there is no upcall), the
/// datagrams delivered while it is stopped are counted, the verifier resumes, and the burst's
/// delivered datagrams are counted. Returns (unresolved held, sent, delivered while stopped,
/// delivered).
fn unresolved_probe(lab: &RouterLab, next: &mut u32) -> (usize, u64, u64, u64) {
    use nix::sys::signal::{kill, Signal};
    const PROBE: u32 = 64;
    let pid = lab.daemon_pid().expect("verifier running");
    refresh_owners(lab);
    std::thread::sleep(Duration::from_millis(100));
    let d0 = delivered(lab);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP the verifier");
    let first = *next;
    let w = Workload {
        packets: (0..PROBE)
            .map(|i| datagram(Ipv4Addr::from(first + i), GROUP, i))
            .collect(),
        dsts: vec![Some(SockaddrIn::from(SocketAddrV4::new(GROUP, 0))); PROBE as usize],
    };
    let sent = lab.client.run(|| {
        let s = raw_socket();
        let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(w.packets.len(), None);
        send_batch(&s, &mut hdrs, &w.packets, &w.dsts)
    });
    *next = first + PROBE;
    std::thread::sleep(Duration::from_millis(200));
    let while_stopped = delivered(lab) - d0;
    // Unresolved entries are listed with input interface -1.
    let unresolved = if harness::topo::kernel_has_mroute() {
        lab.router
            .proc_net("ip_mr_cache")
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(2) == Some("-1"))
            .count()
    } else {
        0
    };
    kill(pid, Signal::SIGCONT).expect("SIGCONT the verifier");
    std::thread::sleep(Duration::from_millis(1500));
    (unresolved, sent, while_stopped, delivered(lab) - d0)
}

/// (highest rate achieved with no first datagram lost, share lost at the target rate). The
/// rate is what the sender achieved, not what it was offered: on a busy host the sender falls
/// behind its schedule and a step of "40,000/s" may take longer than a second.
fn new_sources(lab: &RouterLab, dataplane: Dataplane) -> (u32, f64) {
    let mut next = NEW_SOURCE_BASE;
    let (unresolved, sent, while_stopped, got) = unresolved_probe(lab, &mut next);
    eprintln!(
        "dataplane: {sent} new sources in one burst while the verifier was stopped: the kernel \
         held {unresolved} unresolved (S,G) entries; {while_stopped} datagrams delivered while \
         it was stopped, {got} once it resumed"
    );
    let mut verdict = Verdict::default();
    for rate in NEW_SOURCE_RATES {
        let st = new_sources_step(lab, dataplane, &mut next, rate);
        let (sent, got) = (st.sent, st.delivered);
        let (achieved, loss) = verdict.step(rate, sent, got, st.send_secs);
        eprintln!(
            "dataplane: new sources offered at {rate}/s, achieved {achieved}/s: sent {sent}, \
             upcalls {} (socket drops {}), entries installed {}, forwarded {}, delivered {got} \
             (lost {loss:.4}), kernel errors {}",
            st.upcalls, st.socket_drops, st.installs, st.forwarded, st.kernel_errors
        );
    }
    verdict.result()
}

/// The new-source steps' figures, taken step by step: the highest rate achieved with nothing
/// lost in it or any step before, and the share lost at the target rate.
#[derive(Default)]
struct Verdict {
    best: u32,
    lost_before: bool,
    loss_at_target: Option<f64>,
}

impl Verdict {
    /// One step offered at `rate`; returns (rate achieved, share lost).
    fn step(&mut self, rate: u32, sent: u64, got: u64, send_secs: f64) -> (u32, f64) {
        let loss = 1.0 - got as f64 / sent.max(1) as f64;
        let achieved = (sent as f64 / send_secs.max(1e-9)) as u32;
        // The highest rate below which nothing was lost: one lossy step ends the run of clean
        // ones, so a lucky higher step cannot stand for the rate.
        if got >= sent && !self.lost_before {
            self.best = self.best.max(achieved);
        } else {
            self.lost_before = true;
        }
        if rate == TARGET_NEW_SOURCES {
            self.loss_at_target = Some(loss.max(0.0));
        }
        (achieved, loss)
    }

    /// (new sources per second, first-packet loss at the target rate; 1 if it never ran).
    fn result(&self) -> (u32, f64) {
        (self.best, self.loss_at_target.unwrap_or(1.0))
    }
}

/// MFC entries left after the new-source steps, in the kernel and in the verifier.
fn mfc_after_steps(lab: &RouterLab) {
    // Counted with `wc`: reading the file costs time quadratic in the entries (seconds here).
    let t = Instant::now();
    let mfc_in_kernel = harness::cmd::run_with_timeout(
        "ip",
        &[
            "netns",
            "exec",
            lab.router.name(),
            "sh",
            "-c",
            "tail -n +2 /proc/net/ip_mr_cache | wc -l",
        ],
        Duration::from_secs(300),
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    .unwrap_or_else(|e| e);
    eprintln!(
        "dataplane: after the new-source steps: {mfc_in_kernel} MFC entries in the kernel \
         (reading /proc/net/ip_mr_cache took {:.1} s), {} in the verifier",
        t.elapsed().as_secs_f64(),
        metric(lab, "kernel_entries{kind=\"mfc\"}")
    );
}

/// The load average (1, 5, 15 minutes), for the report beside the figures.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `DATAPLANE_V6=0` leaves the IPv6 lab out (its figures are then null).
fn with_v6() -> bool {
    std::env::var("DATAPLANE_V6").as_deref() != Ok("0")
}

fn main() {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("dataplane: load average at start {}", load_average());
    eprintln!(
        "dataplane: kernel {}; {} rounds of {:?} per variant, {FLOWS} flows, two servers; \
         native-mode verifier at nice {VERIFIER_NICE}",
        kernel.trim(),
        ROUNDS,
        PHASE
    );

    if let (Some(_), Ok(spec)) = (
        std::env::var_os("DATAPLANE_VIP_ONLY"),
        std::env::var("DATAPLANE_SWAP"),
    ) {
        // The nftables rulesets are what is swapped: pin on nft, or the tc program would carry
        // the pinned flows before them.
        let mut lab = RouterLab::new(
            2,
            "[vip_pin]\ndataplane = \"nft\"\n[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\npin = true\n",
        );
        lab.log_filter = "info".into();
        install_sinks(&lab, "ip");
        lab.start();
        vip::swap_rulesets(&lab, &spec);
        return;
    }
    if std::env::var_os("DATAPLANE_VIP_ONLY").is_some() {
        // The VIP phases alone, for a quick look: no JSON line.
        let ((vip_ratio, ..), (pin_ratio, ..)) = vip::vips();
        eprintln!("dataplane: VIP only: vip_ratio {vip_ratio:.3}, vip_pin_ratio {pin_ratio:.3}");
        return;
    }
    if std::env::var_os("DATAPLANE_V6_ONLY").is_some() {
        // The IPv6 phases alone, for a quick look: no JSON line.
        let f = v6::run();
        eprintln!(
            "dataplane: IPv6 only: native6_ratio {:.3} ({:.0} vs {:.0} pps), vip6_ratio {:.3} \
             ({:.0} vs {:.0} pps), vip6_pin_ratio {:.3} ({:.0} vs {:.0} pps), \
             new_sources6_per_s {}, first_packet_loss6 {:.4}; load average at the end {}",
            f.native6_ratio,
            f.steered,
            f.plain,
            f.vip6.0,
            f.vip6.1,
            f.vip6.2,
            f.vip6_pin.0,
            f.vip6_pin.1,
            f.vip6_pin.2,
            f.new_sources6_per_s,
            f.first_packet_loss6,
            load_average()
        );
        return;
    }
    let mut lab = RouterLab::new(2, "");
    lab.log_filter = "info".into();
    // The verifier's upcall latency bounds the kernel's list of unresolved (S,G), which every
    // new packet and every install walks: on this shared machine, at default priority, it
    // falls behind the other engineers' builds and the backlog feeds on itself (NOTES.md).
    lab.nice = Some(VERIFIER_NICE);
    install_sinks(&lab, "ip");
    lab.start();
    let dataplane = lab.dataplane();
    eprintln!("dataplane: native mode on the {dataplane:?} data plane");
    let (native_ratio, native_steered, native_plain) = native(&mut lab, dataplane);
    let (new_per_s, first_loss) = new_sources(&lab, dataplane);
    if dataplane == Dataplane::Mroute {
        mfc_after_steps(&lab);
    }
    drop(lab);

    // IPv6 native steering, in a dual-stack lab of its own.
    let v6 = with_v6().then(v6::run);

    let ((vip_ratio, vip_steered, vip_plain), (pin_ratio, pin_steered, pin_plain)) = vip::vips();

    let mut lab = RouterLab::new(
        2,
        "[native]\ndataplane = \"nft\"\n[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\n",
    );
    lab.log_filter = "info".into();
    lab.start();
    let (repoint_us, whole_table_us) = vip::repoints(&lab);
    drop(lab);

    eprintln!(
        "dataplane: native {native_steered:.0} pps vs plain routing {native_plain:.0} pps; \
         VIP {vip_steered:.0} pps vs plain routing {vip_plain:.0} pps; pinned VIP \
         {pin_steered:.0} pps vs plain routing {pin_plain:.0} pps (medians); load average at \
         the end {}",
        load_average()
    );
    // The IPv6 figures are null when DATAPLANE_V6=0 left them out.
    let v6_keys = match &v6 {
        Some(f) => {
            eprintln!(
                "dataplane: IPv6 native {:.0} pps vs plain IPv6 routing {:.0} pps (medians)",
                f.steered, f.plain
            );
            format!(
                "\"native6_ratio\":{:.3},\"vip6_ratio\":{:.3},\"vip6_pin_ratio\":{:.3},\"new_sources6_per_s\":{},\"first_packet_loss6\":{:.4}",
                f.native6_ratio, f.vip6.0, f.vip6_pin.0, f.new_sources6_per_s, f.first_packet_loss6
            )
        }
        None => "\"native6_ratio\":null,\"vip6_ratio\":null,\"vip6_pin_ratio\":null,\"new_sources6_per_s\":null,\"first_packet_loss6\":null".into(),
    };
    let line = format!(
        "{{\"bench\":\"dataplane\",\"native_ratio\":{:.3},\"vip_ratio\":{:.3},\"vip_pin_ratio\":{pin_ratio:.3},\"new_sources_per_s\":{},\"first_packet_loss\":{:.4},{v6_keys},\"native_dataplane\":\"{}\",\"repoint_us\":{repoint_us},\"repoint_whole_table_us\":{whole_table_us}}}",
        native_ratio,
        vip_ratio,
        new_per_s,
        first_loss,
        match dataplane {
            Dataplane::Mroute => "mroute",
            Dataplane::Nft => "nft",
        }
    );
    let dir = std::env::var("MANYCAST_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench").to_string());
    std::fs::create_dir_all(&dir).expect("create bench dir");
    std::fs::write(format!("{dir}/dataplane.json"), format!("{line}\n"))
        .expect("write bench result");
    println!("{line}");
}
