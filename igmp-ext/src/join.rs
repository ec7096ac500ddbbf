//! Manycast's signed slice join (brief decision 1; patent Fig 5 and 7C): a standard IGMPv3
//! report whose record for the service group lists one base address per slice, followed by one
//! RFC 9279 extension TLV that carries the slices as (value, mask) pairs, the allocation epoch, a
//! timestamp, a nonce, the member certificate, and an Ed25519 signature over exact bytes that
//! include the sender's IPv4 address. Byte layout: `SPEC.md` §3.

use crate::cert::{CertificateError, MemberCertificate, MemberId, UnverifiedCertificate};
use crate::liveness::LivenessAnchor;
use crate::signature;
use crate::slice::{Bits, Slice, SliceOf, SliceSet, SliceSetOf, StepBudget, TooComplex};
use crate::time::Timestamp;
use crate::wire::extension::{
    self, parse_tlvs, push_tlv, REPORT_FLAG_EXTENSION, TYPE_EXPERIMENTAL_MANYCAST,
};
use crate::wire::igmp::{
    fill_checksum, IgmpPacket, IgmpRepr, MessageType, ReportRepr, ALL_V3_ROUTERS,
};
use crate::wire::ipv4::{Ipv4Repr, PROTOCOL_IGMP, TOS_INTERNETWORK_CONTROL};
use crate::wire::record::{GroupRecordRepr, RecordType};
use crate::wire::{read_u32, read_u64, WireError};
use core::fmt;
use core::net::Ipv4Addr;
use ed25519_dalek::{Signature, SigningKey};

/// Domain separation for join signatures (SPEC.md §3.3).
pub const JOIN_SIGNING_CONTEXT: &[u8] = b"manycast signed join v1\0";
/// Version byte at the start of the extension value.
pub const EXTENSION_VERSION: u8 = 0x01;
/// Bytes of the nonce.
pub const NONCE_LEN: usize = 16;
pub(crate) const SIGNATURE_LEN: usize = 64;
/// One slice entry on the wire: flags, value, mask.
const SLICE_ENTRY_LEN: usize = 9;
pub(crate) const SLICE_FLAG_EXCLUDE: u8 = 0x01;
/// Most slice entries a join may carry (SPEC.md §3.7). A member's claim is a set of its
/// allocation's units, merged where siblings: with the default 8-bit slicing that is at most 128
/// slices, and 1,024 covers every allocation up to 11 bits however the units fall. Checked from
/// the sub-TLV's length before any entry is read. The set the entries grant is built only after
/// the join's signature verified, within a budget of steps, and has at most this many slices.
pub const MAX_JOIN_SLICES: usize = 1024;
/// Most bits of a standby unit mask: a bitmap of 2^11 units is 256 bytes.
pub const MAX_STANDBY_BITS: u32 = 11;
/// Liveness anchors in one join (SPEC.md §5.5): the chain a member beacons on and the next.
pub const MAX_LIVENESS_ANCHORS: usize = 2;
/// Largest IPv4 datagram the router parses (SPEC.md §3.7): a join with [`MAX_JOIN_SLICES`]
/// entries and the largest certificate is 15,685 bytes with a 60-byte IPv4 header; the rest
/// leaves room for public group records in the same report. Reassembled IGMP datagrams can be
/// 64 KiB; anything above this is refused by its length alone.
pub const MAX_JOIN_DATAGRAM: usize = 16 * 1024;

/// Sub-TLV types inside the extension value. They appear in ascending order, each at most once;
/// the signature comes last (SPEC.md §3.2).
pub mod sub_type {
    pub const SLICES: u16 = 0x0001;
    pub const EPOCH: u16 = 0x0002;
    pub const TIMESTAMP: u16 = 0x0003;
    pub const NONCE: u16 = 0x0004;
    pub const CERTIFICATE: u16 = 0x0005;
    pub const STANDBY: u16 = 0x0006;
    pub const LIVENESS: u16 = 0x0007;
    /// MLDv2 joins only (SPEC.md §3.8): the on-link prefix the member signs for, so that a
    /// join from a link-local sender cannot be replayed on another link. Ignored in IGMPv3.
    pub const LINK: u16 = 0x0008;
    /// The claim as units of one mask, a bitmap as STANDBY's, instead of SLICES entries: a
    /// member's units cost one bit each rather than an entry (SPEC.md §3.2, §3.8). A join
    /// carries exactly one of SLICES and UNITS.
    pub const UNITS: u16 = 0x0009;
    pub const SIGNATURE: u16 = 0xffff;
}

