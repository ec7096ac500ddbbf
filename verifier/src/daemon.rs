//! The driver: owns the sockets, the clock and the signals; feeds the router core
//! ([`crate::core::Router`]) and hands its ops to the executor ([`crate::sys::exec`]). Client
//! traffic never comes here: only IGMP, upcalls, status and metrics requests.

mod beacons;
mod mld;
mod query;
pub mod site;
pub use query::{query_status, QueryError};

use crate::config::{Config, ConfigError};
use crate::core::{Event, NativeDataplane, Observed, PlanKind, Request, Router, Transmit};
use crate::keys::{Keys, KeysError};
use crate::plan::mfc::Upcall;
use crate::plan::DataplaneOp;
use crate::rejection_log::{self, Admit, RejectionLog};
use crate::status::Status;
use crate::sys::beacon_socket::BeaconSocket;
use crate::sys::exec::Executor;
use crate::sys::igmp_socket;
use crate::sys::mroute;
use crate::sys::setup::{self, SetupError};
use daemon_kit::now as clocks;
use igmp_ext::{Clock, Reason, Timestamp};
use socket2::{SockAddr, Socket};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tracing::{debug, info, warn};

/// Datagrams read from the IGMP socket before the core gets them as one burst: enough for a
/// batch verification to pay (SPEC.md §5.3), few enough that a join waits microseconds.
const MAX_BURST: usize = 64;
/// Datagrams read before the loop looks at its other work (see `drain_socket`).
const MAX_READS: usize = 16 * MAX_BURST;

/// Why the verifier could not start or stopped: each is one line for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key file or the keystore settings are wrong.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The host lacks something the configuration names, or the kernel refused.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The executor's libnftables context or rtnetlink socket could not be set up.
    #[error(transparent)]
    Kernel(#[from] crate::sys::exec::KernelError),
    #[error(transparent)]
    Site(#[from] site::SiteError),
    /// The operating system refused a socket or a signal handler.
    #[error("{what}: {source}")]
    Os {
        what: String,
        source: std::io::Error,
    },
}

fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Os { what, source }
}

/// The running verifier.
pub struct Daemon {
    cfg: Config,
    keys: Keys,
    refresher: Option<tokio::task::JoinHandle<()>>,
    core: Router,
    exec: Executor,
    /// Every report, query and (MFC data plane) upcall arrives here.
    igmp: AsyncFd<Socket>,
    senders: HashMap<u32, Socket>,
    /// The IGMP socket's drop counter (SO_RXQ_OVFL), logged once per window.
    socket_drops: igmp_socket::Drops,
    /// Liveness beacons (SPEC.md §5.5).
    beacons: BeaconSocket,
    /// MLD reports from the member-facing interfaces and the MLDv2 querier's queries (issue 15).
    mld: mld::MldIo,
    queries_sent: u64,
    /// Refusals are logged a few per reason and window, the rest as summaries.
    rejections: RejectionLog,
    /// The site agent, on a site router (`[site]`); started with the loop.
    site: Option<site::SiteHandle>,
}

