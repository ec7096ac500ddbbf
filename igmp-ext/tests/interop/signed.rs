//! Our signed slice joins (brief decision 1) against implementations we did not write: Wireshark's
//! dissector, scapy, the Linux bridge's IGMP snooping and the Linux IPv4/IGMP receive path; then
//! our own verifier fed with joins that crossed a real link.
//!
//! A signed join is a standard IGMPv3 report: E flag 0x8000 in the report flags, one
//! MODE_IS_INCLUDE (CHANGE_TO_INCLUDE for a leave) record for the service group listing the base
//! address of every include slice, then one RFC 9279 TLV of type 0xfffe with our signed extension.

use crate::harness::bridge::{MdbEntry, Snooping, SnoopingBridge};
use crate::harness::capture::IgmpReceiver;
use crate::harness::frames::parse_datagram;
use crate::harness::netns::Lab;
use crate::harness::{scapy, tshark};
use igmp_ext::ed25519_dalek::{Signature, Verifier};
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::join::{build_datagram, build_signed_report, signed_message, JoinClaims};
use igmp_ext::verify::LinkTable;
use igmp_ext::wire::extension::{parse_tlvs, REPORT_FLAG_EXTENSION, TYPE_EXPERIMENTAL_MANYCAST};
use igmp_ext::wire::igmp::{fill_checksum, IgmpRepr};
use igmp_ext::wire::record::RecordType;
use igmp_ext::{
    Accepted, JoinVerifier, MemberId, Reason, Slice, SliceEntry, SliceSet, VerifierConfig,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const GROUP: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
/// Bytes of the IPv4 header of every datagram we build: 20 plus Router Alert.
const IP_HEADER_LEN: usize = 24;

/// The joins every decoder must read: (name, claims by fixture member 0).
fn cases(f: &Fixture) -> Vec<(&'static str, JoinClaims)> {
    let claims = |slices: &[Slice], nonce| f.claims(slices, 7, NOW, nonce);
    // Fig 7C: 10/8 permitted except 10.1/16; only the include entry appears in the record.
    let mut with_exclude = claims(&[], 5);
    with_exclude.record_type = RecordType::ModeIsInclude;
    with_exclude.entries = vec![
        SliceEntry::include(Slice::prefix(Ipv4Addr::new(10, 0, 0, 0), 8)),
        SliceEntry::exclude(Slice::prefix(Ipv4Addr::new(10, 1, 0, 0), 16)),
    ];
    vec![
        ("one slice", claims(&[Slice::ALL], 1)),
        (
            "8 low-order slices",
            claims(&SliceSet::low_order_slicing(3), 2),
        ),
        ("leave", claims(&[], 3)),
        (
            "64 low-order slices",
            claims(&SliceSet::low_order_slicing(6), 4),
        ),
        ("include with exclude", with_exclude),
    ]
}

/// A signed join datagram from `sender`, signed by fixture member `i` for that address.
fn signed_from(f: &Fixture, i: usize, claims: &JoinClaims, sender: Ipv4Addr) -> Vec<u8> {
    let m = &f.members[i];
    let igmp = build_signed_report(claims, sender, &m.cert, &m.key).expect("join fits");
    build_datagram(sender, &igmp)
}

/// Where the record ends and our extension TLV begins, counted from the start of the datagram.
fn extension_offset(claims: &JoinClaims) -> usize {
    // IGMPv3 report header (8), group record header (8), 4 bytes per source.
    IP_HEADER_LEN + 8 + 8 + 4 * claims.record_sources().len()
}

/// The datagram's extension bytes, checked against our own parser: exactly one TLV of type
/// 0xfffe that runs to the end, whose signature verifies for the sending address.
fn extension_tlv<'a>(f: &Fixture, claims: &JoinClaims, datagram: &'a [u8]) -> &'a [u8] {
    let at = extension_offset(claims);
    let tlv = &datagram[at..];
    let parsed = parse_datagram(datagram).expect("our parser");
    let IgmpRepr::V3Report(r) = &parsed.igmp else {
        panic!("not a report")
    };
    assert_eq!(
        r.additional_data, tlv,
        "extension does not start where computed"
    );
    let tlvs = parse_tlvs(tlv).expect("extension TLVs");
    assert_eq!(tlvs.len(), 1);
    assert_eq!(tlvs[0].kind, TYPE_EXPERIMENTAL_MANYCAST);
    assert_eq!(tlvs[0].wire_len(), tlv.len());
    // The signature is the last 64 bytes and covers the sender's address (SPEC.md §3.3).
    let igmp = &datagram[IP_HEADER_LEN..];
    let (before, sig) = igmp.split_at(igmp.len() - 64);
    let sig = Signature::from_slice(sig).expect("64-byte signature");
    f.members[0]
        .key
        .verifying_key()
        .verify(&signed_message(parsed.ip.src_addr, before), &sig)
        .expect("signature verifies for the sender address");
    tlv
}

