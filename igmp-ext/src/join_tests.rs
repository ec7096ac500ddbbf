//! The IGMPv3 join's bitmap sub-TLVs, sizes and the SPEC.md §7 worked example.

use super::*;
use crate::fixtures::{spec_example, Fixture, IFINDEX, NOW};
use crate::verify::{Accepted, JoinVerifier, VerifierConfig};

/// Standby units go as a bitmap over their mask's units and come back as the same units,
/// for a low-order and a prefix slicing; a three-member claim (86 units that do not merge,
/// the worst case of the default slicing) with its standby and a liveness anchor still fits
/// one 1,500-byte link MTU (a member's raw socket cannot fragment it).
#[test]
fn standby_units_round_trip_as_a_bitmap_and_a_join_with_them_fits_the_mtu() {
    let f = Fixture::new(1);
    let low: Vec<Slice> = (0..256u32).map(|i| Slice::new(i, 0xff)).collect();
    let prefix: Vec<Slice> = (0..8u32)
        .map(|i| Slice::new(i << 29, 0xe000_0000))
        .collect();
    for units in [&low, &prefix] {
        let mine: Vec<Slice> = units.iter().copied().step_by(3).collect();
        let standby: Vec<SliceEntry> = units
            .iter()
            .copied()
            .skip(1)
            .step_by(3)
            .map(SliceEntry::include)
            .collect();
        let mut claims = f.claims(&mine, 1, NOW, 1);
        claims.standby = standby.clone();
        let chain = crate::liveness::HashChain::new([1; 16], 2, 10, 10);
        claims.liveness = vec![chain.anchor(9).unwrap()];
        let d = f.datagram(0, &claims);
        assert!(d.len() <= 1500, "{} bytes", d.len());
        let packet = IgmpPacket::new_checked(&d[24..]).unwrap();
        let parsed = UnverifiedJoin::parse(&packet, |_| true).unwrap().unwrap();
        assert_eq!(parsed.claims().standby, standby);
        assert_eq!(parsed.claims().liveness, claims.liveness);
    }
    // Units of two masks cannot be one bitmap: a caller bug, refused.
    let mut claims = f.claims(&low[..1], 1, NOW, 2);
    claims.standby = vec![SliceEntry::include(low[1]), SliceEntry::include(prefix[1])];
    let m = &f.members[0];
    assert!(build_signed_report(&claims, m.addr, &m.cert, &m.key).is_err());
}

