//! VIP mode's fast path (SPEC.md §10.3, issue 16 item 5): a `netdev` table on the verifier's
//! interfaces that forwards a VIP's packets at ingress with `fwd ip to <member> device <dev>`,
//! like the native nft data plane ([`super::netdev`], whose hop chains it shares), so that a
//! steered packet touches no mark, no policy rule, no route lookup and no conntrack. The IP
//! destination stays the VIP (members hold it on loopback: direct server return).
//!
//! - Without pin: one verdict map `ip saddr & mask → jump <hop chain>`.
//! - With pin: flow tables (`saddr . sport . dport → mark`, one set of tables per protocol,
//!   dynamic, a timeout per element like conntrack's, [`PinTimeouts`]) are looked up first; a
//!   flow in none takes the slice map's member and is added. TCP (chain `tcp_<vip>`): an open
//!   connection's pin is in `pin_<vip>` and every packet without SYN, FIN or RST refreshes it
//!   to the established timeout; a FIN or RST moves it to `fin_<vip>` with the closing timeout,
//!   where the last packets refresh it without bringing it back; a SYN without ACK (a new
//!   connection) first forgets its tuple's pins, so new connections follow the map, and starts
//!   with the short timeout. UDP (chain `udp_<vip>`): `upin_<vip>` with conntrack's stream
//!   timeout. The member's mark selects its hop chain (`hop_<vip>`: mark → jump). A pinned
//!   packet's rule is kept short, since every expression is paid per packet: the key is two
//!   loads (`@nh,96,32 . @th,0,32`: the source address, both ports in one), looked up, then
//!   refreshed; the ingress rule's protocol and fragment checks are one lookup.
//! - A whole-table rewrite keeps the flow tables: [`keep_flow_tables`] rewrites everything else
//!   by name, in one transaction.
//!
//! What the table does not forward (TTL ≤ 1, a value with no owner, a member whose interface is not served, fragments and protocols other than TCP and
//! UDP in pin mode, a new flow while the flow table is full) is accepted and meets the `ip` table's marks and policy routes as before: the slow
//! path, which also carries VIP traffic arriving on interfaces the verifier does not serve.
//!
//! Pure text, tested here; [`super::vip`] plans it and the executor sends it with the `ip`
//! table's change in one transaction.

use super::map::element_moves;
use super::netdev::{chain_rules, quoted, Hop};
use core::fmt::Write;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const TABLE: &str = "manycast_vip";
/// Marks are `MARK_BASE | member id` (member ids above 0xffff cannot be steered by VIP), in
/// both paths' maps.
pub const MARK_BASE: u32 = 0x4d43_0000;

pub fn mark_of(member: u32) -> Option<u32> {
    (member <= 0xffff).then_some(MARK_BASE | member)
}
/// The ingress hook's priority: before the native table's (0), so that a VIP's packet does not
/// go through that table's rules too (a native group's packets go through one rule here).
pub const PRIORITY: i32 = -10;
/// In pin mode a member that lost all its slices keeps its route and hop this long, for its
/// pinned connections.
pub const LINGER_S: u64 = 300;
/// Flows each of a pinned VIP's two flow tables holds at most; a new flow past it is not pinned
/// (it follows the map, on the slow path).
pub const PIN_FLOWS: u32 = 1 << 18;

/// The size declared for a pinned VIP's `hop_<vip>` map: every mark there can be (member ids up
/// to 0xffff), so that no member's hop is ever refused. With a size and a 4-byte key the kernel
/// keeps the map in its fixed hash (`nft_hash_fast`: one word hashed, no resizable table), which
/// each pinned packet looks up; it costs 1 MiB of buckets per pinned VIP.
pub const HOPS: u32 = 1 << 16;

/// How long a pin lasts without a packet, in seconds: conntrack's defaults (Linux's
/// `nf_conntrack_*` sysctls; the namespace's values are not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinTimeouts {
    /// An open TCP connection (`nf_conntrack_tcp_timeout_established`: 5 days).
    pub tcp_established: u64,
    /// A TCP connection after its FIN or RST (`…_fin_wait`, `…_time_wait`: 120 s; the other
    /// closing states are shorter), and one seen only by its SYN so far (`…_syn_sent`: 120 s).
    pub tcp_short: u64,
    /// A UDP flow (`nf_conntrack_udp_timeout_stream`: 120 s).
    pub udp: u64,
}

pub const PIN_TIMEOUTS: PinTimeouts = PinTimeouts {
    tcp_established: 432_000,
    tcp_short: 120,
    udp: 120,
};

/// What the fast path holds for one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastVip {
    pub address: Ipv4Addr,
    pub pin: bool,
    pub mask: u32,
    /// Masked source value → member.
    pub elements: Vec<(u32, u32)>,
    /// Member → where its packets leave (members whose interface the verifier serves).
    pub hops: BTreeMap<u32, Hop>,
}

