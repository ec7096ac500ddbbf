//! One test per rejection reason, plus acceptance, bursts and metrics.

use super::*;
use crate::fixtures::{Fixture, IFINDEX, NOW};
use crate::join::{build_datagram, build_signed_report, SliceEntry};
use crate::wire::igmp::{fill_checksum, ReportRepr};
use crate::wire::ipv4::{Ipv4Repr, HEADER_LEN};

const IP_HEADER: usize = HEADER_LEN + 4; // with Router Alert

fn verifier(f: &Fixture) -> JoinVerifier {
    JoinVerifier::new(VerifierConfig::default(), f.links())
}

fn run(v: &mut JoinVerifier, f: &Fixture, d: &[u8]) -> Result<Accepted, Rejection> {
    v.handle_datagram(NOW, IFINDEX, d, &f.key_source())
}

fn reason(r: Result<Accepted, Rejection>) -> Reason {
    match r {
        Ok(a) => panic!("accepted: {a:?}"),
        Err(e) => e.reason,
    }
}

/// Changes one byte of the IGMP message and fixes the IGMP checksum, so that the change reaches
/// the checks after the checksum.
fn tamper(d: &[u8], igmp_offset: usize, f: impl FnOnce(&mut u8)) -> Vec<u8> {
    let mut d = d.to_vec();
    f(&mut d[IP_HEADER + igmp_offset]);
    fill_checksum(&mut d[IP_HEADER..]);
    d
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn accepts_a_signed_join_and_records_ownership() {
    let f = Fixture::new(2);
    let mut v = verifier(&f);
    let odd = Slice::new(1, 1);
    let Accepted::Join { join, change, .. } = run(&mut v, &f, &f.join(0, &[odd], 1, 1)).unwrap()
    else {
        panic!("not a join")
    };
    assert_eq!(join.member(), MemberId(1));
    assert_eq!(join.group(), f.group);
    assert_eq!(join.slices(), &SliceSet::from(odd));
    assert_eq!(join.epoch(), AllocationEpoch(1));
    assert_eq!(change.gained, vec![(MemberId(1), SliceSet::from(odd))]);
    assert_eq!(
        v.ownership()
            .owner_of(f.group, Ipv4Addr::new(198, 51, 100, 7))
            .unwrap()
            .0,
        MemberId(1)
    );
    assert!(v
        .ownership()
        .owner_of(f.group, Ipv4Addr::new(198, 51, 100, 8))
        .is_none());
    assert_eq!(v.metrics().accepted_joins, 1);
}

#[test]
fn public_groups_pass_as_plain_igmp() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let report = IgmpRepr::V3Report(ReportRepr {
        flags: 0,
        records: vec![GroupRecordRepr {
            record_type: RecordType::ModeIsExclude,
            group: Ipv4Addr::new(239, 1, 1, 1),
            sources: vec![],
            aux_data: vec![],
        }],
        additional_data: vec![],
    });
    let mut igmp = vec![0; report.buffer_len()];
    report.emit(&mut igmp);
    let d = build_datagram(Ipv4Addr::new(10, 0, 0, 9), &igmp);
    assert!(matches!(run(&mut v, &f, &d), Ok(Accepted::Plain { .. })));
    assert_eq!(v.metrics().accepted_plain, 1);
}

#[test]
fn queries_and_v2_messages_for_public_groups_pass_as_plain_igmp() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let query = IgmpRepr::Query(crate::wire::igmp::QueryRepr {
        max_resp_code: 100,
        group: Ipv4Addr::UNSPECIFIED,
        v3: Some(crate::wire::igmp::QueryV3Fields {
            flags: 0,
            suppress: false,
            qrv: 2,
            qqic: 125,
            sources: vec![],
            additional_data: vec![],
        }),
    });
    let v2 = IgmpRepr::V2Report {
        group: Ipv4Addr::new(239, 1, 1, 1),
    };
    for m in [query, v2] {
        let mut igmp = vec![0; m.buffer_len()];
        m.emit(&mut igmp);
        let d = build_datagram(Ipv4Addr::new(10, 0, 0, 9), &igmp);
        match run(&mut v, &f, &d) {
            Ok(Accepted::Plain { message, .. }) => assert_eq!(message, m),
            other => panic!("{m:?}: {other:?}"),
        }
    }
    assert_eq!(v.metrics().accepted_plain, 2);
}

