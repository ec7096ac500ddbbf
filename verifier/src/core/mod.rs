//! The router core, sans-IO: the join verifier, the querier, admission and data-plane
//! planning in one state machine, in the shape of control-channel's `Endpoint`. Bytes, upcalls,
//! timeouts and requests go in with `now` (`handle_*`); queries to send, kernel ops and events
//! come out (`poll_*`). It never opens a socket, runs a command or reads the clock: the daemon
//! does, and reports each op's outcome back ([`Router::handle_op_result`]).
//!
//! `now` is a [`Clock`] (a bare `Timestamp` stands for both clocks, for tests): every timer
//! (claim expiry, the querier, the flood limits, the planners' idle and retry times, the adopt
//! grace) runs on its monotonic half; the wall clock judges the timeliness of signed joins and
//! the validity of certificates, keys and the replay cache. A step of the wall clock moves no
//! timer (SPEC.md §9.3, "Clocks").

mod admit;
mod announce;
#[cfg(test)]
mod announce_tests;
#[cfg(test)]
mod attack_tests;
mod control;
mod event;
#[cfg(test)]
mod flood_tests;
mod liveness;
mod liveness6;
#[cfg(test)]
mod liveness6_tests;
#[cfg(test)]
mod liveness_tests;
mod mld;
#[cfg(test)]
mod mld_flood_tests;
mod mld_querier;
pub mod site;
mod status;
#[cfg(test)]
pub(super) mod tests;
mod upkeep;
mod vip6;
#[cfg(test)]
mod vip6_tests;
pub use announce::{AnnounceConfig, Withdrawn};
pub use event::Event;
pub use liveness::{LivenessConfig, Notice};
pub use mld_querier::Transmit6;

use crate::admission::{Admission, AdmissionConfig, Family, Pending};
use crate::plan::mfc::{MfcPlanner, Probed, Upcall, IGMPMSG_NOCACHE};
use crate::plan::netdev::KernelCounters;
use crate::plan::netdev::NetdevPlanner;
use crate::plan::vip::{VipPlanner, VipSpec};
use crate::plan::{
    Change, DataplaneOp, GapPolicy, Interface, PlanError, Planner, View, VifSet, VifTable,
};
use crate::querier::{self, HeardQuery, Querier, QuerierConfig};
use core::time::Duration;
use igmp_ext::verify::{Candidate, LinkTable, Prechecked, Rejection};
use igmp_ext::wire::igmp::{IgmpRepr, QueryRepr};
use igmp_ext::wire::ipv4::Ipv4Packet;
use igmp_ext::{
    Accepted, Clock, Instant, JoinVerifier, KeySource, MemberId, Reason, Timestamp, VerifierConfig,
};
use serde::Deserialize;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use tracing::{debug, info};

/// The core's timer period: querier timers, claim expiry and a slice of the idle sweep.
pub const TICK: Duration = Duration::from_millis(100);
/// Refusals of joins whose signature verified: charged to the member's budget, not to the
/// source's and interface's failure budgets (SPEC.md §5.4).
const AUTHENTICATED_REFUSALS: [Reason; 4] = [
    Reason::OutsideCertificate,
    Reason::StaleEpoch,
    Reason::SliceConflict,
    Reason::ReplayCacheFull,
];
/// Entries the idle sweep looks at per tick at least.
const SWEEP_MIN_BUDGET: usize = 64;

/// `now` for the querier, the flood limits and the planners: the monotonic time as the
/// `Timestamp` they keep their times in. They only compare and subtract their own readings,
/// so a step of the wall clock moves none of their timers.
fn timers(now: Clock) -> Timestamp {
    Timestamp(now.mono.as_millis())
}

/// How native mode reaches the kernel, as configured (`native.dataplane`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    /// The multicast routing socket when the kernel has it, else nft.
    #[default]
    Auto,
    /// The multicast routing socket: upcalls and MFC entries.
    Mroute,
    /// An nftables netdev table (kernels without CONFIG_IP_MROUTE).
    Nft,
}

