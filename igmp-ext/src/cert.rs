//! Keys and member certificates (brief decision 2). The group key, published in DNS, certifies
//! member keys; members sign their joins and control messages with their own key. The group
//! private key never leaves the admin's machine.

use crate::signature;
use crate::slice::{
    Bits, Slice, Slice6, SliceOf, SliceSet, SliceSet6, SliceSetOf, StepBudget, TooComplex,
};
use crate::time::Timestamp;
use crate::wire::{need, read_u16, read_u32, read_u64, Hex};
use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Domain separation for certificate signatures, so that no other signed Manycast message can be
/// replayed as a certificate.
pub const CERT_SIGNING_CONTEXT: &[u8] = b"manycast member certificate v1\0";
/// Certificate format version of an IPv4-only certificate.
pub const CERT_VERSION: u8 = 0x01;
/// Certificate format version of a certificate with an IPv6 section (IPv6 groups and slices,
/// SPEC.md §4.2): version 1's bytes with the section between the IPv4 slices and the signature.
pub const CERT_VERSION_IPV6: u8 = 0x02;
/// Certificate format version of a router certificate (SPEC.md §4.3): version 1's bytes, the
/// site (u32, never 0), then the IPv6 section of version 2, which may be empty here.
pub const CERT_VERSION_ROUTER: u8 = 0x03;
/// Most slices a certificate may list (SPEC.md §4.1). A certificate rides in every join and in
/// every control-channel hello, whose datagram is at most 1,400 bytes: 128 slices (1 KiB) is more
/// than any certificate that still fits a hello. Checked before anything is decoded, so an
/// oversized certificate costs a length check. Decoding keeps the slices as listed; their set
/// is built only once the issuer's signature verified, within a budget of steps, and has at
/// most this many slices too (SPEC.md §3.7).
pub const MAX_CERT_SLICES: usize = 128;
/// Most IPv6 slices a certificate may list (SPEC.md §4.2): 32 slices of 32 bytes are the 1 KiB
/// that [`MAX_CERT_SLICES`] IPv4 slices take. Checked before anything is decoded, like the IPv4
/// cap, and their set is built only after the signature, within its budget.
pub const MAX_CERT_SLICES6: usize = 32;
/// Most bytes a certificate can have, whatever its version: an IPv4-only certificate with 255
/// groups and [`MAX_CERT_SLICES`] slices. A certificate with an IPv6 section or a site must fit
/// in the same bytes, so that the datagram caps of IGMPv3 and MLDv2 joins
/// ([`crate::join::MAX_JOIN_DATAGRAM`], [`crate::mld_join::MAX_MLD_JOIN_DATAGRAM`]) hold for it.
pub const MAX_CERT_LEN: usize = FIXED_LEN + 1 + 4 * 255 + 2 + 8 * MAX_CERT_SLICES + SIGNATURE_LEN;

/// A member's identity within a cluster: assigned by the admin, carried in its certificate, used
/// to break ties between equal epochs (the lower id wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u32);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// A site of a site hierarchy (issue 14, item 2): the routers of one site carry router
/// certificates naming it, and the upper control group allocates units to sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteId(pub u32);

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "site{}", self.0)
    }
}

/// Names a public key: the first 8 bytes of SHA-256 over its 32 raw bytes. Short enough for a
/// DNS label and a join, long enough that keys of one group never collide by accident.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl core::str::FromStr for KeyId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 16 || !s.is_ascii() {
            return Err("a key id is 16 hex digits");
        }
        let mut id = [0u8; 8];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| "a key id is 16 hex digits")?;
        }
        Ok(KeyId(id))
    }
}

