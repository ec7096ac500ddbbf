//! The control-channel executor: starts the driver on the control socket and runs the node's
//! requests on the endpoint inside the driver task (`DriverHandle::with`), fetching what the
//! node needs back (the committed allocation, a transfer's acceptance, the counters).

use crate::credentials::Credentials;
use control_channel::driver::{self, DriverHandle, SocketConfig};
use control_channel::{CommittedAllocation, Counters, Endpoint, Identity, SendError};
use igmp_ext::ed25519_dalek::VerifyingKey;
use igmp_ext::{KeyId, MemberId};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use tracing::warn;

/// Binds the control socket on `interface` and starts the driver with a fresh endpoint that
/// accepts peers certified by our group key, or (keystore) by the published keys and not
/// revoked: `published` is the record's keys and revoked key ids.
pub fn start(
    config: &crate::config::Config,
    interface: Ipv4Addr,
    creds: &Credentials,
    published: Option<(&[VerifyingKey], &[KeyId])>,
) -> Result<DriverHandle, (&'static str, io::Error)> {
    let mut sockcfg = SocketConfig::new(config.control.group, config.control.port, interface);
    sockcfg.ttl = config.control.ttl;
    let socket = driver::bind(&sockcfg).map_err(|e| ("control socket", e))?;
    let identity = Identity {
        key: creds.key.clone(),
        certificate: creds.cert.clone(),
    };
    let mut endpoint = Endpoint::new(
        config.control_config(),
        identity,
        creds.group_key,
        driver::now(),
    );
    if let Some((keys, revoked)) = published {
        endpoint.set_published(driver::now(), keys, revoked);
    }
    // Health checks start down (SPEC.md §11.9): held at weight 0 from the first hello, so
    // that no allocation gives this member units before its checks rise.
    if !config.health.is_empty() {
        endpoint.set_held(driver::now(), true);
    }
    let group = SocketAddrV4::new(config.control.group, config.control.port);
    // Its own thread: a blocked main loop (kernel writes) must not hold back our heartbeats.
    driver::spawn_thread(endpoint, socket, group).map_err(|e| ("control driver", e))
}

/// Runs `f` on the endpoint and waits for its result; `None` if the driver stopped.
async fn query<T: Send + 'static>(
    handle: &DriverHandle,
    f: impl FnOnce(&mut Endpoint, control_channel::Clock) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.with(move |ep, now| {
        let _ = tx.send(f(ep, now));
    });
    rx.await.ok()
}

/// The control channel's counters.
pub async fn counters(handle: &DriverHandle) -> Option<Counters> {
    query(handle, |ep, _| ep.counters().clone()).await
}

/// The allocation the endpoint follows now.
pub async fn committed(handle: &DriverHandle) -> Option<CommittedAllocation> {
    query(handle, |ep, _| ep.committed().cloned())
        .await
        .flatten()
}

/// Starts a state transfer; the endpoint's refusal, or `None` if the driver stopped.
pub async fn send_state(
    handle: &DriverHandle,
    to: MemberId,
    transfer_id: u64,
    data: Vec<u8>,
) -> Option<Result<(), SendError>> {
    query(handle, move |ep, now| {
        ep.send_state(now, to, transfer_id, data)
    })
    .await
}

/// The node's actions that only set something on the endpoint.
pub fn on_endpoint(handle: &DriverHandle, action: crate::node::Action) {
    use crate::node::Action;
    match action {
        Action::AdvertiseDirectPath(addr) => {
            handle.with(move |ep, now| ep.advertise_direct_path(now, addr));
        }
        Action::SetLoad(report) => {
            handle.with(move |ep, _| ep.set_load(report));
        }
        Action::Drain => {
            handle.with(|ep, now| ep.drain(now));
        }
        Action::Hold(held) => {
            handle.with(move |ep, now| ep.set_held(now, held));
        }
        Action::SetScope(scope) => {
            handle.with(move |ep, now| {
                if let Err(e) = ep.set_scope(now, Some(scope)) {
                    warn!(error = %e, "the site scope handed down does not fit our slicing; ignored");
                }
            });
        }
        _ => {}
    }
}
