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
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
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
    }
}
