//! Router-checked liveness and standby claims (SPEC.md §5.5) in the core: beacons keep a member
//! live, its silence gives its units to the standby its epoch named, forged beacons keep
//! nothing alive, and silence the router caused finds nobody dead.

use super::tests::{config, setup, Lab, S1, S2};
use super::*;
use igmp_ext::fixtures::NOW;
use igmp_ext::liveness::HashChain;
use igmp_ext::{Slice, SliceEntry};
use std::net::SocketAddrV4;

const EVEN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const ODD: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);

/// The tests' router: `misses` 4 (not the default), so that the windows below stay short.
fn lab() -> Lab {
    let mut cfg = config();
    cfg.liveness.misses = 4;
    Lab::new(cfg, setup(NativeDataplane::Mroute))
}

fn ms(n: u64) -> Timestamp {
    NOW.saturating_add(Duration::from_millis(n))
}

fn chain(seed: u8) -> HashChain {
    HashChain::new([seed; 16], u64::from(seed), 10, 1000)
}

/// Member `i` claims `slices` and stands by for `standby` at epoch 1, naming `chain` at
/// index 0, its join arriving on `ifindex`.
fn join(lab: &mut Lab, i: usize, slices: Slice, standby: Slice, chain: &HashChain, ifindex: u32) {
    let mut claims = lab.fixture.claims(&[slices], 1, NOW, 100 + i as u64);
    claims.standby = vec![SliceEntry::include(standby)];
    claims.liveness = vec![chain.anchor(0).unwrap()];
    let datagram = lab.fixture.datagram(i, &claims);
    lab.router
        .handle_datagram(NOW, Some(ifindex), &datagram, &lab.keys);
}

fn beacon(lab: &mut Lab, i: usize, chain: &HashChain, index: u32, ifindex: u32) {
    let m = &lab.fixture.members[i];
    let b = chain
        .beacon(lab.fixture.group, m.id, index)
        .unwrap()
        .encode();
    let addr = m.addr;
    lab.router.handle_beacon(
        ms(10 * u64::from(index)),
        &b,
        SocketAddrV4::new(addr, 40000 + i as u16),
        ifindex,
    );
}

/// The VIFs the MFC entry for `source` goes out of, after the ops since the last call.
fn repointed(lab: &mut Lab) -> Vec<(Ipv4Addr, Vec<u16>)> {
    lab.ops()
        .into_iter()
        .filter_map(|op| match op {
            DataplaneOp::MfcInstall(s) => Some((s.source, s.oifs.iter().collect())),
            _ => None,
        })
        .collect()
}

fn started() -> (Lab, HashChain, HashChain) {
    let mut lab = lab();
    let g = lab.fixture.group;
    for source in [EVEN, ODD] {
        lab.router.handle_upcall(
            NOW,
            crate::plan::mfc::Upcall {
                msgtype: IGMPMSG_NOCACHE,
                vif: 1,
                source,
                group: g,
            },
        );
    }
    let (a, b) = (chain(1), chain(2));
    let (even, odd) = (Slice::new(0, 1), Slice::new(1, 1));
    join(&mut lab, 0, even, odd, &a, S1);
    join(&mut lab, 1, odd, even, &b, S2);
    lab.ops();
    (lab, a, b)
}

