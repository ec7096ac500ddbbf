//! The signed scope notice of a site hierarchy (issue 14, item 2; SPEC.md §3.10): a site router
//! tells the members on its link which units the upper allocation gives their site (the site
//! scope), in an RFC 9279 extension on the IGMPv3 queries it sends. Members verify it against the
//! group's published keys (the router certificate names the site), keep per group the newest by
//! (upper epoch, timestamp), and allocate only the scope's units among themselves. Sans-IO.

use crate::alloc::{Slicing, MAX_BITS};
use crate::cert::{
    peek_issuer, CertificateError, KeyId, MemberCertificate, MemberId, SiteId,
    UnverifiedCertificate, MAX_CERT_LEN,
};
use crate::join::{standby_bitmap_len, unit_bitmap_units};
use crate::signature;
use crate::time::Timestamp;
use crate::verify::{KeyLookupError, KeySource};
use crate::wire::extension::{parse_tlvs, push_tlv, QUERY_FLAG_EXTENSION};
use crate::wire::igmp::QueryV3Fields;
use crate::wire::{read_u16, read_u32, read_u64};
use core::fmt;
use core::net::Ipv4Addr;
use core::time::Duration;
use ed25519_dalek::{Signature, SigningKey};
use std::collections::BTreeMap;

/// Domain separation for scope notice signatures: no join, certificate or control message
/// signature can be replayed as a notice, nor a notice as one of those.
pub const SCOPE_SIGNING_CONTEXT: &[u8] = b"manycast scope notice v1\0";
/// The RFC 9279 Extension Type of the scope notice: the second of the two experimental values
/// (the signed join has the first, 0xfffe), so that a query's notice and a report's join are
/// never read one as the other, even before the message type is looked at.
pub const TYPE_SCOPE_NOTICE: u16 = 0xffff;
/// Version byte at the start of the notice's value.
pub const SCOPE_VERSION: u8 = 0x01;
/// The fixed part of the value: version, group, site, upper epoch, timestamp, unit mask.
const FIXED_LEN: usize = 1 + 4 + 4 + 8 + 8 + 4;
const SIGNATURE_LEN: usize = 64;
/// Most bytes a notice's value can have: a 16-bit slicing's 8 KiB bitmap and the largest
/// certificate. Anything longer is refused by its length alone.
pub const MAX_SCOPE_VALUE_LEN: usize =
    FIXED_LEN + (1 << MAX_BITS) / 8 + 2 + MAX_CERT_LEN + SIGNATURE_LEN;

/// What a site router states: at upper epoch `upper_epoch`, the upper allocation gives site
/// `site` the units of `slicing` marked in `units` (for group `group`), as of `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeNotice {
    pub group: Ipv4Addr,
    pub site: SiteId,
    /// The upper control group's committed epoch number.
    pub upper_epoch: u64,
    /// When the router signed the notice.
    pub timestamp: Timestamp,
    /// The service group's slicing (at most [`MAX_BITS`] bits).
    pub slicing: Slicing,
    /// One per unit of `slicing`, numbered as [`Slicing::unit`]: true for the site's units.
    pub units: Vec<bool>,
}

/// A notice as received: well-formed, nothing checked. Only [`UnverifiedScopeNotice::verify`]
/// yields a [`VerifiedScope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedScopeNotice {
    notice: ScopeNotice,
    certificate: Vec<u8>,
    signature: Signature,
    /// The value bytes the signature covers (all before it).
    signed: Vec<u8>,
}

/// A notice whose router certificate, site and signature verified: the scope a member may
/// allocate within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedScope {
    pub group: Ipv4Addr,
    pub site: SiteId,
    pub upper_epoch: u64,
    pub timestamp: Timestamp,
    pub slicing: Slicing,
    pub units: Vec<bool>,
    /// The router that signed it (its member id in the upper group).
    pub router: MemberId,
    /// The group key that certified the router.
    pub issuer: KeyId,
}

