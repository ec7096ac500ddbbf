//! What the verifier shows: the status snapshot (`--status`, `--json`) and Prometheus text
//! metrics. Pure rendering; the core fills the structs.

use daemon_kit::metrics::{label, Exposition};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Status {
    pub interfaces: Vec<InterfaceStatus>,
    pub ownership: Vec<OwnershipRow>,
    /// Groups with listeners, per interface, as the querier has them (plain groups are routed by
    /// these).
    #[serde(default)]
    pub listeners: Vec<ListenerRow>,
    pub mfc: Vec<MfcRow>,
    /// Native mode's data plane: "mroute" (MFC entries, `mfc`) or "nft" (the netdev map,
    /// `native`; kernels without multicast routing).
    #[serde(default)]
    pub dataplane: String,
    /// The nft data plane's map, per group and member.
    #[serde(default)]
    pub native: Vec<NativeMapRow>,
    pub vips: Vec<VipRow>,
    /// What carries pin mode's pinned flows (SPEC.md §10.3): "tc" (the tc program), "nft"
    /// (the flow tables: configured so, or fallen back to), "" (no pinned VIP yet).
    #[serde(default)]
    pub pin_dataplane: String,
    /// What carries the pinned flows of IPv6 VIPs (SPEC.md §10.3.1): "nft" (the `manycast_vip6`
    /// flow tables), "" (no pinned IPv6 VIP).
    #[serde(default)]
    pub pin_dataplane6: String,
    /// VIPs whose route this router holds for its routing daemon to announce (SPEC.md
    /// §10.6); empty unless `[announce]` is enabled.
    #[serde(default)]
    pub announced: Vec<std::net::IpAddr>,
    /// Verified members of the routed control groups, which the control table carries
    /// (SPEC.md §10.7).
    #[serde(default)]
    pub control: Vec<ControlRow>,
    /// The site agent, on a site router (`[site]`, SPEC.md §10.8).
    #[serde(default)]
    pub site: Option<SiteStatus>,
    pub counters: Counters,
}

/// A site router's agent: its upper group and what it claims upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SiteStatus {
    pub site: u32,
    /// Its member id in the upper group (its router certificate's).
    pub member: u32,
    /// The upper group's committed epoch: the upstream joins' epoch.
    pub upper_epoch: Option<u64>,
    /// Units the upper allocation gives this agent.
    pub own_units: u64,
    /// Units claimed upstream: its own that a live member of the site serves.
    pub claim_units: u64,
    /// Units of every agent of its site (those it knows the site of).
    pub scope_units: u64,
    /// The weight it announces in the upper group (0: the site has no live member).
    pub weight: u32,
    /// Live members of the upper group, itself included.
    pub peers: Vec<u32>,
    /// Upstream joins sent, leaves included.
    pub upstream_joins_sent: u64,
}

/// A control group member: where its shared join came from, and how long it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ControlRow {
    pub group: String,
    pub member: u32,
    pub interface: String,
    pub sender: String,
    pub expires_in_ms: u64,
}

