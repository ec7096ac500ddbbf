//! VIP mode (and pin mode): a unicast VIP bound to a protected group is steered at the
//! verifier's interfaces by a netdev table that forwards at ingress ([`super::vip_netdev`], the
//! fast path), and, for what that table leaves to the IP stack, by an nftables map
//! `ip saddr & mask → mark` and one policy-routing table per member (the slow path; SPEC.md
//! §10.3). The planning and the ruleset text are pure and tested here; `crate::sys` applies them.
//!
//! Each ownership change is one nftables transaction holding both tables' moved elements, so the
//! kernel never holds half a change; routes for a new owner are in place before the maps point
//! at it.

use super::map::{element_moves, plan_map_keeping, MapPlan};
use super::netdev::Hop;
use super::vip_netdev::{self, FastVip};
pub use super::vip_netdev::{mark_of, MARK_BASE};
use super::{
    Change, DataplaneOp, GapPolicy, NftBatch, PlanError, PlanFailure, Planner, View, VipChange,
    VipRoute, VipRule,
};
use crate::status::VipRow;
use core::fmt::Write;
use igmp_ext::ownership::OwnershipTable;
use igmp_ext::{SliceSet, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub const TABLE: &str = "manycast_verifier";
/// Routing tables are `ROUTE_TABLE_BASE + member id`.
pub const ROUTE_TABLE_BASE: u32 = 0x4d43_0000;
/// `ip rule` priority of the fwmark rules: before the main table (32766).
pub const RULE_PRIORITY: u32 = 5000;

/// The policy rule that sends member `m`'s marked packets to its table.
fn rule_of(m: u32) -> Option<VipRule> {
    Some(VipRule {
        mark: mark_of(m)?,
        table: ROUTE_TABLE_BASE + m,
        priority: RULE_PRIORITY,
    })
}

/// A unicast VIP bound to a protected group (the config's `[[vip]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSpec {
    pub address: Ipv4Addr,
    pub group: Ipv4Addr,
    /// Keep established connections on the member they started on (pin mode).
    pub pin: bool,
}

/// The VIP's map (`ip saddr & mask` → mark), named in the table so that an ownership change
/// rewrites its moved elements only.
pub fn map_name(vip: Ipv4Addr) -> String {
    let o = vip.octets();
    format!("vip_{}_{}_{}_{}", o[0], o[1], o[2], o[3])
}

fn element(value: u32, member: u32) -> Option<String> {
    Some(format!(
        "{} : {:#x}",
        Ipv4Addr::from(value),
        mark_of(member)?
    ))
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
    let _ = writeln!(
        out,
        "\t\tip daddr {vip} meta mark set ip saddr & {} map @{}",
        Ipv4Addr::from(plan.mask),
        map_name(vip)
    );
    // No owner (and no fallback): dropped here rather than routed by the main table.
    let _ = writeln!(out, "\t\tip daddr {vip} meta mark 0 counter drop");
    if pin {
        let _ = writeln!(out, "\t\tip daddr {vip} ct mark set meta mark");
    }
}

/// The whole table as one `nft -f` transaction: created if missing, deleted, and written anew.
pub fn ruleset(vips: &[(Ipv4Addr, bool, MapPlan)]) -> String {
    let mut out = format!("add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    for (vip, _, plan) in vips {
        let _ = write!(
            out,
            "\tmap {} {{\n\t\ttype ipv4_addr : mark\n",
            map_name(*vip)
        );
        let elems: Vec<String> = plan
            .elements
            .iter()
            .filter_map(|&(v, m)| element(v, m))
            .collect();
        if !elems.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
        }
        out.push_str("\t}\n");
    }
    out.push_str(
        "\tchain prerouting {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n",
    );
    for (vip, pin, plan) in vips {
        vip_rules(&mut out, *vip, *pin, plan);
    }
    out.push_str("\t}\n}\n");
    out
}

