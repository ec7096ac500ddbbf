//! VIP mode over IPv6 (issue 15, item 3; SPEC.md §10.3.1): an IPv6 VIP bound to a protected
//! IPv6 group, steered at netdev ingress in a table of its own ([`TABLE`]) from the IPv6
//! ownership (the members' signed MLDv2 joins), as [`super::vip_netdev`] steers an IPv4 VIP:
//! each packet to the VIP goes to the hop chain of the member owning its source's slice,
//! `fwd ip6 to <member's link-local address> device <its interface>` (the destination stays
//! the VIP: members hold it on loopback and answer directly). Sources no one owns follow the gap
//! policy (the fallback member's hop, else drop). ICMPv6 neighbour discovery and MLD are never
//! steered.
//!
//! The VIP's slice chain `s_<vip>` looks `ip6 saddr & mask` up in its map `sl_<vip>`, the
//! owners' slices expanded over their common mask as the native table's
//! ([`super::netdev6::plan`], reused; a claim the map cannot take gets a rule per slice before
//! it). Without pin an element goes to its owner's hop chain; with pin to its owner's mark
//! chain `k<member>`, which sets the mark and returns to the protocol chain. With pin, flow
//! tables keyed by
//! the source's /64 prefix, the low 32 bits of its interface identifier and both ports
//! ([`FLOW`]) are looked up first, as the IPv4 fast path's (`pin_`, `fin_`, `upin_`, the same
//! states and timeouts, [`super::vip_netdev::PIN_TIMEOUTS`]); the slice chain gives a new flow
//! its member's mark, `hop_<vip>` maps a mark to its hop chain. A member that lost all its
//! slices keeps its hop for [`super::vip_netdev::LINGER_S`] so that its pinned flows still
//! reach it.
//!
//! A change of ownership that keeps the table's shape (the same VIPs, masks and per-slice
//! rules) is written as the map elements that moved (`sl_<vip>`, and `hop_<vip>` with pin;
//! new hop and mark chains added first), one nfnetlink batch, so the hop chains' counters
//! carry on, as the native table's ([`super::netdev6`]). Any other change is the whole table
//! in one transaction, which keeps the flow tables (the pins): `flush table`, everything but
//! the flow tables of VIPs still pinned deleted by name, the body declared anew
//! ([`keep_head`]). The names come from what this planner wrote last, or, when it does not
//! know (the first write, a failed one), from the kernel's `list chains` (the executor:
//! [`keep_flow_tables`]).
//!
//! With `[vip_pin] dataplane = "bpf"` the tc program carries the pinned flows in front of this
//! table ([`FastVip6`], `sys/bpf.rs`); the table takes what the program passes on.

use super::map::element_moves;
use super::netdev::{quoted, UNUSED_CHAINS};
use super::netdev6::{GroupPlan6, Hop6};
use super::vip_netdev::{mark_of, PinTimeouts, HOPS, LINGER_S, PIN_FLOWS, PIN_TIMEOUTS};
use super::{DataplaneOp, GapPolicy, NftBatch};
use core::fmt::Write;
use igmp_ext::ownership::OwnershipTable6;
use igmp_ext::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
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
    /// The slice map (`ip6 saddr & mask` → owner, the gap policy's fallback in the holes) and
    /// the slices of claims it could not take, a rule each: its group's native plan.
    pub slices: GroupPlan6,
    /// With pin: every member a pinned flow may name (owners, the fallback, and members that
    /// lost their slices less than [`LINGER_S`] ago), by member id.
    pub hops: BTreeMap<u32, Hop6>,
}

impl Vip6Plan {
    /// Every hop the slices steer to.
    fn owners(&self) -> impl Iterator<Item = &Hop6> {
        let mapped = self.slices.elements.iter().map(|(_, h)| h);
        mapped.chain(self.slices.rules.iter().map(|(_, _, h)| h))
    }

    /// The hops `hop_<vip>` names (members with a mark).
    fn marked_hops(&self) -> BTreeMap<u32, &Hop6> {
        let marked = self.hops.iter().filter(|(m, _)| mark_of(**m).is_some());
        marked.map(|(m, h)| (*m, h)).collect()
    }

