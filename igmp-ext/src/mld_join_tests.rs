//! The MLDv2 signed join: round trip, every refusal of `verify6`, the cross-protocol check
//! against the IGMPv3 join, sizes, and the SPEC.md §3.8 worked example.

use super::*;
use crate::fixtures::{mld_spec_example, Fixture, FixtureGrants6, GROUP6, IFINDEX, LINK6, NOW};
use crate::join::JOIN_SIGNING_CONTEXT;
use crate::verify::{Accepted, JoinVerifier, Reason, VerifierConfig};
use crate::verify6::{verify_mld_datagram, AcceptedMld, MldVerifierConfig, VerifiedMldJoin};
use crate::wire::ipv6::HEADER_LEN;
use crate::wire::mld::fill_checksum;

/// IPv6 header and the 8-byte Hop-by-Hop header before the MLD message.
const IP: usize = HEADER_LEN + 8;

fn unit(i: u128) -> Slice6 {
    Slice6::new(i << 72, 0xff << 72)
}

fn check(f: &Fixture, d: &[u8]) -> Result<AcceptedMld, crate::verify::Rejection> {
    check_with(&f.grants6(SliceSet6::full()), f, d)
}

fn check_with(
    grants: &FixtureGrants6,
    f: &Fixture,
    d: &[u8],
) -> Result<AcceptedMld, crate::verify::Rejection> {
    verify_mld_datagram(
        NOW,
        IFINDEX,
        d,
        &MldVerifierConfig::default(),
        &f.links6(),
        grants,
    )
}

fn reason(r: Result<AcceptedMld, crate::verify::Rejection>) -> Reason {
    match r {
        Err(e) => e.reason,
        Ok(a) => panic!("accepted: {a:?}"),
    }
}

fn verified(r: Result<AcceptedMld, crate::verify::Rejection>) -> VerifiedMldJoin {
    match r {
        Ok(AcceptedMld::Join { join, .. }) => join,
        other => panic!("not a verified join: {other:?}"),
    }
}

/// Refills the ICMPv6 checksum of a datagram whose MLD bytes a test changed, so that only the
/// change is refused.
fn refill(d: &mut [u8]) {
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&d[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&d[24..40]).unwrap());
    fill_checksum(&mut d[IP..], src, dst);
}

#[test]
fn a_signed_mld_join_round_trips_and_verifies() {
    let f = Fixture::new(2);
    let mut claims = f.claims6(&[unit(1), unit(5), unit(9)], 3, NOW, 1);
    claims.entries.push(SliceEntry6::exclude(Slice6::prefix(
        "2001:db8::".parse().unwrap(),
        32,
    )));
    let chain = crate::liveness::HashChain::new([1; 16], 2, 10, 10);
    claims.liveness = vec![chain.anchor(9).unwrap()];
    let d = f.datagram6(1, &claims);
    let packet = MldPacket::new_checked(&d[IP..]).unwrap();
    let parsed = UnverifiedMldJoin::parse(&packet, |g| g == GROUP6)
        .unwrap()
        .unwrap();
    assert_eq!(parsed.claims(), &claims);
    assert_eq!(parsed.claimed_member(), Some(f.members[1].id));
    assert_eq!(
        parsed.signed_len(),
        MLD_JOIN_SIGNING_CONTEXT.len() + 16 + d.len() - IP - SIGNATURE_LEN
    );
    let join = verified(check(&f, &d));
    assert_eq!(join.member(), f.members[1].id);
    assert_eq!((join.sender(), join.group()), (f.addr6(1), GROUP6));
    assert_eq!((join.link(), join.ifindex()), (LINK6, IFINDEX));
    assert_eq!(join.epoch(), AllocationEpoch(3));
    assert_eq!(join.slices(), &claims.slices().unwrap());
    assert!(join
        .slices()
        .contains_addr("2a00:1:2:0500::77".parse().unwrap()));
    assert!(!join
        .slices()
        .contains_addr("2001:db8:0:0500::77".parse().unwrap()));
    // The kernel's view: one INCLUDE record of the base addresses, hop limit 1, Router Alert.
    let ip = crate::wire::ipv6::Ipv6Packet::new_checked(&d[..]).unwrap();
    assert_eq!((ip.hop_limit(), ip.router_alert()), (1, Some(0)));
    assert_eq!(ip.dst_addr(), ALL_MLDV2_ROUTERS);
    let record = packet.group_records().next().unwrap();
    assert_eq!(
        record.sources().collect::<Vec<_>>(),
        claims.record_sources()
    );
    // A leave: no slices, CHANGE_TO_INCLUDE.
    let leave = f.datagram6(0, &f.claims6(&[], 4, NOW, 2));
    let join = verified(check(&f, &leave));
    assert!(join.slices().is_empty());
    assert_eq!(join.record_type(), RecordType::ChangeToIncludeMode);
}

