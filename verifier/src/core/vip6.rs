//! The core's IPv6 VIPs (issue 15, item 3; SPEC.md §10.3.1): the table of
//! [`crate::plan::vip6`], planned from the IPv6 ownership after each accepted MLDv2 join and
//! on every tick (which also writes again a table whose write failed). When an earlier verifier
//! left the table, nothing is written during the adopt grace, so that it keeps steering (and
//! its pins) while members answer the startup queries; the first write after it keeps the pins.
//! With none left there is nothing to keep: the table is written from the first join.

use super::{Clock, Router};
use crate::plan::vip6::Vip6Spec;
use crate::plan::DataplaneOp;
use crate::status::VipRow;
use igmp_ext::mld_verifier::KeySource6;
use igmp_ext::Timestamp;

impl Router {
    /// Brings the IPv6 VIPs' table in line with the IPv6 ownership (or its failover view).
    pub(super) fn replan_vip6(&mut self, now: Timestamp) {
        if self.config.vips6.is_empty() || self.vip6_held {
            return;
        }
        let Router {
            mld,
            interfaces,
            config,
            vip6,
            ..
        } = self;
        let device_of = |ifindex: u32| {
            interfaces
                .iter()
                .find(|i| i.ifindex == ifindex)
                .map(|i| i.name.clone())
        };
        // The failover view while a member judged by beacons is found dead (§5.5), as the
        // native table follows it.
        let table = mld.liveness.view().unwrap_or(mld.verifier.ownership());
        if let Some(op) = vip6.update(now, table, config.gap, device_of) {
            self.push_ops([op]);
        }
        self.update_announcements();
    }

    /// The executor's outcome of an IPv6 VIP table write.
    pub(super) fn vip6_completed(&mut self, op: &DataplaneOp, ok: bool) {
        if ok {
            self.stats.nft_transactions += 1;
        } else {
            self.stats.kernel_errors += 1;
        }
        self.vip6.completed(op, ok);
        self.announcer.write_failed6 = !ok;
        self.update_announcements();
    }

    /// The table's removal on a clean stop, if one was written.
    pub(super) fn withdraw_vip6(&mut self, ops: &mut Vec<DataplaneOp>) {
        ops.extend(self.vip6.withdraw());
    }

    /// The keys may have changed (the daemon calls this once a second, after
    /// [`Router::handle_keys`]): which IPv6 VIPs' groups can be verified now.
    pub fn handle_keys6(&mut self, now: impl Into<Clock>, keys: &dyn KeySource6) {
        let clock: Clock = now.into();
        self.announcer.keys_usable6 = self
            .config
            .vips6
            .iter()
            .map(|v| v.group)
            .filter(|&g| keys.group_keys6(g, clock.wall).is_ok())
            .collect();
        self.update_announcements();
    }

    /// The configured IPv6 VIPs.
    pub fn vips6(&self) -> &[Vip6Spec] {
        &self.config.vips6
    }

    /// Status rows of the IPv6 VIPs: each member the table steers to, with its mark (pin) and
    /// its link-local next hop; none before this process wrote the table (the adopt grace of a
    /// table left by an earlier verifier) or after a failed write, so the status never shows
    /// steering the kernel does not have.
    pub(super) fn vip6_status(&self) -> Vec<VipRow> {
        let written = !self.vip6_held && self.vip6.in_sync();
        let groups = crate::plan::vip6::slice_plans(self.mld_steering(), self.config.gap, |i| {
            self.interfaces
                .iter()
                .find(|x| x.ifindex == i)
                .map(|x| x.name.clone())
        });
        self.config
            .vips6
            .iter()
            .map(|v| {
                let mut members: Vec<(u32, u32, String)> = groups
                    .get(&v.group)
                    .filter(|_| written)
                    .into_iter()
                    .flat_map(|p| p.hops())
                    .filter_map(|h| {
                        let mark = crate::plan::vip_netdev::mark_of(h.member)?;
                        Some((h.member, mark, format!("{}%{}", h.via, h.device)))
                    })
                    .collect();
                members.sort();
                members.dedup();
                VipRow {
                    address: v.address.to_string(),
                    group: v.group.to_string(),
                    pin: v.pin,
                    members,
                }
            })
            .collect()
    }
}
