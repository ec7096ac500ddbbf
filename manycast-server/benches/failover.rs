//! `make bench B=failover` (root): time from a server's SIGKILL until every one of its client
//! sources is answered again, with the real binaries in network namespaces, next to keepalived
//! VRRP failover of a VIP in the same topology.
//!
//! Topology (the namespace harness of this package's tests): a router running the real
//! `manycast-verifier`; four `manycast-server`s on four subnets (10.0.i.0/24), their control
//! group on a shared back-end segment (the verifier does not route the control group); a client
//! with 85 source addresses spread over the low-order bits, each probing the UDP service every
//! 10 ms (8,500 requests/s). A trial: SIGKILL one server (in turn), then time until each source
//! that server answered is answered by another; restart it and wait until all four serve again.
//!
//! keepalived: servers 1 and 2 also share a VIP segment with the router; keepalived (MASTER on
//! 1, BACKUP on 2) moves 10.88.0.100 between them, a UDP responder on each answers for it, and
//! the client probes the VIP the same way. A failure is the master host going away: its
//! keepalived processes SIGKILLed and its VIP link taken down (a SIGKILL of keepalived alone
//! leaves the VIP up and answering). Measured with keepalived's defaults (VRRPv2, advert_int 1)
//! and its fastest setting (VRRPv3, advert_int 0.01, the smallest it accepts: 0.001 is refused
//! as "not valid").

#[path = "support/breakdown.rs"]
mod breakdown;
#[path = "../tests/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "support/health_failover.rs"]
mod health_failover;
#[path = "support/probe.rs"]
#[allow(dead_code)]
mod probe;

use harness::{in_netns, verifier_binary, wait_for, Lab, GROUP, PORT};
use manycast_e2e::cluster_bench::{emit, percentile};
use probe::Probe;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SERVERS: usize = 4;
const TRIALS: usize = 20;
const KEEPALIVED_TRIALS: usize = 10;
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// A trial that has not recovered by then is reported as failed (a hang guard, not a target).
const TRIAL_LIMIT: Duration = Duration::from_secs(15);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 100);
const VIP_PORT: u16 = 6000;

fn sources() -> Vec<Ipv4Addr> {
    // 85 addresses whose last byte (the default 8-bit low-order slice) takes every residue.
    (0..85u8)
        .map(|k| Ipv4Addr::new(10, 1, 0, 2 + 3 * k))
        .collect()
}