#[test]
fn a_silent_members_units_go_to_its_standby_and_come_back_with_its_beacons() {
    let (mut lab, a, b) = started();
    let g = lab.fixture.group;
    let (m0, m1) = (lab.fixture.members[0].id, lab.fixture.members[1].id);
    for k in 1..=10 {
        beacon(&mut lab, 0, &a, k, S1);
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
    assert!(repointed(&mut lab).is_empty(), "both live: nothing moves");
    // Member 0 goes silent at 100 ms; member 1 beacons on. `misses` (4) intervals later
    // (140 ms) member 0 is found dead and EVEN goes to member 1 on s2 (VIF 2).
    for k in 11..=14 {
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
    assert_eq!(repointed(&mut lab), vec![(EVEN, vec![2])]);
    assert!(lab.events().contains(&Event::MemberSilent {
        group: g,
        member: m0
    }));
    // The heir is told at the address and port its own beacons come from (two daemons on one
    // host each have their own port; a fixed port reached only one of them).
    let notice = lab.router.poll_notice().expect("a standby notice");
    assert_eq!(
        notice.to,
        SocketAddrV4::new(lab.fixture.members[1].addr, 40001)
    );
    assert!(notice.notice.active && notice.notice.dead == m0);
    let st = lab.status(ms(140));
    let row = |m: MemberId| st.ownership.iter().find(|r| r.member == m.0).unwrap();
    assert_eq!(row(m0).liveness.as_deref(), Some("dead"));
    assert_eq!(row(m1).liveness.as_deref(), Some("live"));
    assert_eq!(st.counters.members_found_dead, 1);
    // The verified table is unchanged: member 0 still holds EVEN at epoch 1.
    assert_eq!(
        lab.router
            .verifier()
            .ownership()
            .owner_of(g, EVEN)
            .map(|(m, _)| m),
        Some(m0)
    );
    // Its beacons again (the index due now, past the ones it missed): EVEN goes back.
    beacon(&mut lab, 0, &a, 15, S1);
    assert_eq!(repointed(&mut lab), vec![(EVEN, vec![0])]);
    assert_eq!(lab.status(ms(150)).counters.members_back, 1);
}

/// What an on-link host can send for a dead member: copies of its beacons, values it made up,
/// a beacon of another chain, or a real next value from another address. None of it keeps the
/// member alive or is counted as accepted.
#[test]
fn forged_and_copied_beacons_keep_no_dead_member_alive() {
    let (mut lab, a, b) = started();
    for k in 1..=5 {
        beacon(&mut lab, 0, &a, k, S1);
        beacon(&mut lab, 1, &b, k, S2);
    }
    let accepted = lab.status(ms(50)).counters.beacons_accepted;
    assert_eq!(accepted, 10);
    let (g, m0) = (lab.fixture.group, lab.fixture.members[0].id);
    let addr = lab.fixture.members[0].addr;
    let copy = a.beacon(g, m0, 5).unwrap();
    for k in 6..=12u32 {
        let t = ms(10 * u64::from(k));
        // A copy of the last beacon it saw, relabelled with the index due now.
        let relabelled = igmp_ext::liveness::Beacon { index: k, ..copy };
        let made_up = igmp_ext::liveness::Beacon {
            value: [k as u8; 16],
            ..relabelled
        };
        let other_chain = chain(9).beacon(g, m0, k).unwrap();
        for forged in [copy, relabelled, made_up, other_chain] {
            lab.router
                .handle_beacon(t, &forged.encode(), SocketAddrV4::new(addr, 40000), S1);
        }
        // The real next value, but from another address than the claim's.
        let real = a.beacon(g, m0, k).unwrap();
        lab.router.handle_beacon(
            t,
            &real.encode(),
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 99), 40000),
            S1,
        );
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_timeout(t);
    }
    let st = lab.status(ms(120));
    assert_eq!(
        st.counters.beacons_accepted,
        accepted + 7,
        "only member 1's"
    );
    assert_eq!(st.counters.beacons_refused, 7 * 5);
    assert_eq!(st.counters.members_found_dead, 1);
    assert_eq!(repointed(&mut lab), vec![(EVEN, vec![2])]);
}

