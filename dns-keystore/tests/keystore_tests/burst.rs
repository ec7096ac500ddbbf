//! Crash trials (issue 17): a burst of updates through `Admin` (the code manycastctl uses:
//! group records published under both names, key rotation and retirement, revocation,
//! certificate publish and withdraw) from several concurrent writers, the daemon SIGKILLed at a
//! random instant, restarted, and every key read back through DNSSEC validation. Shared by the
//! crash-consistency test and `make bench B=faults`.

use super::daemon::*;
use daemon_kit::wall_clock;
use dns_keystore::admin::{self, Admin};
use dns_keystore::cert_record::CertRecord;
use dns_keystore::client::{exchange, FetchError, KeystoreClient};
use dns_keystore::names;
use dns_keystore::record::GroupRecord;
use dns_keystore::validate::{validate, TrustAnchor};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use igmp_ext::ed25519_dalek::SigningKey;
use igmp_ext::fixtures::Fixture;
use igmp_ext::{KeyId, Timestamp, UnverifiedCertificate};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Concurrent writers, each on its own groups and certificates.
pub const WRITERS: usize = 3;
const CERTS_PER_WRITER: u32 = 8;

/// A small deterministic generator (xorshift64*), seeded by the caller and printed, so a
/// failing trial can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[derive(Debug, Clone)]
enum Target {
    Group { group: Ipv4Addr, label: String },
    Cert(KeyId),
}

#[derive(Debug, Clone)]
struct Entry {
    target: Target,
    /// The text acknowledged last (None: absent).
    acked: Option<String>,
    /// Sent, answer not seen: the key may hold this instead.
    pending: Option<Option<String>>,
    /// Written since the last check.
    touched: bool,
    /// Found torn by a check and not whole since (counted once).
    torn: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Publish(GroupRecord),
    PublishCert(Box<CertRecord>),
    WithdrawCert(KeyId),
}

/// What the writers were told, and where each writer is in its cycle of operations.
#[derive(Debug)]
pub struct Model {
    entries: BTreeMap<String, Entry>,
    step: Vec<u64>,
    fixture: Fixture,
    pub acked_updates: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            entries: BTreeMap::new(),
            step: vec![0; WRITERS],
            fixture: Fixture::new(WRITERS as u32 * CERTS_PER_WRITER),
            acked_updates: 0,
        }
    }
}

fn group_key(writer: usize, group: u64, n: u8) -> SigningKey {
    let mut seed = [0x5a; 32];
    seed[0] = writer as u8;
    seed[1..9].copy_from_slice(&group.to_be_bytes());
    seed[9] = n;
    SigningKey::from_bytes(&seed)
}

impl Model {
    /// The writer's next operation, from its step alone (a cycle of six per group): publish,
    /// rotate (add a key), revoke a member, publish a certificate, retire the old key, withdraw
    /// the certificate.
    fn op(&self, writer: usize) -> (String, Target, Op, Option<String>) {
        let step = self.step[writer];
        let (k, phase) = (step / 6, step % 6);
        let group = Ipv4Addr::new(232, 10 + writer as u8, (k >> 8) as u8, k as u8);
        let label = format!("w{writer}g{k}");
        let member = &self.fixture.members
            [writer * CERTS_PER_WRITER as usize + (k % u64::from(CERTS_PER_WRITER)) as usize];
        let member_id = KeyId::of(&member.key.verifying_key());
        let mut record = GroupRecord {
            group,
            name: label.clone(),
            owner: "crash@example.org".into(),
            protected: true,
            keys: vec![group_key(writer, k, 1).verifying_key()],
            not_before: Timestamp::from_secs(1_700_000_000),
            not_after: Timestamp::from_secs(4_000_000_000),
            revoked: vec![],
            vip: Some(Ipv4Addr::new(203, 0, 113, 1 + writer as u8)),
        };
        if phase >= 1 {
            record = admin::rotate_key(&record, group_key(writer, k, 2).verifying_key());
        }
        if phase >= 2 {
            record = admin::revoke_member(&record, member_id);
        }
        if phase >= 4 {
            record =
                admin::retire_key(&record, KeyId::of(&group_key(writer, k, 1).verifying_key()));
        }
        let cert_key = format!("cert {member_id}");
        let cert = Target::Cert(member_id);
        match phase {
            3 => {
                let c = CertRecord::new(
                    UnverifiedCertificate::decode(member.cert.as_bytes()).expect("fixture cert"),
                )
                .expect("fits a record");
                let text = c.to_text();
                (cert_key, cert, Op::PublishCert(Box::new(c)), Some(text))
            }
            5 => (cert_key, cert, Op::WithdrawCert(member_id), None),
            _ => {
                let text = record.to_text().expect("record text");
                let target = Target::Group { group, label };
                (
                    format!("group {group}"),
                    target,
                    Op::Publish(record),
                    Some(text),
                )
            }
        }
    }
}

