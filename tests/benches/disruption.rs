//! `make bench B=disruption`: the share of client sources that change server when a member
//! joins or leaves, with `Allocation::rebalanced` (the allocation the control channel commits)
//! over 100,000 sources drawn from the real RIR delegation data, next to the least possible: the
//! joiner's or leaver's fair share of the weights. Default slicing (low-order, 8 bits).
//!
//! The last line is the JSON of the worst scenario (largest excess over the minimum).

use control_channel::sim::Rng;
use igmp_ext::{Allocation, MemberId, Slicing};
use manycast_e2e::cluster_bench::{allocated_sources, emit, fair_share_moved, moved_share};

const SOURCES: usize = 100_000;

/// A scenario: its name, the (member, weight) list before and after.
type Scenario = (&'static str, Vec<(u32, u32)>, Vec<(u32, u32)>);

fn members(weights: &[(u32, u32)]) -> Vec<(MemberId, u32)> {
    weights.iter().map(|&(m, w)| (MemberId(m), w)).collect()
}

fn main() {
    let mut rng = Rng::new(0x6d61_6e79);
    let sources = allocated_sources(&mut rng, SOURCES);
    let slicing = Slicing::LowOrder { bits: 8 };
    let one_slice = 1.0 / slicing.unit_count() as f64;
    let scenarios: Vec<Scenario> = vec![
        (
            "4→5 equal",
            vec![(1, 1), (2, 1), (3, 1), (4, 1)],
            vec![(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)],
        ),
        (
            "4→3 equal",
            vec![(1, 1), (2, 1), (3, 1), (4, 1)],
            vec![(1, 1), (2, 1), (4, 1)],
        ),
        (
            "4→5 weights 1,2,3,4 + 2",
            vec![(1, 1), (2, 2), (3, 3), (4, 4)],
            vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 2)],
        ),
        (
            "4→3 weights 1,2,3,4 − w4",
            vec![(1, 1), (2, 2), (3, 3), (4, 4)],
            vec![(1, 1), (2, 2), (3, 3)],
        ),
        (
            "4→3 weights 1,2,3,4 − w1",
            vec![(1, 1), (2, 2), (3, 3), (4, 4)],
            vec![(2, 2), (3, 3), (4, 4)],
        ),
        (
            "4→5 weights 1,1,2,2 + 4",
            vec![(1, 1), (2, 1), (3, 2), (4, 2)],
            vec![(1, 1), (2, 1), (3, 2), (4, 2), (5, 4)],
        ),
        (
            "4→5 weights 3,1,1,1 + 1",
            vec![(1, 3), (2, 1), (3, 1), (4, 1)],
            vec![(1, 3), (2, 1), (3, 1), (4, 1), (5, 1)],
        ),
    ];
    println!(
        "disruption: {SOURCES} sources from RIR delegation data (iptocc), low-order 8-bit slicing; \
         one slice = {one_slice:.4} of the space"
    );
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>9} {:>10} {:>6}",
        "scenario", "moved", "minimum", "excess", "slices", "min slices", "≤+1?"
    );
    let mut worst: Option<(f64, f64)> = None;
    let mut all_within = true;
    for (name, before, after) in &scenarios {
        let (before, after) = (members(before), members(after));
        let a = Allocation::new(slicing, &before);
        let b = a.rebalanced(&after);
        let moved = moved_share(&a, &b, &sources);
        let minimum = fair_share_moved(&before, &after);
        let within = moved <= minimum + one_slice;
        all_within &= within;
        println!(
            "{name:<28} {moved:>8.4} {minimum:>8.4} {:>+8.4} {:>9} {:>10} {:>6}",
            moved - minimum,
            a.moved(&b),
            a.minimum_moves(&after),
            if within { "yes" } else { "NO" }
        );
        if worst.is_none_or(|(m, n)| moved - minimum > m - n) {
            worst = Some((moved, minimum));
        }
    }
    println!(
        "target (minimum + one slice) met in every scenario: {}",
        if all_within { "yes" } else { "no" }
    );
    let (moved, minimum) = worst.expect("scenarios");
    emit(
        "disruption",
        &format!(r#"{{"bench":"disruption","moved":{moved:.4},"minimum":{minimum:.4}}}"#),
    );
}
