//! The routed control group (SPEC.md §3.9, §10.7): who has a verified shared join for each
//! control group the verifier routes, and the nft netdev table that carries the group between
//! interfaces for them only.
//!
//! A member on any served interface proves membership with a signed join for the control group
//! (shared: nothing is owned). The table `manycast_ctl` has one ingress chain on every served
//! interface, ahead of the other tables (priority −10): a datagram to a control group goes
//! through the group's map `from_<group>`, keyed by `iifname . ip saddr`, whose elements are
//! the verified members (their interface and the address their join came from); each value
//! jumps to the chain of that interface, which `dup`s the frame to every *other* interface with
//! verified members of the group. Anything else to the group (but IGMP, which is the querier's)
//! is counted and dropped. `dup to "<device>"` copies the raw frame before routing, so the TTL
//! is untouched: members keep sending with TTL 1.
//!
//! A member joining or leaving on an interface that already has (still has) members is one
//! element write; the table is rewritten whole when the set of interfaces with members of a
//! group changes, or when what the kernel holds is unknown (the first write, a failed one).
//! Pure: the ops go to `crate::sys::exec`.

use super::{DataplaneOp, NftBatch};
use core::fmt::Write;
use igmp_ext::{Instant, KeyId, MemberId};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub const TABLE: &str = "manycast_ctl";

/// The ingress chain's priority: before the native and VIP tables (priority 0).
const PRIORITY: i32 = -10;

/// One verified member of a control group, as its last join showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMember {
    pub ifindex: u32,
    pub sender: Ipv4Addr,
    pub expires: Instant,
    pub member_key: KeyId,
    /// The group key that issued its certificate.
    pub issuer: KeyId,
}

/// What the table carries: for each control group, the (interface, member address) pairs.
type Layout = BTreeMap<Ipv4Addr, BTreeSet<(u32, Ipv4Addr)>>;

/// The control groups' members and the table that carries them.
#[derive(Debug, Default)]
pub struct ControlPlane {
    groups: Vec<Ipv4Addr>,
    /// Served interfaces: (ifindex, name).
    devices: Vec<(u32, String)>,
    members: BTreeMap<(Ipv4Addr, MemberId), ControlMember>,
    /// What the kernel holds, as far as we know (`None`: unknown, the next write is whole).
    kernel: Option<Layout>,
    /// A write failed: the next tick rewrites the table.
    retry: bool,
    written: bool,
    /// An earlier verifier's table is left as it is (it carries the members it knew) until
    /// [`ControlPlane::release`]: the members heard meanwhile are written then, whole.
    holding: bool,
}

impl ControlPlane {
    pub fn new(groups: Vec<Ipv4Addr>, devices: Vec<(u32, String)>) -> Self {
        ControlPlane {
            groups,
            devices,
            ..Default::default()
        }
    }

    /// Holds an earlier verifier's table (`left`) until [`ControlPlane::release`].
    pub fn holding(mut self, left: bool) -> Self {
        self.holding = left;
        self
    }

    /// The adopt grace ended: the next tick writes the table.
    pub fn release(&mut self) {
        self.holding = false;
    }

    /// Whether `group` is a control group this verifier routes.
    pub fn routes(&self, group: Ipv4Addr) -> bool {
        self.groups.contains(&group)
    }

