use super::*;
use crate::wire::extension::{push_tlv, QUERY_FLAG_EXTENSION, TYPE_EXPERIMENTAL_MANYCAST};
use crate::wire::record::RecordType;

const HOST: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn parse(bytes: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> MldRepr {
    let p = MldPacket::new_checked(bytes).unwrap();
    assert!(p.verify_checksum(src, dst));
    MldRepr::parse(&p).unwrap()
}

fn emit(repr: &MldRepr, dst: Ipv6Addr) -> Vec<u8> {
    let mut buf = vec![0xa5; repr.buffer_len()];
    repr.emit(&mut buf, HOST, dst);
    buf
}

/// The MLD part of SPEC.md §2.1's worked example, written out by hand from RFC 3810 §5.2: fe80::1 reports
/// MODE_IS_INCLUDE for ff3e::8000:1 with the one source 2001:db8::1. The checksum (0xc501) was
/// computed independently with Python over the pseudo-header (fe80::1, ff02::16, 44, 58) and the
/// message.
const REPORT: [u8; 44] = [
    0x8f, 0x00, 0xc5, 0x01, // type 143, reserved, checksum
    0x00, 0x00, 0x00, 0x01, // flags 0, one record
    0x01, 0x00, 0x00, 0x01, // MODE_IS_INCLUDE, no aux data, one source
    0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 0x00, 0x01, // ff3e::8000:1
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // 2001:db8::1
];

#[test]
fn v2_report_worked_example() {
    let p = MldPacket::new_checked(&REPORT[..]).unwrap();
    assert_eq!(p.msg_type(), MessageType::V2Report);
    assert_eq!(p.code(), 0);
    assert_eq!(p.checksum(), 0xc501);
    assert!(p.verify_checksum(HOST, ALL_MLDV2_ROUTERS));
    // The pseudo-header is covered: another source or destination does not verify.
    assert!(!p.verify_checksum(a("fe80::2"), ALL_MLDV2_ROUTERS));
    assert!(!p.verify_checksum(HOST, ALL_NODES));
    assert_eq!(p.report_flags(), 0);
    assert_eq!(p.num_group_records(), 1);
    let recs: Vec<_> = p.group_records().collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].record_type(), RecordType::ModeIsInclude);
    assert_eq!(recs[0].group(), a("ff3e::8000:1"));
    assert_eq!(recs[0].sources().collect::<Vec<_>>(), [a("2001:db8::1")]);
    assert!(recs[0].aux_data().is_empty());
    assert!(p.additional_data().is_empty());
    let repr = MldRepr::V2Report(ReportRepr {
        flags: 0,
        records: vec![GroupRecordRepr {
            record_type: RecordType::ModeIsInclude,
            group: a("ff3e::8000:1"),
            sources: vec![a("2001:db8::1")],
            aux_data: vec![],
        }],
        additional_data: vec![],
    });
    assert_eq!(MldRepr::parse(&p).unwrap(), repr);
    assert_eq!(emit(&repr, ALL_MLDV2_ROUTERS), REPORT);
}

/// SPEC.md §2.1's worked example as a whole packet, copied from SPEC.md: the IPv6 header and the
/// Hop-by-Hop header (RFC 8200 §3, §4.3; RFC 2711) in front of [`REPORT`].
const SPEC_PACKET_HEX: &str = "
    60000000 0034 00 01
    fe80 0000 0000 0000 0000 0000 0000 0001
    ff02 0000 0000 0000 0000 0000 0000 0016
    3a00 0502 0000 0100
    8f00 c501 0000 0001
    0100 0001 ff3e 0000 0000 0000 0000 0000 8000 0001
    2001 0db8 0000 0000 0000 0000 0000 0001";

#[test]
fn v2_report_worked_example_packet() {
    use crate::wire::ipv6::{Ipv6Packet, Ipv6Repr, NEXT_HEADER_ICMPV6, ROUTER_ALERT_MLD};
    let hex: String = SPEC_PACKET_HEX.split_whitespace().collect();
    let packet: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(packet.len(), 40 + 8 + 44);
    assert_eq!(&packet[48..], &REPORT[..]);
    let ip = Ipv6Packet::new_checked(&packet[..]).unwrap();
    let ip_repr = Ipv6Repr::parse(&ip);
    assert_eq!(
        ip_repr,
        Ipv6Repr {
            src_addr: HOST,
            dst_addr: ALL_MLDV2_ROUTERS,
            next_header: NEXT_HEADER_ICMPV6,
            hop_limit: 1,
            traffic_class: 0,
            flow_label: 0,
            router_alert: Some(ROUTER_ALERT_MLD),
            payload_len: 44,
        }
    );
    let msg = MldPacket::new_checked(ip.payload()).unwrap();
    assert!(msg.verify_checksum(ip.src_addr(), ip.dst_addr()));
    let repr = MldRepr::parse(&msg).unwrap();
    let mut out = vec![0xa5; ip_repr.buffer_len()];
    ip_repr.emit(&mut out);
    repr.emit(&mut out[ip_repr.header_len()..], HOST, ALL_MLDV2_ROUTERS);
    assert_eq!(out, packet);
}

