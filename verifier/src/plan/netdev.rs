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

use super::map::{element_moves, plan_map_keeping, MapPlan};
use super::{Change, DataplaneOp, GapPolicy, NftBatch, PlanError, PlanFailure, Planner, View};
use crate::status::NativeMapRow;
use core::fmt::Write;
use igmp_ext::ownership::OwnershipTable;
use igmp_ext::{SliceSet, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
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
    /// The hop's chain: its name is the member and its address (VIP mode's netdev table names
    /// its hop chains the same way, [`super::vip`]).
    pub(super) fn chain(&self) -> String {
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
    plan_group_keeping(group, table, gap, device_of, 0)
}

/// [`plan_group`] over at least the mask `floor` while the claims fit it
/// ([`plan_map_keeping`]).
pub fn plan_group_keeping(
    group: Ipv4Addr,
    table: &OwnershipTable,
    gap: GapPolicy,
    device_of: impl Fn(u32) -> Option<String>,
    floor: u32,
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
    let (MapPlan { mask, elements }, left_out) = plan_map_keeping(&claims, fallback, floor);
    let plan = GroupPlan {
        mask,
        elements: elements
            .into_iter()
            .filter_map(|(v, m)| Some((v, hops.get(&m)?.clone())))
            .collect(),
    };
    (plan, left_out)
}

pub(super) fn quoted(devices: &[String]) -> String {
    devices
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The group's map (`ip saddr & mask` → the jump to its hop's chain), named in the table so that
/// an ownership change rewrites its moved elements only.
pub fn map_name(group: Ipv4Addr) -> String {
    let o = group.octets();
    format!("group_{}_{}_{}_{}", o[0], o[1], o[2], o[3])
}

fn element(value: u32, hop: &str) -> String {
    format!("{} : jump {hop}", Ipv4Addr::from(value))
}

/// A hop's chain: never back out of the interface the packet came in on, else forward.
pub(super) fn chain_rules(h: &Hop) -> [String; 2] {
    [
        format!("meta iifname \"{}\" accept", h.device),
        // `fwd ip to` decrements the TTL (the ingress chain dropped TTL ≤ 1 already).
        format!("counter fwd ip to {} device \"{}\"", h.via, h.device),
    ]
}

/// The whole table as one `nft -f` transaction: created if missing, deleted, and written anew.
/// `devices` are the verifier's interfaces (the ingress chain's hook); `hops` the member chains
/// (every hop the plans use, and possibly more).
pub fn ruleset(
    devices: &[String],
    hops: &BTreeSet<Hop>,
    groups: &BTreeMap<Ipv4Addr, GroupPlan>,
) -> String {
    let mut out =
        format!("add table netdev {TABLE}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n");
    for h in hops {
        let [local, fwd] = chain_rules(h);
        let _ = writeln!(
            out,
            "\tchain {} {{\n\t\t{local}\n\t\t{fwd}\n\t}}",
            h.chain()
        );
    }
    for (group, plan) in groups {
        let _ = write!(
            out,
            "\tmap {} {{\n\t\ttype ipv4_addr : verdict\n",
            map_name(*group)
        );
        if !plan.elements.is_empty() {
            let elems: Vec<String> = plan
                .elements
                .iter()
                .map(|(v, h)| element(*v, &h.chain()))
                .collect();
            let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
        }
        out.push_str("\t}\n");
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
        let _ = writeln!(
            out,
            "\t\tip daddr {group} ip saddr & {} vmap @{}",
            Ipv4Addr::from(plan.mask),
            map_name(*group)
        );
        // No owner (and no fallback), or a hop that sent it back where it came from.
        let _ = writeln!(out, "\t\tip daddr {group} counter drop");
    }
    out.push_str("\t}\n}\n");
    out
}

/// The commands that take the kernel's table from `from` to `to` when both have the same shape
/// (groups and masks): new hop chains first, then each map's removed and re-pointed values
/// deleted, then the new and re-pointed ones added (an element's value cannot be replaced in
/// place). Empty when nothing moved.
pub fn element_updates(
    new_hops: &BTreeSet<Hop>,
    from: &BTreeMap<Ipv4Addr, GroupPlan>,
    to: &BTreeMap<Ipv4Addr, GroupPlan>,
) -> String {
    let mut out = String::new();
    for h in new_hops {
        // A member heard on another interface keeps its chain's name: flushed, the chain
        // forwards out of the new one only (a new chain is empty anyway).
        let _ = writeln!(out, "add chain netdev {TABLE} {}", h.chain());
        let _ = writeln!(out, "flush chain netdev {TABLE} {}", h.chain());
        for rule in chain_rules(h) {
            let _ = writeln!(out, "add rule netdev {TABLE} {} {rule}", h.chain());
        }
    }
    let mut adds = String::new();
    for (group, plan) in to {
        let old: BTreeMap<u32, &Hop> = from
            .get(group)
            .map(|p| p.elements.iter().map(|(v, h)| (*v, h)).collect())
            .unwrap_or_default();
        let new: BTreeMap<u32, &Hop> = plan.elements.iter().map(|(v, h)| (*v, h)).collect();
        element_moves(
            (&mut out, &mut adds),
            (&format!("netdev {TABLE}"), &map_name(*group)),
            &old,
            &new,
            |v| Ipv4Addr::from(v).to_string(),
            |v, h| Some(element(v, &h.chain())),
        );
    }
    out + &adds
}

/// Whether the kernel's table can go from `from` to `to` by element updates: the same groups
/// with the same masks (interfaces never change while the verifier runs).
fn same_shape(from: &BTreeMap<Ipv4Addr, GroupPlan>, to: &BTreeMap<Ipv4Addr, GroupPlan>) -> bool {
    from.len() == to.len()
        && from
            .iter()
            .zip(to)
            .all(|((g, p), (h, q))| g == h && p.mask == q.mask)
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

/// Hop chains no map points at any more that the kernel's table may keep before the next
/// change rewrites it (a member's old address, a member gone): bounded, so a member that keeps
/// changing its address cannot grow the table.
pub(super) const UNUSED_CHAINS: usize = 16;

/// What this process put in the kernel's table (assuming the ops handed out are applied in
/// order: a failure makes it unknown).
#[derive(Debug, Clone, Default)]
struct Written {
    groups: BTreeMap<Ipv4Addr, GroupPlan>,
    hops: BTreeSet<Hop>,
}

/// The native nftables data plane: the plan per protected group and what the kernel has.
#[derive(Debug)]
pub struct NetdevPlanner {
    devices: Vec<String>,
    groups: BTreeMap<Ipv4Addr, GroupPlan>,
    /// A table was written (or is on its way: see [`NetdevPlanner::pending`]).
    written: bool,
    /// The last write failed: the kernel may not hold the plans; retried ([`NetdevPlanner::retry`]).
    stale: bool,
    /// The kernel's table as written, when known: the next change is an element update against
    /// it. Unknown (never written, a write failed, adopted): the next change rewrites the table.
    kernel: Option<Written>,
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
            kernel: None,
            holding,
        }
    }

    /// Hooks `device` too, for packets to steer only: a site router's upstream interface,
    /// where clients' packets arrive but no join is taken (SPEC.md §10.8). The next write is
    /// the whole table.
    pub fn add_device(&mut self, device: String) {
        if !self.devices.contains(&device) {
            self.devices.push(device);
            self.kernel = None;
        }
    }

    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// Recomputes `group`'s plan (in memory: [`NetdevPlanner::pending`] hands out the kernel
    /// change); returns the claims left out of it.
    pub fn update(
        &mut self,
        group: Ipv4Addr,
        table: &OwnershipTable,
        gap: GapPolicy,
        device_of: impl Fn(u32) -> Option<String>,
    ) -> Vec<PlanError> {
        // The mask the kernel's map has, kept so that a change moves elements (issue 16).
        let floor = self.groups.get(&group).map_or(0, |p| p.mask);
        let (plan, left_out) = plan_group_keeping(group, table, gap, device_of, floor);
        self.groups.insert(group, plan);
        left_out
    }

    /// Stops holding the adopted table; returns the ruleset of the rebuilt plans. Nothing when
    /// nothing was adopted: the kernel has the plans already, and rewriting it would only reset
    /// the table's counters.
    pub fn release(&mut self) -> Option<NftBatch> {
        if !std::mem::replace(&mut self.holding, false) {
            return None;
        }
        self.kernel = None;
        self.pending()
    }

    /// The change that brings the kernel in line with the plans, if any: the moved elements
    /// when the kernel's table is known and has the plans' shape, else the whole table. It is
    /// counted as written from here on: the executor applies ops in order and reports a
    /// failure ([`NetdevPlanner::apply_failed`]), so a second change planned before this one is
    /// applied does not write the same elements twice.
    pub fn pending(&mut self) -> Option<NftBatch> {
        if self.holding {
            return None;
        }
        let used: BTreeSet<Hop> = self
            .groups
            .values()
            .flat_map(|p| p.elements.iter().map(|(_, h)| h.clone()))
            .collect();
        if let Some(k) = self
            .kernel
            .as_mut()
            .filter(|k| same_shape(&k.groups, &self.groups))
        {
            let new_hops: BTreeSet<Hop> = used.difference(&k.hops).cloned().collect();
            let unused = k.hops.difference(&used).count();
            // Chains are added as they are needed and dropped only by a rewrite: once a new
            // one would join more than UNUSED_CHAINS unused ones, the table is rewritten.
            if new_hops.is_empty() || unused <= UNUSED_CHAINS {
                let text = element_updates(&new_hops, &k.groups, &self.groups);
                k.groups.clone_from(&self.groups);
                // A hop whose chain was just rewritten for another device is gone from the
                // kernel: moving back must rewrite the chain again.
                k.hops
                    .retain(|h| !new_hops.iter().any(|n| n.chain() == h.chain()));
                k.hops.extend(new_hops);
                return (!text.is_empty()).then(|| NftBatch::elements(text));
            }
        }
        self.written = true;
        self.stale = false;
        let text = ruleset(&self.devices, &used, &self.groups);
        self.kernel = Some(Written {
            groups: self.groups.clone(),
            hops: used,
        });
        Some(NftBatch::rewrite(text))
    }

    /// The whole table again if the last write failed (the plans have not changed since, so no
    /// update would otherwise write them).
    pub fn retry(&mut self) -> Option<NftBatch> {
        if !self.stale {
            return None;
        }
        self.pending()
    }

    /// The driver could not apply a change: what the kernel holds is unknown, so the next
    /// change (or the retry) rewrites the table.
    pub fn apply_failed(&mut self) {
        self.stale = true;
        self.kernel = None;
    }

    /// Whether this process wrote a table (or one is on its way to the kernel).
    pub fn is_written(&self) -> bool {
        self.written
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
                let mut planned = false;
                for g in groups
                    .into_iter()
                    .filter(|&g| view.verifier.is_protected(g))
                {
                    planned = true;
                    let left_out = self.update(g, table, view.gap, |i| view.device_of(i));
                    failures.extend(
                        left_out
                            .into_iter()
                            .map(|error| PlanFailure { group: g, error }),
                    );
                }
                // No protected group has ever had a claim: no table yet.
                (planned || self.written).then(|| self.pending()).flatten()
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
        if let (DataplaneOp::NetdevTable(_), false) = (op, ok) {
            self.apply_failed();
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
            waiting: igmp_ext::SliceSet::default(),
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

    fn hops(groups: &BTreeMap<Ipv4Addr, GroupPlan>) -> BTreeSet<Hop> {
        groups
            .values()
            .flat_map(|p| p.elements.iter().map(|(_, h)| h.clone()))
            .collect()
    }

    #[test]
    fn ruleset_is_one_transaction_with_ttl_and_no_reflection() {
        let t = table();
        let mut groups = BTreeMap::new();
        groups.insert(G, plan_group(G, &t, GapPolicy::Drop, device_of).0);
        let text = ruleset(
            &["c0".into(), "s1".into(), "r1-eth2".into()],
            &hops(&groups),
            &groups,
        );
        assert!(text.starts_with(
            "add table netdev manycast_native\ndelete table netdev manycast_native\n"
        ));
        // `fwd ip to` decrements the TTL: the table must not touch it too.
        assert!(!text.contains("ttl set"), "{text}");
        assert!(text.contains(
            "\tchain m2_10_0_2_2 {\n\t\tmeta iifname \"r1-eth2\" accept\n\t\tcounter fwd ip to 10.0.2.2 device \"r1-eth2\"\n\t}\n"
        ));
        // The map is named, so that a change can touch its elements alone.
        assert!(text.contains(
            "\tmap group_232_1_1_1 {\n\t\ttype ipv4_addr : verdict\n\t\telements = { 0.0.0.0 : jump m1_10_0_1_2, 0.0.0.1 : jump m2_10_0_2_2, 0.0.0.2 : jump m1_10_0_1_2 }\n\t}\n"
        ), "{text}");
        let ingress = &text[text.find("chain ingress").unwrap()..];
        assert_eq!(
            ingress,
            "chain ingress {\n\
             \t\ttype filter hook ingress devices = { \"c0\", \"s1\", \"r1-eth2\" } priority 0; policy accept;\n\
             \t\tip protocol igmp accept\n\
             \t\tip daddr 232.1.1.1 ip ttl 0-1 counter drop\n\
             \t\tip daddr 232.1.1.1 ip saddr & 0.0.0.3 vmap @group_232_1_1_1\n\
             \t\tip daddr 232.1.1.1 counter drop\n\
             \t}\n\
             }\n"
        );
        // No claims: an empty map, only the drop rules act.
        let mut empty = BTreeMap::new();
        empty.insert(G, GroupPlan::default());
        let text = ruleset(&["c0".into()], &BTreeSet::new(), &empty);
        assert!(!text.contains("elements"));
        assert!(!text.contains("fwd"));
        assert!(text.contains("ip daddr 232.1.1.1 counter drop"));
    }

    /// Issue 16, item 3: an ownership change that keeps the table's shape touches only the map
    /// elements that moved (no rewrite, so no counter reset); a new hop's chain is added; a
    /// change of shape (a new group, a new mask) rewrites the table.
    #[test]
    fn a_change_writes_only_the_moved_elements_and_a_shape_change_rewrites() {
        let t = table();
        let mut s = NetdevPlanner::new(vec!["c0".into()], false);
        s.update(G, &t, GapPolicy::Drop, device_of);
        let first = s.pending().expect("the first write");
        assert!(first.rewrite);
        // Nothing moved: nothing to write.
        s.update(G, &t, GapPolicy::Drop, device_of);
        assert_eq!(s.pending(), None);
        // The unowned value 0.0.0.3 goes to the fallback: one element added, nothing else.
        s.update(G, &t, GapPolicy::Fallback(MemberId(2)), device_of);
        let b = s.pending().expect("an element update");
        assert!(!b.rewrite);
        assert_eq!(
            b.text,
            "add element netdev manycast_native group_232_1_1_1 { 0.0.0.3 : jump m2_10_0_2_2 }\n"
        );
        // Member 1 leaves (same mask, member 2 on its 0.0.0.1 and the fallback's values): the
        // values it had are re-pointed, member 2's own are not touched.
        let mut t2 = OwnershipTable::new();
        t2.apply(
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
        s.update(G, &t2, GapPolicy::Fallback(MemberId(2)), device_of);
        let b = s.pending().expect("an element update");
        assert!(!b.rewrite);
        assert_eq!(
            b.text,
            "delete element netdev manycast_native group_232_1_1_1 { 0.0.0.0, 0.0.0.2 }\n\
             add element netdev manycast_native group_232_1_1_1 { 0.0.0.0 : jump m2_10_0_2_2, 0.0.0.2 : jump m2_10_0_2_2 }\n"
        );
        // Member 1 back from a new address: its chain is added, then the elements point at it.
        s.update(G, &t, GapPolicy::Fallback(MemberId(2)), |i| {
            device_of(i).map(|d| if i == 3 { "c0".into() } else { d })
        });
        let b = s.pending().expect("an element update");
        assert!(!b.rewrite);
        assert!(
            b.text.starts_with(
                "add chain netdev manycast_native m1_10_0_1_2\n\
             flush chain netdev manycast_native m1_10_0_1_2\n\
             add rule netdev manycast_native m1_10_0_1_2 meta iifname \"c0\" accept\n"
            ),
            "{}",
            b.text
        );
        assert!(b.text.ends_with(
            "add element netdev manycast_native group_232_1_1_1 { 0.0.0.0 : jump m1_10_0_1_2, 0.0.0.2 : jump m1_10_0_1_2 }\n"
        ), "{}", b.text);
        // A second group: the table's shape changes, it is rewritten with both maps.
        let g2 = Ipv4Addr::new(232, 1, 1, 2);
        s.update(g2, &OwnershipTable::new(), GapPolicy::Drop, device_of);
        let b = s.pending().expect("a rewrite");
        assert!(b.rewrite);
        assert!(b.text.contains("map group_232_1_1_2 {"));
        assert!(b.text.contains("map group_232_1_1_1 {"));
        // A coarser mask (member 2 alone owns everything): the map keeps its mask, elements
        // move.
        let mut all = OwnershipTable::new();
        all.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(2),
            claim(SliceSet::from(Slice::ALL), 4, Ipv4Addr::new(10, 0, 2, 2)),
        )
        .unwrap();
        s.update(G, &all, GapPolicy::Drop, device_of);
        assert!(!s.pending().expect("elements").rewrite);
        // A finer one than the map has: rewritten.
        let mut fine = OwnershipTable::new();
        fine.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(2),
            claim(
                SliceSet::from(Slice::new(0, 0x1ff)),
                5,
                Ipv4Addr::new(10, 0, 2, 2),
            ),
        )
        .unwrap();
        s.update(G, &fine, GapPolicy::Drop, device_of);
        assert!(s.pending().expect("a rewrite").rewrite);
    }

    /// Found by review (the VIP fast path's chains handle it): a member heard on another of
    /// the verifier's interfaces with the same address keeps its chain's name, so the update
    /// added the new device's rules after the old ones and the old `fwd` still won; and once
    /// the member moved back, its old hop counted as in the kernel and the chain was not
    /// rewritten at all. Each move now flushes the chain and writes it anew.
    #[test]
    fn a_member_heard_on_another_interface_is_forwarded_out_of_it() {
        let t = table();
        let mut s = NetdevPlanner::new(vec!["c0".into()], false);
        s.update(G, &t, GapPolicy::Drop, device_of);
        assert!(s.pending().expect("the first write").rewrite);
        let moved = |i: u32| device_of(i).map(|d| if i == 3 { "s2".into() } else { d });
        for (device, other) in [
            (moved as fn(u32) -> Option<String>, "s1"),
            (device_of, "s2"),
        ] {
            s.update(G, &t, GapPolicy::Drop, device);
            let b = s.pending().expect("the chain rewritten");
            assert!(!b.rewrite);
            let chain = "m1_10_0_1_2";
            let flush = b
                .text
                .find(&format!("flush chain netdev manycast_native {chain}\n"))
                .unwrap_or_else(|| panic!("no flush of {chain}: {}", b.text));
            let fwd = b
                .text
                .find(&format!(
                    "add rule netdev manycast_native {chain} counter fwd"
                ))
                .expect("the new fwd rule");
            assert!(flush < fwd, "{}", b.text);
            assert!(!b.text.contains(&format!("\"{other}\"")), "{}", b.text);
        }
    }

    #[test]
    fn chains_left_unused_are_bounded_by_a_rewrite() {
        let mut s = NetdevPlanner::new(vec!["c0".into()], false);
        let mut rewrites = 0;
        // Member 1 keeps moving to a new address: each is a new chain, the old one unused.
        for i in 0..40u8 {
            let mut t = OwnershipTable::new();
            t.apply(
                Timestamp::from_secs(1),
                G,
                MemberId(1),
                claim(SliceSet::from(Slice::ALL), 3, Ipv4Addr::new(10, 0, 1, i)),
            )
            .unwrap();
            s.update(G, &t, GapPolicy::Drop, device_of);
            rewrites += usize::from(s.pending().expect("a change").rewrite);
            let k = s.kernel.as_ref().expect("known");
            assert!(k.hops.len() <= UNUSED_CHAINS + 2, "{}", k.hops.len());
        }
        assert!((2..40).contains(&rewrites), "{rewrites}");
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
        s.update(G, &t, GapPolicy::Drop, device_of);
        assert_eq!(s.pending(), None);
        assert_eq!(s.elements(), 3);
        let text = s.release().expect("written on release");
        assert!(text.rewrite, "the adopted table is replaced whole");
        assert!(text.contains("jump m1_10_0_1_2"));
        // Unchanged plan: nothing to write; a change: written.
        s.update(G, &t, GapPolicy::Drop, device_of);
        assert_eq!(s.pending(), None);
        s.update(G, &t, GapPolicy::Fallback(MemberId(1)), device_of);
        assert!(s.pending().is_some());
        let rows = s.status(None);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].member, rows[0].values), (1, 3));
        assert_eq!((rows[1].member, rows[1].values), (2, 1));
        // Released once: a second release (or one with nothing adopted) writes nothing.
        assert_eq!(s.release(), None);
        // A failed write is retried with the same plan, and only then, as a rewrite (what the
        // kernel holds is unknown).
        assert_eq!(s.retry(), None);
        s.apply_failed();
        // Even an unchanged plan is written while the last write failed.
        s.update(G, &t, GapPolicy::Fallback(MemberId(1)), device_of);
        assert!(s.pending().expect("rewritten").rewrite);
        s.apply_failed();
        assert!(s.retry().expect("retried").rewrite);
        // Once handed out, it is not handed out again unless it fails.
        assert_eq!(s.retry(), None);
        // A failed element update is retried as a rewrite too.
        s.update(G, &t, GapPolicy::Drop, device_of);
        assert!(!s.pending().expect("an element update").rewrite);
        s.apply_failed();
        assert!(s.retry().expect("retried").rewrite);
        // Not holding and never written: the first update writes even an empty plan.
        let mut s = NetdevPlanner::new(vec!["c0".into()], false);
        let empty = OwnershipTable::new();
        s.update(G, &empty, GapPolicy::Drop, device_of);
        assert!(s.pending().is_some());
        assert_eq!(s.release(), None, "nothing adopted, nothing to rewrite");
    }
}
