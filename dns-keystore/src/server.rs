//! The keystore daemon: the durable zone ([`crate::zone`]), signed online with the Ed25519 zone
//! key, behind a guard that rate-limits each source, screens updates (size, record syntax)
//! before their TSIG is checked, and counts everything.

use crate::cert_record::CertRecord;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::names;
use crate::record::AnyGroupRecord;
use crate::state::{State, StateError};
use crate::zone::{DurableZone, ZoneError};
use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::Catalog;
use hickory_server::Server;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Zone(#[from] ZoneError),
    /// Durability was in doubt while serving (see [`ZoneError::Unsynced`]).
    #[error("{0}")]
    Stopped(Arc<ZoneError>),
    #[error("listen {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Per-source token buckets. Bounded: when full, the table is cleared (a flood from many
/// sources then costs the limiter memory, never the zone).
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

const MAX_TRACKED_SOURCES: usize = 65_536;

impl RateLimiter {
    fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if self.buckets.len() >= MAX_TRACKED_SOURCES && !self.buckets.contains_key(&src) {
            self.buckets.clear();
        }
        let rate = self.rate;
        let (tokens, last) = self.buckets.entry(src).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The request handler hickory's server calls: guard, then the catalog.
struct Guard {
    catalog: Catalog,
    zone: Name,
    metrics: Arc<Metrics>,
    limiter: Mutex<RateLimiter>,
    max_update_records: usize,
}

fn not_sent(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

impl Guard {
    /// Checks every record an update adds: a TXT under `m.<zone>` must be a certificate
    /// record at its member key id's name (SPEC.md §8.7), any other TXT a group record at one
    /// of its two names (SPEC.md §8.2). Deletions are not screened. Certificates are parsed,
    /// not verified: the server does not hold the group's trust decisions, the verifier does.
    fn screen_update(&self, request: &Request) -> Result<(), &'static str> {
        let updates = &request.authorities;
        if updates.len() > self.max_update_records {
            return Err("oversized");
        }
        for rr in updates {
            if rr.dns_class != DNSClass::IN || rr.record_type() != RecordType::TXT {
                continue;
            }
            let RData::TXT(txt) = &rr.data else {
                return Err("bad-record");
            };
            let name = rr.name.to_lowercase();
            if names::is_member_name(&self.zone, &name) {
                let record = CertRecord::parse_txt(&txt.txt_data).map_err(|_| "bad-record")?;
                if name != names::member_name(&self.zone, record.member_key_id()) {
                    return Err("bad-record");
                }
                continue;
            }
            let record = AnyGroupRecord::parse_txt(&txt.txt_data).map_err(|_| "bad-record")?;
            let at_group = names::group_address_name(&self.zone, record.group());
            let at_service =
                names::service_name(&self.zone, record.name()).map_err(|_| "bad-record")?;
            if name != at_group && name != at_service {
                return Err("bad-record");
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl RequestHandler for Guard {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let src = request.src().ip();
        let allowed = self
            .limiter
            .lock()
            .map(|mut l| l.allow(src, Instant::now()))
            .unwrap_or(true);
        if !allowed {
            Metrics::inc(&self.metrics.rate_limited);
            // Dropped without an answer: answering a flood would amplify it.
            return not_sent(request, ResponseCode::Refused);
        }
        if request.metadata.op_code == OpCode::Update {
            Metrics::inc(&self.metrics.updates);
            if let Err(why) = self.screen_update(request) {
                let counter = match why {
                    "oversized" => &self.metrics.updates_oversized,
                    _ => &self.metrics.updates_bad_record,
                };
                Metrics::inc(counter);
                warn!(src = %request.src(), reason = why, "update refused before TSIG check");
                return refuse(request, response_handle).await;
            }
            let info = self
                .catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
            if info.response_code == ResponseCode::NoError {
                Metrics::inc(&self.metrics.updates_applied);
                info!(src = %request.src(), "update applied");
            } else {
                Metrics::inc(&self.metrics.updates_refused);
                warn!(src = %request.src(), code = %info.response_code, "update refused");
            }
            return info;
        }
        Metrics::inc(&self.metrics.queries);
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

async fn refuse<R: ResponseHandler>(request: &Request, mut response_handle: R) -> ResponseInfo {
    let response =
        hickory_server::zone_handler::MessageResponseBuilder::new(&request.queries, None)
            .error_msg(&request.metadata, ResponseCode::Refused);
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(_) => not_sent(request, ResponseCode::Refused),
    }
}

/// Opens the state directory and the journalled zone, signs it, and serves until `shutdown`
/// completes; then stops cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let state = Arc::new(State::open_or_create(&config)?);
    let origin = state.zone.clone();
    let metrics = Arc::new(Metrics::default());
    let handler = Arc::new(
        DurableZone::open(
            state,
            config.signature_validity(),
            &config.tsig_key_name,
            metrics.clone(),
        )
        .await?,
    );
    Metrics::inc(&metrics.zone_signed);
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::from(&origin), vec![handler.clone()]);
    let guard = Guard {
        catalog,
        zone: origin.clone(),
        metrics: metrics.clone(),
        limiter: Mutex::new(RateLimiter {
            rate: f64::from(config.rate_limit_qps),
            buckets: HashMap::new(),
        }),
        max_update_records: config.max_update_records,
    };

    let udp = tokio::net::UdpSocket::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.listen,
            source,
        })?;
    let tcp = tokio::net::TcpListener::bind(udp.local_addr().unwrap_or(config.listen))
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.listen,
            source,
        })?;
    let bound = udp.local_addr().unwrap_or(config.listen);
    let mut server = Server::new(guard);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    info!(zone = %origin, listen = %bound, "dns-keystore serving");

    // Signatures expire: re-sign every quarter of their validity.
    let resign = {
        let handler = handler.clone();
        let metrics = metrics.clone();
        let every = config.signature_validity() / 4;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match handler.resign().await {
                    Ok(()) => Metrics::inc(&metrics.zone_signed),
                    Err(e) => warn!("re-signing the zone failed: {e}"),
                }
            }
        })
    };
    let metrics_writer = {
        let metrics = metrics.clone();
        let path = config.metrics_path();
        let every = Duration::from_secs(config.metrics_interval);
        tokio::spawn(async move {
            loop {
                if let Err(e) = tokio::fs::write(&path, metrics.render()).await {
                    warn!("writing metrics to {}: {e}", path.display());
                }
                tokio::time::sleep(every).await;
            }
        })
    };

    let failed = tokio::select! {
        () = shutdown => None,
        e = handler.failed() => Some(e),
    };
    info!("shutting down");
    resign.abort();
    metrics_writer.abort();
    let _ = std::fs::write(config.metrics_path(), metrics.render());
    if let Err(e) = server.shutdown_gracefully().await {
        warn!("shutdown: {e}");
    }
    match failed {
        None => Ok(()),
        Some(e) => Err(DaemonError::Stopped(e)),
    }
}
