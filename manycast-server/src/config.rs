//! The daemon's TOML configuration: parsing, documented defaults and the checks that turn a bad
//! file into one line naming what is wrong. Nothing here opens a socket or reads a key file.

pub use daemon_kit::ConfigError;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How clients reach the cluster (BRIEF decision 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// UDP to the group address; the daemon receives the group itself.
    Native,
    /// TCP to a unicast VIP held on loopback; any TCP server bound to the VIP is the
    /// application, and the member answers clients directly (SPEC.md §11.7).
    Vip,
}

/// What happens to sessions of slices that move away (BRIEF decision 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Strategy {
    /// Forget the moved sessions and tell each client with a reset reply.
    Reset,
    Forward,
    Handoff,
    Pin,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Reset => "reset",
            Strategy::Forward => "forward",
            Strategy::Handoff => "handoff",
            Strategy::Pin => "pin",
        }
    }
}

/// The control group (SPEC.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The control group, IPv4 or IPv6 (SPEC.md §9.1); the member certificate must list it
    /// (an IPv6 one among its IPv6 groups, §4.2).
    pub group: IpAddr,
    pub port: u16,
    /// Interface for the control group; default: the service `interface`.
    pub interface: Option<String>,
    /// Multicast TTL (an IPv6 group's hop limit): 1 keeps the control group on one segment.
    pub ttl: u32,
    /// Low-order bits that cut the address space into 2^bits units; equal on every member.
    pub slice_bits: u8,
    pub heartbeat_interval_ms: u64,
    pub down_after_ms: u64,
    /// The largest weight any member may announce (SPEC.md §9.7); equal on every member.
    /// `weight` may not exceed it.
    pub max_weight: u32,
    /// Hold a signed shared join for the control group at the verifier router, which then
    /// carries the group between its interfaces for verified members (SPEC.md §3.9, §10.7):
    /// members on different subnets. Off by default (members share one segment). Needs the
    /// control group on the service `interface` (the join's link).
    pub routed: bool,
    /// A member of a site of a site hierarchy (issue 14, item 2; SPEC.md §3.10): keep the
    /// newest verified scope notice of our site routers' queries, the units the upper
    /// allocation gives our site. Off by default (no site: nothing changes).
    pub site_scope: bool,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            group: IpAddr::V4(Ipv4Addr::new(239, 77, 0, 1)),
            port: 4790,
            interface: None,
            ttl: 1,
            slice_bits: 8,
            heartbeat_interval_ms: 50,
            down_after_ms: 200,
            max_weight: control_channel::endpoint::DEFAULT_MAX_WEIGHT,
            routed: false,
            site_scope: false,
        }
    }
}

/// Signed join timers (RFC 3376 §8 names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IgmpConfig {
    pub robustness: u8,
    pub unsolicited_report_interval_ms: u64,
    /// Unprompted refresh; keep it below the router's claim hold (22 s with the verifier's
    /// lab defaults, 260 s with RFC 3376's).
    pub refresh_ms: u64,
    /// At most one query answer per this interval (queries are unauthenticated: SPEC.md §12).
    pub min_answer_interval_ms: u64,
    /// Liveness beacons to the routers on the link every this many ms (SPEC.md §5.5); 0: none
    /// (the router then finds this member dead only through the control group's commits).
    pub beacon_interval_ms: u16,
    /// The UDP port beacons go to (the verifier's `liveness.port`).
    pub beacon_port: u16,
}

impl Default for IgmpConfig {
    fn default() -> Self {
        IgmpConfig {
            robustness: 2,
            unsolicited_report_interval_ms: 1000,
            refresh_ms: 10_000,
            min_answer_interval_ms: 1000,
            beacon_interval_ms: 5,
            beacon_port: 7410,
        }
    }
}

/// The built-in reference service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// A client silent this long loses its session.
    pub session_idle_ms: u64,
    /// Sessions kept at most; new clients beyond it are not served (counted).
    pub max_sessions: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            session_idle_ms: 60_000,
            max_sessions: 65_536,
        }
    }
}

