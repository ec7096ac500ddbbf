//! Member certificates in the keystore (SPEC.md §8.7), against the running daemon.

use super::daemon::*;
use daemon_kit::wall_clock;
use dns_keystore::cert_record::CertRecord;
use dns_keystore::client::FetchError;
use hickory_proto::op::{Message, OpCode, Query, UpdateMessage as _};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use igmp_ext::fixtures::Fixture;
use igmp_ext::{KeyId, UnverifiedCertificate};

fn cert_record(f: &Fixture, member: usize) -> CertRecord {
    CertRecord::new(
        UnverifiedCertificate::decode(f.members[member].cert.as_bytes()).expect("fixture cert"),
    )
    .expect("fits a record")
}

fn member_name(id: KeyId) -> String {
    format!("{id}.m.{ZONE}")
}

fn add_txt(name: &str, text: &str) -> Message {
    let mut m = Message::query();
    m.metadata.op_code = OpCode::Update;
    let mut zone = Query::new();
    zone.set_name(Name::from_ascii(format!("{ZONE}.")).expect("zone"))
        .set_query_type(RecordType::SOA);
    m.add_zone(zone);
    m.add_update(Record::from_rdata(
        Name::from_ascii(format!("{name}.")).expect("name"),
        300,
        RData::TXT(TXT::new(vec![text.to_owned()])),
    ));
    m
}

#[tokio::test]
async fn certificates_publish_validate_and_withdraw() {
    let d = Daemon::start("certs");
    let f = Fixture::new(2);
    let c0 = cert_record(&f, 0);
    let id0 = c0.member_key_id();
    d.admin().publish_certificate(&c0).await.expect("publish");

    // dig reads the record as published; kdig sees its RRSIG; delv validates it.
    let name = member_name(id0);
    let out = text(&dig(d.addr, &["+short", &name, "TXT"]));
    let joined: String = out.trim().trim_matches('"').split("\" \"").collect();
    assert_eq!(joined, c0.to_text(), "dig {name} TXT");
    let out = text(&kdig(d.addr, &["+dnssec", &name, "TXT"]));
    assert!(out.contains("RRSIG") && out.contains("TXT 15 "), "{out}");
    let out = delv(d.addr, &d.anchor_path(), &[&name, "TXT"]);
    assert!(out.contains("; fully validated"), "delv: {out}");

    // Our client fetches and validates it; the certificate then verifies with the group key.
    let (back, ttl, _) = d
        .client()
        .fetch_certificate(id0, wall_clock())
        .await
        .expect("fetch");
    assert_eq!(back, c0);
    assert_eq!(ttl, 300);
    let now = igmp_ext::fixtures::NOW;
    assert!(back
        .into_certificate()
        .verify(&f.group_key.verifying_key(), now)
        .is_ok());
    // Another member has none.
    let id1 = cert_record(&f, 1).member_key_id();
    assert_eq!(
        d.client().fetch_certificate(id1, wall_clock()).await,
        Err(FetchError::NoRecord)
    );

    // Refused, and nothing changes: a certificate at another member's name, text that is not a
    // certificate, a group record under m., and a certificate record at a group name.
    let c1 = cert_record(&f, 1);
    for m in [
        add_txt(&member_name(id1), &c0.to_text()),
        add_txt(&member_name(id1), "v=MCC1; c=AAAA"),
        add_txt(&member_name(id1), "v=MC1; g=232.1.1.1"),
        add_txt(&format!("1.1.1.232.g.{ZONE}"), &c1.to_text()),
    ] {
        assert!(d.admin().send(m).await.is_err());
    }
    assert!(text(&dig(d.addr, &["+short", &member_name(id1), "TXT"]))
        .trim()
        .is_empty());
    assert_eq!(
        d.client().fetch_certificate(id1, wall_clock()).await,
        Err(FetchError::NoRecord)
    );

    // Withdrawn: gone for dig and the client.
    d.admin().withdraw_certificate(id0).await.expect("withdraw");
    assert!(text(&dig(d.addr, &["+short", &name, "TXT"]))
        .trim()
        .is_empty());
    assert_eq!(
        d.client().fetch_certificate(id0, wall_clock()).await,
        Err(FetchError::NoRecord)
    );
}
