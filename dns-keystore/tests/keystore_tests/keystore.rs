//! Issue 3, points 1-6, against the running daemon.

use super::daemon::*;
use daemon_kit::wall_clock;
use dns_keystore::client::{ClientConfig, FetchError, KeystoreClient};
use dns_keystore::record::GroupRecord;
use dns_keystore::validate::{TrustAnchor, ValidationError};
use igmp_ext::ed25519_dalek::SigningKey;
use igmp_ext::fixtures::{Fixture, IFINDEX};
use igmp_ext::verify::{KeyLookupError, KeySource, Reason};
use igmp_ext::{JoinVerifier, KeyId, VerifierConfig};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const GROUP_NAME: &str = "1.1.1.232.g.groups.manycast.test";
const SERVICE_NAME: &str = "web.groups.manycast.test";

#[tokio::test]
async fn dig_kdig_and_delv_read_and_validate_published_records() {
    let d = Daemon::start("serve");
    let f = Fixture::new(1);
    let r = group_record(&f);
    d.admin().publish(&r).await.expect("publish");
    let expected = r.to_text().expect("record text");

    // Both names return the whole record; A records carry the VIP and the group address.
    for name in [SERVICE_NAME, GROUP_NAME] {
        let out = text(&dig(d.addr, &["+short", name, "TXT"]));
        let joined: String = out.trim().trim_matches('"').split("\" \"").collect();
        assert_eq!(joined, expected, "dig {name} TXT");
    }
    assert_eq!(
        text(&dig(d.addr, &["+short", SERVICE_NAME, "A"])).trim(),
        "203.0.113.10"
    );
    assert_eq!(
        text(&dig(d.addr, &["+short", GROUP_NAME, "A"])).trim(),
        "232.1.1.1"
    );

    // kdig sees the RRSIG (algorithm 15) with the answer.
    let out = text(&kdig(d.addr, &["+dnssec", GROUP_NAME, "TXT"]));
    assert!(out.contains("RRSIG") && out.contains("TXT 15 "), "{out}");
    assert!(out.contains("v=MC1"), "{out}");

    // delv validates the chain from the trust anchor file the daemon wrote.
    for (name, ty) in [
        (GROUP_NAME, "TXT"),
        (SERVICE_NAME, "TXT"),
        (SERVICE_NAME, "A"),
    ] {
        let out = delv(d.addr, &d.anchor_path(), &[name, ty]);
        assert!(out.contains("; fully validated"), "delv {name} {ty}: {out}");
    }

    // A wrong trust anchor fails in delv and in our client.
    let other = Daemon::start("other");
    let out = delv(d.addr, &other.anchor_path(), &[GROUP_NAME, "TXT"]);
    assert!(!out.contains("fully validated"), "{out}");
    assert!(
        out.contains("resolution failed") || out.contains("no valid"),
        "{out}"
    );
    let wrong = KeystoreClient::new(ClientConfig::new(d.addr, other.anchor()));
    let err = wrong.fetch(f.group, wall_clock()).await.unwrap_err();
    assert_eq!(
        err,
        FetchError::Validation(ValidationError::Bogus("no DNSKEY matches the trust anchor"))
    );
}

/// A UDP proxy that rewrites `from` to `to` in every answer: an on-path attacker.
fn tampering_proxy(
    server: SocketAddr,
    from: &'static [u8],
    to: &'static [u8],
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
            let _ = back.send_to(&buf[..n], server);
            let mut answer = [0u8; 4096];
            if let Ok(m) = back.recv(&mut answer) {
                let mut a = answer[..m].to_vec();
                if let Some(at) = a.windows(from.len()).position(|w| w == from) {
                    a[at..at + to.len()].copy_from_slice(to);
                }
                let _ = front.send_to(&a, client);
            }
        }
    });
    (addr, stop)
}

#[tokio::test]
async fn tampered_record_fails_validation_in_delv_and_our_client() {
    let d = Daemon::start("tamper");
    let f = Fixture::new(1);
    d.admin().publish(&group_record(&f)).await.expect("publish");
    let (proxy, stop) = tampering_proxy(d.addr, b"o=ops@", b"o=eve@");
    // The proxy really changes the record (dig does not validate).
    let out = text(&dig(proxy, &["+short", GROUP_NAME, "TXT"]));
    assert!(out.contains("o=eve@"), "{out}");
    let out = delv(proxy, &d.anchor_path(), &[GROUP_NAME, "TXT"]);
    assert!(!out.contains("fully validated"), "{out}");
    let client = KeystoreClient::new(ClientConfig::new(proxy, d.anchor()));
    let err = client.fetch(f.group, wall_clock()).await.unwrap_err();
    assert!(matches!(err, FetchError::Validation(_)), "{err}");
    stop.store(true, Ordering::Relaxed);
}