#[test]
fn malformed_and_bad_checksum() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let d = f.join(0, &[Slice::ALL], 1, 1);
    assert_eq!(reason(run(&mut v, &f, &d[..30])), Reason::Malformed);
    let mut bad = d.clone();
    bad[IP_HEADER + 2] ^= 0xff;
    assert_eq!(reason(run(&mut v, &f, &bad)), Reason::BadChecksum);
    assert_eq!(v.metrics().rejected(Reason::Malformed), 1);
    assert_eq!(v.metrics().rejected(Reason::BadChecksum), 1);
}

#[test]
fn unsigned_joins_for_protected_groups() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let plain = |repr: IgmpRepr| {
        let mut igmp = vec![0; repr.buffer_len()];
        repr.emit(&mut igmp);
        build_datagram(f.members[0].addr, &igmp)
    };
    let v3 = plain(IgmpRepr::V3Report(ReportRepr {
        flags: 0,
        records: vec![GroupRecordRepr {
            record_type: RecordType::AllowNewSources,
            group: f.group,
            sources: vec![Ipv4Addr::new(10, 9, 9, 9)],
            aux_data: vec![],
        }],
        additional_data: vec![],
    }));
    assert_eq!(reason(run(&mut v, &f, &v3)), Reason::Unsigned);
    let v2 = plain(IgmpRepr::V2Report { group: f.group });
    assert_eq!(reason(run(&mut v, &f, &v2)), Reason::Unsigned);
    let leave = plain(IgmpRepr::V2Leave { group: f.group });
    assert_eq!(reason(run(&mut v, &f, &leave)), Reason::Unsigned);
    assert!(v.ownership().groups().next().is_none());
}

#[test]
fn malformed_extension_and_record_mismatch() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let d = f.join(0, &[Slice::new(1, 1)], 1, 1);
    // The extension version byte follows the 4-byte TLV header after the 16-byte record.
    let version_at = 8 + 12 + 4;
    assert_eq!(d[IP_HEADER + version_at], crate::join::EXTENSION_VERSION);
    let bad_version = tamper(&d, version_at, |b| *b = 9);
    assert_eq!(
        reason(run(&mut v, &f, &bad_version)),
        Reason::MalformedExtension
    );
    // The record lists 0.0.0.1 as the slice's base: change it to 0.0.0.3.
    let mismatch = tamper(&d, 8 + 8 + 3, |b| *b = 3);
    assert_eq!(reason(run(&mut v, &f, &mismatch)), Reason::RecordMismatch);
}

#[test]
fn duplicates_are_refused() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let d = f.join(0, &[Slice::ALL], 1, 7);
    run(&mut v, &f, &d).unwrap();
    assert_eq!(reason(run(&mut v, &f, &d)), Reason::Duplicate);
    // The same nonce under a new, validly signed join is also a duplicate.
    let again = f.datagram(0, &f.claims(&[Slice::ALL], 2, NOW, 7));
    assert_eq!(reason(run(&mut v, &f, &again)), Reason::Duplicate);
}

#[test]
fn untimely_joins() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let window = v.config().timeliness_window;
    let old = f.datagram(
        0,
        &f.claims(
            &[Slice::ALL],
            1,
            NOW.saturating_sub(window + Duration::from_millis(1)),
            1,
        ),
    );
    assert_eq!(reason(run(&mut v, &f, &old)), Reason::Untimely);
    let future = f.datagram(
        0,
        &f.claims(&[Slice::ALL], 1, NOW.saturating_add(window * 2), 2),
    );
    assert_eq!(reason(run(&mut v, &f, &future)), Reason::Untimely);
    let edge = f.datagram(
        0,
        &f.claims(&[Slice::ALL], 1, NOW.saturating_sub(window), 3),
    );
    assert!(run(&mut v, &f, &edge).is_ok());
}

#[test]
fn wrong_link() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let d = f.join(0, &[Slice::ALL], 1, 1);
    assert_eq!(
        reason(v.handle_datagram(NOW, IFINDEX + 1, &d, &f.key_source())),
        Reason::WrongLink
    );
    // A copy that crossed a router: TTL 2 (header re-emitted so its checksum is right).
    let mut routed = d.clone();
    let ip = Ipv4Repr {
        ttl: 2,
        ..Ipv4Repr::parse(&Ipv4Packet::new_checked(&d[..]).unwrap())
    };
    ip.emit(&mut routed);
    assert_eq!(reason(run(&mut v, &f, &routed)), Reason::WrongLink);
    // Signed by member 1 but sent from another address on the link: the signature covers the
    // sender's address.
    let mut moved = d.clone();
    let ip = Ipv4Repr {
        src_addr: Ipv4Addr::new(10, 0, 0, 200),
        ..ip
    };
    Ipv4Repr { ttl: 1, ..ip }.emit(&mut moved);
    assert_eq!(reason(run(&mut v, &f, &moved)), Reason::BadSignature);
}

