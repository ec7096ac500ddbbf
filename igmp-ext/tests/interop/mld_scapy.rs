//! Scapy's MLD layers (scapy.layers.inet6) against ours, both ways: we parse and re-emit byte for
//! byte what scapy builds, and scapy reads what we build with the values we put in.

use crate::harness::mld::{emit_ip, emit_mld, mld_datagram, parse_mld_datagram};
use crate::harness::scapy;
use igmp_ext::wire::extension::{push_tlv, REPORT_FLAG_EXTENSION, TYPE_EXPERIMENTAL_MANYCAST};
use igmp_ext::wire::ipv6::ROUTER_ALERT_MLD;
use igmp_ext::wire::mld::{
    decode_max_resp_code, MldRepr, QueryRepr, QueryV2Fields, ReportRepr, ALL_MLDV2_ROUTERS,
    ALL_NODES, ALL_ROUTERS,
};
use igmp_ext::wire::record::{GroupRecordRepr, RecordType};
use serde_json::{json, Value};
use std::net::Ipv6Addr;

const HOST: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9);

fn a(s: &str) -> Ipv6Addr {
    s.parse().expect("test address")
}

fn record(t: RecordType, group: &str, sources: &[&str]) -> GroupRecordRepr<Ipv6Addr> {
    GroupRecordRepr {
        record_type: t,
        group: a(group),
        sources: sources.iter().map(|s| a(s)).collect(),
        aux_data: vec![],
    }
}

