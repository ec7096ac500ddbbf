//! `make bench B=cost`: what one datagram of each kind a flood can send costs the verifier, on
//! one thread (SPEC.md §5.4): junk refused by its checksum; a forged join (a member's
//! certificate copied, the signature broken) through the cheap checks, and then its signature
//! check; a join at the slice cap, forged; and a valid refresh verified one by one or in a batch
//! of 64. Figures are nanoseconds per datagram; the machine's load shows in them.

use igmp_ext::fixtures::{Fixture, IFINDEX, NOW};
use igmp_ext::join::MAX_JOIN_SLICES;
use igmp_ext::verify::{Candidate, Prechecked};
use igmp_ext::wire::igmp::fill_checksum;
use igmp_ext::{JoinVerifier, Slice, SliceSet, VerifierConfig};
use std::hint::black_box;
use std::time::Instant;

const N: usize = 2_048;
const BATCH: usize = 64;

fn per_item(n: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64 / n as f64
}

/// The same join with its signature's last byte flipped (checksum fixed).
fn forge(d: &[u8]) -> Vec<u8> {
    let mut d = d.to_vec();
    let last = d.len() - 1;
    d[last] ^= 1;
    fill_checksum(&mut d[24..]);
    d
}

fn candidates(v: &mut JoinVerifier, f: &Fixture, ds: &[Vec<u8>]) -> Vec<Candidate> {
    let keys = f.key_source();
    ds.iter()
        .map(|d| match v.precheck(NOW, IFINDEX, d, &keys) {
            Ok(Prechecked::Candidate(c)) => *c,
            other => panic!("a candidate: {other:?}"),
        })
        .collect()
}

fn main() {
    let f = Fixture::new(8);
    let keys = f.key_source();
    let config = VerifierConfig {
        replay_capacity: 4 * N,
        ..VerifierConfig::default()
    };
    let slicing = SliceSet::low_order_slicing(3);
    let valid: Vec<Vec<u8>> = (0..N)
        .map(|n| f.join(n % 8, &[slicing[n % 8]], 1, n as u64))
        .collect();
    // Not the first eight: those are accepted below, and a copy of their nonce is a duplicate.
    let forged: Vec<Vec<u8>> = valid.iter().skip(8).map(|d| forge(d)).collect();
    let mut junk = valid[0].clone();
    junk[26] ^= 0xff; // IGMP checksum
    let wide: Vec<Slice> = (0..MAX_JOIN_SLICES as u32)
        .map(|i| Slice::new(i << 8, 0xffff_ffff << (i % 3)))
        .collect();
    let at_cap: Vec<Vec<u8>> = (0..64)
        .map(|n| forge(&f.datagram(0, &f.claims(&wide, 1, NOW, 1_000_000 + n))))
        .collect();

    let mut v = JoinVerifier::new(config.clone(), f.links());
    // Cache every member's certificate, as after the first refreshes.
    for d in valid.iter().take(8) {
        v.handle_datagram(NOW, IFINDEX, d, &keys).expect("valid");
    }
    let junk_ns = per_item(N, || {
        for _ in 0..N {
            let _ = black_box(v.precheck(NOW, IFINDEX, black_box(&junk), &keys));
        }
    });
    let precheck_forged_ns = per_item(forged.len(), || {
        for d in &forged {
            let _ = black_box(v.precheck(NOW, IFINDEX, black_box(d), &keys));
        }
    });
    let c = candidates(&mut v, &f, &forged);
    let verify_forged_ns = per_item(forged.len(), || {
        for c in c {
            assert!(v.verify(NOW, vec![c])[0].is_err());
        }
    });
    let c = candidates(&mut v, &f, &at_cap);
    let at_cap_forged_ns = per_item(at_cap.len(), || {
        for c in c {
            assert!(v.verify(NOW, vec![c])[0].is_err());
        }
    }) + per_item(at_cap.len(), || {
        for d in &at_cap {
            let _ = black_box(v.precheck(NOW, IFINDEX, black_box(d), &keys));
        }
    });

    let mut v = JoinVerifier::new(config.clone(), f.links());
    let c = candidates(&mut v, &f, &valid[8..]);
    let n = c.len();
    let verify_one_ns = per_item(n, || {
        for c in c {
            black_box(v.verify(NOW, vec![c]));
        }
    });
    let mut v = JoinVerifier::new(config, f.links());
    let mut c = candidates(&mut v, &f, &valid[8..]);
    let verify_batch_ns = per_item(n, || {
        while !c.is_empty() {
            let batch = c.split_off(c.len().saturating_sub(BATCH));
            black_box(v.verify(NOW, batch));
        }
    });
    let line = format!(
        "{{\"bench\":\"cost\",\"junk_ns\":{junk_ns:.0},\"precheck_forged_ns\":{precheck_forged_ns:.0},\"verify_forged_ns\":{verify_forged_ns:.0},\"at_cap_forged_ns\":{at_cap_forged_ns:.0},\"verify_one_ns\":{verify_one_ns:.0},\"verify_batch_ns\":{verify_batch_ns:.0}}}"
    );
    eprintln!(
        "cost: ns per datagram, {N} of each ({} at the slice cap), batches of {BATCH}; one thread",
        at_cap.len()
    );
    let dir = std::env::var("MANYCAST_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench").to_string());
    std::fs::create_dir_all(&dir).expect("create bench dir");
    std::fs::write(format!("{dir}/cost.json"), format!("{line}\n")).expect("write bench result");
    println!("{line}");
}