// ---------------------------------------------------------------------------------------------
// Wireshark

#[test]
fn tshark_decodes_our_signed_joins() {
    let f = Fixture::new(1);
    let cases = cases(&f);
    let datagrams: Vec<Vec<u8>> = cases.iter().map(|(_, c)| f.datagram(0, c)).collect();
    let decoded = tshark::decode(&datagrams);
    let sender = f.members[0].addr.to_string();
    for (((name, claims), bytes), d) in cases.iter().zip(&datagrams).zip(&decoded) {
        assert!(
            !d.has_problem(),
            "{name}: malformed={} expert={:?}",
            d.malformed,
            d.expert
        );
        assert_eq!(d.field("ip.src"), Some(sender.as_str()), "{name}");
        assert_eq!(d.field("ip.dst"), Some("224.0.0.22"), "{name}");
        assert_eq!(d.field("ip.ttl"), Some("1"), "{name}");
        assert_eq!(d.field("ip.dsfield"), Some("0xc0"), "{name}");
        assert_eq!(
            d.field("ip.options.routeralert"),
            Some("94:04:00:00"),
            "{name}"
        );
        assert_eq!(d.field("ip.checksum.status"), Some("1"), "{name}");
        assert_eq!(
            d.field("ip.len"),
            Some(bytes.len().to_string().as_str()),
            "{name}"
        );
        assert_eq!(d.field("igmp.version"), Some("3"), "{name}");
        assert_eq!(d.field("igmp.type"), Some("0x22"), "{name}");
        let checksum = u16::from_be_bytes([bytes[IP_HEADER_LEN + 2], bytes[IP_HEADER_LEN + 3]]);
        assert_eq!(
            d.field("igmp.checksum"),
            Some(format!("{checksum:#06x}").as_str()),
            "{name}"
        );
        assert_eq!(
            d.field("igmp.checksum.status"),
            Some("1"),
            "{name}: checksum good"
        );
        assert_eq!(d.field("igmp.num_grp_recs"), Some("1"), "{name}");
        assert_eq!(
            d.igmp_records(),
            [tshark::TsharkRecord {
                record_type: claims.record_type.into(),
                aux_data_len: 0,
                num_src: claims.record_sources().len(),
                maddr: GROUP,
                sources: claims.record_sources(),
            }],
            "{name}"
        );
        // Wireshark 4.0 has no field for RFC 9279: it shows the byte after the type and the
        // 16-bit Flags field both as "reserved" (so the E bit reads 80:00), and steps over the
        // TLV after the last record silently: no field, no expert item.
        assert_eq!(d.all("igmp.reserved"), ["00", "80:00"], "{name}");
        assert!(
            !d.fields
                .keys()
                .any(|k| k.starts_with("igmp.") && !KNOWN_IGMP_FIELDS.contains(&k.as_str())),
            "{name}: tshark decoded more than the record: {:?}",
            d.fields.keys().collect::<Vec<_>>()
        );
    }
    // The leave has no sources at all; the 64-slice join keeps every base address in order.
    assert_eq!(decoded[2].field("igmp.record_type"), Some("3"));
    assert!(decoded[2].all("igmp.saddr").is_empty());
    assert_eq!(decoded[3].all("igmp.saddr").len(), 64);
    assert_eq!(decoded[3].all("igmp.saddr")[63], "0.0.0.63");
}

