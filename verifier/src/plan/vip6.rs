//! VIP mode over IPv6 (issue 15, item 3; SPEC.md §10.3.1): an IPv6 VIP bound to a protected
//! IPv6 group, steered at netdev ingress in a table of its own ([`TABLE`]) from the IPv6
//! ownership (the members' signed MLDv2 joins), as [`super::vip_netdev`] steers an IPv4 VIP:
//! each packet to the VIP goes to the hop chain of the member owning its source's slice,
//! `fwd ip6 to <member's link-local address> device <its interface>` (the destination stays
//! the VIP: members hold it on loopback and answer directly). Sources no one owns follow the gap
//! policy (the fallback member's hop, else drop). ICMPv6 neighbour discovery and MLD are never
//! steered.
//!
//! IPv6 slices are few and not expanded into a map: the VIP's slice chain `s_<vip>` has one
//! rule per owned slice ([`super::netdev6::plan`]'s, reused). With pin, flow tables keyed by
//! the source's /64 prefix, the low 32 bits of its interface identifier and both ports
//! ([`FLOW`]) are looked up first, as the IPv4 fast path's (`pin_`, `fin_`, `upin_`, the same
//! states and timeouts, [`super::vip_netdev::PIN_TIMEOUTS`]); the slice chain gives a new flow
//! its member's mark, `hop_<vip>` maps a mark to its hop chain. A member that lost all its
//! slices keeps its hop for [`super::vip_netdev::LINGER_S`] so that its pinned flows still
//! reach it.
//!
//! Every change is the whole table in one transaction, which keeps the flow tables (the pins):
//! `flush table`, everything but the flow tables of VIPs still pinned deleted by name, the body
//! declared anew ([`keep_head`]). The names come from what this planner wrote last, or, when it
//! does not know (the first write, a failed one), from the kernel's `list chains` (the
//! executor: [`keep_flow_tables`]).

use super::netdev::quoted;
use super::netdev6::Hop6;
use super::vip_netdev::{mark_of, PinTimeouts, HOPS, LINGER_S, PIN_FLOWS, PIN_TIMEOUTS};
use super::{DataplaneOp, GapPolicy, NftBatch};
use core::fmt::Write;
use igmp_ext::ownership::OwnershipTable6;
use igmp_ext::Timestamp;
use std::collections::BTreeMap;
use std::net::Ipv6Addr;

pub const TABLE: &str = "manycast_vip6";
/// Before the IPv6 native table's ingress chain (0), as the IPv4 VIP table.
pub const PRIORITY: i32 = -10;

/// An IPv6 VIP bound to a protected IPv6 group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip6Spec {
    pub address: Ipv6Addr,
    pub group: Ipv6Addr,
    pub pin: bool,
}

/// What the table holds for one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip6Plan {
    pub address: Ipv6Addr,
    pub pin: bool,
    /// Each owned slice (value, mask) → its owner's hop.
    pub slices: Vec<(u128, u128, Hop6)>,
    /// Where sources no one owns go (the gap policy's fallback member); none: dropped.
    pub fallback: Option<Hop6>,
    /// With pin: every member a pinned flow may name (owners, the fallback, and members that
    /// lost their slices less than [`LINGER_S`] ago), by member id.
    pub hops: BTreeMap<u32, Hop6>,
}

/// The flow key: the source's /64 prefix (`@nh,64,64`), the low 32 bits of its interface
/// identifier (`@nh,160,32`) and the transport header's first 32 bits, both ports. 16 bytes:
/// nft 1.0.6 aborts on a dynamic map update whose key is longer (`netlink_gen_expr: Assertion
/// dreg < ctx->reg_low`), so the full source and the ports (20 bytes) do not fit. Two flows
/// share a key only inside one /64 (one slice, so one owner when pinned) with the same 32 low
/// bits and the same ports. Raw loads: `ip6 saddr` would check the link-layer protocol again.
const FLOW: &str = "@nh,64,64 . @nh,160,32 . @th,0,32";
const FLOW_TYPE: &str = "typeof @nh,64,64 . @nh,160,32 . @th,0,32 : meta mark";
/// TCP's flags byte (fin 0x01, syn 0x02, rst 0x04, ack 0x10).
const FLAGS: &str = "@th,104,8";