impl VerifiedScope {
    /// The order "newest wins" keeps: upper epoch first, then timestamp.
    pub fn age(&self) -> (u64, Timestamp) {
        (self.upper_epoch, self.timestamp)
    }

    /// How many units the scope holds.
    pub fn unit_count(&self) -> usize {
        self.units.iter().filter(|&&u| u).count()
    }
}

/// Why a notice could not be built (a caller's mistake, not the wire's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeBuildError {
    #[error("the certificate names no site: a scope notice needs a router certificate")]
    NotARouter,
    #[error("the certificate names {cert}, the notice {notice}")]
    WrongSite { cert: SiteId, notice: SiteId },
    #[error("{units} unit flags for a slicing of {expected} units")]
    UnitCount { units: usize, expected: usize },
    #[error("the notice is {0} bytes, more than an extension TLV holds")]
    TooLong(usize),
}

/// Why a notice was refused: a stable name per cause ([`ScopeReason::as_str`], the metrics
/// label) and a detail for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ScopeReason {
    /// Bytes that do not lay out as a notice (lengths, mask, bitmap, two notices).
    Malformed,
    /// A version this parser does not know.
    UnsupportedVersion,
    /// A value, bitmap or certificate past its cap, refused before it is read.
    TooLarge,
    /// Timestamp outside the timeliness window.
    Untimely,
    /// No keys published for the notice's group.
    UnknownGroup,
    /// The keystore could not answer.
    KeyUnavailable,
    /// The certificate's issuer is not a published key of the group.
    UnknownKey,
    /// The certificate does not lay out or its issuer's signature does not verify.
    BadCertificate,
    /// The certificate is not valid now.
    CertificateExpired,
    /// The router's key is revoked.
    Revoked,
    /// A member certificate (no site): only a router may hand a scope down.
    NotARouter,
    /// The certificate names another site than the notice.
    WrongSite,
    /// The certificate does not list the notice's group.
    GroupNotAllowed,
    /// The router's signature over the notice does not verify.
    BadSignature,
    /// Older, by (upper epoch, timestamp), than the scope already kept for the group, or as
    /// old with other contents: a replayed old notice cannot roll the site back.
    Stale,
}

impl ScopeReason {
    pub const ALL: [ScopeReason; 15] = [
        ScopeReason::Malformed,
        ScopeReason::UnsupportedVersion,
        ScopeReason::TooLarge,
        ScopeReason::Untimely,
        ScopeReason::UnknownGroup,
        ScopeReason::KeyUnavailable,
        ScopeReason::UnknownKey,
        ScopeReason::BadCertificate,
        ScopeReason::CertificateExpired,
        ScopeReason::Revoked,
        ScopeReason::NotARouter,
        ScopeReason::WrongSite,
        ScopeReason::GroupNotAllowed,
        ScopeReason::BadSignature,
        ScopeReason::Stale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScopeReason::Malformed => "malformed",
            ScopeReason::UnsupportedVersion => "unsupported-version",
            ScopeReason::TooLarge => "too-large",
            ScopeReason::Untimely => "untimely",
            ScopeReason::UnknownGroup => "unknown-group",
            ScopeReason::KeyUnavailable => "key-unavailable",
            ScopeReason::UnknownKey => "unknown-key",
            ScopeReason::BadCertificate => "bad-certificate",
            ScopeReason::CertificateExpired => "certificate-expired",
            ScopeReason::Revoked => "revoked",
            ScopeReason::NotARouter => "not-a-router",
            ScopeReason::WrongSite => "wrong-site",
            ScopeReason::GroupNotAllowed => "group-not-allowed",
            ScopeReason::BadSignature => "bad-signature",
            ScopeReason::Stale => "stale",
        }
    }
}

impl fmt::Display for ScopeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused notice: its reason and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope notice refused ({reason}): {detail}")]
pub struct ScopeError {
    pub reason: ScopeReason,
    pub detail: String,
}

