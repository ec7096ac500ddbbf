//! The UDP probe of the namespace benchmarks (`failover`, `attack`): every client source sends
//! to the service every `every` and each reply is logged with when it came and who answered.

use crate::harness::{self, in_netns};
use manycast_e2e::cluster_bench::{last_server, parse_reply, recovery, ProbeReply};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Every source sends to `target` every `every` (staggered) and each reply is reported.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    rx: mpsc::Receiver<ProbeReply>,
    pub log: Vec<ProbeReply>,
    sources: usize,
}

impl Probe {
    pub fn start(ns: &str, srcs: &[Ipv4Addr], target: SocketAddrV4, every: Duration) -> Probe {
        let socks: Vec<UdpSocket> = in_netns(ns, || {
            srcs.iter()
                .map(|&src| {
                    let s = harness::client_socket(src);
                    s.set_nonblocking(true).expect("nonblocking");
                    s.into()
                })
                .collect()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let n = socks.len() as u32;
            let start = Instant::now();
            let mut next: Vec<Instant> = (0..n).map(|i| start + every * i / n).collect();
            let mut buf = [0u8; 256];
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                for (i, s) in socks.iter().enumerate() {
                    if now >= next[i] {
                        // A full send queue only loses a probe; the next one follows.
                        let _ = s.send_to(b"probe", target);
                        next[i] += every;
                        if next[i] < now {
                            next[i] = now + every;
                        }
                    }
                }
                let wake = next.iter().min().copied().unwrap_or(now);
                let ms = wake.saturating_duration_since(Instant::now()).as_millis() as u16;
                let mut fds: Vec<PollFd> = socks
                    .iter()
                    .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                    .collect();
                if poll(&mut fds, PollTimeout::from(ms.max(1))).unwrap_or(0) == 0 {
                    continue;
                }
                let ready: Vec<usize> = fds
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                    .map(|(i, _)| i)
                    .collect();
                drop(fds);
                for i in ready {
                    while let Ok((len, _)) = socks[i].recv_from(&mut buf) {
                        if let Some((server, served)) = parse_reply(&buf[..len]) {
                            let reply = ProbeReply {
                                at: Instant::now(),
                                source: i,
                                server,
                                served,
                            };
                            if tx.send(reply).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Probe {
            stop,
            thread: Some(thread),
            rx,
            log: Vec::new(),
            sources: srcs.len(),
        }
    }

    /// [`Probe::start`] to the service (`GROUP`, `PORT`), then [`Probe::steady`] until every
    /// source is served by exactly `servers`; panics with `lab`'s logs if that never happens.
    pub fn start_steady(
        lab: &harness::Lab,
        ns: &str,
        srcs: &[Ipv4Addr],
        every: Duration,
        servers: &BTreeSet<String>,
    ) -> Probe {
        let target = SocketAddrV4::new(harness::GROUP, harness::PORT);
        let mut probe = Probe::start(ns, srcs, target, every);
        if probe.steady(Duration::from_millis(500), servers).is_none() {
            panic!("the cluster did not come up\n{}", lab.logs());
        }
        probe
    }

    /// Moves what arrived into the log.
    pub fn collect(&mut self) {
        self.log.extend(self.rx.try_iter());
    }

    /// Waits until, over the last `window`, every source was served and the serving servers are
    /// exactly `servers`; returns each source's server then, or `None` after 30 s.
    pub fn steady(&mut self, window: Duration, servers: &BTreeSet<String>) -> Option<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            std::thread::sleep(window);
            self.collect();
            let since = Instant::now() - window;
            let owners = last_server(&self.log, since);
            let serving: BTreeSet<String> = owners.values().cloned().collect();
            let n = self.sources;
            if owners.len() == n && &serving == servers {
                self.log.retain(|r| r.at >= since);
                return Some((0..n).map(|i| owners[&i].clone()).collect());
            }
            if Instant::now() > deadline {
                println!(
                    "  no steady state: {} of {n} sources served, by {serving:?}, want {servers:?}",
                    owners.len()
                );
                return None;
            }
            self.log.retain(|r| r.at >= since);
        }
    }

    /// Time from `killed_at` until every source in `victims` is served by a server other than
    /// `victim`; `None` after `limit`.
    pub fn recovery(
        &mut self,
        killed_at: Instant,
        victim: &str,
        victims: &[usize],
        limit: Duration,
    ) -> Option<Duration> {
        loop {
            std::thread::sleep(Duration::from_millis(20));
            self.collect();
            if let Some(d) = recovery(&self.log, killed_at, victim, victims) {
                return Some(d);
            }
            if killed_at.elapsed() > limit {
                return None;
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