    /// Where a slice of `h` goes: its hop chain without pin, its mark chain with (none for a
    /// member with no mark: left to the gap).
    fn target(&self, h: &Hop6) -> Option<String> {
        match (self.pin, mark_of(h.member)) {
            (false, _) => Some(h.chain()),
            (true, Some(_)) => Some(mark_chain(h.member)),
            (true, None) => None,
        }
    }
}

/// A pinned IPv6 VIP as the tc program's maps hold it (`mc_vips6`, `mc_slices6`, `mc_hops6`):
/// the slice map's elements less those a per-slice rule overrides (the program passes their
/// sources on to this table, which has the rules), and every hop a pin may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastVip6 {
    pub address: Ipv6Addr,
    pub mask: u128,
    /// Masked source value → member.
    pub elements: Vec<(u128, u32)>,
    pub hops: BTreeMap<u32, Hop6>,
}

impl FastVip6 {
    fn of(v: &Vip6Plan) -> FastVip6 {
        let p = &v.slices;
        // A rule's sources share (value, mask) bits with an element's where both masks agree.
        let overridden = |e: u128| p.rules.iter().any(|(r, m, _)| (e ^ r) & m & p.mask == 0);
        FastVip6 {
            address: v.address,
            mask: p.mask,
            elements: p
                .elements
                .iter()
                .filter(|(e, _)| !overridden(*e))
                .map(|(e, h)| (*e, h.member))
                .collect(),
            hops: v.hops.clone(),
        }
    }
}

/// One write of the table: the nft batch, and for the tc program the pinned VIPs and the
/// interfaces it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip6Write {
    pub batch: NftBatch,
    pub devices: Vec<String>,
    pub fast: Vec<FastVip6>,
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

fn names(v: &Vip6Plan) -> [String; 8] {
    let x = suffix(v.address);
    [
        format!("sl_{x}"),
        format!("s_{x}"),
        format!("tcp_{x}"),
        format!("udp_{x}"),
        format!("hop_{x}"),
        format!("pin_{x}"),
        format!("fin_{x}"),
        format!("upin_{x}"),
    ]
}

/// A member's mark chain (pin): sets its mark; the slice chain's `goto` to it returns to the
/// protocol chain.
fn mark_chain(member: u32) -> String {
    format!("k{member}")
}

/// The slice chain: the per-slice rules, then the slice map, whose elements go to the owner's
/// hop (without pin) or mark chain (with pin); the gap dropped at its end.
fn slice_chain(v: &Vip6Plan) -> Vec<String> {
    let [sl, ..] = names(v);
    let mut rules: Vec<String> = v
        .slices
        .rules
        .iter()
        .filter_map(|(value, mask, h)| {
            Some(format!(
                "ip6 saddr & {} == {} goto {}",
                Ipv6Addr::from(*mask),
                Ipv6Addr::from(*value),
                v.target(h)?
            ))
        })
        .collect();
    rules.push(format!(
        "ip6 saddr & {} vmap @{sl}",
        Ipv6Addr::from(v.slices.mask)
    ));
    rules.push("counter drop".into());
    rules
}

/// The slice map's elements as `value : goto <chain>`, by value.
fn slice_elements(v: &Vip6Plan) -> BTreeMap<u128, String> {
    let e = v.slices.elements.iter();
    e.filter_map(|(value, h)| Some((*value, v.target(h)?)))
        .collect()
}

fn slice_element(value: u128, chain: &String) -> Option<String> {
    Some(format!("{} : goto {chain}", Ipv6Addr::from(value)))
}

fn hop_element(member: u32, h: &&Hop6) -> Option<String> {
    Some(format!("{:#x} : jump {}", mark_of(member)?, h.chain()))
}

