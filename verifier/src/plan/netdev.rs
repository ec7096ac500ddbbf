//! Native mode without the kernel's multicast routing: the nftables data plane (SPEC.md §10.2.1).
//!
//! Kernels built without `CONFIG_IP_MROUTE` have no MRT socket, no VIFs and no MFC, so the
//! upcall path of [`super::mfc`] cannot run. This data plane steers the same packets one
//! layer lower: a `netdev` table with one `ingress` chain on the verifier's interfaces looks up
//! `ip saddr & mask` of every datagram to a protected group in a map written from the ownership
//! table and forwards it with `fwd ip to <member> device <interface>` (the kernel resolves the
//! member's MAC address and sends the frame; the IP destination stays the group). There is no
//! per-source state: a new source's first packet is forwarded like any other, and the table
//! stays in the kernel while no verifier runs.
//!
//! What a router owes a forwarded packet is done in the table too: TTL ≤ 1 is dropped, and
//! `fwd ip to` decrements the TTL itself (`nft_fwd_neigh_eval` calls `ip_decrease_ttl`), so the
//! table must not (it did once, and datagrams arrived with TTL − 2). A packet is never sent
//! back out of the interface it arrived on.
//!
//! The planning and the ruleset text are pure and tested here; `crate::sys::nft` runs `nft`.
//! Each change is one `nft -f` transaction that replaces the whole table, like VIP mode.

use super::map::{plan_map, MapPlan};
use super::{Change, DataplaneOp, GapPolicy, PlanError, PlanFailure, Planner, View};
use crate::status::NativeMapRow;
use core::fmt::Write;
use igmp_ext::ownership::OwnershipTable;
use igmp_ext::{SliceSet, Timestamp};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use tracing::info;

pub const TABLE: &str = "manycast_native";

/// Where one member's packets leave the router: its address (the source of its signed reports)
/// on the interface its reports came in on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hop {
    pub member: u32,
    pub via: Ipv4Addr,
    pub device: String,
}

impl Hop {
    fn chain(&self) -> String {
        let o = self.via.octets();
        format!("m{}_{}_{}_{}_{}", self.member, o[0], o[1], o[2], o[3])
    }
}

/// One protected group's map: masked source value → the hop its packets take.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPlan {
    pub mask: u32,
    pub elements: Vec<(u32, Hop)>,
}

/// Builds the group's plan from its claims: the same expansion over the finest mask as VIP mode
/// ([`plan_map`]), so one lookup finds the owner and the gap policy's fallback fills the holes.
pub fn plan_group(
    group: Ipv4Addr,
    table: &OwnershipTable,
    gap: GapPolicy,
    device_of: impl Fn(u32) -> Option<String>,
) -> (GroupPlan, Vec<PlanError>) {
    let mut hops = BTreeMap::new();
    let mut claims: Vec<(u32, SliceSet)> = Vec::new();
    for (m, c) in table.claims(group) {
        // A claim heard on an interface we do not serve cannot be steered to.
        let Some(device) = device_of(c.ifindex) else {
            continue;
        };
        hops.insert(
            m.0,
            Hop {
                member: m.0,
                via: c.sender,
                device,
            },
        );
        claims.push((m.0, c.slices.clone()));
    }
    let fallback = match gap {
        GapPolicy::Fallback(m) if hops.contains_key(&m.0) => Some(m.0),
        _ => None,
    };
    let (MapPlan { mask, elements }, left_out) = plan_map(&claims, fallback);
    let plan = GroupPlan {
        mask,
        elements: elements
            .into_iter()
            .filter_map(|(v, m)| Some((v, hops.get(&m)?.clone())))
            .collect(),
    };
    (plan, left_out)
}

