//! The sans-IO protocol core (SPEC.md §9): one member's view of the control group. It never opens
//! a socket and never reads a clock; the driver (or the simulator) passes `now` (a [`Clock`]:
//! monotonic for timers, wall only for signed timestamps) and bytes in and takes datagrams, timer
//! deadlines and events out, as quinn-proto does.
//!
//! This module holds the state and the handle_*/poll_* surface; each concern extends
//! [`Endpoint`] in its own child module: `receive` (checks and dispatch), `membership`
//! (hellos, leave, drain), `failure` (heartbeats, liveness), `agreement` (the decision rule,
//! commits), `requests` (operator requests), `forwarding` (forwarded packets, direct paths),
//! `transfer` (state queries and chunked transfer), `clock` (whose wall clock is off),
//! `scope` (the units and sites the quotas follow) and `sending` (headers, signatures,
//! destinations). `event`, `counters` and `proposal` are leaves of plain data and pure functions.

mod agreement;
mod clock;
mod counters;
mod event;
mod failure;
mod forwarding;
mod membership;
mod proposal;
mod receive;
mod requests;
mod scope;
mod sending;
mod transfer;

pub use counters::{Counters, DropReason};
pub use event::{Event, RequestOutcome, RequestRefusal, UNSENDABLE_REPORT_EVERY};
pub use proposal::{
    move_units, proposal_allocation, proposal_digest, proposal_for, quotas_honoured,
    validate_proposal, CommittedAllocation, MAX_MEMBERS, NO_OWNER,
};
pub use scope::ScopeError;

use crate::replay::ReplayWindow;
use crate::time::{Clock, Instant};
use crate::wire::EpochId;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use igmp_ext::ed25519_dalek::{SigningKey, VerifyingKey};
use igmp_ext::{KeyId, MemberCertificate, MemberId, Slicing, Timestamp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Default of [`Config::max_weight`].
pub const DEFAULT_MAX_WEIGHT: u32 = 16;

/// Settings; the defaults are the ones SPEC.md §9.3 argues for.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster id in every header: an IPv4 control group's address, or an IPv6 one's
    /// [`cluster_id6`].
    pub cluster: Ipv4Addr,
    /// An IPv6 control group (SPEC.md §9.1): member certificates must list it among their
    /// IPv6 groups; `None` for an IPv4 group (`cluster`).
    pub group6: Option<Ipv6Addr>,
    /// How the address space is cut; every member of a cluster must use the same.
    pub slicing: Slicing,
    /// This member's weight (share of the slices).
    pub weight: u32,
    /// The largest weight any member may announce (SPEC.md §9.7): larger announcements, this
    /// member's own included, count as this. The same on every member of a cluster.
    pub max_weight: u32,
    pub heartbeat_interval: Duration,
    /// A member nobody has heard from for this long is declared down.
    pub down_after: Duration,
    /// Period of unsolicited `Hello`s (certificates) besides the ones sent on demand.
    pub hello_interval: Duration,
    /// After start, how long to listen before proposing, so that a restarted member learns the
    /// current epoch before it could act as coordinator.
    pub startup_quiet: Duration,
    /// Messages whose timestamp is further than this from `now` are refused (`untimely`).
    pub timeliness_window: Duration,
    /// Bytes of state per chunk of a transfer.
    pub chunk_size: usize,
    /// Chunks in flight per transfer.
    pub transfer_window: usize,
    /// Retransmission timeout for proposals and state chunks.
    pub retransmit_after: Duration,
    /// Largest state transfer accepted.
    pub max_state_len: usize,
    /// An incoming transfer without a chunk for this long is dropped (a complete one is
    /// forgotten then too).
    pub transfer_linger: Duration,
}

