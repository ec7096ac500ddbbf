//! Manycast's signed slice join over MLDv2 (issue 15, item 1; SPEC.md §3.8): an RFC 3810 report
//! whose record for the service group lists one base address per include slice (one in all for
//! a UNITS claim), followed by the same RFC 9279 extension as the IGMPv3 join (`join.rs`), with
//! 128-bit slices or a bitmap of units, a LINK sub-TLV naming the on-link prefix, and an Ed25519
//! signature under its own context string over bytes that include the 16-byte link-local
//! sender.

use crate::cert::{CertificateError, MemberCertificate, MemberId, UnverifiedCertificate};
use crate::join::{
    check_record, decode_anchors, extension_subs, signed_parts, standby_bitmap_len, sub_type,
    AllocationEpoch, BuildError, JoinParseError, SliceEntry6, SubFields, EXTENSION_VERSION,
    MAX_JOIN_SLICES, MAX_LIVENESS_ANCHORS, MAX_STANDBY_BITS, NONCE_LEN, SIGNATURE_LEN,
    SLICE_FLAG_EXCLUDE,
};
use crate::liveness::LivenessAnchor;
use crate::signature;
use crate::slice::{Slice6, SliceSet6, StepBudget, TooComplex};
use crate::time::Timestamp;
use crate::wire::extension::{push_tlv, REPORT_FLAG_EXTENSION, TYPE_EXPERIMENTAL_MANYCAST};
use crate::wire::ipv6::{Ipv6Repr, NEXT_HEADER_ICMPV6, ROUTER_ALERT_MLD};
use crate::wire::mld::{
    fill_checksum, MessageType, MldPacket, MldRepr, ReportRepr, ALL_MLDV2_ROUTERS,
};
use crate::wire::record::{GroupRecordRepr, RecordType};
use crate::wire::{read_u64, WireError};
use core::net::Ipv6Addr;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// Domain separation for MLDv2 join signatures (SPEC.md §3.8): differs from the IGMPv3 join's
/// ([`crate::join::JOIN_SIGNING_CONTEXT`]), so that no signature verifies as the other kind.
pub const MLD_JOIN_SIGNING_CONTEXT: &[u8] = b"manycast signed mld join v1\0";
/// One slice entry on the wire: flags, value (16 bytes), mask (16 bytes).
pub const SLICE6_ENTRY_LEN: usize = 33;
/// The LINK sub-TLV: prefix length, then the prefix (bits past the length zero).
pub const LINK_LEN: usize = 17;
/// Largest IPv6 datagram (headers included) the router parses as an MLDv2 join (SPEC.md §3.7):
/// a join with [`MAX_JOIN_SLICES`] include entries, two liveness anchors and the largest
/// certificate is under 55 KiB (test `a_join_at_every_cap_fits_the_datagram_cap`).
pub const MAX_MLD_JOIN_DATAGRAM: usize = 56 * 1024;

/// True for fe80::/10, where MLD messages come from (RFC 3810 §5).
pub fn is_link_local(addr: Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

/// What a member states in an MLDv2 join: "at `epoch`, on the link of `link`, I serve exactly
/// these slices of `group`". As for IGMPv3 the statement is the whole set; empty is a leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClaims6 {
    pub group: Ipv6Addr,
    /// `ModeIsInclude` when answering a query, `ChangeToIncludeMode` when the set changed.
    pub record_type: RecordType,
    pub entries: Vec<SliceEntry6>,
    pub epoch: AllocationEpoch,
    pub timestamp: Timestamp,
    /// Fresh random bytes for every join.
    pub nonce: [u8; NONCE_LEN],
    /// An on-link prefix of the member's link (a CIDR prefix, typically its /64): the router
    /// accepts the join only on an interface that has this prefix.
    pub link: Slice6,
    /// As in [`crate::join::JoinClaims::standby`], over IPv6 units (SPEC.md §3.8, §5.5): the
    /// site-slicing counterparts of the IPv4 join's standby units, include entries sharing one
    /// mask of at most [`MAX_STANDBY_BITS`] bits, sent as a bitmap over its units.
    pub standby: Vec<SliceEntry6>,
    /// As in [`crate::join::JoinClaims::liveness`]; at most [`MAX_LIVENESS_ANCHORS`].
    pub liveness: Vec<LivenessAnchor>,
    /// The entries go as a UNITS bitmap (SPEC.md §3.8): include units of one mask of at most
    /// [`MAX_STANDBY_BITS`] bits, in ascending unit order, at least one. A member's scattered
    /// units then cost a bit each, where SLICES costs 49 bytes per include entry.
    pub as_units: bool,
}