fn quoted(devices: &[String]) -> String {
    devices
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole table as one `nft -f` transaction: created if missing, deleted, and written anew.
/// `devices` are the verifier's interfaces (the ingress chain's hook).
pub fn ruleset(devices: &[String], groups: &BTreeMap<Ipv4Addr, GroupPlan>) -> String {
    let mut out =
        format!("add table netdev {TABLE}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n");
    let mut hops: Vec<&Hop> = groups
        .values()
        .flat_map(|p| p.elements.iter().map(|(_, h)| h))
        .collect();
    hops.sort();
    hops.dedup();
    for h in &hops {
        let _ = writeln!(
            out,
            // `fwd ip to` decrements the TTL (the ingress chain dropped TTL ≤ 1 already).
            "\tchain {} {{\n\t\tmeta iifname \"{}\" accept\n\t\tcounter fwd ip to {} device \"{}\"\n\t}}",
            h.chain(),
            h.device,
            h.via,
            h.device
        );
    }
    let _ = writeln!(
        out,
        "\tchain ingress {{\n\t\ttype filter hook ingress devices = {{ {} }} priority 0; policy accept;",
        quoted(devices)
    );
    // IGMP to a group (v2 reports, group-specific queries) is for the querier, not steered.
    out.push_str("\t\tip protocol igmp accept\n");
    for (group, plan) in groups {
        let _ = writeln!(out, "\t\tip daddr {group} ip ttl 0-1 counter drop");
        if !plan.elements.is_empty() {
            let elems: Vec<String> = plan
                .elements
                .iter()
                .map(|(v, h)| format!("{} : jump {}", Ipv4Addr::from(*v), h.chain()))
                .collect();
            let _ = writeln!(
                out,
                "\t\tip daddr {group} ip saddr & {} vmap {{ {} }}",
                Ipv4Addr::from(plan.mask),
                elems.join(", ")
            );
        }
        // No owner (and no fallback), or a hop that sent it back where it came from.
        let _ = writeln!(out, "\t\tip daddr {group} counter drop");
    }
    out.push_str("\t}\n}\n");
    out
}

/// Packet counters of the table as `nft list table` prints them: per member chain, the packets
/// it forwarded; dropped for TTL ≤ 1; dropped for having no owner (or for arriving on their
/// owner's own interface).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub forwarded: BTreeMap<String, u64>,
    pub ttl_dropped: u64,
    pub gap_dropped: u64,
}

impl KernelCounters {
    pub fn add(&mut self, other: &KernelCounters) {
        for (chain, n) in &other.forwarded {
            *self.forwarded.entry(chain.clone()).or_default() += n;
        }
        self.ttl_dropped += other.ttl_dropped;
        self.gap_dropped += other.gap_dropped;
    }
}

/// Reads [`KernelCounters`] from the listing; lines it does not recognise are skipped.
pub fn parse_counters(listing: &str) -> KernelCounters {
    let mut out = KernelCounters::default();
    let mut chain = "";
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim();
            continue;
        }
        let Some(n) = line
            .split_once("counter packets ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if line.contains(" fwd ") {
            *out.forwarded.entry(chain.to_owned()).or_default() += n;
        } else if chain == "ingress" && line.contains("ip ttl 0-1") {
            out.ttl_dropped += n;
        } else if chain == "ingress" {
            out.gap_dropped += n;
        }
    }
    out
}

/// The native nftables data plane: the plan per protected group and whether the kernel has it.
#[derive(Debug)]
pub struct NetdevPlanner {
    devices: Vec<String>,
    groups: BTreeMap<Ipv4Addr, GroupPlan>,
    /// A table was written (or is on its way: see [`NetdevPlanner::pending`]).
    written: bool,
    /// The last write failed: the kernel may not hold the plans; retried ([`NetdevPlanner::retry`]).
    stale: bool,
    /// A table an earlier verifier left is carrying traffic: plans change in memory only, and
    /// the kernel is written when [`NetdevPlanner::release`] is called (after the adopt grace).
    holding: bool,
}

impl NetdevPlanner {
    pub fn new(devices: Vec<String>, holding: bool) -> Self {
        NetdevPlanner {
            devices,
            groups: BTreeMap::new(),
            written: false,
            stale: false,
            holding,
        }
    }

    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// Recomputes `group`'s plan; returns the ruleset to apply if the kernel must change, and
    /// the claims left out of it.
    pub fn update(
        &mut self,
        group: Ipv4Addr,
        table: &OwnershipTable,
        gap: GapPolicy,
        device_of: impl Fn(u32) -> Option<String>,
    ) -> (Option<String>, Vec<PlanError>) {
        let (plan, left_out) = plan_group(group, table, gap, device_of);
        let changed = self.groups.get(&group) != Some(&plan);
        self.groups.insert(group, plan);
        (self.pending(changed), left_out)
    }

