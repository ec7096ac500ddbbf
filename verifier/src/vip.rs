//! VIP mode (and pin mode): a unicast VIP bound to a protected group is steered by an nftables
//! map `ip saddr & mask → mark` and one policy-routing table per member (SPEC.md §10.3). The
//! planning and the ruleset text are pure and tested here; [`crate::sys::nft`] runs `nft` and `ip`.
//!
//! Each ownership change is one `nft -f` transaction that replaces the whole table, so the kernel
//! never holds half a change; routes for a new owner are in place before the map points at it.

use crate::config::VipSection;
use crate::status::VipRow;
use crate::steering::GapPolicy;
use crate::sys::nft;
use core::fmt::Write;
use igmp_ext::ownership::OwnershipTable;
use igmp_ext::{SliceSet, Timestamp};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const TABLE: &str = "manycast_verifier";
/// Marks are `MARK_BASE | member id` (member ids above 0xffff cannot be steered by VIP).
pub const MARK_BASE: u32 = 0x4d43_0000;
/// Routing tables are `ROUTE_TABLE_BASE + member id`.
pub const ROUTE_TABLE_BASE: u32 = 0x4d43_0000;
/// `ip rule` priority of the fwmark rules: before the main table (32766).
pub const RULE_PRIORITY: u32 = 5000;
/// Largest map we write: 2^16 elements.
const MAX_MASK_BITS: u32 = 16;

pub fn mark_of(member: u32) -> Option<u32> {
    (member <= 0xffff).then_some(MARK_BASE | member)
}

/// The map for one VIP: the common mask and, for each masked value, the member it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapPlan {
    pub mask: u32,
    pub elements: Vec<(u32, u32)>,
}

/// Expands each member's slices over the finest mask any of them uses, so that one lookup
/// `ip saddr & mask` finds the owner. Unowned values go to the fallback member, if any.
pub fn plan_map(claims: &[(u32, SliceSet)], fallback: Option<u32>) -> Result<MapPlan, String> {
    let mask = claims
        .iter()
        .flat_map(|(_, s)| s.iter().map(|sl| sl.mask()))
        .fold(0u32, |a, m| a | m);
    let bits: Vec<u32> = (0..32).filter(|b| mask & (1 << b) != 0).collect();
    if bits.len() as u32 > MAX_MASK_BITS {
        return Err(format!(
            "slices use {} address bits; VIP mode supports up to {MAX_MASK_BITS}",
            bits.len()
        ));
    }
    let mut elements = Vec::new();
    for i in 0u32..(1 << bits.len()) {
        let value = bits
            .iter()
            .enumerate()
            .filter(|(k, _)| i & (1 << k) != 0)
            .fold(0u32, |v, (_, b)| v | (1 << b));
        let owner = claims
            .iter()
            .find(|(_, s)| s.contains(value))
            .map(|(m, _)| *m)
            .or(fallback);
        if let Some(m) = owner {
            elements.push((value, m));
        }
    }
    Ok(MapPlan { mask, elements })
}

/// One VIP's ruleset lines inside the prerouting chain.
fn vip_rules(out: &mut String, vip: Ipv4Addr, pin: bool, plan: &MapPlan) {
    if pin {
        // A connection keeps the mark its first packet got: established flows stay where they
        // started after a reallocation, new ones follow the map.
        let _ = writeln!(
            out,
            "\t\tip daddr {vip} ct mark != 0 meta mark set ct mark accept"
        );
    }
    if !plan.elements.is_empty() {
        let elems: Vec<String> = plan
            .elements
            .iter()
            .filter_map(|&(v, m)| Some(format!("{} : {:#x}", Ipv4Addr::from(v), mark_of(m)?)))
            .collect();
        let _ = writeln!(
            out,
            "\t\tip daddr {vip} meta mark set ip saddr & {} map {{ {} }}",
            Ipv4Addr::from(plan.mask),
            elems.join(", ")
        );
    }
    // No owner (and no fallback): dropped here rather than routed by the main table.
    let _ = writeln!(out, "\t\tip daddr {vip} meta mark 0 counter drop");
    if pin {
        let _ = writeln!(out, "\t\tip daddr {vip} ct mark set meta mark");
    }
}

