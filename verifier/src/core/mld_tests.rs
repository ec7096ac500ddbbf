//! The core's MLDv2 path: verified IPv6 claims in the status and the metrics, refusals by
//! reason that change nothing, datagrams from `::` ignored, claims expiring on the tick.

use super::super::tests::{at, Lab, S1};
use super::super::Request;
use super::*;
use igmp_ext::fixtures::{Fixture, GROUP6, LINK6, NOW};
use igmp_ext::mld_join::build_mld_datagram;
use igmp_ext::{Reason, SliceSet6};

fn lab() -> (Lab, Fixture) {
    let mut lab = Lab::mfc();
    let mut links = LinkTable6::new();
    links.add(S1, LINK6);
    lab.router.set_links6(links);
    (lab, Fixture::dual_stack(2, SliceSet6::full()))
}

fn rejected(lab: &Lab, reason: Reason) -> u64 {
    lab.router.mld_metrics().rejected(reason)
}

#[test]
fn a_verified_mld_join_shows_in_the_status_and_the_metrics() {
    let (mut lab, f) = lab();
    lab.events();
    let units = SliceSet6::site_slicing(2);
    let d = f.datagram6(0, &f.claims6(&units[..2], 1, NOW, 1));
    lab.router
        .handle_mld_datagram(NOW, S1, &d, &f.key_source6());
    let events = lab.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::MldJoinAccepted { member, group, .. }
            if *member == f.members[0].id && *group == GROUP6)),
        "{events:?}"
    );
    let status = lab.status(NOW);
    let row = status
        .ownership
        .iter()
        .find(|r| r.group == GROUP6.to_string())
        .expect("the IPv6 claim is in the status");
    assert_eq!(row.member, f.members[0].id.0);
    assert_eq!(row.sender, f.addr6(0).to_string());
    assert_eq!(row.interface, "s1");
    assert_eq!(status.counters.mld_joins_accepted, 1);
    let metrics = status.render_metrics();
    assert!(
        metrics.contains("manycast_verifier_mld_joins_accepted_total 1\n"),
        "{metrics}"
    );
    // Its claim expires on the core's tick, one claim hold after the join.
    lab.router.handle_timeout(at(23));
    assert_eq!(lab.router.mld_ownership().groups().count(), 0);
    assert!(lab
        .events()
        .iter()
        .any(|e| matches!(e, Event::MldClaimsExpired { .. })));
}

#[test]
fn a_forged_mld_join_is_refused_by_reason_and_changes_nothing() {
    let (mut lab, f) = lab();
    let units = SliceSet6::site_slicing(2);
    let claims = f.claims6(&units[..1], 1, NOW, 1);
    // Member 2's signature over member 1's join (its certificate): bad-signature.
    let (good, other) = (f.datagram6(0, &claims), f.datagram6(1, &claims));
    let mut forged = good.clone();
    let at = forged.len() - 64;
    forged[at..].copy_from_slice(&other[other.len() - 64..]);
    let mld = forged[48..].to_vec();
    let forged = build_mld_datagram(f.addr6(0), &{
        let mut m = mld;
        igmp_ext::wire::mld::fill_checksum(
            &mut m,
            f.addr6(0),
            igmp_ext::wire::mld::ALL_MLDV2_ROUTERS,
        );
        m
    });
    lab.events();
    lab.router
        .handle_mld_datagram(NOW, S1, &forged, &f.key_source6());
    assert_eq!(rejected(&lab, Reason::BadSignature), 1);
    assert!(lab.events().iter().any(|e| matches!(
        e,
        Event::MldRejected {
            reason: Reason::BadSignature,
            ..
        }
    )));
    // On an interface without the signed LINK prefix: wrong-link.
    lab.router
        .handle_mld_datagram(NOW, S1 + 1, &good, &f.key_source6());
    assert_eq!(rejected(&lab, Reason::WrongLink), 1);
    assert_eq!(lab.router.mld_ownership().groups().count(), 0);
    let status = lab.status(NOW);
    assert!(!status
        .ownership
        .iter()
        .any(|r| r.group == GROUP6.to_string()));
    assert_eq!(status.counters.mld_joins_accepted, 0);
    assert!(status
        .render_metrics()
        .contains("manycast_verifier_mld_joins_rejected_total{reason=\"bad-signature\"} 1\n"));
}

