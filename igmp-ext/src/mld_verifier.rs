//! The router's stateful MLDv2 join verifier (issue 15, item 2): the IPv6 counterpart of
//! [`crate::verify::JoinVerifier`]. Member rights come from the join's own certificate
//! ([`CertificateGrants6`], its IPv6 section checked against the group's published keys); the
//! per-datagram checks are [`verify_mld_datagram`]'s; then the duplicate check, the replay
//! cache's room, and slice exclusivity and epoch fencing in an [`OwnershipTable6`], by the same
//! rules as IGMPv3 (SPEC.md §5.2, §5.6).

use crate::cert::{KeyId, MemberCertificate, MemberId, UnverifiedCertificate};
use crate::ownership::{Claim6, ClaimError, OwnershipChange6, OwnershipTable6};
use crate::replay::ReplayCache;
use crate::slice::SliceSet6;
use crate::time::{Clock, Timestamp};
use crate::verify::{
    cert_rejection, replay_admission, GroupKey, KeyLookupError, Reason, Rejection, VerifierConfig,
    VerifierMetrics,
};
use crate::verify6::{
    verify_mld_datagram, AcceptedMld, GrantSource6, LinkTable6, MemberGrant6, MldVerifierConfig,
    VerifiedMldJoin,
};
use crate::wire::mld::MldRepr;
use crate::wire::record::GroupRecordRepr;
use core::cell::RefCell;
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

/// Certificates whose issuer's signature verified, by their exact bytes, so that a member's
/// refresh costs one signature check (its join's), not two. A hit counts only while the key
/// that signed it is still published; validity, revocation and the group are checked at every
/// use. Cleared when full, as the IGMPv3 verifier's cache.
#[derive(Debug, Default)]
pub struct CertificateCache6 {
    entries: HashMap<Vec<u8>, Arc<(MemberCertificate, VerifyingKey)>>,
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
}

/// A [`GrantSource6`] over the certificate a join carries: the certificate chain of SPEC.md §5
/// (steps 8-15) for an IPv6 group. The grant is the certificate's IPv6 section: a version 1
/// certificate names no IPv6 group, so its member is refused `group-not-allowed`.
pub struct CertificateGrants6<'a> {
    keys: &'a dyn KeySource6,
    cache: Option<&'a RefCell<CertificateCache6>>,
}

impl<'a> CertificateGrants6<'a> {
    /// Every certificate checked afresh.
    pub fn new(keys: &'a dyn KeySource6) -> Self {
        CertificateGrants6 { keys, cache: None }
    }

    /// Certificates checked once, then taken from `cache`.
    pub fn with_cache(keys: &'a dyn KeySource6, cache: &'a RefCell<CertificateCache6>) -> Self {
        CertificateGrants6 {
            keys,
            cache: Some(cache),
        }
    }

    /// The certificate, from the cache if it holds these bytes signed by a key still in
    /// `keys`, else decoded and checked against its (published) issuer, then cached.
    fn certificate(
        &self,
        group: Ipv6Addr,
        keys: &GroupKeys6,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Arc<(MemberCertificate, VerifyingKey)>, Rejection> {
        if let Some(cache) = self.cache {
            let mut cache = cache.borrow_mut();
            let hit = cache
                .entries
                .get(bytes)
                .filter(|e| keys.keys.iter().any(|k| k.key == e.1))
                .cloned();
            if let Some(hit) = hit {
                cache.hits += 1;
                hit.0.check_validity(now).map_err(cert_rejection)?;
                return Ok(hit);
            }
        }
        // Lengths and caps, then the issuer: nothing is decoded for an unpublished one.
        let issuer_id = crate::cert::peek_issuer(bytes).map_err(cert_rejection)?;
        let Some(issuer) = keys.keys.iter().find(|k| k.id == issuer_id) else {
            return Err(Rejection::new(
                Reason::UnknownKey,
                format!("certificate issuer {issuer_id} is not a published key of {group}"),
            ));
        };
        let cert = UnverifiedCertificate::decode(bytes)
            .and_then(|c| c.verify(&issuer.key, now))
            .map_err(cert_rejection)?;
        let entry = Arc::new((cert, issuer.key));
        if let Some(cache) = self.cache {
            let mut cache = cache.borrow_mut();
            if cache.entries.len() >= cache.capacity {
                cache.entries.clear();
            }
            cache.entries.insert(bytes.to_vec(), entry.clone());
        }
        Ok(entry)
    }
}

impl core::fmt::Debug for CertificateGrants6<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CertificateGrants6")
    }
}