/// Datagrams the router dropped at a full socket may have been beacons: nobody is found dead
/// for the silence up to the drop, only for silence after it.
#[test]
fn silence_the_router_caused_finds_nobody_dead() {
    let (mut lab, a, b) = started();
    beacon(&mut lab, 0, &a, 1, S1);
    beacon(&mut lab, 1, &b, 1, S2);
    // Both silent from 10 ms; the beacon socket overflowed at 35 ms.
    lab.router.handle_beacon_overflow(ms(35), 5);
    lab.router.handle_timeout(ms(40));
    lab.router.handle_timeout(ms(70));
    assert_eq!(lab.status(ms(70)).counters.members_found_dead, 0);
    assert_eq!(
        lab.router.poll_timeout(),
        Instant::from_millis(ms(75).as_millis())
    );
    // `misses` (4) intervals after the drop, both are found dead; each one's units go to the
    // other, which is dead too: nothing moves.
    lab.router.handle_timeout(ms(75));
    assert_eq!(lab.status(ms(75)).counters.members_found_dead, 2);
    assert!(repointed(&mut lab).is_empty());
}

/// A stall of the router's own loop between reading its beacon socket and checking liveness
/// (a kernel write, a burst of joins, the scheduler) is not the members' silence: beacons that
/// arrived meanwhile wait in the socket's queue. Silence is judged only up to the last time the
/// driver read the socket empty.
#[test]
fn a_stall_of_the_routers_own_loop_finds_nobody_dead() {
    let (mut lab, a, b) = started();
    beacon(&mut lab, 0, &a, 1, S1);
    beacon(&mut lab, 1, &b, 1, S2);
    // The socket was read empty at 15 ms; the loop then stalled until 100 ms.
    lab.router.handle_beacons_read(ms(15));
    lab.router.handle_timeout(ms(100));
    assert_eq!(lab.status(ms(100)).counters.members_found_dead, 0);
    assert!(repointed(&mut lab).is_empty());
    // The next read is empty (both really are silent), but it comes 50 ms after their
    // deadline (50 ms): too late to prove anything (see the next test). A window later, on
    // time, the silence counts.
    lab.router.handle_beacons_read(ms(100));
    lab.router.handle_timeout(ms(100));
    assert_eq!(lab.status(ms(100)).counters.members_found_dead, 0);
    lab.router.handle_beacons_read(ms(140));
    lab.router.handle_timeout(ms(140));
    assert_eq!(lab.status(ms(140)).counters.members_found_dead, 2);
}

