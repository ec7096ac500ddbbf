//! The driver: owns the sockets, the clock and the signals, feeds the sans-IO parts (verifier,
//! querier, rate limiter, steering planners) and applies what they decide to the kernel.
//! Client traffic never comes here: only IGMP, upcalls, status and metrics requests.

use crate::config::{Config, Dataplane, KeySourceConfig};
use crate::keyfile::FileKeySource;
use crate::netdev::{parse_counters, KernelCounters, NetdevSteering};
use crate::querier::{Event, Querier, Transmit};
use crate::ratelimit::{Limited, RateLimiter};
use crate::status::{Counters, InterfaceStatus, ListenerRow, MfcRow, OwnershipRow, Status};
use crate::steering::{resolve, GapPolicy, KernelOp, NativeSteering, Target, VifTable};
use crate::sys::mroute::{self, MfcSpec, MrouteControl, Upcall, VifSet, IGMPMSG_NOCACHE};
use crate::sys::{nft, procfs};
use crate::vip::VipSteering;
use dns_keystore::client::KeystoreClient;
use igmp_ext::verify::LinkTable;
use igmp_ext::wire::igmp::IgmpRepr;
use igmp_ext::wire::ipv4::{Ipv4Repr, PROTOCOL_IGMP, TOS_INTERNETWORK_CONTROL};
use igmp_ext::{Accepted, JoinVerifier, KeySource, Reason, Slice, Timestamp};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{InterfaceIndexOrAddress, Protocol, SockAddr, Socket};
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tracing::{debug, info, warn};

/// 224.0.0.22, where IGMPv3 reports go: the router must be a member to receive them.
const ALL_V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);
/// The driver's timer period: querier timers, claim expiry and a slice of the idle sweep.
const TICK: Duration = Duration::from_millis(100);
/// Entries the idle sweep looks at per tick at least.
const SWEEP_MIN_BUDGET: usize = 64;

/// 224.0.0.2, where IGMPv2 leaves go.
const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);

pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug, Clone)]
struct Iface {
    name: String,
    ifindex: u32,
    addr: Ipv4Addr,
    vif: u16,
}

/// (name, ifindex, first IPv4 address) of a configured interface.
type Found = (String, u32, Ipv4Addr);

/// Finds each configured interface's index and first IPv4 address, and every subnet on it.
fn discover(names: &[String]) -> Result<(Vec<Found>, LinkTable), String> {
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs()
        .map_err(|e| format!("cannot list interfaces: {e}"))?
        .collect();
    let mut out = Vec::new();
    let mut links = LinkTable::new();
    for name in names {
        let ifindex = nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|_| format!("interface {name} does not exist"))?;
        let mut first = None;
        for a in addrs.iter().filter(|a| &a.interface_name == name) {
            let (Some(addr), Some(mask)) = (
                a.address.as_ref().and_then(|s| s.as_sockaddr_in()),
                a.netmask.as_ref().and_then(|s| s.as_sockaddr_in()),
            ) else {
                continue;
            };
            let ip = addr.ip();
            let len = u32::from(mask.ip()).leading_ones() as u8;
            links.add(ifindex, Slice::prefix(ip, len));
            first.get_or_insert(ip);
        }
        let addr = first.ok_or_else(|| format!("interface {name} has no IPv4 address"))?;
        out.push((name.clone(), ifindex, addr));
    }
    Ok((out, links))
}

#[derive(Debug, Default)]
struct Stats {
    joins_accepted: u64,
    plain_accepted: u64,
    rate_limited: [u64; 2],
    upcalls: u64,
    upcalls_this_second: u64,
    upcalls_last_second: u64,
    second: u64,
    mfc_installs: u64,
    nft_transactions: u64,
    kernel_errors: u64,
    queries_sent: u64,
}

/// Where the verifier's group keys come from.
#[derive(Debug)]
pub enum Keys {
    /// The offline key file (`keys`).
    File(FileKeySource),
    /// The DNSSEC-validating keystore client (`[keystore]`), refreshed by its own task.
    Keystore(Arc<KeystoreClient>),
}

