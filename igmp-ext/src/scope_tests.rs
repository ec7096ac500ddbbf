//! Tests of the scope notice: layout both ways, one test per refusal reason, "newest wins".

use super::*;
use crate::fixtures::{scope_spec_example, Fixture, NOW};
use crate::verify::{GroupKey, GroupKeys};
use crate::wire::igmp::{IgmpPacket, IgmpRepr, QueryRepr};
use std::collections::HashMap;
use std::sync::Arc;

const WINDOW: Duration = Duration::from_secs(30);
const S1: SiteId = SiteId(1);
const S2: SiteId = SiteId(2);
const BITS3: Slicing = Slicing::LowOrder { bits: 3 };

/// Routers 1 (site 1) and 2 (site 2).
fn routers() -> Fixture {
    Fixture::routers(&[S1, S2])
}

fn parsed(data: &[u8]) -> UnverifiedScopeNotice {
    UnverifiedScopeNotice::parse(data)
        .expect("lays out")
        .expect("a notice")
}

fn refused(f: &Fixture, data: &[u8]) -> ScopeReason {
    refused_with(&f.key_source(), data, NOW)
}

fn refused_with(keys: &dyn KeySource, data: &[u8], now: Timestamp) -> ScopeReason {
    let r = UnverifiedScopeNotice::parse(data).and_then(|n| {
        n.expect("a notice")
            .verify(keys, now, WINDOW)
            .map(|s| panic!("accepted: {s:?}"))
    });
    r.unwrap_err().reason
}

/// A notice signed by `key` under `cert` whatever they are (the builder refuses member
/// certificates and other sites).
fn forged(notice: &ScopeNotice, cert: &MemberCertificate, key: &SigningKey) -> Vec<u8> {
    let mut value = notice.encode_fields();
    value.extend_from_slice(&(cert.as_bytes().len() as u16).to_be_bytes());
    value.extend_from_slice(cert.as_bytes());
    let sig = signature::sign(key, &signing_message(&value));
    value.extend_from_slice(&sig.to_bytes());
    let mut out = Vec::new();
    push_tlv(&mut out, TYPE_SCOPE_NOTICE, &value).unwrap();
    out
}

#[test]
fn a_notice_round_trips_and_verifies() {
    let f = routers();
    for (slicing, units) in [
        (BITS3, vec![0, 2, 5]),
        (Slicing::Prefix { bits: 4 }, vec![1, 15]),
        (Slicing::LowOrder { bits: 0 }, vec![0]),
        (Slicing::LowOrder { bits: 8 }, vec![]),
        (Slicing::LowOrder { bits: 16 }, vec![0, 40_000, 65_535]),
        (Slicing::Prefix { bits: 16 }, vec![7]),
    ] {
        let notice = f.scope_notice(S2, 9, slicing, &units);
        let data = f.scope_data(1, &notice);
        let n = parsed(&data);
        assert_eq!(n.unverified(), &notice, "{slicing:?}");
        assert_eq!(n.certificate_bytes(), f.members[1].cert.as_bytes());
        let s = n.verify(&f.key_source(), NOW, WINDOW).unwrap();
        assert_eq!(
            (s.group, s.site, s.upper_epoch, s.timestamp),
            (f.group, S2, 9, NOW)
        );
        assert_eq!((s.slicing, &s.units), (slicing, &notice.units));
        assert_eq!(s.unit_count(), units.len());
        assert_eq!(s.router, MemberId(2));
        assert_eq!(s.issuer, KeyId::of(&f.group_key.verifying_key()));
    }
}

