//! The insider half of `make bench B=attack` (root; issue 13): a compromised but certified
//! member against the real `manycast-verifier`, real `manycast-server` members, the real
//! `dns-keystore` and real UDP clients in network namespaces.
//!
//! Topology (this package's namespace harness): a router running the verifier and the keystore
//! daemon (on an address of its loopback, which the members reach through it); four members on
//! four subnets (10.0.i.0/24), the control group on a shared back-end segment; a client with 85
//! source addresses probing the UDP service every 20 ms. The verifier and the three honest
//! members take the group key and revocations from the keystore (`[keystore]`, refresh
//! `REFRESH_MS`, records with a TTL of `REFRESH_MS`); all run `control.max_weight = 2`.
//! Member 4 is the insider: its daemon runs with weight 2 (the maximum) and the group key from
//! a file, so it never learns of its revocation and keeps serving and joining, as a compromised
//! member would.
//!
//! Phase 1, for `INSIDER_SECONDS` (default 20): beside its daemon, with its key and
//! certificate, the insider multicasts on the control group, round robin one datagram every
//! 60 ms (`tests/support/insider.rs`): forged proposals (zero quotas and every unit to itself
//! at epoch `u64::MAX`, one in the coordinator's name, one 2^40 epochs ahead), a commit and a
//! heartbeat advertising epoch `u64::MAX`, extreme header epochs, an oversized weight in
//! hellos and heartbeats, faked hearing, and drains, a resume, a move and a rebalance of the
//! others without an operator certificate or with one it made itself. Figures:
//! `insider_units_lost`, the client sources (units) silent over 1 s in the phase; the honest
//! members' commits and allocations (unchanged), the insider's weight as they see it, and
//! their `control_dropped` counters.
//!
//! Phase 2: the insider's member key is revoked in the keystore (`manycastctl keystore
//! revoke`) while it goes on (daemon and forgeries). `revoke_ms`: from the command's return
//! until every honest member has dropped it from the control group (its log line "member
//! revoked by the keystore") and the verifier holds no claim of it; both times apart, the time
//! the verifier first refused one of its joins as `revoked` (a join at epoch 0 every 100 ms,
//! refused as `stale-epoch` before), and the longest silence of the insider's clients while
//! its units move to the honest members (p99 and count over 1 s).
//!
//! The router side of an extreme epoch is in the run too (`INSIDER_JOINS=0` leaves it out): the
//! insider also signs a join for every slice of its certificate at epoch `u64::MAX`, once a
//! second. Before issue 16's liveness the verifier gave it every slice (the honest claims lost
//! as `slice-conflict`; 27 of 85 sources lost when measured); now the honest members' beacons
//! vouch for them and its claim waits (SPEC.md §5.2).

#[path = "../tests/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/support/insider.rs"]
#[allow(dead_code)]
mod insider;
#[path = "../tests/support/keystore_daemon.rs"]
#[allow(dead_code)]
mod keystore_daemon;
#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "support/probe.rs"]
#[allow(dead_code)]
mod probe;

use harness::{in_netns, verifier_status, wait_for, Lab, GROUP};
use igmp_ext::join::{build_datagram, build_signed_report};
use igmp_ext::wire::record::RecordType;
use igmp_ext::{AllocationEpoch, JoinClaims, KeyId, Slice, SliceEntry, Timestamp};
use insider::Insider;
use keystore_daemon::Keystore;
use manycast_e2e::cluster_bench::{emit, last_server, percentile};
use manycast_server::admin::protocol::Status;
use measure::{client_sources, env_u64, longest_silence, served_throughout, SILENCE};
use probe::Probe;
use socket2::{Domain, Protocol, SockAddr, Socket};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const HONEST: usize = 3;
/// The insider's index (member 4).
const BAD: usize = 3;
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// The keystore refresh of the verifier and the members, and the records' TTL (s).
const REFRESH_MS: u64 = 2_000;
const RECORD_TTL: u32 = 2;
const MAX_WEIGHT: u32 = 2;
/// One forged control datagram every this long.
const FORGE_EVERY: Duration = Duration::from_millis(60);
/// The keystore listens here, on the router's loopback.
const KEYSTORE_IP: Ipv4Addr = Ipv4Addr::new(10, 53, 0, 1);
const ALL_V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);