/// Native mode on the nft data plane: `values` of the group's map (`ip saddr & mask`) steer to
/// `member`, forwarded to `via` out of `device`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NativeMapRow {
    pub group: String,
    pub member: u32,
    pub via: String,
    pub device: String,
    pub mask: String,
    pub values: u64,
    /// Packets the kernel forwarded to this member (its chain's counter: ownership changes move
    /// map elements and leave it alone, so it counts since the table was last written whole;
    /// the totals in `counters` also keep what rewritten tables counted).
    #[serde(default)]
    pub packets: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: u32,
    pub vif: u16,
    pub address: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OwnershipRow {
    pub group: String,
    pub member: u32,
    pub slices: String,
    pub epoch: u64,
    pub interface: String,
    pub sender: String,
    /// Liveness beacons (SPEC.md §5.5): `live`, `dead` (its units went to their standbys), or
    /// absent when the member sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<String>,
    /// The units this member takes if their owner is found dead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub standby: String,
    /// Slices its join claims at a later epoch that a member the router vouches for still
    /// holds (SPEC.md §5.2): not owned until released.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting: String,
    pub expires_in_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenerRow {
    pub interface: String,
    pub group: String,
    pub expires_in_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MfcRow {
    pub group: String,
    pub source: String,
    pub iif: String,
    /// The outgoing interfaces, comma-separated, or "drop".
    pub oif: String,
    /// The member the entry points to; none for drop entries and entries adopted at start.
    pub member: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VipRow {
    pub address: String,
    pub group: String,
    pub pin: bool,
    /// (member, mark, next hop)
    pub members: Vec<(u32, u32, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Counters {
    pub joins_accepted: u64,
    pub plain_accepted: u64,
    /// (reason, count), every reason.
    pub rejected: Vec<(String, u64)>,
    /// (limit, count): refusals while the interface's or the source's failure budget was
    /// overdrawn, and candidates shed from a full verification backlog (`capacity`).
    pub rate_limited: Vec<(String, u64)>,
    /// Candidates (signed joins past the cheap checks) given signature checks.
    #[serde(default)]
    pub verify_checked: u64,
    /// (class, count): candidates queued for verification by priority class.
    #[serde(default)]
    pub verify_queued: Vec<(String, u64)>,
    /// Candidates waiting for verification now.
    #[serde(default)]
    pub verify_backlog: u64,
    pub upcalls: u64,
    pub upcalls_per_second: u64,
    pub mfc_entries: u64,
    pub mfc_installs: u64,
    pub nft_transactions: u64,
    /// Of those, whole-table rewrites (a table's shape changed, or what the kernel held was
    /// unknown); the others changed only the map elements that moved.
    #[serde(default)]
    pub nft_rewrites: u64,
    /// Of the others, those sent straight over nfnetlink (the rest went through libnftables).
    #[serde(default)]
    pub nfnl_batches: u64,
    /// Ownership changes applied in the kernel since start, each timed from the first of its
    /// ops to the last (every data plane's share: MFC entries, nft transactions, VIP routes).
    #[serde(default)]
    pub repoints: u64,
    /// The median cost of one of those re-points, in microseconds, over the most recent 1,024
    /// (none before the first).
    #[serde(default)]
    pub repoint_us: Option<u64>,
    #[serde(default)]
    pub repoint_p99_us: Option<u64>,
    #[serde(default)]
    pub repoint_max_us: Option<u64>,
    pub kernel_errors: u64,
    pub queries_sent: u64,
    /// The nft data plane's packet counters, summed over every table it wrote: forwarded to a
    /// member, dropped for TTL <= 1, dropped for no owner.
    #[serde(default)]
    pub native_forwarded: u64,
    #[serde(default)]
    pub native_ttl_dropped: u64,
    #[serde(default)]
    pub native_gap_dropped: u64,
    /// Queries that took no part in the election: malformed for RFC 3376 §4 or from a router
    /// not in `querier.trusted_queriers`.
    #[serde(default)]
    pub queries_ignored: u64,
    /// Times a group was asked to report again at once because claims were dropped under it
    /// (revoked, retired or expired; SPEC.md §5.4).
    #[serde(default)]
    pub group_reasks: u64,
    /// Claims left out of an nft map (native netdev or VIP) because the map cannot express
    /// their slices together with the others' (issue 13, item 9).
    #[serde(default)]
    pub claims_left_out: u64,
    /// Times a claim was kept because a datagram that may have refreshed it was lost unverified:
    /// a copy from where it is shed from a full backlog, or any datagram dropped at the full
    /// socket queue (a flood; SPEC.md §5.4).
    #[serde(default)]
    pub claims_held_unverified: u64,
    /// IGMP datagrams the kernel dropped at the verifier's full socket queue (SO_RXQ_OVFL).
    #[serde(default)]
    pub socket_drops: u64,
    /// Liveness beacons that proved a later chain value, and those refused (SPEC.md §5.5).
    #[serde(default)]
    pub beacons_accepted: u64,
    #[serde(default)]
    pub beacons_refused: u64,
    /// Times a member's beacons stopped and its units went to their standbys, and came back.
    #[serde(default)]
    pub members_found_dead: u64,
    #[serde(default)]
    pub members_back: u64,
    /// Times an IPv6 claim's member was found dead by its beacons and its IPv6 units went to
    /// their standbys (SPEC.md §5.5, §5.6).
    #[serde(default)]
    pub mld_claims_found_dead: u64,
    /// Liveness checks that came too late to judge anyone: the router itself was held up
    /// (SPEC.md §5.5).
    #[serde(default)]
    pub liveness_late_checks: u64,
    /// MLDv2 (issue 15): signed joins accepted, plain MLD messages, refusals by reason (every
    /// reason), and datagrams from the unspecified address (`::`, duplicate address
    /// detection) ignored unread.
    #[serde(default)]
    pub mld_joins_accepted: u64,
    #[serde(default)]
    pub mld_plain_accepted: u64,
    #[serde(default)]
    pub mld_rejected: Vec<(String, u64)>,
    #[serde(default)]
    pub mld_unspecified_ignored: u64,
    /// MLD datagrams the kernel dropped at the verifier's full MLD socket queue.
    #[serde(default)]
    pub mld_socket_drops: u64,
    /// MLDv2 candidates in the shared verification backlog (SPEC.md §5.4, §5.6), as the
    /// `rate_limited`, `verify_checked`, `verify_queued` and `verify_backlog` above count
    /// IGMPv3 ones.
    #[serde(default)]
    pub mld_rate_limited: Vec<(String, u64)>,
    #[serde(default)]
    pub mld_verify_checked: u64,
    #[serde(default)]
    pub mld_verify_queued: Vec<(String, u64)>,
    #[serde(default)]
    pub mld_verify_backlog: u64,
}

impl Status {
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "interfaces:");
        for i in &self.interfaces {
            let _ = writeln!(
                o,
                "  {:<10} ifindex {:<4} vif {:<3} {:<16} {}",
                i.name, i.ifindex, i.vif, i.address, i.role
            );
        }
        let _ = writeln!(o, "ownership (group, member, epoch, interface, slices):");
        for r in &self.ownership {
            let _ = writeln!(
                o,
                "  {:<15} member {:<5} epoch {:<6} {:<10} from {:<15} expires in {} ms  {}",
                r.group, r.member, r.epoch, r.interface, r.sender, r.expires_in_ms, r.slices
            );
        }
        let _ = writeln!(o, "listeners (interface, group):");
        for l in &self.listeners {
            let _ = writeln!(
                o,
                "  {:<10} {:<15} expires in {} ms",
                l.interface, l.group, l.expires_in_ms
            );
        }
        if let Some(site) = &self.site {
            let epoch = site.upper_epoch.map_or("none".into(), |e| e.to_string());
            let _ = writeln!(
                o,
                "site {} agent member {}: upper epoch {epoch}, own units {}, claimed upstream {}, scope {}, weight {}, peers {:?}, upstream joins sent {}",
                site.site, site.member, site.own_units, site.claim_units, site.scope_units, site.weight, site.peers, site.upstream_joins_sent
            );
        }
        if !self.control.is_empty() {
            let _ = writeln!(o, "control group members (carried between interfaces):");
            for r in &self.control {
                let _ = writeln!(
                    o,
                    "  {:<15} member {:<5} {:<10} from {:<15} expires in {} ms",
                    r.group, r.member, r.interface, r.sender, r.expires_in_ms
                );
            }
        }
        if !self.pin_dataplane.is_empty() {
            let _ = writeln!(o, "VIP pin mode carried by: {}", self.pin_dataplane);
        }
        if !self.pin_dataplane6.is_empty() {
            let _ = writeln!(o, "IPv6 VIP pin mode carried by: {}", self.pin_dataplane6);
        }
        if self.dataplane == "nft" {
            let _ = writeln!(
                o,
                "native data plane: nft (table netdev manycast_native), map values per member:"
            );
            for r in &self.native {
                let packets = r
                    .packets
                    .map(|p| format!(", {p} packets"))
                    .unwrap_or_default();
                let _ = writeln!(
                    o,
                    "  {:<15} member {:<5} {} of ip saddr & {} -> {} via {}{packets}",
                    r.group, r.member, r.values, r.mask, r.device, r.via
                );
            }
        }
        let _ = writeln!(o, "kernel MFC entries: {}", self.mfc.len());
        for m in &self.mfc {
            let member = m.member.map(|m| format!("member {m}")).unwrap_or_default();
            let _ = writeln!(
                o,
                "  ({}, {}) {} -> {} {}",
                m.source, m.group, m.iif, m.oif, member
            );
        }
        for v in &self.vips {
            let announced = self.announced.iter().any(|a| a.to_string() == v.address);
            let _ = writeln!(
                o,
                "vip {} group {}{}{}",
                v.address,
                v.group,
                if v.pin { " (pin)" } else { "" },
                if announced { " (announced)" } else { "" }
            );
            for (m, mark, via) in &v.members {
                let _ = writeln!(o, "  member {m} mark {mark:#x} via {via}");
            }
        }
        let c = &self.counters;
        let _ = writeln!(
            o,
            "joins accepted {}, plain {}, upcalls {} ({}/s), queries sent {}, kernel errors {}",
            c.joins_accepted,
            c.plain_accepted,
            c.upcalls,
            c.upcalls_per_second,
            c.queries_sent,
            c.kernel_errors
        );
        let rejected: Vec<String> = c
            .rejected
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let _ = writeln!(o, "rejected: {}", rejected.join(", "));
        if c.mld_joins_accepted + c.mld_plain_accepted > 0 || !c.mld_rejected.is_empty() {
            let rejected: Vec<String> = c
                .mld_rejected
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = writeln!(
                o,
                "MLD joins accepted {}, plain {}, from :: ignored {}, dropped at the socket {}; rejected: {}",
                c.mld_joins_accepted,
                c.mld_plain_accepted,
                c.mld_unspecified_ignored,
                c.mld_socket_drops,
                rejected.join(", ")
            );
            let shed = c.mld_rate_limited.iter().find(|(l, _)| l == "capacity");
            let _ = writeln!(
                o,
                "MLD joins given signature checks {}, shed {}, waiting {}",
                c.mld_verify_checked,
                shed.map_or(0, |(_, n)| *n),
                c.mld_verify_backlog
            );
        }
        o
    }

    /// Prometheus text exposition format 0.0.4 (`daemon_kit::metrics`).
    pub fn render_metrics(&self) -> String {
        let c = &self.counters;
        let mut m = Exposition::new("manycast_verifier");
        m.counter(
            "joins_accepted_total",
            "Signed joins accepted.",
            c.joins_accepted,
        );
        m.counter(
            "plain_accepted_total",
            "IGMP messages for public groups accepted as plain IGMP.",
            c.plain_accepted,
        );
        m.counter(
            "claims_left_out_total",
            "Claims left out of an nft map: their slice mask cannot be expressed with the others'.",
            c.claims_left_out,
        );
        m.counter(
            "claims_held_unverified_total",
            "Claims kept because a datagram that may have refreshed them was lost unverified: shed from a full backlog, or dropped at a full socket (a flood).",
            c.claims_held_unverified,
        );
        m.counter(
            "socket_drops_total",
            "IGMP datagrams the kernel dropped at the verifier's full socket queue (a flood faster than it reads).",
            c.socket_drops,
        );
        m.counter(
            "beacons_accepted_total",
            "Liveness beacons that proved a later value of a member's chain.",
            c.beacons_accepted,
        );
        m.counter(
            "beacons_refused_total",
            "Liveness beacons refused: malformed, for no watched claim, not from where the claim is, or proving nothing new.",
            c.beacons_refused,
        );
        m.counter(
            "members_found_dead_total",
            "Times a member's beacons stopped and its units went to their standbys.",
            c.members_found_dead,
        );
        m.counter(
            "mld_claims_found_dead_total",
            "Times an IPv6 claim's member was found dead by its beacons and its IPv6 units went to their standbys.",
            c.mld_claims_found_dead,
        );
        m.counter(
            "liveness_late_checks_total",
            "Liveness checks that came more than half a window late, so judged nobody (the router itself was held up).",
            c.liveness_late_checks,
        );
        m.counter(
            "group_reasks_total",
            "Groups asked to report again at once after claims were dropped under them.",
            c.group_reasks,
        );
        m.counter(
            "queries_ignored_total",
            "Queries ignored: not RFC 3376 section 4 conformant, or from an untrusted router.",
            c.queries_ignored,
        );
        m.counter_family(
            "joins_rejected_total",
            "IGMP reports refused, by reason.",
            c.rejected.iter().map(|(r, n)| (label("reason", r), *n)),
        );
        m.counter(
            "mld_joins_accepted_total",
            "Signed MLDv2 joins accepted.",
            c.mld_joins_accepted,
        );
        m.counter(
            "mld_plain_accepted_total",
            "MLD messages for public groups accepted as plain MLD.",
            c.mld_plain_accepted,
        );
        m.counter(
            "mld_socket_drops_total",
            "MLD datagrams the kernel dropped at the verifier's full MLD socket queue (a flood faster than it reads).",
            c.mld_socket_drops,
        );
        m.counter(
            "mld_unspecified_ignored_total",
            "MLD datagrams from the unspecified address (duplicate address detection) ignored.",
            c.mld_unspecified_ignored,
        );
        m.counter_family(
            "mld_joins_rejected_total",
            "MLD reports refused, by reason.",
            c.mld_rejected.iter().map(|(r, n)| (label("reason", r), *n)),
        );
        m.counter_family(
            "rate_limited_total",
            "Refusals while a source or interface failure budget was overdrawn; candidates shed from a full verification backlog (capacity).",
            c.rate_limited.iter().map(|(l, n)| (label("limit", l), *n)),
        );
        m.counter(
            "verify_checked_total",
            "Signed IGMPv3 joins past the cheap checks that were given signature checks.",
            c.verify_checked,
        );
        m.counter_family(
            "verify_queued_total",
            "Signed IGMPv3 joins past the cheap checks queued for verification, by priority class.",
            c.verify_queued.iter().map(|(l, n)| (label("class", l), *n)),
        );
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        m.gauge(
            "vip_pin_tc_program",
            "1 while pin mode's pinned flows are carried by the tc program, 0 on the nft flow tables or with no pinned VIP.",
            i64::from(self.pin_dataplane == "tc"),
        );
        m.gauge(
            "verify_backlog",
            "Signed IGMPv3 joins waiting for verification.",
            gauge(c.verify_backlog),
        );
        m.counter_family(
            "mld_rate_limited_total",
            "MLD refusals while a source or interface failure budget was overdrawn; signed MLDv2 joins shed from the full verification backlog (capacity).",
            c.mld_rate_limited.iter().map(|(l, n)| (label("limit", l), *n)),
        );
        m.counter(
            "mld_verify_checked_total",
            "Signed MLDv2 joins past the cheap checks that were given signature checks.",
            c.mld_verify_checked,
        );
        m.counter_family(
            "mld_verify_queued_total",
            "Signed MLDv2 joins past the cheap checks queued for verification, by priority class.",
            c.mld_verify_queued
                .iter()
                .map(|(l, n)| (label("class", l), *n)),
        );
        m.gauge(
            "mld_verify_backlog",
            "Signed MLDv2 joins waiting for verification (in the backlog shared with IGMPv3).",
            gauge(c.mld_verify_backlog),
        );
        m.gauge_family(
            "kernel_entries",
            "Kernel steering entries, by kind.",
            [
                ("mfc", c.mfc_entries),
                (
                    "native_map_value",
                    self.native.iter().map(|r| r.values).sum(),
                ),
                (
                    "vip_member",
                    self.vips.iter().map(|v| v.members.len() as u64).sum(),
                ),
                ("control_member", self.control.len() as u64),
            ]
            .map(|(kind, n)| (label("kind", kind), gauge(n))),
        );
        m.gauge_family(
            "vip_announced",
            "1 while this router holds the VIP's route for its routing daemon to announce.",
            self.vips.iter().map(|v| {
                let held = self.announced.iter().any(|a| a.to_string() == v.address);
                (label("vip", &v.address), i64::from(held))
            }),
        );
        m.counter_family(
            "native_packets_total",
            "Native-mode packets on the nft data plane, by what the kernel did with them.",
            [
                ("forwarded", c.native_forwarded),
                ("ttl-drop", c.native_ttl_dropped),
                ("gap-drop", c.native_gap_dropped),
            ]
            .map(|(action, n)| (label("action", action), n)),
        );
        m.counter(
            "mfc_installs_total",
            "MFC entries added or re-pointed.",
            c.mfc_installs,
        );
        m.counter(
            "nft_transactions_total",
            "nftables transactions applied.",
            c.nft_transactions,
        );
        m.counter(
            "nft_rewrites_total",
            "nftables transactions that rewrote a whole table (the others moved map elements only).",
            c.nft_rewrites,
        );
        m.counter(
            "nfnl_batches_total",
            "Map element updates sent straight over nfnetlink, one transaction each (the others went through libnftables).",
            c.nfnl_batches,
        );
        m.counter(
            "repoints_total",
            "Ownership changes applied in the kernel.",
            c.repoints,
        );
        m.gauge_family(
            "repoint_microseconds",
            "Cost of one ownership change in the kernel (its ops, every data plane), over the most recent 1,024: median, 99th percentile, maximum. No rows before the first.",
            [
                ("0.5", c.repoint_us),
                ("0.99", c.repoint_p99_us),
                ("1", c.repoint_max_us),
            ]
            .into_iter()
            .filter_map(|(q, v)| Some((label("quantile", q), gauge(v?)))),
        );
        m.counter(
            "upcalls_total",
            "IGMPMSG_NOCACHE upcalls from the kernel.",
            c.upcalls,
        );
        m.gauge(
            "upcalls_per_second",
            "Upcalls in the last whole second.",
            gauge(c.upcalls_per_second),
        );
        m.counter(
            "kernel_errors_total",
            "Failed kernel operations.",
            c.kernel_errors,
        );
        m.counter("queries_sent_total", "IGMP queries sent.", c.queries_sent);
        if let Some(site) = &self.site {
            m.counter(
                "site_upstream_joins_sent_total",
                "Signed joins (leaves included) the site agent sent upstream.",
                site.upstream_joins_sent,
            );
            m.gauge(
                "site_upper_epoch",
                "The upper group's committed epoch (0: none yet).",
                site.upper_epoch.unwrap_or(0) as i64,
            );
            m.gauge(
                "site_claim_units",
                "Units the site agent claims upstream.",
                site.claim_units as i64,
            );
        }
        m.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text_with_every_reason() {
        let s = Status {
            counters: Counters {
                joins_accepted: 3,
                rejected: vec![("unsigned".into(), 2), ("bad-signature".into(), 0)],
                ..Counters::default()
            },
            ..Status::default()
        };
        let m = s.render_metrics();
        assert!(m.contains("manycast_verifier_joins_accepted_total 3\n"));
        assert!(m.contains("manycast_verifier_joins_rejected_total{reason=\"unsigned\"} 2\n"));
        assert!(m.contains("manycast_verifier_joins_rejected_total{reason=\"bad-signature\"} 0\n"));
        assert!(m.contains("# TYPE manycast_verifier_upcalls_total counter\n"));
        assert!(
            m.contains("# HELP manycast_verifier_joins_accepted_total Signed joins accepted.\n")
        );
        assert!(
            m.contains("manycast_verifier_rate_limited_total{limit=\"source\"} 0\n")
                || s.counters.rate_limited.is_empty()
        );
        assert!(m.contains("manycast_verifier_kernel_entries{kind=\"native_map_value\"} 0\n"));
        assert!(m.contains("manycast_verifier_native_packets_total{action=\"ttl-drop\"} 0\n"));
        assert!(m.contains("# TYPE manycast_verifier_upcalls_per_second gauge\n"));
        let json = serde_json::to_string(&s).expect("serializes");
        assert_eq!(serde_json::from_str::<Status>(&json).expect("parses"), s);
        assert!(s.render_text().contains("unsigned 2"));
    }

    #[test]
    fn the_site_section_shows_in_status_text_and_metrics_only_on_a_site_router() {
        let plain = Status::default();
        assert!(!plain.render_metrics().contains("site_"));
        assert!(!plain.render_text().contains("site "));
        let s = Status {
            site: Some(SiteStatus {
                site: 2,
                member: 6,
                upper_epoch: Some(4),
                own_units: 128,
                claim_units: 120,
                scope_units: 128,
                weight: 1,
                peers: vec![5, 6],
                upstream_joins_sent: 9,
            }),
            ..Status::default()
        };
        let m = s.render_metrics();
        assert!(
            m.contains("manycast_verifier_site_upstream_joins_sent_total 9\n"),
            "{m}"
        );
        assert!(m.contains("manycast_verifier_site_upper_epoch 4\n"), "{m}");
        assert!(
            m.contains("manycast_verifier_site_claim_units 120\n"),
            "{m}"
        );
        let t = s.render_text();
        assert!(
            t.contains("site 2 agent member 6: upper epoch 4, own units 128, claimed upstream 120"),
            "{t}"
        );
        let json = serde_json::to_string(&s).expect("serializes");
        assert_eq!(serde_json::from_str::<Status>(&json).expect("parses"), s);
    }
}