/// The notice rides in a whole IGMPv3 query: the E flag set, parsed back from the bytes; a
/// query without the E flag or without a notice carries none.
#[test]
fn a_query_carries_the_notice() {
    let f = routers();
    let notice = f.scope_notice(S1, 3, BITS3, &[1]);
    let mut v3 = QueryV3Fields {
        flags: 0,
        suppress: false,
        qrv: 2,
        qqic: 125,
        sources: vec![],
        additional_data: vec![],
    };
    assert_eq!(UnverifiedScopeNotice::from_query(&v3), Ok(None));
    notice
        .sign_into(&mut v3, &f.members[0].cert, &f.members[0].key)
        .unwrap();
    let query = IgmpRepr::Query(QueryRepr {
        max_resp_code: 100,
        group: Ipv4Addr::UNSPECIFIED,
        v3: Some(v3.clone()),
    });
    let mut bytes = vec![0u8; query.buffer_len()];
    query.emit(&mut bytes);
    let Ok(IgmpRepr::Query(QueryRepr { v3: Some(back), .. })) =
        IgmpRepr::parse(&IgmpPacket::new_checked(&bytes).unwrap())
    else {
        panic!("a v3 query")
    };
    assert_eq!(back.flags & QUERY_FLAG_EXTENSION, QUERY_FLAG_EXTENSION);
    let n = UnverifiedScopeNotice::from_query(&back).unwrap().unwrap();
    assert_eq!(n.unverified(), &notice);
    // The same bytes without the E flag are not extensions (RFC 9279 §3).
    let mut no_e = back.clone();
    no_e.flags = 0;
    assert_eq!(UnverifiedScopeNotice::from_query(&no_e), Ok(None));
    // Other TLVs (a No-op) beside it: ignored; a join's TLV type is not a notice.
    let mut with_noop = vec![0, 0, 0, 0];
    with_noop.extend_from_slice(&back.additional_data);
    assert!(UnverifiedScopeNotice::parse(&with_noop).unwrap().is_some());
    let mut join_type = back.additional_data.clone();
    join_type[..2].copy_from_slice(&[0xff, 0xfe]);
    assert_eq!(UnverifiedScopeNotice::parse(&join_type), Ok(None));
}

/// Every truncation, a byte too many, two notices, a scattered mask, a bitmap bit past the
/// last unit, site 0: malformed, never a panic.
#[test]
fn malformed_notices_are_refused() {
    let f = routers();
    let data = f.scope_data(0, &f.scope_notice(S1, 3, BITS3, &[0, 2, 5]));
    let reason = |d: &[u8]| UnverifiedScopeNotice::parse(d).unwrap_err().reason;
    for n in 1..data.len() {
        let r = UnverifiedScopeNotice::parse(&data[..n]);
        assert!(r.is_err(), "{n} bytes parsed");
    }
    // The TLV length fixed up, the value one byte short or long.
    let relength = |value: &[u8]| {
        let mut out = Vec::new();
        push_tlv(&mut out, TYPE_SCOPE_NOTICE, value).unwrap();
        out
    };
    let value = &data[4..];
    assert_eq!(
        reason(&relength(&value[..value.len() - 1])),
        ScopeReason::Malformed
    );
    let mut long = value.to_vec();
    long.push(0);
    assert_eq!(reason(&relength(&long)), ScopeReason::Malformed);
    let mut two = data.clone();
    two.extend_from_slice(&data);
    assert_eq!(reason(&two), ScopeReason::Malformed);
    // Mask bytes at value offsets 25..29; the bitmap byte at 29.
    let edit = |at: usize, b: u8| {
        let mut d = data.clone();
        d[4 + at] = b;
        d
    };
    assert_eq!(
        reason(&edit(28, 0x0b)),
        ScopeReason::Malformed,
        "scattered mask"
    );
    let mut wide = value.to_vec();
    wide[25..29].copy_from_slice(&0x0001_ffffu32.to_be_bytes());
    assert_eq!(reason(&relength(&wide)), ScopeReason::Malformed, "17 bits");
    // A 2-bit mask has 4 units: bit 4 of the bitmap byte is past them.
    let mut two_bits = edit(28, 0x03);
    two_bits[4 + 29] = 0x10;
    assert_eq!(reason(&two_bits), ScopeReason::Malformed);
    let mut site0 = data.clone();
    site0[4 + 5..4 + 9].copy_from_slice(&[0; 4]);
    assert_eq!(reason(&site0), ScopeReason::Malformed);
    assert_eq!(reason(&edit(0, 2)), ScopeReason::UnsupportedVersion);
    assert_eq!(reason(&[0xff, 0xff, 0, 0]), ScopeReason::Malformed, "empty");
}

