//! The MLDv2 join's UNITS claim (SPEC.md §3.8): round trip, the checks SLICES gets (grant,
//! exclusivity, caps), every malformed shape, and the size that made it: a member's scattered
//! units at the default 8-bit slicing fit the IPv6 minimum MTU.

use super::*;
use crate::fixtures::{Fixture, GROUP6, IFINDEX, NOW};
use crate::mld_verifier::{MldJoinVerifier, MldOutcome};
use crate::verify::{Reason, Rejection, VerifierConfig};
use crate::verify6::{verify_mld_datagram, AcceptedMld, MldVerifierConfig};
use crate::wire::ipv6::HEADER_LEN;
use crate::wire::mld::{fill_checksum, ReportRepr};

/// IPv6 header and the 8-byte Hop-by-Hop header before the MLD message.
const IP: usize = HEADER_LEN + 8;
/// The IPv6 minimum link MTU (RFC 8200 §5): a join must fit it, it cannot be fragmented.
const IPV6_MIN_MTU: usize = 1280;

/// Unit `i` of the default 8-bit site slicing.
fn unit(i: u128) -> Slice6 {
    Slice6::new(i << 72, 0xff << 72)
}

fn units(ids: impl IntoIterator<Item = u128>) -> Vec<SliceEntry6> {
    ids.into_iter()
        .map(|i| SliceEntry6::include(unit(i)))
        .collect()
}

fn unit_claims(f: &Fixture, ids: impl IntoIterator<Item = u128>, nonce: u64) -> JoinClaims6 {
    let mut claims = f.claims6(&[], 3, NOW, nonce);
    claims.record_type = RecordType::ModeIsInclude;
    claims.entries = units(ids);
    claims.as_units = true;
    claims
}

fn check_with(grants: SliceSet6, f: &Fixture, d: &[u8]) -> Result<AcceptedMld, Rejection> {
    let grants = f.grants6(grants);
    let config = MldVerifierConfig::default();
    verify_mld_datagram(NOW, IFINDEX, d, &config, &f.links6(), &grants)
}

fn reason(r: Result<AcceptedMld, Rejection>) -> Reason {
    match r {
        Err(e) => e.reason,
        Ok(a) => panic!("accepted: {a:?}"),
    }
}

/// The sub-TLVs of a join as (type, value), for tests to edit.
type Subs = Vec<(u16, Vec<u8>)>;
/// A change to them.
type Edit<'a> = &'a dyn Fn(&mut Subs);

/// A join of `claims` from member 0 whose sub-TLVs `edit` changed, signed again, so that only
/// the edit is at fault.
fn edited(f: &Fixture, claims: &JoinClaims6, edit: impl FnOnce(&mut Subs)) -> Vec<u8> {
    let (m, sender) = (&f.members[0], f.addr6(0));
    let mld = build_mld_report_uncapped(claims, sender, &m.cert, &m.key).unwrap();
    let packet = MldPacket::new_checked(&mld[..]).unwrap();
    let mut subs: Subs = extension_subs(packet.additional_data())
        .unwrap()
        .iter()
        .map(|t| (t.kind, t.value.to_vec()))
        .collect();
    edit(&mut subs);
    let mut value = vec![EXTENSION_VERSION];
    for (kind, v) in &subs {
        push_tlv(&mut value, *kind, v).unwrap();
    }
    let mut additional = Vec::new();
    push_tlv(&mut additional, TYPE_EXPERIMENTAL_MANYCAST, &value).unwrap();
    let record = packet.group_records().next().unwrap();
    let report = MldRepr::V2Report(ReportRepr {
        flags: REPORT_FLAG_EXTENSION,
        records: vec![GroupRecordRepr {
            record_type: record.record_type(),
            group: record.group(),
            sources: record.sources().collect(),
            aux_data: Vec::new(),
        }],
        additional_data: additional,
    });
    let mut msg = vec![0u8; report.buffer_len()];
    report.emit(&mut msg, sender, ALL_MLDV2_ROUTERS);
    let n = msg.len() - SIGNATURE_LEN;
    let sig = signature::sign(&m.key, &mld_signed_message(sender, &msg[..n]));
    msg[n..].copy_from_slice(&sig.to_bytes());
    fill_checksum(&mut msg, sender, ALL_MLDV2_ROUTERS);
    build_mld_datagram(sender, &msg)
}

/// The value of sub-TLV `kind` in `subs`.
fn sub(subs: &mut [(u16, Vec<u8>)], kind: u16) -> &mut Vec<u8> {
    &mut subs.iter_mut().find(|(k, _)| *k == kind).unwrap().1
}