/// What a certificate grants: which member key may join which groups for which slices, and when.
/// `S` is how the slices are held: a [`SliceSet`] once the issuer's signature verified, the
/// listed slices before ([`UnverifiedBody`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateBody<S = SliceSet> {
    pub member_id: MemberId,
    pub member_key: VerifyingKey,
    /// The group key that signs this certificate.
    pub issuer: KeyId,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// Groups the member may join (at most 255).
    pub groups: Vec<Ipv4Addr>,
    /// Slices the member may claim; [`SliceSet::full`] for an unrestricted member. Before the
    /// signature, the slices as listed (at most [`MAX_CERT_SLICES`]; an issued certificate
    /// lists its set's slices, normalised).
    pub slices: S,
}

/// What certificate bytes claim before the issuer's signature is checked. No slice set is built
/// from its slices until the signature that covers them verified
/// ([`UnverifiedCertificate::verify`]).
pub type UnverifiedBody = CertificateBody<ListedSlices>;

impl<S> CertificateBody<S> {
    /// The same grant with its slices held as `slices`.
    fn with_slices<T>(self, slices: T) -> CertificateBody<T> {
        CertificateBody {
            member_id: self.member_id,
            member_key: self.member_key,
            issuer: self.issuer,
            not_before: self.not_before,
            not_after: self.not_after,
            groups: self.groups,
            slices,
        }
    }
}

/// Slices as a certificate lists them, not yet a set: they may overlap and repeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListedSlices(pub Vec<Slice>);

impl core::ops::Deref for ListedSlices {
    type Target = [Slice];
    fn deref(&self) -> &[Slice] {
        &self.0
    }
}

impl fmt::Display for ListedSlices {
    /// As [`SliceSet`] displays: the slices separated by spaces, `(none)` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// What a certificate grants on IPv6 groups (its IPv6 section, SPEC.md §4.2): the groups and
/// the slices of the IPv6 source space. `S` as in [`CertificateBody`]: a [`SliceSet6`] once the
/// issuer's signature verified, the listed slices before ([`ListedIpv6Grant`]). Empty (no
/// groups, no slices) for an IPv4-only certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ipv6Grant<S = SliceSet6> {
    /// IPv6 groups the member may join (at most 255).
    pub groups: Vec<Ipv6Addr>,
    /// Slices of the IPv6 source space the member may claim on them; [`SliceSet6::full`] for
    /// an unrestricted member.
    pub slices: S,
}

/// An IPv6 section as listed, before the issuer's signature: its slices may overlap and repeat.
pub type ListedIpv6Grant = Ipv6Grant<Vec<Slice6>>;

impl Ipv6Grant {
    /// True for the section of an IPv4-only certificate: nothing on IPv6.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.slices.is_empty()
    }
}

/// The site field of a router certificate (version 3).
const SITE_LEN: usize = 4;

/// Why certificate bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    #[error("certificate malformed: {0}")]
    Malformed(&'static str),
    /// More slices than [`MAX_CERT_SLICES`]: refused before they are read.
    #[error("certificate lists {0} slices, more than the {MAX_CERT_SLICES} allowed")]
    TooManySlices(usize),
    /// More IPv6 slices than [`MAX_CERT_SLICES6`]: refused before they are read.
    #[error("certificate lists {0} IPv6 slices, more than the {MAX_CERT_SLICES6} allowed")]
    TooManySlices6(usize),
    /// A certificate whose length fields add up to more than [`MAX_CERT_LEN`] bytes: refused
    /// before anything is read.
    #[error("certificate of {0} bytes, more than the {MAX_CERT_LEN} allowed")]
    TooLong(usize),
    /// Slices whose set costs more than its budget to build, or has more than
    /// [`MAX_CERT_SLICES`] slices: refused after the signature, before that work is done.
    #[error("certificate slices: {0}")]
    TooComplex(TooComplex),
    #[error("certificate version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("certificate is signed by key {found}, expected {expected}")]
    WrongIssuer { expected: KeyId, found: KeyId },
    #[error("certificate signature does not verify")]
    BadSignature,
    #[error("certificate is not valid at {now} (valid {not_before} to {not_after})")]
    NotValidNow {
        now: Timestamp,
        not_before: Timestamp,
        not_after: Timestamp,
    },
}