/// Caps before anything is read: a value past [`MAX_SCOPE_VALUE_LEN`], a certificate length
/// past [`MAX_CERT_LEN`].
#[test]
fn oversized_notices_are_refused_by_their_lengths() {
    let f = routers();
    let data = f.scope_data(0, &f.scope_notice(S1, 3, BITS3, &[0]));
    let mut huge = vec![0xff, 0xff];
    huge.extend_from_slice(&((MAX_SCOPE_VALUE_LEN + 1) as u16).to_be_bytes());
    huge.extend_from_slice(&data[4..]);
    huge.resize(4 + MAX_SCOPE_VALUE_LEN + 1, 0);
    assert_eq!(
        UnverifiedScopeNotice::parse(&huge).unwrap_err().reason,
        ScopeReason::TooLarge
    );
    let mut cert_len = data.clone();
    let at = 4 + FIXED_LEN + 1;
    cert_len[at..at + 2].copy_from_slice(&((MAX_CERT_LEN + 1) as u16).to_be_bytes());
    assert_eq!(
        UnverifiedScopeNotice::parse(&cert_len).unwrap_err().reason,
        ScopeReason::TooLarge
    );
}

#[test]
fn an_untimely_notice_is_refused() {
    let f = routers();
    let data = f.scope_data(0, &f.scope_notice(S1, 3, BITS3, &[0]));
    let late = NOW.saturating_add(WINDOW + Duration::from_millis(1));
    let early = NOW.saturating_sub(WINDOW + Duration::from_millis(1));
    assert_eq!(
        refused_with(&f.key_source(), &data, late),
        ScopeReason::Untimely
    );
    assert_eq!(
        refused_with(&f.key_source(), &data, early),
        ScopeReason::Untimely
    );
    let edge = NOW.saturating_add(WINDOW);
    assert!(parsed(&data).verify(&f.key_source(), edge, WINDOW).is_ok());
}

struct Unavailable;

impl KeySource for Unavailable {
    fn group_keys(&self, _: Ipv4Addr, _: Timestamp) -> Result<Arc<GroupKeys>, KeyLookupError> {
        Err(KeyLookupError::Unavailable("no answer".into()))
    }
}

fn keys_of(
    group: Ipv4Addr,
    key: &SigningKey,
    revoked: Vec<KeyId>,
) -> HashMap<Ipv4Addr, Arc<GroupKeys>> {
    HashMap::from([(
        group,
        Arc::new(GroupKeys {
            group,
            keys: vec![GroupKey::new(key.verifying_key())],
            revoked_members: revoked,
        }),
    )])
}

#[test]
fn the_group_keys_decide() {
    let f = routers();
    let data = f.scope_data(0, &f.scope_notice(S1, 3, BITS3, &[0]));
    let other_group = keys_of(Ipv4Addr::new(232, 9, 9, 9), &f.group_key, vec![]);
    assert_eq!(
        refused_with(&other_group, &data, NOW),
        ScopeReason::UnknownGroup
    );
    assert_eq!(
        refused_with(&Unavailable, &data, NOW),
        ScopeReason::KeyUnavailable
    );
    let other_key = keys_of(f.group, &SigningKey::from_bytes(&[0x33; 32]), vec![]);
    assert_eq!(
        refused_with(&other_key, &data, NOW),
        ScopeReason::UnknownKey
    );
    let router_key = KeyId::of(&f.members[0].key.verifying_key());
    let revoked = keys_of(f.group, &f.group_key, vec![router_key]);
    assert_eq!(refused_with(&revoked, &data, NOW), ScopeReason::Revoked);
}

