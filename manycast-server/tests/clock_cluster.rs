//! The clock-step scenario of issue 17 with the real daemons, shared by the test
//! (`clock_step.rs`) and `make bench B=faults` (`benches/clock_step.rs`): the real verifier in a
//! router namespace, three `manycast-server`s on three subnets (their control group on a
//! back-end segment), UDP clients with persistent sessions (strategy `reset`), and one member
//! (the last) running under libfaketime so that its wall clock alone can be stepped while it
//! runs. The clock is not namespaced: `LD_PRELOAD=libfaketime.so.1` with
//! `FAKETIME_TIMESTAMP_FILE` + `FAKETIME_NO_CACHE=1` reads the offset from a file on every
//! call, and `FAKETIME_DONT_FAKE_MONOTONIC=1` leaves CLOCK_MONOTONIC alone (Rust's `SystemTime`
//! and `Instant` both go through libc's `clock_gettime`).
//!
//! What a window counts: each member's commits (its metrics file), and per client the
//! session restarts (an answer whose number is not the previous one plus one) and owner
//! changes (an answer from another server than the previous one). A restart is excused by an
//! owner change (a session in a unit that moved), so `resets` counts client sessions reset
//! beyond those in the units that moved.

use crate::harness::{steered_members, verifier_status, wait_for, Clients, Lab};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where Debian's `faketime` package puts the library (`scripts/setup.sh` installs it).
const FAKETIME_LIBS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

pub fn faketime_lib() -> &'static str {
    FAKETIME_LIBS
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime.so.1 not found: install Debian's `faketime` (make setup)")
}

/// What one window counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Commits per member during the window.
    pub commits: Vec<u64>,
    /// Session restarts not excused by an owner change (see the module documentation).
    pub resets: u64,
    /// Every session restart the clients saw.
    pub restarts: u64,
    /// Answers from another server than the previous answer.
    pub owner_changes: u64,
    /// Requests answered, and never answered after every retry.
    pub answered: u64,
    pub lost: u64,
}

impl Figures {
    /// The most commits any one member made.
    pub fn max_commits(&self) -> u64 {
        self.commits.iter().copied().max().unwrap_or(0)
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"commits\":{:?},\"resets\":{},\"restarts\":{},\"owner_changes\":{},\"answered\":{},\"lost\":{}}}",
            self.commits, self.resets, self.restarts, self.owner_changes, self.answered, self.lost
        )
    }
}

/// The running cluster. Dropping it stops every process and deletes the namespaces.
pub struct ClockCluster {
    pub lab: Lab,
    pub verifier: PathBuf,
    pub clients: Clients,
    /// The stepped member (0-based) and its libfaketime offset file.
    pub stepped: usize,
    offset_file: PathBuf,
    members: usize,
    /// Per client source: its last answer (server, session number), and its last request id.
    last: BTreeMap<Ipv4Addr, (Ipv4Addr, u64)>,
    next_request: BTreeMap<Ipv4Addr, u64>,
}

impl ClockCluster {
    /// Starts the verifier and `members` servers (the last under libfaketime, offset 0) and
    /// waits until they share one allocation that the verifier steers by. `down_after_ms` is
    /// the members' failure detection (`[control] down_after_ms`): debug daemons on a loaded
    /// machine need more than the 200 ms default not to declare each other down.
    pub fn start(members: usize, sources: usize, down_after_ms: u64) -> ClockCluster {
        let lib = faketime_lib();
        let mut lab = Lab::new(members as u32);
        // Last bytes spread over the default low-order slicing.
        let srcs: Vec<Ipv4Addr> = (0..sources)
            .map(|k| Ipv4Addr::new(10, 1, 0, 2 + (k * 7 % 250) as u8))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let routed = lab.routed(members, &srcs);
        let ifs = routed.interfaces();
        let (router, client, servers) = (&routed.router, &routed.client, &routed.servers);
        let verifier = lab.start_verifier(router, &ifs, "", Some("info"));
        let stepped = members - 1;
        let offset_file = lab.dir.path().join("faketime.rc");
        std::fs::write(&offset_file, "+0\n").expect("faketime offset file");
        for (i, ns) in servers.iter().enumerate() {
            let control = format!("down_after_ms = {down_after_ms}\n");
            let config = lab.write_config(i, "m0", "ctl0", "strategy = \"reset\"", &control);
            if i == stepped {
                let file = offset_file.to_str().expect("utf-8 temp path").to_owned();
                lab.spawn_server_env(
                    i,
                    ns,
                    &config,
                    &[
                        ("LD_PRELOAD", lib),
                        ("FAKETIME_TIMESTAMP_FILE", &file),
                        ("FAKETIME_NO_CACHE", "1"),
                        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                    ],
                );
            } else {
                lab.spawn_server(i, ns, &config);
            }
        }
        let clients = Clients::new(client, &srcs);
        let c = ClockCluster {
            lab,
            verifier,
            clients,
            stepped,
            offset_file,
            members,
            last: BTreeMap::new(),
            next_request: BTreeMap::new(),
        };
        c.wait_settled(members);
        c
    }

