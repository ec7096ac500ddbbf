//! Issue 13, items 8 and 9, at the core: what an on-link host's queries and a member's odd
//! slice mask can and cannot do. Shares `tests`' lab.

use super::tests::{at, config, host_report, setup, Lab, C0, OUR_S1, S1, VIP};
use super::*;
use crate::plan::vip::VipSpec;
use crate::querier::Role;
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::wire::igmp::{QueryRepr, QueryV3Fields};
use igmp_ext::wire::ipv4::{Ipv4Repr, PROTOCOL_IGMP, TOS_INTERNETWORK_CONTROL};
use igmp_ext::wire::record::RecordType;
use igmp_ext::Slice;

/// A query for `group` (0.0.0.0: general) from `src` to `dst`, with the given TTL and Router
/// Alert: what an on-link host can forge.
fn query_with(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    router_alert: bool,
    group: Ipv4Addr,
) -> Vec<u8> {
    let igmp = IgmpRepr::Query(QueryRepr {
        max_resp_code: 10,
        group,
        v3: Some(QueryV3Fields {
            flags: 0,
            suppress: false,
            qrv: 2,
            qqic: 10,
            sources: Vec::new(),
            additional_data: Vec::new(),
        }),
    });
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: PROTOCOL_IGMP,
        ttl,
        tos: TOS_INTERNETWORK_CONTROL,
        router_alert,
        payload_len: igmp.buffer_len(),
    };
    let mut datagram = vec![0u8; ip.buffer_len()];
    ip.emit(&mut datagram);
    igmp.emit(&mut datagram[ip.header_len()..]);
    datagram
}

/// Issue 13, item 8: a query that breaks RFC 3376 §4 (unicast, TTL above 1, no Router Alert,
/// a source off the link or unspecified), or a well-formed one from a router nobody configured,
/// never makes the verifier a non-querier: it keeps querying.
#[test]
fn forged_or_untrusted_queries_never_silence_the_verifier() {
    let mut lab = Lab::mfc();
    lab.transmits();
    lab.events();
    let all = Ipv4Addr::new(224, 0, 0, 1);
    let any = Ipv4Addr::UNSPECIFIED;
    let low = Ipv4Addr::new(10, 0, 0, 1);
    let forged = [
        ("unicast", query_with(low, OUR_S1, 1, true, any)),
        ("ttl 2", query_with(low, all, 2, true, any)),
        ("no router alert", query_with(low, all, 1, false, any)),
        (
            "off-link source",
            query_with(Ipv4Addr::new(9, 9, 9, 9), all, 1, true, any),
        ),
        ("unspecified source", query_with(any, all, 1, true, any)),
        (
            "group-specific to 224.0.0.1",
            query_with(low, all, 1, true, Ipv4Addr::new(239, 1, 1, 1)),
        ),
        ("well-formed, untrusted", query_with(low, all, 1, true, any)),
    ];
    for (what, d) in &forged {
        lab.router.handle_datagram(NOW, Some(S1), d, &lab.keys);
        assert_eq!(
            lab.router.querier().role(S1),
            Some(Role::Querier),
            "{what} query made us a non-querier"
        );
    }
    assert!(lab
        .events()
        .iter()
        .all(|e| !matches!(e, Event::RoleChanged { .. })));
    // We still send our general queries on s1.
    lab.router.handle_timeout(at(11));
    assert!(lab.transmits().iter().any(|t| t.ifindex == S1));
    assert_eq!(
        lab.status(at(11)).counters.queries_ignored,
        forged.len() as u64
    );
}

/// Issue 13, item 8: a group-specific query never shortens a verified claim's life (it lives on
/// its signed hold), even from the trusted querier; from anyone else it does not even lower a
/// plain group's listener timer.
#[test]
fn group_specific_queries_never_expire_a_verified_claim() {
    let trusted = Ipv4Addr::new(10, 0, 0, 1);
    let mut cfg = config();
    cfg.querier.trusted_queriers = vec![trusted];
    let mut lab = Lab::new(cfg, setup(NativeDataplane::Mroute));
    let group = lab.fixture.group;
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    // A plain group with a listener on c0.
    let plain = Ipv4Addr::new(239, 1, 2, 3);
    let join = host_report(plain, RecordType::ModeIsExclude);
    lab.router.handle_datagram(NOW, Some(C0), &join, &lab.keys);
    // The trusted router takes over on s1; an attacker on c0 (lower than our 10.1.0.1).
    let general = Ipv4Addr::new(224, 0, 0, 1);
    let any = Ipv4Addr::UNSPECIFIED;
    lab.router.handle_datagram(
        NOW,
        Some(S1),
        &query_with(trusted, general, 1, true, any),
        &lab.keys,
    );
    assert_eq!(lab.router.querier().role(S1), Some(Role::NonQuerier));
    lab.events();
    let t = at(1);
    lab.router.handle_datagram(
        t,
        Some(S1),
        &query_with(trusted, group, 1, true, group),
        &lab.keys,
    );
    lab.router.handle_datagram(
        t,
        Some(C0),
        &query_with(Ipv4Addr::new(10, 1, 0, 0), plain, 1, true, plain),
        &lab.keys,
    );
    // Past the Last Member Query Time (2 s), well inside the claim hold (22 s) and the GMI.
    for s in 2..=5 {
        lab.router.handle_timeout(at(s));
    }
    let events = lab.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::GroupExpired { .. } | Event::ClaimsExpired { .. })),
        "{events:?}"
    );
    assert_eq!(
        lab.router
            .verifier
            .ownership()
            .owner_of(group, Ipv4Addr::new(198, 51, 100, 7))
            .map(|(m, _)| m),
        Some(MemberId(1))
    );
    assert!(lab.router.querier().groups(C0).any(|(g, _)| g == plain));
}