/// Duplicate address detection (RFC 3810 §5.2.13) sends reports from `::`: ignored unread,
/// counted apart from refusals.
#[test]
fn datagrams_from_the_unspecified_address_are_ignored() {
    let (mut lab, f) = lab();
    let d = f.datagram6(0, &f.claims6(&SliceSet6::site_slicing(1)[..1], 1, NOW, 1));
    let mut from_nothing = d.clone();
    from_nothing[8..24].fill(0);
    lab.events();
    lab.router
        .handle_mld_datagram(NOW, S1, &from_nothing, &f.key_source6());
    assert_eq!(lab.router.mld_unspecified_ignored(), 1);
    assert_eq!(lab.router.mld_metrics().accepted_joins, 0);
    assert!(Reason::ALL.iter().all(|r| rejected(&lab, *r) == 0));
    assert!(lab.events().is_empty());
}

/// RFC 3810 §7: startup queries (Robustness of them, a Startup Query Interval apart), then one
/// every Query Interval, on each interface from its link-local address, as MLDv2 general
/// queries with hop limit 1 and the Router Alert.
#[test]
fn the_mld_querier_sends_startup_then_periodic_general_queries() {
    use igmp_ext::wire::ipv6::{Ipv6Packet, ROUTER_ALERT_MLD};
    use igmp_ext::wire::mld::{MldPacket, MldRepr, ALL_NODES};
    let (mut lab, _) = lab();
    let me: std::net::Ipv6Addr = "fe80::200".parse().expect("address");
    lab.router.set_mld_query_interfaces(vec![(S1, me)]);
    let cfg = super::super::tests::config().querier;
    let mut sent = Vec::new();
    let mut t = NOW;
    let end = NOW.saturating_add(cfg.query_interval * 2);
    while t <= end {
        lab.router.handle_timeout(t);
        while let Some(q) = lab.router.poll_transmit6() {
            sent.push((t, q));
        }
        t = t.saturating_add(crate::core::TICK);
    }
    // Startup: `robustness` queries a quarter interval apart; then every interval.
    let times: Vec<_> = sent
        .iter()
        .map(|(t, _)| t.as_millis() - NOW.as_millis())
        .collect();
    let si = cfg.startup_query_interval().as_millis() as u64;
    let qi = cfg.query_interval.as_millis() as u64;
    assert_eq!(&times[..2], &[0, si], "{times:?}");
    assert_eq!(times[2], si + qi, "{times:?}");
    for (_, q) in &sent {
        assert_eq!(q.ifindex, S1);
        let ip = Ipv6Packet::new_checked(&q.datagram).expect("IPv6");
        assert_eq!((ip.src_addr(), ip.dst_addr()), (me, ALL_NODES));
        assert_eq!(ip.hop_limit(), 1);
        assert_eq!(ip.router_alert(), Some(ROUTER_ALERT_MLD));
        let mld = MldPacket::new_checked(ip.payload()).expect("MLD");
        assert!(mld.verify_checksum(me, ALL_NODES));
        let Ok(MldRepr::Query(query)) = MldRepr::parse(&mld) else {
            panic!("a query")
        };
        assert!(query.group.is_unspecified() && query.v2.is_some());
    }
    assert_eq!(lab.router.mld_queries_built(), sent.len() as u64);
}

