//! FRR (Debian `frr`, started by the lab) in the lab's namespaces: zebra, bfdd and bgpd per
//! router, in the foreground as the lab's children so that its `Drop` stops them, each
//! router's config and sockets in its own directory (FRR drops privileges to user `frr`).

use crate::harness::{wait_for, Lab};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const FRR: &str = "/usr/lib/frr";

/// One BGP speaker: its AS, router id, eBGP neighbours (address, AS) with BFD,
/// and the /32 routes it announces from the kernel (the verifier's announced VIPs).
#[derive(Debug, Clone)]
pub struct Speaker {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub neighbours: Vec<(Ipv4Addr, u32)>,
    pub export: Vec<Ipv4Addr>,
    /// BFD's transmit and receive interval; a peer is down after 3 missed.
    pub bfd_ms: u32,
}

impl Speaker {
    /// Each daemon's config file: (daemon, text). Separate files, since a daemon stops parsing
    /// a shared `frr.conf` sensibly at the first section it does not know.
    pub fn configs(&self, hostname: &str) -> [(&'static str, String); 3] {
        let head = format!("frr defaults traditional\nhostname {hostname}\n");
        let mut bfd = format!("{head}bfd\n");
        for (n, _) in &self.neighbours {
            bfd += &format!(
                " peer {n}\n  receive-interval {ms}\n  transmit-interval {ms}\n  detect-multiplier 3\n",
                ms = self.bfd_ms
            );
        }
        let mut bgp = head.clone();
        for (i, v) in self.export.iter().enumerate() {
            bgp += &format!(
                "ip prefix-list MANYCAST seq {} permit {v}/32\n",
                5 * (i + 1)
            );
        }
        if self.export.is_empty() {
            bgp += "ip prefix-list MANYCAST seq 5 deny any\n";
        }
        bgp += "route-map MANYCAST permit 10\n match ip address prefix-list MANYCAST\n";
        bgp += &format!(
            "router bgp {}\n bgp router-id {}\n no bgp ebgp-requires-policy\n timers bgp 3 9\n",
            self.asn, self.router_id
        );
        for (n, asn) in &self.neighbours {
            bgp += &format!(
                " neighbor {n} remote-as {asn}\n neighbor {n} bfd\n neighbor {n} timers connect 1\n \
                 neighbor {n} advertisement-interval 0\n"
            );
        }
        bgp += " address-family ipv4 unicast\n  redistribute kernel route-map MANYCAST\n  \
                maximum-paths 8\n exit-address-family\n";
        // Routes with plain next hops, not kernel nexthop objects: FRR 8.4's zebra loses track
        // of a multipath group the kernel shrank when a link went down, and never puts the
        // next hop back when the link and its BGP session return.
        let zebra = format!("{head}no zebra nexthop kernel enable\n");
        [("zebra", zebra), ("bfdd", bfd), ("bgpd", bgp)]
    }
}

/// Starts zebra, bfdd and bgpd in `ns` with `speaker`'s config; their output goes to
/// `frr-<name>-<daemon>.log` in the lab directory.
pub fn start(lab: &mut Lab, ns: &str, name: &str, speaker: &Speaker) -> PathBuf {
    assert!(
        std::path::Path::new(&format!("{FRR}/bgpd")).exists(),
        "FRR is not installed: run scripts/setup.sh (Debian package frr)"
    );
    let root = lab.dir.path().to_owned();
    // FRR runs as user frr: it must reach its directory inside the lab's (private) one.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = root.join(format!("frr-{name}"));
    std::fs::create_dir_all(&dir).expect("frr dir");
    for (daemon, text) in speaker.configs(name) {
        std::fs::write(dir.join(format!("{daemon}.conf")), text).expect("frr config");
    }
    let chown = Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(&dir)
        .status()
        .expect("chown");
    assert!(chown.success(), "chown frr:frr {}", dir.display());
    for daemon in ["zebra", "bfdd", "bgpd"] {
        let log =
            std::fs::File::create(root.join(format!("frr-{name}-{daemon}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(format!("{FRR}/{daemon}"))
            .arg("-f")
            .arg(dir.join(format!("{daemon}.conf")))
            .arg("-i")
            .arg(dir.join(format!("{daemon}.pid")))
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .arg("--vty_socket")
            .arg(&dir)
            .args(["--log", "stdout"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {daemon}: {e}"));
        lab.children.push((format!("frr-{name}-{daemon}"), child));
        if daemon == "zebra" {
            wait_for("zebra's API socket", || dir.join("zserv.api").exists());
        }
    }
    dir
}

/// `vtysh -c <command>` against the FRR started in `ns` with directory `dir`.
pub fn vtysh(ns: &str, dir: &std::path::Path, command: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "vtysh", "--vty_socket"])
        .arg(dir)
        .args(["-c", command])
        .output()
        .expect("vtysh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The next hops `ns`'s main table has for `dst`/32 (empty when it has no route).
pub fn next_hops(ns: &str, dst: Ipv4Addr) -> Vec<Ipv4Addr> {
    let out = Command::new("ip")
        .args(["-n", ns, "-4", "route", "show", &format!("{dst}/32")])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect()
}
