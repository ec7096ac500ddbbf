//! Running `nft` and `ip` for VIP mode. The ruleset text comes from [`crate::vip`].

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
        ))
    }
}

/// Applies a ruleset as one transaction (`nft -f -`).
pub fn apply(ruleset: &str) -> Result<(), String> {
    run("nft", &["-f", "-"], Some(ruleset))
}

pub fn delete_table() -> Result<(), String> {
    run("nft", &["delete", "table", "ip", crate::vip::TABLE], None)
}

/// The native data plane's table ([`crate::netdev`]).
pub fn delete_netdev_table() -> Result<(), String> {
    run(
        "nft",
        &["delete", "table", "netdev", crate::netdev::TABLE],
        None,
    )
}

/// Whether an earlier verifier left the native data plane's table in the kernel.
pub fn netdev_table_exists() -> bool {
    list_netdev_table().is_ok()
}

/// `nft list table netdev manycast_native`, for its counters.
pub fn list_netdev_table() -> Result<String, String> {
    let out = Command::new("nft")
        .args(["list", "table", "netdev", crate::netdev::TABLE])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Whether `ifname` receives all multicast frames (IFF_ALLMULTI), from sysfs.
pub fn allmulti(ifname: &str) -> Option<bool> {
    let flags = std::fs::read_to_string(format!("/sys/class/net/{ifname}/flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    Some(flags & libc::IFF_ALLMULTI as u32 != 0)
}

/// Turns IFF_ALLMULTI on or off: the nft data plane must see every group's frames, which a
/// real NIC filters out unless someone on the host joined the group (ipmr does this for VIFs).
pub fn set_allmulti(ifname: &str, on: bool) -> Result<(), String> {
    run(
        "ip",
        &[
            "link",
            "set",
            "dev",
            ifname,
            "allmulticast",
            if on { "on" } else { "off" },
        ],
        None,
    )
}

pub fn route_replace(vip: Ipv4Addr, via: Ipv4Addr, table: u32) -> Result<(), String> {
    run(
        "ip",
        &[
            "route",
            "replace",
            &format!("{vip}/32"),
            "via",
            &via.to_string(),
            "table",
            &table.to_string(),
        ],
        None,
    )
}

pub fn route_del(vip: Ipv4Addr, table: u32) -> Result<(), String> {
    run(
        "ip",
        &[
            "route",
            "del",
            &format!("{vip}/32"),
            "table",
            &table.to_string(),
        ],
        None,
    )
}

pub fn rule_add(mark: u32, table: u32, pref: u32) -> Result<(), String> {
    // Delete first so that a restart does not stack duplicates.
    let _ = rule_del(mark, table, pref);
    run(
        "ip",
        &[
            "rule",
            "add",
            "pref",
            &pref.to_string(),
            "fwmark",
            &format!("{mark:#x}"),
            "table",
            &table.to_string(),
        ],
        None,
    )
}

pub fn rule_del(mark: u32, table: u32, pref: u32) -> Result<(), String> {
    run(
        "ip",
        &[
            "rule",
            "del",
            "pref",
            &pref.to_string(),
            "fwmark",
            &format!("{mark:#x}"),
            "table",
            &table.to_string(),
        ],
        None,
    )
}
