//! Issue 13, defects 13 and 14: what an on-path attacker between the keystore and a router can
//! do with unproven denials and replayed, still-signed old answers.

use super::daemon::*;
use daemon_kit::wall_clock;
use dns_keystore::client::{ClientConfig, FetchError, KeystoreClient};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use igmp_ext::fixtures::Fixture;
use igmp_ext::verify::{KeyLookupError, KeySource};
use igmp_ext::KeyId;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does with TXT queries (everything else always passes).
const PASS: u8 = 0;
/// Answers NXDOMAIN itself: a forged denial.
const DENY: u8 = 1;
/// Answers with the first TXT answer it passed, under the new query's id: a replay.
const REPLAY: u8 = 2;

struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicU8>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(1, Ordering::Relaxed);
    }
}

/// A UDP proxy in front of `server` on the path of the router's queries.
fn proxy(server: SocketAddr) -> Proxy {
    let front = UdpSocket::bind("127.0.0.1:0").expect("proxy socket");
    front
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let addr = front.local_addr().expect("proxy address");
    let (mode, stop) = (Arc::new(AtomicU8::new(PASS)), Arc::new(AtomicU8::new(0)));
    let (mode2, stop2) = (mode.clone(), stop.clone());
    let captured: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while stop2.load(Ordering::Relaxed) == 0 {
            let Ok((n, client)) = front.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let is_txt = query
                .queries
                .first()
                .is_some_and(|q| q.query_type() == RecordType::TXT);
            let id = query.metadata.id.to_be_bytes();
            let mode = if is_txt {
                mode2.load(Ordering::Relaxed)
            } else {
                PASS
            };
            let answer = match mode {
                DENY => {
                    let mut denial = query.clone();
                    denial.metadata.message_type = MessageType::Response;
                    denial.metadata.response_code = ResponseCode::NXDomain;
                    denial.to_vec().ok()
                }
                REPLAY => captured.lock().expect("proxy lock").clone().map(|mut old| {
                    old[..2].copy_from_slice(&id);
                    old
                }),
                _ => {
                    let back = UdpSocket::bind("127.0.0.1:0").expect("proxy upstream socket");
                    back.set_read_timeout(Some(Duration::from_secs(2)))
                        .expect("timeout");
                    let _ = back.send_to(&buf[..n], server);
                    let mut answer = [0u8; 4096];
                    back.recv(&mut answer).ok().map(|m| answer[..m].to_vec())
                }
            };
            if let Some(a) = answer {
                if is_txt && mode == PASS {
                    captured
                        .lock()
                        .expect("proxy lock")
                        .get_or_insert(a.clone());
                }
                let _ = front.send_to(&a, client);
            }
        }
    });
    Proxy { addr, mode, stop }
}

fn client(p: &Proxy, d: &Daemon) -> KeystoreClient {
    let mut config = ClientConfig::new(p.addr, d.anchor());
    config.timeout = Duration::from_millis(500);
    KeystoreClient::new(config)
}

#[tokio::test]
async fn a_forged_denial_does_not_evict_validated_keys() {
    let d = Daemon::start("denial");
    let f = Fixture::new(1);
    d.admin().publish(&group_record(&f)).await.expect("publish");
    let p = proxy(d.addr);
    let client = client(&p, &d);
    let now = wall_clock();
    client
        .refresh(f.group, now)
        .await
        .expect("validated refresh");
    assert!(client.group_keys(f.group, now).is_ok());

    // The attacker answers NXDOMAIN: the client sees the denial, and keeps serving the keys it
    // validated (a denial is unproven, like no answer at all).
    p.mode.store(DENY, Ordering::Relaxed);
    let later = now.saturating_add(Duration::from_secs(60));
    assert_eq!(
        client.refresh(f.group, later).await,
        Err(FetchError::NoRecord)
    );
    let keys = client
        .group_keys(f.group, later)
        .expect("keys survive a denial");
    assert_eq!(keys.keys[0].id, KeyId::of(&f.group_key.verifying_key()));

    // With nothing validated, a denial still refuses the group (fail closed, as before).
    let fresh = KeystoreClient::new(ClientConfig::new(p.addr, d.anchor()));
    assert_eq!(
        fresh.refresh(f.group, later).await,
        Err(FetchError::NoRecord)
    );
    assert_eq!(
        fresh.group_keys(f.group, later).map(|_| ()),
        Err(KeyLookupError::UnknownGroup)
    );
}

