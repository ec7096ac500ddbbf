//! Prometheus text exposition (format 0.0.4, through `daemon_kit::metrics`) of the daemon's
//! counters, written to a file that a node exporter's textfile collector (or a test) reads and
//! served over HTTP by the admin side. Rendering is pure; only `write_file` touches the disk,
//! and it renames into place so that a reader never sees half a file.

use crate::service::ServiceCounters;
use control_channel::Counters;
use daemon_kit::metrics::{label, Exposition};
use igmp_ext::MemberId;
use std::path::Path;

/// Everything the daemon reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub member: u32,
    pub service: ServiceCounters,
    pub sessions: usize,
    /// The IPv6 service's counters and sessions (`group6`; zero without it).
    pub service6: ServiceCounters,
    pub sessions6: usize,
    /// The IPv6 group served (`group6`): the admin status shows IPv6 slices with it.
    pub group6: Option<std::net::Ipv6Addr>,
    pub control: Counters,
    pub joins_sent: u64,
    /// Signed MLDv2 joins sent for `group6` (SPEC.md §3.8).
    pub mld_joins_sent: u64,
    pub queries: u64,
    /// Standby notices from the router taken (SPEC.md §5.5).
    pub standby_notices: u64,
    /// Joins sent without their standby units or liveness anchor to fit the link MTU.
    pub joins_trimmed: u64,
    pub commits: u64,
    pub epoch: u64,
    pub slices: usize,
    /// Addresses covered by this member's slices (2^32 for the whole space).
    pub slice_addresses: u64,
    /// VIP mode, reset strategy: TCP connections of moved clients destroyed, and failed tries.
    pub vip_resets: u64,
    pub vip_reset_failures: u64,
    /// VIP mode, forward strategy: allocation units whose orphan TCP segments go to their old
    /// owner.
    pub vip_forward_units: u64,
    /// Forwarded datagrams that went over a direct path the old owner announced.
    pub forwarded_direct: u64,
    /// A drain is in progress.
    pub draining: bool,
    /// VIP mode, draining: open TCP connections to the VIP the drain still waits for.
    pub drain_connections: u64,
    /// `[keystore]` only: whether our credentials match the published record.
    pub keystore: Option<KeystoreStatus>,
    /// The health checks (SPEC.md §11.9).
    pub health: crate::health::HealthReport,
    /// `control.site_scope` only: the scope notices heard and the scope kept (SPEC.md §3.10).
    pub site_scope: Option<SiteScopeStatus>,
}

/// The site scope tracker's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteScopeStatus {
    pub counters: crate::site_scope::ScopeCounters,
    /// The kept scope of our group: its upper epoch and how many units it holds.
    pub current: Option<(u64, usize)>,
}

/// What the keystore says of our credentials (SPEC.md §11.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeystoreStatus {
    /// The reason they no longer match (`Mismatch::label`), if so.
    pub mismatch: Option<&'static str>,
    /// Refreshes that got no validated answer.
    pub refresh_failures: u64,
    /// No validated answer for TTL + `max_stale` (verifiers fail closed).
    pub stale: bool,
}

impl Snapshot {
    pub fn new(member: MemberId) -> Self {
        Snapshot {
            member: member.0,
            ..Snapshot::default()
        }
    }

    pub fn with_group6(mut self, group6: Option<std::net::Ipv6Addr>) -> Self {
        self.group6 = group6;
        self
    }

