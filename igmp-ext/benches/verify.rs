//! `make bench B=verify`: joins verified per second on one core through the whole pipeline
//! (parse, checksum, replay check, timeliness, link, key lookup, cached certificate, signature,
//! slice exclusivity), next to raw `ed25519-dalek` strict verifications of the same signatures
//! over the same bytes, measured in the same run; and the pipeline fed in bursts whose
//! signatures are checked in one batch. The same for MLDv2 joins (issue 15): the IPv6 pipeline
//! (`MldJoinVerifier`: parse, checksum, timeliness, link, key lookup, cached certificate,
//! signature, replay, exclusivity) against raw verification of its own signatures, in the same
//! rounds, and its rate as a share of the IPv4 pipeline's (`pipeline6_vs_ipv4`). The MLDv2
//! verifier has no burst path, so there is no IPv6 batch figure. Rates are per second of the
//! benchmark thread's CPU time, on one core.

use ed25519_dalek::{Signature, VerifyingKey};
use igmp_ext::fixtures::{Fixture, IFINDEX, NOW};
use igmp_ext::mld_verifier::MldJoinVerifier;
use igmp_ext::verify6::MldVerifierConfig;
use igmp_ext::wire::igmp::IgmpPacket;
use igmp_ext::wire::ipv6::Ipv6Packet;
use igmp_ext::wire::mld::MldPacket;
use igmp_ext::{
    JoinVerifier, SliceSet, SliceSet6, UnverifiedJoin, UnverifiedMldJoin, VerifierConfig,
};
use std::hint::black_box;
use std::time::Duration;

const MEMBERS: u32 = 8;
const JOINS: usize = 2048;
const BURST: usize = 64;
const ROUNDS: usize = 5;

/// One raw strict verification's inputs: the member key, the signed bytes, the signature.
type RawInput = (VerifyingKey, Vec<u8>, Signature);

/// The signature a join datagram ends with (IGMPv3 and MLDv2 alike: the SIGNATURE TLV is the
/// last, its value the last 64 bytes).
fn trailing_signature(d: &[u8]) -> Signature {
    Signature::from_bytes(d[d.len() - 64..].try_into().expect("64 bytes"))
}

/// CPU time of the calling thread so far: what the figures are per second of, so that the
/// other work on a shared machine, which preempts the thread, does not count against a phase
/// (wall time did: the same phase's rate swung by 15 % between rounds at load 3 on 2 cores).
fn cpu_now() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat's first field");
    Duration::from_nanos(ns)
}

/// Strict verifications of every input, timed.
fn raw_verify(inputs: &[RawInput]) -> Duration {
    let t = cpu_now();
    for (key, msg, sig) in inputs {
        assert!(key.verify_strict(black_box(msg), sig).is_ok());
    }
    cpu_now() - t
}

/// Member `n % MEMBERS`'s IGMPv3 joins, one slice of 8 each, and the raw baseline's inputs.
fn igmp_joins(f: &Fixture) -> (Vec<Vec<u8>>, Vec<RawInput>) {
    let slicing = SliceSet::low_order_slicing(3);
    let joins: Vec<Vec<u8>> = (0..JOINS)
        .map(|n| {
            let m = n % MEMBERS as usize;
            f.join(m, &[slicing[m]], 1, n as u64)
        })
        .collect();
    // The same signatures over the same bytes, extracted once, for the raw baseline.
    let raw = joins
        .iter()
        .enumerate()
        .map(|(n, d)| {
            let packet = IgmpPacket::new_checked(&d[24..]).expect("fixture join parses");
            let join = UnverifiedJoin::parse(&packet, |_| true)
                .expect("fixture join parses")
                .expect("fixture join is for a protected group");
            let key = join
                .certificate()
                .expect("fixture certificate decodes")
                .unverified_body()
                .member_key;
            let msg = join.signed_message(f.members[n % MEMBERS as usize].addr);
            (key, msg, trailing_signature(d))
        })
        .collect();
    (joins, raw)
}

/// The MLDv2 counterpart of [`igmp_joins`]: member `n % MEMBERS`'s joins from its link-local
/// address for one of the 8 units of the /56 site slicing, and the raw baseline's inputs.
fn mld_joins(f: &Fixture) -> (Vec<Vec<u8>>, Vec<RawInput>) {
    let units = SliceSet6::site_slicing(3);
    let joins: Vec<Vec<u8>> = (0..JOINS)
        .map(|n| {
            let m = n % MEMBERS as usize;
            f.datagram6(m, &f.claims6(&[units[m]], 1, NOW, n as u64))
        })
        .collect();
    let raw = joins
        .iter()
        .enumerate()
        .map(|(n, d)| {
            let ip = Ipv6Packet::new_checked(d.as_slice()).expect("fixture join parses");
            let mld = MldPacket::new_checked(ip.payload()).expect("fixture join parses");
            let join = UnverifiedMldJoin::parse(&mld, |_| true)
                .expect("fixture join parses")
                .expect("fixture join is for a protected group");
            let key = join
                .certificate()
                .expect("fixture certificate decodes")
                .unverified_body()
                .member_key;
            let msg = join.signed_message(f.addr6(n % MEMBERS as usize));
            (key, msg, trailing_signature(d))
        })
        .collect();
    (joins, raw)
}

