//! IPv6 native steering on nftables (issue 15, item 3; SPEC.md §10.2.2): the IPv6 counterpart
//! of [`super::netdev`], in its own `netdev` table ([`TABLE`]). For each protected IPv6 group
//! with claims, the ingress chain on the verifier's interfaces looks up `ip6 saddr & mask` of a
//! datagram to the group in the group's verdict map, whose elements jump to the owner's hop
//! chain, which forwards it with `fwd ip6 to <member's link-local address> device <interface>`
//! (the kernel resolves the neighbour on that device and decrements the hop limit; the
//! destination stays the group). The map is IPv4's expansion over the union of the owners'
//! masks ([`super::map`]); a claim whose slices would make it wider than 2^16 values gets a rule
//! per slice before the map instead, so no claim is left out. Sources no one owns follow the
//! gap policy: the fallback member fills the map's holes, else the group's drop rule takes
//! them. MLD itself (ICMPv6) is never steered.
//!
//! Like IPv4's table, a change of ownership that keeps the table's shape (the same groups,
//! masks and per-slice rules) is written as the map elements that moved, one nfnetlink batch,
//! so the hop chains' counters carry on; the whole table is written only when its shape
//! changes or what the kernel holds is unknown (the first write, a failed one, a table an
//! earlier verifier left, which is held as it is through the adopt grace). The planning and
//! the text are pure and tested here (`netdev6_tests.rs`).

use super::map::{element_moves, plan_map_keeping, MapPlanOf};
use super::netdev::{quoted, UNUSED_CHAINS};
use super::{DataplaneOp, GapPolicy, NftBatch, PlanError};
use core::fmt::Write;
use igmp_ext::ownership::OwnershipTable6;
use igmp_ext::SliceSet6;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

pub const TABLE: &str = "manycast6";

/// Where one member's IPv6 packets leave the router: its link-local address (the source of its
/// signed reports) on the interface its reports came in on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hop6 {
    pub member: u32,
    pub via: Ipv6Addr,
    pub device: String,
}

impl Hop6 {
    /// The chain's name: the member and its address's groups in hex.
    pub fn chain(&self) -> String {
        let s: Vec<String> = self
            .via
            .segments()
            .iter()
            .map(|g| format!("{g:x}"))
            .collect();
        format!("m{}_{}", self.member, s.join("_"))
    }

    /// Never back out of the interface the packet came in on, else forward (`fwd ip6 to`
    /// decrements the hop limit; the ingress chain dropped hop limits ≤ 1 already).
    fn rules(&self) -> [String; 2] {
        [
            format!("meta iifname \"{}\" accept", self.device),
            format!("counter fwd ip6 to {} device \"{}\"", self.via, self.device),
        ]
    }
}

/// One protected group's steering: the map (`ip6 saddr & mask` → its owner's hop, the gap
/// policy's fallback in the holes) and the slices of claims the map could not take with the
/// others, one rule each (value, mask, hop), looked at before the map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPlan6 {
    pub mask: u128,
    pub elements: Vec<(u128, Hop6)>,
    pub rules: Vec<(u128, u128, Hop6)>,
}

impl GroupPlan6 {
    fn hops(&self) -> impl Iterator<Item = &Hop6> {
        let mapped = self.elements.iter().map(|(_, h)| h);
        mapped.chain(self.rules.iter().map(|(_, _, h)| h))
    }
}

/// The plan of every IPv6 group with claims (claims heard on interfaces not served are left
/// out: nothing can be steered to them). `floor` is each group's map mask in the kernel, kept
/// while the claims fit it, so that a change that needs no finer mask moves elements.
pub fn plan(
    table: &OwnershipTable6,
    gap: GapPolicy,
    device_of: impl Fn(u32) -> Option<String>,
    floor: impl Fn(Ipv6Addr) -> u128,
) -> BTreeMap<Ipv6Addr, GroupPlan6> {
    let mut out = BTreeMap::new();
    for group in table.groups() {
        let mut hops = BTreeMap::new();
        let mut claims: Vec<(u32, SliceSet6)> = Vec::new();
        for (m, c) in table.claims(group) {
            let Some(device) = device_of(c.ifindex) else {
                continue;
            };
            let hop = Hop6 {
                member: m.0,
                via: c.sender,
                device,
            };
            hops.insert(m.0, hop);
            claims.push((m.0, c.slices.clone()));
        }
        let fallback = match gap {
            GapPolicy::Fallback(m) if hops.contains_key(&m.0) => Some(m.0),
            _ => None,
        };
        let (MapPlanOf { mask, elements }, left_out) =
            plan_map_keeping(&claims, fallback, floor(group));
        let mut plan = GroupPlan6 {
            mask,
            elements: elements
                .into_iter()
                .filter_map(|(v, m)| Some((v, hops.get(&m)?.clone())))
                .collect(),
            rules: Vec::new(),
        };
        for PlanError::ClaimLeftOut { member, .. } in left_out {
            let (Some(hop), Some((_, slices))) =
                (hops.get(&member), claims.iter().find(|(m, _)| *m == member))
            else {
                continue;
            };
            let rules = slices.iter().map(|s| (s.value(), s.mask(), hop.clone()));
            plan.rules.extend(rules);
        }
        if !plan.elements.is_empty() || !plan.rules.is_empty() {
            out.insert(group, plan);
        }
    }
    out
}