#[test]
fn the_builder_refuses_what_a_router_would() {
    let f = Fixture::new(2);
    let m = &f.members[0];
    let claims = f.claims6(&[unit(1)], 1, NOW, 1);
    for sender in [
        Ipv6Addr::UNSPECIFIED,
        "2001:db8:0:1::5".parse().unwrap(),
        "ff02::1".parse().unwrap(),
    ] {
        assert_eq!(
            build_signed_mld_report(&claims, sender, &m.cert, &m.key),
            Err(BuildError::SenderNotLinkLocal(sender))
        );
    }
    let fe80 = f.addr6(0);
    assert_eq!(
        build_signed_mld_report(&claims, fe80, &m.cert, &f.members[1].key),
        Err(BuildError::KeyMismatch)
    );
    let mut c = claims.clone();
    c.record_type = RecordType::BlockOldSources;
    assert_eq!(
        build_signed_mld_report(&c, fe80, &m.cert, &m.key),
        Err(BuildError::RecordType(RecordType::BlockOldSources))
    );
    let mut c = claims.clone();
    c.link = Slice6::new(1, 1);
    assert!(build_signed_mld_report(&c, fe80, &m.cert, &m.key).is_err());
    let mut c = claims;
    c.entries = (0..=MAX_JOIN_SLICES as u128)
        .map(|i| SliceEntry6::include(Slice6::new(i << 64, 0xffff << 64)))
        .collect();
    assert!(matches!(
        build_signed_mld_report(&c, fe80, &m.cert, &m.key),
        Err(BuildError::TooLarge(_))
    ));
}