impl Config {
    pub fn new(cluster: Ipv4Addr) -> Self {
        Config {
            cluster,
            group6: None,
            slicing: Slicing::LowOrder { bits: 8 },
            weight: 1,
            max_weight: DEFAULT_MAX_WEIGHT,
            heartbeat_interval: Duration::from_millis(50),
            down_after: Duration::from_millis(200),
            hello_interval: Duration::from_secs(1),
            startup_quiet: Duration::from_millis(250),
            timeliness_window: Duration::from_secs(30),
            chunk_size: 1000,
            transfer_window: 8,
            retransmit_after: Duration::from_millis(100),
            max_state_len: 16 << 20,
            transfer_linger: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// The settings for an IPv6 control group: its cluster id is [`cluster_id6`].
    pub fn new_ipv6(group: Ipv6Addr) -> Self {
        Config {
            group6: Some(group),
            ..Config::new(cluster_id6(group))
        }
    }
}

/// The 32-bit cluster id of an IPv6 control group (the header has 4 bytes for it, SPEC.md
/// §9.1): the first 4 bytes of SHA-256 of a context and the group's 16 bytes, so that an IPv6
/// cluster does not share the id of the IPv4 group its low 32 bits might spell. Operator
/// certificates for the cluster name it (`manycastctl operator certify --control-group ff…`).
pub fn cluster_id6(group: Ipv6Addr) -> Ipv4Addr {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest([&b"manycast control group v6\0"[..], &group.octets()].concat());
    Ipv4Addr::new(d[0], d[1], d[2], d[3])
}

/// This member's key and the certificate the group key issued for it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: SigningKey,
    pub certificate: MemberCertificate,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// The control multicast group.
    Group,
    /// One member's unicast address (its direct path, or the source of its messages).
    Unicast(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: Destination,
    pub payload: Vec<u8>,
}

/// Why an application request could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("member is not known (no verified certificate)")]
    UnknownMember,
    #[error("message does not fit one datagram")]
    TooLarge,
    #[error("a transfer with this id to this member is already running")]
    TransferExists,
}

#[derive(Debug)]
struct Peer {
    certificate: MemberCertificate,
    key: VerifyingKey,
    addr: Option<SocketAddr>,
    direct_path: Option<SocketAddr>,
    weight: u32,
    window: ReplayWindow,
    /// Last time this member heard the peer directly.
    last_direct: Option<Instant>,
    /// Latest time anyone (this member or a live peer's heartbeat) heard the peer.
    alive_estimate: Option<Instant>,
    /// The peer's wall clock minus ours (ms, one network delay included) at its last
    /// authentic message, timely or not, and when that was.
    clock_offset: Option<(i64, Instant)>,
    live: bool,
    /// Sequence of the peer's `Leave`: older messages do not bring it back.
    left_at: Option<u64>,
    committed: Option<(EpochId, u64)>,
    /// Allocation queries sent for its current `committed` advertisement: after
    /// [`MAX_ADVERT_QUERIES`] without an acceptable answer it no longer holds the coordinator
    /// back (a member that advertises an epoch it cannot show stalls nobody).
    advert_queries: u32,
    load: Vec<(u16, u32)>,
    last_query: Option<Instant>,
}

/// Queries for one advertised allocation before it is disregarded.
pub(super) const MAX_ADVERT_QUERIES: u32 = 5;
/// How far beyond the reference epoch (the committed one) a proposal may go (SPEC.md §9.7):
/// far more than the epochs two sides of a partition run apart, far too little to reach
/// `u64::MAX` in any number of commits that could happen.
pub const MAX_EPOCH_STEP: u64 = 1 << 24;
/// Incoming transfers kept per sender and in total (complete ones are kept for re-acks).
pub const MAX_INCOMING_PER_SENDER: usize = 8;
pub const MAX_INCOMING_TOTAL: usize = 64;

#[derive(Debug)]
struct PendingProposal {
    id: EpochId,
    acked: BTreeSet<MemberId>,
    retransmit_at: Instant,
    tries: u32,
}

#[derive(Debug)]
struct OutgoingTransfer {
    to: MemberId,
    id: u64,
    data: Vec<u8>,
    acked: usize,
    sent_up_to: usize,
    retransmit_at: Instant,
    tries_without_progress: u32,
}

#[derive(Debug)]
struct IncomingTransfer {
    total: usize,
    data: Vec<u8>,
    complete: bool,
    /// Last chunk received: a transfer silent for [`Config::transfer_linger`] is dropped.
    last_progress: Instant,
}

/// A proposal whose signature, structure and epoch hold but that does not (yet) match this
/// member's view: kept, and committed when the view catches up, until it expires.
#[derive(Debug)]
struct Deferred {
    proposal: crate::wire::Proposal,
    until: Instant,
}

/// One member's protocol state.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    identity: Identity,
    me: MemberId,
    group_key: VerifyingKey,
    /// Other published group keys whose certificates peers may present: during a key rotation
    /// the group publishes two, and members reissued under the new one must still meet the
    /// others ([`Endpoint::set_group_keys`]).
    other_group_keys: Vec<VerifyingKey>,
    /// The published group keys, when the keystore told us ([`Endpoint::set_published`]):
    /// certificates from any other issuer are retired.
    published_keys: Option<Vec<VerifyingKey>>,
    /// Revoked member (and operator) key ids the keystore publishes.
    revoked: BTreeSet<KeyId>,
    /// Members dropped for revocation: their messages are refused as `revoked` until they
    /// present a certificate that is not.
    revoked_members: BTreeSet<MemberId>,
    /// Newest operator request acted on per operator key (`issued_at`, ms).
    operator_last: BTreeMap<KeyId, u64>,
    deferred: Option<Deferred>,
    /// The units this member's group allocates (`set_scope`); `None`: all of them.
    scope: Option<crate::wire::Scope>,
    cluster: u32,
    /// When this member started, on the monotonic clock (the startup quiet period).
    started: Instant,
    /// When this member started, on the wall clock (ms): its incarnation in epoch ids, request
    /// ids and the start of its sequence numbers, which must outlive a restart.
    incarnation: Timestamp,
    /// Most recently heard peers refuse this member's messages as untimely (its wall clock is
    /// off theirs by more than the timeliness window): it says so and does not coordinate.
    clock_untimely: bool,
    /// The startup quiet period has passed (its deadline is no longer a timer).
    quiet_over: bool,
    sequence: u64,
    peers: BTreeMap<MemberId, Peer>,
    committed: Option<CommittedAllocation>,
    /// The allocation committed before `committed` (or, for a first commit, the one it was made
    /// from, once fetched).
    previous: Option<CommittedAllocation>,
    max_epoch_seen: u64,
    pending: Option<PendingProposal>,
    next_heartbeat: Instant,
    next_hello: Instant,
    hello_sent_at: Option<Instant>,
    left: bool,
    /// Held at weight 0 by the member's own health checks (`set_held`), apart from a drain.
    held: bool,
    /// The weight from the configuration, announced again on a resume after a drain.
    configured_weight: u32,
    next_request_id: u64,
    /// Highest request id acted on per sender: the second copy of a request is ignored.
    last_request: BTreeMap<MemberId, u64>,
    load: Vec<(u16, u32)>,
    outgoing: BTreeMap<(MemberId, u64), OutgoingTransfer>,
    incoming: BTreeMap<(MemberId, u64), IncomingTransfer>,
    next_query_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    /// When each message type was last reported unsendable (too large for a datagram).
    unsendable_reported: Vec<(crate::wire::MessageType, Instant)>,
    /// Simulator only (feature `sim`): members an outside failure detector declared down
    /// ([`Endpoint::sim_external_down`]); no daemon is built with it.
    #[cfg(feature = "sim")]
    external_down: BTreeSet<MemberId>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Endpoint {
    /// A member starting at `now`. Its sequence numbers start at `now.wall` in milliseconds
    /// shifted left by 20 bits, so that a restarted member's messages are newer than its old ones
    /// without stable storage.
    pub fn new(config: Config, identity: Identity, group_key: VerifyingKey, now: Clock) -> Self {
        let me = identity.certificate.body().member_id;
        let cluster = u32::from(config.cluster);
        Endpoint {
            me,
            group_key,
            other_group_keys: Vec::new(),
            published_keys: None,
            revoked: BTreeSet::new(),
            revoked_members: BTreeSet::new(),
            operator_last: BTreeMap::new(),
            deferred: None,
            scope: None,
            cluster,
            started: now.mono,
            incarnation: now.wall,
            clock_untimely: false,
            quiet_over: false,
            sequence: now.wall.0 << 20,
            peers: BTreeMap::new(),
            committed: None,
            previous: None,
            max_epoch_seen: 0,
            pending: None,
            next_heartbeat: now.mono,
            next_hello: now.mono,
            hello_sent_at: None,
            left: false,
            held: false,
            configured_weight: config.weight,
            next_request_id: 0,
            last_request: BTreeMap::new(),
            load: Vec::new(),
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            next_query_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            unsendable_reported: Vec::new(),
            #[cfg(feature = "sim")]
            external_down: BTreeSet::new(),
            config,
            identity,
        }
    }

    pub fn id(&self) -> MemberId {
        self.me
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn committed(&self) -> Option<&CommittedAllocation> {
        self.committed.as_ref()
    }
    /// This member and every peer it considers live, ascending.
    pub fn live_members(&self) -> Vec<MemberId> {
        let mut v: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.live)
            .map(|(&m, _)| m)
            .collect();
        if !self.left {
            v.push(self.me);
            v.sort();
        }
        v
    }
    /// The per-unit load `member` last reported.
    pub fn peer_load(&self, member: MemberId) -> Option<&[(u16, u32)]> {
        self.peers.get(&member).map(|p| p.load.as_slice())
    }
    /// The weight `member` last announced (this member's own current weight for `id()`).
    pub fn weight_of(&self, member: MemberId) -> Option<u32> {
        if member == self.me {
            return Some(self.own_weight());
        }
        self.peers.get(&member).map(|p| p.weight)
    }
    /// The epoch id `member` last advertised as committed.
    pub fn peer_committed(&self, member: MemberId) -> Option<EpochId> {
        self.peers
            .get(&member)
            .and_then(|p| p.committed.map(|(id, _)| id))
    }
    /// Members this endpoint holds a verified certificate for, besides itself.
    pub fn known_peers(&self) -> Vec<MemberId> {
        self.peers.keys().copied().collect()
    }
    /// When `member` started (ms), read from its sequence numbers, which start at its start
    /// time shifted left by 20 bits (SPEC.md §9.2): exact to 1 ms per 2^20 messages it sent.
    pub fn peer_incarnation(&self, member: MemberId) -> Option<Timestamp> {
        if member == self.me {
            return Some(self.incarnation);
        }
        let highest = self.peers.get(&member)?.window.highest()?;
        Some(Timestamp(highest >> 20))
    }
    /// When this member started (ms): the incarnation in its epoch ids.
    pub fn incarnation(&self) -> Timestamp {
        self.incarnation
    }
    /// The load of every unit as the live members report it (this member's own included),
    /// summed: the input of a load-aware rebalance.
    pub fn unit_loads(&self) -> Vec<u64> {
        let mut out = vec![0u64; self.config.slicing.unit_count()];
        let peers = self.peers.values().filter(|p| p.live).map(|p| &p.load);
        for load in std::iter::once(&self.load).chain(peers) {
            for &(u, l) in load {
                if let Some(x) = out.get_mut(usize::from(u)) {
                    *x = x.saturating_add(u64::from(l));
                }
            }
        }
        out
    }
    /// This member's weight as announced: the configured one, at most `max_weight`.
    pub(super) fn own_weight(&self) -> u32 {
        if self.held {
            return 0;
        }
        self.config.weight.min(self.config.max_weight)
    }
    /// Incoming state transfers held (running, or complete and kept for re-acks).
    pub fn incoming_transfers(&self) -> usize {
        self.incoming.len()
    }
    /// The load per allocation unit carried in the next heartbeats.
    pub fn set_load(&mut self, load: Vec<(u16, u32)>) {
        self.load = load;
    }

    // ---- output ------------------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next time, on the monotonic clock, [`Endpoint::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return self.outgoing.values().map(|t| t.retransmit_at).min();
        }
        let mut t = self.next_heartbeat.min(self.next_hello);
        if !self.quiet_over {
            t = t.min(self.started.saturating_add(self.config.startup_quiet));
        }
        for p in self.peers.values().filter(|p| p.live) {
            if let Some(a) = p.alive_estimate {
                t = t.min(a.saturating_add(self.config.down_after));
            }
        }
        if let Some(p) = &self.pending {
            t = t.min(p.retransmit_at);
        }
        for o in self.outgoing.values() {
            t = t.min(o.retransmit_at);
        }
        if let Some(d) = &self.deferred {
            t = t.min(d.until);
        }
        if let Some(i) = self.incoming.values().map(|i| i.last_progress).min() {
            t = t.min(i.saturating_add(self.config.transfer_linger));
        }
        Some(t)
    }

    // ---- input -------------------------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Clock) {
        if now.mono >= self.started.saturating_add(self.config.startup_quiet) {
            self.quiet_over = true;
        }
        self.retransmit_transfers(now);
        self.prune_incoming(now);
        if self.left {
            return;
        }
        if now.mono >= self.next_hello {
            self.send_hello(now, false);
        }
        if now.mono >= self.next_heartbeat {
            self.send_heartbeat(now);
            // Catch up rather than burst if the driver was late.
            let step = ms(self.config.heartbeat_interval).max(1);
            let mut next = self.next_heartbeat.0.saturating_add(step);
            if next <= now.mono.0 {
                next = now.mono.0 + step;
            }
            self.next_heartbeat = Instant(next);
        }
        self.check_own_clock(now);
        self.update_liveness(now);
        self.retry_deferred(now);
        self.retransmit_proposal(now);
        self.maybe_propose(now);
    }

    /// Handles one datagram from `from`. On refusal returns the reason (also counted); a refused
    /// datagram changes nothing else.
    pub fn handle_datagram(
        &mut self,
        now: Clock,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        match self.accept(now, from, bytes) {
            Ok(()) => {
                self.counters.accepted += 1;
                self.check_own_clock(now);
                if !self.left {
                    self.update_liveness(now);
                    self.retry_deferred(now);
                    self.maybe_propose(now);
                }
                Ok(())
            }
            Err(reason) => {
                *self.counters.dropped.entry(reason).or_default() += 1;
                if reason == DropReason::Untimely {
                    self.check_own_clock(now);
                }
                if reason == DropReason::UnknownSender && !self.left {
                    // Probably a member we have not met (or we restarted): ask for certificates.
                    self.send_hello(now, true);
                }
                Err(reason)
            }
        }
    }
}