/// Every `igmp.*` field tshark produced for a one-record v3 report.
const KNOWN_IGMP_FIELDS: [&str; 11] = [
    "igmp.version",
    "igmp.type",
    "igmp.reserved",
    "igmp.checksum",
    "igmp.checksum.status",
    "igmp.num_grp_recs",
    "igmp.record_type",
    "igmp.aux_data_len",
    "igmp.num_src",
    "igmp.maddr",
    "igmp.saddr",
];

// ---------------------------------------------------------------------------------------------
// scapy

#[test]
fn scapy_decodes_our_signed_joins_and_leaves_the_extension_as_trailing_bytes() {
    let f = Fixture::new(1);
    let cases = cases(&f);
    let datagrams: Vec<Vec<u8>> = cases.iter().map(|(_, c)| f.datagram(0, c)).collect();
    let decoded = scapy::decode(&datagrams);
    for (((name, claims), bytes), d) in cases.iter().zip(&datagrams).zip(&decoded) {
        let ip = &d["ip"];
        assert_eq!(ip["src"], json!(f.members[0].addr.to_string()), "{name}");
        assert_eq!(ip["dst"], json!("224.0.0.22"), "{name}");
        assert_eq!(ip["ttl"], json!(1), "{name}");
        assert_eq!(ip["tos"], json!(0xc0), "{name}");
        assert_eq!(ip["len"], json!(bytes.len()), "{name}");
        assert_eq!(ip["options"], json!(["IPOption_Router_Alert"]), "{name}");
        assert_eq!(ip["chksum"], ip["chksum_recomputed"], "{name}: IP checksum");

        let g = &d["igmp"];
        assert_eq!(g["class"], json!("IGMPv3"), "{name}: {g}");
        assert_eq!(g["type"], json!(0x22), "{name}");
        assert_eq!(g["mrcode"], json!(0), "{name}");
        let ours = u16::from_be_bytes([bytes[IP_HEADER_LEN + 2], bytes[IP_HEADER_LEN + 3]]);
        assert_eq!(g["chksum"], json!(ours), "{name}");
        assert_eq!(
            g["chksum_recomputed"],
            json!(ours),
            "{name}: scapy computes our checksum"
        );
        assert_eq!(g["chksum_verifies"], json!(true), "{name}");
        assert_eq!(g["flags"], json!(REPORT_FLAG_EXTENSION), "{name}");
        assert_eq!(g["numgrp"], json!(1), "{name}");
        let sources: Vec<String> = claims
            .record_sources()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            g["records"],
            json!([{
                "rtype": u8::from(claims.record_type),
                "auxdlen": 0,
                "numsrc": sources.len(),
                "maddr": GROUP.to_string(),
                "srcaddrs": sources,
            }]),
            "{name}"
        );
        // Scapy stops after the last record; what it leaves over is our TLV, byte for byte.
        let tlv = extension_tlv(&f, claims, bytes);
        assert_eq!(g["trailing"], json!(hex::encode(tlv)), "{name}");
        let value_len = u16::from_be_bytes([tlv[2], tlv[3]]);
        assert_eq!(tlv[..2], [0xff, 0xfe], "{name}");
        assert_eq!(usize::from(value_len), tlv.len() - 4, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Linux bridge snooping

const WAIT: Duration = Duration::from_secs(3);

fn star_g(mdb: &[MdbEntry], port: &str, group: Ipv4Addr) -> Option<MdbEntry> {
    mdb.iter()
        .find(|e| e.port == port && e.group == group.to_string() && e.source.is_none())
        .cloned()
}

/// The (S,G) sources on `port` for `group`.
fn s_g_sources(mdb: &[MdbEntry], port: &str, group: Ipv4Addr) -> BTreeSet<Ipv4Addr> {
    mdb.iter()
        .filter(|e| e.port == port && e.group == group.to_string())
        .filter_map(|e| e.source.as_deref())
        .map(|s| s.parse().expect("mdb source address"))
        .collect()
}

fn addr_set(v: &[String]) -> BTreeSet<Ipv4Addr> {
    v.iter().map(|s| s.parse().expect("mdb address")).collect()
}

fn group_gone(mdb: &[MdbEntry], group: Ipv4Addr) -> bool {
    !mdb.iter().any(|e| e.group == group.to_string())
}

/// A signed join for slices 1..=7 of 8 (base addresses 0.0.0.1 to 0.0.0.7) is learnt as an
/// INCLUDE (*,G) with those sources plus one (S,G) per source, on the group membership interval
/// (260 s). The signed leave (CHANGE_TO_INCLUDE {}) lowers every source timer to the last member
/// query time (2 × 1 s), and the bridge removes the group when they run out, about 2 s later.
#[test]
fn bridge_learns_signed_join_and_ages_it_out_after_signed_leave() {
    let lab = Lab::new();
    let br = SnoopingBridge::new(&lab, Snooping::default(), 1);
    let h = &br.hosts[0];
    let f = Fixture::new(1);
    let slices = &SliceSet::low_order_slicing(3)[1..];
    let join = f.claims(slices, 1, NOW, 1);
    let bases: BTreeSet<Ipv4Addr> = join.record_sources().into_iter().collect();
    assert_eq!(bases.len(), 7);

    h.send_raw(&signed_from(&f, 0, &join, h.addr));
    let mdb = br.wait_mdb(WAIT, |m| s_g_sources(m, &h.port, GROUP) == bases);
    let g = star_g(&mdb, &h.port, GROUP).expect("(*,G) entry");
    assert_eq!(g.filter_mode.as_deref(), Some("include"));
    assert_eq!(g.state, "temp");
    assert_eq!(addr_set(&g.source_list), bases);
    assert!(
        g.source_timers.iter().all(|&t| t > 250.0 && t <= 260.0),
        "source timers should start at the 260 s membership interval: {g:?}"
    );
    assert_eq!(
        g.timer,
        Some(0.0),
        "an INCLUDE (*,G) has no timer of its own"
    );
    assert!(mdb
        .iter()
        .filter(|e| e.group == GROUP.to_string())
        .all(|e| e.filter_mode.as_deref() == Some("include") && e.state == "temp"));

    let leave = f.claims(&[], 2, NOW, 2);
    h.send_raw(&signed_from(&f, 0, &leave, h.addr));
    let sent = Instant::now();
    // First the timers drop to at most the last member query time...
    let mdb = br.wait_mdb(WAIT, |m| {
        star_g(m, &h.port, GROUP).is_some_and(|g| g.source_timers.iter().all(|&t| t <= 2.0))
    });
    let g = star_g(&mdb, &h.port, GROUP).expect("(*,G) entry");
    assert_eq!(
        addr_set(&g.source_list),
        bases,
        "the leave keeps the sources until their timers run out"
    );
    // ...then the whole group goes once they run out.
    br.wait_mdb(WAIT, |m| group_gone(m, GROUP));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "group removed after {took:?}: sooner than the 2 s last member query time"
    );
}

/// What the bridge keeps of a record: not the base address 0.0.0.0 (slice 0 of every slicing,
/// and `Slice::ALL`) nor a multicast base (prefix slice 224/3), and no more than 32 sources per
/// port and group (PG_SRC_ENT_LIMIT in net/bridge/br_private.h), the first 32 in record order.
#[test]
fn bridge_drops_zero_and_multicast_bases_and_keeps_at_most_32_sources() {
    let lab = Lab::new();
    let br = SnoopingBridge::new(&lab, Snooping::default(), 1);
    let h = &br.hosts[0];
    let f = Fixture::new(1);
    let (g64, gprefix) = (Ipv4Addr::new(232, 1, 1, 64), Ipv4Addr::new(232, 1, 1, 3));

    let mut wide = f.claims(&SliceSet::low_order_slicing(6), 1, NOW, 1);
    wide.group = g64;
    assert_eq!(wide.record_sources().len(), 64);
    let mut prefix = f.claims(&SliceSet::prefix_slicing(3), 1, NOW, 2);
    prefix.group = gprefix;
    for claims in [&wide, &prefix] {
        h.send_raw(&signed_from(&f, 0, claims, h.addr));
    }

    // 0.0.0.0 is skipped, then 0.0.0.1 to 0.0.0.32 fill the 32 places; 0.0.0.33-63 are dropped.
    let kept_wide: BTreeSet<Ipv4Addr> = (1..=32).map(|i| Ipv4Addr::new(0, 0, 0, i)).collect();
    // 0.0.0.0 and 224.0.0.0 are skipped; 32.0.0.0 to 192.0.0.0 are kept.
    let kept_prefix: BTreeSet<Ipv4Addr> = (1..=6).map(|i| Ipv4Addr::new(32 * i, 0, 0, 0)).collect();
    let mdb = br.wait_mdb(WAIT, |m| {
        s_g_sources(m, &h.port, g64) == kept_wide && s_g_sources(m, &h.port, gprefix) == kept_prefix
    });
    for (group, kept) in [(g64, &kept_wide), (gprefix, &kept_prefix)] {
        let g = star_g(&mdb, &h.port, group).expect("(*,G) entry");
        assert_eq!(g.filter_mode.as_deref(), Some("include"), "{group}");
        assert_eq!(&addr_set(&g.source_list), kept, "{group}");
    }
}

/// A join for `Slice::ALL` lists the single source 0.0.0.0, which the bridge does not keep: it
/// learns an INCLUDE (*,G) with no sources and no timer. The signed leave then has no source
/// timer to lower, so that entry outlives the leave. It goes only once it has a source that can
/// expire: a later join for a slice with a keepable base, then a leave, removes it in ~2 s.
#[test]
fn bridge_keeps_a_sourceless_entry_for_slice_all_after_the_leave() {
    let lab = Lab::new();
    let br = SnoopingBridge::new(&lab, Snooping::default(), 1);
    let h = &br.hosts[0];
    let f = Fixture::new(1);
    let join = f.claims(&[Slice::ALL], 1, NOW, 1);
    assert_eq!(join.record_sources(), [Ipv4Addr::UNSPECIFIED]);
    h.send_raw(&signed_from(&f, 0, &join, h.addr));
    let mdb = br.wait_mdb(WAIT, |m| star_g(m, &h.port, GROUP).is_some());
    let expect_sourceless = |mdb: &[MdbEntry]| {
        let g = star_g(mdb, &h.port, GROUP).expect("(*,G) entry");
        assert_eq!(g.filter_mode.as_deref(), Some("include"), "{g:?}");
        assert!(g.source_list.is_empty(), "{g:?}");
        assert_eq!(g.timer, Some(0.0), "{g:?}");
        assert_eq!(g.state, "temp", "{g:?}");
        assert!(s_g_sources(mdb, &h.port, GROUP).is_empty(), "{mdb:#?}");
    };
    expect_sourceless(&mdb);

    h.send_raw(&signed_from(&f, 0, &f.claims(&[], 2, NOW, 2), h.addr));
    // Longer than the 2 s in which the leave removes a group that has sources.
    std::thread::sleep(Duration::from_millis(2500));
    expect_sourceless(&br.mdb());

    let odd = f.claims(&[Slice::new(1, 1)], 3, NOW, 3);
    h.send_raw(&signed_from(&f, 0, &odd, h.addr));
    let mdb = br.wait_mdb(WAIT, |m| {
        s_g_sources(m, &h.port, GROUP) == BTreeSet::from([Ipv4Addr::new(0, 0, 0, 1)])
    });
    assert_eq!(
        star_g(&mdb, &h.port, GROUP).map(|g| g.source_list),
        Some(vec!["0.0.0.1".to_owned()])
    );
    h.send_raw(&signed_from(&f, 0, &f.claims(&[], 4, NOW, 4), h.addr));
    br.wait_mdb(WAIT, |m| group_gone(m, GROUP));
}

// ---------------------------------------------------------------------------------------------
// The kernel's receive path

/// `/proc/net/snmp` as "Ip.InDelivers" → value.
fn snmp(text: &str) -> BTreeMap<String, u64> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = BTreeMap::new();
    for pair in lines.chunks_exact(2) {
        let (names, values) = (pair[0], pair[1]);
        let mut n = names.split_whitespace();
        let mut v = values.split_whitespace();
        let proto = n
            .next()
            .unwrap_or_default()
            .trim_end_matches(':')
            .to_owned();
        assert_eq!(
            v.next().map(|p| p.trim_end_matches(':')),
            Some(proto.as_str())
        );
        for (k, val) in n.zip(v) {
            out.insert(format!("{proto}.{k}"), val.parse().unwrap_or(0));
        }
    }
    out
}