#[tokio::test]
async fn client_feeds_the_verifier_serves_stale_then_fails_closed() {
    let mut d = Daemon::start("client");
    let f = Fixture::new(2);
    let mut r = group_record(&f);
    d.admin().publish(&r).await.expect("publish");
    let mut config = ClientConfig::new(d.addr, d.anchor());
    config.max_stale = Duration::from_secs(60);
    config.timeout = Duration::from_millis(300);
    let client = KeystoreClient::new(config);
    // Nothing cached yet: fail closed.
    assert!(matches!(
        client.group_keys(f.group, wall_clock()),
        Err(KeyLookupError::Unavailable(_))
    ));
    let fetched = wall_clock();
    client.refresh(f.group, fetched).await.expect("refresh");
    let keys = client.group_keys(f.group, fetched).expect("cached keys");
    assert_eq!(keys.keys[0].id, KeyId::of(&f.group_key.verifying_key()));

    // The verifier accepts a member's join with keys from the keystore.
    let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
    let slices = igmp_ext::SliceSet::low_order_slicing(1);
    let join = f.datagram(0, &f.claims(&[slices[0]], 1, fetched, 1));
    assert!(v.handle_datagram(fetched, IFINDEX, &join, &client).is_ok());

    // Revoking member 2's key: after a refresh its joins are refused, member 1's are not.
    r = dns_keystore::admin::revoke_member(&r, KeyId::of(&f.members[1].key.verifying_key()));
    d.admin().publish(&r).await.expect("publish revocation");
    client.refresh(f.group, fetched).await.expect("refresh");
    assert_eq!(
        client
            .group_keys(f.group, fetched)
            .expect("keys")
            .revoked_members
            .len(),
        1
    );
    let join = f.datagram(1, &f.claims(&[slices[1]], 1, fetched, 2));
    let rejected = v
        .handle_datagram(fetched, IFINDEX, &join, &client)
        .unwrap_err();
    assert_eq!(rejected.reason.as_str(), "revoked", "{rejected:?}");

    // Server gone: refresh fails, cached keys are still served until they expire.
    assert!(d.stop().success(), "daemon exits 0 on SIGTERM");
    let later = fetched.saturating_add(Duration::from_secs(200));
    assert!(matches!(
        client.refresh(f.group, later).await,
        Err(FetchError::Unreachable(_))
    ));
    assert!(client.group_keys(f.group, later).is_ok());
    // Past TTL (300 s) + max_stale (60 s): protected joins are refused with key-unavailable.
    let expired = fetched.saturating_add(Duration::from_secs(400));
    assert!(matches!(
        client.group_keys(f.group, expired),
        Err(KeyLookupError::Unavailable(_))
    ));
    let join = f.datagram(0, &f.claims(&[slices[0]], 2, expired, 3));
    let rejected = v
        .handle_datagram(expired, IFINDEX, &join, &client)
        .unwrap_err();
    assert_eq!(rejected.reason, Reason::KeyUnavailable);
    assert_eq!(rejected.reason.as_str(), "key-unavailable");
}

#[tokio::test]
async fn updates_survive_a_restart_and_withdraw_and_rotate_work() {
    let mut d = Daemon::start("restart");
    let f = Fixture::new(1);
    let r = group_record(&f);
    d.admin().publish(&r).await.expect("publish");
    let new_key = SigningKey::from_bytes(&[0x42; 32]).verifying_key();
    let rotated = dns_keystore::admin::rotate_key(&r, new_key);
    d.admin().publish(&rotated).await.expect("rotate");
    let second = GroupRecord {
        group: Ipv4Addr::new(232, 9, 9, 9),
        name: "gone".into(),
        ..r.clone()
    };
    d.admin().publish(&second).await.expect("publish second");
    d.admin().withdraw(&second).await.expect("withdraw");
    assert!(d.stop().success());
    d.spawn();
    // After the restart: the rotated record (two keys) is there, signed, validated; the
    // withdrawn one is not.
    let client = d.client();
    client
        .refresh(f.group, wall_clock())
        .await
        .expect("refresh after restart");
    let keys = client.group_keys(f.group, wall_clock()).expect("keys");
    assert_eq!(keys.keys.len(), 2);
    assert_eq!(keys.keys[1].id, KeyId::of(&new_key));
    assert_eq!(
        client.fetch(second.group, wall_clock()).await.unwrap_err(),
        FetchError::NoRecord
    );
    let out = delv(d.addr, &d.anchor_path(), &[SERVICE_NAME, "TXT"]);
    assert!(
        out.contains("; fully validated") && out.contains(&KeyId::of(&new_key).to_string()),
        "{out}"
    );
    // Key files are private.
    use std::os::unix::fs::PermissionsExt;
    for file in ["zone-key.pk8", "tsig.key"] {
        let mode = std::fs::metadata(d.state().join(file))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} mode {mode:o}");
    }
}