    /// Waits until `live` members (the first ones, or all) have slices at one epoch covering
    /// the space and the verifier steers to each of them.
    pub fn wait_settled(&self, live: usize) {
        let lab = &self.lab;
        let ids: BTreeSet<Option<u32>> = (0..live)
            .map(|i| Some(lab.fixture.members[i].id.0))
            .collect();
        wait_for(
            "the members share one allocation the verifier steers by",
            || {
                let epoch = lab.metric(0, "epoch");
                epoch > 0
                    && (0..live)
                        .all(|i| lab.metric(i, "slices") > 0 && lab.metric(i, "epoch") == epoch)
                    && (0..live)
                        .map(|i| lab.metric(i, "slice_addresses"))
                        .sum::<u64>()
                        == 1 << 32
                    && verifier_status(&self.verifier).is_some_and(|s| steered_members(&s) == ids)
            },
        );
    }

    /// Sets the stepped member's wall-clock offset from the real time, in seconds (libfaketime
    /// reads the file on its next clock call).
    pub fn set_offset(&self, secs: i64) {
        std::fs::write(&self.offset_file, format!("{secs:+}\n")).expect("faketime offset file");
    }

    pub fn commits(&self) -> Vec<u64> {
        (0..self.members)
            .map(|i| self.lab.metric(i, "commits_total"))
            .collect()
    }

    /// The clients run for `length` (requests retried 3 times, 300 ms apart); `at_start` runs
    /// once they are running (e.g. a clock step). Commits are read from the metrics files,
    /// which each member writes every second: before `at_start`, and 1.5 s after the window.
    pub fn window(&mut self, length: Duration, at_start: impl FnOnce(&Self)) -> Figures {
        let before = self.commits();
        let stop = AtomicBool::new(false);
        let mut next = std::mem::take(&mut self.next_request);
        let logs = std::thread::scope(|s| {
            let h = s.spawn(|| self.clients.run_from(&stop, 3, &mut next));
            at_start(self);
            std::thread::sleep(length);
            stop.store(true, Ordering::Relaxed);
            h.join().expect("client thread")
        });
        self.next_request = next;
        std::thread::sleep(Duration::from_millis(1500));
        let after = self.commits();
        let mut f = Figures {
            commits: after.iter().zip(&before).map(|(a, b)| a - b).collect(),
            ..Figures::default()
        };
        for (src, log) in logs {
            f.lost += log.lost;
            f.answered += log.answers.len() as u64;
            let mut prev = self.last.get(&src).copied();
            for &(server, n) in &log.answers {
                if let Some((ps, pn)) = prev {
                    let moved = ps != server;
                    let restarted = n != pn + 1;
                    f.owner_changes += u64::from(moved);
                    f.restarts += u64::from(restarted);
                    f.resets += u64::from(restarted && !moved);
                }
                prev = Some((server, n));
            }
            if let Some(p) = prev {
                self.last.insert(src, p);
            }
        }
        f
    }

    /// Waits until the stepped member is out: the others share an allocation without it.
    pub fn wait_excluded(&self) {
        self.wait_settled(self.stepped);
    }

    /// The verifier's count of joins refused as untimely.
    pub fn untimely_joins(&self) -> u64 {
        verifier_status(&self.verifier).map_or(0, |s| {
            s.counters
                .rejected
                .iter()
                .filter(|(r, _)| r == "untimely")
                .map(|(_, n)| n)
                .sum()
        })
    }
}