/// The data plane native mode runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeDataplane {
    Mroute,
    Nft,
}

/// Why the multicast routing socket could not be opened (MRT_INIT): the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MrtInitError {
    /// ENOPROTOOPT: the kernel was built without multicast routing.
    #[error(
        "this kernel has no multicast routing (CONFIG_IP_MROUTE): \
         set native.dataplane = \"nft\" (or \"auto\")"
    )]
    Unsupported,
    /// EADDRINUSE: one MRT socket per namespace, and another process has it.
    #[error("another multicast routing daemon holds this namespace's MRT socket")]
    Busy,
    #[error("cannot open the multicast routing socket (MRT_INIT): {0}")]
    Other(String),
}

impl Dataplane {
    /// Whether the daemon should try MRT_INIT before [`Dataplane::decide`].
    pub fn tries_mroute(self) -> bool {
        self != Dataplane::Nft
    }

    /// The data plane to run on, given what MRT_INIT did when it was tried (`None`: not
    /// tried). `auto` falls back to nft only on a kernel without multicast routing; any other
    /// refusal stops the start.
    pub fn decide(
        self,
        mrt_init: Option<Result<(), MrtInitError>>,
    ) -> Result<NativeDataplane, MrtInitError> {
        match (self, mrt_init) {
            (Dataplane::Nft, _) | (_, None) => Ok(NativeDataplane::Nft),
            (_, Some(Ok(()))) => Ok(NativeDataplane::Mroute),
            (Dataplane::Auto, Some(Err(MrtInitError::Unsupported))) => Ok(NativeDataplane::Nft),
            (_, Some(Err(e))) => Err(e),
        }
    }
}

/// The core's settings (built from the config file by `Config::router_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    pub verifier: VerifierConfig,
    pub querier: QuerierConfig,
    /// Who gets signature checks, and how many (SPEC.md §5.4).
    pub admission: AdmissionConfig,
    pub gap: GapPolicy,
    pub route_plain_groups: bool,
    pub idle_timeout: Duration,
    pub adopt_grace: Duration,
    pub keep_kernel_state: bool,
    pub vips: Vec<VipSpec>,
    /// IPv6 VIPs, bound to protected IPv6 groups (SPEC.md §10.3.1).
    pub vips6: Vec<crate::plan::vip6::Vip6Spec>,
    /// Beacons and standby claims (SPEC.md §5.5).
    pub liveness: LivenessConfig,
    /// Routes held for a routing daemon to announce (SPEC.md §10.6).
    pub announce: AnnounceConfig,
    /// Control groups carried for verified members (SPEC.md §10.7).
    pub control_groups: Vec<Ipv4Addr>,
    /// IPv6 groups that need signed MLDv2 joins (SPEC.md §5.6); empty: no MLD at all.
    pub protected6: Vec<igmp_ext::Slice6>,
}

/// An MFC entry found in the kernel at start (left by an earlier verifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundEntry {
    pub group: Ipv4Addr,
    pub source: Ipv4Addr,
    pub parent: u16,
    pub oifs: VifSet,
}

/// What the daemon found and set up in the kernel before the core starts.
#[derive(Debug, Clone)]
pub struct KernelSetup {
    pub dataplane: NativeDataplane,
    pub interfaces: Vec<Interface>,
    /// Every subnet on each interface, for the proper-link check.
    pub links: LinkTable,
    /// Our interfaces' VIFs an earlier verifier left, reused (MFC data plane).
    pub adopted_vifs: Vec<u16>,
    /// MFC entries in the kernel (MFC data plane).
    pub mfc_entries: Vec<FoundEntry>,
    /// Whether an earlier verifier left the native nft table (nft data plane).
    pub netdev_table_left: bool,
    /// Whether an earlier verifier left the VIP table.
    pub vip_table_left: bool,
    /// Whether an earlier verifier left the control groups' table.
    pub control_table_left: bool,
    /// Whether an earlier verifier left the IPv6 native table (`manycast6`).
    pub netdev6_table_left: bool,
    /// Whether an earlier verifier left the IPv6 VIP table (`manycast_vip6`).
    pub vip6_table_left: bool,
    /// Interfaces whose allmulticast flag is ours to turn off at a clean shutdown.
    pub allmulti: Vec<String>,
}