/// A UNITS claim comes back as the same units and the same flag, its record lists the first
/// unit's base only, and the router grants exactly those units, checked against the grant as
/// SLICES entries are.
#[test]
fn a_units_claim_round_trips_lists_one_source_and_verifies() {
    let f = Fixture::new(1);
    let mut claims = unit_claims(&f, [1, 5, 9, 200], 1);
    claims.standby = units([0, 7]);
    let chain = crate::liveness::HashChain::new([1; 16], 2, 10, 10);
    claims.liveness = vec![chain.anchor(9).unwrap()];
    let d = f.datagram6(0, &claims);
    let packet = MldPacket::new_checked(&d[IP..]).unwrap();
    let parsed = UnverifiedMldJoin::parse(&packet, |g| g == GROUP6)
        .unwrap()
        .unwrap();
    assert_eq!(parsed.claims(), &claims);
    let record = packet.group_records().next().unwrap();
    assert_eq!(record.sources().collect::<Vec<_>>(), vec![unit(1).base()]);
    let Ok(AcceptedMld::Join { join, .. }) = check_with(SliceSet6::full(), &f, &d) else {
        panic!("not a verified join");
    };
    let claimed: SliceSet6 = [1, 5, 9, 200].into_iter().map(unit).collect();
    assert_eq!(join.slices(), &claimed);
    assert_eq!(join.standby(), &[0, 7].into_iter().map(unit).collect());
    // A grant of units 0..128 does not hold unit 200.
    let low: SliceSet6 = (0..128).map(unit).collect();
    assert_eq!(reason(check_with(low, &f, &d)), Reason::OutsideCertificate);
}

/// Units claimed as a bitmap are exclusive at the router like SLICES entries: a second member
/// claiming one of them at the same epoch conflicts, whichever encoding either uses.
#[test]
fn units_claimed_as_a_bitmap_are_exclusive() {
    let f = Fixture::dual_stack(2, SliceSet6::full());
    let mut v = MldJoinVerifier::new(
        MldVerifierConfig::default(),
        &VerifierConfig::default(),
        f.links6(),
    );
    let first = f.datagram6(0, &unit_claims(&f, [1, 5, 9], 1));
    let r = v.handle_datagram(NOW, IFINDEX, &first, &f.key_source6());
    assert!(matches!(r, Ok(MldOutcome::Join { .. })), "{r:?}");
    let as_slices = f.datagram6(1, &f.claims6(&[unit(5)], 3, NOW, 2));
    let as_units = f.datagram6(1, &unit_claims(&f, [2, 9], 3));
    for d in [as_slices, as_units] {
        let r = v.handle_datagram(NOW, IFINDEX, &d, &f.key_source6());
        assert_eq!(r.map(|_| ()).unwrap_err().reason, Reason::SliceConflict);
    }
}

/// Units of even bit parity: no two are siblings, so none merge (every other unit would merge
/// into one slice); the other parity is the rest.
fn parity(odd: u32) -> impl Iterator<Item = u128> {
    (0..256u128).filter(move |i| i.count_ones() % 2 == odd)
}

/// The worst case of the default 8-bit slicing: 128 scattered units claimed (none merge), the
/// other 128 stood by for, both liveness anchors, a dual-stack certificate. As SLICES it is
/// over 6 KB (the EMSGSIZE the lab saw); as UNITS it fits 1,280 bytes, and its length does not
/// depend on how many units it names: 426 bytes with the 140-byte fixture certificate and
/// nothing optional (SPEC.md §3.8 states it).
#[test]
fn scattered_units_at_the_default_slicing_fit_the_minimum_mtu() {
    let plain = Fixture::new(1);
    assert_eq!(plain.members[0].cert.as_bytes().len(), 140);
    for ids in [vec![0], parity(0).collect(), (0..256).collect()] {
        let d = plain.datagram6(0, &unit_claims(&plain, ids, 1));
        assert_eq!(d.len(), 426, "SPEC.md §3.8 states it");
    }
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let cert_len = f.members[0].cert.as_bytes().len();
    let chain = crate::liveness::HashChain::new([1; 16], 2, 10, 10);
    let worst = |as_units: bool| {
        let mut claims = unit_claims(&f, parity(0), 1);
        claims.as_units = as_units;
        claims.standby = units(parity(1));
        claims.liveness = vec![chain.anchor(9).unwrap(), chain.anchor(8).unwrap()];
        f.datagram6(0, &claims)
    };
    let d = worst(true);
    assert!(d.len() <= IPV6_MIN_MTU, "{} bytes", d.len());
    let Ok(AcceptedMld::Join { join, .. }) = check_with(SliceSet6::full(), &f, &d) else {
        panic!("not a verified join");
    };
    assert_eq!(join.slices(), &parity(0).map(unit).collect());
    assert_eq!(join.slices().len(), 128, "nothing merged");
    assert_eq!(join.standby(), &parity(1).map(unit).collect());
    let as_slices = worst(false);
    assert!(
        as_slices.len() > 6000,
        "{} bytes as SLICES",
        as_slices.len()
    );
    println!(
        "worst case: {} bytes as UNITS, {} as SLICES, certificate {cert_len} bytes",
        d.len(),
        as_slices.len()
    );
}