impl ScopeError {
    fn new(reason: ScopeReason, detail: impl Into<String>) -> Self {
        ScopeError {
            reason,
            detail: detail.into(),
        }
    }
}

fn malformed(why: &str) -> ScopeError {
    ScopeError::new(ScopeReason::Malformed, why)
}

/// The unit mask of a slicing on the wire: the UNITS/STANDBY mask (SPEC.md §3.2), whose bits
/// number the units as [`Slicing::unit`] does. A 0-bit slicing is mask 0 (one unit).
fn slicing_mask(slicing: Slicing) -> u32 {
    let bits = u32::from(slicing.bits());
    match slicing {
        _ if bits == 0 => 0,
        Slicing::LowOrder { .. } => (1u32 << bits) - 1,
        Slicing::Prefix { .. } => u32::MAX << (32 - bits),
    }
}

/// The slicing a mask names: low-order or prefix bits, contiguous, at most [`MAX_BITS`]; mask 0
/// reads as the 0-bit low-order slicing.
fn mask_slicing(mask: u32) -> Option<Slicing> {
    let bits = mask.count_ones();
    if bits > u32::from(MAX_BITS) {
        return None;
    }
    let b = bits as u8;
    [Slicing::LowOrder { bits: b }, Slicing::Prefix { bits: b }]
        .into_iter()
        .find(|&s| slicing_mask(s) == mask)
}

impl ScopeNotice {
    /// The notice's RFC 9279 TLV, signed by the router key under its router certificate: the
    /// additional data of an IGMPv3 query (set the E flag; [`ScopeNotice::sign_into`] does
    /// both).
    pub fn additional_data(
        &self,
        cert: &MemberCertificate,
        router_key: &SigningKey,
    ) -> Result<Vec<u8>, ScopeBuildError> {
        match cert.site() {
            None => return Err(ScopeBuildError::NotARouter),
            Some(site) if site != self.site => {
                return Err(ScopeBuildError::WrongSite {
                    cert: site,
                    notice: self.site,
                })
            }
            Some(_) => {}
        }
        let expected = self.slicing.unit_count();
        if self.units.len() != expected {
            return Err(ScopeBuildError::UnitCount {
                units: self.units.len(),
                expected,
            });
        }
        let mut value = self.encode_fields();
        let cert_bytes = cert.as_bytes();
        // A certificate is at most MAX_CERT_LEN bytes, far below u16::MAX.
        value.extend_from_slice(&(cert_bytes.len() as u16).to_be_bytes());
        value.extend_from_slice(cert_bytes);
        let sig = signature::sign(router_key, &signing_message(&value));
        value.extend_from_slice(&sig.to_bytes());
        let mut out = Vec::with_capacity(4 + value.len());
        push_tlv(&mut out, TYPE_SCOPE_NOTICE, &value)
            .map_err(|_| ScopeBuildError::TooLong(value.len()))?;
        Ok(out)
    }

    /// Puts the signed notice into a query's v3 fields: its additional data, and the E flag.
    pub fn sign_into(
        &self,
        query: &mut QueryV3Fields,
        cert: &MemberCertificate,
        router_key: &SigningKey,
    ) -> Result<(), ScopeBuildError> {
        query.additional_data = self.additional_data(cert, router_key)?;
        query.flags |= QUERY_FLAG_EXTENSION;
        Ok(())
    }

    /// Version, group, site, upper epoch, timestamp, unit mask and bitmap (SPEC.md §3.10).
    fn encode_fields(&self) -> Vec<u8> {
        let bits = u32::from(self.slicing.bits());
        let mut b = Vec::with_capacity(FIXED_LEN + standby_bitmap_len(bits));
        b.push(SCOPE_VERSION);
        b.extend_from_slice(&self.group.octets());
        b.extend_from_slice(&self.site.0.to_be_bytes());
        b.extend_from_slice(&self.upper_epoch.to_be_bytes());
        b.extend_from_slice(&self.timestamp.as_millis().to_be_bytes());
        b.extend_from_slice(&slicing_mask(self.slicing).to_be_bytes());
        let at = b.len();
        b.resize(at + standby_bitmap_len(bits), 0);
        for (i, _) in self.units.iter().enumerate().filter(|(_, &u)| u) {
            b[at + i / 8] |= 1 << (i % 8);
        }
        b
    }
}