/// Waits for the next datagram from `from` on `rx`.
fn recv_from(rx: &IgmpReceiver, from: Ipv4Addr, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    loop {
        match rx.recv_until(deadline) {
            Some(d) if d.len() >= 20 && d[12..16] == from.octets() => return d,
            Some(_) => {}
            None => panic!("no datagram from {from} within {timeout:?}"),
        }
    }
}

/// The Linux host side does not parse IGMPv3 reports at all (igmp_rcv checks the checksum, then
/// ignores type 0x22; v3 has no report suppression), and the multicast router side is a userspace
/// daemon reading a raw socket. So the kernel's part is the IPv4 receive path: our header (Router
/// Alert, TTL 1, ToS 0xc0, DF) is accepted, counted as delivered with no header error (a copy with
/// a broken Router Alert shows that the counter would see one), handed to raw IGMP sockets
/// unchanged, and leaves the receiving host's own membership of the same group as it was. (The
/// only kernel code that reads the records is the bridge, tested above.)
#[test]
fn kernel_delivers_signed_joins_unchanged_and_keeps_its_own_membership() {
    let lab = Lab::new();
    let pair = lab.pair();
    let peer_conf = |k: &str| format!("net.ipv4.conf.{}.{k}", pair.peer_if);
    pair.peer.sysctl(&peer_conf("force_igmp_version"), "3");
    pair.peer
        .sysctl(&peer_conf("igmpv3_unsolicited_report_interval"), "10");
    let rx = IgmpReceiver::open(&pair.peer, pair.peer_addr);
    // The peer is itself a member of the service group, for one source.
    let member = pair.peer.run(|| {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .expect("UDP socket");
        s.join_ssm_v4(&Ipv4Addr::new(10, 0, 0, 1), &GROUP, &pair.peer_addr)
            .expect("IP_ADD_SOURCE_MEMBERSHIP");
        s
    });
    // Let the peer's own state-change reports (2 × up to 10 ms) finish before the snapshot.
    std::thread::sleep(Duration::from_millis(200));
    let igmp_before = pair.peer.proc_net("igmp");
    assert!(
        igmp_before.contains("010101E8"),
        "peer is not a member of {GROUP}:\n{igmp_before}"
    );
    let snmp_before = snmp(&pair.peer.proc_net("snmp"));

    let f = Fixture::new(1);
    let datagrams: Vec<Vec<u8>> = cases(&f)
        .iter()
        .map(|(_, c)| signed_from(&f, 0, c, pair.host_addr))
        .collect();
    for d in &datagrams {
        pair.host.send_raw(pair.host_if, d);
        let got = recv_from(&rx, pair.host_addr, Duration::from_secs(2));
        // The sending kernel filled in the IP ID; everything else arrives as we built it.
        let mut sent = d.clone();
        sent[4..6].copy_from_slice(&got[4..6]);
        sent[10..12].copy_from_slice(&got[10..12]);
        assert_eq!(hex::encode(&got), hex::encode(&sent));
        assert!(parse_datagram(&got).expect("received datagram").checksum_ok);
    }

    // Control: the same join with a Router Alert option of impossible length 3 is refused by
    // the IPv4 layer as a header error and never reaches the socket; the join sent after it does.
    let mut bad_option = datagrams[0].clone();
    assert_eq!(bad_option[20..22], [0x94, 0x04], "Router Alert option");
    bad_option[21] = 3;
    pair.host.send_raw(pair.host_if, &bad_option);
    pair.host.send_raw(pair.host_if, &datagrams[0]);
    let got = recv_from(&rx, pair.host_addr, Duration::from_secs(2));
    assert_eq!(got[21], 4, "the datagram with the bad option was delivered");

    let snmp_after = snmp(&pair.peer.proc_net("snmp"));
    let delta = |k: &str| snmp_after[k] - snmp_before[k];
    // Our joins, then the bad copy and the join after it.
    let n = u64::try_from(datagrams.len()).expect("few");
    assert_eq!(
        delta("Ip.InReceives"),
        n + 2,
        "{snmp_before:?}\n{snmp_after:?}"
    );
    assert_eq!(delta("Ip.InDelivers"), n + 1);
    assert_eq!(delta("Ip.InHdrErrors"), 1);
    for k in ["Ip.InAddrErrors", "Ip.InUnknownProtos", "Ip.InDiscards"] {
        assert_eq!(delta(k), 0, "{k}");
    }
    assert_eq!(
        pair.peer.proc_net("igmp"),
        igmp_before,
        "the peer's IGMP state changed on hearing our reports"
    );
    drop(member);
}