/// The builder makes UNITS only of what decodes back the same: at least one include unit of
/// one mask of at most MAX_STANDBY_BITS bits, in ascending unit order.
#[test]
fn the_builder_refuses_claims_that_are_not_unit_shaped() {
    let f = Fixture::new(1);
    let (m, sender) = (&f.members[0], f.addr6(0));
    let claims = unit_claims(&f, [1, 2], 1);
    let mut mixed = claims.clone();
    mixed.entries.push(SliceEntry6::include(Slice6::ALL));
    let mut exclude = claims.clone();
    exclude.entries[1].exclude = true;
    let mut descending = claims.clone();
    descending.entries.reverse();
    let mut repeated = claims.clone();
    repeated.entries.push(repeated.entries[1]);
    let mut fine = claims.clone();
    fine.entries = vec![SliceEntry6::include(Slice6::new(0, 0xfff << 72))];
    let mut empty = claims;
    empty.entries.clear();
    empty.record_type = RecordType::ChangeToIncludeMode;
    for bad in [mixed, exclude, descending, repeated, fine, empty] {
        assert!(
            matches!(
                build_signed_mld_report(&bad, sender, &m.cert, &m.key),
                Err(BuildError::TooLarge(_))
            ),
            "{:?}",
            bad.entries
        );
    }
}

/// Every malformed UNITS claim is refused before anything is granted, signed or not: both
/// encodings at once, neither, a mask of more than 11 bits, a bitmap of the wrong length, with
/// no unit or bits past its units, a record that lists other sources, and units past the cap
/// with the standby units.
#[test]
fn malformed_units_claims_are_refused() {
    let f = Fixture::new(1);
    let claims = unit_claims(&f, [1, 5], 1);
    // The helper itself changes nothing else: unedited, the join verifies.
    assert!(check_with(SliceSet6::full(), &f, &edited(&f, &claims, |_| ())).is_ok());
    let malformed = |edit: Edit| {
        let d = edited(&f, &claims, edit);
        reason(check_with(SliceSet6::full(), &f, &d))
    };
    let cases: [(&str, Edit); 7] = [
        ("SLICES and UNITS", &|s| {
            s.insert(0, (sub_type::SLICES, Vec::new()))
        }),
        ("neither", &|s| s.retain(|(k, _)| *k != sub_type::UNITS)),
        ("12 mask bits", &|s| {
            let v = sub(s, sub_type::UNITS);
            v[..16].copy_from_slice(&(0xfffu128 << 72).to_be_bytes());
            v.resize(16 + 512, 0xff);
        }),
        ("bitmap short", &|s| {
            sub(s, sub_type::UNITS).pop();
        }),
        ("bitmap long", &|s| sub(s, sub_type::UNITS).push(0)),
        ("no unit", &|s| sub(s, sub_type::UNITS)[16..].fill(0)),
        ("bits past the units", &|s| {
            let v = sub(s, sub_type::UNITS);
            v.truncate(17);
            v[..16].copy_from_slice(&(1u128 << 72).to_be_bytes());
            v[16] = 0b110;
        }),
    ];
    for (what, edit) in cases {
        assert_eq!(malformed(edit), Reason::MalformedExtension, "{what}");
    }
    // The record must list the first unit's base, and only it.
    let mut d = f.datagram6(0, &claims);
    let source = IP + 8 + 4 + 16;
    d[source + 7] ^= 1;
    fill_checksum(&mut d[IP..], f.addr6(0), ALL_MLDV2_ROUTERS);
    assert_eq!(
        reason(check_with(SliceSet6::full(), &f, &d)),
        Reason::RecordMismatch
    );
    // Units count toward MAX_JOIN_SLICES with the standby units.
    let mut big = claims.clone();
    big.entries = (0..1000u128)
        .map(|i| SliceEntry6::include(Slice6::new(i << 72, 0x3ff << 72)))
        .collect();
    big.standby = units(0..25);
    assert!(
        build_signed_mld_report(&big, f.addr6(0), &f.members[0].cert, &f.members[0].key).is_err()
    );
    let d = edited(&f, &big, |_| ());
    let packet = MldPacket::new_checked(&d[IP..]).unwrap();
    assert_eq!(
        UnverifiedMldJoin::parse(&packet, |_| true).unwrap_err(),
        JoinParseError::TooManySlices(MAX_JOIN_SLICES + 1)
    );
    assert_eq!(
        reason(check_with(SliceSet6::full(), &f, &d)),
        Reason::TooLarge
    );
}
