//! VIP mode, forward strategy (SPEC.md §11.7.1): the new owner of a slice passes the mid-stream
//! TCP segments of connections it never saw to the slice's old owner over a VXLAN overlay, and
//! the old owner serves each connection to its end; new connections stay with the new owner.
//!
//! [`ForwardTable`] is the pure decision (which allocation unit goes to which old owner, for how
//! long); [`ruleset`] and [`map_update`] render it for nftables. Sans-IO: the node keeps the
//! table, `vip_forwarder::Forwarder` applies its plan with `nft`, `ip` and `bridge`, and the
//! device, sysctls and rule move are `vip::HostSetup`'s.

use igmp_ext::{Instant, MemberId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The VXLAN device between the members.
pub const DEVICE: &str = "mcfwd0";
/// The nftables table (family `ip`) holding the marking map.
pub const NFT_TABLE: &str = "manycast_vip_forward";
/// Preference of the `fwmark → table` rules; below [`LOCAL_PREF`], where the `local` rule
/// moves: otherwise the VIP's local route matches first and the new owner answers RST.
pub const RULE_PREF: u32 = 50;
pub const LOCAL_PREF: u32 = 100;
/// Marks and routing tables are this base plus the old owner's member id (below 2^16: the
/// overlay is at least a /16). "MC" in ASCII, to be recognisable in `ip rule`.
const MARK_BASE: u32 = 0x4d43_0000;

/// The packet mark, and the routing table, that send segments to old owner `m`.
pub fn mark_of(m: MemberId) -> u32 {
    MARK_BASE | (m.0 & 0xffff)
}

/// An allocation unit forwarded to its old owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    to: MemberId,
    /// The epoch of the move: a later move of the unit from the same member starts a new linger.
    epoch: u64,
    since: Instant,
    /// False once ended (old owner gone, linger passed): kept so that the same gain, which the
    /// service reports until the unit moves again, does not start it over.
    active: bool,
}

/// Which units' orphan segments go to which old owner (sans-IO). Entries come from the units the
/// service knows this member gained from another member ([`crate::service::Service::gains_from_members`]),
/// stay across a brief loss of the unit (a flapping allocation), and end when the old owner
/// leaves, has been unlisted for `grace`, or `linger` after the move.
#[derive(Debug, Clone)]
pub struct ForwardTable {
    linger: Duration,
    grace: Duration,
    entries: BTreeMap<u32, Entry>,
    unlisted: BTreeMap<MemberId, Instant>,
}

impl ForwardTable {
    pub fn new(linger: Duration, grace: Duration) -> ForwardTable {
        ForwardTable {
            linger,
            grace,
            entries: BTreeMap::new(),
            unlisted: BTreeMap::new(),
        }
    }

    /// Units gained from a known member: (unit, old owner, epoch of the move).
    pub fn note_gains(
        &mut self,
        now: Instant,
        gains: impl IntoIterator<Item = (u32, MemberId, u64)>,
    ) {
        for (unit, to, epoch) in gains {
            match self.entries.get(&unit) {
                Some(e) if e.to == to && e.epoch >= epoch => {}
                _ => {
                    self.entries.insert(
                        unit,
                        Entry {
                            to,
                            epoch,
                            since: now,
                            active: true,
                        },
                    );
                }
            }
        }
    }

    /// The members a commit lists: an old owner missing from it is dropped `grace` later unless
    /// listed again (this machine's failure detector sometimes declares a live member down).
    pub fn note_members(&mut self, now: Instant, listed: &[MemberId]) {
        let owners: BTreeSet<MemberId> = self
            .entries
            .values()
            .filter(|e| e.active)
            .map(|e| e.to)
            .collect();
        self.unlisted.retain(|m, _| owners.contains(m));
        for m in owners {
            if listed.contains(&m) {
                self.unlisted.remove(&m);
            } else {
                self.unlisted.entry(m).or_insert(now);
            }
        }
    }

    /// A member left the cluster (signed leave): it serves nothing any more.
    pub fn member_left(&mut self, m: MemberId) {
        for e in self.entries.values_mut().filter(|e| e.to == m) {
            e.active = false;
        }
        self.unlisted.remove(&m);
    }