impl GrantSource6 for CertificateGrants6<'_> {
    fn grant(
        &self,
        group: Ipv6Addr,
        certificate: &[u8],
        now: Timestamp,
    ) -> Result<MemberGrant6, Rejection> {
        let keys = self.keys.group_keys6(group, now).map_err(|e| match e {
            KeyLookupError::UnknownGroup => {
                Rejection::new(Reason::UnknownGroup, format!("no keys for {group}"))
            }
            other => Rejection::new(Reason::KeyUnavailable, other.to_string()),
        })?;
        let entry = self.certificate(group, &keys, certificate, now)?;
        let (cert, issuer) = (&entry.0, &entry.1);
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
}

/// What an MLDv2 datagram did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MldOutcome {
    /// A message that concerns no protected group: handle it as plain MLD.
    Plain { sender: Ipv6Addr, message: MldRepr },
    /// A verified join now in the ownership table, what it changed there, and the report's
    /// other (public) records.
    Join {
        join: VerifiedMldJoin,
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
    certificates: RefCell<CertificateCache6>,
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
            certificates: RefCell::new(CertificateCache6::new(limits.certificate_cache)),
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

    /// Counts of accepted and refused MLDv2 messages, by reason.
    pub fn metrics(&self) -> &VerifierMetrics {
        &self.metrics
    }

    /// Runs one IPv6 datagram received on `ifindex` through every check; a refusal changes
    /// nothing but the counters.
    pub fn handle_datagram(
        &mut self,
        now: impl Into<Clock>,
        ifindex: u32,
        datagram: &[u8],
        keys: &dyn KeySource6,
    ) -> Result<MldOutcome, Rejection> {
        let now: Clock = now.into();
        let result = self.handle_inner(now, ifindex, datagram, keys);
        self.metrics.certificate_cache_hits = self.certificates.borrow().hits();
        match &result {
            Ok(MldOutcome::Plain { .. }) => self.metrics.accepted_plain += 1,
            Ok(MldOutcome::Join { .. }) => self.metrics.accepted_joins += 1,
            Err(r) => self.metrics.count_rejection(r.reason),
        }
        result
    }

    fn handle_inner(
        &mut self,
        now: Clock,
        ifindex: u32,
        datagram: &[u8],
        keys: &dyn KeySource6,
    ) -> Result<MldOutcome, Rejection> {
        // A copy of a join already accepted is refused before any signature is checked, as
        // for IGMPv3 (SPEC.md §5 step 6): nonces are recorded only once a join verified, so
        // no forgery can make a member's fresh nonce look seen.
        if let Some((member, nonce)) = claimed_nonce(datagram, &self.config) {
            if self.replay.contains(member, &nonce) {
                return Err(Rejection::new(
                    Reason::Duplicate,
                    format!("nonce already seen from {member}"),
                ));
            }
        }
        let grants = CertificateGrants6::with_cache(keys, &self.certificates);
        let accepted = verify_mld_datagram(
            now.wall,
            ifindex,
            datagram,
            &self.config,
            &self.links,
            &grants,
        )?;
        let (join, public_records) = match accepted {
            AcceptedMld::Plain { sender, message } => {
                return Ok(MldOutcome::Plain { sender, message })
            }
            AcceptedMld::Join {
                join,
                public_records,
            } => (join, public_records),
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
            ifindex,
            sender: join.sender(),
            expires: now.mono.saturating_add(self.claim_hold),
            member_key: join.member_key(),
            issuer: join.issuer(),
            standby: SliceSet6::new(),
            liveness: Vec::new(),
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
            join,
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
