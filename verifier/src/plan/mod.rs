//! Data-plane planning, pure: what the kernel should hold for the current ownership, listeners
//! and interfaces, as [`DataplaneOp`]s. One planner per data plane — MFC entries ([`mfc`]), the
//! nft netdev table ([`netdev`]), the VIP map and policy routes ([`vip`]) — behind one
//! [`Planner`] interface; beside them, the routed control groups' table ([`control`]). Nothing here touches the kernel: the executors in [`crate::sys`] apply
//! the ops, and report each outcome back.

pub mod control;
pub mod map;
pub mod mfc;
pub mod netdev;
pub mod netdev6;
pub mod vip;
pub mod vip6;
pub mod vip_netdev;

use crate::querier::Querier;
use igmp_ext::ownership::OwnershipTable;
use igmp_ext::{JoinVerifier, MemberId, Timestamp};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// `MAXVIFS`: the size of an MFC entry's TTL array.
pub const MAX_VIFS: usize = 32;

/// A set of VIF numbers (bit `n` is VIF `n`): the outgoing interfaces of one MFC entry.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VifSet(u32);

impl VifSet {
    pub const EMPTY: VifSet = VifSet(0);

    pub fn one(vif: u16) -> VifSet {
        VifSet::EMPTY.with(vif)
    }

    /// Adds `vif`; numbers at or past [`MAX_VIFS`] are ignored (the kernel has no such VIF).
    pub fn with(self, vif: u16) -> VifSet {
        match 1u32.checked_shl(u32::from(vif)) {
            Some(bit) if usize::from(vif) < MAX_VIFS => VifSet(self.0 | bit),
            _ => self,
        }
    }

    pub fn without(self, vif: u16) -> VifSet {
        VifSet(self.0 & !1u32.checked_shl(u32::from(vif)).unwrap_or(0))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, vif: u16) -> bool {
        usize::from(vif) < MAX_VIFS && self.0 & (1 << vif) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = u16> {
        (0..MAX_VIFS as u16).filter(move |&v| self.contains(v))
    }
}

impl FromIterator<u16> for VifSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        iter.into_iter().fold(VifSet::EMPTY, VifSet::with)
    }
}

impl core::fmt::Debug for VifSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl serde::Serialize for VifSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// One MFC entry: packets from `source` to `group` arriving on VIF `parent` go out of every VIF
/// in `oifs` (none: dropped in the kernel, and no more upcalls for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfcSpec {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub parent: u16,
    pub oifs: VifSet,
}

/// What happens to a source whose slice has no owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GapPolicy {
    /// Drop in the kernel (an MFC entry with no outgoing interface, no map value).
    #[default]
    Drop,
    /// Send to this member, if it holds any claim on the group.
    Fallback(MemberId),
}

/// Where a source's packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Target {
    Member {
        member: u32,
        ifindex: u32,
    },
    /// A plain group: every VIF where the querier has listeners for it.
    Listeners {
        vifs: VifSet,
    },
    Drop,
}

/// The target for `source` on `group`: its slice's owner, else the gap policy.
pub fn resolve(
    table: &OwnershipTable,
    gap: GapPolicy,
    group: Ipv4Addr,
    source: Ipv4Addr,
) -> Target {
    if let Some((m, claim)) = table.owner_of(group, source) {
        return Target::Member {
            member: m.0,
            ifindex: claim.ifindex,
        };
    }
    if let GapPolicy::Fallback(f) = gap {
        if let Some((m, claim)) = table.claims(group).find(|(m, _)| *m == f) {
            return Target::Member {
                member: m.0,
                ifindex: claim.ifindex,
            };
        }
    }
    Target::Drop
}

/// Interface index ↔ VIF number (on the nft data plane the numbers only index the interfaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VifTable {
    by_ifindex: BTreeMap<u32, u16>,
}

impl VifTable {
    pub fn insert(&mut self, ifindex: u32, vif: u16) {
        self.by_ifindex.insert(ifindex, vif);
    }
    pub fn vif_of(&self, ifindex: u32) -> Option<u16> {
        self.by_ifindex.get(&ifindex).copied()
    }
    pub fn ifindex_of(&self, vif: u16) -> Option<u32> {
        self.by_ifindex
            .iter()
            .find(|(_, &v)| v == vif)
            .map(|(&i, _)| i)
    }
    pub fn iter(&self) -> impl Iterator<Item = (u32, u16)> + '_ {
        self.by_ifindex.iter().map(|(&i, &v)| (i, v))
    }
    /// The lowest VIF number not in use.
    pub fn free_vif(&self) -> Option<u16> {
        (0..MAX_VIFS as u16).find(|v| self.ifindex_of(*v).is_none())
    }
}

