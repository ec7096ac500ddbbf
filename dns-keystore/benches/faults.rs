//! `make bench B=faults`: what faults cost. Each part measures one kind of fault and returns
//! its figures; `main` joins every part's figures into one JSON line (a part for keystore
//! recovery is to be added next to [`keystore`] and [`clock_step`]).
//!
//! Keystore part (issue 17): `FAULTS_KEYSTORE_TRIALS` (default 50) trials on one state
//! directory, each a burst of updates from concurrent writers SIGKILLed at a random instant
//! (40-400 ms in), then a restart and a check of every key with the validating client, the
//! validator at the service name and `delv` on the keys the trial wrote. Set
//! `DNS_KEYSTORE_BIN` to measure another build of the daemon (such as the one before the fix).
//!
//! Clock-step part (issue 17 item 4): in the control-channel simulator with real endpoints (not
//! yet the real daemons), four members; one member's wall clock is stepped back 60 s, and in
//! another run back 5 s, its monotonic clock running on; `clock_step_commits` is the most
//! allocations any member committed in the 60 s after the step, the worse of the two runs, over
//! `FAULTS_CLOCK_SEEDS` (default 5) seeds each. Client resets need the real service and are not
//! measured here.

#[allow(dead_code)]
#[path = "../tests/keystore_tests/daemon.rs"]
mod daemon;

#[allow(dead_code)]
#[path = "../tests/keystore_tests/burst.rs"]
mod burst;

use burst::{Found, Model, Rng};
use std::sync::{Arc, Mutex};

type Figures = Vec<(&'static str, u64)>;

fn keystore() -> Figures {
    let trials: u64 = std::env::var("FAULTS_KEYSTORE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed = daemon_kit::wall_clock().as_millis();
    let mut rng = Rng::new(seed);
    let mut d = daemon::Daemon::start("faults");
    let mut model = Arc::new(Mutex::new(Model::default()));
    let mut total = Found::default();
    for _ in 0..trials {
        total += burst::trial(&mut d, &mut model, &mut rng, true);
    }
    let acked = model.lock().expect("model").acked_updates;
    eprintln!(
        "faults/keystore: daemon {}, seed {seed}, {trials} trials, {acked} updates acknowledged (since the last fresh state), {} in flight at a kill ({} of them applied), {} key checks, {} lost, {} torn",
        daemon::daemon_bin(),
        total.in_flight,
        total.in_flight_applied,
        total.checked,
        total.acked_lost,
        total.torn
    );
    let _ = std::fs::remove_dir_all(&d.dir);
    vec![
        ("keystore_trials", trials),
        ("keystore_acked_lost", total.acked_lost),
        ("keystore_torn", total.torn),
    ]
}

fn clock_step() -> Figures {
    use control_channel::sim;
    let seeds: u64 = std::env::var("FAULTS_CLOCK_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let window = std::time::Duration::from_secs(60);
    let mut worst = 0;
    for step_ms in [-60_000, -5_000] {
        for seed in 1..=seeds {
            let o = sim::clock_step(seed, &[(0, step_ms)], window);
            assert!(
                o.violations.is_empty(),
                "clock step {step_ms} ms, seed {seed}: {o:?}"
            );
            eprintln!(
                "faults/clock_step: simulator, 4 members, member {} stepped {step_ms} ms, seed {seed}: {} commits (most at one member), {} downs and {} ups (most of one member about one peer) in 60 s; the stepped member reported ClockUntimely {} times",
                sim::CLOCK_STEP_MEMBER + 1,
                o.commits,
                o.downs,
                o.ups,
                o.untimely_reported
            );
            worst = worst.max(o.commits);
        }
    }
    vec![("clock_step_commits", worst)]
}

fn main() {
    let parts: [fn() -> Figures; 2] = [keystore, clock_step];
    let mut line = String::from("{\"bench\":\"faults\"");
    for part in parts {
        for (name, value) in part() {
            line.push_str(&format!(",\"{name}\":{value}"));
        }
    }
    line.push('}');
    let out = std::env::var("MANYCAST_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench").to_string());
    std::fs::create_dir_all(&out).expect("create bench dir");
    std::fs::write(format!("{out}/faults.json"), format!("{line}\n")).expect("write result");
    println!("{line}");
}
