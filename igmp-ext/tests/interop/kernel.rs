//! The Linux kernel as the IGMPv3 host: the reports it sends for source-specific joins and leaves
//! and its answer to a query we built, all parsed with our checked views.

use crate::harness::capture::IgmpReceiver;
use crate::harness::frames::{datagram, emit_igmp, parse_datagram};
use crate::harness::netns::{Lab, Pair};
use igmp_ext::wire::igmp::{IgmpRepr, QueryRepr, QueryV3Fields, ALL_SYSTEMS, ALL_V3_ROUTERS};
use igmp_ext::wire::ipv4::{PROTOCOL_IGMP, TOS_INTERNETWORK_CONTROL};
use igmp_ext::wire::record::{GroupRecordRepr, RecordType};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

const GROUP: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
const S1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const S2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than the whole retransmission window set by `kernel_host` (2 × 50 ms), so that a phase
/// ends only after the kernel's repeats of the same change.
const QUIET: Duration = Duration::from_millis(300);

/// Checks what every kernel-sent report must satisfy and returns its records for GROUP.
fn check_report(bytes: &[u8]) -> Vec<GroupRecordRepr<Ipv4Addr>> {
    let p = parse_datagram(bytes).unwrap_or_else(|e| panic!("{e}: {}", hex::encode(bytes)));
    assert_eq!(p.ip.protocol, PROTOCOL_IGMP);
    assert_eq!(p.ip.ttl, 1, "TTL");
    assert_eq!(p.ip.tos, TOS_INTERNETWORK_CONTROL, "ToS");
    assert!(p.ip.router_alert, "Router Alert missing");
    assert_eq!(p.ip.dst_addr, ALL_V3_ROUTERS);
    assert!(p.checksum_ok, "IGMP checksum");
    // Our emitter must reproduce the kernel's bytes exactly, checksum included.
    assert_eq!(
        hex::encode(emit_igmp(&p.igmp)),
        hex::encode(&p.igmp_bytes),
        "re-emitted report differs"
    );
    let IgmpRepr::V3Report(r) = p.igmp else {
        panic!("not a v3 report: {:?}", p.igmp)
    };
    assert_eq!(r.flags, 0);
    assert!(r.additional_data.is_empty());
    r.records
        .into_iter()
        .filter(|rec| rec.group == GROUP)
        .collect()
}

fn records(reports: &[Vec<u8>]) -> Vec<GroupRecordRepr<Ipv4Addr>> {
    reports.iter().flat_map(|d| check_report(d)).collect()
}

fn sources_where(reports: &[Vec<u8>], pick: impl Fn(RecordType) -> bool) -> BTreeSet<Ipv4Addr> {
    records(reports)
        .into_iter()
        .filter(|r| pick(r.record_type))
        .flat_map(|r| r.sources)
        .collect()
}

/// A host/peer pair where the host kernel speaks IGMPv3 and retransmits quickly.
fn kernel_host(lab: &Lab) -> Pair {
    let pair = lab.pair();
    let conf = |k: &str| format!("net.ipv4.conf.{}.{k}", pair.host_if);
    pair.host.sysctl(&conf("force_igmp_version"), "3");
    // State-change retransmissions go out at random within this interval (default 1000 ms).
    pair.host
        .sysctl(&conf("igmpv3_unsolicited_report_interval"), "50");
    pair
}

fn udp_socket(pair: &Pair) -> Socket {
    pair.host
        .run(|| Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("UDP socket"))
}

#[test]
fn kernel_ssm_join_and_leave_reports() {
    let lab = Lab::new();
    let pair = kernel_host(&lab);
    let rx = IgmpReceiver::open(&pair.peer, pair.peer_addr);
    let sock = udp_socket(&pair);
    let both: BTreeSet<Ipv4Addr> = [S1, S2].into();

    sock.join_ssm_v4(&S1, &GROUP, &pair.host_addr)
        .expect("IP_ADD_SOURCE_MEMBERSHIP S1");
    sock.join_ssm_v4(&S2, &GROUP, &pair.host_addr)
        .expect("IP_ADD_SOURCE_MEMBERSHIP S2");
    let joins = rx.collect_from(pair.host_addr, TIMEOUT, QUIET, |got| {
        sources_where(got, RecordType::is_include_like) == both
    });
    // Robustness Variable 2: each state change is sent, then repeated once (RFC 3376 §8.1).
    assert!(
        joins.len() >= 2,
        "expected a retransmission, got {} report(s)",
        joins.len()
    );
    for r in records(&joins) {
        assert!(r.record_type.is_include_like(), "join sent {r:?}");
        assert!(
            r.sources.iter().all(|s| both.contains(s)),
            "join sent {r:?}"
        );
    }

    sock.leave_ssm_v4(&S1, &GROUP, &pair.host_addr)
        .expect("IP_DROP_SOURCE_MEMBERSHIP S1");
    sock.leave_ssm_v4(&S2, &GROUP, &pair.host_addr)
        .expect("IP_DROP_SOURCE_MEMBERSHIP S2");
    let leaves = rx.collect_from(pair.host_addr, TIMEOUT, QUIET, |got| {
        sources_where(got, |t| t == RecordType::BlockOldSources) == both
    });
    assert!(
        leaves.len() >= 2,
        "expected a retransmission, got {} report(s)",
        leaves.len()
    );
    for r in records(&leaves) {
        assert_eq!(
            r.record_type,
            RecordType::BlockOldSources,
            "leave sent {r:?}"
        );
        assert!(
            r.sources.iter().all(|s| both.contains(s)),
            "leave sent {r:?}"
        );
    }
}

#[test]
fn kernel_answers_our_general_query_with_current_state() {
    let lab = Lab::new();
    let pair = kernel_host(&lab);
    let rx = IgmpReceiver::open(&pair.peer, pair.peer_addr);
    let sock = udp_socket(&pair);
    sock.join_ssm_v4(&S1, &GROUP, &pair.host_addr)
        .expect("IP_ADD_SOURCE_MEMBERSHIP S1");
    sock.join_ssm_v4(&S2, &GROUP, &pair.host_addr)
        .expect("IP_ADD_SOURCE_MEMBERSHIP S2");
    let both: BTreeSet<Ipv4Addr> = [S1, S2].into();
    // Let the state-change reports finish so that what follows can only be the query's answer.
    rx.collect_from(pair.host_addr, TIMEOUT, QUIET, |got| {
        sources_where(got, RecordType::is_include_like) == both
    });

    let query = IgmpRepr::Query(QueryRepr {
        // Answer within 0.5 s (units of 1/10 s).
        max_resp_code: 5,
        group: Ipv4Addr::UNSPECIFIED,
        v3: Some(QueryV3Fields {
            flags: 0,
            suppress: false,
            qrv: 2,
            qqic: 125,
            sources: vec![],
            additional_data: vec![],
        }),
    });
    pair.peer
        .send_raw(pair.peer_if, &datagram(pair.peer_addr, ALL_SYSTEMS, &query));
    let answer = rx.collect_from(pair.host_addr, TIMEOUT, Duration::ZERO, |got| {
        sources_where(got, |t| t == RecordType::ModeIsInclude) == both
    });
    // Current-state records only: no state changed, so nothing else may appear.
    for r in records(&answer) {
        assert_eq!(
            r.record_type,
            RecordType::ModeIsInclude,
            "answer held {r:?}"
        );
    }
}
