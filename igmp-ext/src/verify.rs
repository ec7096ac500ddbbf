//! The join verification pipeline (patent Fig 6 made precise; brief decision 3). Every report
//! goes through the same ordered checks; each refusal has a named [`Reason`] and a counter. Only
//! this module constructs a [`VerifiedJoin`].
//!
//! Order (SPEC.md §5): IPv4 and IGMP structure, checksum, public/private policy, extension
//! structure, duplicate, timeliness, proper link, key lookup, certificate chain, signature, slice
//! exclusivity. Cheap checks come first so that forged traffic costs little.

use crate::cert::{peek_issuer, CertificateError, KeyId, MemberCertificate, MemberId};
use crate::join::{AllocationEpoch, JoinParseError, UnverifiedJoin, MAX_JOIN_DATAGRAM};
use crate::ownership::{Claim, ClaimError, OwnershipChange, OwnershipTable};
use crate::replay::{Full, ReplayCache};
use crate::signature;
use crate::slice::{Slice, SliceSet};
use crate::time::{Clock, Instant, Timestamp};
use crate::wire::igmp::{IgmpPacket, IgmpRepr};
use crate::wire::ipv4::{Ipv4Packet, PROTOCOL_IGMP};
use crate::wire::record::{GroupRecordRepr, RecordType};
use crate::wire::WireError;
use core::net::Ipv4Addr;
use core::time::Duration;
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;
use std::sync::Arc;

/// One key that may sign member certificates for a group, as published in the keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKey {
    pub id: KeyId,
    pub key: VerifyingKey,
}

impl GroupKey {
    pub fn new(key: VerifyingKey) -> Self {
        GroupKey {
            id: KeyId::of(&key),
            key,
        }
    }
}

/// A group's published keys and revocations, already validated by whoever fetched them (the
/// dns-keystore client checks the DNSSEC chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKeys {
    pub group: Ipv4Addr,
    /// Currently valid group keys (more than one during a rotation).
    pub keys: Vec<GroupKey>,
    /// Key ids of revoked member keys.
    pub revoked_members: Vec<KeyId>,
}

/// Why a group's keys could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyLookupError {
    /// The keystore did not answer and nothing valid is cached: fail closed.
    #[error("keystore unavailable: {0}")]
    Unavailable(String),
    /// The keystore answered that it has no record for the group.
    #[error("no key published for the group")]
    UnknownGroup,
    /// The answer did not validate (DNSSEC, record syntax).
    #[error("published key record invalid: {0}")]
    Invalid(String),
}

/// Where the verifier gets group keys from. The dns-keystore client implements this with its
/// DNSSEC-validated cache; tests use a map. Called once per protected join, so it must answer
/// from memory.
pub trait KeySource {
    fn group_keys(&self, group: Ipv4Addr, now: Timestamp)
        -> Result<Arc<GroupKeys>, KeyLookupError>;
}

impl KeySource for HashMap<Ipv4Addr, Arc<GroupKeys>> {
    fn group_keys(
        &self,
        group: Ipv4Addr,
        _now: Timestamp,
    ) -> Result<Arc<GroupKeys>, KeyLookupError> {
        self.get(&group)
            .cloned()
            .ok_or(KeyLookupError::UnknownGroup)
    }
}

/// The named reason for every refusal; its [`Reason::as_str`] is the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    Malformed,
    BadChecksum,
    Unsigned,
    MalformedExtension,
    RecordMismatch,
    Duplicate,
    Untimely,
    WrongLink,
    KeyUnavailable,
    UnknownGroup,
    UnknownKey,
    BadCertificate,
    CertificateExpired,
    Revoked,
    GroupNotAllowed,
    OutsideCertificate,
    BadSignature,
    StaleEpoch,
    SliceConflict,
    ReplayCacheFull,
    /// Over a hard cap (SPEC.md §3.7): datagram size, slices in a join or in a certificate, or
    /// the steps their slice set may take to build (§5.4).
    TooLarge,
}

