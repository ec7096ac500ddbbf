//! The `health_p99_ms` figure of `make bench B=failover` (issue 16): the time from killing the
//! service a member checks (nginx SIGKILLed, master and worker; the member's daemon alive) until
//! every client source that member answered is answered by another member.
//!
//! On the failover benchmark's lab (four members behind the real verifier, the client probing
//! the UDP reference service from 85 sources every 10 ms): nginx (Debian's, one worker, its own
//! prefix, config, pid and log in the lab's temporary directory) starts in every member's
//! namespace, and every member restarts (one at a time) with an HTTP `[[health]]` check of it ([`CHECK`]:
//! `GET /` on 127.0.0.1:8080 every 50 ms, `fall = 2`, `rise = 2`). A trial: once every source is
//! served and the allocation settled (as in the SIGKILL trials), SIGKILL nginx on one member in
//! turn and time until each of its sources is answered by another member. A refused connect is
//! a *dead* outcome, so at the second one in a row the member withdraws its claim at once and is
//! held at weight 0; the others commit its units and claim them (SPEC.md §11.9). What is
//! measured includes the detection (up to one interval until the first failed check, one more
//! for the second), the member's own withdrawal, the coordinator's commit and the new owners'
//! joins at the verifier, and the probe's 10 ms period. nginx starts again after each trial and
//! the next one waits until the member has passed `rise` checks and serves its share again.

use crate::harness::{in_netns, Lab};
use crate::probe::Probe;
use manycast_e2e::cluster_bench::percentile;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TRIALS: usize = 12;
const PORT: u16 = 8080;
/// The member's check of its nginx.
pub const CHECK: &str = "[[health]]\nname = \"nginx\"\nkind = \"http\"\n\
    target = \"http://127.0.0.1:8080/\"\ninterval_ms = 50\ntimeout_ms = 40\nrise = 2\nfall = 2\n";
/// A trial that has not recovered by then is reported as failed (a hang guard, not a target).
const TRIAL_LIMIT: Duration = Duration::from_secs(15);

/// nginx in one namespace, in its own process group (master and worker); SIGKILLed on drop.
pub struct Nginx {
    child: Option<Child>,
    ns: String,
    prefix: std::path::PathBuf,
}

impl Nginx {
    pub fn start(lab: &Lab, ns: &str, name: &str) -> Nginx {
        let prefix = lab.dir.path().join(format!("nginx-{name}"));
        std::fs::create_dir_all(prefix.join("tmp")).expect("nginx prefix");
        let p = prefix.display();
        // `return`: the workers (user nobody) need no file of the lab's private directory.
        let temps: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|k| format!("  {k}_temp_path {p}/tmp/{k};\n"))
            .collect();
        std::fs::write(
            prefix.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\n\
                 error_log {p}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n{temps}  server {{\n    listen {PORT};\n    \
                 location / {{ default_type text/plain; return 200 \"served by {name}\\n\"; }}\n  \
                 }}\n}}\n"
            ),
        )
        .expect("nginx.conf");
        let mut n = Nginx {
            child: None,
            ns: ns.to_owned(),
            prefix,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let p = &self.prefix;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "/usr/sbin/nginx", "-p"])
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .arg("-e")
            .arg(p.join("error.log"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (apt install nginx; scripts/setup.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !in_netns(&self.ns, || {
            TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, PORT)).is_ok()
        }) {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "nginx in {} did not start: {}",
                self.ns,
                std::fs::read_to_string(p.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL to master and worker (`ip netns exec` execs nginx, which leads its own process
    /// group), while the master is unreaped; then reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pgid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

/// [`health_trials`], with its summary printed; returns the p99 (ms) for the JSON line.
pub fn health_p99_ms(
    lab: &mut Lab,
    client: &str,
    sources: &[Ipv4Addr],
    servers: &[String],
    every: Duration,
) -> u64 {
    println!(
        "health: nginx in every member's namespace, members restarted one at a time with an \
         HTTP check of it (every 50 ms, fall 2, rise 2); {TRIALS} trials of nginx SIGKILLed, \
         daemon alive"
    );
    let (times, failed) = health_trials(lab, client, sources, servers, every);
    let p99 = percentile(&times, 0.99);
    println!(
        "health: nginx killed to all its sources answered elsewhere: p50 {} ms, p99 {p99} ms, \
         max {} ms over {} trials ({failed} not recovered); target p99 ≤ 300 ms: {}",
        percentile(&times, 0.5),
        times.iter().max().copied().unwrap_or(0),
        times.len(),
        if p99 <= 300 && failed == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    p99
}

/// Restarts every member with [`CHECK`] behind nginx in its namespace and runs [`TRIALS`]
/// trials; the recovery times (ms) and the trials that did not recover. The members keep
/// running with the check afterwards; nginx is stopped.
pub fn health_trials(
    lab: &mut Lab,
    client: &str,
    sources: &[Ipv4Addr],
    servers: &[String],
    every: Duration,
) -> (Vec<u64>, usize) {
    let names: Vec<String> = lab
        .fixture
        .members
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    let all: std::collections::BTreeSet<String> = names.iter().cloned().collect();
    let mut nginx: Vec<Nginx> = servers
        .iter()
        .zip(&names)
        .map(|(ns, name)| Nginx::start(lab, ns, name))
        .collect();
    let target = SocketAddrV4::new(crate::harness::GROUP, crate::harness::PORT);
    let mut probe = Probe::start(client, sources, target, every);
    // One member at a time, each back in before the next goes: the survivors carry the
    // allocation epoch (all four restarted at once would start again at epoch 1, below the
    // claims the verifier holds, and be refused as stale until those expire).
    for (i, ns) in servers.iter().enumerate() {
        lab.kill(&names[i]);
        lab.children.retain(|(n, _)| n != &names[i]);
        let _ = std::fs::remove_file(lab.dir.path().join(format!("{}.prom", names[i])));
        lab.start_server_with(i, ns, "m0", "ctl0", "strategy = \"reset\"", CHECK);
        if probe.steady(Duration::from_millis(500), &all).is_none() {
            panic!(
                "member {} did not come back with its check\n{}",
                names[i],
                lab.logs()
            );
        }
    }
    let mut times = Vec::new();
    let mut failed = 0;
    for trial in 0..TRIALS {
        let owners = loop {
            let window = Duration::from_millis(500);
            let (Some(first), Some(second)) =
                (probe.steady(window, &all), probe.steady(window, &all))
            else {
                panic!("the cluster did not settle\n{}", lab.logs());
            };
            let epoch = lab.metric(0, "epoch");
            if first == second && (1..names.len()).all(|i| lab.metric(i, "epoch") == epoch) {
                break second;
            }
        };
        let i = trial % names.len();
        let victim = &names[i];
        let victims: Vec<usize> = (0..owners.len())
            .filter(|&s| &owners[s] == victim)
            .collect();
        let killed_at = Instant::now();
        nginx[i].kill();
        match probe.recovery(killed_at, victim, &victims, TRIAL_LIMIT) {
            Some(d) => {
                let ms = d.as_millis() as u64;
                println!(
                    "  health trial {trial:>2}: nginx of {victim} killed ({} sources): all \
                     answered elsewhere after {ms} ms",
                    victims.len()
                );
                times.push(ms);
            }
            None => {
                println!(
                    "  health trial {trial:>2}: nginx of {victim} killed: NOT recovered within \
                     {TRIAL_LIMIT:?}"
                );
                failed += 1;
            }
        }
        nginx[i].restart();
    }
    drop(probe);
    for n in &mut nginx {
        n.kill();
    }
    (times, failed)
}