// ---------------------------------------------------------------------------------------------
// Our verifier, fed from a real socket

/// Member 0 sends a signed join for 8 low-order slices from its fixture address across a veth;
/// the router namespace's raw IGMP socket receives it and our verifier, told the real ifindex,
/// accepts it. A copy with one epoch byte flipped (checksum recomputed) fails the signature, and
/// the original sent again is a duplicate.
#[test]
fn verifier_checks_signed_joins_received_on_a_raw_socket() {
    let f = Fixture::new(2);
    let member = &f.members[0];
    let router_addr = Ipv4Addr::new(10, 0, 0, 254);
    let lab = Lab::new();
    let pair = lab.pair_with(member.addr, router_addr, 24);
    let ifindex = pair.peer.ifindex(pair.peer_if);
    let rx = IgmpReceiver::open(&pair.peer, router_addr);
    let mut links = LinkTable::new();
    links.add(ifindex, Slice::prefix(Ipv4Addr::new(10, 0, 0, 0), 24));
    let mut verifier = JoinVerifier::new(VerifierConfig::default(), links);
    let keys = f.key_source();

    let slices = SliceSet::low_order_slicing(3);
    let claims = f.claims(&slices, 42, NOW, 0x1234);
    let now = claims.timestamp;
    let original = f.datagram(0, &claims);

    // One byte of the epoch flipped, the IGMP checksum made right again.
    let epoch_at = extension_offset(&claims) + 4 + 1 + 4 + 9 * claims.entries.len() + 4;
    assert_eq!(
        original[epoch_at - 4..epoch_at],
        [0, 2, 0, 8],
        "epoch sub-TLV"
    );
    assert_eq!(original[epoch_at..epoch_at + 8], 42u64.to_be_bytes());
    let mut tampered = original.clone();
    tampered[epoch_at + 7] ^= 0x01;
    fill_checksum(&mut tampered[IP_HEADER_LEN..]);
    assert!(parse_datagram(&tampered).expect("still parses").checksum_ok);

    let mut exchange = |d: &[u8]| {
        pair.host.send_raw(pair.host_if, d);
        let got = recv_from(&rx, member.addr, Duration::from_secs(2));
        assert_eq!(got.len(), d.len(), "raw socket delivers the whole datagram");
        verifier.handle_datagram(now, ifindex, &got, &keys)
    };
    let reason = |r: Result<Accepted, igmp_ext::Rejection>| match r {
        Err(e) => e.reason,
        Ok(a) => panic!("accepted: {a:?}"),
    };

    // The forgery first: it must not poison the replay cache for the real join.
    assert_eq!(reason(exchange(&tampered)), Reason::BadSignature);
    let Ok(Accepted::Join { join, change, .. }) = exchange(&original) else {
        panic!("join not accepted")
    };
    assert_eq!(join.member(), MemberId(1));
    assert_eq!(join.sender(), member.addr);
    assert_eq!(join.ifindex(), ifindex);
    assert_eq!(join.group(), GROUP);
    assert_eq!(join.epoch().0, 42);
    assert_eq!(join.timestamp(), NOW);
    assert_eq!(join.record_type(), RecordType::ModeIsInclude);
    let expected: SliceSet = slices.iter().copied().collect();
    assert_eq!(join.slices(), &expected);
    assert!(
        join.slices().is_full(),
        "8 low-order slices cover everything"
    );
    assert_eq!(change.gained, vec![(MemberId(1), expected)]);
    assert!(change.lost.is_empty());

    assert_eq!(reason(exchange(&original)), Reason::Duplicate);
    // The nonce is now known, and the duplicate check comes before the signature check.
    assert_eq!(reason(exchange(&tampered)), Reason::Duplicate);
    let m = verifier.metrics();
    assert_eq!(m.accepted_joins, 1);
    assert_eq!(m.rejected(Reason::BadSignature), 1);
    assert_eq!(m.rejected(Reason::Duplicate), 2);
}
