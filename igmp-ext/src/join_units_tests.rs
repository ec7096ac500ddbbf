//! The IGMPv3 join's UNITS claim (SPEC.md §3.2): round trip, the checks SLICES gets (grant,
//! exclusivity, caps), every malformed shape, and the size: a member's scattered units at the
//! default 8-bit slicing fit a 1,500-byte link.

use super::*;
use crate::fixtures::{Fixture, IFINDEX, NOW};
use crate::verify::{Accepted, JoinVerifier, Reason, Rejection, VerifierConfig};
use crate::wire::igmp::{fill_checksum, ReportRepr};

/// The IPv4 header with its Router Alert option, before the IGMP message.
const IP: usize = 24;

/// Unit `i` of the default 8-bit low-order slicing.
fn unit(i: u32) -> Slice {
    Slice::new(i, 0xff)
}

fn units(ids: impl IntoIterator<Item = u32>) -> Vec<SliceEntry> {
    ids.into_iter()
        .map(|i| SliceEntry::include(unit(i)))
        .collect()
}

fn unit_claims(f: &Fixture, ids: impl IntoIterator<Item = u32>, nonce: u64) -> JoinClaims {
    let mut claims = f.claims(&[], 3, NOW, nonce);
    claims.record_type = RecordType::ModeIsInclude;
    claims.entries = units(ids);
    claims.as_units = true;
    claims
}

/// Units of even bit parity: no two are siblings, so none merge.
fn parity(odd: u32) -> impl Iterator<Item = u32> {
    (0..256u32).filter(move |i| i.count_ones() % 2 == odd)
}

fn check(f: &Fixture, d: &[u8]) -> Result<Accepted, Rejection> {
    checked(f, d).0
}

/// The verdict, and the standby units the verifier holds for member 0 after it.
fn checked(f: &Fixture, d: &[u8]) -> (Result<Accepted, Rejection>, SliceSet) {
    let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
    let r = v.handle_datagram(NOW, IFINDEX, d, &f.key_source());
    let standby = v
        .ownership()
        .claims(f.group)
        .next()
        .map(|c| c.1.standby.clone());
    (r, standby.unwrap_or_default())
}

