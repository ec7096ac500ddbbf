//! The server node: one member's decisions, sans-IO (in the shape of control-channel's
//! `Endpoint` and quinn-proto). It owns the reference [`Service`], the [`JoinAgent`], the
//! [`LoadMeter`], drain sequencing (SPEC.md §11.6) and, under VIP forward, the forwarding table
//! and the hold-back of a first claim (§11.7.1).
//!
//! Input is `handle_*` with `now` passed in: control-channel events (with the allocation the
//! endpoint committed), service datagrams, IGMP datagrams heard on the router link, timer
//! expiries, the once-a-second tick and the outcomes of what the shell carried out. Output is
//! [`Node::poll_action`] (replies, forwards and transfers through the control endpoint, host
//! changes), [`Node::poll_transmit`] (signed joins) and [`Node::poll_timeout`]. The node never
//! opens a socket, never reads the clock and never runs a command; `daemon` does.
//!
//! `now` is a [`Clock`]: every timer (join reports and refresh, holds, session idle, drain
//! timeout, forwarding linger) runs on its monotonic half; the wall clock only stamps the
//! signed joins. A step of the wall clock moves no timer (SPEC.md §9.3, "Clocks").

mod drain;
mod health;

pub use crate::health::HealthReport;
pub use crate::service::Action as ServiceAction;
pub use drain::{Drain, DrainState};

use crate::config::{Config, Mode, Strategy};
use crate::health::{CheckSpec, Exit, Health};
use crate::join_agent::JoinAgent;
use crate::load::LoadMeter;
use crate::metrics::Snapshot;
use crate::mld_agent::{Link6, MldAgent};
use crate::service::Service;
use crate::site_scope::SiteScopeTracker;
use crate::vip_forward::ForwardTable;
use control_channel::{CommittedAllocation, Event};
use igmp_ext::join::{BuildError, NONCE_LEN};
use igmp_ext::liveness::StandbyNotice;
use igmp_ext::scope::ScopeUpdate;
use igmp_ext::wire::igmp::{IgmpPacket, IgmpRepr, QueryRepr};
use igmp_ext::{AllocationEpoch, Clock, Instant, MemberId, SliceEntry, SliceSet, Slicing};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// What the node needs of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub me: MemberId,
    pub strategy: Strategy,
    pub slicing: Slicing,
    pub session_idle: Duration,
    pub max_sessions: usize,
    /// How long a new owner waits for an old owner's state (and a held claim for its old owners).
    pub hold: Duration,
    pub drain_timeout: Duration,
    /// Where other members reach this one directly (forward and handoff), announced every tick
    /// and whenever a member comes up.
    pub direct_path: Option<SocketAddr>,
    /// VIP mode: the VIP. A drain then also waits until no TCP connection to it is left.
    pub vip: Option<Ipv4Addr>,
    /// VIP mode, reset strategy: each commit hands the member's slices to the reset task.
    pub vip_reset: bool,
    /// VIP mode, forward strategy: how long a forwarding entry lives after the move. `Some`
    /// turns the forwarding table and the claim hold-back on.
    pub vip_forward_linger: Option<Duration>,
    /// The health checks (SPEC.md §11.9); none: the member is always healthy.
    pub health: Vec<CheckSpec>,
}

impl NodeConfig {
    /// The node's settings from the daemon's configuration; `direct_path` is the address other
    /// members reach us at (the shell knows the interface address).
    pub fn new(config: &Config, me: MemberId, direct_path: Option<SocketAddr>) -> NodeConfig {
        let vip = config.vip.address.filter(|_| config.mode == Mode::Vip);
        let forward = vip.is_some()
            && config.strategy == Strategy::Forward
            && config.vip.forward_overlay.is_some()
            && direct_path.is_some_and(|p| p.is_ipv4());
        NodeConfig {
            me,
            strategy: config.strategy,
            slicing: config.control_config().slicing,
            session_idle: config.session_idle(),
            max_sessions: config.service.max_sessions,
            hold: config.hold(),
            drain_timeout: config.drain_timeout(),
            direct_path,
            vip,
            vip_reset: vip.is_some() && config.strategy == Strategy::Reset,
            vip_forward_linger: forward.then(|| config.forward_linger()),
            // Checked when the configuration was loaded.
            health: config.health_checks().unwrap_or_default(),
        }
    }
}