/// The address's groups in hex, for names.
fn suffix(a: Ipv6Addr) -> String {
    let s: Vec<String> = a.segments().iter().map(|g| format!("{g:x}")).collect();
    s.join("_")
}

fn names(v: &Vip6Plan) -> [String; 7] {
    let x = suffix(v.address);
    [
        format!("s_{x}"),
        format!("tcp_{x}"),
        format!("udp_{x}"),
        format!("hop_{x}"),
        format!("pin_{x}"),
        format!("fin_{x}"),
        format!("upin_{x}"),
    ]
}

/// The slice chain: the owner's hop without pin (the gap dropped at its end); with pin, the
/// owner's mark, returned to the protocol chain (the gap still dropped here).
fn slice_chain(v: &Vip6Plan) -> Vec<String> {
    let to = |h: &Hop6| match (v.pin, mark_of(h.member)) {
        (false, _) => Some(format!("goto {}", h.chain())),
        (true, Some(m)) => Some(format!("meta mark set {m:#x} return")),
        // Member ids above 0xffff have no mark: left to the gap.
        (true, None) => None,
    };
    let mut rules: Vec<String> = v
        .slices
        .iter()
        .filter_map(|(value, mask, h)| {
            Some(format!(
                "ip6 saddr & {} == {} {}",
                Ipv6Addr::from(*mask),
                Ipv6Addr::from(*value),
                to(h)?
            ))
        })
        .collect();
    rules.extend(v.fallback.as_ref().and_then(to));
    rules.push("counter drop".into());
    rules
}

/// Pin mode's protocol chains (the IPv4 fast path's, with this key and the slice chain).
fn pin_chains(v: &Vip6Plan) -> [(String, Vec<String>); 2] {
    let [s, tcp, udp, hop, pin, fin, upin] = names(v);
    let PinTimeouts {
        tcp_established: open,
        tcp_short: short,
        udp: udp_s,
    } = PIN_TIMEOUTS;
    let via = |set: &str, op: &str, secs: u64| {
        format!("{op} @{set} {{ {FLOW} timeout {secs}s : meta mark }} meta mark vmap @{hop}")
    };
    let pinned = |set: &str, op: &str, secs: u64| {
        format!("meta mark set {FLOW} map @{set} {}", via(set, op, secs))
    };
    let tcp_rules = vec![
        // An open connection's packet: one lookup, refreshed for days.
        format!("{FLAGS} & 0x7 == 0x0 {}", pinned(&pin, "update", open)),
        // A new connection forgets its tuple's old pins: it follows the slices.
        format!("{FLAGS} & 0x12 == 0x2 delete @{pin} {{ {FLOW} : meta mark }}"),
        format!("{FLAGS} & 0x12 == 0x2 delete @{fin} {{ {FLOW} : meta mark }}"),
        // A FIN or RST: the pin moves to the closing table.
        format!(
            "{FLAGS} & 0x5 != 0x0 meta mark set {FLOW} map @{pin} delete @{pin} {{ {FLOW} : meta mark }} {}",
            via(&fin, "add", short)
        ),
        pinned(&fin, "update", short),
        // Not pinned (or pinned to a member with no hop): the slice's owner, or dropped.
        format!("jump {s}"),
        format!("{FLAGS} & 0x5 != 0x0 {}", via(&fin, "add", short)),
        via(&pin, "add", short),
    ];
    let udp_rules = vec![
        pinned(&upin, "update", udp_s),
        format!("jump {s}"),
        via(&upin, "add", udp_s),
    ];
    [(tcp, tcp_rules), (udp, udp_rules)]
}