/// An MLDv2 general query from RFC 3810 §5.1: Maximum Response Code 10000 (10 s), QRV 2,
/// QQIC 125, no sources, fe80::1 → ff02::1. Checksum 0x5696 computed independently (Python).
const QUERY: [u8; 28] = [
    0x82, 0x00, 0x56, 0x96, // type 130, code, checksum
    0x27, 0x10, 0x00, 0x00, // Maximum Response Code 10000, reserved
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // general query: ::
    0x02, 0x7d, 0x00, 0x00, // Resv 0, S 0, QRV 2; QQIC 125; no sources
];

#[test]
fn v2_query_worked_example() {
    let p = MldPacket::new_checked(&QUERY[..]).unwrap();
    assert_eq!(p.query_version(), Some(QueryVersion::V2));
    assert_eq!(decode_max_resp_code(p.max_resp_code()), 10_000);
    assert_eq!(p.group_addr(), Ipv6Addr::UNSPECIFIED);
    assert_eq!(p.query_sources().len(), 0);
    let repr = parse(&QUERY, HOST, ALL_NODES);
    let MldRepr::Query(q) = &repr else {
        panic!("not a query: {repr:?}")
    };
    assert_eq!(q.version(), QueryVersion::V2);
    let v2 = q.v2.as_ref().unwrap();
    assert_eq!((v2.flags, v2.suppress, v2.qrv), (0, false, 2));
    assert_eq!(decode_qqic(v2.qqic), 125);
    assert_eq!(emit(&repr, ALL_NODES), QUERY);
}

