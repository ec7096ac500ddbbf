//! The control-channel executor: starts the driver on the control socket and runs the node's
//! requests on the endpoint inside the driver task (`DriverHandle::with`), fetching what the
//! node needs back (the committed allocation, a transfer's acceptance, the counters).

use super::DaemonError;
use crate::config::{Config, Mode, Strategy};
use crate::credentials::Credentials;
use control_channel::driver::{self, DriverHandle, SocketConfig, SocketConfig6};
use control_channel::{CommittedAllocation, Counters, Endpoint, Identity, SendError};
use igmp_ext::ed25519_dalek::VerifyingKey;
use igmp_ext::mld_join::is_link_local;
use igmp_ext::{KeyId, MemberId};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use tracing::warn;

/// The control interface as the channel uses it: its IPv4 address for an IPv4 group; for an
/// IPv6 group its index and the IPv6 address members reach it at.
#[derive(Debug, Clone, Copy)]
pub enum ControlLink {
    V4(Ipv4Addr),
    V6 { index: u32, addr: Ipv6Addr },
}

/// The control interface's link for `config.control.group`. An IPv6 group needs an IPv6
/// address there: a link-local one for a link-scope group (`ffx2::/16`, whose members share the
/// link), a global one for a wider scope (its members may be on other links).
pub fn link(config: &Config) -> Result<ControlLink, DaemonError> {
    let ifname = config.control_interface();
    let group = match config.control.group {
        IpAddr::V4(_) => return super::interface_addr(ifname).map(ControlLink::V4),
        IpAddr::V6(g) => g,
    };
    let link_scope = group.segments()[0] & 0x000f == 2;
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| DaemonError::Io {
        what: "getifaddrs",
        source: e.into(),
    })?;
    let addr = addrs
        .filter(|a| a.interface_name == ifname)
        .filter_map(|a| a.address?.as_sockaddr_in6().map(|s| s.ip()))
        .find(|a| is_link_local(*a) == link_scope);
    let missing = || DaemonError::Io {
        what: "control.group",
        source: io::Error::other(format!(
            "{group} needs an IPv6 {} address on the control interface {ifname} (is it up, \
             with IPv6 on?)",
            if link_scope { "link-local" } else { "global" }
        )),
    };
    let addr = addr.ok_or_else(missing)?;
    let index = nix::net::if_::if_nametoindex(ifname).map_err(|_| missing())?;
    Ok(ControlLink::V6 { index, addr })
}

/// Where other members reach us directly (forward and handoff): `reallocation.direct_path`,
/// else the service interface's address `addr`, or with an IPv6 control group its address on
/// the control link; VIP forward's overlay runs between IPv4 paths, so it keeps `addr`.
pub fn direct_path(config: &Config, addr: Ipv4Addr, link: ControlLink) -> Option<SocketAddr> {
    if !matches!(config.strategy, Strategy::Forward | Strategy::Handoff) {
        return None;
    }
    let port = config.control.port;
    let vip_forward = config.mode == Mode::Vip && config.strategy == Strategy::Forward;
    Some(match (config.reallocation.direct_path, link) {
        (Some(p), _) => p,
        (None, ControlLink::V6 { index, addr }) if !vip_forward => {
            SocketAddr::V6(SocketAddrV6::new(addr, port, 0, index))
        }
        (None, _) => SocketAddr::V4(SocketAddrV4::new(addr, port)),
    })
}

/// Binds the control socket on the control link and starts the driver with a fresh endpoint
/// that accepts peers certified by our group key, or (keystore) by the published keys and not
/// revoked: `published` is the record's keys and revoked key ids.
pub fn start(
    config: &Config,
    link: ControlLink,
    creds: &Credentials,
    published: Option<(&[VerifyingKey], &[KeyId])>,
) -> Result<DriverHandle, (&'static str, io::Error)> {
    let port = config.control.port;
    let (socket, group) = match (config.control.group, link) {
        (IpAddr::V4(g), ControlLink::V4(interface)) => {
            let mut sockcfg = SocketConfig::new(g, port, interface);
            sockcfg.ttl = config.control.ttl;
            let group = SocketAddr::V4(SocketAddrV4::new(g, port));
            (driver::bind(&sockcfg), group)
        }
        (IpAddr::V6(g), ControlLink::V6 { index, .. }) => {
            let mut sockcfg = SocketConfig6::new(g, port, index);
            sockcfg.hop_limit = config.control.ttl;
            // The zone names the link a link-scope group is on; ignored for wider scopes.
            let group = SocketAddr::V6(SocketAddrV6::new(g, port, 0, index));
            (driver::bind6(&sockcfg), group)
        }
        _ => {
            let e = io::Error::other("the control link is not of the control group's family");
            return Err(("control socket", e));
        }
    };
    let socket = socket.map_err(|e| ("control socket", e))?;
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
