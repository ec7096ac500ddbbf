//! The per-datagram checks of an MLDv2 signed join (SPEC.md §3.8, §5): the IPv6 counterpart of
//! [`crate::verify::JoinVerifier::precheck`] and of the signature and slice checks of
//! `verify_commit.rs`, with the same [`Reason`]s. Only this module constructs a
//! [`VerifiedMldJoin`].
//!
//! The checks come in two parts, as IGMPv3's: [`precheck_mld_datagram`] costs no signature
//! (a router's admission policy decides which of its [`SignedMld`]s get the rest), and
//! [`finish_mld_join`] checks the signature and the slices with the member's grant. The router's
//! grant is [`crate::mld_verifier::MldJoinVerifier`]'s certificate chain over the IPv6 section
//! of the join's certificate; [`verify_mld_datagram`] runs both parts with a [`GrantSource6`].
//! Duplicate, stale-epoch and slice-conflict checks are the stateful `MldJoinVerifier`'s, which
//! takes a [`VerifiedMldJoin`].

use crate::cert::{KeyId, MemberId};
use crate::join::{AllocationEpoch, JoinParseError};
use crate::mld_join::{is_link_local, UnverifiedMldJoin, MAX_MLD_JOIN_DATAGRAM};
use crate::slice::{Slice6, SliceSet6, StepBudget, TooComplex};
use crate::time::Timestamp;
use crate::verify::{Reason, Rejection};
use crate::wire::ipv6::{Ipv6Packet, NEXT_HEADER_ICMPV6, ROUTER_ALERT_MLD};
use crate::wire::mld::{MldPacket, MldRepr};
use crate::wire::record::{GroupRecordRepr, RecordType};
use crate::wire::WireError;
use core::net::Ipv6Addr;
use core::time::Duration;
use ed25519_dalek::VerifyingKey;

/// Tunables of the MLDv2 checks; the defaults match the IGMPv3 verifier's (SPEC.md §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MldVerifierConfig {
    /// A join is timely when |now − timestamp| ≤ this.
    pub timeliness_window: Duration,
    /// Groups that need signed joins. Default: the global-scope SSM range ff3e::/32
    /// (RFC 4607 §1).
    pub protected: Vec<Slice6>,
}

impl Default for MldVerifierConfig {
    fn default() -> Self {
        MldVerifierConfig {
            timeliness_window: Duration::from_secs(30),
            protected: vec![Slice6::prefix(
                Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0, 0),
                32,
            )],
        }
    }
}

impl MldVerifierConfig {
    pub fn is_protected(&self, group: Ipv6Addr) -> bool {
        self.protected.iter().any(|s| s.contains_addr(group))
    }
}

/// The router's IPv6 links: the on-link prefixes of each interface. A join is on its proper
/// link when the prefix it signed (LINK) is one of the arrival interface's.
#[derive(Debug, Clone, Default)]
pub struct LinkTable6 {
    links: Vec<(u32, Slice6)>,
}

impl LinkTable6 {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, ifindex: u32, prefix: Slice6) {
        self.links.push((ifindex, prefix));
    }

    /// True when `prefix` is an on-link prefix of `ifindex`.
    pub fn has_prefix(&self, ifindex: u32, prefix: &Slice6) -> bool {
        self.links.iter().any(|(i, p)| *i == ifindex && p == prefix)
    }
}

/// What a member may do on an IPv6 group, as its checked certificate says: the key that signs
/// its joins and the slices it may claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberGrant6 {
    pub member: MemberId,
    pub member_key: VerifyingKey,
    /// The group key that certified the member (a claim lasts while it is published).
    pub issuer: KeyId,
    pub slices: SliceSet6,
}

/// Where the checks get a member's grant from the certificate bytes a join carries: the
/// certificate chain (SPEC.md §5 steps 8-15) for IPv6 groups. Refusals carry the IGMPv3
/// pipeline's reasons (`unknown-group`, `key-unavailable`, `unknown-key`, `bad-certificate`,
/// `certificate-expired`, `revoked`, `group-not-allowed`). Must answer from memory.
pub trait GrantSource6 {
    fn grant(
        &self,
        group: Ipv6Addr,
        certificate: &[u8],
        now: Timestamp,
    ) -> Result<MemberGrant6, Rejection>;
}