async fn send(admin: &Admin, op: &Op) -> bool {
    match op {
        Op::Publish(r) => admin.publish(r).await.is_ok(),
        Op::PublishCert(c) => admin.publish_certificate(c).await.is_ok(),
        Op::WithdrawCert(id) => admin.withdraw_certificate(*id).await.is_ok(),
    }
}

/// Sends the writer's operations one after another until one fails (the daemon was killed).
async fn writer(admin: Admin, model: Arc<Mutex<Model>>, w: usize) {
    loop {
        let (key, op, value) = {
            let mut m = model.lock().expect("model");
            let (key, target, op, value) = m.op(w);
            let entry = m.entries.entry(key.clone()).or_insert(Entry {
                target,
                acked: None,
                pending: None,
                touched: false,
                torn: false,
            });
            entry.pending = Some(value.clone());
            entry.touched = true;
            (key, op, value)
        };
        if !send(&admin, &op).await {
            return;
        }
        let mut m = model.lock().expect("model");
        let entry = m.entries.get_mut(&key).expect("entry made above");
        entry.acked = value;
        entry.pending = None;
        m.step[w] += 1;
        m.acked_updates += 1;
    }
}

/// Runs the writers against `d` for `burst`, then SIGKILLs the daemon.
pub fn burst_then_kill(d: &mut Daemon, model: &Arc<Mutex<Model>>, burst: Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| runtime.spawn(writer(d.admin(), model.clone(), w)))
        .collect();
    std::thread::sleep(burst);
    d.kill();
    for t in &tasks {
        t.abort();
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// What a check found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub checked: u64,
    /// Keys holding neither their acknowledged value nor the one sent when the daemon died.
    pub acked_lost: u64,
    /// Group records that differ between their two names (or whose A records do), or that do
    /// not validate.
    pub torn: u64,
    /// Updates sent but unanswered when the daemon was killed, and how many of them the
    /// restarted daemon holds (evidence that kills land inside updates).
    pub in_flight: u64,
    pub in_flight_applied: u64,
}

impl std::ops::AddAssign for Found {
    fn add_assign(&mut self, o: Found) {
        self.checked += o.checked;
        self.acked_lost += o.acked_lost;
        self.torn += o.torn;
        self.in_flight += o.in_flight;
        self.in_flight_applied += o.in_flight_applied;
    }
}

fn query(name: &Name, rtype: RecordType) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_dnssec_ok(true);
    m.edns = Some(edns);
    m
}

/// The RRset at `name`, DNSSEC-validated with the library's validator (as the client does);
/// `Ok(vec![])` when the name or type is absent.
async fn validated(
    addr: SocketAddr,
    anchor: &TrustAnchor,
    name: &Name,
    rtype: RecordType,
) -> Result<Vec<RData>, String> {
    let timeout = Duration::from_secs(3);
    let answer = exchange(addr, &query(name, rtype), timeout)
        .await
        .map_err(|e| e.to_string())?;
    if answer.metadata.response_code == ResponseCode::NXDomain
        || !answer.answers.iter().any(|r| r.record_type() == rtype)
    {
        return Ok(vec![]);
    }
    let keys = exchange(addr, &query(&anchor.zone, RecordType::DNSKEY), timeout)
        .await
        .map_err(|e| e.to_string())?;
    let now = wall_clock().as_millis() / 1000;
    let proven = validate(anchor, &keys.answers, &answer.answers, name, rtype, now)
        .map_err(|e| format!("{name} {rtype}: {e}"))?;
    Ok(proven.records.into_iter().map(|r| r.data).collect())
}

fn txt_text(data: &[RData]) -> Result<Option<String>, String> {
    match data {
        [] => Ok(None),
        [RData::TXT(txt)] => {
            let record = GroupRecord::parse_txt(&txt.txt_data).map_err(|e| e.to_string())?;
            Ok(Some(record.to_text().map_err(|e| e.to_string())?))
        }
        _ => Err(format!("unexpected RRset {data:?}")),
    }
}

