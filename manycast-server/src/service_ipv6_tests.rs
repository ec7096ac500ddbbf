//! IPv6 clients in the shared session table: the same filter, numbering and strategies as IPv4
//! ones, by the unit of their /56 (SPEC.md §6.2, §11.3).

use super::*;
use crate::mld_agent::units6;
use igmp_ext::{Slice6, SliceEntry, Slicing};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

const NOW: Instant = Instant::from_secs(1_000);
const M1: MemberId = MemberId(1);
const M2: MemberId = MemberId(2);
/// Four units by the two low address bits (IPv4), the two low bits of the /56 (IPv6).
const SLICING: Slicing = Slicing::LowOrder { bits: 2 };

/// A client of site `site` (its /56 is 2001:db8:0:<site>00::/56), host `host`.
fn client(site: u8, host: u16, port: u16) -> SocketAddr {
    let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(site) << 8 | 0x42, 0, 0, 0, host);
    SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))
}

fn alloc(owners: [Option<MemberId>; 4]) -> Allocation {
    Allocation::from_unit_owners(SLICING, owners.to_vec()).unwrap()
}

/// M1 owns units 0 and 2 (sites ending in binary 00 and 10), M2 units 1 and 3.
fn even() -> Allocation {
    alloc([Some(M1), Some(M2), Some(M1), Some(M2)])
}

fn all(m: MemberId) -> Allocation {
    alloc([Some(m); 4])
}

fn service(strategy: Strategy, max_sessions: usize) -> Service {
    let mut s = Service::new(M1, strategy, Duration::from_secs(60), max_sessions).with_ipv6();
    assert!(s.handle_commit(NOW, 1, &[M1, M2], &even()).is_empty());
    s
}

fn texts(actions: &[Action]) -> Vec<(SocketAddr, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(r) => Some((r.to, String::from_utf8_lossy(&r.payload).into_owned())),
            _ => None,
        })
        .collect()
}

fn ask(s: &mut Service, c: SocketAddr, payload: &str) -> Option<String> {
    let replies = texts(&s.handle_datagram(NOW, c, payload.as_bytes()));
    assert!(replies.len() <= 1);
    replies.into_iter().next().map(|(to, text)| {
        assert_eq!(to, c);
        text
    })
}

#[test]
fn the_unit_of_a_source_is_its_index_in_the_site_slicing() {
    let s = service(Strategy::Reset, 10);
    let units = SliceSet6::site_slicing(SLICING.bits());
    for site in [0u8, 1, 2, 3, 4, 7, 0x80, 0xff] {
        for host in [1, 0xffff] {
            let c = client(site, host, 1);
            let SocketAddr::V6(a) = c else { unreachable!() };
            let u = s.unit_of(&c).unwrap();
            assert!(units[u].contains_addr(*a.ip()), "{a} in unit {u}");
        }
    }
    // The interface identifier and the site's own subnet byte do not matter.
    let a: SocketAddr = "[2001:db8:0:2ff:ffff:ffff:ffff:ffff]:1".parse().unwrap();
    let b: SocketAddr = "[2001:db8:0:200::1]:1".parse().unwrap();
    assert_eq!((s.unit_of(&a), s.unit_of(&b)), (Some(2), Some(2)));
}

#[test]
fn the_slices_are_the_ones_the_mld_join_claims() {
    let s = service(Strategy::Reset, 10);
    let entries: Vec<SliceEntry> = even()
        .slices_of(M1)
        .iter()
        .copied()
        .map(SliceEntry::include)
        .collect();
    let claimed: SliceSet6 = units6(SLICING, &entries)
        .into_iter()
        .map(|e| e.slice)
        .collect();
    assert_eq!(s.slices6(), &claimed);
    // Units 0 and 2: the /56's lowest bit is 0.
    let expected: SliceSet6 = [Slice6::new(0, 1u128 << 72)].into_iter().collect();
    assert_eq!(s.slices6(), &expected);
}

#[test]
fn only_sources_in_our_slices_are_answered_per_address_and_port() {
    let mut s = service(Strategy::Reset, 10);
    assert_eq!(ask(&mut s, client(0, 1, 7), "").as_deref(), Some("m1 1\n"));
    assert_eq!(ask(&mut s, client(0, 1, 7), "").as_deref(), Some("m1 2\n"));
    // Another port, another host of the same site: sessions of their own.
    assert_eq!(ask(&mut s, client(0, 1, 8), "").as_deref(), Some("m1 1\n"));
    assert_eq!(ask(&mut s, client(2, 9, 7), "").as_deref(), Some("m1 1\n"));
    // Units 1 and 3 are M2's: not answered, counted.
    assert_eq!(ask(&mut s, client(1, 1, 7), ""), None);
    assert_eq!(ask(&mut s, client(3, 1, 7), ""), None);
    // The flow label is no part of the session.
    let SocketAddr::V6(c) = client(0, 1, 7) else {
        unreachable!()
    };
    let labelled = SocketAddr::V6(SocketAddrV6::new(*c.ip(), 7, 0x12345, 0));
    let out = texts(&s.handle_datagram(NOW, labelled, b""));
    assert_eq!(out, vec![(client(0, 1, 7), "m1 3\n".to_owned())]);
    let c = s.counters6();
    assert_eq!((c.served, c.filtered), (5, 2));
    assert_eq!(
        s.counters(),
        ServiceCounters::default(),
        "IPv4 counts apart"
    );
    assert_eq!((s.session_count(), s.session_count6()), (3, 3));
}

