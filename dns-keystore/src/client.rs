//! The router side: looks a group's record up by group address, validates it against the trust
//! anchor, and caches it by TTL. [`KeystoreClient::group_keys`] (igmp-ext's `KeySource`)
//! answers from memory only; [`KeystoreClient::refresh_due`] (or the task from
//! [`KeystoreClient::spawn_refresher`]) talks to the server. While the server is unreachable
//! cached keys are served until they expire (signature expiry, the record's `x=`, or
//! `max_stale` past the TTL); then lookups fail closed with `KeyLookupError::Unavailable`.
//!
//! A failed fetch is retried on the [`crate::retry`] schedule (250 ms doubling to the refresh
//! interval, to 750 ms while the group has no usable keys), not at the next tick; a lookup of a
//! watched group that finds no usable keys wakes the refresher, at most once per group every
//! 250 ms. So the keystore's return is seen within a second; groups nobody watches are never
//! fetched.
//!
//! What an on-path attacker can send is not trusted further than it is proven: a denial
//! (NXDOMAIN, an empty answer) is not DNSSEC-validated, so it never evicts validated keys (it
//! counts as no answer); and a validated record signed before the newest one accepted (a
//! replayed, pre-revocation answer) is refused as a rollback, also after a restart when the
//! client keeps its [`RollbackMarks`] in a file.
//!
//! IPv6 groups (SPEC.md §8.2) are looked up at their nibble names ([`KeystoreClient::fetch6`])
//! and cached by the same rules: [`KeystoreClient::watch6`] and [`KeystoreClient::record6`]
//! (igmp-ext's `KeySource` is IPv4 only, so the IPv6 lookup returns the validated record).
//! [`KeystoreClient::fetch_service`] reads a service name of either family with its validated
//! A or AAAA.

use crate::cert_record::CertRecord;
use crate::marks::{MarkKey, RollbackMarks};
use crate::names;
use crate::record::{AnyGroupRecord, GroupRecord, GroupRecord6};
use crate::retry::{Retry, RetryPolicy};
use crate::validate::{validate, TrustAnchor, Validated, ValidationError};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use igmp_ext::mld_verifier::{GroupKeys6, KeySource6};
use igmp_ext::verify::{GroupKeys, KeyLookupError, KeySource};
use igmp_ext::{KeyId, Timestamp};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

/// The refresh interval [`KeystoreClient::refresh_due`] schedules retries for (the refresher
/// uses its own).
const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// The refresher's shortest sleep, so that a group due now but held by the rate limit does not
/// make it spin.
const MIN_WAIT: Duration = Duration::from_millis(25);

/// How the client reaches and trusts the keystore.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: SocketAddr,
    pub anchor: TrustAnchor,
    /// How long past the TTL cached keys are still served while the server does not answer.
    /// Default 1 hour.
    pub max_stale: Duration,
    /// Per-query timeout. Default 2 s.
    pub timeout: Duration,
}

impl ClientConfig {
    pub fn new(server: SocketAddr, anchor: TrustAnchor) -> Self {
        ClientConfig {
            server,
            anchor,
            max_stale: Duration::from_secs(3600),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Why a fetch failed: the network, the server's answer, or validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("keystore unreachable: {0}")]
    Unreachable(String),
    #[error("keystore has no such record")]
    NoRecord,
    #[error("keystore answered {0}")]
    ServerError(String),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("published record does not parse: {0}")]
    Record(String),
    /// A validated answer signed before the newest record accepted: a replay of an older
    /// record (before a revocation, say) by someone on the path.
    #[error("rollback refused: the answer was signed at {offered}, before the newest accepted record (signed at {cached})")]
    Rollback { offered: u64, cached: u64 },
}

/// A validated record in the cache: an IPv4 one with the keys the verifier takes, or an IPv6 one.
#[derive(Debug, Clone)]
enum Cached {
    V4 {
        keys: Arc<GroupKeys>,
        record: GroupRecord,
    },
    V6 {
        keys: Arc<GroupKeys6>,
        record: Arc<GroupRecord6>,
    },
}

impl Cached {
    fn valid_at(&self, now: Timestamp) -> bool {
        match self {
            Cached::V4 { record, .. } => record.valid_at(now),
            Cached::V6 { record, .. } => record.valid_at(now),
        }
    }