/// One group as its two names show it: the validating client at the group-address name, the
/// validator at the service name, and the A records at both.
async fn read_group(
    d: &Daemon,
    client: &KeystoreClient,
    group: Ipv4Addr,
    label: &str,
) -> Result<(Option<String>, bool), String> {
    let zone = names::zone_name(ZONE).expect("zone");
    let anchor = d.anchor();
    let at_group = match client.fetch(group, wall_clock()).await {
        Ok((r, _, _)) => Some(r.to_text().map_err(|e| e.to_string())?),
        Err(FetchError::NoRecord) => None,
        Err(e) => return Err(format!("client, {group}: {e}")),
    };
    let service = names::service_name(&zone, label).expect("label");
    let at_service = txt_text(&validated(d.addr, &anchor, &service, RecordType::TXT).await?)?;
    let group_name = names::group_name(&zone, group);
    let a_group = !validated(d.addr, &anchor, &group_name, RecordType::A)
        .await?
        .is_empty();
    let a_service = !validated(d.addr, &anchor, &service, RecordType::A)
        .await?
        .is_empty();
    let present = at_group.is_some();
    let whole = at_group == at_service && a_group == present && a_service == present;
    if !whole {
        eprintln!(
            "torn {group}/{label}: group name {at_group:?} A {a_group}, service name {at_service:?} A {a_service}"
        );
    }
    Ok((at_group, whole))
}

/// Reads every key back from the restarted daemon and compares with the model; keys touched
/// since the last check are also validated by `delv` when `with_delv`. The model then holds what
/// was found, so that the next trial starts from it.
pub fn check(d: &Daemon, model: &Arc<Mutex<Model>>, with_delv: bool) -> Found {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = d.client();
    let mut m = model.lock().expect("model");
    let mut found = Found::default();
    for (key, entry) in m.entries.iter_mut() {
        found.checked += 1;
        let touched = entry.touched;
        let (observed, whole) = match &entry.target {
            Target::Group { group, label } => {
                match runtime.block_on(read_group(d, &client, *group, label)) {
                    Ok(seen) => seen,
                    Err(e) => {
                        eprintln!("{key}: {e}");
                        (None, false)
                    }
                }
            }
            Target::Cert(id) => match runtime.block_on(client.fetch_certificate(*id, wall_clock()))
            {
                Ok((c, _, _)) => (Some(c.to_text()), true),
                Err(FetchError::NoRecord) => (None, true),
                Err(e) => {
                    eprintln!("{key}: {e}");
                    (None, false)
                }
            },
        };
        if !whole && !entry.torn {
            found.torn += 1;
        }
        entry.torn = !whole;
        let allowed = observed == entry.acked || entry.pending.as_ref() == Some(&observed);
        if let Some(sent) = &entry.pending {
            found.in_flight += 1;
            found.in_flight_applied += u64::from(*sent == observed && *sent != entry.acked);
        }
        if !allowed {
            found.acked_lost += 1;
            eprintln!(
                "{key}: holds {observed:?}, acknowledged {:?}, in flight {:?}",
                entry.acked, entry.pending
            );
        }
        if with_delv && (touched || !allowed) && observed.is_some() {
            let names = match &entry.target {
                Target::Group { group, label } => vec![
                    format!(
                        "{}",
                        names::group_name(&names::zone_name(ZONE).expect("zone"), *group)
                    ),
                    format!("{label}.{ZONE}."),
                ],
                Target::Cert(id) => vec![format!("{id}.m.{ZONE}.")],
            };
            for name in names {
                let out = delv(d.addr, &d.anchor_path(), &[&name, "TXT"]);
                if !out.contains("; fully validated") {
                    eprintln!("delv {name} TXT: {out}");
                    found.torn += u64::from(whole);
                }
            }
        }
        entry.acked = observed;
        entry.pending = None;
        entry.touched = false;
    }
    found
}

/// One trial: restart `d` if it is down, burst for a random time, SIGKILL, restart, check.
/// A restart that fails counts every key as lost and starts the next trial on a fresh state.
pub fn trial(
    d: &mut Daemon,
    model: &mut Arc<Mutex<Model>>,
    rng: &mut Rng,
    with_delv: bool,
) -> Found {
    let burst = Duration::from_millis(40 + rng.below(360));
    burst_then_kill(d, model, burst);
    if let Err(why) = d.try_spawn() {
        eprintln!("restart after SIGKILL failed: {why}");
        let lost = model.lock().expect("model").entries.len() as u64;
        let _ = std::fs::remove_dir_all(d.state());
        *model = Arc::new(Mutex::new(Model::default()));
        d.spawn();
        return Found {
            checked: lost,
            acked_lost: lost,
            ..Found::default()
        };
    }
    check(d, model, with_delv)
}
