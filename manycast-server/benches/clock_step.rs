//! The real-daemon clock-step figures of `make bench B=faults` (issue 17; root, libfaketime):
//! the namespace cluster of `tests/clock_cluster.rs` (the real verifier, three
//! `manycast-server`s with `down_after_ms = 1000`, 36 clients with persistent sessions under the
//! reset strategy), one member's wall clock stepped while its monotonic clock runs on. Each run
//! starts a fresh cluster, lets the clients run 3 s, steps the member's clock and counts over
//! the next 60 s: the most commits any member made, and the client sessions reset beyond those
//! in the units that moved (a session restart not at an owner change).
//!
//! Runs: stepped back 60 s and back 5 s (`clock_step_commits`, `clock_step_resets`: the worse
//! of the two), and the other case, a member running 60 s ahead (excluded) stepped back
//! to the right time (`clock_rejoin_commits`, `clock_rejoin_resets`). Prints one JSON line;
//! `scripts/bench.sh` merges it into the faults line.

#[path = "../tests/harness.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../tests/clock_cluster.rs"]
#[allow(dead_code)]
mod clock_cluster;

use clock_cluster::{ClockCluster, Figures};
use std::time::Duration;

const WINDOW: Duration = Duration::from_secs(60);

fn fresh() -> ClockCluster {
    let mut c = ClockCluster::start(3, 36, 1_000);
    c.window(Duration::from_secs(3), |_| {});
    c
}

fn step_back(secs: i64) -> Figures {
    let mut c = fresh();
    let f = c.window(WINDOW, |c| c.set_offset(-secs));
    eprintln!("faults/clock_step: stepped back {secs} s: {}", f.json());
    f
}

fn rejoin() -> Figures {
    let mut c = fresh();
    c.set_offset(60);
    c.wait_excluded();
    c.window(Duration::from_secs(3), |_| {});
    let f = c.window(WINDOW, |c| c.set_offset(0));
    eprintln!(
        "faults/clock_step: 60 s ahead, then stepped back to the right time: {}",
        f.json()
    );
    f
}

fn main() {
    harness::require_root();
    let runs = [step_back(60), step_back(5)];
    let commits = runs.iter().map(Figures::max_commits).max().unwrap_or(0);
    let resets = runs.iter().map(|f| f.resets).max().unwrap_or(0);
    let lost = runs.iter().map(|f| f.lost).max().unwrap_or(0);
    let r = rejoin();
    println!(
        "{{\"clock_step_commits\":{commits},\"clock_step_resets\":{resets},\"clock_step_lost\":{lost},\"clock_rejoin_commits\":{},\"clock_rejoin_resets\":{},\"clock_rejoin_lost\":{}}}",
        r.max_commits(),
        r.resets,
        r.lost
    );
}
