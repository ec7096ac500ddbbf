//! MLD messages (ICMPv6 payloads): MLDv1 (RFC 2710) queries, reports and dones, and MLDv2
//! (RFC 3810 §5) queries and reports, whose multicast address records are the group records of
//! [`super::record`] over IPv6 addresses; RFC 9279 extensions after the last record or source.
//!
//! The checksum is ICMPv6's (RFC 4443 §2.3): it covers the IPv6 pseudo-header (RFC 8200 §8.1), so
//! checking and filling it needs the source and destination addresses of the packet.

use super::extension::REPORT_FLAG_EXTENSION;
use super::ipv6::{pseudo_header_sum, NEXT_HEADER_ICMPV6};
use super::record::{records, GroupRecord, GroupRecordRepr};
use super::{checksum, need, read_u16, WireError, WireResult};
use core::net::Ipv6Addr;

/// ICMPv6 types of MLD (IANA "ICMPv6 Parameters"). Total: other types are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Multicast Listener Query, MLDv1 and MLDv2 (130).
    Query,
    /// MLDv1 Multicast Listener Report (131).
    V1Report,
    /// MLDv1 Multicast Listener Done (132).
    V1Done,
    /// MLDv2 Multicast Listener Report (143).
    V2Report,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            0x82 => MessageType::Query,
            0x83 => MessageType::V1Report,
            0x84 => MessageType::V1Done,
            0x8f => MessageType::V2Report,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::Query => 0x82,
            MessageType::V1Report => 0x83,
            MessageType::V1Done => 0x84,
            MessageType::V2Report => 0x8f,
            MessageType::Unknown(v) => v,
        }
    }
}

/// Where MLDv2 reports go: all MLDv2-capable routers (RFC 3810 §5.2.14).
pub const ALL_MLDV2_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);
/// Where general queries go: the link-scope all-nodes address.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Where MLDv1 dones go (RFC 2710 §5).
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    // queries and MLDv1 messages
    pub const MAX_RESP: Range<usize> = 4..6;
    pub const RESERVED: Range<usize> = 6..8;
    pub const ADDRESS: Range<usize> = 8..24;
    // MLDv2 query
    pub const QUERY_FLAGS: usize = 24;
    pub const QQIC: usize = 25;
    pub const QUERY_NUM_SOURCES: Range<usize> = 26..28;
    pub const QUERY_SOURCES: usize = 28;
    // MLDv2 report
    pub const REPORT_FLAGS: Range<usize> = 4..6;
    pub const REPORT_NUM_RECORDS: Range<usize> = 6..8;
    pub const REPORT_RECORDS: usize = 8;
}

/// Length of MLDv1 messages (RFC 2710 §3) and of the part of a query they share with MLDv2.
pub const V1_LEN: usize = field::QUERY_FLAGS;
/// Minimum length of an MLDv2 query (RFC 3810 §5.1).
pub const V2_QUERY_MIN_LEN: usize = field::QUERY_SOURCES;
/// Fixed header of an MLDv2 report, before its first record.
pub const V2_REPORT_HEADER_LEN: usize = field::REPORT_RECORDS;
const ADDR_LEN: usize = 16;

/// The version of a query, told apart by length alone (RFC 3810 §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryVersion {
    V1,
    V2,
}