/// A query to send on `ifindex`: a whole IPv4 datagram (header with router alert, TTL 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub ifindex: u32,
    pub dst: Ipv4Addr,
    pub datagram: Vec<u8>,
}

/// An IGMP message as a whole IPv4 datagram (RFC 3376 §4: TTL 1, Router Alert, IP precedence
/// of internetwork control), from `src` to `dst`: the verifier's queries, and in tests what
/// hosts and other routers send.
pub(crate) fn igmp_datagram(src: Ipv4Addr, dst: Ipv4Addr, igmp: IgmpRepr) -> Vec<u8> {
    let mut message = vec![0u8; igmp.buffer_len()];
    igmp.emit(&mut message);
    igmp_ext::join::igmp_datagram(src, dst, &message)
}

/// What the daemon read or did outside the core, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The nft data plane's packet counters: what the tables it replaced counted plus the
    /// current one.
    pub native_counters: KernelCounters,
    /// Queries the sockets accepted.
    pub queries_sent: u64,
}

/// Which data plane a plan failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    Native,
    Vip,
}

/// Requests from the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Start serving: query every interface at once (members re-announce without waiting),
    /// run the timers and write the data planes for the ownership known so far.
    Start,
    /// Clean shutdown: withdraw what this verifier put in the kernel, unless configured to
    /// keep it for the next verifier.
    Shutdown,
}

#[derive(Debug)]
enum Native {
    Mfc(MfcPlanner),
    Nft(NetdevPlanner),
}

#[derive(Debug, Default)]
struct Stats {
    joins_accepted: u64,
    plain_accepted: u64,
    queries_ignored: u64,
    /// Times a group was asked to report again after claims were dropped under it.
    group_reasks: u64,
    claims_left_out: u64,
    claims_held_unverified: u64,
    socket_drops: u64,
    mld_socket_drops: u64,
    upcalls: u64,
    upcalls_this_second: u64,
    upcalls_last_second: u64,
    second: u64,
    mfc_installs: u64,
    nft_transactions: u64,
    kernel_errors: u64,
}

/// The router-side verifier as a state machine.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    verifier: JoinVerifier,
    querier: Querier,
    admission: Admission,
    interfaces: Vec<Interface>,
    vifs: VifTable,
    native: Native,
    vip: VipPlanner,
    adopted_vifs: Vec<u16>,
    allmulti: Vec<String>,
    adopt_until: Option<Instant>,
    next_tick: Instant,
    stats: Stats,
    transmits: VecDeque<Transmit>,
    ops: VecDeque<DataplaneOp>,
    events: VecDeque<Event>,
    liveness: liveness::Liveness,
    announcer: announce::Announcer,
    control: crate::plan::control::ControlPlane,
    mld: mld::MldPath,
    vip6: crate::plan::vip6::Vip6Planner,
    /// An earlier verifier's IPv6 VIP table steers (and pins) until the adopt grace ends; with
    /// none left, the table is written from the first join, as the IPv4 VIP's is.
    vip6_held: bool,
}