fn run(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("run in netns");
    assert!(
        out.status.success(),
        "{ns}: {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn verifier_up(socket: &std::path::Path) -> bool {
    Command::new(verifier_binary())
        .args(["--status", "--json", "--socket"])
        .arg(socket)
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

fn manycast_trials(
    lab: &mut Lab,
    probe: &mut Probe,
    servers: &[String],
) -> (Vec<u64>, usize, usize) {
    let names: Vec<String> = lab
        .fixture
        .members
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let mut times = Vec::new();
    let mut failed = 0;
    let mut victims_total = 0;
    for trial in 0..TRIALS {
        // Settled: every member at one epoch, and the same owner for every source in two
        // consecutive windows (a restart's reallocation has finished moving sources).
        let owners = loop {
            let window = Duration::from_millis(500);
            let (Some(first), Some(second)) =
                (probe.steady(window, &all), probe.steady(window, &all))
            else {
                panic!("the cluster did not settle\n{}", lab.logs());
            };
            let epoch = lab.metric(0, "epoch");
            if first == second && (1..SERVERS).all(|i| lab.metric(i, "epoch") == epoch) {
                break second;
            }
        };
        let i = trial % SERVERS;
        let victim = &names[i];
        let victims: Vec<usize> = (0..owners.len())
            .filter(|&s| &owners[s] == victim)
            .collect();
        victims_total += victims.len();
        let (killed_at, killed_wall) = (Instant::now(), breakdown::wall_now());
        lab.kill(victim);
        lab.children.retain(|(n, _)| n != victim);
        match probe.recovery(killed_at, victim, &victims, TRIAL_LIMIT) {
            Some(d) => {
                let ms = d.as_millis() as u64;
                let heirs: Vec<String> = names.iter().filter(|n| *n != victim).cloned().collect();
                let steps = breakdown::Breakdown::read(
                    lab.dir.path(),
                    &heirs,
                    killed_wall,
                    killed_at,
                    &probe.log,
                    victim,
                    &victims,
                );
                println!(
                    "  trial {trial:>2}: killed {victim} ({} sources): all answered again after {ms} ms\n             {}",
                    victims.len(),
                    steps.describe()
                );
                times.push(ms);
            }
            None => {
                println!(
                    "  trial {trial:>2}: killed {victim}: NOT recovered within {TRIAL_LIMIT:?}"
                );
                failed += 1;
            }
        }
        // The same member comes back; the cluster gives it its share again.
        let _ = std::fs::remove_file(lab.dir.path().join(format!("{victim}.prom")));
        lab.start_server(i, &servers[i], "m0", "ctl0");
    }
    assert!(
        probe.steady(Duration::from_millis(500), &all).is_some(),
        "{}",
        lab.logs()
    );
    (times, failed, victims_total)
}

/// keepalived for `ns` (its VIP interface `vip0`), logging to `<dir>/<name>.log`.
fn start_keepalived(lab: &Lab, ns: &str, name: &str, master: bool, fast: bool) -> Keepalived {
    let d = lab.dir.path();
    let conf = d.join(format!("{name}.conf"));
    let (version, advert) = if fast { (3, "0.01") } else { (2, "1") };
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n  vrrp_version {version}\n  router_id {name}\n}}\n\
             vrrp_instance VIP {{\n  state {state}\n  interface vip0\n  virtual_router_id 51\n  \
             priority {prio}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {VIP}/24 dev vip0\n  }}\n}}\n",
            state = if master { "MASTER" } else { "BACKUP" },
            prio = if master { 150 } else { 100 },
        ),
    )
    .expect("keepalived config");
    let log = std::fs::File::create(d.join(format!("{name}.log"))).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "keepalived"])
        .args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
        .arg("--use-file")
        .arg(&conf)
        .arg("--pid")
        .arg(d.join(format!("{name}.pid")))
        .arg("--vrrp_pid")
        .arg(d.join(format!("{name}.vrrp.pid")))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start keepalived (apt install keepalived; scripts/setup.sh does)");
    Keepalived {
        name: name.to_owned(),
        dir: d.to_owned(),
        child: Some(child),
    }
}

/// A keepalived we started; killed on drop (also when the benchmark panics).
struct Keepalived {
    name: String,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Keepalived {
    /// SIGKILL to the keepalived we started as `child` and to its VRRP child process (whose pid
    /// keepalived wrote to `<name>.vrrp.pid`), the VRRP process first: killed after its parent it
    /// would shut down gracefully (a priority-0 advert, an instant hand-over), which is no crash.
    /// Waits until both are gone and removes their pid files, so that a restart is not refused as
    /// "daemon is already running".
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let (d, name) = (&self.dir, &self.name);
        let vrrp = std::fs::read_to_string(d.join(format!("{name}.vrrp.pid")))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = vrrp {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        if let Some(pid) = vrrp {
            wait_for("keepalived's VRRP process gone", || {
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
            });
        }
        for f in [format!("{name}.pid"), format!("{name}.vrrp.pid")] {
            let _ = std::fs::remove_file(d.join(f));
        }
    }
}

/// A UDP responder for the VIP in `ns`, answering `<name> <n>` like the reference service.
fn vip_responder(ns: &str, name: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let sock: UdpSocket = in_netns(ns, || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp");
        s.set_freebind_v4(true)
            .expect("freebind: bind the VIP before it is ours");
        s.bind(&SockAddr::from(SocketAddrV4::new(VIP, VIP_PORT)))
            .expect("bind VIP");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        s.into()
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                n += 1;
                let _ = sock.send_to(format!("{name} {n}\n").as_bytes(), from);
            }
        }
    })
}

