//! Tests of member certificates: IPv4 layout, caps and costs; the IPv6 section.

use super::*;

fn group_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn body() -> CertificateBody {
    CertificateBody {
        member_id: MemberId(3),
        member_key: SigningKey::from_bytes(&[9u8; 32]).verifying_key(),
        issuer: KeyId::of(&group_key().verifying_key()),
        not_before: Timestamp::from_secs(1_700_000_000),
        not_after: Timestamp::from_secs(1_900_000_000),
        groups: vec![Ipv4Addr::new(232, 1, 1, 1)],
        slices: SliceSet::full(),
    }
}

#[test]
fn issue_decode_verify() {
    let cert = body().issue(&group_key()).unwrap();
    assert_eq!(cert.as_bytes().len(), FIXED_LEN + 1 + 4 + 2 + 8 + 64);
    let now = Timestamp::from_secs(1_800_000_000);
    let back = UnverifiedCertificate::decode(cert.as_bytes())
        .unwrap()
        .verify(&group_key().verifying_key(), now)
        .unwrap();
    assert_eq!(back, cert);
    assert_eq!(back.body(), &body());
}

#[test]
fn rejects_tamper_wrong_key_and_time() {
    let cert = body().issue(&group_key()).unwrap();
    let gk = group_key().verifying_key();
    let now = Timestamp::from_secs(1_800_000_000);
    let mut bytes = cert.as_bytes().to_vec();
    bytes[4] ^= 1; // member id
    assert_eq!(
        UnverifiedCertificate::decode(&bytes)
            .unwrap()
            .verify(&gk, now),
        Err(CertificateError::BadSignature)
    );
    let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
    assert!(matches!(
        UnverifiedCertificate::decode(cert.as_bytes())
            .unwrap()
            .verify(&other, now),
        Err(CertificateError::WrongIssuer { .. })
    ));
    let late = Timestamp::from_secs(1_900_000_001);
    assert!(matches!(
        UnverifiedCertificate::decode(cert.as_bytes())
            .unwrap()
            .verify(&gk, late),
        Err(CertificateError::NotValidNow { .. })
    ));
}

#[test]
fn decode_never_panics_on_prefixes() {
    let cert = body().issue(&group_key()).unwrap();
    for n in 0..cert.as_bytes().len() {
        assert!(UnverifiedCertificate::decode(&cert.as_bytes()[..n]).is_err());
    }
    let mut long = cert.as_bytes().to_vec();
    long.push(0);
    assert!(UnverifiedCertificate::decode(&long).is_err());
}

/// Issue 13, item 6: a certificate listing more than [`MAX_CERT_SLICES`] slices is refused
/// by its length fields, before a slice is read or a slice set built (before the fix it
/// decoded, and its 65,535 slices were normalised before the issuer was known).
#[test]
fn oversized_certificate_is_refused_before_its_slices_are_read() {
    let full = body().issue(&group_key()).unwrap();
    let at = FIXED_LEN + 1 + 4;
    let hostile = |n: usize| {
        let mut b = full.as_bytes()[..at].to_vec();
        b.extend_from_slice(&(n as u16).to_be_bytes());
        for i in 0..n as u32 {
            // Mixed masks: the costly kind to normalise.
            b.extend_from_slice(&(i << 11).to_be_bytes());
            b.extend_from_slice(&(0xffff_ff00u32 << (i % 3)).to_be_bytes());
        }
        b.extend_from_slice(&[0u8; SIGNATURE_LEN]);
        b
    };
    crate::slice::work::take();
    let bytes = hostile(u16::MAX as usize);
    assert_eq!(
        UnverifiedCertificate::decode(&bytes),
        Err(CertificateError::TooManySlices(65_535))
    );
    assert_eq!(
        peek_issuer(&bytes),
        Err(CertificateError::TooManySlices(65_535))
    );
    assert_eq!(crate::slice::work::take(), 0, "no slice set was built");
    let over = hostile(MAX_CERT_SLICES + 1);
    assert_eq!(
        UnverifiedCertificate::decode(&over),
        Err(CertificateError::TooManySlices(MAX_CERT_SLICES + 1))
    );
    assert_eq!(crate::slice::work::take(), 0, "no slice set was built");
    // At the cap the layout is fine (the signature is not: it is zeros).
    let at_cap = hostile(MAX_CERT_SLICES);
    assert!(at_cap.len() <= MAX_CERT_LEN);
    assert!(!matches!(
        UnverifiedCertificate::decode(&at_cap),
        Err(CertificateError::TooManySlices(_))
    ));
    // And the admin tool cannot issue one over the cap.
    let mut b = body();
    // Values of even parity differ in two bits at least: no two are siblings to merge.
    b.slices = (0u32..)
        .filter(|v| v.count_ones() % 2 == 0)
        .take(MAX_CERT_SLICES + 1)
        .map(|v| Slice::new(v, 0xffff_ffff))
        .collect();
    assert_eq!(b.slices.len(), MAX_CERT_SLICES + 1);
    assert_eq!(
        b.issue(&group_key()),
        Err(CertificateError::TooManySlices(MAX_CERT_SLICES + 1))
    );
}