impl Reason {
    pub const ALL: [Reason; 21] = [
        Reason::Malformed,
        Reason::BadChecksum,
        Reason::Unsigned,
        Reason::MalformedExtension,
        Reason::RecordMismatch,
        Reason::Duplicate,
        Reason::Untimely,
        Reason::WrongLink,
        Reason::KeyUnavailable,
        Reason::UnknownGroup,
        Reason::UnknownKey,
        Reason::BadCertificate,
        Reason::CertificateExpired,
        Reason::Revoked,
        Reason::GroupNotAllowed,
        Reason::OutsideCertificate,
        Reason::BadSignature,
        Reason::StaleEpoch,
        Reason::SliceConflict,
        Reason::ReplayCacheFull,
        Reason::TooLarge,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::BadChecksum => "bad-checksum",
            Reason::Unsigned => "unsigned",
            Reason::MalformedExtension => "malformed-extension",
            Reason::RecordMismatch => "record-mismatch",
            Reason::Duplicate => "duplicate",
            Reason::Untimely => "untimely",
            Reason::WrongLink => "wrong-link",
            Reason::KeyUnavailable => "key-unavailable",
            Reason::UnknownGroup => "unknown-group",
            Reason::UnknownKey => "unknown-key",
            Reason::BadCertificate => "bad-certificate",
            Reason::CertificateExpired => "certificate-expired",
            Reason::Revoked => "revoked",
            Reason::GroupNotAllowed => "group-not-allowed",
            Reason::OutsideCertificate => "outside-certificate",
            Reason::BadSignature => "bad-signature",
            Reason::StaleEpoch => "stale-epoch",
            Reason::SliceConflict => "slice-conflict",
            Reason::ReplayCacheFull => "replay-cache-full",
            Reason::TooLarge => "too-large",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused report: the reason and a human-readable detail for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
    /// The sender, when the IPv4 header parsed.
    pub sender: Option<Ipv4Addr>,
}

impl Rejection {
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
            sender: None,
        }
    }
}

/// A join whose every check passed. Only the verifier makes these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJoin {
    member: MemberId,
    member_key: KeyId,
    issuer: KeyId,
    group: Ipv4Addr,
    sender: Ipv4Addr,
    ifindex: u32,
    slices: SliceSet,
    epoch: AllocationEpoch,
    timestamp: Timestamp,
    record_type: RecordType,
}

impl VerifiedJoin {
    pub fn member(&self) -> MemberId {
        self.member
    }
    pub fn member_key(&self) -> KeyId {
        self.member_key
    }
    /// The group key that signed the member's certificate.
    pub fn issuer(&self) -> KeyId {
        self.issuer
    }
    pub fn group(&self) -> Ipv4Addr {
        self.group
    }
    pub fn sender(&self) -> Ipv4Addr {
        self.sender
    }
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
    /// The member's whole claim on the group (empty for a leave).
    pub fn slices(&self) -> &SliceSet {
        &self.slices
    }
    pub fn epoch(&self) -> AllocationEpoch {
        self.epoch
    }
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }
    pub fn record_type(&self) -> RecordType {
        self.record_type
    }
}

/// What the router may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A message that concerns no protected group: handle it as plain IGMP.
    Plain { sender: Ipv4Addr, message: IgmpRepr },
    /// A verified join, what it changed in the ownership table, and the report's other
    /// (public) records.
    Join {
        join: VerifiedJoin,
        change: OwnershipChange,
        public_records: Vec<GroupRecordRepr<Ipv4Addr>>,
    },
}

/// Tunables; the defaults are documented in SPEC.md §5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// A join is timely when |now − timestamp| ≤ this.
    pub timeliness_window: Duration,
    /// How long a claim lives without a refresh (RFC 3376 §8.4 Group Membership Interval).
    pub claim_hold: Duration,
    /// Accepted joins remembered for the duplicate check.
    pub replay_capacity: usize,
    /// Of those, how many one member may hold at once: above its legitimate rate (refreshes,
    /// change reports, at most one query answer a second) for one retention (2 × window), so
    /// that a member flooding fresh joins refuses only its own (issue 13, item 7).
    pub replay_per_member: usize,
    /// Verified certificates kept so that a refresh costs one signature check, not two.
    pub certificate_cache: usize,
    /// Groups that need signed joins (patent Fig 6, step 605). Default: the SSM range 232/8.
    pub protected: Vec<Slice>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            timeliness_window: Duration::from_secs(30),
            claim_hold: Duration::from_secs(260),
            replay_capacity: 65_536,
            replay_per_member: 256,
            certificate_cache: 4_096,
            protected: vec![Slice::prefix(Ipv4Addr::new(232, 0, 0, 0), 8)],
        }
    }
}

