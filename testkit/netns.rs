//! Network namespaces for tests: uniquely named (`mct-<pid>-<n>-<role>`) so that tests running in
//! parallel, and several test processes, never collide; owned by a [`Lab`] whose `Drop` removes
//! every link and namespace it made, also when the test panics.

use super::cmd;
use nix::sched::CloneFlags;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

const PREFIX: &str = "mct-";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fails loudly unless we run as root: these tests create namespaces, and passing without doing
/// so would hide that nothing was tested.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "igmp-ext interop tests need root (they create network namespaces, veth pairs, bridges \
         and raw sockets); run them as root, e.g. `sudo -E cargo test -p igmp-ext --test main`"
    );
}

/// A handle on one namespace. Cheap to clone; the namespace lives as long as its [`Lab`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    /// Sockets created inside `f` stay in this namespace wherever they are used later. A panic in
    /// `f` is re-raised here with its message.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            });
            handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `ip netns exec <ns> program args…`; panics unless it succeeds; returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// `ip -n <ns> args…`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// `bridge -n <ns> args…`.
    pub fn bridge(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        cmd::run("bridge", &full)
    }

    /// Sets a sysctl of this namespace (the `net.*` tree is per namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }

    pub fn add_addr(&self, ifname: &str, addr: Ipv4Addr, prefix_len: u8) {
        self.ip(&[
            "addr",
            "add",
            &format!("{addr}/{prefix_len}"),
            "dev",
            ifname,
        ]);
    }

    /// The interface index of `ifname` in this namespace (`ip -j link show`).
    pub fn ifindex(&self, ifname: &str) -> u32 {
        let json = self.ip(&["-j", "link", "show", "dev", ifname]);
        let v: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("ip -j link JSON: {e}\n{json}"));
        v.pointer("/0/ifindex")
            .and_then(serde_json::Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| panic!("no ifindex for {ifname}: {json}"))
    }

    /// The contents of `/proc/net/<file>` as this namespace sees it (igmp, snmp, …).
    pub fn proc_net(&self, file: &str) -> String {
        self.exec("cat", &[&format!("/proc/net/{file}")])
    }

    pub fn link_up(&self, ifname: &str) {
        self.ip(&["link", "set", "dev", ifname, "up"]);
    }

    /// Sends one complete IPv4 datagram as it is out of `ifname` (IPPROTO_RAW implies
    /// IP_HDRINCL). The kernel only fills in Total Length, the header checksum and a zero ID.
    pub fn send_raw(&self, ifname: &str, datagram: &[u8]) {
        assert!(datagram.len() >= 20, "not an IPv4 datagram");
        let dst = Ipv4Addr::new(datagram[16], datagram[17], datagram[18], datagram[19]);
        let sent = self.run(|| {
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
                .expect("raw socket");
            // Multicast has no route to pick an interface from; bind to the one we mean.
            s.bind_device(Some(ifname.as_bytes()))
                .expect("SO_BINDTODEVICE");
            s.send_to(datagram, &SockAddr::from(SocketAddrV4::new(dst, 0)))
                .expect("send raw datagram")
        });
        assert_eq!(sent, datagram.len(), "short raw send");
    }
}

/// Owns the namespaces and links of one test and removes them on drop.
#[derive(Debug)]
pub struct Lab {
    namespaces: Mutex<Vec<Netns>>,
    /// (namespace, interface) of links we created, deleted before their namespaces.
    links: Mutex<Vec<(Netns, String)>>,
}

impl Lab {
    pub fn new() -> Self {
        require_root();
        static STALE: Once = Once::new();
        STALE.call_once(|| super::stale_netns::remove_stale_namespaces(PREFIX));
        Lab {
            namespaces: Mutex::new(Vec::new()),
            links: Mutex::new(Vec::new()),
        }
    }

    /// Creates a namespace named `mct-<pid>-<n>-<role>` with loopback up.
    pub fn netns(&self, role: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        cmd::run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        // Registered before anything else can fail, so that Drop removes it.
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ns.clone());
        ns.link_up("lo");
        ns
    }

    /// Creates a veth pair with `a_if` in `a` and `b_if` in `b`, both up. The pair is created inside
    /// `a` directly, so no name ever appears in the host namespace.
    pub fn veth(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
        a.ip(&[
            "link",
            "add",
            a_if,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ]);
        self.track_link(a, a_if);
        a.link_up(a_if);
        b.link_up(b_if);
    }

    /// Records a link made by hand (e.g. a bridge) so that Drop deletes it.
    pub fn track_link(&self, ns: &Netns, ifname: &str) {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((ns.clone(), ifname.to_owned()));
    }

    /// Two namespaces joined by one veth: `host` (10.99.0.1/24 on `h0`) and `peer`
    /// (10.99.0.2/24 on `p0`).
    pub fn pair(&self) -> Pair {
        self.pair_with(Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2), 24)
    }

    /// Like [`Lab::pair`] with chosen addresses on one subnet of `prefix_len` bits.
    pub fn pair_with(&self, host_addr: Ipv4Addr, peer_addr: Ipv4Addr, prefix_len: u8) -> Pair {
        let host = self.netns("host");
        let peer = self.netns("peer");
        self.veth(&host, "h0", &peer, "p0");
        let pair = Pair {
            host,
            peer,
            host_if: "h0",
            peer_if: "p0",
            host_addr,
            peer_addr,
        };
        pair.host.add_addr(pair.host_if, pair.host_addr, prefix_len);
        pair.peer.add_addr(pair.peer_if, pair.peer_addr, prefix_len);
        pair
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never panic here: this runs while a failed test unwinds.
        let links = std::mem::take(self.links.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (ns, ifname) in links.iter().rev() {
            let _ = cmd::run_with_timeout(
                "ip",
                &["-n", ns.name(), "link", "del", ifname],
                cmd::DEFAULT_TIMEOUT,
            );
        }
        let namespaces =
            std::mem::take(self.namespaces.get_mut().unwrap_or_else(|p| p.into_inner()));
        for ns in namespaces.iter().rev() {
            match cmd::run_with_timeout("ip", &["netns", "del", ns.name()], cmd::DEFAULT_TIMEOUT) {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    eprintln!(
                        "could not delete namespace {}: {}",
                        ns.name(),
                        String::from_utf8_lossy(&out.stderr)
                    )
                }
                Err(e) => eprintln!("could not delete namespace {}: {e}", ns.name()),
            }
        }
    }
}

/// Two namespaces on one link, as made by [`Lab::pair`].
#[derive(Debug, Clone)]
pub struct Pair {
    pub host: Netns,
    pub peer: Netns,
    pub host_if: &'static str,
    pub peer_if: &'static str,
    pub host_addr: Ipv4Addr,
    pub peer_addr: Ipv4Addr,
}