/// Certificate bytes with `body()`'s fixed part and groups, `slices` as listed, and a
/// signature: zeros, or the group key's when `signed` (a group key that certified hostile
/// slices, which the admin tool cannot do).
fn listing(slices: &[Slice], signed: bool) -> Vec<u8> {
    let full = body().issue(&group_key()).unwrap();
    let at = FIXED_LEN + 1 + 4;
    let mut b = full.as_bytes()[..at].to_vec();
    b.extend_from_slice(&(slices.len() as u16).to_be_bytes());
    for s in slices {
        b.extend_from_slice(&s.value().to_be_bytes());
        b.extend_from_slice(&s.mask().to_be_bytes());
    }
    let sig = if signed {
        signature::sign(&group_key(), &signing_message(&b)).to_bytes()
    } else {
        [0u8; SIGNATURE_LEN]
    };
    b.extend_from_slice(&sig);
    b
}

/// Issue 13, item 6: the 188-byte certificate the fuzzer found (7 slices of interleaved
/// masks) cost 124,428 slice-set steps (1.2 s in a debug build) to decode, its slice set
/// built before any signature was checked. Decoding and a failed check now build nothing.
#[test]
fn the_slow_fuzz_certificate_decodes_without_building_a_slice_set() {
    let bytes = include_bytes!("../fuzz/seeds/certificate/seed-slow-certificate-decode-3s");
    let n = usize::from(read_u16(bytes, FIXED_LEN + 1 + 4 * usize::from(bytes[61])));
    assert_eq!(n, 7);
    crate::slice::work::take();
    let cert = UnverifiedCertificate::decode(bytes);
    let steps = crate::slice::work::take();
    assert!(
        steps <= 40 * n as u64,
        "decode: {steps} steps for {n} slices"
    );
    let cert = cert.expect("lays out well");
    assert!(cert
        .verify(&group_key().verifying_key(), Timestamp(0))
        .is_err());
    let steps = crate::slice::work::take();
    assert!(
        steps <= 40 * n as u64,
        "verify: {steps} steps for {n} slices"
    );
}

/// Issue 13, item 6: [`MAX_CERT_SLICES`] hostile slices cost nothing before the issuer's
/// signature, and a bounded number of steps after it: a certificate the group key signed
/// is refused as too complex rather than normalised for seconds.
#[test]
fn hostile_certificate_slices_cost_a_bounded_number_of_steps() {
    use crate::slice::adversarial::{interleaved, pairs_then_all};
    let n = MAX_CERT_SLICES;
    let budget = crate::slice::step_budget(n);
    let gk = group_key().verifying_key();
    let now = Timestamp::from_secs(1_800_000_000);
    for (name, slices) in [
        ("interleaved", interleaved(n, 1)),
        ("interleaved", interleaved(n, 2)),
        ("pairs then all", pairs_then_all(n)),
    ] {
        let (unsigned, signed) = (listing(&slices, false), listing(&slices, true));
        crate::slice::work::take();
        let unsigned = UnverifiedCertificate::decode(&unsigned).unwrap();
        assert_eq!(
            unsigned.verify(&gk, now),
            Err(CertificateError::BadSignature)
        );
        let steps = crate::slice::work::take();
        assert_eq!(steps, 0, "{name}: {steps} steps before the signature");
        let signed = UnverifiedCertificate::decode(&signed).unwrap();
        let r = signed.verify(&gk, now);
        let steps = crate::slice::work::take();
        assert!(steps <= budget, "{name}: {steps} steps after the signature");
        assert!(r.is_err(), "{name}: accepted");
    }
}

