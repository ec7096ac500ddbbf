//! Scapy against our wire code, both ways: bytes scapy built, parsed by us; bytes we built,
//! decoded by scapy. No network traffic.

use crate::harness::frames::{datagram, emit_igmp, parse_datagram, record, report};
use crate::harness::scapy;
use igmp_ext::wire::extension::{parse_tlvs, Tlv, TYPE_EXPERIMENTAL_MANYCAST, TYPE_NOOP};
use igmp_ext::wire::igmp::{
    decode_code, IgmpRepr, QueryRepr, QueryV3Fields, QueryVersion, ReportRepr, ALL_ROUTERS,
    ALL_SYSTEMS, ALL_V3_ROUTERS,
};
use igmp_ext::wire::record::RecordType::{self, *};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

fn a(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// The six record types, each with its own group, as both sides build them.
fn six_records() -> Vec<(RecordType, &'static str, Vec<&'static str>)> {
    vec![
        (ModeIsInclude, "232.1.1.1", vec!["10.0.0.1", "10.0.0.2"]),
        (ModeIsExclude, "239.1.1.3", vec!["10.9.9.9"]),
        (ChangeToIncludeMode, "239.1.1.2", vec![]),
        (ChangeToExcludeMode, "239.1.1.1", vec![]),
        (AllowNewSources, "232.1.1.2", vec!["10.0.0.3"]),
        (BlockOldSources, "232.1.1.3", vec!["10.0.0.4", "10.0.0.5"]),
    ]
}

fn six_record_report() -> IgmpRepr {
    report(
        six_records()
            .into_iter()
            .map(|(t, g, s)| record(t, a(g), &s.into_iter().map(a).collect::<Vec<_>>()))
            .collect(),
    )
}

/// RFC 9279 TLVs after the last record: No-op, then "abc" under the experimental type.
const EXTENSION_HEX: &str = "00000000fffe0003616263";

fn v3_query(
    max_resp_code: u8,
    group: &str,
    suppress: bool,
    qrv: u8,
    qqic: u8,
    sources: &[&str],
) -> IgmpRepr {
    IgmpRepr::Query(QueryRepr {
        max_resp_code,
        group: a(group),
        v3: Some(QueryV3Fields {
            flags: 0,
            suppress,
            qrv,
            qqic,
            sources: sources.iter().map(|s| a(s)).collect(),
            additional_data: vec![],
        }),
    })
}

fn v2_query(max_resp_code: u8, group: &str) -> IgmpRepr {
    IgmpRepr::Query(QueryRepr {
        max_resp_code,
        group: a(group),
        v3: None,
    })
}

#[test]
fn scapy_built_messages_parse_with_our_views() {
    let built = scapy::build();
    let extension = IgmpRepr::V3Report(ReportRepr {
        flags: 0x8000,
        records: vec![record(AllowNewSources, a("232.1.1.1"), &[a("10.0.0.1")])],
        additional_data: hex::decode(EXTENSION_HEX).expect("hex"),
    });
    // (name, IP destination scapy's igmpize() chose, what we must parse)
    let expected: Vec<(&str, Ipv4Addr, IgmpRepr)> = vec![
        ("v3_report", ALL_V3_ROUTERS, six_record_report()),
        ("v3_report_extension", ALL_V3_ROUTERS, extension),
        (
            "v3_query_group_source",
            a("232.1.1.1"),
            v3_query(100, "232.1.1.1", true, 2, 125, &["10.0.0.1", "10.0.0.2"]),
        ),
        // scapy encoded 200 (tenths of a second) as RFC 3376's float: 0x89.
        (
            "v3_query_general",
            ALL_SYSTEMS,
            v3_query(0x89, "0.0.0.0", false, 7, 60, &[]),
        ),
        ("v2_query_general", ALL_SYSTEMS, v2_query(100, "0.0.0.0")),
        ("v2_query_group", a("239.1.2.3"), v2_query(10, "239.1.2.3")),
        ("v1_query", ALL_SYSTEMS, v2_query(0, "0.0.0.0")),
        (
            "v2_report",
            a("239.1.2.3"),
            IgmpRepr::V2Report {
                group: a("239.1.2.3"),
            },
        ),
        (
            "v2_leave",
            ALL_ROUTERS,
            IgmpRepr::V2Leave {
                group: a("239.1.2.3"),
            },
        ),
    ];
    assert_eq!(
        built.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut names: Vec<&str> = expected.iter().map(|e| e.0).collect();
            names.sort_unstable();
            names
        },
        "the script and this test disagree on the message list"
    );
    for (name, dst, want) in expected {
        let bytes = &built[name];
        let p =
            parse_datagram(bytes).unwrap_or_else(|e| panic!("{name}: {e}: {}", hex::encode(bytes)));
        assert!(p.checksum_ok, "{name}: checksum");
        assert_eq!(p.ip.ttl, 1, "{name}");
        assert_eq!(p.ip.tos, 0xc0, "{name}");
        assert!(p.ip.router_alert, "{name}: Router Alert");
        assert_eq!(p.ip.src_addr, a("10.0.0.9"), "{name}");
        assert_eq!(p.ip.dst_addr, dst, "{name}");
        assert_eq!(p.igmp, want, "{name}");
        assert_eq!(
            hex::encode(emit_igmp(&p.igmp)),
            hex::encode(&p.igmp_bytes),
            "{name}: re-emit"
        );
    }

    let ext = parse_datagram(&built["v3_report_extension"]).expect("parsed above");
    let IgmpRepr::V3Report(r) = &ext.igmp else {
        panic!("not a report")
    };
    assert_eq!(
        parse_tlvs(&r.additional_data).expect("TLVs"),
        vec![
            Tlv {
                kind: TYPE_NOOP,
                value: &[]
            },
            Tlv {
                kind: TYPE_EXPERIMENTAL_MANYCAST,
                value: b"abc"
            }
        ]
    );
    let q = parse_datagram(&built["v3_query_general"]).expect("parsed above");
    let IgmpRepr::Query(q) = q.igmp else {
        panic!("not a query")
    };
    assert_eq!(q.version(), QueryVersion::V3);
    assert_eq!(decode_code(q.max_resp_code), 200);
    for (name, version) in [
        ("v2_query_general", QueryVersion::V2),
        ("v1_query", QueryVersion::V1),
    ] {
        let IgmpRepr::Query(q) = parse_datagram(&built[name]).expect("parsed above").igmp else {
            panic!("{name}")
        };
        assert_eq!(q.version(), version, "{name}");
    }
}