/// The router's links: the subnets reachable directly on each interface, for the proper-link
/// check (Fig 6, step 620).
#[derive(Debug, Clone, Default)]
pub struct LinkTable {
    links: Vec<(u32, Slice)>,
}

impl LinkTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, ifindex: u32, subnet: Slice) {
        self.links.push((ifindex, subnet));
    }

    /// True when `sender` belongs to a subnet of `ifindex`.
    pub fn on_link(&self, ifindex: u32, sender: Ipv4Addr) -> bool {
        self.links
            .iter()
            .any(|&(i, s)| i == ifindex && s.contains_addr(sender))
    }
}

/// Counters for every outcome.
#[derive(Debug, Clone, Default)]
pub struct VerifierMetrics {
    pub accepted_plain: u64,
    pub accepted_joins: u64,
    pub certificate_cache_hits: u64,
    rejected: [u64; Reason::ALL.len()],
}

impl VerifierMetrics {
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected[reason.index()]
    }

    pub(crate) fn count_rejection(&mut self, reason: Reason) {
        self.rejected[reason.index()] += 1;
    }

    /// (reason label, count) for every reason, zeros included, for Prometheus export.
    pub fn rejections(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reason::ALL
            .iter()
            .map(|r| (r.as_str(), self.rejected[r.index()]))
    }
}

struct CachedCertificate {
    cert: MemberCertificate,
    /// The group key that signed it: a hit counts only while that key is still published.
    issuer: VerifyingKey,
    member_key_id: KeyId,
}

/// The certificate a candidate carries: checked already (a cache hit), or laid out well and
/// naming a published issuer, its signature still to check.
enum CertificateState {
    Known(Arc<CachedCertificate>),
    Unchecked { issuer: VerifyingKey },
}

/// A signed join that passed every check that costs no signature verification (SPEC.md §5,
/// steps 1-11 and, for a certificate already checked, 13-15). What is left is the expensive
/// part: [`JoinVerifier::verify`]. Its accessors are claims, not yet proven; a router uses them
/// only to decide which candidates get verification work first.
pub struct Candidate {
    join: UnverifiedJoin,
    cert: CertificateState,
    keys: Arc<GroupKeys>,
    sender: Ipv4Addr,
    ifindex: u32,
    public_records: Vec<GroupRecordRepr<Ipv4Addr>>,
}

impl core::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Candidate")
            .field("member", &self.claimed_member())
            .field("group", &self.group())
            .field("sender", &self.sender)
            .field("ifindex", &self.ifindex)
            .field("certificate_known", &self.certificate_known())
            .finish_non_exhaustive()
    }
}

impl Candidate {
    /// The member the certificate names (proven when [`Candidate::certificate_known`]).
    pub fn claimed_member(&self) -> MemberId {
        match &self.cert {
            CertificateState::Known(c) => c.cert.body().member_id,
            CertificateState::Unchecked { .. } => {
                self.join.claimed_member().unwrap_or(MemberId(u32::MAX))
            }
        }
    }

    pub fn group(&self) -> Ipv4Addr {
        self.join.claims().group
    }

    /// The IPv4 source: unproven until the join signature (which covers it) verifies.
    pub fn sender(&self) -> Ipv4Addr {
        self.sender
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// True when the certificate was checked earlier: verifying costs one signature, not two.
    pub fn certificate_known(&self) -> bool {
        matches!(self.cert, CertificateState::Known(_))
    }

    /// Bytes the join signature covers: hashing them is part of its check's cost.
    pub fn signed_len(&self) -> usize {
        self.join.signed_len()
    }
}

/// What the checks that cost no signature verification made of a datagram.
#[derive(Debug)]
pub enum Prechecked {
    /// Nothing left to check: plain IGMP ([`Accepted::Plain`]).
    Plain { sender: Ipv4Addr, message: IgmpRepr },
    /// A signed join whose signatures are still to check.
    Candidate(Box<Candidate>),
}

/// A candidate whose signatures verified, its claim not yet applied.
struct Authentic {
    candidate: Candidate,
    cert: Arc<CachedCertificate>,
}

/// The sans-IO join verifier: feed it datagrams with their arrival interface and `now`.
pub struct JoinVerifier {
    config: VerifierConfig,
    links: LinkTable,
    replay: ReplayCache,
    certificates: HashMap<Vec<u8>, Arc<CachedCertificate>>,
    ownership: OwnershipTable,
    /// Shared groups (a routed control group, SPEC.md §3.9): joins are verified like any, but
    /// no slice is owned, so none conflicts and none enters the ownership table.
    shared: Vec<Ipv4Addr>,
    metrics: VerifierMetrics,
    /// Whether the last batch had no bad signature: while forgeries keep coming, a batch
    /// would fail every time and cost half again a check per signature for nothing.
    batch_pays: bool,
}

impl core::fmt::Debug for JoinVerifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinVerifier")
            .field("config", &self.config)
            .field("replay_entries", &self.replay.len())
            .field("cached_certificates", &self.certificates.len())
            .finish_non_exhaustive()
    }
}

