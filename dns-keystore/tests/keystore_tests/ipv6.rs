//! Issue 15, item 4: IPv6 group records (AAAA, nibble names) against the running daemon, read
//! with dig and delv and with our validating client; tampered, unsigned and misplaced ones.

use super::daemon::*;
use daemon_kit::wall_clock;
use dns_keystore::client::{ClientConfig, FetchError, KeystoreClient};
use dns_keystore::marks::{MarkKey, RollbackMarks};
use dns_keystore::names;
use dns_keystore::record::{AnyGroupRecord, GroupRecord, GroupRecord6};
use hickory_proto::op::UpdateMessage as _;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record};
use igmp_ext::fixtures::Fixture;
use igmp_ext::mld_verifier::KeySource6;
use igmp_ext::verify::{KeyLookupError, KeySource};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// SPEC.md §8.2's worked example, written out by hand.
const GROUP6_NAME: &str =
    "1.0.0.0.0.0.0.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.3.f.f.g6.groups.manycast.test";
const SERVICE6_NAME: &str = "web6.groups.manycast.test";

fn record6(f: &Fixture) -> GroupRecord6 {
    let r = group_record(f);
    GroupRecord {
        group: GROUP6,
        vip: Some(VIP6),
        name: "web6".into(),
        owner: r.owner,
        protected: r.protected,
        keys: r.keys,
        not_before: r.not_before,
        not_after: r.not_after,
        revoked: r.revoked,
    }
}

fn joined_txt(out: &str) -> String {
    out.trim().trim_matches('"').split("\" \"").collect()
}

