//! The `[site]` section: this verifier is a site router (SPEC.md §10.8). Its site agent joins
//! the upper control group among the site routers on the upstream interface and claims, toward
//! the upstream verifier, the units its site serves.

use super::{Config, ConfigError};
use crate::core::site::SiteAgentConfig;
use crate::core::Dataplane;
use core::time::Duration;
use igmp_ext::alloc::{Slicing, MAX_BITS};
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    /// The interface toward the upstream router: joins go out there, clients' packets come in;
    /// not one of `interfaces` (no query, no join taken there).
    pub upstream: String,
    /// The router's private key (PKCS#8 PEM, mode 0600), as a member's `member_key`.
    pub router_key: PathBuf,
    /// Its router certificate (naming the site), as a member's `member_cert`.
    pub router_certificate: PathBuf,
    /// The protected service group the site serves, claimed upstream.
    pub group: Ipv4Addr,
    /// The upper control group among the site routers, and its port.
    pub upper_group: Ipv4Addr,
    #[serde(default = "default_upper_port")]
    pub upper_port: u16,
    /// The weight announced in the upper group while the site has a live member.
    #[serde(default = "one")]
    pub weight: u32,
    /// Low-order slicing bits: the members' `control.slice_bits`.
    #[serde(default = "default_slice_bits")]
    pub slice_bits: u8,
    /// Unprompted refresh of the upstream join; below the upstream verifier's claim hold.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// The upper group's timers and weight cap, as a member's `[control]`.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    #[serde(default = "default_down_after_ms")]
    pub down_after_ms: u64,
    #[serde(default = "default_max_weight")]
    pub max_weight: u32,
}

fn default_upper_port() -> u16 {
    4790
}
fn one() -> u32 {
    1
}
fn default_slice_bits() -> u8 {
    8
}
fn default_refresh_ms() -> u64 {
    10_000
}
fn default_heartbeat_interval_ms() -> u64 {
    50
}
fn default_down_after_ms() -> u64 {
    200
}
fn default_max_weight() -> u32 {
    control_channel::endpoint::DEFAULT_MAX_WEIGHT
}

/// A changed upstream claim is sent again after this (RFC 3376's unsolicited report interval).
const REPEAT: Duration = Duration::from_secs(1);

impl SiteSection {
    pub fn slicing(&self) -> Slicing {
        Slicing::LowOrder {
            bits: self.slice_bits,
        }
    }

    pub fn agent_config(&self) -> SiteAgentConfig {
        SiteAgentConfig {
            group: self.group,
            slicing: self.slicing(),
            weight: self.weight,
            refresh: Duration::from_millis(self.refresh_ms),
            repeat: REPEAT,
        }
    }

    /// The upper group's endpoint settings.
    pub fn upper_config(&self) -> control_channel::Config {
        let mut c = control_channel::Config::new(self.upper_group);
        c.slicing = self.slicing();
        c.weight = self.weight;
        c.max_weight = self.max_weight;
        c.heartbeat_interval = Duration::from_millis(self.heartbeat_interval_ms);
        c.down_after = Duration::from_millis(self.down_after_ms);
        c
    }
}

impl Config {
    /// `[site]`: the upstream interface is not a member link, the group is steered here, the
    /// upper group is a group of its own, the numbers make sense, and the data plane can hook
    /// the upstream interface ("auto" is checked at start, once decided). The key files are checked at start (`daemon/site.rs`).
    pub(super) fn check_site(&self) -> Result<(), ConfigError> {
        let Some(s) = &self.site else {
            return Ok(());
        };
        let bad = |why: String| Err(ConfigError::Invalid(format!("site: {why}")));
        if self.interfaces.contains(&s.upstream) {
            return bad(format!(
                "upstream interface {:?} is also in `interfaces`: list only the member links \
                 there (the upstream interface takes no joins and gets no queries)",
                s.upstream
            ));
        }
        if !self.steered()?.iter().any(|p| p.contains_addr(s.group)) {
            return bad(format!(
                "group {} is not inside verifier.protected: the site serves a protected group",
                s.group
            ));
        }
        let g = s.upper_group;
        if !g.is_multicast() || g.octets()[..3] == [224, 0, 0] {
            return bad(format!(
                "upper_group {g} is not a multicast group outside 224.0.0.0/24"
            ));
        }
        if self.protected()?.iter().any(|p| p.contains_addr(g)) {
            return bad(format!(
                "upper_group {g} is protected here (verifier.protected or control_groups)"
            ));
        }
        if !(1..=MAX_BITS).contains(&s.slice_bits) {
            return bad(format!("slice_bits must be 1 to {MAX_BITS}"));
        }
        if s.weight == 0 || s.weight > s.max_weight {
            return bad(format!(
                "weight must be 1 to max_weight ({}); the agent announces 0 itself when the site \
                 has no live member",
                s.max_weight
            ));
        }
        if s.refresh_ms == 0 {
            return bad("refresh_ms must be positive".into());
        }
        if s.heartbeat_interval_ms == 0 || s.down_after_ms <= s.heartbeat_interval_ms {
            return bad("heartbeat_interval_ms must be positive and below down_after_ms".into());
        }
        if self.native.dataplane == Dataplane::Mroute {
            return bad(
                "needs the nftables data plane (native.dataplane \"nft\" or \"auto\" on a kernel \
                 without multicast routing): only it steers packets arriving on the upstream \
                 interface"
                    .into(),
            );
        }
        Ok(())
    }
}