    pub fn members(&self) -> impl Iterator<Item = (Ipv4Addr, MemberId, &ControlMember)> + '_ {
        self.members.iter().map(|(&(g, m), c)| (g, m, c))
    }

    /// A verified join of `group` by `member`: it joins (or refreshes, or moves) with slices,
    /// leaves without. Returns whether the members changed.
    pub fn join(
        &mut self,
        group: Ipv4Addr,
        member: MemberId,
        joined: Option<ControlMember>,
        out: &mut Vec<DataplaneOp>,
    ) -> bool {
        let before = self
            .members
            .get(&(group, member))
            .map(|c| (c.ifindex, c.sender));
        match joined {
            Some(c) => {
                let after = Some((c.ifindex, c.sender));
                self.members.insert((group, member), c);
                if before == after {
                    return false;
                }
            }
            None => {
                if self.members.remove(&(group, member)).is_none() {
                    return false;
                }
            }
        }
        self.plan(out);
        true
    }

    /// Drops the members whose last join is older than its hold, or for whom `gone` says so (a
    /// revoked member key); returns them.
    pub fn drop_where(
        &mut self,
        now: Instant,
        gone: impl Fn(&ControlMember) -> bool,
        out: &mut Vec<DataplaneOp>,
    ) -> Vec<(Ipv4Addr, MemberId)> {
        let dropped: Vec<(Ipv4Addr, MemberId)> = self
            .members
            .iter()
            .filter(|(_, c)| c.expires <= now || gone(c))
            .map(|(&k, _)| k)
            .collect();
        for k in &dropped {
            self.members.remove(k);
        }
        if !dropped.is_empty() {
            self.plan(out);
        }
        dropped
    }

    /// The first write (the table with no members yet, which replaces one an earlier
    /// verifier left) and the retry of a failed one.
    pub fn tick(&mut self, out: &mut Vec<DataplaneOp>) {
        if !self.groups.is_empty() && !self.holding && (!self.written || self.retry) {
            self.retry = false;
            self.kernel = None;
            self.plan(out);
        }
    }

    /// The executor's outcome of a [`DataplaneOp::ControlTable`].
    pub fn completed(&mut self, op: &DataplaneOp, ok: bool) {
        if matches!(op, DataplaneOp::ControlTable(_)) && !ok {
            self.kernel = None;
            self.retry = true;
        }
    }

    /// Removes the table (clean shutdown), if this verifier wrote it.
    pub fn withdraw(&mut self, out: &mut Vec<DataplaneOp>) {
        if self.written {
            out.push(DataplaneOp::DeleteControlTable);
            self.written = false;
            self.kernel = None;
        }
    }

    fn layout(&self) -> Layout {
        let mut l: Layout = self.groups.iter().map(|&g| (g, BTreeSet::new())).collect();
        for (&(group, _), c) in &self.members {
            if !self.devices.iter().any(|(i, _)| *i == c.ifindex) {
                continue; // heard on an interface we do not serve: nothing to carry
            }
            l.entry(group).or_default().insert((c.ifindex, c.sender));
        }
        l
    }

    fn plan(&mut self, out: &mut Vec<DataplaneOp>) {
        if self.holding {
            return;
        }
        let to = self.layout();
        let batch = match &self.kernel {
            Some(from) if shape(from) == shape(&to) => {
                let text = element_updates(&self.devices, from, &to);
                if text.is_empty() {
                    return;
                }
                NftBatch::elements(text)
            }
            _ => NftBatch::rewrite(ruleset(&self.devices, &to)),
        };
        self.kernel = Some(to);
        self.written = true;
        out.push(DataplaneOp::ControlTable(batch));
    }
}

/// For each group, the devices with members: what the chains depend on.
fn shape(l: &Layout) -> BTreeMap<Ipv4Addr, BTreeSet<u32>> {
    l.iter()
        .map(|(g, m)| (*g, m.iter().map(|(i, _)| *i).collect()))
        .collect()
}

/// A served interface's name (the layout holds served interfaces only).
fn device(devices: &[(u32, String)], ifindex: u32) -> &str {
    devices
        .iter()
        .find(|(i, _)| *i == ifindex)
        .map_or("", |(_, d)| d.as_str())
}

fn dotted(group: Ipv4Addr) -> String {
    let o = group.octets();
    format!("{}_{}_{}_{}", o[0], o[1], o[2], o[3])
}

/// The group's map: `iifname . ip saddr` → the jump to the arrival interface's chain.
pub fn map_name(group: Ipv4Addr) -> String {
    format!("from_{}", dotted(group))
}

/// The chain of the members on interface `ifindex` (named by index: any device name fits).
fn chain_name(group: Ipv4Addr, ifindex: u32) -> String {
    format!("c_{}_if{ifindex}", dotted(group))
}

fn element(devices: &[(u32, String)], group: Ipv4Addr, ifindex: u32, sender: Ipv4Addr) -> String {
    format!(
        "\"{}\" . {sender} : jump {}",
        device(devices, ifindex),
        chain_name(group, ifindex)
    )
}