/// The number of an allocation. Epochs only grow; the router and the control group use them as
/// fencing tokens: a claim made in an older epoch never displaces one made in a newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AllocationEpoch(pub u64);

impl fmt::Display for AllocationEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// One (value, mask) pair with its Fig 7C property: permitted (include) or prohibited (exclude).
/// Use it as [`SliceEntry`] (IPv4) or [`SliceEntry6`] (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SliceEntryOf<W> {
    pub slice: SliceOf<W>,
    pub exclude: bool,
}

/// A slice entry of an IGMPv3 join.
pub type SliceEntry = SliceEntryOf<u32>;
/// A slice entry of an MLDv2 join ([`crate::mld_join`]).
pub type SliceEntry6 = SliceEntryOf<u128>;

impl<W: Bits> SliceEntryOf<W> {
    pub fn include(slice: SliceOf<W>) -> Self {
        SliceEntryOf {
            slice,
            exclude: false,
        }
    }

    pub fn exclude(slice: SliceOf<W>) -> Self {
        SliceEntryOf {
            slice,
            exclude: true,
        }
    }
}

/// The addresses a list of entries grants: the union of the includes minus the union of the
/// excludes, built within `budget` (the entries may be a peer's choice: SPEC.md §3.7) and of
/// at most [`MAX_JOIN_SLICES`] slices.
pub fn effective_slices<W: Bits>(
    entries: &[SliceEntryOf<W>],
    budget: &mut StepBudget,
) -> Result<SliceSetOf<W>, TooComplex> {
    let listed = |exclude: bool| -> Vec<SliceOf<W>> {
        entries
            .iter()
            .filter(|e| e.exclude == exclude)
            .map(|e| e.slice)
            .collect()
    };
    let include = SliceSetOf::try_from_slices(&listed(false), budget)?;
    let exclude = SliceSetOf::try_from_slices(&listed(true), budget)?;
    let set = include.try_difference(&exclude, budget)?;
    if set.len() > MAX_JOIN_SLICES {
        return Err(TooComplex::Len {
            slices: entries.len(),
            len: set.len(),
            cap: MAX_JOIN_SLICES,
        });
    }
    Ok(set)
}

/// What a member states in a join: "at `epoch`, I serve exactly these slices of `group`".
/// The statement is always the whole set (state of the world); an empty set is a leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClaims {
    pub group: Ipv4Addr,
    /// `ModeIsInclude` when answering a query, `ChangeToIncludeMode` when the set changed.
    pub record_type: RecordType,
    pub entries: Vec<SliceEntry>,
    pub epoch: AllocationEpoch,
    pub timestamp: Timestamp,
    /// Fresh random bytes for every join: the replay cache remembers (member, nonce).
    pub nonce: [u8; NONCE_LEN],
    /// The units this member takes, at `epoch`, if their owner fails (SPEC.md §5.5): the
    /// router steers them here when it misses the owner's beacons. Empty: none. Units of one
    /// slicing (include entries sharing one mask of at most [`MAX_STANDBY_BITS`] bits), sent
    /// as a bitmap over its units so that they cost a join 4 bytes and one bit each.
    pub standby: Vec<SliceEntry>,
    /// Where this member's liveness beacons stand (SPEC.md §5.5): the chain it beacons on
    /// and, while it hands over, the next one; empty: it sends none. At most
    /// [`MAX_LIVENESS_ANCHORS`].
    pub liveness: Vec<LivenessAnchor>,
    /// The entries go as a UNITS bitmap (SPEC.md §3.2): include units of one mask of at most
    /// [`MAX_STANDBY_BITS`] bits, in ascending unit order, at least one. Scattered units then
    /// cost a bit each, where SLICES costs 13 bytes per include entry.
    pub as_units: bool,
}