    fn validity(&self) -> (Timestamp, Timestamp) {
        match self {
            Cached::V4 { record, .. } => (record.not_before, record.not_after),
            Cached::V6 { record, .. } => (record.not_before, record.not_after),
        }
    }
}

#[derive(Debug, Clone)]
enum Entry {
    Keys {
        cached: Cached,
        refresh_at: Timestamp,
        expires_at: Timestamp,
        /// The RRSIG inception of the cached record: older answers are rollbacks.
        inception: u64,
    },
    /// The server said there is no such record (not DNSSEC-proven; it only ever refuses joins).
    Absent { refresh_at: Timestamp },
}

impl Entry {
    /// Would a lookup at `now` get keys?
    fn usable(&self, now: Timestamp) -> bool {
        match self {
            Entry::Keys {
                cached, expires_at, ..
            } => now <= *expires_at && cached.valid_at(now),
            Entry::Absent { .. } => false,
        }
    }

    /// Has the record's TTL (or the 30 s after a denial) run out? Keys that expire earlier (the
    /// record's `x=`) are not fetched sooner: asking again would get the same record.
    fn ttl_due(&self, now: Timestamp) -> bool {
        self.refresh_at() <= now
    }

    /// How long until [`Entry::ttl_due`].
    fn ttl_wait(&self, now: Timestamp) -> Duration {
        Duration::from_millis(
            self.refresh_at()
                .as_millis()
                .saturating_sub(now.as_millis()),
        )
    }

    fn refresh_at(&self) -> Timestamp {
        match self {
            Entry::Keys { refresh_at, .. } | Entry::Absent { refresh_at } => *refresh_at,
        }
    }
}

/// A TXT RRset's strings, proven by DNSSEC, with what the cache needs from the proof.
#[derive(Debug)]
struct ProvenTxt {
    strings: Vec<Box<[u8]>>,
    ttl: u32,
    expires: u64,
    inception: u64,
}

/// A service name's record with its address, both DNSSEC-validated and consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub record: AnyGroupRecord,
    /// The name's A (IPv4 record) or AAAA (IPv6 record): the VIP if the record has one, else
    /// the group address.
    pub address: IpAddr,
    /// The smaller TTL of the two RRsets.
    pub ttl: u32,
    /// The earliest signature expiry of the two (seconds since the epoch).
    pub expires: u64,
}

/// Validated, cached group keys; the verifier's [`KeySource`].
#[derive(Debug)]
pub struct KeystoreClient {
    config: ClientConfig,
    cache: RwLock<HashMap<IpAddr, Entry>>,
    /// Each watched group's retry state, on the monotonic clock; only refresh rounds touch it.
    retries: Mutex<HashMap<IpAddr, Retry>>,
    /// Set by a lookup of a watched group that found no usable keys; taken by the next round.
    missed: AtomicBool,
    /// Wakes the refresher on such a miss.
    wake: Notify,
    /// The newest RRSIG inception accepted per group, kept across restarts when on a file.
    marks: Mutex<RollbackMarks>,
}

/// Sends one query or update over UDP and waits for the answer with the same id.
pub async fn exchange(
    server: SocketAddr,
    message: &Message,
    timeout: Duration,
) -> Result<Message, FetchError> {
    let bytes = message
        .to_vec()
        .map_err(|e| FetchError::Unreachable(format!("cannot encode the request: {e}")))?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("a literal socket address");
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    socket
        .connect(server)
        .await
        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    socket
        .send(&bytes)
        .await
        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| {
                FetchError::Unreachable(format!("no answer from {server} in {timeout:?}"))
            })?
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        // Anything that does not decode or is not our answer is ignored, as a stub resolver does.
        if let Ok(answer) = Message::from_vec(&buf[..n]) {
            if answer.metadata.id == message.metadata.id
                && answer.metadata.message_type == MessageType::Response
            {
                return Ok(answer);
            }
        }
    }
}