/// Every refusal the MLDv2 checks can make before and at the signature, each with the reason
/// the IGMPv3 pipeline gives the same fault.
#[test]
fn every_refusal_has_the_igmp_reason() {
    let f = Fixture::new(2);
    let claims = f.claims6(&[unit(1), unit(2)], 1, NOW, 1);
    let good = f.datagram6(0, &claims);
    assert!(matches!(check(&f, &good), Ok(AcceptedMld::Join { .. })));
    let sig_at = good.len() - SIGNATURE_LEN;

    // Bad signature: one bit of it.
    let mut d = good.clone();
    d[sig_at + 7] ^= 0x10;
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::BadSignature);
    // Wrong sender: another link-local address on the same link (the signature covers it).
    let mut d = good.clone();
    d[23] = 0x77;
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::BadSignature);
    // Signed by another member's key than its certificate's.
    let other = f.datagram6(1, &claims);
    let mut d = good.clone();
    d[sig_at..].copy_from_slice(&other[other.len() - SIGNATURE_LEN..]);
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::BadSignature);
    // A signed byte changed (the epoch).
    let mut d = good.clone();
    let at = IP + find(&d[IP..], &[0x00, 0x02, 0x00, 0x08]) + 11;
    d[at] ^= 1;
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::BadSignature);

    // Checksum.
    let mut d = good.clone();
    d[IP + 2] ^= 1;
    assert_eq!(reason(check(&f, &d)), Reason::BadChecksum);
    // Untimely, both ways.
    for ts in [
        NOW.saturating_sub(core::time::Duration::from_secs(31)),
        NOW.saturating_add(core::time::Duration::from_secs(31)),
    ] {
        let d = f.datagram6(0, &f.claims6(&[unit(1)], 1, ts, 9));
        assert_eq!(reason(check(&f, &d)), Reason::Untimely);
    }
    // Proper link: hop limit, Router Alert, interface, signed link prefix, sender.
    let mut d = good.clone();
    d[7] = 255;
    assert_eq!(reason(check(&f, &d)), Reason::WrongLink);
    let mut d = good.clone();
    d[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&[0, 1]);
    assert_eq!(reason(check(&f, &d)), Reason::WrongLink, "router alert 1");
    let r = verify_mld_datagram(
        NOW,
        IFINDEX + 1,
        &good,
        &MldVerifierConfig::default(),
        &f.links6(),
        &f.grants6(SliceSet6::full()),
    );
    assert_eq!(reason(r), Reason::WrongLink, "another interface");
    let mut c = claims.clone();
    c.link = Slice6::prefix("2001:db8:0:2::".parse().unwrap(), 64);
    assert_eq!(
        reason(check(&f, &f.datagram6(0, &c))),
        Reason::WrongLink,
        "a prefix of another link"
    );
    let mut d = good.clone();
    d[8..24].copy_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::WrongLink, "from ::");

    // Unsigned: no E flag; an MLDv1 report for the protected group.
    let mut d = good.clone();
    d[IP + 4] = 0;
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::Unsigned);
    let v1 = MldRepr::V1Report { group: GROUP6 };
    let mut msg = vec![0u8; v1.buffer_len()];
    v1.emit(&mut msg, f.addr6(0), ALL_MLDV2_ROUTERS);
    let d = build_mld_datagram(f.addr6(0), &msg);
    assert_eq!(reason(check(&f, &d)), Reason::Unsigned);
    // Record mismatch: a record source that is not an include slice's base.
    let mut d = good.clone();
    d[IP + 8 + 20 + 15] ^= 1;
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::RecordMismatch);
    // Slices out of range: a value with bits outside its mask (a malformed entry).
    let mut d = good.clone();
    let entries = IP + find(&d[IP..], &[0x00, 0x01, 0x00, 2 * SLICE6_ENTRY_LEN as u8]) + 4;
    d[entries + 16] |= 1;
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::MalformedExtension);
    // Unknown flag.
    let mut d = good.clone();
    d[entries] = 0x02;
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::MalformedExtension);
    // Slices out of range: beyond the member's grant.
    let grants = f.grants6(SliceSet6::from(unit(1)));
    assert_eq!(
        reason(check_with(&grants, &f, &good)),
        Reason::OutsideCertificate
    );
    let within = f.datagram6(0, &f.claims6(&[unit(1)], 1, NOW, 5));
    assert!(check_with(&grants, &f, &within).is_ok());
    // The grant's refusals pass through: an unknown certificate.
    let grants = f.grants6(SliceSet6::full());
    let only_second = FixtureGrants6 {
        grants: grants.grants[1..].to_vec(),
    };
    assert_eq!(
        reason(check_with(&only_second, &f, &good)),
        Reason::BadCertificate
    );
    // Too large: a datagram over the cap, by its length alone.
    let big = vec![0u8; MAX_MLD_JOIN_DATAGRAM + 1];
    assert_eq!(reason(check(&f, &big)), Reason::TooLarge);
    // Not IPv6 at all.
    assert_eq!(reason(check(&f, &good[..30])), Reason::Malformed);
}

/// More entries than MAX_JOIN_SLICES are refused from the sub-TLV length, before any entry is
/// read; hostile masks that a member's key did sign are refused within the step budget.
#[test]
fn too_many_and_too_complex_slices_are_refused() {
    let f = Fixture::new(1);
    let m = &f.members[0];
    let mut claims = f.claims6(&[], 1, NOW, 1);
    claims.record_type = RecordType::ModeIsInclude;
    claims.entries = (0..=MAX_JOIN_SLICES as u128)
        .map(|i| SliceEntry6::include(Slice6::new(i << 64, 0xffff << 64)))
        .collect();
    let mld = build_mld_report_uncapped(&claims, f.addr6(0), &m.cert, &m.key).unwrap();
    let packet = MldPacket::new_checked(&mld[..]).unwrap();
    assert_eq!(
        UnverifiedMldJoin::parse(&packet, |_| true).unwrap_err(),
        JoinParseError::TooManySlices(MAX_JOIN_SLICES + 1)
    );
    let d = build_mld_datagram(f.addr6(0), &mld);
    assert_eq!(reason(check(&f, &d)), Reason::TooLarge);

    let hostile: Vec<Slice6> = crate::slice::adversarial::pairs_then_all(1000)
        .into_iter()
        .map(|s| Slice6::new(u128::from(s.value()) << 64, u128::from(s.mask()) << 64))
        .collect();
    claims.entries = hostile.into_iter().map(SliceEntry6::exclude).collect();
    claims.entries[0].exclude = false;
    let d = build_mld_datagram(
        f.addr6(0),
        &build_signed_mld_report(&claims, f.addr6(0), &m.cert, &m.key).unwrap(),
    );
    crate::slice::work::take();
    assert_eq!(reason(check(&f, &d)), Reason::TooLarge);
    let steps = crate::slice::work::take();
    assert!(
        steps <= crate::slice::step_budget(1001),
        "{steps} steps for 1,000 entries"
    );
}