/// Issue 13, item 9: a claim whose slice mask the nft map cannot express (17 bits here) is left
/// out of the map, counted, and blocks nothing: the other member's steering is written, and so
/// is the later failover, on both nft data planes (native netdev and VIP).
#[test]
fn a_wide_mask_claim_never_freezes_the_nft_maps() {
    let mut cfg = config();
    let group = Fixture::new(1).group;
    cfg.vips = vec![VipSpec {
        address: VIP,
        group,
        pin: false,
    }];
    let mut lab = Lab::new(cfg, setup(NativeDataplane::Nft));
    lab.ops();
    lab.events();
    lab.join(NOW, 0, &[Slice::new(0, 1)], 1, S1);
    lab.join(NOW, 1, &[Slice::new(1, 0x1_ffff)], 1, S1);
    let ops = lab.ops();
    // What the ops wrote to each table (a change moves map elements only, issue 16 item 3).
    let netdev = |ops: &[DataplaneOp]| {
        ops.iter()
            .filter_map(|op| match op {
                DataplaneOp::NetdevTable(t) => Some(t.text.clone()),
                _ => None,
            })
            .reduce(|a, b| a + &b)
    };
    let vip = |ops: &[DataplaneOp]| {
        ops.iter()
            .filter_map(|op| match op {
                DataplaneOp::Vip(c) => Some(c.ruleset.text.clone()),
                _ => None,
            })
            .reduce(|a, b| a + &b)
    };
    let table = netdev(&ops).expect("the native table is written");
    assert!(table.contains("fwd ip to 10.0.0.2 "), "{table}");
    assert!(
        !table.contains("10.0.0.3"),
        "the wide claim is left out: {table}"
    );
    let change = vip(&ops).expect("the VIP map is written");
    assert!(change.contains("0x4d430001"), "{change}");
    assert!(!change.contains("0x4d430002"), "{change}");
    // Member 1 fails (leaves): both maps follow at once.
    lab.join(at(1), 0, &[], 1, S1);
    let ops = lab.ops();
    let table = netdev(&ops).expect("the failover reaches the native table");
    assert!(!table.contains("10.0.0.2"), "{table}");
    let change = vip(&ops).expect("the failover reaches the VIP map");
    assert!(!change.contains("0x4d430001"), "{change}");
    assert!(lab.status(at(1)).counters.claims_left_out >= 1);
}

/// Issue 13 (found by the insider half of `make bench B=attack`): the router refused a revoked
/// member's joins from the next keystore refresh on, but kept its claim until the hold ran out
/// (21 s in the bench), steering its slices to a member the keystore had revoked; a member
/// certified by a retired group key kept its claim the same way. Claims are now checked
/// against the keys (`handle_keys`, once a second in the daemon).
#[test]
fn a_revoked_member_or_a_retired_issuer_loses_its_claims_at_the_next_key_check() {
    use igmp_ext::verify::{GroupKey, GroupKeys};
    use igmp_ext::KeyId;
    use std::collections::HashMap;
    use std::sync::Arc;
    let mut lab = Lab::mfc();
    let group = lab.fixture.group;
    lab.join(NOW, 0, &[Slice::new(0, 1)], 1, S1);
    lab.join(NOW, 1, &[Slice::new(1, 1)], 1, S1);
    lab.router.handle_keys(at(1), &lab.keys);
    assert_eq!(lab.holders(), [MemberId(1), MemberId(2)], "same keys");
    lab.events();

    let mut revoked = (*lab.keys[&group]).clone();
    let m1 = KeyId::of(&lab.fixture.members[0].key.verifying_key());
    revoked.revoked_members.push(m1);
    lab.keys = HashMap::from([(group, Arc::new(revoked))]);
    lab.router.handle_keys(at(2), &lab.keys);
    assert_eq!(lab.holders(), [MemberId(2)]);
    let events = lab.events();
    assert!(
        events.iter().any(|e| matches!(e,
            Event::ClaimsRevoked { lost, .. } if lost.iter().any(|(m, _)| *m == MemberId(1)))),
        "{events:?}"
    );
    // Its joins are refused as revoked.
    lab.join(at(2), 0, &[Slice::new(0, 1)], 1, S1);
    assert_eq!(lab.holders(), [MemberId(2)]);

    let rotated = GroupKeys {
        group,
        keys: vec![GroupKey::new(
            igmp_ext::ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key(),
        )],
        revoked_members: Vec::new(),
    };
    let keys = HashMap::from([(group, Arc::new(rotated))]);
    lab.router.handle_keys(at(3), &keys);
    assert!(lab.holders().is_empty(), "the issuer was retired");
}