fn now_ms() -> u64 {
    daemon_kit::wall_clock().as_millis()
}

fn ctl_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, i as u8 + 1)
}

/// Reads what was appended to a log file since the last call.
struct LogTail {
    path: std::path::PathBuf,
    offset: u64,
}

impl LogTail {
    fn new(path: std::path::PathBuf) -> LogTail {
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        LogTail { path, offset }
    }

    fn fresh_lines(&mut self) -> String {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return String::new();
        };
        let mut text = String::new();
        if f.seek(SeekFrom::Start(self.offset)).is_ok() && f.read_to_string(&mut text).is_ok() {
            // Up to the last complete line; the rest is read next time.
            let end = text.rfind('\n').map_or(0, |i| i + 1);
            text.truncate(end);
            self.offset += end as u64;
        }
        text
    }
}

/// The verifier's claims on the service group: member → epoch.
fn claims(socket: &std::path::Path) -> Option<BTreeMap<u32, u64>> {
    verifier_status(socket).map(|s| {
        s.ownership
            .iter()
            .filter(|r| r.group == GROUP.to_string())
            .map(|r| (r.member, r.epoch))
            .collect()
    })
}

fn rejected(socket: &std::path::Path, reason: &str) -> u64 {
    verifier_status(socket)
        .and_then(|s| {
            s.counters
                .rejected
                .iter()
                .find(|(r, _)| r == reason)
                .map(|(_, n)| *n)
        })
        .unwrap_or(0)
}

/// A raw IPv4 socket in `ns` that sends whole datagrams (our own header) out of `ifname`.
fn raw_sender(ns: &str, ifname: &str, local: Ipv4Addr) -> Socket {
    let ifname = ifname.to_owned();
    in_netns(ns, move || {
        // IPPROTO_RAW: the datagram carries its own IPv4 header.
        let s = Socket::new(Domain::IPV4, socket2::Type::RAW, Some(Protocol::from(255)))
            .expect("raw socket");
        s.bind_device(Some(ifname.as_bytes())).expect("bind");
        s.set_multicast_if_v4(&local).expect("multicast interface");
        s
    })
}

fn describe(s: &Status) -> String {
    let e = s.epoch.as_ref().map_or(0, |e| e.epoch);
    let units: Vec<String> = (1..=4).map(|m| format!("m{m}:{}", s.units_of(m))).collect();
    format!("epoch {e}, units {}", units.join(" "))
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect()
}

/// Sends the insider's attacks (made against `target`, an honest member's status) round robin,
/// one every [`FORGE_EVERY`], until `stop`; gives the forger back.
fn forge(mut forger: Insider, target: Status, stop: Arc<AtomicBool>) -> JoinHandle<Insider> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for (name, header_epoch, m) in forger.attacks(&target, MAX_WEIGHT) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                forger.send(name, header_epoch, &m);
                std::thread::sleep(FORGE_EVERY);
            }
        }
        forger
    })
}