#[test]
fn the_router_certificate_decides() {
    let f = routers();
    let notice = f.scope_notice(S1, 3, BITS3, &[0]);
    let data = f.scope_data(0, &notice);
    // A byte of the certificate's member key: its issuer's signature fails.
    let cert_at = 4 + FIXED_LEN + 1 + 2;
    let mut bad = data.clone();
    bad[cert_at + 10] ^= 1;
    assert_eq!(refused(&f, &bad), ScopeReason::BadCertificate);
    // Valid until 2028-01-01: a notice stamped after it, heard then.
    let later = Timestamp::from_secs(1_840_000_000);
    let mut late = notice.clone();
    late.timestamp = later;
    let late = f.scope_data(0, &late);
    assert_eq!(
        refused_with(&f.key_source(), &late, later),
        ScopeReason::CertificateExpired
    );
    // A member's certificate names no site.
    let members = Fixture::new(1);
    let member = &members.members[0];
    assert_eq!(
        notice.additional_data(&member.cert, &member.key),
        Err(ScopeBuildError::NotARouter)
    );
    let from_member = forged(&notice, &member.cert, &member.key);
    assert_eq!(refused(&f, &from_member), ScopeReason::NotARouter);
    // Router 2 is of site 2: it cannot speak for site 1.
    let r2 = &f.members[1];
    assert_eq!(
        notice.additional_data(&r2.cert, &r2.key),
        Err(ScopeBuildError::WrongSite {
            cert: S2,
            notice: S1
        })
    );
    assert_eq!(
        refused(&f, &forged(&notice, &r2.cert, &r2.key)),
        ScopeReason::WrongSite
    );
    // A group its certificate does not list, under the same group key.
    let other = Ipv4Addr::new(232, 9, 9, 9);
    let mut elsewhere = notice.clone();
    elsewhere.group = other;
    let data = f.scope_data(0, &elsewhere);
    assert_eq!(
        refused_with(&keys_of(other, &f.group_key, vec![]), &data, NOW),
        ScopeReason::GroupNotAllowed
    );
}

/// The router's signature covers the fields: a flipped unit bit, epoch or timestamp still
/// lays out and is refused; so is a notice signed by another key under the certificate.
#[test]
fn the_signature_covers_the_fields() {
    let f = routers();
    let data = f.scope_data(0, &f.scope_notice(S1, 3, BITS3, &[0, 2, 5]));
    // Upper epoch, timestamp (1 ms: still timely), bitmap. A changed group or site is refused
    // before the signature (no keys, another site's certificate).
    for at in [9, 16, 24, 29] {
        let mut d = data.clone();
        d[4 + at] ^= 0x01;
        assert_eq!(refused(&f, &d), ScopeReason::BadSignature, "byte {at}");
    }
    let stranger = SigningKey::from_bytes(&[0x44; 32]);
    let notice = f.scope_notice(S1, 3, BITS3, &[0]);
    assert_eq!(
        refused(&f, &forged(&notice, &f.members[0].cert, &stranger)),
        ScopeReason::BadSignature
    );
    // The builder checks the unit count against the slicing.
    let mut short = notice;
    short.units.pop();
    assert_eq!(
        short.additional_data(&f.members[0].cert, &f.members[0].key),
        Err(ScopeBuildError::UnitCount {
            units: 7,
            expected: 8
        })
    );
}

fn verified(f: &Fixture, i: usize, epoch: u64, at: Timestamp, units: &[usize]) -> VerifiedScope {
    let site = f.members[i].cert.site().unwrap();
    let mut n = f.scope_notice(site, epoch, BITS3, units);
    n.timestamp = at;
    parsed(&f.scope_data(i, &n))
        .verify(&f.key_source(), at, WINDOW)
        .unwrap()
}