/// keepalived failover times (ms) over `KEEPALIVED_TRIALS`, and the trials that did not recover.
fn keepalived_trials(
    lab: &Lab,
    client: &str,
    vip_ns: &[String; 2],
    fast: bool,
) -> (Vec<u64>, usize) {
    let tag = if fast { "fast" } else { "default" };
    let (m_name, b_name) = (format!("ka-{tag}-1"), format!("ka-{tag}-2"));
    let mut master = start_keepalived(lab, &vip_ns[0], &m_name, true, fast);
    let mut backup = start_keepalived(lab, &vip_ns[1], &b_name, false, fast);
    let mut probe = Probe::start(
        client,
        &sources(),
        SocketAddrV4::new(VIP, VIP_PORT),
        PROBE_EVERY,
    );
    let k1: BTreeSet<String> = ["k1".to_owned()].into();
    let mut times = Vec::new();
    let mut failed = 0;
    for trial in 0..KEEPALIVED_TRIALS {
        if probe.steady(Duration::from_millis(500), &k1).is_none() {
            println!("  keepalived {tag}: the master did not take the VIP back; trials stop here");
            for n in [&m_name, &b_name] {
                let log = std::fs::read_to_string(lab.dir.path().join(format!("{n}.log")));
                println!("==== {n}\n{}", log.unwrap_or_default());
            }
            failed += KEEPALIVED_TRIALS - trial;
            break;
        }
        let all: Vec<usize> = (0..sources().len()).collect();
        let killed_at = Instant::now();
        master.kill();
        run(&vip_ns[0], &["ip", "link", "set", "vip0", "down"]);
        match probe.recovery(killed_at, "k1", &all, TRIAL_LIMIT) {
            Some(d) => {
                let ms = d.as_millis() as u64;
                println!(
                    "  keepalived {tag} trial {trial}: VIP answered by the backup after {ms} ms"
                );
                times.push(ms);
            }
            None => {
                println!("  keepalived {tag} trial {trial}: NOT recovered within {TRIAL_LIMIT:?}");
                failed += 1;
            }
        }
        // The master host comes back (rebooted: without the VIP a SIGKILLed keepalived leaves
        // behind) and takes the VIP back (higher priority, preempt).
        run(
            &vip_ns[0],
            &[
                "ip",
                "addr",
                "flush",
                "dev",
                "vip0",
                "to",
                &format!("{VIP}/32"),
            ],
        );
        run(&vip_ns[0], &["ip", "link", "set", "vip0", "up"]);
        master = start_keepalived(lab, &vip_ns[0], &m_name, true, fast);
    }
    drop(probe);
    master.kill();
    backup.kill();
    for ns in vip_ns {
        run(
            ns,
            &[
                "ip",
                "addr",
                "flush",
                "dev",
                "vip0",
                "to",
                &format!("{VIP}/32"),
            ],
        );
    }
    (times, failed)
}