/// The group's map, named in the table so that an ownership change rewrites its moved
/// elements only.
pub fn map_name(group: Ipv6Addr) -> String {
    let s: Vec<String> = group.segments().iter().map(|g| format!("{g:x}")).collect();
    format!("group6_{}", s.join("_"))
}

fn element(value: u128, hop: &Hop6) -> String {
    format!("{} : jump {}", Ipv6Addr::from(value), hop.chain())
}

/// The whole table as one `nft -f` transaction: created if missing, deleted, and written anew.
/// `hops` are the member chains (every hop the plans use, and possibly more).
pub fn ruleset(
    devices: &[String],
    hops: &BTreeSet<Hop6>,
    groups: &BTreeMap<Ipv6Addr, GroupPlan6>,
) -> String {
    let mut out =
        format!("add table netdev {TABLE}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n");
    for h in hops {
        let [local, fwd] = h.rules();
        let _ = writeln!(
            out,
            "\tchain {} {{\n\t\t{local}\n\t\t{fwd}\n\t}}",
            h.chain()
        );
    }
    for (group, plan) in groups {
        let _ = write!(
            out,
            "\tmap {} {{\n\t\ttype ipv6_addr : verdict\n",
            map_name(*group)
        );
        if !plan.elements.is_empty() {
            let elems: Vec<String> = plan.elements.iter().map(|(v, h)| element(*v, h)).collect();
            let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
        }
        out.push_str("\t}\n");
    }
    let _ = writeln!(
        out,
        "\tchain ingress {{\n\t\ttype filter hook ingress devices = {{ {} }} priority 0; policy accept;",
        quoted(devices)
    );
    // MLD (queries to a group, reports) is for the querier and the verifier, not steered.
    out.push_str("\t\tmeta l4proto ipv6-icmp accept\n");
    for (group, plan) in groups {
        let _ = writeln!(out, "\t\tip6 daddr {group} ip6 hoplimit 0-1 counter drop");
        // The ownership table keeps slices disjoint, so these and the map never disagree.
        for (value, mask, hop) in &plan.rules {
            let _ = writeln!(
                out,
                "\t\tip6 daddr {group} ip6 saddr & {} == {} jump {}",
                Ipv6Addr::from(*mask),
                Ipv6Addr::from(*value),
                hop.chain()
            );
        }
        let _ = writeln!(
            out,
            "\t\tip6 daddr {group} ip6 saddr & {} vmap @{}",
            Ipv6Addr::from(plan.mask),
            map_name(*group)
        );
        // No owner (and no fallback), or a hop that sent it back where it came from.
        let _ = writeln!(out, "\t\tip6 daddr {group} counter drop");
    }
    out.push_str("\t}\n}\n");
    out
}

/// The commands that take the kernel's table from `from` to `to` when both have the same shape:
/// new hop chains first, then each map's removed and re-pointed values deleted, then the new
/// and re-pointed ones added. Empty when nothing moved.
pub fn element_updates(
    new_hops: &BTreeSet<Hop6>,
    from: &BTreeMap<Ipv6Addr, GroupPlan6>,
    to: &BTreeMap<Ipv6Addr, GroupPlan6>,
) -> String {
    let mut out = String::new();
    for h in new_hops {
        // A member heard on another interface keeps its chain's name: flushed, the chain
        // forwards out of the new one only (a new chain is empty anyway).
        let _ = writeln!(out, "add chain netdev {TABLE} {}", h.chain());
        let _ = writeln!(out, "flush chain netdev {TABLE} {}", h.chain());
        for rule in h.rules() {
            let _ = writeln!(out, "add rule netdev {TABLE} {} {rule}", h.chain());
        }
    }
    let mut adds = String::new();
    for (group, plan) in to {
        let old: BTreeMap<u128, &Hop6> = from
            .get(group)
            .map(|p| p.elements.iter().map(|(v, h)| (*v, h)).collect())
            .unwrap_or_default();
        let new: BTreeMap<u128, &Hop6> = plan.elements.iter().map(|(v, h)| (*v, h)).collect();
        element_moves(
            (&mut out, &mut adds),
            (&format!("netdev {TABLE}"), &map_name(*group)),
            &old,
            &new,
            |v| Ipv6Addr::from(v).to_string(),
            |v, h| Some(element(v, h)),
        );
    }
    out + &adds
}