#[tokio::test]
async fn a_replayed_pre_revocation_answer_is_refused_as_a_rollback() {
    let d = Daemon::start("rollback");
    let f = Fixture::new(2);
    let r = group_record(&f);
    d.admin().publish(&r).await.expect("publish");
    let p = proxy(d.addr);
    let client = client(&p, &d);
    // The proxy keeps this first (pre-revocation) signed answer.
    client
        .refresh(f.group, wall_clock())
        .await
        .expect("refresh");

    // RRSIG inceptions have one-second granularity: revoke in a later second.
    std::thread::sleep(Duration::from_millis(1100));
    let revoked =
        dns_keystore::admin::revoke_member(&r, KeyId::of(&f.members[1].key.verifying_key()));
    d.admin()
        .publish(&revoked)
        .await
        .expect("publish revocation");
    let now = wall_clock();
    client.refresh(f.group, now).await.expect("refresh");
    assert_eq!(
        client
            .group_keys(f.group, now)
            .expect("keys")
            .revoked_members
            .len(),
        1
    );

    // Replayed, the old answer still validates (its signature lives 7 days) but is older.
    p.mode.store(REPLAY, Ordering::Relaxed);
    let err = client.refresh(f.group, now).await.unwrap_err();
    assert!(matches!(err, FetchError::Rollback { .. }), "{err}");
    assert_eq!(
        client
            .group_keys(f.group, now)
            .expect("keys")
            .revoked_members
            .len(),
        1,
        "the revocation stays"
    );
}

/// Issue 13, item 14 (the rest): the rollback mark outlives the process. A client restarted on
/// the same marks file refuses the replayed pre-revocation answer although it has nothing cached.
#[tokio::test]
async fn a_restarted_client_still_refuses_the_rollback() {
    use dns_keystore::marks::RollbackMarks;
    let d = Daemon::start("rollback-restart");
    let f = Fixture::new(2);
    let r = group_record(&f);
    d.admin().publish(&r).await.expect("publish");
    let p = proxy(d.addr);
    let marks = d.dir.join("client").join("rollback.marks");
    let open = || {
        let mut config = ClientConfig::new(p.addr, d.anchor());
        config.timeout = Duration::from_millis(500);
        KeystoreClient::with_rollback_marks(
            config,
            RollbackMarks::open(&marks).expect("marks file"),
        )
    };
    let client = open();
    client
        .refresh(f.group, wall_clock())
        .await
        .expect("refresh");
    std::thread::sleep(Duration::from_millis(1100));
    let revoked =
        dns_keystore::admin::revoke_member(&r, KeyId::of(&f.members[1].key.verifying_key()));
    d.admin()
        .publish(&revoked)
        .await
        .expect("publish revocation");
    client
        .refresh(f.group, wall_clock())
        .await
        .expect("refresh");
    drop(client);

    // Restarted: only the file remembers. The replay is refused, nothing is cached from it.
    p.mode.store(REPLAY, Ordering::Relaxed);
    let restarted = open();
    let now = wall_clock();
    let err = restarted.refresh(f.group, now).await.unwrap_err();
    assert!(matches!(err, FetchError::Rollback { .. }), "{err}");
    assert!(restarted.group_keys(f.group, now).is_err());

    // The current record is still accepted after the restart.
    p.mode.store(PASS, Ordering::Relaxed);
    restarted
        .refresh(f.group, now)
        .await
        .expect("current record");
    assert_eq!(
        restarted
            .group_keys(f.group, now)
            .expect("keys")
            .revoked_members
            .len(),
        1
    );
}
