//! IGMP messages (RFC 3376 / RFC 9776 §4, RFC 2236, RFC 1112): queries of all three versions,
//! v1/v2 reports and v2 leaves, and v3 reports with their group records and RFC 9279 extensions.

use super::extension::REPORT_FLAG_EXTENSION;
use super::record::{records, GroupRecord, GroupRecordRepr};
use super::{checksum, need, read_u16, WireError, WireResult};
use core::net::Ipv4Addr;

/// IGMP message types (IANA "IGMP Type Numbers"). Total: unknown types are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    MembershipQuery,
    V1MembershipReport,
    V2MembershipReport,
    V2LeaveGroup,
    V3MembershipReport,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            0x11 => MessageType::MembershipQuery,
            0x12 => MessageType::V1MembershipReport,
            0x16 => MessageType::V2MembershipReport,
            0x17 => MessageType::V2LeaveGroup,
            0x22 => MessageType::V3MembershipReport,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::MembershipQuery => 0x11,
            MessageType::V1MembershipReport => 0x12,
            MessageType::V2MembershipReport => 0x16,
            MessageType::V2LeaveGroup => 0x17,
            MessageType::V3MembershipReport => 0x22,
            MessageType::Unknown(v) => v,
        }
    }
}

/// Where IGMPv3 reports go: all IGMPv3-capable multicast routers (RFC 3376 §4.2.14).
pub const ALL_V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);
/// Where general queries go.
pub const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// Where v2 leaves go.
pub const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const MAX_RESP: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    // v1/v2 messages and queries
    pub const GROUP: Range<usize> = 4..8;
    // v3 query
    pub const QUERY_FLAGS: usize = 8;
    pub const QQIC: usize = 9;
    pub const QUERY_NUM_SOURCES: Range<usize> = 10..12;
    pub const QUERY_SOURCES: usize = 12;
    // v3 report
    pub const REPORT_FLAGS: Range<usize> = 4..6;
    pub const REPORT_NUM_RECORDS: Range<usize> = 6..8;
    pub const REPORT_RECORDS: usize = 8;
}

/// Length of v1/v2 messages and of the fixed query header.
pub const V2_LEN: usize = 8;
/// Minimum length of an IGMPv3 query (RFC 3376 §7.1).
pub const V3_QUERY_MIN_LEN: usize = 12;

/// The version of a query, told apart by length and Max Resp Code as in RFC 3376 §7.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryVersion {
    V1,
    V2,
    V3,
}

/// A checked view of an IGMP message (the IP payload, bounded by Total Length).
#[derive(Debug, Clone, Copy)]
pub struct IgmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IgmpPacket<T> {
    /// Checks that every length the message announces lies within the buffer. Does not check the
    /// checksum: call [`IgmpPacket::verify_checksum`], so that a bad checksum is its own reason.
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let buf = buffer.as_ref();
        need("IGMP header", buf, V2_LEN)?;
        match MessageType::from(buf[field::TYPE]) {
            MessageType::MembershipQuery => {
                // RFC 3376 §7.1: 8 octets is v1/v2, 12 or more is v3, anything else is ignored.
                if buf.len() > V2_LEN && buf.len() < V3_QUERY_MIN_LEN {
                    return Err(WireError::Malformed("query of 9 to 11 bytes"));
                }
                if buf.len() >= V3_QUERY_MIN_LEN {
                    let n = usize::from(read_u16(buf, field::QUERY_NUM_SOURCES.start));
                    need("IGMPv3 query sources", buf, field::QUERY_SOURCES + 4 * n)?;
                }
            }
            MessageType::V3MembershipReport => {
                let n = usize::from(read_u16(buf, field::REPORT_NUM_RECORDS.start));
                for r in records::<Ipv4Addr>(&buf[field::REPORT_RECORDS..], n) {
                    r?;
                }
            }
            MessageType::V1MembershipReport
            | MessageType::V2MembershipReport
            | MessageType::V2LeaveGroup => {}
            MessageType::Unknown(_) => return Err(WireError::Unsupported("IGMP message type")),
        }
        Ok(IgmpPacket { buffer })
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

