//! `make bench B=balance`: max/mean load over 4 equal-weight servers, with 100,000 client sources
//! drawn from the real RIR delegation data (the `iptocc` crate: every delegated IPv4 block, a
//! block's chance proportional to its size), for:
//!
//! - Manycast slicing: the default (low-order 8 bits), and prefix slicing and finer low-order
//!   slicing for comparison;
//! - round-robin DNS: clients, in the order they arrive, get the servers in turn;
//! - a Maglev table (M = 65537) over the same sources;
//!
//! first with every source sending the same load, then with a Zipf (s = 1) heavy-hitter mix of
//! per-source request weights.
//!
//! `manycast_zipf_rebalanced` needs the load-aware rebalance of `igmp_ext::alloc`, which is not
//! in this branch yet: the field is left out of the JSON until it is (no invented figure).

use control_channel::sim::Rng;
use igmp_ext::{Allocation, MemberId, Slicing};
use manycast_e2e::cluster_bench::{
    allocated_sources, emit, loads, max_over_mean, zipf_weights, Maglev,
};

const SOURCES: usize = 100_000;
const SERVERS: usize = 4;
const MAGLEV_M: usize = 65537;

fn manycast(slicing: Slicing, sources: &[u32], weights: &[f64]) -> f64 {
    let members: Vec<(MemberId, u32)> = (1..=SERVERS as u32).map(|i| (MemberId(i), 1)).collect();
    let a = Allocation::new(slicing, &members);
    max_over_mean(&loads(SERVERS, sources, weights, |_, s| {
        let m = a.owner_of(s).expect("every unit owned");
        m.0 as usize - 1
    }))
}

fn main() {
    let mut rng = Rng::new(0x6261_6c61);
    let sources = allocated_sources(&mut rng, SOURCES);
    let uniform = vec![1.0; SOURCES];
    let zipf = zipf_weights(&mut rng, SOURCES, 1.0);
    let top = zipf.iter().copied().fold(0.0, f64::max) / zipf.iter().sum::<f64>();
    let names: Vec<String> = (1..=SERVERS).map(|i| format!("server-{i}")).collect();
    let maglev = Maglev::new(&names, MAGLEV_M);

    let row = |weights: &[f64]| {
        let rr = max_over_mean(&loads(SERVERS, &sources, weights, |i, _| i % SERVERS));
        let mg = max_over_mean(&loads(SERVERS, &sources, weights, |_, s| maglev.lookup(s)));
        let mc: Vec<(String, f64)> = [
            ("low-order 8", Slicing::LowOrder { bits: 8 }),
            ("low-order 12", Slicing::LowOrder { bits: 12 }),
            ("low-order 16", Slicing::LowOrder { bits: 16 }),
            ("prefix 8", Slicing::Prefix { bits: 8 }),
            ("prefix 16", Slicing::Prefix { bits: 16 }),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_owned(), manycast(s, &sources, weights)))
        .collect();
        (mc, rr, mg)
    };

    println!(
        "balance: {SOURCES} sources from RIR delegation data (iptocc), {SERVERS} servers of equal \
         weight; max/mean load"
    );
    let (mc, rr, mg) = row(&uniform);
    println!("equal load per source:");
    for (n, r) in &mc {
        println!("  manycast {n:<14} {r:.4}");
    }
    println!("  round-robin DNS        {rr:.4}");
    println!("  maglev (M={MAGLEV_M})   {mg:.4}");
    let (mcz, rrz, mgz) = row(&zipf);
    println!(
        "zipf s=1 request weights (top source {:.1}% of all load):",
        top * 100.0
    );
    for (n, r) in &mcz {
        println!("  manycast {n:<14} {r:.4}");
    }
    println!("  round-robin DNS        {rrz:.4}");
    println!("  maglev (M={MAGLEV_M})   {mgz:.4}");
    println!(
        "  manycast after a load-aware rebalance: not measured (igmp_ext::alloc has no \
         load-aware rebalance in this branch yet)"
    );
    let manycast = mc[0].1;
    emit(
        "balance",
        &format!(
            r#"{{"bench":"balance","manycast":{manycast:.4},"rr_dns":{rr:.4},"maglev":{mg:.4}}}"#
        ),
    );
}