/// The commands that take one VIP's map from `from` to `to` (the same mask): removed and
/// re-pointed values deleted, then new and re-pointed ones added. Empty when nothing moved.
pub fn element_updates(vip: Ipv4Addr, from: &MapPlan, to: &MapPlan) -> String {
    let old: BTreeMap<u32, u32> = from.elements.iter().copied().collect();
    let new: BTreeMap<u32, u32> = to.elements.iter().copied().collect();
    let (mut out, mut adds) = (String::new(), String::new());
    element_moves(
        (&mut out, &mut adds),
        (&format!("ip {TABLE}"), &map_name(vip)),
        &old,
        &new,
        |v| Ipv4Addr::from(v).to_string(),
        |v, m| element(v, *m),
    );
    out + &adds
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MemberRoute {
    via: Ipv4Addr,
    /// The served interface its joins came in on: where the fast path forwards to it (none:
    /// the slow path alone).
    device: Option<String>,
    /// Pin mode: a member that lost its slices keeps its route this long, for pinned flows.
    linger_until: Option<Timestamp>,
}

#[derive(Debug, Clone)]
struct VipState {
    spec: VipSpec,
    plan: MapPlan,
    members: BTreeMap<u32, MemberRoute>,
}

/// The VIPs, their plans and what the kernel holds for them.
#[derive(Debug)]
pub struct VipPlanner {
    vips: Vec<VipState>,
    /// (member, vip) → next hop, as installed (or on its way: changes are applied in order).
    routes: BTreeMap<(u32, Ipv4Addr), Ipv4Addr>,
    /// Members whose policy rule is installed.
    rules: BTreeSet<u32>,
    /// Each VIP's map as the kernel's table holds it (in `vips` order), when known: the next
    /// change is an element update against it. Unknown (never written, a change failed): the
    /// next change rewrites the table.
    kernel: Option<Vec<MapPlan>>,
    /// A change failed: what the kernel holds is unknown, so the next change writes every
    /// route and rule again.
    resync: bool,
    linger: core::time::Duration,
    /// The verifier's interfaces: the fast path's ingress hook (none: no fast path).
    devices: Vec<String>,
    /// The fast path's table as the kernel holds it, when known (like `kernel`).
    fast_kernel: Option<Vec<FastVip>>,
    /// Tables an earlier verifier left are steering: plans change in memory only until the
    /// adopt grace ends ([`Change::Settle`]), then everything is written again.
    holding: bool,
}

impl VipPlanner {
    pub fn new(vips: &[VipSpec]) -> Self {
        VipPlanner {
            vips: vips
                .iter()
                .map(|spec| VipState {
                    spec: spec.clone(),
                    plan: MapPlan::default(),
                    members: BTreeMap::new(),
                })
                .collect(),
            routes: BTreeMap::new(),
            rules: BTreeSet::new(),
            kernel: None,
            resync: false,
            linger: core::time::Duration::from_secs(vip_netdev::LINGER_S),
            devices: Vec::new(),
            fast_kernel: None,
            holding: false,
        }
    }

    /// Starts holding the tables an earlier verifier left (`held`), as [`VipPlanner::holding`]
    /// says.
    pub fn holding(mut self, held: bool) -> Self {
        self.holding = held;
        self
    }

    /// The interfaces the fast path hooks (the daemon's; they do not change while it runs).
    pub fn set_devices(&mut self, devices: Vec<String>) {
        if devices != self.devices {
            self.devices = devices;
            self.fast_kernel = None;
        }
    }

    pub fn groups(&self) -> Vec<Ipv4Addr> {
        let mut g: Vec<_> = self.vips.iter().map(|v| v.spec.group).collect();
        g.dedup();
        g
    }

    /// Recomputes the VIPs bound to `group`; a change is one [`VipChange`] (one transaction).
    /// Also returns the claims left out of the maps. `device_of` names a served interface.
    pub fn update(
        &mut self,
        group: Ipv4Addr,
        table: &OwnershipTable,
        gap: GapPolicy,
        now: Timestamp,
        device_of: &dyn Fn(u32) -> Option<String>,
    ) -> (Option<VipChange>, Vec<PlanError>) {
        let mut changed = false;
        let mut left_out = Vec::new();
        for v in self.vips.iter_mut().filter(|v| v.spec.group == group) {
            let claims: Vec<(u32, SliceSet)> = table
                .claims(group)
                .filter(|(m, _)| mark_of(m.0).is_some())
                .map(|(m, c)| (m.0, c.slices.clone()))
                .collect();
            let fallback = match gap {
                GapPolicy::Fallback(m) if claims.iter().any(|(c, _)| *c == m.0) => Some(m.0),
                _ => None,
            };
            // The kernel map's mask is kept while the claims fit it: a change moves elements.
            let (plan, mut skipped) = plan_map_keeping(&claims, fallback, v.plan.mask);
            if left_out.is_empty() {
                left_out.append(&mut skipped);
            }
            let mut members = BTreeMap::new();
            for (m, c) in table.claims(group) {
                if mark_of(m.0).is_some() {
                    members.insert(
                        m.0,
                        MemberRoute {
                            via: c.sender,
                            device: device_of(c.ifindex),
                            linger_until: None,
                        },
                    );
                }
            }
            if v.spec.pin {
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
                                linger_until: Some(until),
                                ..r.clone()
                            },
                        );
                    }
                }
            }
            let fast_unknown = self.fast_kernel.is_none() && !self.devices.is_empty();
            if plan != v.plan || members != v.members || self.kernel.is_none() || fast_unknown {
                v.plan = plan;
                v.members = members;
                changed = true;
            }
        }
        let change = (changed && !self.holding).then(|| VipChange {
            group: Some(group),
            ..self.change()
        });
        (change, left_out)
    }

    /// The adopt grace ended: what the earlier verifier left is replaced whole, every route and
    /// rule written again (the next [`Change::Ownership`] writes it).
    fn release(&mut self) {
        if std::mem::replace(&mut self.holding, false) {
            self.kernel = None;
            self.fast_kernel = None;
            self.resync = true;
        }
    }

    /// Routes and rules first (so the map never points at a missing route), then the map in
    /// one transaction, then stale routes and rules go.
    fn change(&mut self) -> VipChange {
        let mut want_routes = BTreeMap::new();
        for v in &self.vips {
            for (&m, r) in &v.members {
                want_routes.insert((m, v.spec.address), r.via);
            }
        }
        let mut change = VipChange::default();
        let mut want_rules = BTreeSet::new();
        for (&(m, vip), &via) in &want_routes {
            let Some(rule) = rule_of(m) else {
                continue;
            };
            if self.resync || self.routes.get(&(m, vip)) != Some(&via) {
                change.routes.push(VipRoute {
                    vip,
                    via,
                    table: rule.table,
                });
            }
            if (self.resync || !self.rules.contains(&m)) && want_rules.insert(m) {
                change.rules.push(rule);
            }
        }
        let (ruleset, fast) = self.table_change();
        change.ruleset = ruleset;
        change.devices = if fast.is_empty() {
            Vec::new()
        } else {
            self.devices.clone()
        };
        change.fast = fast;
        for (&(m, vip), &via) in &self.routes {
            if !want_routes.contains_key(&(m, vip)) {
                change.stale_routes.push(VipRoute {
                    vip,
                    via,
                    table: ROUTE_TABLE_BASE + m,
                });
            }
        }
        let members: BTreeSet<u32> = want_routes.keys().map(|(m, _)| *m).collect();
        change.stale_rules = self
            .rules
            .iter()
            .filter(|m| !members.contains(m))
            .filter_map(|&m| rule_of(m))
            .collect();
        let rules = self.rules.union(&want_rules).copied();
        self.rules = rules.filter(|m| members.contains(m)).collect();
        self.routes = want_routes;
        self.resync = false;
        change
    }

    /// Both tables' change in one transaction: the slow path's ([`Self::slow_change`]), then
    /// the fast path's: its moved elements when the kernel's table is known and has the same
    /// VIPs, else the whole table. Counted as written from here on (a failure is reported).
    /// The nft batch, and the fast path's state (empty without served interfaces).
    fn table_change(&mut self) -> (NftBatch, Vec<FastVip>) {
        let slow = self.slow_change();
        if self.devices.is_empty() {
            return (slow, Vec::new());
        }
        let fast: Vec<FastVip> = self
            .vips
            .iter()
            .map(|v| FastVip {
                address: v.spec.address,
                pin: v.spec.pin,
                mask: v.plan.mask,
                elements: v.plan.elements.clone(),
                hops: v
                    .members
                    .iter()
                    .filter_map(|(&m, r)| {
                        Some((
                            m,
                            Hop {
                                member: m,
                                via: r.via,
                                device: r.device.clone()?,
                            },
                        ))
                    })
                    .collect(),
            })
            .collect();
        let (text, rewrite) = match self.fast_kernel.replace(fast.clone()) {
            Some(k) if vip_netdev::same_shape(&k, &fast) => (vip_netdev::updates(&k, &fast), false),
            _ => (vip_netdev::ruleset(&self.devices, &fast), true),
        };
        let batch = NftBatch {
            text: slow.text + &text,
            rewrite: slow.rewrite || rewrite,
        };
        (batch, fast)
    }

    /// The `ip` table: the moved elements of each map when the kernel's table is known and
    /// every mask is the same, else the whole table.
    fn slow_change(&mut self) -> NftBatch {
        let plans: Vec<MapPlan> = self.vips.iter().map(|v| v.plan.clone()).collect();
        let kernel = self.kernel.replace(plans);
        match kernel {
            Some(k) if k.iter().zip(&self.vips).all(|(p, v)| p.mask == v.plan.mask) => {
                NftBatch::elements(
                    k.iter()
                        .zip(&self.vips)
                        .map(|(from, v)| element_updates(v.spec.address, from, &v.plan))
                        .collect(),
                )
            }
            _ => NftBatch::rewrite(ruleset(
                &self
                    .vips
                    .iter()
                    .map(|v| (v.spec.address, v.spec.pin, v.plan.clone()))
                    .collect::<Vec<_>>(),
            )),
        }
    }

    /// After a failed change (what the kernel holds is unknown): the whole table with every
    /// route and rule, once per failure, so the steering is restored without waiting for the
    /// next ownership change. Nothing otherwise.
    pub fn retry(
        &mut self,
        table: &OwnershipTable,
        gap: GapPolicy,
        now: Timestamp,
        device_of: &dyn Fn(u32) -> Option<String>,
    ) -> Vec<VipChange> {
        if !self.resync || self.vips.is_empty() {
            return Vec::new();
        }
        // Every group's plan is brought up to date; the first update writes everything (the
        // kernel's table is unknown), the others find nothing left to write.
        self.groups()
            .into_iter()
            .filter_map(|g| self.update(g, table, gap, now, device_of).0)
            .collect()
    }

    pub fn status(&self) -> Vec<VipRow> {
        self.vips
            .iter()
            .map(|v| VipRow {
                address: v.spec.address.to_string(),
                group: v.spec.group.to_string(),
                pin: v.spec.pin,
                members: v
                    .members
                    .iter()
                    .filter_map(|(&m, r)| Some((m, mark_of(m)?, r.via.to_string())))
                    .collect(),
            })
            .collect()
    }
}