#[tokio::test]
async fn bad_updates_are_refused_counted_and_change_nothing() {
    let mut d = Daemon::start_with("bad", "rate_limit_qps = 50");
    let f = Fixture::new(1);
    let r = group_record(&f);
    d.admin().publish(&r).await.expect("publish");
    let before = text(&dig(d.addr, &["+short", GROUP_NAME, "TXT"]));

    // Wrong TSIG key.
    let wrong = dns_keystore::admin::Admin::new(d.addr, ZONE, "manycast-admin", vec![7u8; 32], 300)
        .expect("admin");
    let changed = GroupRecord {
        owner: "mallory".into(),
        ..r.clone()
    };
    assert!(wrong.publish(&changed).await.is_err());
    // Unknown key name.
    let unknown = dns_keystore::admin::Admin::new(d.addr, ZONE, "someone-else", vec![7u8; 32], 300)
        .expect("admin");
    assert!(unknown.publish(&changed).await.is_err());
    // A TXT record that does not parse, with the right key.
    let bad_record = hickory_proto::rr::Record::from_rdata(
        hickory_proto::rr::Name::from_ascii(format!("{GROUP_NAME}.")).expect("name"),
        300,
        hickory_proto::rr::RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![
            "v=MC1; g=nonsense".into(),
        ])),
    );
    let mut m = update_message();
    hickory_proto::op::UpdateMessage::add_update(&mut m, bad_record.clone());
    assert!(d.admin().send(m).await.is_err());
    // Oversized: more records than max_update_records (16).
    let mut m = update_message();
    for _ in 0..17 {
        hickory_proto::op::UpdateMessage::add_update(&mut m, bad_record.clone());
    }
    assert!(d.admin().send(m).await.is_err());
    // nsupdate (a real client) with a wrong key is refused too.
    let script = format!(
        "server 127.0.0.1 {}\nzone {ZONE}\nupdate add x.{ZONE} 300 A 192.0.2.1\nsend\n",
        d.addr.port()
    );
    let mut child = std::process::Command::new("nsupdate")
        .args([
            "-y",
            "hmac-sha256:manycast-admin:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nsupdate");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), script.as_bytes())
        .expect("script");
    let out = child.wait_with_output().expect("nsupdate output");
    assert!(!out.status.success(), "nsupdate with a wrong key succeeded");

    // Nothing changed.
    assert_eq!(text(&dig(d.addr, &["+short", GROUP_NAME, "TXT"])), before);
    assert!(text(&dig(d.addr, &["+short", &format!("x.{ZONE}"), "A"]))
        .trim()
        .is_empty());

    // A flood from one source: beyond 50 queries per second the rest are dropped and counted.
    let flood = UdpSocket::bind("127.0.0.1:0").expect("flood socket");
    let query = {
        let mut q = hickory_proto::op::Message::query();
        q.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii(format!("{GROUP_NAME}.")).expect("name"),
            hickory_proto::rr::RecordType::TXT,
        ));
        q.to_vec().expect("query bytes")
    };
    for _ in 0..500 {
        let _ = flood.send_to(&query, d.addr);
    }
    // The daemon drains its socket in its own time; wait (bounded) until the metrics file,
    // rewritten every second, shows the drops, so that SIGTERM does not discard the queue.
    for _ in 0..100 {
        if d.metric("keystore_rate_limited_total") > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.stop().success());
    assert!(d.metric("keystore_rate_limited_total") > 0, "{}", d.log());
    assert_eq!(d.metric("keystore_updates_bad_record_total"), 1);
    assert_eq!(d.metric("keystore_updates_oversized_total"), 1);
    assert!(d.metric("keystore_updates_refused_total") >= 3);
    assert_eq!(d.metric("keystore_updates_applied_total"), 1);
}

fn update_message() -> hickory_proto::op::Message {
    let mut m = hickory_proto::op::Message::query();
    m.metadata.op_code = hickory_proto::op::OpCode::Update;
    let mut zone = hickory_proto::op::Query::new();
    zone.set_name(hickory_proto::rr::Name::from_ascii(format!("{ZONE}.")).expect("zone"))
        .set_query_type(hickory_proto::rr::RecordType::SOA);
    hickory_proto::op::UpdateMessage::add_zone(&mut m, zone);
    m
}

#[test]
fn bad_config_gives_one_line_and_nonzero_exit() {
    let dir = temp_dir("config");
    for (text, expect) in [
        ("zone = \"a..b\"\nstate_dir = \"/tmp/x\"\n", "zone"),
        (
            "zone = \"z\"\nstate_dir = \"/tmp/x\"\nlisten = \"nope\"\n",
            "listen",
        ),
        ("zone = \"z\"\n", "state_dir"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).expect("write config");
        let out = run(BIN, &["--config", path.to_str().expect("utf-8 path")]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expect) && err.contains("bad.toml"), "{err}");
    }
    let out = run(BIN, &["--config", "/nonexistent/ks.toml"]);
    assert!(!out.status.success());
    let help = run(BIN, &["--help"]);
    assert!(help.status.success() && text(&help).contains("--config"));
}

#[test]
fn anchor_file_is_what_delv_reads() {
    let d = Daemon::start("anchor");
    let text = std::fs::read_to_string(d.anchor_path()).expect("anchor");
    assert!(text.starts_with("trust-anchors { \"groups.manycast.test.\" static-key 257 3 15 \""));
    assert!(TrustAnchor::parse(&text).is_ok());
}