impl JoinClaims6 {
    /// The record's source list: the base address of every include entry, in order; of the
    /// first unit only for a UNITS claim, so that the record does not grow with the units.
    pub fn record_sources(&self) -> Vec<Ipv6Addr> {
        let sources = self.entries.iter().filter(|e| !e.exclude);
        let listed = if self.as_units { 1 } else { usize::MAX };
        sources.take(listed).map(|e| e.slice.base()).collect()
    }

    /// The set the entries grant, within [`StepBudget::for_slices`] of the entry count.
    pub fn slices(&self) -> Result<SliceSet6, TooComplex> {
        crate::join::effective_slices(
            &self.entries,
            &mut StepBudget::for_slices(self.entries.len()),
        )
    }
}

/// Builds the MLDv2 message (the ICMPv6 payload) of a signed join from the link-local `sender`,
/// checksummed for [`ALL_MLDV2_ROUTERS`].
pub fn build_signed_mld_report(
    claims: &JoinClaims6,
    sender: Ipv6Addr,
    cert: &MemberCertificate,
    key: &SigningKey,
) -> Result<Vec<u8>, BuildError> {
    if claims.entries.len() + claims.standby.len() > MAX_JOIN_SLICES {
        return Err(BuildError::TooLarge(WireError::Malformed(
            "more slice entries than a router accepts (MAX_JOIN_SLICES)",
        )));
    }
    build_mld_report_uncapped(claims, sender, cert, key)
}

/// [`build_signed_mld_report`] without the slice cap, for tests of the router's refusal.
pub(crate) fn build_mld_report_uncapped(
    claims: &JoinClaims6,
    sender: Ipv6Addr,
    cert: &MemberCertificate,
    key: &SigningKey,
) -> Result<Vec<u8>, BuildError> {
    if !matches!(
        claims.record_type,
        RecordType::ModeIsInclude | RecordType::ChangeToIncludeMode
    ) {
        return Err(BuildError::RecordType(claims.record_type));
    }
    if cert.body().member_key != key.verifying_key() {
        return Err(BuildError::KeyMismatch);
    }
    if !is_link_local(sender) {
        return Err(BuildError::SenderNotLinkLocal(sender));
    }
    let bad = |why| BuildError::TooLarge(WireError::Malformed(why));
    if claims.liveness.len() > MAX_LIVENESS_ANCHORS {
        return Err(bad(
            "more liveness anchors than a router accepts (MAX_LIVENESS_ANCHORS)",
        ));
    }
    let link = encode_link(&claims.link).ok_or(bad("the link is not a CIDR prefix"))?;
    let units = if claims.as_units {
        Some(encode_units(&claims.entries).ok_or(bad(
            "UNITS entries must be at least one include unit of one mask of at most \
             MAX_STANDBY_BITS bits, in ascending unit order",
        ))?)
    } else {
        None
    };
    let mut value = vec![EXTENSION_VERSION];
    if units.is_none() {
        push_tlv(
            &mut value,
            sub_type::SLICES,
            &encode_entries(&claims.entries),
        )?;
    }
    push_tlv(&mut value, sub_type::EPOCH, &claims.epoch.0.to_be_bytes())?;
    push_tlv(
        &mut value,
        sub_type::TIMESTAMP,
        &claims.timestamp.0.to_be_bytes(),
    )?;
    push_tlv(&mut value, sub_type::NONCE, &claims.nonce)?;
    push_tlv(&mut value, sub_type::CERTIFICATE, cert.as_bytes())?;
    if !claims.standby.is_empty() {
        let units = encode_standby(&claims.standby).ok_or(bad(
            "standby entries must be include units of one mask of at most MAX_STANDBY_BITS bits",
        ))?;
        push_tlv(&mut value, sub_type::STANDBY, &units)?;
    }
    if !claims.liveness.is_empty() {
        let anchors: Vec<u8> = claims.liveness.iter().flat_map(|a| a.encode()).collect();
        push_tlv(&mut value, sub_type::LIVENESS, &anchors)?;
    }
    push_tlv(&mut value, sub_type::LINK, &link)?;
    if let Some(units) = units {
        push_tlv(&mut value, sub_type::UNITS, &units)?;
    }
    // The signature goes last, over everything before it: its place is reserved first so that
    // every length field is final when the message is signed.
    push_tlv(&mut value, sub_type::SIGNATURE, &[0u8; SIGNATURE_LEN])?;
    let mut additional = Vec::with_capacity(value.len() + 4);
    push_tlv(&mut additional, TYPE_EXPERIMENTAL_MANYCAST, &value)?;

    let report = MldRepr::V2Report(ReportRepr {
        flags: REPORT_FLAG_EXTENSION,
        records: vec![GroupRecordRepr {
            record_type: claims.record_type,
            group: claims.group,
            sources: claims.record_sources(),
            aux_data: Vec::new(),
        }],
        additional_data: additional,
    });
    report.validate()?;
    let ip_len = mld_ip_header(sender, 0).header_len();
    if report.buffer_len() + ip_len > MAX_MLD_JOIN_DATAGRAM {
        return Err(bad(
            "join longer than a router parses (MAX_MLD_JOIN_DATAGRAM)",
        ));
    }
    let mut msg = vec![0u8; report.buffer_len()];
    report.emit(&mut msg, sender, ALL_MLDV2_ROUTERS);
    let signed_len = msg.len() - SIGNATURE_LEN;
    let sig = signature::sign(key, &mld_signed_message(sender, &msg[..signed_len]));
    msg[signed_len..].copy_from_slice(&sig.to_bytes());
    fill_checksum(&mut msg, sender, ALL_MLDV2_ROUTERS);
    Ok(msg)
}