/// A checked view of an MLD message (the ICMPv6 payload of an IPv6 packet).
#[derive(Debug, Clone, Copy)]
pub struct MldPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MldPacket<T> {
    /// Checks that every length the message announces lies within the buffer: a query is 24 bytes
    /// (MLDv1) or at least 28 with its sources (MLDv2), and 25 to 27 bytes is malformed (RFC 3810
    /// §8.1 says to ignore it); MLDv1 reports and dones are at least 24 bytes, the rest ignored; an
    /// MLDv2 report's records all fit. Other ICMPv6 types are `Unsupported`. Does not check the
    /// checksum: call [`MldPacket::verify_checksum`], so that a bad checksum is its own reason.
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let buf = buffer.as_ref();
        need("ICMPv6 header", buf, 4)?;
        match MessageType::from(buf[field::TYPE]) {
            MessageType::Query => {
                need("MLD query", buf, V1_LEN)?;
                if buf.len() > V1_LEN && buf.len() < V2_QUERY_MIN_LEN {
                    return Err(WireError::Malformed("MLD query of 25 to 27 bytes"));
                }
                if buf.len() >= V2_QUERY_MIN_LEN {
                    let n = usize::from(read_u16(buf, field::QUERY_NUM_SOURCES.start));
                    need(
                        "MLDv2 query sources",
                        buf,
                        field::QUERY_SOURCES + ADDR_LEN * n,
                    )?;
                }
            }
            MessageType::V1Report | MessageType::V1Done => need("MLDv1 message", buf, V1_LEN)?,
            MessageType::V2Report => {
                need("MLDv2 report header", buf, V2_REPORT_HEADER_LEN)?;
                let n = usize::from(read_u16(buf, field::REPORT_NUM_RECORDS.start));
                for r in records::<Ipv6Addr>(&buf[field::REPORT_RECORDS..], n) {
                    r?;
                }
            }
            MessageType::Unknown(_) => {
                return Err(WireError::Unsupported("ICMPv6 type other than MLD"))
            }
        }
        Ok(MldPacket { buffer })
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf()
    }

    pub fn msg_type(&self) -> MessageType {
        MessageType::from(self.buf()[field::TYPE])
    }

    /// The ICMPv6 Code (zero when sent, ignored when received: RFC 3810 §5.1.1).
    pub fn code(&self) -> u8 {
        self.buf()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buf(), field::CHECKSUM.start)
    }

    /// The whole message and the pseudo-header of a packet from `src` to `dst` sum to zero
    /// (RFC 4443 §2.3, RFC 8200 §8.1); additional data is covered too.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        icmpv6_sum(self.buf(), src, dst) == 0xffff
    }

    /// Maximum Response Code of a query (MLDv2, [`decode_max_resp_code`]) or Maximum Response
    /// Delay in milliseconds (MLDv1); the raw field (zero) in other messages.
    pub fn max_resp_code(&self) -> u16 {
        read_u16(self.buf(), field::MAX_RESP.start)
    }

    /// Multicast Address of a query (unspecified for a general query) or an MLDv1 message.
    /// For an MLDv2 report, whose records carry the addresses, the unspecified address.
    pub fn group_addr(&self) -> Ipv6Addr {
        match self.buf().get(field::ADDRESS) {
            Some(b) if self.msg_type() != MessageType::V2Report => read_addr(b),
            _ => Ipv6Addr::UNSPECIFIED,
        }
    }

    pub fn query_version(&self) -> Option<QueryVersion> {
        if self.msg_type() != MessageType::Query {
            return None;
        }
        Some(if self.buf().len() >= V2_QUERY_MIN_LEN {
            QueryVersion::V2
        } else {
            QueryVersion::V1
        })
    }

    /// The 16-bit Flags field of an MLDv2 report (RFC 9279 §3; "Reserved" in RFC 3810 §5.2).
    pub fn report_flags(&self) -> u16 {
        read_u16(self.buf(), field::REPORT_FLAGS.start)
    }

    /// Nr of Mcast Address Records of an MLDv2 report.
    pub fn num_group_records(&self) -> usize {
        usize::from(read_u16(self.buf(), field::REPORT_NUM_RECORDS.start))
    }

    /// The multicast address records of an MLDv2 report (empty for other messages).
    pub fn group_records(&self) -> impl Iterator<Item = GroupRecord<'_, Ipv6Addr>> {
        let count = if self.msg_type() == MessageType::V2Report {
            self.num_group_records()
        } else {
            0
        };
        // new_checked walked these records already, so every item is Ok.
        records::<Ipv6Addr>(
            &self.buf()[field::REPORT_RECORDS.min(self.buf().len())..],
            count,
        )
        .filter_map(Result::ok)
    }

    fn query_sources_end(&self) -> usize {
        field::QUERY_SOURCES
            + ADDR_LEN * usize::from(read_u16(self.buf(), field::QUERY_NUM_SOURCES.start))
    }

    /// The sources of an MLDv2 query (empty for other messages).
    pub fn query_sources(&self) -> impl ExactSizeIterator<Item = Ipv6Addr> + '_ {
        let range = if self.query_version() == Some(QueryVersion::V2) {
            field::QUERY_SOURCES..self.query_sources_end()
        } else {
            0..0
        };
        self.buf()[range].chunks_exact(ADDR_LEN).map(read_addr)
    }

    /// Bytes after the last record of an MLDv2 report or after the sources of an MLDv2 query:
    /// where RFC 9279 puts its TLVs (RFC 3810 §5.1.12 and §5.2.11 call them Additional Data).
    /// Empty for MLDv1 messages, whose bytes past 24 are ignored.
    pub fn additional_data(&self) -> &[u8] {
        let end = match self.msg_type() {
            MessageType::V2Report => {
                field::REPORT_RECORDS + self.group_records().map(|r| r.len()).sum::<usize>()
            }
            MessageType::Query if self.query_version() == Some(QueryVersion::V2) => {
                self.query_sources_end()
            }
            _ => self.buf().len(),
        };
        &self.buf()[end..]
    }

    /// Offset of the first record in an MLDv2 report.
    pub const fn report_records_offset() -> usize {
        field::REPORT_RECORDS
    }
}

