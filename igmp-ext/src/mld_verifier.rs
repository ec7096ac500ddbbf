//! The router's stateful MLDv2 join verifier (issue 15, item 2): the IPv6 counterpart of
//! [`crate::verify::JoinVerifier`], split the same way into a cheap part
//! ([`MldJoinVerifier::precheck`], which makes an [`MldCandidate`]) and an expensive part
//! ([`MldJoinVerifier::verify`]), so that a router's admission policy decides which candidates
//! get signature checks (SPEC.md §5.4). Member rights come from the join's own certificate (its
//! IPv6 section, checked against the group's published keys); the per-datagram checks are
//! [`precheck_mld_datagram`]'s and [`finish_mld_join`]'s; then the duplicate check, the replay
//! cache's room, and slice exclusivity and epoch fencing in an [`OwnershipTable6`], by the same
//! rules as IGMPv3 (SPEC.md §5.2, §5.6).

use crate::cert::{peek_issuer, KeyId, MemberCertificate, MemberId, UnverifiedCertificate};
use crate::ownership::{Claim6, ClaimError, OwnershipChange6, OwnershipTable6};
use crate::replay::ReplayCache;
use crate::slice::SliceSet6;
use crate::time::{Clock, Instant, Timestamp};
use crate::verify::{
    cert_rejection, replay_admission, GroupKey, KeyLookupError, Reason, Rejection, VerifierConfig,
    VerifierMetrics,
};
use crate::verify6::{
    finish_mld_join, from_sender, precheck_mld_datagram, AcceptedMld, LinkTable6, MemberGrant6,
    MldVerifierConfig, PrecheckedMld, SignedMld, VerifiedMldJoin,
};
use crate::wire::mld::MldRepr;
use crate::wire::record::GroupRecordRepr;
use core::net::Ipv6Addr;
use core::time::Duration;
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;
use std::sync::Arc;

/// An IPv6 group's published keys and revocations, already validated by whoever fetched them
/// (as [`crate::verify::GroupKeys`] for an IPv4 group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKeys6 {
    pub group: Ipv6Addr,
    /// Currently valid group keys (more than one during a rotation).
    pub keys: Vec<GroupKey>,
    /// Key ids of revoked member keys.
    pub revoked_members: Vec<KeyId>,
}

/// Where the MLDv2 verifier gets an IPv6 group's keys: the keystore client's validated cache.
/// Called once per protected join, so it must answer from memory.
pub trait KeySource6 {
    fn group_keys6(
        &self,
        group: Ipv6Addr,
        now: Timestamp,
    ) -> Result<Arc<GroupKeys6>, KeyLookupError>;
}

impl KeySource6 for HashMap<Ipv6Addr, Arc<GroupKeys6>> {
    fn group_keys6(
        &self,
        group: Ipv6Addr,
        _now: Timestamp,
    ) -> Result<Arc<GroupKeys6>, KeyLookupError> {
        self.get(&group)
            .cloned()
            .ok_or(KeyLookupError::UnknownGroup)
    }
}

/// A certificate whose issuer's signature verified, with that issuer.
type Checked6 = Arc<(MemberCertificate, VerifyingKey)>;

/// Certificates whose issuer's signature verified, by their exact bytes, so that a member's
/// refresh costs one signature check (its join's), not two. A hit counts only while the key
/// that signed it is still published; validity, revocation and the group are checked at every
/// use. Cleared when full, as the IGMPv3 verifier's cache.
#[derive(Debug, Default)]
pub struct CertificateCache6 {
    entries: HashMap<Vec<u8>, Checked6>,
    capacity: usize,
    hits: u64,
}

impl CertificateCache6 {
    pub fn new(capacity: usize) -> Self {
        CertificateCache6 {
            capacity,
            ..Self::default()
        }
    }

    /// Joins whose certificate came from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// The certificate checked earlier with these exact bytes, if its issuer is still one of
    /// `keys`.
    fn get(&mut self, bytes: &[u8], keys: &GroupKeys6) -> Option<Checked6> {
        let hit = self
            .entries
            .get(bytes)
            .filter(|e| keys.keys.iter().any(|k| k.key == e.1))
            .cloned()?;
        self.hits += 1;
        Some(hit)
    }

