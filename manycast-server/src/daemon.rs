//! The daemon's I/O shell: the select loop and the executors. It owns the sockets (raw IGMP,
//! UDP service), the control-channel driver, the VIP host setup and sock_diag, the admin
//! socket, the signals and the clock; every decision is the [`Node`]'s. Each turn hands the
//! node one input with the time, then carries out the node's actions and sends its joins.

mod agents;
mod beacons;
mod control;
pub mod health;
mod host;
mod mld;
mod sockets;

use crate::admin::hub::Hub;
use crate::admin::server as admin_server;
use crate::config::Config;
use crate::credentials::{self, CredentialsError};
use crate::keystore;
use crate::metrics::{self, Snapshot};
use crate::node::{Action, Node, NodeConfig, ServiceAction};
use crate::vip::{self, ForwardHost};
use control_channel::driver::DriverHandle;
use control_channel::{Counters, Event};
use daemon_kit::wall_clock;
use host::Host;
use igmp_ext::{Clock, Instant};
use socket2::Socket;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

/// Why the daemon stopped, as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Our key files, certificate or keystore record (the operator's to fix).
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("interface {0}: no IPv4 address (is it up and configured?)")]
    NoAddress(String),
    /// The kernel or the runtime refused a socket, a task or a signal handler.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    /// A host change of VIP mode failed (the kernel refused it, or the overlay has no address).
    #[error("VIP mode: {0}")]
    Vip(#[from] vip::VipError),
    /// An `https` health check's CA file or the system's roots could not be read (SPEC.md §11.9).
    #[error("{0}")]
    Health(String),
    /// The keystore no longer backs our credentials and their grace ran out: we left.
    #[error("keystore: {0}")]
    KeystoreLeave(keystore::Mismatch),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> DaemonError {
    move |source| DaemonError::Io { what, source }
}

/// The first IPv4 address of `ifname`.
pub fn interface_addr(ifname: &str) -> Result<Ipv4Addr, DaemonError> {
    sockets::interface_addr(ifname)
        .map_err(io_err("getifaddrs"))?
        .ok_or_else(|| DaemonError::NoAddress(ifname.to_owned()))
}

/// The executors and the node they serve. Owned by [`run`]'s loop; dropping it puts the VIP
/// host changes back.
struct Shell {
    node: Node,
    igmp: AsyncFd<Socket>,
    /// The MLD sockets, with `group6` (SPEC.md §3.8).
    mld: Option<mld::Mld>,
    udp: UdpSocket,
    /// The IPv6 service socket, with `group6`.
    udp6: Option<UdpSocket>,
    /// VIP mode: the host changes, put back when the shell drops (return from [`run`]).
    host: Host,
    /// The counters the executors own (joins sent, the forward map, control, keystore); the
    /// node's are written in before each use.
    snapshot: Snapshot,
    metrics_file: Option<PathBuf>,
    hub: Hub,
    /// Runs the health checks the node starts; their outcomes come back on its channel.
    checker: health::Checker,
    /// Where the router's standby notices arrive (SPEC.md §5.5); beacons go out of it from
    /// their own thread.
    notices: Option<UdpSocket>,
}

impl Shell {
    /// Carries out every action the node has queued, then sends the joins due.
    async fn flush(&mut self, handle: &DriverHandle) {
        while let Some(action) = self.node.poll_action() {
            self.execute(handle, action).await;
        }
        let now = daemon_kit::now();
        while let Some(d) = self.node.poll_transmit(now, sockets::nonce()) {
            match d {
                Ok(datagram) => match sockets::send_report(&self.igmp, &datagram) {
                    Ok(_) => self.snapshot.joins_sent += 1,
                    Err(e) => warn!("sending signed report: {e}"),
                },
                Err(e) => warn!("building signed report: {e}"),
            }
        }
        self.flush6();
    }

    async fn execute(&mut self, handle: &DriverHandle, action: Action) {
        match action {
            Action::Service(ServiceAction::Reply(r)) => match r.to {
                SocketAddr::V6(to) => self.reply6(to, &r.payload).await,
                to => {
                    // A lost reply is a lost datagram; the client retries.
                    if let Err(e) = self.udp.send_to(&r.payload, to).await {
                        debug!("reply to {to}: {e}");
                    }
                }
            },
            Action::Service(ServiceAction::Forward {
                to,
                client,
                payload,
            }) => {
                handle.with(move |ep, now| {
                    if let Err(e) = ep.forward(now, to, client, payload) {
                        debug!(member = %to, %client, "forward: {e}");
                    }
                });
            }
            Action::Service(ServiceAction::SendState {
                to,
                transfer_id,
                data,
            }) => match control::send_state(handle, to, transfer_id, data).await {
                Some(Ok(())) => debug!(member = %to, transfer_id, "sending moved sessions"),
                Some(Err(e)) => {
                    warn!(member = %to, "cannot send moved sessions: {e}");
                    self.node.handle_send_failed(to, transfer_id);
                }
                None => self.node.handle_send_failed(to, transfer_id),
            },
            Action::AdvertiseDirectPath(_)
            | Action::SetLoad(_)
            | Action::Drain
            | Action::Hold(_)
            | Action::SetScope(_) => control::on_endpoint(handle, action),
            Action::RunCheck(i) => self.checker.start(i),
            Action::ResetMoved(slices) => self.host.reset_moved(slices),
            Action::ForwardPlan(plan) => {
                if let Some(units) = self.host.forward_plan(&plan) {
                    self.snapshot.vip_forward_units = units as u64;
                }
            }
            Action::ForwardPeer { member, addr } => self.host.forward_peer(member, addr),
            Action::ForwardPeerLeft(member) => self.host.forward_peer_left(member),
            Action::CountVipConnections(vip) => {
                if let Some(n) = self.host.count_connections(vip) {
                    self.node.handle_vip_connections(n);
                }
            }
        }
    }

    async fn on_event(&mut self, handle: &DriverHandle, now: Clock, event: Event) {
        self.hub.publish(now.wall, &event);
        // The event names our slices; the strategies need every owner, before and after.
        let committed = match event {
            Event::Committed { .. } => control::committed(handle).await,
            _ => None,
        };
        self.node.handle_event(now, event, committed.as_ref());
    }

    /// Writes the metrics file, if configured (every second, and once more when leaving so
    /// that the final counts are on disk).
    fn write_metrics(&mut self, control: Option<Counters>) {
        self.node.snapshot_into(&mut self.snapshot);
        if let Some(counts) = self.host.reset_counts() {
            (self.snapshot.vip_resets, self.snapshot.vip_reset_failures) = counts;
        }
        self.snapshot.control = control.unwrap_or_default();
        if let Some(path) = &self.metrics_file {
            if let Err(e) = metrics::write_file(path, &self.snapshot.render()) {
                warn!("metrics file {}: {e}", path.display());
            }
        }
    }
}

/// How long to sleep until `deadline`, on monotonic time (an hour when nothing is due).
fn until(deadline: Option<Instant>, now: Instant) -> Duration {
    deadline.map_or(Duration::from_secs(3600), |t| {
        Duration::from_millis(t.0.saturating_sub(now.0))
    })
}

/// Runs until SIGTERM or SIGINT, then leaves the group and the cluster.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let (creds, keystore_watch) = credentials::load_credentials(&config, wall_clock()).await?;
    let me = creds.cert.body().member_id;
    let (keystore_task, mut keystore_rx) = keystore_watch
        .as_ref()
        .map(|w| credentials::spawn_keystore_refresher(w, &config, &creds))
        .unzip();
    let published = keystore_watch
        .as_ref()
        .map(|w| (w.published_keys.clone(), w.published_revoked.clone()));
    let mut keystore_watch = keystore_watch.map(|w| w.watch);
    let addr = interface_addr(&config.interface)?;
    let ctl_link = control::link(&config)?;
    let direct_path = control::direct_path(&config, addr, ctl_link);
    let node_config = NodeConfig::new(&config, me, direct_path);
    // VIP mode: the VIP on loopback and the ARP sysctls (and VIP forward's overlay, table and
    // rules), put back when the shell drops (return from `run` after SIGTERM or an error).
    let forward_host = ForwardHost::new(&config, me, direct_path);
    let host = Host::apply(
        &config,
        node_config.vip,
        forward_host.as_ref(),
        node_config.vip_reset,
    )?;
    let ctl_if = config.control_interface().to_owned();
    let mut handle = control::start(
        &config,
        ctl_link,
        &creds,
        published
            .as_ref()
            .map(|(k, r)| (k.as_slice(), r.as_slice())),
    )
    .map_err(|(what, source)| DaemonError::Io { what, source })?;
    let udp = sockets::service_socket(config.group, config.service_port, addr)
        .map_err(io_err("service socket"))?;
    let igmp = sockets::igmp_socket(&config.interface, addr).map_err(io_err("raw IGMP socket"))?;
    let hub = Hub::new(Snapshot::new(me));
    let admin_listener = admin_server::bind(&config.admin_socket)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", config.admin_socket.display())))
        .map_err(io_err("admin socket"))?;
    let metrics_listener = match config.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(io_err("metrics_listen"))?,
        ),
        None => None,
    };
    let admin = admin_server::start(
        &config.admin_socket,
        admin_listener,
        metrics_listener,
        handle.requester(),
        hub.clone(),
    );
    let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    info!(
        member = %me, %addr, group = %config.group, port = config.service_port,
        control = %config.control.group, control_if = %ctl_if,
        strategy = config.strategy.as_str(), "manycast-server started"
    );
    let mut agent = agents::join_agent(&config, &creds, addr, node_config.slicing);
    let stop_beacons = Arc::new(AtomicBool::new(false));
    let notices = match beacons::start(&config, addr, me, stop_beacons.clone())
        .map_err(io_err("liveness beacons"))?
    {
        Some((beaconer, socket)) => {
            agent = agent.with_beacons(beaconer);
            Some(socket)
        }
        None => None,
    };
    let checker = health::Checker::new(node_config.health.clone()).map_err(DaemonError::Health)?;
    let agent6 = agents::mld_agent(&config, &creds, node_config.slicing, agent.beacons());
    let now = daemon_kit::now().mono;
    let mut node = Node::new(node_config, agent, Box::new(sockets::random_u64), now);
    if let Some(t) = agents::site_scope(&config, &creds, published.as_ref()) {
        node = node.with_site_scope(t);
    }
    if let Some(a) = agent6 {
        node = node.with_agent6(a).with_service6();
    }
    let mld = config
        .group6
        .map(|_| mld::open(&config.interface))
        .transpose()
        .map_err(io_err("MLD sockets"))?;
    let udp6 = match (config.group6, &mld) {
        (Some(g), Some(m)) => Some(
            sockets::service_socket6(g, config.service_port, m.ifindex)
                .map_err(io_err("IPv6 service socket"))?,
        ),
        _ => None,
    };
    let mut shell = Shell {
        node,
        igmp,
        mld,
        udp,
        udp6,
        host,
        snapshot: Snapshot::new(me).with_group6(config.group6),
        metrics_file: config.metrics_file.clone(),
        hub,
        checker,
        notices,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut buf, mut buf6) = (vec![0u8; 65_536], vec![0u8; 65_536]);
    let mut notice = [0u8; 64];
    // Set when the keystore no longer backs our credentials: leave, then exit with it.
    let mut stop_reason = None;
    loop {
        shell.flush(&handle).await;
        // Timers run on monotonic time: a step of the wall clock moves none of them.
        let now = daemon_kit::now();
        if shell.node.drain_finished(now) {
            break;
        }
        let wait = until(shell.node.poll_timeout(), now.mono);
        tokio::select! {
            e = handle.events.recv() => match e {
                Some((_, e)) => shell.on_event(&handle, daemon_kit::now(), e).await,
                None => return Err(DaemonError::Io {
                    what: "control driver",
                    source: io::Error::other("stopped"),
                }),
            },
            r = shell.udp.recv_from(&mut buf) => {
                // Errors are ICMP reports about earlier replies; nothing to do.
                if let Ok((n, SocketAddr::V4(from))) = r {
                    shell.node.handle_datagram(daemon_kit::now(), from, &buf[..n]);
                }
            }
            r = sockets::recv6(shell.udp6.as_ref(), &mut buf6) => {
                if let Ok((n, SocketAddr::V6(from))) = r {
                    shell.node.handle_datagram6(daemon_kit::now(), from, &buf6[..n]);
                }
            }
            g = shell.igmp.readable() => {
                if let Ok(mut guard) = g {
                    guard.clear_ready();
                }
                shell.on_igmp_readable(daemon_kit::now());
            }
            _ = async { match &shell.mld { Some(m) => m.recv.readable().await.map(|mut g| g.clear_ready()), None => std::future::pending().await } } => shell.on_mld_readable(),
            _ = tokio::time::sleep(wait) => shell.node.handle_timeout(daemon_kit::now()),
            r = async { match &shell.notices { Some(s) => s.recv_from(&mut notice).await, None => std::future::pending().await } } => {
                if let Ok((n, _)) = r {
                    shell.node.handle_notice(&notice[..n]);
                }
            }
            Some((check, outcome)) = shell.checker.results.recv() => {
                let (now, before) = (daemon_kit::now(), shell.node.health_report());
                shell.node.handle_health(now, check, outcome);
                shell.hub.publish_health(now.wall, &before, &shell.node.health_report());
            }
            _ = tick.tick() => {
                shell.refresh_link6();
                shell.node.handle_tick(daemon_kit::now());
                shell.flush(&handle).await;
                shell.snapshot.keystore = keystore_watch.as_ref().map(|w| metrics::KeystoreStatus {
                    mismatch: w.problem().map(keystore::Mismatch::label),
                    stale: w.stale(daemon_kit::now()),
                    refresh_failures: w.refresh_failures(),
                });
                shell.write_metrics(control::counters(&handle).await);
                shell.hub.set_snapshot(&shell.snapshot);
                if let Some(reason) = keystore_watch.as_ref().and_then(|w| w.poll_leave(daemon_kit::now())) {
                    error!(reason = reason.label(), "keystore: {reason}; leaving the cluster");
                    stop_reason = Some(DaemonError::KeystoreLeave(reason.clone()));
                    break;
                }
            }
            fetched = async {
                match keystore_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match (keystore_watch.as_mut(), fetched) {
                (Some(w), Some(r)) => {
                    // Peers certified by a key the record publishes now, and not revoked, may
                    // stay or join; the others are dropped at once (SPEC.md §9.7).
                    if let Ok(p) = &r {
                        let (keys, revoked) = (p.record.keys.clone(), p.record.revoked.clone());
                        if let Some(t) = shell.node.site_scope_mut() {
                            t.set_keys(&keys, &revoked);
                        }
                        handle.with(move |ep, now| ep.set_published(now, &keys, &revoked));
                    }
                    credentials::log_keystore_event(w.handle_fetch(daemon_kit::now(), r))
                }
                _ => keystore_rx = None,
            },
            // Under forward, handoff and pin the first SIGTERM drains and the loop ends when
            // the drain is done; a second one (or SIGINT, or reset) leaves at once.
            _ = term.recv() => {
                if config.drains_on_terminate() && !shell.node.draining() {
                    shell.node.begin_drain(daemon_kit::now());
                } else {
                    break;
                }
            }
            _ = int.recv() => break,
        }
    }
    info!("leaving");
    if let Some(t) = keystore_task {
        t.abort();
    }
    shell.write_metrics(control::counters(&handle).await);
    // Stops the admin tasks, whose requesters would otherwise keep the driver running.
    drop(admin);
    handle.with(|ep, now| ep.leave(now));
    shell.node.leave(daemon_kit::now());
    shell.flush(&handle).await;
    // The agent repeats the leave robustness times within the unsolicited report interval.
    while let Some(t) = shell.node.poll_join_timeout() {
        tokio::time::sleep(until(Some(t), daemon_kit::now().mono)).await;
        shell.flush(&handle).await;
    }
    stop_beacons.store(true, std::sync::atomic::Ordering::Relaxed);
    // Let the driver send the Leave before it stops.
    let _ = control::counters(&handle).await;
    let _ = handle.stop().await;
    info!("stopped");
    stop_reason.map_or(Ok(()), Err)
}
