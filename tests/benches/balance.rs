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
//! then, for the Zipf mix, Manycast after one load-aware rebalance
//! (`Allocation::rebalanced_by_load`, fed the per-unit load the servers would measure: the same
//! requests the figure is computed over).

use control_channel::sim::Rng;
use igmp_ext::{Allocation, MemberId, Slicing};
use manycast_e2e::cluster_bench::{
    allocated_sources, emit, loads, max_over_mean, zipf_weights, Maglev,
};

const SOURCES: usize = 100_000;
const SERVERS: usize = 4;
const MAGLEV_M: usize = 65537;

fn members() -> Vec<(MemberId, u32)> {
    (1..=SERVERS as u32).map(|i| (MemberId(i), 1)).collect()
}

fn ratio(a: &Allocation, sources: &[u32], weights: &[f64]) -> f64 {
    max_over_mean(&loads(SERVERS, sources, weights, |_, s| {
        let m = a.owner_of(s).expect("every unit owned");
        m.0 as usize - 1
    }))
}

fn manycast(slicing: Slicing, sources: &[u32], weights: &[f64]) -> f64 {
    ratio(&Allocation::new(slicing, &members()), sources, weights)
}

/// Max/mean after a load-aware rebalance of the fresh allocation, and the units it moved.
fn manycast_rebalanced(slicing: Slicing, sources: &[u32], weights: &[f64]) -> (f64, usize) {
    let a = Allocation::new(slicing, &members());
    // Per-unit load as the servers would count it (integer request counts: weights scaled).
    let mut unit_load = vec![0u64; slicing.unit_count()];
    for (&s, &w) in sources.iter().zip(weights) {
        unit_load[slicing.unit_of(s)] += (w * 1e6).round() as u64;
    }
    let b = a.rebalanced_by_load(&members(), &unit_load);
    (ratio(&b, sources, weights), a.moved(&b))
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
    println!("zipf s=1, manycast after one load-aware rebalance (units it moved):");
    let mut rebalanced = Vec::new();
    for (n, slicing) in [
        ("low-order 8", Slicing::LowOrder { bits: 8 }),
        ("low-order 12", Slicing::LowOrder { bits: 12 }),
        ("low-order 16", Slicing::LowOrder { bits: 16 }),
        ("prefix 8", Slicing::Prefix { bits: 8 }),
    ] {
        let (r, moved) = manycast_rebalanced(slicing, &sources, &zipf);
        println!(
            "  manycast {n:<14} {r:.4}  ({moved} of {} units)",
            slicing.unit_count()
        );
        rebalanced.push(r);
    }
    let manycast = mc[0].1;
    let manycast_zipf_rebalanced = rebalanced[0];
    println!(
        "targets: ≤ 1.05 on real data ({}), ≤ 1.10 after rebalancing heavy hitters ({})",
        if manycast <= 1.05 { "met" } else { "NOT met" },
        if manycast_zipf_rebalanced <= 1.10 {
            "met"
        } else {
            "NOT met"
        },
    );
    emit(
        "balance",
        &format!(
            r#"{{"bench":"balance","manycast":{manycast:.4},"manycast_zipf_rebalanced":{manycast_zipf_rebalanced:.4},"rr_dns":{rr:.4},"maglev":{mg:.4}}}"#
        ),
    );
}
