use super::*;
use igmp_ext::Slicing;
use std::net::{Ipv4Addr, SocketAddrV4};

const NOW: Instant = Instant::from_secs(1_000);
const M1: MemberId = MemberId(1);
const M2: MemberId = MemberId(2);

fn client(last: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, last), port))
}

/// Four units by the two low address bits; `owners[i]` owns unit i.
fn alloc(owners: [Option<MemberId>; 4]) -> Allocation {
    Allocation::from_unit_owners(Slicing::LowOrder { bits: 2 }, owners.to_vec()).unwrap()
}

/// M1 owns the even addresses (units 0 and 2), M2 the odd ones.
fn even() -> Allocation {
    alloc([Some(M1), Some(M2), Some(M1), Some(M2)])
}

fn all(m: MemberId) -> Allocation {
    alloc([Some(m); 4])
}

fn service(strategy: Strategy) -> Service {
    let mut s = Service::new(M1, strategy, Duration::from_secs(60), 3);
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

fn ask(s: &mut Service, c: SocketAddr, payload: &str) -> Vec<String> {
    texts(&s.handle_datagram(NOW, c, payload.as_bytes()))
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

#[test]
fn counts_per_client_address_and_port() {
    let mut s = service(Strategy::Reset);
    assert_eq!(ask(&mut s, client(2, 7), "hello"), ["m1 1\n"]);
    assert_eq!(ask(&mut s, client(2, 7), "hello"), ["m1 2\n"]);
    assert_eq!(ask(&mut s, client(2, 8), ""), ["m1 1\n"]);
    assert_eq!(ask(&mut s, client(4, 7), "hello"), ["m1 1\n"]);
    assert_eq!(s.counters().served, 4);
}

#[test]
fn a_repeated_request_id_gets_the_same_number() {
    let mut s = service(Strategy::Reset);
    assert_eq!(ask(&mut s, client(2, 7), "r1"), ["m1 1 r1\n"]);
    assert_eq!(ask(&mut s, client(2, 7), "r1\n"), ["m1 1 r1\n"]);
    assert_eq!(ask(&mut s, client(2, 7), "r2"), ["m1 2 r2\n"]);
    // An older id is a stale duplicate: no answer, no number used.
    assert!(ask(&mut s, client(2, 7), "r1").is_empty());
    assert_eq!(s.counters().stale, 1);
    // Without an id every datagram is a new request.
    assert_eq!(ask(&mut s, client(2, 7), "r"), ["m1 3\n"]);
    assert_eq!(s.counters().retransmits, 1);
    assert_eq!(request_id(b"r18446744073709551615"), Some(u64::MAX));
    assert_eq!(request_id(b"r18446744073709551616"), None);
    assert_eq!(request_id(&[0xff, b'r', b'1']), None);
}

#[test]
fn other_members_clients_are_filtered() {
    let mut s = service(Strategy::Reset);
    assert!(ask(&mut s, client(3, 7), "r1").is_empty());
    assert_eq!(s.counters().filtered, 1);
    assert_eq!(s.session_count(), 0);
    // Before any commit nothing is ours.
    let mut fresh = Service::new(M1, Strategy::Reset, Duration::from_secs(1), 9);
    assert!(ask(&mut fresh, client(2, 7), "").is_empty());
}

#[test]
fn full_table_refuses_new_clients_but_serves_known_ones() {
    let mut s = service(Strategy::Reset);
    for p in 1..=3 {
        assert_eq!(ask(&mut s, client(2, p), "").len(), 1);
    }
    assert!(ask(&mut s, client(2, 4), "").is_empty());
    assert_eq!(s.counters().refused_full, 1);
    assert_eq!(ask(&mut s, client(2, 1), "").len(), 1);
}

#[test]
fn reset_strategy_resets_moved_sessions_only() {
    let mut s = service(Strategy::Reset);
    for c in [2, 4, 6] {
        ask(&mut s, client(c, 7), "");
    }
    // Unit 2 (10.1.0.2, 10.1.0.6) moves to M2; 10.1.0.4 (unit 0) keeps its session.
    let out = s.handle_commit(
        NOW,
        2,
        &[M1, M2],
        &alloc([Some(M1), Some(M2), Some(M2), Some(M2)]),
    );
    assert_eq!(
        texts(&out),
        vec![
            (client(2, 7), "m1 reset\n".to_owned()),
            (client(6, 7), "m1 reset\n".to_owned())
        ]
    );
    assert_eq!(out.len(), 2, "no state is sent under reset");
    assert_eq!(s.counters().resets, 2);
    assert_eq!(s.session_count(), 1);
    assert_eq!(ask(&mut s, client(4, 7), ""), ["m1 2\n"]);
}

#[test]
fn pin_drops_moved_sessions_silently() {
    let mut s = service(Strategy::Pin);
    ask(&mut s, client(2, 7), "");
    assert!(s.handle_commit(NOW, 2, &[M2], &all(M2)).is_empty());
    assert_eq!(s.session_count(), 0);
}

#[test]
fn idle_sessions_expire() {
    let mut s = service(Strategy::Reset);
    ask(&mut s, client(2, 7), "");
    s.handle_timeout(NOW.saturating_add(Duration::from_secs(59)));
    assert_eq!(s.session_count(), 1);
    s.handle_timeout(NOW.saturating_add(Duration::from_secs(60)));
    assert_eq!(s.session_count(), 0);
    assert_eq!(ask(&mut s, client(2, 7), ""), ["m1 1\n"]);
}

/// M1 alone serves `clients` `n` requests each (ids r1..rn), then M2 arrives and takes units
/// 1 and 3 (the odd addresses). Returns both services (M2 has committed too) and M1's actions.
fn move_odd_units(
    strategy: Strategy,
    clients: &[SocketAddr],
    n: u64,
) -> (Service, Service, Vec<Action>) {
    let mut old = Service::new(M1, strategy, Duration::from_secs(60), 100);
    old.handle_commit(NOW, 1, &[M1], &all(M1));
    for c in clients {
        for r in 1..=n {
            assert_eq!(
                ask(&mut old, *c, &format!("r{r}")),
                [format!("m1 {r} r{r}\n")]
            );
        }
    }
    let mut new = Service::new(M2, strategy, Duration::from_secs(60), 100);
    new.handle_commit(NOW, 1, &[M1], &all(M1));
    let out = old.handle_commit(NOW, 2, &[M1, M2], &even());
    assert!(new.handle_commit(NOW, 2, &[M1, M2], &even()).is_empty());
    (old, new, out)
}

fn state_to(out: &[Action], member: MemberId) -> (u64, Vec<u8>) {
    let found: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::SendState {
                to,
                transfer_id,
                data,
            } if *to == member => Some((*transfer_id, data.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "{out:?}");
    found[0].clone()
}

#[test]
fn handoff_continues_moved_sessions_at_the_new_owner() {
    let moving = client(3, 7);
    let staying = client(4, 7);
    let (mut old, mut new, out) = move_odd_units(Strategy::Handoff, &[moving, staying], 2);
    let (id, data) = state_to(&out, M2);
    assert_eq!(id, 2);
    assert_eq!(old.counters().handed_off, 1);
    assert!(old.has_moved_sessions(), "transfer not yet acknowledged");
    old.handle_transfer_done(M2, 2);
    assert!(!old.has_moved_sessions());
    // The old owner no longer answers the moved client; the other continues.
    assert!(ask(&mut old, moving, "r3").is_empty());
    assert_eq!(ask(&mut old, staying, "r3"), ["m1 3 r3\n"]);

    // At the new owner the moved client and a new one in the moved units wait for the state.
    let newcomer = client(5, 9);
    assert!(ask(&mut new, moving, "r3").is_empty());
    assert!(ask(&mut new, newcomer, "r1").is_empty());
    assert_eq!(new.counters().held, 2);
    assert!(new.poll_timeout().is_some());
    let mut released = texts(&new.handle_state(NOW, M1, &data));
    released.sort();
    assert_eq!(
        released,
        vec![
            (moving, "m2 3 r3\n".to_owned()),
            (newcomer, "m2 1 r1\n".to_owned())
        ]
    );
    assert_eq!(new.poll_timeout(), None);
    assert_eq!(new.counters().received, 1);
    // The retransmission of a request the old owner answered gets the same number.
    assert_eq!(ask(&mut new, moving, "r3"), ["m2 3 r3\n"]);
    assert_eq!(ask(&mut new, moving, "r4"), ["m2 4 r4\n"]);
}

#[test]
fn state_that_arrives_before_the_commit_is_applied_at_the_commit() {
    let moving = client(3, 7);
    let mut old = Service::new(M1, Strategy::Handoff, Duration::from_secs(60), 100);
    old.handle_commit(NOW, 1, &[M1], &all(M1));
    ask(&mut old, moving, "r1");
    let (_, data) = state_to(&old.handle_commit(NOW, 2, &[M1, M2], &even()), M2);
    // A member that just started: no previous allocation, the state comes first. It is taken
    // once the previous allocation (fetched by the control channel) shows M1 owned the units.
    let mut new = Service::new(M2, Strategy::Handoff, Duration::from_secs(60), 100);
    assert!(new.handle_state(NOW, M1, &data).is_empty());
    new.handle_commit(NOW, 2, &[M1, M2], &even());
    new.handle_previous(NOW, &all(M1));
    assert_eq!(ask(&mut new, moving, "r2"), ["m2 2 r2\n"]);
}

#[test]
fn without_state_held_clients_start_fresh_after_the_hold_time() {
    let moving = client(3, 7);
    let (_old, mut new, _) = move_odd_units(Strategy::Handoff, &[moving], 2);
    let new = &mut new;
    assert!(ask(new, moving, "r3").is_empty());
    let deadline = new.poll_timeout().expect("waiting");
    assert!(new.handle_timeout(Instant(deadline.0 - 1)).is_empty());
    let out = texts(&new.handle_timeout(deadline));
    assert_eq!(out, vec![(moving, "m2 1 r3\n".to_owned())]);
    assert_eq!(new.counters().handoff_timeouts, 1);
}

#[test]
fn units_gained_from_an_unlisted_member_still_take_its_state() {
    // M1 is declared down (not listed) while it is alive and sends its sessions anyway.
    let moving = client(4, 7);
    let mut old = Service::new(M1, Strategy::Handoff, Duration::from_secs(60), 100);
    old.handle_commit(NOW, 1, &[M1], &even());
    assert_eq!(ask(&mut old, moving, "r1"), ["m1 1 r1\n"]);
    let (_, data) = state_to(&old.handle_commit(NOW, 2, &[M2], &all(M2)), M2);
    let mut new = Service::new(M2, Strategy::Handoff, Duration::from_secs(60), 100);
    new.handle_commit(NOW, 1, &[M1, M2], &even());
    new.handle_commit(NOW, 2, &[M2], &all(M2));
    assert!(ask(&mut new, moving, "r2").is_empty(), "held");
    assert_eq!(
        texts(&new.handle_state(NOW, M1, &data)),
        vec![(moving, "m2 2 r2\n".to_owned())]
    );
    // A client of a member that really crashed starts fresh after the hold time.
    let other = client(8, 7);
    let mut fresh = Service::new(M2, Strategy::Handoff, Duration::from_secs(60), 100);
    fresh.handle_commit(NOW, 1, &[M1, M2], &even());
    fresh.handle_commit(NOW, 2, &[M2], &all(M2));
    assert!(ask(&mut fresh, other, "r5").is_empty());
    let deadline = fresh.poll_timeout().expect("waiting");
    assert_eq!(
        texts(&fresh.handle_timeout(deadline)),
        vec![(other, "m2 1 r5\n".to_owned())]
    );
    assert_eq!(fresh.counters().handoff_timeouts, 1);
}

/// A unit gained from a member the commit no longer lists and the router found dead: its
/// clients are answered at once, fresh, with no hold; a member only the control group dropped
/// still gets the hold (it may be alive and sending its sessions).
#[test]
fn units_of_a_member_the_router_found_dead_are_not_held() {
    let other = client(8, 7);
    let mut new = Service::new(M2, Strategy::Handoff, Duration::from_secs(60), 100);
    new.handle_commit(NOW, 1, &[M1, M2], &even());
    new.note_found_dead(M1, true);
    new.handle_commit(NOW, 2, &[M2], &all(M2));
    assert_eq!(ask(&mut new, other, "r5"), ["m2 1 r5\n"]);
    assert_eq!(new.counters().handoff_timeouts, 0);
    // Back: the next loss of M1's units (listed again, then not) holds as before.
    new.note_found_dead(M1, false);
    new.handle_commit(NOW, 3, &[M1, M2], &even());
    new.handle_commit(NOW, 4, &[M2], &all(M2));
    assert!(ask(&mut new, client(12, 7), "r1").is_empty(), "held");
}

#[test]
fn forwarding_survives_a_brief_loss_of_the_slice_but_not_the_old_owner() {
    let moving = client(3, 7);
    let (_old, mut new, out) = move_odd_units(Strategy::Forward, &[moving], 2);
    let (_, data) = state_to(&out, M2);
    new.handle_state(NOW, M1, &data);
    // A flap: M2 loses every unit and gets them back; M1 is still listed.
    new.handle_commit(NOW, 3, &[M1], &all(M1));
    new.handle_commit(NOW, 4, &[M1, M2], &even());
    assert!(matches!(
        new.handle_datagram(NOW, moving, b"r3").as_slice(),
        [Action::Forward { to: M1, .. }]
    ));
    // M1 falsely declared down for one commit: still forwarded.
    new.handle_commit(NOW, 5, &[M2], &all(M2));
    new.handle_commit(NOW, 6, &[M1, M2], &even());
    assert!(matches!(
        new.handle_datagram(NOW, moving, b"r4").as_slice(),
        [Action::Forward { to: M1, .. }]
    ));
    // M1 gone for good: after one hold time the client starts fresh here.
    new.handle_commit(NOW, 7, &[M2], &all(M2));
    let deadline = new.poll_timeout().expect("waiting");
    new.handle_timeout(deadline);
    assert_eq!(ask(&mut new, moving, "r5"), ["m2 1 r5\n"]);
}

#[test]
fn state_from_a_member_that_did_not_own_the_units_is_ignored() {
    let moving = client(3, 7);
    let (_old, mut new, out) = move_odd_units(Strategy::Handoff, &[moving], 2);
    let (_, data) = state_to(&out, M2);
    // The same bytes claimed by member 3 (it signed them itself, but never owned the units).
    assert!(new.handle_state(NOW, MemberId(3), &data).is_empty());
    assert_eq!(new.counters().received, 0);
    assert!(new.handle_state(NOW, M1, b"garbage").is_empty());
    assert_eq!(new.counters().bad_state, 1);
    assert!(new.poll_timeout().is_some(), "still waiting for M1");
}

#[test]
fn forward_passes_moved_sessions_to_the_old_owner_and_serves_new_ones() {
    let moving = client(3, 7);
    let (mut old, mut new, out) = move_odd_units(Strategy::Forward, &[moving], 2);
    let (_, data) = state_to(&out, M2);
    assert!(old.has_moved_sessions(), "the old owner keeps the session");
    old.handle_transfer_done(M2, 2);
    assert!(old.has_moved_sessions(), "until it ends");
    // A direct datagram from the moved client is not the old owner's any more.
    assert!(ask(&mut old, moving, "r3").is_empty());

    assert!(ask(&mut new, moving, "r3").is_empty(), "held for the list");
    let released = new.handle_state(NOW, M1, &data);
    assert_eq!(
        released,
        vec![Action::Forward {
            to: M1,
            client: moving,
            payload: b"r3".to_vec()
        }]
    );
    assert_eq!(new.counters().forwarded, 1);
    // A new client in the moved units is the new owner's.
    assert_eq!(ask(&mut new, client(5, 1), "r1"), ["m2 1 r1\n"]);

    let reply = old
        .handle_forwarded(NOW, M2, moving, b"r3")
        .expect("served");
    assert_eq!(reply.payload, b"m1 3 r3\n");
    assert_eq!(reply.to, moving);
    assert_eq!(old.counters().forwarded_served, 1);
    // Only the slice's owner may forward, and only for sessions held here.
    assert_eq!(old.handle_forwarded(NOW, MemberId(3), moving, b"r4"), None);
    assert_eq!(old.handle_forwarded(NOW, M2, client(5, 1), b"r1"), None);
    assert_eq!(old.counters().forward_refused, 2);

    // The forwarded session ends with the idle time on both sides.
    let later = NOW.saturating_add(Duration::from_secs(60));
    old.handle_timeout(later);
    new.handle_timeout(later);
    assert!(!old.has_moved_sessions());
    assert_eq!(ask(&mut new, moving, "r1"), ["m2 1 r1\n"]);
}

#[test]
fn a_forwarded_session_whose_slice_comes_back_is_served_directly_again() {
    let moving = client(3, 7);
    let (mut old, _new, _) = move_odd_units(Strategy::Forward, &[moving], 2);
    old.handle_transfer_done(M2, 2);
    assert!(old.has_moved_sessions());
    old.handle_commit(NOW, 3, &[M1], &all(M1));
    assert!(!old.has_moved_sessions());
    assert_eq!(ask(&mut old, moving, "r3"), ["m1 3 r3\n"]);
}

#[test]
fn sessions_of_unowned_units_wait_for_the_next_owner() {
    let c = client(3, 7);
    let mut old = Service::new(M1, Strategy::Handoff, Duration::from_secs(60), 100);
    old.handle_commit(NOW, 1, &[M1], &all(M1));
    assert_eq!(ask(&mut old, c, "r1"), ["m1 1 r1\n"]);
    let mut new = Service::new(M2, Strategy::Handoff, Duration::from_secs(60), 100);
    new.handle_commit(NOW, 1, &[M1], &all(M1));
    // A flap leaves every unit unowned: nothing to send, the session stays (unserved).
    let nobody = alloc([None; 4]);
    assert!(old.handle_commit(NOW, 2, &[M1, M2], &nobody).is_empty());
    assert!(ask(&mut old, c, "r2").is_empty());
    new.handle_commit(NOW, 2, &[M1, M2], &nobody);
    // Then M2 gets everything: M1 sends the session, naming the units.
    let (_, data) = state_to(&old.handle_commit(NOW, 3, &[M1, M2], &all(M2)), M2);
    new.handle_commit(NOW, 3, &[M1, M2], &all(M2));
    assert!(ask(&mut new, c, "r2").is_empty(), "held");
    assert_eq!(
        texts(&new.handle_state(NOW, M1, &data)),
        vec![(c, "m2 2 r2\n".to_owned())]
    );
}

#[test]
fn requests_held_while_the_old_owner_still_answered_them_use_no_number() {
    // Behind a flooding switch the new owner commits first and holds r1, r2 while the old
    // owner, not yet committed, still answers them; its state then says "last r2 = 2".
    let c = client(3, 7);
    let mut old = Service::new(M1, Strategy::Handoff, Duration::from_secs(60), 100);
    old.handle_commit(NOW, 1, &[M1], &all(M1));
    let mut new = Service::new(M2, Strategy::Handoff, Duration::from_secs(60), 100);
    new.handle_commit(NOW, 1, &[M1], &all(M1));
    new.handle_commit(NOW, 2, &[M1, M2], &even());
    for r in ["r1", "r2"] {
        assert!(ask(&mut new, c, r).is_empty(), "held");
        assert_eq!(ask(&mut old, c, r).len(), 1);
    }
    let (_, data) = state_to(&old.handle_commit(NOW, 2, &[M1, M2], &even()), M2);
    // r1 is stale, r2 is answered again with its number; r3 continues.
    assert_eq!(
        texts(&new.handle_state(NOW, M1, &data)),
        vec![(c, "m2 2 r2\n".to_owned())]
    );
    assert_eq!(ask(&mut new, c, "r3"), ["m2 3 r3\n"]);
    assert_eq!(new.counters().stale, 1);
}

/// In its first commit a member does not know who owned its units before: state for them is
/// accepted only once the previous allocation names the sender as their owner, so another
/// certified member cannot plant sessions (issue 13, control-channel defect 2).
#[test]
fn first_commit_takes_state_only_from_the_previous_owner() {
    let moving = client(3, 7);
    let mut old = Service::new(M1, Strategy::Handoff, Duration::from_secs(60), 100);
    old.handle_commit(NOW, 1, &[M1], &all(M1));
    ask(&mut old, moving, "r1");
    let (_, data) = state_to(&old.handle_commit(NOW, 2, &[M1, M2], &even()), M2);
    let mut new = Service::new(M2, Strategy::Handoff, Duration::from_secs(60), 100);
    new.handle_commit(NOW, 2, &[M1, M2], &even());
    // Member 3 replays (re-signs) M1's state as its own: never an owner of these units.
    assert!(new.handle_state(NOW, MemberId(3), &data).is_empty());
    assert_eq!(new.counters().received, 0);
    assert!(ask(&mut new, moving, "r2").is_empty(), "still held");
    // The previous allocation arrives: M1 owned the units, M3's copy stays refused.
    assert_eq!(
        texts(&new.handle_previous(NOW, &all(M1))),
        Vec::<(SocketAddr, String)>::new()
    );
    assert_eq!(new.counters().received, 0);
    assert_eq!(
        texts(&new.handle_state(NOW, M1, &data)),
        vec![(moving, "m2 2 r2\n".to_owned())]
    );
}