fn suffix(a: Ipv4Addr) -> String {
    let o = a.octets();
    format!("{}_{}_{}_{}", o[0], o[1], o[2], o[3])
}

/// The VIP's chain without pin (the version before named it `v_`, with pin too).
fn chain_name(v: &FastVip) -> String {
    format!("n_{}", suffix(v.address))
}

/// Pin mode's TCP chain (the version before named it `t_`, with a flow key of another type).
fn tcp_chain(v: &FastVip) -> String {
    format!("tcp_{}", suffix(v.address))
}

/// Pin mode's UDP chain (the version before: `u_`).
fn udp_chain(v: &FastVip) -> String {
    format!("udp_{}", suffix(v.address))
}

fn map_name(v: &FastVip) -> String {
    format!("vip_{}", suffix(v.address))
}

fn hop_map(v: &FastVip) -> String {
    format!("hop_{}", suffix(v.address))
}

fn pin_map(v: &FastVip) -> String {
    format!("pin_{}", suffix(v.address))
}

fn fin_map(v: &FastVip) -> String {
    format!("fin_{}", suffix(v.address))
}

/// UDP's flow table (TCP's are `pin_` and `fin_`): one table per protocol, so that the key
/// needs no protocol.
fn udp_map(v: &FastVip) -> String {
    format!("upin_{}", suffix(v.address))
}

/// A flow table's declaration up to its closing brace (elements go in between).
fn flow_map_head(name: &str) -> String {
    format!("\tmap {name} {{\n\t\t{FLOW_TYPE}\n\t\tsize {PIN_FLOWS}\n\t\tflags dynamic,timeout\n")
}

const FLOW_TYPE: &str = "typeof @nh,96,32 . @th,0,32 : meta mark";

/// The flow key of the pin tables: the source address (`@nh,96,32`, `ip saddr` loaded raw:
/// `ip saddr` costs each rule a check of the link-layer protocol, which the ingress rule made)
/// and the first 32 bits of the TCP or UDP header, its source and destination ports (`sport <<
/// 16 | dport`). Two loads, 8 bytes to hash: `meta l4proto . ip saddr . th sport . th dport`
/// took four loads and 16 bytes, and the protocol check, twice per packet (the lookup, then the
/// refresh). Each protocol has its own tables, so the protocol is not part of the key. `nft
/// list` shows both halves as hexadecimal numbers.
const FLOW: &str = "@nh,96,32 . @th,0,32";

/// TCP's flags byte (fin 0x01, syn 0x02, rst 0x04, ack 0x10), loaded raw: `tcp flags` would
/// check the protocol again (two more expressions per rule) in a chain only TCP reaches.
const FLAGS: &str = "@th,104,8";

/// The slice map's elements as text: `value : jump <hop>` without pin (values whose member has
/// no hop are left to the slow path), `value : <mark>` with pin.
fn slice_elements(v: &FastVip) -> BTreeMap<u32, String> {
    v.elements
        .iter()
        .filter_map(|&(value, m)| {
            let target = if v.pin {
                format!("{:#x}", mark_of(m)?)
            } else {
                format!("jump {}", v.hops.get(&m)?.chain())
            };
            Some((value, target))
        })
        .collect()
}

/// Pin mode's `mark : jump <hop>` elements.
fn hop_elements(v: &FastVip) -> BTreeMap<u32, String> {
    v.hops
        .iter()
        .filter_map(|(&m, h)| Some((mark_of(m)?, format!("jump {}", h.chain()))))
        .collect()
}