    fn insert(&mut self, bytes: &[u8], entry: Checked6) {
        if self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        self.entries.insert(bytes.to_vec(), entry);
    }
}

/// The group's keys, or the refusal that says why there are none.
fn group_keys(
    keys: &dyn KeySource6,
    group: Ipv6Addr,
    now: Timestamp,
) -> Result<Arc<GroupKeys6>, Rejection> {
    keys.group_keys6(group, now).map_err(|e| match e {
        KeyLookupError::UnknownGroup => {
            Rejection::new(Reason::UnknownGroup, format!("no keys for {group}"))
        }
        other => Rejection::new(Reason::KeyUnavailable, other.to_string()),
    })
}

/// What a checked certificate grants on `group` now: refused when it is not valid now, its
/// member key is revoked, or it does not name `group` among its IPv6 groups (a version 1
/// certificate names none). The grant is the certificate's IPv6 section.
fn grant_of(
    entry: &Checked6,
    keys: &GroupKeys6,
    group: Ipv6Addr,
    now: Timestamp,
) -> Result<MemberGrant6, Rejection> {
    let (cert, issuer) = (&entry.0, &entry.1);
    cert.check_validity(now).map_err(cert_rejection)?;
    let body = cert.body();
    let member_key = KeyId::of(&body.member_key);
    if keys.revoked_members.contains(&member_key) {
        return Err(Rejection::new(
            Reason::Revoked,
            format!("member key {member_key} is revoked"),
        ));
    }
    if !cert.ipv6().groups.contains(&group) {
        return Err(Rejection::new(
            Reason::GroupNotAllowed,
            format!("{} is not certified for {group}", body.member_id),
        ));
    }
    Ok(MemberGrant6 {
        member: body.member_id,
        member_key: body.member_key,
        issuer: KeyId::of(issuer),
        slices: cert.ipv6().slices.clone(),
    })
}

/// The certificate an [`MldCandidate`] carries: checked already (a cache hit, its grant taken),
/// or laid out well and naming a published issuer, its signature still to check.
#[derive(Debug)]
enum Certificate6 {
    Known(MemberGrant6),
    Unchecked { issuer: VerifyingKey },
}

/// An MLDv2 signed join that passed every check that costs no signature verification (SPEC.md
/// §5 steps 1-12, and 14-16 for a certificate checked before). What is left is
/// [`MldJoinVerifier::verify`]. Its accessors are claims, not yet proven; a router uses them only
/// to decide which candidates get verification work first.
#[derive(Debug)]
pub struct MldCandidate {
    signed: SignedMld,
    keys: Arc<GroupKeys6>,
    cert: Certificate6,
}

impl MldCandidate {
    /// The member the certificate names (proven when [`MldCandidate::certificate_known`]).
    pub fn claimed_member(&self) -> MemberId {
        match &self.cert {
            Certificate6::Known(grant) => grant.member,
            Certificate6::Unchecked { .. } => self.signed.claimed_member(),
        }
    }

    pub fn group(&self) -> Ipv6Addr {
        self.signed.group()
    }

    /// The link-local source: unproven until the join signature (which covers it) verifies.
    pub fn sender(&self) -> Ipv6Addr {
        self.signed.sender()
    }

    pub fn ifindex(&self) -> u32 {
        self.signed.ifindex()
    }

    /// True when the certificate was checked earlier: verifying costs one signature, not two.
    pub fn certificate_known(&self) -> bool {
        matches!(self.cert, Certificate6::Known(_))
    }

    /// Bytes the join signature covers: hashing them is part of its check's cost.
    pub fn signed_len(&self) -> usize {
        self.signed.signed_len()
    }
}

/// What the checks that cost no signature verification made of an MLDv2 datagram.
#[derive(Debug)]
pub enum MldPrechecked {
    /// Nothing left to check: plain MLD ([`MldOutcome::Plain`]).
    Plain { sender: Ipv6Addr, message: MldRepr },
    /// A signed join whose signatures are still to check.
    Candidate(Box<MldCandidate>),
}

/// What an MLDv2 datagram did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MldOutcome {
    /// A message that concerns no protected group: handle it as plain MLD.
    Plain { sender: Ipv6Addr, message: MldRepr },
    /// A verified join now in the ownership table, what it changed there, and the report's
    /// other (public) records.
    Join {
        /// Boxed: with its standby units and anchors it is far larger than a plain message.
        join: Box<VerifiedMldJoin>,
        change: OwnershipChange6,
        public_records: Vec<GroupRecordRepr<Ipv6Addr>>,
    },
}

