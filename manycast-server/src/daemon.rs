//! The daemon's I/O shell: owns the sockets, the clock and the signals, and wires the sans-IO
//! parts together. Control-channel commits become slices for the [`Service`] filter and claims
//! for the [`JoinAgent`]; the agent's signed reports leave through a raw IGMP socket; queries
//! heard on that socket go back to the agent.

use crate::admin;
use crate::config::{Config, GroupKeySource, Mode, Strategy};
use crate::join_agent::{Identity as JoinIdentity, JoinAgent};
use crate::keys;
use crate::keystore;
use crate::load::LoadMeter;
use crate::metrics::{self, Snapshot};
use crate::service::{Reply, Service};
use control_channel::driver::{self, SocketConfig};
use control_channel::{Counters, Endpoint, Event, Identity};
use dns_keystore::client::KeystoreClient;
use igmp_ext::wire::igmp::{IgmpPacket, IgmpRepr};
use igmp_ext::{AllocationEpoch, KeyId, MemberCertificate, MemberId, SliceEntry, Timestamp};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

mod reallocation;
use reallocation::Drain;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

/// IGMPv3 reports go to all IGMPv3-capable routers (RFC 3376 §4.2.14).
const ALL_V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);
const IPPROTO_IGMP: i32 = 2;

/// Why the daemon stopped, as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error("{0}")]
    Keys(#[from] keys::KeyFileError),
    #[error("{0}")]
    Identity(String),
    #[error("interface {0}: no IPv4 address (is it up and configured?)")]
    NoAddress(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("VIP mode: {0}")]
    Vip(#[from] crate::vip::VipError),
    /// A bad `[keystore]` (trust anchor file) or key source; exit status 2 like a bad file.
    #[error("{0}")]
    Config(String),
    /// Our credentials do not match what the keystore publishes, or it cannot be reached.
    #[error("keystore: {0}")]
    Keystore(String),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> DaemonError {
    move |source| DaemonError::Io { what, source }
}

/// Keys and certificate, checked against each other and the group key before anything starts.
#[derive(Debug)]
pub struct Credentials {
    pub key: igmp_ext::ed25519_dalek::SigningKey,
    pub cert: MemberCertificate,
    pub group_key: igmp_ext::ed25519_dalek::VerifyingKey,
}

/// Refuses a certificate that certifies another key than ours or does not allow our groups.
fn check_identity(
    config: &Config,
    key: &igmp_ext::ed25519_dalek::SigningKey,
    body: &igmp_ext::CertificateBody,
) -> Result<(), DaemonError> {
    let cert_path = config.member_cert.display();
    if body.member_key != key.verifying_key() {
        return Err(DaemonError::Identity(format!(
            "{cert_path}: certifies another key than {}",
            config.member_key.display()
        )));
    }
    for (what, g) in [
        ("group", config.group),
        ("control.group", config.control.group),
    ] {
        if !body.groups.contains(&g) {
            return Err(DaemonError::Identity(format!(
                "{cert_path}: does not allow {what} {g}"
            )));
        }
    }
    Ok(())
}

/// The keystore side of a running daemon: the client and the state of our credentials.
#[derive(Debug)]
pub struct KeystoreWatch {
    pub client: std::sync::Arc<KeystoreClient>,
    pub every: Duration,
    pub watch: keystore::Watch,
}

/// Reads the key files and refuses a certificate that the group key did not issue, that is
/// not valid now, that certifies another key, or that does not allow our groups. The group key
/// is `group_pub`, or (`[keystore]`) the published key that issued our certificate, checked as
/// in [`keystore::check`] within `keystore.start_timeout_ms`.
pub async fn load_credentials(
    config: &Config,
    now: Timestamp,
) -> Result<(Credentials, Option<KeystoreWatch>), DaemonError> {
    let key = keys::read_private_key(&config.member_key)?;
    match config.group_key_source().map_err(DaemonError::Config)? {
        GroupKeySource::File(path) => {
            let group_key = keys::read_public_key(path)?;
            let cert = keys::read_verified_certificate(&config.member_cert, &group_key, now)?;
            check_identity(config, &key, cert.body())?;
            let creds = Credentials {
                key,
                cert,
                group_key,
            };
            Ok((creds, None))
        }
        GroupKeySource::Keystore(ks) => {
            let client_config = keystore::client_config(ks).map_err(DaemonError::Config)?;
            let client_max_stale = client_config.max_stale;
            let unverified = keys::read_certificate(&config.member_cert)?;
            check_identity(config, &key, unverified.unverified_body())?;
            let client = KeystoreClient::new(client_config);
            let member = ks
                .require_certificate
                .then(|| KeyId::of(&key.verifying_key()));
            let published =
                keystore::fetch_at_start(&client, config.group, member, ks.start_timeout())
                    .await
                    .map_err(|e| DaemonError::Keystore(format!("group {}: {e}", config.group)))?;
            let (group_key, cert) =
                keystore::check(&unverified, &published, ks.require_certificate, now)
                    .map_err(|e| DaemonError::Keystore(e.to_string()))?;
            let watch = KeystoreWatch {
                client: std::sync::Arc::new(client),
                every: ks.refresh(),
                watch: keystore::Watch::new(
                    unverified,
                    ks.require_certificate,
                    client_max_stale,
                    driver::wall_clock(),
                    published.ttl,
                ),
            };
            let creds = Credentials {
                key,
                cert,
                group_key,
            };
            Ok((creds, Some(watch)))
        }
    }
}

/// Fetches the group record (and our certificate record, with `member`) every `every` and sends
/// each outcome.
fn spawn_keystore_refresher(
    client: std::sync::Arc<KeystoreClient>,
    group: Ipv4Addr,
    member: Option<KeyId>,
    every: Duration,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Result<keystore::Published, dns_keystore::client::FetchError>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let r = keystore::fetch(&client, group, member, driver::wall_clock()).await;
            if let Ok(p) = &r {
                let keys: Vec<String> = p
                    .record
                    .keys
                    .iter()
                    .map(|k| KeyId::of(k).to_string())
                    .collect();
                debug!(keys = %keys.join(","), revoked = p.record.revoked.len(), "keystore: record validated");
            }
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    (task, rx)
}

/// The first IPv4 address of `ifname`.
pub fn interface_addr(ifname: &str) -> Result<Ipv4Addr, DaemonError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| DaemonError::Io {
        what: "getifaddrs",
        source: e.into(),
    })?;
    addrs
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .ok_or_else(|| DaemonError::NoAddress(ifname.to_owned()))
}