/// What the shell must carry out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// What the service decided: a reply to a client (IPv4 or, with `group6`, IPv6), a forward
    /// to the member that holds a session, moved sessions to their new owner (a refused `SendState` is reported back with
    /// [`Node::handle_send_failed`]).
    Service(ServiceAction),
    /// Announce our direct path to the group (`Endpoint::advertise_direct_path`).
    AdvertiseDirectPath(SocketAddr),
    /// The per-unit load for the next heartbeats (`Endpoint::set_load`).
    SetLoad(Vec<(u16, u32)>),
    /// Weight 0 over the control channel (`Endpoint::drain`).
    Drain,
    /// Hold the member at weight 0 while its health checks fail, or release it
    /// (`Endpoint::set_held`; apart from `Drain`, so a release never undoes an operator's).
    Hold(bool),
    /// Run health check n (the index in [`NodeConfig::health`]) within its timeout; answered
    /// with [`Node::handle_health`].
    RunCheck(usize),
    /// VIP reset: destroy the TCP connections to the VIP whose client is outside these slices.
    ResetMoved(SliceSet),
    /// VIP forward: make the kernel forward these units' orphan segments to their old owner.
    ForwardPlan(BTreeMap<u32, MemberId>),
    /// VIP forward: a member's underlay address for the overlay (its direct path).
    ForwardPeer { member: MemberId, addr: Ipv4Addr },
    /// VIP forward: a member left; its overlay flood entry goes.
    ForwardPeerLeft(MemberId),
    /// VIP drain: count the TCP connections to the VIP, answered with
    /// [`Node::handle_vip_connections`].
    CountVipConnections(Ipv4Addr),
    /// `control.site_scope`: our site routers handed down a new scope; the group allocates
    /// only its units from now on (`Endpoint::set_scope`, SPEC.md §9.4).
    SetScope(control_channel::Scope),
}

/// The node's own counters (the shell adds joins sent, control-channel and host counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    queries: u64,
    standby_notices: u64,
    commits: u64,
    epoch: u64,
    slices: usize,
    slice_addresses: u64,
    forwarded_direct: u64,
}

/// One member's decisions. See the module documentation.
pub struct Node {
    config: NodeConfig,
    /// The session table of both families: IPv6 clients only with `group6`
    /// ([`Node::with_service6`]), in the same units mapped (SPEC.md §6.2).
    service: Service,
    agent: JoinAgent,
    /// The signed MLDv2 join for `group6`, when configured: the same claim, mapped to IPv6.
    agent6: Option<MldAgent>,
    load: LoadMeter,
    /// Uniform u64s for the report jitter of the join agent.
    random: Box<dyn FnMut() -> u64 + Send>,
    drain: Option<Drain>,
    /// While draining in VIP mode: open TCP connections to the VIP at the last count (`None`
    /// until counted, and again after the commit that empties us).
    vip_connections: Option<usize>,
    /// The last count, as the `drain_connections` gauge shows it (0 when not draining).
    vip_connections_gauge: u64,
    /// Members that announced a direct path: forwards to them take it (the endpoint chooses).
    direct_paths: BTreeSet<MemberId>,
    /// VIP forward: which units' orphan TCP segments go to which old owner.
    forward_table: Option<ForwardTable>,
    /// VIP forward: a claim held back until the old owners of its gained units are known.
    pending_claim: Option<(Vec<SliceEntry>, AllocationEpoch)>,
    /// The claim of the last commit (claimed again when health comes back after a withdrawal).
    last_claim: (Vec<SliceEntry>, AllocationEpoch),
    /// The units of the last commit this member takes if their owner fails (SPEC.md §5.5).
    standby: Vec<SliceEntry>,
    health: Health,
    /// How the health checks hold the member out (weight 0), if they do.
    health_out: Option<Exit>,
    /// The claim at the router is withdrawn: a health check says the service is dead.
    claim_withdrawn: bool,
    /// With `control.site_scope`: the site scope our routers' query notices hand down.
    site_scope: Option<SiteScopeTracker>,
    counters: Counters,
    actions: VecDeque<Action>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.config)
            .field("service", &self.service)
            .field("drain", &self.drain)
            .field("pending_claim", &self.pending_claim)
            .finish_non_exhaustive()
    }
}