fn main() {
    let f = Fixture::new(MEMBERS);
    let (joins, raw_inputs) = igmp_joins(&f);
    let keys = f.key_source();
    let config = VerifierConfig {
        replay_capacity: JOINS,
        ..VerifierConfig::default()
    };
    // MLDv2: members certified for every IPv6 slice of the fixture's IPv6 group (a version 2
    // certificate with an IPv6 section; the IPv4 joins keep the version 1 certificates their
    // earlier figures were measured with).
    let f6 = Fixture::dual_stack(MEMBERS, SliceSet6::full());
    let (joins6, raw_inputs6) = mld_joins(&f6);
    let keys6 = f6.key_source6();

    let mut pipeline = Duration::ZERO;
    let mut raw = Duration::ZERO;
    let mut batch = Duration::ZERO;
    let mut pipeline6 = Duration::ZERO;
    let mut raw6 = Duration::ZERO;
    for round in 0..ROUNDS {
        // IPv4 first in even rounds, IPv6 first in odd ones, so that neither family always
        // runs after the other (the machine is shared and its load drifts).
        let mut igmp = || {
            // Raw strict verification of the same signatures over the same bytes.
            raw += raw_verify(&raw_inputs);

            // The whole pipeline, one datagram at a time.
            let mut v = JoinVerifier::new(config.clone(), f.links());
            let t = cpu_now();
            for d in &joins {
                assert!(v.handle_datagram(NOW, IFINDEX, black_box(d), &keys).is_ok());
            }
            pipeline += cpu_now() - t;

            // The whole pipeline, in bursts verified as a batch.
            let mut v = JoinVerifier::new(config.clone(), f.links());
            let t = cpu_now();
            for chunk in joins.chunks(BURST) {
                let items: Vec<(u32, &[u8])> =
                    chunk.iter().map(|d| (IFINDEX, d.as_slice())).collect();
                let out = v.handle_burst(NOW, black_box(&items), &keys);
                assert!(out.iter().all(Result::is_ok));
            }
            batch += cpu_now() - t;
        };
        // MLDv2: raw, then the whole pipeline one datagram at a time, with the same limits.
        let mut mld = || {
            raw6 += raw_verify(&raw_inputs6);
            let mut v = MldJoinVerifier::new(MldVerifierConfig::default(), &config, f6.links6());
            let t = cpu_now();
            for d in &joins6 {
                assert!(v
                    .handle_datagram(NOW, IFINDEX, black_box(d), &keys6)
                    .is_ok());
            }
            pipeline6 += cpu_now() - t;
        };
        if round % 2 == 0 {
            igmp();
            mld();
        } else {
            mld();
            igmp();
        }
    }
    let per_s = |d: Duration| (JOINS * ROUNDS) as f64 / d.as_secs_f64();
    let (pipeline_per_s, raw_per_s, batch_per_s) = (per_s(pipeline), per_s(raw), per_s(batch));
    let (pipeline6_per_s, raw6_per_s) = (per_s(pipeline6), per_s(raw6));
    let line = format!(
        "{{\"bench\":\"verify\",\"pipeline_per_s\":{:.0},\"raw_verify_per_s\":{:.0},\"ratio\":{:.3},\"batch_per_s\":{:.0},\"batch_ratio\":{:.3},\"pipeline6_per_s\":{:.0},\"raw_verify6_per_s\":{:.0},\"ratio6\":{:.3},\"pipeline6_vs_ipv4\":{:.3}}}",
        pipeline_per_s,
        raw_per_s,
        pipeline_per_s / raw_per_s,
        batch_per_s,
        batch_per_s / raw_per_s,
        pipeline6_per_s,
        raw6_per_s,
        pipeline6_per_s / raw6_per_s,
        pipeline6_per_s / pipeline_per_s
    );
    eprintln!(
        "verify: {JOINS} joins x {ROUNDS} rounds from {MEMBERS} members, IGMPv3 and MLDv2 in \
         each round, IGMPv3 also in bursts of {BURST}; one thread"
    );
    let signed = |inputs: &[RawInput]| inputs[0].1.len();
    eprintln!(
        "verify: signed bytes per join: IGMPv3 {} (datagram {}), MLDv2 {} (datagram {})",
        signed(&raw_inputs),
        joins[0].len(),
        signed(&raw_inputs6),
        joins6[0].len()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "verify: load average at the end {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let dir = std::env::var("MANYCAST_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench").to_string());
    std::fs::create_dir_all(&dir).expect("create bench dir");
    std::fs::write(format!("{dir}/verify.json"), format!("{line}\n")).expect("write bench result");
    println!("{line}");
}