/// The ingress rule for `v`. With pin, only TCP and UDP with no extension header (the IPv6
/// header's next header: one load, no walk of the chain of headers) take the flow tables;
/// fragments and everything else are steered by slice without pin (all of a datagram's
/// fragments to the same member).
fn ingress_rules(v: &Vip6Plan) -> Vec<String> {
    let [s, tcp, udp, ..] = names(v);
    let to = format!("ip6 daddr {} ip6 hoplimit > 1", v.address);
    let mut r = Vec::new();
    if v.pin {
        r.push(format!(
            "{to} ip6 nexthdr vmap {{ 6 : goto {tcp}, 17 : goto {udp} }}"
        ));
    }
    r.push(format!("{to} goto {s}"));
    r
}

fn hops_of(vips: &[Vip6Plan]) -> BTreeMap<String, &Hop6> {
    vips.iter()
        .flat_map(|v| {
            v.slices
                .iter()
                .map(|(_, _, h)| h)
                .chain(&v.fallback)
                .chain(v.hops.values())
        })
        .map(|h| (h.chain(), h))
        .collect()
}

/// The head that replaces the table whole (its flow tables start empty).
pub const REWRITE_HEAD: &str =
    "add table netdev manycast_vip6\ndelete table netdev manycast_vip6\n";

/// The whole table: [`REWRITE_HEAD`], then its body.
pub fn ruleset(devices: &[String], vips: &[Vip6Plan]) -> String {
    let mut out = format!("{REWRITE_HEAD}table netdev {TABLE} {{\n");
    for (name, h) in hops_of(vips) {
        let _ = writeln!(
            out,
            "\tchain {name} {{\n\t\tcounter fwd ip6 to {} device \"{}\"\n\t}}",
            h.via, h.device
        );
    }
    for v in vips {
        let [s, _, _, hop, pin, fin, upin] = names(v);
        if v.pin {
            let elements: Vec<String> = v
                .hops
                .iter()
                .filter_map(|(&m, h)| Some(format!("{:#x} : jump {}", mark_of(m)?, h.chain())))
                .collect();
            let elements = if elements.is_empty() {
                String::new()
            } else {
                format!("\t\telements = {{ {} }}\n", elements.join(", "))
            };
            let _ = write!(
                out,
                "\tmap {hop} {{\n\t\ttype mark : verdict\n\t\tsize {HOPS}\n{elements}\t}}\n"
            );
            for name in [pin, fin, upin] {
                let _ = writeln!(
                    out,
                    "\tmap {name} {{\n\t\t{FLOW_TYPE}\n\t\tsize {PIN_FLOWS}\n\t\tflags dynamic,timeout\n\t}}"
                );
            }
        }
        let mut chains = vec![(s, slice_chain(v))];
        if v.pin {
            chains.extend(pin_chains(v));
        }
        for (name, rules) in chains {
            let _ = writeln!(out, "\tchain {name} {{");
            for r in rules {
                let _ = writeln!(out, "\t\t{r}");
            }
            out.push_str("\t}\n");
        }
    }
    let _ = writeln!(
        out,
        "\tchain ingress {{\n\t\ttype filter hook ingress devices = {{ {} }} priority {PRIORITY}; policy accept;",
        quoted(devices)
    );
    // Neighbour discovery and MLD are the router's (and the verifier's), never steered.
    out.push_str(
        "\t\tmeta l4proto ipv6-icmp icmpv6 type { mld-listener-query, mld-listener-report, \
         mld-listener-done, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, \
         nd-neighbor-advert, nd-redirect, mld2-listener-report } accept\n",
    );
    for v in vips {
        for r in ingress_rules(v) {
            let _ = writeln!(out, "\t\t{r}");
        }
    }
    out.push_str("\t}\n}\n");
    out
}