    /// The Prometheus text of every counter (`daemon_kit::metrics::Exposition`).
    pub fn render(&self) -> String {
        let mut m = Exposition::new("manycast_server");
        let s = &self.service;
        m.gauge("member", "This member's id.", gauge(u64::from(self.member)));
        m.counter("served_total", "Datagrams answered.", s.served);
        m.counter(
            "filtered_total",
            "Datagrams from sources outside this member's slices, not answered.",
            s.filtered,
        );
        m.counter(
            "sessions_refused_total",
            "Datagrams from new clients refused because the session table was full.",
            s.refused_full,
        );
        m.counter("resets_total", "Reset replies sent.", s.resets);
        m.counter(
            "retransmits_total",
            "Requests repeating the last request id, answered with the same number.",
            s.retransmits,
        );
        m.counter(
            "stale_requests_total",
            "Requests with an id below the session's last one (stale duplicates), not answered.",
            s.stale,
        );
        m.counter(
            "handed_off_total",
            "Sessions of moved slices sent to their new owner (handoff or forward list).",
            s.handed_off,
        );
        m.counter(
            "handoff_received_total",
            "Sessions received from an old owner (continued, or listed for forwarding).",
            s.received,
        );
        m.counter(
            "forwarded_total",
            "Datagrams of moved sessions passed to their old owner.",
            s.forwarded,
        );
        m.counter(
            "forwarded_direct_total",
            "Of those, datagrams sent over the old owner's direct path.",
            self.forwarded_direct,
        );
        m.counter(
            "forwarded_served_total",
            "Forwarded datagrams answered by this member as the old owner.",
            s.forwarded_served,
        );
        m.counter(
            "forward_refused_total",
            "Forwarded datagrams refused (not from the slice's owner or no such session).",
            s.forward_refused,
        );
        m.counter(
            "held_total",
            "Datagrams held while waiting for an old owner's session state.",
            s.held,
        );
        m.counter(
            "handoff_timeouts_total",
            "Clients started fresh because the old owner's state did not come in time.",
            s.handoff_timeouts,
        );
        m.counter(
            "bad_state_total",
            "Session state transfers that could not be decoded.",
            s.bad_state,
        );
        m.gauge(
            "draining",
            "1 while this member drains.",
            gauge(u64::from(self.draining)),
        );
        m.gauge(
            "drain_connections",
            "VIP mode, draining: TCP connections to the VIP the drain still waits for.",
            gauge(self.drain_connections),
        );
        m.gauge(
            "sessions",
            "Client sessions held.",
            gauge(self.sessions as u64),
        );
        let s6 = &self.service6;
        m.counter("served6_total", "IPv6 datagrams answered.", s6.served);
        m.counter(
            "filtered6_total",
            "IPv6 datagrams from sources outside this member's IPv6 slices, not answered.",
            s6.filtered,
        );
        m.counter(
            "sessions_refused6_total",
            "IPv6 datagrams from new clients refused because the session table was full.",
            s6.refused_full,
        );
        m.counter(
            "resets6_total",
            "Reset replies sent to IPv6 clients.",
            s6.resets,
        );
        m.counter(
            "retransmits6_total",
            "IPv6 requests repeating the last request id, answered with the same number.",
            s6.retransmits,
        );
        m.counter(
            "stale_requests6_total",
            "IPv6 requests with an id below the session's last one, not answered.",
            s6.stale,
        );
        m.counter(
            "handed_off6_total",
            "IPv6 sessions sent to their new owner (handoff) or announced to it (forward).",
            s6.handed_off,
        );
        m.counter(
            "received6_total",
            "IPv6 sessions received from their old owner.",
            s6.received,
        );
        m.counter(
            "forwarded6_total",
            "IPv6 datagrams passed to the old owner (forward, new-owner side).",
            s6.forwarded,
        );
        m.counter(
            "forwarded_served6_total",
            "Forwarded IPv6 datagrams answered by this member as the old owner.",
            s6.forwarded_served,
        );
        m.gauge(
            "sessions6",
            "IPv6 client sessions held.",
            gauge(self.sessions6 as u64),
        );
        m.counter(
            "joins_sent_total",
            "Signed IGMPv3 reports sent.",
            self.joins_sent,
        );
        m.counter(
            "mld_joins_sent_total",
            "Signed MLDv2 reports sent for the IPv6 group (group6).",
            self.mld_joins_sent,
        );
        m.counter("queries_total", "IGMP queries heard.", self.queries);
        m.counter(
            "joins_trimmed_total",
            "Joins sent without their standby units or liveness anchor to fit the link MTU.",
            self.joins_trimmed,
        );
        m.counter(
            "standby_notices_total",
            "Router notices that a dead member's units are steered here (or no longer).",
            self.standby_notices,
        );
        m.counter("commits_total", "Allocations committed.", self.commits);
        m.gauge(
            "epoch",
            "Epoch of the committed allocation.",
            gauge(self.epoch),
        );
        m.gauge(
            "slices",
            "Slices this member owns.",
            gauge(self.slices as u64),
        );
        m.gauge(
            "slice_addresses",
            "Source addresses covered by this member's slices.",
            gauge(self.slice_addresses),
        );
        m.gauge("vip_forward_units", "VIP mode, forward strategy: allocation units whose mid-stream TCP segments go to their old owner.", gauge(self.vip_forward_units));
        m.counter(
            "vip_resets_total",
            "VIP mode, reset strategy (and forward, for the IPv6 VIP): TCP connections of moved clients destroyed (sock_diag), to both VIPs.",
            self.vip_resets,
        );
        m.counter(
            "vip_reset_failures_total",
            "VIP mode, reset strategy: SOCK_DESTROY requests that failed.",
            self.vip_reset_failures,
        );
        if let Some(k) = &self.keystore {
            m.gauge(
                "keystore_ok",
                "1 while the keystore's validated record backs our certificate and key, else 0.",
                gauge(u64::from(k.mismatch.is_none())),
            );
            m.counter(
                "keystore_refresh_failures_total",
                "Keystore refreshes without a validated answer.",
                k.refresh_failures,
            );
            m.gauge("keystore_stale", "1 when no validated keystore answer came for TTL + max_stale (verifiers fail closed).", gauge(u64::from(k.stale)));
        }
        m.counter(
            "control_accepted_total",
            "Control messages accepted.",
            self.control.accepted,
        );
        m.counter(
            "control_sent_total",
            "Control messages sent.",
            self.control.sent,
        );
        m.counter(
            "control_clock_untimely_total",
            "Times most peers refused our control messages as untimely (our wall clock off theirs beyond the timeliness window).",
            self.control.clock_untimely,
        );
        m.counter(
            "control_unsendable_total",
            "Control messages not sent because they do not fit one datagram (a flat group too large).",
            self.control.unsendable,
        );
        m.counter_family(
            "control_dropped_total",
            "Control messages dropped, by reason.",
            self.control
                .dropped
                .iter()
                .map(|(reason, n)| (label("reason", reason.as_str()), *n)),
        );
        if !self.health.checks.is_empty() {
            let checks = &self.health.checks;
            m.gauge_family(
                "health_up",
                "1 while the health check is up (rise passes in a row), else 0.",
                checks
                    .iter()
                    .map(|c| (label("check", &c.name), i64::from(c.up))),
            );
            m.counter_family(
                "health_checks_total",
                "Health check runs, by check and result (pass, slow, dead).",
                checks.iter().flat_map(|c| {
                    [
                        ("pass", c.pass_total),
                        ("slow", c.slow_total),
                        ("dead", c.dead_total),
                    ]
                    .map(|(r, n)| {
                        let mut l = label("check", &c.name);
                        l.extend(label("result", r));
                        (l, n)
                    })
                }),
            );
            m.gauge(
                "health_out",
                "1 while failing health checks hold this member at weight 0.",
                gauge(u64::from(self.health.out.is_some())),
            );
        }
        if let Some(scope) = &self.site_scope {
            m.counter(
                "site_scope_accepted_total",
                "Scope notices from our site routers' queries that verified and were kept.",
                scope.counters.accepted,
            );
            m.counter_family(
                "site_scope_refused_total",
                "Scope notices refused, by reason.",
                scope
                    .counters
                    .refused
                    .iter()
                    .map(|(reason, n)| (label("reason", reason.as_str()), *n)),
            );
            if let Some((epoch, units)) = scope.current {
                m.gauge(
                    "site_scope_upper_epoch",
                    "Upper epoch of the site scope kept.",
                    gauge(epoch),
                );
                m.gauge(
                    "site_scope_units",
                    "Units of the site scope kept.",
                    gauge(units as u64),
                );
            }
        }
        if let Some(reason) = self.keystore.as_ref().and_then(|k| k.mismatch) {
            m.gauge_family(
                "keystore_mismatch",
                "Why our credentials no longer match the keystore.",
                [(label("reason", reason), 1)],
            );
        }
        m.render()
    }
}