/// Pin mode's protocol chains (the IPv4 fast path's, with this key and the slice chain).
fn pin_chains(v: &Vip6Plan) -> [(String, Vec<String>); 2] {
    let [_, s, tcp, udp, hop, pin, fin, upin] = names(v);
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
    let [_, s, tcp, udp, ..] = names(v);
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

/// The hop chains the plans use.
fn hops_of(vips: &[Vip6Plan]) -> BTreeSet<Hop6> {
    let hops = vips.iter().flat_map(|v| v.owners().chain(v.hops.values()));
    hops.cloned().collect()
}

/// The mark chains the plans use (pinned VIPs' owners with a mark).
fn marks_of(vips: &[Vip6Plan]) -> BTreeSet<u32> {
    let owners = vips.iter().filter(|v| v.pin).flat_map(|v| v.owners());
    owners
        .map(|h| h.member)
        .filter(|m| mark_of(*m).is_some())
        .collect()
}

fn hop_rule(h: &Hop6) -> String {
    format!("counter fwd ip6 to {} device \"{}\"", h.via, h.device)
}

fn mark_rule(member: u32) -> Option<String> {
    Some(format!("meta mark set {:#x}", mark_of(member)?))
}

/// The head that replaces the table whole (its flow tables start empty).
pub const REWRITE_HEAD: &str =
    "add table netdev manycast_vip6\ndelete table netdev manycast_vip6\n";

/// The whole table: [`REWRITE_HEAD`], then its body, with the hop chains `hops` and the mark
/// chains `marks` (those the plans use, and possibly more).
pub fn ruleset(
    devices: &[String],
    hops: &BTreeSet<Hop6>,
    marks: &BTreeSet<u32>,
    vips: &[Vip6Plan],
) -> String {
    let mut out = format!("{REWRITE_HEAD}table netdev {TABLE} {{\n");
    for h in hops {
        let _ = writeln!(out, "\tchain {} {{\n\t\t{}\n\t}}", h.chain(), hop_rule(h));
    }
    for &m in marks {
        if let Some(rule) = mark_rule(m) {
            let _ = writeln!(out, "\tchain {} {{\n\t\t{rule}\n\t}}", mark_chain(m));
        }
    }
    for v in vips {
        let [sl, s, _, _, hop, pin, fin, upin] = names(v);
        let elements: Vec<String> = slice_elements(v)
            .iter()
            .filter_map(|(value, c)| slice_element(*value, c))
            .collect();
        let _ = write!(out, "\tmap {sl} {{\n\t\ttype ipv6_addr : verdict\n");
        if !elements.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
        }
        out.push_str("\t}\n");
        if v.pin {
            let elements: Vec<String> = v
                .marked_hops()
                .iter()
                .filter_map(|(m, h)| hop_element(*m, h))
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

/// The chain names of [`ruleset`]'s table, as `list chains` would show them.
fn chain_names(hops: &BTreeSet<Hop6>, marks: &BTreeSet<u32>, vips: &[Vip6Plan]) -> Vec<String> {
    let mut c: Vec<String> = hops.iter().map(Hop6::chain).collect();
    c.extend(marks.iter().map(|m| mark_chain(*m)));
    for v in vips {
        let [_, s, tcp, udp, ..] = names(v);
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
/// does not name. A slice chain's map is declared before it is deleted: a table the version
/// before wrote has the chain without the map.
pub fn keep_head(text: &str, chains: &[String]) -> Option<String> {
    let mut maps = Vec::new();
    let mut head = format!("add table netdev {TABLE}\nflush table netdev {TABLE}\n");
    for name in chains {
        if name == "ingress" || name.starts_with('m') || name.starts_with("udp_") {
            continue;
        }
        if name.starts_with('k') && name[1..].parse::<u32>().is_ok() {
            continue;
        }
        if let Some(x) = name.strip_prefix("s_") {
            let _ = writeln!(
                head,
                "add map netdev {TABLE} sl_{x} {{ type ipv6_addr : verdict; }}"
            );
            maps.push(format!("sl_{x}"));
            continue;
        }
        let x = name.strip_prefix("tcp_")?;
        maps.push(format!("hop_{x}"));
        if !text.contains(&format!("\tmap pin_{x} {{\n")) {
            maps.extend([format!("pin_{x}"), format!("fin_{x}"), format!("upin_{x}")]);
        }
    }
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

/// The commands that take the kernel's table from `from` to `to` when both have the same shape:
/// new hop and mark chains first, then each map's removed and re-pointed elements deleted,
/// then the new and re-pointed ones added. Empty when nothing moved.
fn element_updates(
    new_hops: &BTreeSet<Hop6>,
    new_marks: &BTreeSet<u32>,
    from: &[Vip6Plan],
    to: &[Vip6Plan],
) -> String {
    let mut out = String::new();
    let mut chain = |name: String, rule: String| {
        let _ = writeln!(out, "add chain netdev {TABLE} {name}");
        let _ = writeln!(out, "flush chain netdev {TABLE} {name}");
        let _ = writeln!(out, "add rule netdev {TABLE} {name} {rule}");
    };
    // A member heard on another interface keeps its chain's name: flushed, the chain forwards
    // out of the new one only (a new chain is empty anyway).
    for h in new_hops {
        chain(h.chain(), hop_rule(h));
    }
    for &m in new_marks {
        if let Some(rule) = mark_rule(m) {
            chain(mark_chain(m), rule);
        }
    }
    let mut adds = String::new();
    let table = format!("netdev {TABLE}");
    for (old, new) in from.iter().zip(to) {
        let [sl, _, _, _, hop, ..] = names(new);
        element_moves(
            (&mut out, &mut adds),
            (&table, &sl),
            &slice_elements(old),
            &slice_elements(new),
            |v| Ipv6Addr::from(v).to_string(),
            slice_element,
        );
        if new.pin {
            element_moves(
                (&mut out, &mut adds),
                (&table, &hop),
                &old.marked_hops(),
                &new.marked_hops(),
                |m| mark_of(m).map_or(String::new(), |k| format!("{k:#x}")),
                hop_element,
            );
        }
    }
    out + &adds
}

/// Whether the kernel's table can go from `from` to `to` by element updates: the same VIPs
/// with the same pin, masks and per-slice rules.
fn same_shape(from: &[Vip6Plan], to: &[Vip6Plan]) -> bool {
    from.len() == to.len()
        && from.iter().zip(to).all(|(a, b)| {
            a.address == b.address
                && a.pin == b.pin
                && a.slices.mask == b.slices.mask
                && a.slices.rules == b.slices.rules
        })
}

/// What this process put in the kernel's table (the ops handed out are applied in order: a
/// failure makes it unknown).
#[derive(Debug, Clone, Default)]
struct Written {
    vips: Vec<Vip6Plan>,
    hops: BTreeSet<Hop6>,
    marks: BTreeSet<u32>,
}

/// The IPv6 VIPs' table: the plans and what the kernel was last given.
#[derive(Debug, Default)]
pub struct Vip6Planner {
    specs: Vec<Vip6Spec>,
    devices: Vec<String>,
    /// The kernel's table as written, when known: the next change is an element update against
    /// it, or a rewrite that keeps the pins by the names it knows. Unknown (never written, a
    /// write failed): the executor lists the chains.
    kernel: Option<Written>,
    /// Pinned VIPs: each member's last hop and when it last owned a slice or was the fallback.
    seen: BTreeMap<Ipv6Addr, BTreeMap<u32, (Hop6, Timestamp)>>,
    /// A table was handed out (so a clean stop removes it).
    ever: bool,
    /// The tc program's view last handed out. It can change when the nft table does not: a
    /// member without a mark (id above 0xffff) is in the program's maps but not in the table.
    fast: Option<Vec<FastVip6>>,
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
        self.kernel.is_some()
    }

    /// Each VIP's plan at `now` from the IPv6 ownership. A VIP's map keeps the mask the
    /// kernel's has while the claims fit it, so that a change needing no finer mask moves
    /// elements.
    pub fn plans(
        &mut self,
        now: Timestamp,
        table: &OwnershipTable6,
        gap: GapPolicy,
        device_of: impl Fn(u32) -> Option<String>,
    ) -> Vec<Vip6Plan> {
        let floors: BTreeMap<Ipv6Addr, u128> = self
            .kernel
            .iter()
            .flat_map(|k| &k.vips)
            .filter_map(|v| {
                let spec = self.specs.iter().find(|s| s.address == v.address)?;
                Some((spec.group, v.slices.mask))
            })
            .collect();
        let floor = |g| floors.get(&g).copied().unwrap_or(0);
        let groups = super::netdev6::plan(table, gap, device_of, floor);
        let mut out = Vec::new();
        for spec in &self.specs {
            let mut v = Vip6Plan {
                address: spec.address,
                pin: spec.pin,
                slices: groups.get(&spec.group).cloned().unwrap_or_default(),
                hops: BTreeMap::new(),
            };
            if spec.pin {
                let seen = self.seen.entry(spec.address).or_default();
                for h in v.owners() {
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
            .any(|v| v.owners().next().is_some() || !v.hops.is_empty());
        if !claimed && !self.ever {
            return None;
        }
        let fast: Vec<FastVip6> = vips.iter().filter(|v| v.pin).map(FastVip6::of).collect();
        let batch = match self.pending(vips) {
            Some(batch) => batch,
            // Nothing moved in the table; the program's maps may still have.
            None if self.fast.as_ref() != Some(&fast) => NftBatch::elements(String::new()),
            None => return None,
        };
        self.fast = Some(fast.clone());
        Some(DataplaneOp::Vip6Table(Vip6Write {
            batch,
            devices: self.devices.clone(),
            fast,
        }))
    }

    /// The moved elements when the kernel's table is known and has the plans' shape (none when
    /// nothing moved), else the whole table. Counted as written from here on.
    fn pending(&mut self, vips: Vec<Vip6Plan>) -> Option<NftBatch> {
        self.ever = true;
        let hops = hops_of(&vips);
        let marks = marks_of(&vips);
        if let Some(k) = self.kernel.as_mut().filter(|k| same_shape(&k.vips, &vips)) {
            let new_hops: BTreeSet<Hop6> = hops.difference(&k.hops).cloned().collect();
            let new_marks: BTreeSet<u32> = marks.difference(&k.marks).copied().collect();
            // Chains are added as they are needed and dropped only by a rewrite: once a new
            // one would join more than UNUSED_CHAINS unused ones, the table is rewritten.
            let unused = k.hops.difference(&hops).count();
            if new_hops.is_empty() || unused <= UNUSED_CHAINS {
                let text = element_updates(&new_hops, &new_marks, &k.vips, &vips);
                k.vips = vips;
                // A hop whose chain was just rewritten for another device is gone from the
                // kernel: moving back must rewrite the chain again.
                k.hops
                    .retain(|h| !new_hops.iter().any(|n| n.chain() == h.chain()));
                k.hops.extend(new_hops);
                k.marks.extend(new_marks);
                return (!text.is_empty()).then(|| NftBatch::elements(text));
            }
        }
        let text = ruleset(&self.devices, &hops, &marks, &vips);
        // Known chains: this process keeps the pins itself; unknown: the executor lists them.
        let batch = match self.kernel.as_ref() {
            Some(k) => keep_head(&text, &chain_names(&k.hops, &k.marks, &k.vips)),
            None => None,
        };
        self.kernel = Some(Written { vips, hops, marks });
        Some(NftBatch::rewrite(batch.unwrap_or(text)))
    }

    /// A failed write leaves the kernel unknown: the next update writes again (whole,
    /// keeping what the kernel's listing shows).
    pub fn completed(&mut self, op: &DataplaneOp, ok: bool) {
        if matches!(op, DataplaneOp::Vip6Table(_)) && !ok {
            self.kernel = None;
            self.fast = None;
        }
    }

    /// The table's removal on a clean stop, if one was written.
    pub fn withdraw(&mut self) -> Option<DataplaneOp> {
        self.kernel = None;
        self.fast = None;
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
