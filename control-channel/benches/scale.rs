//! Issue 14 item 4, first step: how a member's control load and the convergence after a crash
//! grow with the size of one control group, in the simulator (release build, real Ed25519).
//!
//! For each configuration it prints one JSON line: the control datagrams each member receives
//! (and verifies) per second in a quiet steady state, and the time from one member's crash
//! until every survivor has committed an allocation without it (p50/p99 over seeded trials).
//! The last line has the key names for the figures measured; figures not measured are
//! left out, never guessed.
//!
//! `SCALE_SIZES=8,100` (default) picks the flat group sizes, `SCALE_TRIALS` the crash trials
//! per size (default 5).

use control_channel::sim::hierarchy::Hierarchy;
use control_channel::sim::hybrid;
use control_channel::sim::swim::{self, SwimSim, SwimTiming};
use control_channel::sim::{NetConfig, Rng, Sim, SimConfig};
use std::time::{Duration, Instant};

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Datagrams delivered to each member per second (mean over members) and the share its
/// endpoint accepted (verified and fresh), over `seconds` after the group converged.
/// p50 and p99 of `v`; `None` when it is empty.
fn p50_p99(v: &mut [u64]) -> Option<(u64, u64)> {
    (!v.is_empty()).then(|| (percentile(v, 0.5), percentile(v, 0.99)))
}

/// Both figures of a [`p50_p99`] for a JSON line: the numbers, or `null`.
fn json_pair(p: Option<(u64, u64)>) -> (String, String) {
    p.map_or(("null".into(), "null".into()), |(a, b)| {
        (a.to_string(), b.to_string())
    })
}

fn flat_load(members: u32, seconds: u64) -> (f64, f64) {
    let mut sim = Sim::new(&SimConfig::new(99, members));
    sim.record_all = false;
    let settled = sim.run_until_converged(Duration::from_secs(10));
    assert!(settled.is_some(), "{members}: no convergence at start");
    sim.run_for(Duration::from_millis(500));
    let count = |sim: &Sim| -> (u64, u64) {
        (0..sim.len())
            .map(|i| {
                let acc = sim.endpoint(i).map_or(0, |e| e.counters().accepted);
                (sim.received(i), acc)
            })
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    };
    let (r0, a0) = count(&sim);
    sim.run_for(Duration::from_secs(seconds));
    let (r1, a1) = count(&sim);
    assert!(sim.converged(), "{members}: not converged at the end");
    let per = |d: u64| d as f64 / f64::from(members) / seconds as f64;
    (per(r1 - r0), per(a1 - a0))
}

/// One crash: ms from the crash until every survivor committed one allocation without the
/// victim (and all agree), or `None` within 3 s.
fn flat_crash(seed: u64, members: u32) -> Option<u64> {
    let mut rng = Rng::new(seed);
    let mut sim = Sim::new(&SimConfig::new(seed, members));
    sim.record_all = false;
    sim.run_until_converged(Duration::from_secs(10))?;
    sim.run_for(Duration::from_millis(300 + rng.below(50)));
    let victim = rng.below(u64::from(members)) as usize;
    let victim_id = Sim::member_id(victim);
    sim.crash(victim);
    let crashed = sim.now_ms();
    let survivors = sim.running();
    for _ in 0..3000 {
        let next = sim.now_ms() + 1;
        sim.run_until(next);
        let without = survivors.iter().all(|&i| {
            sim.endpoint(i)
                .and_then(|e| e.committed())
                .is_some_and(|c| c.members().iter().all(|&(m, _)| m != victim_id))
        });
        if without && sim.converged() {
            assert!(sim.violations().is_empty(), "{:?}", sim.violations());
            return Some(sim.now_ms() - crashed);
        }
    }
    None
}

struct Row {
    members: u32,
    recv: f64,
    accepted: f64,
    converge: Option<(u64, u64)>,
    failed: usize,
}

fn flat(members: u32, trials: u64) -> Row {
    let t0 = Instant::now();
    let secs = if members <= 16 { 5 } else { 2 };
    let (recv, accepted) = flat_load(members, secs);
    let t_load = t0.elapsed().as_secs_f64();
    let mut conv = Vec::new();
    let mut failed = 0;
    for seed in 0..trials {
        match flat_crash(1000 + seed, members) {
            Some(ms) => conv.push(ms),
            None => failed += 1,
        }
    }
    let converge = p50_p99(&mut conv);
    let (c50, c99) = json_pair(converge);
    println!(
        "{{\"bench\":\"scale-config\",\"mode\":\"flat\",\"members\":{members},\"recv_per_member_s\":{recv:.1},\"accepted_per_member_s\":{accepted:.1},\"trials\":{trials},\"trials_failed\":{failed},\"converge_p50_ms\":{},\"converge_p99_ms\":{},\"load_wall_s\":{t_load:.1},\"wall_s\":{:.1},\"uptime\":\"{}\"}}",
        c50,
        c99,
        t0.elapsed().as_secs_f64(),
        uptime()
    );
    Row {
        members,
        recv,
        accepted,
        converge,
        failed,
    }
}

