//! The MLDv2 verifier's stateful checks and its certificate grants: one test per refusal
//! reason the state or the certificate gives, and a takeover at a later epoch, as the IGMPv3
//! verifier's tests (`verify_tests.rs`) show them.

use super::*;
use crate::cert::Ipv6Grant;
use crate::fixtures::{Fixture, GROUP6, IFINDEX, NOW};
use crate::slice::Slice6;
use crate::verify::GroupKey;
use ed25519_dalek::SigningKey;

/// The /56-bit slicing of the fixtures: four units.
fn units() -> Vec<Slice6> {
    SliceSet6::site_slicing(2)
}

fn verifier(f: &Fixture) -> MldJoinVerifier {
    MldJoinVerifier::new(
        MldVerifierConfig::default(),
        &VerifierConfig::default(),
        f.links6(),
    )
}

fn refused(r: Result<MldOutcome, Rejection>) -> Reason {
    match r {
        Err(e) => e.reason,
        Ok(o) => panic!("accepted: {o:?}"),
    }
}

/// A host in unit `u`'s /56 (site bits 0b`u`), any interface id.
fn client_in(u: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, u << 8, 0x1234, 0, 0, 1)
}

#[test]
fn a_dual_stack_member_joins_for_its_certified_ipv6_slices() {
    let f = Fixture::dual_stack(2, SliceSet6::full());
    let mut v = verifier(&f);
    let u = units();
    let d = f.datagram6(0, &f.claims6(&u[..2], 1, NOW, 1));
    let Ok(MldOutcome::Join { join, change, .. }) =
        v.handle_datagram(NOW, IFINDEX, &d, &f.key_source6())
    else {
        panic!("a certified join is accepted")
    };
    assert_eq!(join.member(), f.members[0].id);
    assert_eq!(join.issuer(), KeyId::of(&f.group_key.verifying_key()));
    assert_eq!(change.group, Some(GROUP6));
    assert_eq!(
        change.gained,
        vec![(f.members[0].id, u[..2].iter().copied().collect())]
    );
    assert_eq!(v.owner_of(GROUP6, client_in(1)), Some(f.members[0].id));
    assert_eq!(v.owner_of(GROUP6, client_in(2)), None);
    let claim = v.ownership().claims(GROUP6).next().expect("one claim").1;
    assert_eq!(claim.sender, f.addr6(0));
    assert_eq!(claim.ifindex, IFINDEX);
    assert_eq!(v.metrics().accepted_joins, 1);
}

/// The grant is the certificate's IPv6 section: its IPv4 slices (all of them) grant nothing
/// on an IPv6 group, and a version 1 certificate names no IPv6 group.
#[test]
fn rights_come_from_the_certificates_ipv6_section() {
    let u = units();
    let f = Fixture::dual_stack(1, SliceSet6::from(u[1]));
    let mut v = verifier(&f);
    let beyond = f.datagram6(0, &f.claims6(&u[1..3], 1, NOW, 1));
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &beyond, &f.key_source6())),
        Reason::OutsideCertificate
    );
    let within = f.datagram6(0, &f.claims6(&u[1..2], 1, NOW, 2));
    assert!(v
        .handle_datagram(NOW, IFINDEX, &within, &f.key_source6())
        .is_ok());
    let v1 = Fixture::new(1);
    let mut v = verifier(&v1);
    let d = v1.datagram6(0, &v1.claims6(&u[1..2], 1, NOW, 1));
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &d, &v1.key_source6())),
        Reason::GroupNotAllowed
    );
    assert_eq!(v.ownership().groups().count(), 0);
}