#[test]
fn key_id_text() {
    let id = KeyId::of(&group_key().verifying_key());
    assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
    assert!("xyz".parse::<KeyId>().is_err());
}

/// What [`body()`]'s member may do on IPv6: one SSM group, two /56-bit slices.
fn ipv6_grant() -> Ipv6Grant {
    Ipv6Grant {
        groups: vec![Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 1)],
        slices: [Slice6::new(1 << 72, 3 << 72), Slice6::new(2 << 72, 3 << 72)]
            .into_iter()
            .collect(),
    }
}

const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

/// Issue 15, item 2: a certificate that grants nothing on IPv6 is the version 1 certificate,
/// byte for byte (SPEC.md §7's worked example pins those bytes inside a join).
#[test]
fn an_empty_ipv6_grant_issues_the_version_1_certificate() {
    let v1 = body().issue(&group_key()).unwrap();
    let same = body()
        .issue_with_ipv6(&Ipv6Grant::default(), &group_key())
        .unwrap();
    assert_eq!(same.as_bytes(), v1.as_bytes());
    assert_eq!(v1.as_bytes()[0], CERT_VERSION);
    let back =
        MemberCertificate::from_trusted_bytes(v1.as_bytes(), &group_key().verifying_key(), NOW)
            .unwrap();
    assert!(back.ipv6().is_empty());
}

/// Issue 15, item 2: IPv6 groups and slices ride in a version 2 certificate that the issuer's
/// signature covers, and come back as issued.
#[test]
fn ipv6_groups_and_slices_round_trip_under_the_signature() {
    let cert = body().issue_with_ipv6(&ipv6_grant(), &group_key()).unwrap();
    let bytes = cert.as_bytes();
    assert_eq!(bytes[0], CERT_VERSION_IPV6);
    let v1_len = FIXED_LEN + 1 + 4 + 2 + 8;
    assert_eq!(bytes.len(), v1_len + 1 + 16 + 2 + 2 * 32 + SIGNATURE_LEN);
    assert_eq!(peek_member_id(bytes), Some(MemberId(3)));
    assert_eq!(peek_issuer(bytes), Ok(body().issuer));
    let unverified = UnverifiedCertificate::decode(bytes).unwrap();
    assert_eq!(unverified.unverified_ipv6().groups, ipv6_grant().groups);
    assert_eq!(unverified.unverified_ipv6().slices.len(), 2);
    let back = unverified
        .verify(&group_key().verifying_key(), NOW)
        .unwrap();
    assert_eq!(back, cert);
    assert_eq!(back.ipv6(), &ipv6_grant());
    assert_eq!(back.body(), &body());
    // Every byte of the IPv6 section is signed.
    let gk = group_key().verifying_key();
    for i in v1_len..bytes.len() - SIGNATURE_LEN {
        let mut b = bytes.to_vec();
        b[i] ^= 0x01;
        let r = UnverifiedCertificate::decode(&b).and_then(|c| c.verify(&gk, NOW));
        assert!(r.is_err(), "flipping byte {i} still verifies");
    }
    // Version 1 bytes relabelled as version 2 (and back) do not lay out.
    let v1 = body().issue(&group_key()).unwrap();
    let mut relabelled = v1.as_bytes().to_vec();
    relabelled[0] = CERT_VERSION_IPV6;
    assert!(UnverifiedCertificate::decode(&relabelled).is_err());
    let mut relabelled = bytes.to_vec();
    relabelled[0] = CERT_VERSION;
    assert!(UnverifiedCertificate::decode(&relabelled).is_err());
}

/// Certificate bytes with `body()`'s version 1 part, `groups6` IPv6 groups and `slices6` IPv6
/// slices as the counts say, and a zero signature.
fn v2_listing(groups6: usize, n_slices6: u16, slices6: &[Slice6]) -> Vec<u8> {
    let v1 = body().issue(&group_key()).unwrap();
    let mut b = v1.as_bytes()[..v1.as_bytes().len() - SIGNATURE_LEN].to_vec();
    b[0] = CERT_VERSION_IPV6;
    b.push(groups6 as u8);
    for _ in 0..groups6 {
        b.extend_from_slice(&Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0, 1).octets());
    }
    b.extend_from_slice(&n_slices6.to_be_bytes());
    for s in slices6 {
        b.extend_from_slice(&s.value().to_be_bytes());
        b.extend_from_slice(&s.mask().to_be_bytes());
    }
    b.extend_from_slice(&[0u8; SIGNATURE_LEN]);
    b
}

