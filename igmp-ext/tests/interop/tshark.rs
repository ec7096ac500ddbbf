//! Wireshark's IGMP dissector (through tshark) decoding datagrams we built.

use crate::harness::frames::{datagram, record, report};
use crate::harness::tshark::{self, TsharkRecord};
use igmp_ext::wire::extension::{push_tlv, TYPE_EXPERIMENTAL_MANYCAST, TYPE_NOOP};
use igmp_ext::wire::igmp::{
    IgmpRepr, QueryRepr, QueryV3Fields, ReportRepr, ALL_ROUTERS, ALL_SYSTEMS, ALL_V3_ROUTERS,
};
use igmp_ext::wire::record::RecordType::*;
use std::net::Ipv4Addr;

const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);

fn a(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// What tshark should show for each record of `r`.
fn expected_records(r: &IgmpRepr) -> Vec<TsharkRecord> {
    let IgmpRepr::V3Report(r) = r else {
        panic!("not a report")
    };
    r.records
        .iter()
        .map(|rec| TsharkRecord {
            record_type: rec.record_type.into(),
            aux_data_len: 0,
            num_src: rec.sources.len(),
            maddr: rec.group,
            sources: rec.sources.clone(),
        })
        .collect()
}

#[test]
fn tshark_decodes_our_v3_reports() {
    let mut tlvs = Vec::new();
    push_tlv(&mut tlvs, TYPE_NOOP, &[]).expect("TLV");
    push_tlv(&mut tlvs, TYPE_EXPERIMENTAL_MANYCAST, &[0x5a; 40]).expect("TLV");
    let reports = [
        report(vec![record(
            AllowNewSources,
            a("232.1.1.1"),
            &[a("10.0.0.1"), a("10.0.0.2")],
        )]),
        report(vec![
            record(ModeIsInclude, a("232.1.1.1"), &[a("10.0.0.1")]),
            record(ModeIsExclude, a("239.1.1.3"), &[]),
            record(ChangeToIncludeMode, a("239.1.1.2"), &[a("10.0.0.9")]),
            record(ChangeToExcludeMode, a("239.1.1.1"), &[]),
            record(
                AllowNewSources,
                a("232.1.1.2"),
                &[a("10.0.0.3"), a("10.0.0.4"), a("10.0.0.5")],
            ),
            record(BlockOldSources, a("232.1.1.3"), &[a("10.0.0.6")]),
        ]),
        IgmpRepr::V3Report(ReportRepr {
            flags: 0x8000,
            records: vec![record(AllowNewSources, a("232.1.1.1"), &[a("10.0.0.1")])],
            additional_data: tlvs,
        }),
    ];
    let datagrams: Vec<Vec<u8>> = reports
        .iter()
        .map(|r| datagram(HOST, ALL_V3_ROUTERS, r))
        .collect();
    let decoded = tshark::decode(&datagrams);
    for (i, (r, d)) in reports.iter().zip(&decoded).enumerate() {
        assert!(
            !d.has_problem(),
            "report {i}: malformed={} expert={:?}",
            d.malformed,
            d.expert
        );
        assert_eq!(d.field("ip.src"), Some("10.0.0.7"), "report {i}");
        assert_eq!(d.field("ip.dst"), Some("224.0.0.22"), "report {i}");
        assert_eq!(d.field("ip.ttl"), Some("1"), "report {i}");
        assert_eq!(d.field("ip.dsfield"), Some("0xc0"), "report {i}");
        assert_eq!(d.field("ip.flags.df"), Some("1"), "report {i}");
        assert_eq!(
            d.field("ip.options.routeralert"),
            Some("94:04:00:00"),
            "report {i}"
        );
        assert_eq!(
            d.field("ip.checksum.status"),
            Some("1"),
            "report {i}: IP checksum good"
        );
        assert_eq!(d.field("igmp.version"), Some("3"), "report {i}");
        assert_eq!(d.field("igmp.type"), Some("0x22"), "report {i}");
        assert_eq!(
            d.field("igmp.checksum.status"),
            Some("1"),
            "report {i}: IGMP checksum good"
        );
        let IgmpRepr::V3Report(rr) = r else {
            unreachable!()
        };
        assert_eq!(
            d.field("igmp.num_grp_recs"),
            Some(rr.records.len().to_string().as_str()),
            "report {i}"
        );
        assert_eq!(d.igmp_records(), expected_records(r), "report {i}");
    }
    // Wireshark 4.0 shows the Flags field as "reserved" and skips the TLVs without comment.
    assert_eq!(decoded[2].all("igmp.reserved"), ["00", "80:00"]);
}

#[test]
fn tshark_decodes_our_queries_and_v2_messages() {
    let v3 = IgmpRepr::Query(QueryRepr {
        max_resp_code: 100,
        group: a("232.1.1.1"),
        v3: Some(QueryV3Fields {
            flags: 0,
            suppress: true,
            qrv: 2,
            qqic: 125,
            sources: vec![a("10.0.0.1"), a("10.0.0.2")],
            additional_data: vec![],
        }),
    });
    let v2 = IgmpRepr::Query(QueryRepr {
        max_resp_code: 100,
        group: Ipv4Addr::UNSPECIFIED,
        v3: None,
    });
    let leave = IgmpRepr::V2Leave {
        group: a("239.1.2.3"),
    };
    let datagrams = vec![
        datagram(HOST, ALL_SYSTEMS, &v3),
        datagram(HOST, ALL_SYSTEMS, &v2),
        datagram(HOST, ALL_ROUTERS, &leave),
    ];
    let d = tshark::decode(&datagrams);
    for (i, p) in d.iter().enumerate() {
        assert!(!p.has_problem(), "packet {i}: {:?}", p.expert);
        assert_eq!(p.field("igmp.checksum.status"), Some("1"), "packet {i}");
        assert_eq!(p.field("ip.checksum.status"), Some("1"), "packet {i}");
    }
    let fields = |i: usize, names: &[&str]| -> Vec<Option<String>> {
        names
            .iter()
            .map(|n| d[i].field(n).map(str::to_owned))
            .collect()
    };
    let some = |v: &[&str]| v.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>();
    assert_eq!(
        fields(
            0,
            &[
                "igmp.version",
                "igmp.type",
                "igmp.max_resp",
                "igmp.maddr",
                "igmp.s",
                "igmp.qrv",
                "igmp.qqic",
                "igmp.num_src"
            ]
        ),
        some(&["3", "0x11", "100", "232.1.1.1", "1", "2", "125", "2"])
    );
    assert_eq!(d[0].all("igmp.saddr"), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        fields(
            1,
            &["igmp.version", "igmp.type", "igmp.max_resp", "igmp.maddr"]
        ),
        some(&["2", "0x11", "100", "0.0.0.0"])
    );
    assert_eq!(
        fields(2, &["igmp.version", "igmp.type", "igmp.maddr"]),
        some(&["2", "0x17", "239.1.2.3"])
    );
}

/// The helper must see problems, or its "no problem" verdicts above would mean nothing.
#[test]
fn tshark_helper_reports_bad_checksum_and_truncation() {
    let r = report(vec![record(
        AllowNewSources,
        a("232.1.1.1"),
        &[a("10.0.0.1"), a("10.0.0.2")],
    )]);
    let good = datagram(HOST, ALL_V3_ROUTERS, &r);
    let mut bad_checksum = good.clone();
    bad_checksum[24 + 2] ^= 0xff;
    // Cut the last source off but keep the IPv4 header consistent: the record now overruns.
    let mut truncated = good[..good.len() - 4].to_vec();
    let total = u16::try_from(truncated.len()).expect("short").to_be_bytes();
    truncated[2..4].copy_from_slice(&total);
    truncated[10..12].copy_from_slice(&[0, 0]);
    let c = igmp_ext::wire::checksum::compute(&truncated[..24]);
    truncated[10..12].copy_from_slice(&c.to_be_bytes());

    let d = tshark::decode(&[good, bad_checksum, truncated]);
    assert!(!d[0].has_problem(), "{:?}", d[0].expert);
    assert!(d[1].has_problem(), "bad checksum not flagged");
    assert_eq!(d[1].field("igmp.checksum.status"), Some("0"));
    assert!(
        d[1].expert
            .iter()
            .any(|e| e.severity == tshark::SEVERITY_ERROR),
        "{:?}",
        d[1].expert
    );
    assert!(
        d[2].has_problem(),
        "truncated record not flagged: {:?}",
        d[2].layers
    );
}