/// The Max Resp Codes of the group-specific queries for `group` in `transmits`.
fn specific_queries(transmits: &[Transmit], group: Ipv4Addr) -> Vec<u8> {
    transmits
        .iter()
        .filter(|t| t.dst == group)
        .filter_map(|t| {
            let ip = Ipv4Packet::new_checked(&t.datagram[..]).ok()?;
            let igmp = igmp_ext::wire::igmp::IgmpPacket::new_checked(ip.payload()).ok()?;
            match IgmpRepr::parse(&igmp).ok()? {
                IgmpRepr::Query(q) if q.group == group => Some(q.max_resp_code),
                _ => None,
            }
        })
        .collect()
}

/// Issue 13 (found by the insider bench, `revoke_units_lost` 19, `revoke_gap_p99_ms` 2163): a
/// compromised member joined its units at epoch u64::MAX, so the honest members' joins for
/// them at the next epoch were refused as a slice conflict. The key check dropped its claim a
/// second after the revocation, and the units then stayed unowned until each honest member's
/// next unprompted report (refresh 10 s). A drop the members did not ask for (revoked,
/// retired, expired) now makes the querier ask the group to report again at once, with a
/// 100 ms Max Resp Time.
#[test]
fn a_revoked_claim_makes_the_group_report_again_at_once() {
    use igmp_ext::KeyId;
    use std::collections::HashMap;
    use std::sync::Arc;
    let mut lab = Lab::mfc();
    let group = lab.fixture.group;
    lab.join(NOW, 0, &[Slice::new(0, 1)], u64::MAX, S1);
    lab.join(NOW, 1, &[Slice::new(1, 1)], 1, S1);
    // The next epoch gives member 2 everything: refused, the inflated claim is later.
    lab.join(at(1), 1, &[Slice::ALL], 2, S1);
    assert_eq!(lab.holders(), [MemberId(1), MemberId(2)]);
    lab.router.handle_timeout(at(1));
    lab.transmits();

    let mut revoked = (*lab.keys[&group]).clone();
    revoked
        .revoked_members
        .push(KeyId::of(&lab.fixture.members[0].key.verifying_key()));
    lab.keys = HashMap::from([(group, Arc::new(revoked))]);
    lab.router.handle_keys(at(2), &lab.keys);
    assert_eq!(lab.holders(), [MemberId(2)]);
    lab.router.handle_timeout(at(2));
    let asked = specific_queries(&lab.transmits(), group);
    assert!(
        !asked.is_empty() && asked.iter().all(|&code| code == 1),
        "one group-specific query per interface, answered within 100 ms: {asked:?}"
    );
    // Its robustness repeat comes 100 ms later.
    lab.router
        .handle_timeout(Timestamp::from_millis(at(2).as_millis() + 100));
    assert!(!specific_queries(&lab.transmits(), group).is_empty());
    // The member's answer takes the freed units.
    lab.join(at(2), 1, &[Slice::ALL], 2, S1);
    assert_eq!(lab.holders(), [MemberId(2)]);
    assert_eq!(
        lab.status(at(2)).counters.group_reasks,
        1,
        "counted once per group and drop"
    );
}

/// The re-ask on expiry too (SPEC.md §10.1): a member that stopped reporting loses its claim
/// after the hold, and the group is asked again in the same turn, so the members' answers take
/// its units within a tenth of a second rather than at their next unprompted report.
#[test]
fn an_expired_claim_makes_the_group_report_again_at_once() {
    let mut lab = Lab::mfc();
    let group = lab.fixture.group;
    lab.join(NOW, 0, &[Slice::new(0, 1)], 1, S1);
    lab.join(NOW, 1, &[Slice::new(1, 1)], 1, S1);
    // Member 2 refreshes; member 1 has gone quiet.
    for s in [10, 20] {
        lab.join(at(s), 1, &[Slice::new(1, 1)], 1, S1);
        lab.router.handle_timeout(at(s));
    }
    lab.transmits();
    assert!(specific_queries(&lab.transmits(), group).is_empty());
    lab.router.handle_timeout(at(23));
    assert_eq!(lab.holders(), [MemberId(2)], "member 1's claim expired");
    let asked = specific_queries(&lab.transmits(), group);
    assert!(
        !asked.is_empty() && asked.iter().all(|&code| code == 1),
        "group-specific queries answered within 100 ms, in the turn of the expiry: {asked:?}"
    );
    assert_eq!(lab.status(at(23)).counters.group_reasks, 1);
}
