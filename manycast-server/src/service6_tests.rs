use super::*;
use igmp_ext::{Allocation, Slice6};

const NOW: Instant = Instant::from_secs(1_000);
const M1: MemberId = MemberId(1);
const M2: MemberId = MemberId(2);
/// Four units by the two low address bits (IPv4), the two low bits of the /56 (IPv6).
const SLICING: Slicing = Slicing::LowOrder { bits: 2 };

/// A client of site `site` (its /56 is 2001:db8:0:<site>00::/56), host `host`.
fn client(site: u8, host: u16, port: u16) -> SocketAddrV6 {
    let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(site) << 8 | 0x42, 0, 0, 0, host);
    SocketAddrV6::new(ip, port, 0, 0)
}

/// M1's IPv4 slices when `owners[i]` owns unit i.
fn mine(owners: [Option<MemberId>; 4]) -> SliceSet {
    Allocation::from_unit_owners(SLICING, owners.to_vec())
        .unwrap()
        .slices_of(M1)
}

fn service(strategy: Strategy, max_sessions: usize) -> Service6 {
    let mut s = Service6::new(M1, strategy, SLICING, Duration::from_secs(60), max_sessions);
    // M1 owns units 0 and 2 (sites ending in binary 00 and 10).
    let out = s.handle_commit(&mine([Some(M1), Some(M2), Some(M1), Some(M2)]));
    assert!(out.is_empty());
    s
}

fn ask(s: &mut Service6, c: SocketAddrV6, payload: &str) -> Option<String> {
    s.handle_datagram(NOW, c, payload.as_bytes()).map(|r| {
        assert_eq!(r.to, c);
        String::from_utf8(r.payload).unwrap()
    })
}

#[test]
fn the_unit_of_a_source_is_its_index_in_the_site_slicing() {
    let s = service(Strategy::Reset, 10);
    let units = SliceSet6::site_slicing(SLICING.bits());
    for site in [0u8, 1, 2, 3, 4, 7, 0x80, 0xff] {
        for host in [1, 0xffff] {
            let a = *client(site, host, 1).ip();
            let u = s.unit_of(a);
            assert!(units[u].contains_addr(a), "{a} in unit {u}");
        }
    }
    // The interface identifier and the site's own subnet byte do not matter.
    let a: Ipv6Addr = "2001:db8:0:2ff:ffff:ffff:ffff:ffff".parse().unwrap();
    let b: Ipv6Addr = "2001:db8:0:200::1".parse().unwrap();
    assert_eq!((s.unit_of(a), s.unit_of(b)), (2, 2));
}

#[test]
fn the_slices_are_the_ones_the_mld_join_claims() {
    let s = service(Strategy::Reset, 10);
    let entries: Vec<SliceEntry> = mine([Some(M1), Some(M2), Some(M1), Some(M2)])
        .iter()
        .copied()
        .map(SliceEntry::include)
        .collect();
    let claimed: SliceSet6 = units6(SLICING, &entries)
        .into_iter()
        .map(|e| e.slice)
        .collect();
    assert_eq!(s.slices(), &claimed);
    // Units 0 and 2: the /56's lowest bit is 0.
    let expected: SliceSet6 = [Slice6::new(0, 1u128 << 72)].into_iter().collect();
    assert_eq!(s.slices(), &expected);
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
    let labelled = SocketAddrV6::new(*client(0, 1, 7).ip(), 7, 0x12345, 0);
    let r = s.handle_datagram(NOW, labelled, b"").expect("answered");
    assert_eq!((r.to, r.payload), (client(0, 1, 7), b"m1 3\n".to_vec()));
    let c = s.counters();
    assert_eq!((c.served, c.filtered), (5, 2));
    assert_eq!(s.session_count(), 3);
}

#[test]
fn request_ids_repeat_their_number_and_stale_ones_get_none() {
    let mut s = service(Strategy::Reset, 10);
    let c = client(0, 1, 7);
    assert_eq!(ask(&mut s, c, "r5").as_deref(), Some("m1 1 r5\n"));
    assert_eq!(ask(&mut s, c, "r5").as_deref(), Some("m1 1 r5\n"));
    assert_eq!(ask(&mut s, c, "r6").as_deref(), Some("m1 2 r6\n"));
    assert_eq!(ask(&mut s, c, "r4"), None);
    let counts = s.counters();
    assert_eq!((counts.retransmits, counts.stale, counts.served), (1, 1, 3));
}