#[tokio::test]
async fn dig_aaaa_and_delv_read_and_validate_ipv6_records() {
    let d = Daemon::start("v6-serve");
    let f = Fixture::new(1);
    let r6 = record6(&f);
    let r4 = group_record(&f);
    d.admin().publish(&r6).await.expect("publish IPv6");
    d.admin()
        .publish(&r4)
        .await
        .expect("publish IPv4 beside it");
    assert_eq!(
        names::group_name6(&d.anchor().zone, GROUP6).to_string(),
        format!("{GROUP6_NAME}.")
    );

    // Both names return the whole record; AAAA carries the VIP and the group address; no A.
    let expected = r6.to_text().expect("record text");
    for name in [SERVICE6_NAME, GROUP6_NAME] {
        let out = text(&dig(d.addr, &["+short", name, "TXT"]));
        assert_eq!(joined_txt(&out), expected, "dig {name} TXT");
        assert_eq!(
            text(&dig(d.addr, &["+short", name, "A"])).trim(),
            "",
            "dig {name} A"
        );
    }
    assert_eq!(
        text(&dig(d.addr, &["+short", SERVICE6_NAME, "AAAA"])).trim(),
        "2001:db8::10"
    );
    assert_eq!(
        text(&dig(d.addr, &["+short", GROUP6_NAME, "AAAA"])).trim(),
        "ff3e::8000:1"
    );
    // The IPv4 record beside it is as before: A, no AAAA.
    let web = format!("web.{ZONE}");
    assert_eq!(
        text(&dig(d.addr, &["+short", &web, "A"])).trim(),
        "203.0.113.10"
    );
    assert_eq!(text(&dig(d.addr, &["+short", &web, "AAAA"])).trim(), "");

    // delv validates the chain from the trust anchor file.
    for (name, ty) in [
        (GROUP6_NAME, "TXT"),
        (GROUP6_NAME, "AAAA"),
        (SERVICE6_NAME, "TXT"),
        (SERVICE6_NAME, "AAAA"),
    ] {
        let out = delv(d.addr, &d.anchor_path(), &[name, ty]);
        assert!(out.contains("; fully validated"), "delv {name} {ty}: {out}");
        assert!(out.contains(ty), "delv {name} {ty}: {out}");
    }

    // Our client, by group address and by name, for both families.
    let client = d.client();
    let now = wall_clock();
    let (got, ttl, _) = client.fetch6(GROUP6, now).await.expect("fetch6");
    assert_eq!(got, r6);
    assert!(ttl > 0);
    let s6 = client
        .fetch_service("web6", now)
        .await
        .expect("service web6");
    assert_eq!(s6.record, AnyGroupRecord::V6(r6.clone()));
    assert_eq!(s6.address, IpAddr::V6(VIP6));
    let s4 = client.fetch_service("web", now).await.expect("service web");
    assert_eq!(s4.record, AnyGroupRecord::V4(r4.clone()));
    assert_eq!(s4.address, IpAddr::from([203, 0, 113, 10]));
    let at_group = Name::from_ascii(format!("{GROUP6_NAME}.")).expect("name");
    let (addrs, _, _) = client
        .fetch_addresses(&at_group, true, now)
        .await
        .expect("AAAA");
    assert_eq!(addrs, [IpAddr::V6(GROUP6)]);
    // An IPv6 group nobody published is no record; the IPv4 lookup is unaffected.
    assert_eq!(
        client
            .fetch6(Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0, 9), now)
            .await,
        Err(FetchError::NoRecord)
    );
    assert_eq!(client.fetch(f.group, now).await.expect("fetch v4").0, r4);

    // An AAAA that disagrees with the record (signed: the server does not screen addresses)
    // is refused by the lookup by name.
    let mut m = hickory_proto::op::Message::query();
    m.metadata.op_code = hickory_proto::op::OpCode::Update;
    let mut q = hickory_proto::op::Query::new();
    q.set_name(d.anchor().zone)
        .set_query_type(hickory_proto::rr::RecordType::SOA);
    m.add_zone(q);
    let service = Name::from_ascii(format!("{SERVICE6_NAME}.")).expect("name");
    let mut delete = Record::update0(service.clone(), 0, hickory_proto::rr::RecordType::AAAA);
    delete.dns_class = hickory_proto::rr::DNSClass::ANY;
    m.add_update(delete);
    m.add_update(Record::from_rdata(
        service,
        300,
        RData::AAAA(hickory_proto::rr::rdata::AAAA(Ipv6Addr::new(
            0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99,
        ))),
    ));
    d.admin().send(m).await.expect("AAAA update");
    let err = client.fetch_service("web6", now).await.unwrap_err();
    assert_eq!(
        err,
        FetchError::Record(format!(
            "{SERVICE6_NAME}. has address 2001:db8::99, its record says 2001:db8::10"
        ))
    );

    // Re-publishing the label as an IPv4 service leaves no AAAA of the old family behind.
    let moved = GroupRecord {
        name: "web6".into(),
        ..r4.clone()
    };
    d.admin().publish(&moved).await.expect("re-publish as IPv4");
    assert_eq!(
        text(&dig(d.addr, &["+short", SERVICE6_NAME, "AAAA"])).trim(),
        ""
    );
    assert_eq!(
        text(&dig(d.addr, &["+short", SERVICE6_NAME, "A"])).trim(),
        "203.0.113.10"
    );
    // Withdrawing the IPv6 record empties its group name.
    d.admin().withdraw(&r6).await.expect("withdraw");
    assert_eq!(
        text(&dig(d.addr, &["+short", GROUP6_NAME, "AAAA"])).trim(),
        ""
    );
    assert_eq!(
        text(&dig(d.addr, &["+short", GROUP6_NAME, "TXT"])).trim(),
        ""
    );
    assert_eq!(client.fetch6(GROUP6, now).await, Err(FetchError::NoRecord));
}

