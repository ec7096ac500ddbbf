//! The lab: a router namespace running the verifier, one client namespace and `n` server
//! namespaces, each on its own link. The verifier process is killed and the namespaces removed
//! on drop, also when a test panics.

use super::netns::{Lab, Netns};
use igmp_ext::fixtures::Fixture;
use igmp_ext::join::{build_datagram, build_signed_report, JoinClaims, SliceEntry};
use igmp_ext::wire::record::RecordType;
use igmp_ext::{AllocationEpoch, Slice, Timestamp};
use manycast_verifier::keyfile::FileKeySource;
use manycast_verifier::status::Status;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const GROUP: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
pub const PORT: u16 = 5000;
static NONCE: AtomicU64 = AtomicU64::new(1);

pub fn wall_now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    Timestamp::from_millis(ms as u64)
}

/// Waits for `cond` for up to 20 s (a deadline for a hung run, not a timing assertion).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which data plane native mode runs on (status `dataplane`): the kernel's multicast routing
/// (MFC entries from upcalls) or the nftables netdev table (kernels without CONFIG_IP_MROUTE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataplane {
    Mroute,
    Nft,
}

/// Whether this kernel has multicast routing at all (CONFIG_IP_MROUTE): ipmr makes
/// `/proc/net/ip_mr_vif` in every namespace.
pub fn kernel_has_mroute() -> bool {
    std::path::Path::new("/proc/net/ip_mr_vif").exists()
}

/// The nft data plane's table, as the verifier names it.
pub const NATIVE_TABLE: &str = "manycast_native";

/// Packet counters of the nft data plane's rules (`nft -j`): what the kernel did, not what the
/// verifier planned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NativeCounters {
    /// The ingress chain's `ip ttl 0-1 counter drop` rules, all groups.
    pub ttl_drops: u64,
    /// The ingress chain's last rule per group (`ip daddr G counter drop`): no owner.
    pub unowned_drops: u64,
    /// Per member: datagrams its chain's `counter fwd` rule sent toward it.
    pub forwarded: BTreeMap<u32, u64>,
}

pub struct Server {
    pub ns: Netns,
    /// The member's address (on its link to the router).
    pub addr: Ipv4Addr,
    pub ifname: String,
}

pub struct RouterLab {
    pub lab: Lab,
    pub router: Netns,
    pub client: Netns,
    pub servers: Vec<Server>,
    pub fixture: Fixture,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// Where VIP pin mode's tc program pins its maps (`[vip_pin] pin_dir`).
    pub pin_dir: PathBuf,
    /// `RUST_LOG` for the verifier: debug for tests (the log is printed when one fails); the
    /// benchmark lowers it so that per-upcall logging does not weigh on what it measures.
    pub log_filter: String,
    /// Niceness to start the verifier with (`nice -n`), if any: the benchmark runs it above
    /// the machine's bulk work, as a router's control plane should be deployed.
    pub nice: Option<i32>,
    daemon: Option<Child>,
}

/// Client source addresses: 10.1.0.2 ..= 10.1.0.(1 + n).
pub fn client_sources(n: u8) -> Vec<Ipv4Addr> {
    (2..2 + n).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect()
}

impl RouterLab {
    /// `n` servers; `extra` is appended to the config file.
    pub fn new(n: usize, extra: &str) -> RouterLab {
        Self::with_fixture(Fixture::new(n as u32), extra)
    }

