//! IPv6 claims under their member's liveness (SPEC.md §5.5, §5.6; issue 15): a member sends one
//! beacon stream (IPv4, from its address on the link), and its MLDv2 join names the same chains
//! as its IGMPv3 join. An IPv6 claim is judged by the watch of that IPv4 claim: the same member,
//! member key and interface, and a chain both joins name. While the watch is vouched for, so
//! is the IPv6 claim (a later epoch waits for its slices); when the watch is found dead, the
//! IPv6 data plane follows the failover view of the IPv6 table (the dead member's units go to
//! the IPv6 claims of its epoch whose standby covers them); the next commit's joins decide from
//! the verified table as before. An IPv6 claim without anchors, or whose member has no watched
//! IPv4 claim here, is never judged: its failover is the control group's commit.
//!
//! The heir hears of it from the IPv4 standby notice: one notice stands for both families,
//! since the standby units of both joins are the same unit numbers.

use super::Router;
use igmp_ext::ownership::OwnershipTable6;
use igmp_ext::{Clock, MemberId};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The IPv6 side of the liveness book.
#[derive(Debug, Default)]
pub(super) struct Liveness6 {
    /// Each judged IPv6 claim → the IPv4 watch whose beacons judge it.
    links: HashMap<(Ipv6Addr, MemberId), (Ipv4Addr, MemberId)>,
    /// IPv6 claims the IPv6 table was told are vouched for.
    vouched: HashSet<(Ipv6Addr, MemberId)>,
    /// The IPv6 failover view while a judged member is dead.
    view: Option<OwnershipTable6>,
    /// IPv6 claims found dead (each counted once per death).
    pub(super) claims_found_dead: u64,
    dead: HashSet<(Ipv6Addr, MemberId)>,
}

impl Liveness6 {
    /// The table the IPv6 data plane follows while members are found dead.
    pub(super) fn view(&self) -> Option<&OwnershipTable6> {
        self.view.as_ref()
    }
}

impl Router {
    /// Whether `member`'s claim on the IPv6 `group` is judged by beacons, and dead
    /// (`Some(true)`).
    pub(super) fn liveness6_state(&self, group: Ipv6Addr, member: MemberId) -> Option<bool> {
        let key = self.mld.liveness.links.get(&(group, member))?;
        self.liveness.watches.get(key).map(|w| w.dead)
    }

    /// Links every IPv6 claim with anchors to the IPv4 watch that judges it (after any change
    /// to either table), then follows the watches.
    pub(super) fn sync_liveness6(&mut self, clock: Clock) {
        if !self.mld_enabled() {
            return;
        }
        let table4 = self.verifier.ownership();
        let table6 = self.mld.verifier.ownership();
        // Each member's watched IPv4 claims, once: linking is linear in the claims.
        let mut watched: HashMap<MemberId, Vec<(Ipv4Addr, &igmp_ext::ownership::Claim)>> =
            HashMap::new();
        for g4 in table4.groups() {
            for (m, c4) in table4.claims(g4) {
                if self.liveness.watches.contains_key(&(g4, m)) {
                    watched.entry(m).or_default().push((g4, c4));
                }
            }
        }
        let mut links = HashMap::new();
        for g6 in table6.groups() {
            for (member, c6) in table6.claims(g6) {
                if c6.liveness.is_empty() {
                    continue;
                }
                let names = |chain: u64| c6.liveness.iter().any(|a| a.chain == chain);
                // The same member key signed both joins on the same link, and both name a
                // chain: the one beacon stream speaks for both (another cluster's member with
                // the same id has another key).
                let judge = watched.get(&member).into_iter().flatten().find(|(g4, c4)| {
                    c4.member_key == c6.member_key
                        && c4.ifindex == c6.ifindex
                        && self.liveness.watches.get(&(*g4, member)).is_some_and(|w| {
                            w.chains.iter().any(|p| names(p.chain))
                                || c4.liveness.iter().any(|a| names(a.chain))
                        })
                });
                if let Some(&(g4, _)) = judge {
                    links.insert((g6, member), (g4, member));
                }
            }
        }
        self.mld.liveness.links = links;
        self.liveness.changed6 = true;
        self.follow_liveness6(clock);
    }

    /// The IPv6 claims follow their watches when any watch changed state: vouching given or
    /// taken, the failover view, and the IPv6 data plane.
    pub(super) fn follow_liveness6(&mut self, clock: Clock) {
        if !std::mem::take(&mut self.liveness.changed6) || !self.mld_enabled() {
            return;
        }
        let watches = &self.liveness.watches;
        let l6 = &mut self.mld.liveness;
        let state = |k: &(Ipv4Addr, MemberId)| watches.get(k).map(|w| (w.vouched, w.dead));
        let vouched: HashSet<(Ipv6Addr, MemberId)> = l6
            .links
            .iter()
            .filter(|(_, k)| state(k).is_some_and(|(v, _)| v))
            .map(|(&k6, _)| k6)
            .collect();
        let dead: HashSet<(Ipv6Addr, MemberId)> = l6
            .links
            .iter()
            .filter(|(_, k)| state(k).is_some_and(|(_, d)| d))
            .map(|(&k6, _)| k6)
            .collect();
        let newly_dead = dead.difference(&l6.dead).count() as u64;
        l6.claims_found_dead += newly_dead;
        let given: Vec<_> = vouched.difference(&l6.vouched).copied().collect();
        let taken: Vec<_> = l6.vouched.difference(&vouched).copied().collect();
        l6.vouched = vouched;
        l6.dead = dead;
        for (group, member) in given {
            let _ = self.mld.verifier.set_vouched(clock, group, member, true);
        }
        for (group, member) in taken {
            if let Some(change) = self.mld.verifier.set_vouched(clock, group, member, false) {
                tracing::info!(%member, %group, lost = ?change.lost, "liveness: no longer vouched for; later IPv6 claims take its slices");
            }
        }
        let dead = &self.mld.liveness.dead;
        self.mld.liveness.view = if self.config.liveness.failover && !dead.is_empty() {
            self.mld
                .verifier
                .ownership()
                .failover_view(|g, m| dead.contains(&(g, m)))
        } else {
            None
        };
        if newly_dead > 0 {
            tracing::warn!(
                claims = newly_dead,
                "liveness: beacons stopped; the member's IPv6 units go to their standbys"
            );
        }
        self.replan6();
        self.replan_vip6(super::timers(clock));
    }
}

impl Router {
    /// The IPv6 table the data plane steers by now: the verified one, or its failover view
    /// while a member judged by beacons is found dead.
    pub fn mld_steering(&self) -> &OwnershipTable6 {
        self.mld
            .liveness
            .view()
            .unwrap_or(self.mld.verifier.ownership())
    }
}