#[test]
fn without_group6_ipv6_clients_are_filtered() {
    let mut s = Service::new(M1, Strategy::Reset, Duration::from_secs(60), 10);
    s.handle_commit(NOW, 1, &[M1], &all(M1));
    assert_eq!(ask(&mut s, client(0, 1, 7), ""), None);
    assert_eq!(s.counters6().filtered, 1);
    assert!(s.slices6().is_empty());
}

#[test]
fn request_ids_repeat_their_number_and_stale_ones_get_none() {
    let mut s = service(Strategy::Reset, 10);
    let c = client(0, 1, 7);
    assert_eq!(ask(&mut s, c, "r5").as_deref(), Some("m1 1 r5\n"));
    assert_eq!(ask(&mut s, c, "r5").as_deref(), Some("m1 1 r5\n"));
    assert_eq!(ask(&mut s, c, "r6").as_deref(), Some("m1 2 r6\n"));
    assert_eq!(ask(&mut s, c, "r4"), None);
    let counts = s.counters6();
    assert_eq!((counts.retransmits, counts.stale, counts.served), (1, 1, 3));
}

#[test]
fn a_full_table_refuses_new_clients_of_either_family() {
    let mut s = service(Strategy::Reset, 2);
    assert!(ask(&mut s, client(0, 1, 7), "").is_some());
    let v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 4), 7));
    assert!(ask(&mut s, v4, "").is_some());
    assert_eq!(ask(&mut s, client(0, 2, 7), ""), None);
    assert_eq!(s.counters6().refused_full, 1);
    assert_eq!(ask(&mut s, client(0, 1, 7), "").as_deref(), Some("m1 2\n"));
}

#[test]
fn reset_tells_moved_clients_and_pin_drops_them_silently() {
    let mut s = service(Strategy::Reset, 10);
    for c in [client(0, 1, 7), client(2, 1, 7), client(2, 2, 7)] {
        assert!(ask(&mut s, c, "").is_some());
    }
    // Unit 2 moves to M2.
    let out = s.handle_commit(
        NOW,
        2,
        &[M1, M2],
        &alloc([Some(M1), Some(M2), Some(M2), Some(M2)]),
    );
    assert_eq!(
        texts(&out),
        vec![
            (client(2, 1, 7), "m1 reset\n".to_owned()),
            (client(2, 2, 7), "m1 reset\n".to_owned()),
        ]
    );
    assert_eq!(s.counters6().resets, 2);
    assert_eq!(ask(&mut s, client(0, 1, 7), "").as_deref(), Some("m1 2\n"));
    assert_eq!(ask(&mut s, client(2, 1, 7), ""), None, "M2's now");

    let mut s = service(Strategy::Pin, 10);
    assert!(ask(&mut s, client(2, 1, 7), "").is_some());
    assert!(s.handle_commit(NOW, 2, &[M2], &all(M2)).is_empty());
    assert_eq!((s.session_count(), s.counters6().resets), (0, 0));
}

#[test]
fn idle_sessions_expire() {
    let mut s = service(Strategy::Reset, 10);
    assert!(ask(&mut s, client(0, 1, 7), "").is_some());
    s.handle_timeout(NOW.saturating_add(Duration::from_secs(59)));
    assert_eq!(s.session_count6(), 1);
    s.handle_timeout(NOW.saturating_add(Duration::from_secs(60)));
    assert_eq!(s.session_count6(), 0);
    assert_eq!(ask(&mut s, client(0, 1, 7), "").as_deref(), Some("m1 1\n"));
}

/// M1 alone serves `clients` `n` requests each (ids r1..rn), then M2 takes units 1 and 3.
/// Returns both services (M2 has committed too) and M1's actions.
fn move_odd_units(
    strategy: Strategy,
    clients: &[SocketAddr],
    n: u64,
) -> (Service, Service, Vec<Action>) {
    let mut old = Service::new(M1, strategy, Duration::from_secs(60), 100).with_ipv6();
    old.handle_commit(NOW, 1, &[M1], &all(M1));
    for c in clients {
        for r in 1..=n {
            let want = format!("m1 {r} r{r}\n");
            assert_eq!(ask(&mut old, *c, &format!("r{r}")), Some(want));
        }
    }
    let mut new = Service::new(M2, strategy, Duration::from_secs(60), 100).with_ipv6();
    new.handle_commit(NOW, 1, &[M1], &all(M1));
    let out = old.handle_commit(NOW, 2, &[M1, M2], &even());
    assert!(new.handle_commit(NOW, 2, &[M1, M2], &even()).is_empty());
    (old, new, out)
}