#[test]
fn the_certificate_chain_refuses_as_for_igmpv3() {
    let u = units();
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let d = f.datagram6(0, &f.claims6(&u[..1], 1, NOW, 1));
    let mut keys = f.key_source6();
    // No keys published for the group.
    let none: HashMap<Ipv6Addr, Arc<GroupKeys6>> = HashMap::new();
    assert_eq!(
        refused(verifier(&f).handle_datagram(NOW, IFINDEX, &d, &none)),
        Reason::UnknownGroup
    );
    // The group's published key is another one.
    let other = GroupKey::new(SigningKey::from_bytes(&[0x02; 32]).verifying_key());
    let mut rotated = (*keys[&GROUP6]).clone();
    rotated.keys = vec![other];
    keys.insert(GROUP6, Arc::new(rotated));
    assert_eq!(
        refused(verifier(&f).handle_datagram(NOW, IFINDEX, &d, &keys)),
        Reason::UnknownKey
    );
    // The member key is revoked.
    let mut revoked = (*f.key_source6()[&GROUP6]).clone();
    revoked
        .revoked_members
        .push(KeyId::of(&f.members[0].key.verifying_key()));
    let keys = HashMap::from([(GROUP6, Arc::new(revoked))]);
    assert_eq!(
        refused(verifier(&f).handle_datagram(NOW, IFINDEX, &d, &keys)),
        Reason::Revoked
    );
    // A certificate the group key did not sign (its IPv6 section widened after signing).
    let mut forged = f.clone();
    let bytes = forged.members[0].cert.as_bytes().to_vec();
    let mut tampered = bytes.clone();
    let at = bytes.len() - 64 - 1;
    tampered[at] ^= 0x01;
    forged.members[0].cert = forged.members[0].cert.with_bytes(tampered);
    let d = forged.datagram6(0, &forged.claims6(&u[..1], 1, NOW, 2));
    assert_eq!(
        refused(verifier(&f).handle_datagram(NOW, IFINDEX, &d, &f.key_source6())),
        Reason::BadCertificate
    );
    // A join signed by a key other than the certified one (member 2's signature over the
    // same claims), carrying member 1's real certificate.
    let f = Fixture::dual_stack(2, SliceSet6::full());
    let claims = f.claims6(&u[..1], 1, NOW, 3);
    let (good, other) = (f.datagram6(0, &claims), f.datagram6(1, &claims));
    let mut bad = good.clone();
    let sig_at = bad.len() - 64;
    bad[sig_at..].copy_from_slice(&other[other.len() - 64..]);
    let ip = crate::wire::ipv6::HEADER_LEN + 8;
    crate::wire::mld::fill_checksum(
        &mut bad[ip..],
        f.addr6(0),
        crate::wire::mld::ALL_MLDV2_ROUTERS,
    );
    let mut v = verifier(&f);
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &bad, &f.key_source6())),
        Reason::BadSignature
    );
    assert_eq!(
        v.ownership().groups().count(),
        0,
        "a refusal changes nothing"
    );
    assert_eq!(v.metrics().rejected(Reason::BadSignature), 1);
}

#[test]
fn a_replayed_join_is_a_duplicate_and_changes_nothing() {
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let mut v = verifier(&f);
    let d = f.datagram6(0, &f.claims6(&units()[..1], 1, NOW, 1));
    assert!(v
        .handle_datagram(NOW, IFINDEX, &d, &f.key_source6())
        .is_ok());
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &d, &f.key_source6())),
        Reason::Duplicate
    );
    assert_eq!(v.metrics().rejected(Reason::Duplicate), 1);
    assert_eq!(v.metrics().accepted_joins, 1);
}

/// A copy of an accepted join with its signature broken is still a duplicate: refused by its
/// nonce before any signature is checked, so a replay flood costs no signature work.
#[test]
fn a_replay_is_refused_before_its_signature_is_checked() {
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let mut v = verifier(&f);
    let d = f.datagram6(0, &f.claims6(&units()[..1], 1, NOW, 1));
    assert!(v
        .handle_datagram(NOW, IFINDEX, &d, &f.key_source6())
        .is_ok());
    let mut broken = d.clone();
    let last = broken.len() - 1;
    broken[last] ^= 0x01;
    let ip = crate::wire::ipv6::HEADER_LEN + 8;
    crate::wire::mld::fill_checksum(
        &mut broken[ip..],
        f.addr6(0),
        crate::wire::mld::ALL_MLDV2_ROUTERS,
    );
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &broken, &f.key_source6())),
        Reason::Duplicate
    );
    // The same bytes with a fresh nonce get their signature checked.
    let fresh = f.datagram6(0, &f.claims6(&units()[..1], 1, NOW, 2));
    let mut broken = fresh.clone();
    broken[last] ^= 0x01;
    crate::wire::mld::fill_checksum(
        &mut broken[ip..],
        f.addr6(0),
        crate::wire::mld::ALL_MLDV2_ROUTERS,
    );
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &broken, &f.key_source6())),
        Reason::BadSignature
    );
}

#[test]
fn an_older_epoch_of_the_same_member_is_stale() {
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let mut v = verifier(&f);
    let u = units();
    let now = f.datagram6(0, &f.claims6(&u[..2], 5, NOW, 1));
    assert!(v
        .handle_datagram(NOW, IFINDEX, &now, &f.key_source6())
        .is_ok());
    let older = f.datagram6(0, &f.claims6(&u[..3], 4, NOW, 2));
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &older, &f.key_source6())),
        Reason::StaleEpoch
    );
    assert_eq!(v.owner_of(GROUP6, client_in(2)), None, "nothing changed");
    // A leave fences its epoch too: the older join cannot bring the claim back.
    let leave = f.datagram6(0, &f.claims6(&[], 5, NOW, 3));
    assert!(v
        .handle_datagram(NOW, IFINDEX, &leave, &f.key_source6())
        .is_ok());
    assert_eq!(v.ownership().groups().count(), 0);
    let older = f.datagram6(0, &f.claims6(&u[..3], 4, NOW, 4));
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &older, &f.key_source6())),
        Reason::StaleEpoch
    );
}