const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);

/// Scapy's IP view must match what Ipv4Repr wrote, checksum included.
fn check_ip(name: &str, d: &Value, dst: Ipv4Addr) {
    let ip = &d["ip"];
    assert_eq!(ip["src"], json!(HOST.to_string()), "{name}");
    assert_eq!(ip["dst"], json!(dst.to_string()), "{name}");
    assert_eq!(ip["ttl"], json!(1), "{name}");
    assert_eq!(ip["tos"], json!(0xc0), "{name}");
    assert_eq!(ip["proto"], json!(2), "{name}");
    assert_eq!(ip["flags"], json!("DF"), "{name}");
    assert_eq!(ip["frag"], json!(0), "{name}");
    assert_eq!(ip["options"], json!(["IPOption_Router_Alert"]), "{name}");
    assert_eq!(ip["chksum"], ip["chksum_recomputed"], "{name}: IP checksum");
}

/// Scapy's IGMP view: checksum equal to the one scapy computes afresh, and verifying.
fn check_igmp_common(name: &str, g: &Value, class: &str, ty: u8) {
    assert_eq!(g["class"], json!(class), "{name}: {g}");
    assert_eq!(g["type"], json!(ty), "{name}");
    assert_eq!(g["chksum"], g["chksum_recomputed"], "{name}: IGMP checksum");
    assert_eq!(g["chksum_verifies"], json!(true), "{name}");
}

