//! Forged, replayed, truncated, unknown-version, oversized and uncertified messages are dropped
//! with their reason and change nothing (SPEC.md §9.2).

use control_channel::wire::{self, EpochId, Header, Heartbeat, Hello, Message, Proposal};
use control_channel::{Clock, Config, DropReason, Endpoint, Identity, Instant};
use igmp_ext::ed25519_dalek::SigningKey;
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::{CertificateBody, KeyId, MemberId, SliceSet, Timestamp};
use std::net::SocketAddr;

/// The receiver's clocks at wall time `wall` (its monotonic clock is irrelevant here).
fn clock(wall: Timestamp) -> Clock {
    Clock::new(Instant(0), wall)
}

fn from() -> SocketAddr {
    "10.0.0.2:4000".parse().expect("address")
}

fn header(sender: u32, seq: u64) -> Header {
    Header {
        cluster: u32::from(Fixture::new(0).group),
        sender: MemberId(sender),
        epoch: 0,
        sequence: seq,
        timestamp: NOW,
    }
}

fn hello(f: &Fixture, i: usize, seq: u64) -> Vec<u8> {
    let m = &f.members[i];
    Message::Hello(Hello {
        certificate: m.cert.as_bytes().to_vec(),
        weight: 1,
        reply_wanted: false,
    })
    .encode_signed(&header(m.id.0, seq), &m.key)
    .expect("fits")
}

fn heartbeat(key: &SigningKey, sender: u32, seq: u64) -> Vec<u8> {
    Message::Heartbeat(Heartbeat {
        weight: 1,
        heard: vec![],
        committed: EpochId::default(),
        digest: 0,
        load: vec![],
    })
    .encode_signed(&header(sender, seq), key)
    .expect("fits")
}

fn receiver(f: &Fixture) -> Endpoint {
    let m = &f.members[0];
    Endpoint::new(
        Config::new(f.group),
        Identity {
            key: m.key.clone(),
            certificate: m.cert.clone(),
        },
        f.group_key.verifying_key(),
        clock(NOW),
    )
}

/// What a refused message must not change.
fn snapshot(e: &Endpoint) -> (Vec<MemberId>, Option<EpochId>, u64) {
    (
        e.live_members(),
        e.committed().map(|c| c.id()),
        e.counters().accepted,
    )
}