#[test]
fn query_versions_by_length() {
    // MLDv1: 24 bytes. 25 to 27: malformed (RFC 3810 §8.1). 28 or more: MLDv2.
    let v1 = MldRepr::Query(QueryRepr {
        max_resp_code: 10_000,
        group: a("ff3e::1"),
        v2: None,
    });
    let bytes = emit(&v1, ALL_NODES);
    assert_eq!(bytes.len(), 24);
    assert_eq!(
        MldPacket::new_checked(&bytes[..]).unwrap().query_version(),
        Some(QueryVersion::V1)
    );
    assert_eq!(parse(&bytes, HOST, ALL_NODES), v1);
    for len in 25..28 {
        let mut long = QUERY[..len].to_vec();
        long[..24].copy_from_slice(&bytes);
        assert_eq!(
            MldPacket::new_checked(&long[..]).unwrap_err(),
            WireError::Malformed("MLD query of 25 to 27 bytes")
        );
    }
    assert!(matches!(
        MldPacket::new_checked(&QUERY[..23]),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn v1_report_and_done_round_trip() {
    for (repr, ty) in [
        (
            MldRepr::V1Report {
                group: a("ff3e::1:2"),
            },
            0x83,
        ),
        (
            MldRepr::V1Done {
                group: a("ff3e::1:2"),
            },
            0x84,
        ),
    ] {
        let bytes = emit(&repr, ALL_ROUTERS);
        assert_eq!(bytes[0], ty);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
        assert_eq!(&bytes[8..], &a("ff3e::1:2").octets());
        assert_eq!(parse(&bytes, HOST, ALL_ROUTERS), repr);
        // Bytes past 24 are ignored, and covered by the checksum.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[1, 2, 3, 4]);
        fill_checksum(&mut longer, HOST, ALL_ROUTERS);
        let p = MldPacket::new_checked(&longer[..]).unwrap();
        assert!(p.additional_data().is_empty());
        assert_eq!(parse(&longer, HOST, ALL_ROUTERS), repr);
    }
}

#[test]
fn report_with_extension() {
    let mut tlvs = Vec::new();
    push_tlv(&mut tlvs, TYPE_EXPERIMENTAL_MANYCAST, &[0x5a; 5]).unwrap();
    let repr = MldRepr::V2Report(ReportRepr {
        flags: REPORT_FLAG_EXTENSION,
        records: vec![GroupRecordRepr {
            record_type: RecordType::ChangeToIncludeMode,
            group: a("ff3e::8000:1"),
            sources: vec![],
            aux_data: vec![],
        }],
        additional_data: tlvs.clone(),
    });
    let bytes = emit(&repr, ALL_MLDV2_ROUTERS);
    assert_eq!(&bytes[4..6], &[0x80, 0x00]);
    let p = MldPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.additional_data(), &tlvs[..]);
    let back = parse(&bytes, HOST, ALL_MLDV2_ROUTERS);
    let MldRepr::V2Report(r) = &back else {
        panic!("not a report")
    };
    assert!(r.has_extension());
    assert_eq!(r.records_end(), 8 + 20);
    assert_eq!(back, repr);
}

#[test]
fn query_flags_and_sources() {
    let repr = MldRepr::Query(QueryRepr {
        max_resp_code: encode_max_resp_code(100_000),
        group: a("ff3e::8000:1"),
        v2: Some(QueryV2Fields {
            flags: QUERY_FLAG_EXTENSION,
            suppress: true,
            qrv: 7,
            qqic: encode_qqic(300),
            sources: vec![a("2001:db8::1"), a("2001:db8::2")],
            additional_data: vec![0, 0, 0, 0],
        }),
    });
    let bytes = emit(&repr, a("ff3e::8000:1"));
    assert_eq!(bytes[24], 0x80 | 0x08 | 0x07);
    assert_eq!(&bytes[26..28], &[0, 2]);
    let p = MldPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(
        p.query_sources().collect::<Vec<_>>(),
        [a("2001:db8::1"), a("2001:db8::2")]
    );
    assert_eq!(p.additional_data(), &[0, 0, 0, 0]);
    assert_eq!(parse(&bytes, HOST, a("ff3e::8000:1")), repr);
    let bad = MldRepr::Query(QueryRepr {
        max_resp_code: 0,
        group: Ipv6Addr::UNSPECIFIED,
        v2: Some(QueryV2Fields {
            flags: 0x01,
            suppress: false,
            qrv: 2,
            qqic: 0,
            sources: vec![],
            additional_data: vec![],
        }),
    });
    assert!(bad.validate().is_err());
}

#[test]
fn unsupported_truncated_and_bad_checksum() {
    // ICMPv6 Echo Request (128) is not MLD.
    assert_eq!(
        MldPacket::new_checked(&[0x80u8, 0, 0, 0, 0, 0, 0, 0][..]).unwrap_err(),
        WireError::Unsupported("ICMPv6 type other than MLD")
    );
    assert!(matches!(
        MldPacket::new_checked(&[0x8fu8, 0, 0][..]),
        Err(WireError::Truncated { .. })
    ));
    // A report announcing two records, carrying one; one whose source runs past the end.
    let mut two = REPORT;
    two[7] = 2;
    assert!(MldPacket::new_checked(&two[..]).is_err());
    assert!(MldPacket::new_checked(&REPORT[..43]).is_err());
    let mut flipped = REPORT;
    flipped[20] ^= 0x01;
    let p = MldPacket::new_checked(&flipped[..]).unwrap();
    assert!(!p.verify_checksum(HOST, ALL_MLDV2_ROUTERS));
}

#[test]
fn max_resp_code_boundaries() {
    // Linear up to 32767 ms; 0x8000 is the first exponential code and also 32768 ms.
    assert_eq!(decode_max_resp_code(0), 0);
    assert_eq!(decode_max_resp_code(0x7fff), 32_767);
    assert_eq!(decode_max_resp_code(0x8000), 32_768);
    assert_eq!(decode_max_resp_code(0x8001), 32_776);
    assert_eq!(decode_max_resp_code(0x8fff), 0x1fff << 3);
    assert_eq!(decode_max_resp_code(0x9000), 0x1000 << 4);
    assert_eq!(decode_max_resp_code(0xffff), MAX_RESP_DELAY_MAX_MS);
    assert_eq!(MAX_RESP_DELAY_MAX_MS, 8_387_584);
    assert_eq!(encode_max_resp_code(0), 0);
    assert_eq!(encode_max_resp_code(32_767), 0x7fff);
    assert_eq!(encode_max_resp_code(32_768), 0x8000);
    assert_eq!(encode_max_resp_code(32_769), 0x8001, "rounds up");
    assert_eq!(encode_max_resp_code(0x1fff << 3), 0x8fff);
    assert_eq!(encode_max_resp_code((0x1fff << 3) + 1), 0x9000);
    assert_eq!(encode_max_resp_code(MAX_RESP_DELAY_MAX_MS), 0xffff);
    assert_eq!(encode_max_resp_code(MAX_RESP_DELAY_MAX_MS + 1), 0xffff);
    assert_eq!(encode_max_resp_code(u32::MAX), 0xffff);
    let mut last = 0;
    for c in 0..=u16::MAX {
        let ms = decode_max_resp_code(c);
        assert!(ms > last || c == 0, "not increasing at {c:#x}");
        last = ms;
        assert_eq!(encode_max_resp_code(ms), c, "{c:#x}");
    }
    for ms in [1u32, 40_000, 1_000_000, 5_000_000] {
        let c = encode_max_resp_code(ms);
        assert!(decode_max_resp_code(c) >= ms, "{ms} -> {c:#x}");
        assert!(c == 0 || decode_max_resp_code(c - 1) < ms, "{ms} -> {c:#x}");
    }
}

#[test]
fn qqic_boundaries() {
    assert_eq!(decode_qqic(127), 127);
    assert_eq!(decode_qqic(128), 128);
    assert_eq!(decode_qqic(0xff), 31_744);
    assert_eq!(encode_qqic(127), 127);
    assert_eq!(encode_qqic(128), 0x80);
    assert_eq!(encode_qqic(129), 0x81);
    assert_eq!(encode_qqic(31_744), 0xff);
    assert_eq!(encode_qqic(31_745), 0xff);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn addr() -> impl Strategy<Value = Ipv6Addr> {
        any::<u128>().prop_map(Ipv6Addr::from)
    }

    fn record() -> impl Strategy<Value = GroupRecordRepr<Ipv6Addr>> {
        (
            any::<u8>(),
            addr(),
            prop::collection::vec(addr(), 0..4),
            prop::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(|(t, group, sources, aux_words)| GroupRecordRepr {
                record_type: RecordType::from(t),
                group,
                sources,
                aux_data: aux_words.iter().flat_map(|w| [*w; 4]).collect(),
            })
    }

    fn message() -> impl Strategy<Value = MldRepr> {
        prop_oneof![
            (any::<u16>(), addr()).prop_map(|(code, group)| MldRepr::Query(QueryRepr {
                max_resp_code: code,
                group,
                v2: None
            })),
            (
                any::<u16>(),
                addr(),
                0u8..16,
                any::<bool>(),
                0u8..8,
                any::<u8>(),
                prop::collection::vec(addr(), 0..4),
                prop::collection::vec(any::<u8>(), 0..12)
            )
                .prop_map(
                    |(code, group, fl, suppress, qrv, qqic, sources, additional_data)| {
                        MldRepr::Query(QueryRepr {
                            max_resp_code: code,
                            group,
                            v2: Some(QueryV2Fields {
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
            addr().prop_map(|group| MldRepr::V1Report { group }),
            addr().prop_map(|group| MldRepr::V1Done { group }),
            (
                any::<u16>(),
                prop::collection::vec(record(), 0..4),
                prop::collection::vec(any::<u8>(), 0..12)
            )
                .prop_map(|(flags, records, additional_data)| {
                    MldRepr::V2Report(ReportRepr {
                        flags,
                        records,
                        additional_data,
                    })
                }),
        ]
    }

    proptest! {
        /// Whatever we can build parses back to itself, with a checksum valid for its addresses.
        #[test]
        fn emit_parse_round_trip(repr in message(), src in addr(), dst in addr()) {
            let mut buf = vec![0xa5; repr.buffer_len()];
            repr.emit(&mut buf, src, dst);
            let packet = MldPacket::new_checked(&buf[..]).unwrap();
            prop_assert!(packet.verify_checksum(src, dst));
            prop_assert_eq!(MldRepr::parse(&packet).unwrap(), repr);
        }

        /// Arbitrary bytes never panic; what parses re-emits to bytes that parse the same.
        #[test]
        fn arbitrary_bytes(mut bytes in prop::collection::vec(any::<u8>(), 0..160), ty in 0usize..5) {
            // Most random type bytes are not MLD: steer the type half of the time.
            if let (Some(first), Some(t)) = (bytes.first_mut(), [0x82u8, 0x83, 0x84, 0x8f].get(ty)) {
                *first = *t;
            }
            if let Ok(p) = MldPacket::new_checked(&bytes[..]) {
                let _ = (p.verify_checksum(HOST, ALL_MLDV2_ROUTERS), p.additional_data().len());
                let _ = (p.group_addr(), p.query_sources().len(), p.query_version());
                if let Ok(repr) = MldRepr::parse(&p) {
                    let mut out = vec![0; repr.buffer_len()];
                    repr.emit(&mut out, HOST, ALL_MLDV2_ROUTERS);
                    let again = MldPacket::new_checked(&out[..]).unwrap();
                    prop_assert!(again.verify_checksum(HOST, ALL_MLDV2_ROUTERS));
                    prop_assert_eq!(MldRepr::parse(&again).unwrap(), repr);
                }
            }
        }
    }
}