/// UDP socket for the service: joined to the group at the kernel level so that the kernel
/// delivers it (the kernel then also sends its own unsigned reports, which a verifier refuses).
fn service_socket(config: &Config, addr: Ipv4Addr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        config.service_port,
    )))?;
    s.join_multicast_v4(&config.group, &addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Raw IGMP socket on the router link: sends our complete datagrams (IP_HDRINCL; the Router
/// Alert option is in them already) and receives the queries. The kernel hands a raw socket
/// only IGMP for groups this host joined; 224.0.0.1 (general queries) always is.
fn igmp_socket(ifname: &str, addr: Ipv4Addr) -> io::Result<AsyncFd<Socket>> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_IGMP)))?;
    s.set_header_included_v4(true)?;
    s.bind_device(Some(ifname.as_bytes()))?;
    s.set_multicast_if_v4(&addr)?;
    s.set_nonblocking(true)?;
    // `new` is deprecated for types whose descriptor could change under it; a `Socket` owns its
    // descriptor for its whole life, and the safe-code rule of this workspace rules out the
    // `unsafe fn register` that replaces it.
    #[allow(deprecated)]
    AsyncFd::new(s)
}

/// An IGMP query inside a received IPv4 datagram, if it is one; anything else is ignored.
pub fn parse_query(datagram: &[u8]) -> Option<igmp_ext::wire::igmp::QueryRepr> {
    let ihl = usize::from(*datagram.first()? & 0x0f) * 4;
    let packet = IgmpPacket::new_checked(datagram.get(ihl..)?).ok()?;
    if !packet.verify_checksum() {
        return None;
    }
    match IgmpRepr::parse(&packet).ok()? {
        IgmpRepr::Query(q) => Some(q),
        _ => None,
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // A failing OS generator only weakens the jitter of report times; never fatal.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn nonce() -> [u8; igmp_ext::join::NONCE_LEN] {
    let mut b = [0u8; igmp_ext::join::NONCE_LEN];
    if getrandom::fill(&mut b).is_err() {
        // Still unique per report: the verifier's replay cache keys on the nonce.
        b[..8].copy_from_slice(&random_u64().to_le_bytes());
        b[8..].copy_from_slice(&driver::wall_clock().0.to_le_bytes());
    }
    b
}

/// The daemon's state: the sans-IO parts and the sockets they use. Owned by [`run`]'s loop.
pub struct Runtime {
    config: Config,
    agent: JoinAgent,
    service: Service,
    igmp: AsyncFd<Socket>,
    udp: UdpSocket,
    snapshot: Snapshot,
    /// VIP mode with the reset strategy: destroys the TCP connections of moved clients.
    vip_reset: Option<crate::vip::ResetTask>,
    drain: Option<Drain>,
    /// VIP mode: the VIP, whose open TCP connections a drain waits for (SPEC.md §11.6).
    vip: Option<Ipv4Addr>,
    /// While draining in VIP mode: open TCP connections to the VIP at the last tick (`None`
    /// until counted, and again after the commit that empties us).
    drain_connections: Option<usize>,
    /// Members that announced a direct path: forwards to them take it (the endpoint chooses).
    direct_paths: BTreeSet<MemberId>,
    /// Where other members reach us directly, announced under forward and handoff.
    direct_path: Option<SocketAddrV4>,
    /// VIP mode, forward strategy: which units' orphan TCP segments go to which old owner.
    vip_forward: Option<crate::vip_forward::ForwardTable>,
    /// VIP mode: the host changes, put back when the runtime drops (return from [`run`]).
    vip_host: Option<crate::vip::HostSetup>,
    /// VIP forward: a claim held back until the old owners of its gained units are known.
    pending_claim: Option<(Vec<SliceEntry>, AllocationEpoch)>,
    load: LoadMeter,
    admin: admin::Hub,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("service", &self.service)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Sends every report the agent has due now.
    fn flush_joins(&mut self, now: Timestamp) {
        while let Some(d) = self.agent.poll_transmit(now, nonce()) {
            match d {
                Ok(datagram) => {
                    let to = SockAddr::from(SocketAddrV4::new(ALL_V3_ROUTERS, 0));
                    match self.igmp.get_ref().send_to(&datagram, &to) {
                        Ok(_) => self.snapshot.joins_sent += 1,
                        Err(e) => warn!("sending signed report: {e}"),
                    }
                }
                Err(e) => warn!("building signed report: {e}"),
            }
        }
    }

    async fn send_replies(&mut self, replies: Vec<Reply>) {
        for r in replies {
            // A lost reply is a lost datagram; the client retries.
            if let Err(e) = self.udp.send_to(&r.payload, SocketAddr::V4(r.to)).await {
                debug!("reply to {}: {e}", r.to);
            }
        }
    }

    async fn on_event(&mut self, handle: &driver::DriverHandle, now: Timestamp, event: Event) {
        self.admin.publish(now, &event);
        match event {
            Event::Committed { id, slices, .. } => {
                info!(
                    epoch = id.epoch,
                    proposer = id.proposer,
                    slices = %slices,
                    "allocation committed"
                );
                self.snapshot.epoch = id.epoch;
                self.snapshot.slices = slices.len();
                self.snapshot.slice_addresses = slices.size();
                self.snapshot.commits += 1;
                let entries = slices.iter().copied().map(SliceEntry::include).collect();
                if let Some(r) = &self.vip_reset {
                    r.set_slices(slices.clone());
                }
                self.reallocate(handle, now, slices.is_empty()).await;
                self.claim_after_forwarding(now, entries, AllocationEpoch(id.epoch));
            }
            Event::MemberUp(m) => {
                info!(member = %m, "member up");
                if let Some(addr) = self.direct_path {
                    // The newcomer learns it now rather than at our next tick: under VIP forward
                    // its overlay has no way to us until then.
                    handle.with(move |ep, now| ep.advertise_direct_path(now, addr));
                }
            }
            Event::MemberDown(m) => info!(member = %m, "member down"),
            Event::MemberLeft(m) => {
                info!(member = %m, "member left");
                self.vip_forward_member_left(now, m);
            }
            other => self.on_reallocation_event(handle, now, other).await,
        }
    }

    fn on_igmp_readable(&mut self, now: Timestamp) {
        let mut buf = [0u8; 2048];
        loop {
            match self.igmp.get_ref().read_datagram(&mut buf) {
                Ok(n) => {
                    if let Some(q) = buf.get(..n).and_then(parse_query) {
                        self.snapshot.queries += 1;
                        self.agent.handle_query(now, &q, &mut random_u64);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("igmp socket: {e}");
                    break;
                }
            }
        }
    }

    /// Writes the metrics file, if configured (every second, and once more when leaving so
    /// that the final counts are on disk).
    fn write_metrics(&mut self, control: Option<Counters>) {
        self.snapshot.service = self.service.counters();
        self.snapshot.sessions = self.service.session_count();
        if let Some(r) = &self.vip_reset {
            (self.snapshot.vip_resets, self.snapshot.vip_reset_failures) = r.counts();
        }
        self.snapshot.control = control.unwrap_or_default();
        if let Some(path) = &self.config.metrics_file {
            if let Err(e) = metrics::write_file(path, &self.snapshot.render()) {
                warn!("metrics file {}: {e}", path.display());
            }
        }
    }
}

/// Reads a raw datagram into an initialised buffer (socket2 wants `MaybeUninit`).
trait ReadDatagram {
    fn read_datagram(self, buf: &mut [u8]) -> io::Result<usize>;
}

impl ReadDatagram for &Socket {
    fn read_datagram(self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        let mut s = self;
        s.read(buf)
    }
}

/// The control channel's counters, fetched from the driver task.
async fn control_counters(handle: &driver::DriverHandle) -> Option<Counters> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.with(move |ep: &mut Endpoint, _| {
        let _ = tx.send(ep.counters().clone());
    });
    rx.await.ok()
}

/// Runs until SIGTERM or SIGINT, then leaves the group and the cluster.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let (creds, keystore_watch) = load_credentials(&config, driver::wall_clock()).await?;
    let me = creds.cert.body().member_id;
    let (keystore_task, mut keystore_rx) = match &keystore_watch {
        Some(w) => {
            let (task, rx) = spawn_keystore_refresher(
                w.client.clone(),
                config.group,
                config
                    .keystore
                    .as_ref()
                    .is_some_and(|k| k.require_certificate)
                    .then(|| KeyId::of(&creds.key.verifying_key())),
                w.every,
            );
            (Some(task), Some(rx))
        }
        None => (None, None),
    };
    let mut keystore_watch = keystore_watch.map(|w| w.watch);
    let addr = interface_addr(&config.interface)?;
    // VIP mode: the VIP on loopback and the ARP sysctls, put back when this guard drops
    // (return from `run` after SIGTERM or an error).
    let vip = config.vip.address.filter(|_| config.mode == Mode::Vip);
    let direct_path = matches!(config.strategy, Strategy::Forward | Strategy::Handoff).then(|| {
        config
            .reallocation
            .direct_path
            .unwrap_or(SocketAddrV4::new(addr, config.control.port))
    });
    // VIP forward: the overlay runs between the members' direct-path addresses.
    let forward_host = match (
        vip,
        config.strategy,
        config.vip.forward_overlay,
        direct_path,
    ) {
        (Some(_), Strategy::Forward, Some(overlay), Some(path)) => Some(crate::vip::ForwardHost {
            overlay,
            member: me,
            local: *path.ip(),
            vni: config.vip.forward_vni,
            port: config.vip.forward_port,
            unit_mask: config.control_config().slicing.unit(0).mask(),
        }),
        _ => None,
    };
    let vip_host = vip
        .map(|v| crate::vip::HostSetup::apply(v, forward_host.as_ref()))
        .transpose()?;
    let vip_forward = forward_host
        .is_some()
        .then(|| crate::vip_forward::ForwardTable::new(config.forward_linger(), config.hold()));
    let vip_reset = vip
        .filter(|_| config.strategy == crate::config::Strategy::Reset)
        .map(|v| crate::vip::ResetTask::spawn(v, Duration::from_millis(config.vip.reset_delay_ms)));
    let ctl_if = config.control_interface().to_owned();
    let ctl_addr = interface_addr(&ctl_if)?;
    let mut sockcfg = SocketConfig::new(config.control.group, config.control.port, ctl_addr);
    sockcfg.ttl = config.control.ttl;
    let ctl_socket = driver::bind(&sockcfg).map_err(io_err("control socket"))?;
    let endpoint = Endpoint::new(
        config.control_config(),
        Identity {
            key: creds.key.clone(),
            certificate: creds.cert.clone(),
        },
        creds.group_key,
        driver::wall_clock(),
    );
    let mut handle = driver::spawn(
        endpoint,
        ctl_socket,
        SocketAddrV4::new(config.control.group, config.control.port),
    )
    .map_err(io_err("control driver"))?;
    let udp = service_socket(&config, addr).map_err(io_err("service socket"))?;
    let igmp = igmp_socket(&config.interface, addr).map_err(io_err("raw IGMP socket"))?;
    let hub = admin::Hub::new(Snapshot::new(me));
    let admin_listener = admin::bind(&config.admin_socket)
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
    let admin_server = admin::start(
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
    let agent = JoinAgent::new(
        config.agent_config(),
        JoinIdentity {
            key: creds.key.clone(),
            cert: creds.cert.clone(),
            sender: addr,
        },
        config.group,
    );
    let service = Service::new(
        me,
        config.strategy,
        config.session_idle(),
        config.service.max_sessions,
    )
    .with_hold(config.hold());
    let mut rt = Runtime {
        snapshot: Snapshot::new(me),
        load: LoadMeter::new(config.control_config().slicing),
        admin: hub,
        config,
        agent,
        service,
        igmp,
        udp,
        vip_reset,
        drain: None,
        vip,
        drain_connections: None,
        direct_paths: BTreeSet::new(),
        direct_path,
        vip_forward,
        vip_host,
        pending_claim: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = vec![0u8; 65_536];
    // Set when the keystore no longer backs our credentials: leave, then exit with it.
    let mut stop_reason = None;
    loop {
        let now = driver::wall_clock();
        if rt.drain_finished(now) {
            break;
        }
        let service_wait = rt
            .service
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis(t.0.saturating_sub(now.0))
            });
        let join_wait = rt
            .agent
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis(t.0.saturating_sub(now.0))
            });
        tokio::select! {
            e = handle.events.recv() => match e {
                Some((_, e)) => rt.on_event(&handle, driver::wall_clock(), e).await,
                None => return Err(DaemonError::Io {
                    what: "control driver",
                    source: io::Error::other("stopped"),
                }),
            },
            r = rt.udp.recv_from(&mut buf) => {
                // Errors are ICMP reports about earlier replies; nothing to do.
                if let Ok((n, SocketAddr::V4(from))) = r {
                    let actions = rt.service.handle_datagram(driver::wall_clock(), from, &buf[..n]);
                    rt.apply(&handle, actions).await;
                }
            }
            g = rt.igmp.readable() => {
                if let Ok(mut guard) = g {
                    guard.clear_ready();
                }
                rt.on_igmp_readable(driver::wall_clock());
            }
            _ = tokio::time::sleep(join_wait) => rt.flush_joins(driver::wall_clock()),
            _ = tokio::time::sleep(service_wait) => {
                let actions = rt.service.handle_timeout(driver::wall_clock());
                rt.apply(&handle, actions).await;
                // The hold may have ended a wait for old owners: a held-back claim goes out.
                rt.sync_vip_forward(driver::wall_clock(), None);
            }
            _ = tick.tick() => {
                let actions = rt.service.handle_timeout(driver::wall_clock());
                rt.apply(&handle, actions).await;
                if let Some(addr) = rt.direct_path {
                    // Repeated so that members that arrive later learn it too.
                    handle.with(move |ep, now| ep.advertise_direct_path(now, addr));
                }
                rt.count_drain_connections();
                rt.sync_vip_forward(driver::wall_clock(), None);
                rt.load.tick();
                let report = rt.load.report();
                handle.with(move |ep, _| ep.set_load(report));
                rt.snapshot.keystore = keystore_watch.as_ref().map(|w| metrics::KeystoreStatus {
                    mismatch: w.problem().map(keystore::Mismatch::label),
                    stale: w.stale(driver::wall_clock()),
                    refresh_failures: w.refresh_failures(),
                });
                rt.write_metrics(control_counters(&handle).await);
                rt.admin.set_snapshot(&rt.snapshot);
                if let Some(reason) = keystore_watch
                    .as_ref()
                    .and_then(|w| w.poll_leave(driver::wall_clock()))
                {
                    error!(reason = reason.label(), "keystore: {reason}; leaving the cluster");
                    stop_reason = Some(DaemonError::Keystore(reason.to_string()));
                    break;
                }
            }
            fetched = async {
                match keystore_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match (keystore_watch.as_mut(), fetched) {
                (Some(w), Some(r)) => log_keystore_event(w.handle_fetch(driver::wall_clock(), r)),
                _ => keystore_rx = None,
            },
            // Under forward, handoff and pin the first SIGTERM drains and the loop ends when
            // the drain is done; a second one (or SIGINT, or reset) leaves at once.
            _ = term.recv() => {
                if rt.config.drains_on_terminate() && rt.drain.is_none() {
                    rt.begin_drain(&handle);
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
    rt.write_metrics(control_counters(&handle).await);
    // Stops the admin tasks, whose requesters would otherwise keep the driver running.
    drop(admin_server);
    handle.with(|ep, now| ep.leave(now));
    let now = driver::wall_clock();
    rt.agent.leave(now, &mut random_u64);
    rt.flush_joins(now);
    // The agent repeats the leave robustness times within the unsolicited report interval.
    while let Some(t) = rt.agent.poll_timeout() {
        let now = driver::wall_clock();
        tokio::time::sleep(Duration::from_millis(t.0.saturating_sub(now.0))).await;
        rt.flush_joins(driver::wall_clock());
    }
    // Let the driver send the Leave before it stops.
    let _ = control_counters(&handle).await;
    let _ = handle.stop().await;
    info!("stopped");
    stop_reason.map_or(Ok(()), Err)
}

/// Logs what a keystore refresh changed: loudly when our credentials stopped matching.
fn log_keystore_event(event: Option<keystore::WatchEvent>) {
    match event {
        Some(keystore::WatchEvent::Mismatch { reason, leave_at }) => error!(
            reason = reason.label(),
            %leave_at,
            "keystore: {reason}; serving on until the verifiers refuse our claims (one record TTL), then leaving"
        ),
        Some(keystore::WatchEvent::Cleared) => {
            info!("keystore: our credentials match the published record again")
        }
        Some(keystore::WatchEvent::FetchFailed(e)) => warn!("keystore refresh failed: {e}"),
        _ => {}
    }
}