/// The IPv6 header MLDv2 reports use (RFC 3810 §5): hop limit 1, the Router Alert for MLD in a
/// Hop-by-Hop header, to ff02::16.
fn mld_ip_header(sender: Ipv6Addr, payload_len: usize) -> Ipv6Repr {
    Ipv6Repr {
        src_addr: sender,
        dst_addr: ALL_MLDV2_ROUTERS,
        next_header: NEXT_HEADER_ICMPV6,
        hop_limit: 1,
        traffic_class: 0,
        flow_label: 0,
        router_alert: Some(ROUTER_ALERT_MLD),
        payload_len,
    }
}

/// Wraps an MLD message in the IPv6 header and Hop-by-Hop Router Alert MLDv2 reports use.
///
/// # Panics
/// When `mld` is longer than an IPv6 payload can be: a caller bug ([`build_signed_mld_report`]
/// makes nothing that long).
pub fn build_mld_datagram(sender: Ipv6Addr, mld: &[u8]) -> Vec<u8> {
    let ip = mld_ip_header(sender, mld.len());
    let mut out = vec![0u8; ip.buffer_len()];
    ip.emit(&mut out);
    out[ip.header_len()..].copy_from_slice(mld);
    out
}

/// The bytes an MLDv2 join signature covers (SPEC.md §3.8): the context string, the sender's
/// 16-byte address, then the MLD message up to the signature value with its checksum taken as
/// zero.
pub fn mld_signed_message(sender: Ipv6Addr, msg_before_signature: &[u8]) -> Vec<u8> {
    let head = MLD_JOIN_SIGNING_CONTEXT.len() + 16;
    let mut m = Vec::with_capacity(head + msg_before_signature.len());
    m.extend_from_slice(MLD_JOIN_SIGNING_CONTEXT);
    m.extend_from_slice(&sender.octets());
    m.extend_from_slice(msg_before_signature);
    if m.len() >= head + 4 {
        m[head + 2..head + 4].copy_from_slice(&[0, 0]);
    }
    m
}

/// The SLICES sub-TLV value: flags, value, mask per entry.
fn encode_entries(entries: &[SliceEntry6]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * SLICE6_ENTRY_LEN);
    for e in entries {
        out.push(if e.exclude { SLICE_FLAG_EXCLUDE } else { 0 });
        out.extend_from_slice(&e.slice.value().to_be_bytes());
        out.extend_from_slice(&e.slice.mask().to_be_bytes());
    }
    out
}