fn signing_message(value_before_signature: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SCOPE_SIGNING_CONTEXT.len() + value_before_signature.len());
    m.extend_from_slice(SCOPE_SIGNING_CONTEXT);
    m.extend_from_slice(value_before_signature);
    m
}

impl UnverifiedScopeNotice {
    /// The scope notice of a query, if it carries one: `None` without the E flag or without a
    /// notice TLV (a plain query). Never panics.
    pub fn from_query(query: &QueryV3Fields) -> Result<Option<Self>, ScopeError> {
        if query.flags & QUERY_FLAG_EXTENSION == 0 {
            // RFC 9279 §3: without the E flag, additional data is not extensions.
            return Ok(None);
        }
        Self::parse(&query.additional_data)
    }

    /// The scope notice among a query's extension TLVs (its additional data): `None` when no
    /// TLV is one, refused when two are or its value does not lay out (SPEC.md §3.10). Lengths
    /// and caps are checked before anything is read; never panics.
    pub fn parse(additional_data: &[u8]) -> Result<Option<Self>, ScopeError> {
        let tlvs = parse_tlvs(additional_data).map_err(|_| malformed("extension TLVs overrun"))?;
        let mut notices = tlvs.iter().filter(|t| t.kind == TYPE_SCOPE_NOTICE);
        let Some(tlv) = notices.next() else {
            return Ok(None);
        };
        if notices.next().is_some() {
            return Err(malformed("two scope notices in one query"));
        }
        Self::decode_value(tlv.value).map(Some)
    }