    /// Stops holding the adopted table; returns the ruleset of the rebuilt plans. Nothing when
    /// nothing was adopted: the kernel has the plans already, and rewriting it would only reset
    /// the table's counters.
    pub fn release(&mut self) -> Option<String> {
        if !std::mem::replace(&mut self.holding, false) {
            return None;
        }
        self.pending(true)
    }

    /// The ruleset to write, if any. It is counted as written from here on: the executor
    /// applies ops in order and reports a failure ([`NetdevPlanner::apply_failed`]), so a
    /// second change planned before this one is applied does not write the same table twice.
    fn pending(&mut self, changed: bool) -> Option<String> {
        if self.holding || (!changed && self.written && !self.stale) {
            return None;
        }
        self.written = true;
        self.stale = false;
        Some(ruleset(&self.devices, &self.groups))
    }

    /// The ruleset again if the last write failed (the plans have not changed since, so no
    /// update would otherwise write them).
    pub fn retry(&mut self) -> Option<String> {
        if !self.stale {
            return None;
        }
        self.pending(false)
    }

    /// The driver could not apply the last ruleset.
    pub fn apply_failed(&mut self) {
        self.stale = true;
    }

    /// Whether this process wrote a table (or one is on its way to the kernel).
    pub fn is_written(&self) -> bool {
        self.written
    }

    /// The executor applied a ruleset: the kernel holds the plans.
    pub fn applied(&mut self) {
        self.written = true;
        self.stale = false;
    }

    pub fn groups(&self) -> Vec<Ipv4Addr> {
        self.groups.keys().copied().collect()
    }

    /// Map elements in the plans (what the kernel has once written).
    pub fn elements(&self) -> usize {
        self.groups.values().map(|p| p.elements.len()).sum()
    }

    /// Per group and member: how many of the map's values steer there, through where, and
    /// (from `counters`, when read) how many packets the member's chain forwarded.
    pub fn status(&self, counters: Option<&KernelCounters>) -> Vec<NativeMapRow> {
        let mut rows: BTreeMap<(Ipv4Addr, &Hop), u64> = BTreeMap::new();
        for (g, p) in &self.groups {
            for (_, h) in &p.elements {
                *rows.entry((*g, h)).or_default() += 1;
            }
        }
        rows.into_iter()
            .map(|((g, h), values)| NativeMapRow {
                group: g.to_string(),
                member: h.member,
                via: h.via.to_string(),
                device: h.device.clone(),
                mask: self
                    .groups
                    .get(&g)
                    .map(|p| Ipv4Addr::from(p.mask).to_string())
                    .unwrap_or_default(),
                values,
                packets: counters.and_then(|c| c.forwarded.get(&h.chain()).copied()),
            })
            .collect()
    }
}

impl Planner for NetdevPlanner {
    fn plan(
        &mut self,
        _now: Timestamp,
        view: &View<'_>,
        change: Change,
        out: &mut Vec<DataplaneOp>,
    ) -> Vec<PlanFailure> {
        let mut failures = Vec::new();
        let pending = match change {
            Change::Ownership(group) => {
                let table = view.ownership();
                let groups: Vec<Ipv4Addr> = match group {
                    Some(g) => vec![g],
                    None => {
                        let mut g: Vec<Ipv4Addr> = table.groups().collect();
                        g.extend(self.groups());
                        g.sort();
                        g.dedup();
                        g
                    }
                };
                let mut pending = None;
                for g in groups
                    .into_iter()
                    .filter(|&g| view.verifier.is_protected(g))
                {
                    let (text, left_out) = self.update(g, table, view.gap, |i| view.device_of(i));
                    if text.is_some() {
                        pending = text;
                    }
                    failures.extend(
                        left_out
                            .into_iter()
                            .map(|error| PlanFailure { group: g, error }),
                    );
                }
                pending
            }
            Change::Settle => {
                let text = self.release();
                if text.is_some() {
                    info!("the nft table taken over at start now follows the rebuilt ownership");
                }
                text
            }
            Change::Retry => self.retry(),
            Change::Listeners(_) => None,
        };
        out.extend(pending.map(DataplaneOp::NetdevTable));
        failures
    }

