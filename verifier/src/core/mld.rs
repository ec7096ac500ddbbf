//! The core's MLDv2 path (issue 15, items 2-3): IPv6 datagrams the daemon read from its ICMPv6
//! socket go through [`igmp_ext::mld_verifier::MldJoinVerifier`] (certificate grants,
//! duplicate, stale-epoch and slice-conflict checks, an IPv6 ownership table with IGMPv3's
//! rules); claims expire on the core's tick. Signed joins past the cheap checks wait for the
//! signature budget with the IGMPv3 ones (`admit.rs`, SPEC.md §5.4): refusals are charged to
//! their source and interface, verified joins to their member. What the data plane gets is the IPv6 ownership
//! table ([`Router::mld_ownership`]), an event per change, and the IPv6 nft table's ops
//! ([`crate::plan::netdev6`]), planned on every accepted join and every tick (which also
//! writes again a table whose write failed); a table an earlier verifier left is held through
//! the adopt grace ([`Router::settle6`]). The MLDv2 querier (`mld_querier.rs`) runs on
//! the same tick; its queries come out of [`Router::poll_transmit6`]. While a member is found
//! dead by its beacons, the IPv6 data plane follows the failover view (`liveness6.rs`).

use super::liveness6::Liveness6;
use super::mld_querier::{MldQuerier, Transmit6};
use super::{timers, Event, Router, AUTHENTICATED_REFUSALS};
use crate::admission::{Family, Pending};
use crate::plan::netdev6::Netdev6Planner;
use crate::plan::DataplaneOp;
use igmp_ext::mld_verifier::{
    KeySource6, MldCandidate, MldJoinVerifier, MldOutcome, MldPrechecked,
};
use igmp_ext::ownership::OwnershipTable6;
use igmp_ext::verify::{Rejection, VerifierMetrics};
use igmp_ext::verify6::{LinkTable6, MldVerifierConfig};
use igmp_ext::wire::ipv6::Ipv6Packet;
use igmp_ext::{Clock, MemberId, Slice6, Timestamp, VerifierConfig};
use std::net::{IpAddr, Ipv6Addr};
use tracing::info;

/// The MLDv2 verifier and what only this path counts.
#[derive(Debug)]
pub(super) struct MldPath {
    pub(super) verifier: MldJoinVerifier,
    querier: MldQuerier,
    /// Datagrams from `::` (a host's duplicate address detection, RFC 3810 §5.2.13), ignored.
    unspecified_ignored: u64,
    /// The IPv6 native data plane, made on the first plan (it needs the router's interfaces).
    plane: Option<Netdev6Planner>,
    /// IPv6 claims judged by their member's beacons (SPEC.md §5.5).
    pub(super) liveness: Liveness6,
}

impl MldPath {
    /// The IPv4 verifier's timeliness, claim lifetime and replay sizes; IPv6 links are set by
    /// the daemon ([`Router::set_links6`]): none until then, so every join is `wrong-link`.
    /// `protected6` are the groups that need signed joins: none, and every MLD datagram is
    /// plain (the daemon then opens no MLD socket at all, [`Router::mld_enabled`]).
    pub(super) fn new(
        ipv4: &VerifierConfig,
        querier: &crate::querier::QuerierConfig,
        protected6: &[Slice6],
    ) -> Self {
        let config = MldVerifierConfig {
            timeliness_window: ipv4.timeliness_window,
            protected: protected6.to_vec(),
        };
        MldPath {
            verifier: MldJoinVerifier::new(config, ipv4, LinkTable6::new()),
            querier: MldQuerier::new(querier.clone()),
            unspecified_ignored: 0,
            plane: None,
            liveness: Liveness6::default(),
        }
    }

    /// An earlier verifier left the IPv6 table (SIGKILL, `keep_kernel_state`): it keeps
    /// steering as it is until the adopt grace ends, while members answer the queries.
    pub(super) fn adopt_table6(&mut self, devices: Vec<String>) {
        self.plane = Some(Netdev6Planner::new(devices, true));
    }
}