/// Issue 15, item 2: a truncated IPv6 section is malformed at every length, never a panic.
#[test]
fn a_truncated_ipv6_section_is_refused_at_every_length() {
    let cert = body().issue_with_ipv6(&ipv6_grant(), &group_key()).unwrap();
    for n in 0..cert.as_bytes().len() {
        let r = UnverifiedCertificate::decode(&cert.as_bytes()[..n]);
        assert!(r.is_err(), "{n} bytes decoded");
        assert!(peek_issuer(&cert.as_bytes()[..n]).is_err());
    }
    let mut long = cert.as_bytes().to_vec();
    long.push(0);
    assert!(UnverifiedCertificate::decode(&long).is_err());
    // Counts that promise more than the bytes hold.
    let short = v2_listing(1, 3, &[Slice6::ALL]);
    assert_eq!(
        UnverifiedCertificate::decode(&short),
        Err(CertificateError::Malformed("truncated"))
    );
    // An empty section: the certificate is version 1.
    assert_eq!(
        UnverifiedCertificate::decode(&v2_listing(0, 0, &[])),
        Err(CertificateError::Malformed("empty IPv6 section"))
    );
    // A slice value with bits outside its mask.
    let stray = v2_listing(1, 1, &[Slice6::ALL]);
    let mut stray = stray;
    let at = stray.len() - SIGNATURE_LEN - 32;
    stray[at + 15] = 1;
    assert_eq!(
        UnverifiedCertificate::decode(&stray),
        Err(CertificateError::Malformed(
            "IPv6 slice value has bits outside its mask"
        ))
    );
}

/// Issue 15, item 2: more IPv6 slices than [`MAX_CERT_SLICES6`], or a section that makes the
/// certificate longer than [`MAX_CERT_LEN`], is refused by its length fields, before a slice is
/// read or a set built; the admin tool cannot issue either.
#[test]
fn an_oversized_ipv6_section_is_refused_before_it_is_read() {
    let many = v2_listing(1, u16::MAX, &[]);
    let over = v2_listing(1, MAX_CERT_SLICES6 as u16 + 1, &[]);
    let slices: Vec<Slice6> = (0..MAX_CERT_SLICES6 as u128)
        .map(|i| Slice6::new(i, u128::MAX))
        .collect();
    let long = v2_listing(255, MAX_CERT_SLICES6 as u16, &slices);
    crate::slice::work::take();
    assert_eq!(
        UnverifiedCertificate::decode(&many),
        Err(CertificateError::TooManySlices6(65_535))
    );
    assert_eq!(
        peek_issuer(&many),
        Err(CertificateError::TooManySlices6(65_535))
    );
    assert_eq!(
        UnverifiedCertificate::decode(&over),
        Err(CertificateError::TooManySlices6(MAX_CERT_SLICES6 + 1))
    );
    // 255 IPv6 groups and the slice cap: over the byte cap.
    assert!(long.len() > MAX_CERT_LEN);
    assert_eq!(
        UnverifiedCertificate::decode(&long),
        Err(CertificateError::TooLong(long.len()))
    );
    assert_eq!(crate::slice::work::take(), 0, "no slice set was built");
    // At the caps and within the bytes, the layout is fine (the signature is not).
    let at_cap = v2_listing(1, MAX_CERT_SLICES6 as u16, &slices);
    let decoded = UnverifiedCertificate::decode(&at_cap).unwrap();
    assert_eq!(
        decoded.verify(&group_key().verifying_key(), NOW),
        Err(CertificateError::BadSignature)
    );
    // The admin tool refuses what a verifier would.
    let mut grant = ipv6_grant();
    grant.slices = (0u128..)
        .filter(|v| v.count_ones() % 2 == 0)
        .take(MAX_CERT_SLICES6 + 1)
        .map(|v| Slice6::new(v, u128::MAX))
        .collect();
    assert_eq!(
        body().issue_with_ipv6(&grant, &group_key()),
        Err(CertificateError::TooManySlices6(MAX_CERT_SLICES6 + 1))
    );
    let mut grant = ipv6_grant();
    grant.groups = vec![Ipv6Addr::LOCALHOST; 200];
    assert!(matches!(
        body().issue_with_ipv6(&grant, &group_key()),
        Err(CertificateError::TooLong(_))
    ));
}