fn read_addr(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; ADDR_LEN];
    o.copy_from_slice(&b[..ADDR_LEN]);
    Ipv6Addr::from(o)
}

/// The folded sum of the ICMPv6 pseudo-header and `msg`.
fn icmpv6_sum(msg: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> u16 {
    // Lengths past 32 bits cannot come from an IPv6 packet; saturating makes the sum wrong, so
    // such a buffer never verifies.
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    checksum::add(
        pseudo_header_sum(src, dst, len, NEXT_HEADER_ICMPV6),
        checksum::sum(msg),
    )
}

/// Fills the checksum field of a complete MLD message sent from `src` to `dst`.
///
/// # Panics
/// When `msg` is shorter than 4 bytes: a caller bug.
pub fn fill_checksum(msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    msg[field::CHECKSUM].copy_from_slice(&[0, 0]);
    let c = !icmpv6_sum(msg, src, dst);
    msg[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
}

/// Largest Maximum Response Delay an MLDv2 code can express, in milliseconds:
/// (0xfff | 0x1000) << (7 + 3).
pub const MAX_RESP_DELAY_MAX_MS: u32 = 0x1fff << 10;

/// RFC 3810 §5.1.3: the Maximum Response Delay in milliseconds. Codes below 32768 are linear;
/// above, `1 | exp (3 bits) | mant (12 bits)` stands for `(mant | 0x1000) << (exp + 3)`.
pub fn decode_max_resp_code(code: u16) -> u32 {
    if code < 0x8000 {
        u32::from(code)
    } else {
        let exp = u32::from((code >> 12) & 0x07);
        let mant = u32::from(code & 0x0fff);
        (mant | 0x1000) << (exp + 3)
    }
}

/// The inverse of [`decode_max_resp_code`]: the smallest code whose delay is at least `ms`;
/// saturates at 0xffff ([`MAX_RESP_DELAY_MAX_MS`]).
pub fn encode_max_resp_code(ms: u32) -> u16 {
    if ms < 0x8000 {
        return ms as u16;
    }
    for exp in 0u16..8 {
        let mant = ms.div_ceil(1 << (exp + 3));
        if mant < 0x2000 {
            // (mant | 0x1000) must be mant itself: mant in 0x1000..0x2000.
            let mant = mant.max(0x1000) as u16;
            return 0x8000 | (exp << 12) | (mant & 0x0fff);
        }
    }
    0xffff
}

/// RFC 3810 §5.1.9: QQIC has IGMPv3's 8-bit form (linear below 128, then `(mant | 0x10) <<
/// (exp + 3)`), in seconds.
pub fn decode_qqic(code: u8) -> u32 {
    super::igmp::decode_code(code)
}

/// The smallest QQIC whose interval is at least `seconds`, saturating at 0xff (31744 s).
pub fn encode_qqic(seconds: u32) -> u8 {
    super::igmp::encode_code(seconds)
}

/// An MLDv2 query's fields beyond the MLDv1 header (RFC 3810 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryV2Fields {
    /// The four high bits of the Resv/S/QRV octet, RFC 9279's E bit
    /// ([`super::extension::QUERY_FLAG_EXTENSION`]) among them; the low four bits are zero.
    pub flags: u8,
    /// Suppress Router-Side Processing.
    pub suppress: bool,
    /// Querier's Robustness Variable (0 means "larger than 7").
    pub qrv: u8,
    /// Querier's Query Interval Code ([`decode_qqic`]).
    pub qqic: u8,
    pub sources: Vec<Ipv6Addr>,
    pub additional_data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRepr {
    /// MLDv2: a code ([`decode_max_resp_code`]); MLDv1: milliseconds.
    pub max_resp_code: u16,
    /// The unspecified address for a general query.
    pub group: Ipv6Addr,
    /// `None` for an MLDv1 query.
    pub v2: Option<QueryV2Fields>,
}

impl QueryRepr {
    pub fn version(&self) -> QueryVersion {
        match self.v2 {
            Some(_) => QueryVersion::V2,
            None => QueryVersion::V1,
        }
    }
}

/// An MLDv2 report (RFC 3810 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRepr {
    /// RFC 9279's Flags (the 16-bit Reserved field of RFC 3810); bit 0x8000 (E) says that
    /// additional data holds extension TLVs.
    pub flags: u16,
    pub records: Vec<GroupRecordRepr<Ipv6Addr>>,
    pub additional_data: Vec<u8>,
}

impl ReportRepr {
    pub fn has_extension(&self) -> bool {
        self.flags & REPORT_FLAG_EXTENSION != 0
    }

    /// Length of the message up to the end of the last record.
    pub fn records_end(&self) -> usize {
        field::REPORT_RECORDS
            + self
                .records
                .iter()
                .map(GroupRecordRepr::buffer_len)
                .sum::<usize>()
    }
}

/// Any MLD message we understand. Reserved fields and the Code are not kept: `emit` writes zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MldRepr {
    Query(QueryRepr),
    V1Report { group: Ipv6Addr },
    V1Done { group: Ipv6Addr },
    V2Report(ReportRepr),
}

