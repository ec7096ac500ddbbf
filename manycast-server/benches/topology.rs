//! `make bench B=topology` (issue 14), the redundant-router part, in the layout of the
//! redundant-verifier test (`tests/support/redundant_lab.rs`: two verifier routers with the
//! bench profile's daemons and FRR in front of two VIP-mode members, an upstream FRR router spreading
//! clients over both by ECMP; SPEC.md §10.6). Needs root and FRR (`scripts/setup.sh`).
//!
//! - `router_failover_*_ms`: one router fails silently (all its traffic dropped both ways on
//!   its upstream link, which stays up) in each of `TRIALS` trials (default 20, alternating
//!   routers) while every client source sends a UDP probe to the VIP every 5 ms: per trial, the
//!   longest time any source went unanswered from the failure on (BFD every `BFD_MS`, default
//!   50, × 3, then BGP's withdrawal and the upstream router's route change).
//! - `same_owner`: the share of sources answered by the same member through either router alone
//!   (the other's upstream link down).
//!
//! The site hierarchy's `site_failover_*_ms` is measured in the `sites` lab by
//! `lab/sites.py bench`, the simulator's figures by the scale bench; `scripts/bench.sh
//! topology` runs all three and merges their lines.

#[path = "../tests/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "support/probe.rs"]
#[allow(dead_code)]
mod probe;
mod support {
    #[path = "../../tests/support/frr.rs"]
    #[allow(dead_code)]
    pub mod frr;
    #[path = "../../tests/support/redundant_lab.rs"]
    #[allow(dead_code)]
    pub mod redundant_lab;
    #[path = "../../tests/support/vip_member.rs"]
    #[allow(dead_code)]
    pub mod vip_member;
}

use harness::in_netns;
use manycast_e2e::cluster_bench::{emit, last_server, percentile};
use probe::Probe;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};
use support::redundant_lab::{freeze, ip, Redundant, R1_UP, R2_UP};
use support::vip_member::VIP;

const UDP_PORT: u16 = 5001;
const EVERY: Duration = Duration::from_millis(5);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Client sources spread over the low byte (low-order slicing decides the member).
fn clients() -> Vec<Ipv4Addr> {
    (2u8..=250)
        .step_by(4)
        .map(|b| Ipv4Addr::new(10, 1, 0, b))
        .collect()
}

/// A UDP responder bound to the VIP in member `i`'s namespace: answers `m<i+1> <n>`.
fn respond(ns: &str, i: usize) {
    let socket: UdpSocket = in_netns(ns, || {
        UdpSocket::bind(SocketAddrV4::new(VIP, UDP_PORT)).expect("bind the VIP")
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut n = 0u64;
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            n += 1;
            let _ = socket.send_to(format!("m{} {n}", i + 1).as_bytes(), from);
        }
    });
}

/// Per source, the longest time without a reply in `[from, to]`.
fn longest_silence(probe: &Probe, sources: usize, from: Instant, to: Instant) -> Vec<Duration> {
    (0..sources)
        .map(|s| {
            let mut last = from;
            let mut worst = Duration::ZERO;
            for r in probe
                .log
                .iter()
                .filter(|r| r.source == s && r.served && r.at >= from && r.at <= to)
            {
                worst = worst.max(r.at - last);
                last = r.at;
            }
            worst.max(to - last)
        })
        .collect()
}

/// Each source's member over the last half second, through whichever router is up.
fn owners(probe: &mut Probe) -> Vec<Option<String>> {
    std::thread::sleep(Duration::from_millis(700));
    probe.collect();
    let seen = last_server(&probe.log, Instant::now() - Duration::from_millis(500));
    (0..clients().len())
        .map(|s| seen.get(&s).cloned())
        .collect()
}

fn main() {
    harness::require_root();
    let trials = env("TRIALS", 20) as usize;
    let bfd_ms = env("BFD_MS", 50) as u32;
    let srcs = clients();
    let lab = Redundant::with(&srcs, bfd_ms);
    lab.wait_for_two_owners_at_both();
    for (i, ns) in lab.servers.iter().enumerate() {
        respond(ns, i);
    }
    let mut probe = Probe::start(&lab.client, &srcs, SocketAddrV4::new(VIP, UDP_PORT), EVERY);

    // Same owner through either router alone.
    ip(&lab.up, &["link", "set", "u2", "down"]);
    lab.wait_for_hops(&[R1_UP], "only r1 carries the VIP");
    let via_r1 = owners(&mut probe);
    ip(&lab.up, &["link", "set", "u2", "up"]);
    lab.wait_for_hops(&[R1_UP, R2_UP], "r2 is back");
    ip(&lab.up, &["link", "set", "u1", "down"]);
    lab.wait_for_hops(&[R2_UP], "only r2 carries the VIP");
    let via_r2 = owners(&mut probe);
    ip(&lab.up, &["link", "set", "u1", "up"]);
    lab.wait_for_hops(&[R1_UP, R2_UP], "r1 is back");
    let same = via_r1
        .iter()
        .zip(&via_r2)
        .filter(|(a, b)| a.is_some() && a == b)
        .count();
    let same_owner = same as f64 / srcs.len() as f64;
    let members: BTreeSet<&String> = via_r1.iter().flatten().collect();
    println!(
        "same owner through either router: {same} of {} sources (members serving: {members:?})",
        srcs.len()
    );

    // Silent router failures.
    let mut gaps = Vec::new();
    for t in 0..trials {
        let victim = t % 2;
        let other = [R1_UP, R2_UP][1 - victim];
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        freeze(&lab, victim, true);
        lab.wait_for_hops(&[other], "BFD withdraws the failed router");
        std::thread::sleep(Duration::from_millis(700));
        let t1 = Instant::now();
        probe.collect();
        let silences = longest_silence(&probe, srcs.len(), t0, t1);
        let worst = silences.iter().max().copied().unwrap_or_default();
        let hit = silences
            .iter()
            .filter(|d| **d > Duration::from_millis(50))
            .count();
        println!(
            "trial {t}: r{} failed; {hit} sources silent over 50 ms, longest {} ms",
            victim + 1,
            worst.as_millis()
        );
        gaps.push(worst.as_millis() as u64);
        freeze(&lab, victim, false);
        lab.wait_for_hops(&[R1_UP, R2_UP], "the failed router is back");
        probe.log.clear();
    }
    println!(
        "router failover (BFD {bfd_ms} ms x 3): p50 {} / p99 {} / max {} ms over {trials} trials \
         (target p99 <= 300)",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.iter().max().copied().unwrap_or(0)
    );
    emit(
        "topology",
        &format!(
            r#"{{"bench":"topology","router_failover_p50_ms":{},"router_failover_p99_ms":{},"same_owner":{same_owner:.3},"trials":{trials},"sources":{},"bfd_ms":{bfd_ms}}}"#,
            percentile(&gaps, 0.5),
            percentile(&gaps, 0.99),
            srcs.len()
        ),
    );
}