    /// Ends the entries past their linger or whose old owner is gone; true if any ended.
    pub fn expire(&mut self, now: Instant) -> bool {
        let (linger, grace) = (self.linger, self.grace);
        let unlisted = &self.unlisted;
        let mut ended = false;
        for e in self.entries.values_mut().filter(|e| e.active) {
            let gone = unlisted
                .get(&e.to)
                .is_some_and(|t| now >= t.saturating_add(grace));
            if gone || now >= e.since.saturating_add(linger) {
                e.active = false;
                ended = true;
            }
        }
        ended
    }

    /// Unit → old owner, as the kernel should have it.
    pub fn plan(&self) -> BTreeMap<u32, MemberId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.active)
            .map(|(&u, e)| (u, e.to))
            .collect()
    }
}

/// The table, created empty at start. `ct state invalid` needs `nf_conntrack_tcp_loose = 0`:
/// then a mid-stream segment of a connection this host never saw is invalid, while a SYN
/// (`ct state new`) and the segments of this host's own connections are not. The mark is looked
/// up by the source's unit (`ip saddr & mask`, low-order slicing, SPEC.md §6); a unit not in the
/// map leaves the segment unmarked (local delivery). Any TCP port: the application is whatever
/// listens on the VIP.
///
/// The overlay guard: VXLAN (UDP `port`) is accepted only from the members' underlay addresses
/// in `@vxlan_peers` ([`peers_update`]); anything else is dropped and counted before the VXLAN
/// device sees it, so an off-member host cannot put frames on the overlay (issue 13, item 15).
pub fn ruleset(vip: Ipv4Addr, unit_mask: u32, port: u16) -> String {
    let mask = Ipv4Addr::from(unit_mask);
    format!(
        "add table ip {NFT_TABLE}\n\
         delete table ip {NFT_TABLE}\n\
         table ip {NFT_TABLE} {{\n\
         \tmap owner {{\n\t\ttype ipv4_addr : mark\n\t}}\n\
         \tset {PEER_SET} {{\n\t\ttype ipv4_addr\n\t}}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tip daddr {vip} meta l4proto tcp ct state invalid meta mark set ip saddr & {mask} map @owner\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tudp dport {port} ip saddr != @{PEER_SET} counter drop\n\
         \t}}\n\
         }}\n"
    )
}

/// The set of addresses VXLAN is accepted from.
const PEER_SET: &str = "vxlan_peers";

/// One transaction that replaces the overlay guard's peer addresses with `peers`.
pub fn peers_update(peers: impl IntoIterator<Item = Ipv4Addr>) -> String {
    let mut out = format!("flush set ip {NFT_TABLE} {PEER_SET}\n");
    let addrs: Vec<String> = peers.into_iter().map(|a| a.to_string()).collect();
    if !addrs.is_empty() {
        let _ = writeln!(
            out,
            "add element ip {NFT_TABLE} {PEER_SET} {{ {} }}",
            addrs.join(", ")
        );
    }
    out
}

/// Member `m`'s MAC on the overlay: fixed, so that peers hold static FDB entries for it and
/// nothing is learned from the wire (locally administered, "MC", the member id's low 24 bits).
pub fn overlay_mac(m: MemberId) -> String {
    let [_, a, b, c] = m.0.to_be_bytes();
    format!("02:4d:43:{a:02x}:{b:02x}:{c:02x}")
}

/// One transaction that replaces the map's contents with `plan`.
pub fn map_update(plan: &BTreeMap<u32, MemberId>) -> String {
    let mut out = format!("flush map ip {NFT_TABLE} owner\n");
    if !plan.is_empty() {
        let elements: Vec<String> = plan
            .iter()
            .map(|(&u, &m)| format!("{} : {:#x}", Ipv4Addr::from(u), mark_of(m)))
            .collect();
        let _ = writeln!(
            out,
            "add element ip {NFT_TABLE} owner {{ {} }}",
            elements.join(", ")
        );
    }
    out
}

/// The nftables table (family `ip6`) of the IPv6 VIP's marking map (SPEC.md §11.7.2).
pub const NFT_TABLE6: &str = "manycast_vip_forward6";