impl Keys {
    /// Loads the key file, or builds the keystore client and registers the configured groups
    /// (nothing is fetched yet: see [`Keys::start`]).
    pub fn load(cfg: &Config) -> Result<Keys, String> {
        match cfg.key_source().map_err(|e| e.0)? {
            KeySourceConfig::File(p) => Ok(Keys::File(FileKeySource::load(p)?)),
            KeySourceConfig::Keystore(ks) => {
                let client =
                    KeystoreClient::new(Config::keystore_client_config(ks).map_err(|e| e.0)?);
                for g in &ks.groups {
                    client.watch(*g);
                }
                Ok(Keys::Keystore(Arc::new(client)))
            }
        }
    }

    /// For the keystore: fetches every group once (so that keys are there before the first
    /// join when the keystore is up; failures are logged and retried), then starts the
    /// refresher. Must run inside the tokio runtime.
    pub async fn start(&self, refresh: Duration) -> Option<tokio::task::JoinHandle<()>> {
        match self {
            Keys::File(_) => None,
            Keys::Keystore(client) => {
                client.refresh_due(dns_keystore::client::wall_clock()).await;
                Some(client.spawn_refresher(refresh))
            }
        }
    }

    pub fn source(&self) -> &dyn KeySource {
        match self {
            Keys::File(f) => f,
            Keys::Keystore(c) => c.as_ref(),
        }
    }
}

/// The running verifier.
pub struct Router {
    cfg: Config,
    keys: Keys,
    refresher: Option<tokio::task::JoinHandle<()>>,
    verifier: JoinVerifier,
    querier: Querier,
    limiter: RateLimiter,
    gap: GapPolicy,
    steering: NativeSteering,
    vip: VipSteering,
    vifs: VifTable,
    ifaces: Vec<Iface>,
    /// Our vifs that an earlier process left, reused rather than added.
    adopted_vifs: Vec<u16>,
    control: MrouteControl,
    /// The raw IGMP socket every report, query and (with the mroute data plane) upcall arrives
    /// on: the MRT socket when the kernel routes multicast, a plain raw IGMP socket otherwise.
    mroute: AsyncFd<Socket>,
    /// The nft data plane (`native.dataplane`), when native mode does not use the MRT socket.
    netdev: Option<NetdevSteering>,
    /// Interfaces we put into allmulticast for the nft data plane (restored on shutdown).
    allmulti_set: Vec<String>,
    /// The nft data plane's counters of the tables we replaced (a rewrite starts at zero).
    netdev_counted: KernelCounters,
    senders: HashMap<u32, Socket>,
    adopt_until: Option<Timestamp>,
    stats: Stats,
}