/// SWIM (foca) mode: datagrams received per member per second over `seconds` after 1 s, false
/// downs meanwhile, and crash trials (every survivor reports the victim down).
fn swim_row(members: u32, trials: u64) -> Row {
    let t0 = Instant::now();
    let timing = swim_timing();
    let secs = 2;
    let mut sim = SwimSim::new(7, members, timing);
    sim.run_until(1000);
    let r0: u64 = (0..sim.len()).map(|i| sim.received(i)).sum();
    let s0: u64 = (0..sim.len()).map(|i| sim.sent(i)).sum();
    sim.run_until(1000 + secs * 1000);
    let r1: u64 = (0..sim.len()).map(|i| sim.received(i)).sum();
    let s1: u64 = (0..sim.len()).map(|i| sim.sent(i)).sum();
    let refused: u64 = (0..sim.len()).map(|i| sim.refused(i)).sum();
    let per = |d: u64| d as f64 / f64::from(members) / secs as f64;
    let (recv, sent) = (per(r1 - r0), per(s1 - s0));
    let steady_false_downs = sim.downs().len();
    // False downs over 10 s at 5% loss, no crash (the control bench's loss figure).
    let mut lossy = SwimSim::new(8, members, timing);
    lossy.set_net(NetConfig {
        loss: 0.05,
        ..NetConfig::default()
    });
    lossy.run_until(10_000);
    let lossy_false_downs = lossy.downs().len();
    let mut victims: Vec<usize> = lossy.downs().iter().map(|&(_, _, m)| m).collect();
    victims.sort_unstable();
    victims.dedup();
    let lossy_victims = victims.len();
    let t_load = t0.elapsed().as_secs_f64();
    let mut conv = Vec::new();
    let (mut failed, mut false_downs) = (0, 0);
    for seed in 0..trials {
        let (d, f) = swim::crash_trial(2000 + seed, members, timing, Duration::from_secs(3));
        false_downs += f;
        match d {
            Some(ms) => conv.push(ms),
            None => failed += 1,
        }
    }
    let converge = p50_p99(&mut conv);
    let (c50, c99) = json_pair(converge);
    println!(
        "{{\"bench\":\"scale-config\",\"mode\":\"swim-foca\",\"members\":{members},\"timing\":\"{timing:?}\",\"recv_per_member_s\":{recv:.1},\"sent_per_member_s\":{sent:.1},\"refused\":{refused},\"steady_false_downs\":{steady_false_downs},\"false_downs_10s_loss5\":{lossy_false_downs},\"falsely_downed_members_10s_loss5\":{lossy_victims},\"trials\":{trials},\"trials_failed\":{failed},\"trial_false_downs\":{false_downs},\"detect_all_p50_ms\":{},\"detect_all_p99_ms\":{},\"load_wall_s\":{t_load:.1},\"wall_s\":{:.1},\"uptime\":\"{}\"}}",
        c50,
        c99,
        t0.elapsed().as_secs_f64(),
        uptime()
    );
    Row {
        members,
        recv,
        accepted: recv,
        converge,
        failed,
    }
}

