//! The sans-IO protocol core (SPEC.md §9): one member's view of the control group. It never opens
//! a socket and never reads a clock; the driver (or the simulator) passes `now` and bytes in and
//! takes datagrams, timer deadlines and events out, as quinn-proto does.

use crate::replay::ReplayWindow;
use crate::wire::{
    self, Commit, ControlPacket, DirectPath, EpochId, Forward, Header, Heartbeat, Hello, Leave,
    LeaveKind, Message, Nack, NackReason, Proposal, Request, RequestAction, StateAck, StateChunk,
    StateQuery, StateSubject,
};
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use core::time::Duration;
use igmp_ext::alloc::quotas;
use igmp_ext::ed25519_dalek::{SigningKey, VerifyingKey};
use igmp_ext::{Allocation, MemberCertificate, MemberId, SliceSet, Slicing, Timestamp};
use igmp_ext::{KeyId, UnverifiedCertificate};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Settings; the defaults are the ones SPEC.md §9.3 argues for.
#[derive(Debug, Clone)]
pub struct Config {
    /// The control group address; its 32 bits are the cluster id in every header.
    pub cluster: Ipv4Addr,
    /// How the address space is cut; every member of a cluster must use the same.
    pub slicing: Slicing,
    /// This member's weight (share of the slices).
    pub weight: u32,
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
}

impl Config {
    pub fn new(cluster: Ipv4Addr) -> Self {
        Config {
            cluster,
            slicing: Slicing::LowOrder { bits: 8 },
            weight: 1,
            heartbeat_interval: Duration::from_millis(50),
            down_after: Duration::from_millis(200),
            hello_interval: Duration::from_secs(1),
            startup_quiet: Duration::from_millis(250),
            timeliness_window: Duration::from_secs(30),
            chunk_size: 1000,
            transfer_window: 8,
            retransmit_after: Duration::from_millis(100),
            max_state_len: 16 << 20,
        }
    }
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

/// What the application learns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    MemberUp(MemberId),
    /// Nobody this member can hear has heard `0` within the down timeout.
    MemberDown(MemberId),
    MemberLeft(MemberId),
    /// A new allocation is in force; `slices` are this member's.
    Committed {
        id: EpochId,
        /// SHA-256 of the proposal: names the allocation.
        digest: [u8; 32],
        slices: SliceSet,
    },
    Forwarded {
        from: MemberId,
        client: SocketAddrV4,
        payload: Vec<u8>,
    },
    DirectPath {
        member: MemberId,
        addr: SocketAddrV4,
    },
    StateQueried {
        from: MemberId,
        query_id: u64,
        key: Vec<u8>,
    },
    StateReceived {
        from: MemberId,
        transfer_id: u64,
        data: Vec<u8>,
    },
    TransferComplete {
        to: MemberId,
        transfer_id: u64,
    },
    TransferFailed {
        to: MemberId,
        transfer_id: u64,
    },
    Nacked {
        from: MemberId,
        refused_sequence: u64,
        reason: NackReason,
    },
    /// An operator request (SPEC.md §9.4, "Requests") reached this member, from a peer or
    /// from [`Endpoint::request`], and this is what it did about it.
    Request {
        from: MemberId,
        request_id: u64,
        action: RequestAction,
        outcome: RequestOutcome,
    },
}

/// What a member did with an operator request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// This member is the coordinator and proposed (and committed) this epoch.
    Proposed(EpochId),
    /// This member is the coordinator and the allocation would not change.
    Unchanged,
    /// Not the coordinator, or not the member named: nothing to do here.
    NotForMe,
    /// This member drained itself (weight 0).
    Drained,
    /// This member announces its configured weight again.
    Resumed,
    /// The coordinator refused the request; nothing changed.
    Refused(RequestRefusal),
}

/// Why the coordinator refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestRefusal {
    #[error("no committed allocation yet")]
    NoAllocation,
    #[error("a membership change or an unacknowledged proposal is in progress; try again")]
    Busy,
    #[error("member is not in the committed allocation or owns no units")]
    UnknownMember,
    #[error("unit number out of range or the unit has no owner")]
    BadUnit,
    #[error("the member has fewer other units than it would receive")]
    NotEnoughUnits,
}

/// Why a datagram was dropped. Each has a counter; a dropped datagram changes nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    Oversized,
    Truncated,
    BadMagic,
    UnknownVersion,
    UnknownType,
    Malformed,
    WrongCluster,
    OwnMessage,
    Untimely,
    UnknownSender,
    BadCertificate,
    BadSignature,
    Replayed,
    StaleEpoch,
    InvalidProposal,
}

impl DropReason {
    pub const ALL: [DropReason; 15] = [
        DropReason::Oversized,
        DropReason::Truncated,
        DropReason::BadMagic,
        DropReason::UnknownVersion,
        DropReason::UnknownType,
        DropReason::Malformed,
        DropReason::WrongCluster,
        DropReason::OwnMessage,
        DropReason::Untimely,
        DropReason::UnknownSender,
        DropReason::BadCertificate,
        DropReason::BadSignature,
        DropReason::Replayed,
        DropReason::StaleEpoch,
        DropReason::InvalidProposal,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Truncated => "truncated",
            DropReason::BadMagic => "bad-magic",
            DropReason::UnknownVersion => "unknown-version",
            DropReason::UnknownType => "unknown-type",
            DropReason::Malformed => "malformed",
            DropReason::WrongCluster => "wrong-cluster",
            DropReason::OwnMessage => "own-message",
            DropReason::Untimely => "untimely",
            DropReason::UnknownSender => "unknown-sender",
            DropReason::BadCertificate => "bad-certificate",
            DropReason::BadSignature => "bad-signature",
            DropReason::Replayed => "replayed",
            DropReason::StaleEpoch => "stale-epoch",
            DropReason::InvalidProposal => "invalid-proposal",
        }
    }
}

