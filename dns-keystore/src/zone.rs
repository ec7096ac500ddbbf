//! The served zone and its durability (SPEC.md §8.8). An update is applied to a copy of the
//! zone, the copy is signed, its records are written to the snapshot file and synced, and only
//! then is the copy swapped in and the update answered NOERROR: readers see the zone before or
//! after an update, whole and signed, and a crash leaves the snapshot before or after it.
//!
//! hickory-server does the RFC 2136 work (prerequisites, prescan, applying the update section,
//! NSEC and RRSIGs) on a journal-less `SqliteZoneHandler`; its sqlite journal, which writes
//! one update as several separate transactions, is not used (read once to migrate, below).

use crate::metrics::Metrics;
use crate::snapshot::{self, WriteError};
use crate::state::{State, StateError, LEGACY_JOURNAL_FILE, ZONE_STATE_FILE};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType, TSigResponseContext, TSigner};
use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::server::{Request, RequestInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::store::sqlite::{Journal, SqliteZoneHandler};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, DnssecZoneHandler as _, LookupControlFlow, LookupError, LookupOptions,
    Nsec3QueryInfo, UpdateRequest as _, ZoneHandler, ZoneTransfer, ZoneType,
};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::{error, info, warn};

type Zone = SqliteZoneHandler<TokioRuntimeProvider>;

/// Why the zone could not be opened, signed or kept durable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// The state directory is damaged or unreadable: the operator's files are at fault.
    #[error(transparent)]
    State(#[from] StateError),
    /// hickory could not build or sign the zone from records that passed our checks: a bug.
    #[error("zone: {0}")]
    Build(String),
    /// The snapshot replaced the old one but the directory could not be synced, so whether it
    /// survives a crash is unknown: the daemon stops rather than answer more updates.
    #[error("state {path}: cannot sync the state directory after an update: {source}")]
    Unsynced {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The keystore's one zone, as hickory's catalog serves it.
pub struct DurableZone {
    origin: LowerName,
    name: Name,
    nx_proof: NxProofKind,
    /// The zone being served; replaced whole, never changed in place.
    served: RwLock<Arc<Zone>>,
    /// Held across an update or a re-signing: one writer at a time.
    writer: tokio::sync::Mutex<()>,
    state: Arc<State>,
    validity: Duration,
    tsig: Vec<TSigner>,
    metrics: Arc<Metrics>,
    /// Set when durability is in doubt; further updates are refused until a restart.
    stopped: AtomicBool,
    fatal: tokio::sync::watch::Sender<Option<Arc<ZoneError>>>,
}

impl std::fmt::Debug for DurableZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableZone")
            .field("origin", &self.origin)
            .field("dir", &self.state.dir)
            .finish_non_exhaustive()
    }
}

/// The records a snapshot holds: everything but what signing makes.
async fn content(zone: &Zone) -> Vec<Record> {
    zone.records()
        .await
        .values()
        .filter(|set| !snapshot::is_derived(set.record_type()))
        .flat_map(|set| set.records_without_rrsigs().cloned())
        .collect()
}

fn soa_serial(origin: &Name, records: &[Record]) -> Option<u32> {
    records.iter().find_map(|r| match &r.data {
        RData::SOA(soa) if &r.name == origin => Some(soa.serial),
        _ => None,
    })
}

/// An unsigned zone holding `records` and the zone key. Refuses records without an SOA at the
/// apex or outside the zone: such a zone is never served.
async fn unsigned(
    origin: &Name,
    records: Vec<Record>,
    state: &State,
    validity: Duration,
) -> Result<Zone, String> {
    let serial = soa_serial(origin, &records).ok_or("no SOA record at the zone apex")?;
    let lower = LowerName::from(origin);
    let mut memory = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
        Some(NxProofKind::Nsec),
    );
    for record in records {
        if !lower.zone_of(&LowerName::from(&record.name)) {
            return Err(format!("{} is outside the zone", record.name));
        }
        let what = format!("{} {}", record.name, record.record_type());
        if !memory.upsert_mut(record, serial) {
            return Err(format!("{what} conflicts with the zone"));
        }
    }
    let zone = SqliteZoneHandler::new(memory, AxfrPolicy::Deny, true, true);
    let signer = state.signer(validity).map_err(|e| e.to_string())?;
    zone.add_zone_signing_key(signer)
        .await
        .map_err(|e| format!("adding the zone key: {e}"))?;
    Ok(zone)
}