/// Member `m`'s IPv6 address on the overlay, given explicitly (the device's own link-local
/// address depends on `addr_gen_mode`): fe80::4d43:0:0:<m>.
pub fn overlay6(m: MemberId) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0x4d43, 0, 0, (m.0 & 0xffff) as u16)
}

/// Unit `u` of the /56 site slicing with `bits` bits, the IPv6 counterpart of unit `u` of the
/// allocation (SPEC.md §6.2): (value, mask) as addresses.
fn site_unit(bits: u8, u: u32) -> Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)> {
    let units = igmp_ext::SliceSet6::site_slicing(bits);
    let s = units.get(usize::try_from(u).ok()?)?;
    Some((s.value().into(), s.mask().into()))
}

/// The `ip6` table that marks the IPv6 VIP's orphan segments by the source's site unit, as
/// [`ruleset`] does for the IPv4 VIP (the overlay guard there covers the device for both).
pub fn ruleset6(vip6: std::net::Ipv6Addr, bits: u8) -> String {
    let mask = site_unit(bits, 0).map_or(std::net::Ipv6Addr::UNSPECIFIED, |(_, m)| m);
    format!(
        "add table ip6 {NFT_TABLE6}\n\
         delete table ip6 {NFT_TABLE6}\n\
         table ip6 {NFT_TABLE6} {{\n\
         \tmap owner {{\n\t\ttype ipv6_addr : mark\n\t}}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tip6 daddr {vip6} meta l4proto tcp ct state invalid meta mark set ip6 saddr & {mask} map @owner\n\
         \t}}\n\
         }}\n"
    )
}