    /// The whole message must sum to zero, additional data included (RFC 3376 §4.1.2, §4.2.2).
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buf())
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buf(), field::CHECKSUM.start)
    }

    /// Max Resp Code of a query; the raw byte (zero) for other messages.
    pub fn max_resp_code(&self) -> u8 {
        self.buf()[field::MAX_RESP]
    }

    /// Group Address of a query, v1/v2 report or leave.
    pub fn group_addr(&self) -> Ipv4Addr {
        let b = &self.buf()[field::GROUP];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn query_version(&self) -> Option<QueryVersion> {
        if self.msg_type() != MessageType::MembershipQuery {
            return None;
        }
        Some(if self.buf().len() >= V3_QUERY_MIN_LEN {
            QueryVersion::V3
        } else if self.max_resp_code() == 0 {
            QueryVersion::V1
        } else {
            QueryVersion::V2
        })
    }

    /// The 16-bit Flags field of a v3 report (RFC 9279 §3; "Reserved" in RFC 3376).
    pub fn report_flags(&self) -> u16 {
        read_u16(self.buf(), field::REPORT_FLAGS.start)
    }

    pub fn num_group_records(&self) -> usize {
        usize::from(read_u16(self.buf(), field::REPORT_NUM_RECORDS.start))
    }

    /// The group records of a v3 report (empty for other messages).
    pub fn group_records(&self) -> impl Iterator<Item = GroupRecord<'_, Ipv4Addr>> {
        let count = if self.msg_type() == MessageType::V3MembershipReport {
            self.num_group_records()
        } else {
            0
        };
        // new_checked walked these records already, so every item is Ok.
        records::<Ipv4Addr>(
            &self.buf()[field::REPORT_RECORDS.min(self.buf().len())..],
            count,
        )
        .filter_map(Result::ok)
    }

    /// Bytes after the last group record of a v3 report or after the source list of a v3 query:
    /// "Additional Data" (RFC 3376 §4.1.10, §4.2.11), where RFC 9279 puts its TLVs.
    pub fn additional_data(&self) -> &[u8] {
        let buf = self.buf();
        let end = match self.msg_type() {
            MessageType::V3MembershipReport => {
                field::REPORT_RECORDS + self.group_records().map(|r| r.len()).sum::<usize>()
            }
            MessageType::MembershipQuery if buf.len() >= V3_QUERY_MIN_LEN => {
                field::QUERY_SOURCES
                    + 4 * usize::from(read_u16(buf, field::QUERY_NUM_SOURCES.start))
            }
            _ => V2_LEN,
        };
        &buf[end..]
    }

    /// Offset of the first group record in a v3 report.
    pub const fn report_records_offset() -> usize {
        field::REPORT_RECORDS
    }
}

/// RFC 3376 §4.1.1 / §4.1.7: Max Resp Code and QQIC are linear below 128 and a small float above.
pub fn decode_code(code: u8) -> u32 {
    if code < 0x80 {
        u32::from(code)
    } else {
        let exp = u32::from((code >> 4) & 0x07);
        let mant = u32::from(code & 0x0f);
        (mant | 0x10) << (exp + 3)
    }
}

/// The inverse of [`decode_code`]: the smallest code whose value is at least `value`, saturating.
pub fn encode_code(value: u32) -> u8 {
    if value < 0x80 {
        return value as u8;
    }
    for exp in 0u8..8 {
        let shift = u32::from(exp) + 3;
        let mant = value.div_ceil(1 << shift);
        if mant < 0x20 {
            // (mant | 0x10) must be mant itself: mant in 0x10..0x20.
            let mant = mant.max(0x10);
            return 0x80 | (exp << 4) | (mant as u8 & 0x0f);
        }
    }
    0xff
}