/// VIP mode (`mode = "vip"`, SPEC.md §11.7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VipConfig {
    /// The unicast VIP the verifier binds to `group`; held on loopback while the daemon runs.
    /// Required in VIP mode.
    pub address: Option<Ipv4Addr>,
    /// The IPv6 VIP (issue 15): held on loopback beside `address`; the verifier binds it to
    /// `group6` and steers each IPv6 client by its /56's unit (SPEC.md §11.7.2). Needs `group6`.
    pub address6: Option<std::net::Ipv6Addr>,
    /// Reset strategy: moved connections are destroyed this long after the commit, so that
    /// the router has re-pointed the slices (the new owner's join reached it) before the
    /// clients reconnect.
    pub reset_delay_ms: u64,
    /// Forward strategy: the overlay network of the VXLAN device that carries mid-stream TCP
    /// segments from a slice's new owner to its old owner; member `m` holds host `m` of it.
    /// Required with `strategy = "forward"`; the same on every member.
    pub forward_overlay: Option<Overlay>,
    /// Forward strategy: the VXLAN network identifier (24 bits); the same on every member.
    pub forward_vni: u32,
    /// Forward strategy: the VXLAN UDP port (IANA's 4789 by default); the same on every member.
    pub forward_port: u16,
    /// Forward strategy: how long the new owner keeps passing an old owner's connections on
    /// after a move, unless the old owner leaves first. The new owner cannot see when the old
    /// owner's connections end, so this bounds how long stale segments are carried; minutes,
    /// because keep-alive connections commonly idle out within a few (nginx: 75 s).
    pub forward_linger_ms: u64,
}

impl Default for VipConfig {
    fn default() -> Self {
        VipConfig {
            address: None,
            address6: None,
            reset_delay_ms: 200,
            forward_overlay: None,
            forward_vni: 7_700,
            forward_port: 4_789,
            forward_linger_ms: 300_000,
        }
    }
}

/// An IPv4 network written `a.b.c.d/len` (`vip.forward_overlay`): member `m` gets host `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Overlay {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Overlay {
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Member `m`'s overlay address: host `m`, which must be neither the network nor the
    /// broadcast address.
    pub fn host(&self, member: u32) -> Option<Ipv4Addr> {
        let hosts = (1u64 << (32 - u32::from(self.prefix_len))).saturating_sub(2);
        (member >= 1 && u64::from(member) <= hosts)
            .then(|| Ipv4Addr::from(u32::from(self.network) | member))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(addr) & mask == u32::from(self.network)
    }

    /// The highest member id that has an address.
    pub fn max_member(&self) -> u64 {
        (1u64 << (32 - u32::from(self.prefix_len))).saturating_sub(2)
    }
}

impl std::fmt::Display for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl TryFrom<String> for Overlay {
    type Error = InvalidConfig;

    fn try_from(s: String) -> Result<Overlay, InvalidConfig> {
        let bad = || {
            InvalidConfig(format!(
                "vip.forward_overlay {s:?} is not an IPv4 network a.b.c.d/len"
            ))
        };
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let network: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        // At least two members need an address besides the network and broadcast addresses;
        // at most 2^16 - 2, as the member id is the low half of the packet mark.
        if !(16..=30).contains(&prefix_len) {
            return Err(InvalidConfig(format!(
                "vip.forward_overlay {s}: the prefix length must be 16..=30"
            )));
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        if u32::from(network) & !mask != 0 {
            return Err(InvalidConfig(format!(
                "vip.forward_overlay {s}: host bits are set (did you mean {}/{prefix_len}?)",
                Ipv4Addr::from(u32::from(network) & mask)
            )));
        }
        Ok(Overlay {
            network,
            prefix_len,
        })
    }
}

/// What happens around a reallocation under `forward` and `handoff`, and on drain
/// (SPEC.md §11.5, §11.6).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReallocationConfig {
    /// A new owner holds datagrams of unknown clients in slices it gained from a live member
    /// this long, waiting for that member's session state; then they start fresh (counted).
    pub hold_ms: u64,
    /// A draining member (SIGTERM under forward, handoff or pin) leaves at the latest after
    /// this long, even if forwarded sessions are still active.
    pub drain_timeout_ms: u64,
    /// The unicast address and port other members use to reach this member's control
    /// endpoint directly (forwarded datagrams, state transfers; signed like every control
    /// message). Default: `interface`'s address and `control.port`; with an IPv6 control group
    /// the control interface's IPv6 address (link-local for a link-scope group) and
    /// `control.port`. IPv6 only with an IPv6 control group.
    pub direct_path: Option<SocketAddr>,
}