/// The whole table as one transaction (created if missing, deleted, written anew).
pub fn ruleset(devices: &[(u32, String)], layout: &Layout) -> String {
    let mut out =
        format!("add table netdev {TABLE}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n");
    for (group, members) in layout {
        let with_members: BTreeSet<u32> = members.iter().map(|(i, _)| *i).collect();
        for &ifindex in &with_members {
            let _ = writeln!(out, "\tchain {} {{", chain_name(*group, ifindex));
            out.push_str("\t\tcounter\n");
            for &other in with_members.iter().filter(|&&o| o != ifindex) {
                let _ = writeln!(out, "\t\tdup to \"{}\"", device(devices, other));
            }
            out.push_str("\t\taccept\n\t}\n");
        }
        let _ = writeln!(
            out,
            "\tmap {} {{\n\t\ttype ifname . ipv4_addr : verdict",
            map_name(*group)
        );
        if !members.is_empty() {
            let elems: Vec<String> = members
                .iter()
                .map(|(i, s)| element(devices, *group, *i, *s))
                .collect();
            let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
        }
        out.push_str("\t}\n");
    }
    let names: Vec<String> = devices.iter().map(|(_, d)| format!("\"{d}\"")).collect();
    let _ = writeln!(
        out,
        "\tchain ingress {{\n\t\ttype filter hook ingress devices = {{ {} }} priority {PRIORITY}; policy accept;",
        names.join(", ")
    );
    for group in layout.keys() {
        // IGMP to the group (v2 reports, group-specific queries) is for the querier.
        let _ = writeln!(out, "\t\tip daddr {group} ip protocol igmp accept");
        let _ = writeln!(
            out,
            "\t\tip daddr {group} iifname . ip saddr vmap @{}",
            map_name(*group)
        );
        // Not a verified member where it came from: not carried.
        let _ = writeln!(out, "\t\tip daddr {group} counter drop");
    }
    out.push_str("\t}\n}\n");
    out
}