#[test]
fn we_parse_and_reemit_what_scapy_builds() {
    let built = scapy::build_mld();
    assert_eq!(built.len(), 7, "{:?}", built.keys());
    let mut parsed = std::collections::BTreeMap::new();
    for (name, bytes) in &built {
        let p = parse_mld_datagram(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(p.checksum_ok, "{name}: checksum");
        assert_eq!(p.ip.src_addr, HOST, "{name}");
        assert_eq!(p.ip.hop_limit, 1, "{name}");
        assert_eq!(p.ip.router_alert, Some(ROUTER_ALERT_MLD), "{name}");
        assert_eq!(emit_ip(&p.ip), p.ip_header, "{name}: IPv6 header");
        assert_eq!(
            emit_mld(&p.mld, p.ip.src_addr, p.ip.dst_addr),
            p.mld_bytes,
            "{name}: MLD bytes"
        );
        parsed.insert(name.as_str(), p.mld);
    }
    use RecordType::*;
    let report = MldRepr::V2Report(ReportRepr {
        flags: 0,
        records: vec![
            record(
                ModeIsInclude,
                "ff3e::8000:1",
                &["2001:db8::1", "2001:db8::2"],
            ),
            record(ModeIsExclude, "ff15::3", &["2001:db8::9"]),
            record(ChangeToIncludeMode, "ff15::2", &[]),
            record(ChangeToExcludeMode, "ff15::1", &[]),
            record(AllowNewSources, "ff3e::8000:2", &["2001:db8::3"]),
            record(
                BlockOldSources,
                "ff3e::8000:3",
                &["2001:db8::4", "2001:db8::5"],
            ),
        ],
        additional_data: vec![],
    });
    assert_eq!(parsed["v2_report"], report);
    let extension = MldRepr::V2Report(ReportRepr {
        flags: REPORT_FLAG_EXTENSION,
        records: vec![record(AllowNewSources, "ff3e::8000:1", &["2001:db8::1"])],
        additional_data: hex::decode("00000000fffe0003616263").expect("hex"),
    });
    assert_eq!(parsed["v2_report_extension"], extension);
    let general = MldRepr::Query(QueryRepr {
        max_resp_code: 10_000,
        group: Ipv6Addr::UNSPECIFIED,
        v2: Some(QueryV2Fields {
            flags: 0,
            suppress: false,
            qrv: 2,
            qqic: 125,
            sources: vec![],
            additional_data: vec![],
        }),
    });
    assert_eq!(parsed["v2_query_general"], general);
    let specific = MldRepr::Query(QueryRepr {
        max_resp_code: 0x8123,
        group: a("ff3e::8000:1"),
        v2: Some(QueryV2Fields {
            flags: 0,
            suppress: true,
            qrv: 2,
            qqic: 0x8a,
            sources: vec![a("2001:db8::1"), a("2001:db8::2")],
            additional_data: vec![],
        }),
    });
    assert_eq!(parsed["v2_query_group_source"], specific);
    // 0x8123: exp 0, mant 0x123 → (0x1123) << 3 ms (RFC 3810 §5.1.3).
    assert_eq!(decode_max_resp_code(0x8123), 0x1123 << 3);
    assert_eq!(
        parsed["v1_query"],
        MldRepr::Query(QueryRepr {
            max_resp_code: 10_000,
            group: Ipv6Addr::UNSPECIFIED,
            v2: None
        })
    );
    assert_eq!(
        parsed["v1_report"],
        MldRepr::V1Report {
            group: a("ff15::1")
        }
    );
    assert_eq!(
        parsed["v1_done"],
        MldRepr::V1Done {
            group: a("ff15::1")
        }
    );
}

#[test]
fn scapy_parses_what_we_build() {
    let mut tlvs = Vec::new();
    push_tlv(&mut tlvs, TYPE_EXPERIMENTAL_MANYCAST, &[0x5a; 7]).expect("TLV");
    let messages = [
        (
            ALL_MLDV2_ROUTERS,
            MldRepr::V2Report(ReportRepr {
                flags: 0,
                records: vec![
                    record(
                        RecordType::ModeIsInclude,
                        "ff3e::8000:1",
                        &["2001:db8::1", "2001:db8::2"],
                    ),
                    record(RecordType::ChangeToExcludeMode, "ff15::1", &[]),
                ],
                additional_data: vec![],
            }),
        ),
        (
            ALL_MLDV2_ROUTERS,
            MldRepr::V2Report(ReportRepr {
                flags: REPORT_FLAG_EXTENSION,
                records: vec![record(
                    RecordType::ModeIsInclude,
                    "ff3e::8000:1",
                    &["2001:db8::1"],
                )],
                additional_data: tlvs.clone(),
            }),
        ),
        (
            a("ff3e::8000:1"),
            MldRepr::Query(QueryRepr {
                max_resp_code: 0x9fff,
                group: a("ff3e::8000:1"),
                v2: Some(QueryV2Fields {
                    flags: 0,
                    suppress: true,
                    qrv: 3,
                    qqic: 0xff,
                    sources: vec![a("2001:db8::7")],
                    additional_data: vec![],
                }),
            }),
        ),
        (
            ALL_ROUTERS,
            MldRepr::V1Done {
                group: a("ff15::1"),
            },
        ),
        (
            ALL_NODES,
            MldRepr::Query(QueryRepr {
                max_resp_code: 1000,
                group: Ipv6Addr::UNSPECIFIED,
                v2: None,
            }),
        ),
    ];
    let packets: Vec<Vec<u8>> = messages
        .iter()
        .map(|(dst, m)| mld_datagram(HOST, *dst, m))
        .collect();
    let decoded = scapy::decode_mld(&packets);
    for (i, (d, (dst, _))) in decoded.iter().zip(&messages).enumerate() {
        assert_eq!(
            d["ipv6"],
            json!({"src": "fe80::9", "dst": dst.to_string(), "hlim": 1,
                   "plen": packets[i].len() - 40, "nh": 0, "hbh_nh": 58, "router_alert": [0]}),
            "packet {i}"
        );
        assert_eq!(
            d["mld"]["cksum"], d["mld"]["cksum_recomputed"],
            "packet {i}"
        );
    }
    let records = |d: &Value| d["mld"]["records"].clone();
    assert_eq!(decoded[0]["mld"]["class"], "ICMPv6MLReport2");
    assert_eq!(decoded[0]["mld"]["records_number"], 2);
    assert_eq!(
        records(&decoded[0]),
        json!([
            {"rtype": 1, "auxdata_len": 0, "dst": "ff3e::8000:1",
             "sources": ["2001:db8::1", "2001:db8::2"]},
            {"rtype": 4, "auxdata_len": 0, "dst": "ff15::1", "sources": []},
        ])
    );
    assert_eq!(decoded[0]["mld"]["additional"], "");
    assert_eq!(decoded[1]["mld"]["flags"], 0x8000);
    assert_eq!(decoded[1]["mld"]["additional"], hex::encode(&tlvs));
    let q = &decoded[2]["mld"];
    assert_eq!(q["class"], "ICMPv6MLQuery2");
    assert_eq!(
        (
            &q["mrd"],
            &q["mladdr"],
            &q["s"],
            &q["qrv"],
            &q["qqic"],
            &q["sources"]
        ),
        (
            &json!(0x9fff),
            &json!("ff3e::8000:1"),
            &json!(1),
            &json!(3),
            &json!(0xff),
            &json!(["2001:db8::7"])
        )
    );
    assert_eq!(decoded[3]["mld"]["class"], "ICMPv6MLDone");
    assert_eq!(decoded[3]["mld"]["mladdr"], "ff15::1");
    assert_eq!(decoded[4]["mld"]["class"], "ICMPv6MLQuery");
    assert_eq!(decoded[4]["mld"]["mrd"], 1000);
}

/// Scapy reads the signed MLDv2 join of SPEC.md §3.8 as an ordinary INCLUDE report: a valid
/// checksum, the one record with the include slice's base as its source, the E flag, and our
/// extension as the additional data, byte for byte.
#[test]
fn scapy_reads_a_signed_mld_join() {
    let d = igmp_ext::fixtures::mld_spec_example();
    let decoded = scapy::decode_mld(std::slice::from_ref(&d));
    let m = &decoded[0]["mld"];
    assert_eq!(
        decoded[0]["ipv6"],
        json!({"src": "fe80::1", "dst": "ff02::16", "hlim": 1,
               "plen": d.len() - 40, "nh": 0, "hbh_nh": 58, "router_alert": [0]})
    );
    assert_eq!(m["class"], "ICMPv6MLReport2");
    assert_eq!(m["cksum"], m["cksum_recomputed"]);
    assert_eq!(m["flags"], 0x8000);
    assert_eq!(m["records_number"], 1);
    assert_eq!(
        m["records"],
        json!([{"rtype": 1, "auxdata_len": 0, "dst": "ff3e::8000:1", "sources": ["0:0:0:100::"]}])
    );
    // The MLD message is 48 bytes in; its one record (8 + 20 + 16 bytes) ends at 44.
    assert_eq!(m["additional"], hex::encode(&d[48 + 44..]));
}