impl Default for ReallocationConfig {
    fn default() -> Self {
        ReallocationConfig {
            hold_ms: 500,
            drain_timeout_ms: 30_000,
            direct_path: None,
        }
    }
}

/// Where the daemon takes the group public key from when it is not a file (`group_pub`): the
/// dns-keystore's DNSSEC-validated group record (SPEC.md §8, §11.1). The same keys and meaning as
/// the verifier's `[keystore]`, without `groups` (a member checks only its own `group`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreConfig {
    /// The keystore's DNS address.
    pub server: std::net::SocketAddr,
    /// The BIND `trust-anchors` file the dns-keystore daemon writes.
    pub trust_anchor: PathBuf,
    /// How often the group record and our certificate record are fetched again while running.
    #[serde(default = "default_keystore_refresh_ms")]
    pub refresh_ms: u64,
    /// How long past the TTL a validated record is trusted while the keystore does not answer
    /// (default: the client's, 1 hour).
    #[serde(default)]
    pub max_stale_ms: Option<u64>,
    /// At start, how long the daemon keeps trying an unreachable keystore before it stops.
    #[serde(default = "default_keystore_start_timeout_ms")]
    pub start_timeout_ms: u64,
    /// Stop unless the keystore publishes exactly our certificate at `<member key id>.m.<zone>`
    /// (so that withdrawing or replacing it stops the member). Default: off.
    #[serde(default)]
    pub require_certificate: bool,
    /// Where the newest accepted record's signature time is kept, so that a restart still
    /// refuses a replayed older record (SPEC.md §8.9); shared safely by the members of a host.
    #[serde(default = "default_rollback_marks")]
    pub rollback_marks: PathBuf,
}

fn default_keystore_refresh_ms() -> u64 {
    5_000
}
fn default_rollback_marks() -> PathBuf {
    PathBuf::from("/var/lib/manycast/server-rollback.marks")
}
fn default_keystore_start_timeout_ms() -> u64 {
    10_000
}

impl KeystoreConfig {
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms)
    }

    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }
}

/// Where the group public key comes from: exactly one of `group_pub` and `[keystore]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKeySource<'a> {
    File(&'a Path),
    Keystore(&'a KeystoreConfig),
}

/// The whole file. Only `group`, `interface`, `member_key`, `member_cert` and one group key
/// source (`group_pub` or `[keystore]`) are required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The protected service group.
    pub group: Ipv4Addr,
    /// The service's IPv6 group (ff3e::/32, SSM), if it is also served over IPv6: the member
    /// sends a signed MLDv2 join for it (SPEC.md §3.8) with the IPv6 counterparts of its
    /// allocation's units (§6.2). Needs a version 2 certificate listing it.
    #[serde(default)]
    pub group6: Option<std::net::Ipv6Addr>,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// The interface toward the router: joins go out of it, signed with its address.
    pub interface: String,
    #[serde(default = "default_port")]
    pub service_port: u16,
    pub member_key: PathBuf,
    pub member_cert: PathBuf,
    /// The group public key file; or `[keystore]` instead.
    #[serde(default)]
    pub group_pub: Option<PathBuf>,
    /// The group key from the dns-keystore instead of `group_pub`.
    #[serde(default)]
    pub keystore: Option<KeystoreConfig>,
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
    /// Share of the slices relative to the other members.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Prometheus text written here every second (atomically); none by default.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    /// Prometheus text served over HTTP on this address (any path); none by default.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The admin socket `manycastctl` talks to (unix stream, mode 0600).
    #[serde(default = "default_admin_socket")]
    pub admin_socket: PathBuf,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub igmp: IgmpConfig,
    #[serde(default)]
    pub service: ServiceConfig,
    #[serde(default)]
    pub vip: VipConfig,
    #[serde(default)]
    pub reallocation: ReallocationConfig,
    /// Health checks of the service (SPEC.md §11.9); none by default.
    #[serde(default)]
    pub health: Vec<crate::health::HealthCheckConfig>,
}

fn default_mode() -> Mode {
    Mode::Native
}
fn default_port() -> u16 {
    5000
}
fn default_strategy() -> Strategy {
    Strategy::Reset
}
fn default_weight() -> u32 {
    1
}
/// Where `manycastctl` looks by default too.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/manycast/admin.sock";
fn default_admin_socket() -> PathBuf {
    PathBuf::from(DEFAULT_ADMIN_SOCKET)
}

