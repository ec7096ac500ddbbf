//! The status snapshot of the core's state (`--status`, metrics), with what only the daemon can
//! read from the kernel passed in.

use super::{Native, Observed, Router};
use crate::admission::{AdmissionStats, Family, Limited};
use crate::plan::MfcSpec;
use crate::plan::Target;
use crate::status::{
    ControlRow, Counters, InterfaceStatus, ListenerRow, MfcRow, OwnershipRow, Status,
};
use igmp_ext::{Clock, Timestamp};

impl Router {
    /// The MFC entries, for status.
    pub(super) fn mfc_entries(&self) -> Vec<(MfcSpec, Option<Target>)> {
        match &self.native {
            Native::Mfc(mfc) => mfc
                .entries()
                .map(|((group, source), e)| {
                    let spec = MfcSpec {
                        source,
                        group,
                        parent: e.parent,
                        oifs: e.oifs,
                    };
                    (spec, e.target)
                })
                .collect(),
            Native::Nft(_) => Vec::new(),
        }
    }

    pub fn status(&self, now: impl Into<Clock>, observed: &Observed) -> Status {
        let now: Clock = now.into();
        // Everything that expires here does so on monotonic time.
        let remaining = |t: Timestamp| t.as_millis().saturating_sub(now.mono.as_millis());
        let table = self.verifier.ownership();
        let mut ownership = Vec::new();
        for g in table.groups() {
            for (m, c) in table.claims(g) {
                ownership.push(OwnershipRow {
                    group: g.to_string(),
                    member: m.0,
                    slices: c.slices.to_string(),
                    epoch: c.epoch.0,
                    interface: self.ifname(c.ifindex),
                    sender: c.sender.to_string(),
                    liveness: self
                        .liveness
                        .state(g, m)
                        .map(|dead| if dead { "dead" } else { "live" }.into()),
                    standby: if c.standby.is_empty() {
                        String::new()
                    } else {
                        c.standby.to_string()
                    },
                    waiting: if c.waiting.is_empty() {
                        String::new()
                    } else {
                        c.waiting.to_string()
                    },
                    expires_in_ms: c.expires.saturating_duration_since(now.mono).as_millis() as u64,
                });
            }
        }
        let table6 = self.mld_ownership();
        for g in table6.groups() {
            for (m, c) in table6.claims(g) {
                ownership.push(OwnershipRow {
                    group: g.to_string(),
                    member: m.0,
                    slices: c.slices.to_string(),
                    epoch: c.epoch.0,
                    interface: self.ifname(c.ifindex),
                    sender: c.sender.to_string(),
                    liveness: self
                        .liveness6_state(g, m)
                        .map(|dead| if dead { "dead" } else { "live" }.into()),
                    standby: if c.standby.is_empty() {
                        String::new()
                    } else {
                        c.standby.to_string()
                    },
                    waiting: if c.waiting.is_empty() {
                        String::new()
                    } else {
                        c.waiting.to_string()
                    },
                    expires_in_ms: c.expires.saturating_duration_since(now.mono).as_millis() as u64,
                });
            }
        }
        ownership.sort_by(|a, b| (&a.group, a.member).cmp(&(&b.group, b.member)));
        let vif_name = |v: u16| {
            self.vifs
                .ifindex_of(v)
                .map(|i| self.ifname(i))
                .unwrap_or_else(|| format!("vif{v}"))
        };
        let mfc = self
            .mfc_entries()
            .into_iter()
            .map(|(e, target)| MfcRow {
                group: e.group.to_string(),
                source: e.source.to_string(),
                iif: vif_name(e.parent),
                oif: if e.oifs.is_empty() {
                    "drop".into()
                } else {
                    e.oifs.iter().map(vif_name).collect::<Vec<_>>().join(",")
                },
                member: match target {
                    Some(Target::Member { member, .. }) if !e.oifs.is_empty() => Some(member),
                    _ => None,
                },
            })
            .collect();
        let listeners = self
            .interfaces
            .iter()
            .flat_map(|i| {
                self.querier
                    .groups(i.ifindex)
                    .map(|(g, expires)| ListenerRow {
                        interface: i.name.clone(),
                        group: g.to_string(),
                        expires_in_ms: remaining(expires),
                    })
            })
            .collect();
        let m = self.verifier.metrics();
        let counters = &observed.native_counters;
        let s = &self.stats;
        let a = self.admission.stats(Family::Igmp);
        let a6 = self.admission.stats(Family::Mld);
        let control = self
            .control
            .members()
            .map(|(group, member, c)| ControlRow {
                group: group.to_string(),
                member: member.0,
                interface: self.ifname(c.ifindex),
                sender: c.sender.to_string(),
                expires_in_ms: c.expires.saturating_duration_since(now.mono).as_millis() as u64,
            })
            .collect();
        Status {
            control,
            interfaces: self
                .interfaces
                .iter()
                .map(|i| InterfaceStatus {
                    name: i.name.clone(),
                    ifindex: i.ifindex,
                    vif: i.vif,
                    address: i.addr.to_string(),
                    role: format!("{:?}", self.querier.role(i.ifindex)),
                })
                .collect(),
            ownership,
            listeners,
            mfc,
            dataplane: match self.native {
                Native::Mfc(_) => "mroute",
                Native::Nft(_) => "nft",
            }
            .into(),
            native: match &self.native {
                Native::Nft(nd) => nd.status(Some(counters)),
                Native::Mfc(_) => Vec::new(),
            },
            vips: self
                .vip
                .status()
                .into_iter()
                .chain(self.vip6_status())
                .collect(),
            // Filled by the daemon, which knows what its executor loaded.
            pin_dataplane: String::new(),
            // The nftables flow tables, unless the daemon's executor says the tc program.
            pin_dataplane6: if self.config.vips6.iter().any(|v| v.pin) {
                "nft".into()
            } else {
                String::new()
            },
            announced: self.announcer.held().collect(),
            site: None, // the daemon's site agent fills it in
            counters: Counters {
                joins_accepted: s.joins_accepted,
                plain_accepted: s.plain_accepted,
                rejected: m.rejections().map(|(r, n)| (r.to_owned(), n)).collect(),
                rate_limited: rate_limited(a),
                verify_checked: a.verified,
                verify_queued: queued(a),
                verify_backlog: self.admission.waiting_in(Family::Igmp) as u64,
                upcalls: s.upcalls,
                upcalls_per_second: s.upcalls_last_second,
                mfc_entries: match &self.native {
                    Native::Mfc(mfc) => mfc.len() as u64,
                    Native::Nft(_) => 0,
                },
                mfc_installs: s.mfc_installs,
                nft_transactions: s.nft_transactions,
                kernel_errors: s.kernel_errors,
                queries_sent: observed.queries_sent,
                native_forwarded: counters.forwarded.values().sum(),
                native_ttl_dropped: counters.ttl_dropped,
                native_gap_dropped: counters.gap_dropped,
                queries_ignored: s.queries_ignored,
                group_reasks: s.group_reasks,
                claims_left_out: s.claims_left_out,
                claims_held_unverified: s.claims_held_unverified,
                socket_drops: s.socket_drops,
                beacons_accepted: self.liveness.stats.beacons_accepted,
                beacons_refused: self.liveness.stats.beacons_refused,
                members_found_dead: self.liveness.stats.members_found_dead,
                mld_claims_found_dead: self.mld.liveness.claims_found_dead,
                liveness_late_checks: self.liveness.stats.late_checks,
                members_back: self.liveness.stats.members_back,
                mld_joins_accepted: self.mld_metrics().accepted_joins,
                mld_plain_accepted: self.mld_metrics().accepted_plain,
                mld_rejected: self
                    .mld_metrics()
                    .rejections()
                    .map(|(r, n)| (r.to_owned(), n))
                    .collect(),
                mld_unspecified_ignored: self.mld_unspecified_ignored(),
                mld_socket_drops: s.mld_socket_drops,
                mld_rate_limited: rate_limited(a6),
                mld_verify_checked: a6.verified,
                mld_verify_queued: queued(a6),
                mld_verify_backlog: self.admission.waiting_in(Family::Mld) as u64,
                // Measured by the executor (repoint_*, nft_rewrites): the daemon fills them in.
                ..Counters::default()
            },
        }
    }
}

/// (limit, count): refusals while a failure budget was overdrawn, candidates shed.
fn rate_limited(a: &AdmissionStats) -> Vec<(String, u64)> {
    vec![
        (Limited::Interface.as_str().into(), a.overdrawn[0]),
        (Limited::Source.as_str().into(), a.overdrawn[1]),
        (Limited::Capacity.as_str().into(), a.shed),
    ]
}

/// (class, count): candidates queued by priority class.
fn queued(a: &AdmissionStats) -> Vec<(String, u64)> {
    ["expected", "clean", "suspect"]
        .into_iter()
        .zip(a.queued)
        .map(|(c, n)| (c.into(), n))
        .collect()
}