fn join(e: &BTreeMap<u32, String>, key: impl Fn(u32) -> String) -> String {
    e.iter()
        .map(|(k, t)| format!("{} : {t}", key(*k)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn addr(v: u32) -> String {
    Ipv4Addr::from(v).to_string()
}

fn mark(v: u32) -> String {
    format!("{v:#x}")
}

/// The VIP's own chains, by name (the ingress rule jumps to them for packets that may be
/// forwarded): `n_<vip>` without pin, `tcp_<vip>` and `udp_<vip>` with pin.
fn vip_chains(v: &FastVip) -> Vec<(String, Vec<String>)> {
    let mask = Ipv4Addr::from(v.mask);
    let map = map_name(v);
    if !v.pin {
        return vec![(
            chain_name(v),
            vec![format!("ip saddr & {mask} vmap @{map}")],
        )];
    }
    let (pin, fin, upin, hop) = (pin_map(v), fin_map(v), udp_map(v), hop_map(v));
    let PinTimeouts {
        tcp_established: open,
        tcp_short: short,
        udp,
    } = PIN_TIMEOUTS;
    let via = |set: &str, op: &str, secs: u64| {
        format!("{op} @{set} {{ {FLOW} timeout {secs}s : meta mark }} meta mark vmap @{hop}")
    };
    let pinned = |set: &str, op: &str, secs: u64| {
        format!("meta mark set {FLOW} map @{set} {}", via(set, op, secs))
    };
    let new = |set: &str, secs: u64| {
        format!(
            "meta mark set ip saddr & {mask} map @{map} {}",
            via(set, "add", secs)
        )
    };
    // `FLAGS & 0x7 == 0`: none of FIN, SYN, RST; `& 0x12 == 0x2`: SYN without ACK; `& 0x5 != 0`:
    // FIN or RST.
    let tcp = vec![
        // An open connection's packet (the common case): one lookup, refreshed for days.
        format!("{FLAGS} & 0x7 == 0x0 {}", pinned(&pin, "update", open)),
        // A new connection forgets its tuple's old pins: it follows the map.
        format!("{FLAGS} & 0x12 == 0x2 delete @{pin} {{ {FLOW} : meta mark }}"),
        format!("{FLAGS} & 0x12 == 0x2 delete @{fin} {{ {FLOW} : meta mark }}"),
        // A FIN or RST: the pin moves to the closing table, which its last packets refresh.
        format!(
            "{FLAGS} & 0x5 != 0x0 meta mark set {FLOW} map @{pin} delete @{pin} {{ {FLOW} : meta mark }} {}",
            via(&fin, "add", short)
        ),
        pinned(&fin, "update", short),
        format!("{FLAGS} & 0x5 != 0x0 {}", new(&fin, short)),
        // A flow's first packet: short until its next one shows the connection open.
        new(&pin, short),
    ];
    let udp = vec![pinned(&upin, "update", udp), new(&upin, udp)];
    vec![(tcp_chain(v), tcp), (udp_chain(v), udp)]
}

/// The ingress chain's rule for `v`. With pin, the 32 bits at offset 6 of the IP header
/// (fragment offset and flags, TTL, protocol) masked to the fragment offset, the MF flag and the
/// protocol pick the protocol's chain in one lookup: only an unfragmented TCP or UDP packet
/// (offset 0 and MF clear: a pinned flow is keyed by its ports, so a fragment, which may have
/// none, takes the slow path, all of a datagram's fragments together, where conntrack
/// reassembles them) matches a key. Three expressions where `ip frag-off & 0x3fff == 0 meta
/// l4proto vmap { … }` took five. `nft list` (1.0.6) prints it as `ip protocol vmap { 6 : …,
/// 17 : … }`, without the fragment mask, which is still in the kernel's rule (`nft
/// --debug=netlink list chain` shows it).
fn ingress_rule(v: &FastVip) -> String {
    let to = if v.pin {
        format!(
            "{IP_6_32} & 0x3fff00ff vmap {{ 0x6 : goto {}, 0x11 : goto {} }}",
            tcp_chain(v),
            udp_chain(v)
        )
    } else {
        format!("goto {}", chain_name(v))
    };
    format!("ip daddr {} ip ttl > 1 {to}", v.address)
}

/// The IP header's 32 bits from offset 6: flags and fragment offset, TTL, protocol.
const IP_6_32: &str = "@nh,48,32";

/// Every hop chain, by name (a member's address names it; its interface may change).
fn hops_of(vips: &[FastVip]) -> BTreeMap<String, &Hop> {
    vips.iter()
        .flat_map(|v| v.hops.values().map(|h| (h.chain(), h)))
        .collect()
}

/// A hop's chain forwards, counted: the native plane's rule without its check of the arrival
/// interface (a unicast packet from the member's own link goes back out of it, as routing
/// would send it).
fn hop_rule(h: &Hop) -> String {
    let [_, fwd] = chain_rules(h);
    fwd
}

fn add_chain_rules(out: &mut String, h: &Hop) {
    let _ = writeln!(out, "add rule netdev {TABLE} {} {}", h.chain(), hop_rule(h));
}

/// The first line of [`ruleset`]'s text: how the executor knows a batch rewrites this table.
pub const REWRITE_HEAD: &str = "add table netdev manycast_vip\ndelete table netdev manycast_vip\n";

/// The whole table as one transaction (created if missing, deleted, written anew): used when
/// what the kernel holds is unknown (the first write, a failed one). It starts the flow tables
/// empty; [`keep_flow_tables`] makes it keep what the kernel's flow tables hold. `devices` are the
/// verifier's interfaces.
pub fn ruleset(devices: &[String], vips: &[FastVip]) -> String {
    let mut out = format!("{REWRITE_HEAD}table netdev {TABLE} {{\n");
    for h in hops_of(vips).values() {
        let _ = writeln!(out, "\tchain {} {{\n\t\t{}\n\t}}", h.chain(), hop_rule(h));
    }
    for v in vips {
        let elements = |e: &BTreeMap<u32, String>, key: &dyn Fn(u32) -> String| {
            if e.is_empty() {
                String::new()
            } else {
                format!("\t\telements = {{ {} }}\n", join(e, key))
            }
        };
        let kind = if v.pin { "mark" } else { "verdict" };
        let _ = write!(
            out,
            "\tmap {} {{\n\t\ttype ipv4_addr : {kind}\n{}\t}}\n",
            map_name(v),
            elements(&slice_elements(v), &addr)
        );
        if v.pin {
            let _ = write!(
                out,
                "\tmap {} {{\n\t\ttype mark : verdict\n\t\tsize {HOPS}\n{}\t}}\n",
                hop_map(v),
                elements(&hop_elements(v), &mark)
            );
            for name in [pin_map(v), fin_map(v), udp_map(v)] {
                let _ = writeln!(out, "{}\t}}", flow_map_head(&name));
            }
        }
        for (chain, rules) in vip_chains(v) {
            let _ = writeln!(out, "\tchain {chain} {{");
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
    for v in vips {
        let _ = writeln!(out, "\t\t{}", ingress_rule(v));
    }
    out.push_str("\t}\n}\n");
    out
}

/// `text` (holding a [`ruleset`]) made to rewrite the kernel's table without touching its flow
/// tables, when `chains` (`list chains netdev`: names only, no element is read) shows a table
/// this version wrote: `add table`, `flush table` (every rule; sets keep their elements), then
/// the maps other than the flow tables of VIPs still pinned, then every chain, are deleted by
/// name, and the table's body is declared anew (the kept flow tables' declarations are the same,
/// which the kernel accepts). One transaction, whatever the tables hold. `None` when there is
/// no such table (nothing to keep) or it holds a chain this version does not name (a table
/// written by an earlier version: `v_<vip>`, with and without pin, then `t_`/`u_` with flow
/// tables keyed by protocol too, which the kernel would not declare again with the new key):
/// the whole-table rewrite as it is, which starts the flow tables empty.
pub fn keep_flow_tables(text: &str, chains: &str) -> Option<String> {
    let names = table_chains(chains)?;
    let mut maps = Vec::new();
    for name in &names {
        if name == "ingress" || name.starts_with('m') || name.starts_with("udp_") {
            continue;
        }
        if let Some(x) = name.strip_prefix("n_") {
            maps.push(format!("vip_{x}"));
        } else if let Some(x) = name.strip_prefix("tcp_") {
            maps.extend([format!("vip_{x}"), format!("hop_{x}")]);
            if !text.contains(&format!("\tmap pin_{x} {{\n")) {
                maps.extend([format!("pin_{x}"), format!("fin_{x}"), format!("upin_{x}")]);
            }
        } else {
            return None;
        }
    }
    let mut head = format!("add table netdev {TABLE}\nflush table netdev {TABLE}\n");
    for m in maps {
        let _ = writeln!(head, "delete map netdev {TABLE} {m}");
    }
    for c in names {
        let _ = writeln!(head, "delete chain netdev {TABLE} {c}");
    }
    text.contains(REWRITE_HEAD)
        .then(|| text.replacen(REWRITE_HEAD, &head, 1))
}

/// The chains of this table in a `list chains` listing; `None` without the table.
fn table_chains(listing: &str) -> Option<Vec<String>> {
    let start = format!("table netdev {TABLE} {{");
    let mut lines = listing.lines().skip_while(|l| *l != start);
    lines.next()?;
    Some(
        lines
            .take_while(|l| *l != "}")
            .filter_map(|l| l.trim().strip_prefix("chain ")?.strip_suffix(" {"))
            .map(str::to_owned)
            .collect(),
    )
}

/// Whether the kernel's table can go from `from` to `to` in place: the same VIPs in the same
/// order with the same pin setting (masks may differ: the VIP's chain is rewritten).
pub fn same_shape(from: &[FastVip], to: &[FastVip]) -> bool {
    from.len() == to.len()
        && from
            .iter()
            .zip(to)
            .all(|(a, b)| a.address == b.address && a.pin == b.pin)
}

/// Deletes then adds the elements of `map` that differ between `old` and `new`.
fn map_diff(
    out: &mut String,
    adds: &mut String,
    map: &str,
    old: &BTreeMap<u32, String>,
    new: &BTreeMap<u32, String>,
    key: impl Fn(u32) -> String,
) {
    element_moves(
        (out, adds),
        (&format!("netdev {TABLE}"), map),
        old,
        new,
        &key,
        |k, t| Some(format!("{} : {t}", key(k))),
    );
}

/// The commands that take the table from `from` to `to` of the same shape ([`same_shape`]):
/// new hop chains, each map's moved elements (deleted, then added), a VIP chain whose mask
/// changed rewritten in place, then the hop chains nothing points at any more. The flow tables
/// are never touched: pinned flows keep their member. Empty when nothing moved.
pub fn updates(from: &[FastVip], to: &[FastVip]) -> String {
    let (old_hops, new_hops) = (hops_of(from), hops_of(to));
    let mut out = String::new();
    for (name, h) in &new_hops {
        match old_hops.get(name) {
            None => {
                let _ = writeln!(out, "add chain netdev {TABLE} {name}");
            }
            Some(old) if old != h => {
                let _ = writeln!(out, "flush chain netdev {TABLE} {name}");
            }
            Some(_) => continue,
        }
        add_chain_rules(&mut out, h);
    }
    let mut adds = String::new();
    for (a, b) in from.iter().zip(to) {
        map_diff(
            &mut out,
            &mut adds,
            &map_name(b),
            &slice_elements(a),
            &slice_elements(b),
            addr,
        );
        if b.pin {
            map_diff(
                &mut out,
                &mut adds,
                &hop_map(b),
                &hop_elements(a),
                &hop_elements(b),
                mark,
            );
        }
        if a.mask != b.mask {
            for (chain, rules) in vip_chains(b) {
                let _ = writeln!(adds, "flush chain netdev {TABLE} {chain}");
                for r in rules {
                    let _ = writeln!(adds, "add rule netdev {TABLE} {chain} {r}");
                }
            }
        }
    }
    out.push_str(&adds);
    for name in old_hops.keys().filter(|n| !new_hops.contains_key(*n)) {
        let _ = writeln!(out, "delete chain netdev {TABLE} {name}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(m: u32, dev: &str) -> Hop {
        Hop {
            member: m,
            via: Ipv4Addr::new(10, 0, m as u8, 2),
            device: dev.into(),
        }
    }

    fn vip(pin: bool, mask: u32, elements: &[(u32, u32)], hops: &[(u32, &str)]) -> FastVip {
        FastVip {
            address: Ipv4Addr::new(10, 200, 0, 1),
            pin,
            mask,
            elements: elements.to_vec(),
            hops: hops.iter().map(|&(m, d)| (m, hop(m, d))).collect(),
        }
    }

    #[test]
    fn without_pin_one_verdict_map_forwards_at_ingress() {
        // Member 3's interface is not served: its value is left to the slow path.
        let v = vip(false, 3, &[(0, 1), (1, 2), (2, 3)], &[(1, "s1"), (2, "s2")]);
        let text = ruleset(&["c0".into(), "s1".into(), "s2".into()], &[v]);
        assert_eq!(
            text,
            "add table netdev manycast_vip\n\
             delete table netdev manycast_vip\n\
             table netdev manycast_vip {\n\
             \tchain m1_10_0_1_2 {\n\t\tcounter fwd ip to 10.0.1.2 device \"s1\"\n\t}\n\
             \tchain m2_10_0_2_2 {\n\t\tcounter fwd ip to 10.0.2.2 device \"s2\"\n\t}\n\
             \tmap vip_10_200_0_1 {\n\t\ttype ipv4_addr : verdict\n\
             \t\telements = { 0.0.0.0 : jump m1_10_0_1_2, 0.0.0.1 : jump m2_10_0_2_2 }\n\t}\n\
             \tchain n_10_200_0_1 {\n\t\tip saddr & 0.0.0.3 vmap @vip_10_200_0_1\n\t}\n\
             \tchain ingress {\n\
             \t\ttype filter hook ingress devices = { \"c0\", \"s1\", \"s2\" } priority -10; policy accept;\n\
             \t\tip daddr 10.200.0.1 ip ttl > 1 goto n_10_200_0_1\n\
             \t}\n}\n"
        );
        assert!(!text.contains("mark"), "no mark without pin: {text}");
    }

    /// Issue 16, item 5: pins time out like conntrack's entries: an open TCP connection's
    /// after 5 days idle (`timeout 432000s` on every packet without SYN, FIN or RST); a FIN or
    /// RST does not delete the pin but moves it to the closing table with 120 s, whose later
    /// packets (the last ACKs) refresh it there with 120 s, never back to 5 days; a SYN starts
    /// afresh with 120 s; UDP with 120 s, in a table of its own.
    #[test]
    fn with_pin_flow_tables_time_out_like_conntrack_and_a_fin_shortens_the_pin() {
        let v = vip(true, 1, &[(0, 1), (1, 2)], &[(1, "s1"), (2, "s2")]);
        let text = ruleset(&["c0".into()], &[v]);
        const F: &str = "@nh,96,32 . @th,0,32";
        let table = |name: &str| {
            format!("\tmap {name} {{\n\t\ttypeof @nh,96,32 . @th,0,32 : meta mark\n\t\tsize 262144\n\t\tflags dynamic,timeout\n\t}}\n")
        };
        for want in [
            "\tmap vip_10_200_0_1 {\n\t\ttype ipv4_addr : mark\n\t\telements = { 0.0.0.0 : 0x4d430001, 0.0.0.1 : 0x4d430002 }\n\t}\n".to_owned(),
            "\tmap hop_10_200_0_1 {\n\t\ttype mark : verdict\n\t\tsize 65536\n\t\telements = { 0x4d430001 : jump m1_10_0_1_2, 0x4d430002 : jump m2_10_0_2_2 }\n\t}\n".to_owned(),
            table("pin_10_200_0_1"),
            table("fin_10_200_0_1"),
            table("upin_10_200_0_1"),
            format!("\tchain tcp_10_200_0_1 {{\n\
             \t\t@th,104,8 & 0x7 == 0x0 meta mark set {F} map @pin_10_200_0_1 update @pin_10_200_0_1 {{ {F} timeout 432000s : meta mark }} meta mark vmap @hop_10_200_0_1\n\
             \t\t@th,104,8 & 0x12 == 0x2 delete @pin_10_200_0_1 {{ {F} : meta mark }}\n\
             \t\t@th,104,8 & 0x12 == 0x2 delete @fin_10_200_0_1 {{ {F} : meta mark }}\n\
             \t\t@th,104,8 & 0x5 != 0x0 meta mark set {F} map @pin_10_200_0_1 delete @pin_10_200_0_1 {{ {F} : meta mark }} add @fin_10_200_0_1 {{ {F} timeout 120s : meta mark }} meta mark vmap @hop_10_200_0_1\n\
             \t\tmeta mark set {F} map @fin_10_200_0_1 update @fin_10_200_0_1 {{ {F} timeout 120s : meta mark }} meta mark vmap @hop_10_200_0_1\n\
             \t\t@th,104,8 & 0x5 != 0x0 meta mark set ip saddr & 0.0.0.1 map @vip_10_200_0_1 add @fin_10_200_0_1 {{ {F} timeout 120s : meta mark }} meta mark vmap @hop_10_200_0_1\n\
             \t\tmeta mark set ip saddr & 0.0.0.1 map @vip_10_200_0_1 add @pin_10_200_0_1 {{ {F} timeout 120s : meta mark }} meta mark vmap @hop_10_200_0_1\n\t}}\n"),
            format!("\tchain udp_10_200_0_1 {{\n\
             \t\tmeta mark set {F} map @upin_10_200_0_1 update @upin_10_200_0_1 {{ {F} timeout 120s : meta mark }} meta mark vmap @hop_10_200_0_1\n\
             \t\tmeta mark set ip saddr & 0.0.0.1 map @vip_10_200_0_1 add @upin_10_200_0_1 {{ {F} timeout 120s : meta mark }} meta mark vmap @hop_10_200_0_1\n\t}}\n"),
            "\t\tip daddr 10.200.0.1 ip ttl > 1 @nh,48,32 & 0x3fff00ff vmap { 0x6 : goto tcp_10_200_0_1, 0x11 : goto udp_10_200_0_1 }\n\t}\n".to_owned(),
        ] {
            assert!(text.contains(&want), "{want}\nnot in\n{text}");
        }
        // No packet deletes a pin outright but a new connection's SYN; no default timeout.
        let deletes: Vec<&str> = text.lines().filter(|l| l.contains("delete @")).collect();
        assert_eq!(deletes.len(), 3, "{deletes:?}");
        assert!(
            deletes.iter().all(|l| l.contains("@th,104,8 & 0x12 == 0x2 delete")
                || l.contains("delete @pin_10_200_0_1 { @nh,96,32 . @th,0,32 : meta mark } add @fin_10_200_0_1")),
            "{deletes:?}"
        );
        assert!(!text.contains("\t\ttimeout"), "{text}");
    }

    /// Issue 16, item 5 (the pinned path at the cost of the unpinned one): a pinned flow's
    /// packet costs two hash operations on its flow table (the lookup, then the refresh), and
    /// each builds its key from two loads (the source address and the 32 bits of both ports),
    /// with no protocol in it (each protocol has its tables) and no check a chain's position
    /// already made (the link-layer protocol, the IP protocol in the TCP chain: the fields are
    /// loaded raw).
    #[test]
    fn a_pinned_packet_loads_its_flow_key_from_two_fields_and_checks_nothing_twice() {
        let v = vip(true, 1, &[(0, 1), (1, 2)], &[(1, "s1"), (2, "s2")]);
        let text = ruleset(&["c0".into()], &[v]);
        let first = |chain: &str| {
            let head = format!("\tchain {chain} {{\n\t\t");
            let at = text.find(&head).expect("the chain") + head.len();
            text[at..].lines().next().expect("a rule").to_owned()
        };
        for chain in ["tcp_10_200_0_1", "udp_10_200_0_1"] {
            let hot = first(chain);
            // No `ip …` (which checks the link-layer protocol again), no second protocol check.
            for gone in [
                "l4proto",
                "th sport",
                "th dport",
                "tcp flags",
                "udp ",
                "ip ",
            ] {
                assert!(!hot.contains(gone), "{gone} in {hot}");
            }
            assert_eq!(hot.matches("@nh,96,32 . @th,0,32 ").count(), 2, "{hot}");
            assert_eq!(hot.matches(" map @").count(), 1, "{hot}");
            assert_eq!(hot.matches("update @").count(), 1, "{hot}");
        }
        // The ingress rule checks fragment and protocol and picks the chain in one lookup, in a
        // fixed hash (4-byte key); the hop map, looked up by every pinned packet, is one too.
        assert!(
            text.contains("@nh,48,32 & 0x3fff00ff vmap { 0x6 : goto tcp_10_200_0_1, 0x11 : goto udp_10_200_0_1 }\n"),
            "{text}"
        );
        assert!(!text.contains("l4proto"), "{text}");
        assert!(
            text.contains("\t\ttype mark : verdict\n\t\tsize 65536\n"),
            "{text}"
        );
        assert!(first("udp_10_200_0_1").contains("@upin_10_200_0_1 "));
        assert!(first("tcp_10_200_0_1").contains("@pin_10_200_0_1 "));
    }

    /// Issue 16, item 5: a whole-table rewrite (a verifier restart, a write after a failed
    /// one) keeps the pins the kernel's flow tables hold: everything else is deleted by name
    /// (the rules by `flush table`, which leaves sets' elements), in the same transaction as
    /// the new table; the flow tables of a VIP no longer pinned go; a table of unknown layout
    /// is replaced whole.
    #[test]
    fn a_rewrite_keeps_the_flow_tables_the_kernel_holds() {
        let v = vip(true, 1, &[(0, 2), (1, 1)], &[(1, "s1"), (2, "s2")]);
        let text = format!(
            "add table ip manycast_verifier\n{}",
            ruleset(&["c0".into()], &[v])
        );
        let chains = "table netdev manycast_native {
\tchain m1_10_0_1_2 {
\t}
}
table netdev manycast_vip {
\tchain m1_10_0_1_2 {
\t}
\tchain tcp_10_200_0_1 {
\t}
\tchain udp_10_200_0_1 {
\t}
\tchain n_10_200_0_2 {
\t}
\tchain tcp_10_200_0_3 {
\t}
\tchain ingress {
\t\ttype filter hook ingress devices = { \"c0\", \"s1\" } priority filter - 10; policy accept;
\t}
}
";
        let kept = keep_flow_tables(&text, chains).expect("a table this version wrote");
        assert_eq!(
            kept,
            text.replacen(
                REWRITE_HEAD,
                "add table netdev manycast_vip\n\
                 flush table netdev manycast_vip\n\
                 delete map netdev manycast_vip vip_10_200_0_1\n\
                 delete map netdev manycast_vip hop_10_200_0_1\n\
                 delete map netdev manycast_vip vip_10_200_0_2\n\
                 delete map netdev manycast_vip vip_10_200_0_3\n\
                 delete map netdev manycast_vip hop_10_200_0_3\n\
                 delete map netdev manycast_vip pin_10_200_0_3\n\
                 delete map netdev manycast_vip fin_10_200_0_3\n\
                 delete map netdev manycast_vip upin_10_200_0_3\n\
                 delete chain netdev manycast_vip m1_10_0_1_2\n\
                 delete chain netdev manycast_vip tcp_10_200_0_1\n\
                 delete chain netdev manycast_vip udp_10_200_0_1\n\
                 delete chain netdev manycast_vip n_10_200_0_2\n\
                 delete chain netdev manycast_vip tcp_10_200_0_3\n\
                 delete chain netdev manycast_vip ingress\n",
                1
            )
        );
        assert!(!kept.contains("delete table netdev manycast_vip"));
        assert!(
            !kept.contains("pin_10_200_0_1\n")
                || !kept.contains("delete map netdev manycast_vip pin_10_200_0_1")
        );
        assert!(
            kept.contains("\tmap pin_10_200_0_1 {\n"),
            "declared as it is"
        );
        // No table: nothing to keep. The version before's layout: replaced whole.
        assert_eq!(
            keep_flow_tables(&text, "table netdev manycast_native {\n}\n"),
            None
        );
        assert_eq!(keep_flow_tables(&text, ""), None);
        let old = "table netdev manycast_vip {\n\tchain v_10_200_0_1 {\n\t}\n}\n";
        assert_eq!(keep_flow_tables(&text, old), None);
        // The layout before (chains `t_`/`u_`, flow tables keyed by protocol too, which the
        // kernel would refuse to declare again with the new key): replaced whole.
        let old = "table netdev manycast_vip {\n\tchain t_10_200_0_1 {\n\t}\n\tchain u_10_200_0_1 {\n\t}\n}\n";
        assert_eq!(keep_flow_tables(&text, old), None);
    }

    /// Issue 16, items 3 and 5: a re-point moves map elements only; a member with a new hop
    /// gets its chain first and the unused chain goes last; a new mask rewrites the VIP's chain
    /// in place; the flow table is never deleted, flushed or rewritten.
    #[test]
    fn updates_move_elements_and_keep_the_flow_table() {
        let a = vip(true, 1, &[(0, 1), (1, 2)], &[(1, "s1"), (2, "s2")]);
        assert_eq!(
            updates(std::slice::from_ref(&a), std::slice::from_ref(&a)),
            ""
        );
        let b = vip(true, 1, &[(0, 1), (1, 1)], &[(1, "s1"), (2, "s2")]);
        assert_eq!(
            updates(std::slice::from_ref(&a), std::slice::from_ref(&b)),
            "delete element netdev manycast_vip vip_10_200_0_1 { 0.0.0.1 }\n\
             add element netdev manycast_vip vip_10_200_0_1 { 0.0.0.1 : 0x4d430001 }\n"
        );
        // Member 2 gone (its route lingers in the planner, not here: no hop), member 3 new.
        let c = vip(
            true,
            3,
            &[(0, 1), (1, 3), (2, 1), (3, 3)],
            &[(1, "s1"), (3, "s3")],
        );
        let text = updates(&[b], &[c]);
        assert!(
            text.starts_with(
                "add chain netdev manycast_vip m3_10_0_3_2\n\
             add rule netdev manycast_vip m3_10_0_3_2 counter fwd ip to 10.0.3.2 device \"s3\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("flush chain netdev manycast_vip tcp_10_200_0_1\n"));
        assert!(text.contains("flush chain netdev manycast_vip udp_10_200_0_1\n"));
        assert!(text.contains(
            "add rule netdev manycast_vip tcp_10_200_0_1 meta mark set ip saddr & 0.0.0.3 map"
        ));
        assert!(text.contains(
            "add rule netdev manycast_vip udp_10_200_0_1 meta mark set ip saddr & 0.0.0.3 map"
        ));
        assert!(
            text.ends_with("delete chain netdev manycast_vip m2_10_0_2_2\n"),
            "{text}"
        );
        let deleted = text.find("delete element netdev manycast_vip hop_10_200_0_1 { 0x4d430002 }");
        assert!(
            deleted.is_some_and(|i| i < text.find("delete chain").unwrap()),
            "{text}"
        );
        assert!(
            text.lines().all(|l| !l.contains("map netdev")
                && !l.contains("table netdev")
                && !l.contains("element netdev manycast_vip pin_")
                && !l.contains("element netdev manycast_vip fin_")
                && !l.contains("element netdev manycast_vip upin_")),
            "{text}"
        );
        // Without pin the verdict map's elements follow a member's hop; a member heard on
        // another interface from the same address keeps its chain, rewritten in place.
        let d = vip(false, 1, &[(0, 1), (1, 2)], &[(1, "s1"), (2, "s2")]);
        let mut e = d.clone();
        e.hops.insert(2, hop(2, "s1"));
        assert_eq!(
            updates(std::slice::from_ref(&d), std::slice::from_ref(&e)),
            "flush chain netdev manycast_vip m2_10_0_2_2\n\
             add rule netdev manycast_vip m2_10_0_2_2 counter fwd ip to 10.0.2.2 device \"s1\"\n"
        );
        e.hops.get_mut(&2).expect("member 2").via = Ipv4Addr::new(10, 0, 9, 2);
        assert_eq!(
            updates(std::slice::from_ref(&d), &[e]),
            "add chain netdev manycast_vip m2_10_0_9_2\n\
             add rule netdev manycast_vip m2_10_0_9_2 counter fwd ip to 10.0.9.2 device \"s1\"\n\
             delete element netdev manycast_vip vip_10_200_0_1 { 0.0.0.1 }\n\
             add element netdev manycast_vip vip_10_200_0_1 { 0.0.0.1 : jump m2_10_0_9_2 }\n\
             delete chain netdev manycast_vip m2_10_0_2_2\n"
        );
        assert!(!same_shape(std::slice::from_ref(&d), &[a]));
        assert!(same_shape(
            std::slice::from_ref(&d),
            std::slice::from_ref(&d)
        ));
    }
}