fn main() {
    harness::require_root();
    let phase = Duration::from_secs(env_u64("INSIDER_SECONDS").unwrap_or(20));
    let mut lab = Lab::new(HONEST as u32 + 1);
    // Benchmarks measure the verifier's own liveness defaults (the tests' labs allow more).
    lab.liveness_misses = None;
    lab.group_pub = false;
    let dir = lab.dir.path().to_owned();
    let srcs = client_sources();
    // Members' ctl0 addresses are ctl_addr(i - 1).
    let routed = lab.routed(HONEST + 1, &srcs);
    let ifs = routed.interfaces();
    let harness::Routed {
        router,
        client,
        servers,
        ..
    } = routed.clone();
    lab.addr(&router, "lo", &format!("{KEYSTORE_IP}/32"));

    // The keystore (dropped before the lab: declared after it) and the group's record.
    let ks = in_netns(&router, || {
        Keystore::start_on(&dir, KEYSTORE_IP, RECORD_TTL)
    });
    in_netns(&router, || {
        ks.publish(RECORD_TTL, GROUP, &dir.join("group.pub"))
    });
    let server = ks.addr.to_string();
    lab.verifier_keystore = Some(format!(
        "[keystore]\n{}groups = [\"{GROUP}\"]\n",
        ks.client_lines(&server, REFRESH_MS, &dir.join("verifier.marks"))
    ));
    let socket = lab.start_verifier(&router, &ifs, "", Some("info"));
    for (i, ns) in servers.iter().enumerate() {
        let control = format!("max_weight = {MAX_WEIGHT}\n");
        if i == BAD {
            let top = format!(
                "strategy = \"reset\"\nweight = {MAX_WEIGHT}\ngroup_pub = \"{}\"\n",
                dir.join("group.pub").display()
            );
            lab.start_server_with(i, ns, "m0", "ctl0", &top, &control);
        } else {
            let marks = dir.join(format!("m{}.marks", i + 1));
            let tables = format!(
                "{control}[keystore]\n{}start_timeout_ms = 5000\n",
                ks.client_lines(&server, REFRESH_MS, &marks)
            );
            lab.start_server_with(i, ns, "m0", "ctl0", "strategy = \"reset\"\n", &tables);
        }
    }
    let ids: Vec<u32> = lab.fixture.members.iter().map(|m| m.id.0).collect();
    let bad_id = ids[BAD];
    let all: BTreeSet<String> = lab
        .fixture
        .members
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    let mut probe = Probe::start_steady(&lab, &client, &srcs, PROBE_EVERY, &all);
    wait_for("every member's claim at the verifier", || {
        claims(&socket).is_some_and(|c| c.len() == HONEST + 1)
    });
    // The daemons publish their counters to the admin socket once a second.
    std::thread::sleep(Duration::from_millis(2_500));
    let status = |i: usize| lab.admin_status(i).expect("admin status");
    let before: Vec<Status> = (0..HONEST).map(status).collect();
    println!(
        "insider: member {} of {}; keystore refresh {REFRESH_MS} ms (record TTL {RECORD_TTL} s), \
         max_weight {MAX_WEIGHT}; before: {}",
        lab.fixture.members[BAD].id,
        HONEST + 1,
        describe(&before[0])
    );

    let bad = &lab.fixture.members[BAD];
    let bad_key = KeyId::of(&bad.key.verifying_key()).to_string();
    let cert = manycast_server::keys::read_verified_certificate(
        &dir.join(format!("{}.cert", bad.id)),
        &lab.fixture.group_key.verifying_key(),
        daemon_kit::wall_clock(),
    )
    .expect("the insider's certificate");
    let bad_sender = Ipv4Addr::new(10, 0, BAD as u8 + 1, 2);
    let raw = raw_sender(&servers[BAD], "m0", bad_sender);
    let to_routers = SockAddr::from(SocketAddrV4::new(ALL_V3_ROUTERS, 0));
    let mut nonce = now_ms() << 16;
    // The insider's signed join for every slice of its certificate at `epoch`, from its link.
    let mut join = |epoch: u64| {
        nonce += 1;
        let c = JoinClaims {
            group: GROUP,
            record_type: RecordType::ModeIsInclude,
            entries: vec![SliceEntry::include(Slice::prefix(Ipv4Addr::UNSPECIFIED, 0))],
            epoch: AllocationEpoch(epoch),
            timestamp: Timestamp(now_ms()),
            nonce: igmp_ext::fixtures::nonce_bytes(nonce),
            standby: Vec::new(),
            liveness: Vec::new(),
            as_units: false,
        };
        let igmp = build_signed_report(&c, bad_sender, &cert, &bad.key).expect("join");
        let _ = raw.send_to(&build_datagram(bad_sender, &igmp), &to_routers);
    };
    // Unless `INSIDER_JOINS=0`: the insider also claims every slice at the router at epoch
    // u64::MAX, once a second in both phases.
    let max_joins = env_u64("INSIDER_JOINS").is_none_or(|v| v > 0);
    // Phase 1: the insider's forgeries, on a thread of their own until `stop`.
    let forger = Insider::start(
        &lab,
        BAD,
        &servers[BAD],
        ctl_addr(BAD),
        &servers[0],
        ctl_addr(0),
    );
    wait_for("the observer hears the insider's daemon", || {
        forger.heard_daemon()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let attacks = forge(forger, before[0].clone(), stop.clone());
    probe.collect();
    let from = Instant::now();
    let mut verifier_claims_missing = 0;
    while from.elapsed() < phase {
        if max_joins {
            join(u64::MAX);
        }
        std::thread::sleep(Duration::from_secs(1));
        if claims(&socket).is_some_and(|c| c.len() != HONEST + 1) {
            verifier_claims_missing += 1;
        }
    }
    let to = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let forger = attacks.join().expect("the forger");
    probe.collect();
    let after: Vec<Status> = (0..HONEST).map(status).collect();
    let served = served_throughout(&probe.log, srcs.len(), from, to);
    let units_lost = served.iter().filter(|&&s| !s).count();
    let mut changed = 0;
    let mut commits = 0;
    let mut bad_weight = BTreeSet::new();
    let mut uncovered = 0;
    for (b, a) in before.iter().zip(&after) {
        if a.epoch != b.epoch || a.unit_owner != b.unit_owner {
            changed += 1;
        }
        commits += a.counters.commits - b.counters.commits;
        if let Some(m) = a.members.iter().find(|m| m.id == bad_id) {
            bad_weight.insert(m.weight);
        }
        uncovered += a.unit_owner.iter().filter(|o| o.is_none()).count();
    }
    println!(
        "phase 1 ({:.1} s): {} forged control datagrams; client sources silent over {SILENCE:?}: \
         {units_lost} of {}",
        (to - from).as_secs_f64(),
        forger.sent.values().sum::<u64>(),
        srcs.len()
    );
    println!(
        "honest members: {changed} of {HONEST} allocations changed, {commits} commits, \
         {uncovered} unowned units; after: {}; the insider's weight as they see it: {:?}; \
         verifier polls missing a member's claim: {verifier_claims_missing}",
        describe(&after[0]),
        bad_weight
    );
    for (name, n) in &forger.sent {
        println!("  sent {n:>4}  {name}");
    }
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let d = delta(&a.counters.control_dropped, &b.counters.control_dropped);
        println!("  m{} control_dropped over the phase: {d:?}", ids[i]);
    }

    // Phase 2: the revocation, while the insider goes on.
    let phase1_forged = forger.sent.values().sum::<u64>();
    let stop = Arc::new(AtomicBool::new(false));
    let attacks = forge(forger, after[0].clone(), stop.clone());
    let bad_sources: Vec<usize> = last_server(&probe.log, Instant::now() - SILENCE)
        .into_iter()
        .filter(|(_, s)| *s == format!("m{bad_id}"))
        .map(|(src, _)| src)
        .collect();
    let mut tails: Vec<LogTail> = (0..HONEST)
        .map(|i| LogTail::new(dir.join(format!("m{}.log", ids[i]))))
        .collect();
    let stale_before = rejected(&socket, "stale-epoch");
    let revoked_before = rejected(&socket, "revoked");
    in_netns(&router, || ks.revoke(RECORD_TTL, GROUP, &bad_key));
    let t0 = Instant::now();
    let mut dropped_at: Vec<Option<Duration>> = vec![None; HONEST];
    let mut claim_gone: Option<Duration> = None;
    let mut verifier_refused: Option<Duration> = None;
    let mut last_bad_claim: Option<u64> = None;
    let mut honest_epochs_at_gone = BTreeMap::new();
    let limit = Duration::from_secs(40);
    let mut polls = 0u64;
    while t0.elapsed() < limit
        && (claim_gone.is_none()
            || dropped_at.iter().any(Option::is_none)
            || verifier_refused.is_none())
    {
        // The insider's join at epoch 0: stale until the verifier knows, then revoked.
        join(0);
        polls += 1;
        if max_joins && polls % 10 == 0 {
            join(u64::MAX);
        }
        for (i, t) in tails.iter_mut().enumerate() {
            if dropped_at[i].is_none()
                && t.fresh_lines().lines().any(|l| {
                    l.contains("member revoked by the keystore")
                        && l.contains(&format!("m{bad_id}"))
                })
            {
                dropped_at[i] = Some(t0.elapsed());
            }
        }
        if claim_gone.is_none() {
            if let Some(c) = claims(&socket) {
                match c.get(&bad_id) {
                    Some(&e) => last_bad_claim = Some(e),
                    None => {
                        claim_gone = Some(t0.elapsed());
                        honest_epochs_at_gone = c;
                    }
                }
            }
        }
        if verifier_refused.is_none() && rejected(&socket, "revoked") > revoked_before {
            verifier_refused = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let forger = attacks.join().expect("the forger");
    let end = Instant::now();
    probe.collect();
    let stale_during = rejected(&socket, "stale-epoch") - stale_before;
    let final_status: Vec<Status> = (0..HONEST).map(status).collect();
    let silences = longest_silence(&probe.log, srcs.len(), t0, end);
    let moved: Vec<u64> = bad_sources
        .iter()
        .map(|&s| silences[s].as_millis() as u64)
        .collect();
    let moved_lost = moved
        .iter()
        .filter(|&&ms| ms > SILENCE.as_millis() as u64)
        .count();
    let all_lost = silences.iter().filter(|d| **d > SILENCE).count();
    let ms = |d: Option<Duration>| d.map_or(-1, |d| d.as_millis() as i64);
    let honest_ms = if dropped_at.iter().all(Option::is_some) {
        dropped_at.iter().map(|d| ms(*d)).max().unwrap_or(-1)
    } else {
        -1
    };
    let verifier_ms = ms(claim_gone);
    let revoke_ms = if honest_ms >= 0 && verifier_ms >= 0 {
        honest_ms.max(verifier_ms)
    } else {
        -1
    };
    println!(
        "phase 2: revoked {bad_key} (m{bad_id}); dropped from the control group by {} ms \
         (per member {:?}); its claim gone at the verifier after {verifier_ms} ms (last seen \
         at epoch {last_bad_claim:?}; claims then: {honest_epochs_at_gone:?}); the verifier \
         first refused its join as revoked after {} ms ({stale_during} refused as stale \
         before); revoke_ms {revoke_ms} (target <= {} ms)",
        honest_ms,
        dropped_at.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        ms(verifier_refused),
        REFRESH_MS + 1_000
    );
    println!(
        "its {} client sources while its units moved: longest silence p50 {} / p99 {} / \
         max {} ms, {moved_lost} silent over {SILENCE:?} ({all_lost} of all {}); after: {}",
        moved.len(),
        percentile(&moved, 0.5),
        percentile(&moved, 0.99),
        moved.iter().max().copied().unwrap_or(0),
        srcs.len(),
        describe(&final_status[0])
    );
    for (i, (b, a)) in after.iter().zip(&final_status).enumerate() {
        let d = delta(&a.counters.control_dropped, &b.counters.control_dropped);
        println!("  m{} control_dropped over the revocation: {d:?}", ids[i]);
    }
    let insider_left = final_status
        .iter()
        .all(|s| s.units_of(bad_id) == 0 && !s.members.iter().any(|m| m.id == bad_id && m.live));
    let json = format!(
        r#"{{"bench":"attack-insider","insider_units_lost":{units_lost},"revoke_ms":{revoke_ms},"insider_seconds":{},"insider_forged":{},"insider_commits":{commits},"insider_allocations_changed":{changed},"keystore_refresh_ms":{REFRESH_MS},"revoke_control_ms":{honest_ms},"revoke_claims_ms":{verifier_ms},"revoke_verifier_refused_ms":{},"revoke_moved_units":{},"revoke_gap_p99_ms":{},"revoke_units_lost":{moved_lost},"revoke_insider_out":{insider_left},"insider_joins_max_epoch":{max_joins}}}"#,
        phase.as_secs(),
        phase1_forged,
        ms(verifier_refused),
        moved.len(),
        percentile(&moved, 0.99),
    );
    println!(
        "the insider's forgeries after its revocation: {}",
        forger.sent.values().sum::<u64>() - phase1_forged
    );
    drop(probe);
    if let Ok(keep) = std::env::var("INSIDER_LOGS") {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = std::fs::copy(e.path(), std::path::Path::new(&keep).join(e.file_name()));
            }
        }
    }
    emit("attack-insider", &json);
    drop(ks);
}
