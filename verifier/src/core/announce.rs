//! Route announcement, for redundant verifiers (SPEC.md §10.6): while this router can verify
//! and steer a VIP it holds a route for it in the main table, tagged with its own route
//! protocol and through a device that dies with the process (`sys/announce_dev.rs`), for a
//! routing daemon to announce upstream (FRR: `redistribute kernel` with a route map). Withdrawn
//! when it cannot: still in the adopt grace, no usable keys for the VIP's group at the last key
//! check, the last VIP steering write failed, no verified claim for the group, or stopping. A
//! router that cannot verify must not attract traffic.

use super::*;
use crate::plan::vip6::Vip6Spec;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};

/// `[announce]`: off unless configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceConfig {
    pub enabled: bool,
    /// The kernel route protocol number the routes carry (iproute2's `rt_protos`): what the
    /// routing daemon's route map and a restarted verifier's cleanup recognise them by.
    pub protocol: u8,
}

/// Why a VIP is not announced (the first unmet condition), for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// Members are still answering the startup queries (the adopt grace).
    Starting,
    /// The keys for the VIP's group were unusable at the last key check.
    NoKeys,
    /// The last VIP steering write failed; the kernel's state is unknown until one holds.
    WriteFailed,
    /// No verified claim for the VIP's group: nobody to steer to.
    NoOwner,
    Stopping,
}

#[derive(Debug, Default)]
pub(super) struct Announcer {
    /// VIPs whose route is held (or on its way: ops are applied in order).
    held: BTreeSet<IpAddr>,
    /// Groups whose keys were usable at the last key check.
    keys_usable: BTreeSet<Ipv4Addr>,
    /// The same for the IPv6 VIPs' groups.
    pub(super) keys_usable6: BTreeSet<Ipv6Addr>,
    /// The last IPv6 VIP table write failed and none has succeeded since.
    pub(super) write_failed6: bool,
    /// The last VIP steering write failed and none has succeeded since.
    write_failed: bool,
    stopping: bool,
}

impl Announcer {
    pub(super) fn held(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.held.iter().copied()
    }
}

impl Router {
    /// Removes what a verifier that did not stop cleanly left announced: nothing is held
    /// until the conditions hold in this process.
    pub(super) fn clear_stale_announcements(&mut self) {
        if !self.config.announce.enabled {
            return;
        }
        let protocol = self.config.announce.protocol;
        let ops: Vec<_> = self
            .config
            .vips
            .iter()
            .map(|v| IpAddr::V4(v.address))
            .chain(self.config.vips6.iter().map(|v| IpAddr::V6(v.address)))
            .map(|vip| DataplaneOp::Announce {
                vip,
                on: false,
                protocol,
            })
            .collect();
        self.push_ops(ops);
    }

    /// The keys were checked: which VIP groups can be verified now.
    pub(super) fn note_usable_keys(&mut self, wall: Timestamp, keys: &dyn KeySource) {
        self.announcer.keys_usable = self
            .config
            .vips
            .iter()
            .map(|v| v.group)
            .filter(|&g| keys.group_keys(g, wall).is_ok())
            .collect();
    }

    /// The outcome of a VIP steering write.
    pub(super) fn note_vip_write(&mut self, ok: bool) {
        self.announcer.write_failed = !ok;
    }

    /// An announcement the kernel refused: an announce is retried by the next update; a
    /// withdrawal that failed leaves the route to the next start's cleanup.
    pub(super) fn announcement_failed(&mut self, vip: IpAddr, on: bool) {
        if on {
            self.announcer.held.remove(&vip);
        }
    }

    pub(super) fn stop_announcing(&mut self) {
        self.announcer.stopping = true;
        self.update_announcements();
    }

    /// Why `vip` cannot be announced now, if it cannot.
    fn withdrawn(&self, vip: &VipSpec) -> Option<Withdrawn> {
        let a = &self.announcer;
        if a.stopping {
            Some(Withdrawn::Stopping)
        } else if self.adopt_until.is_some() {
            Some(Withdrawn::Starting)
        } else if !a.keys_usable.contains(&vip.group) {
            Some(Withdrawn::NoKeys)
        } else if a.write_failed {
            Some(Withdrawn::WriteFailed)
        } else if self.verifier.ownership().claims(vip.group).next().is_none() {
            Some(Withdrawn::NoOwner)
        } else {
            None
        }
    }

    /// The same for an IPv6 VIP: its group's keys, its table's write and the IPv6 claims.
    fn withdrawn6(&self, vip: &Vip6Spec) -> Option<Withdrawn> {
        let a = &self.announcer;
        if a.stopping {
            Some(Withdrawn::Stopping)
        } else if self.adopt_until.is_some() {
            Some(Withdrawn::Starting)
        } else if !a.keys_usable6.contains(&vip.group) {
            Some(Withdrawn::NoKeys)
        } else if a.write_failed6 || !self.vip6.in_sync() {
            // Failed, or not written yet: the route goes out only behind a written table.
            Some(Withdrawn::WriteFailed)
        } else if self.mld_ownership().claims(vip.group).next().is_none() {
            Some(Withdrawn::NoOwner)
        } else {
            None
        }
    }

    /// Announces and withdraws what changed since the last call (after the steering ops of
    /// the same turn, so a route is announced only behind the map that serves it).
    pub(super) fn update_announcements(&mut self) {
        if !self.config.announce.enabled {
            return;
        }
        let protocol = self.config.announce.protocol;
        let mut ops = Vec::new();
        let vips: Vec<(IpAddr, Option<Withdrawn>)> = self
            .config
            .vips
            .iter()
            .map(|v| (IpAddr::V4(v.address), self.withdrawn(v)))
            .chain(
                self.config
                    .vips6
                    .iter()
                    .map(|v| (IpAddr::V6(v.address), self.withdrawn6(v))),
            )
            .collect();
        for (vip, why) in vips {
            let held = self.announcer.held.contains(&vip);
            if why.is_none() == held {
                continue;
            }
            if why.is_none() {
                self.announcer.held.insert(vip);
            } else {
                self.announcer.held.remove(&vip);
            }
            ops.push(DataplaneOp::Announce {
                vip,
                on: why.is_none(),
                protocol,
            });
            self.events.push_back(Event::Announcement {
                vip,
                withdrawn: why,
            });
        }
        self.push_ops(ops);
    }
}