#[test]
fn before_a_commit_nobody_is_answered() {
    let mut s = Service6::new(M1, Strategy::Reset, SLICING, Duration::from_secs(60), 10);
    assert_eq!(ask(&mut s, client(0, 1, 7), ""), None);
    assert_eq!(s.counters().filtered, 1);
}

#[test]
fn a_full_table_refuses_new_clients_but_serves_known_ones() {
    let mut s = service(Strategy::Reset, 1);
    assert!(ask(&mut s, client(0, 1, 7), "").is_some());
    assert_eq!(ask(&mut s, client(0, 2, 7), ""), None);
    assert_eq!(s.counters().refused_full, 1);
    assert_eq!(ask(&mut s, client(0, 1, 7), "").as_deref(), Some("m1 2\n"));
}

/// Under reset, and under handoff and forward (which carry IPv4 sessions only), the sessions
/// of units that moved away are dropped and their clients told; the others keep counting.
#[test]
fn a_move_resets_the_moved_sessions_only_under_every_strategy_but_pin() {
    for strategy in [Strategy::Reset, Strategy::Handoff, Strategy::Forward] {
        let mut s = service(strategy, 10);
        for c in [client(0, 1, 7), client(2, 1, 7), client(2, 2, 7)] {
            assert!(ask(&mut s, c, "").is_some());
        }
        // Unit 2 moves to M2.
        let out = s.handle_commit(&mine([Some(M1), Some(M2), Some(M2), Some(M2)]));
        let got: Vec<(SocketAddrV6, String)> = out
            .into_iter()
            .map(|r| (r.to, String::from_utf8(r.payload).unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (client(2, 1, 7), "m1 reset\n".to_owned()),
                (client(2, 2, 7), "m1 reset\n".to_owned()),
            ],
            "{strategy:?}"
        );
        assert_eq!(s.counters().resets, 2);
        assert_eq!(s.session_count(), 1);
        assert_eq!(ask(&mut s, client(0, 1, 7), "").as_deref(), Some("m1 2\n"));
        assert_eq!(ask(&mut s, client(2, 1, 7), ""), None, "M2's now");
    }
}

#[test]
fn pin_drops_moved_sessions_without_a_reply() {
    let mut s = service(Strategy::Pin, 10);
    assert!(ask(&mut s, client(2, 1, 7), "").is_some());
    assert!(s.handle_commit(&SliceSet::new()).is_empty());
    assert_eq!((s.session_count(), s.counters().resets), (0, 0));
}

#[test]
fn idle_sessions_expire() {
    let mut s = service(Strategy::Reset, 10);
    assert!(ask(&mut s, client(0, 1, 7), "").is_some());
    s.handle_timeout(NOW.saturating_add(Duration::from_secs(59)));
    assert_eq!(s.session_count(), 1);
    s.handle_timeout(NOW.saturating_add(Duration::from_secs(60)));
    assert_eq!(s.session_count(), 0);
    assert_eq!(ask(&mut s, client(0, 1, 7), "").as_deref(), Some("m1 1\n"));
}

/// While the router's standby notice is in force, the IPv6 counterparts of the standby units
/// are answered too (SPEC.md §5.5); the next commit ends it, as does an inactive notice.
#[test]
fn standby_units_are_answered_while_the_router_steers_them_here() {
    let mut s = service(Strategy::Reset, 10);
    // Unit 1 (site 1) is M2's; M1 stands by for it.
    let theirs = client(1, 5, 7);
    assert_eq!(ask(&mut s, theirs, "1"), None);
    let standby = Allocation::from_unit_owners(SLICING, vec![None, Some(M1), None, None])
        .unwrap()
        .slices_of(M1);
    s.stand_in(&standby);
    assert_eq!(ask(&mut s, theirs, "hello").as_deref(), Some("m1 1\n"));
    assert_eq!(
        ask(&mut s, client(3, 5, 7), "1"),
        None,
        "not a standby unit"
    );
    s.stand_in(&SliceSet::new());
    assert_eq!(ask(&mut s, theirs, "3"), None);
    s.stand_in(&standby);
    s.handle_commit(&mine([Some(M1), Some(M2), Some(M1), Some(M2)]));
    assert_eq!(
        ask(&mut s, client(1, 6, 7), "1"),
        None,
        "the commit ends it"
    );
}