fn state_to_m2(out: &[Action]) -> Vec<u8> {
    let found: Vec<&Vec<u8>> = out
        .iter()
        .filter_map(|a| match a {
            Action::SendState { to, data, .. } if *to == M2 => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "{out:?}");
    found[0].clone()
}

#[test]
fn handoff_continues_moved_ipv6_sessions_at_the_new_owner() {
    let moving = client(3, 1, 7);
    let staying = client(2, 1, 7);
    let v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 7));
    let (mut old, mut new, out) = move_odd_units(Strategy::Handoff, &[moving, staying, v4], 2);
    assert!(texts(&out).is_empty(), "no reset reply under handoff");
    let data = state_to_m2(&out);
    let t = StateTransfer::decode(&data).unwrap();
    assert_eq!((t.sessions.len(), t.sessions6.len()), (1, 1));
    assert_eq!(
        (old.counters6().handed_off, old.counters().handed_off),
        (1, 1)
    );
    assert_eq!(
        ask(&mut old, moving, "r3"),
        None,
        "not the old owner's any more"
    );
    assert_eq!(ask(&mut old, staying, "r3").as_deref(), Some("m1 3 r3\n"));

    // At the new owner the moved client waits for the state, then continues where it stopped.
    assert_eq!(ask(&mut new, moving, "r3"), None);
    assert_eq!(new.counters6().held, 1);
    let released = texts(&new.handle_state(NOW, M1, &data));
    assert_eq!(released, vec![(moving, "m2 3 r3\n".to_owned())]);
    assert_eq!((new.counters6().received, new.counters().received), (1, 1));
    // The retransmission of a request the old owner answered gets the same number.
    assert_eq!(ask(&mut new, moving, "r2").as_deref(), None, "stale");
    assert_eq!(ask(&mut new, moving, "r3").as_deref(), Some("m2 3 r3\n"));
    assert_eq!(ask(&mut new, moving, "r4").as_deref(), Some("m2 4 r4\n"));
    assert_eq!(ask(&mut new, v4, "r3").as_deref(), Some("m2 3 r3\n"));
}

#[test]
fn forward_passes_moved_ipv6_sessions_to_the_old_owner_until_they_end() {
    let moving = client(1, 1, 7);
    let (mut old, mut new, out) = move_odd_units(Strategy::Forward, &[moving], 2);
    let data = state_to_m2(&out);
    old.handle_transfer_done(M2, 2);
    assert!(old.has_moved_sessions(), "the old owner keeps the session");
    assert_eq!(
        ask(&mut old, moving, "r3"),
        None,
        "not straight from the client"
    );

    assert_eq!(ask(&mut new, moving, "r3"), None, "held for the list");
    let released = new.handle_state(NOW, M1, &data);
    assert_eq!(
        released,
        vec![Action::Forward {
            to: M1,
            client: moving,
            payload: b"r3".to_vec()
        }]
    );
    assert_eq!(new.counters6().forwarded, 1);
    // A new client in the moved units is the new owner's.
    assert_eq!(
        ask(&mut new, client(1, 2, 7), "r1").as_deref(),
        Some("m2 1 r1\n")
    );

    let reply = old
        .handle_forwarded(NOW, M2, moving, b"r3")
        .expect("served");
    assert_eq!((reply.to, reply.payload), (moving, b"m1 3 r3\n".to_vec()));
    assert_eq!(old.counters6().forwarded_served, 1);
    // Only the unit's owner may forward, and only for sessions held here.
    assert_eq!(old.handle_forwarded(NOW, MemberId(3), moving, b"r4"), None);
    assert_eq!(old.handle_forwarded(NOW, M2, client(1, 2, 7), b"r1"), None);
    assert_eq!(old.counters6().forward_refused, 2);

    // The session ends with the idle time on both sides; the client then starts fresh.
    let later = NOW.saturating_add(Duration::from_secs(60));
    old.handle_timeout(later);
    new.handle_timeout(later);
    assert!(!old.has_moved_sessions());
    assert_eq!(ask(&mut new, moving, "r1").as_deref(), Some("m2 1 r1\n"));
}

/// While the router steers a found-dead owner's units here (SPEC.md §5.5), their IPv6 sources
/// are answered too, until the next commit.
#[test]
fn standby_units_are_answered_for_ipv6_sources_until_the_next_commit() {
    let mut s = service(Strategy::Reset, 10);
    assert_eq!(ask(&mut s, client(1, 1, 7), ""), None);
    s.stand_in(even().slices_of(M2));
    assert_eq!(ask(&mut s, client(1, 1, 7), "").as_deref(), Some("m1 1\n"));
    assert_eq!(ask(&mut s, client(3, 1, 7), "").as_deref(), Some("m1 1\n"));
    s.handle_commit(NOW, 2, &[M1, M2], &even());
    assert_eq!(ask(&mut s, client(1, 1, 7), ""), None);
}