struct Down;
impl KeySource for Down {
    fn group_keys(&self, _: Ipv4Addr, _: Timestamp) -> Result<Arc<GroupKeys>, KeyLookupError> {
        Err(KeyLookupError::Unavailable("keystore timed out".into()))
    }
}

#[test]
fn key_lookup_failures() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let d = f.join(0, &[Slice::ALL], 1, 1);
    assert_eq!(
        reason(v.handle_datagram(NOW, IFINDEX, &d, &Down)),
        Reason::KeyUnavailable
    );
    let empty: HashMap<Ipv4Addr, Arc<GroupKeys>> = HashMap::new();
    assert_eq!(
        reason(v.handle_datagram(NOW, IFINDEX, &d, &empty)),
        Reason::UnknownGroup
    );
    // The group's published key is another one (for example after a rotation that dropped it).
    let other = Fixture {
        group_key: ed25519_dalek::SigningKey::from_bytes(&[0x02; 32]),
        ..f.clone()
    };
    assert_eq!(
        reason(v.handle_datagram(NOW, IFINDEX, &d, &other.key_source())),
        Reason::UnknownKey
    );
    // Nothing was recorded along the way: the join is still accepted once keys are back.
    assert!(run(&mut v, &f, &d).is_ok());
}

#[test]
fn certificate_failures() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let d = f.join(0, &[Slice::ALL], 1, 1);
    // A byte of the certificate's validity period: the group key's signature no longer holds.
    let cert_at = find(&d[IP_HEADER..], f.members[0].cert.as_bytes());
    let forged = tamper(&d, cert_at + 50, |b| *b ^= 0x40);
    assert_eq!(reason(run(&mut v, &f, &forged)), Reason::BadCertificate);
    // After the certificate's end (2028-01-01).
    let late = Timestamp::from_secs(1_830_297_601);
    let d_late = f.datagram(0, &f.claims(&[Slice::ALL], 1, late, 2));
    assert_eq!(
        reason(v.handle_datagram(late, IFINDEX, &d_late, &f.key_source())),
        Reason::CertificateExpired
    );
    // Revoked member key.
    let mut keys = f.group_keys();
    keys.revoked_members
        .push(KeyId::of(&f.members[0].key.verifying_key()));
    let revoked = HashMap::from([(f.group, Arc::new(keys))]);
    assert_eq!(
        reason(v.handle_datagram(NOW, IFINDEX, &d, &revoked)),
        Reason::Revoked
    );
}

#[test]
fn group_not_allowed_and_outside_certificate() {
    let f = Fixture::with_member_slices(1, SliceSet::from(Slice::new(0, 1)));
    let mut v = verifier(&f);
    let other_group = Ipv4Addr::new(232, 1, 1, 2);
    let mut claims = f.claims(&[Slice::new(0, 1)], 1, NOW, 1);
    claims.group = other_group;
    let d = f.datagram(0, &claims);
    let mut keys = f.group_keys();
    keys.group = other_group;
    let source = HashMap::from([(other_group, Arc::new(keys))]);
    assert_eq!(
        reason(v.handle_datagram(NOW, IFINDEX, &d, &source)),
        Reason::GroupNotAllowed
    );
    let too_much = f.join(0, &[Slice::ALL], 1, 2);
    assert_eq!(
        reason(run(&mut v, &f, &too_much)),
        Reason::OutsideCertificate
    );
    assert!(run(&mut v, &f, &f.join(0, &[Slice::new(0, 1)], 1, 3)).is_ok());
}

/// Standby units and liveness anchors ride signed in the join and are recorded with the claim;
/// standby units beyond the certificate are refused like claimed ones, and a tampered anchor
/// breaks the signature.
#[test]
fn standby_and_liveness_are_signed_recorded_and_bounded_by_the_certificate() {
    use crate::liveness::HashChain;
    let f = Fixture::with_member_slices(1, SliceSet::from(Slice::new(0, 1)));
    let mut v = verifier(&f);
    let chain = HashChain::new([5; 16], 77, 10, 100);
    let mut claims = f.claims(&[Slice::new(0, 3)], 1, NOW, 1);
    claims.standby = vec![SliceEntry::include(Slice::ALL)];
    claims.liveness = vec![chain.anchor(0).unwrap(), chain.anchor(3).unwrap()];
    let beyond = f.datagram(0, &claims);
    let rej = run(&mut v, &f, &beyond).unwrap_err();
    assert_eq!(rej.reason, Reason::OutsideCertificate, "{}", rej.detail);
    assert!(rej.detail.contains("stands by"), "{}", rej.detail);

    claims.standby = vec![SliceEntry::include(Slice::new(2, 3))];
    claims.nonce = crate::fixtures::nonce_bytes(2);
    let d = f.datagram(0, &claims);
    // The anchor's value, changed after signing: the signature no longer verifies.
    let at = find(&d[IP_HEADER..], &chain.value(3).unwrap());
    let tampered = tamper(&d, at, |b| *b ^= 1);
    assert_eq!(reason(run(&mut v, &f, &tampered)), Reason::BadSignature);
    assert!(run(&mut v, &f, &d).is_ok());
    let (_, claim) = v.ownership().claims(f.group).next().unwrap();
    assert_eq!(claim.standby, SliceSet::from(Slice::new(2, 3)));
    assert_eq!(claim.liveness, claims.liveness);
}