#[test]
fn slices_held_at_the_same_epoch_by_a_lower_id_conflict() {
    let f = Fixture::dual_stack(2, SliceSet6::full());
    let mut v = verifier(&f);
    let u = units();
    let first = f.datagram6(0, &f.claims6(&u[..2], 3, NOW, 1));
    assert!(v
        .handle_datagram(NOW, IFINDEX, &first, &f.key_source6())
        .is_ok());
    let second = f.datagram6(1, &f.claims6(&u[1..3], 3, NOW, 2));
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &second, &f.key_source6())),
        Reason::SliceConflict
    );
    assert_eq!(v.owner_of(GROUP6, client_in(1)), Some(f.members[0].id));
    assert_eq!(v.owner_of(GROUP6, client_in(2)), None);
}

#[test]
fn a_later_epoch_takes_the_overlapping_slices_over() {
    let f = Fixture::dual_stack(2, SliceSet6::full());
    let mut v = verifier(&f);
    let u = units();
    let first = f.datagram6(0, &f.claims6(&u[..2], 3, NOW, 1));
    assert!(v
        .handle_datagram(NOW, IFINDEX, &first, &f.key_source6())
        .is_ok());
    let later = f.datagram6(1, &f.claims6(&u[1..3], 4, NOW, 2));
    let Ok(MldOutcome::Join { change, .. }) =
        v.handle_datagram(NOW, IFINDEX, &later, &f.key_source6())
    else {
        panic!("a later epoch takes over")
    };
    let (m1, m2) = (f.members[0].id, f.members[1].id);
    assert_eq!(change.lost, vec![(m1, SliceSet6::from(u[1]))]);
    assert_eq!(change.gained, vec![(m2, u[1..3].iter().copied().collect())]);
    assert_eq!(v.owner_of(GROUP6, client_in(0)), Some(m1));
    assert_eq!(v.owner_of(GROUP6, client_in(1)), Some(m2));
    assert_eq!(v.owner_of(GROUP6, client_in(2)), Some(m2));
    // The member that lost keeps its epoch: its old join's copy is stale for the unit now.
    let again = f.datagram6(0, &f.claims6(&u[..2], 3, NOW, 3));
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &again, &f.key_source6())),
        Reason::SliceConflict
    );
}

#[test]
fn claims_expire_on_the_monotonic_clock() {
    use crate::time::Instant;
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let mut v = verifier(&f);
    let d = f.datagram6(0, &f.claims6(&units()[..1], 1, NOW, 1));
    let start = Clock {
        wall: NOW,
        mono: Instant::from_secs(10),
    };
    assert!(v
        .handle_datagram(start, IFINDEX, &d, &f.key_source6())
        .is_ok());
    let hold = VerifierConfig::default().claim_hold;
    let before = Clock {
        wall: NOW,
        mono: start.mono.saturating_add(hold - Duration::from_secs(1)),
    };
    assert!(v.expire(before).is_empty());
    let after = Clock {
        wall: NOW,
        mono: start.mono.saturating_add(hold),
    };
    let gone = v.expire(after);
    assert_eq!(gone.len(), 1);
    assert_eq!(v.owner_of(GROUP6, client_in(0)), None);
}

/// The IPv6 grant survives the certificate's issue and verification (used by the fixtures).
#[test]
fn the_fixture_certificates_carry_the_ipv6_grant() {
    let f = Fixture::dual_stack(1, SliceSet6::from(units()[1]));
    assert_eq!(
        f.members[0].cert.ipv6(),
        &Ipv6Grant {
            groups: vec![GROUP6],
            slices: SliceSet6::from(units()[1]),
        }
    );
}