/// Proposals and commits as today, detection by foca (`swim::hybrid_crash_trial`), endpoint
/// heartbeats every `SCALE_HYBRID_HEARTBEAT_MS` (default 1000).
fn hybrid_row(members: u32, trials: u64) -> Option<(u64, u64)> {
    let t0 = Instant::now();
    let timing = swim_timing();
    let hb = hybrid_heartbeat_ms();
    let (mut det, mut conv) = (Vec::new(), Vec::new());
    let (mut swim_load, mut ep_load, mut failed, mut violations) = (0.0, 0.0, 0, 0);
    for seed in 0..trials {
        let o = hybrid::hybrid_crash_trial(3000 + seed, members, timing, Duration::from_millis(hb));
        violations += o.violations.len();
        swim_load += o.swim_recv_per_member_s / trials as f64;
        ep_load += o.endpoint_recv_per_member_s / trials as f64;
        if !o.violations.is_empty() {
            eprintln!("scale: hybrid seed {}: {:?}", 3000 + seed, o.violations);
        }
        match (o.detect_ms, o.converge_ms) {
            (Some(d), Some(c)) => {
                det.push(d);
                conv.push(c);
            }
            _ => failed += 1,
        }
    }
    let (d50, d99) = json_pair(p50_p99(&mut det));
    let converge = p50_p99(&mut conv);
    let (c50, c99) = json_pair(converge);
    println!(
        "{{\"bench\":\"scale-config\",\"mode\":\"hybrid-foca-detect-today-agreement\",\"members\":{members},\"endpoint_heartbeat_ms\":{hb},\"swim_recv_per_member_s\":{swim_load:.1},\"endpoint_recv_per_member_s\":{ep_load:.1},\"trials\":{trials},\"trials_failed\":{failed},\"violations\":{violations},\"detect_all_p50_ms\":{},\"detect_all_p99_ms\":{},\"converge_p50_ms\":{},\"converge_p99_ms\":{},\"wall_s\":{:.1},\"uptime\":\"{}\"}}",
        d50,
        d99,
        c50,
        c99,
        t0.elapsed().as_secs_f64(),
        uptime()
    );
    converge.filter(|_| failed == 0 && violations == 0)
}

/// What the hierarchy run measured: member-crash and site-loss convergence, and the load.
struct HierarchyRow {
    members: u32,
    converge: Option<(u64, u64)>,
    site_loss: Option<(u64, u64)>,
    recv_mean: f64,
    recv_max: f64,
    failed: usize,
}

/// `sites` sites of `per_site` members (foca detection, today's agreement, endpoint
/// heartbeats every `SCALE_HYBRID_HEARTBEAT_MS`), `agents` of each in the upper group
/// (`sim::hierarchy`): two seconds of load, then `trials` member crashes (round robin over
/// the sites) and site losses of all sites but two, one after the other in one run.
fn hierarchy_row(sites: u32, per_site: u32, agents: u32, trials: u64) -> HierarchyRow {
    let t0 = Instant::now();
    let hb = hybrid_heartbeat_ms();
    let mut h = Hierarchy::new(
        4000,
        sites,
        per_site,
        agents,
        swim_timing(),
        Duration::from_millis(hb),
    );
    let mut row = HierarchyRow {
        members: sites * per_site,
        converge: None,
        site_loss: None,
        recv_mean: 0.0,
        recv_max: 0.0,
        failed: 0,
    };
    if !h.converge(20_000) {
        eprintln!("scale: hierarchy {sites}x{per_site}: no convergence at start");
        row.failed += 1;
        return row;
    }
    h.run_for(1000);
    let load = h.load(2000);
    row.recv_mean = load.mean;
    row.recv_max = load.max;
    let mut rng = Rng::new(41);
    let mut crash = Vec::new();
    for t in 0..trials {
        match h.member_crash(&mut rng, (t % u64::from(sites)) as usize, 5000) {
            Ok(ms) => crash.push(ms),
            Err(e) => {
                eprintln!("scale: hierarchy member crash {t}: {e}");
                row.failed += 1;
            }
        }
    }
    let mut loss = Vec::new();
    for site in 2..sites as usize {
        match h.site_loss(site, 5000) {
            Ok(ms) => loss.push(ms),
            Err(e) => {
                eprintln!("scale: hierarchy site loss {site}: {e}");
                row.failed += 1;
            }
        }
    }
    row.converge = p50_p99(&mut crash);
    row.site_loss = p50_p99(&mut loss);
    let (c50, c99) = json_pair(row.converge);
    let (l50, l99) = json_pair(row.site_loss);
    println!(
        "{{\"bench\":\"scale-config\",\"mode\":\"hierarchy-foca-detect-today-agreement\",\"sites\":{sites},\"members_per_site\":{per_site},\"agents_per_site\":{agents},\"endpoint_heartbeat_ms\":{hb},\"recv_per_member_s_mean\":{:.1},\"recv_per_member_s_max\":{:.1},\"site_endpoint_recv_s\":{:.1},\"site_swim_recv_s\":{:.1},\"upper_endpoint_recv_s\":{:.1},\"upper_swim_recv_s\":{:.1},\"member_crashes\":{},\"site_losses\":{},\"failed\":{},\"converge_p50_ms\":{c50},\"converge_p99_ms\":{c99},\"site_loss_p50_ms\":{l50},\"site_loss_p99_ms\":{l99},\"wall_s\":{:.1},\"uptime\":\"{}\"}}",
        load.mean,
        load.max,
        load.site_endpoint,
        load.site_swim,
        load.upper_endpoint,
        load.upper_swim,
        crash.len(),
        loss.len(),
        row.failed,
        t0.elapsed().as_secs_f64(),
        uptime()
    );
    row
}