#[test]
fn forged_signatures() {
    let f = Fixture::new(2);
    let mut v = verifier(&f);
    let d = f.join(0, &[Slice::ALL], 1, 1);
    // Change the epoch after signing.
    let epoch_at = find(&d[IP_HEADER..], &1u64.to_be_bytes());
    let bumped = tamper(&d, epoch_at + 7, |b| *b = 9);
    assert_eq!(reason(run(&mut v, &f, &bumped)), Reason::BadSignature);
    // Member 2's certificate, signed with member 1's key.
    let m = &f.members;
    let claims = f.claims(&[Slice::ALL], 1, NOW, 2);
    assert!(
        build_signed_report(&claims, m[0].addr, &m[1].cert, &m[0].key).is_err(),
        "builder refuses"
    );
    let mut forged = f.datagram(1, &claims);
    let good = f.datagram(0, &f.claims(&[Slice::ALL], 1, NOW, 2));
    let sig_at = forged.len() - 64;
    forged[sig_at..].copy_from_slice(&good[good.len() - 64..]);
    fill_checksum(&mut forged[IP_HEADER..]);
    assert_eq!(reason(run(&mut v, &f, &forged)), Reason::BadSignature);
    assert_eq!(v.metrics().accepted_joins, 0);
}

#[test]
fn epochs_fence_and_ties_go_to_the_lower_id() {
    let f = Fixture::new(2);
    let mut v = verifier(&f);
    run(&mut v, &f, &f.join(0, &[Slice::ALL], 5, 1)).unwrap();
    assert_eq!(
        reason(run(&mut v, &f, &f.join(0, &[Slice::ALL], 4, 2))),
        Reason::StaleEpoch
    );
    assert_eq!(
        reason(run(&mut v, &f, &f.join(1, &[Slice::new(1, 1)], 5, 3))),
        Reason::SliceConflict
    );
    assert_eq!(
        reason(run(&mut v, &f, &f.join(1, &[Slice::new(1, 1)], 4, 4))),
        Reason::SliceConflict
    );
    let Accepted::Join { change, .. } =
        run(&mut v, &f, &f.join(1, &[Slice::new(1, 1)], 6, 5)).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        change.lost,
        vec![(MemberId(1), SliceSet::from(Slice::new(1, 1)))]
    );
    // A leave (no slices) at the current epoch releases member 2's slices.
    run(&mut v, &f, &f.join(1, &[], 6, 6)).unwrap();
    assert!(v
        .ownership()
        .owner_of(f.group, Ipv4Addr::new(10, 1, 1, 1))
        .is_none());
}

#[test]
fn replay_cache_full_fails_closed() {
    let f = Fixture::new(1);
    let config = VerifierConfig {
        replay_capacity: 1,
        ..VerifierConfig::default()
    };
    let mut v = JoinVerifier::new(config, f.links());
    run(&mut v, &f, &f.join(0, &[Slice::ALL], 1, 1)).unwrap();
    assert_eq!(
        reason(run(&mut v, &f, &f.join(0, &[Slice::ALL], 1, 2))),
        Reason::ReplayCacheFull
    );
    // Once the first entry ages out (two windows and a millisecond), joins are accepted again.
    let later = NOW.saturating_add(v.config().timeliness_window * 2 + Duration::from_millis(1));
    let d = f.datagram(0, &f.claims(&[Slice::ALL], 1, later, 3));
    assert!(v
        .handle_datagram(later, IFINDEX, &d, &f.key_source())
        .is_ok());
}

