//! Floods of forged MLDv2 joins against the core (issue 15; SPEC.md §5.4, §5.6): they wait for
//! the same signature budget as IGMPv3 candidates, by the same priority classes, so a flood
//! above the budget costs no more checks than the budget, a member's refresh still gets
//! through, and neither family's flood keeps the other's joins out. Counts and states only;
//! no clocks.

use super::tests::{config, setup, Lab, S1};
use super::*;
use core::time::Duration;
use igmp_ext::fixtures::{Fixture, GROUP6, LINK6, NOW};
use igmp_ext::join::{build_datagram, build_signed_report};
use igmp_ext::mld_join::{build_mld_datagram, build_signed_mld_report};
use igmp_ext::mld_verifier::GroupKeys6;
use igmp_ext::verify6::LinkTable6;
use igmp_ext::wire::mld::{fill_checksum, ALL_MLDV2_ROUTERS};
use igmp_ext::{Slice, SliceSet6};
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

type Keys6 = HashMap<Ipv6Addr, Arc<GroupKeys6>>;

/// A hundred signature checks a second (ten per 100 ms round at most), 64 waiting at most.
fn small_budget() -> RouterConfig {
    let mut cfg = config();
    cfg.admission.verify_per_second = 100;
    cfg.admission.backlog = 64;
    cfg
}

/// A core whose members are certified for IPv4 and for every IPv6 slice of [`GROUP6`], with
/// [`LINK6`] on S1; and the IPv6 group's keys.
fn dual_lab(config: RouterConfig) -> (Lab, Keys6) {
    let mut lab = Lab::new(config, setup(NativeDataplane::Mroute));
    let f = Fixture::dual_stack(2, SliceSet6::full());
    lab.keys = f.key_source();
    let keys6 = f.key_source6();
    lab.fixture = f;
    let mut links = LinkTable6::new();
    links.add(S1, LINK6);
    lab.router.set_links6(links);
    (lab, keys6)
}

/// Member `i`'s MLDv2 join for its own unit, stamped `now`, signed as sent from the member's
/// link-local address but sent from `from`: valid when `from` is that address, otherwise every
/// cheap check passes and only its signature check can refuse it.
fn join6_from(f: &Fixture, i: usize, nonce: u64, from: Ipv6Addr, now: Timestamp) -> Vec<u8> {
    let m = &f.members[i];
    let unit = SliceSet6::site_slicing(2)[i];
    let claims = f.claims6(&[unit], 1, now, nonce);
    let mut mld = build_signed_mld_report(&claims, f.addr6(i), &m.cert, &m.key).expect("fits");
    fill_checksum(&mut mld, from, ALL_MLDV2_ROUTERS);
    build_mld_datagram(from, &mld)
}

/// A spoofed link-local address, one per `n`, none a member's.
fn rotating6(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, (n % 90) as u16 + 100)
}

/// Member `i`'s IPv4 join for its own slice, stamped `now`, signed for the member's address but
/// sent from `from` (valid only from the member's address).
fn join4_from(f: &Fixture, i: usize, nonce: u64, from: Ipv4Addr, now: Timestamp) -> Vec<u8> {
    let m = &f.members[i];
    let claims = f.claims(&[Slice::new(i as u32, 1)], 1, now, nonce);
    let igmp = build_signed_report(&claims, m.addr, &m.cert, &m.key).expect("fits");
    build_datagram(from, &igmp)
}

fn ms(n: u64) -> Timestamp {
    NOW.saturating_add(Duration::from_millis(n))
}

fn count(rows: &[(String, u64)], key: &str) -> u64 {
    rows.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
}

/// Signature checks spent so far on either family: every join accepted and every refusal
/// that only a signature check gives (the floods here are refused for nothing else).
fn checks(lab: &Lab) -> u64 {
    let c = lab.status(NOW).counters;
    c.joins_accepted
        + c.mld_joins_accepted
        + count(&c.rejected, "bad-signature")
        + count(&c.mld_rejected, "bad-signature")
}

fn mld_owners(lab: &Lab) -> Vec<MemberId> {
    let table = lab.router.mld_ownership();
    table.claims(GROUP6).map(|(m, _)| m).collect()
}