/// One interface the verifier serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// Its first IPv4 address: the source of our queries.
    pub addr: Ipv4Addr,
    pub vif: u16,
}

/// What the planners plan from: ownership, listeners, interfaces and policy.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub verifier: &'a JoinVerifier,
    pub querier: &'a Querier,
    pub interfaces: &'a [Interface],
    pub vifs: &'a VifTable,
    /// While the router has found members dead (SPEC.md §5.5): the ownership the data plane
    /// follows, with their units given to their standbys.
    pub failover: Option<&'a OwnershipTable>,
    pub gap: GapPolicy,
    /// Route plain (unprotected) groups toward their listeners (`native.route_plain_groups`).
    pub route_plain: bool,
}

impl View<'_> {
    /// The ownership the data plane follows: the verified table, or its failover view.
    pub fn ownership(&self) -> &OwnershipTable {
        self.failover.unwrap_or_else(|| self.verifier.ownership())
    }

    /// Where (group, source) goes, for every data plane: a protected group's source to its
    /// slice's owner (or the gap policy); a plain group's to every interface with listeners for
    /// it when plain groups are routed, else nowhere.
    pub fn target(&self, group: Ipv4Addr, source: Ipv4Addr) -> Target {
        if self.verifier.is_protected(group) {
            return resolve(self.ownership(), self.gap, group, source);
        }
        if !self.route_plain {
            return Target::Drop;
        }
        Target::Listeners {
            vifs: self
                .querier
                .listening_interfaces(group)
                .filter_map(|i| self.vifs.vif_of(i))
                .collect(),
        }
    }

    /// The name of a served interface.
    pub fn device_of(&self, ifindex: u32) -> Option<String> {
        self.interfaces
            .iter()
            .find(|i| i.ifindex == ifindex)
            .map(|i| i.name.clone())
    }
}

/// What changed since the planners last planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The owners of this group (every group: `None`) may have changed.
    Ownership(Option<Ipv4Addr>),
    /// Listeners for this group came or went on some interface.
    Listeners(Ipv4Addr),
    /// The restart grace ended: what was adopted from an earlier verifier follows the rebuilt
    /// ownership from now on.
    Settle,
    /// A second passed: a write that failed is tried again.
    Retry,
}

/// One nft transaction for one of the nft data planes' tables (`nft -f` text).
///
/// Most ownership changes move map elements only: the batch deletes and adds just those, and
/// the table's counters carry on. When the table's shape changes (interfaces, groups, a map's
/// mask) or what the kernel holds is unknown (the first write, a failed one, an adopted table),
/// the batch deletes and recreates the whole table (`rewrite`), which starts its counters at
/// zero: the executor reads them first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftBatch {
    pub text: String,
    pub rewrite: bool,
}

impl NftBatch {
    pub fn rewrite(text: String) -> Self {
        NftBatch {
            text,
            rewrite: true,
        }
    }

    pub fn elements(text: String) -> Self {
        NftBatch {
            text,
            rewrite: false,
        }
    }
}

/// The text, so that tests and logs read a batch like the ruleset it is.
impl core::ops::Deref for NftBatch {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl core::fmt::Display for NftBatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.text)
    }
}

/// One VIP route: `vip/32 via <via>` in table `table` (the member's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRoute {
    pub vip: Ipv4Addr,
    pub via: Ipv4Addr,
    pub table: u32,
}

/// One policy rule: `fwmark <mark> lookup <table>` at `priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRule {
    pub mark: u32,
    pub table: u32,
    pub priority: u32,
}

/// One VIP change, applied in this order so that the map never points at a missing route:
/// routes and rules first, then the table in one transaction, then what is stale. A failure
/// of the first three steps stops the change (and the table stays as it was).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VipChange {
    /// The group whose ownership changed (for logs: the table holds every VIP).
    pub group: Option<Ipv4Addr>,
    pub routes: Vec<VipRoute>,
    pub rules: Vec<VipRule>,
    /// The table: its map's moved elements, or the whole table when its shape changed.
    pub ruleset: NftBatch,
    pub stale_routes: Vec<VipRoute>,
    pub stale_rules: Vec<VipRule>,
    /// The fast path's whole state (every VIP, with pin or not) and the interfaces it serves:
    /// what the pin mode's tc program is given (`sys::bpf`), empty without served interfaces.
    pub fast: Vec<vip_netdev::FastVip>,
    pub devices: Vec<String>,
}