impl JoinClaims {
    /// The record's source list: the base address of every include entry, in order; of the
    /// first unit only for a UNITS claim, so that the record does not grow with the units.
    pub fn record_sources(&self) -> Vec<Ipv4Addr> {
        let sources = self.entries.iter().filter(|e| !e.exclude);
        let listed = if self.as_units { 1 } else { usize::MAX };
        sources.take(listed).map(|e| e.slice.base()).collect()
    }

    /// The set the entries grant ([`effective_slices`]), within
    /// [`StepBudget::for_slices`] of the entry count.
    pub fn slices(&self) -> Result<SliceSet, TooComplex> {
        effective_slices(
            &self.entries,
            &mut StepBudget::for_slices(self.entries.len()),
        )
    }
}

/// Why a signed join could not be built. All are caller bugs or limits of the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error(
        "record type {0:?} cannot carry a signed join (use ModeIsInclude or ChangeToIncludeMode)"
    )]
    RecordType(RecordType),
    #[error("the certificate's key is not the signing key")]
    KeyMismatch,
    #[error("join does not fit: {0}")]
    TooLarge(#[from] WireError),
    /// An MLDv2 join goes from a link-local address (RFC 3810 §5), never from `::`.
    #[error("sender {0} is not a link-local unicast address")]
    SenderNotLinkLocal(core::net::Ipv6Addr),
}

/// Builds the IGMPv3 message (the IP payload) of a signed join from `sender`.
pub fn build_signed_report(
    claims: &JoinClaims,
    sender: Ipv4Addr,
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
    if claims.entries.len() + claims.standby.len() > MAX_JOIN_SLICES {
        return Err(BuildError::TooLarge(WireError::Malformed(
            "more slice entries than a router accepts (MAX_JOIN_SLICES)",
        )));
    }
    build_report_uncapped(claims, sender, cert, key)
}

