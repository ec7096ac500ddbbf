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
    // Claims go as UNITS always, not only when SLICES would not fit: one join size whatever
    // the units' layout, so a crash that scatters them changes nothing on the wire (SPEC.md §3.2).
    let agent = JoinAgent::new(agent_config, identity, config.group).with_slicing(slicing);
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

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::fixtures::{nonce_bytes, Fixture, IFINDEX, NOW as WALL};
    use igmp_ext::{Accepted, AllocationEpoch, Clock, Instant, JoinVerifier, SliceEntry};
    use igmp_ext::{SliceSet, VerifierConfig};

    /// The daemon's IGMPv3 agent at the default slicing (8 bits) for a member whose units a
    /// crash scattered (the 128 of even bit parity: none merge), standing by for the other 128:
    /// its join fits a 1,500-byte link whole and the router grants every unit. As SLICES it was
    /// 2 KB, over the MTU even without its standby units, and the raw socket refused it.
    #[test]
    fn the_daemons_join_of_scattered_units_fits_a_1500_byte_link() {
        let f = Fixture::new(1);
        let m = &f.members[0];
        let text = format!(
            "group = \"{}\"\ninterface = \"mc-absent0\"\nmember_key = \"/k\"\n\
             member_cert = \"/c\"\ngroup_pub = \"/g\"\n",
            f.group
        );
        let config = Config::parse(&text).expect("config");
        let slicing = config.control_config().slicing;
        assert_eq!(slicing.bits(), 8, "the default slicing");
        let creds = Credentials {
            key: m.key.clone(),
            cert: m.cert.clone(),
            group_key: f.group_key.verifying_key(),
        };
        // No such interface: the agent assumes a 1,500-byte link.
        let mut agent = join_agent(&config, &creds, m.addr, slicing);
        let parity = |odd: u32| -> Vec<SliceEntry> {
            (0..slicing.unit_count())
                .filter(|i| i.count_ones() % 2 == odd)
                .map(|i| SliceEntry::include(slicing.unit(i)))
                .collect()
        };
        let now = Instant::from_secs(1);
        let mut x = 1u64;
        let mut random = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x
        };
        agent.set_claim(now, parity(0), parity(1), AllocationEpoch(1), &mut random);
        let d = agent
            .poll_transmit(Clock::new(now, WALL), nonce_bytes(1))
            .expect("the change is reported at once")
            .expect("built");
        assert!(d.len() <= 1500, "{} bytes", d.len());
        assert_eq!(agent.trimmed(), 0, "nothing left out");
        let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
        let r = v.handle_datagram(WALL, IFINDEX, &d, &f.key_source());
        assert!(matches!(r, Ok(Accepted::Join { .. })), "{r:?}");
        let (_, claim) = v.ownership().claims(f.group).next().expect("a claim");
        let set = |e: Vec<SliceEntry>| -> SliceSet { e.iter().map(|e| e.slice).collect() };
        assert_eq!(claim.slices, set(parity(0)));
        assert_eq!(claim.standby, set(parity(1)));
    }
}