/// Issue 13, item 7: one member signing fresh joins as fast as it can (a compromised member,
/// or one driven by a query flood) fills only its own share of the replay cache; another
/// member's join is still accepted.
#[test]
fn one_member_cannot_exhaust_the_replay_cache_for_others() {
    let f = Fixture::new(2);
    let config = VerifierConfig {
        replay_capacity: 300,
        ..VerifierConfig::default()
    };
    let mut v = JoinVerifier::new(config, f.links());
    let odd = Slice::new(1, 1);
    let mut refused = 0;
    for n in 0..400 {
        if run(&mut v, &f, &f.join(0, &[odd], 1, n)).is_err() {
            refused += 1;
        }
    }
    let even = Slice::new(0, 1);
    let other = run(&mut v, &f, &f.join(1, &[even], 1, 1_000));
    assert!(other.is_ok(), "another member's join is refused: {other:?}");
    assert_eq!(
        refused,
        400 - 256,
        "the flooding member is held to its share"
    );
}

#[test]
fn certificates_are_cached_after_the_first_check() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    for n in 0..3 {
        run(&mut v, &f, &f.join(0, &[Slice::ALL], 1, n)).unwrap();
    }
    assert_eq!(v.metrics().certificate_cache_hits, 2);
}

#[test]
fn bursts_batch_verify_and_isolate_forgeries() {
    let f = Fixture::new(8);
    let slicing = SliceSet::low_order_slicing(3);
    let joins: Vec<Vec<u8>> = (0..8)
        .map(|i| f.join(i, &[slicing[i]], 1, i as u64))
        .collect();
    let mut v = verifier(&f);
    let items: Vec<(u32, &[u8])> = joins.iter().map(|d| (IFINDEX, d.as_slice())).collect();
    let out = v.handle_burst(NOW, &items, &f.key_source());
    assert!(out.iter().all(Result::is_ok));
    let mut v = verifier(&f);
    let forged = tamper(
        &joins[3],
        find(&joins[3][IP_HEADER..], &1u64.to_be_bytes()) + 7,
        |b| *b = 2,
    );
    let mut items: Vec<(u32, &[u8])> = joins.iter().map(|d| (IFINDEX, d.as_slice())).collect();
    items[3] = (IFINDEX, &forged);
    items.push((IFINDEX, &joins[0])); // a duplicate within the burst
    let out = v.handle_burst(NOW, &items, &f.key_source());
    let reasons: Vec<Option<Reason>> = out
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.reason))
        .collect();
    let mut expected = vec![None; 9];
    expected[3] = Some(Reason::BadSignature);
    expected[8] = Some(Reason::Duplicate);
    assert_eq!(reasons, expected);
}

#[test]
fn expiry_withdraws_claims() {
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    run(&mut v, &f, &f.join(0, &[Slice::ALL], 1, 1)).unwrap();
    assert!(v
        .expire(NOW.saturating_add(Duration::from_secs(1)))
        .is_empty());
    let changes = v.expire(NOW.saturating_add(v.config().claim_hold));
    assert_eq!(changes.len(), 1);
    assert!(v.ownership().groups().next().is_none());
}

#[test]
fn every_reason_has_a_distinct_label() {
    let mut labels: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), Reason::ALL.len());
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
}

#[test]
fn a_copy_is_refused_as_long_as_it_is_timely() {
    // Accepted at NOW with a timestamp one window ahead (the sender's clock runs fast): a copy
    // is timely until NOW + 2w inclusive, and must still be a duplicate then.
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let w = v.config().timeliness_window;
    let d = f.datagram(0, &f.claims(&[Slice::ALL], 1, NOW.saturating_add(w), 7));
    v.handle_datagram(NOW, IFINDEX, &d, &f.key_source())
        .unwrap();
    let edge = NOW.saturating_add(w * 2);
    v.expire(edge);
    assert_eq!(
        reason(v.handle_datagram(edge, IFINDEX, &d, &f.key_source())),
        Reason::Duplicate
    );
}

#[test]
fn a_join_from_before_a_leave_cannot_bring_the_claim_back() {
    // The member signed an epoch-4 join that never reached the router (an on-path host kept
    // it), then joined at epoch 5 and left. Replayed while still timely, the old join is stale.
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let kept = f.join(0, &[Slice::ALL], 4, 1);
    run(&mut v, &f, &f.join(0, &[Slice::ALL], 5, 2)).unwrap();
    run(&mut v, &f, &f.join(0, &[], 5, 3)).unwrap();
    assert_eq!(reason(run(&mut v, &f, &kept)), Reason::StaleEpoch);
    assert!(v.ownership().claims(f.group).next().is_none());
}

/// `n` include entries of mixed masks, no two mergeable: the costly kind to normalise.
fn mixed_slices(n: usize) -> Vec<Slice> {
    (0..n as u32)
        .map(|i| {
            // Same-mask values never differ in one bit only (2^k mod 3 ≠ 0): no siblings.
            Slice::new(i << 8, 0xffff_ffff << (i % 3))
        })
        .collect()
}