    fn decode_value(v: &[u8]) -> Result<Self, ScopeError> {
        if v.len() > MAX_SCOPE_VALUE_LEN {
            return Err(ScopeError::new(
                ScopeReason::TooLarge,
                format!("{} bytes, more than {MAX_SCOPE_VALUE_LEN}", v.len()),
            ));
        }
        let Some(&version) = v.first() else {
            return Err(malformed("empty value"));
        };
        if version != SCOPE_VERSION {
            return Err(ScopeError::new(
                ScopeReason::UnsupportedVersion,
                format!("version {version}"),
            ));
        }
        if v.len() < FIXED_LEN {
            return Err(malformed("truncated"));
        }
        let mask = read_u32(v, FIXED_LEN - 4);
        let slicing = mask_slicing(mask)
            .ok_or_else(|| malformed("unit mask is not a slicing of at most 16 bits"))?;
        let bits = u32::from(slicing.bits());
        let bitmap_end = FIXED_LEN + standby_bitmap_len(bits);
        if v.len() < bitmap_end + 2 {
            return Err(malformed("truncated"));
        }
        // The UNITS/STANDBY checks: bitmap length for the mask, no bit past the last unit.
        unit_bitmap_units(&v[FIXED_LEN - 4..bitmap_end], 4, u32::from(MAX_BITS))
            .map_err(|_| malformed("unit bitmap does not match its mask"))?;
        let cert_len = usize::from(read_u16(v, bitmap_end));
        if cert_len > MAX_CERT_LEN {
            return Err(ScopeError::new(
                ScopeReason::TooLarge,
                format!("certificate of {cert_len} bytes, more than {MAX_CERT_LEN}"),
            ));
        }
        let cert_at = bitmap_end + 2;
        if v.len() != cert_at + cert_len + SIGNATURE_LEN {
            return Err(malformed(
                "value length is not the fields, certificate and signature",
            ));
        }
        let site = read_u32(v, 5);
        if site == 0 {
            return Err(malformed("site 0"));
        }
        let units = (0..slicing.unit_count())
            .map(|i| v[FIXED_LEN + i / 8] & (1 << (i % 8)) != 0)
            .collect();
        let signed_len = v.len() - SIGNATURE_LEN;
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&v[signed_len..]);
        Ok(UnverifiedScopeNotice {
            notice: ScopeNotice {
                group: Ipv4Addr::from(read_u32(v, 1)),
                site: SiteId(site),
                upper_epoch: read_u64(v, 9),
                timestamp: Timestamp(read_u64(v, 17)),
                slicing,
                units,
            },
            certificate: v[cert_at..cert_at + cert_len].to_vec(),
            signature: Signature::from_bytes(&sig),
            signed: v[..signed_len].to_vec(),
        })
    }

    /// What the notice claims, not yet proven.
    pub fn unverified(&self) -> &ScopeNotice {
        &self.notice
    }

    /// The router certificate's bytes as carried.
    pub fn certificate_bytes(&self) -> &[u8] {
        &self.certificate
    }

    /// Checks, cheapest first: the timestamp within `window` of `now`; the group's published
    /// keys (`keys`, as the join verifier gets them); the certificate's issuer among them, its
    /// signature and validity now, its key not revoked; that it is a router certificate naming
    /// the notice's site and listing its group; then the router's signature over the notice.
    pub fn verify(
        &self,
        keys: &dyn KeySource,
        now: Timestamp,
        window: Duration,
    ) -> Result<VerifiedScope, ScopeError> {
        let n = &self.notice;
        if now.abs_diff(n.timestamp) > window {
            return Err(ScopeError::new(
                ScopeReason::Untimely,
                format!(
                    "timestamp {} is {:?} from now {now}",
                    n.timestamp,
                    now.abs_diff(n.timestamp)
                ),
            ));
        }
        let group_keys = keys.group_keys(n.group, now).map_err(|e| match e {
            KeyLookupError::UnknownGroup => ScopeError::new(
                ScopeReason::UnknownGroup,
                format!("no keys for {}", n.group),
            ),
            other => ScopeError::new(ScopeReason::KeyUnavailable, other.to_string()),
        })?;
        let issuer_id = peek_issuer(&self.certificate).map_err(cert_error)?;
        let Some(issuer) = group_keys.keys.iter().find(|k| k.id == issuer_id) else {
            return Err(ScopeError::new(
                ScopeReason::UnknownKey,
                format!("issuer {issuer_id} is not a published key of {}", n.group),
            ));
        };
        let cert = UnverifiedCertificate::decode(&self.certificate)
            .and_then(|c| c.verify(&issuer.key, now))
            .map_err(cert_error)?;
        let body = cert.body();
        if group_keys
            .revoked_members
            .contains(&KeyId::of(&body.member_key))
        {
            return Err(ScopeError::new(
                ScopeReason::Revoked,
                format!("router {} key revoked", body.member_id),
            ));
        }
        match cert.site() {
            None => {
                return Err(ScopeError::new(
                    ScopeReason::NotARouter,
                    format!("{} has a member certificate, no site", body.member_id),
                ))
            }
            Some(site) if site != n.site => {
                return Err(ScopeError::new(
                    ScopeReason::WrongSite,
                    format!("certificate names {site}, the notice {}", n.site),
                ))
            }
            Some(_) => {}
        }
        if !body.groups.contains(&n.group) {
            return Err(ScopeError::new(
                ScopeReason::GroupNotAllowed,
                format!("{} is not certified for {}", body.member_id, n.group),
            ));
        }
        if !signature::verify(
            &body.member_key,
            &signing_message(&self.signed),
            &self.signature,
        ) {
            return Err(ScopeError::new(
                ScopeReason::BadSignature,
                format!("notice signature of {}", body.member_id),
            ));
        }
        Ok(VerifiedScope {
            group: n.group,
            site: n.site,
            upper_epoch: n.upper_epoch,
            timestamp: n.timestamp,
            slicing: n.slicing,
            units: n.units.clone(),
            router: body.member_id,
            issuer: issuer.id,
        })
    }
}