/// The chain names of [`ruleset`]'s table for `vips`, as `list chains` would show them.
fn chain_names(vips: &[Vip6Plan]) -> Vec<String> {
    let mut c: Vec<String> = hops_of(vips).into_keys().collect();
    for v in vips {
        let [s, tcp, udp, ..] = names(v);
        c.push(s);
        if v.pin {
            c.extend([tcp, udp]);
        }
    }
    c.push("ingress".into());
    c
}

/// `text` (a [`ruleset`]) made to rewrite a table whose chains are `chains` without touching
/// the flow tables of VIPs that stay pinned: `flush table` (rules; sets keep their elements),
/// then the other maps and every chain deleted by name, then the body declared anew (the kept
/// flow tables declared the same, which the kernel accepts). `None` for a chain this version
/// does not name.
pub fn keep_head(text: &str, chains: &[String]) -> Option<String> {
    let mut maps = Vec::new();
    for name in chains {
        if name == "ingress" || name.starts_with('m') || name.starts_with("udp_") {
            continue;
        }
        if name.starts_with("s_") {
            continue;
        }
        let x = name.strip_prefix("tcp_")?;
        maps.push(format!("hop_{x}"));
        if !text.contains(&format!("\tmap pin_{x} {{\n")) {
            maps.extend([format!("pin_{x}"), format!("fin_{x}"), format!("upin_{x}")]);
        }
    }
    let mut head = format!("add table netdev {TABLE}\nflush table netdev {TABLE}\n");
    for m in maps {
        let _ = writeln!(head, "delete map netdev {TABLE} {m}");
    }
    for c in chains {
        let _ = writeln!(head, "delete chain netdev {TABLE} {c}");
    }
    text.contains(REWRITE_HEAD)
        .then(|| text.replacen(REWRITE_HEAD, &head, 1))
}

/// [`keep_head`] from the kernel's `list chains netdev` listing; `None` without the table (a
/// plain rewrite loses nothing) or with a chain this version does not name.
pub fn keep_flow_tables(text: &str, listing: &str) -> Option<String> {
    let start = format!("table netdev {TABLE} {{");
    let mut lines = listing.lines().skip_while(|l| *l != start);
    lines.next()?;
    let chains: Vec<String> = lines
        .take_while(|l| *l != "}")
        .filter_map(|l| l.trim().strip_prefix("chain ")?.strip_suffix(" {"))
        .map(str::to_owned)
        .collect();
    keep_head(text, &chains)
}

/// The IPv6 VIPs' table: the plans and what the kernel was last given.
#[derive(Debug, Default)]
pub struct Vip6Planner {
    specs: Vec<Vip6Spec>,
    devices: Vec<String>,
    /// The body last handed out, and its chains while the kernel holds it (none: unknown).
    written: Option<String>,
    chains: Option<Vec<String>>,
    /// Pinned VIPs: each member's last hop and when it last owned a slice or was the fallback.
    seen: BTreeMap<Ipv6Addr, BTreeMap<u32, (Hop6, Timestamp)>>,
    /// A table was handed out (so a clean stop removes it).
    ever: bool,
}

impl Vip6Planner {
    pub fn new(specs: Vec<Vip6Spec>, devices: Vec<String>) -> Self {
        Vip6Planner {
            specs,
            devices,
            ..Default::default()
        }
    }

    pub fn specs(&self) -> &[Vip6Spec] {
        &self.specs
    }

    /// Whether the last write succeeded (none failed since).
    pub fn in_sync(&self) -> bool {
        self.chains.is_some()
    }