/// One transaction that replaces the IPv6 map's contents with `plan` (units of a slicing with
/// `bits` bits).
pub fn map_update6(plan: &BTreeMap<u32, MemberId>, bits: u8) -> String {
    let mut out = format!("flush map ip6 {NFT_TABLE6} owner\n");
    let elements: Vec<String> = plan
        .iter()
        .filter_map(|(&u, &m)| {
            let (value, _) = site_unit(bits, u)?;
            Some(format!("{value} : {:#x}", mark_of(m)))
        })
        .collect();
    if !elements.is_empty() {
        let _ = writeln!(
            out,
            "add element ip6 {NFT_TABLE6} owner {{ {} }}",
            elements.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_guard_takes_vxlan_only_from_peers() {
        let text = ruleset(Ipv4Addr::new(10, 200, 0, 1), 0xff, 4789);
        assert!(text.contains("udp dport 4789 ip saddr != @vxlan_peers counter drop"));
        assert_eq!(
            peers_update([Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 2, 2)]),
            "flush set ip manycast_vip_forward vxlan_peers\n\
             add element ip manycast_vip_forward vxlan_peers { 10.0.1.2, 10.0.2.2 }\n"
        );
        assert_eq!(
            peers_update([]),
            "flush set ip manycast_vip_forward vxlan_peers\n"
        );
        assert_eq!(overlay_mac(MemberId(0x0102_0304)), "02:4d:43:02:03:04");
    }

    const LINGER: Duration = Duration::from_secs(300);
    const GRACE: Duration = Duration::from_millis(500);

    fn t(ms: u64) -> Instant {
        Instant(ms)
    }

    #[test]
    fn gains_become_entries_until_the_linger_passes() {
        let mut f = ForwardTable::new(LINGER, GRACE);
        f.note_gains(t(1_000), [(5, MemberId(1), 3), (7, MemberId(1), 3)]);
        f.note_members(t(1_000), &[MemberId(1), MemberId(2)]);
        assert_eq!(
            f.plan(),
            BTreeMap::from([(5, MemberId(1)), (7, MemberId(1))])
        );
        // The same gain noted again at a later commit keeps its start.
        f.note_gains(t(200_000), [(5, MemberId(1), 3)]);
        assert!(!f.expire(t(300_999)));
        assert!(f.expire(t(301_000)));
        assert!(f.plan().is_empty());
        // The service reports the gain until the unit moves again: it does not start over.
        f.note_gains(t(302_000), [(5, MemberId(1), 3)]);
        assert!(f.plan().is_empty());
        // A later move of the unit does.
        f.note_gains(t(400_000), [(5, MemberId(1), 8)]);
        assert_eq!(f.plan(), BTreeMap::from([(5, MemberId(1))]));
    }

    #[test]
    fn a_new_move_restarts_the_linger_and_a_new_old_owner_replaces_the_old() {
        let mut f = ForwardTable::new(LINGER, GRACE);
        f.note_gains(t(0), [(5, MemberId(1), 3), (6, MemberId(1), 3)]);
        f.note_gains(t(100_000), [(5, MemberId(1), 9), (6, MemberId(3), 9)]);
        assert!(!f.expire(t(350_000)));
        assert_eq!(
            f.plan(),
            BTreeMap::from([(5, MemberId(1)), (6, MemberId(3))])
        );
    }

    #[test]
    fn entries_end_when_the_old_owner_leaves_or_stays_unlisted() {
        let mut f = ForwardTable::new(LINGER, GRACE);
        f.note_gains(t(0), [(1, MemberId(1), 2), (2, MemberId(3), 2)]);
        f.member_left(MemberId(1));
        assert_eq!(f.plan(), BTreeMap::from([(2, MemberId(3))]));
        f.note_gains(t(10), [(1, MemberId(1), 2)]);
        assert_eq!(
            f.plan(),
            BTreeMap::from([(2, MemberId(3))]),
            "left stays left"
        );
        // A false down shorter than the grace changes nothing.
        f.note_members(t(1_000), &[MemberId(2)]);
        f.note_members(t(1_300), &[MemberId(2), MemberId(3)]);
        assert!(!f.expire(t(2_000)));
        // Unlisted for longer: gone.
        f.note_members(t(3_000), &[MemberId(2)]);
        assert!(!f.expire(t(3_499)));
        assert!(f.expire(t(3_500)));
        assert!(f.plan().is_empty());
    }

    #[test]
    fn rendered_nft_text() {
        let r = ruleset(Ipv4Addr::new(10, 200, 0, 1), 0xff, 4789);
        assert!(r.contains(
            "ip daddr 10.200.0.1 meta l4proto tcp ct state invalid meta mark set ip saddr & 0.0.0.255 map @owner"
        ));
        assert!(r.starts_with(
            "add table ip manycast_vip_forward\ndelete table ip manycast_vip_forward\n"
        ));
        assert_eq!(
            map_update(&BTreeMap::from([(2, MemberId(1)), (130, MemberId(12))])),
            "flush map ip manycast_vip_forward owner\n\
             add element ip manycast_vip_forward owner { 0.0.0.2 : 0x4d430001, 0.0.0.130 : 0x4d43000c }\n"
        );
        assert_eq!(
            map_update(&BTreeMap::new()),
            "flush map ip manycast_vip_forward owner\n"
        );
    }

    /// The IPv6 VIP's marks: the source's /56 site unit (SPEC.md §6.2), the same unit numbers
    /// as the IPv4 map's.
    #[test]
    fn rendered_nft_text_for_the_ipv6_vip() {
        let r = ruleset6("2001:db8:f::1".parse().unwrap(), 8);
        assert!(r.contains(
            "ip6 daddr 2001:db8:f::1 meta l4proto tcp ct state invalid meta mark set ip6 saddr & 0:0:0:ff00:: map @owner"
        ), "{r}");
        assert!(r.starts_with(
            "add table ip6 manycast_vip_forward6\ndelete table ip6 manycast_vip_forward6\n"
        ));
        assert_eq!(
            map_update6(&BTreeMap::from([(2, MemberId(1)), (130, MemberId(12))]), 8),
            "flush map ip6 manycast_vip_forward6 owner\n\
             add element ip6 manycast_vip_forward6 owner { 0:0:0:200:: : 0x4d430001, 0:0:0:8200:: : 0x4d43000c }\n"
        );
        // Four bits: unit 5 is the /56s whose low nibble is 5.
        assert!(
            ruleset6("2001:db8:f::1".parse().unwrap(), 4).contains("ip6 saddr & 0:0:0:f00:: map")
        );
        assert!(map_update6(&BTreeMap::from([(5, MemberId(2))]), 4)
            .contains("0:0:0:500:: : 0x4d430002"));
        assert_eq!(overlay6(MemberId(3)).to_string(), "fe80::4d43:0:0:3");
    }
}