/// Issue 13, item 6: a join with more slices than [`MAX_JOIN_SLICES`] is refused by the
/// sub-TLV's length, before an entry is read, a slice set built or a signature checked (before
/// the fix it reached the signature check, its slice set built first); a join at the cap with a
/// bad signature costs no slice set either; a datagram above [`MAX_JOIN_DATAGRAM`] is refused
/// by its length.
#[test]
fn hard_caps_refuse_before_any_expensive_work() {
    use crate::join::{build_report_uncapped, MAX_JOIN_SLICES};
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    // The certificate is checked (and cached) once, by a valid join.
    run(&mut v, &f, &f.join(0, &[Slice::new(0, 1)], 1, 1)).unwrap();
    let m = &f.members[0];
    let over = f.claims(&mixed_slices(MAX_JOIN_SLICES + 1), 1, NOW, 2);
    assert!(build_signed_report(&over, m.addr, &m.cert, &m.key).is_err());
    let igmp = build_report_uncapped(&over, m.addr, &m.cert, &m.key).expect("fits 64 KiB");
    let d = build_datagram(m.addr, &igmp);
    assert!(d.len() <= MAX_JOIN_DATAGRAM);
    crate::slice::work::take();
    let r = run(&mut v, &f, &d).unwrap_err();
    assert_eq!(r.reason, Reason::TooLarge, "{r}");
    assert_eq!(crate::slice::work::take(), 0, "no slice set was built");
    // At the cap, with a bad signature: refused by the signature, no slice set built.
    let at_cap = f.datagram(0, &f.claims(&mixed_slices(MAX_JOIN_SLICES), 1, NOW, 3));
    assert!(at_cap.len() <= MAX_JOIN_DATAGRAM);
    let forged = tamper(&at_cap, at_cap.len() - IP_HEADER - 1, |b| *b ^= 1);
    crate::slice::work::take();
    assert_eq!(reason(run(&mut v, &f, &forged)), Reason::BadSignature);
    assert_eq!(
        crate::slice::work::take(),
        0,
        "no slice set before the signature"
    );
    // The valid join at the cap is accepted (its slice set built after the signature).
    assert!(run(&mut v, &f, &at_cap).is_ok());
    assert!(crate::slice::work::take() > 0);
    // A datagram longer than a router parses, whatever it holds.
    let big = vec![0x45u8; MAX_JOIN_DATAGRAM + 1];
    let r = run(&mut v, &f, &big).unwrap_err();
    assert_eq!(r.reason, Reason::TooLarge, "{r}");
    assert_eq!(v.metrics().rejected(Reason::TooLarge), 2);
}

/// Issue 13, item 6: a join carrying a certificate that lists more than `MAX_CERT_SLICES`
/// slices (1,500, as many as fit the datagram cap) is refused by the certificate's count field,
/// before the certificate is decoded or a slice set built (before the fix it was decoded, its
/// slices normalised, and then refused for its signature).
#[test]
fn a_join_with_an_oversized_certificate_is_refused_by_its_count() {
    use crate::cert::MAX_CERT_SLICES;
    let f = Fixture::new(1);
    let mut v = verifier(&f);
    let m = &f.members[0];
    let real = m.cert.as_bytes();
    let n = 1_500usize;
    let mut bytes = real[..real.len() - 64 - 8 - 2].to_vec();
    bytes.extend_from_slice(&(n as u16).to_be_bytes());
    for i in 0..n as u32 {
        bytes.extend_from_slice(&(i << 11).to_be_bytes());
        bytes.extend_from_slice(&(0xffff_ff00u32 << (i % 3)).to_be_bytes());
    }
    bytes.extend_from_slice(&[0u8; 64]);
    assert!(n > MAX_CERT_SLICES);
    let hostile = m.cert.with_bytes(bytes);
    let claims = f.claims(&[Slice::ALL], 1, NOW, 1);
    let igmp = build_signed_report(&claims, m.addr, &hostile, &m.key).expect("fits");
    let d = build_datagram(m.addr, &igmp);
    assert!(d.len() <= MAX_JOIN_DATAGRAM);
    crate::slice::work::take();
    let r = run(&mut v, &f, &d).unwrap_err();
    assert_eq!(r.reason, Reason::TooLarge, "{r}");
    assert_eq!(crate::slice::work::take(), 0, "no slice set was built");
}