fn query(name: Name, rtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.op_code = OpCode::Query;
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(name, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_version(0);
    edns.set_dnssec_ok(true);
    m.edns = Some(edns);
    m
}

/// A query id that an off-path attacker cannot guess cheaply (RFC 5452 §9.2).
pub(crate) fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    // Nanoseconds as extra entropy for the randomly keyed hasher, not a protocol time.
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u16
}

impl KeystoreClient {
    pub fn new(config: ClientConfig) -> Self {
        KeystoreClient {
            config,
            cache: RwLock::new(HashMap::new()),
            retries: Mutex::new(HashMap::new()),
            missed: AtomicBool::new(false),
            wake: Notify::new(),
            marks: Mutex::new(RollbackMarks::in_memory()),
        }
    }

    /// A client whose rollback marks are `marks` (typically [`RollbackMarks::open`] on the
    /// daemon's state file): a record older than a mark is refused even after a restart.
    pub fn with_rollback_marks(config: ClientConfig, marks: RollbackMarks) -> Self {
        KeystoreClient {
            marks: Mutex::new(marks),
            ..Self::new(config)
        }
    }

    /// Asks the server for the `rtype` RRset at `name` and the zone's DNSKEYs, and validates
    /// both against the trust anchor at `now`. A denial or an answer without such an RRset is
    /// [`FetchError::NoRecord`] (not proven, see the module doc).
    async fn fetch_rrset(
        &self,
        name: &Name,
        rtype: RecordType,
        now: Timestamp,
    ) -> Result<Validated, FetchError> {
        let zone = &self.config.anchor.zone;
        let answer = exchange(
            self.config.server,
            &query(name.clone(), rtype),
            self.config.timeout,
        )
        .await?;
        match answer.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => return Err(FetchError::NoRecord),
            code => return Err(FetchError::ServerError(code.to_string())),
        }
        if !answer.answers.iter().any(|r| r.record_type() == rtype) {
            return Err(FetchError::NoRecord);
        }
        let keys = exchange(
            self.config.server,
            &query(zone.clone(), RecordType::DNSKEY),
            self.config.timeout,
        )
        .await?;
        Ok(validate(
            &self.config.anchor,
            &keys.answers,
            &answer.answers,
            name,
            rtype,
            now.as_millis() / 1000,
        )?)
    }

    /// The TXT RRset at `name`, validated: the one record's character-strings with the RRset's
    /// TTL and signature expiry (Unix seconds).
    async fn fetch_txt(&self, name: &Name, now: Timestamp) -> Result<ProvenTxt, FetchError> {
        let proven = self.fetch_rrset(name, RecordType::TXT, now).await?;
        let [record] = proven.records.as_slice() else {
            return Err(FetchError::Record(format!(
                "more than one TXT record at {name}"
            )));
        };
        let RData::TXT(txt) = &record.data else {
            return Err(FetchError::Record("not a TXT record".into()));
        };
        Ok(ProvenTxt {
            strings: txt.txt_data.to_vec(),
            ttl: proven.ttl,
            expires: proven.expires,
            inception: proven.inception,
        })
    }

    /// The A (`ipv6` false) or AAAA RRset at `name`, DNSSEC-validated at `now`, with its TTL and
    /// signature expiry. A tampered or unsigned answer is a [`FetchError::Validation`].
    pub async fn fetch_addresses(
        &self,
        name: &Name,
        ipv6: bool,
        now: Timestamp,
    ) -> Result<(Vec<IpAddr>, u32, u64), FetchError> {
        let rtype = if ipv6 {
            RecordType::AAAA
        } else {
            RecordType::A
        };
        let proven = self.fetch_rrset(name, rtype, now).await?;
        let addresses = proven
            .records
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => Ok(IpAddr::V4(a.0)),
                RData::AAAA(a) => Ok(IpAddr::V6(a.0)),
                _ => Err(FetchError::Record(format!("not an {rtype} record"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((addresses, proven.ttl, proven.expires))
    }

    /// Looks up service `label` (`<label>.<zone>`, SPEC.md §8.2): its record, of either family,
    /// and its A or AAAA, both validated; the address must be the record's VIP (or its group
    /// when it has none) and the record's `n=` the label. Not cached, not rollback-checked: for
    /// admins and servers; the verifier looks groups up by address.
    pub async fn fetch_service(
        &self,
        label: &str,
        now: Timestamp,
    ) -> Result<ServiceRecord, FetchError> {
        let name = names::service_name(&self.config.anchor.zone, label)
            .map_err(|e| FetchError::Record(e.to_string()))?;
        let txt = self.fetch_txt(&name, now).await?;
        let record = AnyGroupRecord::parse_txt(&txt.strings)
            .map_err(|e| FetchError::Record(e.to_string()))?;
        if record.name() != label {
            return Err(FetchError::Record(format!(
                "record at {name} is for service {}",
                record.name()
            )));
        }
        let expected = record.vip().unwrap_or(record.group());
        let (addresses, ttl, expires) =
            self.fetch_addresses(&name, expected.is_ipv6(), now).await?;
        if addresses != [expected] {
            let got: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            return Err(FetchError::Record(format!(
                "{name} has address {}, its record says {expected}",
                got.join(",")
            )));
        }
        Ok(ServiceRecord {
            record,
            address: expected,
            ttl: ttl.min(txt.ttl),
            expires: expires.min(txt.expires),
        })
    }

    /// Asks the server for IPv6 `group`'s record at its nibble name (SPEC.md §8.2), validates
    /// it, and parses it; refuses a record for another group and a rollback (as [`fetch`]).
    /// Returns it with the TTL and signature expiry. `now` is wall-clock time.
    ///
    /// [`fetch`]: KeystoreClient::fetch
    pub async fn fetch6(
        &self,
        group: Ipv6Addr,
        now: Timestamp,
    ) -> Result<(GroupRecord6, u32, u64), FetchError> {
        let (record, proven) = self.fetch_group6(group, now).await?;
        self.admit(group.into(), proven.inception, None)?;
        Ok((record, proven.ttl, proven.expires))
    }

    async fn fetch_group6(
        &self,
        group: Ipv6Addr,
        now: Timestamp,
    ) -> Result<(GroupRecord6, ProvenTxt), FetchError> {
        let name = names::group_name6(&self.config.anchor.zone, group);
        let proven = self.fetch_txt(&name, now).await?;
        let record = GroupRecord6::parse_txt_ipv6(&proven.strings)
            .map_err(|e| FetchError::Record(e.to_string()))?;
        if record.group != group {
            return Err(FetchError::Record(format!(
                "record is for {}, asked for {group}",
                record.group
            )));
        }
        Ok((record, proven))
    }

    /// Asks the server for `group`'s record and DNSKEYs, validates both, and parses the record.
    /// `now` is wall-clock time.
    pub async fn fetch(
        &self,
        group: Ipv4Addr,
        now: Timestamp,
    ) -> Result<(GroupRecord, u32, u64), FetchError> {
        let (record, proven) = self.fetch_group(group, now).await?;
        self.admit(group.into(), proven.inception, None)?;
        Ok((record, proven.ttl, proven.expires))
    }

    /// The rollback check of a validated answer for `group` signed at `inception`: refused if
    /// older than the group's mark (or `cached`), else the mark rises to it, on disk before the
    /// record is relied on. A mark that cannot be written is logged and the record used all the
    /// same: it holds in memory, and the write is tried again with the next raise.
    fn admit(&self, group: IpAddr, inception: u64, cached: Option<u64>) -> Result<(), FetchError> {
        let key = MarkKey::new(&self.config.anchor, group);
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(newest) = marks.get(key).max(cached).filter(|&c| inception < c) {
            return Err(FetchError::Rollback {
                offered: inception,
                cached: newest,
            });
        }
        if let Err(e) = marks.raise(key, inception) {
            tracing::warn!(%group, "{e}");
        }
        Ok(())
    }

    async fn fetch_group(
        &self,
        group: Ipv4Addr,
        now: Timestamp,
    ) -> Result<(GroupRecord, ProvenTxt), FetchError> {
        let name = names::group_name(&self.config.anchor.zone, group);
        let proven = self.fetch_txt(&name, now).await?;
        let record = GroupRecord::parse_txt(&proven.strings)
            .map_err(|e| FetchError::Record(e.to_string()))?;
        if record.group != group {
            return Err(FetchError::Record(format!(
                "record is for {}, asked for {group}",
                record.group
            )));
        }
        Ok((record, proven))
    }

    /// Looks up the certificate published for member key `member` (SPEC.md §8.7) and
    /// DNSSEC-validates the answer; returns it with the TTL and signature expiry. Not cached:
    /// members carry their certificates in joins, and this lookup serves admins and servers
    /// that fetch their own. The certificate is still unverified: check it against the group key.
    pub async fn fetch_certificate(
        &self,
        member: KeyId,
        now: Timestamp,
    ) -> Result<(CertRecord, u32, u64), FetchError> {
        let name = names::member_name(&self.config.anchor.zone, member);
        let ProvenTxt {
            strings,
            ttl,
            expires,
            ..
        } = self.fetch_txt(&name, now).await?;
        let record =
            CertRecord::parse_txt(&strings).map_err(|e| FetchError::Record(e.to_string()))?;
        if record.member_key_id() != member {
            return Err(FetchError::Record(format!(
                "certificate is for member key {}, asked for {member}",
                record.member_key_id()
            )));
        }
        Ok((record, ttl, expires))
    }

    /// Fetches `group` now and caches the outcome. On failure the cached entry is kept (it is
    /// served until it expires) and the error returned. A denial evicts nothing: it is not
    /// proven, so it counts as no answer while validated keys are cached; and a validated
    /// record signed before the cached one is refused ([`FetchError::Rollback`]).
    pub async fn refresh(&self, group: Ipv4Addr, now: Timestamp) -> Result<(), FetchError> {
        self.refresh_group(group.into(), now).await
    }

    /// [`refresh`](KeystoreClient::refresh) for an IPv6 group (at its nibble name).
    pub async fn refresh6(&self, group: Ipv6Addr, now: Timestamp) -> Result<(), FetchError> {
        self.refresh_group(group.into(), now).await
    }

    async fn refresh_group(&self, group: IpAddr, now: Timestamp) -> Result<(), FetchError> {
        let result = match group {
            IpAddr::V4(g) => self.fetch_group(g, now).await.map(|(record, proven)| {
                let keys = Arc::new(record.to_group_keys());
                (Cached::V4 { keys, record }, proven)
            }),
            IpAddr::V6(g) => self.fetch_group6(g, now).await.map(|(record, proven)| {
                let keys = Arc::new(record.to_group_keys6());
                let record = Arc::new(record);
                (Cached::V6 { keys, record }, proven)
            }),
        };
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let cached_inception = match cache.get(&group) {
            Some(Entry::Keys { inception, .. }) => Some(*inception),
            _ => None,
        };
        match result {
            Ok((cached, proven)) => {
                self.admit(group, proven.inception, cached_inception)?;
                let ttl = Duration::from_secs(u64::from(proven.ttl.max(1)));
                let expires_at = Timestamp::from_secs(proven.expires)
                    .min(cached.validity().1)
                    .min(now.saturating_add(ttl + self.config.max_stale));
                cache.insert(
                    group,
                    Entry::Keys {
                        cached,
                        refresh_at: now.saturating_add(ttl),
                        expires_at,
                        inception: proven.inception,
                    },
                );
                Ok(())
            }
            Err(FetchError::NoRecord) => {
                let retry_at = now.saturating_add(Duration::from_secs(30));
                match cache.get_mut(&group) {
                    // Validated keys stay until they expire, as when the server is silent.
                    Some(Entry::Keys { refresh_at, .. }) => *refresh_at = retry_at,
                    _ => {
                        cache.insert(
                            group,
                            Entry::Absent {
                                refresh_at: retry_at,
                            },
                        );
                    }
                }
                Err(FetchError::NoRecord)
            }
            Err(e) => Err(e),
        }
    }

    /// Registers `group` so that the refresher fetches it.
    pub fn watch(&self, group: Ipv4Addr) {
        self.watch_group(group.into());
    }

    /// Registers IPv6 `group` so that the refresher fetches it (at its nibble name).
    pub fn watch6(&self, group: Ipv6Addr) {
        self.watch_group(group.into());
    }

    fn watch_group(&self, group: IpAddr) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.entry(group).or_insert(Entry::Absent {
            refresh_at: Timestamp(0),
        });
    }

    /// Refreshes every watched group whose TTL has run out or whose retry is due, once.
    pub async fn refresh_due(&self, now: Timestamp) {
        self.round(&RetryPolicy::new(DEFAULT_REFRESH), now, Instant::now())
            .await;
    }

    /// One refresh round: fetches the watched groups the schedule allows at `now` (wall clock,
    /// for TTLs and validation) and `mono` (the retry schedule), and returns how long until the
    /// next one is due, at most `policy.max`. The keystore not answering ends the round: the
    /// other due groups count as failed too, so one round waits at most one query timeout.
    async fn round(&self, policy: &RetryPolicy, now: Timestamp, mono: Instant) -> Duration {
        let missed = self.missed.swap(false, Ordering::Relaxed);
        let due: Vec<(IpAddr, bool)> = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            let mut retries = self.retries.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .iter()
                .filter_map(|(group, entry)| {
                    let usable = entry.usable(now);
                    let retry = retries.entry(*group).or_default();
                    retry
                        .may_fetch(policy, mono, usable, entry.ttl_due(now), missed)
                        .then_some((*group, usable))
                })
                .collect()
        };
        let mut unreachable = false;
        for (group, usable_before) in due {
            let outcome = if unreachable {
                None
            } else {
                Some(self.refresh_group(group, now).await)
            };
            let at = Instant::now();
            let usable = self.usable(group, now).unwrap_or(usable_before);
            let mut retries = self.retries.lock().unwrap_or_else(|e| e.into_inner());
            let retry = retries.entry(group).or_default();
            match outcome {
                Some(Ok(()) | Err(FetchError::NoRecord)) => retry.answered(at),
                Some(Err(e)) => {
                    unreachable = matches!(e, FetchError::Unreachable(_));
                    retry.failed(policy, at, usable, jitter());
                    // Warn at the 1st, 2nd, 4th, 8th... failure in a row, not every 250 ms.
                    if retry.failures().is_power_of_two() {
                        tracing::warn!(
                            %group,
                            failures = retry.failures(),
                            "keystore refresh failed: {e}"
                        );
                    }
                }
                None => retry.failed(policy, at, usable, jitter()),
            }
        }
        self.next_wait(policy, daemon_kit::wall_clock(), Instant::now())
    }

    /// Would a lookup of `group` at `now` get keys? Unlike a lookup through [`KeySource`], a
    /// `false` here does not wake the refresher (for status pages and tests).
    pub fn has_usable_keys(&self, group: Ipv4Addr, now: Timestamp) -> bool {
        self.usable(group.into(), now).unwrap_or(false)
    }

    /// Would a lookup of `group` at `now` get keys? `None` if the group is not watched.
    fn usable(&self, group: IpAddr, now: Timestamp) -> Option<bool> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.get(&group).map(|e| e.usable(now))
    }

    /// How long the refresher may sleep: until the earliest retry or TTL among watched groups.
    fn next_wait(&self, policy: &RetryPolicy, now: Timestamp, mono: Instant) -> Duration {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let retries = self.retries.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .iter()
            .map(|(group, entry)| {
                match retries
                    .get(group)
                    .and_then(|r| r.due_at(policy, entry.usable(now)))
                {
                    Some(at) => at.saturating_duration_since(mono),
                    None => entry.ttl_wait(now),
                }
            })
            .min()
            .unwrap_or(policy.max)
            .clamp(MIN_WAIT, policy.max.max(MIN_WAIT))
    }

    /// Runs refresh rounds with the wall clock: when the TTLs and the retry schedule for
    /// `every` (the refresh interval) say so, at least every `every`, and soon after a lookup
    /// misses (at most one early round per 250 ms).
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let policy = RetryPolicy::new(every);
        tokio::spawn(async move {
            loop {
                let wait = me
                    .round(&policy, daemon_kit::wall_clock(), Instant::now())
                    .await;
                // A flood of misses wakes the refresher at most once per `min_gap`.
                let quiet = policy.min_gap.min(wait);
                tokio::time::sleep(quiet).await;
                tokio::select! {
                    () = tokio::time::sleep(wait - quiet) => {}
                    () = me.wake.notified() => {}
                }
            }
        })
    }
}

