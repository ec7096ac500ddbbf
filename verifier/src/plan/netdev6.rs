//! IPv6 native steering on nftables (issue 15, item 3; SPEC.md §10.2.2): the IPv6 counterpart
//! of [`super::netdev`], in its own `netdev` table ([`TABLE`]). For each protected IPv6 group
//! with claims, the ingress chain on the verifier's interfaces sends a datagram to the group
//! whose `ip6 saddr & mask == value` matches a member's slice to that member's hop chain, which
//! forwards it with `fwd ip6 to <member's link-local address> device <interface>` (the kernel
//! resolves the neighbour on that device and decrements the hop limit; the destination stays
//! the group). Sources no one owns follow the gap policy: the fallback member's chain, else
//! drop. MLD itself (ICMPv6) is never steered.
//!
//! One rule per owned slice (IPv6 slices are few and not expanded into a map); every change
//! rewrites the whole table in one `nft -f` transaction (first step: no element updates, so a
//! change resets the table's counters). The text is pure and tested here.

use super::{DataplaneOp, GapPolicy, NftBatch};
use core::fmt::Write;
use igmp_ext::ownership::OwnershipTable6;
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
}

/// One protected group's steering: each owned slice (value, mask) → its owner's hop, and the
/// hop the rest goes to (the gap policy's fallback; none: dropped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPlan6 {
    pub slices: Vec<(u128, u128, Hop6)>,
    pub fallback: Option<Hop6>,
}

/// The plan of every IPv6 group with claims (claims heard on interfaces not served are left
/// out: nothing can be steered to them).
pub fn plan(
    table: &OwnershipTable6,
    gap: GapPolicy,
    device_of: impl Fn(u32) -> Option<String>,
) -> BTreeMap<Ipv6Addr, GroupPlan6> {
    let mut out = BTreeMap::new();
    for group in table.groups() {
        let mut plan = GroupPlan6::default();
        for (m, c) in table.claims(group) {
            let Some(device) = device_of(c.ifindex) else {
                continue;
            };
            let hop = Hop6 {
                member: m.0,
                via: c.sender,
                device,
            };
            if gap == GapPolicy::Fallback(m) {
                plan.fallback = Some(hop.clone());
            }
            for s in c.slices.iter() {
                plan.slices.push((s.value(), s.mask(), hop.clone()));
            }
        }
        if !plan.slices.is_empty() || plan.fallback.is_some() {
            out.insert(group, plan);
        }
    }
    out
}

/// The whole table as one `nft -f` transaction: created if missing, deleted, and written anew.
pub fn ruleset(devices: &[String], groups: &BTreeMap<Ipv6Addr, GroupPlan6>) -> String {
    let hops: BTreeSet<&Hop6> = groups
        .values()
        .flat_map(|p| p.slices.iter().map(|(_, _, h)| h).chain(&p.fallback))
        .collect();
    let mut out =
        format!("add table netdev {TABLE}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n");
    for h in &hops {
        let _ = writeln!(
            out,
            "\tchain {} {{\n\t\tmeta iifname \"{}\" accept\n\t\tcounter fwd ip6 to {} device \"{}\"\n\t}}",
            h.chain(),
            h.device,
            h.via,
            h.device
        );
    }
    let _ = writeln!(
        out,
        "\tchain ingress {{\n\t\ttype filter hook ingress devices = {{ {} }} priority 0; policy accept;",
        super::netdev::quoted(devices)
    );
    // MLD (queries to a group, reports) is for the querier and the verifier, not steered.
    out.push_str("\t\tmeta l4proto ipv6-icmp accept\n");
    for (group, plan) in groups {
        let _ = writeln!(out, "\t\tip6 daddr {group} ip6 hoplimit 0-1 counter drop");
        for (value, mask, hop) in &plan.slices {
            let _ = writeln!(
                out,
                "\t\tip6 daddr {group} ip6 saddr & {} == {} jump {}",
                Ipv6Addr::from(*mask),
                Ipv6Addr::from(*value),
                hop.chain()
            );
        }
        if let Some(hop) = &plan.fallback {
            let _ = writeln!(out, "\t\tip6 daddr {group} jump {}", hop.chain());
        }
        // No owner (and no fallback), or a hop that sent it back where it came from.
        let _ = writeln!(out, "\t\tip6 daddr {group} counter drop");
    }
    out.push_str("\t}\n}\n");
    out
}

/// The IPv6 netdev data plane: the plans and what the kernel was last given.
#[derive(Debug, Default)]
pub struct Netdev6Planner {
    devices: Vec<String>,
    /// The text the kernel holds, as far as this process knows (none: never written, or the
    /// last write failed).
    written: Option<String>,
    /// A table was handed out (so a clean stop removes it).
    ever: bool,
}

impl Netdev6Planner {
    pub fn new(devices: Vec<String>) -> Self {
        Netdev6Planner {
            devices,
            ..Default::default()
        }
    }

    /// The op that brings the kernel in line with `table`, if anything changed (a refreshed
    /// join that moves nothing writes nothing). Nothing is written before the first claim.
    pub fn update(
        &mut self,
        table: &OwnershipTable6,
        gap: GapPolicy,
        device_of: impl Fn(u32) -> Option<String>,
    ) -> Option<DataplaneOp> {
        let groups = plan(table, gap, device_of);
        if groups.is_empty() && !self.ever {
            return None;
        }
        let text = ruleset(&self.devices, &groups);
        if self.written.as_ref() == Some(&text) {
            return None;
        }
        self.written = Some(text.clone());
        self.ever = true;
        Some(DataplaneOp::Netdev6Table(NftBatch::rewrite(text)))
    }

    /// The executor's outcome of an op: a failed write leaves the kernel unknown, so the next
    /// update (at the latest on the next tick) writes the table again.
    pub fn completed(&mut self, op: &DataplaneOp, ok: bool) {
        if matches!(op, DataplaneOp::Netdev6Table(_)) && !ok {
            self.written = None;
        }
    }

    /// The table's removal on a clean stop, if one was written.
    pub fn withdraw(&mut self) -> Option<DataplaneOp> {
        self.written = None;
        std::mem::take(&mut self.ever).then_some(DataplaneOp::DeleteNetdev6Table)
    }
}

#[cfg(test)]
#[path = "netdev6_tests.rs"]
mod tests;
