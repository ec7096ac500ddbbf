//! IPv6 claims under their member's liveness (SPEC.md §5.5, §5.6): the one IPv4 beacon stream
//! judges the member's IPv6 claim when its MLDv2 join names the same chain; a dead member's
//! IPv6 units go to the standby its MLDv2 join's epoch named, and come back with its beacons;
//! a later epoch waits for a vouched holder; an IPv6 claim without anchors is never judged.

use super::tests::{config, setup, Lab, S1, S2};
use super::*;
use igmp_ext::fixtures::{Fixture, GROUP6, LINK6, NOW};
use igmp_ext::join::SliceEntry6;
use igmp_ext::liveness::HashChain;
use igmp_ext::verify6::LinkTable6;
use igmp_ext::{Slice, SliceEntry, SliceSet6};
use std::net::{Ipv6Addr, SocketAddrV4};

fn ms(n: u64) -> Timestamp {
    NOW.saturating_add(Duration::from_millis(n))
}

fn chain(seed: u8) -> HashChain {
    HashChain::new([seed; 16], u64::from(seed), 10, 1000)
}

/// A client in IPv6 unit `u` of the 1-bit site slicing.
fn client6(u: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2a00, 1, 2, u << 8, 0, 0, 0, 0x77)
}

/// `misses` 4 and a dual-stack fixture: member 0 on s1, member 1 on s2, one IPv6 link prefix.
fn lab_with(mut cfg: RouterConfig) -> Lab {
    cfg.liveness.misses = 4;
    let mut lab = Lab::new(cfg, setup(NativeDataplane::Mroute));
    lab.fixture = Fixture::dual_stack(2, SliceSet6::full());
    lab.keys = lab.fixture.key_source();
    let mut links = LinkTable6::new();
    links.add(S1, LINK6);
    links.add(S2, LINK6);
    lab.router.set_links6(links);
    lab
}

fn ifindex(i: usize) -> u32 {
    [S1, S2][i]
}

/// Member `i` claims unit `i` of both families and stands by for the other at `epoch`; its
/// IGMPv3 join names `chain`, its MLDv2 join too when `anchored`.
fn join(lab: &mut Lab, i: usize, chain: &HashChain, epoch: u64, anchored: bool) {
    let (mine, other) = (Slice::new(i as u32, 1), Slice::new(1 - i as u32, 1));
    let mut claims = lab.fixture.claims(&[mine], epoch, NOW, 100 + i as u64);
    claims.standby = vec![SliceEntry::include(other)];
    claims.liveness = vec![chain.anchor(0).unwrap()];
    let datagram = lab.fixture.datagram(i, &claims);
    lab.router
        .handle_datagram(NOW, Some(ifindex(i)), &datagram, &lab.keys);
    let units6 = SliceSet6::site_slicing(1);
    let mut claims6 = lab
        .fixture
        .claims6(&[units6[i]], epoch, NOW, 200 + i as u64);
    claims6.standby = vec![SliceEntry6::include(units6[1 - i])];
    if anchored {
        claims6.liveness = vec![chain.anchor(0).unwrap()];
    }
    let datagram = lab.fixture.datagram6(i, &claims6);
    let keys6 = lab.fixture.key_source6();
    lab.router
        .handle_mld_datagram(NOW, ifindex(i), &datagram, &keys6);
}

fn beacon(lab: &mut Lab, i: usize, chain: &HashChain, index: u32) {
    let m = &lab.fixture.members[i];
    let b = chain
        .beacon(lab.fixture.group, m.id, index)
        .unwrap()
        .encode();
    let from = SocketAddrV4::new(m.addr, 40000 + i as u16);
    lab.router
        .handle_beacon(ms(10 * u64::from(index)), &b, from, ifindex(i));
}

