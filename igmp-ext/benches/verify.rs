//! `make bench B=verify`: joins verified per second on one core through the whole pipeline
//! (parse, checksum, replay check, timeliness, link, key lookup, cached certificate, signature,
//! slice exclusivity), next to raw `ed25519-dalek` strict verifications of the same signatures
//! over the same bytes, measured in the same run; and the pipeline fed in bursts whose
//! signatures are checked in one batch.

use ed25519_dalek::Signature;
use igmp_ext::fixtures::{Fixture, IFINDEX, NOW};
use igmp_ext::wire::igmp::IgmpPacket;
use igmp_ext::{JoinVerifier, SliceSet, UnverifiedJoin, VerifierConfig};
use std::hint::black_box;
use std::time::{Duration, Instant};

const MEMBERS: u32 = 8;
const JOINS: usize = 2048;
const BURST: usize = 64;
const ROUNDS: usize = 5;

fn main() {
    let f = Fixture::new(MEMBERS);
    let slicing = SliceSet::low_order_slicing(3);
    let joins: Vec<Vec<u8>> = (0..JOINS)
        .map(|n| {
            let m = n % MEMBERS as usize;
            f.join(m, &[slicing[m]], 1, n as u64)
        })
        .collect();
    let keys = f.key_source();
    let config = VerifierConfig {
        replay_capacity: JOINS,
        ..VerifierConfig::default()
    };

    // The same signatures over the same bytes, extracted once, for the raw baseline.
    let raw_inputs: Vec<_> = joins
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
            let sig = Signature::from_bytes(d[d.len() - 64..].try_into().expect("64 bytes"));
            (key, msg, sig)
        })
        .collect();

    let mut pipeline = Duration::ZERO;
    let mut raw = Duration::ZERO;
    let mut batch = Duration::ZERO;
    for _ in 0..ROUNDS {
        // Raw strict verification of the same signatures over the same bytes.
        let t = Instant::now();
        for (key, msg, sig) in &raw_inputs {
            assert!(key.verify_strict(black_box(msg), sig).is_ok());
        }
        raw += t.elapsed();

        // The whole pipeline, one datagram at a time.
        let mut v = JoinVerifier::new(config.clone(), f.links());
        let t = Instant::now();
        for d in &joins {
            assert!(v.handle_datagram(NOW, IFINDEX, black_box(d), &keys).is_ok());
        }
        pipeline += t.elapsed();

        // The whole pipeline, in bursts verified as a batch.
        let mut v = JoinVerifier::new(config.clone(), f.links());
        let t = Instant::now();
        for chunk in joins.chunks(BURST) {
            let items: Vec<(u32, &[u8])> = chunk.iter().map(|d| (IFINDEX, d.as_slice())).collect();
            let out = v.handle_burst(NOW, black_box(&items), &keys);
            assert!(out.iter().all(Result::is_ok));
        }
        batch += t.elapsed();
    }
    let per_s = |d: Duration| (JOINS * ROUNDS) as f64 / d.as_secs_f64();
    let (pipeline_per_s, raw_per_s, batch_per_s) = (per_s(pipeline), per_s(raw), per_s(batch));
    let line = format!(
        "{{\"bench\":\"verify\",\"pipeline_per_s\":{:.0},\"raw_verify_per_s\":{:.0},\"ratio\":{:.3},\"batch_per_s\":{:.0},\"batch_ratio\":{:.3}}}",
        pipeline_per_s,
        raw_per_s,
        pipeline_per_s / raw_per_s,
        batch_per_s,
        batch_per_s / raw_per_s
    );
    eprintln!(
        "verify: {JOINS} joins x {ROUNDS} rounds from {MEMBERS} members, bursts of {BURST}; one thread"
    );
    let dir = std::env::var("MANYCAST_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench").to_string());
    std::fs::create_dir_all(&dir).expect("create bench dir");
    std::fs::write(format!("{dir}/verify.json"), format!("{line}\n")).expect("write bench result");
    println!("{line}");
}