/// An MLDv2 join whose every per-datagram check passed. Only [`verify_mld_datagram`] makes these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMldJoin {
    member: MemberId,
    member_key: KeyId,
    issuer: KeyId,
    group: Ipv6Addr,
    sender: Ipv6Addr,
    ifindex: u32,
    link: Slice6,
    slices: SliceSet6,
    /// The units the member takes at `epoch` if their owner fails (SPEC.md §5.5), within its
    /// grant like `slices`.
    standby: SliceSet6,
    liveness: Vec<crate::liveness::LivenessAnchor>,
    epoch: AllocationEpoch,
    timestamp: Timestamp,
    record_type: RecordType,
    nonce: [u8; crate::join::NONCE_LEN],
}

impl VerifiedMldJoin {
    pub fn member(&self) -> MemberId {
        self.member
    }
    /// The key id of the member key that signed the join.
    pub fn member_key(&self) -> KeyId {
        self.member_key
    }
    /// The group key that certified the member.
    pub fn issuer(&self) -> KeyId {
        self.issuer
    }
    pub fn group(&self) -> Ipv6Addr {
        self.group
    }
    /// The link-local source, which the signature covers.
    pub fn sender(&self) -> Ipv6Addr {
        self.sender
    }
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
    /// The on-link prefix the member signed for.
    pub fn link(&self) -> Slice6 {
        self.link
    }
    /// The member's whole claim on the group (empty for a leave).
    pub fn slices(&self) -> &SliceSet6 {
        &self.slices
    }
    /// The units it stands by for at its epoch (SPEC.md §5.5).
    pub fn standby(&self) -> &SliceSet6 {
        &self.standby
    }
    /// Where its liveness beacons stand, as the join names them; empty: it names none.
    pub fn liveness(&self) -> &[crate::liveness::LivenessAnchor] {
        &self.liveness
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
    /// For the replay cache, which remembers (member, nonce).
    pub fn nonce(&self) -> &[u8; crate::join::NONCE_LEN] {
        &self.nonce
    }
}

/// What the router may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptedMld {
    /// A message that concerns no protected group: handle it as plain MLD.
    Plain { sender: Ipv6Addr, message: MldRepr },
    /// A verified join and the report's other (public) records.
    Join {
        join: VerifiedMldJoin,
        public_records: Vec<GroupRecordRepr<Ipv6Addr>>,
    },
}

fn reject(reason: Reason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
        sender: None,
    }
}

fn malformed(e: WireError) -> Rejection {
    reject(Reason::Malformed, e.to_string())
}

fn parse_rejection(e: JoinParseError) -> Rejection {
    let reason = match &e {
        JoinParseError::Unsigned => Reason::Unsigned,
        JoinParseError::TooManySlices(_) => Reason::TooLarge,
        JoinParseError::RecordMismatch(_) => Reason::RecordMismatch,
        _ => Reason::MalformedExtension,
    };
    reject(reason, e.to_string())
}

/// An MLDv2 signed join that passed every per-datagram check that costs no signature and
/// builds no slice set ([`precheck_mld_datagram`]). Its accessors are claims, not yet proven;
/// the rest is [`finish_mld_join`] with the member's grant.
#[derive(Debug, Clone)]
pub struct SignedMld {
    join: UnverifiedMldJoin,
    sender: Ipv6Addr,
    ifindex: u32,
    public_records: Vec<GroupRecordRepr<Ipv6Addr>>,
}