    /// Each VIP's plan at `now` from the IPv6 ownership.
    pub fn plans(
        &mut self,
        now: Timestamp,
        table: &OwnershipTable6,
        gap: GapPolicy,
        device_of: impl Fn(u32) -> Option<String>,
    ) -> Vec<Vip6Plan> {
        let groups = slice_plans(table, gap, device_of);
        let mut out = Vec::new();
        for spec in &self.specs {
            let g = groups.get(&spec.group).cloned().unwrap_or_default();
            let mut v = Vip6Plan {
                address: spec.address,
                pin: spec.pin,
                slices: g.slices,
                fallback: g.fallback,
                hops: BTreeMap::new(),
            };
            if spec.pin {
                let seen = self.seen.entry(spec.address).or_default();
                for h in v.slices.iter().map(|(_, _, h)| h).chain(&v.fallback) {
                    seen.insert(h.member, (h.clone(), now));
                }
                let linger = core::time::Duration::from_secs(LINGER_S).as_millis() as u64;
                seen.retain(|_, (_, t)| now.as_millis().saturating_sub(t.as_millis()) < linger);
                v.hops = seen.iter().map(|(&m, (h, _))| (m, h.clone())).collect();
            }
            out.push(v);
        }
        out
    }

    /// The op that brings the kernel in line, if anything changed. Nothing is written before
    /// the first claim on a VIP's group.
    pub fn update(
        &mut self,
        now: Timestamp,
        table: &OwnershipTable6,
        gap: GapPolicy,
        device_of: impl Fn(u32) -> Option<String>,
    ) -> Option<DataplaneOp> {
        if self.specs.is_empty() {
            return None;
        }
        let vips = self.plans(now, table, gap, device_of);
        let claimed = vips
            .iter()
            .any(|v| !v.slices.is_empty() || v.fallback.is_some() || !v.hops.is_empty());
        if !claimed && !self.ever {
            return None;
        }
        let text = ruleset(&self.devices, &vips);
        if self.written.as_ref() == Some(&text) && self.chains.is_some() {
            return None;
        }
        // Known chains: this process keeps the pins itself; unknown: the executor lists them.
        let batch = match self.chains.as_deref().and_then(|c| keep_head(&text, c)) {
            Some(kept) => kept,
            None => text.clone(),
        };
        self.written = Some(text);
        self.chains = Some(chain_names(&vips));
        self.ever = true;
        Some(DataplaneOp::Vip6Table(NftBatch::rewrite(batch)))
    }

    /// A failed write leaves the kernel unknown: the next update writes again (whole,
    /// keeping what the kernel's listing shows).
    pub fn completed(&mut self, op: &DataplaneOp, ok: bool) {
        if matches!(op, DataplaneOp::Vip6Table(_)) && !ok {
            self.chains = None;
        }
    }

    /// The table's removal on a clean stop, if one was written.
    pub fn withdraw(&mut self) -> Option<DataplaneOp> {
        self.written = None;
        self.chains = None;
        std::mem::take(&mut self.ever).then_some(DataplaneOp::DeleteVip6Table)
    }
}

/// One IPv6 group's owned slices (value, mask, owner's hop) and the gap policy's fallback hop:
/// a VIP's slice chain has a rule per owned slice (IPv6 VIPs are few and their slices few;
/// `netdev6` expands native groups into a map instead).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlicePlan6 {
    pub slices: Vec<(u128, u128, Hop6)>,
    pub fallback: Option<Hop6>,
}

impl SlicePlan6 {
    /// Every hop the plan steers to.
    pub fn hops(&self) -> impl Iterator<Item = &Hop6> {
        self.slices.iter().map(|(_, _, h)| h).chain(&self.fallback)
    }
}

/// The slice plan of every IPv6 group with claims (claims heard on interfaces not served are
/// left out: nothing can be steered to them).
pub fn slice_plans(
    table: &OwnershipTable6,
    gap: GapPolicy,
    device_of: impl Fn(u32) -> Option<String>,
) -> BTreeMap<Ipv6Addr, SlicePlan6> {
    let mut out = BTreeMap::new();
    for group in table.groups() {
        let mut plan = SlicePlan6::default();
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

#[cfg(test)]
#[path = "vip6_tests.rs"]
mod tests;