/// Verifies MLDv2 joins and keeps who owns which IPv6 slices. Sans-IO: bytes and `now` in.
#[derive(Debug)]
pub struct MldJoinVerifier {
    config: MldVerifierConfig,
    /// Claim lifetime, replay cache sizes: the IGMPv3 verifier's settings.
    claim_hold: Duration,
    links: LinkTable6,
    replay: ReplayCache,
    ownership: OwnershipTable6,
    certificates: CertificateCache6,
    metrics: VerifierMetrics,
}

impl MldJoinVerifier {
    /// A verifier with the checks of `config`, on `links`, whose claims last and whose replay
    /// cache is sized as `limits` says for IGMPv3 (one set of settings for both families).
    pub fn new(config: MldVerifierConfig, limits: &VerifierConfig, links: LinkTable6) -> Self {
        // As for IGMPv3: a copy stays timely for two windows; remember it one ms longer.
        let retention = config
            .timeliness_window
            .saturating_mul(2)
            .saturating_add(Duration::from_millis(1));
        MldJoinVerifier {
            replay: ReplayCache::with_share(
                limits.replay_capacity,
                limits.replay_per_member,
                retention,
            ),
            ownership: OwnershipTable6::with_fence_retention(retention),
            certificates: CertificateCache6::new(limits.certificate_cache),
            metrics: VerifierMetrics::default(),
            claim_hold: limits.claim_hold,
            links,
            config,
        }
    }

    pub fn config(&self) -> &MldVerifierConfig {
        &self.config
    }

    pub fn links(&self) -> &LinkTable6 {
        &self.links
    }

    pub fn set_links(&mut self, links: LinkTable6) {
        self.links = links;
    }

    pub fn ownership(&self) -> &OwnershipTable6 {
        &self.ownership
    }

    /// Whether the router vouches for `member` on the IPv6 `group` (its beacons are fresh,
    /// SPEC.md §5.5), as [`crate::verify::JoinVerifier::set_vouched`]: a later epoch does not
    /// take a vouched member's slices until it releases them; when vouching stops, what waited
    /// on it is given.
    pub fn set_vouched(
        &mut self,
        now: impl Into<Clock>,
        group: Ipv6Addr,
        member: MemberId,
        vouched: bool,
    ) -> Option<OwnershipChange6> {
        self.ownership.set_vouched(now, group, member, vouched)
    }

    /// Counts of accepted and refused MLDv2 messages, by reason.
    pub fn metrics(&self) -> &VerifierMetrics {
        &self.metrics
    }

    /// Runs one IPv6 datagram received on `ifindex` through every check: the cheap part, then
    /// the expensive one at once. A refusal changes nothing but the counters.
    pub fn handle_datagram(
        &mut self,
        now: impl Into<Clock>,
        ifindex: u32,
        datagram: &[u8],
        keys: &dyn KeySource6,
    ) -> Result<MldOutcome, Rejection> {
        let now: Clock = now.into();
        match self.precheck(now.wall, ifindex, datagram, keys)? {
            MldPrechecked::Plain { sender, message } => Ok(MldOutcome::Plain { sender, message }),
            MldPrechecked::Candidate(c) => self
                .verify(now, vec![*c])
                .pop()
                .expect("one result per candidate"),
        }
    }

    /// Every check that costs no signature verification (SPEC.md §5 steps 1-12, and 14-16 for
    /// a certificate checked before): the duplicate, [`precheck_mld_datagram`], the group's
    /// keys, and the certificate's layout and published issuer (or the cached certificate's
    /// grant). A plain message and a refusal are final (and counted); a candidate goes on to
    /// [`MldJoinVerifier::verify`].
    pub fn precheck(
        &mut self,
        now: Timestamp,
        ifindex: u32,
        datagram: &[u8],
        keys: &dyn KeySource6,
    ) -> Result<MldPrechecked, Rejection> {
        let result = self.precheck_inner(now, ifindex, datagram, keys);
        self.metrics.certificate_cache_hits = self.certificates.hits();
        match &result {
            Ok(MldPrechecked::Plain { .. }) => self.metrics.accepted_plain += 1,
            Ok(MldPrechecked::Candidate(_)) => {}
            Err(r) => self.metrics.count_rejection(r.reason),
        }
        result
    }