/// An IGMPv3 query's fields beyond the v2 header (RFC 3376 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryV3Fields {
    /// The four high bits of the Flags/S/QRV octet, RFC 9279's E bit
    /// ([`super::extension::QUERY_FLAG_EXTENSION`]) among them; emitted as given.
    pub flags: u8,
    /// Suppress Router-Side Processing.
    pub suppress: bool,
    /// Querier's Robustness Variable (0 means "larger than 7").
    pub qrv: u8,
    /// Querier's Query Interval Code.
    pub qqic: u8,
    pub sources: Vec<Ipv4Addr>,
    pub additional_data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRepr {
    pub max_resp_code: u8,
    /// 0.0.0.0 for a general query.
    pub group: Ipv4Addr,
    /// `None` for a v1 or v2 query.
    pub v3: Option<QueryV3Fields>,
}

impl QueryRepr {
    pub fn version(&self) -> QueryVersion {
        match (&self.v3, self.max_resp_code) {
            (Some(_), _) => QueryVersion::V3,
            (None, 0) => QueryVersion::V1,
            (None, _) => QueryVersion::V2,
        }
    }
}

/// An IGMPv3 report (RFC 3376 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRepr {
    /// RFC 9279's Flags; bit 0x8000 (E) says that additional data holds extension TLVs.
    pub flags: u16,
    pub records: Vec<GroupRecordRepr<Ipv4Addr>>,
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

/// Any IGMP message we understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgmpRepr {
    Query(QueryRepr),
    V1Report { group: Ipv4Addr },
    V2Report { group: Ipv4Addr },
    V2Leave { group: Ipv4Addr },
    V3Report(ReportRepr),
}