/// A member's refresh takes its certificate from the cache (one signature check, the join's),
/// a cached certificate counts only while its issuer is published, and its validity is
/// checked at every use.
#[test]
fn a_checked_certificate_is_cached_while_its_issuer_is_published() {
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let mut v = verifier(&f);
    let u = units();
    for n in 1..=3 {
        let d = f.datagram6(0, &f.claims6(&u[..1], 1, NOW, n));
        assert!(v
            .handle_datagram(NOW, IFINDEX, &d, &f.key_source6())
            .is_ok());
    }
    assert_eq!(v.metrics().certificate_cache_hits, 2);
    // The issuer retired: the cached certificate is no longer good.
    let other = GroupKey::new(SigningKey::from_bytes(&[0x02; 32]).verifying_key());
    let mut rotated = (*f.key_source6()[&GROUP6]).clone();
    rotated.keys = vec![other];
    let keys = HashMap::from([(GROUP6, Arc::new(rotated))]);
    let d = f.datagram6(0, &f.claims6(&u[..1], 1, NOW, 4));
    assert_eq!(
        refused(v.handle_datagram(NOW, IFINDEX, &d, &keys)),
        Reason::UnknownKey
    );
    assert_eq!(v.metrics().certificate_cache_hits, 2);
    // Past its validity (2028-01-01): refused though cached.
    let late = Timestamp::from_secs(1_830_297_601);
    let d = f.datagram6(0, &f.claims6(&u[..1], 1, late, 5));
    assert_eq!(
        refused(v.handle_datagram(late, IFINDEX, &d, &f.key_source6())),
        Reason::CertificateExpired
    );
    assert_eq!(v.metrics().certificate_cache_hits, 3);
}

fn candidate(r: Result<MldPrechecked, Rejection>) -> MldCandidate {
    match r {
        Ok(MldPrechecked::Candidate(c)) => *c,
        other => panic!("not a candidate: {other:?}"),
    }
}

/// The split a router's admission budget needs (SPEC.md §5.4, §5.6): `precheck` checks no
/// signature, so a join whose certificate or join signature is bad is a candidate, refused only
/// by `verify`; the first join's certificate costs a check there, later ones' are known.
/// What `precheck` can refuse without a signature (an unpublished issuer) it does.
#[test]
fn precheck_leaves_every_signature_to_verify() {
    let u = units();
    let f = Fixture::dual_stack(2, SliceSet6::full());
    let keys = f.key_source6();
    let mut v = verifier(&f);
    let d = f.datagram6(0, &f.claims6(&u[..1], 1, NOW, 1));
    let c = candidate(v.precheck(NOW, IFINDEX, &d, &keys));
    assert!(!c.certificate_known());
    assert_eq!(c.claimed_member(), f.members[0].id);
    assert_eq!(
        (c.group(), c.sender(), c.ifindex()),
        (GROUP6, f.addr6(0), IFINDEX)
    );
    assert_eq!(v.metrics().accepted_joins, 0, "nothing verified yet");
    assert_eq!(v.ownership().groups().count(), 0);
    let mut r = v.verify(NOW, vec![c]);
    assert!(matches!(r.pop(), Some(Ok(MldOutcome::Join { .. }))));
    // Member 1's join signed as if sent from member 2's address: only its signature is bad.
    let m = &f.members[0];
    let claims = f.claims6(&u[..1], 1, NOW, 2);
    let mut mld =
        crate::mld_join::build_signed_mld_report(&claims, f.addr6(1), &m.cert, &m.key).unwrap();
    crate::wire::mld::fill_checksum(&mut mld, f.addr6(0), crate::wire::mld::ALL_MLDV2_ROUTERS);
    let forged = crate::mld_join::build_mld_datagram(f.addr6(0), &mld);
    let c = candidate(v.precheck(NOW, IFINDEX, &forged, &keys));
    assert!(c.certificate_known(), "checked with the first join");
    assert_eq!(
        refused(v.verify(NOW, vec![c]).pop().unwrap()),
        Reason::BadSignature
    );
    // A certificate the group key did not sign is a candidate too: its check is expensive.
    let mut tampered = f.clone();
    let mut bytes = tampered.members[1].cert.as_bytes().to_vec();
    let at = bytes.len() - 64 - 1;
    bytes[at] ^= 0x01;
    tampered.members[1].cert = tampered.members[1].cert.with_bytes(bytes);
    let d = tampered.datagram6(1, &tampered.claims6(&u[1..2], 1, NOW, 1));
    let c = candidate(v.precheck(NOW, IFINDEX, &d, &keys));
    assert!(!c.certificate_known());
    assert_eq!(
        refused(v.verify(NOW, vec![c]).pop().unwrap()),
        Reason::BadCertificate
    );
    // An issuer the group does not publish: refused at once.
    let other = GroupKey::new(SigningKey::from_bytes(&[0x02; 32]).verifying_key());
    let mut rotated = (*keys[&GROUP6]).clone();
    rotated.keys = vec![other];
    let rotated = HashMap::from([(GROUP6, Arc::new(rotated))]);
    let d = f.datagram6(1, &f.claims6(&u[1..2], 1, NOW, 2));
    let r = v.precheck(NOW, IFINDEX, &d, &rotated);
    assert_eq!(r.map(|_| ()).unwrap_err().reason, Reason::UnknownKey);
    assert_eq!(
        v.ownership().claims(GROUP6).count(),
        1,
        "refusals change nothing"
    );
}
