//! `make bench B=faults`: what faults cost. Each part measures one kind of fault and returns
//! its figures; `main` joins every part's figures into one JSON line. `FAULTS_PARTS`
//! (comma-separated part names, default all) runs some of them.
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
//!
//! Keystore recovery part (issue 17, item 5; trials in `tests/keystore_tests/recover.rs`):
//! `FAULTS_RECOVER_TRIALS` (default 8) outages of the real daemon, alternately SIGSTOP/SIGCONT
//! and SIGKILL/restart, each until the real client's keys (1 s TTL, 1 s `max_stale`, 10 s
//! refresh interval) have expired and 1.5 s more; `keystore_recover_ms` is the median time from
//! the keystore answering again to valid keys while lookups arrive every 20 ms (as joins do),
//! `keystore_recover_max_ms` the maximum, `keystore_recover_quiet_max_ms` the maximum over
//! half as many trials without lookups (the retry schedule alone).

#[allow(dead_code)]
#[path = "../tests/keystore_tests/daemon.rs"]
mod daemon;

#[allow(dead_code)]
#[path = "../tests/keystore_tests/burst.rs"]
mod burst;

#[allow(dead_code)]
#[path = "../tests/keystore_tests/recover.rs"]
mod recover;

use burst::{Found, Model, Rng};
use std::sync::{Arc, Mutex};

type Figures = Vec<(&'static str, u64)>;
/// A part's name (for `FAULTS_PARTS`) and the function that measures it.
type Part = (&'static str, fn() -> Figures);

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

fn keystore_recover() -> Figures {
    use recover::{Outage, Probe};
    let trials: usize = std::env::var("FAULTS_RECOVER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut d = daemon::Daemon::start_with("faults-recover", recover::DAEMON_EXTRA);
        let f = igmp_ext::fixtures::Fixture::new(1);
        recover::publish(&d, &f).await;
        let client = recover::watching_client(&d, f.group, recover::BENCH_REFRESH).await;
        let mut lookups = Vec::new();
        let mut quiet = Vec::new();
        for i in 0..trials + trials / 2 {
            let outage = if i % 2 == 0 {
                Outage::Stop
            } else {
                Outage::Restart
            };
            let probe = if i < trials {
                Probe::Lookups
            } else {
                Probe::Quiet
            };
            let took = recover::trial(&mut d, &client, f.group, outage, probe).await;
            eprintln!(
                "faults/keystore_recover: trial {i} {outage:?}/{probe:?}: {} ms",
                took.as_millis()
            );
            match probe {
                Probe::Lookups => lookups.push(took.as_millis() as u64),
                Probe::Quiet => quiet.push(took.as_millis() as u64),
            }
        }
        let _ = std::fs::remove_dir_all(&d.dir);
        lookups.sort_unstable();
        eprintln!(
            "faults/keystore_recover: with lookups {lookups:?} ms, without {quiet:?} ms (daemon {})",
            daemon::daemon_bin()
        );
        vec![
            (
                "keystore_recover_ms",
                lookups.get(lookups.len() / 2).copied().unwrap_or(0),
            ),
            (
                "keystore_recover_max_ms",
                lookups.last().copied().unwrap_or(0),
            ),
            (
                "keystore_recover_quiet_max_ms",
                quiet.iter().copied().max().unwrap_or(0),
            ),
        ]
    })
}

fn main() {
    let parts: [Part; 3] = [
        ("keystore", keystore),
        ("clock_step", clock_step),
        ("keystore_recover", keystore_recover),
    ];
    let only = std::env::var("FAULTS_PARTS").ok();
    let mut line = String::from("{\"bench\":\"faults\"");
    for (name, part) in parts {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|p| p.trim() == name))
        {
            continue;
        }
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