impl Router {
    /// The core for `setup`, at `now`: what an earlier verifier left is adopted and kept as it
    /// is for the adopt grace.
    pub fn new(now: impl Into<Clock>, config: RouterConfig, setup: KernelSetup) -> Self {
        let clock: Clock = now.into();
        let now = timers(clock);
        let mut verifier = JoinVerifier::new(config.verifier.clone(), setup.links);
        let left = setup.control_table_left;
        let control = control::plane(&config, &setup.interfaces, left, &mut verifier);
        let mut querier = Querier::new(config.querier.clone());
        let mut vifs = VifTable::default();
        for i in &setup.interfaces {
            querier.add_interface(now, i.ifindex, i.addr);
            vifs.insert(i.ifindex, i.vif);
        }
        let mut adopted = 0;
        let vip6 = crate::plan::vip6::Vip6Planner::new(
            config.vips6.clone(),
            setup.interfaces.iter().map(|i| i.name.clone()).collect(),
        );
        let native = match setup.dataplane {
            NativeDataplane::Mroute => {
                let mut mfc = MfcPlanner::new();
                for e in setup.mfc_entries {
                    // With plain groups not routed, their entries are not ours.
                    if !config.route_plain_groups && !verifier.is_protected(e.group) {
                        continue;
                    }
                    mfc.adopt(now, e.source, e.group, e.parent, e.oifs);
                    adopted += 1;
                }
                Native::Mfc(mfc)
            }
            NativeDataplane::Nft => {
                // A table an earlier verifier left keeps forwarding until members have answered.
                adopted += usize::from(setup.netdev_table_left);
                let devices = setup.interfaces.iter().map(|i| i.name.clone()).collect();
                Native::Nft(NetdevPlanner::new(devices, setup.netdev_table_left))
            }
        };
        // Likewise the VIP table: its steering stays until the grace ends.
        let vip_held = setup.vip_table_left && !config.vips.is_empty();
        adopted += usize::from(vip_held);
        let vip6_held = setup.vip6_table_left && !config.vips6.is_empty();
        adopted += usize::from(vip6_held);
        // And the IPv6 table, when IPv6 groups are still ours to steer.
        let mut mld = mld::MldPath::new(&config.verifier, &config.querier, &config.protected6);
        if setup.netdev6_table_left && !config.protected6.is_empty() {
            mld.adopt_table6(setup.interfaces.iter().map(|i| i.name.clone()).collect());
            adopted += 1;
        }
        let mut events = VecDeque::new();
        if adopted > 0 || !setup.adopted_vifs.is_empty() {
            events.push_back(Event::Adopted {
                entries: adopted,
                vifs: setup.adopted_vifs.len(),
            });
        }
        Router {
            verifier,
            querier,
            admission: Admission::new(config.admission, now),
            interfaces: setup.interfaces,
            vifs,
            native,
            vip: VipPlanner::new(&config.vips).holding(vip_held),
            adopted_vifs: setup.adopted_vifs,
            allmulti: setup.allmulti,
            adopt_until: Some(clock.mono.saturating_add(config.adopt_grace)),
            next_tick: clock.mono,
            stats: Stats::default(),
            transmits: VecDeque::new(),
            ops: VecDeque::new(),
            events,
            liveness: Default::default(),
            announcer: Default::default(),
            control,
            mld,
            vip6,
            vip6_held,
            config,
        }
    }

    pub fn dataplane(&self) -> NativeDataplane {
        match self.native {
            Native::Mfc(_) => NativeDataplane::Mroute,
            Native::Nft(_) => NativeDataplane::Nft,
        }
    }

    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// An interface's name for logs (`if<N>` for one we do not serve).
    pub fn ifname(&self, ifindex: u32) -> String {
        self.interfaces
            .iter()
            .find(|i| i.ifindex == ifindex)
            .map(|i| i.name.clone())
            .unwrap_or_else(|| format!("if{ifindex}"))
    }

    pub fn verifier(&self) -> &JoinVerifier {
        &self.verifier
    }

    pub fn querier(&self) -> &Querier {
        &self.querier
    }

    /// One IGMP datagram (IPv4 header included) received on `ifindex` (`None`: unknown): a
    /// burst of one ([`Router::handle_burst`]).
    pub fn handle_datagram(
        &mut self,
        now: impl Into<Clock>,
        ifindex: Option<u32>,
        datagram: &[u8],
        keys: &dyn KeySource,
    ) {
        self.handle_burst(now, &[(ifindex, datagram)], keys);
    }