/// A UDP proxy between our client and the daemon: an on-path attacker who rewrites requests
/// and answers.
fn proxy(
    server: SocketAddr,
    request: fn(&mut [u8]),
    answer: fn(&mut [u8]),
) -> (SocketAddr, Arc<AtomicBool>) {
    let front = UdpSocket::bind("127.0.0.1:0").expect("proxy socket");
    front
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let addr = front.local_addr().expect("proxy address");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop2.load(Ordering::Relaxed) {
            let Ok((n, client)) = front.recv_from(&mut buf) else {
                continue;
            };
            let back = UdpSocket::bind("127.0.0.1:0").expect("proxy upstream socket");
            back.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut q = buf[..n].to_vec();
            request(&mut q);
            let _ = back.send_to(&q, server);
            let mut a = [0u8; 4096];
            if let Ok(m) = back.recv(&mut a) {
                let mut a = a[..m].to_vec();
                answer(&mut a);
                let _ = front.send_to(&a, client);
            }
        }
    });
    (addr, stop)
}

fn replace(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    if let Some(at) = bytes.windows(from.len()).position(|w| w == from) {
        bytes[at..at + to.len()].copy_from_slice(to);
    }
}

fn unchanged(_: &mut [u8]) {}

/// The VIP's AAAA rdata, 2001:db8::10, becomes 2001:db8::66.
fn tamper_aaaa(a: &mut [u8]) {
    replace(
        a,
        &VIP6.octets(),
        &Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x66).octets(),
    );
}

fn tamper_txt(a: &mut [u8]) {
    replace(a, b"o=ops@", b"o=eve@");
}

/// Clears the DNSSEC OK bit (RFC 3225) of every query but the DNSKEY one, so that the server
/// answers the record unsigned while the key set still validates.
fn strip_do_but_for_dnskey(q: &mut [u8]) {
    // Header, then the question name's labels, then QTYPE.
    let mut at = 12;
    while let Some(&len) = q.get(at) {
        at += 1 + usize::from(len);
        if len == 0 {
            break;
        }
    }
    let qtype = q.get(at..at + 2).map(|t| u16::from_be_bytes([t[0], t[1]]));
    if qtype == Some(48) {
        return;
    }
    // Our client's OPT RR: root name, type 41, payload 1232, ext-rcode 0, version 0, DO set.
    replace(
        q,
        &[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0],
        &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0],
    );
}