fn cert_error(e: CertificateError) -> ScopeError {
    let reason = match e {
        CertificateError::NotValidNow { .. } => ScopeReason::CertificateExpired,
        CertificateError::TooManySlices(_)
        | CertificateError::TooManySlices6(_)
        | CertificateError::TooLong(_)
        | CertificateError::TooComplex(_) => ScopeReason::TooLarge,
        _ => ScopeReason::BadCertificate,
    };
    ScopeError::new(reason, e.to_string())
}

/// What keeping a verified scope did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeUpdate {
    /// The first scope for the group, or one whose site, upper epoch, slicing or units differ
    /// from the kept one's: the members' allocation must follow.
    Changed,
    /// A newer notice of the same scope (a refresh): only its timestamp moved.
    Refreshed,
    /// The very notice kept already (the same age and contents): nothing moved.
    Repeated,
}

/// Per group, the newest verified scope by (upper epoch, timestamp) ("newest wins"): an older
/// one is refused as [`ScopeReason::Stale`], so a replayed old notice cannot roll a site back.
#[derive(Debug, Clone, Default)]
pub struct NewestScopes {
    by_group: BTreeMap<Ipv4Addr, VerifiedScope>,
}

impl NewestScopes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `scope` if it is newer than the group's (or the first).
    pub fn offer(&mut self, scope: VerifiedScope) -> Result<ScopeUpdate, ScopeError> {
        let same_scope = |a: &VerifiedScope, b: &VerifiedScope| {
            a.site == b.site
                && a.upper_epoch == b.upper_epoch
                && a.slicing == b.slicing
                && a.units == b.units
        };
        let update = match self.by_group.get(&scope.group) {
            None => ScopeUpdate::Changed,
            Some(kept) if scope.age() < kept.age() => {
                return Err(ScopeError::new(
                    ScopeReason::Stale,
                    format!(
                        "upper epoch {} at {} is older than the kept {} at {}",
                        scope.upper_epoch, scope.timestamp, kept.upper_epoch, kept.timestamp
                    ),
                ))
            }
            Some(kept) if scope.age() == kept.age() => {
                if !same_scope(kept, &scope) {
                    return Err(ScopeError::new(
                        ScopeReason::Stale,
                        format!(
                            "upper epoch {} at {} kept already with other units",
                            scope.upper_epoch, scope.timestamp
                        ),
                    ));
                }
                return Ok(ScopeUpdate::Repeated);
            }
            Some(kept) if same_scope(kept, &scope) => ScopeUpdate::Refreshed,
            Some(_) => ScopeUpdate::Changed,
        };
        self.by_group.insert(scope.group, scope);
        Ok(update)
    }

    /// Refuses, before any signature is checked, a notice older than the group's kept scope:
    /// a replayed old notice then costs a comparison, not two signature checks. (Its claims are
    /// unproven, but an older claim is refused whether or not it would verify.)
    pub fn precheck(&self, notice: &ScopeNotice) -> Result<(), ScopeError> {
        match self.by_group.get(&notice.group) {
            Some(kept) if (notice.upper_epoch, notice.timestamp) < kept.age() => {
                Err(ScopeError::new(
                    ScopeReason::Stale,
                    format!(
                        "upper epoch {} at {} is older than the kept {} at {}",
                        notice.upper_epoch, notice.timestamp, kept.upper_epoch, kept.timestamp
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The newest scope kept for `group`.
    pub fn current(&self, group: Ipv4Addr) -> Option<&VerifiedScope> {
        self.by_group.get(&group)
    }
}

#[cfg(test)]
#[path = "scope_tests.rs"]
mod tests;