impl SignedMld {
    /// The join as parsed.
    pub fn join(&self) -> &UnverifiedMldJoin {
        &self.join
    }
    pub fn group(&self) -> Ipv6Addr {
        self.join.claims().group
    }
    /// The link-local source: unproven until the join signature (which covers it) verifies.
    pub fn sender(&self) -> Ipv6Addr {
        self.sender
    }
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
    /// The member the certificate names, read without decoding it (`u32::MAX` when it cannot
    /// be read: the certificate check will refuse it).
    pub fn claimed_member(&self) -> MemberId {
        self.join.claimed_member().unwrap_or(MemberId(u32::MAX))
    }
    /// Bytes the join signature covers: hashing them is part of its check's cost.
    pub fn signed_len(&self) -> usize {
        self.join.signed_len()
    }
}

/// What the checks that cost no signature made of an MLD datagram.
#[derive(Debug, Clone)]
pub enum PrecheckedMld {
    /// A message that concerns no protected group: handle it as plain MLD.
    Plain { sender: Ipv6Addr, message: MldRepr },
    /// A signed join whose grant and signature are still to check.
    Signed(Box<SignedMld>),
}

/// The per-datagram checks of SPEC.md §5 that cost no signature, in its order: size, IPv6 and
/// MLD structure, checksum, public/private policy, extension structure, timeliness, proper link
/// (hop limit 1, Router Alert, link-local sender, the signed LINK prefix on `ifindex`).
/// Refusals name the sender in the detail (`Rejection::sender` holds IPv4 senders only).
pub fn precheck_mld_datagram(
    now: Timestamp,
    ifindex: u32,
    datagram: &[u8],
    config: &MldVerifierConfig,
    links: &LinkTable6,
) -> Result<PrecheckedMld, Rejection> {
    if datagram.len() > MAX_MLD_JOIN_DATAGRAM {
        return Err(reject(
            Reason::TooLarge,
            format!(
                "datagram of {} bytes, more than the {MAX_MLD_JOIN_DATAGRAM} parsed",
                datagram.len()
            ),
        ));
    }
    let ip = Ipv6Packet::new_checked(datagram).map_err(malformed)?;
    let sender = ip.src_addr();
    let from = |r: Rejection| from_sender(sender, r);
    if ip.upper_layer_protocol() != NEXT_HEADER_ICMPV6 {
        return Err(from(malformed(WireError::Unsupported("not ICMPv6"))));
    }
    let mld = MldPacket::new_checked(ip.payload()).map_err(|e| from(malformed(e)))?;
    if !mld.verify_checksum(sender, ip.dst_addr()) {
        return Err(from(reject(
            Reason::BadChecksum,
            "ICMPv6 checksum does not verify",
        )));
    }
    let message = MldRepr::parse(&mld).map_err(|e| from(malformed(e)))?;
    let v1_group = match &message {
        MldRepr::V1Report { group } | MldRepr::V1Done { group } => Some(*group),
        _ => None,
    };
    if let Some(group) = v1_group.filter(|g| config.is_protected(*g)) {
        return Err(from(reject(
            Reason::Unsigned,
            format!("MLDv1 message for protected group {group}"),
        )));
    }
    if !matches!(message, MldRepr::V2Report(_)) {
        return Ok(PrecheckedMld::Plain { sender, message });
    }
    let join = match UnverifiedMldJoin::parse(&mld, |g| config.is_protected(g)) {
        Ok(None) => return Ok(PrecheckedMld::Plain { sender, message }),
        Ok(Some(join)) => join,
        Err(e) => return Err(from(parse_rejection(e))),
    };
    let claims = join.claims();
    if now.abs_diff(claims.timestamp) > config.timeliness_window {
        return Err(from(reject(
            Reason::Untimely,
            format!(
                "timestamp {} is {:?} from now {now}",
                claims.timestamp,
                now.abs_diff(claims.timestamp)
            ),
        )));
    }
    if ip.hop_limit() != 1
        || ip.router_alert() != Some(ROUTER_ALERT_MLD)
        || !is_link_local(sender)
        || !links.has_prefix(ifindex, &claims.link)
    {
        return Err(from(reject(
            Reason::WrongLink,
            format!(
                "hop limit {}, router alert {:?}, link {} on interface {ifindex}",
                ip.hop_limit(),
                ip.router_alert(),
                claims.link
            ),
        )));
    }
    let public_records = match message {
        MldRepr::V2Report(r) => r
            .records
            .into_iter()
            .filter(|r| !config.is_protected(r.group))
            .collect(),
        _ => Vec::new(),
    };
    Ok(PrecheckedMld::Signed(Box::new(SignedMld {
        join,
        sender,
        ifindex,
        public_records,
    })))
}