/// A change to make in the kernel, for any data plane. The executors (`crate::sys`) apply them
/// in order and report each outcome to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataplaneOp {
    /// Add or replace an (S,G) entry (MRT_ADD_MFC replaces an entry with the same (S,G)).
    MfcInstall(MfcSpec),
    MfcRemove(MfcSpec),
    /// Read the packet counters of these (group, source) entries (the idle sweep); the answer
    /// goes to `Router::handle_mfc_counters`.
    MfcProbe(Vec<(Ipv4Addr, Ipv4Addr)>),
    /// Remove every entry in the kernel whose parent is one of these VIFs (adopted from an
    /// earlier verifier; shutdown).
    MfcRemoveLeftovers {
        parents: Vec<u16>,
    },
    /// Remove a VIF (shutdown).
    DelVif(u16),
    /// Stop multicast routing (MRT_DONE; shutdown).
    MrtDone,
    /// Bring the native nft table in line: its moved map elements, or the whole table, in one
    /// transaction.
    NetdevTable(NftBatch),
    DeleteNetdevTable,
    /// Bring the IPv6 native nft table ([`netdev6`]) in line: the whole table in one
    /// transaction.
    Netdev6Table(NftBatch),
    /// Remove the IPv6 native table (shutdown).
    DeleteNetdev6Table,
    /// Bring the IPv6 VIPs' table ([`vip6`]) in line: its moved map elements, or the whole
    /// table keeping its flow tables, in one transaction; and the tc program's IPv6 maps.
    Vip6Table(vip6::Vip6Write),
    /// Remove the IPv6 VIPs' table (shutdown).
    DeleteVip6Table,
    /// Turn IFF_ALLMULTI on or off.
    SetAllmulti {
        ifname: String,
        on: bool,
    },
    /// Bring the VIP steering in line (one nft transaction).
    Vip(VipChange),
    /// The next `ops` ops are one ownership change (every data plane's share of it): the
    /// executor times them together, the cost of one re-point (`repoint_us` in status). Changes
    /// nothing in the kernel.
    Repoint {
        ops: usize,
    },
    /// Hold (`on`) or remove the route `vip`/32 (`/128` for an IPv6 VIP) through the announce device, with route
    /// protocol `protocol`, in the main table, for a routing daemon to announce (SPEC.md
    /// §10.6). Removing a route that is not there succeeds.
    Announce {
        vip: IpAddr,
        on: bool,
        protocol: u8,
    },
    /// Remove the VIP tables (both paths'), then these routes and rules (shutdown).
    VipRemove {
        routes: Vec<VipRoute>,
        rules: Vec<VipRule>,
    },
    /// Bring the routed control groups' table in line ([`control`]): its moved elements, or
    /// the whole table, in one transaction.
    ControlTable(NftBatch),
    /// Remove the control groups' table (shutdown).
    DeleteControlTable,
}

/// Why a plan could not be made; the kernel is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A member's slices would need a map wider than we write together with the others': its
    /// claim is left out of the map (the rest is written; the claim stays verified).
    #[error(
        "member {member}'s slices need {bits} address bits with the others'; \
         left out of the map (up to {max})"
    )]
    ClaimLeftOut { member: u32, bits: u32, max: u32 },
}

/// A group whose plan failed, or was made without a claim it cannot express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFailure {
    pub group: Ipv4Addr,
    pub error: PlanError,
}

/// The one interface of the three data planes.
pub trait Planner {
    /// Brings the plan in line with `change`, pushing the kernel ops it needs to `out`; returns
    /// the groups whose plan failed (their kernel state is left as it was) or left a claim out
    /// (the rest of the plan is applied).
    fn plan(
        &mut self,
        now: Timestamp,
        view: &View<'_>,
        change: Change,
        out: &mut Vec<DataplaneOp>,
    ) -> Vec<PlanFailure>;

    /// The executor's outcome of an op this planner emitted (others are ignored).
    fn completed(&mut self, op: &DataplaneOp, ok: bool);

    /// Everything this planner put in the kernel, to remove (clean shutdown).
    fn withdraw(&mut self, out: &mut Vec<DataplaneOp>);
}
