//! Running `nft` and `ip` (through `daemon_kit::command`) for the nft data planes: the native
//! netdev table and VIP mode's table, policy rules and routes. The ruleset text comes from
//! [`crate::plan`].

use crate::plan::{netdev, vip, VipRoute, VipRule};
use daemon_kit::command::{output, run, CommandError};

/// Applies a ruleset as one transaction (`nft -f -`).
pub fn apply(ruleset: &str) -> Result<(), CommandError> {
    run("nft", &["-f", "-"], Some(ruleset))
}

/// VIP mode's table ([`vip::TABLE`]).
pub fn delete_table() -> Result<(), CommandError> {
    run("nft", &["delete", "table", "ip", vip::TABLE], None)
}

/// The native data plane's table ([`netdev::TABLE`]).
pub fn delete_netdev_table() -> Result<(), CommandError> {
    run("nft", &["delete", "table", "netdev", netdev::TABLE], None)
}

/// Whether an earlier verifier left the native data plane's table in the kernel.
pub fn netdev_table_exists() -> bool {
    list_netdev_table().is_ok()
}

/// `nft list table netdev manycast_native`, for its counters.
pub fn list_netdev_table() -> Result<String, CommandError> {
    output("nft", &["list", "table", "netdev", netdev::TABLE])
}

/// Whether `ifname` receives all multicast frames (IFF_ALLMULTI), from sysfs.
pub fn allmulti(ifname: &str) -> Option<bool> {
    let flags = std::fs::read_to_string(format!("/sys/class/net/{ifname}/flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    Some(flags & libc::IFF_ALLMULTI as u32 != 0)
}

/// Turns IFF_ALLMULTI on or off: the nft data plane must see every group's frames, which a
/// real NIC filters out unless someone on the host joined the group (ipmr does this for VIFs).
pub fn set_allmulti(ifname: &str, on: bool) -> Result<(), CommandError> {
    let state = if on { "on" } else { "off" };
    run(
        "ip",
        &["link", "set", "dev", ifname, "allmulticast", state],
        None,
    )
}

pub fn route_replace(r: &VipRoute) -> Result<(), CommandError> {
    let (vip, via, table) = (
        format!("{}/32", r.vip),
        r.via.to_string(),
        r.table.to_string(),
    );
    run(
        "ip",
        &["route", "replace", &vip, "via", &via, "table", &table],
        None,
    )
}

pub fn route_del(r: &VipRoute) -> Result<(), CommandError> {
    let (vip, table) = (format!("{}/32", r.vip), r.table.to_string());
    run("ip", &["route", "del", &vip, "table", &table], None)
}

fn rule(verb: &str, r: &VipRule) -> Result<(), CommandError> {
    let (pref, mark, table) = (
        r.priority.to_string(),
        format!("{:#x}", r.mark),
        r.table.to_string(),
    );
    run(
        "ip",
        &[
            "rule", verb, "pref", &pref, "fwmark", &mark, "table", &table,
        ],
        None,
    )
}

pub fn rule_add(r: &VipRule) -> Result<(), CommandError> {
    // Delete first so that a restart does not stack duplicates.
    let _ = rule_del(r);
    rule("add", r)
}

pub fn rule_del(r: &VipRule) -> Result<(), CommandError> {
    rule("del", r)
}