/// Every truncation of the message (and of the datagram) is refused without panicking.
#[test]
fn truncated_joins_are_refused() {
    let f = Fixture::new(1);
    let good = f.datagram6(0, &f.claims6(&[unit(1), unit(2)], 1, NOW, 1));
    for n in 0..good.len() - IP {
        if let Ok(p) = MldPacket::new_checked(&good[IP..IP + n]) {
            assert!(
                UnverifiedMldJoin::parse(&p, |_| true).is_err(),
                "message truncated to {n}"
            );
        }
    }
    for n in 0..good.len() {
        let mut d = good[..n].to_vec();
        if d.len() >= 6 {
            // Payload Length agreeing with the cut, so the MLD parser sees it.
            let payload = (n.saturating_sub(HEADER_LEN)) as u16;
            d[4..6].copy_from_slice(&payload.to_be_bytes());
            if n > IP + 4 {
                refill(&mut d);
            }
        }
        assert!(check(&f, &d).is_err(), "datagram truncated to {n}");
    }
}

/// An IGMPv3 join signature does not verify over MLDv2 bytes, nor the reverse: each kind has its
/// own context string, so even a member key signing both kinds cannot have one taken for the
/// other.
#[test]
fn signatures_do_not_cross_between_igmp_and_mld() {
    let f = Fixture::new(1);
    let m = &f.members[0];
    // An MLDv2 join signed as if it were IGMPv3 bytes (the IGMP context over the same message).
    let mut d = f.datagram6(0, &f.claims6(&[unit(1)], 1, NOW, 1));
    let sig_at = d.len() - SIGNATURE_LEN;
    let mut as_igmp = JOIN_SIGNING_CONTEXT.to_vec();
    as_igmp.extend_from_slice(&f.addr6(0).octets());
    as_igmp.extend_from_slice(&d[IP..sig_at]);
    as_igmp[JOIN_SIGNING_CONTEXT.len() + 16 + 2..][..2].copy_from_slice(&[0, 0]);
    let sig = signature::sign(&m.key, &as_igmp);
    d[sig_at..].copy_from_slice(&sig.to_bytes());
    refill(&mut d);
    assert_eq!(reason(check(&f, &d)), Reason::BadSignature);
    // Sanity: the same bytes signed under the MLD context verify.
    let sig = signature::sign(&m.key, &mld_signed_message(f.addr6(0), &d[IP..sig_at]));
    d[sig_at..].copy_from_slice(&sig.to_bytes());
    refill(&mut d);
    assert!(check(&f, &d).is_ok());

    // An IGMPv3 join signed under the MLD context: the IGMPv3 verifier refuses it.
    let mut d = f.join(0, &[crate::slice::Slice::new(1, 1)], 1, 2);
    let sig_at = d.len() - SIGNATURE_LEN;
    let mut as_mld = crate::join::signed_message(m.addr, &d[24..sig_at]);
    as_mld.splice(
        ..JOIN_SIGNING_CONTEXT.len(),
        MLD_JOIN_SIGNING_CONTEXT.iter().copied(),
    );
    let sig = signature::sign(&m.key, &as_mld);
    d[sig_at..].copy_from_slice(&sig.to_bytes());
    crate::wire::igmp::fill_checksum(&mut d[24..]);
    let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
    let r = v.handle_datagram(NOW, IFINDEX, &d, &f.key_source());
    assert_eq!(r.map(|_| ()).unwrap_err().reason, Reason::BadSignature);
    // And the IGMPv3 bytes with their own signature still verify there.
    let good = f.join(0, &[crate::slice::Slice::new(1, 1)], 1, 3);
    assert!(matches!(
        v.handle_datagram(NOW, IFINDEX, &good, &f.key_source()),
        Ok(Accepted::Join { .. })
    ));
    // The two contexts differ, and neither is a prefix of the other.
    assert!(!MLD_JOIN_SIGNING_CONTEXT.starts_with(JOIN_SIGNING_CONTEXT));
    assert!(!JOIN_SIGNING_CONTEXT.starts_with(MLD_JOIN_SIGNING_CONTEXT));
}