#[test]
fn our_datagrams_decode_in_scapy() {
    let mut ext_data = Vec::new();
    igmp_ext::wire::extension::push_tlv(&mut ext_data, TYPE_NOOP, &[]).expect("TLV");
    igmp_ext::wire::extension::push_tlv(&mut ext_data, TYPE_EXPERIMENTAL_MANYCAST, b"abc")
        .expect("TLV");
    assert_eq!(hex::encode(&ext_data), EXTENSION_HEX);
    let extension = IgmpRepr::V3Report(ReportRepr {
        flags: 0x8000,
        records: vec![
            record(AllowNewSources, a("232.1.1.1"), &[a("10.0.0.1")]),
            record(
                BlockOldSources,
                a("232.1.1.2"),
                &[a("10.0.0.2"), a("10.0.0.3")],
            ),
        ],
        additional_data: ext_data,
    });
    let messages: Vec<(&str, Ipv4Addr, IgmpRepr)> = vec![
        ("report", ALL_V3_ROUTERS, six_record_report()),
        ("report_extension", ALL_V3_ROUTERS, extension),
        (
            "query_v3",
            ALL_SYSTEMS,
            v3_query(100, "232.1.1.1", true, 2, 125, &["10.0.0.1", "10.0.0.2"]),
        ),
        (
            "query_v3_float_code",
            ALL_SYSTEMS,
            v3_query(0x89, "0.0.0.0", false, 0, 0x8c, &[]),
        ),
        ("query_v2", ALL_SYSTEMS, v2_query(100, "0.0.0.0")),
        (
            "report_v1",
            a("239.1.2.4"),
            IgmpRepr::V1Report {
                group: a("239.1.2.4"),
            },
        ),
        (
            "report_v2",
            a("239.1.2.3"),
            IgmpRepr::V2Report {
                group: a("239.1.2.3"),
            },
        ),
        (
            "leave_v2",
            ALL_ROUTERS,
            IgmpRepr::V2Leave {
                group: a("239.1.2.3"),
            },
        ),
    ];
    let datagrams: Vec<Vec<u8>> = messages
        .iter()
        .map(|(_, dst, m)| datagram(HOST, *dst, m))
        .collect();
    let decoded = scapy::decode(&datagrams);

    for ((name, dst, msg), d) in messages.iter().zip(&decoded) {
        check_ip(name, d, *dst);
        let g = &d["igmp"];
        match msg {
            IgmpRepr::V3Report(r) => {
                check_igmp_common(name, g, "IGMPv3", 0x22);
                assert_eq!(g["mrcode"], json!(0), "{name}");
                assert_eq!(g["flags"], json!(r.flags), "{name}");
                assert_eq!(g["numgrp"], json!(r.records.len()), "{name}");
                let want: Vec<Value> = r
                    .records
                    .iter()
                    .map(|rec| {
                        json!({
                            "rtype": u8::from(rec.record_type),
                            "auxdlen": 0,
                            "numsrc": rec.sources.len(),
                            "maddr": rec.group.to_string(),
                            "srcaddrs": rec.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                assert_eq!(g["records"], json!(want), "{name}");
                // Scapy stops at the last record too and leaves the TLVs as trailing bytes.
                assert_eq!(
                    g["trailing"],
                    json!(hex::encode(&r.additional_data)),
                    "{name}"
                );
            }
            IgmpRepr::Query(QueryRepr {
                max_resp_code,
                group,
                v3: Some(v3),
            }) => {
                check_igmp_common(name, g, "IGMPv3", 0x11);
                assert_eq!(g["mrcode"], json!(max_resp_code), "{name}");
                assert_eq!(g["gaddr"], json!(group.to_string()), "{name}");
                assert_eq!(g["s"], json!(u8::from(v3.suppress)), "{name}");
                assert_eq!(g["qrv"], json!(v3.qrv), "{name}");
                assert_eq!(g["qqic"], json!(v3.qqic), "{name}");
                assert_eq!(g["resv"], json!(0), "{name}");
                assert_eq!(g["numsrc"], json!(v3.sources.len()), "{name}");
                let srcs: Vec<String> = v3.sources.iter().map(ToString::to_string).collect();
                assert_eq!(g["srcaddrs"], json!(srcs), "{name}");
                assert_eq!(g["trailing"], json!(""), "{name}");
            }
            IgmpRepr::Query(QueryRepr {
                max_resp_code,
                group,
                v3: None,
            }) => {
                check_igmp_common(name, g, "IGMP", 0x11);
                assert_eq!(g["mrcode"], json!(max_resp_code), "{name}");
                assert_eq!(g["gaddr"], json!(group.to_string()), "{name}");
            }
            IgmpRepr::V1Report { group }
            | IgmpRepr::V2Report { group }
            | IgmpRepr::V2Leave { group } => {
                check_igmp_common(name, g, "IGMP", emit_igmp(msg)[0]);
                assert_eq!(g["mrcode"], json!(0), "{name}");
                assert_eq!(g["gaddr"], json!(group.to_string()), "{name}");
            }
        }
    }
}