#[tokio::test]
async fn tampered_or_unsigned_ipv6_answers_are_refused_and_change_nothing() {
    let d = Daemon::start("v6-tamper");
    let f = Fixture::new(1);
    let r6 = record6(&f);
    d.admin().publish(&r6).await.expect("publish");
    let marks = temp_dir("v6-marks").join("rollback.marks");
    let client_via = |at: SocketAddr| {
        KeystoreClient::with_rollback_marks(
            ClientConfig::new(at, d.anchor()),
            RollbackMarks::open(&marks).expect("marks"),
        )
    };
    let now = wall_clock();
    let key = MarkKey::new(&d.anchor(), GROUP6);

    // A changed AAAA: dig shows the change (it does not validate), delv and our client refuse.
    let (at, stop) = proxy(d.addr, unchanged, tamper_aaaa);
    let out = text(&dig(at, &["+short", SERVICE6_NAME, "AAAA"]));
    assert_eq!(out.trim(), "2001:db8::66");
    let out = delv(at, &d.anchor_path(), &[SERVICE6_NAME, "AAAA"]);
    assert!(!out.contains("fully validated"), "{out}");
    let client = client_via(at);
    let name = Name::from_ascii(format!("{SERVICE6_NAME}.")).expect("name");
    let err = client.fetch_addresses(&name, true, now).await.unwrap_err();
    assert!(matches!(err, FetchError::Validation(_)), "{err}");
    let err = client.fetch_service("web6", now).await.unwrap_err();
    assert!(matches!(err, FetchError::Validation(_)), "{err}");
    stop.store(true, Ordering::Relaxed);

    // A changed IPv6 group record at its nibble name.
    let (at, stop) = proxy(d.addr, unchanged, tamper_txt);
    let out = text(&dig(at, &["+short", GROUP6_NAME, "TXT"]));
    assert!(out.contains("o=eve@"), "{out}");
    let out = delv(at, &d.anchor_path(), &[GROUP6_NAME, "TXT"]);
    assert!(!out.contains("fully validated"), "{out}");
    let err = client_via(at).fetch6(GROUP6, now).await.unwrap_err();
    assert!(matches!(err, FetchError::Validation(_)), "{err}");
    stop.store(true, Ordering::Relaxed);

    // Unsigned answers (the DO bit cleared on the way): the record and the AAAA are refused.
    let (at, stop) = proxy(d.addr, strip_do_but_for_dnskey, unchanged);
    let client = client_via(at);
    let err = client.fetch6(GROUP6, now).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        FetchError::Validation(dns_keystore::validate::ValidationError::Bogus(
            "no valid RRSIG by a zone key covers the RRset"
        ))
        .to_string()
    );
    let err = client.fetch_addresses(&name, true, now).await.unwrap_err();
    assert!(matches!(err, FetchError::Validation(_)), "{err}");
    stop.store(true, Ordering::Relaxed);

    // Nothing changed: no rollback mark was raised by a refused answer, the zone is as
    // published, and the real answer is still taken (and then marks the group).
    assert_eq!(RollbackMarks::open(&marks).expect("marks").get(key), None);
    assert_eq!(
        joined_txt(&text(&dig(d.addr, &["+short", GROUP6_NAME, "TXT"]))),
        r6.to_text().expect("text")
    );
    let (got, _, _) = client_via(d.addr)
        .fetch6(GROUP6, now)
        .await
        .expect("fetch6");
    assert_eq!(got, r6);
    assert!(RollbackMarks::open(&marks)
        .expect("marks")
        .get(key)
        .is_some());

    // A mark newer than the zone's signatures (as after a later record was seen): the current
    // answer is refused as a rollback, and the IPv4 groups' marks are another key.
    let mut m = RollbackMarks::open(&marks).expect("marks");
    m.raise(key, u64::from(u32::MAX)).expect("raise");
    let err = client_via(d.addr).fetch6(GROUP6, now).await.unwrap_err();
    assert!(matches!(err, FetchError::Rollback { .. }), "{err}");
    assert_eq!(m.get(MarkKey::new(&d.anchor(), f.group)), None);
}

#[tokio::test]
async fn misplaced_ipv6_records_are_refused_and_the_published_one_survives_a_restart() {
    let mut d = Daemon::start("v6-bad");
    let f = Fixture::new(1);
    let r6 = record6(&f);
    d.admin().publish(&r6).await.expect("publish");
    let before = text(&dig(d.addr, &["+short", GROUP6_NAME, "TXT"]));
    let txt = r6.to_txt_strings().expect("strings");
    let zone = d.anchor().zone;
    let other = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 2);
    // The record at another group's nibble name, at an IPv4-style name, at the IPv4 group's
    // name; and a record whose s= is IPv4 at the right name.
    let mixed = r6
        .to_text()
        .expect("text")
        .replace("s=2001:db8::10", "s=203.0.113.10");
    let cases: Vec<(Name, Vec<String>)> = vec![
        (names::group_name6(&zone, other), txt.clone()),
        (
            Name::from_ascii(format!("1.0.0.0.e.3.f.f.g.{ZONE}.")).expect("name"),
            txt.clone(),
        ),
        (names::group_name(&zone, f.group), txt.clone()),
        (names::group_name6(&zone, GROUP6), vec![mixed]),
    ];
    for (name, strings) in &cases {
        let mut m = hickory_proto::op::Message::query();
        m.metadata.op_code = hickory_proto::op::OpCode::Update;
        let mut q = hickory_proto::op::Query::new();
        q.set_name(zone.clone())
            .set_query_type(hickory_proto::rr::RecordType::SOA);
        m.add_zone(q);
        m.add_update(Record::from_rdata(
            name.clone(),
            300,
            RData::TXT(TXT::new(strings.clone())),
        ));
        let err = d.admin().send(m).await.unwrap_err();
        assert!(
            matches!(err, dns_keystore::admin::AdminError::Refused(_)),
            "{name}: {err}"
        );
    }
    assert_eq!(text(&dig(d.addr, &["+short", GROUP6_NAME, "TXT"])), before);
    for (name, _) in &cases[..3] {
        let out = text(&dig(d.addr, &["+short", &name.to_string(), "TXT"]));
        assert_eq!(out.trim(), "", "{name}");
    }
    assert!(d.stop().success());
    assert_eq!(d.metric("keystore_updates_bad_record_total"), 4);
    assert_eq!(d.metric("keystore_updates_applied_total"), 1);

    // The IPv6 record and its AAAA records come back from the state file, signed.
    d.spawn();
    assert_eq!(
        text(&dig(d.addr, &["+short", GROUP6_NAME, "AAAA"])).trim(),
        "ff3e::8000:1"
    );
    let out = delv(d.addr, &d.anchor_path(), &[SERVICE6_NAME, "AAAA"]);
    assert!(
        out.contains("; fully validated") && out.contains("2001:db8::10"),
        "{out}"
    );
    let (got, _, _) = d
        .client()
        .fetch6(GROUP6, wall_clock())
        .await
        .expect("fetch6");
    assert_eq!(got, r6);
}