    fn precheck_inner(
        &mut self,
        now: Timestamp,
        ifindex: u32,
        datagram: &[u8],
        keys: &dyn KeySource6,
    ) -> Result<MldPrechecked, Rejection> {
        // A copy of a join already accepted is refused before any signature is checked, as
        // for IGMPv3 (SPEC.md §5 step 8): nonces are recorded only once a join verified, so
        // no forgery can make a member's fresh nonce look seen.
        if let Some((member, nonce)) = claimed_nonce(datagram, &self.config) {
            if self.replay.contains(member, &nonce) {
                return Err(Rejection::new(
                    Reason::Duplicate,
                    format!("nonce already seen from {member}"),
                ));
            }
        }
        let signed = match precheck_mld_datagram(now, ifindex, datagram, &self.config, &self.links)?
        {
            PrecheckedMld::Plain { sender, message } => {
                return Ok(MldPrechecked::Plain { sender, message })
            }
            PrecheckedMld::Signed(s) => *s,
        };
        let from = |r: Rejection| from_sender(signed.sender(), r);
        let group = signed.group();
        let keys = group_keys(keys, group, now).map_err(from)?;
        let bytes = signed.join().certificate_bytes();
        let cert = match self.certificates.get(bytes, &keys) {
            Some(hit) => Certificate6::Known(grant_of(&hit, &keys, group, now).map_err(from)?),
            None => {
                // Lengths and caps, then the issuer: nothing is decoded for an unpublished one.
                let issuer_id = peek_issuer(bytes).map_err(|e| from(cert_rejection(e)))?;
                let Some(issuer) = keys.keys.iter().find(|k| k.id == issuer_id) else {
                    return Err(from(Rejection::new(
                        Reason::UnknownKey,
                        format!("certificate issuer {issuer_id} is not a published key of {group}"),
                    )));
                };
                Certificate6::Unchecked { issuer: issuer.key }
            }
        };
        Ok(MldPrechecked::Candidate(Box::new(MldCandidate {
            signed,
            keys,
            cert,
        })))
    }

    /// The expensive part for candidates from [`MldJoinVerifier::precheck`], in the order
    /// given: an unchecked certificate's issuer signature (then cached) and its grant, the join
    /// signature, the claim's slices within the grant, then the replay cache's room and the
    /// ownership table. One result per candidate, in that order; each is counted.
    pub fn verify(
        &mut self,
        now: impl Into<Clock>,
        candidates: Vec<MldCandidate>,
    ) -> Vec<Result<MldOutcome, Rejection>> {
        let now: Clock = now.into();
        let mut out = Vec::with_capacity(candidates.len());
        for c in candidates {
            let result = self.verify_one(now, c);
            match &result {
                Ok(MldOutcome::Plain { .. }) => self.metrics.accepted_plain += 1,
                Ok(MldOutcome::Join { .. }) => self.metrics.accepted_joins += 1,
                Err(r) => self.metrics.count_rejection(r.reason),
            }
            out.push(result);
        }
        self.metrics.certificate_cache_hits = self.certificates.hits();
        out
    }