/// A stall of the whole router (its CPU or machine not running it), not just of its loop:
/// beacons sent meanwhile can still be in its kernel's receive path when the loop runs again
/// and reads its socket empty. A check that comes more than half a window after a deadline
/// judges nobody; everyone gets a whole window from then. Judged on that late check, both
/// live members here were found dead, and their units moved for as long as the next beacon
/// took (a CI run under load saw a live member's clients answered by its standby).
#[test]
fn a_check_that_comes_late_finds_nobody_dead() {
    let (mut lab, a, b) = started();
    for k in 1..=5 {
        beacon(&mut lab, 0, &a, k, S1);
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_beacons_read(ms(10 * u64::from(k)));
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
    // Deadline 90 ms (50 + 4 intervals); the router next runs at 120 ms, reads its socket
    // empty and checks.
    lab.router.handle_beacons_read(ms(120));
    lab.router.handle_timeout(ms(120));
    assert_eq!(lab.status(ms(120)).counters.members_found_dead, 0);
    assert!(repointed(&mut lab).is_empty(), "nothing moves");
    assert_eq!(lab.status(ms(120)).counters.liveness_late_checks, 1);
    // The beacons that were on their way arrive; everyone is live and on time again.
    beacon(&mut lab, 0, &a, 12, S1);
    beacon(&mut lab, 1, &b, 12, S2);
    lab.router.handle_beacons_read(ms(130));
    lab.router.handle_timeout(ms(130));
    assert_eq!(lab.status(ms(130)).counters.members_found_dead, 0);
    // Member 1 beacons on, member 0 stops: found dead on time (its last beacon at 120 ms + 40), and only it.
    for k in 13..=17 {
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_beacons_read(ms(10 * u64::from(k)));
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
    assert_eq!(lab.status(ms(170)).counters.members_found_dead, 1);
    assert_eq!(repointed(&mut lab), vec![(EVEN, vec![2])]);
}

/// Issue 13's last defect: a certified member's join at a far later epoch used to take every
/// slice its certificate allows from the honest members at the router. A member the router
/// vouches for (a beacon within the window) keeps its slices; they go only once its beacons
/// stop, as a later epoch's always did.
#[test]
fn a_far_later_epoch_takes_nothing_from_a_member_that_beacons() {
    let (mut lab, a, b) = started();
    let g = lab.fixture.group;
    let (m0, m1) = (lab.fixture.members[0].id, lab.fixture.members[1].id);
    beacon(&mut lab, 0, &a, 1, S1);
    beacon(&mut lab, 1, &b, 1, S2);
    let mut claims = lab.fixture.claims(&[Slice::ALL], 1 << 40, ms(15), 999);
    claims.liveness = vec![b.anchor(1).unwrap()];
    let datagram = lab.fixture.datagram(1, &claims);
    lab.router
        .handle_datagram(ms(15), Some(S2), &datagram, &lab.keys);
    assert!(repointed(&mut lab).is_empty(), "nothing moves");
    let owner = |lab: &Lab| {
        lab.router
            .verifier()
            .ownership()
            .owner_of(g, EVEN)
            .map(|(m, _)| m)
    };
    assert_eq!(owner(&lab), Some(m0));
    let st = lab.status(ms(15));
    let row = st.ownership.iter().find(|r| r.member == m1.0).unwrap();
    assert_eq!(row.waiting, "0.0.0.0/0.0.0.1", "{row:?}");
    // Member 0 beacons on: still its.
    for k in 2..=5 {
        beacon(&mut lab, 0, &a, k, S1);
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
    assert_eq!(owner(&lab), Some(m0));
    // Its beacons stop: `misses` (4) intervals later the later epoch takes EVEN.
    for k in 6..=9 {
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
    assert_eq!(owner(&lab), Some(m1));
    assert_eq!(repointed(&mut lab), vec![(EVEN, vec![2])]);
}

fn beacon_at(lab: &mut Lab, i: usize, chain: &HashChain, index: u32, ifindex: u32, at_ms: u64) {
    let m = &lab.fixture.members[i];
    let b = chain
        .beacon(lab.fixture.group, m.id, index)
        .unwrap()
        .encode();
    let from = SocketAddrV4::new(m.addr, 40000 + i as u16);
    lab.router.handle_beacon(ms(at_ms), &b, from, ifindex);
}

/// One beacon that arrives late (the member's beacon thread stalled after taking its index,
/// or the network held it) must not shift the router's idea of where the chain should be: the
/// on-time beacons after it are further ahead of it than the time since it arrived. The bound
/// on a beacon's hashing work used to be counted from the late arrival, and refused every later
/// beacon as "too far ahead" until the member's next chain: the member was found dead and its
/// units left it for up to half a chain's life (the clock-step test's lost requests).
#[test]
fn a_late_beacon_does_not_lock_out_the_on_time_ones_after_it() {
    let (mut lab, a, b) = started();
    for k in 1..=5 {
        beacon(&mut lab, 0, &a, k, S1);
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
    // Beacon 6, due at 60 ms, arrives at 110 ms; member 0 was found dead meanwhile (misses 4).
    for k in 6..=10 {
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_timeout(ms(10 * u64::from(k)));
    }
    assert_eq!(lab.status(ms(100)).counters.members_found_dead, 1);
    beacon_at(&mut lab, 0, &a, 6, S1, 110);
    assert_eq!(lab.status(ms(110)).counters.members_back, 1);
    // From then on its beacons come on time again, each with the index due when it goes.
    for k in 11..=30 {
        beacon_at(&mut lab, 0, &a, k, S1, 10 * u64::from(k) + 2);
        beacon(&mut lab, 1, &b, k, S2);
        lab.router.handle_timeout(ms(10 * u64::from(k) + 2));
    }
    let st = lab.status(ms(302));
    assert_eq!(st.counters.beacons_refused, 0, "{:?}", st.counters);
    assert_eq!(st.counters.members_found_dead, 1, "found dead once only");
}