/// How many IPv6 slices a join carries within the IPv6 minimum MTU (1280 bytes, RFC 8200 §5),
/// which every link forwards unfragmented (a member's report cannot be fragmented: the router
/// refuses fragments): each include slice costs exactly 49 bytes (a 16-byte record source and
/// a 33-byte entry), so with the fixture's 140-byte certificate 18 fit, the 19th does not.
#[test]
fn eighteen_ipv6_slices_fit_the_minimum_mtu() {
    let f = Fixture::new(1);
    assert_eq!(f.members[0].cert.as_bytes().len(), 140);
    let len = |n: u128| {
        let slices: Vec<Slice6> = (0..n).map(unit).collect();
        f.datagram6(0, &f.claims6(&slices, 1, NOW, 1)).len()
    };
    let base = len(0);
    assert_eq!(base, 362, "SPEC.md §3.8 states it");
    for n in 1..=40 {
        assert_eq!(len(n), base + 49 * n as usize, "{n} slices");
    }
    let fit = (1..=40).take_while(|&n| len(n) <= 1280).last().unwrap();
    assert_eq!(fit, 18, "{} bytes with no slice", base);
    assert!(len(18) <= 1280 && len(19) > 1280);
    assert!(len(23) <= 1500 && len(24) > 1500, "23 on a 1,500-byte link");
    // Every one of them is a verified join.
    let slices: Vec<Slice6> = (0..18).map(unit).collect();
    let join = verified(check(&f, &f.datagram6(0, &f.claims6(&slices, 1, NOW, 7))));
    assert_eq!(
        join.slices().len(),
        2,
        "0-15 merge to one, 16 and 17 to another"
    );
}

/// A join at every cap (MAX_JOIN_SLICES includes, two liveness anchors, the largest certificate)
/// fits MAX_MLD_JOIN_DATAGRAM and an IPv6 payload.
#[test]
fn a_join_at_every_cap_fits_the_datagram_cap() {
    let f = Fixture::new(1);
    let slices: Vec<Slice6> = (0..MAX_JOIN_SLICES as u128)
        .map(|i| Slice6::new(i << 64, 0xffff << 64))
        .collect();
    let mut claims = f.claims6(&slices, 1, NOW, 1);
    let chain = crate::liveness::HashChain::new([1; 16], 2, 10, 10);
    claims.liveness = vec![chain.anchor(9).unwrap(), chain.anchor(8).unwrap()];
    let d = f.datagram6(0, &claims);
    let cert_room = crate::cert::MAX_CERT_LEN - f.members[0].cert.as_bytes().len();
    assert!(
        d.len() + cert_room <= MAX_MLD_JOIN_DATAGRAM,
        "{} bytes",
        d.len() + cert_room
    );
    assert!(d.len() + cert_room - HEADER_LEN <= usize::from(u16::MAX));
    assert!(check(&f, &d).is_ok());
}

#[test]
fn signed_message_layout() {
    let d = mld_spec_example();
    let msg = &d[IP..];
    let sender: Ipv6Addr = "fe80::1".parse().unwrap();
    let m = mld_signed_message(sender, &msg[..msg.len() - SIGNATURE_LEN]);
    assert_eq!(&m[..28], MLD_JOIN_SIGNING_CONTEXT);
    assert_eq!(&m[28..44], &sender.octets());
    assert_eq!(&m[44..46], &msg[..2]);
    assert_eq!(&m[46..48], &[0, 0], "checksum taken as zero");
    assert_eq!(&m[48..], &msg[4..msg.len() - SIGNATURE_LEN]);
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("bytes present")
}