#[test]
fn each_bad_input_has_its_reason_and_changes_nothing() {
    let f = Fixture::new(3);
    let mut b = receiver(&f);
    let a = &f.members[1];
    b.handle_datagram(clock(NOW), from(), &hello(&f, 1, 1))
        .expect("certified hello");
    let good = heartbeat(&a.key, a.id.0, 2);
    b.handle_datagram(clock(NOW), from(), &good)
        .expect("heartbeat");
    let before = snapshot(&b);

    let mut cases: Vec<(Vec<u8>, DropReason)> = Vec::new();
    cases.push((good.clone(), DropReason::Replayed));
    let mut forged = heartbeat(&a.key, a.id.0, 3);
    let at = forged.len() - 70;
    forged[at] ^= 0x01;
    cases.push((forged, DropReason::BadSignature));
    let t = heartbeat(&a.key, a.id.0, 4);
    cases.push((t[..t.len() - 1].to_vec(), DropReason::Truncated));
    let mut v = heartbeat(&a.key, a.id.0, 5);
    v[2] = 9;
    cases.push((v, DropReason::UnknownVersion));
    cases.push((vec![0u8; wire::MAX_DATAGRAM + 1], DropReason::Oversized));
    let mut ty = heartbeat(&a.key, a.id.0, 6);
    ty[3] = 0x77;
    cases.push((ty, DropReason::UnknownType));
    // Member 3 never said hello.
    let c = &f.members[2];
    cases.push((heartbeat(&c.key, c.id.0, 1), DropReason::UnknownSender));
    // Signed by member 2's key but claiming to be member 3.
    cases.push((heartbeat(&a.key, c.id.0, 1), DropReason::UnknownSender));
    let mut wrong_cluster = Header {
        cluster: 0x0a00_0001,
        ..header(a.id.0, 7)
    };
    wrong_cluster.sequence = 7;
    cases.push((
        Message::Heartbeat(Heartbeat {
            weight: 1,
            heard: vec![],
            committed: EpochId::default(),
            digest: 0,
            load: vec![],
        })
        .encode_signed(&wrong_cluster, &a.key)
        .expect("fits"),
        DropReason::WrongCluster,
    ));
    let stale = Header {
        timestamp: Timestamp(NOW.0 - 60_000),
        ..header(a.id.0, 8)
    };
    cases.push((
        Message::Heartbeat(Heartbeat {
            weight: 1,
            heard: vec![],
            committed: EpochId::default(),
            digest: 0,
            load: vec![],
        })
        .encode_signed(&stale, &a.key)
        .expect("fits"),
        DropReason::Untimely,
    ));

    // Operator requests go through the same pipeline: forged or uncertified ones stop early.
    let request = |key: &SigningKey, sender: u32, seq: u64| {
        Message::Request(wire::Request {
            request_id: 1,
            action: wire::RequestAction::Drain { member: 1 },
            authority: None,
        })
        .encode_signed(&header(sender, seq), key)
        .expect("fits")
    };
    let mut forged_request = request(&a.key, a.id.0, 9);
    let at = wire::HEADER_LEN + 1;
    forged_request[at] ^= 0x01;
    cases.push((forged_request, DropReason::BadSignature));
    cases.push((request(&c.key, c.id.0, 2), DropReason::UnknownSender));

    for (bytes, reason) in cases {
        let before_count = b.counters().dropped(reason);
        assert_eq!(b.handle_datagram(clock(NOW), from(), &bytes), Err(reason));
        assert_eq!(b.counters().dropped(reason), before_count + 1);
        assert_eq!(snapshot(&b), before, "{reason:?} changed state");
    }
    // The refusals did not poison the replay window: the next real message passes.
    b.handle_datagram(clock(NOW), from(), &heartbeat(&a.key, a.id.0, 3))
        .expect("fresh heartbeat after refusals");
}

#[test]
fn member_without_valid_certificate_cannot_join_or_propose() {
    let f = Fixture::new(2);
    let mut b = receiver(&f);
    // A certificate for member 7 issued by some other key.
    let rogue_group = SigningKey::from_bytes(&[0x66; 32]);
    let rogue_key = SigningKey::from_bytes(&[0x77; 32]);
    let cert = CertificateBody {
        member_id: MemberId(7),
        member_key: rogue_key.verifying_key(),
        issuer: KeyId::of(&rogue_group.verifying_key()),
        not_before: Timestamp::from_secs(1_767_225_600),
        not_after: Timestamp::from_secs(1_830_297_600),
        groups: vec![f.group],
        slices: SliceSet::full(),
    }
    .issue(&rogue_group)
    .expect("issuer matches");
    let h = Message::Hello(Hello {
        certificate: cert.as_bytes().to_vec(),
        weight: 100,
        reply_wanted: false,
    })
    .encode_signed(&header(7, 1), &rogue_key)
    .expect("fits");
    assert_eq!(
        b.handle_datagram(clock(NOW), from(), &h),
        Err(DropReason::BadCertificate)
    );
    let p = Message::Proposal(Proposal {
        id: EpochId {
            epoch: 99,
            proposer: 7,
            incarnation: 0,
        },
        members: vec![(7, 1)],
        owners: vec![0; 256],
        base: EpochId::default(),
        signature: vec![],
        scope: None,
    })
    .encode_signed(&header(7, 2), &rogue_key)
    .expect("fits");
    assert_eq!(
        b.handle_datagram(clock(NOW), from(), &p),
        Err(DropReason::UnknownSender)
    );
    assert!(b.committed().is_none());
    // A genuine certificate presented under another member's id is refused too.
    let impostor = Message::Hello(Hello {
        certificate: f.members[1].cert.as_bytes().to_vec(),
        weight: 1,
        reply_wanted: false,
    })
    .encode_signed(&header(9, 1), &f.members[1].key)
    .expect("fits");
    assert_eq!(
        b.handle_datagram(clock(NOW), from(), &impostor),
        Err(DropReason::BadCertificate)
    );
    // An expired certificate.
    let late = Timestamp::from_secs(1_830_297_601);
    let mut late_b = Endpoint::new(
        Config::new(f.group),
        Identity {
            key: f.members[0].key.clone(),
            certificate: f.members[0].cert.clone(),
        },
        f.group_key.verifying_key(),
        clock(late),
    );
    let h = Message::Hello(Hello {
        certificate: f.members[1].cert.as_bytes().to_vec(),
        weight: 1,
        reply_wanted: false,
    })
    .encode_signed(
        &Header {
            timestamp: late,
            ..header(2, 1)
        },
        &f.members[1].key,
    )
    .expect("fits");
    assert_eq!(
        late_b.handle_datagram(clock(late), from(), &h),
        Err(DropReason::BadCertificate)
    );
}