/// Certificate bytes of member `i` of `f` whose slices are `slices` (as listed), with a zero
/// signature: its issuer is the published group key, so it passes every cheap check and is
/// decoded and checked in [`JoinVerifier::verify`].
fn certificate_listing(f: &Fixture, i: usize, slices: &[Slice]) -> Vec<u8> {
    let real = f.members[i].cert.as_bytes();
    let mut bytes =
        real[..real.len() - 64 - 8 * f.members[i].cert.body().slices.len() - 2].to_vec();
    bytes.extend_from_slice(&(slices.len() as u16).to_be_bytes());
    for s in slices {
        bytes.extend_from_slice(&s.value().to_be_bytes());
        bytes.extend_from_slice(&s.mask().to_be_bytes());
    }
    bytes.extend_from_slice(&[0u8; 64]);
    bytes
}

/// Issue 13, item 6: a join that carries a certificate with hostile slices (the fuzz file's
/// seven, or [`crate::cert::MAX_CERT_SLICES`] crafted ones) naming the published issuer is
/// refused by the certificate's signature before any slice set is built (before the fix the
/// certificate's slice set was built first: 124,428 steps for the fuzz file's slices).
#[test]
fn a_join_with_hostile_certificate_slices_builds_no_set_before_the_issuer_signature() {
    use crate::cert::MAX_CERT_SLICES;
    use crate::slice::adversarial::{interleaved, pairs_then_all};
    let f = Fixture::new(1);
    let m = &f.members[0];
    let fuzz = include_bytes!("../fuzz/seeds/certificate/seed-slow-certificate-decode-3s");
    let fuzz_slices: Vec<Slice> = fuzz[68..68 + 7 * 8]
        .chunks_exact(8)
        .map(|c| Slice::new(crate::wire::read_u32(c, 0), crate::wire::read_u32(c, 4)))
        .collect();
    for (name, slices) in [
        ("fuzz file", fuzz_slices),
        ("interleaved", interleaved(MAX_CERT_SLICES, 3)),
        ("pairs then all", pairs_then_all(MAX_CERT_SLICES)),
    ] {
        let mut v = verifier(&f);
        let hostile = m.cert.with_bytes(certificate_listing(&f, 0, &slices));
        let claims = f.claims(&[Slice::ALL], 1, NOW, 1);
        let igmp = build_signed_report(&claims, m.addr, &hostile, &m.key).expect("fits");
        let d = build_datagram(m.addr, &igmp);
        crate::slice::work::take();
        assert_eq!(
            reason(run(&mut v, &f, &d)),
            Reason::BadCertificate,
            "{name}"
        );
        let steps = crate::slice::work::take();
        assert_eq!(
            steps, 0,
            "{name}: {steps} steps before the issuer's signature"
        );
    }
}

/// Issue 13, item 6: a compromised member (its certificate valid, its key in the attacker's
/// hands) signs joins with up to [`crate::join::MAX_JOIN_SLICES`] hostile entries. The join's
/// slice set is built only after its signature verified, and that build is bounded: refused as
/// too large within a number of steps linear in the entries, where before it ran unbounded
/// (124,428 steps for the fuzz file's seven slices; seconds for a dozen crafted ones, hours
/// for a thousand).
#[test]
fn a_compromised_members_hostile_join_is_refused_within_a_bounded_number_of_steps() {
    use crate::join::{SliceEntry, MAX_JOIN_SLICES};
    use crate::slice::adversarial::{interleaved, pairs_then_all};
    let f = Fixture::new(1);
    let fuzz = include_bytes!("../fuzz/seeds/certificate/seed-slow-certificate-decode-3s");
    let fuzz_slices: Vec<Slice> = fuzz[68..68 + 7 * 8]
        .chunks_exact(8)
        .map(|c| Slice::new(crate::wire::read_u32(c, 0), crate::wire::read_u32(c, 4)))
        .collect();
    let include = |s: Vec<Slice>| s.into_iter().map(SliceEntry::include).collect::<Vec<_>>();
    // The whole space minus pair cubes: a product of 2^16 pieces from the excludes alone.
    let mut all_but_pairs = vec![SliceEntry::include(Slice::ALL)];
    all_but_pairs.extend(
        pairs_then_all(MAX_JOIN_SLICES - 1)
            .into_iter()
            .filter(|s| *s != Slice::ALL)
            .map(SliceEntry::exclude),
    );
    // The fuzz file's union is 166 disjoint slices: within the caps, so it may be accepted.
    for (name, entries, refused) in [
        ("fuzz file", include(fuzz_slices), false),
        (
            "interleaved",
            include(interleaved(MAX_JOIN_SLICES, 4)),
            true,
        ),
        (
            "pairs then all",
            include(pairs_then_all(MAX_JOIN_SLICES)),
            true,
        ),
        ("all but pairs", all_but_pairs, true),
    ] {
        let n = entries.len();
        assert!(n <= MAX_JOIN_SLICES);
        let mut v = verifier(&f);
        let mut claims = f.claims(&[], 1, NOW, 1);
        claims.record_type = RecordType::ModeIsInclude;
        claims.entries = entries;
        let d = f.datagram(0, &claims);
        crate::slice::work::take();
        let r = run(&mut v, &f, &d);
        let steps = crate::slice::work::take();
        // The budget of n entries and the certificate's one slice (the whole space).
        assert!(
            steps <= crate::slice::step_budget(n + 1),
            "{name}: {steps} steps for {n} entries"
        );
        if refused {
            assert_eq!(reason(r), Reason::TooLarge, "{name}");
        }
    }
}