/// An IGMP query inside a received IPv4 datagram, if it is one; anything else is ignored.
pub fn parse_query(datagram: &[u8]) -> Option<QueryRepr> {
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

impl Node {
    /// A node that has committed nothing yet; `agent` signs its joins, `random` jitters them.
    /// With health checks it starts held at weight 0 ([`Action::Hold`]), its checks due at `now`.
    pub fn new(
        config: NodeConfig,
        agent: JoinAgent,
        random: Box<dyn FnMut() -> u64 + Send>,
        now: Instant,
    ) -> Node {
        let service = Service::new(
            config.me,
            config.strategy,
            config.session_idle,
            config.max_sessions,
        )
        .with_hold(config.hold);
        let mut node = Node {
            service,
            agent,
            agent6: None,
            load: LoadMeter::new(config.slicing),
            random,
            drain: None,
            vip_connections: None,
            vip_connections_gauge: 0,
            direct_paths: BTreeSet::new(),
            forward_table: config
                .vip_forward_linger
                .map(|linger| ForwardTable::new(linger, config.hold)),
            pending_claim: None,
            last_claim: (Vec::new(), AllocationEpoch(0)),
            standby: Vec::new(),
            health: Health::new(config.health.clone(), now),
            health_out: None,
            claim_withdrawn: false,
            site_scope: None,
            counters: Counters::default(),
            actions: VecDeque::new(),
            config,
        };
        node.start_health();
        node
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn service(&self) -> &Service {
        &self.service
    }

    pub fn agent(&self) -> &JoinAgent {
        &self.agent
    }

    /// Also claims on `group6`: `agent6` follows every claim of the IGMPv3 agent.
    pub fn with_agent6(mut self, agent6: MldAgent) -> Node {
        self.agent6 = Some(agent6);
        self
    }

    /// Tracks the scope notices of the queries heard (`control.site_scope`, SPEC.md §3.10).
    pub fn with_site_scope(mut self, tracker: SiteScopeTracker) -> Node {
        self.site_scope = Some(tracker);
        self
    }

    /// The site scope tracker, with `control.site_scope`.
    pub fn site_scope(&self) -> Option<&SiteScopeTracker> {
        self.site_scope.as_ref()
    }

    /// The keystore's keys now, for the scope notices' router certificates.
    pub fn site_scope_mut(&mut self) -> Option<&mut SiteScopeTracker> {
        self.site_scope.as_mut()
    }

    /// Also answers IPv6 clients ([`Node::handle_datagram6`]) in the IPv6 counterparts of the
    /// committed units.
    pub fn with_service6(mut self) -> Node {
        self.service = self.service.with_ipv6();
        self
    }

    pub fn agent6(&self) -> Option<&MldAgent> {
        self.agent6.as_ref()
    }

    /// The link the MLDv2 joins go on is known or changed (DAD done, on-link prefix read).
    pub fn set_link6(&mut self, link: Link6) {
        if let Some(a) = &mut self.agent6 {
            if a.link() != Some(link) && !a.set_link(link) {
                warn!(sender = %link.sender, "not a link-local address: no MLDv2 join from it");
            }
        }
    }

    /// The next signed MLDv2 join due at `now` (a complete IPv6 datagram for IPPROTO_RAW).
    pub fn poll_transmit6(
        &mut self,
        now: Clock,
        nonce: [u8; NONCE_LEN],
    ) -> Option<Result<Vec<u8>, BuildError>> {
        self.agent6.as_mut()?.poll_transmit(now, nonce)
    }

    /// An ICMPv6 message heard on the MLD socket: queries go to the MLDv2 agent.
    pub fn handle_mld(&mut self, now: Clock, msg: &[u8]) {
        if let (Some(a), Some((group, max))) =
            (&mut self.agent6, crate::mld_agent::parse_query6(msg))
        {
            // Not in `queries` (IGMP queries heard).
            a.handle_query(now.mono, group, max, &mut self.random);
        }
    }

    /// Whether a drain is in progress.
    pub fn draining(&self) -> bool {
        self.drain.is_some()
    }

    /// The claim a VIP-forward member holds back, if any: (entries, epoch).
    pub fn held_claim(&self) -> Option<&(Vec<SliceEntry>, AllocationEpoch)> {
        self.pending_claim.as_ref()
    }

    /// Writes the node's counters into `s` (the rest of the snapshot is the shell's).
    pub fn snapshot_into(&self, s: &mut Snapshot) {
        let c = &self.counters;
        s.service = self.service.counters();
        s.service6 = self.service.counters6();
        s.sessions6 = self.service.session_count6();
        s.sessions = self.service.session_count() - s.sessions6;
        s.queries = c.queries;
        s.standby_notices = c.standby_notices;
        s.joins_trimmed = self.agent.trimmed();
        s.commits = c.commits;
        s.epoch = c.epoch;
        s.slices = c.slices;
        s.slice_addresses = c.slice_addresses;
        s.forwarded_direct = c.forwarded_direct;
        s.draining = self.drain.is_some();
        s.drain_connections = self.vip_connections_gauge;
        s.health = self.health_report();
        s.site_scope = self
            .site_scope
            .as_ref()
            .map(|t| crate::metrics::SiteScopeStatus {
                counters: t.counters().clone(),
                current: t
                    .current(self.agent.group())
                    .map(|c| (c.upper_epoch, c.unit_count())),
            });
    }

    // ---- output --------------------------------------------------------------------------

    /// The next thing to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next signed join due at `now` (a complete IPv4 datagram for the raw socket).
    pub fn poll_transmit(
        &mut self,
        now: Clock,
        nonce: [u8; NONCE_LEN],
    ) -> Option<Result<Vec<u8>, BuildError>> {
        self.agent.poll_transmit(now, nonce)
    }

    /// When [`Node::handle_timeout`] or [`Node::poll_transmit`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.service.poll_timeout(),
            self.agent.poll_timeout(),
            self.agent6.as_ref().and_then(MldAgent::poll_timeout),
            self.health.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the join agent next has a report due (after [`Node::leave`], the last of the leave).
    pub fn poll_join_timeout(&self) -> Option<Instant> {
        let six = self.agent6.as_ref().and_then(MldAgent::poll_timeout);
        self.agent.poll_timeout().into_iter().chain(six).min()
    }

    // ---- input ---------------------------------------------------------------------------

    /// A control-channel event. For `Committed`, `committed` is the allocation the endpoint
    /// follows, read right after the event: the strategies need every owner, before and after,
    /// and the event names only our slices.
    pub fn handle_event(
        &mut self,
        now: Clock,
        event: Event,
        committed: Option<&CommittedAllocation>,
    ) {
        let now = now.mono;
        match event {
            Event::Committed { id, slices, .. } => {
                info!(
                    epoch = id.epoch,
                    proposer = id.proposer,
                    slices = %slices,
                    "allocation committed"
                );
                let c = &mut self.counters;
                c.epoch = id.epoch;
                c.slices = slices.len();
                c.slice_addresses = slices.size();
                c.commits += 1;
                let entries = slices.iter().copied().map(SliceEntry::include).collect();
                let no_slices = slices.is_empty();
                // Within the committed scope, under the group's quota rule.
                self.standby = committed
                    .map(|c| c.standby(self.config.me, &[]))
                    .map(|units| units.into_iter().map(SliceEntry::include).collect())
                    .unwrap_or_default();
                if self.config.vip_reset {
                    self.actions.push_back(Action::ResetMoved(slices));
                }
                self.reallocate(now, no_slices, committed);
                self.claim_after_forwarding(now, entries, AllocationEpoch(id.epoch));
            }
            Event::MemberUp(m) => {
                info!(member = %m, "member up");
                if let Some(addr) = self.config.direct_path {
                    // The newcomer learns it now rather than at our next tick: under VIP forward
                    // its overlay has no way to us until then.
                    self.actions.push_back(Action::AdvertiseDirectPath(addr));
                }
            }
            Event::MemberDown(m) => info!(member = %m, "member down"),
            Event::ClockUntimely {
                offset_ms,
                refused_by,
            } => warn!(
                offset_ms,
                refused_by,
                "our wall clock is off our peers' beyond the timeliness window: they refuse our control messages as untimely (and a verifier whose clock agrees with theirs our joins)"
            ),
            Event::ClockTimely { offset_ms } => {
                info!(offset_ms, "our wall clock is within the timeliness window again")
            }
            Event::MemberLeft(m) | Event::MemberRevoked(m) => {
                if matches!(event, Event::MemberRevoked(_)) {
                    warn!(member = %m, "member revoked by the keystore: dropped from the control group");
                } else {
                    info!(member = %m, "member left");
                }
                // VIP forward: a member that left serves no connection any more.
                if let Some(table) = &mut self.forward_table {
                    table.member_left(m);
                    self.actions.push_back(Action::ForwardPeerLeft(m));
                }
                self.sync_vip_forward(now, None);
            }
            Event::Forwarded {
                from,
                client,
                payload,
            } => {
                // Not counted as load: the client's unit is another member's now.
                if let Some(r) = self.service.handle_forwarded(now, from, client, &payload) {
                    self.actions.push_back(Action::Service(ServiceAction::Reply(r)));
                }
            }
            Event::PreviousAllocation { id, allocation } => {
                debug!(epoch = id.epoch, "previous allocation: our new units' old owners");
                let actions = self.service.handle_previous(now, &allocation);
                self.apply(actions);
                self.sync_vip_forward(now, None);
            }
            Event::StateReceived { from, data, .. } => {
                let actions = self.service.handle_state(now, from, &data);
                self.apply(actions);
                // A member that just started learns its units' old owners from their transfers.
                self.sync_vip_forward(now, None);
            }
            Event::TransferComplete { to, transfer_id } => {
                self.service.handle_transfer_done(to, transfer_id);
            }
            Event::TransferFailed { to, transfer_id } => {
                warn!(member = %to, transfer_id, "moved sessions not delivered");
                self.service.handle_transfer_done(to, transfer_id);
            }
            Event::DirectPath { member, addr } => {
                if self.direct_paths.insert(member) {
                    info!(%member, %addr, "direct path");
                }
                // VIP forward's overlay runs between IPv4 paths (the configuration makes ours one).
                if let (Some(_), SocketAddr::V4(addr)) = (&self.forward_table, addr) {
                    self.actions.push_back(Action::ForwardPeer {
                        member,
                        addr: *addr.ip(),
                    });
                }
            }
            Event::Unsendable { message, peers } => error!(
                ?message,
                peers,
                "a control message does not fit one datagram and was not sent: a flat control group stops working at a few hundred members (heartbeats list every peer, proposals every member); split the cluster into sites"
            ),
            other => debug!(?other, "control event"),
        }
    }

    /// A datagram on the service socket.
    pub fn handle_datagram(&mut self, now: Clock, from: SocketAddrV4, payload: &[u8]) {
        let now = now.mono;
        let actions = self
            .service
            .handle_datagram(now, SocketAddr::V4(from), payload);
        self.apply(actions);
    }

    /// A datagram on the IPv6 service socket (filtered out unless [`Node::with_service6`]).
    pub fn handle_datagram6(&mut self, now: Clock, from: SocketAddrV6, payload: &[u8]) {
        let now = now.mono;
        let actions = self
            .service
            .handle_datagram(now, SocketAddr::V6(from), payload);
        self.apply(actions);
    }

    /// A datagram heard on the raw IGMP socket: queries go to the join agent, and their scope
    /// notice, if any, to the site scope tracker (judged by wall time).
    pub fn handle_igmp(&mut self, now: Clock, datagram: &[u8]) {
        if let Some(q) = parse_query(datagram) {
            self.counters.queries += 1;
            self.agent.handle_query(now.mono, &q, &mut self.random);
            if let Some(tracker) = &mut self.site_scope {
                match tracker.handle_query(now.wall, &q) {
                    Some(Ok(ScopeUpdate::Changed)) => {
                        let scope = tracker.current(self.agent.group()).cloned();
                        match scope {
                            Some(s) if s.slicing == self.config.slicing => {
                                info!(site = %s.site, upper_epoch = s.upper_epoch, units = s.unit_count(), router = %s.router, "site scope handed down");
                                self.actions
                                    .push_back(Action::SetScope(control_channel::Scope {
                                        upper_epoch: s.upper_epoch,
                                        units: s.units,
                                    }));
                            }
                            Some(s) => {
                                warn!(site = %s.site, "a site scope in another slicing than ours ({:?}) ignored", s.slicing)
                            }
                            None => {}
                        }
                    }
                    Some(Ok(update)) => debug!(?update, "scope notice kept"),
                    Some(Err(e)) => debug!(reason = %e.reason, error = %e, "scope notice refused"),
                    None => {}
                }
            }
        }
    }

    /// A datagram on the beacon socket: a router's standby notice (SPEC.md §5.5). While one for
    /// this group and the committed epoch is in force, the standby units are answered too;
    /// anything else changes nothing.
    pub fn handle_notice(&mut self, datagram: &[u8]) {
        let n = match StandbyNotice::decode(datagram) {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "standby notice ignored");
                return;
            }
        };
        if n.group != self.agent.group() || n.epoch != self.counters.epoch {
            debug!(group = %n.group, epoch = n.epoch, ours = self.counters.epoch, "standby notice for another group or epoch ignored");
            return;
        }
        self.counters.standby_notices += 1;
        let units = if n.active {
            self.standby.iter().map(|e| e.slice).collect()
        } else {
            igmp_ext::SliceSet::new()
        };
        info!(dead = %n.dead, active = n.active, "liveness: the router steers a dead member's units to their standbys");
        // One notice for both families: the router steers the IPv6 counterparts of the same
        // units here too, and the one service answers both (SPEC.md §5.5).
        self.service.stand_in(units);
        self.service.note_found_dead(n.dead, n.active);
    }

    /// Timers: the service's holds and idle sweep when due, the health checks due (joins come
    /// from `poll_transmit`).
    pub fn handle_timeout(&mut self, now: Clock) {
        let now = now.mono;
        self.start_health_checks(now);
        if self.service.poll_timeout().is_some_and(|t| t <= now) {
            let actions = self.service.handle_timeout(now);
            self.apply(actions);
            // The hold may have ended a wait for old owners: a held-back claim goes out.
            self.sync_vip_forward(now, None);
        }
    }

    /// Once a second: the idle sweep, the direct path announced again (members that arrive
    /// later learn it too), the VIP connections counted while draining, the forwarding table's
    /// linger, and the load report.
    pub fn handle_tick(&mut self, now: Clock) {
        let now = now.mono;
        let actions = self.service.handle_timeout(now);
        self.apply(actions);
        if let Some(addr) = self.config.direct_path {
            self.actions.push_back(Action::AdvertiseDirectPath(addr));
        }
        match self.config.vip.filter(|_| self.drain.is_some()) {
            Some(vip) => self.actions.push_back(Action::CountVipConnections(vip)),
            None => {
                self.vip_connections = None;
                self.vip_connections_gauge = 0;
            }
        }
        self.sync_vip_forward(now, None);
        self.load.tick();
        self.actions.push_back(Action::SetLoad(self.load.report()));
    }

    /// The shell could not send a transfer ([`ServiceAction::SendState`]): nobody waits for it.
    pub fn handle_send_failed(&mut self, to: MemberId, transfer_id: u64) {
        self.service.handle_transfer_done(to, transfer_id);
    }

    /// The answer to [`Action::CountVipConnections`] (not called when counting failed: the
    /// drain then ends at its timeout unless a later count succeeds).
    pub fn handle_vip_connections(&mut self, count: usize) {
        if self.drain.is_none() {
            return;
        }
        if self.vip_connections != Some(count) {
            info!(connections = count, "draining: VIP connections left");
        }
        self.vip_connections = Some(count);
        self.vip_connections_gauge = count as u64;
    }

    // ---- drain and leave -----------------------------------------------------------------

    /// Starts draining (SIGTERM): weight 0 over the control channel, so the next allocation
    /// moves every slice away; sessions go by the strategy, and [`Node::drain_finished`] says
    /// when the member may leave. Idempotent.
    pub fn begin_drain(&mut self, now: Clock) {
        let now = now.mono;
        if self.drain.is_some() {
            return;
        }
        info!(strategy = self.config.strategy.as_str(), "draining");
        self.drain = Some(Drain::begin(
            now,
            self.config.drain_timeout,
            self.counters.commits,
            self.counters.slices,
        ));
        self.actions.push_back(Action::Drain);
    }

    /// Whether a drain is done: no slices left, no moved session needs us any more and, in VIP
    /// mode, no TCP connection to the VIP is left on this host (pinned ones end by themselves);
    /// or the drain timeout passed.
    pub fn drain_finished(&self, now: Clock) -> bool {
        let now = now.mono;
        let Some(d) = self.drain else {
            return false;
        };
        let connections_left = self.config.vip.is_some() && self.vip_connections != Some(0);
        match d.state(now, self.service.has_moved_sessions() || connections_left) {
            DrainState::Waiting => false,
            DrainState::Done => true,
            DrainState::TimedOut => {
                warn!(
                    vip_connections_cut = self.vip_connections.unwrap_or(0),
                    "drain timeout: leaving with moved sessions or VIP connections still active"
                );
                true
            }
        }
    }

    /// Leaves the group (and a routed control group): the signed empty claim, robustness
    /// times (`poll_transmit`).
    pub fn leave(&mut self, now: Clock) {
        let now = now.mono;
        self.agent.leave_all(now, &mut self.random);
        if let Some(a) = &mut self.agent6 {
            a.leave(now, &mut self.random);
        }
    }

    // ---- inside --------------------------------------------------------------------------

    /// Queues the service's actions; answered datagrams count as load, forwards over a known
    /// direct path as direct.
    fn apply(&mut self, actions: Vec<ServiceAction>) {
        for action in actions {
            match &action {
                // The per-unit load the coordinator balances by: datagrams answered.
                ServiceAction::Reply(r) => match r.to {
                    SocketAddr::V4(c) => self.load.record(*c.ip()),
                    SocketAddr::V6(_) => {
                        if let Some(unit) = self.service.unit_of(&r.to) {
                            self.load.record_unit(unit);
                        }
                    }
                },
                ServiceAction::Forward { to, .. } if self.direct_paths.contains(to) => {
                    self.counters.forwarded_direct += 1;
                }
                _ => {}
            }
            self.actions.push_back(Action::Service(action));
        }
    }

    /// A commit: the drain notes it, the service compares the new owners with the previous ones.
    fn reallocate(
        &mut self,
        now: Instant,
        no_slices: bool,
        committed: Option<&CommittedAllocation>,
    ) {
        if let Some(d) = &mut self.drain {
            d.on_commit(no_slices);
            if no_slices {
                // A count from before this commit may miss a connection that came meanwhile.
                self.vip_connections = None;
            }
        }
        if let Some(c) = committed {
            let members: Vec<MemberId> = c.members().into_iter().map(|(m, _)| m).collect();
            let actions = self
                .service
                .handle_commit(now, c.id().epoch, &members, &c.allocation);
            self.apply(actions);
            self.sync_vip_forward(now, Some(&members));
        }
    }

    /// VIP forward: brings the forwarding table up to date with what the service knows of
    /// gained units (after a commit, a transfer, a hold and once a tick for the linger), asks
    /// the shell to make the kernel follow it, and releases a held claim once the old owners
    /// are known. `listed`: the members of a new commit.
    fn sync_vip_forward(&mut self, now: Instant, listed: Option<&[MemberId]>) {
        let Some(table) = &mut self.forward_table else {
            return;
        };
        table.note_gains(now, self.service.gains_from_members());
        if let Some(listed) = listed {
            table.note_members(now, listed);
        }
        table.expire(now);
        // The executor changes the kernel only when the plan differs from the last one.
        self.actions.push_back(Action::ForwardPlan(table.plan()));
        if self.pending_claim.is_some() && !self.service.awaits_old_owners() {
            if let Some((entries, epoch)) = self.pending_claim.take() {
                info!(epoch = epoch.0, "VIP forward: old owners known, claiming");
                self.claim(now, entries, epoch);
            }
        }
    }

    /// Claims the slices of a commit, except under VIP forward while a gained unit's old owner
    /// is unknown (this member's first commit): the router would send that unit's established
    /// connections here before the forwarding exists, and this host would answer them RST.
    /// Held back, the unit has no owner at the router for that while (its segments are dropped,
    /// and TCP resends them); released by `sync_vip_forward` once the transfers named the old
    /// owners or the hold time passed.
    fn claim_after_forwarding(
        &mut self,
        now: Instant,
        entries: Vec<SliceEntry>,
        epoch: AllocationEpoch,
    ) {
        if self.forward_table.is_some() && self.service.awaits_old_owners() {
            debug!(
                epoch = epoch.0,
                "VIP forward: claim held until the old owners are known"
            );
            self.pending_claim = Some((entries, epoch));
            return;
        }
        self.pending_claim = None;
        self.claim(now, entries, epoch);
    }

    /// Hands a commit's claim to the join agent; while a health check says the service is
    /// dead, an empty claim at the commit's epoch (SPEC.md §11.9).
    fn claim(&mut self, now: Instant, entries: Vec<SliceEntry>, epoch: AllocationEpoch) {
        self.last_claim = (entries.clone(), epoch);
        let entries = if self.claim_withdrawn {
            Vec::new()
        } else {
            entries
        };
        let standby = self.standby.clone();
        if let Some(a) = &mut self.agent6 {
            a.set_claim(now, &entries, &standby, epoch, &mut self.random);
        }
        self.agent
            .set_claim(now, entries, standby, epoch, &mut self.random);
    }
}

#[cfg(test)]
mod tests;