    fn verify_one(&mut self, now: Clock, c: MldCandidate) -> Result<MldOutcome, Rejection> {
        let MldCandidate { signed, keys, cert } = c;
        let sender = signed.sender();
        let from = |r: Rejection| from_sender(sender, r);
        let grant = match cert {
            Certificate6::Known(grant) => grant,
            Certificate6::Unchecked { issuer } => {
                let bytes = signed.join().certificate_bytes();
                // An earlier candidate of the same round may have checked the same bytes.
                let entry = match self.certificates.get(bytes, &keys) {
                    Some(hit) => hit,
                    None => {
                        let cert = UnverifiedCertificate::decode(bytes)
                            .and_then(|c| c.verify(&issuer, now.wall))
                            .map_err(|e| from(cert_rejection(e)))?;
                        let entry = Arc::new((cert, issuer));
                        self.certificates.insert(bytes, entry.clone());
                        entry
                    }
                };
                grant_of(&entry, &keys, signed.group(), now.wall).map_err(from)?
            }
        };
        let (join, public_records) = match finish_mld_join(signed, &grant)? {
            AcceptedMld::Join {
                join,
                public_records,
            } => (join, public_records),
            AcceptedMld::Plain { sender, message } => {
                return Ok(MldOutcome::Plain { sender, message })
            }
        };
        let member = join.member();
        let reject = |reason, detail: String| {
            Rejection::new(reason, format!("from {}: {detail}", join.sender()))
        };
        replay_admission(&mut self.replay, now.wall, member, join.nonce())
            .map_err(|(reason, detail)| reject(reason, detail))?;
        let claim = Claim6 {
            slices: join.slices().clone(),
            epoch: join.epoch(),
            ifindex: join.ifindex(),
            sender: join.sender(),
            expires: now.mono.saturating_add(self.claim_hold),
            member_key: join.member_key(),
            issuer: join.issuer(),
            standby: join.standby().clone(),
            liveness: join.liveness().to_vec(),
            waiting: SliceSet6::new(),
        };
        let change = self
            .ownership
            .apply(now.wall, join.group(), member, claim)
            .map_err(|e| match e {
                ClaimError::StaleEpoch { .. } => reject(Reason::StaleEpoch, e.to_string()),
                ClaimError::Conflict { .. } => reject(Reason::SliceConflict, e.to_string()),
            })?;
        let recorded = self.replay.insert(now.wall, member, *join.nonce());
        debug_assert!(recorded, "room was checked and the nonce was absent");
        Ok(MldOutcome::Join {
            join: Box::new(join),
            change,
            public_records,
        })
    }

    /// Expires claims that were not refreshed (on `now.mono`), the replay cache and the fences
    /// (on `now.wall`), as [`crate::verify::JoinVerifier::expire`].
    pub fn expire(&mut self, now: impl Into<Clock>) -> Vec<OwnershipChange6> {
        let now: Clock = now.into();
        self.replay.expire(now.wall);
        self.ownership.expire(now)
    }

    /// Keeps the claim a dropped, unverified copy claimed to refresh (it named `member` and
    /// came from `sender` on `ifindex`, where that member's claim on `group` is) for one
    /// claim hold from `now`, as [`crate::verify::JoinVerifier::hold_unverified_refresh`];
    /// returns whether a claim was held.
    pub fn hold_unverified_refresh(
        &mut self,
        now: Instant,
        group: Ipv6Addr,
        member: MemberId,
        sender: Ipv6Addr,
        ifindex: u32,
    ) -> bool {
        let until = now.saturating_add(self.claim_hold);
        self.ownership.hold(group, member, sender, ifindex, until)
    }

    /// Keeps every IPv6 claim for one claim hold from `now`: MLDv2 datagrams were lost before
    /// anyone could look at them (the router's socket overflowed), as
    /// [`crate::verify::JoinVerifier::hold_all_unheard`]. Returns how many claims were held.
    pub fn hold_all_unheard(&mut self, now: Instant) -> usize {
        let until = now.saturating_add(self.claim_hold);
        self.ownership.hold_all(until)
    }

    /// The member whose claim on `group` holds `source`: where the data plane sends it.
    pub fn owner_of(&self, group: Ipv6Addr, source: Ipv6Addr) -> Option<MemberId> {
        self.ownership.owner_of(group, source).map(|(m, _)| m)
    }
}

/// The member a signed MLDv2 join's certificate names and its nonce, unverified; `None` for
/// anything that is not a well-formed signed join (the full checks say why).
fn claimed_nonce(
    datagram: &[u8],
    config: &MldVerifierConfig,
) -> Option<(MemberId, [u8; crate::join::NONCE_LEN])> {
    if datagram.len() > crate::mld_join::MAX_MLD_JOIN_DATAGRAM {
        return None;
    }
    let ip = crate::wire::ipv6::Ipv6Packet::new_checked(datagram).ok()?;
    let mld = crate::wire::mld::MldPacket::new_checked(ip.payload()).ok()?;
    if mld.msg_type() != crate::wire::mld::MessageType::V2Report {
        return None;
    }
    let join =
        crate::mld_join::UnverifiedMldJoin::parse(&mld, |g| config.is_protected(g)).ok()??;
    Some((join.claimed_member()?, join.claims().nonce))
}

#[cfg(test)]
#[path = "mld_verifier_tests.rs"]
mod tests;