/// Issue 13, item 6: the budget refuses no claim a member makes. The largest claims of a
/// 10-bit slicing (`control.slice_bits` allows no more), against a certificate for the whole
/// space and against one for 128 slices of an 8-bit slicing, are accepted within half their
/// budget.
#[test]
fn a_members_largest_claims_fit_the_budget() {
    use crate::cert::MAX_CERT_SLICES;
    use crate::slice::step_budget;
    let even = |s: &Slice| s.value().count_ones() % 2 == 0;
    let mut claims: Vec<(&str, Vec<Slice>, Option<SliceSet>)> = Vec::new();
    for (kind, units) in [
        ("low-order", SliceSet::low_order_slicing(10)),
        ("prefix", SliceSet::prefix_slicing(10)),
    ] {
        // Even parity: no two units merge, 512 slices.
        let set: SliceSet = units.iter().copied().filter(even).collect();
        claims.push((kind, set.slices().to_vec(), None));
    }
    // Certified for the 128 even units of an 8-bit slicing; claiming 10-bit units within
    // them, two of each four (not siblings): 256 slices.
    let certified: SliceSet = SliceSet::low_order_slicing(8)
        .into_iter()
        .filter(even)
        .collect();
    assert_eq!(certified.len(), MAX_CERT_SLICES);
    let within: SliceSet = SliceSet::low_order_slicing(10)
        .into_iter()
        .filter(|u| even(&Slice::new(u.value() & 0xff, 0xff)) && matches!(u.value() >> 8, 0 | 3))
        .collect();
    assert_eq!(within.len(), 256);
    claims.push((
        "within a 128-slice certificate",
        within.slices().to_vec(),
        Some(certified),
    ));
    for (name, slices, certified) in claims {
        let f = match &certified {
            Some(c) => Fixture::with_member_slices(1, c.clone()),
            None => Fixture::new(1),
        };
        let mut v = verifier(&f);
        // The certificate is checked (and cached) by a first join.
        run(&mut v, &f, &f.join(0, &slices[..1], 1, 1)).unwrap();
        let d = f.join(0, &slices, 1, 2);
        crate::slice::work::take();
        let Accepted::Join { join, .. } = run(&mut v, &f, &d).expect(name) else {
            panic!("{name}: not a join")
        };
        let steps = crate::slice::work::take();
        let budget = step_budget(slices.len() + certified.map_or(1, |c| c.len()));
        assert_eq!(join.slices().slices(), &slices[..], "{name}");
        assert!(steps <= budget / 2, "{name}: {steps} of {budget} steps");
    }
}

/// A shared group (a routed control group, SPEC.md §3.9): members claiming the same slices at
/// any epochs are all accepted and nothing is owned; the other checks still hold.
#[test]
fn shared_group_joins_own_nothing_and_are_still_checked() {
    let f = Fixture::new(2);
    let mut v = verifier(&f);
    v.set_shared(vec![f.group]);
    for (i, epoch, nonce) in [(0, 5, 1), (1, 5, 2), (0, 4, 3), (1, 1, 4)] {
        let Accepted::Join { join, change, .. } =
            run(&mut v, &f, &f.join(i, &[Slice::ALL], epoch, nonce)).unwrap()
        else {
            panic!("a signed join")
        };
        assert_eq!(join.group(), f.group);
        assert!(change.is_empty(), "{change:?}");
    }
    assert_eq!(v.ownership().claims(f.group).count(), 0);
    assert_eq!(
        reason(run(&mut v, &f, &f.join(1, &[Slice::ALL], 1, 4))),
        Reason::Duplicate
    );
    let forged = tamper(&f.join(0, &[Slice::ALL], 5, 9), HEADER_LEN + 30, |b| {
        *b ^= 1
    });
    assert_ne!(run(&mut v, &f, &forged).map(|_| ()), Ok(()));
}