/// A draw in [0, 1) for the retry jitter; it need not be unpredictable, only differ between
/// routers and rounds.
fn jitter() -> f64 {
    (rand_id() as f64) / 65_536.0
}

impl KeystoreClient {
    /// The cached entry of `group` as a lookup at `now` sees it: the record if it is usable,
    /// else why not. A watched group without usable keys wakes the refresher (its rate limit
    /// decides); groups nobody watches are never fetched.
    fn lookup(&self, group: IpAddr, now: Timestamp) -> Result<Cached, KeyLookupError> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let watched = cache.contains_key(&group);
        let result = match cache.get(&group) {
            Some(Entry::Keys {
                cached, expires_at, ..
            }) => {
                if now > *expires_at {
                    Err(KeyLookupError::Unavailable(format!(
                        "cached keys expired at {expires_at} and the keystore has not answered since"
                    )))
                } else if !cached.valid_at(now) {
                    let (from, to) = cached.validity();
                    Err(KeyLookupError::Invalid(format!(
                        "record valid {from} to {to}"
                    )))
                } else {
                    Ok(cached.clone())
                }
            }
            Some(Entry::Absent { refresh_at }) if refresh_at.0 > 0 => {
                Err(KeyLookupError::UnknownGroup)
            }
            _ => Err(KeyLookupError::Unavailable(
                "no validated keys for the group yet".into(),
            )),
        };
        if matches!(result, Err(KeyLookupError::Unavailable(_))) && watched {
            self.missed.store(true, Ordering::Relaxed);
            self.wake.notify_one();
        }
        result
    }

    /// IPv6 `group`'s validated record from the cache, by the rules of [`KeySource`]'s lookup
    /// for IPv4 groups: served until it expires, then `Unavailable` (fail closed); a watched
    /// group without one wakes the refresher. Memory only.
    pub fn record6(
        &self,
        group: Ipv6Addr,
        now: Timestamp,
    ) -> Result<Arc<GroupRecord6>, KeyLookupError> {
        match self.lookup(group.into(), now)? {
            Cached::V6 { record, .. } => Ok(record),
            Cached::V4 { .. } => Err(KeyLookupError::UnknownGroup),
        }
    }
}

impl KeySource for KeystoreClient {
    fn group_keys(
        &self,
        group: Ipv4Addr,
        now: Timestamp,
    ) -> Result<Arc<GroupKeys>, KeyLookupError> {
        match self.lookup(group.into(), now)? {
            Cached::V4 { keys, .. } => Ok(keys),
            Cached::V6 { .. } => Err(KeyLookupError::UnknownGroup),
        }
    }
}

/// The MLDv2 path's keys (issue 15): IPv6 groups by the same lookup, from memory.
impl KeySource6 for KeystoreClient {
    fn group_keys6(
        &self,
        group: Ipv6Addr,
        now: Timestamp,
    ) -> Result<Arc<GroupKeys6>, KeyLookupError> {
        match self.lookup(group.into(), now)? {
            Cached::V6 { keys, .. } => Ok(keys),
            Cached::V4 { .. } => Err(KeyLookupError::UnknownGroup),
        }
    }
}