/// Fixed part: version, member id, member key, issuer, not_before, not_after.
const FIXED_LEN: usize = 1 + 4 + 32 + 8 + 8 + 8;
const SIGNATURE_LEN: usize = 64;

/// A certificate as received: well-formed, signature not yet checked, its slices as listed.
/// Only [`UnverifiedCertificate::verify`] yields a [`MemberCertificate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedCertificate {
    body: UnverifiedBody,
    ipv6: ListedIpv6Grant,
    /// The site a router certificate (version 3) names; `None` for a member's.
    site: Option<SiteId>,
    signature: Signature,
    /// The exact bytes, so that the signature is checked over what was sent.
    bytes: Vec<u8>,
}

/// A certificate whose signature has been checked against a group key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCertificate {
    body: CertificateBody,
    /// The IPv6 section; empty for a version 1 certificate.
    ipv6: Ipv6Grant,
    /// The site of a router certificate (version 3); `None` for a member's.
    site: Option<SiteId>,
    bytes: Vec<u8>,
}

impl CertificateBody {
    /// Encodes the body and signs it with the group key. The admin tool calls this; servers and
    /// routers never hold the group key.
    pub fn issue(&self, group_key: &SigningKey) -> Result<MemberCertificate, CertificateError> {
        self.issue_with_ipv6(&Ipv6Grant::default(), group_key)
    }

    /// As [`CertificateBody::issue`], with what the member may do on IPv6 groups: a version 2
    /// certificate (SPEC.md §4.2), or, when `ipv6` grants nothing, the version 1 certificate
    /// [`CertificateBody::issue`] makes, byte for byte.
    pub fn issue_with_ipv6(
        &self,
        ipv6: &Ipv6Grant,
        group_key: &SigningKey,
    ) -> Result<MemberCertificate, CertificateError> {
        self.issue_as(None, ipv6, group_key)
    }

    /// A router certificate (SPEC.md §4.3): this grant, for a site router of `site`, as a
    /// version 3 certificate. A site router is a member of the upper control group and of its
    /// upstream verifier's links; the site is what the upper allocation and the scope notice
    /// name. Site 0 is no site: refused.
    pub fn issue_router(
        &self,
        site: SiteId,
        group_key: &SigningKey,
    ) -> Result<MemberCertificate, CertificateError> {
        self.issue_router_with_ipv6(site, &Ipv6Grant::default(), group_key)
    }

    /// As [`CertificateBody::issue_router`], with an IPv6 grant (the version 3 IPv6 section).
    pub fn issue_router_with_ipv6(
        &self,
        site: SiteId,
        ipv6: &Ipv6Grant,
        group_key: &SigningKey,
    ) -> Result<MemberCertificate, CertificateError> {
        if site.0 == 0 {
            return Err(CertificateError::Malformed(SITE_ZERO));
        }
        self.issue_as(Some(site), ipv6, group_key)
    }