impl core::fmt::Debug for Router {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Router")
            .field("interfaces", &self.ifaces)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Opens everything; every error is one line for the operator.
    pub fn start(cfg: Config) -> Result<Router, String> {
        let keys = Keys::load(&cfg)?;
        let vcfg = cfg.verifier_config().map_err(|e| e.0)?;
        let gap = cfg.gap_policy().map_err(|e| e.0)?;
        let (found, links) = discover(&cfg.interfaces)?;
        let now = now();

        let mrt_error = |e: std::io::Error| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                "another multicast routing daemon holds this namespace's MRT socket".to_owned()
            } else if e.raw_os_error() == Some(libc::ENOPROTOOPT) {
                "this kernel has no multicast routing (CONFIG_IP_MROUTE): \
                 set native.dataplane = \"nft\" (or \"auto\")"
                    .to_owned()
            } else {
                format!("cannot open the multicast routing socket (MRT_INIT): {e}")
            }
        };
        let plain_igmp_socket = || {
            let s = mroute::raw_igmp_socket().map_err(|e| format!("raw IGMP socket: {e}"))?;
            let _ = s.set_recv_buffer_size(1 << 20);
            Ok::<_, String>(s)
        };
        let (mroute, use_mrt) = match cfg.native.dataplane {
            Dataplane::Mroute => (mroute::open_mroute_socket().map_err(mrt_error)?, true),
            Dataplane::Nft => (plain_igmp_socket()?, false),
            Dataplane::Auto => match mroute::open_mroute_socket() {
                Ok(s) => (s, true),
                Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                    info!("this kernel has no multicast routing (CONFIG_IP_MROUTE): native mode steers with the nftables data plane");
                    (plain_igmp_socket()?, false)
                }
                Err(e) => return Err(mrt_error(e)),
            },
        };
        let control = MrouteControl::open().map_err(|e| format!("raw IGMP socket: {e}"))?;

        // VIFs an earlier process left (they are static, see sys::mroute) are reused.
        let existing = if use_mrt {
            procfs::read_vifs()
        } else {
            Vec::new()
        };
        let mut vifs = VifTable::default();
        let mut adopted_vifs = Vec::new();
        for v in &existing {
            if let Some((_, ifindex, _)) = found.iter().find(|(n, _, _)| *n == v.ifname) {
                vifs.insert(*ifindex, v.vif);
                adopted_vifs.push(v.vif);
            }
        }
        let mut ifaces = Vec::new();
        for (name, ifindex, addr) in found {
            let vif = match vifs.vif_of(ifindex) {
                Some(v) => v,
                // The nft data plane has no VIFs; the numbers only index the interfaces.
                None if !use_mrt => {
                    let v = ifaces.len() as u16;
                    vifs.insert(ifindex, v);
                    v
                }
                None => {
                    let v = vifs
                        .free_vif()
                        .ok_or_else(|| "no free VIF (the kernel has 32)".to_owned())?;
                    control
                        .add_vif(v, ifindex)
                        .map_err(|e| format!("MRT_ADD_VIF {name}: {e}"))?;
                    vifs.insert(ifindex, v);
                    v
                }
            };
            mroute
                .join_multicast_v4_n(&ALL_V3_ROUTERS, &InterfaceIndexOrAddress::Index(ifindex))
                .map_err(|e| format!("join 224.0.0.22 on {name}: {e}"))?;
            mroute
                .join_multicast_v4_n(&ALL_ROUTERS, &InterfaceIndexOrAddress::Index(ifindex))
                .map_err(|e| format!("join 224.0.0.2 on {name}: {e}"))?;
            ifaces.push(Iface {
                name,
                ifindex,
                addr,
                vif,
            });
        }
        nix::sys::socket::setsockopt(&mroute, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
            .map_err(|e| format!("IP_PKTINFO: {e}"))?;
        mroute
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;

        let mut senders = HashMap::new();
        for i in &ifaces {
            let s = Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(Protocol::from(libc::IPPROTO_RAW)),
            )
            .map_err(|e| format!("raw socket: {e}"))?;
            s.bind_device(Some(i.name.as_bytes()))
                .map_err(|e| format!("bind to {}: {e}", i.name))?;
            let _ = s.set_multicast_loop_v4(false);
            senders.insert(i.ifindex, s);
        }

        let mut steering = NativeSteering::new();
        let protected = vcfg.protected.clone();
        let mut adopted = 0;
        for line in use_mrt.then(procfs::read_cache).unwrap_or_default() {
            let Some(parent) = line.parent else { continue };
            if !cfg.native.route_plain_groups
                && !protected.iter().any(|p| p.contains_addr(line.group))
            {
                continue;
            }
            let oifs = line.oifs.iter().map(|&(v, _)| v).collect();
            steering.adopt(now, line.source, line.group, parent, oifs);
            adopted += 1;
        }
        let mut querier = Querier::new(cfg.querier_config());
        for i in &ifaces {
            querier.add_interface(now, i.ifindex, i.addr);
        }
        let vip = VipSteering::new(&cfg.vip);
        let mut allmulti_set = Vec::new();
        let netdev = if use_mrt {
            None
        } else {
            // A table an earlier verifier left keeps forwarding until members have answered.
            let left = nft::netdev_table_exists();
            for i in &ifaces {
                match nft::allmulti(&i.name) {
                    Some(false) => {
                        nft::set_allmulti(&i.name, true)?;
                        allmulti_set.push(i.name.clone());
                    }
                    // Left on with that table (keep_kernel_state): ours to restore at a clean
                    // shutdown, or it would stay on for good after a restart.
                    Some(true) if left => allmulti_set.push(i.name.clone()),
                    _ => {}
                }
            }
            if left {
                adopted += 1;
            }
            Some(NetdevSteering::new(
                ifaces.iter().map(|i| i.name.clone()).collect(),
                left,
            ))
        };
        let adopt_until = Some(now.saturating_add(cfg.adopt_grace()));
        if adopted > 0 || !adopted_vifs.is_empty() {
            info!(
                entries = adopted,
                vifs = adopted_vifs.len(),
                "took over kernel state left by an earlier verifier; kept as is until members answer"
            );
        }
        let mroute = mroute::register_async(mroute).map_err(|e| format!("tokio: {e}"))?;
        let limiter = RateLimiter::new(
            cfg.rate_limit.per_interface_pps,
            cfg.rate_limit.per_source_pps,
        );
        Ok(Router {
            verifier: JoinVerifier::new(vcfg, links),
            querier,
            limiter,
            gap,
            steering,
            vip,
            vifs,
            ifaces,
            adopted_vifs,
            control,
            mroute,
            netdev,
            allmulti_set,
            netdev_counted: KernelCounters::default(),
            senders,
            adopt_until,
            stats: Stats::default(),
            keys,
            refresher: None,
            cfg,
        })
    }

    fn ifname(&self, ifindex: u32) -> String {
        self.ifaces
            .iter()
            .find(|i| i.ifindex == ifindex)
            .map(|i| i.name.clone())
            .unwrap_or_else(|| format!("if{ifindex}"))
    }

    fn apply(&mut self, ops: Vec<KernelOp>) {
        for op in ops {
            let r = match op {
                KernelOp::Install(spec) => {
                    self.stats.mfc_installs += 1;
                    self.control.add_mfc(&spec)
                }
                KernelOp::Remove(spec) => self.control.del_mfc(&spec),
            };
            if let Err(e) = r {
                self.stats.kernel_errors += 1;
                warn!(?op, error = %e, "MFC update failed");
            }
        }
    }

    fn target(&self, group: Ipv4Addr, source: Ipv4Addr) -> Target {
        target_of(
            &self.verifier,
            &self.querier,
            &self.vifs,
            self.gap,
            self.cfg.native.route_plain_groups,
            group,
            source,
        )
    }

    /// Listeners for `group` came or went on some interface: a plain group's entries follow.
    fn listeners_changed(&mut self, group: Ipv4Addr) {
        if self.verifier.is_protected(group) {
            return; // steered by ownership, not by listeners
        }
        let route_plain = self.cfg.native.route_plain_groups;
        let ops = self.steering.repoint(
            Some(group),
            |g, s| {
                target_of(
                    &self.verifier,
                    &self.querier,
                    &self.vifs,
                    self.gap,
                    route_plain,
                    g,
                    s,
                )
            },
            &self.vifs,
        );
        if !ops.is_empty() {
            debug!(%group, changed = ops.len(), "plain group entries follow their listeners");
        }
        self.apply(ops);
    }

    fn ownership_changed(&mut self, group: Option<Ipv4Addr>) {
        let route_plain = self.cfg.native.route_plain_groups;
        let ops = self.steering.repoint(
            group,
            |g, s| {
                target_of(
                    &self.verifier,
                    &self.querier,
                    &self.vifs,
                    self.gap,
                    route_plain,
                    g,
                    s,
                )
            },
            &self.vifs,
        );
        self.apply(ops);
        self.update_netdev(group);
        let groups: Vec<Ipv4Addr> = match group {
            Some(g) => vec![g],
            None => self.vip.groups(),
        };
        for g in groups {
            match self
                .vip
                .update(g, self.verifier.ownership(), self.gap, now())
            {
                Ok(true) => self.stats.nft_transactions += 1,
                Ok(false) => {}
                Err(e) => {
                    self.stats.kernel_errors += 1;
                    warn!(group = %g, error = %e, "VIP steering update failed");
                }
            }
        }
    }

    /// The nft data plane follows the ownership of `group` (every protected group: `None`).
    fn update_netdev(&mut self, group: Option<Ipv4Addr>) {
        let Some(nd) = self.netdev.as_mut() else {
            return;
        };
        let table = self.verifier.ownership();
        let groups: Vec<Ipv4Addr> = match group {
            Some(g) => vec![g],
            None => {
                let mut g: Vec<Ipv4Addr> = table.groups().collect();
                g.extend(nd.groups());
                g.sort();
                g.dedup();
                g
            }
        };
        let ifaces = &self.ifaces;
        let device_of = |ifindex: u32| {
            ifaces
                .iter()
                .find(|i| i.ifindex == ifindex)
                .map(|i| i.name.clone())
        };
        let mut pending = None;
        for g in groups
            .into_iter()
            .filter(|&g| self.verifier.is_protected(g))
        {
            match nd.update(g, table, self.gap, device_of) {
                Ok(Some(text)) => pending = Some(text),
                Ok(None) => {}
                Err(e) => {
                    self.stats.kernel_errors += 1;
                    warn!(group = %g, error = %e, "native steering plan failed; kernel unchanged");
                }
            }
        }
        if let Some(text) = pending {
            self.apply_netdev(&text);
        }
    }

    fn apply_netdev(&mut self, text: &str) {
        // The rewrite resets the table's counters: keep what the one it replaces counted (once
        // it is replaced; a failed write leaves it, and its counters, in place).
        let replaced = self
            .netdev
            .as_ref()
            .is_some_and(|nd| nd.is_written())
            .then(nft::list_netdev_table)
            .and_then(Result::ok)
            .map(|listing| parse_counters(&listing));
        match nft::apply(text) {
            Ok(()) => {
                self.stats.nft_transactions += 1;
                if let Some(c) = replaced {
                    self.netdev_counted.add(&c);
                }
                if let Some(nd) = self.netdev.as_mut() {
                    nd.applied();
                }
            }
            Err(e) => {
                self.stats.kernel_errors += 1;
                if let Some(nd) = self.netdev.as_mut() {
                    nd.apply_failed();
                }
                warn!(error = %e, "native nft data plane update failed; retried every second");
            }
        }
    }

    fn handle_upcall(&mut self, up: Upcall) {
        if up.msgtype != IGMPMSG_NOCACHE {
            debug!(?up, "upcall ignored");
            return;
        }
        self.stats.upcalls += 1;
        self.stats.upcalls_this_second += 1;
        let target = self.target(up.group, up.source);
        let op = self
            .steering
            .upcall(now(), up.source, up.group, up.vif, target, &self.vifs);
        debug!(source = %up.source, group = %up.group, ?target, "upcall");
        self.apply(vec![op]);
    }

    fn handle_igmp(&mut self, now: Timestamp, ifindex: Option<u32>, datagram: &[u8]) {
        let src = datagram
            .get(12..16)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
        if let Some(src) = src {
            if self.ifaces.iter().any(|i| i.addr == src) {
                return; // our own query
            }
        }
        let Some(ifindex) = ifindex else {
            return;
        };
        if !self.ifaces.iter().any(|i| i.ifindex == ifindex) {
            return;
        }
        if let Err(l) = self
            .limiter
            .admit(now, ifindex, src.unwrap_or(Ipv4Addr::UNSPECIFIED))
        {
            self.stats.rate_limited[match l {
                Limited::Interface => 0,
                Limited::Source => 1,
            }] += 1;
            return;
        }
        match self
            .verifier
            .handle_datagram(now, ifindex, datagram, self.keys.source())
        {
            Ok(Accepted::Plain { sender, message }) => {
                self.stats.plain_accepted += 1;
                match &message {
                    IgmpRepr::Query(q) => self.querier.handle_query(now, ifindex, sender, q),
                    IgmpRepr::V3Report(r) => self.querier.handle_records(now, ifindex, &r.records),
                    IgmpRepr::V1Report { group } | IgmpRepr::V2Report { group } => {
                        self.querier.handle_membership(now, ifindex, *group)
                    }
                    IgmpRepr::V2Leave { group } => self.querier.handle_leave(now, ifindex, *group),
                }
            }
            Ok(Accepted::Join {
                join,
                change,
                public_records,
            }) => {
                self.stats.joins_accepted += 1;
                info!(
                    member = %join.member(),
                    group = %join.group(),
                    epoch = %join.epoch(),
                    slices = %join.slices(),
                    interface = %self.ifname(ifindex),
                    "join accepted"
                );
                if join.slices().is_empty() {
                    self.querier.handle_leave(now, ifindex, join.group());
                } else {
                    self.querier.handle_membership(now, ifindex, join.group());
                }
                self.querier.handle_records(now, ifindex, &public_records);
                if !change.is_empty() {
                    self.ownership_changed(change.group);
                }
            }
            Err(rej) => {
                let level_warn = !matches!(rej.reason, Reason::Duplicate);
                if level_warn {
                    warn!(reason = %rej.reason, sender = ?rej.sender, interface = %self.ifname(ifindex), detail = %rej.detail, "report rejected");
                } else {
                    debug!(reason = %rej.reason, sender = ?rej.sender, "report rejected");
                }
            }
        }
    }

    fn querier_events(&mut self) {
        while let Some(e) = self.querier.poll_event() {
            match e {
                Event::RoleChanged { ifindex, role } => {
                    info!(interface = %self.ifname(ifindex), ?role, "querier role")
                }
                Event::GroupJoined { ifindex, group } => {
                    debug!(interface = %self.ifname(ifindex), %group, "group has listeners");
                    self.listeners_changed(group);
                }
                Event::GroupExpired { ifindex, group } => {
                    debug!(interface = %self.ifname(ifindex), %group, "group membership expired");
                    self.listeners_changed(group);
                }
            }
        }
    }

    fn send(&mut self, t: Transmit) {
        let igmp = IgmpRepr::Query(t.query);
        let ip = Ipv4Repr {
            src_addr: t.src,
            dst_addr: t.dst,
            protocol: PROTOCOL_IGMP,
            ttl: 1,
            tos: TOS_INTERNETWORK_CONTROL,
            router_alert: true,
            payload_len: igmp.buffer_len(),
        };
        let mut buf = vec![0u8; ip.buffer_len()];
        ip.emit(&mut buf);
        igmp.emit(&mut buf[ip.header_len()..]);
        if let Some(s) = self.senders.get(&t.ifindex) {
            match s.send_to(&buf, &SockAddr::from(SocketAddrV4::new(t.dst, 0))) {
                Ok(_) => self.stats.queries_sent += 1,
                Err(e) => debug!(error = %e, ifindex = t.ifindex, "query not sent"),
            }
        }
    }

    fn tick(&mut self, now: Timestamp) {
        self.querier.handle_timeout(now);
        while let Some(t) = self.querier.poll_transmit() {
            self.send(t);
        }
        self.querier_events();
        let expired = self.verifier.expire(now);
        for change in expired {
            info!(group = ?change.group, lost = ?change.lost, "claims expired");
            self.ownership_changed(change.group);
        }
        if self.adopt_until.is_some_and(|t| now >= t) {
            self.adopt_until = None;
            let route_plain = self.cfg.native.route_plain_groups;
            let ops = self.steering.settle_adopted(
                |g, s| {
                    target_of(
                        &self.verifier,
                        &self.querier,
                        &self.vifs,
                        self.gap,
                        route_plain,
                        g,
                        s,
                    )
                },
                &self.vifs,
            );
            if !ops.is_empty() {
                info!(
                    changed = ops.len(),
                    "entries taken over at start now follow the rebuilt ownership"
                );
            }
            self.apply(ops);
            if let Some(text) = self.netdev.as_mut().and_then(|nd| nd.release()) {
                info!("the nft table taken over at start now follows the rebuilt ownership");
                self.apply_netdev(&text);
            }
            self.ownership_changed(None);
        }
        let second = now.as_millis() / 1000;
        if second != self.stats.second {
            if let Some(text) = self.netdev.as_mut().and_then(|nd| nd.retry()) {
                self.apply_netdev(&text);
            }
            self.stats.upcalls_last_second = self.stats.upcalls_this_second;
            self.stats.upcalls_this_second = 0;
            self.stats.second = second;
        }
        self.sweep_idle(now);
    }

    /// Each tick looks at a slice of the entries, one SIOCGETSGCNT each, sized so that every
    /// entry is looked at least every quarter of the idle timeout. Reading
    /// `/proc/net/ip_mr_cache` instead costs time quadratic in the table (10 s for 100,000
    /// entries) and blocked upcalls meanwhile.
    fn sweep_idle(&mut self, now: Timestamp) {
        let idle_ms = self.cfg.native.idle_timeout_ms;
        let rounds = (idle_ms / 4 / TICK.as_millis() as u64).max(1) as usize;
        let budget = self.steering.len().div_ceil(rounds).max(SWEEP_MIN_BUDGET);
        let control = &self.control;
        let errors = &mut self.stats.kernel_errors;
        let ops =
            self.steering.sweep(
                now,
                Duration::from_millis(idle_ms),
                budget,
                |g, s| match control.packets(s, g) {
                    Ok(p) => p,
                    Err(e) => {
                        *errors += 1;
                        debug!(error = %e, %g, %s, "SIOCGETSGCNT");
                        // Unknown, not gone: counts as a move, so the entry stays.
                        Some(u64::MAX)
                    }
                },
            );
        self.apply(ops);
    }

    /// Reads every datagram waiting on the mroute socket.
    fn drain_socket(&mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 65_536];
        loop {
            let (len, ifindex) = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
                let msg = match nix::sys::socket::recvmsg::<SockaddrIn>(
                    self.mroute.get_ref().as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(m) => m,
                    Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                let mut ifindex = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::Ipv4PacketInfo(p) = c {
                            ifindex = u32::try_from(p.ipi_ifindex).ok().filter(|&i| i != 0);
                        }
                    }
                }
                (msg.bytes, ifindex)
            };
            let bytes = &buf[..len];
            if let Some(up) = Upcall::parse(bytes) {
                self.handle_upcall(up);
            } else {
                let b = bytes.to_vec();
                self.handle_igmp(now(), ifindex, &b);
                // A new listener opens its plain groups' entries now, not at the next tick.
                self.querier_events();
            }
        }
    }

    pub fn status(&self) -> Status {
        let now = now();
        let table = self.verifier.ownership();
        let mut ownership = Vec::new();
        for g in table.groups() {
            for (m, c) in table.claims(g) {
                ownership.push(OwnershipRow {
                    group: g.to_string(),
                    member: m.0,
                    slices: c.slices.to_string(),
                    epoch: c.epoch.0,
                    interface: self.ifname(c.ifindex),
                    sender: c.sender.to_string(),
                    expires_in_ms: c.expires.as_millis().saturating_sub(now.as_millis()),
                });
            }
        }
        ownership.sort_by(|a, b| (&a.group, a.member).cmp(&(&b.group, b.member)));
        let vif_name = |v: u16| {
            self.vifs
                .ifindex_of(v)
                .map(|i| self.ifname(i))
                .unwrap_or_else(|| format!("vif{v}"))
        };
        let mfc = self
            .steering
            .entries()
            .map(|((g, s), e)| MfcRow {
                group: g.to_string(),
                source: s.to_string(),
                iif: vif_name(e.parent),
                oif: if e.oifs.is_empty() {
                    "drop".into()
                } else {
                    e.oifs.iter().map(vif_name).collect::<Vec<_>>().join(",")
                },
                member: match e.target {
                    Some(Target::Member { member, .. }) if !e.oifs.is_empty() => Some(member),
                    _ => None,
                },
            })
            .collect();
        let listeners = self
            .ifaces
            .iter()
            .flat_map(|i| {
                self.querier
                    .groups(i.ifindex)
                    .map(|(g, expires)| ListenerRow {
                        interface: i.name.clone(),
                        group: g.to_string(),
                        expires_in_ms: expires.as_millis().saturating_sub(now.as_millis()),
                    })
            })
            .collect();
        let m = self.verifier.metrics();
        // The nft data plane's counters: what earlier tables counted plus the current one.
        let mut native_counters = self.netdev_counted.clone();
        if self.netdev.as_ref().is_some_and(|nd| nd.is_written()) {
            if let Ok(listing) = nft::list_netdev_table() {
                native_counters.add(&parse_counters(&listing));
            }
        }
        Status {
            interfaces: self
                .ifaces
                .iter()
                .map(|i| InterfaceStatus {
                    name: i.name.clone(),
                    ifindex: i.ifindex,
                    vif: i.vif,
                    address: i.addr.to_string(),
                    role: format!("{:?}", self.querier.role(i.ifindex)),
                })
                .collect(),
            ownership,
            listeners,
            mfc,
            dataplane: if self.netdev.is_some() {
                "nft"
            } else {
                "mroute"
            }
            .into(),
            native: self
                .netdev
                .as_ref()
                .map(|nd| nd.status(Some(&native_counters)))
                .unwrap_or_default(),
            vips: self.vip.status(),
            counters: Counters {
                joins_accepted: self.stats.joins_accepted,
                plain_accepted: self.stats.plain_accepted,
                rejected: m.rejections().map(|(r, n)| (r.to_owned(), n)).collect(),
                rate_limited: vec![
                    (
                        Limited::Interface.as_str().into(),
                        self.stats.rate_limited[0],
                    ),
                    (Limited::Source.as_str().into(), self.stats.rate_limited[1]),
                ],
                upcalls: self.stats.upcalls,
                upcalls_per_second: self.stats.upcalls_last_second,
                mfc_entries: self.steering.len() as u64,
                mfc_installs: self.stats.mfc_installs,
                nft_transactions: self.stats.nft_transactions,
                kernel_errors: self.stats.kernel_errors,
                queries_sent: self.stats.queries_sent,
                native_forwarded: native_counters.forwarded.values().sum(),
                native_ttl_dropped: native_counters.ttl_dropped,
                native_gap_dropped: native_counters.gap_dropped,
            },
        }
    }

    /// Removes what this verifier put in the kernel (unless configured to keep it).
    fn shutdown(&mut self) {
        if self.cfg.shutdown.keep_kernel_state {
            info!("leaving kernel state in place for the next verifier");
            return;
        }
        if self.netdev.is_some() {
            if let Err(e) = nft::delete_netdev_table() {
                warn!(error = %e, "removing the native nft table");
            }
        }
        for i in std::mem::take(&mut self.allmulti_set) {
            let _ = nft::set_allmulti(&i, false);
        }
        let ops = self.steering.drain();
        self.apply(ops);
        let mrt = self.netdev.is_none();
        for i in self.ifaces.clone().into_iter().filter(|_| mrt) {
            if let Err(e) = self.control.del_vif(i.vif) {
                debug!(error = %e, vif = i.vif, "MRT_DEL_VIF");
            }
        }
        // Also whatever an earlier process left on our interfaces' VIFs.
        for line in mrt.then(procfs::read_cache).unwrap_or_default() {
            if let Some(parent) = line.parent {
                if self.adopted_vifs.contains(&parent) {
                    let _ = self.control.del_mfc(&MfcSpec {
                        source: line.source,
                        group: line.group,
                        parent,
                        oifs: VifSet::EMPTY,
                    });
                }
            }
        }
        if let Err(e) = self.vip.remove_all() {
            warn!(error = %e, "removing VIP steering");
        }
        if self.netdev.is_none() {
            let _ = mroute::mrt_done(self.mroute.get_ref());
        }
    }

    /// Runs until SIGTERM or SIGINT.
    pub async fn run(mut self) -> Result<(), String> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("signal: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("signal: {e}"))?;
        let _ = std::fs::remove_file(&self.cfg.status_socket);
        let status = tokio::net::UnixListener::bind(&self.cfg.status_socket).map_err(|e| {
            format!(
                "cannot listen on status socket {}: {e}",
                self.cfg.status_socket.display()
            )
        })?;
        let metrics = match self.cfg.metrics_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("cannot listen for metrics on {a}: {e}"))?,
            ),
            None => None,
        };
        if let Some(ks) = &self.cfg.keystore {
            self.refresher = self.keys.start(Duration::from_millis(ks.refresh_ms)).await;
        }
        self.querier.query_now(now());
        self.tick(now());
        self.ownership_changed(None);
        info!(
            interfaces = ?self.ifaces.iter().map(|i| &i.name).collect::<Vec<_>>(),
            "verifier running"
        );
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                r = self.mroute.readable() => {
                    let mut guard = r.map_err(|e| format!("mroute socket: {e}"))?;
                    guard.clear_ready();
                    drop(guard);
                    if let Err(e) = self.drain_socket() {
                        warn!(error = %e, "receive");
                    }
                }
                _ = ticker.tick() => self.tick(now()),
                c = status.accept() => {
                    if let Ok((stream, _)) = c {
                        self.serve_status(stream).await;
                    }
                }
                c = async { match &metrics { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                    if let Ok((mut stream, _)) = c {
                        let body = self.status().render_metrics();
                        let resp = format!(
                            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(resp.as_bytes())).await;
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
        self.shutdown();
        let _ = std::fs::remove_file(&self.cfg.status_socket);
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

/// Where (group, source) goes: a protected group's source to its slice's owner (or the gap
/// policy); a plain group's to every interface with listeners for it, when plain groups are
/// routed, else nowhere.
fn target_of(
    verifier: &JoinVerifier,
    querier: &Querier,
    vifs: &VifTable,
    gap: GapPolicy,
    route_plain: bool,
    group: Ipv4Addr,
    source: Ipv4Addr,
) -> Target {
    if verifier.is_protected(group) {
        return resolve(verifier.ownership(), gap, group, source);
    }
    if !route_plain {
        return Target::Drop;
    }
    Target::Listeners {
        vifs: querier
            .listening_interfaces(group)
            .filter_map(|i| vifs.vif_of(i))
            .collect(),
    }
}

/// `--status`: asks a running verifier over its unix socket.
pub fn query_status(socket: &std::path::Path, what: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the verifier at {}: {e}", socket.display()))?;
    s.write_all(format!("{what}\n").as_bytes())
        .map_err(|e| format!("status request: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("status reply: {e}"))?;
    Ok(out)
}