/// Newest wins by (upper epoch, timestamp): a refresh keeps the scope, a newer epoch changes
/// it, an older epoch (whatever its timestamp) or an older timestamp is stale.
#[test]
fn the_newest_scope_wins() {
    let f = Fixture::routers(&[S1, S1]);
    let t = |s: u64| NOW.saturating_add(Duration::from_secs(s));
    let mut kept = NewestScopes::new();
    assert_eq!(kept.current(f.group), None);
    let first = verified(&f, 0, 5, t(0), &[0, 1]);
    assert_eq!(kept.offer(first.clone()), Ok(ScopeUpdate::Changed));
    assert_eq!(kept.offer(first.clone()), Ok(ScopeUpdate::Repeated));
    // The other router of the site, later, the same scope.
    assert_eq!(
        kept.offer(verified(&f, 1, 5, t(2), &[0, 1])),
        Ok(ScopeUpdate::Refreshed)
    );
    // Replayed: the first notice again, now older than the kept one.
    let stale = kept.offer(first).unwrap_err();
    assert_eq!(stale.reason, ScopeReason::Stale);
    // A lagging router: a later timestamp at an older epoch cannot roll the site back.
    let lagging = verified(&f, 0, 4, t(9), &[0, 1, 2, 3]);
    assert_eq!(kept.offer(lagging).unwrap_err().reason, ScopeReason::Stale);
    // A newer epoch wins even with an older timestamp.
    let grown = verified(&f, 1, 6, t(1), &[0, 1, 2]);
    assert_eq!(kept.offer(grown.clone()), Ok(ScopeUpdate::Changed));
    assert_eq!(kept.current(f.group), Some(&grown));
    // The precheck, before any signature: older refused, as old or newer passed on.
    let mut older = f.scope_notice(S1, 5, BITS3, &[0]);
    older.timestamp = t(99);
    assert_eq!(
        kept.precheck(&older).unwrap_err().reason,
        ScopeReason::Stale
    );
    let mut same = older.clone();
    (same.upper_epoch, same.timestamp) = (6, t(1));
    assert_eq!(kept.precheck(&same), Ok(()));
    // The same age with other units: refused, the kept one stays.
    let mut rival = grown.clone();
    rival.units[7] = true;
    assert_eq!(kept.offer(rival).unwrap_err().reason, ScopeReason::Stale);
    assert_eq!(kept.current(f.group), Some(&grown));
}

#[test]
fn reason_names_are_stable_and_distinct() {
    let names: Vec<&str> = ScopeReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "malformed",
            "unsupported-version",
            "too-large",
            "untimely",
            "unknown-group",
            "key-unavailable",
            "unknown-key",
            "bad-certificate",
            "certificate-expired",
            "revoked",
            "not-a-router",
            "wrong-site",
            "group-not-allowed",
            "bad-signature",
            "stale",
        ]
    );
}

/// SPEC.md §3.10's worked example is what the fixture builds, and verifies.
#[test]
fn spec_scope_example_matches() {
    let spec = include_str!("../../SPEC.md");
    let block = spec
        .split("<!-- scope-example-begin -->")
        .nth(1)
        .and_then(|s| s.split("<!-- scope-example-end -->").next())
        .expect("SPEC.md has the scope example");
    let text: String = block
        .lines()
        .filter(|l| l.chars().all(|c| c.is_ascii_hexdigit() || c == ' ') && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("")
        .replace(' ', "");
    let built = scope_spec_example();
    assert_eq!(
        hex::decode(text).expect("hex in SPEC.md"),
        built,
        "SPEC.md §3.10 is out of date: regenerate with --example spec_example scope"
    );
    let f = Fixture::routers(&[S1]);
    let s = parsed(&built).verify(&f.key_source(), NOW, WINDOW).unwrap();
    assert_eq!(
        s.units,
        [true, false, true, false, false, true, false, false]
    );
    assert_eq!(&built[..4], &[0xff, 0xff, 0x00, 0xf3]);
    assert_eq!(built.len(), 4 + 243);
}
