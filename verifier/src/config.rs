//! The verifier's TOML configuration with its documented defaults (README "Router verifier"),
//! checked as a whole when loaded so that a bad file fails with one clear line.

use crate::admission::AdmissionConfig;
pub use crate::core::Dataplane;
use crate::core::RouterConfig;
use crate::plan::vip::VipSpec;
use crate::plan::vip6::Vip6Spec;
use crate::plan::GapPolicy;
use crate::querier::QuerierConfig;
use core::time::Duration;
use igmp_ext::{MemberId, Slice, Slice6, VerifierConfig};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interfaces the verifier is the IGMP router and multicast router on.
    pub interfaces: Vec<String>,
    /// Group keys for the offline key source (see `keyfile`). Exactly one of `keys` and
    /// `[keystore]` is set.
    #[serde(default)]
    pub keys: Option<PathBuf>,
    /// The DNSSEC-validating dns-keystore client as the key source.
    #[serde(default)]
    pub keystore: Option<KeystoreSection>,
    /// Unix socket serving the status (`--status`).
    #[serde(default = "default_status_socket")]
    pub status_socket: PathBuf,
    /// Prometheus text metrics over HTTP; none by default.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub verifier: VerifierSection,
    #[serde(default)]
    pub querier: QuerierSection,
    #[serde(default)]
    pub native: NativeSection,
    #[serde(default)]
    pub rate_limit: RateLimitSection,
    #[serde(default)]
    pub vip: Vec<VipSection>,
    /// Where pin mode's flows are kept and forwarded (SPEC.md §10.3).
    #[serde(default)]
    pub vip_pin: VipPinSection,
    #[serde(default)]
    pub shutdown: ShutdownSection,
    /// Liveness beacons and standby claims (SPEC.md §5.5).
    #[serde(default)]
    pub liveness: crate::core::LivenessConfig,
    /// Routes held for a routing daemon to announce, for redundant verifiers (SPEC.md §10.6).
    #[serde(default)]
    pub announce: AnnounceSection,
    /// Control groups the verifier carries between its interfaces, to and from members with a
    /// verified shared join only (SPEC.md §3.9, §10.7). Each needs signed joins (it is
    /// protected as a /32) and group keys like a protected group; none may be inside
    /// `verifier.protected` (a steered group) or a VIP's group.
    #[serde(default)]
    pub control_groups: Vec<Ipv4Addr>,
    /// This verifier is a site router: its site agent claims upstream what the site serves
    /// (SPEC.md §10.8).
    #[serde(default)]
    pub site: Option<SiteSection>,
}