impl From<wire::ParseError> for DropReason {
    fn from(e: wire::ParseError) -> Self {
        match e {
            wire::ParseError::Oversized => DropReason::Oversized,
            wire::ParseError::Truncated => DropReason::Truncated,
            wire::ParseError::BadMagic => DropReason::BadMagic,
            wire::ParseError::UnknownVersion(_) => DropReason::UnknownVersion,
            wire::ParseError::UnknownType(_) => DropReason::UnknownType,
            wire::ParseError::Malformed => DropReason::Malformed,
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub dropped: BTreeMap<DropReason, u64>,
    pub accepted: u64,
    pub sent: u64,
}

impl Counters {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
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

/// The allocation this member follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedAllocation {
    pub proposal: Proposal,
    pub allocation: Allocation,
    pub digest: [u8; 32],
}

impl CommittedAllocation {
    pub fn id(&self) -> EpochId {
        self.proposal.id
    }
    pub fn members(&self) -> Vec<(MemberId, u32)> {
        self.proposal
            .members
            .iter()
            .map(|&(m, w)| (MemberId(m), w))
            .collect()
    }
    fn digest_prefix(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.digest[..8]);
        u64::from_be_bytes(b)
    }
}

/// Index meaning "no owner" in [`Proposal::owners`]; members are indexed 0..=254.
pub const NO_OWNER: u8 = 0xff;
pub const MAX_MEMBERS: usize = 255;

#[derive(Debug)]
struct Peer {
    certificate: MemberCertificate,
    key: VerifyingKey,
    addr: Option<SocketAddr>,
    direct_path: Option<SocketAddrV4>,
    weight: u32,
    window: ReplayWindow,
    /// Last time this member heard the peer directly.
    last_direct: Option<Timestamp>,
    /// Latest time anyone (this member or a live peer's heartbeat) heard the peer.
    alive_estimate: Option<Timestamp>,
    live: bool,
    /// Sequence of the peer's `Leave`: older messages do not bring it back.
    left_at: Option<u64>,
    committed: Option<(EpochId, u64)>,
    load: Vec<(u16, u32)>,
    last_query: Option<Timestamp>,
}

#[derive(Debug)]
struct PendingProposal {
    id: EpochId,
    acked: BTreeSet<MemberId>,
    retransmit_at: Timestamp,
    tries: u32,
}

#[derive(Debug)]
struct OutgoingTransfer {
    to: MemberId,
    id: u64,
    data: Vec<u8>,
    acked: usize,
    sent_up_to: usize,
    retransmit_at: Timestamp,
    tries_without_progress: u32,
}

#[derive(Debug)]
struct IncomingTransfer {
    total: usize,
    data: Vec<u8>,
    complete: bool,
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
    cluster: u32,
    started: Timestamp,
    /// The startup quiet period has passed (its deadline is no longer a timer).
    quiet_over: bool,
    sequence: u64,
    peers: BTreeMap<MemberId, Peer>,
    committed: Option<CommittedAllocation>,
    max_epoch_seen: u64,
    pending: Option<PendingProposal>,
    next_heartbeat: Timestamp,
    next_hello: Timestamp,
    hello_sent_at: Option<Timestamp>,
    left: bool,
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
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// SHA-256 of the proposal's postcard encoding: names one allocation.
pub fn proposal_digest(p: &Proposal) -> [u8; 32] {
    let bytes = postcard::to_stdvec(p).unwrap_or_default();
    let mut d = [0u8; 32];
    d.copy_from_slice(&Sha256::digest(&bytes));
    d
}

/// The decision rule's validity check (SPEC.md §9.4): the proposer is the lowest member listed,
/// member ids are distinct and sorted, every unit's owner is listed, and every member owns
/// exactly its weighted quota, so weights are honoured and no unit is owned twice or, while any
/// weight is positive, left unowned.
pub fn validate_proposal(p: &Proposal, slicing: Slicing) -> Option<Allocation> {
    if p.members.is_empty() || p.members.len() > MAX_MEMBERS {
        return None;
    }
    if !p.members.windows(2).all(|w| w[0].0 < w[1].0) || p.members[0].0 != p.id.proposer {
        return None;
    }
    let mut owners = Vec::with_capacity(p.owners.len());
    for &o in &p.owners {
        if o == NO_OWNER {
            owners.push(None);
        } else {
            owners.push(Some(MemberId(p.members.get(usize::from(o))?.0)));
        }
    }
    let allocation = Allocation::from_unit_owners(slicing, owners)?;
    let members: Vec<(MemberId, u32)> = p.members.iter().map(|&(m, w)| (MemberId(m), w)).collect();
    let quota = quotas(slicing.unit_count(), &members);
    for (m, q) in quota {
        if allocation.units_of(m) != q {
            return None;
        }
    }
    Some(allocation)
}

/// Encodes an allocation as a proposal body.
pub fn proposal_for(id: EpochId, members: &[(MemberId, u32)], allocation: &Allocation) -> Proposal {
    let index: BTreeMap<MemberId, u8> = members
        .iter()
        .enumerate()
        .map(|(i, &(m, _))| (m, u8::try_from(i).unwrap_or(NO_OWNER)))
        .collect();
    Proposal {
        id,
        members: members.iter().map(|&(m, w)| (m.0, w)).collect(),
        owners: allocation
            .unit_owners()
            .iter()
            .map(|o| o.and_then(|m| index.get(&m).copied()).unwrap_or(NO_OWNER))
            .collect(),
    }
}

/// A move within quotas (SPEC.md §9.4, "Requests"): `to` receives `units`, and gives each
/// previous owner one of its own other units back, its least loaded first (ties to the lower
/// unit number), so that every member keeps its unit count. Units `to` already owns stay.
pub fn move_units(
    allocation: &Allocation,
    units: &[u16],
    to: MemberId,
    unit_load: &[u64],
) -> Result<Allocation, RequestRefusal> {
    let owners = allocation.unit_owners();
    if allocation.units_of(to) == 0 {
        return Err(RequestRefusal::UnknownMember);
    }
    let listed: BTreeSet<usize> = units.iter().map(|&u| usize::from(u)).collect();
    if listed
        .iter()
        .any(|&u| owners.get(u).is_none_or(|o| o.is_none()))
    {
        return Err(RequestRefusal::BadUnit);
    }
    let incoming: Vec<usize> = listed
        .iter()
        .copied()
        .filter(|&u| owners[u] != Some(to))
        .collect();
    let mut giveable: Vec<(u64, usize)> = (0..owners.len())
        .filter(|u| owners[*u] == Some(to) && !listed.contains(u))
        .map(|u| (unit_load.get(u).copied().unwrap_or(0), u))
        .collect();
    giveable.sort_unstable();
    if incoming.len() > giveable.len() {
        return Err(RequestRefusal::NotEnoughUnits);
    }
    let mut next = owners.to_vec();
    for (&u, &(_, back)) in incoming.iter().zip(&giveable) {
        next[back] = owners[u];
        next[u] = Some(to);
    }
    Allocation::from_unit_owners(allocation.slicing(), next).ok_or(RequestRefusal::BadUnit)
}

impl Endpoint {
    /// A member starting at `now`. Its sequence numbers start at `now` in milliseconds shifted
    /// left by 20 bits, so that a restarted member's messages are newer than its old ones without
    /// stable storage.
    pub fn new(
        config: Config,
        identity: Identity,
        group_key: VerifyingKey,
        now: Timestamp,
    ) -> Self {
        let me = identity.certificate.body().member_id;
        let cluster = u32::from(config.cluster);
        Endpoint {
            me,
            group_key,
            other_group_keys: Vec::new(),
            cluster,
            started: now,
            quiet_over: false,
            sequence: now.0 << 20,
            peers: BTreeMap::new(),
            committed: None,
            max_epoch_seen: 0,
            pending: None,
            next_heartbeat: now,
            next_hello: now,
            hello_sent_at: None,
            left: false,
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
            return Some(self.config.weight);
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
            return Some(self.started);
        }
        let highest = self.peers.get(&member)?.window.highest()?;
        Some(Timestamp(highest >> 20))
    }
    /// When this member started (ms): the incarnation in its epoch ids.
    pub fn incarnation(&self) -> Timestamp {
        self.started
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

    // ---- output ------------------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next time [`Endpoint::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.left {
            return self.outgoing.values().map(|t| t.retransmit_at).min();
        }
        let down = ms(self.config.down_after);
        let mut t = self.next_heartbeat.min(self.next_hello);
        if !self.quiet_over {
            t = t.min(self.started.saturating_add(self.config.startup_quiet));
        }
        for p in self.peers.values().filter(|p| p.live) {
            if let Some(a) = p.alive_estimate {
                t = t.min(Timestamp(a.0.saturating_add(down)));
            }
        }
        if let Some(p) = &self.pending {
            t = t.min(p.retransmit_at);
        }
        for o in self.outgoing.values() {
            t = t.min(o.retransmit_at);
        }
        Some(t)
    }