/// Issue 15: with an IPv6 group protected, every forged MLDv2 join cost a signature check,
/// however many came. A flood of a thousand a second for three seconds (member 0's certificate
/// copied, sent from rotating link-local addresses, in bursts every 100 ms) now costs at most
/// the budget: a hundred checks a second, plus the first round's burst.
#[test]
fn a_forged_mld_flood_costs_at_most_the_signature_budget() {
    let (mut lab, keys6) = dual_lab(small_budget());
    let f = lab.fixture.clone();
    let first = join6_from(&f, 0, 1, f.addr6(0), NOW);
    lab.router.handle_mld_datagram(NOW, S1, &first, &keys6);
    lab.router.handle_timeout(NOW);
    assert_eq!(mld_owners(&lab), [f.members[0].id]);
    let before = checks(&lab);
    let mut nonce = 100;
    for tick in 1..=30 {
        let now = ms(tick * 100);
        for n in 0..100 {
            nonce += 1;
            let d = join6_from(&f, 0, nonce, rotating6(n), now);
            lab.router.handle_mld_datagram(now, S1, &d, &keys6);
        }
        lab.router.handle_timeout(now);
    }
    let spent = checks(&lab) - before;
    assert!(spent <= 3 * 100 + 10, "the flood bought {spent} checks");
    assert!(spent > 100, "the budget is spent on the flood: {spent}");
    assert_eq!(mld_owners(&lab), [f.members[0].id], "the claim stays");
}

/// A member's MLDv2 refresh from where its claim is, and another member's first MLDv2 join,
/// arrive amid a flood of forgeries claiming the first member far above the budget: both are
/// verified in the first round the budget pays for.
#[test]
fn mld_joins_get_through_a_forged_mld_flood() {
    let (mut lab, keys6) = dual_lab(small_budget());
    let f = lab.fixture.clone();
    let first = join6_from(&f, 0, 1, f.addr6(0), NOW);
    lab.router.handle_mld_datagram(NOW, S1, &first, &keys6);
    let now = ms(1_000);
    for n in 0..500 {
        let d = join6_from(&f, 0, 100 + n as u64, rotating6(n), now);
        lab.router.handle_mld_datagram(now, S1, &d, &keys6);
    }
    let refresh = join6_from(&f, 0, 2, f.addr6(0), now);
    lab.router.handle_mld_datagram(now, S1, &refresh, &keys6);
    let other = join6_from(&f, 1, 1, f.addr6(1), now);
    lab.router.handle_mld_datagram(now, S1, &other, &keys6);
    lab.router.handle_timeout(ms(1_100));
    let c = lab.status(NOW).counters;
    assert_eq!(c.mld_joins_accepted, 3, "the refresh and the new join");
    assert_eq!(mld_owners(&lab), [f.members[0].id, f.members[1].id]);
}

/// A second of forged joins of one family (`flood` sends 100 ms's worth, claiming member 0),
/// member 1's first join of the other family (`join`) amid it at 500 ms, and the next round
/// 50 ms later, after which `joined` must hold. Returns the signature checks spent in all.
fn flood_with_a_join(
    lab: &mut Lab,
    mut flood: impl FnMut(&mut Lab, Timestamp),
    join: impl Fn(&mut Lab, Timestamp),
    joined: impl Fn(&Lab) -> bool,
) -> u64 {
    lab.router.handle_timeout(NOW);
    let before = checks(lab);
    for tick in 1..=10 {
        let now = ms(tick * 100);
        flood(lab, now);
        if tick == 5 {
            join(lab, now);
        }
        // The flood took this instant's checks: the join waits for the next round.
        lab.router.handle_timeout(ms(tick * 100 + 50));
        if tick == 5 {
            assert!(joined(lab), "the join was verified in the next round");
        }
    }
    checks(lab) - before
}