fn spec_hex() -> Vec<u8> {
    let spec = include_str!("../../SPEC.md");
    let start = spec
        .find("<!-- worked-example-begin -->")
        .expect("begin marker");
    let end = spec
        .find("<!-- worked-example-end -->")
        .expect("end marker");
    let text: String = spec[start..end]
        .lines()
        .filter(|l| l.chars().all(|c| c.is_ascii_hexdigit() || c == ' ') && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("");
    hex::decode(text.replace(' ', "")).expect("hex in SPEC.md")
}

#[test]
fn spec_worked_example_matches() {
    let built = spec_example();
    assert_eq!(
        spec_hex(),
        built,
        "SPEC.md §7 is out of date: regenerate with --example spec_example"
    );
    let f = Fixture::new(1);
    let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
    let Ok(Accepted::Join { join, .. }) = v.handle_datagram(NOW, IFINDEX, &built, &f.key_source())
    else {
        panic!("the worked example must verify")
    };
    let expected = Slice::new(1, 3);
    assert!(join.slices().contains_addr(Ipv4Addr::new(192, 0, 2, 1)));
    assert!(
        !join.slices().contains_addr(Ipv4Addr::new(10, 0, 0, 1)),
        "10/8 is excluded"
    );
    assert!(join.slices().is_subset_of(&SliceSet::from(expected)));
    assert_eq!(join.epoch(), AllocationEpoch(7));
    // Field offsets the SPEC table states.
    let igmp = &built[24..];
    assert_eq!(&igmp[4..6], &[0x80, 0x00]);
    assert_eq!(&igmp[20..24], &[0xff, 0xfe, 0x01, 0x17]);
    assert_eq!(&igmp[25..29], &[0x00, 0x01, 0x00, 0x12]);
    assert_eq!(&igmp[235..239], &[0xff, 0xff, 0x00, 0x40]);
    assert_eq!(igmp.len(), 303);
}

#[test]
fn signed_message_layout() {
    let d = spec_example();
    let igmp = &d[24..];
    let m = signed_message(
        Ipv4Addr::new(10, 0, 0, 2),
        &igmp[..igmp.len() - SIGNATURE_LEN],
    );
    assert_eq!(&m[..24], JOIN_SIGNING_CONTEXT);
    assert_eq!(&m[24..28], &[10, 0, 0, 2]);
    assert_eq!(&m[28..30], &igmp[..2]);
    assert_eq!(&m[30..32], &[0, 0], "checksum taken as zero");
    assert_eq!(&m[32..], &igmp[4..igmp.len() - SIGNATURE_LEN]);
}

#[test]
fn parse_refuses_structural_faults() {
    let f = Fixture::new(1);
    let claims = f.claims(&[Slice::new(1, 1)], 1, NOW, 1);
    // Record types that cannot carry a signed join.
    let mut c = claims.clone();
    c.record_type = RecordType::AllowNewSources;
    assert_eq!(
        build_signed_report(&c, f.members[0].addr, &f.members[0].cert, &f.members[0].key),
        Err(BuildError::RecordType(RecordType::AllowNewSources))
    );
    let good = f.datagram(0, &claims);
    let parse = |d: &[u8]| {
        let p = IgmpPacket::new_checked(&d[24..]).unwrap();
        UnverifiedJoin::parse(&p, |_| true).map(|o| o.is_some())
    };
    assert_eq!(parse(&good), Ok(true));
    // Every truncation of the IGMP message is refused without panicking.
    for n in 0..good.len() - 24 {
        let d = &good[..24 + n];
        if let Ok(p) = IgmpPacket::new_checked(&d[24..]) {
            assert!(
                UnverifiedJoin::parse(&p, |_| true).is_err(),
                "truncated to {n}"
            );
        }
    }
    // A public group: no join.
    let p = IgmpPacket::new_checked(&good[24..]).unwrap();
    assert!(matches!(UnverifiedJoin::parse(&p, |_| false), Ok(None)));
}

/// A host's kernel reports every group it joined in one unsigned report, two protected groups
/// among them (a member's service group and its routed control group): that is `unsigned`, and
/// only a signed report naming two protected groups is a record mismatch.
#[test]
fn an_unsigned_report_for_two_protected_groups_is_unsigned() {
    use crate::wire::igmp::{IgmpRepr, ReportRepr};
    use crate::wire::record::GroupRecordRepr;
    let record = |g: [u8; 4]| GroupRecordRepr {
        record_type: RecordType::ModeIsExclude,
        group: Ipv4Addr::from(g),
        sources: vec![],
        aux_data: vec![],
    };
    let report = |flags: u16| {
        let repr = IgmpRepr::V3Report(ReportRepr {
            flags,
            records: vec![record([232, 1, 1, 1]), record([239, 77, 1, 1])],
            additional_data: vec![],
        });
        let mut buf = vec![0; repr.buffer_len()];
        repr.emit(&mut buf);
        buf
    };
    let parse = |bytes: &[u8]| {
        let p = IgmpPacket::new_checked(bytes).unwrap();
        UnverifiedJoin::parse(&p, |_| true).map(|o| o.is_some())
    };
    assert_eq!(parse(&report(0)), Err(JoinParseError::Unsigned));
    assert!(matches!(
        parse(&report(REPORT_FLAG_EXTENSION)),
        Err(JoinParseError::RecordMismatch(_))
    ));
}

#[test]
fn include_exclude_entries() {
    let entries = [
        SliceEntry::include(Slice::ALL),
        SliceEntry::exclude(Slice::new(0, 1)),
        SliceEntry::include(Slice::new(2, 3)),
    ];
    let eff = effective_slices(&entries, &mut StepBudget::for_slices(entries.len())).unwrap();
    assert_eq!(
        eff,
        SliceSet::from(Slice::new(1, 1)),
        "excludes win over includes"
    );
}