    // ---- input -------------------------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Timestamp) {
        if now >= self.started.saturating_add(self.config.startup_quiet) {
            self.quiet_over = true;
        }
        self.retransmit_transfers(now);
        if self.left {
            return;
        }
        if now >= self.next_hello {
            self.send_hello(now, false);
        }
        if now >= self.next_heartbeat {
            self.send_heartbeat(now);
            // Catch up rather than burst if the driver was late.
            let step = ms(self.config.heartbeat_interval).max(1);
            let mut next = self.next_heartbeat.0.saturating_add(step);
            if next <= now.0 {
                next = now.0 + step;
            }
            self.next_heartbeat = Timestamp(next);
        }
        self.update_liveness(now);
        self.retransmit_proposal(now);
        self.maybe_propose(now);
    }

    /// Handles one datagram from `from`. On refusal returns the reason (also counted); a refused
    /// datagram changes nothing else.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        match self.accept(now, from, bytes) {
            Ok(()) => {
                self.counters.accepted += 1;
                if !self.left {
                    self.update_liveness(now);
                    self.maybe_propose(now);
                }
                Ok(())
            }
            Err(reason) => {
                *self.counters.dropped.entry(reason).or_default() += 1;
                if reason == DropReason::UnknownSender && !self.left {
                    // Probably a member we have not met (or we restarted): ask for certificates.
                    self.send_hello(now, true);
                }
                Err(reason)
            }
        }
    }

    fn accept(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) -> Result<(), DropReason> {
        let packet = ControlPacket::new_checked(bytes)?;
        if packet.cluster() != self.cluster {
            return Err(DropReason::WrongCluster);
        }
        let sender = packet.sender();
        if sender == self.me {
            return Err(DropReason::OwnMessage);
        }
        if packet.timestamp().abs_diff(now) > self.config.timeliness_window {
            return Err(DropReason::Untimely);
        }
        let seq = packet.sequence();
        let mut new_certificate = None;
        let message;
        if packet.message_type() == wire::MessageType::Hello {
            let m = Message::decode(packet.message_type(), packet.body())?;
            let Message::Hello(hello) = &m else {
                return Err(DropReason::Malformed);
            };
            let key = match self.peers.get(&sender) {
                Some(p) if p.certificate.as_bytes() == hello.certificate.as_slice() => {
                    p.certificate
                        .check_validity(now)
                        .map_err(|_| DropReason::BadCertificate)?;
                    p.key
                }
                _ => {
                    let cert = self.verify_certificate(now, sender, &hello.certificate)?;
                    let key = cert.body().member_key;
                    new_certificate = Some(cert);
                    key
                }
            };
            if !packet.verify_signature(&key) {
                return Err(DropReason::BadSignature);
            }
            if let Some(p) = self.peers.get(&sender) {
                if !p.window.is_fresh(seq) {
                    return Err(DropReason::Replayed);
                }
            }
            message = m;
        } else {
            let peer = self.peers.get(&sender).ok_or(DropReason::UnknownSender)?;
            peer.certificate
                .check_validity(now)
                .map_err(|_| DropReason::BadCertificate)?;
            if !packet.verify_signature(&peer.key) {
                return Err(DropReason::BadSignature);
            }
            if !peer.window.is_fresh(seq) {
                return Err(DropReason::Replayed);
            }
            message = Message::decode(packet.message_type(), packet.body())?;
        }

        // Every check passed: record.
        let first_contact = !self.peers.contains_key(&sender);
        if let Some(cert) = new_certificate {
            let key = cert.body().member_key;
            match self.peers.get_mut(&sender) {
                Some(p) => {
                    p.certificate = cert;
                    p.key = key;
                }
                None => {
                    self.peers.insert(
                        sender,
                        Peer {
                            certificate: cert,
                            key,
                            addr: None,
                            direct_path: None,
                            weight: 0,
                            window: ReplayWindow::default(),
                            last_direct: None,
                            alive_estimate: None,
                            live: false,
                            left_at: None,
                            committed: None,
                            load: Vec::new(),
                            last_query: None,
                        },
                    );
                }
            }
        }
        let epoch = packet.epoch();
        self.max_epoch_seen = self.max_epoch_seen.max(epoch);
        let Some(peer) = self.peers.get_mut(&sender) else {
            return Err(DropReason::UnknownSender);
        };
        peer.window.record(seq);
        peer.addr = Some(from);
        let is_leave = matches!(
            message,
            Message::Leave(Leave {
                kind: LeaveKind::Leave
            })
        );
        if !is_leave && peer.left_at.is_none_or(|l| seq > l) {
            peer.left_at = None;
            peer.last_direct = Some(now);
            peer.alive_estimate = Some(peer.alive_estimate.map_or(now, |a| a.max(now)));
        }
        self.dispatch(now, sender, seq, message, first_contact);
        Ok(())
    }

    /// The group keys currently published (the keystore's record): certificates issued by any
    /// of them are accepted from peers met from now on, besides those of the key that issued
    /// ours. Peers already met keep their verified certificates; a member whose issuer is
    /// withdrawn leaves by itself (its own keystore check, SPEC.md §11.1).
    pub fn set_group_keys(&mut self, published: &[VerifyingKey]) {
        self.other_group_keys = published
            .iter()
            .filter(|k| **k != self.group_key)
            .copied()
            .collect();
    }

    fn verify_certificate(
        &self,
        now: Timestamp,
        sender: MemberId,
        bytes: &[u8],
    ) -> Result<MemberCertificate, DropReason> {
        let unverified =
            UnverifiedCertificate::decode(bytes).map_err(|_| DropReason::BadCertificate)?;
        let issuer = unverified.unverified_body().issuer;
        let key = core::iter::once(&self.group_key)
            .chain(&self.other_group_keys)
            .find(|k| KeyId::of(k) == issuer)
            .ok_or(DropReason::BadCertificate)?;
        let cert = unverified
            .verify(key, now)
            .map_err(|_| DropReason::BadCertificate)?;
        let body = cert.body();
        // The certificate must name the header's sender and allow this cluster's group.
        if body.member_id != sender || !body.groups.contains(&self.config.cluster) {
            return Err(DropReason::BadCertificate);
        }
        Ok(cert)
    }

    fn dispatch(
        &mut self,
        now: Timestamp,
        sender: MemberId,
        seq: u64,
        message: Message,
        first_contact: bool,
    ) {
        match message {
            Message::Hello(h) => {
                if let Some(p) = self.peers.get_mut(&sender) {
                    p.weight = h.weight;
                }
                // A new member (or one that asks) gets our certificate back at once, so that
                // it can verify us within one round trip instead of one hello interval.
                if (first_contact || h.reply_wanted) && !self.left {
                    self.send_hello(now, false);
                }
            }
            Message::Heartbeat(hb) => self.on_heartbeat(now, sender, hb),
            Message::Proposal(p) => self.on_proposal(now, sender, seq, p),
            Message::Commit(c) => {
                if let Some(pending) = &mut self.pending {
                    if c.id >= pending.id {
                        pending.acked.insert(sender);
                    }
                }
                if let Some(p) = self.peers.get_mut(&sender) {
                    p.committed = Some((c.id, u64::from_be_bytes(first8(&c.digest))));
                }
            }
            Message::Leave(l) => {
                let Some(p) = self.peers.get_mut(&sender) else {
                    return;
                };
                match l.kind {
                    LeaveKind::Leave => {
                        p.left_at = Some(seq);
                        p.alive_estimate = None;
                        p.last_direct = None;
                        if p.live {
                            p.live = false;
                            self.events.push_back(Event::MemberLeft(sender));
                        }
                    }
                    LeaveKind::Drain => p.weight = 0,
                }
            }
            Message::Forward(f) => {
                if f.to == self.me.0 {
                    self.events.push_back(Event::Forwarded {
                        from: sender,
                        client: SocketAddrV4::new(Ipv4Addr::from(f.client_addr), f.client_port),
                        payload: f.payload,
                    });
                }
            }
            Message::DirectPath(d) => {
                let addr = SocketAddrV4::new(Ipv4Addr::from(d.addr), d.port);
                if let Some(p) = self.peers.get_mut(&sender) {
                    p.direct_path = Some(addr);
                }
                self.events.push_back(Event::DirectPath {
                    member: sender,
                    addr,
                });
            }
            Message::StateQuery(q) => match q.subject {
                StateSubject::Allocation => {
                    if let Some(c) = &self.committed {
                        let m = Message::Proposal(c.proposal.clone());
                        self.send_to_member(now, sender, &m);
                    }
                }
                StateSubject::Application(key) => self.events.push_back(Event::StateQueried {
                    from: sender,
                    query_id: q.query_id,
                    key,
                }),
                #[allow(unreachable_patterns)]
                _ => self.nack(now, sender, seq, NackReason::UnknownState),
            },
            Message::StateChunk(c) => self.on_chunk(now, sender, seq, c),
            Message::StateAck(a) => self.on_ack(now, sender, a),
            Message::Nack(n) => self.events.push_back(Event::Nacked {
                from: sender,
                refused_sequence: n.refused_sequence,
                reason: n.reason,
            }),
            Message::Request(r) => self.on_request(now, sender, r),
        }
    }

    /// An operator request: the member it names acts on a drain or resume, the coordinator on
    /// a move or rebalance; everyone else reports `NotForMe`.
    fn on_request(&mut self, now: Timestamp, from: MemberId, r: Request) {
        if self.left {
            return;
        }
        // Ids grow per sender (start time, then a counter): anything not newer is a repeat.
        if self
            .last_request
            .get(&from)
            .is_some_and(|&l| r.request_id <= l)
        {
            return;
        }
        self.last_request.insert(from, r.request_id);
        let outcome = match &r.action {
            RequestAction::Drain { member } if MemberId(*member) == self.me => {
                self.drain(now);
                RequestOutcome::Drained
            }
            RequestAction::Resume { member } if MemberId(*member) == self.me => {
                self.config.weight = self.configured_weight;
                // The weight travels in heartbeats: announce it now rather than in 50 ms.
                self.send_heartbeat(now);
                self.maybe_propose(now);
                RequestOutcome::Resumed
            }
            RequestAction::Drain { .. } | RequestAction::Resume { .. } => RequestOutcome::NotForMe,
            RequestAction::Rebalance | RequestAction::Move { .. } => {
                self.coordinate_request(now, &r.action)
            }
        };
        self.events.push_back(Event::Request {
            from,
            request_id: r.request_id,
            action: r.action,
            outcome,
        });
    }

    /// A move or rebalance at the coordinator: a new epoch with the same members and weights,
    /// so every member's quota, and the validity rule, are unchanged.
    fn coordinate_request(&mut self, now: Timestamp, action: &RequestAction) -> RequestOutcome {
        let view = self.view();
        if view.first().map(|&(m, _)| m) != Some(self.me) {
            return RequestOutcome::NotForMe;
        }
        let Some(c) = &self.committed else {
            return RequestOutcome::Refused(RequestRefusal::NoAllocation);
        };
        if !self.quiet_over || self.unacknowledged(c) || self.behind() || c.members() != view {
            return RequestOutcome::Refused(RequestRefusal::Busy);
        }
        let load = self.unit_loads();
        let next = match action {
            RequestAction::Rebalance => c.allocation.rebalanced_by_load(&view, &load),
            RequestAction::Move { units, to } => {
                match move_units(&c.allocation, units, MemberId(*to), &load) {
                    Ok(a) => a,
                    Err(e) => return RequestOutcome::Refused(e),
                }
            }
            _ => return RequestOutcome::NotForMe,
        };
        if next == c.allocation {
            return RequestOutcome::Unchanged;
        }
        RequestOutcome::Proposed(self.propose(now, &view, next))
    }

    fn on_heartbeat(&mut self, now: Timestamp, sender: MemberId, hb: Heartbeat) {
        let sender_live = self.peers.get(&sender).is_some_and(|p| p.left_at.is_none());
        if let Some(p) = self.peers.get_mut(&sender) {
            p.weight = hb.weight;
            p.committed = Some((hb.committed, hb.digest));
            p.load = hb.load;
        }
        if let Some(pending) = &mut self.pending {
            if hb.committed >= pending.id {
                pending.acked.insert(sender);
            }
        }
        if !sender_live {
            return;
        }
        // Indirect evidence: the sender heard these members `age` ms ago.
        let down = ms(self.config.down_after);
        for (m, age) in hb.heard {
            let m = MemberId(m);
            if m == self.me || u64::from(age) >= down {
                continue;
            }
            if let Some(p) = self.peers.get_mut(&m) {
                if p.left_at.is_none() {
                    let t = Timestamp(now.0.saturating_sub(u64::from(age)));
                    p.alive_estimate = Some(p.alive_estimate.map_or(t, |a| a.max(t)));
                }
            }
        }
        // Behind the sender: fetch its allocation (anti-entropy, SPEC.md §9.4).
        let mine = self.committed.as_ref().map(|c| c.id());
        if mine.is_none_or(|m| hb.committed > m) && hb.committed.epoch > 0 {
            let interval = self.config.heartbeat_interval;
            let due = self.peers.get(&sender).is_some_and(|p| {
                p.last_query
                    .is_none_or(|q| now >= q.saturating_add(interval))
            });
            if due {
                if let Some(p) = self.peers.get_mut(&sender) {
                    p.last_query = Some(now);
                }
                let query_id = self.fresh_query_id();
                let m = Message::StateQuery(StateQuery {
                    query_id,
                    subject: StateSubject::Allocation,
                });
                self.send_to_member(now, sender, &m);
            }
        }
    }

    fn on_proposal(&mut self, now: Timestamp, sender: MemberId, seq: u64, p: Proposal) {
        self.max_epoch_seen = self.max_epoch_seen.max(p.id.epoch);
        let Some(allocation) = validate_proposal(&p, self.config.slicing) else {
            *self
                .counters
                .dropped
                .entry(DropReason::InvalidProposal)
                .or_default() += 1;
            self.nack(now, sender, seq, NackReason::InvalidProposal);
            return;
        };
        let digest = proposal_digest(&p);
        match &self.committed {
            Some(c) if c.id() == p.id && c.digest == digest => {
                // Already ours; acknowledge again in case our commit was lost.
                self.send_commit(now);
                return;
            }
            Some(c) if c.id() >= p.id => {
                *self
                    .counters
                    .dropped
                    .entry(DropReason::StaleEpoch)
                    .or_default() += 1;
                self.nack(now, sender, seq, NackReason::StaleEpoch);
                return;
            }
            _ => {}
        }
        self.commit(
            now,
            CommittedAllocation {
                proposal: p,
                allocation,
                digest,
            },
        );
    }

    fn commit(&mut self, now: Timestamp, c: CommittedAllocation) {
        let id = c.id();
        let digest = c.digest;
        let slices = c.allocation.slices_of(self.me);
        if self.pending.as_ref().is_some_and(|p| p.id < id) {
            self.pending = None;
        }
        self.committed = Some(c);
        self.events
            .push_back(Event::Committed { id, digest, slices });
        self.send_commit(now);
    }

    fn send_commit(&mut self, now: Timestamp) {
        if let Some(c) = &self.committed {
            let m = Message::Commit(Commit {
                id: c.id(),
                digest: c.digest,
            });
            self.send(now, Destination::Group, &m);
        }
    }

    fn update_liveness(&mut self, now: Timestamp) {
        let down = ms(self.config.down_after);
        for (&m, p) in self.peers.iter_mut() {
            let live = p.left_at.is_none()
                && p.alive_estimate
                    .is_some_and(|a| now.0 < a.0.saturating_add(down));
            if live != p.live {
                p.live = live;
                self.events.push_back(if live {
                    Event::MemberUp(m)
                } else {
                    Event::MemberDown(m)
                });
            }
        }
    }

    /// This member and every live peer with the weight it announced, ascending.
    fn view(&self) -> Vec<(MemberId, u32)> {
        self.live_members()
            .into_iter()
            .take(MAX_MEMBERS)
            .map(|m| {
                let w = if m == self.me {
                    self.config.weight
                } else {
                    self.peers.get(&m).map_or(0, |p| p.weight)
                };
                (m, w)
            })
            .collect()
    }

    /// Our last proposal is still missing a live member's acknowledgement: one change at a time.
    fn unacknowledged(&self, c: &CommittedAllocation) -> bool {
        self.pending.as_ref().is_some_and(|pending| {
            c.members().iter().any(|(m, _)| {
                !pending.acked.contains(m) && self.peers.get(m).is_some_and(|p| p.live)
            })
        })
    }

    /// A live peer advertises a greater committed epoch id than ours.
    fn behind(&self) -> bool {
        let mine = self.committed.as_ref().map(|c| c.id());
        self.peers.values().any(|p| {
            p.live
                && p.committed
                    .is_some_and(|(id, _)| id.epoch > 0 && mine.is_none_or(|m| id > m))
        })
    }

    /// The decision rule (SPEC.md §9.4): the lowest live member proposes when the live view
    /// differs from the committed member list and nobody live is ahead of it.
    fn maybe_propose(&mut self, now: Timestamp) {
        if self.left || now < self.started.saturating_add(self.config.startup_quiet) {
            return;
        }
        let view = self.view();
        if view.first().map(|&(m, _)| m) != Some(self.me) {
            return;
        }
        if self.behind() {
            return;
        }
        if self.committed.as_ref().is_some_and(|c| c.members() == view) {
            return;
        }
        let base = self
            .committed
            .as_ref()
            .map(|c| c.allocation.clone())
            .unwrap_or_else(|| Allocation::empty(self.config.slicing));
        let allocation = base.rebalanced(&view);
        self.propose(now, &view, allocation);
    }

    /// Proposes `allocation` for `view` at the next epoch, commits it here and retransmits it
    /// until the live members acknowledge it.
    fn propose(
        &mut self,
        now: Timestamp,
        view: &[(MemberId, u32)],
        allocation: Allocation,
    ) -> EpochId {
        let mine = self.committed.as_ref().map(|c| c.id());
        let epoch = self
            .max_epoch_seen
            .max(mine.map_or(0, |m| m.epoch))
            .saturating_add(1);
        let id = EpochId {
            epoch,
            proposer: self.me.0,
            incarnation: self.started.0,
        };
        let proposal = proposal_for(id, view, &allocation);
        let digest = proposal_digest(&proposal);
        self.max_epoch_seen = epoch;
        let m = Message::Proposal(proposal.clone());
        self.send(now, Destination::Group, &m);
        self.pending = Some(PendingProposal {
            id,
            acked: BTreeSet::from([self.me]),
            retransmit_at: now.saturating_add(self.config.retransmit_after),
            tries: 0,
        });
        self.commit(
            now,
            CommittedAllocation {
                proposal,
                allocation,
                digest,
            },
        );
        id
    }

    fn retransmit_proposal(&mut self, now: Timestamp) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        if now < pending.retransmit_at {
            return;
        }
        let Some(c) = &self.committed else {
            self.pending = None;
            return;
        };
        let missing = c
            .members()
            .iter()
            .any(|(m, _)| !pending.acked.contains(m) && self.peers.get(m).is_some_and(|p| p.live));
        if !missing || pending.tries >= 20 || c.id() != pending.id {
            self.pending = None;
            return;
        }
        pending.tries += 1;
        pending.retransmit_at = now.saturating_add(self.config.retransmit_after);
        let m = Message::Proposal(c.proposal.clone());
        self.send(now, Destination::Group, &m);
    }

    // ---- sending -----------------------------------------------------------------------------

    fn header(&mut self, now: Timestamp) -> Header {
        self.sequence += 1;
        Header {
            cluster: self.cluster,
            sender: self.me,
            epoch: self.committed.as_ref().map_or(0, |c| c.id().epoch),
            sequence: self.sequence,
            timestamp: now,
        }
    }

    fn send(&mut self, now: Timestamp, destination: Destination, m: &Message) -> bool {
        // After leaving, any message would count as a sign of life and bring this member back
        // into its peers' views; only running transfers may finish.
        let allowed_after_leave = matches!(
            m,
            Message::Leave(_) | Message::StateChunk(_) | Message::StateAck(_)
        );
        if self.left && !allowed_after_leave {
            return false;
        }
        let header = self.header(now);
        match m.encode_signed(&header, &self.identity.key) {
            Ok(payload) => {
                self.counters.sent += 1;
                self.transmits.push_back(Transmit {
                    destination,
                    payload,
                });
                true
            }
            Err(_) => false,
        }
    }

    fn destination_of(&self, member: MemberId) -> Destination {
        match self.peers.get(&member) {
            Some(p) => match (p.direct_path, p.addr) {
                (Some(d), _) => Destination::Unicast(SocketAddr::V4(d)),
                (None, Some(a)) => Destination::Unicast(a),
                _ => Destination::Group,
            },
            None => Destination::Group,
        }
    }

    fn send_to_member(&mut self, now: Timestamp, member: MemberId, m: &Message) -> bool {
        let d = self.destination_of(member);
        self.send(now, d, m)
    }

    fn nack(&mut self, now: Timestamp, to: MemberId, seq: u64, reason: NackReason) {
        let m = Message::Nack(Nack {
            refused_sequence: seq,
            reason,
        });
        self.send_to_member(now, to, &m);
    }

    fn send_hello(&mut self, now: Timestamp, reply_wanted: bool) {
        // At most one hello per heartbeat interval, however many strangers speak.
        if let Some(t) = self.hello_sent_at {
            let allowed = t.saturating_add(self.config.heartbeat_interval);
            if now < allowed {
                // A due periodic hello waits for the limit rather than leaving a deadline in
                // the past, which would spin the driver.
                self.next_hello = self.next_hello.max(allowed);
                return;
            }
        }
        self.hello_sent_at = Some(now);
        self.next_hello = now.saturating_add(self.config.hello_interval);
        let m = Message::Hello(Hello {
            certificate: self.identity.certificate.as_bytes().to_vec(),
            weight: self.config.weight,
            reply_wanted,
        });
        self.send(now, Destination::Group, &m);
    }

    fn send_heartbeat(&mut self, now: Timestamp) {
        let down = ms(self.config.down_after);
        let heard = self
            .peers
            .iter()
            .filter_map(|(&m, p)| {
                let age = now.0.saturating_sub(p.last_direct?.0);
                (age < down && p.left_at.is_none())
                    .then(|| (m.0, u16::try_from(age).unwrap_or(u16::MAX)))
            })
            .collect();
        let (committed, digest) = self
            .committed
            .as_ref()
            .map_or((EpochId::default(), 0), |c| (c.id(), c.digest_prefix()));
        let m = Message::Heartbeat(Heartbeat {
            weight: self.config.weight,
            heard,
            committed,
            digest,
            load: self.load.clone(),
        });
        if !self.send(now, Destination::Group, &m) {
            // Too many load entries for one datagram: send liveness without them.
            let Message::Heartbeat(mut hb) = m else {
                return;
            };
            hb.load.clear();
            self.send(now, Destination::Group, &Message::Heartbeat(hb));
        }
    }

    fn fresh_query_id(&mut self) -> u64 {
        self.next_query_id += 1;
        self.next_query_id
    }

    // ---- application requests ----------------------------------------------------------------

    /// Leaves the group now: peers take this member's slices at once instead of waiting for
    /// the failure detector.
    pub fn leave(&mut self, now: Timestamp) {
        let m = Message::Leave(Leave {
            kind: LeaveKind::Leave,
        });
        // Sent twice: a lost leave costs a down timeout, a duplicate costs nothing.
        self.send(now, Destination::Group, &m);
        self.send(now, Destination::Group, &m);
        self.left = true;
        self.pending = None;
    }

    /// Drains: weight 0, so the next allocation gives this member no slices.
    pub fn drain(&mut self, now: Timestamp) {
        self.config.weight = 0;
        let m = Message::Leave(Leave {
            kind: LeaveKind::Drain,
        });
        self.send(now, Destination::Group, &m);
        self.maybe_propose(now);
    }

    /// The load per allocation unit carried in the next heartbeats.
    pub fn set_load(&mut self, load: Vec<(u16, u32)>) {
        self.load = load;
    }

    /// Sends an operator request to the group and acts on it here too (this member may be the
    /// coordinator or the member named). Returns the request id; the outcome at each member
    /// is an [`Event::Request`] there. Sent twice, as a leave is: receivers act on a request id
    /// once, and a lost request would need the operator to retry.
    pub fn request(&mut self, now: Timestamp, action: RequestAction) -> u64 {
        self.next_request_id += 1;
        let request_id = (self.started.0 << 16) | (self.next_request_id & 0xffff);
        let r = Request { request_id, action };
        let m = Message::Request(r.clone());
        self.send(now, Destination::Group, &m);
        self.send(now, Destination::Group, &m);
        self.on_request(now, self.me, r);
        request_id
    }

    /// Passes a client packet to `to` (patent claim 10): over its direct path if it announced
    /// one, else unicast to where its messages come from, else over the group.
    pub fn forward(
        &mut self,
        now: Timestamp,
        to: MemberId,
        client: SocketAddrV4,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        if !self.peers.contains_key(&to) {
            return Err(SendError::UnknownMember);
        }
        let m = Message::Forward(Forward {
            to: to.0,
            client_addr: u32::from(*client.ip()),
            client_port: client.port(),
            payload,
        });
        if self.send_to_member(now, to, &m) {
            Ok(())
        } else {
            Err(SendError::TooLarge)
        }
    }

    /// Tells the group "use this unicast address to reach me" (patent claim 10, Fig 15).
    pub fn advertise_direct_path(&mut self, now: Timestamp, addr: SocketAddrV4) {
        let m = Message::DirectPath(DirectPath {
            addr: u32::from(*addr.ip()),
            port: addr.port(),
        });
        self.send(now, Destination::Group, &m);
    }

    /// Asks `to` for application state under `key` (a connection handoff, Fig 12); the answer
    /// arrives as [`Event::StateReceived`] with the returned id as transfer id.
    pub fn query_state(
        &mut self,
        now: Timestamp,
        to: MemberId,
        key: Vec<u8>,
    ) -> Result<u64, SendError> {
        if !self.peers.contains_key(&to) {
            return Err(SendError::UnknownMember);
        }
        let query_id = self.fresh_query_id();
        let m = Message::StateQuery(StateQuery {
            query_id,
            subject: StateSubject::Application(key),
        });
        if self.send_to_member(now, to, &m) {
            Ok(query_id)
        } else {
            Err(SendError::TooLarge)
        }
    }

    /// Sends `data` to `to` in acknowledged chunks (go-back-N with cumulative acks). The receiver
    /// acknowledges what it holds, so a resent or restarted transfer resumes where it stopped.
    pub fn send_state(
        &mut self,
        now: Timestamp,
        to: MemberId,
        transfer_id: u64,
        data: Vec<u8>,
    ) -> Result<(), SendError> {
        if !self.peers.contains_key(&to) {
            return Err(SendError::UnknownMember);
        }
        if data.len() > self.config.max_state_len || u32::try_from(data.len()).is_err() {
            return Err(SendError::TooLarge);
        }
        if self.outgoing.contains_key(&(to, transfer_id)) {
            return Err(SendError::TransferExists);
        }
        self.outgoing.insert(
            (to, transfer_id),
            OutgoingTransfer {
                to,
                id: transfer_id,
                data,
                acked: 0,
                sent_up_to: 0,
                retransmit_at: now,
                tries_without_progress: 0,
            },
        );
        self.pump_transfer(now, (to, transfer_id));
        Ok(())
    }

    /// Sends the chunks of the window not yet sent.
    fn pump_transfer(&mut self, now: Timestamp, key: (MemberId, u64)) {
        let chunk = self.config.chunk_size.clamp(1, wire::MAX_BODY - 64);
        let window = self.config.transfer_window.max(1);
        let retransmit = self.config.retransmit_after;
        let mut chunks = Vec::new();
        let dest;
        {
            let Some(t) = self.outgoing.get_mut(&key) else {
                return;
            };
            let limit = (t.acked + window * chunk).min(t.data.len());
            let total = u32::try_from(t.data.len()).unwrap_or(u32::MAX);
            // An empty transfer is one empty chunk.
            if t.data.is_empty() && t.sent_up_to == 0 {
                chunks.push(StateChunk {
                    transfer_id: t.id,
                    offset: 0,
                    total: 0,
                    data: Vec::new(),
                });
            }
            while t.sent_up_to < limit {
                let end = (t.sent_up_to + chunk).min(t.data.len());
                chunks.push(StateChunk {
                    transfer_id: t.id,
                    offset: u32::try_from(t.sent_up_to).unwrap_or(u32::MAX),
                    total,
                    data: t.data[t.sent_up_to..end].to_vec(),
                });
                t.sent_up_to = end;
            }
            if !chunks.is_empty() {
                t.retransmit_at = now.saturating_add(retransmit);
            }
            dest = t.to;
        }
        for c in chunks {
            self.send_to_member(now, dest, &Message::StateChunk(c));
        }
    }

    fn retransmit_transfers(&mut self, now: Timestamp) {
        let due: Vec<(MemberId, u64)> = self
            .outgoing
            .iter()
            .filter(|(_, t)| now >= t.retransmit_at)
            .map(|(&k, _)| k)
            .collect();
        for key in due {
            let Some(t) = self.outgoing.get_mut(&key) else {
                continue;
            };
            t.tries_without_progress += 1;
            if t.tries_without_progress > 20 {
                self.outgoing.remove(&key);
                self.events.push_back(Event::TransferFailed {
                    to: key.0,
                    transfer_id: key.1,
                });
                continue;
            }
            // Go back to the last acknowledged byte.
            t.sent_up_to = t.acked;
            t.retransmit_at = now.saturating_add(self.config.retransmit_after);
            self.pump_transfer(now, key);
        }
    }

    fn on_chunk(&mut self, now: Timestamp, sender: MemberId, seq: u64, c: StateChunk) {
        let total = c.total as usize;
        if total > self.config.max_state_len {
            self.nack(now, sender, seq, NackReason::StateTooLarge);
            return;
        }
        let key = (sender, c.transfer_id);
        let t = self.incoming.entry(key).or_insert(IncomingTransfer {
            total,
            data: Vec::new(),
            complete: false,
        });
        if t.total != total {
            return;
        }
        let offset = c.offset as usize;
        if !t.complete && offset == t.data.len() && offset + c.data.len() <= total {
            t.data.extend_from_slice(&c.data);
        }
        let next_offset = u32::try_from(t.data.len()).unwrap_or(u32::MAX);
        let mut done = None;
        if !t.complete && t.data.len() == t.total {
            t.complete = true;
            done = Some(core::mem::take(&mut t.data));
            // Keep the length so duplicates are acknowledged as complete.
            t.data = Vec::new();
        }
        let ack_offset = if t.complete { c.total } else { next_offset };
        let m = Message::StateAck(StateAck {
            transfer_id: c.transfer_id,
            next_offset: ack_offset,
        });
        self.send_to_member(now, sender, &m);
        if let Some(data) = done {
            self.events.push_back(Event::StateReceived {
                from: sender,
                transfer_id: c.transfer_id,
                data,
            });
        }
    }

    fn on_ack(&mut self, now: Timestamp, sender: MemberId, a: StateAck) {
        let key = (sender, a.transfer_id);
        let Some(t) = self.outgoing.get_mut(&key) else {
            return;
        };
        let next = (a.next_offset as usize).min(t.data.len());
        if next > t.acked || (t.data.is_empty() && a.next_offset == 0) {
            t.acked = next;
            t.sent_up_to = t.sent_up_to.max(next);
            t.tries_without_progress = 0;
            t.retransmit_at = now.saturating_add(self.config.retransmit_after);
        }
        if t.acked >= t.data.len() {
            self.outgoing.remove(&key);
            self.events.push_back(Event::TransferComplete {
                to: sender,
                transfer_id: a.transfer_id,
            });
            return;
        }
        self.pump_transfer(now, key);
    }
}

fn first8(d: &[u8; 32]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    b
}