    /// The one encoding of a grant: version 3 when it names a site, else version 2 when it
    /// grants something on IPv6, else version 1.
    fn issue_as(
        &self,
        site: Option<SiteId>,
        ipv6: &Ipv6Grant,
        group_key: &SigningKey,
    ) -> Result<MemberCertificate, CertificateError> {
        if self.issuer != KeyId::of(&group_key.verifying_key()) {
            return Err(CertificateError::WrongIssuer {
                expected: KeyId::of(&group_key.verifying_key()),
                found: self.issuer,
            });
        }
        let mut bytes = self.encode_unsigned()?;
        if let Some(site) = site {
            bytes[0] = CERT_VERSION_ROUTER;
            bytes.extend_from_slice(&site.0.to_be_bytes());
            encode_ipv6(&mut bytes, ipv6)?;
        } else if !ipv6.is_empty() {
            bytes[0] = CERT_VERSION_IPV6;
            encode_ipv6(&mut bytes, ipv6)?;
        }
        if bytes.len() + SIGNATURE_LEN > MAX_CERT_LEN {
            return Err(CertificateError::TooLong(bytes.len() + SIGNATURE_LEN));
        }
        // What a verifier will build from the listed slices: a normalised set of at most
        // MAX_CERT_SLICES slices always fits the budget, so this refuses nothing the admin tool
        // can make; it keeps "issued" implying "verifies" true by construction.
        listed_set(self.slices.slices(), MAX_CERT_SLICES)?;
        listed_set(ipv6.slices.slices(), MAX_CERT_SLICES6)?;
        let sig = signature::sign(group_key, &signing_message(&bytes));
        bytes.extend_from_slice(&sig.to_bytes());
        Ok(MemberCertificate {
            body: self.clone(),
            ipv6: ipv6.clone(),
            site,
            bytes,
        })
    }

    fn encode_unsigned(&self) -> Result<Vec<u8>, CertificateError> {
        let n_groups = u8::try_from(self.groups.len())
            .map_err(|_| CertificateError::Malformed("more than 255 groups"))?;
        if self.slices.len() > MAX_CERT_SLICES {
            return Err(CertificateError::TooManySlices(self.slices.len()));
        }
        let n_slices = u16::try_from(self.slices.len())
            .map_err(|_| CertificateError::TooManySlices(self.slices.len()))?;
        let mut b = Vec::with_capacity(
            FIXED_LEN + 3 + 4 * self.groups.len() + 8 * self.slices.len() + SIGNATURE_LEN,
        );
        b.push(CERT_VERSION);
        b.extend_from_slice(&self.member_id.0.to_be_bytes());
        b.extend_from_slice(self.member_key.as_bytes());
        b.extend_from_slice(&self.issuer.0);
        b.extend_from_slice(&self.not_before.0.to_be_bytes());
        b.extend_from_slice(&self.not_after.0.to_be_bytes());
        b.push(n_groups);
        for g in &self.groups {
            b.extend_from_slice(&g.octets());
        }
        b.extend_from_slice(&n_slices.to_be_bytes());
        for s in self.slices.iter() {
            b.extend_from_slice(&s.value().to_be_bytes());
            b.extend_from_slice(&s.mask().to_be_bytes());
        }
        Ok(b)
    }