static TAMPER: AtomicBool = AtomicBool::new(false);

fn tamper_txt_when_asked(a: &mut [u8]) {
    if TAMPER.load(Ordering::Relaxed) {
        tamper_txt(a);
    }
}

#[tokio::test]
async fn the_ipv6_cache_serves_validated_records_and_a_refused_answer_changes_nothing() {
    let d = Daemon::start("v6-cache");
    let f = Fixture::new(1);
    let r6 = record6(&f);
    d.admin().publish(&r6).await.expect("publish");
    let (at, stop) = proxy(d.addr, unchanged, tamper_txt_when_asked);
    let client = KeystoreClient::new(ClientConfig::new(at, d.anchor()));
    let now = wall_clock();

    // Not watched, nothing cached: no record, and the IPv4 side knows nothing of it.
    assert!(matches!(
        client.record6(GROUP6, now),
        Err(KeyLookupError::Unavailable(_))
    ));
    client.watch6(GROUP6);
    client.refresh6(GROUP6, now).await.expect("refresh6");
    assert_eq!(*client.record6(GROUP6, now).expect("cached"), r6);
    assert!(client.group_keys(f.group, now).is_err());
    // The verifier's MLDv2 path reads the same validated record as keys (`KeySource6`).
    let keys = client
        .group_keys6(GROUP6, now)
        .expect("keys of the IPv6 group");
    assert_eq!(*keys, r6.to_group_keys6());
    assert_eq!(keys.keys.len(), 1);
    assert!(matches!(
        client.group_keys6(Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 2), now),
        Err(KeyLookupError::Unavailable(_) | KeyLookupError::UnknownGroup)
    ));

    // A tampered answer is refused and the cached record stays.
    TAMPER.store(true, Ordering::Relaxed);
    let err = client.refresh6(GROUP6, now).await.unwrap_err();
    assert!(matches!(err, FetchError::Validation(_)), "{err}");
    assert_eq!(*client.record6(GROUP6, now).expect("still cached"), r6);
    TAMPER.store(false, Ordering::Relaxed);

    // A refresh round (TTL run out) fetches the watched IPv6 group: a revocation arrives.
    let revoked = dns_keystore::admin::revoke_member(&r6, igmp_ext::KeyId([9; 8]));
    d.admin()
        .publish(&revoked)
        .await
        .expect("publish revocation");
    let later = now.saturating_add(Duration::from_secs(400));
    client.refresh_due(later).await;
    assert_eq!(*client.record6(GROUP6, later).expect("refreshed"), revoked);
    assert_eq!(
        client
            .group_keys6(GROUP6, later)
            .expect("refreshed keys")
            .revoked_members,
        vec![igmp_ext::KeyId([9; 8])],
        "the revocation reaches the MLDv2 path's keys"
    );
    stop.store(true, Ordering::Relaxed);
}