impl core::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Daemon")
            .field("interfaces", &self.core.interfaces())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Opens everything; every error is one line for the operator.
    pub fn start(cfg: Config) -> Result<Daemon, Error> {
        crate::sys::priority::raise_logged();
        let keys = Keys::load(&cfg)?;
        let router_config = cfg.router_config()?;
        let (found, sockets) = setup::setup(&cfg.interfaces, cfg.native.dataplane)?;
        let mrt = match found.dataplane {
            NativeDataplane::Mroute => Some(sockets.igmp.try_clone().map_err(os("mroute socket"))?),
            NativeDataplane::Nft => None,
        };
        let beacons = BeaconSocket::open(router_config.liveness.port, &found.interfaces)?;
        let announce = router_config.announce.enabled;
        let mut core = Router::new(clocks(), router_config, found);
        let mld = mld::open(&mut core);
        let igmp = mroute::register_async(sockets.igmp).map_err(os("tokio"))?;
        let mut daemon = Daemon {
            exec: Executor::new(sockets.control, mrt, announce, cfg.vip_pin_families())?,
            cfg,
            keys,
            refresher: None,
            core,
            igmp,
            socket_drops: igmp_socket::Drops::default(),
            beacons,
            mld,
            senders: sockets.senders,
            queries_sent: 0,
            rejections: RejectionLog::new(),
            site: None,
        };
        daemon.flush(clocks());
        Ok(daemon)
    }

    /// Hands out what the core decided: queries to the senders, events to the log, ops to the
    /// executor (and their outcomes back).
    fn flush(&mut self, now: Clock) {
        while let Some(t) = self.core.poll_transmit() {
            self.send(t);
        }
        self.send_mld_queries();
        for (reason, n) in self.rejections.summaries(now.wall) {
            warn!(%reason, suppressed = n, "{n} more reports rejected for this reason in the last {} s (each is counted in status and metrics)", rejection_log::WINDOW.as_secs());
        }
        while let Some(n) = self.core.poll_notice() {
            self.beacons.send_notice(&n.notice, n.to);
        }
        while let Some(e) = self.core.poll_event() {
            self.log(now.wall, e);
        }
        while let Some(op) = self.core.poll_op() {
            if let DataplaneOp::MfcProbe(keys) = &op {
                let counts = self.exec.probe(keys);
                self.core.handle_mfc_counters(now, counts);
                continue;
            }
            let ok = self.exec.run(&op);
            self.core.handle_op_result(&op, ok);
        }
        if let Some(site) = &self.site {
            site.publish(&self.core);
        }
    }

    fn send(&mut self, t: Transmit) {
        if let Some(s) = self.senders.get(&t.ifindex) {
            match s.send_to(&t.datagram, &SockAddr::from(SocketAddrV4::new(t.dst, 0))) {
                Ok(_) => self.queries_sent += 1,
                Err(e) => debug!(error = %e, ifindex = t.ifindex, "query not sent"),
            }
        }
    }

    fn log(&mut self, now: Timestamp, e: Event) {
        let ifname = |i| self.core.ifname(i);
        match e {
            Event::Adopted { entries, vifs } => info!(
                entries,
                vifs,
                "took over kernel state left by an earlier verifier; kept as is until members answer"
            ),
            Event::JoinAccepted {
                member,
                group,
                epoch,
                slices,
                ifindex,
                stamp,
                age_ms,
            } => info!(
                %member, %group, %epoch, %slices, interface = %ifname(ifindex),
                stamp_ms = stamp.as_millis(), age_ms, "join accepted"
            ),
            Event::Rejected {
                reason: reason @ Reason::Duplicate,
                sender,
                ..
            } => debug!(%reason, ?sender, "report rejected"),
            // The rest of a flood goes into the window's summary (`flush`).
            Event::Rejected {
                reason,
                sender,
                ifindex,
                detail,
            } if self.rejections.admit(now, reason) == Admit::Log => warn!(
                %reason, ?sender, interface = %ifname(ifindex), %detail, "report rejected"
            ),
            Event::ClaimsExpired { group, lost } => info!(?group, ?lost, "claims expired"),
            Event::ClaimsRevoked { group, lost } => warn!(
                ?group,
                ?lost,
                "claims dropped: the member key is revoked or its issuer retired"
            ),
            Event::RoleChanged { ifindex, role } => {
                info!(interface = %ifname(ifindex), ?role, "querier role")
            }
            Event::GroupJoined { ifindex, group } => {
                debug!(interface = %ifname(ifindex), %group, "group has listeners")
            }
            Event::GroupExpired { ifindex, group } => {
                debug!(interface = %ifname(ifindex), %group, "group membership expired")
            }
            Event::PlanFailed {
                kind: PlanKind::Native,
                group,
                error,
            } => warn!(%group, %error, "native steering map written without a claim"),
            Event::PlanFailed { group, error, .. } => {
                warn!(%group, %error, "VIP steering map written without a claim")
            }
            Event::KernelStateKept => info!("leaving kernel state in place for the next verifier"),
            Event::Announcement { vip, withdrawn } => match withdrawn {
                None => info!(%vip, "VIP route announced"),
                Some(why) => warn!(%vip, ?why, "VIP route withdrawn"),
            },
            e => self.log_mld(now, e),
        }
    }

    /// Reads the datagrams waiting on the IGMP socket, in bursts of at most [`MAX_BURST`]: each
    /// burst goes to the core at once, which checks its join signatures in one batch. Stops
    /// after [`MAX_READS`] so that a flood that never lets the queue empty cannot keep the
    /// loop from its timers, key checks and status requests; returns whether it stopped so
    /// (more may be waiting).
    fn drain_socket(&mut self) -> std::io::Result<bool> {
        let mut buf = vec![0u8; 65_536];
        let mut burst: Vec<(Option<u32>, Vec<u8>)> = Vec::with_capacity(MAX_BURST);
        let mut drops_total = None;
        let mut reads = 0;
        let result = loop {
            if reads == MAX_READS {
                break Ok(true);
            }
            reads += 1;
            let r = match igmp_socket::recv(self.igmp.get_ref().as_raw_fd(), &mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break Ok(false),
                Err(e) => break Err(e),
            };
            drops_total = r.drops_total.or(drops_total);
            let bytes = &buf[..r.len];
            match Upcall::parse(bytes) {
                Some(up) => {
                    let now = clocks();
                    self.core.handle_upcall(now, up);
                    self.flush(now);
                }
                None => burst.push((r.ifindex, bytes.to_vec())),
            }
            if burst.len() == MAX_BURST {
                self.handle_burst(&mut burst);
            }
        };
        self.handle_burst(&mut burst);
        if let Some(total) = drops_total {
            let now = clocks();
            let dropped = self.socket_drops.update(now.mono, total);
            if dropped > 0 {
                self.core.handle_socket_overflow(now, dropped);
                self.flush(now);
            }
        }
        result
    }

    /// [`Daemon::drain_socket`], errors logged; whether datagrams may still be waiting.
    fn read_igmp(&mut self) -> bool {
        match self.drain_socket() {
            Ok(more) => more,
            Err(e) => {
                warn!(error = %e, "receive");
                false
            }
        }
    }

    fn handle_burst(&mut self, burst: &mut Vec<(Option<u32>, Vec<u8>)>) {
        if burst.is_empty() {
            return;
        }
        let now = clocks();
        let items: Vec<(Option<u32>, &[u8])> =
            burst.iter().map(|(i, d)| (*i, d.as_slice())).collect();
        self.core.handle_burst(now, &items, self.keys.source());
        burst.clear();
        self.flush(now);
    }

    pub fn status(&self) -> Status {
        let native_counters = match self.core.dataplane() {
            NativeDataplane::Nft => self.exec.native_counters(),
            NativeDataplane::Mroute => Default::default(),
        };
        let observed = Observed {
            native_counters,
            queries_sent: self.queries_sent,
        };
        let mut status = self.core.status(clocks(), &observed);
        let repoint = self.exec.repoints.summary();
        let c = &mut status.counters;
        (c.repoints, c.repoint_us, c.repoint_p99_us, c.repoint_max_us) = (
            repoint.count,
            repoint.p50_us,
            repoint.p99_us,
            repoint.max_us,
        );
        (c.nft_rewrites, c.nfnl_batches) = (self.exec.nft_rewrites, self.exec.nfnl_batches);
        self.exec.pin_status(&mut status);
        status.site = self.site.as_ref().map(|s| s.status());
        status
    }

    /// Runs until SIGTERM or SIGINT, then withdraws what it put in the kernel (unless
    /// configured to keep it).
    pub async fn run(mut self) -> Result<(), Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(os("signal"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(os("signal"))?;
        let socket_path = self.cfg.status_socket.clone();
        let _ = std::fs::remove_file(&socket_path);
        let status = tokio::net::UnixListener::bind(&socket_path).map_err(os(format!(
            "cannot listen on status socket {}",
            socket_path.display()
        )))?;
        let metrics = match self.cfg.metrics_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(os(format!("cannot listen for metrics on {a}")))?,
            ),
            None => None,
        };
        if let Some(ks) = &self.cfg.keystore {
            self.refresher = self.keys.start(Duration::from_millis(ks.refresh_ms)).await;
        }
        // On the runtime (its task), before Start writes the data plane with its hook.
        self.site = site::SiteHandle::start(&self.cfg, &self.keys, &mut self.core)?;
        let now = clocks();
        self.core.handle_request(now, Request::Start);
        self.flush(now);
        let names: Vec<&str> = self.core.interfaces().iter().map(|i| &*i.name).collect();
        info!(interfaces = ?names, "verifier running");
        // When claims were last checked against the keys (a revocation ends them, SPEC §9.7).
        let mut keys_checked = clocks().mono;
        let (mut igmp_pending, mut mld_pending) = (false, false);
        loop {
            let wait = self
                .core
                .poll_timeout()
                .saturating_duration_since(clocks().mono)
                .as_millis() as u64;
            tokio::select! {
                r = self.igmp.readable() => {
                    let mut guard = r.map_err(os("mroute socket"))?;
                    guard.clear_ready();
                    drop(guard);
                    igmp_pending = self.read_igmp();
                }
                // Readiness was cleared, so what a flood left queued is read from here, in
                // turn with the branches below.
                _ = std::future::ready(()), if igmp_pending => {
                    igmp_pending = self.read_igmp();
                }
                r = async { match &self.mld.recv { Some(s) => s.readable().await.map(|mut g| g.clear_ready()), None => std::future::pending().await } } => {
                    r.map_err(os("MLD socket"))?;
                    mld_pending = self.read_mld();
                }
                _ = std::future::ready(()), if mld_pending => mld_pending = self.read_mld(),
                r = self.beacons.readable() => {
                    r.map_err(os("beacon socket"))?;
                    self.read_beacons();
                }
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                    // Beacons that arrived while the loop was busy count before anyone's
                    // silence is judged.
                    self.read_beacons();
                    let now = clocks();
                    self.core.handle_timeout(now);
                    if now.mono >= keys_checked.saturating_add(Duration::from_secs(1)) {
                        self.core.handle_keys(now, self.keys.source());
                        self.core.handle_keys6(now, self.keys.source6());
                        keys_checked = now.mono;
                    }
                    self.flush(now);
                }
                c = status.accept() => {
                    if let Ok((stream, _)) = c {
                        self.serve_status(stream).await;
                    }
                }
                c = async { match &metrics { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                    if let Ok((stream, _)) = c {
                        // Rendered here, answered by its own task: a slow client never holds the loop.
                        tokio::spawn(daemon_kit::metrics::respond(stream, self.status().render_metrics()));
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        info!("shutting down");
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        if let Some(site) = self.site.take() {
            site.stop().await;
        }
        let now = clocks();
        self.core.handle_request(now, Request::Shutdown);
        self.flush(now);
        let _ = std::fs::remove_file(&socket_path);
        Ok(())
    }

    async fn serve_status(&self, stream: tokio::net::UnixStream) {
        let (r, mut w) = stream.into_split();
        let mut line = String::new();
        let mut r = BufReader::new(r);
        let _ = tokio::time::timeout(Duration::from_millis(500), r.read_line(&mut line)).await;
        let reply = match line.trim() {
            "metrics" => self.status().render_metrics(),
            _ => serde_json::to_string(&self.status()).unwrap_or_default(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), w.write_all(reply.as_bytes())).await;
    }
}