/// The whole table as one `nft -f` transaction: created if missing, deleted, and written anew.
pub fn ruleset(vips: &[(Ipv4Addr, bool, MapPlan)]) -> String {
    let mut out = format!("add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    out.push_str(
        "\tchain prerouting {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n",
    );
    for (vip, pin, plan) in vips {
        vip_rules(&mut out, *vip, *pin, plan);
    }
    out.push_str("\t}\n}\n");
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MemberRoute {
    via: Ipv4Addr,
    /// Pin mode: a member that lost its slices keeps its route this long, for pinned flows.
    linger_until: Option<Timestamp>,
}

#[derive(Debug, Clone)]
struct VipState {
    cfg: VipSection,
    plan: MapPlan,
    members: BTreeMap<u32, MemberRoute>,
}

/// The VIPs and what is in the kernel for them.
#[derive(Debug)]
pub struct VipSteering {
    vips: Vec<VipState>,
    /// (member, vip) → next hop, as installed.
    routes: BTreeMap<(u32, Ipv4Addr), Ipv4Addr>,
    rules: BTreeMap<u32, ()>,
    table_written: bool,
    linger: core::time::Duration,
}

impl VipSteering {
    pub fn new(cfg: &[VipSection]) -> Self {
        VipSteering {
            vips: cfg
                .iter()
                .map(|c| VipState {
                    cfg: c.clone(),
                    plan: MapPlan::default(),
                    members: BTreeMap::new(),
                })
                .collect(),
            routes: BTreeMap::new(),
            rules: BTreeMap::new(),
            table_written: false,
            linger: core::time::Duration::from_secs(300),
        }
    }

    pub fn groups(&self) -> Vec<Ipv4Addr> {
        let mut g: Vec<_> = self.vips.iter().map(|v| v.cfg.group).collect();
        g.dedup();
        g
    }

    /// Recomputes the VIPs bound to `group`; applies a change as one nft transaction. Returns
    /// whether the kernel was changed.
    pub fn update(
        &mut self,
        group: Ipv4Addr,
        table: &OwnershipTable,
        gap: GapPolicy,
        now: Timestamp,
    ) -> Result<bool, String> {
        let mut changed = false;
        for v in self.vips.iter_mut().filter(|v| v.cfg.group == group) {
            let claims: Vec<(u32, SliceSet)> = table
                .claims(group)
                .filter(|(m, _)| mark_of(m.0).is_some())
                .map(|(m, c)| (m.0, c.slices.clone()))
                .collect();
            let fallback = match gap {
                GapPolicy::Fallback(m) if claims.iter().any(|(c, _)| *c == m.0) => Some(m.0),
                _ => None,
            };
            let plan = plan_map(&claims, fallback)?;
            let mut members = BTreeMap::new();
            for (m, c) in table.claims(group) {
                if mark_of(m.0).is_some() {
                    members.insert(
                        m.0,
                        MemberRoute {
                            via: c.sender,
                            linger_until: None,
                        },
                    );
                }
            }
            if v.cfg.pin {
                for (&m, r) in &v.members {
                    if members.contains_key(&m) {
                        continue;
                    }
                    let until = r
                        .linger_until
                        .unwrap_or_else(|| now.saturating_add(self.linger));
                    if until > now {
                        members.insert(
                            m,
                            MemberRoute {
                                via: r.via,
                                linger_until: Some(until),
                            },
                        );
                    }
                }
            }
            if plan != v.plan || members != v.members || !self.table_written {
                v.plan = plan;
                v.members = members;
                changed = true;
            }
        }
        if changed {
            self.apply()?;
        }
        Ok(changed)
    }

    /// Routes and rules first (so the map never points at a missing route), then the map in
    /// one transaction, then stale routes and rules go.
    fn apply(&mut self) -> Result<(), String> {
        let mut want_routes = BTreeMap::new();
        for v in &self.vips {
            for (&m, r) in &v.members {
                want_routes.insert((m, v.cfg.address), r.via);
            }
        }
        for (&(m, vip), &via) in &want_routes {
            let (Some(mark), table) = (mark_of(m), ROUTE_TABLE_BASE + m) else {
                continue;
            };
            if self.routes.get(&(m, vip)) != Some(&via) {
                nft::route_replace(vip, via, table)?;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = self.rules.entry(m) {
                nft::rule_add(mark, table, RULE_PRIORITY)?;
                e.insert(());
            }
        }
        let text = ruleset(
            &self
                .vips
                .iter()
                .map(|v| (v.cfg.address, v.cfg.pin, v.plan.clone()))
                .collect::<Vec<_>>(),
        );
        nft::apply(&text)?;
        self.table_written = true;
        for (&(m, vip), _) in self.routes.iter() {
            if !want_routes.contains_key(&(m, vip)) {
                let _ = nft::route_del(vip, ROUTE_TABLE_BASE + m);
            }
        }
        let members: Vec<u32> = want_routes.keys().map(|(m, _)| *m).collect();
        let stale: Vec<u32> = self
            .rules
            .keys()
            .copied()
            .filter(|m| !members.contains(m))
            .collect();
        for m in stale {
            if let Some(mark) = mark_of(m) {
                let _ = nft::rule_del(mark, ROUTE_TABLE_BASE + m, RULE_PRIORITY);
            }
            self.rules.remove(&m);
        }
        self.routes = want_routes;
        Ok(())
    }

    /// Clean shutdown: the table, the rules and the routes this verifier added.
    pub fn remove_all(&mut self) -> Result<(), String> {
        if self.vips.is_empty() {
            return Ok(());
        }
        let r = nft::delete_table();
        for &(m, vip) in self.routes.keys() {
            let _ = nft::route_del(vip, ROUTE_TABLE_BASE + m);
        }
        for &m in self.rules.keys() {
            if let Some(mark) = mark_of(m) {
                let _ = nft::rule_del(mark, ROUTE_TABLE_BASE + m, RULE_PRIORITY);
            }
        }
        self.routes.clear();
        self.rules.clear();
        r
    }

    pub fn status(&self) -> Vec<VipRow> {
        self.vips
            .iter()
            .map(|v| VipRow {
                address: v.cfg.address.to_string(),
                group: v.cfg.group.to_string(),
                pin: v.cfg.pin,
                members: v
                    .members
                    .iter()
                    .filter_map(|(&m, r)| Some((m, mark_of(m)?, r.via.to_string())))
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::Slice;

    #[test]
    fn map_expands_slices_over_the_finest_mask() {
        // Member 1: last bit 0 (mask 1); member 2: last two bits 01; 11 unowned.
        let claims = vec![
            (1, SliceSet::from(Slice::new(0, 1))),
            (2, SliceSet::from(Slice::new(1, 3))),
        ];
        let plan = plan_map(&claims, None).unwrap();
        assert_eq!(plan.mask, 3);
        assert_eq!(plan.elements, vec![(0, 1), (1, 2), (2, 1)]);
        let plan = plan_map(&claims, Some(2)).unwrap();
        assert_eq!(plan.elements, vec![(0, 1), (1, 2), (2, 1), (3, 2)]);
        // Prefix slices work the same way, over high bits.
        let claims = vec![(
            7,
            SliceSet::from(Slice::prefix(Ipv4Addr::new(128, 0, 0, 0), 1)),
        )];
        let plan = plan_map(&claims, None).unwrap();
        assert_eq!(plan.mask, 0x8000_0000);
        assert_eq!(plan.elements, vec![(0x8000_0000, 7)]);
        // Too fine a mask is refused rather than written as a huge map.
        let claims = vec![(1, SliceSet::from(Slice::new(0, 0x1_ffff)))];
        assert!(plan_map(&claims, None).is_err());
        assert_eq!(plan_map(&[], None).unwrap(), MapPlan::default());
    }

    #[test]
    fn ruleset_text_is_one_transaction_with_pin_rules() {
        let plan = MapPlan {
            mask: 1,
            elements: vec![(0, 1), (1, 2)],
        };
        let vip = Ipv4Addr::new(10, 200, 0, 1);
        let text = ruleset(&[(vip, true, plan.clone())]);
        assert_eq!(
            text,
            "add table ip manycast_verifier\n\
             delete table ip manycast_verifier\n\
             table ip manycast_verifier {\n\
             \tchain prerouting {\n\
             \t\ttype filter hook prerouting priority mangle; policy accept;\n\
             \t\tip daddr 10.200.0.1 ct mark != 0 meta mark set ct mark accept\n\
             \t\tip daddr 10.200.0.1 meta mark set ip saddr & 0.0.0.1 map { 0.0.0.0 : 0x4d430001, 0.0.0.1 : 0x4d430002 }\n\
             \t\tip daddr 10.200.0.1 meta mark 0 counter drop\n\
             \t\tip daddr 10.200.0.1 ct mark set meta mark\n\
             \t}\n\
             }\n"
        );
        let text = ruleset(&[(vip, false, MapPlan::default())]);
        assert!(!text.contains("ct mark"));
        assert!(!text.contains("map {"));
        assert!(text.contains("meta mark 0 counter drop"));
    }
}