/// One signature budget for both families: a flood of forged MLDv2 joins does not keep an
/// IPv4 member's join out (it is verified in the next round), and the two together cost no
/// more than the budget: 1.05 s at a hundred checks a second, and the first round's ten.
#[test]
fn an_mld_flood_neither_keeps_ipv4_joins_out_nor_buys_more_checks() {
    let (mut lab, keys6) = dual_lab(small_budget());
    let f = lab.fixture.clone();
    let first = join6_from(&f, 0, 1, f.addr6(0), NOW);
    lab.router.handle_mld_datagram(NOW, S1, &first, &keys6);
    let mut nonce = 100;
    let flood = |lab: &mut Lab, now| {
        for n in 0..100 {
            nonce += 1;
            let d = join6_from(&f, 0, nonce, rotating6(n), now);
            lab.router.handle_mld_datagram(now, S1, &d, &keys6);
        }
    };
    let join = |lab: &mut Lab, now| {
        let join = join4_from(&f, 1, 1, f.members[1].addr, now);
        lab.router.handle_datagram(now, Some(S1), &join, &lab.keys);
    };
    let joined = |lab: &Lab| lab.holders() == [f.members[1].id];
    let spent = flood_with_a_join(&mut lab, flood, join, joined);
    assert!(spent <= 105 + 10, "both families bought {spent} checks");
}

/// The converse: a flood of forged IGMPv3 joins does not keep an MLDv2 join out, and what the
/// MLDv2 join costs comes out of the same budget.
#[test]
fn an_igmp_flood_neither_keeps_mld_joins_out_nor_buys_more_checks() {
    let (mut lab, keys6) = dual_lab(small_budget());
    let f = lab.fixture.clone();
    lab.join(NOW, 0, &[Slice::new(0, 1)], 1, S1);
    let mut nonce = 100;
    let flood = |lab: &mut Lab, now| {
        let flood: Vec<Vec<u8>> = (0..100)
            .map(|n| {
                nonce += 1;
                join4_from(&f, 0, nonce, Ipv4Addr::new(10, 0, 0, 100 + n), now)
            })
            .collect();
        let burst: Vec<(Option<u32>, &[u8])> =
            flood.iter().map(|d| (Some(S1), d.as_slice())).collect();
        lab.router.handle_burst(now, &burst, &lab.keys);
    };
    let join = |lab: &mut Lab, now| {
        let join = join6_from(&f, 1, 1, f.addr6(1), now);
        lab.router.handle_mld_datagram(now, S1, &join, &keys6);
    };
    let joined = |lab: &Lab| mld_owners(lab) == [f.members[1].id];
    let spent = flood_with_a_join(&mut lab, flood, join, joined);
    assert!(spent <= 105 + 10, "both families bought {spent} checks");
}