/// A gauge's value as the exposition takes it.
fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_once_with_values() {
        let mut s = Snapshot::new(MemberId(2));
        s.service.served = 5;
        s.service.filtered = 7;
        s.service6.served = 11;
        s.service6.filtered = 13;
        s.sessions6 = 3;
        s.slice_addresses = 1 << 31;
        s.vip_resets = 4;
        s.control
            .dropped
            .insert(control_channel::DropReason::BadSignature, 3);
        let text = s.render();
        assert!(text.contains("manycast_server_member 2\n"));
        assert!(text.contains("manycast_server_served_total 5\n"));
        assert!(text.contains("manycast_server_filtered_total 7\n"));
        assert!(text.contains("manycast_server_served6_total 11\n"));
        assert!(text.contains("manycast_server_filtered6_total 13\n"));
        assert!(text.contains("manycast_server_sessions6 3\n"));
        assert!(text.contains("manycast_server_slice_addresses 2147483648\n"));
        assert!(text.contains("manycast_server_vip_resets_total 4\n"));
        assert!(text.contains("manycast_server_vip_reset_failures_total 0\n"));
        assert!(
            text.contains("manycast_server_control_dropped_total{reason=\"bad-signature\"} 3\n")
        );
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert_eq!(text.matches(line).count(), 1, "{line}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.prom");
        write_file(&p, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }

    #[test]
    fn health_checks_render_up_and_runs_by_result() {
        let mut s = Snapshot::new(MemberId(1));
        assert!(!s.render().contains("health"), "no checks, no families");
        s.health.checks.push(crate::health::CheckStatus {
            name: "web".into(),
            kind: "http".into(),
            target: "http://127.0.0.1:80/".into(),
            up: false,
            last: Some("dead: connect: refused".into()),
            passes: 0,
            fails: 3,
            rise: 2,
            fall: 3,
            pass_total: 4,
            slow_total: 1,
            dead_total: 3,
        });
        s.health.out = Some(crate::health::Exit::Immediate);
        let text = s.render();
        assert!(
            text.contains("manycast_server_health_up{check=\"web\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("manycast_server_health_checks_total{check=\"web\",result=\"dead\"} 3\n")
        );
        assert!(
            text.contains("manycast_server_health_checks_total{check=\"web\",result=\"pass\"} 4\n")
        );
        assert!(text.contains("manycast_server_health_out 1\n"));
    }

    #[test]
    fn the_site_scope_renders_only_when_tracked() {
        let mut s = Snapshot::new(MemberId(1));
        assert!(
            !s.render().contains("site_scope"),
            "no tracker, no families"
        );
        let mut status = SiteScopeStatus::default();
        status.counters.accepted = 4;
        status
            .counters
            .refused
            .insert(igmp_ext::scope::ScopeReason::WrongSite, 2);
        status.current = Some((9, 96));
        s.site_scope = Some(status);
        let text = s.render();
        assert!(text.contains("manycast_server_site_scope_accepted_total 4\n"));
        assert!(
            text.contains("manycast_server_site_scope_refused_total{reason=\"wrong-site\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("manycast_server_site_scope_upper_epoch 9\n"));
        assert!(text.contains("manycast_server_site_scope_units 96\n"));
    }
}
