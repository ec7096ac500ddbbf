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

#[path = "../tests/harness/mod.rs"]
mod harness;

use harness::topo::{wait_for, Dataplane, RouterLab, GROUP, PORT};
use igmp_ext::Slice;
use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrIn};
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
fn send_batch(
    s: &Socket,
    hdrs: &mut MultiHeaders<SockaddrIn>,
    packets: &[Vec<u8>],
    dsts: &[Option<SockaddrIn>],
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
/// the router delivered, and multicast and unicast cost the server the same.
fn install_sinks(lab: &RouterLab) {
    for s in &lab.servers {
        s.ns.exec("nft", &["add", "table", "ip", "sink"]);
        s.ns.exec(
            "nft",
            &["add chain ip sink pre { type filter hook prerouting priority -300; policy accept; }"],
        );
        s.ns.exec("nft", &["add rule ip sink pre udp dport 5000 counter drop"]);
    }
}

/// Datagrams the servers' sinks have counted so far, all servers together.
fn delivered(lab: &RouterLab) -> u64 {
    lab.servers
        .iter()
        .map(|s| {
            let json =
                s.ns.exec("nft", &["-j", "list", "chain", "ip", "sink", "pre"]);
            let v: serde_json::Value = serde_json::from_str(&json).expect("nft JSON");
            v["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o.pointer("/rule/expr"))
                .flat_map(|e| e.as_array().into_iter().flatten())
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

/// Delivered datagrams per second for one phase of `w`, run after `before()`; profiled as
/// `profile` when given (see [`perf_start`]).
/// Also the sending thread's CPU nanoseconds per delivered datagram ([`thread_cpu_secs`]).
fn phase(lab: &RouterLab, w: &Workload, before: &dyn Fn(), profile: Option<String>) -> (f64, f64) {
    refresh_owners(lab);
    before();
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
    compare("native", (lab, &steered, &|| {}), (lab, &plain, &|| {}))
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
    let sending = std::sync::atomic::AtomicBool::new(true);
    let (sent, send_secs) = std::thread::scope(|scope| {
        // Members refresh their joins meanwhile, as member agents do: a step that falls behind
        // on a busy host can outlast the claims (22 s), and expiring claims would re-point
        // every entry to drop in the middle of the step.
        scope.spawn(|| {
            let mut last = Instant::now();
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() > Duration::from_secs(5) {
                    refresh_owners(lab);
                    last = Instant::now();
                }
            }
        });
        let r = send_new_sources(lab, first, rate);
        sending.store(false, std::sync::atomic::Ordering::Relaxed);
        r
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

/// Sends one datagram from each of `rate` × STEP new sources, starting at `first`, paced at
/// `rate` per second from the client namespace; returns (sent, seconds it took).
fn send_new_sources(lab: &RouterLab, first: u32, rate: u32) -> (u64, f64) {
    lab.client.run(|| {
        let s = raw_socket();
        let dst = Some(SockaddrIn::from(SocketAddrV4::new(GROUP, 0)));
        let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(64, None);
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
            let packets: Vec<Vec<u8>> = (0..n as u32)
                .map(|i| {
                    let src = Ipv4Addr::from(first + sent as u32 + i);
                    datagram(src, GROUP, sent as u32 + i)
                })
                .collect();
            let dsts = vec![dst; packets.len()];
            let k = send_batch(&s, &mut hdrs, &packets, &dsts);
            sent += k;
        }
        (sent, start.elapsed().as_secs_f64())
    })
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
    let mut best = 0;
    let mut lost_before = false;
    let mut loss_at_target = None;
    for rate in NEW_SOURCE_RATES {
        let st = new_sources_step(lab, dataplane, &mut next, rate);
        let (sent, got) = (st.sent, st.delivered);
        let loss = 1.0 - got as f64 / sent.max(1) as f64;
        let achieved = (sent as f64 / st.send_secs.max(1e-9)) as u32;
        eprintln!(
            "dataplane: new sources offered at {rate}/s, achieved {achieved}/s: sent {sent}, \
             upcalls {} (socket drops {}), entries installed {}, forwarded {}, delivered {got} \
             (lost {loss:.4}), kernel errors {}",
            st.upcalls, st.socket_drops, st.installs, st.forwarded, st.kernel_errors
        );
        // The highest rate below which nothing was lost: one lossy step ends the run of clean
        // ones, so a lucky higher step cannot stand for the rate.
        if got >= sent && !lost_before {
            best = best.max(achieved);
        } else {
            lost_before = true;
        }
        if rate == TARGET_NEW_SOURCES {
            loss_at_target = Some(loss.max(0.0));
        }
    }
    (best, loss_at_target.unwrap_or(1.0))
}

/// VIP steering vs plain routing. Steered: datagrams to the VIP through the verifier's router,
/// its tables (the fast path's netdev table, the `ip` table of marks) and policy rules as it
/// wrote them. Plain: the same datagrams to the owners' own addresses through `twin`, a router
/// namespace of the same topology where no verifier ever ran. Not the VIP router with the
/// verifier's state taken out: the kernel sets a namespace's `fib_has_custom_rules` with its
/// first policy rule and never clears it, so every packet routed there walks the rule list
/// (`fib_rules_lookup`, ~12 % of a plain packet's cost in `perf`) even with the rules gone,
/// which flattered the steering (it made the earlier VIP figures). With `pin`, each of the 64
/// flows is in the pin table after its first packet, so the phases measure the established
/// flows' path (a flow's first packet costs one more insertion).
fn vip(lab: &mut RouterLab, twin: &RouterLab, what: &str) -> (f64, f64, f64) {
    two_owners(lab);
    wait_for("VIP routed to both members", || {
        lab.status()
            .vips
            .first()
            .is_some_and(|v| v.members.len() == 2)
    });
    // `DATAPLANE_VIP_SLOW=1`: the fast path's table taken out, so that the steered phases
    // measure the slow path alone (marks, policy routes, conntrack for pin), the VIP steering
    // before issue 16's item 5: an A/B in one run, outside the JSON line.
    if std::env::var_os("DATAPLANE_VIP_SLOW").is_some() {
        lab.router
            .exec("nft", &["delete", "table", "netdev", "manycast_vip"]);
    }
    let steered = Workload::new(lab, |_| VIP);
    let plain = Workload::new(twin, |k| owner_addr(twin, k));
    compare(what, (lab, &steered, &|| {}), (twin, &plain, &|| {}))
}

/// Re-points measured in the verifier (its `repoint_us`, the median time to apply one
/// ownership change's ops) on the nft data plane with a VIP, so each re-point moves an element
/// of both nft tables: member 1 takes value 2 of the low two bits from member 2 and gives it
/// back, REPOINTS / 2 times, three joins each (member 2 keeps value 1, so the maps' mask and the
/// tables' shape stay).
/// Beside it, for comparison, what the same change cost before the tables were updated in
/// place: `nft list` of the native table (its counters) and `nft -f` of both whole tables, as
/// processes in the router's namespace. Returns (repoint_us, whole_table_us).
fn repoints(lab: &RouterLab) -> (u64, u64) {
    let s = |v| Slice::new(v, 3);
    lab.join(0, &[s(0)], 1);
    lab.join(1, &[s(1), s(2)], 1);
    let settled = |m1: u64| {
        move || {
            let st = lab.status();
            let n = st
                .native
                .iter()
                .filter(|r| r.member == 1)
                .map(|r| r.values)
                .sum::<u64>();
            n == m1 && st.vips.first().is_some_and(|v| v.members.len() == 2)
        }
    };
    wait_for("the first map", settled(1));
    let before = lab.status().counters;
    let mut epoch = 2;
    for _ in 0..REPOINTS / 2 {
        lab.join(0, &[s(0), s(2)], epoch);
        wait_for("member 1 takes value 2", settled(2));
        lab.join(0, &[s(0)], epoch + 1);
        lab.join(1, &[s(1), s(2)], epoch + 1);
        wait_for("member 2 has it back", settled(1));
        epoch += 2;
    }
    let after = lab.status().counters;
    eprintln!(
        "dataplane: re-points: {} timed, median {:?} us, p99 {:?} us, max {:?} us; \
         nft whole-table rewrites during them: {}",
        after.repoints - before.repoints,
        after.repoint_us,
        after.repoint_p99_us,
        after.repoint_max_us,
        after.nft_rewrites - before.nft_rewrites
    );
    // The same change the way it was made before: list, then both tables whole, by process.
    let native = lab
        .router
        .exec("nft", &["list", "table", "netdev", "manycast_native"]);
    let vip = lab
        .router
        .exec("nft", &["list", "table", "ip", "manycast_verifier"]);
    let whole = format!(
        "add table netdev manycast_native\ndelete table netdev manycast_native\n{native}\n\
         add table ip manycast_verifier\ndelete table ip manycast_verifier\n{vip}\n"
    );
    let mut spawned: Vec<u64> = (0..REPOINTS / 4)
        .map(|_| {
            lab.router.run(|| {
                let t = Instant::now();
                let out = std::process::Command::new("nft")
                    .args(["list", "table", "netdev", "manycast_native"])
                    .output()
                    .expect("nft list");
                assert!(out.status.success(), "nft list");
                let mut child = std::process::Command::new("nft")
                    .args(["-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .expect("nft -f");
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(whole.as_bytes())
                    .expect("write");
                assert!(child.wait().expect("nft -f").success(), "nft -f");
                t.elapsed().as_micros() as u64
            })
        })
        .collect();
    spawned.sort_unstable();
    let whole_us = spawned[spawned.len() / 2];
    eprintln!(
        "dataplane: the same change by nft processes (list + whole tables): median {whole_us} us"
    );
    (after.repoint_us.unwrap_or(0), whole_us)
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

/// `DATAPLANE_SWAP=name=file,…` (with `DATAPLANE_VIP_ONLY`): in the pinned VIP's lab, the
/// fast path's table replaced by each file in turn (`nft -f`, whole tables as the verifier
/// writes them for this lab: `benches/dataplane-swap/` has the pinned table as issue 16 first
/// wrote it, as it is now, and the unpinned one), alternating in every round, the same
/// traffic, router and moment for all: what one ruleset costs per packet against another,
/// which the load of the shared machine swamps between two runs. (Not the verifier's table
/// listed back: `nft list` 1.0.6 drops the pinned ingress rule's fragment mask.) Prints, per variant, the median sender CPU per datagram and packets per
/// second, and the median of the per-round ratios to the first variant. A measuring aid
/// outside the JSON line.
fn swap_rulesets(lab: &RouterLab, spec: &str) {
    two_owners(lab);
    wait_for("VIP routed to both members", || {
        lab.status()
            .vips
            .first()
            .is_some_and(|v| v.members.len() == 2)
    });
    let mut variants: Vec<(String, std::path::PathBuf)> = Vec::new();
    for item in spec.split(',') {
        let (name, file) = item.split_once('=').unwrap_or((item, item));
        variants.push((name.to_owned(), file.into()));
    }
    let w = Workload::new(lab, |_| VIP);
    let n = variants.len();
    let (mut ns, mut pps) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let (mut ns_ratio, mut pps_ratio) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    for r in 0..ROUNDS * 2 {
        let mut this = vec![(0.0, 0.0); n];
        for k in 0..n {
            let i = (k + r) % n;
            let path = variants[i].1.to_str().expect("a UTF-8 path");
            lab.router.exec("nft", &["-f", path]);
            // The flows' first packets (into the empty flow tables) outside the phase.
            w.blast(lab, Duration::from_millis(50));
            this[i] = phase(lab, &w, &|| {}, None);
        }
        for i in 0..n {
            pps[i].push(this[i].0);
            ns[i].push(this[i].1);
            pps_ratio[i].push(this[i].0 / this[0].0);
            ns_ratio[i].push(this[0].1 / this[i].1);
        }
        eprintln!(
            "dataplane: swap round {r}: {}",
            variants
                .iter()
                .zip(&this)
                .map(|((name, _), (p, c))| format!("{name} {p:.0} pps {c:.0} ns"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for i in 0..n {
        eprintln!(
            "dataplane: swap {}: median {:.0} ns per datagram, {:.0} pps; per-round against {}: \
             CPU {:.3}, pps {:.3}",
            variants[i].0,
            median(ns[i].clone()),
            median(pps[i].clone()),
            variants[0].0,
            median(ns_ratio[i].clone()),
            median(pps_ratio[i].clone())
        );
    }
}

/// (ratio, steered, plain) of VIP steering without pin, then with pin, each in a fresh lab.
fn vips() -> ((f64, f64, f64), (f64, f64, f64)) {
    // `DATAPLANE_PIN=nft`: pin mode on the nftables flow tables rather than the tc program.
    let pin_plane = std::env::var("DATAPLANE_PIN").unwrap_or_else(|_| "bpf".into());
    let vip_lab = |pin: bool| {
        let mut lab = RouterLab::new(
            2,
            &format!("[vip_pin]\ndataplane = \"{pin_plane}\"\n[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\npin = {pin}\n"),
        );
        lab.log_filter = "info".into();
        install_sinks(&lab);
        lab.start();
        lab
    };
    // Plain routing's router: the same topology, no verifier.
    let twin = RouterLab::new(2, "");
    install_sinks(&twin);
    let plain = vip(&mut vip_lab(false), &twin, "vip");
    let mut pin_lab = vip_lab(true);
    let pinned = vip(&mut pin_lab, &twin, "vip-pin");
    // What the tc program forwarded (nothing on nft): the pinned phases went through it.
    let hops = manycast_verifier::sys::bpf::pinned_entries::<u32, [u32; 4]>(
        &pin_lab.pin_dir.join(manycast_verifier::sys::bpf::HOPS),
    );
    let by_bpf: u64 = hops
        .map(|h| {
            h.values()
                .map(|v| u64::from(v[3]) << 32 | u64::from(v[2]))
                .sum()
        })
        .unwrap_or(0);
    eprintln!("dataplane: pin mode on {pin_plane}: {by_bpf} packets forwarded by the tc program");
    (plain, pinned)
}

fn main() {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "dataplane: load average at start {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
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
        install_sinks(&lab);
        lab.start();
        swap_rulesets(&lab, &spec);
        return;
    }
    if std::env::var_os("DATAPLANE_VIP_ONLY").is_some() {
        // The VIP phases alone, for a quick look: no JSON line.
        let ((vip_ratio, ..), (pin_ratio, ..)) = vips();
        eprintln!("dataplane: VIP only: vip_ratio {vip_ratio:.3}, vip_pin_ratio {pin_ratio:.3}");
        return;
    }
    let mut lab = RouterLab::new(2, "");
    lab.log_filter = "info".into();
    // The verifier's upcall latency bounds the kernel's list of unresolved (S,G), which every
    // new packet and every install walks: on this shared machine, at default priority, it
    // falls behind the other engineers' builds and the backlog feeds on itself (NOTES.md).
    lab.nice = Some(VERIFIER_NICE);
    install_sinks(&lab);
    lab.start();
    let dataplane = lab.dataplane();
    eprintln!("dataplane: native mode on the {dataplane:?} data plane");
    let (native_ratio, native_steered, native_plain) = native(&mut lab, dataplane);
    let (new_per_s, first_loss) = new_sources(&lab, dataplane);
    if dataplane == Dataplane::Mroute {
        mfc_after_steps(&lab);
    }
    drop(lab);

    let ((vip_ratio, vip_steered, vip_plain), (pin_ratio, pin_steered, pin_plain)) = vips();

    let mut lab = RouterLab::new(
        2,
        "[native]\ndataplane = \"nft\"\n[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\n",
    );
    lab.log_filter = "info".into();
    lab.start();
    let (repoint_us, whole_table_us) = repoints(&lab);
    drop(lab);

    eprintln!(
        "dataplane: native {native_steered:.0} pps vs plain routing {native_plain:.0} pps; \
         VIP {vip_steered:.0} pps vs plain routing {vip_plain:.0} pps; pinned VIP \
         {pin_steered:.0} pps vs plain routing {pin_plain:.0} pps (medians)"
    );
    let line = format!(
        "{{\"bench\":\"dataplane\",\"native_ratio\":{:.3},\"vip_ratio\":{:.3},\"vip_pin_ratio\":{pin_ratio:.3},\"new_sources_per_s\":{},\"first_packet_loss\":{:.4},\"native_dataplane\":\"{}\",\"repoint_us\":{repoint_us},\"repoint_whole_table_us\":{whole_table_us}}}",
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