impl MldRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &MldPacket<T>) -> WireResult<Self> {
        Ok(match packet.msg_type() {
            MessageType::Query => {
                let v2 = if packet.query_version() == Some(QueryVersion::V2) {
                    let fl = packet.buf()[field::QUERY_FLAGS];
                    Some(QueryV2Fields {
                        flags: fl & 0xf0,
                        suppress: fl & 0x08 != 0,
                        qrv: fl & 0x07,
                        qqic: packet.buf()[field::QQIC],
                        sources: packet.query_sources().collect(),
                        additional_data: packet.additional_data().to_vec(),
                    })
                } else {
                    None
                };
                MldRepr::Query(QueryRepr {
                    max_resp_code: packet.max_resp_code(),
                    group: packet.group_addr(),
                    v2,
                })
            }
            MessageType::V1Report => MldRepr::V1Report {
                group: packet.group_addr(),
            },
            MessageType::V1Done => MldRepr::V1Done {
                group: packet.group_addr(),
            },
            MessageType::V2Report => MldRepr::V2Report(ReportRepr {
                flags: packet.report_flags(),
                records: packet
                    .group_records()
                    .map(|r| GroupRecordRepr::parse(&r))
                    .collect(),
                additional_data: packet.additional_data().to_vec(),
            }),
            MessageType::Unknown(_) => {
                return Err(WireError::Unsupported("ICMPv6 type other than MLD"))
            }
        })
    }

    pub fn buffer_len(&self) -> usize {
        match self {
            MldRepr::Query(q) => match &q.v2 {
                None => V1_LEN,
                Some(v2) => {
                    V2_QUERY_MIN_LEN + ADDR_LEN * v2.sources.len() + v2.additional_data.len()
                }
            },
            MldRepr::V1Report { .. } | MldRepr::V1Done { .. } => V1_LEN,
            MldRepr::V2Report(r) => r.records_end() + r.additional_data.len(),
        }
    }

    /// Checks the limits the header fields can express.
    pub fn validate(&self) -> WireResult<()> {
        match self {
            MldRepr::Query(QueryRepr { v2: Some(v2), .. }) => {
                if v2.sources.len() > usize::from(u16::MAX) {
                    return Err(WireError::Malformed("more than 65535 query sources"));
                }
                if v2.qrv > 7 {
                    return Err(WireError::Malformed("QRV above 7"));
                }
                if v2.flags & 0x0f != 0 {
                    return Err(WireError::Malformed(
                        "query flags outside the four high bits",
                    ));
                }
            }
            MldRepr::V2Report(r) => {
                if r.records.len() > usize::from(u16::MAX) {
                    return Err(WireError::Malformed("more than 65535 address records"));
                }
                for rec in &r.records {
                    rec.validate()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Writes the message into `buf[..buffer_len()]` and fills the checksum for a packet from
    /// `src` to `dst`.
    ///
    /// # Panics
    /// When `validate()` fails or `buf` is short: caller bugs.
    pub fn emit(&self, buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
        self.validate()
            .expect("MLD message exceeds what its header can express");
        let len = self.buffer_len();
        let buf = &mut buf[..len];
        buf[field::CODE] = 0;
        buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let put_v1 = |buf: &mut [u8], ty: MessageType, code: u16, group: Ipv6Addr| {
            buf[field::TYPE] = ty.into();
            buf[field::MAX_RESP].copy_from_slice(&code.to_be_bytes());
            buf[field::RESERVED].copy_from_slice(&[0, 0]);
            buf[field::ADDRESS].copy_from_slice(&group.octets());
        };
        match self {
            MldRepr::Query(q) => {
                put_v1(buf, MessageType::Query, q.max_resp_code, q.group);
                if let Some(v2) = &q.v2 {
                    let mut fl = v2.flags | v2.qrv;
                    if v2.suppress {
                        fl |= 0x08;
                    }
                    buf[field::QUERY_FLAGS] = fl;
                    buf[field::QQIC] = v2.qqic;
                    buf[field::QUERY_NUM_SOURCES]
                        .copy_from_slice(&(v2.sources.len() as u16).to_be_bytes());
                    let mut at = field::QUERY_SOURCES;
                    for s in &v2.sources {
                        buf[at..at + ADDR_LEN].copy_from_slice(&s.octets());
                        at += ADDR_LEN;
                    }
                    buf[at..].copy_from_slice(&v2.additional_data);
                }
            }
            MldRepr::V1Report { group } => put_v1(buf, MessageType::V1Report, 0, *group),
            MldRepr::V1Done { group } => put_v1(buf, MessageType::V1Done, 0, *group),
            MldRepr::V2Report(r) => {
                buf[field::TYPE] = MessageType::V2Report.into();
                buf[field::REPORT_FLAGS].copy_from_slice(&r.flags.to_be_bytes());
                buf[field::REPORT_NUM_RECORDS]
                    .copy_from_slice(&(r.records.len() as u16).to_be_bytes());
                let mut at = field::REPORT_RECORDS;
                for rec in &r.records {
                    rec.emit(&mut buf[at..]);
                    at += rec.buffer_len();
                }
                buf[at..].copy_from_slice(&r.additional_data);
            }
        }
        fill_checksum(buf, src, dst);
    }
}

#[cfg(test)]
#[path = "mld_tests.rs"]
mod tests;