/// Parses a SLICES sub-TLV value whose length [`SubFields::collect`] checked.
fn decode_entries(bytes: &[u8]) -> Result<Vec<SliceEntry6>, JoinParseError> {
    let mut entries = Vec::with_capacity(bytes.len() / SLICE6_ENTRY_LEN);
    for c in bytes.chunks_exact(SLICE6_ENTRY_LEN) {
        let flags = c[0];
        if flags & !SLICE_FLAG_EXCLUDE != 0 {
            return Err(JoinParseError::Malformed("unknown slice flag"));
        }
        let (value, mask) = (read_u128(&c[1..17]), read_u128(&c[17..33]));
        if value & !mask != 0 {
            return Err(JoinParseError::Malformed(
                "slice value has bits outside its mask",
            ));
        }
        entries.push(SliceEntry6 {
            slice: Slice6::new(value, mask),
            exclude: flags & SLICE_FLAG_EXCLUDE != 0,
        });
    }
    Ok(entries)
}

/// The STANDBY sub-TLV value over IPv6 (SPEC.md §3.8): the units' 16-byte mask, then one bit
/// per unit of that mask as in IGMPv3's (§3.2). `None` unless the entries are include units of
/// one mask of at most [`MAX_STANDBY_BITS`] bits.
fn encode_standby(units: &[SliceEntry6]) -> Option<Vec<u8>> {
    let mask = units.first()?.slice.mask();
    if mask.count_ones() > MAX_STANDBY_BITS {
        return None;
    }
    let mut out = mask.to_be_bytes().to_vec();
    out.resize(16 + standby_bitmap_len(mask.count_ones()), 0);
    for e in units {
        if e.exclude || e.slice.mask() != mask {
            return None;
        }
        let i = extract_bits(e.slice.value(), mask) as usize;
        out[16 + i / 8] |= 1 << (i % 8);
    }
    Some(out)
}

/// The UNITS sub-TLV value: the STANDBY encoding, for entries it gives back exactly (so that
/// the record's one source is the first unit the router decodes). `None` for other entries.
fn encode_units(entries: &[SliceEntry6]) -> Option<Vec<u8>> {
    encode_standby(entries).filter(|bytes| decode_standby(bytes) == entries)
}

/// Parses a STANDBY or UNITS sub-TLV value whose mask and length [`SubFields::collect`] checked.
fn decode_standby(bytes: &[u8]) -> Vec<SliceEntry6> {
    let Some((mask, bitmap)) = bytes.split_first_chunk::<16>() else {
        return Vec::new();
    };
    let mask = u128::from_be_bytes(*mask);
    (0..1u32 << mask.count_ones())
        .filter(|&i| bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0)
        .map(|i| SliceEntry6::include(Slice6::new(deposit_bits(i, mask), mask)))
        .collect()
}

/// The bits of `value` at `mask`'s positions, packed from the lowest (PEXT).
fn extract_bits(value: u128, mask: u128) -> u32 {
    (0..128)
        .filter(|b| mask & (1 << b) != 0)
        .enumerate()
        .fold(0, |acc, (k, b)| acc | ((((value >> b) & 1) as u32) << k))
}

/// `i`'s bits placed at `mask`'s positions, from the lowest (PDEP).
fn deposit_bits(i: u32, mask: u128) -> u128 {
    (0..128)
        .filter(|b| mask & (1 << b) != 0)
        .enumerate()
        .fold(0, |acc, (k, b)| acc | (u128::from((i >> k) & 1) << b))
}

fn read_u128(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    u128::from_be_bytes(a)
}

/// The LINK value of a CIDR prefix; `None` for a mask that is not one.
fn encode_link(link: &Slice6) -> Option<[u8; LINK_LEN]> {
    let len = link.mask().leading_ones();
    if len + link.mask().trailing_zeros() != 128 && link.mask() != 0 {
        return None;
    }
    let mut out = [0u8; LINK_LEN];
    out[0] = len as u8;
    out[1..].copy_from_slice(&link.value().to_be_bytes());
    Some(out)
}

fn decode_link(bytes: &[u8]) -> Result<Slice6, JoinParseError> {
    let bad = JoinParseError::Malformed;
    let (&len, prefix) = bytes.split_first().ok_or(bad("no link"))?;
    if prefix.len() != 16 || len > 128 {
        return Err(bad("link prefix length"));
    }
    let addr = Ipv6Addr::from(read_u128(prefix));
    let link = Slice6::prefix(addr, len);
    if link.base() != addr {
        return Err(bad("link prefix has bits past its length"));
    }
    Ok(link)
}