    /// True when `now` lies within [not_before, not_after].
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Appends the IPv6 section: group count, groups, slice count, slices (SPEC.md §4.2).
fn encode_ipv6(b: &mut Vec<u8>, ipv6: &Ipv6Grant) -> Result<(), CertificateError> {
    let n_groups = u8::try_from(ipv6.groups.len())
        .map_err(|_| CertificateError::Malformed("more than 255 IPv6 groups"))?;
    let n_slices = ipv6.slices.len();
    if n_slices > MAX_CERT_SLICES6 {
        return Err(CertificateError::TooManySlices6(n_slices));
    }
    b.push(n_groups);
    for g in &ipv6.groups {
        b.extend_from_slice(&g.octets());
    }
    b.extend_from_slice(&(n_slices as u16).to_be_bytes());
    for s in ipv6.slices.iter() {
        b.extend_from_slice(&s.value().to_be_bytes());
        b.extend_from_slice(&s.mask().to_be_bytes());
    }
    Ok(())
}

/// The member id of certificate bytes, without checking anything else: for the duplicate check,
/// which runs before the certificate is decoded.
pub fn peek_member_id(bytes: &[u8]) -> Option<MemberId> {
    (bytes.len() >= 5
        && matches!(
            bytes[0],
            CERT_VERSION | CERT_VERSION_IPV6 | CERT_VERSION_ROUTER
        ))
    .then(|| MemberId(read_u32(bytes, 1)))
}

/// The issuer key id of certificate bytes, after checking their layout (version, lengths, the
/// slice cap) but decoding nothing: no curve point, no slice set. The verifier calls this before
/// it knows whether the issuer is a published key, which is what makes a certificate worth the
/// cost of decoding and checking.
pub fn peek_issuer(bytes: &[u8]) -> Result<KeyId, CertificateError> {
    Layout::check(bytes)?;
    let mut issuer = [0u8; 8];
    issuer.copy_from_slice(&bytes[37..45]);
    Ok(KeyId(issuer))
}

/// Where the variable parts of well-laid-out certificate bytes are.
struct Layout {
    n_groups: usize,
    n_slices: usize,
    /// Versions 2 and 3: where the IPv6 section starts, its group and slice counts.
    ipv6: Option<(usize, usize, usize)>,
    /// Version 3: the site (never 0).
    site: Option<SiteId>,
}

/// Why a router certificate naming site 0 is refused (site 0 is no site).
const SITE_ZERO: &str = "router certificate names site 0";

impl Layout {
    /// Version, the counts (slices capped), the total length (capped), and that the bytes
    /// have exactly that length. O(1): nothing is read past the counts.
    fn check(bytes: &[u8]) -> Result<Layout, CertificateError> {
        let malformed = |_| CertificateError::Malformed("truncated");
        need("certificate", bytes, FIXED_LEN + 1).map_err(malformed)?;
        let version = bytes[0];
        if !matches!(
            version,
            CERT_VERSION | CERT_VERSION_IPV6 | CERT_VERSION_ROUTER
        ) {
            return Err(CertificateError::UnsupportedVersion(version));
        }
        let n_groups = usize::from(bytes[61]);
        let at = FIXED_LEN + 1 + 4 * n_groups;
        need("certificate groups", bytes, at + 2).map_err(malformed)?;
        let n_slices = usize::from(read_u16(bytes, at));
        if n_slices > MAX_CERT_SLICES {
            return Err(CertificateError::TooManySlices(n_slices));
        }
        let mut len = at + 2 + 8 * n_slices;
        let mut ipv6 = None;
        let mut site = None;
        if version == CERT_VERSION_ROUTER {
            need("certificate site", bytes, len + SITE_LEN).map_err(malformed)?;
            let id = read_u32(bytes, len);
            if id == 0 {
                return Err(CertificateError::Malformed(SITE_ZERO));
            }
            site = Some(SiteId(id));
            len += SITE_LEN;
        }
        if version != CERT_VERSION {
            let at6 = len;
            need("certificate IPv6 section", bytes, at6 + 1).map_err(malformed)?;
            let n_groups6 = usize::from(bytes[at6]);
            let at = at6 + 1 + 16 * n_groups6;
            need("certificate IPv6 groups", bytes, at + 2).map_err(malformed)?;
            let n_slices6 = usize::from(read_u16(bytes, at));
            if n_slices6 > MAX_CERT_SLICES6 {
                return Err(CertificateError::TooManySlices6(n_slices6));
            }
            if n_groups6 == 0 && n_slices6 == 0 && version == CERT_VERSION_IPV6 {
                // One encoding per certificate: an IPv4-only one is version 1. (A router
                // certificate always has the section, empty or not: one encoding too.)
                return Err(CertificateError::Malformed("empty IPv6 section"));
            }
            len = at + 2 + 32 * n_slices6;
            ipv6 = Some((at6, n_groups6, n_slices6));
        }
        len += SIGNATURE_LEN;
        if len > MAX_CERT_LEN {
            return Err(CertificateError::TooLong(len));
        }
        need("certificate slices", bytes, len).map_err(malformed)?;
        if bytes.len() != len {
            return Err(CertificateError::Malformed("bytes after the signature"));
        }
        Ok(Layout {
            n_groups,
            n_slices,
            ipv6,
            site,
        })
    }
}

/// The set of a certificate's listed slices (IPv4 or IPv6), within [`StepBudget::for_slices`]
/// of their count and at most `cap` slices.
fn listed_set<W: Bits>(
    listed: &[SliceOf<W>],
    cap: usize,
) -> Result<SliceSetOf<W>, CertificateError> {
    let mut budget = StepBudget::for_slices(listed.len());
    let set =
        SliceSetOf::try_from_slices(listed, &mut budget).map_err(CertificateError::TooComplex)?;
    if set.len() > cap {
        return Err(CertificateError::TooComplex(TooComplex::Len {
            slices: listed.len(),
            len: set.len(),
            cap,
        }));
    }
    Ok(set)
}

/// The IPv6 section of well-laid-out bytes: `n_groups` groups at `at`, then `n_slices` slices.
fn decode_ipv6(
    bytes: &[u8],
    (at, n_groups, n_slices): (usize, usize, usize),
) -> Result<ListedIpv6Grant, CertificateError> {
    let at = at + 1;
    let groups = bytes[at..at + 16 * n_groups]
        .chunks_exact(16)
        .map(|c| Ipv6Addr::from(read_u128(c)))
        .collect();
    let at = at + 16 * n_groups + 2;
    let mut slices = Vec::with_capacity(n_slices);
    for c in bytes[at..at + 32 * n_slices].chunks_exact(32) {
        let (value, mask) = (read_u128(&c[..16]), read_u128(&c[16..]));
        if value & !mask != 0 {
            return Err(CertificateError::Malformed(
                "IPv6 slice value has bits outside its mask",
            ));
        }
        slices.push(Slice6::new(value, mask));
    }
    Ok(Ipv6Grant { groups, slices })
}

/// 16 bytes, big-endian; `c` is 16 bytes long.
fn read_u128(c: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(c);
    u128::from_be_bytes(b)
}

fn signing_message(unsigned: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CERT_SIGNING_CONTEXT.len() + unsigned.len());
    m.extend_from_slice(CERT_SIGNING_CONTEXT);
    m.extend_from_slice(unsigned);
    m
}

