//! The Linux bridge's IGMP snooping (net/bridge/br_multicast.c) consuming reports we built.

use crate::harness::bridge::{MdbEntry, Snooping, SnoopingBridge};
use crate::harness::frames::{datagram, parse_datagram, record, report};
use crate::harness::netns::Lab;
use igmp_ext::wire::extension::{push_tlv, TYPE_EXPERIMENTAL_MANYCAST, TYPE_NOOP};
use igmp_ext::wire::igmp::{IgmpRepr, ReportRepr, ALL_V3_ROUTERS};
use igmp_ext::wire::record::{GroupRecordRepr, RecordType};
use std::net::Ipv4Addr;
use std::time::Duration;

const G1: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
const G2: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 2);
const S1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const S2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(3);

fn star_g<'a>(mdb: &'a [MdbEntry], port: &str, group: Ipv4Addr) -> Option<&'a MdbEntry> {
    mdb.iter()
        .find(|e| e.port == port && e.group == group.to_string() && e.source.is_none())
}

fn s_g<'a>(
    mdb: &'a [MdbEntry],
    port: &str,
    group: Ipv4Addr,
    source: Ipv4Addr,
) -> Option<&'a MdbEntry> {
    let source = source.to_string();
    mdb.iter().find(|e| {
        e.port == port
            && e.group == group.to_string()
            && e.source.as_deref() == Some(source.as_str())
    })
}

#[test]
fn bridge_snoops_our_v3_report_with_source() {
    let lab = Lab::new();
    let br = SnoopingBridge::new(&lab, Snooping::default(), 1);
    let h = &br.hosts[0];
    assert!(
        star_g(&br.mdb(), &h.port, G1).is_none(),
        "group present before any report"
    );
    h.send_raw(&datagram(
        h.addr,
        ALL_V3_ROUTERS,
        &report(vec![record(RecordType::ModeIsInclude, G1, &[S1])]),
    ));
    let mdb = br.wait_mdb(WAIT, |m| {
        star_g(m, &h.port, G1).is_some() && s_g(m, &h.port, G1, S1).is_some()
    });
    let g = star_g(&mdb, &h.port, G1).expect("(*,G) entry");
    assert_eq!(g.filter_mode.as_deref(), Some("include"));
    assert_eq!(g.source_list, [S1.to_string()]);
    assert_eq!(g.state, "temp", "learnt entries are temporary");
    assert_eq!(s_g(&mdb, &h.port, G1, S1).expect("(S,G)").state, "temp");
}

/// With the default mcast_igmp_version 2 the bridge still reads v3 reports, but keeps no sources.
#[test]
fn bridge_in_v2_mode_keeps_only_the_group() {
    let lab = Lab::new();
    let br = SnoopingBridge::new(
        &lab,
        Snooping {
            igmp_version: 2,
            querier: false,
        },
        1,
    );
    let h = &br.hosts[0];
    h.send_raw(&datagram(
        h.addr,
        ALL_V3_ROUTERS,
        &report(vec![record(RecordType::AllowNewSources, G1, &[S1])]),
    ));
    let mdb = br.wait_mdb(WAIT, |m| star_g(m, &h.port, G1).is_some());
    let g = star_g(&mdb, &h.port, G1).expect("(*,G) entry");
    assert!(g.source_list.is_empty() && g.filter_mode.is_none(), "{g:?}");
    assert!(mdb.iter().all(|e| e.source.is_none()), "{mdb:#?}");
}

/// The bridge stops at the last record: our RFC 9279 TLVs after it leave both records intact.
#[test]
fn bridge_reads_every_record_before_our_extension() {
    let lab = Lab::new();
    let br = SnoopingBridge::new(&lab, Snooping::default(), 1);
    let h = &br.hosts[0];
    let mut tlvs = Vec::new();
    push_tlv(&mut tlvs, TYPE_NOOP, &[]).expect("TLV");
    push_tlv(&mut tlvs, TYPE_EXPERIMENTAL_MANYCAST, &[0xa5; 100]).expect("TLV");
    let msg = IgmpRepr::V3Report(ReportRepr {
        flags: 0x8000,
        records: vec![
            record(RecordType::AllowNewSources, G1, &[S1]),
            record(RecordType::AllowNewSources, G2, &[S2]),
        ],
        additional_data: tlvs,
    });
    h.send_raw(&datagram(h.addr, ALL_V3_ROUTERS, &msg));
    br.wait_mdb(WAIT, |m| {
        s_g(m, &h.port, G1, S1).is_some() && s_g(m, &h.port, G2, S2).is_some()
    });
}

/// Why the signature is not in Aux Data (decision 1): the bridge steps over a record by its
/// sources only, ignoring Aux Data Len, so the next record is read from the aux bytes. Here those
/// bytes look like a record for a third group, which the bridge then learns, while the real second
/// record is never seen. Our parser reads the same report correctly.
#[test]
fn bridge_misreads_records_after_aux_data() {
    let lab = Lab::new();
    let br = SnoopingBridge::new(&lab, Snooping::default(), 1);
    let h = &br.hosts[0];
    let (g3, s3) = (Ipv4Addr::new(232, 1, 1, 3), Ipv4Addr::new(10, 0, 0, 3));
    let decoy = record(RecordType::AllowNewSources, g3, &[s3]);
    let mut aux = vec![0; decoy.buffer_len()];
    decoy.emit(&mut aux);
    let first = GroupRecordRepr {
        aux_data: aux,
        ..record(RecordType::AllowNewSources, G1, &[S1])
    };
    let second = record(RecordType::AllowNewSources, G2, &[S2]);
    let bytes = datagram(h.addr, ALL_V3_ROUTERS, &report(vec![first, second]));

    let ours = parse_datagram(&bytes).expect("our parser");
    let IgmpRepr::V3Report(r) = &ours.igmp else {
        panic!("not a report")
    };
    assert_eq!(
        r.records.iter().map(|r| r.group).collect::<Vec<_>>(),
        [G1, G2]
    );

    h.send_raw(&bytes);
    // G3 comes from the last record the bridge reads, so once it is there the report is done.
    let mdb = br.wait_mdb(WAIT, |m| {
        s_g(m, &h.port, G1, S1).is_some() && s_g(m, &h.port, g3, s3).is_some()
    });
    assert!(
        star_g(&mdb, &h.port, G2).is_none(),
        "bridge learnt the real second record: {mdb:#?}"
    );
}