impl Planner for VipPlanner {
    fn plan(
        &mut self,
        now: Timestamp,
        view: &View<'_>,
        change: Change,
        out: &mut Vec<DataplaneOp>,
    ) -> Vec<PlanFailure> {
        self.set_devices(view.interfaces.iter().map(|i| i.name.clone()).collect());
        let device_of = |i| view.device_of(i);
        let groups = match change {
            Change::Ownership(Some(g)) => vec![g],
            Change::Ownership(None) => self.groups(),
            Change::Retry => {
                out.extend(
                    self.retry(view.ownership(), view.gap, now, &device_of)
                        .into_iter()
                        .map(DataplaneOp::Vip),
                );
                return Vec::new();
            }
            Change::Settle => {
                self.release();
                return Vec::new();
            }
            Change::Listeners(_) => return Vec::new(),
        };
        let mut failures = Vec::new();
        for group in groups {
            let (change, left_out) =
                self.update(group, view.ownership(), view.gap, now, &device_of);
            out.extend(change.map(DataplaneOp::Vip));
            failures.extend(
                left_out
                    .into_iter()
                    .map(|error| PlanFailure { group, error }),
            );
        }
        failures
    }

    fn completed(&mut self, op: &DataplaneOp, ok: bool) {
        if matches!(op, DataplaneOp::Vip(_)) && !ok {
            self.kernel = None;
            self.fast_kernel = None;
            self.resync = true;
        }
    }

