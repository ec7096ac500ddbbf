//! The join agents the daemon hands its node: the IGMPv3 one (with the routed control group's
//! shared join, when configured) and, with `group6`, the MLDv2 one.

use super::sockets;
use crate::beaconer::SharedBeaconer;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::join_agent::{Identity, JoinAgent};
use crate::mld_agent::MldAgent;
use crate::site_scope::SiteScopeTracker;
use igmp_ext::alloc::Slicing;
use igmp_ext::ed25519_dalek::VerifyingKey;
use igmp_ext::KeyId;
use std::net::Ipv4Addr;

/// The IGMPv3 join agent, signing from `addr`, its datagrams capped at the link MTU, claiming
/// units of `slicing`.
pub fn join_agent(
    config: &Config,
    creds: &Credentials,
    addr: Ipv4Addr,
    slicing: Slicing,
) -> JoinAgent {
    let mut agent_config = config.agent_config();
    agent_config.max_datagram = sockets::link_mtu(&config.interface).unwrap_or(1500);
    let identity = Identity {
        key: creds.key.clone(),
        cert: creds.cert.clone(),
        sender: addr,
    };
    // Not yet `with_slicing(slicing)`: IGMPv3 UNITS joins are built and verified, but the
    // daemon still sends SLICES until the namespace tests pass with it (issue 15, item 5).
    let _ = slicing;
    let agent = JoinAgent::new(agent_config, identity, config.group);
    match config.routed_control_group() {
        Some(group) => agent.with_control_group(group, daemon_kit::now().mono),
        None => agent,
    }
}

/// The MLDv2 join agent for `group6`, if configured, with the same timers, naming the IPv4
/// join's beacon chains (one beacon stream for both families, SPEC.md §5.5).
pub fn mld_agent(
    config: &Config,
    creds: &Credentials,
    slicing: Slicing,
    beacons: Option<&SharedBeaconer>,
) -> Option<MldAgent> {
    let group = config.group6?;
    let (key, cert) = (creds.key.clone(), creds.cert.clone());
    let mut agent_config = config.agent_config();
    agent_config.max_datagram = sockets::link_mtu(&config.interface).unwrap_or(1500);
    let agent = MldAgent::new(agent_config, key, cert, group, slicing);
    Some(match beacons {
        Some(b) => agent.with_beacons(b.clone()),
        None => agent,
    })
}

/// With `control.site_scope`, the tracker of our site routers' scope notices (SPEC.md §3.10),
/// trusting the keys the control channel trusts for peers: the keystore's published keys and
/// revocations (`published`), else our group key.
pub fn site_scope(
    config: &Config,
    creds: &Credentials,
    published: Option<&(Vec<VerifyingKey>, Vec<KeyId>)>,
) -> Option<SiteScopeTracker> {
    config.control.site_scope.then(|| match published {
        Some((keys, revoked)) => SiteScopeTracker::new(config.group, keys, revoked),
        None => SiteScopeTracker::new(config.group, &[creds.group_key], &[]),
    })
}