/// [`build_signed_report`] without the slice cap, for tests of the router's refusal.
pub(crate) fn build_report_uncapped(
    claims: &JoinClaims,
    sender: Ipv4Addr,
    cert: &MemberCertificate,
    key: &SigningKey,
) -> Result<Vec<u8>, BuildError> {
    let mut value = vec![EXTENSION_VERSION];
    if !claims.as_units {
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
        push_tlv(
            &mut value,
            sub_type::STANDBY,
            &encode_standby(&claims.standby)?,
        )?;
    }
    if claims.liveness.len() > MAX_LIVENESS_ANCHORS {
        return Err(BuildError::TooLarge(WireError::Malformed(
            "more liveness anchors than a router accepts (MAX_LIVENESS_ANCHORS)",
        )));
    }
    if !claims.liveness.is_empty() {
        let anchors: Vec<u8> = claims.liveness.iter().flat_map(|a| a.encode()).collect();
        push_tlv(&mut value, sub_type::LIVENESS, &anchors)?;
    }
    if claims.as_units {
        push_tlv(&mut value, sub_type::UNITS, &encode_units(&claims.entries)?)?;
    }
    // The signature goes in last, over everything before it; reserve its place now so that every
    // length field is final when the message is signed.
    push_tlv(&mut value, sub_type::SIGNATURE, &[0u8; SIGNATURE_LEN])?;
    let mut additional = Vec::with_capacity(value.len() + 4);
    push_tlv(&mut additional, TYPE_EXPERIMENTAL_MANYCAST, &value)?;

    let report = IgmpRepr::V3Report(ReportRepr {
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
    if report.buffer_len() + 24 > usize::from(u16::MAX) {
        return Err(BuildError::TooLarge(WireError::Malformed(
            "join longer than a router parses (MAX_JOIN_DATAGRAM)",
        )));
    }
    let mut msg = vec![0u8; report.buffer_len()];
    report.emit(&mut msg);
    debug_assert!(
        claims.entries.len() + claims.standby.len() > MAX_JOIN_SLICES
            || msg.len() + 24 <= MAX_JOIN_DATAGRAM,
        "a join within the slice cap fits what a router parses"
    );
    let signed_len = msg.len() - SIGNATURE_LEN;
    let sig = signature::sign(key, &signed_message(sender, &msg[..signed_len]));
    msg[signed_len..].copy_from_slice(&sig.to_bytes());
    fill_checksum(&mut msg);
    Ok(msg)
}

/// The SLICES sub-TLV value: flags, value, mask per entry.
fn encode_entries(entries: &[SliceEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * SLICE_ENTRY_LEN);
    for e in entries {
        out.push(if e.exclude { SLICE_FLAG_EXCLUDE } else { 0 });
        out.extend_from_slice(&e.slice.value().to_be_bytes());
        out.extend_from_slice(&e.slice.mask().to_be_bytes());
    }
    out
}

/// The STANDBY sub-TLV value (SPEC.md §3.2): the units' mask, then one bit per unit of that
/// mask, unit `i` being the value whose mask bits spell `i` (lowest mask bit first), bit `i % 8`
/// of byte `i / 8`.
fn encode_standby(units: &[SliceEntry]) -> Result<Vec<u8>, BuildError> {
    let bad = |why| BuildError::TooLarge(WireError::Malformed(why));
    let mask = units[0].slice.mask();
    if mask.count_ones() > MAX_STANDBY_BITS {
        return Err(bad("standby units finer than MAX_STANDBY_BITS"));
    }
    let mut out = mask.to_be_bytes().to_vec();
    out.resize(4 + standby_bitmap_len(mask.count_ones()), 0);
    for e in units {
        if e.exclude || e.slice.mask() != mask {
            return Err(bad("standby entries must be include units of one mask"));
        }
        let i = extract_bits(e.slice.value(), mask) as usize;
        out[4 + i / 8] |= 1 << (i % 8);
    }
    Ok(out)
}

/// The UNITS sub-TLV value: the STANDBY encoding, for entries it gives back exactly (so that
/// the record's one source is the first unit the router decodes).
fn encode_units(entries: &[SliceEntry]) -> Result<Vec<u8>, BuildError> {
    let bytes = (!entries.is_empty())
        .then(|| encode_standby(entries).ok())
        .flatten()
        .filter(|bytes| decode_standby(bytes) == entries);
    bytes.ok_or(BuildError::TooLarge(WireError::Malformed(
        "UNITS entries must be at least one include unit of one mask of at most \
         MAX_STANDBY_BITS bits, in ascending unit order",
    )))
}

/// Bytes of the bitmap of the units of a mask with `bits` bits set (at least one).
pub(crate) fn standby_bitmap_len(bits: u32) -> usize {
    ((1usize << bits) / 8).max(1)
}

/// How many units a bitmap sub-TLV value (STANDBY, UNITS) names, its mask `mask_len` bytes wide
/// (an address: 4 in IGMPv3 joins, 16 in MLDv2 ones): the mask has at most
/// [`MAX_STANDBY_BITS`] bits, the bitmap one bit per unit and none past the last unit.
fn bitmap_units(value: &[u8], mask_len: usize) -> Result<usize, JoinParseError> {
    unit_bitmap_units(value, mask_len, MAX_STANDBY_BITS)
}

/// [`bitmap_units`] for a mask of at most `max_bits` bits: shared with the scope notice
/// (`crate::scope`), whose unit bitmap is this encoding over a whole slicing.
pub(crate) fn unit_bitmap_units(
    value: &[u8],
    mask_len: usize,
    max_bits: u32,
) -> Result<usize, JoinParseError> {
    let bad = JoinParseError::Malformed;
    let bits = value
        .get(..mask_len)
        .map(|m| m.iter().map(|b| b.count_ones()).sum::<u32>())
        .filter(|&bits| bits <= max_bits)
        .ok_or(bad("unit mask"))?;
    let bitmap = &value[mask_len..];
    if bitmap.len() != standby_bitmap_len(bits) {
        return Err(bad("unit bitmap length"));
    }
    // Masks of fewer than 3 bits have fewer units than the byte has bits.
    if bits < 3 && bitmap[0] >> (1u32 << bits) != 0 {
        return Err(bad("unit bitmap has bits past its units"));
    }
    Ok(bitmap.iter().map(|b| b.count_ones() as usize).sum())
}

/// The bits of `value` at `mask`'s positions, packed from the lowest (PEXT).
fn extract_bits(value: u32, mask: u32) -> u32 {
    (0..32)
        .filter(|b| mask & (1 << b) != 0)
        .enumerate()
        .fold(0, |acc, (k, b)| acc | (((value >> b) & 1) << k))
}

/// `i`'s bits placed at `mask`'s positions, from the lowest (PDEP).
fn deposit_bits(i: u32, mask: u32) -> u32 {
    (0..32)
        .filter(|b| mask & (1 << b) != 0)
        .enumerate()
        .fold(0, |acc, (k, b)| acc | (((i >> k) & 1) << b))
}

/// Parses a STANDBY sub-TLV value whose length [`SubFields::collect`] checked.
fn decode_standby(bytes: &[u8]) -> Vec<SliceEntry> {
    let Some((mask, bitmap)) = bytes.split_first_chunk::<4>() else {
        return Vec::new();
    };
    let mask = u32::from_be_bytes(*mask);
    let units = 1u32 << mask.count_ones();
    (0..units)
        .filter(|&i| bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0)
        .map(|i| SliceEntry::include(Slice::new(deposit_bits(i, mask), mask)))
        .collect()
}

/// Parses a SLICES sub-TLV value whose length [`SubFields::collect`] checked.
fn decode_entries(bytes: &[u8]) -> Result<Vec<SliceEntry>, JoinParseError> {
    let mut entries = Vec::with_capacity(bytes.len() / SLICE_ENTRY_LEN);
    for c in bytes.chunks_exact(SLICE_ENTRY_LEN) {
        let flags = c[0];
        if flags & !SLICE_FLAG_EXCLUDE != 0 {
            return Err(JoinParseError::Malformed("unknown slice flag"));
        }
        let (value, mask) = (read_u32(c, 1), read_u32(c, 5));
        if value & !mask != 0 {
            return Err(JoinParseError::Malformed(
                "slice value has bits outside its mask",
            ));
        }
        entries.push(SliceEntry {
            slice: Slice::new(value, mask),
            exclude: flags & SLICE_FLAG_EXCLUDE != 0,
        });
    }
    Ok(entries)
}

/// An IGMP message as a whole IPv4 datagram (RFC 3376 §4: TTL 1, ToS 0xc0, Router Alert,
/// RFC 2113), from `src` to `dst`: reports, and the queries a router sends.
pub fn igmp_datagram(src: Ipv4Addr, dst: Ipv4Addr, igmp: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: PROTOCOL_IGMP,
        ttl: 1,
        tos: TOS_INTERNETWORK_CONTROL,
        router_alert: true,
        payload_len: igmp.len(),
    };
    let mut out = vec![0u8; ip.buffer_len()];
    ip.emit(&mut out);
    out[ip.header_len()..].copy_from_slice(igmp);
    out
}

/// Wraps an IGMPv3 report in its IPv4 header (RFC 3376 §4), to 224.0.0.22.
pub fn build_datagram(sender: Ipv4Addr, igmp: &[u8]) -> Vec<u8> {
    igmp_datagram(sender, ALL_V3_ROUTERS, igmp)
}

/// The bytes a join signature covers (SPEC.md §3.3): the context string, the sender's address,
/// then the IGMP message up to the signature value with its checksum field taken as zero.
pub fn signed_message(sender: Ipv4Addr, msg_before_signature: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(JOIN_SIGNING_CONTEXT.len() + 4 + msg_before_signature.len());
    m.extend_from_slice(JOIN_SIGNING_CONTEXT);
    m.extend_from_slice(&sender.octets());
    m.extend_from_slice(msg_before_signature);
    let at = JOIN_SIGNING_CONTEXT.len() + 4 + 2;
    if m.len() >= at + 2 {
        m[at..at + 2].copy_from_slice(&[0, 0]);
    }
    m
}

/// Why a report's Manycast extension was refused before any cryptography.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinParseError {
    /// The report carries no Manycast extension.
    #[error("no signed slice extension")]
    Unsigned,
    #[error("extension malformed: {0}")]
    Malformed(&'static str),
    /// More slice entries than [`MAX_JOIN_SLICES`]: refused before they are read.
    #[error("join carries {0} slice entries, more than the {MAX_JOIN_SLICES} allowed")]
    TooManySlices(usize),
    #[error("extension version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The record does not agree with the extension (types, sources, group count).
    #[error("group record does not match the extension: {0}")]
    RecordMismatch(&'static str),
}

/// A signed join as parsed from the wire: every field is a claim until
/// [`crate::verify::JoinVerifier`] has checked it.
#[derive(Debug, Clone)]
pub struct UnverifiedJoin {
    claims: JoinClaims,
    certificate: Vec<u8>,
    signature: Signature,
    /// The message up to the signature value, checksum zeroed when signed over.
    signed_prefix: Vec<u8>,
}

impl UnverifiedJoin {
    /// Extracts the signed join for the one record in `packet` whose group `is_protected` says is
    /// protected. `Ok(None)` when no record is for a protected group.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &IgmpPacket<T>,
        is_protected: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Option<UnverifiedJoin>, JoinParseError> {
        if packet.msg_type() != MessageType::V3MembershipReport {
            return Err(JoinParseError::Malformed("not an IGMPv3 report"));
        }
        let mut protected = packet.group_records().filter(|r| is_protected(r.group()));
        let Some(record) = protected.next() else {
            return Ok(None);
        };
        // Unsigned first: a host's own kernel report lists every group it joined, protected
        // ones together, and is unsigned, not a signed join that names two groups.
        if packet.report_flags() & REPORT_FLAG_EXTENSION == 0 {
            return Err(JoinParseError::Unsigned);
        }
        if protected.next().is_some() {
            return Err(JoinParseError::RecordMismatch(
                "more than one protected group in one report",
            ));
        }
        let subs = extension_subs(packet.additional_data())?;
        let fields = SubFields::collect(&subs, SLICE_ENTRY_LEN)?;
        let entries = match fields.units {
            Some(units) => decode_standby(units),
            None => decode_entries(fields.slices)?,
        };
        let standby = decode_standby(fields.standby);
        let liveness = decode_anchors(fields.liveness)?;
        let claims = JoinClaims {
            group: record.group(),
            record_type: record.record_type(),
            entries,
            epoch: AllocationEpoch(read_u64(fields.epoch, 0)),
            timestamp: Timestamp(read_u64(fields.timestamp, 0)),
            nonce: fields
                .nonce
                .try_into()
                .map_err(|_| JoinParseError::Malformed("nonce length"))?,
            standby,
            liveness,
            as_units: fields.units.is_some(),
        };
        check_record(
            claims.record_type,
            record.sources(),
            claims.record_sources(),
            claims.entries.is_empty(),
        )?;
        let (signature, signed_prefix) = signed_parts(&fields, packet.as_bytes())?;
        Ok(Some(UnverifiedJoin {
            claims,
            certificate: fields.certificate.to_vec(),
            signature,
            signed_prefix,
        }))
    }

    /// The claims, not yet proven.
    pub fn claims(&self) -> &JoinClaims {
        &self.claims
    }

    /// The certificate exactly as carried. The verifier looks these bytes up in its cache of
    /// checked certificates before it decodes them: decoding means decompressing a curve point,
    /// which costs a fifth of a signature check.
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

    pub(crate) fn signature(&self) -> &Signature {
        &self.signature
    }

    /// How many bytes the signature covers (the length of [`UnverifiedJoin::signed_message`]).
    pub fn signed_len(&self) -> usize {
        JOIN_SIGNING_CONTEXT.len() + 4 + self.signed_prefix.len()
    }

    /// The exact bytes the signature must cover for a join from `sender`.
    pub fn signed_message(&self, sender: Ipv4Addr) -> Vec<u8> {
        signed_message(sender, &self.signed_prefix)
    }
}

/// The sub-TLV values, each present exactly once, in order, signature last. Shared with the
/// MLDv2 join (`crate::mld_join`), whose slice entries are longer.
/// The sub-TLVs of the Manycast extension in a report's additional data, for IGMPv3 and MLDv2
/// alike: it must be the last TLV (none at all: unsigned) and of our version.
pub(crate) fn extension_subs(additional: &[u8]) -> Result<Vec<extension::Tlv<'_>>, JoinParseError> {
    let tlvs =
        parse_tlvs(additional).map_err(|_| JoinParseError::Malformed("extension TLVs overrun"))?;
    let Some(last) = tlvs.last() else {
        return Err(JoinParseError::Malformed("E flag set but no extension TLV"));
    };
    if last.kind != TYPE_EXPERIMENTAL_MANYCAST {
        return Err(
            if tlvs.iter().any(|t| t.kind == TYPE_EXPERIMENTAL_MANYCAST) {
                JoinParseError::Malformed("Manycast extension is not the last TLV")
            } else {
                JoinParseError::Unsigned
            },
        );
    }
    let (version, subs) = last
        .value
        .split_first()
        .ok_or(JoinParseError::Malformed("empty extension value"))?;
    if *version != EXTENSION_VERSION {
        return Err(JoinParseError::UnsupportedVersion(*version));
    }
    let subs = parse_tlvs(subs).map_err(|_| JoinParseError::Malformed("sub-TLVs overrun"))?;
    Ok(subs)
}

/// The checks a protected record must pass against the claims it carries, for IGMPv3 and MLDv2
/// alike: an include record whose sources are the include slices' base addresses, and a leave
/// (no slices) only as CHANGE_TO_INCLUDE.
pub(crate) fn check_record<A: PartialEq>(
    record_type: RecordType,
    sources: impl Iterator<Item = A>,
    claimed: impl IntoIterator<Item = A>,
    leave: bool,
) -> Result<(), JoinParseError> {
    if !matches!(
        record_type,
        RecordType::ModeIsInclude | RecordType::ChangeToIncludeMode
    ) {
        return Err(JoinParseError::RecordMismatch(
            "protected record must be MODE_IS_INCLUDE or CHANGE_TO_INCLUDE",
        ));
    }
    if !sources.eq(claimed) {
        return Err(JoinParseError::RecordMismatch(
            "record sources are not the include slices' base addresses",
        ));
    }
    if leave && record_type != RecordType::ChangeToIncludeMode {
        return Err(JoinParseError::RecordMismatch(
            "a leave (no slices) must be CHANGE_TO_INCLUDE",
        ));
    }
    Ok(())
}

/// The signature a join ends with, and the bytes of `message` it covers (all before it).
pub(crate) fn signed_parts(
    fields: &SubFields<'_>,
    message: &[u8],
) -> Result<(Signature, Vec<u8>), JoinParseError> {
    let sig: [u8; SIGNATURE_LEN] = fields
        .signature
        .try_into()
        .map_err(|_| JoinParseError::Malformed("signature length"))?;
    let prefix = message
        .len()
        .checked_sub(SIGNATURE_LEN)
        .and_then(|n| message.get(..n))
        .ok_or(JoinParseError::Malformed("signature length"))?;
    Ok((Signature::from_bytes(&sig), prefix.to_vec()))
}

/// The LIVENESS sub-TLV's anchors.
pub(crate) fn decode_anchors(bytes: &[u8]) -> Result<Vec<LivenessAnchor>, JoinParseError> {
    bytes
        .chunks_exact(LivenessAnchor::LEN)
        .map(|b| LivenessAnchor::decode(b).ok_or(JoinParseError::Malformed("liveness anchor")))
        .collect()
}

pub(crate) struct SubFields<'a> {
    /// Empty when the claim comes as UNITS.
    pub(crate) slices: &'a [u8],
    /// The UNITS value (mask, then a bitmap naming at least one unit), instead of SLICES.
    pub(crate) units: Option<&'a [u8]>,
    pub(crate) epoch: &'a [u8],
    pub(crate) timestamp: &'a [u8],
    pub(crate) nonce: &'a [u8],
    pub(crate) certificate: &'a [u8],
    /// Empty when the join names no standby units.
    pub(crate) standby: &'a [u8],
    /// Empty when the join carries no liveness anchor.
    pub(crate) liveness: &'a [u8],
    pub(crate) signature: &'a [u8],
}