    /// IGMP datagrams (IPv4 headers included) that arrived together, each with its interface
    /// (`None`: unknown). Our own queries and datagrams from interfaces we do not serve are
    /// ignored. Every other one gets the cheap checks at once (SPEC.md §5 and §5.4); signed
    /// joins that pass them queue for verification, and as many as the verification budget
    /// allows, by priority, are verified in one batch before this returns.
    pub fn handle_burst(
        &mut self,
        now: impl Into<Clock>,
        datagrams: &[(Option<u32>, &[u8])],
        keys: &dyn KeySource,
    ) {
        let clock: Clock = now.into();
        let now = timers(clock);
        for &(ifindex, datagram) in datagrams {
            let src = datagram
                .get(12..16)
                .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            if src.is_some_and(|src| self.interfaces.iter().any(|i| i.addr == src)) {
                continue; // our own query
            }
            let Some(ifindex) = ifindex.filter(|&i| self.interfaces.iter().any(|f| f.ifindex == i))
            else {
                continue;
            };
            match self.verifier.precheck(clock.wall, ifindex, datagram, keys) {
                Ok(Prechecked::Plain { message, .. }) => {
                    self.plain(now, ifindex, Some(datagram), message)
                }
                Ok(Prechecked::Candidate(c)) => self.admit(clock, Pending::Igmp(c)),
                Err(rej) => self.rejected(now, ifindex, rej),
            }
        }
        self.verify_round(clock);
        // A new listener opens its plain groups' entries now, not at the next tick.
        self.querier_events(now);
    }

    /// Plain IGMP the verifier accepted; `datagram` (its IPv4 header) is needed to judge a query.
    fn plain(&mut self, now: Timestamp, ifindex: u32, datagram: Option<&[u8]>, message: IgmpRepr) {
        self.stats.plain_accepted += 1;
        if let IgmpRepr::Query(query) = &message {
            match datagram {
                Some(d) => self.heard_query(now, ifindex, d, query),
                // Only signed reports are verified in rounds; a query never comes back from one.
                None => self.stats.queries_ignored += 1,
            }
            return;
        }
        let q = &mut self.querier;
        match &message {
            IgmpRepr::Query(_) => {}
            IgmpRepr::V3Report(r) => q.handle_records(now, ifindex, &r.records),
            IgmpRepr::V1Report { group } | IgmpRepr::V2Report { group } => {
                q.handle_membership(now, ifindex, *group)
            }
            IgmpRepr::V2Leave { group } => q.handle_leave(now, ifindex, *group),
        }
    }

    /// A refusal is charged to its source and interface (their failure budgets), then reported.
    fn rejected(&mut self, now: Timestamp, ifindex: u32, rej: Rejection) {
        let source = rej.sender.map(Into::into);
        self.admission
            .charge_failure(now, Family::Igmp, ifindex, source);
        self.report(ifindex, rej);
    }

    fn report(&mut self, ifindex: u32, rej: Rejection) {
        self.events.push_back(Event::Rejected {
            reason: rej.reason,
            sender: rej.sender,
            ifindex,
            detail: rej.detail,
        });
    }

    /// An upcall from the kernel's multicast routing (MFC data plane): a new (S,G) gets its
    /// entry toward its target.
    pub fn handle_upcall(&mut self, now: impl Into<Clock>, up: Upcall) {
        let now = timers(now.into());
        if up.msgtype != IGMPMSG_NOCACHE {
            debug!(?up, "upcall ignored");
            return;
        }
        let target = self.view().target(up.group, up.source);
        let Native::Mfc(mfc) = &mut self.native else {
            debug!(?up, "upcall without the MFC data plane ignored");
            return;
        };
        self.stats.upcalls += 1;
        self.stats.upcalls_this_second += 1;
        let op = mfc.upcall(now, up.source, up.group, up.vif, target, &self.vifs);
        debug!(source = %up.source, group = %up.group, ?target, "upcall");
        self.push_ops([op]);
    }