fn spec_hex() -> Vec<u8> {
    let spec = include_str!("../../SPEC.md");
    let start = spec
        .find("<!-- mld-worked-example-begin -->")
        .expect("begin marker");
    let end = spec
        .find("<!-- mld-worked-example-end -->")
        .expect("end marker");
    let text: String = spec[start..end]
        .lines()
        .filter(|l| l.chars().all(|c| c.is_ascii_hexdigit() || c == ' ') && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("");
    hex::decode(text.replace(' ', "")).expect("hex in SPEC.md")
}

#[test]
fn spec_mld_worked_example_matches() {
    let built = mld_spec_example();
    assert_eq!(
        spec_hex(),
        built,
        "SPEC.md §3.8 is out of date: regenerate with --example spec_example"
    );
    let f = Fixture::new(1);
    let join = verified(check(&f, &built));
    assert!(join
        .slices()
        .contains_addr("2a00:1:2:0100::1".parse().unwrap()));
    assert!(!join
        .slices()
        .contains_addr("2001:db8:0:0100::1".parse().unwrap()));
    assert_eq!(join.epoch(), AllocationEpoch(7));
    // Field offsets the SPEC table states (from the ICMPv6 type).
    let msg = &built[IP..];
    assert_eq!(&msg[0..2], &[0x8f, 0x00]);
    assert_eq!(&msg[4..6], &[0x80, 0x00]);
    assert_eq!(&msg[8..12], &[0x01, 0x00, 0x00, 0x01]);
    assert_eq!(&msg[44..46], &[0xff, 0xfe]);
    assert_eq!(&msg[49..53], &[0x00, 0x01, 0x00, 0x42]);
    assert_eq!(&msg[119..123], &[0x00, 0x02, 0x00, 0x08]);
    assert_eq!(&msg[163..167], &[0x00, 0x05, 0x00, 0x8c]);
    assert_eq!(&msg[307..312], &[0x00, 0x08, 0x00, 0x11, 64]);
    assert_eq!(&msg[328..332], &[0xff, 0xff, 0x00, 0x40]);
    assert_eq!(msg.len(), 396);
    assert_eq!(built.len(), 444);
}

/// An MLDv2 join names its standby units (SPEC.md §3.8, §5.5): a bitmap over the /56 site
/// slicing's units that comes back as the same units, verified within the grant like the
/// claim (`outside-certificate` beyond it); a mixed or too fine list is not built.
#[test]
fn standby_units_round_trip_over_mld_and_the_grant_bounds_them() {
    let f = Fixture::new(2);
    let mut claims = f.claims6(&[unit(1), unit(5)], 3, NOW, 1);
    claims.standby = vec![
        SliceEntry6::include(unit(0)),
        SliceEntry6::include(unit(7)),
        SliceEntry6::include(unit(255)),
    ];
    let chain = crate::liveness::HashChain::new([1; 16], 2, 10, 10);
    claims.liveness = vec![chain.anchor(4).unwrap()];
    let d = f.datagram6(1, &claims);
    let packet = MldPacket::new_checked(&d[IP..]).unwrap();
    let parsed = UnverifiedMldJoin::parse(&packet, |g| g == GROUP6)
        .unwrap()
        .unwrap();
    assert_eq!(parsed.claims(), &claims);
    let join = verified(check(&f, &d));
    let standby: SliceSet6 = [unit(0), unit(7), unit(255)].into_iter().collect();
    assert_eq!(join.standby(), &standby);
    assert_eq!(join.liveness(), &claims.liveness[..]);
    // A grant of units 0..128 holds the claim but not the standby unit 255.
    let low: SliceSet6 = (0..128).map(unit).collect();
    let r = check_with(&f.grants6(low), &f, &d);
    assert_eq!(reason(r), Reason::OutsideCertificate);
    // The builder takes one mask of at most MAX_STANDBY_BITS bits, include entries only.
    let (m, cert) = (&f.members[1], &f.members[1].cert);
    for bad in [
        vec![
            SliceEntry6::include(unit(1)),
            SliceEntry6::include(Slice6::ALL),
        ],
        vec![SliceEntry6::exclude(unit(1))],
        vec![SliceEntry6::include(Slice6::new(0, 0xfff << 72))],
    ] {
        claims.standby = bad;
        assert!(build_signed_mld_report(&claims, f.addr6(1), cert, &m.key).is_err());
    }
}
