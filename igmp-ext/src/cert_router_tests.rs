//! Tests of router certificates (version 3, SPEC.md §4.3): one encoding per grant, the site
//! under the signature, the caps, and the join paths that take them as member certificates.

use super::*;
use crate::fixtures::{Fixture, GROUP6, IFINDEX};
use crate::slice::SliceSet6;

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

const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);
const SITE: SiteId = SiteId(0x0102_0304);
/// The bytes of `body()`'s version 1 certificate before its signature.
const V1_LEN: usize = FIXED_LEN + 1 + 4 + 2 + 8;

fn ipv6_grant() -> Ipv6Grant {
    Ipv6Grant {
        groups: vec![GROUP6],
        slices: SliceSet6::full(),
    }
}

/// Version 3 bytes with `body()`'s version 1 part, `site`, an IPv6 section of `groups6` groups
/// and `n_slices6` slices (as many all-slices as listed), signed by the group key when
/// `signed`, else a zero signature.
fn v3_listing(site: u32, groups6: usize, n_slices6: u16, signed: bool) -> Vec<u8> {
    let v1 = body().issue(&group_key()).unwrap();
    let mut b = v1.as_bytes()[..V1_LEN].to_vec();
    b[0] = CERT_VERSION_ROUTER;
    b.extend_from_slice(&site.to_be_bytes());
    b.push(groups6 as u8);
    for _ in 0..groups6 {
        b.extend_from_slice(&GROUP6.octets());
    }
    b.extend_from_slice(&n_slices6.to_be_bytes());
    for _ in 0..n_slices6.min(MAX_CERT_SLICES6 as u16) {
        b.extend_from_slice(&[0u8; 32]);
    }
    let sig = if signed {
        signature::sign(&group_key(), &signing_message(&b)).to_bytes()
    } else {
        [0u8; SIGNATURE_LEN]
    };
    b.extend_from_slice(&sig);
    b
}

/// Issue 14, item 2: a router certificate is the member grant plus a site, as version 3 bytes
/// (site after the IPv4 slices, then an IPv6 section, empty here), and comes back as issued.
#[test]
fn a_router_certificate_round_trips_with_its_site() {
    let cert = body().issue_router(SITE, &group_key()).unwrap();
    let bytes = cert.as_bytes();
    assert_eq!(bytes[0], CERT_VERSION_ROUTER);
    assert_eq!(bytes.len(), V1_LEN + SITE_LEN + 1 + 2 + SIGNATURE_LEN);
    assert_eq!(&bytes[V1_LEN..V1_LEN + 4], &[1, 2, 3, 4]);
    assert_eq!(
        &bytes[V1_LEN + 4..V1_LEN + 7],
        &[0, 0, 0],
        "empty IPv6 section"
    );
    assert_eq!(cert.site(), Some(SITE));
    assert_eq!(peek_member_id(bytes), Some(MemberId(3)));
    assert_eq!(peek_issuer(bytes), Ok(body().issuer));
    let unverified = UnverifiedCertificate::decode(bytes).unwrap();
    assert_eq!(unverified.unverified_site(), Some(SITE));
    let back = unverified
        .verify(&group_key().verifying_key(), NOW)
        .unwrap();
    assert_eq!(back, cert);
    assert_eq!(back.site(), Some(SITE));
    assert_eq!(back.body(), &body());
    assert!(back.ipv6().is_empty());
    // With an IPv6 grant: the same version, the section filled.
    let dual = body()
        .issue_router_with_ipv6(SITE, &ipv6_grant(), &group_key())
        .unwrap();
    assert_eq!(dual.as_bytes()[0], CERT_VERSION_ROUTER);
    let back =
        MemberCertificate::from_trusted_bytes(dual.as_bytes(), &group_key().verifying_key(), NOW)
            .unwrap();
    assert_eq!(back.site(), Some(SITE));
    assert_eq!(back.ipv6(), &ipv6_grant());
}