/// During a group key rotation the keystore publishes two keys; a member reissued under the
/// new one is refused until the endpoint is told the published keys, then accepted; a key
/// nobody published stays refused.
#[test]
fn certificates_from_every_published_group_key_are_accepted() {
    let f = Fixture::new(2);
    let mut b = receiver(&f);
    let new_group = SigningKey::from_bytes(&[0x31; 32]);
    let member_key = SigningKey::from_bytes(&[0x32; 32]);
    let cert = CertificateBody {
        member_id: MemberId(5),
        member_key: member_key.verifying_key(),
        issuer: KeyId::of(&new_group.verifying_key()),
        not_before: Timestamp::from_secs(1_767_225_600),
        not_after: Timestamp::from_secs(1_830_297_600),
        groups: vec![f.group],
        slices: SliceSet::full(),
    }
    .issue(&new_group)
    .expect("issuer matches");
    let hello_from_5 = |seq| {
        Message::Hello(Hello {
            certificate: cert.as_bytes().to_vec(),
            weight: 1,
            reply_wanted: false,
        })
        .encode_signed(&header(5, seq), &member_key)
        .expect("fits")
    };
    assert_eq!(
        b.handle_datagram(clock(NOW), from(), &hello_from_5(1)),
        Err(DropReason::BadCertificate)
    );
    // Only some other key published besides ours: still refused.
    let unrelated = SigningKey::from_bytes(&[0x33; 32]).verifying_key();
    b.set_group_keys(&[f.group_key.verifying_key(), unrelated]);
    assert_eq!(
        b.handle_datagram(clock(NOW), from(), &hello_from_5(2)),
        Err(DropReason::BadCertificate)
    );
    b.set_group_keys(&[f.group_key.verifying_key(), new_group.verifying_key()]);
    assert_eq!(
        b.handle_datagram(clock(NOW), from(), &hello_from_5(3)),
        Ok(())
    );
    assert!(b.known_peers().contains(&MemberId(5)));
    // Members certified by our own key are accepted as before.
    assert_eq!(
        b.handle_datagram(clock(NOW), from(), &hello(&f, 1, 1)),
        Ok(())
    );
}