    /// Runs every timer due at `now`: queries, listener and claim expiry, the end of the adopt
    /// grace, the once-a-second work and a slice of the idle sweep.
    pub fn handle_timeout(&mut self, now: impl Into<Clock>) {
        let clock: Clock = now.into();
        let now = timers(clock);
        self.next_tick = clock.mono.saturating_add(TICK);
        // Candidates the budget left waiting get the capacity refilled since.
        self.verify_round(clock);
        self.run_querier(now);
        self.expire_mld(clock);
        let expired = self.verifier.expire(clock);
        let any_expired = !expired.is_empty();
        if any_expired {
            self.sync_liveness(clock);
        }
        for change in expired {
            self.ask_again(now, change.group);
            self.events.push_back(Event::ClaimsExpired {
                group: change.group,
                lost: change.lost,
            });
            self.replan(now, Change::Ownership(change.group));
        }
        if any_expired {
            // The re-asks go out in this turn, not at the next tick.
            self.run_querier(now);
        }
        if self.adopt_until.is_some_and(|t| clock.mono >= t) {
            self.adopt_until = None;
            self.vip6_held = false;
            self.replan(now, Change::Settle);
            self.replan(now, Change::Ownership(None));
            self.settle6();
            self.replan_vip6(now);
        }
        let second = now.as_millis() / 1000;
        if second != self.stats.second {
            self.replan(now, Change::Retry);
            self.stats.upcalls_last_second = self.stats.upcalls_this_second;
            self.stats.upcalls_this_second = 0;
            self.stats.second = second;
        }
        self.sweep_idle();
        self.check_liveness(clock);
        self.control_tick(clock);
    }

    /// Each tick probes a slice of the MFC entries, sized so that every entry is looked at at
    /// least every quarter of the idle timeout. Reading `/proc/net/ip_mr_cache` instead costs
    /// time quadratic in the table (10 s for 100,000 entries) and blocked upcalls meanwhile.
    fn sweep_idle(&mut self) {
        let Native::Mfc(mfc) = &mut self.native else {
            return;
        };
        let idle_ms = self.config.idle_timeout.as_millis() as u64;
        let rounds = (idle_ms / 4 / TICK.as_millis() as u64).max(1) as usize;
        let budget = mfc.len().div_ceil(rounds).max(SWEEP_MIN_BUDGET);
        let keys = mfc.probe(budget);
        if !keys.is_empty() {
            self.ops.push_back(DataplaneOp::MfcProbe(keys));
        }
    }

    /// The kernel's packet counters for an [`DataplaneOp::MfcProbe`]: `Ok(None)` when the
    /// kernel has no such entry, `Err(())` when it could not be read (counted as a kernel
    /// error; the entry stays).
    pub fn handle_mfc_counters(&mut self, now: impl Into<Clock>, counts: Vec<Probed>) {
        let now = timers(now.into());
        let Native::Mfc(mfc) = &mut self.native else {
            return;
        };
        let errors = &mut self.stats.kernel_errors;
        let counts = counts.into_iter().map(|p| {
            // Unknown, not gone: counts as a move, so the entry stays.
            let packets = p.packets.unwrap_or_else(|()| {
                *errors += 1;
                Some(u64::MAX)
            });
            ((p.group, p.source), packets)
        });
        let ops = mfc.counted(now, self.config.idle_timeout, counts.collect::<Vec<_>>());
        self.push_ops(ops);
    }

    pub fn handle_request(&mut self, now: impl Into<Clock>, request: Request) {
        let clock: Clock = now.into();
        let now = timers(clock);
        match request {
            Request::Start => {
                self.clear_stale_announcements();
                self.querier.query_now(now);
                self.queue_queries();
                self.handle_timeout(clock);
                self.replan(now, Change::Ownership(None));
            }
            Request::Shutdown => self.shutdown(),
        }
    }

