//! Network namespaces for the driver tests and the namespace benchmark: one "switch" namespace
//! with a bridge (IGMP snooping off) and one namespace per member, joined by veth pairs. Names are
//! `mcc-<pid>-<n>-<role>`; [`Lab`]'s `Drop` deletes them, also when a test panics.

use control_channel::driver::{self, SocketConfig};
use control_channel::{Config, Endpoint, Event, Identity};
use igmp_ext::fixtures::Fixture;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);
pub const PORT: u16 = 4790;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Namespaces of one test; deleted on drop (deleting a namespace deletes its veth ends).
#[derive(Debug)]
pub struct Lab {
    pub switch: String,
    pub members: Vec<String>,
}

impl Lab {
    /// A bridge and `n` member namespaces with addresses 10.77.0.1.. on one /24.
    pub fn new(n: usize) -> Lab {
        let base = format!(
            "mcc-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            switch: format!("{base}-sw"),
            members: Vec::new(),
        };
        ip(&["netns", "add", &lab.switch]);
        let sw = lab.switch.clone();
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{base}-m{i}");
            ip(&["netns", "add", &ns]);
            lab.members.push(ns.clone());
            let port = format!("v{i}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Self::addr(i)),
                "dev",
                "eth0",
            ]);
        }
        lab
    }

    pub fn addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, i as u8 + 1)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.members.iter().chain(std::iter::once(&self.switch)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A member's driver running on its own thread inside its namespace.
#[derive(Debug)]
pub struct Member {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stall: tokio::sync::mpsc::UnboundedSender<Duration>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    /// Blocks the member's whole runtime thread for `d`, as an overloaded host would.
    pub fn stall(&self, d: Duration) {
        let _ = self.stall.send(d);
    }

    /// Stops the driver without a `Leave`: to its peers this is a crash.
    pub fn crash(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Starts member `i` of `fixture` in `ns`; its events go to `events` as (index, time, event).
pub fn start_member(
    ns: &str,
    i: usize,
    fixture: &Fixture,
    events: mpsc::Sender<(usize, Instant, Event)>,
) -> Member {
    let path = format!("/run/netns/{ns}");
    let m = fixture.members[i].clone();
    let group = fixture.group;
    let group_key = fixture.group_key.verifying_key();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (stall_tx, mut stall_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let socket = driver::bind(&SocketConfig::new(group, PORT, Lab::addr(i)))
                .expect("bind control socket");
            let endpoint = Endpoint::new(
                Config::new(group),
                Identity {
                    key: m.key.clone(),
                    certificate: m.cert.clone(),
                },
                group_key,
                driver::now(),
            );
            let mut handle = driver::spawn(endpoint, socket, SocketAddrV4::new(group, PORT))
                .expect("spawn driver");
            loop {
                tokio::select! {
                    e = handle.events.recv() => match e {
                        Some((_, e)) => { let _ = events.send((i, Instant::now(), e)); }
                        None => break,
                    },
                    Some(d) = stall_rx.recv() => {
                        handle.with(move |_, _| std::thread::sleep(d));
                    }
                    _ = &mut stop_rx => break,
                }
            }
            let _ = handle.stop().await;
        });
    });
    Member {
        stop: Some(stop_tx),
        stall: stall_tx,
        thread: Some(thread),
    }
}