    fn completed(&mut self, op: &DataplaneOp, ok: bool) {
        match (op, ok) {
            (DataplaneOp::NetdevTable(_), true) => self.applied(),
            (DataplaneOp::NetdevTable(_), false) => self.apply_failed(),
            _ => {}
        }
    }

    fn withdraw(&mut self, out: &mut Vec<DataplaneOp>) {
        out.push(DataplaneOp::DeleteNetdevTable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::ownership::Claim;
    use igmp_ext::{AllocationEpoch, MemberId, Slice, Timestamp};

    const G: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);

    fn claim(slices: SliceSet, ifindex: u32, sender: Ipv4Addr) -> Claim {
        Claim {
            slices,
            epoch: AllocationEpoch(1),
            ifindex,
            sender,
            expires: igmp_ext::Instant::from_millis(1_000_000),
            member_key: igmp_ext::KeyId([1; 8]),
            issuer: igmp_ext::KeyId([2; 8]),
            standby: igmp_ext::SliceSet::default(),
            liveness: Vec::new(),
        }
    }

    fn table() -> OwnershipTable {
        let mut t = OwnershipTable::new();
        // Member 1: last bit 0 on ifindex 3; member 2: last two bits 01 on ifindex 4; 11 unowned.
        t.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(1),
            claim(
                SliceSet::from(Slice::new(0, 1)),
                3,
                Ipv4Addr::new(10, 0, 1, 2),
            ),
        )
        .unwrap();
        t.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(2),
            claim(
                SliceSet::from(Slice::new(1, 3)),
                4,
                Ipv4Addr::new(10, 0, 2, 2),
            ),
        )
        .unwrap();
        t
    }

    fn device_of(i: u32) -> Option<String> {
        match i {
            3 => Some("s1".into()),
            4 => Some("r1-eth2".into()),
            _ => None,
        }
    }

    #[test]
    fn plan_expands_claims_and_fills_gaps_only_with_the_fallback() {
        let t = table();
        let p = plan_group(G, &t, GapPolicy::Drop, device_of).0;
        assert_eq!(p.mask, 3);
        let owners: Vec<(u32, u32)> = p.elements.iter().map(|(v, h)| (*v, h.member)).collect();
        assert_eq!(owners, vec![(0, 1), (1, 2), (2, 1)]);
        assert_eq!(p.elements[1].1.device, "r1-eth2");
        let p = plan_group(G, &t, GapPolicy::Fallback(MemberId(2)), device_of).0;
        let owners: Vec<u32> = p.elements.iter().map(|(_, h)| h.member).collect();
        assert_eq!(owners, vec![1, 2, 1, 2]);
        // A fallback member with no claim fills nothing.
        let p = plan_group(G, &t, GapPolicy::Fallback(MemberId(9)), device_of).0;
        assert_eq!(p.elements.len(), 3);
        // A claim from an interface we do not serve is left out.
        let p = plan_group(G, &t, GapPolicy::Drop, |i| (i == 3).then(|| "s1".into())).0;
        assert!(p.elements.iter().all(|(_, h)| h.member == 1));
    }

    #[test]
    fn ruleset_is_one_transaction_with_ttl_and_no_reflection() {
        let t = table();
        let mut groups = BTreeMap::new();
        groups.insert(G, plan_group(G, &t, GapPolicy::Drop, device_of).0);
        let text = ruleset(&["c0".into(), "s1".into(), "r1-eth2".into()], &groups);
        assert!(text.starts_with(
            "add table netdev manycast_native\ndelete table netdev manycast_native\n"
        ));
        // `fwd ip to` decrements the TTL: the table must not touch it too.
        assert!(!text.contains("ttl set"), "{text}");
        assert!(text.contains(
            "\tchain m2_10_0_2_2 {\n\t\tmeta iifname \"r1-eth2\" accept\n\t\tcounter fwd ip to 10.0.2.2 device \"r1-eth2\"\n\t}\n"
        ));
        assert!(text.contains(
            "type filter hook ingress devices = { \"c0\", \"s1\", \"r1-eth2\" } priority 0; policy accept;"
        ));
        let ingress = &text[text.find("chain ingress").unwrap()..];
        assert_eq!(
            ingress,
            "chain ingress {\n\
             \t\ttype filter hook ingress devices = { \"c0\", \"s1\", \"r1-eth2\" } priority 0; policy accept;\n\
             \t\tip protocol igmp accept\n\
             \t\tip daddr 232.1.1.1 ip ttl 0-1 counter drop\n\
             \t\tip daddr 232.1.1.1 ip saddr & 0.0.0.3 vmap { 0.0.0.0 : jump m1_10_0_1_2, 0.0.0.1 : jump m2_10_0_2_2, 0.0.0.2 : jump m1_10_0_1_2 }\n\
             \t\tip daddr 232.1.1.1 counter drop\n\
             \t}\n\
             }\n"
        );
        // No claims: only the drop rules.
        let mut empty = BTreeMap::new();
        empty.insert(G, GroupPlan::default());
        let text = ruleset(&["c0".into()], &empty);
        assert!(!text.contains("vmap { 0."));
        assert!(!text.contains("fwd"));
        assert!(text.contains("ip daddr 232.1.1.1 counter drop"));
    }

    #[test]
    fn counters_are_read_per_chain_from_the_listing() {
        let listing = "table netdev manycast_native {\n\
            \tchain m1_10_0_1_2 {\n\t\tmeta iifname \"s1\" accept\n\
            \t\tcounter packets 7 bytes 217 fwd ip to 10.0.1.2 device \"s1\"\n\t}\n\
            \tchain ingress {\n\
            \t\ttype filter hook ingress devices = { \"c0\", \"s1\" } priority filter; policy accept;\n\
            \t\tip protocol igmp accept\n\
            \t\tip daddr 232.1.1.1 ip ttl 0-1 counter packets 2 bytes 60 drop\n\
            \t\tip daddr 232.1.1.1 ip saddr & 0.0.0.1 vmap { 0.0.0.0 : jump m1_10_0_1_2 }\n\
            \t\tip daddr 232.1.1.1 counter packets 3 bytes 90 drop\n\
            \t\tip daddr 232.1.1.2 counter packets 1 bytes 30 drop\n\t}\n}\n";
        let c = parse_counters(listing);
        assert_eq!(c.forwarded.get("m1_10_0_1_2"), Some(&7));
        assert_eq!((c.ttl_dropped, c.gap_dropped), (2, 4));
        assert_eq!(
            parse_counters("counter packets x\nchain\n"),
            KernelCounters::default()
        );
    }

    #[test]
    fn holding_defers_the_kernel_until_release() {
        let t = table();
        let mut s = NetdevPlanner::new(vec!["c0".into()], true);
        assert_eq!(s.update(G, &t, GapPolicy::Drop, device_of).0, None);
        assert_eq!(s.elements(), 3);
        let text = s.release().expect("written on release");
        assert!(text.contains("jump m1_10_0_1_2"));
        s.applied();
        // Unchanged plan: nothing to write; a change: written.
        assert_eq!(s.update(G, &t, GapPolicy::Drop, device_of).0, None);
        assert!(s
            .update(G, &t, GapPolicy::Fallback(MemberId(1)), device_of)
            .0
            .is_some());
        let rows = s.status(None);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].member, rows[0].values), (1, 3));
        assert_eq!((rows[1].member, rows[1].values), (2, 1));
        // Released once: a second release (or one with nothing adopted) writes nothing.
        assert_eq!(s.release(), None);
        // A failed write is retried with the same plan, and only then.
        assert_eq!(s.retry(), None);
        s.apply_failed();
        // Even an unchanged plan is written while the last write failed.
        assert!(s
            .update(G, &t, GapPolicy::Fallback(MemberId(1)), device_of)
            .0
            .is_some());
        s.apply_failed();
        assert!(s.retry().is_some());
        // Once handed out, it is not handed out again unless it fails.
        assert_eq!(s.retry(), None);
        s.applied();
        assert_eq!(s.retry(), None);
        // Not holding and never written: the first update writes even an empty plan.
        let mut s = NetdevPlanner::new(vec!["c0".into()], false);
        let empty = OwnershipTable::new();
        assert!(s.update(G, &empty, GapPolicy::Drop, device_of).0.is_some());
        s.applied();
        assert_eq!(s.release(), None, "nothing adopted, nothing to rewrite");
    }
}