    /// The executor's outcome of an op from [`Router::poll_op`].
    pub fn handle_op_result(&mut self, op: &DataplaneOp, ok: bool) {
        match op {
            DataplaneOp::MfcInstall(_) | DataplaneOp::MfcRemove(_) if !ok => {
                self.stats.kernel_errors += 1;
            }
            DataplaneOp::NetdevTable(_) | DataplaneOp::Vip(_) | DataplaneOp::ControlTable(_) => {
                if ok {
                    self.stats.nft_transactions += 1;
                } else {
                    self.stats.kernel_errors += 1;
                }
                self.native_planner().completed(op, ok);
                self.vip.completed(op, ok);
                self.control.completed(op, ok);
                if matches!(op, DataplaneOp::Vip(_)) {
                    self.note_vip_write(ok);
                    self.update_announcements();
                }
            }
            DataplaneOp::Netdev6Table(_) => self.netdev6_completed(op, ok),
            DataplaneOp::Vip6Table(_) => self.vip6_completed(op, ok),
            DataplaneOp::Announce { vip, on, .. } if !ok => {
                self.stats.kernel_errors += 1;
                // Not held: the next update tries again (at the latest at the next key check).
                self.announcement_failed(*vip, *on);
            }
            _ => {}
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_op(&mut self) -> Option<DataplaneOp> {
        self.ops.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Router::handle_timeout`] is next due, on monotonic time.
    pub fn poll_timeout(&self) -> Instant {
        self.liveness_deadline()
            .map_or(self.next_tick, |d| d.min(self.next_tick))
    }

    fn native_planner(&mut self) -> &mut dyn Planner {
        match &mut self.native {
            Native::Mfc(p) => p,
            Native::Nft(p) => p,
        }
    }

    fn view(&self) -> View<'_> {
        View {
            verifier: &self.verifier,
            querier: &self.querier,
            interfaces: &self.interfaces,
            vifs: &self.vifs,
            failover: self.liveness.view(),
            gap: self.config.gap,
            route_plain: self.config.route_plain_groups,
        }
    }

    /// Every data plane follows `change`: the native one first, then VIP.
    fn replan(&mut self, now: Timestamp, change: Change) {
        let Router {
            verifier,
            querier,
            interfaces,
            vifs,
            config,
            native,
            vip,
            liveness,
            ..
        } = self;
        let view = View {
            verifier,
            querier,
            interfaces,
            vifs,
            failover: liveness.view(),
            gap: config.gap,
            route_plain: config.route_plain_groups,
        };
        let native: &mut dyn Planner = match native {
            Native::Mfc(p) => p,
            Native::Nft(p) => p,
        };
        let mut ops = Vec::new();
        let failed = native.plan(now, &view, change, &mut ops);
        let failed = failed.into_iter().map(|f| (PlanKind::Native, f));
        let vip_failed = vip.plan(now, &view, change, &mut ops);
        let failed = failed.chain(vip_failed.into_iter().map(|f| (PlanKind::Vip, f)));
        for (kind, f) in failed.collect::<Vec<_>>() {
            // The only plan error left: a claim left out, the rest applied (issue 13, item 9).
            let PlanError::ClaimLeftOut { .. } = f.error;
            self.stats.claims_left_out += 1;
            self.events.push_back(Event::PlanFailed {
                kind,
                group: f.group,
                error: f.error,
            });
        }
        // One ownership change: the executor times its ops together (`repoint_us`).
        if matches!(change, Change::Ownership(_)) && !ops.is_empty() {
            ops.insert(0, DataplaneOp::Repoint { ops: ops.len() });
        }
        self.push_ops(ops);
        self.update_announcements();
    }

    fn push_ops(&mut self, ops: impl IntoIterator<Item = DataplaneOp>) {
        for op in ops {
            if matches!(op, DataplaneOp::MfcInstall(_)) {
                self.stats.mfc_installs += 1;
            }
            self.ops.push_back(op);
        }
    }

    /// A plain query the verifier accepted: the querier decides, from its IPv4 header, whether
    /// it counts (issue 13, item 8); one that does not is counted and logged at debug.
    fn heard_query(&mut self, now: Timestamp, ifindex: u32, datagram: &[u8], query: &QueryRepr) {
        let Ok(ip) = Ipv4Packet::new_checked(datagram) else {
            return; // the verifier parsed it already
        };
        let src = ip.src_addr();
        let heard = HeardQuery {
            src,
            dst: ip.dst_addr(),
            ttl: ip.ttl(),
            router_alert: ip.router_alert(),
            on_link: self.verifier.links().on_link(ifindex, src),
            protected: self.verifier.is_protected(query.group),
            query,
        };
        if let Err(why) = self.querier.handle_query(now, ifindex, &heard) {
            self.stats.queries_ignored += 1;
            debug!(%src, ifindex, ?why, "query ignored");
        }
    }

    fn querier_events(&mut self, now: Timestamp) {
        while let Some(e) = self.querier.poll_event() {
            match e {
                querier::Event::RoleChanged { ifindex, role } => {
                    self.events.push_back(Event::RoleChanged { ifindex, role });
                }
                querier::Event::GroupJoined { ifindex, group } => {
                    self.events.push_back(Event::GroupJoined { ifindex, group });
                    self.replan(now, Change::Listeners(group));
                }
                querier::Event::GroupExpired { ifindex, group } => {
                    self.events
                        .push_back(Event::GroupExpired { ifindex, group });
                    self.replan(now, Change::Listeners(group));
                }
            }
        }
    }

    /// The querier's due timers, its queries and its events.
    fn run_querier(&mut self, now: Timestamp) {
        self.querier.handle_timeout(now);
        self.queue_queries();
        self.querier_events(now);
    }

    /// Claims of `group` were dropped without their members asking: its members are asked to
    /// report again now, so that joins the dropped claims refused are heard within 100 ms
    /// (SPEC.md §5.4). The queries go out at the caller's next `run_querier`.
    fn ask_again(&mut self, now: Timestamp, group: Option<Ipv4Addr>) {
        if let Some(group) = group {
            if self.querier.ask_again(now, group) {
                self.stats.group_reasks += 1;
            }
        }
    }

    /// The querier's queries as whole datagrams (RFC 3376 §4: TTL 1, router alert, IP
    /// precedence of internetwork control).
    fn queue_queries(&mut self) {
        while let Some(t) = self.querier.poll_transmit() {
            let datagram = igmp_datagram(t.src, t.dst, IgmpRepr::Query(t.query));
            self.transmits.push_back(Transmit {
                ifindex: t.ifindex,
                dst: t.dst,
                datagram,
            });
        }
    }

    /// Withdraws everything in the order the kernel needs: the native table and allmulticast,
    /// the MFC entries, the VIFs and what an earlier verifier left on them, VIP steering, and
    /// multicast routing itself.
    fn shutdown(&mut self) {
        // Even when the steering stays: a router whose verifier stopped attracts no traffic.
        self.stop_announcing();
        if self.config.keep_kernel_state {
            self.events.push_back(Event::KernelStateKept);
            return;
        }
        let mut ops = Vec::new();
        let mrt = matches!(self.native, Native::Mfc(_));
        if let Native::Nft(nd) = &mut self.native {
            nd.withdraw(&mut ops);
        }
        for ifname in std::mem::take(&mut self.allmulti) {
            ops.push(DataplaneOp::SetAllmulti { ifname, on: false });
        }
        if let Native::Mfc(mfc) = &mut self.native {
            mfc.withdraw(&mut ops);
            ops.extend(self.interfaces.iter().map(|i| DataplaneOp::DelVif(i.vif)));
            ops.push(DataplaneOp::MfcRemoveLeftovers {
                parents: self.adopted_vifs.clone(),
            });
        }
        self.vip.withdraw(&mut ops);
        self.control.withdraw(&mut ops);
        self.withdraw6(&mut ops);
        self.withdraw_vip6(&mut ops);
        if mrt {
            ops.push(DataplaneOp::MrtDone);
        }
        self.push_ops(ops);
    }
}
