//! The node with `group6`: IPv6 clients served, moved and forwarded as IPv4 ones.

use super::*;

/// With `group6` the node answers IPv6 clients of its units' IPv6 counterparts, counts their
/// answers as load of those units, and resets the ones a commit moves away.
#[test]
fn ipv6_clients_are_served_by_unit_counted_as_load_and_reset_when_moved() {
    use std::net::Ipv6Addr;
    // A client of site unit `unit` (the low two bits of its /56).
    let client6 = |unit: u16| {
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 7, unit << 8, 0, 0, 0, 1);
        SocketAddrV6::new(ip, 7000, 0, 0)
    };
    let replies6 = |actions: &[Action]| -> Vec<(SocketAddrV6, String)> {
        reply_texts(actions)
            .into_iter()
            .filter_map(|(to, text)| match to {
                SocketAddr::V6(to) => Some((to, text)),
                SocketAddr::V4(_) => None,
            })
            .collect()
    };
    let mut plain = node(native(Strategy::Reset));
    deliver(&mut plain, at(0), commit(1, &[M1, M2], HALF));
    plain.handle_datagram6(at(1), client6(0), b"");
    assert!(
        actions(&mut plain).is_empty(),
        "no IPv6 service without group6"
    );

    let mut n = node(native(Strategy::Reset)).with_service6();
    deliver(&mut n, at(0), commit(1, &[M1, M2], HALF));
    actions(&mut n);
    for unit in [0, 0, 1, 2] {
        n.handle_datagram6(at(1), client6(unit), b"");
    }
    assert_eq!(
        replies6(&actions(&mut n)),
        vec![
            (client6(0), "m1 1\n".to_owned()),
            (client6(0), "m1 2\n".to_owned()),
            (client6(2), "m1 1\n".to_owned()),
        ],
        "units 0 and 2 are ours, unit 1 is M2's"
    );
    n.handle_tick(at(1_000));
    let load: Vec<Vec<(u16, u32)>> = actions(&mut n)
        .into_iter()
        .filter_map(|a| match a {
            Action::SetLoad(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(load, vec![vec![(0, 2), (2, 1)]]);
    // Unit 2 moves to M2: its client is told; unit 0's keeps counting.
    deliver(
        &mut n,
        at(2_000),
        commit(2, &[M1, M2], [Some(M1), Some(M2), Some(M2), Some(M2)]),
    );
    assert_eq!(
        replies6(&actions(&mut n)),
        vec![(client6(2), "m1 reset\n".to_owned())]
    );
    n.handle_datagram6(at(2_001), client6(0), b"");
    assert_eq!(
        replies6(&actions(&mut n)),
        vec![(client6(0), "m1 3\n".to_owned())]
    );
    let mut s = Snapshot::new(M1);
    n.snapshot_into(&mut s);
    assert_eq!(
        (s.service6.served, s.service6.filtered, s.service6.resets),
        (4, 1, 1)
    );
    assert_eq!(s.sessions6, 1);
}

/// A client of site unit `unit` (the low two bits of its /56).
fn client6(unit: u16) -> SocketAddrV6 {
    let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, unit << 8, 0, 0, 0, 1);
    SocketAddrV6::new(ip, 7000, 0, 0)
}

/// Under handoff the node sends a moved IPv6 session to its new owner and, as a new owner,
/// continues one it receives where it stopped (no reset reply, no number twice).
#[test]
fn moved_ipv6_sessions_continue_at_the_new_owner_under_handoff() {
    let mut n = node(native(Strategy::Handoff)).with_service6();
    deliver(&mut n, at(0), commit(1, &[M1], ALL_M1));
    n.handle_datagram6(at(1), client6(1), b"r1");
    n.handle_datagram6(at(2), client6(1), b"r2");
    assert_eq!(reply_texts(&actions(&mut n)).len(), 2);
    deliver(&mut n, at(10), commit(2, &[M1, M2], HALF));
    let out = actions(&mut n);
    assert!(reply_texts(&out).is_empty(), "no reset reply: {out:?}");
    let sent: Vec<StateTransfer> = out
        .iter()
        .filter_map(|a| match a {
            Action::Service(ServiceAction::SendState { to, data, .. }) if *to == M2 => {
                Some(StateTransfer::decode(data).expect("decodes"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1);
    let r = sent[0].sessions6[0];
    assert_eq!(
        (r.client(), r.count, r.last_request),
        (client6(1), 2, Some((2, 2)))
    );

    // The other way: M1 gains units 1 and 3 from M2 and continues M2's IPv6 client.
    let mut n = node(native(Strategy::Handoff)).with_service6();
    deliver(&mut n, at(0), commit(1, &[M1, M2], HALF));
    n.handle_timeout(at(600));
    deliver(&mut n, at(1_000), commit(2, &[M1, M2], ALL_M1));
    n.handle_datagram6(at(1_001), client6(3), b"r5");
    assert!(actions(&mut n).is_empty(), "held until M2's state comes");
    let record = SessionRecord6 {
        addr: client6(3).ip().octets(),
        port: 7000,
        count: 4,
        last_request: Some((4, 4)),
    };
    let data = StateTransfer::new(2, vec![1, 3], Vec::new(), vec![record]).encode();
    n.handle_event(
        at(1_002),
        Event::StateReceived {
            from: M2,
            transfer_id: 2,
            data,
        },
        None,
    );
    assert_eq!(
        reply_texts(&actions(&mut n)),
        vec![(client6(3).into(), "m1 5 r5\n".to_owned())]
    );
    let mut s = Snapshot::new(M1);
    n.snapshot_into(&mut s);
    assert_eq!(
        (s.service6.received, s.service6.resets, s.sessions6),
        (1, 0, 1)
    );
}

/// Under forward the new owner passes a moved IPv6 client's datagrams to the old owner, which
/// answers them (and only for the unit's owner) until the session ends.
#[test]
fn moved_ipv6_sessions_are_forwarded_to_the_old_owner() {
    // New-owner side.
    let mut n = node(native(Strategy::Forward)).with_service6();
    deliver(&mut n, at(0), commit(1, &[M1, M2], HALF));
    n.handle_timeout(at(600));
    deliver(&mut n, at(1_000), commit(2, &[M1, M2], ALL_M1));
    let record = SessionRecord6 {
        addr: client6(1).ip().octets(),
        port: 7000,
        count: 4,
        last_request: None,
    };
    let data = StateTransfer::new(2, vec![1, 3], Vec::new(), vec![record]).encode();
    let event = Event::StateReceived {
        from: M2,
        transfer_id: 2,
        data,
    };
    n.handle_event(at(1_001), event, None);
    actions(&mut n);
    n.handle_datagram6(at(1_002), client6(1), b"r9");
    assert_eq!(
        actions(&mut n),
        vec![Action::Service(ServiceAction::Forward {
            to: M2,
            client: client6(1).into(),
            payload: b"r9".to_vec(),
        })]
    );

    // Old-owner side.
    let mut n = node(native(Strategy::Forward)).with_service6();
    deliver(&mut n, at(0), commit(1, &[M1], ALL_M1));
    n.handle_datagram6(at(1), client6(1), b"r1");
    actions(&mut n);
    deliver(&mut n, at(10), commit(2, &[M1, M2], HALF));
    assert!(reply_texts(&actions(&mut n)).is_empty(), "no reset reply");
    let forwarded = |from| Event::Forwarded {
        from,
        client: client6(1).into(),
        payload: b"r2".to_vec(),
    };
    n.handle_event(at(20), forwarded(MemberId(3)), None);
    assert!(actions(&mut n).is_empty(), "m3 does not own the unit");
    n.handle_event(at(21), forwarded(M2), None);
    assert_eq!(
        reply_texts(&actions(&mut n)),
        vec![(client6(1).into(), "m1 2 r2\n".to_owned())]
    );
}
