//! What runs as a process at start and for the interfaces (through `daemon_kit::command`):
//! whether an earlier verifier left the native table, and the allmulticast flag. Every nft
//! transaction of the running verifier goes through [`super::libnft`], routes and rules through
//! [`super::rtnl`].

use crate::plan::netdev;
use daemon_kit::command::{output, run, CommandError};

/// Whether an earlier verifier left the native data plane's table in the kernel.
pub fn netdev_table_exists() -> bool {
    list_netdev_table().is_ok()
}

/// Whether an earlier verifier left its VIP table (`keep_kernel_state`, or killed).
pub fn vip_table_exists() -> bool {
    output("nft", &["list", "table", "ip", crate::plan::vip::TABLE]).is_ok()
}

/// Whether an earlier verifier left the control groups' table (`keep_kernel_state`, or killed).
pub fn control_table_exists() -> bool {
    output(
        "nft",
        &["list", "table", "netdev", crate::plan::control::TABLE],
    )
    .is_ok()
}

/// Whether an earlier verifier left the IPv6 native table (`keep_kernel_state`, or killed).
pub fn netdev6_table_exists() -> bool {
    output(
        "nft",
        &["list", "table", "netdev", crate::plan::netdev6::TABLE],
    )
    .is_ok()
}

/// Whether an earlier verifier left the IPv6 VIP table (`keep_kernel_state`, or killed).
pub fn vip6_table_exists() -> bool {
    output(
        "nft",
        &["list", "table", "netdev", crate::plan::vip6::TABLE],
    )
    .is_ok()
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