fn default_status_socket() -> PathBuf {
    PathBuf::from("/run/manycast-verifier.sock")
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierSection {
    /// Groups that need signed joins, as prefixes ("232.0.0.0/8").
    pub protected: Vec<String>,
    pub timeliness_window_ms: u64,
    pub replay_capacity: usize,
    /// Live replay entries one member may hold (SPEC.md §5): above its legitimate join rate.
    pub replay_per_member: usize,
    /// IPv6 groups that need signed MLDv2 joins, as prefixes ("ff3e::/32", SPEC.md §5.6).
    /// Empty (the default): the verifier is IPv4 only, opens no MLD socket and sends no MLD
    /// query, so an IPv4 deployment is not an MLD querier on its links and spends nothing on
    /// MLD datagrams.
    pub protected6: Vec<String>,
}

impl Default for VerifierSection {
    fn default() -> Self {
        VerifierSection {
            protected: vec!["232.0.0.0/8".into()],
            timeliness_window_ms: 30_000,
            replay_capacity: 65_536,
            replay_per_member: 256,
            protected6: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuerierSection {
    pub robustness: u8,
    pub query_interval_ms: u64,
    pub query_response_interval_ms: u64,
    pub last_member_query_interval_ms: u64,
    /// Other routers on our links whose queries count (election, timers); queries from anyone
    /// else are ignored and the verifier keeps querying (SPEC.md §12).
    pub trusted_queriers: Vec<Ipv4Addr>,
}

impl Default for QuerierSection {
    fn default() -> Self {
        let d = QuerierConfig::default();
        QuerierSection {
            robustness: d.robustness,
            query_interval_ms: d.query_interval.as_millis() as u64,
            query_response_interval_ms: d.query_response_interval.as_millis() as u64,
            last_member_query_interval_ms: d.last_member_query_interval.as_millis() as u64,
            trusted_queriers: d.trusted_queriers,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NativeSection {
    /// "drop" or "fallback" (then `fallback_member` is required).
    pub gap: String,
    pub fallback_member: Option<u32>,
    /// MFC entries whose packet counter has not moved for this long are removed.
    pub idle_timeout_ms: u64,
    /// How long after start entries left by an earlier process are kept as they are while
    /// members answer the first queries.
    pub adopt_grace_ms: Option<u64>,
    /// Route plain (unprotected) groups like an IGMP multicast router: toward every interface
    /// with listeners. Default true (the servers' control group needs it across subnets); when
    /// false their packets are dropped in the kernel.
    pub route_plain_groups: bool,
    /// How native mode reaches the kernel: "mroute" (the multicast routing socket: upcalls and
    /// MFC entries), "nft" (an nftables netdev table; for kernels without CONFIG_IP_MROUTE), or
    /// "auto" (default): mroute when the kernel has it, else nft.
    pub dataplane: Dataplane,
}

impl Default for NativeSection {
    fn default() -> Self {
        NativeSection {
            gap: "drop".into(),
            fallback_member: None,
            idle_timeout_ms: 60_000,
            adopt_grace_ms: None,
            route_plain_groups: true,
            dataplane: Dataplane::Auto,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// Refused IGMP datagrams per second on one interface before the signed joins arriving
    /// there lose priority for verification (burst: one second's worth). Nothing is dropped
    /// for it (SPEC.md §5.4).
    pub per_interface_pps: u32,
    /// Refused IGMP datagrams per second from one source address before its signed joins lose
    /// priority for verification.
    pub per_source_pps: u32,
    /// Verified joins per second from one member before its further joins lose priority.
    pub per_member_pps: u32,
    /// Signature checks per second the verifier spends at most (burst: a tenth of a second).
    pub verify_per_second: u32,
    /// Signed joins waiting for verification at most; beyond it the lowest priority's are shed
    /// at random.
    pub verify_backlog: usize,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        let a = AdmissionConfig::default();
        RateLimitSection {
            per_interface_pps: a.per_interface_failures,
            per_source_pps: a.per_source_failures,
            per_member_pps: a.per_member,
            verify_per_second: a.verify_per_second,
            verify_backlog: a.backlog,
        }
    }
}

impl RateLimitSection {
    fn admission(&self) -> Result<AdmissionConfig, ConfigError> {
        let positive = |name: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid(format!(
                    "rate_limit.{name} must be at least 1"
                )))
            } else {
                Ok(())
            }
        };
        positive("per_interface_pps", self.per_interface_pps.into())?;
        positive("per_source_pps", self.per_source_pps.into())?;
        positive("per_member_pps", self.per_member_pps.into())?;
        positive("verify_per_second", self.verify_per_second.into())?;
        if !(16..=1_000_000).contains(&self.verify_backlog) {
            return Err(ConfigError::Invalid(
                "rate_limit.verify_backlog must be 16 to 1000000".into(),
            ));
        }
        Ok(AdmissionConfig {
            per_source_failures: self.per_source_pps,
            per_interface_failures: self.per_interface_pps,
            per_member: self.per_member_pps,
            verify_per_second: self.verify_per_second,
            backlog: self.verify_backlog,
        })
    }
}

/// A unicast VIP bound to a protected group (VIP mode, SPEC.md §10.3): both IPv4, or both
/// IPv6 with the group inside `verifier.protected6` (§10.3.1).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VipSection {
    pub address: IpAddr,
    pub group: IpAddr,
    /// Keep established connections on the member they started on (pin mode).
    #[serde(default)]
    pub pin: bool,
}

/// Where the verifier fetches group keys from (the dns-keystore daemon, README "dns-keystore").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeystoreSection {
    /// The keystore's DNS address.
    pub server: SocketAddr,
    /// The BIND `trust-anchors` file the dns-keystore daemon writes.
    pub trust_anchor: PathBuf,
    /// The protected groups whose records are fetched and kept fresh.
    #[serde(default)]
    pub groups: Vec<Ipv4Addr>,
    /// The same for IPv6 groups (each inside `verifier.protected6`): their records are looked
    /// up at their nibble names (SPEC.md §8.2) for the MLDv2 path.
    #[serde(default)]
    pub groups6: Vec<Ipv6Addr>,
    /// How often records whose TTL ran out are fetched again.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// How long past the TTL cached keys are served while the keystore does not answer
    /// (default: the client's, 1 hour).
    #[serde(default)]
    pub max_stale_ms: Option<u64>,
    /// Where the newest accepted record's signature time per group is kept, so that a restart
    /// still refuses a replayed older record (SPEC.md §8.9). One file per host is enough:
    /// processes sharing it merge under a lock.
    #[serde(default = "default_rollback_marks")]
    pub rollback_marks: PathBuf,
}

fn default_refresh_ms() -> u64 {
    5_000
}

fn default_rollback_marks() -> PathBuf {
    PathBuf::from("/var/lib/manycast/verifier-rollback.marks")
}

/// Where group keys come from, as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySourceConfig<'a> {
    File(&'a std::path::Path),
    Keystore(&'a KeystoreSection),
}

/// Which data plane carries pin mode's pinned flows.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PinDataplane {
    /// A tc ingress program with its flow table in a BPF map (`sys::bpf`); what it passes on
    /// meets the nftables plane. Falls back to `nft`, with a log line, where it cannot load.
    Bpf,
    /// The nftables netdev table's flow tables only.
    Nft,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VipPinSection {
    pub dataplane: PinDataplane,
    /// The directory (on a bpf filesystem) the tc program's maps are pinned in, so that the
    /// pins outlive the verifier. Default: `/sys/fs/bpf/manycast/net-<inode of the network
    /// namespace>`, so that verifiers in two namespaces sharing the filesystem keep apart and a
    /// restarted one in the same namespace finds its maps.
    pub pin_dir: Option<PathBuf>,
}

impl VipPinSection {
    pub fn pin_dir(&self) -> PathBuf {
        use std::os::unix::fs::MetadataExt;
        self.pin_dir.clone().unwrap_or_else(|| {
            let ns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
            PathBuf::from(format!("/sys/fs/bpf/manycast/net-{ns}"))
        })
    }
}

impl Default for VipPinSection {
    fn default() -> Self {
        VipPinSection {
            dataplane: PinDataplane::Bpf,
            pin_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// Leave MFC entries, VIFs, the nftables table and policy routes in place on SIGTERM, so
    /// that a restarted verifier takes them over without a gap. Default: remove everything.
    pub keep_kernel_state: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceSection {
    /// Hold a route for each `[[vip]]` (through the `mcv-announce` TUN device, which dies with
    /// the process) in the main table while this router can
    /// verify and steer it, for a routing daemon (FRR: `redistribute kernel`) to announce.
    pub enabled: bool,
    /// The kernel route protocol the routes carry (iproute2's `rt_protos`; 5 to 255, and not
    /// one another daemon uses): the routing daemon's route map can match it, and a restarted
    /// verifier removes what it finds with it.
    pub protocol: u8,
}

/// Not in iproute2's `rt_protos` nor used by FRR's zebra (186 to 196).
pub const DEFAULT_ANNOUNCE_PROTOCOL: u8 = 77;

impl Default for AnnounceSection {
    fn default() -> Self {
        AnnounceSection {
            enabled: false,
            protocol: DEFAULT_ANNOUNCE_PROTOCOL,
        }
    }
}

/// A configuration the operator must fix, as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read, or is not a valid configuration.
    #[error(transparent)]
    File(#[from] daemon_kit::ConfigError),
    /// What is wrong with the configuration.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads, parses and checks the file (`daemon_kit::config`).
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        Ok(daemon_kit::config::load(path, |c: &Config| {
            c.validate().map_err(|e| e.to_string())
        })?)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = daemon_kit::config::parse(text).map_err(ConfigError::Invalid)?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.interfaces.is_empty() {
            return Err(ConfigError::Invalid("`interfaces` is empty".into()));
        }
        if self.interfaces.len() > crate::plan::MAX_VIFS {
            return Err(ConfigError::Invalid("more than 32 interfaces".into()));
        }
        self.protected()?;
        self.protected6()?;
        self.check_control_groups()?;
        self.check_site()?;
        self.key_source()?;
        self.gap_policy()?;
        self.rate_limit.admission()?;
        if !(1..=7).contains(&self.querier.robustness) {
            return Err(ConfigError::Invalid(
                "querier.robustness must be 1 to 7".into(),
            ));
        }
        if self.querier.query_response_interval_ms >= self.querier.query_interval_ms {
            return Err(ConfigError::Invalid(
                "querier.query_response_interval_ms must be less than query_interval_ms".into(),
            ));
        }
        if self.announce.enabled {
            if self.announce.protocol < 5 {
                return Err(ConfigError::Invalid(format!(
                    "announce.protocol {} is one the kernel reserves (0 to 4: unspec, redirect, \
                     kernel, boot, static); pick 5 to 255, one no other daemon uses",
                    self.announce.protocol
                )));
            }
            if self.vip.is_empty() {
                return Err(ConfigError::Invalid(
                    "announce.enabled with no [[vip]]: there is nothing to announce".into(),
                ));
            }
        }
        for v in &self.vip {
            self.check_vip(v)?;
        }
        Ok(())
    }

    /// The key source: exactly one of `keys` and `[keystore]`.
    pub fn key_source(&self) -> Result<KeySourceConfig<'_>, ConfigError> {
        match (&self.keys, &self.keystore) {
            (Some(k), None) => Ok(KeySourceConfig::File(k)),
            (None, Some(ks)) => {
                if ks.groups.is_empty() && ks.groups6.is_empty() {
                    return Err(ConfigError::Invalid(
                        "keystore.groups and keystore.groups6 are empty: no group to fetch keys for"
                            .into(),
                    ));
                }
                let protected6 = self.protected6()?;
                if let Some(g) = ks
                    .groups6
                    .iter()
                    .find(|g| !protected6.iter().any(|p| p.contains_addr(**g)))
                {
                    return Err(ConfigError::Invalid(format!(
                        "keystore.groups6: group {g} is not inside verifier.protected6"
                    )));
                }
                if ks.refresh_ms == 0 {
                    return Err(ConfigError::Invalid(
                        "keystore.refresh_ms must be positive".into(),
                    ));
                }
                let protected = self.protected()?;
                if let Some(g) = ks
                    .groups
                    .iter()
                    .find(|g| !protected.iter().any(|p| p.contains_addr(**g)))
                {
                    return Err(ConfigError::Invalid(format!(
                        "keystore.groups: group {g} is not protected"
                    )));
                }
                Ok(KeySourceConfig::Keystore(ks))
            }
            (Some(_), Some(_)) => Err(ConfigError::Invalid(
                "both `keys` and `[keystore]` are set: configure exactly one key source".into(),
            )),
            (None, None) => Err(ConfigError::Invalid(
                "no key source: set `keys` (a key file) or a `[keystore]` section".into(),
            )),
        }
    }

    /// The keystore client's settings, with the trust anchor read from its file.
    pub fn keystore_client_config(
        ks: &KeystoreSection,
    ) -> Result<dns_keystore::client::ClientConfig, ConfigError> {
        let path = &ks.trust_anchor;
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Invalid(format!(
                "keystore.trust_anchor: cannot read {}: {e}",
                path.display()
            ))
        })?;
        let anchor = dns_keystore::validate::TrustAnchor::parse(&text).map_err(|e| {
            ConfigError::Invalid(format!("keystore.trust_anchor {}: {e}", path.display()))
        })?;
        let mut c = dns_keystore::client::ClientConfig::new(ks.server, anchor);
        if let Some(ms) = ks.max_stale_ms {
            c.max_stale = Duration::from_millis(ms);
        }
        Ok(c)
    }

    /// Groups that need signed joins: `verifier.protected` and the control groups.
    pub fn protected(&self) -> Result<Vec<Slice>, ConfigError> {
        let mut p = self.steered()?;
        p.extend(self.control_groups.iter().map(|g| Slice::prefix(*g, 32)));
        Ok(p)
    }

    /// `verifier.protected6`: IPv6 multicast prefixes (ff00::/8), each at least a /8.
    pub fn protected6(&self) -> Result<Vec<Slice6>, ConfigError> {
        let multicast = Slice6::prefix(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8);
        self.verifier
            .protected6
            .iter()
            .map(|p| {
                let s: Slice6 = p
                    .parse()
                    .map_err(|e| ConfigError::Invalid(format!("verifier.protected6 {p:?}: {e}")))?;
                if !s.is_subset_of(&multicast) {
                    return Err(ConfigError::Invalid(format!(
                        "verifier.protected6 {p:?}: not inside the IPv6 multicast range ff00::/8"
                    )));
                }
                Ok(s)
            })
            .collect()
    }

    /// A VIP and its group are of one family; the group is protected (an IPv6 one inside
    /// `verifier.protected6`), and the VIP a unicast address named once.
    fn check_vip(&self, v: &VipSection) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::Invalid(format!("vip {}: {why}", v.address)));
        if self.vip.iter().filter(|o| o.address == v.address).count() > 1 {
            return bad("named twice".into());
        }
        if v.address.is_multicast() || v.address.is_unspecified() {
            return bad("not a unicast address".into());
        }
        match (v.address, v.group) {
            (IpAddr::V4(_), IpAddr::V4(g)) => {
                if !self.protected()?.iter().any(|p| p.contains_addr(g)) {
                    return bad(format!("group {g} is not protected"));
                }
            }
            (IpAddr::V6(_), IpAddr::V6(g)) => {
                if !self.protected6()?.iter().any(|p| p.contains_addr(g)) {
                    return bad(format!("group {g} is not inside verifier.protected6"));
                }
            }
            (_, g) => {
                return bad(format!(
                    "group {g} is of the other address family: an IPv4 VIP needs an IPv4 group, \
                     an IPv6 VIP an IPv6 group"
                ))
            }
        }
        Ok(())
    }

    /// A control group is a multicast group outside the link-local block, not steered (inside
    /// `verifier.protected`) and not a VIP's group, named once.
    fn check_control_groups(&self) -> Result<(), ConfigError> {
        let steered = self.steered()?;
        for (i, g) in self.control_groups.iter().enumerate() {
            let bad = |why: &str| Err(ConfigError::Invalid(format!("control group {g}: {why}")));
            if !g.is_multicast() || g.octets()[..3] == [224, 0, 0] {
                return bad("not a routable multicast group");
            }
            if steered.iter().any(|p| p.contains_addr(*g)) {
                return bad("inside verifier.protected, whose groups are steered by slice");
            }
            if self.vip.iter().any(|v| v.group == *g) {
                return bad("a VIP's group");
            }
            if self.control_groups[..i].contains(g) {
                return bad("named twice");
            }
        }
        Ok(())
    }

    /// `verifier.protected`: the groups whose sources are steered to their slice's owner.
    fn steered(&self) -> Result<Vec<Slice>, ConfigError> {
        self.verifier
            .protected
            .iter()
            .map(|p| {
                let (a, l) = p.split_once('/').ok_or_else(|| {
                    ConfigError::Invalid(format!("protected group {p:?}: not a prefix"))
                })?;
                let a: Ipv4Addr = a.parse().map_err(|_| {
                    ConfigError::Invalid(format!("protected group {p:?}: bad address"))
                })?;
                let l: u8 = l.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
                    ConfigError::Invalid(format!("protected group {p:?}: bad length"))
                })?;
                Ok(Slice::prefix(a, l))
            })
            .collect()
    }

    pub fn gap_policy(&self) -> Result<GapPolicy, ConfigError> {
        match (self.native.gap.as_str(), self.native.fallback_member) {
            ("drop", None) => Ok(GapPolicy::Drop),
            ("fallback", Some(m)) => Ok(GapPolicy::Fallback(MemberId(m))),
            ("drop", Some(_)) => Err(ConfigError::Invalid(
                "native.fallback_member is set but native.gap is \"drop\"".into(),
            )),
            ("fallback", None) => Err(ConfigError::Invalid(
                "native.gap = \"fallback\" needs native.fallback_member".into(),
            )),
            (other, _) => Err(ConfigError::Invalid(format!(
                "native.gap {other:?}: expected \"drop\" or \"fallback\""
            ))),
        }
    }

    pub fn querier_config(&self) -> QuerierConfig {
        QuerierConfig {
            robustness: self.querier.robustness,
            query_interval: Duration::from_millis(self.querier.query_interval_ms),
            query_response_interval: Duration::from_millis(self.querier.query_response_interval_ms),
            last_member_query_interval: Duration::from_millis(
                self.querier.last_member_query_interval_ms,
            ),
            trusted_queriers: self.querier.trusted_queriers.clone(),
        }
    }

    /// The pipeline's settings; claims live for the querier's Group Membership Interval.
    pub fn verifier_config(&self) -> Result<VerifierConfig, ConfigError> {
        Ok(VerifierConfig {
            timeliness_window: Duration::from_millis(self.verifier.timeliness_window_ms),
            claim_hold: self.querier_config().group_membership_interval(),
            replay_capacity: self.verifier.replay_capacity,
            replay_per_member: self.verifier.replay_per_member,
            protected: self.protected()?,
            ..VerifierConfig::default()
        })
    }

    pub fn adopt_grace(&self) -> Duration {
        Duration::from_millis(self.native.adopt_grace_ms.unwrap_or_else(|| {
            let q = self.querier_config();
            (q.query_response_interval + q.startup_query_interval()).as_millis() as u64
        }))
    }

    /// The router core's settings.
    /// `[vip_pin]`, and whether IPv4 and IPv6 VIPs are configured: the tc program's two
    /// families (SPEC.md §10.3.1).
    pub fn vip_pin_families(&self) -> (VipPinSection, [bool; 2]) {
        let v6 = |v: &VipSection| v.address.is_ipv6();
        let families = [self.vip.iter().any(|v| !v6(v)), self.vip.iter().any(v6)];
        (self.vip_pin.clone(), families)
    }

    pub fn router_config(&self) -> Result<RouterConfig, ConfigError> {
        Ok(RouterConfig {
            verifier: self.verifier_config()?,
            querier: self.querier_config(),
            admission: self.rate_limit.admission()?,
            gap: self.gap_policy()?,
            route_plain_groups: self.native.route_plain_groups,
            idle_timeout: Duration::from_millis(self.native.idle_timeout_ms),
            adopt_grace: self.adopt_grace(),
            keep_kernel_state: self.shutdown.keep_kernel_state,
            announce: crate::core::AnnounceConfig {
                enabled: self.announce.enabled,
                protocol: self.announce.protocol,
            },
            vips: self
                .vip
                .iter()
                .filter_map(|v| match (v.address, v.group) {
                    (IpAddr::V4(address), IpAddr::V4(group)) => Some(VipSpec {
                        address,
                        group,
                        pin: v.pin,
                    }),
                    _ => None,
                })
                .collect(),
            vips6: self
                .vip
                .iter()
                .filter_map(|v| match (v.address, v.group) {
                    (IpAddr::V6(address), IpAddr::V6(group)) => Some(Vip6Spec {
                        address,
                        group,
                        pin: v.pin,
                    }),
                    _ => None,
                })
                .collect(),
            liveness: self.liveness,
            control_groups: self.control_groups.clone(),
            protected6: self.protected6()?,
        })
    }
}

#[path = "config_site.rs"]
mod site;
pub use site::SiteSection;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