/// Element deletes, then adds, for two layouts of the same shape. Empty when nothing changed.
fn element_updates(devices: &[(u32, String)], from: &Layout, to: &Layout) -> String {
    let mut out = String::new();
    let mut adds = String::new();
    for (group, new) in to {
        let empty = BTreeSet::new();
        let old = from.get(group).unwrap_or(&empty);
        let target = format!("netdev {TABLE} {}", map_name(*group));
        for (i, s) in old.difference(new) {
            let d = device(devices, *i);
            let _ = writeln!(out, "delete element {target} {{ \"{d}\" . {s} }}");
        }
        for (i, s) in new.difference(old) {
            let e = element(devices, *group, *i, *s);
            let _ = writeln!(adds, "add element {target} {{ {e} }}");
        }
    }
    out + &adds
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Ipv4Addr = Ipv4Addr::new(239, 77, 0, 1);

    fn plane() -> ControlPlane {
        ControlPlane::new(
            vec![G],
            vec![
                (1, "r-eth1".into()),
                (2, "r-eth2".into()),
                (3, "r-eth3".into()),
            ],
        )
    }

    fn member(ifindex: u32, last: u8, expires: u64) -> Option<ControlMember> {
        Some(ControlMember {
            ifindex,
            sender: Ipv4Addr::new(10, 0, ifindex as u8, last),
            expires: Instant(expires),
            member_key: KeyId([last; 8]),
            issuer: KeyId([0; 8]),
        })
    }

    fn text(ops: &[DataplaneOp]) -> Vec<(bool, String)> {
        ops.iter()
            .map(|op| match op {
                DataplaneOp::ControlTable(b) => (b.rewrite, b.text.clone()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn members_are_carried_to_the_other_interfaces_with_members_only() {
        let mut p = plane();
        let mut ops = Vec::new();
        p.tick(&mut ops);
        let first = text(&ops);
        assert!(first[0].0, "the first write is whole");
        assert!(first[0].1.contains("ip daddr 239.77.0.1 counter drop"));
        assert!(!first[0].1.contains("dup"), "{}", first[0].1);
        ops.clear();
        p.join(G, MemberId(1), member(1, 2, 1000), &mut ops);
        p.join(G, MemberId(2), member(2, 2, 1000), &mut ops);
        let t = text(&ops);
        assert!(
            t.iter().all(|(rewrite, _)| *rewrite),
            "each changes the shape"
        );
        let last = &t[1].1;
        assert!(last.contains(
            "\tchain c_239_77_0_1_if1 {\n\t\tcounter\n\t\tdup to \"r-eth2\"\n\t\taccept\n\t}"
        ));
        assert!(last.contains(
            "\tchain c_239_77_0_1_if2 {\n\t\tcounter\n\t\tdup to \"r-eth1\"\n\t\taccept\n\t}"
        ));
        assert!(!last.contains("dup to \"r-eth3\""), "no member there");
        assert!(last.contains("\"r-eth1\" . 10.0.1.2 : jump c_239_77_0_1_if1"));
        assert!(last.contains("priority -10; policy accept;"));
        let vmap = last.find("vmap @from_239_77_0_1").expect("the map lookup");
        let igmp = last.find("ip protocol igmp accept").expect("IGMP passes");
        let drop = last
            .find("ip daddr 239.77.0.1 counter drop")
            .expect("the drop");
        assert!(igmp < vmap && vmap < drop);
    }

    #[test]
    fn a_member_on_an_interface_with_members_is_one_element_write() {
        let mut p = plane();
        let mut ops = Vec::new();
        p.join(G, MemberId(1), member(1, 2, 1000), &mut ops);
        p.join(G, MemberId(2), member(2, 2, 1000), &mut ops);
        ops.clear();
        assert!(p.join(G, MemberId(3), member(2, 3, 1000), &mut ops));
        assert_eq!(
            text(&ops),
            vec![(
                false,
                "add element netdev manycast_ctl from_239_77_0_1 \
                 { \"r-eth2\" . 10.0.2.3 : jump c_239_77_0_1_if2 }\n"
                    .into()
            )]
        );
        ops.clear();
        // A refresh from the same place changes nothing in the kernel.
        assert!(!p.join(G, MemberId(3), member(2, 3, 2000), &mut ops));
        assert!(ops.is_empty());
        // A leave of one of two on the interface: one delete.
        assert!(p.join(G, MemberId(3), None, &mut ops));
        assert_eq!(
            text(&ops),
            vec![(
                false,
                "delete element netdev manycast_ctl from_239_77_0_1 { \"r-eth2\" . 10.0.2.3 }\n"
                    .into()
            )]
        );
    }

    #[test]
    fn expiry_revocation_and_failures_rewrite_or_drop() {
        let mut p = plane();
        let mut ops = Vec::new();
        p.join(G, MemberId(1), member(1, 2, 1000), &mut ops);
        p.join(G, MemberId(2), member(2, 2, 5000), &mut ops);
        ops.clear();
        assert!(p.drop_where(Instant(999), |_| false, &mut ops).is_empty());
        assert_eq!(
            p.drop_where(Instant(1000), |_| false, &mut ops),
            vec![(G, MemberId(1))]
        );
        let t = text(&ops);
        assert!(t[0].0 && !t[0].1.contains("dup"), "{}", t[0].1);
        ops.clear();
        assert_eq!(
            p.drop_where(Instant(0), |c| c.member_key == KeyId([2; 8]), &mut ops),
            vec![(G, MemberId(2))]
        );
        assert_eq!(p.members().count(), 0);
        ops.clear();
        p.completed(&DataplaneOp::ControlTable(NftBatch::default()), false);
        p.tick(&mut ops);
        assert!(text(&ops)[0].0, "a failed write is retried whole");
        ops.clear();
        p.withdraw(&mut ops);
        assert_eq!(ops, vec![DataplaneOp::DeleteControlTable]);
    }

    #[test]
    fn a_left_table_is_held_until_release_then_written_whole_with_the_members_heard() {
        let mut p = plane().holding(true);
        let mut ops = Vec::new();
        p.tick(&mut ops);
        p.join(G, MemberId(1), member(1, 2, 1000), &mut ops);
        p.drop_where(Instant(0), |_| false, &mut ops);
        assert!(ops.is_empty(), "{ops:?}");
        p.withdraw(&mut ops);
        assert!(ops.is_empty(), "not ours to remove yet");
        p.release();
        p.tick(&mut ops);
        let t = text(&ops);
        assert!(t[0].0 && t[0].1.contains("10.0.1.2"), "{t:?}");
    }

    #[test]
    fn a_member_heard_on_an_unserved_interface_is_not_carried() {
        let mut p = plane();
        let mut ops = Vec::new();
        p.join(G, MemberId(1), member(9, 2, 1000), &mut ops);
        let t = text(&ops);
        assert!(!t[0].1.contains("10.0.9.2"), "{}", t[0].1);
    }
}