    /// Clean shutdown: the table, the rules and the routes this verifier added.
    fn withdraw(&mut self, out: &mut Vec<DataplaneOp>) {
        if self.vips.is_empty() {
            return;
        }
        let routes = self
            .routes
            .iter()
            .map(|(&(m, vip), &via)| VipRoute {
                vip,
                via,
                table: ROUTE_TABLE_BASE + m,
            })
            .collect();
        let rules = self.rules.iter().filter_map(|&m| rule_of(m)).collect();
        self.routes.clear();
        self.rules.clear();
        out.push(DataplaneOp::VipRemove { routes, rules });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
             \tmap vip_10_200_0_1 {\n\
             \t\ttype ipv4_addr : mark\n\
             \t\telements = { 0.0.0.0 : 0x4d430001, 0.0.0.1 : 0x4d430002 }\n\
             \t}\n\
             \tchain prerouting {\n\
             \t\ttype filter hook prerouting priority mangle; policy accept;\n\
             \t\tip daddr 10.200.0.1 ct mark != 0 meta mark set ct mark accept\n\
             \t\tip daddr 10.200.0.1 meta mark set ip saddr & 0.0.0.1 map @vip_10_200_0_1\n\
             \t\tip daddr 10.200.0.1 meta mark 0 counter drop\n\
             \t\tip daddr 10.200.0.1 ct mark set meta mark\n\
             \t}\n\
             }\n"
        );
        let text = ruleset(&[(vip, false, MapPlan::default())]);
        assert!(!text.contains("ct mark"));
        assert!(!text.contains("elements"));
        assert!(text.contains("meta mark 0 counter drop"));
    }

    /// (member, its slices as (value, mask)).
    fn owned(claims: &[(u32, &[(u32, u32)])]) -> OwnershipTable {
        let mut t = OwnershipTable::new();
        for &(m, slices) in claims {
            let claim = igmp_ext::ownership::Claim {
                slices: slices
                    .iter()
                    .map(|&(v, mask)| igmp_ext::Slice::new(v, mask))
                    .collect(),
                epoch: igmp_ext::AllocationEpoch(1),
                ifindex: 3,
                sender: Ipv4Addr::new(10, 0, 0, m as u8),
                expires: igmp_ext::Instant::from_millis(1_000_000),
                member_key: igmp_ext::KeyId([1; 8]),
                issuer: igmp_ext::KeyId([2; 8]),
                standby: igmp_ext::SliceSet::default(),
                liveness: Vec::new(),
                waiting: igmp_ext::SliceSet::default(),
            };
            t.apply(Timestamp::from_secs(1), G, igmp_ext::MemberId(m), claim)
                .unwrap();
        }
        t
    }

    const G: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);

    /// No served interface: the slow path alone.
    fn no_device(_: u32) -> Option<String> {
        None
    }

    /// Issue 16, item 3: a re-point between members the VIP already routes to moves map
    /// elements only (no route, no rule, no rewrite); a new mask or a failed change rewrites.
    #[test]
    fn a_repoint_changes_only_the_moved_map_elements() {
        let vip = Ipv4Addr::new(10, 200, 0, 1);
        let mut p = VipPlanner::new(&[VipSpec {
            address: vip,
            group: G,
            pin: true,
        }]);
        let now = Timestamp::from_secs(1);
        // Members 1..=3 on values 0..2 of mask 3; 3 unowned.
        let t = owned(&[(1, &[(0, 3)]), (2, &[(1, 3)]), (3, &[(2, 3)])]);
        let c = p
            .update(G, &t, GapPolicy::Drop, now, &no_device)
            .0
            .expect("first write");
        assert!(c.ruleset.rewrite);
        assert_eq!((c.routes.len(), c.rules.len()), (3, 3));
        // Member 3's slice moves to member 1 (member 3 keeps a claim elsewhere: none here, so
        // it lingers for its pinned flows in pin mode): one element re-pointed.
        let t = owned(&[(1, &[(0, 3), (2, 3)]), (2, &[(1, 3)])]);
        let c = p
            .update(G, &t, GapPolicy::Drop, now, &no_device)
            .0
            .expect("a re-point");
        assert!(!c.ruleset.rewrite);
        assert_eq!(
            c.ruleset.text,
            "delete element ip manycast_verifier vip_10_200_0_1 { 0.0.0.2 }\n\
             add element ip manycast_verifier vip_10_200_0_1 { 0.0.0.2 : 0x4d430001 }\n"
        );
        assert!(c.routes.is_empty() && c.rules.is_empty());
        assert!(c.stale_routes.is_empty(), "member 3 lingers (pin)");
        // The gap is filled by member 2 (fallback): one element added.
        let c = p
            .update(
                G,
                &t,
                GapPolicy::Fallback(igmp_ext::MemberId(2)),
                now,
                &no_device,
            )
            .0
            .expect("a change");
        assert_eq!(
            c.ruleset.text,
            "add element ip manycast_verifier vip_10_200_0_1 { 0.0.0.3 : 0x4d430002 }\n"
        );
        // A failed change: the next one rewrites the table and writes routes and rules again.
        p.completed(&DataplaneOp::Vip(c), false);
        let t = owned(&[(1, &[(0, 3)]), (2, &[(1, 3), (2, 3)])]);
        let c = p
            .update(G, &t, GapPolicy::Drop, now, &no_device)
            .0
            .expect("a change");
        assert!(c.ruleset.rewrite);
        assert!(!c.routes.is_empty());
        // A failed change is retried on the planner's second tick (Change::Retry), as a whole
        // table with every route and rule, and only once.
        p.completed(&DataplaneOp::Vip(c), false);
        let retried = p.retry(&t, GapPolicy::Drop, now, &no_device);
        assert!(
            matches!(&retried[..], [r] if r.ruleset.rewrite && r.routes.len() == 3),
            "{retried:?}"
        );
        assert_eq!(p.retry(&t, GapPolicy::Drop, now, &no_device), vec![]);
        // A coarser mask: the map keeps its own, and elements move.
        let t = owned(&[(1, &[(0, 1)]), (2, &[(1, 1)])]);
        let c = p
            .update(G, &t, GapPolicy::Drop, now, &no_device)
            .0
            .expect("a change");
        assert!(!c.ruleset.rewrite, "{}", c.ruleset.text);
        // A finer one: rewritten.
        let t = owned(&[(1, &[(0, 7)]), (2, &[(1, 1)])]);
        let c = p
            .update(G, &t, GapPolicy::Drop, now, &no_device)
            .0
            .expect("a change");
        assert!(c.ruleset.rewrite);
        assert!(c.ruleset.contains("ip saddr & 0.0.0.7 map @vip_10_200_0_1"));
    }
}