async fn signed(
    origin: &Name,
    records: Vec<Record>,
    state: &State,
    validity: Duration,
) -> Result<Zone, String> {
    let zone = unsigned(origin, records, state, validity).await?;
    zone.secure_zone()
        .await
        .map_err(|e| format!("signing: {e}"))?;
    Ok(zone)
}

/// Reads the records of an earlier version's sqlite journal (the state before issue 17), once.
async fn read_legacy_journal(state: &State) -> Result<Vec<Record>, ZoneError> {
    let path = state.dir.join(LEGACY_JOURNAL_FILE);
    let invalid = |message: String| StateError::Invalid {
        path: path.clone(),
        message,
    };
    let journal = Journal::from_file(&path).map_err(|e| invalid(e.to_string()))?;
    let memory = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        state.zone.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
        Some(NxProofKind::Nsec),
    );
    let mut zone = SqliteZoneHandler::new(memory, AxfrPolicy::Deny, true, false);
    zone.recover_with_journal(&journal)
        .await
        .map_err(|e| invalid(format!("cannot migrate: {e}")))?;
    Ok(content(&zone).await)
}

impl DurableZone {
    /// Loads the snapshot (or migrates an earlier version's journal into one), checks it and
    /// signs it. A snapshot that is damaged, or holds no SOA, stops the start with one line.
    pub async fn open(
        state: Arc<State>,
        validity: Duration,
        tsig_key_name: &str,
        metrics: Arc<Metrics>,
    ) -> Result<DurableZone, ZoneError> {
        let name = state.zone.clone();
        let path = state.dir.join(ZONE_STATE_FILE);
        let damaged = |why: String| StateError::Invalid {
            path: path.clone(),
            message: format!("damaged: {why}; restore it from a backup"),
        };
        let records = if state.legacy_journal {
            let records = read_legacy_journal(&state).await?;
            let serial = soa_serial(&name, &records).ok_or_else(|| StateError::Invalid {
                path: state.dir.join(LEGACY_JOURNAL_FILE),
                message: "cannot migrate: no SOA record at the zone apex".into(),
            })?;
            let bytes = snapshot::encode(serial, &records).map_err(ZoneError::Build)?;
            snapshot::write_atomic(&state.dir, ZONE_STATE_FILE, &bytes, 0o600, false).map_err(
                |e| StateError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(e.io().kind(), e.to_string()),
                },
            )?;
            let old = state.dir.join(LEGACY_JOURNAL_FILE);
            let kept = state.dir.join(format!("{LEGACY_JOURNAL_FILE}.migrated"));
            if let Err(e) = std::fs::rename(&old, &kept) {
                warn!("migrated {}, but renaming it failed: {e}", old.display());
            }
            warn!(
                "migrated the zone from {} into {}; updates torn by a crash of the earlier \
                 version cannot be told apart",
                old.display(),
                path.display()
            );
            records
        } else {
            let bytes = std::fs::read(&path).map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
            snapshot::decode(&bytes)
                .map_err(|e| damaged(e.to_string()))?
                .1
        };
        let zone = signed(&name, records, &state, validity)
            .await
            .map_err(damaged)?;
        let key_name = Name::from_str(tsig_key_name).unwrap_or_else(|_| name.clone());
        let tsig = TSigner::new(
            state.tsig_key.clone(),
            hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
            key_name,
            300,
        )
        .map_err(|e| ZoneError::Build(format!("TSIG key: {e}")))?;
        info!(
            serial = zone.serial().await,
            "zone loaded from {}",
            path.display()
        );
        Ok(DurableZone {
            origin: LowerName::from(&name),
            name,
            nx_proof: NxProofKind::Nsec,
            served: RwLock::new(Arc::new(zone)),
            writer: tokio::sync::Mutex::new(()),
            state,
            validity,
            tsig: vec![tsig],
            metrics,
            stopped: AtomicBool::new(false),
            fatal: tokio::sync::watch::channel(None).0,
        })
    }

    fn current(&self) -> Arc<Zone> {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn swap(&self, zone: Zone) {
        *self.served.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(zone);
    }

    /// Resolves when durability is in doubt; the daemon then stops with the error.
    pub async fn failed(&self) -> Arc<ZoneError> {
        let mut rx = self.fatal.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Signs the served zone again (fresh RRSIGs), as a new copy swapped in whole.
    pub async fn resign(&self) -> Result<(), String> {
        let _writer = self.writer.lock().await;
        let records = content(&self.current()).await;
        let zone = signed(&self.name, records, &self.state, self.validity).await?;
        self.swap(zone);
        Ok(())
    }

    /// RFC 8945 §5.2 checks, as hickory's sqlite handler makes them (key name, MAC, time).
    fn authorize(
        &self,
        request: &Request,
        now: u64,
    ) -> (Result<(), ResponseCode>, Option<TSigResponseContext>) {
        let Some(tsig) = request.signature() else {
            warn!("unsigned update refused");
            return (Err(ResponseCode::Refused), None);
        };
        let id = request.metadata.id;
        let Some(signer) = self.tsig.iter().find(|s| s.signer_name() == &tsig.name) else {
            warn!("no TSIG key name matched: id {id}");
            let context = TSigResponseContext::unknown_key(id, now, tsig.name.clone());
            return (Err(ResponseCode::NotAuth), Some(context));
        };
        let Ok((_, _, range)) = signer.verify_message_byte(request.as_slice(), None, true) else {
            warn!("invalid TSIG signature: id {id}");
            let context = TSigResponseContext::bad_signature(id, now, signer.clone());
            return (Err(ResponseCode::NotAuth), Some(context));
        };
        let (result, error) = if range.contains(&now) {
            (Ok(()), None)
        } else {
            warn!("expired TSIG signature: id {id}");
            (Err(ResponseCode::NotAuth), Some(TsigError::BadTime))
        };
        let context =
            TSigResponseContext::new(id, now, signer.clone(), tsig.data.mac.clone(), error);
        (result, Some(context))
    }

    /// Applies an authorised update to a copy, makes the copy's records durable, swaps it in.
    async fn apply(&self, request: &Request) -> Result<bool, ResponseCode> {
        let current = self.current();
        current
            .verify_prerequisites(request.prerequisites())
            .await?;
        current.pre_scan(request.updates()).await?;
        let records = content(&current).await;
        let next = unsigned(&self.name, records, &self.state, self.validity)
            .await
            .map_err(|e| {
                error!("update not applied: rebuilding the zone: {e}");
                ResponseCode::ServFail
            })?;
        // Applies the update section and signs the copy (NSEC, serial + 1, RRSIGs).
        if !next.update_records(request.updates(), true).await? {
            return Ok(false);
        }
        let records = content(&next).await;
        let Some(serial) = soa_serial(&self.name, &records) else {
            error!("update not applied: it would leave the zone without an SOA");
            return Err(ResponseCode::ServFail);
        };
        let bytes = snapshot::encode(serial, &records).map_err(|e| {
            error!("update not applied: encoding the snapshot: {e}");
            ResponseCode::ServFail
        })?;
        let dir = self.state.dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            snapshot::write_atomic(&dir, ZONE_STATE_FILE, &bytes, 0o600, true)
        })
        .await;
        let path = self.state.dir.join(ZONE_STATE_FILE);
        match written {
            Ok(Ok(())) => {
                self.swap(next);
                Ok(true)
            }
            Ok(Err(WriteError::NotWritten(e))) => {
                Metrics::inc(&self.metrics.state_write_failures);
                error!(
                    "update not applied, zone unchanged: writing {}: {e}",
                    path.display()
                );
                Err(ResponseCode::ServFail)
            }
            Ok(Err(WriteError::Unsynced(source))) => {
                Metrics::inc(&self.metrics.state_write_failures);
                self.stopped.store(true, Ordering::SeqCst);
                let e = ZoneError::Unsynced { path, source };
                error!("{e}; stopping");
                self.fatal.send_replace(Some(Arc::new(e)));
                Err(ResponseCode::ServFail)
            }
            Err(e) => {
                error!("update not applied: the writer task failed: {e}");
                Err(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl ZoneHandler for DurableZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    /// RFC 2136 §3: authorise (TSIG), then apply all of the update or none of it (§3.4), and
    /// answer NOERROR only once the new zone is on disk.
    async fn update(
        &self,
        request: &Request,
        now: u64,
    ) -> (Result<bool, ResponseCode>, Option<TSigResponseContext>) {
        let (authorized, signer) = self.authorize(request, now);
        if let Err(code) = authorized {
            return (Err(code), signer);
        }
        let _writer = self.writer.lock().await;
        if self.stopped.load(Ordering::SeqCst) {
            return (Err(ResponseCode::ServFail), signer);
        }
        (self.apply(request).await, signer)
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.current()
            .lookup(name, rtype, request_info, lookup_options)
            .await
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        self.current().search(request, lookup_options).await
    }

    async fn nsec_records(
        &self,
        name: &LowerName,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.current().nsec_records(name, lookup_options).await
    }

    async fn nsec3_records(
        &self,
        info: Nsec3QueryInfo<'_>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.current().nsec3_records(info, lookup_options).await
    }

    async fn zone_transfer(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
        now: u64,
    ) -> Option<(
        Result<ZoneTransfer, LookupError>,
        Option<TSigResponseContext>,
    )> {
        self.current()
            .zone_transfer(request, lookup_options, now)
            .await
    }

    fn nx_proof_kind(&self) -> Option<&NxProofKind> {
        Some(&self.nx_proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use hickory_proto::rr::rdata::A;
    use hickory_server::store::sqlite::SqliteConfig;
    use std::net::Ipv4Addr;

    async fn present(zone: &Zone, name: &str) -> bool {
        let name = LowerName::from(Name::from_ascii(name).expect("name"));
        !zone
            .lookup(&name, RecordType::A, None, LookupOptions::default())
            .await
            .unwrap_or_default()
            .was_empty()
    }

    #[tokio::test]
    async fn an_earlier_versions_journal_is_migrated_once() {
        let dir = std::env::temp_dir().join(format!("dns-keystore-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let config = Config::parse(&format!(
            "zone = \"groups.manycast.test\"\nstate_dir = \"{}\"\n",
            dir.display()
        ))
        .expect("config");
        // What the earlier version left: its zone file loaded into hickory's journal, then an
        // update journalled.
        std::fs::write(
            dir.join("zone.db"),
            "$ORIGIN groups.manycast.test.\n@ 3600 IN SOA ns hostmaster 1 3600 600 86400 300\n\
             @ 3600 IN NS ns\nns 3600 IN A 127.0.0.1\n",
        )
        .expect("zone file");
        let origin = Name::from_ascii("groups.manycast.test.").expect("zone");
        let old = Zone::try_from_config(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            false,
            Some(&dir),
            &SqliteConfig {
                zone_path: "zone.db".into(),
                journal_path: LEGACY_JOURNAL_FILE.into(),
                allow_update: true,
                tsig_keys: vec![],
            },
            Some(NxProofKind::Nsec),
        )
        .await
        .expect("earlier version's zone");
        let added = Record::from_rdata(
            Name::from_ascii("x.groups.manycast.test.").expect("name"),
            300,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        );
        assert!(old.update_records(&[added], true).await.expect("update"));
        drop(old);

        let validity = Duration::from_secs(86_400);
        let metrics = Arc::new(Metrics::default());
        let state = State::open_or_create(&config).expect("state");
        assert!(state.legacy_journal);
        let zone = DurableZone::open(Arc::new(state), validity, "k", metrics.clone())
            .await
            .expect("migrates");
        assert!(present(&zone.current(), "x.groups.manycast.test.").await);
        assert!(dir.join(ZONE_STATE_FILE).exists());
        assert!(!dir.join(LEGACY_JOURNAL_FILE).exists());
        assert!(dir.join("zone.jrnl.migrated").exists());

        // The next start reads the snapshot.
        let state = State::open_or_create(&config).expect("state");
        assert!(!state.legacy_journal);
        let zone = DurableZone::open(Arc::new(state), validity, "k", metrics)
            .await
            .expect("reopens");
        assert!(present(&zone.current(), "x.groups.manycast.test.").await);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