/// Member certificates decode as before: versions 1 and 2 name no site, and their bytes are
/// what `issue` and `issue_with_ipv6` made before router certificates existed (the lengths
/// of SPEC.md §4 and §4.2).
#[test]
fn member_certificates_name_no_site() {
    let gk = group_key().verifying_key();
    let v1 = body().issue(&group_key()).unwrap();
    assert_eq!(v1.as_bytes()[0], CERT_VERSION);
    assert_eq!(v1.as_bytes().len(), V1_LEN + SIGNATURE_LEN);
    let v2 = body().issue_with_ipv6(&ipv6_grant(), &group_key()).unwrap();
    assert_eq!(v2.as_bytes()[0], CERT_VERSION_IPV6);
    assert_eq!(
        v2.as_bytes().len(),
        V1_LEN + 1 + 16 + 2 + 32 + SIGNATURE_LEN
    );
    for cert in [v1, v2] {
        assert_eq!(cert.site(), None);
        let unverified = UnverifiedCertificate::decode(cert.as_bytes()).unwrap();
        assert_eq!(unverified.unverified_site(), None);
        let back = unverified.verify(&gk, NOW).unwrap();
        assert_eq!(back.site(), None);
        assert_eq!(back, cert);
    }
}

/// One encoding per grant: site 0 (no site) is refused at issue and at decode, even signed
/// by the group key; bytes after the signature, every truncation, and member bytes relabelled
/// as version 3 (or router bytes as version 1 or 2) are refused.
#[test]
fn a_router_certificate_has_one_encoding() {
    assert_eq!(
        body().issue_router(SiteId(0), &group_key()),
        Err(CertificateError::Malformed(SITE_ZERO))
    );
    let zero = v3_listing(0, 0, 0, true);
    assert_eq!(
        UnverifiedCertificate::decode(&zero),
        Err(CertificateError::Malformed(SITE_ZERO))
    );
    assert_eq!(
        peek_issuer(&zero),
        Err(CertificateError::Malformed(SITE_ZERO))
    );
    // The listing helper makes what issue_router makes.
    let cert = body().issue_router(SITE, &group_key()).unwrap();
    assert_eq!(v3_listing(SITE.0, 0, 0, true), cert.as_bytes());
    let mut long = cert.as_bytes().to_vec();
    long.push(0);
    assert_eq!(
        UnverifiedCertificate::decode(&long),
        Err(CertificateError::Malformed("bytes after the signature"))
    );
    for n in 0..cert.as_bytes().len() {
        let r = UnverifiedCertificate::decode(&cert.as_bytes()[..n]);
        assert!(r.is_err(), "{n} bytes decoded");
        assert!(peek_issuer(&cert.as_bytes()[..n]).is_err());
    }
    let v1 = body().issue(&group_key()).unwrap();
    let v2 = body().issue_with_ipv6(&ipv6_grant(), &group_key()).unwrap();
    for member in [&v1, &v2] {
        let mut relabelled = member.as_bytes().to_vec();
        relabelled[0] = CERT_VERSION_ROUTER;
        assert!(UnverifiedCertificate::decode(&relabelled).is_err());
    }
    for version in [CERT_VERSION, CERT_VERSION_IPV6] {
        let mut relabelled = cert.as_bytes().to_vec();
        relabelled[0] = version;
        assert!(UnverifiedCertificate::decode(&relabelled).is_err());
    }
    // A version this decoder does not know names itself.
    let mut v4 = cert.as_bytes().to_vec();
    v4[0] = 0x04;
    assert_eq!(
        UnverifiedCertificate::decode(&v4),
        Err(CertificateError::UnsupportedVersion(4))
    );
}

/// The issuer's signature covers the site: flipping any bit of it (to another non-zero site)
/// decodes, and does not verify; the same for every byte of the IPv6 section.
#[test]
fn the_signature_covers_the_site() {
    let gk = group_key().verifying_key();
    let cert = body()
        .issue_router_with_ipv6(SITE, &ipv6_grant(), &group_key())
        .unwrap();
    let bytes = cert.as_bytes();
    for bit in 0..32 {
        let mut b = bytes.to_vec();
        b[V1_LEN + bit / 8] ^= 0x80 >> (bit % 8);
        let unverified = UnverifiedCertificate::decode(&b).unwrap();
        assert_ne!(unverified.unverified_site(), Some(SITE));
        assert_eq!(
            unverified.verify(&gk, NOW),
            Err(CertificateError::BadSignature),
            "site bit {bit}"
        );
    }
    for i in V1_LEN + SITE_LEN..bytes.len() - SIGNATURE_LEN {
        let mut b = bytes.to_vec();
        b[i] ^= 0x01;
        let r = UnverifiedCertificate::decode(&b).and_then(|c| c.verify(&gk, NOW));
        assert!(r.is_err(), "flipping byte {i} still verifies");
    }
}