impl<'a> SubFields<'a> {
    /// The fields of `subs`, slice entries `entry_len` bytes each.
    pub(crate) fn collect(
        subs: &[extension::Tlv<'a>],
        entry_len: usize,
    ) -> Result<Self, JoinParseError> {
        let mut prev: Option<u16> = None;
        let (mut slices, mut epoch, mut timestamp, mut nonce, mut certificate, mut signature) =
            (None, None, None, None, None, None);
        let (mut standby, mut liveness): (&[u8], &[u8]) = (&[], &[]);
        let mut units = None;
        let mut entry_count = 0usize;
        for (i, t) in subs.iter().enumerate() {
            if prev.is_some_and(|p| p >= t.kind) {
                return Err(JoinParseError::Malformed(
                    "sub-TLVs out of order or repeated",
                ));
            }
            prev = Some(t.kind);
            let want = |len: usize| {
                if t.value.len() == len {
                    Ok(t.value)
                } else {
                    Err(JoinParseError::Malformed("sub-TLV has the wrong length"))
                }
            };
            match t.kind {
                sub_type::SLICES => {
                    if t.value.len() % entry_len != 0 {
                        return Err(JoinParseError::Malformed("slice list is not whole entries"));
                    }
                    entry_count += t.value.len() / entry_len;
                    if entry_count > MAX_JOIN_SLICES {
                        return Err(JoinParseError::TooManySlices(entry_count));
                    }
                    slices = Some(t.value);
                }
                sub_type::STANDBY | sub_type::UNITS => {
                    // The cap counts claimed and standby units together: both are built into
                    // slice sets after the signature.
                    let n = bitmap_units(t.value, (entry_len - 1) / 2)?;
                    entry_count += n;
                    if entry_count > MAX_JOIN_SLICES {
                        return Err(JoinParseError::TooManySlices(entry_count));
                    }
                    if t.kind == sub_type::STANDBY {
                        standby = t.value;
                    } else if n == 0 {
                        // A leave is an empty SLICES: one encoding for it.
                        return Err(JoinParseError::Malformed("no unit in the claim bitmap"));
                    } else {
                        units = Some(t.value);
                    }
                }
                sub_type::LIVENESS => {
                    let n = t.value.len() / LivenessAnchor::LEN;
                    if t.value.len() % LivenessAnchor::LEN != 0
                        || n == 0
                        || n > MAX_LIVENESS_ANCHORS
                    {
                        return Err(JoinParseError::Malformed("liveness sub-TLV length"));
                    }
                    liveness = t.value;
                }
                sub_type::EPOCH => epoch = Some(want(8)?),
                sub_type::TIMESTAMP => timestamp = Some(want(8)?),
                sub_type::NONCE => nonce = Some(want(NONCE_LEN)?),
                sub_type::CERTIFICATE => certificate = Some(t.value),
                sub_type::SIGNATURE => {
                    if i + 1 != subs.len() {
                        return Err(JoinParseError::Malformed("bytes after the signature"));
                    }
                    signature = Some(want(SIGNATURE_LEN)?);
                }
                // Unknown sub-TLVs are covered by the signature and otherwise ignored, so that a
                // later version can add fields old verifiers still accept.
                _ => {}
            }
        }
        let missing = JoinParseError::Malformed;
        let slices = match (slices, units) {
            (Some(_), Some(_)) => return Err(missing("both SLICES and UNITS")),
            (None, None) => return Err(missing("no slices")),
            (slices, _) => slices.unwrap_or_default(),
        };
        Ok(SubFields {
            slices,
            units,
            epoch: epoch.ok_or(missing("no epoch"))?,
            timestamp: timestamp.ok_or(missing("no timestamp"))?,
            nonce: nonce.ok_or(missing("no nonce"))?,
            certificate: certificate.ok_or(missing("no certificate"))?,
            standby,
            liveness,
            signature: signature.ok_or(missing("no signature"))?,
        })
    }
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "join_units_tests.rs"]
mod units_tests;