fn reason(r: Result<Accepted, Rejection>) -> Reason {
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
fn edited(f: &Fixture, claims: &JoinClaims, edit: impl FnOnce(&mut Subs)) -> Vec<u8> {
    let m = &f.members[0];
    let igmp = build_report_uncapped(claims, m.addr, &m.cert, &m.key).unwrap();
    let packet = IgmpPacket::new_checked(&igmp[..]).unwrap();
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
    let report = IgmpRepr::V3Report(ReportRepr {
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
    report.emit(&mut msg);
    let n = msg.len() - SIGNATURE_LEN;
    let sig = signature::sign(&m.key, &signed_message(m.addr, &msg[..n]));
    msg[n..].copy_from_slice(&sig.to_bytes());
    fill_checksum(&mut msg);
    build_datagram(m.addr, &msg)
}

/// The value of sub-TLV `kind` in `subs`.
fn sub(subs: &mut [(u16, Vec<u8>)], kind: u16) -> &mut Vec<u8> {
    &mut subs.iter_mut().find(|(k, _)| *k == kind).unwrap().1
}

/// A UNITS claim comes back as the same units and flag, its record lists the first unit's base
/// only, and the router grants exactly those units, exclusively: another member's claim of one
/// of them at the same epoch conflicts, whichever encoding it uses.
#[test]
fn an_igmp_units_claim_round_trips_and_is_exclusive() {
    let f = Fixture::new(2);
    let mut claims = unit_claims(&f, [1, 5, 9, 200], 1);
    claims.standby = units([0, 7]);
    let d = f.datagram(0, &claims);
    let packet = IgmpPacket::new_checked(&d[IP..]).unwrap();
    let parsed = UnverifiedJoin::parse(&packet, |g| g == f.group)
        .unwrap()
        .unwrap();
    assert_eq!(parsed.claims(), &claims);
    let record = packet.group_records().next().unwrap();
    assert_eq!(record.sources().collect::<Vec<_>>(), vec![unit(1).base()]);
    let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
    let Ok(Accepted::Join { join, .. }) = v.handle_datagram(NOW, IFINDEX, &d, &f.key_source())
    else {
        panic!("not a verified join");
    };
    let claimed: SliceSet = [1, 5, 9, 200].into_iter().map(unit).collect();
    assert_eq!(join.slices(), &claimed);
    let held = v.ownership().claims(f.group).next().expect("a claim").1;
    assert_eq!(held.standby, [0, 7].into_iter().map(unit).collect());
    let as_slices = f.datagram(1, &f.claims(&[unit(5)], 3, NOW, 2));
    let as_units = f.datagram(1, &unit_claims(&f, [2, 9], 3));
    for d in [as_slices, as_units] {
        let r = v.handle_datagram(NOW, IFINDEX, &d, &f.key_source());
        assert_eq!(reason(r), Reason::SliceConflict);
    }
}

/// The worst case of the default 8-bit slicing: 128 scattered units claimed, the other 128 stood
/// by for, both liveness anchors. As SLICES it is over 1,500 bytes (13 per include entry); as
/// UNITS it is 40 bytes of claim whatever the units: 345 bytes with the 140-byte fixture
/// certificate and nothing optional (SPEC.md §3.2 states it).
#[test]
fn scattered_units_at_the_default_slicing_fit_the_link() {
    let f = Fixture::new(1);
    assert_eq!(f.members[0].cert.as_bytes().len(), 140);
    for ids in [vec![0], parity(0).collect(), (0..256).collect()] {
        let d = f.datagram(0, &unit_claims(&f, ids, 1));
        assert_eq!(d.len(), 345, "SPEC.md §3.2 states it");
    }
    let chain = crate::liveness::HashChain::new([1; 16], 2, 10, 10);
    let worst = |as_units: bool| {
        let mut claims = unit_claims(&f, parity(0), 1);
        claims.as_units = as_units;
        claims.standby = units(parity(1));
        claims.liveness = vec![chain.anchor(9).unwrap(), chain.anchor(8).unwrap()];
        f.datagram(0, &claims)
    };
    let d = worst(true);
    assert!(
        d.len() <= 576,
        "{} bytes: fits even the IPv4 minimum",
        d.len()
    );
    let (Ok(Accepted::Join { join, .. }), standby) = checked(&f, &d) else {
        panic!("not a verified join");
    };
    assert_eq!(join.slices(), &parity(0).map(unit).collect());
    assert_eq!(join.slices().len(), 128, "nothing merged");
    assert_eq!(standby, parity(1).map(unit).collect());
    let as_slices = worst(false);
    assert!(
        as_slices.len() > 1500,
        "{} bytes as SLICES",
        as_slices.len()
    );
    println!(
        "IGMPv3 worst case: {} bytes as UNITS, {} as SLICES",
        d.len(),
        as_slices.len()
    );
}

/// The builder makes UNITS only of what decodes back the same; a malformed UNITS claim is
/// refused before anything is granted: both encodings, neither, a mask of more than 11 bits, a
/// bitmap of the wrong length, with no unit or bits past its units, another record source, and
/// units past the cap with the standby units.
#[test]
fn malformed_igmp_units_claims_are_refused() {
    let f = Fixture::new(1);
    let m = &f.members[0];
    let claims = unit_claims(&f, [1, 5], 1);
    let mut descending = claims.clone();
    descending.entries.reverse();
    let mut exclude = claims.clone();
    exclude.entries[1].exclude = true;
    let mut fine = claims.clone();
    fine.entries = vec![SliceEntry::include(Slice::new(0, 0xfff))];
    let mut empty = claims.clone();
    empty.entries.clear();
    empty.record_type = RecordType::ChangeToIncludeMode;
    for bad in [descending, exclude, fine, empty] {
        let built = build_signed_report(&bad, m.addr, &m.cert, &m.key);
        assert!(matches!(built, Err(BuildError::TooLarge(_))), "{bad:?}");
    }
    assert!(check(&f, &edited(&f, &claims, |_| ())).is_ok(), "unedited");
    let cases: [(&str, Edit); 7] = [
        ("SLICES and UNITS", &|s| {
            s.insert(0, (sub_type::SLICES, Vec::new()))
        }),
        ("neither", &|s| s.retain(|(k, _)| *k != sub_type::UNITS)),
        ("12 mask bits", &|s| {
            let v = sub(s, sub_type::UNITS);
            v[..4].copy_from_slice(&0xfffu32.to_be_bytes());
            v.resize(4 + 512, 0xff);
        }),
        ("bitmap short", &|s| {
            sub(s, sub_type::UNITS).pop();
        }),
        ("bitmap long", &|s| sub(s, sub_type::UNITS).push(0)),
        ("no unit", &|s| sub(s, sub_type::UNITS)[4..].fill(0)),
        ("bits past the units", &|s| {
            let v = sub(s, sub_type::UNITS);
            v.truncate(5);
            v[..4].copy_from_slice(&1u32.to_be_bytes());
            v[4] = 0b110;
        }),
    ];
    for (what, edit) in cases {
        let d = edited(&f, &claims, edit);
        assert_eq!(reason(check(&f, &d)), Reason::MalformedExtension, "{what}");
    }
    // The record must list the first unit's base, and only it.
    let mut d = f.datagram(0, &claims);
    d[IP + 8 + 8 + 3] ^= 2;
    fill_checksum(&mut d[IP..]);
    assert_eq!(reason(check(&f, &d)), Reason::RecordMismatch);
    // Units count toward MAX_JOIN_SLICES with the standby units.
    let mut big = claims;
    big.entries = (0..1000)
        .map(|i| SliceEntry::include(Slice::new(i, 0x3ff)))
        .collect();
    big.standby = units(0..25);
    assert!(build_signed_report(&big, m.addr, &m.cert, &m.key).is_err());
    let d = edited(&f, &big, |_| ());
    let packet = IgmpPacket::new_checked(&d[IP..]).unwrap();
    assert_eq!(
        UnverifiedJoin::parse(&packet, |_| true).unwrap_err(),
        JoinParseError::TooManySlices(MAX_JOIN_SLICES + 1)
    );
    assert_eq!(reason(check(&f, &d)), Reason::TooLarge);
}