fn hybrid_heartbeat_ms() -> u64 {
    std::env::var("SCALE_HYBRID_HEARTBEAT_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

/// `SCALE_SWIM_TIMING=probe,rtt,suspect,gossip` (ms) overrides [`SwimTiming::fast`].
fn swim_timing() -> SwimTiming {
    let mut t = SwimTiming::fast();
    if let Ok(v) = std::env::var("SCALE_SWIM_TIMING") {
        let ms: Vec<u64> = v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
        if let [p, r, s, g] = ms[..] {
            t.probe_period = Duration::from_millis(p);
            t.probe_rtt = Duration::from_millis(r);
            t.suspect_to_down = Duration::from_millis(s);
            t.gossip_every = Duration::from_millis(g);
        }
    }
    t
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let sizes: Vec<u32> = std::env::var("SCALE_SIZES")
        .unwrap_or_else(|_| "8,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let trials: u64 = std::env::var("SCALE_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rows: Vec<Row> = sizes.iter().map(|&n| flat(n, trials)).collect();
    let swim_sizes: Vec<u32> = std::env::var("SCALE_SWIM_SIZES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let swim_rows: Vec<Row> = swim_sizes.iter().map(|&n| swim_row(n, trials)).collect();
    let mut keys = Vec::new();
    if let Some(r) = rows.iter().find(|r| r.members == 8) {
        keys.push(format!("\"sim_recv_per_member_s_8\":{:.1}", r.recv));
    }
    if let Some(r) = rows.iter().find(|r| r.members == 1000) {
        // Today's flat group of the hierarchy's size, beside it (it stops fitting a datagram
        // at a few hundred members, NOTES.md "Scale").
        keys.push(format!("\"flat_recv_per_member_s_1000\":{:.1}", r.recv));
        if let (Some(c), 0) = (r.converge, r.failed) {
            keys.push(format!("\"flat_converge_p99_ms_1000\":{}", c.1));
        }
    }
    let hybrid_sizes: Vec<u32> = std::env::var("SCALE_HYBRID_SIZES")
        .unwrap_or_else(|_| "100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for &n in &hybrid_sizes {
        if let Some(c) = hybrid_row(n, trials) {
            // One site's group with foca detection: not the 10 x 100 figure (no upper
            // group, no site loss), so under its own name.
            keys.push(format!("\"hybrid_converge_p99_ms_{n}\":{}", c.1));
        }
    }
    // `SCALE_HIERARCHY=sites x members x agents`, default 10x100x2; empty: not run.
    let hierarchy = std::env::var("SCALE_HIERARCHY").unwrap_or_else(|_| "10x100x2".into());
    let shape: Vec<u32> = hierarchy
        .split('x')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if let [sites, per_site, agents] = shape[..] {
        let r = hierarchy_row(sites, per_site, agents, trials.max(u64::from(sites)));
        let n = r.members;
        if r.failed == 0 {
            // The keys name the 10 x 100 shape; another shape keeps its size.
            let suffix = if n == 1000 {
                String::new()
            } else {
                format!("_{n}")
            };
            if let Some(c) = r.converge {
                keys.push(format!("\"sim_converge_p99_ms{suffix}\":{}", c.1));
            }
            if let Some(l) = r.site_loss {
                keys.push(format!("\"sim_site_loss_p99_ms{suffix}\":{}", l.1));
            }
        }
        keys.push(format!("\"sim_recv_per_member_s_{n}\":{:.1}", r.recv_mean));
        keys.push(format!(
            "\"sim_recv_per_member_s_{n}_max\":{:.1}",
            r.recv_max
        ));
    }
    if let Some(r) = swim_rows.iter().find(|r| r.members == 1000) {
        // Detection only (no proposals, commits or heartbeats): not the figure, so
        // under its own names.
        keys.push(format!(
            "\"swim_detect_recv_per_member_s_1000\":{:.1}",
            r.recv
        ));
        if let (Some(c), 0) = (r.converge, r.failed) {
            keys.push(format!("\"swim_detect_p99_ms_1000\":{}", c.1));
        }
    }
    let _ = rows.iter().map(|r| r.accepted).sum::<f64>();
    keys.insert(0, "\"bench\":\"scale\"".to_string());
    println!("{{{}}}", keys.join(","));
}