/// The IPv6 data plane follows the MLD ownership: a verified join writes the IPv6 nft table
/// (the member's link-local address on the join's interface), its expiry writes it without
/// the group, and a clean stop removes it.
#[test]
fn mld_ownership_changes_write_the_ipv6_table() {
    let (mut lab, f) = lab();
    lab.ops();
    let units = SliceSet6::site_slicing(2);
    let d = f.datagram6(0, &f.claims6(&units[..2], 1, NOW, 1));
    lab.router
        .handle_mld_datagram(NOW, S1, &d, &f.key_source6());
    let ops = lab.ops();
    let fwd = format!("fwd ip6 to {} device \"s1\"", f.addr6(0));
    assert!(
        matches!(&ops[..], [DataplaneOp::Netdev6Table(t)] if t.contains(&fwd)
            && t.contains(&format!("ip6 daddr {GROUP6} counter drop"))),
        "{ops:?}"
    );
    // The same join refreshed moves nothing: nothing written.
    let d = f.datagram6(0, &f.claims6(&units[..2], 1, at(5), 2));
    lab.router
        .handle_mld_datagram(at(5), S1, &d, &f.key_source6());
    lab.router.handle_timeout(at(6));
    assert!(
        !lab.ops()
            .iter()
            .any(|o| matches!(o, DataplaneOp::Netdev6Table(_))),
        "a refresh rewrites nothing"
    );
    lab.router.handle_timeout(at(40));
    let ops = lab.ops();
    assert!(
        matches!(&ops[..], [DataplaneOp::Netdev6Table(t)] if !t.contains(&GROUP6.to_string())),
        "{ops:?}"
    );
    lab.router.handle_request(at(41), Request::Shutdown);
    assert!(lab.ops().contains(&DataplaneOp::DeleteNetdev6Table));
}

/// Issue 15: an IPv6 table an earlier verifier left (SIGKILL, `keep_kernel_state`) keeps
/// steering through the adopt grace, as IPv4's does: joins heard meanwhile write nothing, the
/// grace's end replaces it whole with the rebuilt plan, and changes after that move elements.
/// Before, the first IPv6 claim rewrote it at once.
#[test]
fn an_ipv6_table_an_earlier_verifier_left_is_held_through_the_adopt_grace() {
    use super::super::tests::{config, setup};
    let mut left = setup(crate::core::NativeDataplane::Mroute);
    left.netdev6_table_left = true;
    let mut lab = Lab::new(config(), left);
    let mut links = LinkTable6::new();
    links.add(S1, LINK6);
    lab.router.set_links6(links);
    let f = Fixture::dual_stack(2, SliceSet6::full());
    assert!(lab
        .events()
        .iter()
        .any(|e| matches!(e, Event::Adopted { entries: 1, .. })));
    lab.ops();
    // Units 0 and 3 of four: the map's mask is the slicing's two bits.
    let units = SliceSet6::site_slicing(2);
    let d = f.datagram6(0, &f.claims6(&[units[0], units[3]], 1, NOW, 1));
    lab.router
        .handle_mld_datagram(NOW, S1, &d, &f.key_source6());
    lab.router.handle_timeout(at(2));
    let written = |ops: &[DataplaneOp]| {
        ops.iter()
            .filter(|o| matches!(o, DataplaneOp::Netdev6Table(_)))
            .count()
    };
    assert_eq!(written(&lab.ops()), 0, "held while members answer");
    // The grace (3 s in this config) ends: the rebuilt plan replaces the table whole.
    lab.router.handle_timeout(at(3));
    let ops = lab.ops();
    let fwd = format!("fwd ip6 to {} device \"s1\"", f.addr6(0));
    assert!(
        matches!(&ops[..], [DataplaneOp::Netdev6Table(t)] if t.rewrite && t.contains(&fwd)),
        "{ops:?}"
    );
    // Member 2 takes a unit no one had: an element update, marked as a re-point.
    let d = f.datagram6(1, &f.claims6(&units[2..3], 1, at(4), 2));
    lab.router
        .handle_mld_datagram(at(4), S1, &d, &f.key_source6());
    let first = lab.router.poll_op();
    assert_eq!(first, Some(DataplaneOp::Repoint { ops: 1 }));
    let op = lab.router.poll_op().expect("the update");
    assert!(
        matches!(&op, DataplaneOp::Netdev6Table(t) if !t.rewrite && t.contains("add element")),
        "{op:?}"
    );
    lab.router.handle_op_result(&op, true);
    // A clean stop removes it.
    lab.router.handle_request(at(5), Request::Shutdown);
    assert!(lab.ops().contains(&DataplaneOp::DeleteNetdev6Table));

    // Stopped cleanly during the grace: the adopted table is removed, though never written.
    let mut left = setup(crate::core::NativeDataplane::Mroute);
    left.netdev6_table_left = true;
    let mut lab = Lab::new(config(), left);
    lab.ops();
    lab.router.handle_request(at(1), Request::Shutdown);
    assert!(lab.ops().contains(&DataplaneOp::DeleteNetdev6Table));
}