impl Router {
    /// Whether any IPv6 group is protected (`verifier.protected6`): without one the verifier
    /// is IPv4 only and the daemon opens no MLD socket and sends no MLD query.
    pub fn mld_enabled(&self) -> bool {
        !self.config.protected6.is_empty()
    }

    /// The router's IPv6 links: the on-link prefixes of each member-facing interface, which a
    /// join's signed LINK prefix must name.
    pub fn set_links6(&mut self, links: LinkTable6) {
        self.mld.verifier.set_links(links);
    }

    /// One IPv6 datagram (IPv6 header and Hop-by-Hop options included) received on `ifindex`:
    /// a burst of one ([`Router::handle_mld_burst`]).
    pub fn handle_mld_datagram(
        &mut self,
        now: impl Into<Clock>,
        ifindex: u32,
        datagram: &[u8],
        keys: &dyn KeySource6,
    ) {
        self.handle_mld_burst(now, &[(ifindex, datagram)], keys);
    }

    /// IPv6 datagrams that arrived together, each with its interface. A datagram from `::` is
    /// ignored before it is parsed further; every other one gets the cheap checks at once, and
    /// a refusal changes nothing but the counters and the failure budgets and yields an
    /// [`Event::MldRejected`]. Signed joins that pass queue for verification with the IGMPv3
    /// ones, and as many as the budget allows, by priority, are verified before this returns.
    pub fn handle_mld_burst(
        &mut self,
        now: impl Into<Clock>,
        datagrams: &[(u32, &[u8])],
        keys: &dyn KeySource6,
    ) {
        let clock: Clock = now.into();
        for &(ifindex, datagram) in datagrams {
            let source = Ipv6Packet::new_checked(datagram)
                .ok()
                .map(|ip| ip.src_addr());
            if source.is_some_and(|s| s.is_unspecified()) {
                self.mld.unspecified_ignored += 1;
                continue;
            }
            match self
                .mld
                .verifier
                .precheck(clock.wall, ifindex, datagram, keys)
            {
                Ok(MldPrechecked::Plain { .. }) => {}
                Ok(MldPrechecked::Candidate(c)) => self.admit(clock, Pending::Mld(c)),
                Err(r) => self.mld_rejected(timers(clock), ifindex, source, r),
            }
        }
        self.verify_round(clock);
    }

    /// The expensive part for the MLDv2 candidates of a round, with their outcomes charged as
    /// for IGMPv3: a verified join to its member, a refusal before or without a valid signature
    /// to its source and interface.
    pub(super) fn verify_mld(&mut self, clock: Clock, round: Vec<MldCandidate>) {
        let now = timers(clock);
        let origins: Vec<(u32, MemberId, Ipv6Addr)> = round
            .iter()
            .map(|c| (c.ifindex(), c.claimed_member(), c.sender()))
            .collect();
        let results = self.mld.verifier.verify(clock, round);
        let mut changed = false;
        for ((ifindex, member, sender), result) in origins.into_iter().zip(results) {
            match result {
                Ok(MldOutcome::Plain { .. }) => {}
                Ok(MldOutcome::Join { join, .. }) => {
                    self.admission.charge_member(now, join.member());
                    self.events.push_back(Event::MldJoinAccepted {
                        member: join.member(),
                        group: join.group(),
                        epoch: join.epoch(),
                        slices: join.slices().clone(),
                        ifindex,
                        sender: join.sender(),
                    });
                    changed = true;
                }
                Err(r) if AUTHENTICATED_REFUSALS.contains(&r.reason) => {
                    self.admission.charge_member(now, member);
                    self.events.push_back(Event::MldRejected {
                        reason: r.reason,
                        ifindex,
                        detail: r.detail,
                    });
                }
                Err(r) => self.mld_rejected(now, ifindex, Some(sender), r),
            }
        }
        if changed {
            self.sync_liveness6(clock);
            self.replan6();
            self.replan_vip6(now);
        }
    }

    /// A refused MLD datagram is charged to its source and interface, then reported.
    fn mld_rejected(
        &mut self,
        now: Timestamp,
        ifindex: u32,
        source: Option<Ipv6Addr>,
        r: Rejection,
    ) {
        let source = source.map(IpAddr::V6);
        self.admission
            .charge_failure(now, Family::Mld, ifindex, source);
        self.events.push_back(Event::MldRejected {
            reason: r.reason,
            ifindex,
            detail: r.detail,
        });
    }