impl UnverifiedCertificate {
    /// Parses certificate bytes (layout in SPEC.md §4). Never panics. The slices are kept as
    /// listed: their set is built by [`UnverifiedCertificate::verify`], after the signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertificateError> {
        // Lengths and caps first: nothing below runs for bytes that are too many.
        let Layout {
            n_groups,
            n_slices,
            ipv6,
            site,
        } = Layout::check(bytes)?;
        let member_id = MemberId(read_u32(bytes, 1));
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[5..37]);
        let member_key = VerifyingKey::from_bytes(&key)
            .map_err(|_| CertificateError::Malformed("member key is not a curve point"))?;
        // A weak (small-order) key would let signatures verify for many messages.
        if member_key.is_weak() {
            return Err(CertificateError::Malformed("member key is weak"));
        }
        let mut issuer = [0u8; 8];
        issuer.copy_from_slice(&bytes[37..45]);
        let not_before = Timestamp(read_u64(bytes, 45));
        let not_after = Timestamp(read_u64(bytes, 53));
        let mut at = FIXED_LEN + 1;
        let groups = bytes[at..at + 4 * n_groups]
            .chunks_exact(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect();
        at += 4 * n_groups + 2;
        let mut listed = Vec::with_capacity(n_slices);
        for c in bytes[at..at + 8 * n_slices].chunks_exact(8) {
            let (value, mask) = (read_u32(c, 0), read_u32(c, 4));
            if value & !mask != 0 {
                return Err(CertificateError::Malformed(
                    "slice value has bits outside its mask",
                ));
            }
            listed.push(Slice::new(value, mask));
        }
        let ipv6 = match ipv6 {
            Some(section) => decode_ipv6(bytes, section)?,
            None => ListedIpv6Grant::default(),
        };
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&bytes[bytes.len() - SIGNATURE_LEN..]);
        Ok(UnverifiedCertificate {
            body: UnverifiedBody {
                member_id,
                member_key,
                issuer: KeyId(issuer),
                not_before,
                not_after,
                groups,
                slices: ListedSlices(listed),
            },
            ipv6,
            site,
            signature: Signature::from_bytes(&sig),
            bytes: bytes.to_vec(),
        })
    }

    /// The exact bytes received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The claims, not yet proven: use them only to pick the key to verify with.
    pub fn unverified_body(&self) -> &UnverifiedBody {
        &self.body
    }

    /// The IPv6 section as listed, not yet proven (empty for version 1).
    pub fn unverified_ipv6(&self) -> &ListedIpv6Grant {
        &self.ipv6
    }

    /// The site a router certificate claims, not yet proven; `None` for a member's.
    pub fn unverified_site(&self) -> Option<SiteId> {
        self.site
    }

    /// Checks the signature with `group_key` and the validity period at `now`, then builds the
    /// set of the listed slices, within a budget linear in their count (SPEC.md §3.7).
    pub fn verify(
        self,
        group_key: &VerifyingKey,
        now: Timestamp,
    ) -> Result<MemberCertificate, CertificateError> {
        let expected = KeyId::of(group_key);
        if self.body.issuer != expected {
            return Err(CertificateError::WrongIssuer {
                expected,
                found: self.body.issuer,
            });
        }
        let unsigned = &self.bytes[..self.bytes.len() - SIGNATURE_LEN];
        if !signature::verify(group_key, &signing_message(unsigned), &self.signature) {
            return Err(CertificateError::BadSignature);
        }
        let b = self.body;
        if !(b.not_before <= now && now <= b.not_after) {
            return Err(CertificateError::NotValidNow {
                now,
                not_before: b.not_before,
                not_after: b.not_after,
            });
        }
        let slices = listed_set(&b.slices, MAX_CERT_SLICES)?;
        let ipv6 = Ipv6Grant {
            slices: listed_set(&self.ipv6.slices, MAX_CERT_SLICES6)?,
            groups: self.ipv6.groups,
        };
        Ok(MemberCertificate {
            body: b.with_slices(slices),
            ipv6,
            site: self.site,
            bytes: self.bytes,
        })
    }
}