#[test]
fn proposals_breaking_the_decision_rule_are_refused() {
    let f = Fixture::new(3);
    // Member 3 receives; it hears member 2, never member 1: its view is {2, 3}.
    let m3 = &f.members[2];
    let mut b = Endpoint::new(
        Config::new(f.group),
        Identity {
            key: m3.key.clone(),
            certificate: m3.cert.clone(),
        },
        f.group_key.verifying_key(),
        clock(NOW),
    );
    let a = &f.members[1];
    b.handle_datagram(clock(NOW), from(), &hello(&f, 1, 1))
        .expect("hello");
    let cluster = u32::from(f.group);
    let propose = |seq: u64, mut p: Proposal| {
        p.sign(cluster, &a.key);
        Message::Proposal(p)
            .encode_signed(&header(a.id.0, seq), &a.key)
            .expect("fits")
    };
    let id = EpochId {
        epoch: 5,
        proposer: 2,
        incarnation: 0,
    };
    let proposal = |id, members, owners| Proposal {
        id,
        members,
        owners,
        base: EpochId::default(),
        signature: vec![],
        scope: None,
    };
    let halves = |shift: usize| {
        (0..256)
            .map(|i| ((i + shift) % 2) as u8)
            .collect::<Vec<_>>()
    };
    // Weights ignored: member 2 takes everything although member 3 has equal weight.
    let greedy = propose(2, proposal(id, vec![(2, 1), (3, 1)], vec![0; 256]));
    b.handle_datagram(clock(NOW), from(), &greedy)
        .expect("authentic");
    assert_eq!(b.counters().dropped(DropReason::InvalidProposal), 1);
    // Proposer is not the lowest member listed.
    let usurper = propose(3, proposal(id, vec![(1, 1), (2, 1)], halves(0)));
    b.handle_datagram(clock(NOW), from(), &usurper)
        .expect("authentic");
    assert_eq!(b.counters().dropped(DropReason::InvalidProposal), 2);
    // In member 1's name, signed by member 2: not its proposer's signature.
    let mut forged = proposal(
        EpochId { proposer: 1, ..id },
        vec![(1, 1), (3, 1)],
        halves(0),
    );
    forged.sign(cluster, &a.key);
    let forged = Message::Proposal(forged)
        .encode_signed(&header(a.id.0, 4), &a.key)
        .expect("fits");
    b.handle_datagram(clock(NOW), from(), &forged)
        .expect("authentic");
    assert_eq!(b.counters().dropped(DropReason::Unauthorized), 1);
    // An epoch far beyond anything committed.
    let far = propose(
        5,
        proposal(
            EpochId {
                epoch: u64::MAX,
                ..id
            },
            vec![(2, 1), (3, 1)],
            halves(0),
        ),
    );
    b.handle_datagram(clock(NOW), from(), &far)
        .expect("authentic");
    assert_eq!(b.counters().dropped(DropReason::InvalidProposal), 3);
    assert!(b.committed().is_none());
    // A valid one commits; an older one afterwards is stale.
    let fair = propose(6, proposal(id, vec![(2, 1), (3, 1)], halves(0)));
    b.handle_datagram(clock(NOW), from(), &fair)
        .expect("authentic");
    assert_eq!(b.committed().map(|c| c.id()), Some(id));
    let older = propose(
        7,
        proposal(EpochId { epoch: 4, ..id }, vec![(2, 1), (3, 1)], halves(1)),
    );
    b.handle_datagram(clock(NOW), from(), &older)
        .expect("authentic");
    assert_eq!(b.counters().dropped(DropReason::StaleEpoch), 1);
    assert_eq!(b.committed().map(|c| c.id()), Some(id));
}

/// A certified member cannot make a receiver hold unbounded transfers: at most
/// `MAX_INCOMING_PER_SENDER` from one member (more are refused), and a transfer without a chunk
/// for `transfer_linger` is dropped.
#[test]
fn incoming_transfers_are_bounded_per_sender_and_pruned() {
    use control_channel::endpoint::MAX_INCOMING_PER_SENDER;
    let f = Fixture::new(2);
    let mut b = receiver(&f);
    let a = &f.members[1];
    b.handle_datagram(clock(NOW), from(), &hello(&f, 1, 1))
        .expect("hello");
    for t in 0..100u64 {
        let chunk = Message::StateChunk(wire::StateChunk {
            transfer_id: t,
            offset: 0,
            total: 1 << 20,
            data: vec![0xa5; 1000],
        })
        .encode_signed(&header(a.id.0, 2 + t), &a.key)
        .expect("fits");
        b.handle_datagram(clock(NOW), from(), &chunk)
            .expect("authentic");
    }
    assert_eq!(b.incoming_transfers(), MAX_INCOMING_PER_SENDER);
    let later = Clock::new(
        Instant(b.config().transfer_linger.as_millis() as u64),
        Timestamp(NOW.0 + 10_000),
    );
    b.handle_timeout(later);
    assert_eq!(b.incoming_transfers(), 0);
}