    /// The interfaces the MLDv2 querier queries, each with its link-local address (the
    /// queries' source); none until the daemon sets them.
    pub fn set_mld_query_interfaces(&mut self, interfaces: Vec<(u32, Ipv6Addr)>) {
        self.mld.querier.set_interfaces(interfaces);
    }

    /// The next MLDv2 query to send.
    pub fn poll_transmit6(&mut self) -> Option<Transmit6> {
        self.mld.querier.poll_transmit()
    }

    /// MLDv2 queries built so far.
    pub fn mld_queries_built(&self) -> u64 {
        self.mld.querier.queries_built
    }

    /// Expires IPv6 claims not refreshed in time and runs the MLDv2 querier (called on the
    /// core's tick).
    pub(super) fn expire_mld(&mut self, now: Clock) {
        self.mld.querier.handle_timeout(now.mono);
        let expired = self.mld.verifier.expire(now);
        let any_expired = !expired.is_empty();
        for change in expired {
            self.events.push_back(Event::MldClaimsExpired {
                group: change.group,
                lost: change.lost,
            });
        }
        if any_expired {
            self.sync_liveness6(now);
        }
        self.replan6();
        self.replan_vip6(timers(now));
    }

    /// Brings the IPv6 nft table in line with the IPv6 ownership, or its failover view while a
    /// member is found dead (nothing when nothing moved, and nothing at all while no IPv6
    /// group is protected).
    pub(super) fn replan6(&mut self) {
        if !self.mld_enabled() {
            return;
        }
        let Router {
            mld,
            interfaces,
            config,
            ..
        } = self;
        let plane = mld.plane.get_or_insert_with(|| {
            Netdev6Planner::new(interfaces.iter().map(|i| i.name.clone()).collect(), false)
        });
        let device_of = |ifindex: u32| {
            interfaces
                .iter()
                .find(|i| i.ifindex == ifindex)
                .map(|i| i.name.clone())
        };
        let table = mld.liveness.view().unwrap_or(mld.verifier.ownership());
        if let Some(op) = plane.update(table, config.gap, device_of) {
            // One ownership change: timed by the executor like IPv4's (`repoint_us`).
            self.push_ops([DataplaneOp::Repoint { ops: 1 }, op]);
        }
    }

    /// The adopt grace ended: an IPv6 table taken over at start is replaced by the rebuilt
    /// plan (SPEC.md §10.2.2).
    pub(super) fn settle6(&mut self) {
        if let Some(op) = self.mld.plane.as_mut().and_then(Netdev6Planner::release) {
            info!("the IPv6 nft table taken over at start now follows the rebuilt ownership");
            self.push_ops([op]);
        }
    }

    /// The executor's outcome of an IPv6 table write.
    pub(super) fn netdev6_completed(&mut self, op: &DataplaneOp, ok: bool) {
        if ok {
            self.stats.nft_transactions += 1;
        } else {
            self.stats.kernel_errors += 1;
        }
        if let Some(p) = &mut self.mld.plane {
            p.completed(op, ok);
        }
    }

    /// The IPv6 table's removal on a clean stop, if one was written.
    pub(super) fn withdraw6(&mut self, ops: &mut Vec<DataplaneOp>) {
        ops.extend(self.mld.plane.as_mut().and_then(Netdev6Planner::withdraw));
    }

    /// Who owns which IPv6 slices: what an IPv6 data plane steers by.
    pub fn mld_ownership(&self) -> &OwnershipTable6 {
        self.mld.verifier.ownership()
    }

    /// Counts of MLDv2 joins accepted, plain MLD messages, and refusals by reason.
    pub fn mld_metrics(&self) -> &VerifierMetrics {
        self.mld.verifier.metrics()
    }

    /// Datagrams from `::` ignored.
    pub fn mld_unspecified_ignored(&self) -> u64 {
        self.mld.unspecified_ignored
    }
}

#[cfg(test)]
#[path = "mld_tests.rs"]
mod tests;