impl IgmpRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &IgmpPacket<T>) -> WireResult<Self> {
        let buf = packet.buf();
        Ok(match packet.msg_type() {
            MessageType::MembershipQuery => {
                let v3 = if buf.len() >= V3_QUERY_MIN_LEN {
                    let n = usize::from(read_u16(buf, field::QUERY_NUM_SOURCES.start));
                    let fl = buf[field::QUERY_FLAGS];
                    Some(QueryV3Fields {
                        flags: fl & 0xf0,
                        suppress: fl & 0x08 != 0,
                        qrv: fl & 0x07,
                        qqic: buf[field::QQIC],
                        sources: buf[field::QUERY_SOURCES..field::QUERY_SOURCES + 4 * n]
                            .chunks_exact(4)
                            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                            .collect(),
                        additional_data: packet.additional_data().to_vec(),
                    })
                } else {
                    None
                };
                IgmpRepr::Query(QueryRepr {
                    max_resp_code: packet.max_resp_code(),
                    group: packet.group_addr(),
                    v3,
                })
            }
            MessageType::V1MembershipReport => IgmpRepr::V1Report {
                group: packet.group_addr(),
            },
            MessageType::V2MembershipReport => IgmpRepr::V2Report {
                group: packet.group_addr(),
            },
            MessageType::V2LeaveGroup => IgmpRepr::V2Leave {
                group: packet.group_addr(),
            },
            MessageType::V3MembershipReport => IgmpRepr::V3Report(ReportRepr {
                flags: packet.report_flags(),
                records: packet
                    .group_records()
                    .map(|r| GroupRecordRepr::parse(&r))
                    .collect(),
                additional_data: packet.additional_data().to_vec(),
            }),
            MessageType::Unknown(_) => return Err(WireError::Unsupported("IGMP message type")),
        })
    }

    pub fn buffer_len(&self) -> usize {
        match self {
            IgmpRepr::Query(q) => match &q.v3 {
                None => V2_LEN,
                Some(v3) => V3_QUERY_MIN_LEN + 4 * v3.sources.len() + v3.additional_data.len(),
            },
            IgmpRepr::V1Report { .. } | IgmpRepr::V2Report { .. } | IgmpRepr::V2Leave { .. } => {
                V2_LEN
            }
            IgmpRepr::V3Report(r) => r.records_end() + r.additional_data.len(),
        }
    }

    /// Checks the limits the header fields can express.
    pub fn validate(&self) -> WireResult<()> {
        match self {
            IgmpRepr::Query(QueryRepr { v3: Some(v3), .. }) => {
                if v3.sources.len() > usize::from(u16::MAX) {
                    return Err(WireError::Malformed("more than 65535 query sources"));
                }
                if v3.qrv > 7 {
                    return Err(WireError::Malformed("QRV above 7"));
                }
            }
            IgmpRepr::V3Report(r) => {
                if r.records.len() > usize::from(u16::MAX) {
                    return Err(WireError::Malformed("more than 65535 group records"));
                }
                for rec in &r.records {
                    rec.validate()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Writes the message into `buf[..buffer_len()]` and fills the checksum.
    ///
    /// # Panics
    /// When `validate()` fails or `buf` is short: caller bugs.
    pub fn emit(&self, buf: &mut [u8]) {
        self.validate()
            .expect("IGMP message exceeds what its header can express");
        let len = self.buffer_len();
        let buf = &mut buf[..len];
        buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let put_group = |buf: &mut [u8], ty: MessageType, code: u8, group: Ipv4Addr| {
            buf[field::TYPE] = ty.into();
            buf[field::MAX_RESP] = code;
            buf[field::GROUP].copy_from_slice(&group.octets());
        };
        match self {
            IgmpRepr::Query(q) => {
                put_group(buf, MessageType::MembershipQuery, q.max_resp_code, q.group);
                if let Some(v3) = &q.v3 {
                    let mut fl = (v3.flags & 0xf0) | (v3.qrv & 0x07);
                    if v3.suppress {
                        fl |= 0x08;
                    }
                    buf[field::QUERY_FLAGS] = fl;
                    buf[field::QQIC] = v3.qqic;
                    buf[field::QUERY_NUM_SOURCES]
                        .copy_from_slice(&(v3.sources.len() as u16).to_be_bytes());
                    let mut at = field::QUERY_SOURCES;
                    for s in &v3.sources {
                        buf[at..at + 4].copy_from_slice(&s.octets());
                        at += 4;
                    }
                    buf[at..].copy_from_slice(&v3.additional_data);
                }
            }
            IgmpRepr::V1Report { group } => {
                put_group(buf, MessageType::V1MembershipReport, 0, *group)
            }
            IgmpRepr::V2Report { group } => {
                put_group(buf, MessageType::V2MembershipReport, 0, *group)
            }
            IgmpRepr::V2Leave { group } => put_group(buf, MessageType::V2LeaveGroup, 0, *group),
            IgmpRepr::V3Report(r) => {
                buf[field::TYPE] = MessageType::V3MembershipReport.into();
                buf[field::MAX_RESP] = 0;
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
        fill_checksum(buf);
    }
}

/// Fills the checksum field of a complete IGMP message.
pub fn fill_checksum(msg: &mut [u8]) {
    msg[field::CHECKSUM].copy_from_slice(&[0, 0]);
    let c = checksum::compute(msg);
    msg[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::RecordType;

    fn parse(bytes: &[u8]) -> IgmpRepr {
        let p = IgmpPacket::new_checked(bytes).unwrap();
        assert!(p.verify_checksum());
        IgmpRepr::parse(&p).unwrap()
    }

    fn emit(repr: &IgmpRepr) -> Vec<u8> {
        let mut buf = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut buf);
        buf
    }

    #[test]
    fn query_versions_by_length_and_code() {
        // v1: 8 bytes, Max Resp Code 0. v2: 8 bytes, non-zero code. v3: 12 bytes or more.
        let v1 = [0x11, 0x00, 0xee, 0xff, 0, 0, 0, 0];
        let v2 = [0x11, 0x64, 0xee, 0x9b, 0, 0, 0, 0];
        let v3 = [0x11, 0x64, 0xec, 0x1e, 0, 0, 0, 0, 0x02, 0x7d, 0, 0];
        assert_eq!(
            IgmpPacket::new_checked(&v1[..]).unwrap().query_version(),
            Some(QueryVersion::V1)
        );
        assert_eq!(
            IgmpPacket::new_checked(&v2[..]).unwrap().query_version(),
            Some(QueryVersion::V2)
        );
        let q = parse(&v3);
        let IgmpRepr::Query(q) = q else {
            panic!("not a query")
        };
        assert_eq!(q.version(), QueryVersion::V3);
        let f = q.v3.as_ref().unwrap();
        assert_eq!((f.qrv, f.qqic, f.suppress), (2, 125, false));
        assert_eq!(emit(&IgmpRepr::Query(q)), v3);
        assert!(IgmpPacket::new_checked(&[0x11u8, 0x64, 0, 0, 0, 0, 0, 0, 0, 0][..]).is_err());
    }

    #[test]
    fn v2_messages_round_trip() {
        for (repr, ty) in [
            (
                IgmpRepr::V1Report {
                    group: Ipv4Addr::new(239, 1, 2, 3),
                },
                0x12,
            ),
            (
                IgmpRepr::V2Report {
                    group: Ipv4Addr::new(239, 1, 2, 3),
                },
                0x16,
            ),
            (
                IgmpRepr::V2Leave {
                    group: Ipv4Addr::new(239, 1, 2, 3),
                },
                0x17,
            ),
        ] {
            let bytes = emit(&repr);
            assert_eq!(bytes[0], ty);
            assert_eq!(&bytes[4..], &[239, 1, 2, 3]);
            assert_eq!(parse(&bytes), repr);
        }
    }

    #[test]
    fn v3_report_byte_vector() {
        // One MODE_IS_INCLUDE record for 232.1.1.1 with source 10.0.0.1 (checksum computed with
        // an independent Python one-liner).
        let bytes = [
            0x22, 0x00, 0xe9, 0xf9, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0xe8, 0x01,
            0x01, 0x01, 0x0a, 0x00, 0x00, 0x01,
        ];
        let repr = IgmpRepr::V3Report(ReportRepr {
            flags: 0,
            records: vec![GroupRecordRepr {
                record_type: RecordType::ModeIsInclude,
                group: Ipv4Addr::new(232, 1, 1, 1),
                sources: vec![Ipv4Addr::new(10, 0, 0, 1)],
                aux_data: vec![],
            }],
            additional_data: vec![],
        });
        assert_eq!(emit(&repr), bytes);
        assert_eq!(parse(&bytes), repr);
    }

    #[test]
    fn bad_checksum_is_seen() {
        let mut bytes = emit(&IgmpRepr::V2Report {
            group: Ipv4Addr::new(239, 0, 0, 1),
        });
        bytes[7] ^= 0x10;
        assert!(!IgmpPacket::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn unknown_type_and_truncation() {
        assert_eq!(
            IgmpPacket::new_checked(&[0x13u8, 0, 0, 0, 0, 0, 0, 0][..]).unwrap_err(),
            WireError::Unsupported("IGMP message type")
        );
        // Report announcing one record but carrying none.
        assert!(IgmpPacket::new_checked(&[0x22u8, 0, 0, 0, 0, 0, 0, 1][..]).is_err());
    }

    #[test]
    fn query_flags_are_emitted_as_given() {
        // Found by the igmp_report fuzz target: additional data without the E flag must not gain
        // it on the way back out.
        let bytes = [
            0x11, 0x64, 0xdb, 0x1c, 0, 0, 0, 0, 0x02, 0x7d, 0x00, 0x01, 0x01, 0x0a, 0, 0, 0x01,
        ];
        let repr = IgmpRepr::parse(&IgmpPacket::new_checked(&bytes[..]).unwrap()).unwrap();
        let mut out = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut out);
        assert_eq!(out[8], 0x02);
        assert_eq!(
            IgmpRepr::parse(&IgmpPacket::new_checked(&out[..]).unwrap()).unwrap(),
            repr
        );
    }

    #[test]
    fn float_codes() {
        assert_eq!(decode_code(100), 100);
        assert_eq!(decode_code(0x80), 128);
        assert_eq!(decode_code(0xff), 31744);
        for v in [0u32, 1, 127, 128, 129, 1000, 31744, 40000] {
            let c = encode_code(v);
            assert!(decode_code(c) >= v.min(31744), "{v} -> {c:#x}");
        }
        for c in 0u8..=255 {
            assert_eq!(decode_code(encode_code(decode_code(c))), decode_code(c));
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn addr() -> impl Strategy<Value = Ipv4Addr> {
            any::<u32>().prop_map(Ipv4Addr::from)
        }

        fn record() -> impl Strategy<Value = GroupRecordRepr<Ipv4Addr>> {
            (
                any::<u8>(),
                addr(),
                prop::collection::vec(addr(), 0..6),
                prop::collection::vec(any::<u8>(), 0..3),
            )
                .prop_map(|(t, group, sources, aux_words)| GroupRecordRepr {
                    record_type: RecordType::from(t),
                    group,
                    sources,
                    aux_data: aux_words.iter().flat_map(|w| [*w; 4]).collect(),
                })
        }

        fn message() -> impl Strategy<Value = IgmpRepr> {
            prop_oneof![
                (1u8.., addr()).prop_map(|(code, group)| IgmpRepr::Query(QueryRepr {
                    max_resp_code: code,
                    group,
                    v3: None
                })),
                addr().prop_map(|group| IgmpRepr::Query(QueryRepr {
                    max_resp_code: 0,
                    group,
                    v3: None
                })),
                (
                    any::<u8>(),
                    addr(),
                    0u8..16,
                    any::<bool>(),
                    0u8..8,
                    any::<u8>(),
                    prop::collection::vec(addr(), 0..5),
                    prop::collection::vec(any::<u8>(), 0..12)
                )
                    .prop_map(
                        |(code, group, fl, suppress, qrv, qqic, sources, additional_data)| {
                            IgmpRepr::Query(QueryRepr {
                                max_resp_code: code,
                                group,
                                v3: Some(QueryV3Fields {
                                    flags: fl << 4,
                                    suppress,
                                    qrv,
                                    qqic,
                                    sources,
                                    additional_data,
                                }),
                            })
                        }
                    ),
                addr().prop_map(|group| IgmpRepr::V1Report { group }),
                addr().prop_map(|group| IgmpRepr::V2Report { group }),
                addr().prop_map(|group| IgmpRepr::V2Leave { group }),
                (
                    any::<u16>(),
                    prop::collection::vec(record(), 0..4),
                    prop::collection::vec(any::<u8>(), 0..12)
                )
                    .prop_map(|(flags, records, additional_data)| {
                        IgmpRepr::V3Report(ReportRepr {
                            flags,
                            records,
                            additional_data,
                        })
                    }),
            ]
        }

        proptest! {
            /// Whatever we can build parses back to itself, with a valid checksum.
            #[test]
            fn emit_parse_round_trip(repr in message()) {
                let mut buf = vec![0xa5; repr.buffer_len()];
                repr.emit(&mut buf);
                let packet = IgmpPacket::new_checked(&buf[..]).unwrap();
                prop_assert!(packet.verify_checksum());
                prop_assert_eq!(IgmpRepr::parse(&packet).unwrap(), repr);
            }

            /// Arbitrary bytes never panic; what parses re-emits to bytes that parse the same.
            #[test]
            fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
                if let Ok(p) = IgmpPacket::new_checked(&bytes[..]) {
                    if let Ok(repr) = IgmpRepr::parse(&p) {
                        let mut out = vec![0; repr.buffer_len()];
                        repr.emit(&mut out);
                        prop_assert_eq!(IgmpRepr::parse(&IgmpPacket::new_checked(&out[..]).unwrap()).unwrap(), repr);
                    }
                }
            }
        }
    }
}