/// The expensive rest for a join past [`precheck_mld_datagram`], given the member's grant (its
/// certificate checked): the join signature, then the claim's slice set (built only now,
/// within its budget) inside the grant.
pub fn finish_mld_join(signed: SignedMld, grant: &MemberGrant6) -> Result<AcceptedMld, Rejection> {
    let SignedMld {
        join,
        sender,
        ifindex,
        public_records,
    } = signed;
    let from = |r: Rejection| from_sender(sender, r);
    if !join.signature_verifies(sender, &grant.member_key) {
        return Err(from(reject(
            Reason::BadSignature,
            format!("MLDv2 join signature of {} does not verify", grant.member),
        )));
    }
    let claims = join.claims();
    // The entries are the member's choice: built within a budget linear in the entries and
    // the grant's slices (SPEC.md §3.7), after the signature.
    let too_large = |e: TooComplex| from(reject(Reason::TooLarge, e.to_string()));
    let mut budget =
        StepBudget::for_slices(claims.entries.len() + claims.standby.len() + grant.slices.len());
    let slices = crate::join::effective_slices(&claims.entries, &mut budget).map_err(too_large)?;
    let outside = slices
        .try_difference(&grant.slices, &mut budget)
        .map_err(too_large)?;
    if !outside.is_empty() {
        return Err(from(reject(
            Reason::OutsideCertificate,
            format!("claims {outside} beyond the certificate's slices"),
        )));
    }
    // Standby units are what the member would own: the grant bounds them alike.
    let standby = crate::join::effective_slices(&claims.standby, &mut budget).map_err(too_large)?;
    let outside = standby
        .try_difference(&grant.slices, &mut budget)
        .map_err(too_large)?;
    if !outside.is_empty() {
        return Err(from(reject(
            Reason::OutsideCertificate,
            format!("stands by for {outside} beyond the certificate's slices"),
        )));
    }
    Ok(AcceptedMld::Join {
        join: VerifiedMldJoin {
            member: grant.member,
            member_key: KeyId::of(&grant.member_key),
            issuer: grant.issuer,
            group: claims.group,
            sender,
            ifindex,
            link: claims.link,
            slices,
            standby,
            liveness: claims.liveness.clone(),
            epoch: claims.epoch,
            timestamp: claims.timestamp,
            record_type: claims.record_type,
            nonce: claims.nonce,
        },
        public_records,
    })
}

/// `r` with the sender it came from in its detail.
pub(crate) fn from_sender(sender: Ipv6Addr, mut r: Rejection) -> Rejection {
    r.detail = format!("from {sender}: {}", r.detail);
    r
}

/// Runs one IPv6 datagram (headers included) received on `ifindex` through every check, in the
/// order of SPEC.md §5: [`precheck_mld_datagram`], the grant, then [`finish_mld_join`].
pub fn verify_mld_datagram(
    now: Timestamp,
    ifindex: u32,
    datagram: &[u8],
    config: &MldVerifierConfig,
    links: &LinkTable6,
    grants: &dyn GrantSource6,
) -> Result<AcceptedMld, Rejection> {
    let signed = match precheck_mld_datagram(now, ifindex, datagram, config, links)? {
        PrecheckedMld::Plain { sender, message } => {
            return Ok(AcceptedMld::Plain { sender, message })
        }
        PrecheckedMld::Signed(s) => s,
    };
    let grant = grants
        .grant(signed.group(), signed.join.certificate_bytes(), now)
        .map_err(|r| from_sender(signed.sender, r))?;
    finish_mld_join(*signed, &grant)
}