fn main() {
    harness::require_root();
    let mut lab = Lab::new(SERVERS as u32);
    // Benchmarks measure the verifier's own liveness defaults (the tests' labs allow more).
    lab.liveness_misses = None;
    let router = lab.netns("rtr");
    let client = lab.netns("cli");
    let backend = lab.switch("ctl");
    let vipsw = lab.switch("vip");
    lab.veth(&router, "c0", &client, "cl0");
    lab.addr(&router, "c0", "10.1.0.1/24");
    let srcs = sources();
    for a in &srcs {
        lab.addr(&client, "cl0", &format!("{a}/24"));
    }
    lab.route_default(&client, "10.1.0.1");
    lab.plug(&vipsw, "pr", &router, "v0");
    lab.addr(&router, "v0", "10.88.0.1/24");
    let mut servers = Vec::new();
    for i in 1..=SERVERS {
        let ns = lab.routed_member(&router, &backend, i, None);
        if i <= 2 {
            lab.plug(&vipsw, &format!("p{i}"), &ns, "vip0");
            lab.addr(&ns, "vip0", &format!("10.88.0.{}/24", 1 + i));
        }
        servers.push(ns);
    }
    lab.router_forwarding(&router, &["c0", "v0", "s1", "s2", "s3", "s4"]);

    let socket = lab.spawn_verifier(
        &router,
        &["c0", "s1", "s2", "s3", "s4"],
        "",
        // The executor's "re-point applied" lines time each trial's kernel write.
        Some("info,manycast_verifier::sys::exec=debug"),
    );
    wait_for("the verifier's status socket", || verifier_up(&socket));
    for (i, ns) in servers.iter().enumerate() {
        lab.start_server(i, ns, "m0", "ctl0");
    }

    println!(
        "failover: 4 manycast-servers on 4 subnets behind the real manycast-verifier, {} client \
         sources probing every {} ms; {TRIALS} SIGKILL trials",
        srcs.len(),
        PROBE_EVERY.as_millis()
    );
    let mut probe = Probe::start(&client, &srcs, SocketAddrV4::new(GROUP, PORT), PROBE_EVERY);
    let (times, failed, victims) = manycast_trials(&mut lab, &mut probe, &servers);
    drop(probe);
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    // The verifier's own figures: the median cost of one re-point in the kernel, and how many
    // times its liveness check found a member dead (SPEC.md §5.5) before the control group.
    let status = harness::verifier_status(&socket).expect("verifier status");
    let repoint_us = status.counters.repoint_us.unwrap_or(0);
    let found_dead = status.counters.members_found_dead;
    println!(
        "verifier: re-point median {repoint_us} µs (p99 {} µs over {} re-points); members found          dead by their beacons: {found_dead}",
        status.counters.repoint_p99_us.unwrap_or(0),
        status.counters.repoints
    );
    println!(
        "manycast: p50 {p50} ms, p99 {p99} ms, max {} ms over {} trials ({failed} not recovered; \
         {victims} victim sources in all); target p99 ≤ 50 ms: {}",
        times.iter().max().copied().unwrap_or(0),
        times.len(),
        if p99 <= 50 && failed == 0 {
            "met"
        } else {
            "NOT met"
        }
    );

    // keepalived: VIP between servers 1 and 2 on the VIP segment.
    let stop = Arc::new(AtomicBool::new(false));
    let responders = [
        vip_responder(&servers[0], "k1", stop.clone()),
        vip_responder(&servers[1], "k2", stop.clone()),
    ];
    let vip_ns = [servers[0].clone(), servers[1].clone()];
    let (default_times, default_failed) = keepalived_trials(&lab, &client, &vip_ns, false);
    let (fast_times, fast_failed) = keepalived_trials(&lab, &client, &vip_ns, true);
    stop.store(true, Ordering::Relaxed);
    for r in responders {
        let _ = r.join();
    }
    let ka_default = percentile(&default_times, 0.5);
    let ka_fast = percentile(&fast_times, 0.5);
    println!(
        "keepalived default (VRRPv2, advert_int 1): p50 {ka_default} ms, p99 {} ms ({default_failed} \
         not recovered); fastest (VRRPv3, advert_int 0.01): p50 {ka_fast} ms, p99 {} ms \
         ({fast_failed} not recovered); {KEEPALIVED_TRIALS} trials each",
        percentile(&default_times, 0.99),
        percentile(&fast_times, 0.99),
    );
    println!(
        "manycast p99 {p99} ms below keepalived's fastest p50 {ka_fast} ms: {}",
        if p99 < ka_fast { "met" } else { "NOT met" }
    );
    let health_p99 =
        health_failover::health_p99_ms(&mut lab, &client, &srcs, &servers, PROBE_EVERY);
    emit(
        "failover",
        &format!(
            r#"{{"bench":"failover","p50_ms":{p50},"p99_ms":{p99},"keepalived_default_ms":{ka_default},"keepalived_fast_ms":{ka_fast},"health_p99_ms":{health_p99},"repoint_us":{repoint_us},"found_dead_by_beacons":{found_dead}}}"#
        ),
    );
}