/// As `flood_tests`' IGMPv3 test of the same name: forged MLDv2 joins claiming member 0 from
/// rotating addresses, far above the budget, and member 0's refresh in one burst. The refresh
/// waits as "expected" and is verified in the burst's round; the backlog stays bounded; the
/// MLD admission counters show it all, and the IGMPv3 ones nothing.
#[test]
fn a_refresh_from_the_claims_place_is_verified_first_under_an_mld_forgery_flood() {
    let (mut lab, keys6) = dual_lab(small_budget());
    let f = lab.fixture.clone();
    let first = join6_from(&f, 0, 1, f.addr6(0), NOW);
    lab.router.handle_mld_datagram(NOW, S1, &first, &keys6);
    let now = ms(1_000);
    let mut flood: Vec<Vec<u8>> = (0..500)
        .map(|n| join6_from(&f, 0, 100 + n as u64, rotating6(n), now))
        .collect();
    flood.push(join6_from(&f, 0, 2, f.addr6(0), now));
    let burst: Vec<(u32, &[u8])> = flood.iter().map(|d| (S1, d.as_slice())).collect();
    lab.router.handle_mld_burst(now, &burst, &keys6);
    let c = lab.status(now).counters;
    assert_eq!(
        c.mld_joins_accepted, 2,
        "the refresh was verified in its round"
    );
    let round = c.mld_verify_checked - 1;
    assert!(round <= 10, "the budget held: {round}");
    assert_eq!(c.mld_verify_backlog, 64 - round, "the backlog is bounded");
    assert_eq!(count(&c.mld_rate_limited, "capacity"), 500 + 1 - 64);
    assert_eq!(count(&c.mld_verify_queued, "expected"), 1);
    assert_eq!(count(&c.mld_rejected, "bad-signature"), round - 1);
    assert_eq!(
        (c.verify_checked, c.verify_backlog),
        (0, 0),
        "no IGMPv3 candidate"
    );
    assert_eq!(count(&c.rate_limited, "capacity"), 0);
    let metrics = lab.status(now).render_metrics();
    for line in [
        format!("manycast_verifier_mld_verify_checked_total {}\n", round + 1),
        format!("manycast_verifier_mld_verify_backlog {}\n", 64 - round),
        format!(
            "manycast_verifier_mld_rate_limited_total{{limit=\"capacity\"}} {}\n",
            500 + 1 - 64
        ),
        "manycast_verifier_mld_verify_queued_total{class=\"expected\"} 1\n".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

/// As for IGMPv3 (`a_flood_of_copies_from_a_members_address_expires_none_of_its_claims`):
/// bad-signature copies of a member's MLDv2 join from its own address, above the budget for
/// 50 s, would drown its refreshes; a copy shed unverified from where the claim is may have
/// been the refresh, so it keeps the IPv6 claim (claim hold 22 s here).
#[test]
fn a_flood_of_mld_copies_from_a_members_address_expires_none_of_its_claims() {
    let (mut lab, keys6) = dual_lab(small_budget());
    let f = lab.fixture.clone();
    let first = join6_from(&f, 0, 1, f.addr6(0), NOW);
    lab.router.handle_mld_datagram(NOW, S1, &first, &keys6);
    let m = &f.members[0];
    let mut nonce = 1_000;
    for t in 1..=50 {
        let now = ms(t * 1_000);
        let copies: Vec<Vec<u8>> = (0..200)
            .map(|_| {
                nonce += 1;
                let unit = SliceSet6::site_slicing(2)[0];
                let claims = f.claims6(&[unit], 1, now, nonce);
                // Signed for another sender: only its signature check can refuse it.
                let mld =
                    build_signed_mld_report(&claims, rotating6(0), &m.cert, &m.key).expect("fits");
                let mut mld = mld;
                fill_checksum(&mut mld, f.addr6(0), ALL_MLDV2_ROUTERS);
                build_mld_datagram(f.addr6(0), &mld)
            })
            .collect();
        let burst: Vec<(u32, &[u8])> = copies.iter().map(|d| (S1, d.as_slice())).collect();
        lab.router.handle_mld_burst(now, &burst, &keys6);
        lab.router.handle_timeout(ms(t * 1_000 + 500));
        assert_eq!(mld_owners(&lab), [m.id], "the claim expired at {t} s");
    }
    assert!(lab.status(NOW).counters.claims_held_unverified > 0);
    // Once the flood ends, the claim expires a hold after the last copy shed.
    lab.router.handle_timeout(ms(80_000));
    assert!(mld_owners(&lab).is_empty());
}

/// As for the IGMP socket (`handle_socket_overflow`): MLDv2 datagrams the kernel dropped at the
/// full MLD socket queue may have been a member's refresh, and there is no telling whose, so
/// every IPv6 claim is kept one hold from the drop (22 s here). Without it a flood that outruns
/// the verifier's reading expired a live member's IPv6 claim a hold after its last refresh.
#[test]
fn drops_at_the_full_mld_socket_expire_no_ipv6_claim() {
    let (mut lab, keys6) = dual_lab(small_budget());
    let f = lab.fixture.clone();
    let first = join6_from(&f, 0, 1, f.addr6(0), NOW);
    lab.router.handle_mld_datagram(NOW, S1, &first, &keys6);
    let m = f.members[0].id;
    lab.router.handle_timeout(ms(20_000));
    assert_eq!(mld_owners(&lab), [m]);
    // The refreshes from here on were among what the kernel dropped.
    lab.router.handle_mld_socket_overflow(ms(21_000), 500);
    lab.router.handle_timeout(ms(30_000));
    assert_eq!(mld_owners(&lab), [m], "held one claim hold from the drop");
    let c = lab.status(ms(30_000)).counters;
    assert_eq!(c.mld_socket_drops, 500);
    assert!(c.claims_held_unverified >= 1);
    // Nothing more dropped and no refresh: it expires a hold after the drop.
    lab.router.handle_timeout(ms(44_000));
    assert!(mld_owners(&lab).is_empty());
}