/// Both members beacon for `from..=to`, member 0 only while `zero_beacons`.
fn run(lab: &mut Lab, chains: &[HashChain; 2], from: u32, to: u32, zero_beacons: bool) {
    for k in from..=to {
        if zero_beacons {
            beacon(lab, 0, &chains[0], k);
        }
        beacon(lab, 1, &chains[1], k);
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
}

fn steered(lab: &Lab, u: u16) -> Option<MemberId> {
    lab.router
        .mld_steering()
        .owner_of(GROUP6, client6(u))
        .map(|(m, _)| m)
}

fn started(anchored: bool) -> (Lab, [HashChain; 2]) {
    started_with(config(), anchored)
}

fn started_with(cfg: RouterConfig, anchored: bool) -> (Lab, [HashChain; 2]) {
    let mut lab = lab_with(cfg);
    let chains = [chain(1), chain(2)];
    join(&mut lab, 0, &chains[0], 1, anchored);
    join(&mut lab, 1, &chains[1], 1, true);
    assert_eq!(lab.router.mld_ownership().claims(GROUP6).count(), 2);
    lab.ops();
    (lab, chains)
}

fn row6(lab: &mut Lab, at: u64, m: MemberId) -> crate::status::OwnershipRow {
    lab.status(ms(at))
        .ownership
        .into_iter()
        .find(|r| r.group == GROUP6.to_string() && r.member == m.0)
        .expect("an IPv6 row")
}

#[test]
fn a_dead_members_ipv6_units_go_to_the_standby_its_mld_join_named() {
    let (mut lab, chains) = started(true);
    let (m0, m1) = (lab.fixture.members[0].id, lab.fixture.members[1].id);
    run(&mut lab, &chains, 1, 10, true);
    assert_eq!((steered(&lab, 0), steered(&lab, 1)), (Some(m0), Some(m1)));
    assert_eq!(row6(&mut lab, 100, m0).liveness.as_deref(), Some("live"));
    lab.ops();
    // Member 0 goes silent at 100 ms: found dead `misses` intervals later, its IPv6 unit goes
    // to member 1, whose MLDv2 join stood by for it at the same epoch, with a new IPv6 table.
    run(&mut lab, &chains, 11, 14, false);
    assert_eq!((steered(&lab, 0), steered(&lab, 1)), (Some(m1), Some(m1)));
    assert!(lab
        .ops()
        .iter()
        .any(|op| matches!(op, DataplaneOp::Netdev6Table(_))));
    // The verified IPv6 table is unchanged; the status and the metrics say what happened.
    let verified = lab.router.mld_ownership().owner_of(GROUP6, client6(0));
    assert_eq!(verified.map(|(m, _)| m), Some(m0));
    let row = row6(&mut lab, 140, m0);
    assert_eq!(row.liveness.as_deref(), Some("dead"));
    assert_eq!(
        row6(&mut lab, 140, m1).standby,
        SliceSet6::site_slicing(1)[0].to_string()
    );
    let st = lab.status(ms(140));
    assert_eq!(st.counters.mld_claims_found_dead, 1);
    assert!(st
        .render_metrics()
        .contains("manycast_verifier_mld_claims_found_dead_total 1\n"));
    // Its beacons resume: its IPv6 unit comes back to it at once.
    beacon(&mut lab, 0, &chains[0], 15);
    assert_eq!(steered(&lab, 0), Some(m0));
    assert_eq!(row6(&mut lab, 150, m0).liveness.as_deref(), Some("live"));
    // Dead again, then the control group commits: member 1's epoch-2 MLDv2 join takes unit 0
    // (its holder is no longer vouched for), and the verified table is what is steered.
    run(&mut lab, &chains, 16, 20, false);
    assert_eq!(steered(&lab, 0), Some(m1));
    assert_eq!(
        lab.router
            .mld_ownership()
            .owner_of(GROUP6, client6(0))
            .map(|(m, _)| m),
        Some(m0)
    );
    let units6 = SliceSet6::site_slicing(1);
    let claims6 = lab.fixture.claims6(&units6, 2, ms(200), 300);
    let d = lab.fixture.datagram6(1, &claims6);
    let keys6 = lab.fixture.key_source6();
    lab.router.handle_mld_datagram(ms(200), S2, &d, &keys6);
    let verified = lab.router.mld_ownership().owner_of(GROUP6, client6(0));
    assert_eq!(verified.map(|(m, _)| m), Some(m1), "the commit wins");
    assert_eq!(steered(&lab, 0), Some(m1));
    assert_eq!(lab.status(ms(200)).counters.mld_claims_found_dead, 2);
}

#[test]
fn an_ipv6_claim_without_anchors_is_not_judged() {
    let (mut lab, chains) = started(false);
    let (m0, m1) = (lab.fixture.members[0].id, lab.fixture.members[1].id);
    run(&mut lab, &chains, 1, 10, true);
    run(&mut lab, &chains, 11, 14, false);
    // Member 0's IPv4 units went to its standby; its IPv6 claim named no chain: it stays.
    assert_eq!(lab.router.liveness.state(lab.fixture.group, m0), Some(true));
    assert_eq!((steered(&lab, 0), steered(&lab, 1)), (Some(m0), Some(m1)));
    assert_eq!(row6(&mut lab, 140, m0).liveness, None);
    assert_eq!(lab.status(ms(140)).counters.mld_claims_found_dead, 0);
}

#[test]
fn beacons_keep_ipv6_claims_alive_and_a_later_epoch_waits_for_a_vouched_holder() {
    let (mut lab, chains) = started(true);
    let (m0, m1) = (lab.fixture.members[0].id, lab.fixture.members[1].id);
    run(&mut lab, &chains, 1, 30, true);
    assert_eq!((steered(&lab, 0), steered(&lab, 1)), (Some(m0), Some(m1)));
    assert_eq!(row6(&mut lab, 300, m0).liveness.as_deref(), Some("live"));
    assert_eq!(lab.status(ms(300)).counters.mld_claims_found_dead, 0);
    // Member 1 claims both IPv6 units at epoch 2 while member 0's beacons vouch for it:
    // unit 0 waits for member 0 to release it (SPEC.md §5.2).
    let units6 = SliceSet6::site_slicing(1);
    let claims6 = lab.fixture.claims6(&units6, 2, ms(300), 300);
    let d = lab.fixture.datagram6(1, &claims6);
    let keys6 = lab.fixture.key_source6();
    lab.router.handle_mld_datagram(ms(300), S2, &d, &keys6);
    let verified = lab.router.mld_ownership().owner_of(GROUP6, client6(0));
    assert_eq!(
        verified.map(|(m, _)| m),
        Some(m0),
        "a vouched holder keeps its units"
    );
    assert_eq!(row6(&mut lab, 300, m1).waiting, units6[0].to_string());
    // Its beacons stop: vouching lapses and the later epoch takes unit 0.
    for k in 31..=36 {
        beacon(&mut lab, 1, &chains[1], k);
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
    let verified = lab.router.mld_ownership().owner_of(GROUP6, client6(0));
    assert_eq!(verified.map(|(m, _)| m), Some(m1));
}

/// An IPv6 VIP on the group follows the failover view as the native table does: a dead
/// member's units go to its standby in the VIP's table too (found missing in a merge: the VIP
/// table was planned from the verified table only).
#[test]
fn an_ipv6_vip_follows_a_dead_members_standby() {
    let mut cfg = config();
    cfg.adopt_grace = Duration::ZERO;
    cfg.vips6 = vec![crate::plan::vip6::Vip6Spec {
        address: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x80),
        group: GROUP6,
        pin: false,
    }];
    let mut lab = lab_with(cfg);
    let chains = [chain(1), chain(2)];
    join(&mut lab, 0, &chains[0], 1, true);
    join(&mut lab, 1, &chains[1], 1, true);
    let (m0, m1) = (lab.fixture.members[0].id, lab.fixture.members[1].id);
    // The VIP table's writes among `ops` (a whole table, then moved elements).
    let last_vip6 = |ops: Vec<DataplaneOp>| {
        let texts: Vec<String> = ops
            .into_iter()
            .filter_map(|o| match o {
                DataplaneOp::Vip6Table(w) => Some(w.batch.to_string()),
                _ => None,
            })
            .collect();
        (!texts.is_empty()).then(|| texts.concat())
    };
    let goto = |m: MemberId| format!("goto m{}_", m.0);
    lab.router.handle_timeout(NOW);
    let live = last_vip6(lab.ops()).expect("the VIP's table");
    run(&mut lab, &chains, 1, 10, true);
    assert_eq!(last_vip6(lab.ops()), None, "nothing changed");
    assert!(
        live.contains(&goto(m0)) && live.contains(&goto(m1)),
        "{live}"
    );
    run(&mut lab, &chains, 11, 14, false);
    assert_eq!(steered(&lab, 0), Some(m1));
    let dead = last_vip6(lab.ops()).expect("the VIP's table again");
    assert!(
        !dead.contains(&goto(m0)) && dead.contains(&goto(m1)),
        "{dead}"
    );
    beacon(&mut lab, 0, &chains[0], 15);
    let back = last_vip6(lab.ops()).expect("the VIP's table once more");
    assert!(back.contains(&goto(m0)), "{back}");
}