    /// One server per member of `fixture` (e.g. members with restricted certificates).
    pub fn with_fixture(fixture: Fixture, extra: &str) -> RouterLab {
        let n = fixture.members.len();
        let lab = Lab::new();
        let router = lab.netns("rtr");
        let client = lab.netns("cli");
        lab.veth(&router, "c0", &client, "cl0");
        router.add_addr("c0", Ipv4Addr::new(10, 1, 0, 1), 24);
        for a in client_sources(16) {
            client.add_addr("cl0", a, 24);
        }
        client.ip(&["route", "add", "default", "via", "10.1.0.1"]);
        let mut servers = Vec::new();
        for i in 1..=n {
            let ns = lab.netns(&format!("srv{i}"));
            let rif = format!("s{i}");
            lab.veth(&router, &rif, &ns, "m0");
            router.add_addr(&rif, Ipv4Addr::new(10, 0, i as u8, 1), 24);
            let addr = Ipv4Addr::new(10, 0, i as u8, 2);
            ns.add_addr("m0", addr, 24);
            ns.ip(&["route", "add", "default", "via", &format!("10.0.{i}.1")]);
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
            ns.sysctl("net.ipv4.conf.m0.rp_filter", "0");
            servers.push(Server {
                ns,
                addr,
                ifname: "m0".into(),
            });
        }
        router.sysctl("net.ipv4.ip_forward", "1");
        for k in ["all", "default", "c0"] {
            router.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0");
        }
        for i in 1..=n {
            router.sysctl(&format!("net.ipv4.conf.s{i}.rp_filter"), "0");
        }
        let dir = std::env::temp_dir().join(router.name());
        std::fs::create_dir_all(&dir).expect("temp dir");
        let keys = dir.join("keys.toml");
        std::fs::write(&keys, FileKeySource::render(&[fixture.group_keys()])).expect("key file");
        let socket = dir.join("status.sock");
        let ifaces: Vec<String> = std::iter::once("\"c0\"".to_owned())
            .chain((1..=n).map(|i| format!("\"s{i}\"")))
            .collect();
        let config = dir.join("verifier.toml");
        // VIP pin mode's tc program pins its maps in a directory of this lab's own, on a bpf
        // filesystem mounted outside /sys (which `ip netns exec` remounts), so that they
        // outlive the verifier as on a host.
        let pin_dir = bpf_pin_root().join(router.name());
        let _ = std::fs::remove_dir_all(&pin_dir);
        let pin = format!("[vip_pin]\npin_dir = \"{}\"\n", pin_dir.display());
        let extra = if extra.contains("pin_dir") {
            extra.to_owned()
        } else if extra.contains("[vip_pin]\n") {
            extra.replacen("[vip_pin]\n", &pin, 1)
        } else {
            format!("{pin}{extra}")
        };
        std::fs::write(
            &config,
            format!(
                "interfaces = [{}]\nkeys = \"{}\"\nstatus_socket = \"{}\"\n{extra}\n",
                ifaces.join(", "),
                keys.display(),
                socket.display()
            ),
        )
        .expect("config");
        RouterLab {
            lab,
            router,
            client,
            servers,
            fixture,
            dir,
            config,
            socket,
            pin_dir,
            log_filter: "debug".into(),
            nice: None,
            daemon: None,
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("verifier.log")).expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.router.name()]);
        if let Some(n) = self.nice {
            // `nice` execs the verifier too, so the child's pid stays the verifier's.
            cmd.args(["nice", "-n", &n.to_string()]);
        }
        let child = cmd
            .arg(env!("CARGO_BIN_EXE_manycast-verifier"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the verifier");
        self.daemon = Some(child);
        let sock = self.socket.clone();
        wait_for("the status socket", || {
            self.try_status().is_some() && sock.exists()
        });
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.daemon.take().expect("verifier running");
        // `ip netns exec` (and `nice`) exec the binary, so the child's pid is the verifier's.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "verifier did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running verifier's pid (`ip netns exec` and `nice` exec it, so it is the child's).
    pub fn daemon_pid(&self) -> Option<nix::unistd::Pid> {
        self.daemon
            .as_ref()
            .map(|c| nix::unistd::Pid::from_raw(c.id() as i32))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("verifier.log")).unwrap_or_default()
    }

    pub fn try_status(&self) -> Option<Status> {
        let out = Command::new(env!("CARGO_BIN_EXE_manycast-verifier"))
            .args(["--status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self) -> Status {
        self.try_status()
            .unwrap_or_else(|| panic!("no status; log:\n{}", self.log()))
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.status()
            .counters
            .rejected
            .iter()
            .find(|(r, _)| r == reason)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }

    /// A signed join from server `i` (0-based) for `slices` at `epoch`, sent on its link.
    pub fn join(&self, i: usize, slices: &[Slice], epoch: u64) {
        self.join_group(i, GROUP, slices, epoch);
    }

    /// Like [`RouterLab::join`] for any group (one the router has no keys for, say).
    pub fn join_group(&self, i: usize, group: Ipv4Addr, slices: &[Slice], epoch: u64) {
        let m = &self.fixture.members[i];
        let s = &self.servers[i];
        let claims = JoinClaims {
            group,
            record_type: if slices.is_empty() {
                RecordType::ChangeToIncludeMode
            } else {
                RecordType::ModeIsInclude
            },
            entries: slices.iter().copied().map(SliceEntry::include).collect(),
            epoch: AllocationEpoch(epoch),
            timestamp: wall_now(),
            nonce: igmp_ext::fixtures::nonce_bytes(NONCE.fetch_add(1, Ordering::Relaxed)),
            standby: Vec::new(),
            liveness: Vec::new(),
            as_units: false,
        };
        let igmp = build_signed_report(&claims, s.addr, &m.cert, &m.key).expect("join builds");
        s.ns.send_raw(&s.ifname, &build_datagram(s.addr, &igmp));
    }

    /// Sends raw bytes as server `i` (forged or malformed joins).
    pub fn send_from_server(&self, i: usize, datagram: &[u8]) {
        let s = &self.servers[i];
        s.ns.send_raw(&s.ifname, datagram);
    }

    /// A UDP socket in server `i` that receives the group.
    pub fn group_receiver(&self, i: usize) -> UdpSocket {
        let ns = &self.servers[i].ns;
        ns.run(|| {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp");
            s.set_reuse_address(true).expect("reuse");
            s.bind(&SockAddr::from(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                PORT,
            )))
            .expect("bind");
            s.join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED)
                .expect("join group");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            s.into()
        })
    }

    /// The data plane the running verifier chose; panics on anything else, so that a status
    /// without the field cannot pass for either.
    pub fn dataplane(&self) -> Dataplane {
        match self.status().dataplane.as_str() {
            "mroute" => Dataplane::Mroute,
            "nft" => Dataplane::Nft,
            other => panic!("unknown data plane {other:?}"),
        }
    }

    /// Returns true (and says so on stderr) when this test is about ipmr and cannot run here:
    /// only when the kernel really lacks CONFIG_IP_MROUTE and the verifier runs on nft.
    pub fn skip_without_mroute(&self, test: &str, what: &str) -> bool {
        let dataplane = self.dataplane();
        if kernel_has_mroute() {
            assert_eq!(
                dataplane,
                Dataplane::Mroute,
                "the kernel has multicast routing but the verifier chose nft"
            );
            return false;
        }
        assert_eq!(dataplane, Dataplane::Nft, "no ipmr, yet not on nft");
        // Straight to the stderr stream: libtest captures `eprintln!` of passing tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: {what}: kernel lacks CONFIG_IP_MROUTE"
        );
        true
    }

    /// Members the kernel steers `group` to, with how much of it: MFC entries per member
    /// (mroute) or map values per member (nft). Drop entries and adopted entries have no member
    /// and do not count.
    pub fn steered(&self, group: Ipv4Addr) -> BTreeMap<u32, u64> {
        let s = self.status();
        let g = group.to_string();
        let mut out = BTreeMap::new();
        if s.dataplane == "nft" {
            for r in s.native.iter().filter(|r| r.group == g) {
                *out.entry(r.member).or_insert(0) += r.values;
            }
        } else {
            for m in s.mfc.iter().filter(|m| m.group == g) {
                if let Some(member) = m.member {
                    *out.entry(member).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// `nft list table netdev manycast_native` in the router namespace; `None` when the table
    /// does not exist.
    pub fn native_table(&self) -> Option<String> {
        let out = super::cmd::run_with_timeout(
            "ip",
            &[
                "netns",
                "exec",
                self.router.name(),
                "nft",
                "list",
                "table",
                "netdev",
                NATIVE_TABLE,
            ],
            super::cmd::DEFAULT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The nft data plane's rule counters (all zero when the table is absent).
    pub fn native_counters(&self) -> NativeCounters {
        let mut c = NativeCounters::default();
        if self.native_table().is_none() {
            return c;
        }
        let json = self
            .router
            .exec("nft", &["-j", "list", "table", "netdev", NATIVE_TABLE]);
        let v: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("nft JSON: {e}\n{json}"));
        for rule in v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("rule"))
        {
            let chain = rule["chain"].as_str().unwrap_or_default();
            let exprs: &[serde_json::Value] = rule["expr"].as_array().map_or(&[], Vec::as_slice);
            let Some(packets) = exprs
                .iter()
                .find_map(|e| e.pointer("/counter/packets")?.as_u64())
            else {
                continue;
            };
            let drops = exprs.iter().any(|e| e.get("drop").is_some());
            let on_ttl = exprs
                .iter()
                .any(|e| e.pointer("/match/left/payload/field") == Some(&"ttl".into()));
            if chain == "ingress" && drops && on_ttl {
                c.ttl_drops += packets;
            } else if chain == "ingress" && drops {
                c.unowned_drops += packets;
            } else if let Some(member) = chain
                .strip_prefix('m')
                .and_then(|r| r.split('_').next())
                .and_then(|m| m.parse::<u32>().ok())
            {
                *c.forwarded.entry(member).or_insert(0) += packets;
            }
        }
        c
    }

    /// Whether `ifname` in the router namespace receives all multicast (IFF_ALLMULTI).
    pub fn allmulti(&self, ifname: &str) -> bool {
        let json = self.router.ip(&["-j", "link", "show", "dev", ifname]);
        let v: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("ip -j link JSON: {e}\n{json}"));
        v.pointer("/0/flags")
            .and_then(|f| f.as_array())
            .unwrap_or_else(|| panic!("no flags for {ifname}: {json}"))
            .iter()
            .any(|f| f == "ALLMULTI")
    }

    /// The router's interfaces (the verifier's): c0 and one per server.
    pub fn router_interfaces(&self) -> Vec<String> {
        std::iter::once("c0".to_owned())
            .chain((1..=self.servers.len()).map(|i| format!("s{i}")))
            .collect()
    }

    /// Runs the verifier with this lab's config until it exits (it must, within 20 s: a run
    /// meant to be refused); returns its exit status and its stderr.
    pub fn run_to_exit(&self) -> (std::process::ExitStatus, String) {
        let out = super::cmd::run_with_timeout(
            "ip",
            &[
                "netns",
                "exec",
                self.router.name(),
                env!("CARGO_BIN_EXE_manycast-verifier"),
                "--config",
                &self.config.to_string_lossy(),
            ],
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("the verifier did not exit: {e}"));
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Sends one UDP datagram to `PORT` of `dst` from any `src` (a raw socket on the client's
    /// link, so that sources need no address of their own), with IP TTL `ttl`; the payload
    /// is `[tag, seq]` like [`RouterLab::send_to_group`].
    pub fn send_raw_udp(&self, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, tag: u8, seq: u8) {
        self.client
            .send_raw("cl0", &udp_datagram(src, dst, ttl, &[tag, seq]));
    }

    /// Sends `count` datagrams to the group from each of `sources` (back to back).
    pub fn send_to_group(&self, sources: &[Ipv4Addr], count: usize, tag: u8) {
        self.client.run(|| {
            for &src in sources {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp");
                s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
                    .expect("bind");
                s.set_multicast_ttl_v4(8).expect("ttl");
                s.set_multicast_if_v4(&src).expect("mcast if");
                for k in 0..count {
                    s.send_to(
                        &[tag, k as u8],
                        &SockAddr::from(SocketAddrV4::new(GROUP, PORT)),
                    )
                    .expect("send");
                }
            }
        });
    }
}

/// An IPv4/UDP datagram to `PORT` with `payload`; the UDP checksum is left 0 (none), the IP
/// checksum filled in by the raw socket's kernel.
pub fn udp_datagram(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let len = 28 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = ttl;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&40_000u16.to_be_bytes());
    p[22..24].copy_from_slice(&PORT.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// A capture of the IPv4 packets arriving on one interface of a namespace (a packet socket;
/// what the host itself sends is left out), whether or not the host accepts them: what the
/// router put on the wire.
pub struct Capture(Socket);

impl Capture {
    pub fn open(ns: &Netns, ifname: &str) -> Capture {
        let ifname = ifname.to_owned();
        ns.run(move || {
            let proto = (libc::ETH_P_IP as u16).to_be();
            let s = Socket::new(
                Domain::PACKET,
                Type::DGRAM,
                Some(Protocol::from(i32::from(proto))),
            )
            .expect("packet socket");
            // The interface's link address carries its index; protocol 0 keeps the socket's.
            let link = nix::ifaddrs::getifaddrs()
                .expect("getifaddrs")
                .filter(|a| a.interface_name == ifname)
                .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
                .unwrap_or_else(|| panic!("no link address for {ifname}"));
            nix::sys::socket::bind(s.as_raw_fd(), &link).expect("bind the packet socket");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            Capture(s)
        })
    }

    /// Packets captured so far (until quiet for the read timeout) that are UDP to `dst`:`PORT`:
    /// (source, TTL, payload).
    pub fn udp_to(&self, dst: Ipv4Addr) -> Vec<(Ipv4Addr, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) =
            nix::sys::socket::recvfrom::<nix::sys::socket::LinkAddr>(self.0.as_raw_fd(), &mut buf)
        {
            if from.is_none_or(|f| f.pkttype() == libc::PACKET_OUTGOING) {
                continue;
            }
            if n < 28 || buf[0] >> 4 != 4 || buf[9] != 17 {
                continue;
            }
            // Short frames carry Ethernet padding after the datagram.
            let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            let p = &buf[..n.min(total)];
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let to = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            let port = p
                .get(ihl + 2..ihl + 4)
                .map(|b| u16::from_be_bytes([b[0], b[1]]));
            if to == dst && port == Some(PORT) {
                let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
                out.push((src, p[8], p.get(ihl + 8..).unwrap_or_default().to_vec()));
            }
        }
        out
    }
}

/// Everything a receiver got until it was quiet: (source, tag, sequence).
pub fn drain(sock: &UdpSocket) -> Vec<(Ipv4Addr, u8, u8)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        if n >= 2 {
            if let std::net::SocketAddr::V4(from) = from {
                out.push((*from.ip(), buf[0], buf[1]));
            }
        }
    }
    out
}

impl Drop for RouterLab {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("verifier log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // A killed verifier's tc filters went with the namespace; its pinned maps did not.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// A bpf filesystem for the labs' pinned maps, mounted once (in the tests' mount namespace,
/// which `ip netns exec` copies).
pub fn bpf_pin_root() -> PathBuf {
    let root = PathBuf::from("/run/manycast-test-bpf");
    let mounted = std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/run/manycast-test-bpf"))
    });
    if !mounted {
        std::fs::create_dir_all(&root).expect("bpf pin root");
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a bpf filesystem at {}", root.display());
    }
    root
}