/// The caps hold for version 3: IPv6 slice count and total length are checked before anything
/// is read (no slice set built), and the admin tool cannot issue a router certificate over
/// [`MAX_CERT_LEN`].
#[test]
fn router_certificates_keep_the_caps() {
    let many = v3_listing(SITE.0, 1, u16::MAX, false);
    let long = v3_listing(SITE.0, 255, MAX_CERT_SLICES6 as u16, false);
    assert!(long.len() > MAX_CERT_LEN);
    crate::slice::work::take();
    assert_eq!(
        UnverifiedCertificate::decode(&many),
        Err(CertificateError::TooManySlices6(65_535))
    );
    assert_eq!(
        UnverifiedCertificate::decode(&long),
        Err(CertificateError::TooLong(long.len()))
    );
    assert_eq!(crate::slice::work::take(), 0, "no slice set was built");
    // The largest version 1 certificate is exactly the cap; with a site it is over it.
    let mut big = body();
    big.groups = vec![Ipv4Addr::new(232, 1, 1, 1); 255];
    big.slices = (0u32..)
        .filter(|v| v.count_ones() % 2 == 0)
        .take(MAX_CERT_SLICES)
        .map(|v| Slice::new(v, 0xffff_ffff))
        .collect();
    assert_eq!(
        big.issue(&group_key()).unwrap().as_bytes().len(),
        MAX_CERT_LEN
    );
    assert_eq!(
        big.issue_router(SITE, &group_key()),
        Err(CertificateError::TooLong(MAX_CERT_LEN + SITE_LEN + 3))
    );
}

/// Joins carry a router certificate as they carry a member's: the IGMPv3 verifier takes a site
/// router's signed join (the upstream join of the site design) for the router's member id.
#[test]
fn the_join_verifier_accepts_a_router_certificate() {
    use crate::verify::{Accepted, JoinVerifier, VerifierConfig};
    let f = Fixture::routers(&[SiteId(1), SiteId(2)]);
    assert_eq!(f.members[0].cert.site(), Some(SiteId(1)));
    assert_eq!(f.members[1].cert.site(), Some(SiteId(2)));
    assert_ne!(
        f.members[0].key.verifying_key(),
        Fixture::new(1).members[0].key.verifying_key(),
        "router keys are not members' keys"
    );
    let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
    let d = f.join(1, &[Slice::new(1, 1)], 4, 1);
    let r = v.handle_datagram(crate::fixtures::NOW, IFINDEX, &d, &f.key_source());
    let Ok(Accepted::Join { join, .. }) = r else {
        panic!("a router's join is refused: {r:?}")
    };
    assert_eq!(join.member(), MemberId(2));
}

/// The MLDv2 verifier reads a router certificate's IPv6 section as a version 2 one's.
#[test]
fn the_mld_verifier_accepts_a_router_certificate() {
    use crate::mld_verifier::{MldJoinVerifier, MldOutcome};
    use crate::verify::VerifierConfig;
    use crate::verify6::MldVerifierConfig;
    let mut f = Fixture::routers(&[SiteId(1)]);
    let m = &mut f.members[0];
    m.cert = m
        .cert
        .body()
        .issue_router_with_ipv6(SiteId(1), &ipv6_grant(), &f.group_key)
        .unwrap();
    let mut v = MldJoinVerifier::new(
        MldVerifierConfig::default(),
        &VerifierConfig::default(),
        f.links6(),
    );
    let units = SliceSet6::site_slicing(2);
    let d = f.datagram6(0, &f.claims6(&units[..1], 1, crate::fixtures::NOW, 1));
    let r = v.handle_datagram(crate::fixtures::NOW, IFINDEX, &d, &f.key_source6());
    let Ok(MldOutcome::Join { join, .. }) = r else {
        panic!("a router's MLDv2 join is refused: {r:?}")
    };
    assert_eq!(join.member(), MemberId(1));
}
