//! The daemon's TOML configuration: parsing, documented defaults and the checks that turn a bad
//! file into one line naming what is wrong. Nothing here opens a socket or reads a key file.

use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddrV4};
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
    /// The control group; the member certificate must list it.
    pub group: Ipv4Addr,
    pub port: u16,
    /// Interface for the control group; default: the service `interface`.
    pub interface: Option<String>,
    /// Multicast TTL: 1 keeps the control group on one segment.
    pub ttl: u32,
    /// Low-order bits that cut the address space into 2^bits units; equal on every member.
    pub slice_bits: u8,
    pub heartbeat_interval_ms: u64,
    pub down_after_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            group: Ipv4Addr::new(239, 77, 0, 1),
            port: 4790,
            interface: None,
            ttl: 1,
            slice_bits: 8,
            heartbeat_interval_ms: 50,
            down_after_ms: 200,
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
}

impl Default for IgmpConfig {
    fn default() -> Self {
        IgmpConfig {
            robustness: 2,
            unsolicited_report_interval_ms: 1000,
            refresh_ms: 10_000,
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
    /// Reset strategy: moved connections are destroyed this long after the commit, so that
    /// the router has re-pointed the slices (the new owner's join reached it) before the
    /// clients reconnect.
    pub reset_delay_ms: u64,
}

impl Default for VipConfig {
    fn default() -> Self {
        VipConfig {
            address: None,
            reset_delay_ms: 200,
        }
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
    /// message). Default: `interface`'s address and `control.port`.
    pub direct_path: Option<SocketAddrV4>,
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

/// The whole file. Only `group`, `interface` and the three key paths are required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The protected service group.
    pub group: Ipv4Addr,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// The interface toward the router: joins go out of it, signed with its address.
    pub interface: String,
    #[serde(default = "default_port")]
    pub service_port: u16,
    pub member_key: PathBuf,
    pub member_cert: PathBuf,
    pub group_pub: PathBuf,
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

/// A bad configuration, as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and checks; the error is one line.
    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines (a source excerpt); keep the first and the
            // explanation so the operator sees one line.
            let msg = e.message().trim().to_owned();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        if !self.group.is_multicast() {
            return Err(format!("group {} is not a multicast address", self.group));
        }
        if !self.control.group.is_multicast() {
            return Err(format!(
                "control.group {} is not a multicast address",
                self.control.group
            ));
        }
        if self.control.group == self.group {
            return Err("control.group must differ from the service group".into());
        }
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
            return Err(format!(
                "control.slice_bits {} is above {}",
                self.control.slice_bits,
                igmp_ext::alloc::MAX_BITS
            ));
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
        self.validate_vip()
    }

    fn validate_vip(&self) -> Result<(), String> {
        match (self.mode, self.vip.address) {
            (Mode::Vip, None) => Err("mode = \"vip\" needs vip.address".into()),
            (Mode::Native, Some(_)) => Err("vip.address is set but mode is not \"vip\"".into()),
            (Mode::Vip, Some(a))
                if a.is_multicast()
                    || a.is_unspecified()
                    || a.is_loopback()
                    || a.is_broadcast() =>
            {
                Err(format!("vip.address {a} is not a unicast address"))
            }
            (Mode::Vip, Some(_))
                if matches!(self.strategy, Strategy::Forward | Strategy::Handoff) =>
            {
                Err(format!(
                    "strategy = \"{}\" is not available in VIP mode; use \"reset\" or \"pin\"",
                    self.strategy.as_str()
                ))
            }
            _ => Ok(()),
        }
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
        }
    }

    /// The control-channel endpoint's settings.
    pub fn control_config(&self) -> control_channel::Config {
        let mut c = control_channel::Config::new(self.control.group);
        c.slicing = igmp_ext::alloc::Slicing::LowOrder {
            bits: self.control.slice_bits,
        };
        c.weight = self.weight;
        c.heartbeat_interval = Duration::from_millis(self.control.heartbeat_interval_ms);
        c.down_after = Duration::from_millis(self.control.down_after_ms);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
group = "232.1.1.1"
interface = "eth0"
member_key = "/k/m.key"
member_cert = "/k/m.cert"
group_pub = "/k/group.pub"
"#;

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.mode, Mode::Native);
        assert_eq!(c.service_port, 5000);
        assert_eq!(c.strategy, Strategy::Reset);
        assert_eq!(c.weight, 1);
        assert_eq!(c.control, ControlConfig::default());
        assert_eq!(c.control.group, Ipv4Addr::new(239, 77, 0, 1));
        assert_eq!(c.control_interface(), "eth0");
        assert_eq!(c.igmp.refresh_ms, 10_000);
        assert_eq!(c.service.max_sessions, 65_536);
        assert_eq!(c.metrics_file, None);
        assert_eq!(c.vip, VipConfig::default());
        assert_eq!(c.vip.reset_delay_ms, 200);
        assert_eq!(c.reallocation, ReallocationConfig::default());
        assert_eq!(c.hold(), Duration::from_millis(500));
        assert!(!c.drains_on_terminate());
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.admin_socket, Path::new("/run/manycast/admin.sock"));
        let cc = c.control_config();
        assert_eq!(cc.down_after, Duration::from_millis(200));
    }

    #[test]
    fn every_field_is_read() {
        let c = Config::parse(&format!(
            "{MINIMAL}mode = \"vip\"\nservice_port = 7\nstrategy = \"pin\"\nweight = 3\n\
             metrics_file = \"/tmp/m.prom\"\nmetrics_listen = \"127.0.0.1:9466\"\n\
             admin_socket = \"/tmp/a.sock\"\n[control]\ngroup = \"239.1.2.3\"\nport = 9\n\
             interface = \"ctl0\"\nttl = 4\nslice_bits = 4\n[igmp]\nrobustness = 3\n\
             refresh_ms = 5000\n[service]\nmax_sessions = 10\n\
             [vip]\naddress = \"10.200.0.1\"\nreset_delay_ms = 50\n\
             [reallocation]\nhold_ms = 50\n\
             drain_timeout_ms = 900\ndirect_path = \"10.0.1.2:4790\"\n"
        ))
        .unwrap();
        assert_eq!(c.mode, Mode::Vip);
        assert_eq!(c.strategy, Strategy::Pin);
        assert_eq!(c.vip.address, Some(Ipv4Addr::new(10, 200, 0, 1)));
        assert_eq!(c.vip.reset_delay_ms, 50);
        assert_eq!(c.control_interface(), "ctl0");
        assert_eq!(c.control.slice_bits, 4);
        assert_eq!(c.agent_config().robustness, 3);
        assert_eq!(c.service.max_sessions, 10);
        assert_eq!(c.hold(), Duration::from_millis(50));
        assert_eq!(c.drain_timeout(), Duration::from_millis(900));
        assert_eq!(
            c.reallocation.direct_path,
            Some(SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 4790))
        );
        assert!(c.drains_on_terminate());
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9466".parse().unwrap()));
        assert_eq!(c.admin_socket, Path::new("/tmp/a.sock"));
    }

    #[test]
    fn bad_files_give_one_line() {
        let cases = [
            ("group = \"1.2.3.4\"\n", "not a multicast"),
            ("strategy = \"teleport\"\n", "unknown variant"),
            ("colour = \"blue\"\n", "unknown field"),
            ("[control]\ngroup = \"232.1.1.1\"\n", "must differ"),
            ("[control]\nslice_bits = 30\n", "above 16"),
            ("[igmp]\nrobustness = 0\n", "at least 1"),
            ("mode = \"vip\"\n", "needs vip.address"),
            ("[vip]\naddress = \"10.200.0.1\"\n", "mode is not"),
            (
                "mode = \"vip\"\n[vip]\naddress = \"224.0.0.9\"\n",
                "not a unicast",
            ),
            (
                "mode = \"vip\"\nstrategy = \"forward\"\n[vip]\naddress = \"10.200.0.1\"\n",
                "not available in VIP mode",
            ),
            ("[vip]\nport = 80\n", "unknown field"),
            ("[reallocation]\nhold_ms = 0\n", "must be non-zero"),
            (
                "[reallocation]\ndirect_path = \"10.0.0.1\"\n",
                "socket address",
            ),
            ("metrics_listen = \"localhost\"\n", "invalid socket address"),
            ("admin_socket = \"\"\n", "admin_socket is empty"),
        ];
        for (extra, want) in cases {
            // Later keys would be duplicates of MINIMAL's: drop the ones the case redefines.
            let base: String = MINIMAL
                .lines()
                .filter(|l| !(extra.starts_with("group =") && l.starts_with("group =")))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = Config::parse(&format!("{base}{extra}")).unwrap_err();
            assert!(e.contains(want), "{extra:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let e = Config::parse("group = \"232.1.1.1\"\n").unwrap_err();
        assert!(e.contains("missing field"), "{e}");
    }
}