impl JoinVerifier {
    pub fn new(config: VerifierConfig, links: LinkTable) -> Self {
        // A copy of a join accepted at `t` with timestamp up to `t + w` is timely until `t + 2w`
        // inclusive: remember it (and a gone claim's epoch) one millisecond longer.
        let retention = config
            .timeliness_window
            .saturating_mul(2)
            .saturating_add(Duration::from_millis(1));
        JoinVerifier {
            replay: ReplayCache::with_share(
                config.replay_capacity,
                config.replay_per_member,
                retention,
            ),
            certificates: HashMap::new(),
            ownership: OwnershipTable::with_fence_retention(retention),
            shared: Vec::new(),
            metrics: VerifierMetrics::default(),
            batch_pays: true,
            links,
            config,
        }
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    pub fn set_links(&mut self, links: LinkTable) {
        self.links = links;
    }

    pub fn links(&self) -> &LinkTable {
        &self.links
    }

    pub fn metrics(&self) -> &VerifierMetrics {
        &self.metrics
    }

    pub fn ownership(&self) -> &OwnershipTable {
        &self.ownership
    }

    /// Whether the router vouches for `member` on `group`: it has fresh liveness evidence of it
    /// (SPEC.md §5.5). A later epoch does not take a vouched member's slices until it releases
    /// them (§5.2); when vouching stops, what waited on it is given.
    pub fn set_vouched(
        &mut self,
        now: impl Into<Clock>,
        group: Ipv4Addr,
        member: MemberId,
        vouched: bool,
    ) -> Option<OwnershipChange> {
        self.ownership.set_vouched(now, group, member, vouched)
    }

    /// Expires claims that were not refreshed (on `now.mono`); the router withdraws their
    /// kernel state. The replay cache and the fences follow `now.wall`, the clock the
    /// timeliness check judges copies by.
    pub fn expire(&mut self, now: impl Into<Clock>) -> Vec<OwnershipChange> {
        let now: Clock = now.into();
        self.replay.expire(now.wall);
        self.ownership.expire(now)
    }

    /// Keeps the claim a dropped, unverified copy claimed to refresh (it named `member` and
    /// came from `sender` on `ifindex`, where that member's claim on `group` is) for one
    /// `claim_hold` from `now`, as if it had been the refresh; returns whether a claim was held.
    /// A flood of copies the router cannot check all of so cannot expire a live member's
    /// claim; copies it does check and refuse hold nothing (SPEC.md §5.4).
    pub fn hold_unverified_refresh(
        &mut self,
        now: Instant,
        group: Ipv4Addr,
        member: MemberId,
        sender: Ipv4Addr,
        ifindex: u32,
    ) -> bool {
        let until = now.saturating_add(self.config.claim_hold);
        self.ownership.hold(group, member, sender, ifindex, until)
    }

    /// Keeps every claim for one `claim_hold` from `now`: datagrams were lost before anyone
    /// could look at them (the router's socket overflowed), so silence proves nothing until
    /// then. Returns how many claims were held.
    pub fn hold_all_unheard(&mut self, now: Instant) -> usize {
        let until = now.saturating_add(self.config.claim_hold);
        self.ownership.hold_all(until)
    }

    /// Drops every claim the group's current keys no longer back: its member key revoked, or
    /// its certificate's issuer no longer published (retired after a rotation). Called when the
    /// keys may have changed, so that a revocation ends a member's claims at the router within
    /// one keystore refresh instead of one claim hold after its last join (SPEC.md §9.7). A
    /// group whose keys cannot be had now keeps its claims: the key source's own staleness
    /// bound decides when joins stop being accepted, and claims then expire on their own.
    pub fn revalidate(
        &mut self,
        now: impl Into<Clock>,
        keys: &dyn KeySource,
    ) -> Vec<OwnershipChange> {
        let now: Clock = now.into();
        let groups: Vec<Ipv4Addr> = self.ownership.groups().collect();
        let current: HashMap<Ipv4Addr, Arc<GroupKeys>> = groups
            .into_iter()
            .filter_map(|g| Some((g, keys.group_keys(g, now.wall).ok()?)))
            .collect();
        self.ownership.drop_where(now, |group, _, claim| {
            current.get(&group).is_some_and(|k| {
                k.revoked_members.contains(&claim.member_key)
                    || !k.keys.iter().any(|gk| gk.id == claim.issuer)
            })
        })
    }

    /// Makes `groups` shared (SPEC.md §3.9): their joins get every check but slice ownership
    /// (signature, certificate and its group, validity, timeliness, the proper link, replay,
    /// the claim within the certificate); an accepted one changes no ownership. The caller
    /// keeps who joined. `groups` should be protected too, or their joins pass as plain IGMP.
    pub fn set_shared(&mut self, groups: Vec<Ipv4Addr>) {
        self.shared = groups;
    }

    /// Whether `group` is shared ([`JoinVerifier::set_shared`]).
    pub fn is_shared(&self, group: Ipv4Addr) -> bool {
        self.shared.contains(&group)
    }

    pub fn is_protected(&self, group: Ipv4Addr) -> bool {
        self.config.protected.iter().any(|s| s.contains_addr(group))
    }

    /// Runs one IPv4 datagram (header included) received on `ifindex` through the pipeline.
    /// `now.wall` judges timeliness and validity; a claim lasts `claim_hold` of `now.mono`.
    pub fn handle_datagram(
        &mut self,
        now: impl Into<Clock>,
        ifindex: u32,
        datagram: &[u8],
        keys: &dyn KeySource,
    ) -> Result<Accepted, Rejection> {
        let now: Clock = now.into();
        match self.precheck(now.wall, ifindex, datagram, keys)? {
            Prechecked::Plain { sender, message } => Ok(Accepted::Plain { sender, message }),
            Prechecked::Candidate(c) => self
                .verify(now, vec![*c])
                .pop()
                .expect("one result per candidate"),
        }
    }

    /// Like [`JoinVerifier::handle_datagram`] for a burst that arrived together: the join
    /// signatures are checked in one batch (falling back to one by one when the batch fails, to
    /// find the bad ones), then the joins are applied in arrival order.
    pub fn handle_burst(
        &mut self,
        now: impl Into<Clock>,
        datagrams: &[(u32, &[u8])],
        keys: &dyn KeySource,
    ) -> Vec<Result<Accepted, Rejection>> {
        let now: Clock = now.into();
        let mut out: Vec<Option<Result<Accepted, Rejection>>> = Vec::new();
        let mut candidates = Vec::new();
        let mut slots = Vec::new();
        for &(ifindex, d) in datagrams {
            match self.precheck(now.wall, ifindex, d, keys) {
                Ok(Prechecked::Plain { sender, message }) => {
                    out.push(Some(Ok(Accepted::Plain { sender, message })))
                }
                Ok(Prechecked::Candidate(c)) => {
                    slots.push(out.len());
                    out.push(None);
                    candidates.push(*c);
                }
                Err(r) => out.push(Some(Err(r))),
            }
        }
        for (slot, result) in slots.into_iter().zip(self.verify(now, candidates)) {
            out[slot] = Some(result);
        }
        out.into_iter()
            .map(|r| r.expect("every slot filled"))
            .collect()
    }

    fn count(&mut self, result: &Result<Accepted, Rejection>) {
        match result {
            Ok(Accepted::Plain { .. }) => self.metrics.accepted_plain += 1,
            Ok(Accepted::Join { .. }) => self.metrics.accepted_joins += 1,
            Err(r) => self.metrics.rejected[r.reason.index()] += 1,
        }
    }

    /// Every check that costs no signature verification (SPEC.md §5 steps 1-11, and 13-15 for
    /// a certificate checked before), each bounded by the caps of SPEC.md §3.7. A plain message
    /// and a refusal are final (and counted); a candidate goes on to [`JoinVerifier::verify`].
    pub fn precheck(
        &mut self,
        now: Timestamp,
        ifindex: u32,
        datagram: &[u8],
        keys: &dyn KeySource,
    ) -> Result<Prechecked, Rejection> {
        let result = self.precheck_inner(now, ifindex, datagram, keys);
        match &result {
            Ok(Prechecked::Plain { .. }) => self.metrics.accepted_plain += 1,
            Ok(Prechecked::Candidate(_)) => {}
            Err(r) => self.metrics.rejected[r.reason.index()] += 1,
        }
        result
    }

    fn precheck_inner(
        &mut self,
        now: Timestamp,
        ifindex: u32,
        datagram: &[u8],
        keys: &dyn KeySource,
    ) -> Result<Prechecked, Rejection> {
        if datagram.len() > MAX_JOIN_DATAGRAM {
            // Before anything is parsed: a reassembled datagram can be 64 KiB.
            return Err(Rejection::new(
                Reason::TooLarge,
                format!(
                    "datagram of {} bytes, more than the {MAX_JOIN_DATAGRAM} parsed",
                    datagram.len()
                ),
            ));
        }
        let ip = Ipv4Packet::new_checked(datagram).map_err(malformed)?;
        let sender = ip.src_addr();
        let with_sender = |mut r: Rejection| {
            r.sender = Some(sender);
            r
        };
        if ip.protocol() != PROTOCOL_IGMP {
            return Err(with_sender(malformed(WireError::Unsupported("not IGMP"))));
        }
        if ip.is_fragment() {
            return Err(with_sender(malformed(WireError::Malformed(
                "fragmented IGMP",
            ))));
        }
        let igmp = IgmpPacket::new_checked(ip.payload()).map_err(|e| with_sender(malformed(e)))?;
        if !igmp.verify_checksum() {
            return Err(with_sender(Rejection::new(
                Reason::BadChecksum,
                "IGMP checksum does not verify",
            )));
        }
        let message = IgmpRepr::parse(&igmp).map_err(|e| with_sender(malformed(e)))?;
        let v2_group = match &message {
            IgmpRepr::V1Report { group }
            | IgmpRepr::V2Report { group }
            | IgmpRepr::V2Leave { group } => Some(*group),
            _ => None,
        };
        if let Some(group) = v2_group.filter(|g| self.is_protected(*g)) {
            return Err(with_sender(Rejection::new(
                Reason::Unsigned,
                format!("IGMPv1/v2 message for protected group {group}"),
            )));
        }
        // Only a v3 report can carry a signed join. Queries (another querier's, which the
        // election needs) and v1/v2 messages for public groups are plain IGMP.
        if !matches!(message, IgmpRepr::V3Report(_)) {
            return Ok(Prechecked::Plain { sender, message });
        }
        let join = match UnverifiedJoin::parse(&igmp, |g| self.is_protected(g)) {
            Ok(None) => return Ok(Prechecked::Plain { sender, message }),
            Ok(Some(join)) => join,
            Err(e) => return Err(with_sender(parse_rejection(e))),
        };
        let claims = join.claims();
        let claimed_member = join.claimed_member().unwrap_or(MemberId(u32::MAX));
        if self.replay.contains(claimed_member, &claims.nonce) {
            return Err(with_sender(Rejection::new(
                Reason::Duplicate,
                format!("nonce already seen from {claimed_member}"),
            )));
        }
        if now.abs_diff(claims.timestamp) > self.config.timeliness_window {
            return Err(with_sender(Rejection::new(
                Reason::Untimely,
                format!(
                    "timestamp {} is {:?} from now {}",
                    claims.timestamp,
                    now.abs_diff(claims.timestamp),
                    now
                ),
            )));
        }
        if ip.ttl() != 1 || !self.links.on_link(ifindex, sender) {
            return Err(with_sender(Rejection::new(
                Reason::WrongLink,
                format!("from {sender} with TTL {} on interface {ifindex}", ip.ttl()),
            )));
        }
        let group = claims.group;
        let group_keys = keys.group_keys(group, now).map_err(|e| {
            with_sender(match e {
                KeyLookupError::UnknownGroup => {
                    Rejection::new(Reason::UnknownGroup, format!("no keys for {group}"))
                }
                other => Rejection::new(Reason::KeyUnavailable, other.to_string()),
            })
        })?;
        let cert = self
            .known_certificate(&join, &group_keys, now)
            .map_err(with_sender)?;
        let public_records = match message {
            IgmpRepr::V3Report(r) => r
                .records
                .into_iter()
                .filter(|r| !self.is_protected(r.group))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Prechecked::Candidate(Box::new(Candidate {
            join,
            cert,
            keys: group_keys,
            sender,
            ifindex,
            public_records,
        })))
    }

    /// The cheap part of the certificate chain: a certificate checked before (cached by its
    /// exact bytes, its issuer still published) passes the revocation, validity and group
    /// checks here; any other must lay out well within the caps and name a published issuer,
    /// and is decoded and checked in [`JoinVerifier::verify`].
    fn known_certificate(
        &mut self,
        join: &UnverifiedJoin,
        keys: &GroupKeys,
        now: Timestamp,
    ) -> Result<CertificateState, Rejection> {
        if let Some(hit) = self.cached_certificate(join.certificate_bytes(), keys) {
            commit::admit_certificate(&hit, keys, join.claims().group, now)?;
            return Ok(CertificateState::Known(hit));
        }
        let issuer_id = peek_issuer(join.certificate_bytes()).map_err(cert_rejection)?;
        let Some(issuer) = keys.keys.iter().find(|k| k.id == issuer_id) else {
            return Err(Rejection::new(
                Reason::UnknownKey,
                format!(
                    "certificate issuer {issuer_id} is not a published key of {}",
                    keys.group
                ),
            ));
        };
        Ok(CertificateState::Unchecked { issuer: issuer.key })
    }

    fn cached_certificate(
        &mut self,
        bytes: &[u8],
        keys: &GroupKeys,
    ) -> Option<Arc<CachedCertificate>> {
        let hit = self
            .certificates
            .get(bytes)
            .filter(|hit| keys.keys.iter().any(|k| k.key == hit.issuer))
            .cloned()?;
        self.metrics.certificate_cache_hits += 1;
        Some(hit)
    }
}

fn malformed(e: WireError) -> Rejection {
    Rejection::new(Reason::Malformed, e.to_string())
}

fn parse_rejection(e: JoinParseError) -> Rejection {
    let reason = match &e {
        JoinParseError::Unsigned => Reason::Unsigned,
        JoinParseError::TooManySlices(_) => Reason::TooLarge,
        JoinParseError::RecordMismatch(_) => Reason::RecordMismatch,
        _ => Reason::MalformedExtension,
    };
    Rejection::new(reason, e.to_string())
}

pub(crate) fn cert_rejection(e: CertificateError) -> Rejection {
    let reason = match e {
        CertificateError::NotValidNow { .. } => Reason::CertificateExpired,
        CertificateError::TooManySlices(_)
        | CertificateError::TooManySlices6(_)
        | CertificateError::TooLong(_)
        | CertificateError::TooComplex(_) => Reason::TooLarge,
        _ => Reason::BadCertificate,
    };
    Rejection::new(reason, e.to_string())
}

/// The replay checks a verified join passes before it changes anything, for IGMPv3 and MLDv2
/// alike (SPEC.md §5.2): a nonce seen from `member` is `duplicate`; without room for one more
/// entry (the member's share, or the whole cache) it is `replay-cache-full`. The detail is for
/// the caller's [`Rejection`].
pub(crate) fn replay_admission(
    replay: &mut ReplayCache,
    now: Timestamp,
    member: MemberId,
    nonce: &[u8; crate::join::NONCE_LEN],
) -> Result<(), (Reason, String)> {
    if replay.contains(member, nonce) {
        return Err((
            Reason::Duplicate,
            format!("nonce already seen from {member}"),
        ));
    }
    replay.room_for(now, member).map_err(|full| match full {
        Full::Member(n) => (
            Reason::ReplayCacheFull,
            format!("{member} already has its share of {n} live replay entries"),
        ),
        Full::Total(n) => (
            Reason::ReplayCacheFull,
            format!("replay cache full of {n} live entries"),
        ),
    })
}

/// The expensive part: certificate and join signatures, then the claim.
#[path = "verify_commit.rs"]
mod commit;
#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
