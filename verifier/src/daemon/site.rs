//! The site agent's I/O (SPEC.md §10.8): the upper control group runs on control-channel's
//! driver (its own thread) on the upstream interface, and the upstream joins go out on a raw
//! IGMP socket bound to that interface. The decisions are [`SiteAgent`]'s; this task feeds it
//! the upper group's committed allocation and the service group's steering (published by the
//! main loop after every change), applies its weight to the endpoint and sends its joins.

use crate::config::{Config, SiteSection};
use crate::core::site::{SiteAgent, SteeredClaim, UpperView, UpstreamClaim};
use crate::core::Router;
use crate::keys::Keys;
use crate::status::SiteStatus;
use control_channel::driver::{self, DriverHandle, SocketConfig};
use control_channel::{Endpoint, Identity};
use daemon_kit::keys::{read_certificate, read_private_key};
use igmp_ext::ed25519_dalek::{SigningKey, VerifyingKey};
use igmp_ext::join::{build_datagram, build_signed_report, MAX_STANDBY_BITS};
use igmp_ext::wire::record::RecordType;
use igmp_ext::{JoinClaims, MemberCertificate, SiteId, SliceEntry};
use socket2::Socket;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

/// How often the agent looks at the upper group besides its events (a peer's certificate, a
/// commit it learnt of without an event).
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Why the site agent could not start; one line for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiteError {
    #[error("site: {0}")]
    Keys(#[from] daemon_kit::keys::KeyFileError),
    #[error("site: {cert}: {why}")]
    Certificate { cert: String, why: String },
    #[error("site: {what}: {source}")]
    Os {
        what: String,
        source: std::io::Error,
    },
    #[error("site: upstream interface {0} has no IPv4 address")]
    NoAddress(String),
    #[error("site: the native data plane is the multicast routing socket (native.dataplane \"auto\" on a kernel with it): set \"nft\", only it hooks the upstream interface")]
    Dataplane,
}

fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SiteError {
    let what = what.into();
    move |source| SiteError::Os { what, source }
}

/// The router key and certificate, checked against each other, the group keys the verifier
/// has for the service group, and the groups the agent needs.
struct Credentials {
    key: SigningKey,
    cert: MemberCertificate,
    group_keys: Vec<VerifyingKey>,
    site: SiteId,
}

fn credentials(s: &SiteSection, keys: &Keys) -> Result<Credentials, SiteError> {
    let key = read_private_key(&s.router_key)?;
    let unverified = read_certificate(&s.router_certificate)?;
    let bad = |why: String| SiteError::Certificate {
        cert: s.router_certificate.display().to_string(),
        why,
    };
    let now = daemon_kit::wall_clock();
    let group_keys: Vec<VerifyingKey> = keys
        .source()
        .group_keys(s.group, now)
        .map_err(|e| bad(format!("no group key for {}: {e}", s.group)))?
        .keys
        .iter()
        .map(|k| k.key)
        .collect();
    let mut refusals = Vec::new();
    let cert = group_keys
        .iter()
        .find_map(|k| match unverified.clone().verify(k, now) {
            Ok(c) => Some(c),
            Err(e) => {
                refusals.push(e.to_string());
                None
            }
        })
        .ok_or_else(|| {
            bad(format!(
                "not issued by a group key of {} valid now ({})",
                s.group,
                refusals.join("; ")
            ))
        })?;
    let body = cert.body();
    if body.member_key != key.verifying_key() {
        return Err(bad(format!(
            "certifies another key than {}",
            s.router_key.display()
        )));
    }
    for (what, g) in [("group", s.group), ("upper_group", s.upper_group)] {
        if !body.groups.contains(&g) {
            return Err(bad(format!("does not allow {what} {g}")));
        }
    }
    let site = cert.site().ok_or_else(|| {
        bad("names no site: a member certificate; a router certificate (manycastctl cert issue --site N) is needed".into())
    })?;
    Ok(Credentials {
        key,
        cert,
        group_keys,
        site,
    })
}

/// `--check-config`: the router key and certificate as the agent will check them at start,
/// when the group keys are at hand (a key file; the keystore is asked only by the daemon).
pub fn check_credentials(cfg: &Config, keys: &Keys) -> Result<(), SiteError> {
    match (&cfg.site, keys) {
        (Some(s), Keys::File(_)) => credentials(s, keys).map(|_| ()),
        _ => Ok(()),
    }
}

/// The running site agent, as the main loop sees it.
#[derive(Debug)]
pub struct SiteHandle {
    group: Ipv4Addr,
    served: watch::Sender<Vec<SteeredClaim>>,
    status: Arc<Mutex<SiteStatus>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl SiteHandle {
    /// Reads and checks the credentials, hooks the upstream interface in the native data plane,
    /// and starts the upper group and the agent; `None` without `[site]`.
    pub fn start(cfg: &Config, keys: &Keys, core: &mut Router) -> Result<Option<Self>, SiteError> {
        let Some(s) = &cfg.site else {
            return Ok(None);
        };
        let creds = credentials(s, keys)?;
        let addr = daemon_kit::igmp::interface_addr(&s.upstream)
            .map_err(os("cannot list interfaces"))?
            .ok_or_else(|| SiteError::NoAddress(s.upstream.clone()))?;
        if !core.steer_also(s.upstream.clone()) {
            return Err(SiteError::Dataplane);
        }
        let upper = start_upper(s, addr, &creds)?;
        let igmp = daemon_kit::igmp::igmp_socket(&s.upstream, addr)
            .map_err(os(format!("raw IGMP socket on {}", s.upstream)))?;
        // Nothing is read from it (the upstream's IGMP is not ours): keep its queue small.
        let _ = igmp.get_ref().set_recv_buffer_size(0);
        let me = creds.cert.body().member_id;
        let agent = SiteAgent::new(s.agent_config(), me, creds.site);
        let (served, served_rx) = watch::channel(Vec::new());
        let status = Arc::new(Mutex::new(SiteStatus::default()));
        let (stop, stop_rx) = oneshot::channel();
        info!(site = creds.site.0, %me, upstream = %s.upstream, upper_group = %s.upper_group, "site agent running");
        let io = AgentIo {
            agent,
            upper,
            igmp,
            sender: addr,
            key: creds.key,
            cert: creds.cert,
            status: status.clone(),
            weight: None,
        };
        let task = tokio::spawn(io.run(served_rx, stop_rx));
        Ok(Some(SiteHandle {
            group: s.group,
            served,
            status,
            stop: Some(stop),
            task,
        }))
    }

    /// The main loop's view of the service group after a change: what the agent serves.
    pub fn publish(&self, core: &Router) {
        let claims = core.steered_claims(self.group);
        self.served.send_if_modified(|old| {
            let changed = *old != claims;
            if changed {
                *old = claims;
            }
            changed
        });
    }

    pub fn status(&self) -> SiteStatus {
        lock(&self.status).clone()
    }

    /// Sends the leave upstream and leaves the upper group.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
    }
}

fn lock(m: &Mutex<SiteStatus>) -> std::sync::MutexGuard<'_, SiteStatus> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The upper group's endpoint on the upstream interface, certified by the service group's
/// keys, held at weight 0 until the site has a live member.
fn start_upper(
    s: &SiteSection,
    addr: Ipv4Addr,
    creds: &Credentials,
) -> Result<DriverHandle, SiteError> {
    let socket = driver::bind(&SocketConfig::new(s.upper_group, s.upper_port, addr))
        .map_err(os("upper group socket"))?;
    let identity = Identity {
        key: creds.key.clone(),
        certificate: creds.cert.clone(),
    };
    let issuer = creds.cert.body().issuer;
    let group_key = creds
        .group_keys
        .iter()
        .copied()
        .find(|k| igmp_ext::KeyId::of(k) == issuer)
        .unwrap_or(creds.group_keys[0]);
    let now = driver::now();
    let mut endpoint = Endpoint::new(s.upper_config(), identity, group_key, now);
    if creds.group_keys.len() > 1 {
        endpoint.set_group_keys(&creds.group_keys);
    }
    endpoint.set_held(now, true);
    let group = SocketAddrV4::new(s.upper_group, s.upper_port);
    driver::spawn_thread(endpoint, socket, group).map_err(os("upper group driver"))
}

/// The agent's task: its core, the upper group's driver and the upstream socket.
struct AgentIo {
    agent: SiteAgent,
    upper: DriverHandle,
    igmp: AsyncFd<Socket>,
    sender: Ipv4Addr,
    key: SigningKey,
    cert: MemberCertificate,
    status: Arc<Mutex<SiteStatus>>,
    /// The weight last applied to the endpoint.
    weight: Option<u32>,
}

/// What the agent reads from the upper group's endpoint.
struct UpperSnapshot {
    view: Option<UpperView>,
    peers: Vec<u32>,
}

impl AgentIo {
    async fn run(
        mut self,
        mut served: watch::Receiver<Vec<SteeredClaim>>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let requester = self.upper.requester();
        let mut peers = Vec::new();
        loop {
            let now = daemon_kit::now().mono;
            let wait = self
                .agent
                .poll_timeout()
                .map_or(LOOK_EVERY, |t| t.saturating_duration_since(now))
                .min(LOOK_EVERY);
            tokio::select! {
                _ = &mut stop => break,
                r = served.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let claims = served.borrow_and_update().clone();
                    self.agent.handle_service(daemon_kit::now().mono, &claims);
                }
                e = self.upper.events.recv() => {
                    let Some((_, e)) = e else { break };
                    debug!(event = ?e, "site: upper group");
                }
                _ = tokio::time::sleep(wait) => {}
            }
            if let Some(snap) = snapshot(&requester, self.agent.me(), self.agent.site()).await {
                self.agent.handle_upper(daemon_kit::now().mono, snap.view);
                peers = snap.peers;
            }
            self.apply_weight();
            let now = daemon_kit::now();
            while let Some(claim) = self.agent.poll_join(now.mono) {
                self.send(&claim, now);
            }
            self.publish_status(&peers);
        }
        if let Some(leave) = self.agent.leave() {
            self.send(&leave, daemon_kit::now());
        }
        self.publish_status(&[]);
        // The driver stops once every requester is gone.
        drop(requester);
        self.upper.with(|ep, now| ep.leave(now));
        if let Err(e) = self.upper.stop().await {
            warn!(error = %e, "site: upper group driver");
        }
    }

    /// The endpoint announces the agent's weight: held at 0 while the site has no live member.
    fn apply_weight(&mut self) {
        let weight = self.agent.weight();
        if self.weight == Some(weight) {
            return;
        }
        self.weight = Some(weight);
        info!(weight, "site: weight announced in the upper group");
        self.upper
            .with(move |ep, now| ep.set_held(now, weight == 0));
    }

    /// Builds and sends one signed join (a leave when the claim is empty).
    fn send(&mut self, claim: &UpstreamClaim, now: igmp_ext::Clock) {
        let slicing = self.agent.config().slicing;
        let entries: Vec<SliceEntry> = (claim.units.iter().enumerate())
            .filter(|(_, u)| **u)
            .map(|(i, _)| SliceEntry::include(slicing.unit(i)))
            .collect();
        let as_units = !entries.is_empty() && u32::from(slicing.bits()) <= MAX_STANDBY_BITS;
        let claims = JoinClaims {
            group: self.agent.config().group,
            record_type: RecordType::ChangeToIncludeMode,
            entries,
            epoch: claim.epoch,
            timestamp: now.wall,
            nonce: daemon_kit::igmp::nonce(),
            standby: Vec::new(),
            liveness: Vec::new(),
            as_units,
        };
        let built = build_signed_report(&claims, self.sender, &self.cert, &self.key)
            .map(|igmp| build_datagram(self.sender, &igmp));
        match built {
            Ok(datagram) => match daemon_kit::igmp::send_report(&self.igmp, &datagram) {
                Ok(_) => debug!(
                    epoch = claim.epoch.0,
                    units = claim.unit_count(),
                    "site: upstream join sent"
                ),
                Err(e) => warn!(error = %e, "site: upstream join not sent"),
            },
            Err(e) => warn!(error = %e, "site: upstream join not built"),
        }
    }

    fn publish_status(&self, peers: &[u32]) {
        let count = |u: &[bool]| u.iter().filter(|u| **u).count() as u64;
        let mut s = lock(&self.status);
        *s = SiteStatus {
            site: self.agent.site().0,
            member: self.agent.me().0,
            upper_epoch: self.agent.upper_epoch(),
            own_units: count(&self.agent.own_units()),
            claim_units: self.agent.claim().map_or(0, |c| c.unit_count() as u64),
            scope_units: self.agent.scope().map_or(0, |s| count(&s.units)),
            weight: self.agent.weight(),
            peers: peers.to_vec(),
            upstream_joins_sent: self.agent.joins_sent(),
        };
    }
}

/// The upper group's committed allocation and live members. The endpoint does not tell a
/// peer's site (its certificate is kept inside): only our own site is known, so the scope is
/// our own units until the endpoint exposes peers' sites.
async fn snapshot(
    requester: &control_channel::driver::Requester,
    me: igmp_ext::MemberId,
    site: SiteId,
) -> Option<UpperSnapshot> {
    requester
        .query(move |ep, _| {
            let view = ep.committed().map(|c| UpperView {
                epoch: c.id().epoch,
                owners: c.allocation.unit_owners().to_vec(),
                sites: [(me, site)].into(),
            });
            let peers = ep.live_members().into_iter().map(|m| m.0).collect();
            UpperSnapshot { view, peers }
        })
        .await
}

#[cfg(test)]
#[path = "site_tests.rs"]
mod tests;