/// A configuration the operator must fix, as one line naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

impl From<String> for InvalidConfig {
    fn from(message: String) -> Self {
        InvalidConfig(message)
    }
}

impl From<&str> for InvalidConfig {
    fn from(message: &str) -> Self {
        InvalidConfig(message.to_owned())
    }
}

impl Config {
    /// Reads, parses and checks `path` (`daemon_kit::config`): the error is one line naming the
    /// file and, for syntax and type errors, the line at fault.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        daemon_kit::config::load(path, |c: &Config| c.validate().map_err(|e| e.0))
    }

    /// Parses and checks; the error is one line.
    pub fn parse(text: &str) -> Result<Config, InvalidConfig> {
        let c: Config = daemon_kit::config::parse(text)?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), InvalidConfig> {
        if !self.group.is_multicast() {
            return Err(InvalidConfig(format!(
                "group {} is not a multicast address",
                self.group
            )));
        }
        if let Some(g) = self.group6 {
            if g.segments()[0] != 0xff3e || g.segments()[1] != 0 {
                return Err(InvalidConfig(format!(
                    "group6 {g} is not in ff3e::/32 (the IPv6 SSM groups)"
                )));
            }
        }
        self.validate_control_group()?;
        if self.interface.is_empty() {
            return Err("interface is empty".into());
        }
        if self.admin_socket.as_os_str().is_empty() {
            return Err("admin_socket is empty".into());
        }
        if self.service_port == 0 || self.control.port == 0 {
            return Err("ports must be non-zero".into());
        }
        if self.control.slice_bits > igmp_ext::alloc::MAX_BITS {
            return Err(InvalidConfig(format!(
                "control.slice_bits {} is above {}",
                self.control.slice_bits,
                igmp_ext::alloc::MAX_BITS
            )));
        }
        // Units a member owns that are not neighbours stay separate slices of its join: with
        // more than 2^10 units a join could pass the cap, and the verifier refuses it
        // (`too-large`, issue 13).
        let join_bits = igmp_ext::join::MAX_JOIN_SLICES.trailing_zeros();
        if u32::from(self.control.slice_bits) > join_bits {
            return Err(InvalidConfig(format!(
                "control.slice_bits {} is above {join_bits}: a member's join could need more than \
                 the {} slices a join may carry",
                self.control.slice_bits,
                igmp_ext::join::MAX_JOIN_SLICES
            )));
        }
        if self.weight > self.control.max_weight {
            return Err(InvalidConfig(format!(
                "weight {} is above control.max_weight {}",
                self.weight, self.control.max_weight
            )));
        }
        if self.igmp.robustness == 0 {
            return Err("igmp.robustness must be at least 1".into());
        }
        if self.control.heartbeat_interval_ms == 0
            || self.control.down_after_ms <= self.control.heartbeat_interval_ms
        {
            return Err("control.down_after_ms must exceed heartbeat_interval_ms > 0".into());
        }
        if self.reallocation.hold_ms == 0 || self.reallocation.drain_timeout_ms == 0 {
            return Err(
                "reallocation.hold_ms and reallocation.drain_timeout_ms must be non-zero".into(),
            );
        }
        if self.igmp.refresh_ms == 0 || self.service.session_idle_ms == 0 {
            return Err("igmp.refresh_ms and service.session_idle_ms must be non-zero".into());
        }
        self.group_key_source()?;
        self.health_checks()?;
        self.validate_vip()
    }

    /// The control group: multicast, not the service group; routed only over IPv4; a direct
    /// path the channel's socket can reach.
    fn validate_control_group(&self) -> Result<(), InvalidConfig> {
        let group = self.control.group;
        if !group.is_multicast() {
            return Err(InvalidConfig(format!(
                "control.group {group} is not a multicast address"
            )));
        }
        if let IpAddr::V6(g) = group {
            // Scope 0 is reserved, 1 interface-local: no other host would hear the group.
            // Scope 0xf is reserved too (RFC 7346).
            match g.segments()[0] & 0x000f {
                0 | 1 => {
                    return Err(InvalidConfig(format!(
                        "control.group {g} does not leave this host (scope below link-local)"
                    )))
                }
                0xf => {
                    return Err(InvalidConfig(format!(
                        "control.group {g} has the reserved scope 0xf"
                    )))
                }
                _ => {}
            }
        }
        if !(1..=255).contains(&self.control.ttl) {
            return Err(InvalidConfig(format!(
                "control.ttl {} is outside 1..=255",
                self.control.ttl
            )));
        }
        if self.control.routed && group.is_ipv6() {
            return Err(InvalidConfig(format!(
                "control.routed needs an IPv4 control.group (the routed control group is an \
                 IGMPv3 join, SPEC.md §3.9); {group} is IPv6"
            )));
        }
        if self.control.routed && self.control_interface() != self.interface {
            return Err("control.routed needs the control group on the service interface".into());
        }
        if group == IpAddr::V4(self.group) || Some(group) == self.group6.map(IpAddr::V6) {
            return Err("control.group must differ from the service group".into());
        }
        match self.reallocation.direct_path {
            Some(p @ SocketAddr::V6(_)) if group.is_ipv4() => Err(InvalidConfig(format!(
                "reallocation.direct_path {p} is IPv6 but control.group {group} is IPv4: the \
                 control socket cannot reach it"
            ))),
            Some(p @ SocketAddr::V6(_))
                if self.mode == Mode::Vip && self.strategy == Strategy::Forward =>
            {
                Err(InvalidConfig(format!(
                    "reallocation.direct_path {p} is IPv6: VIP forward's overlay runs between \
                     IPv4 direct paths"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The routed control group's address (SPEC.md §3.9): only an IPv4 one is ever routed.
    pub fn routed_control_group(&self) -> Option<Ipv4Addr> {
        match self.control.group {
            IpAddr::V4(g) if self.control.routed => Some(g),
            _ => None,
        }
    }

    /// The `[[health]]` checks, checked (SPEC.md §11.9).
    pub fn health_checks(&self) -> Result<Vec<crate::health::CheckSpec>, InvalidConfig> {
        crate::health::config::specs(&self.health).map_err(InvalidConfig)
    }

    /// Exactly one of `group_pub` and `[keystore]`, as the verifier: two sources that could
    /// disagree would need a rule for who wins, and one file pinned next to the keystore would
    /// defeat rotation.
    pub fn group_key_source(&self) -> Result<GroupKeySource<'_>, InvalidConfig> {
        match (&self.group_pub, &self.keystore) {
            (Some(p), None) => Ok(GroupKeySource::File(p)),
            (None, Some(ks)) => {
                if ks.refresh_ms == 0 || ks.start_timeout_ms == 0 {
                    return Err(
                        "keystore.refresh_ms and keystore.start_timeout_ms must be non-zero".into(),
                    );
                }
                if ks.trust_anchor.as_os_str().is_empty() {
                    return Err("keystore.trust_anchor is empty".into());
                }
                Ok(GroupKeySource::Keystore(ks))
            }
            (Some(_), Some(_)) => Err(
                "both group_pub and [keystore] are set: configure exactly one group key source"
                    .into(),
            ),
            (None, None) => {
                Err("no group key source: set group_pub (a key file) or a [keystore] table".into())
            }
        }
    }

    fn validate_vip(&self) -> Result<(), InvalidConfig> {
        self.validate_vip6()?;
        match (self.mode, self.vip.address) {
            (Mode::Vip, None) => Err("mode = \"vip\" needs vip.address".into()),
            (Mode::Native, Some(_)) => Err("vip.address is set but mode is not \"vip\"".into()),
            (Mode::Vip, Some(a))
                if a.is_multicast()
                    || a.is_unspecified()
                    || a.is_loopback()
                    || a.is_broadcast() =>
            {
                Err(InvalidConfig(format!("vip.address {a} is not a unicast address")))
            }
            (Mode::Vip, Some(_)) if self.strategy == Strategy::Handoff => Err(
                "strategy = \"handoff\" is not available in VIP mode; use \"reset\", \"pin\" or \"forward\""
                    .into(),
            ),
            (Mode::Vip, Some(vip)) if self.strategy == Strategy::Forward => {
                let Some(overlay) = self.vip.forward_overlay else {
                    return Err(
                        "strategy = \"forward\" in VIP mode needs vip.forward_overlay (e.g. \"10.99.0.0/24\")"
                            .into(),
                    );
                };
                if overlay.contains(vip) {
                    return Err(InvalidConfig(format!(
                        "vip.address {vip} is inside vip.forward_overlay {overlay}"
                    )));
                }
                if self.vip.forward_vni == 0 || self.vip.forward_vni >= 1 << 24 {
                    return Err(InvalidConfig(format!(
                        "vip.forward_vni {} is not a 24-bit VXLAN id (1..=16777215)",
                        self.vip.forward_vni
                    )));
                }
                if self.vip.forward_port == 0 || self.vip.forward_linger_ms == 0 {
                    return Err(
                        "vip.forward_port and vip.forward_linger_ms must be non-zero".into(),
                    );
                }
                Ok(())
            }
            (Mode::Native, _) if self.vip.forward_overlay.is_some() => {
                Err("vip.forward_overlay is set but mode is not \"vip\"".into())
            }
            _ => Ok(()),
        }
    }

    /// `vip.address6`: beside the IPv4 VIP (VIP mode), with `group6` (its join is what the
    /// verifier steers the IPv6 VIP by), and a global unicast address: a link-local VIP names no
    /// link the router could steer on, and the others are not a service address.
    fn validate_vip6(&self) -> Result<(), InvalidConfig> {
        let Some(a) = self.vip.address6 else {
            return Ok(());
        };
        if self.mode != Mode::Vip {
            return Err("vip.address6 is set but mode is not \"vip\"".into());
        }
        if self.group6.is_none() {
            return Err(InvalidConfig(format!(
                "vip.address6 {a} needs group6: the verifier steers the IPv6 VIP by the member's \
                 MLDv2 join for it"
            )));
        }
        let mapped = a.to_ipv4_mapped().is_some();
        if a.is_multicast()
            || a.is_unspecified()
            || a.is_loopback()
            || a.is_unicast_link_local()
            || mapped
        {
            return Err(InvalidConfig(format!(
                "vip.address6 {a} is not a global unicast IPv6 address"
            )));
        }
        Ok(())
    }

    pub fn forward_linger(&self) -> Duration {
        Duration::from_millis(self.vip.forward_linger_ms)
    }

    pub fn control_interface(&self) -> &str {
        self.control.interface.as_deref().unwrap_or(&self.interface)
    }

    pub fn hold(&self) -> Duration {
        Duration::from_millis(self.reallocation.hold_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.reallocation.drain_timeout_ms)
    }

    /// Whether SIGTERM drains first: every strategy that keeps sessions alive across a move.
    pub fn drains_on_terminate(&self) -> bool {
        self.strategy != Strategy::Reset
    }

    pub fn session_idle(&self) -> Duration {
        Duration::from_millis(self.service.session_idle_ms)
    }

    /// The join agent's timers.
    pub fn agent_config(&self) -> crate::join_agent::AgentConfig {
        crate::join_agent::AgentConfig {
            robustness: self.igmp.robustness,
            unsolicited_report_interval: Duration::from_millis(
                self.igmp.unsolicited_report_interval_ms,
            ),
            refresh: Duration::from_millis(self.igmp.refresh_ms),
            min_answer_interval: Duration::from_millis(self.igmp.min_answer_interval_ms),
            max_datagram: 1500,
        }
    }

    /// Liveness beacons' interval and how long one hash chain lasts: four refreshes, and at
    /// least a minute, so that the joins name a chain's successor twice over before it is
    /// needed (SPEC.md §5.5).
    pub fn beacon_chain(&self) -> (Duration, Duration) {
        let interval = Duration::from_millis(u64::from(self.igmp.beacon_interval_ms.max(1)));
        let life = (Duration::from_millis(self.igmp.refresh_ms) * 4).max(Duration::from_secs(60));
        (interval, life)
    }

    /// The control-channel endpoint's settings.
    pub fn control_config(&self) -> control_channel::Config {
        let mut c = match self.control.group {
            IpAddr::V4(g) => control_channel::Config::new(g),
            IpAddr::V6(g) => control_channel::Config::new_ipv6(g),
        };
        c.slicing = igmp_ext::alloc::Slicing::LowOrder {
            bits: self.control.slice_bits,
        };
        c.weight = self.weight;
        c.max_weight = self.control.max_weight;
        c.heartbeat_interval = Duration::from_millis(self.control.heartbeat_interval_ms);
        c.down_after = Duration::from_millis(self.control.down_after_ms);
        c
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