/// A signed MLDv2 join as parsed from the wire: every field is a claim until
/// [`crate::verify6::verify_mld_datagram`] has checked it.
#[derive(Debug, Clone)]
pub struct UnverifiedMldJoin {
    claims: JoinClaims6,
    certificate: Vec<u8>,
    signature: Signature,
    /// The message up to the signature value, checksum zeroed when signed over.
    signed_prefix: Vec<u8>,
}

impl UnverifiedMldJoin {
    /// Extracts the signed join for the one record in `packet` whose group `is_protected` says
    /// is protected; `Ok(None)` when no record is. The same refusals as the IGMPv3 join's
    /// ([`crate::join::UnverifiedJoin::parse`]), and a join without LINK is malformed.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &MldPacket<T>,
        is_protected: impl Fn(Ipv6Addr) -> bool,
    ) -> Result<Option<UnverifiedMldJoin>, JoinParseError> {
        if packet.msg_type() != MessageType::V2Report {
            return Err(JoinParseError::Malformed("not an MLDv2 report"));
        }
        let mut protected = packet.group_records().filter(|r| is_protected(r.group()));
        let Some(record) = protected.next() else {
            return Ok(None);
        };
        if protected.next().is_some() {
            return Err(JoinParseError::RecordMismatch(
                "more than one protected group in one report",
            ));
        }
        if packet.report_flags() & REPORT_FLAG_EXTENSION == 0 {
            return Err(JoinParseError::Unsigned);
        }
        let subs = extension_subs(packet.additional_data())?;
        let fields = SubFields::collect(&subs, SLICE6_ENTRY_LEN)?;
        let link = subs
            .iter()
            .find(|t| t.kind == sub_type::LINK)
            .ok_or(JoinParseError::Malformed("no link"))?;
        let claims = JoinClaims6 {
            group: record.group(),
            record_type: record.record_type(),
            entries: match fields.units {
                Some(units) => decode_standby(units),
                None => decode_entries(fields.slices)?,
            },
            epoch: AllocationEpoch(read_u64(fields.epoch, 0)),
            timestamp: Timestamp(read_u64(fields.timestamp, 0)),
            nonce: fields
                .nonce
                .try_into()
                .map_err(|_| JoinParseError::Malformed("nonce length"))?,
            link: decode_link(link.value)?,
            standby: decode_standby(fields.standby),
            liveness: decode_anchors(fields.liveness)?,
            as_units: fields.units.is_some(),
        };
        check_record(
            claims.record_type,
            record.sources(),
            claims.record_sources(),
            claims.entries.is_empty(),
        )?;
        let (signature, signed_prefix) = signed_parts(&fields, packet.as_bytes())?;
        Ok(Some(UnverifiedMldJoin {
            claims,
            certificate: fields.certificate.to_vec(),
            signature,
            signed_prefix,
        }))
    }

    /// The claims, not yet proven.
    pub fn claims(&self) -> &JoinClaims6 {
        &self.claims
    }

    /// The certificate exactly as carried.
    pub fn certificate_bytes(&self) -> &[u8] {
        &self.certificate
    }

    /// Decodes the certificate; its claims are unproven until checked against a group key.
    pub fn certificate(&self) -> Result<UnverifiedCertificate, CertificateError> {
        UnverifiedCertificate::decode(&self.certificate)
    }

    /// The member id the certificate claims, read without decoding the rest.
    pub fn claimed_member(&self) -> Option<MemberId> {
        crate::cert::peek_member_id(&self.certificate)
    }

    /// How many bytes the signature covers.
    pub fn signed_len(&self) -> usize {
        MLD_JOIN_SIGNING_CONTEXT.len() + 16 + self.signed_prefix.len()
    }

    /// The exact bytes the signature must cover for a join from `sender`.
    pub fn signed_message(&self, sender: Ipv6Addr) -> Vec<u8> {
        mld_signed_message(sender, &self.signed_prefix)
    }

    /// Whether `key` signed this join as sent from `sender` (strict Ed25519, RFC 8032).
    pub(crate) fn signature_verifies(&self, sender: Ipv6Addr, key: &VerifyingKey) -> bool {
        signature::verify(key, &self.signed_message(sender), &self.signature)
    }
}

#[cfg(test)]
#[path = "mld_join_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "mld_units_tests.rs"]
mod units_tests;