/// Whether the kernel's table can go from `from` to `to` by element updates: the same groups
/// with the same masks and the same per-slice rules (interfaces never change while the
/// verifier runs).
fn same_shape(from: &BTreeMap<Ipv6Addr, GroupPlan6>, to: &BTreeMap<Ipv6Addr, GroupPlan6>) -> bool {
    from.len() == to.len()
        && from
            .iter()
            .zip(to)
            .all(|((g, p), (h, q))| g == h && p.mask == q.mask && p.rules == q.rules)
}

/// What this process put in the kernel's table (assuming the ops handed out are applied in
/// order: a failure makes it unknown).
#[derive(Debug, Clone, Default)]
struct Written {
    groups: BTreeMap<Ipv6Addr, GroupPlan6>,
    hops: BTreeSet<Hop6>,
}

/// The IPv6 netdev data plane: the plans and what the kernel was last given.
#[derive(Debug, Default)]
pub struct Netdev6Planner {
    devices: Vec<String>,
    groups: BTreeMap<Ipv6Addr, GroupPlan6>,
    /// The kernel's table as written, when known: the next change is an element update against
    /// it. Unknown (never written, a write failed, adopted): the next change rewrites it.
    kernel: Option<Written>,
    /// A table is in the kernel that a clean stop removes: one this process handed out, or
    /// one it adopted.
    ever: bool,
    /// A table an earlier verifier left is carrying traffic: plans change in memory only, and
    /// the kernel is written at [`Netdev6Planner::release`] (the end of the adopt grace).
    holding: bool,
}

impl Netdev6Planner {
    /// With `adopted`, the table an earlier verifier left is held as it is until
    /// [`Netdev6Planner::release`].
    pub fn new(devices: Vec<String>, adopted: bool) -> Self {
        Netdev6Planner {
            devices,
            ever: adopted,
            holding: adopted,
            ..Default::default()
        }
    }

    /// The op that brings the kernel in line with `table`, if anything changed (a refreshed
    /// join that moves nothing writes nothing). Nothing is written before the first claim, nor
    /// while an adopted table is held. Called on every accepted join and every tick, so a
    /// failed write is written again (whole) at the latest on the next tick.
    pub fn update(
        &mut self,
        table: &OwnershipTable6,
        gap: GapPolicy,
        device_of: impl Fn(u32) -> Option<String>,
    ) -> Option<DataplaneOp> {
        let floors: BTreeMap<Ipv6Addr, u128> =
            self.groups.iter().map(|(g, p)| (*g, p.mask)).collect();
        let floor = |g| floors.get(&g).copied().unwrap_or(0);
        self.groups = plan(table, gap, device_of, floor);
        if self.holding || (self.groups.is_empty() && !self.ever) {
            return None;
        }
        self.pending().map(DataplaneOp::Netdev6Table)
    }

    /// Stops holding the adopted table: the rebuilt plans, as a whole table. Nothing when
    /// nothing was adopted.
    pub fn release(&mut self) -> Option<DataplaneOp> {
        if !std::mem::replace(&mut self.holding, false) {
            return None;
        }
        self.kernel = None;
        self.pending().map(DataplaneOp::Netdev6Table)
    }

    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// The change that brings the kernel in line with the plans, if any: the moved elements
    /// when the kernel's table is known and has the plans' shape, else the whole table. Counted
    /// as written from here on (the executor applies ops in order and reports a failure).
    fn pending(&mut self) -> Option<NftBatch> {
        self.ever = true;
        let used: BTreeSet<Hop6> = self
            .groups
            .values()
            .flat_map(GroupPlan6::hops)
            .cloned()
            .collect();
        if let Some(k) = self
            .kernel
            .as_mut()
            .filter(|k| same_shape(&k.groups, &self.groups))
        {
            let new_hops: BTreeSet<Hop6> = used.difference(&k.hops).cloned().collect();
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
        let text = ruleset(&self.devices, &used, &self.groups);
        self.kernel = Some(Written {
            groups: self.groups.clone(),
            hops: used,
        });
        Some(NftBatch::rewrite(text))
    }

    /// The executor's outcome of an op: a failed write leaves the kernel unknown, so the next
    /// update writes the whole table again.
    pub fn completed(&mut self, op: &DataplaneOp, ok: bool) {
        if matches!(op, DataplaneOp::Netdev6Table(_)) && !ok {
            self.kernel = None;
        }
    }

    /// The table's removal on a clean stop, if one was written or adopted.
    pub fn withdraw(&mut self) -> Option<DataplaneOp> {
        self.kernel = None;
        self.holding = false;
        std::mem::take(&mut self.ever).then_some(DataplaneOp::DeleteNetdev6Table)
    }
}

#[cfg(test)]
#[path = "netdev6_tests.rs"]
mod tests;