impl MemberCertificate {
    pub fn body(&self) -> &CertificateBody {
        &self.body
    }

    /// What the certificate grants on IPv6 groups; empty for a version 1 certificate.
    pub fn ipv6(&self) -> &Ipv6Grant {
        &self.ipv6
    }

    /// The site a router certificate (version 3, SPEC.md §4.3) names; `None` for a member's
    /// certificate. Never `Some(SiteId(0))`.
    pub fn site(&self) -> Option<SiteId> {
        self.site
    }

    /// The exact bytes, as carried in joins.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn check_validity(&self, now: Timestamp) -> Result<(), CertificateError> {
        if self.body.valid_at(now) {
            Ok(())
        } else {
            Err(CertificateError::NotValidNow {
                now,
                not_before: self.body.not_before,
                not_after: self.body.not_after,
            })
        }
    }

    /// `bytes` carried as if they were this certificate's: hostile certificates for tests.
    #[cfg(test)]
    pub(crate) fn with_bytes(&self, bytes: Vec<u8>) -> MemberCertificate {
        MemberCertificate {
            body: self.body.clone(),
            ipv6: self.ipv6.clone(),
            site: self.site,
            bytes,
        }
    }

    /// Re-reads a certificate the holder stored itself (for example a server's own certificate
    /// file) and checks it against the group key.
    pub fn from_trusted_bytes(
        bytes: &[u8],
        group_key: &VerifyingKey,
        now: Timestamp,
    ) -> Result<MemberCertificate, CertificateError> {
        UnverifiedCertificate::decode(bytes)?.verify(group_key, now)
    }
}

#[cfg(test)]
#[path = "cert_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cert_router_tests.rs"]
mod router_tests;
