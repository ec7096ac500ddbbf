//! Namespaces, keys and processes for the end-to-end tests: the real `manycast-server` binary in
//! server namespaces, the real `manycast-verifier` in a router namespace, UDP clients in a client
//! namespace. Names are `mcs-<pid>-<n>-<role>`; [`Lab`]'s `Drop` kills the processes it started
//! (by their own handles) and deletes the namespaces, also when a test panics. A run killed by a
//! signal cannot unwind: the next [`Lab::new`] removes what it left (its processes, then its
//! namespaces).

use igmp_ext::fixtures::Fixture;
use igmp_ext::{CertificateBody, KeyId, Timestamp};
use manycast_server::keys;
use manycast_verifier::keyfile::FileKeySource;
use manycast_verifier::status::Status;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const GROUP: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
pub const CONTROL: Ipv4Addr = Ipv4Addr::new(239, 77, 0, 1);
pub const PORT: u16 = 5000;
static COUNTER: AtomicUsize = AtomicUsize::new(0);
const PREFIX: &str = "mcs-";

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the manycast-server namespace tests need root (network namespaces, raw sockets)"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for `cond` for up to 30 s (a deadline for a hung run, not a timing assertion).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[path = "../../testkit/stale_netns.rs"]
mod stale_netns;
#[path = "../../testkit/workspace_bin.rs"]
pub mod workspace_bin;

/// The `manycast-verifier` daemon of this build, rebuilt when its sources changed.
pub fn verifier_binary() -> PathBuf {
    workspace_bin::workspace_bin("manycast-verifier", "manycast-verifier")
}

/// The verifier's status through `manycast-verifier --status --json` (none until it answers).
pub fn verifier_status(socket: &Path) -> Option<Status> {
    let out = Command::new(verifier_binary())
        .args(["--status", "--json", "--socket"])
        .arg(socket)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The members the verifier has the kernel steer native traffic to, whichever data plane it
/// uses: the MFC entries' members (`None`: a drop entry) or the nft map's rows.
pub fn steered_members(s: &Status) -> std::collections::BTreeSet<Option<u32>> {
    s.mfc
        .iter()
        .map(|m| m.member)
        .chain(s.native.iter().map(|r| Some(r.member)))
        .collect()
}

/// A UDP socket bound to `src` that sends multicast from `src` (TTL 8).
pub fn client_socket(src: Ipv4Addr) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp");
    s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
        .expect("bind");
    s.set_multicast_ttl_v4(8).expect("ttl");
    s.set_multicast_if_v4(&src).expect("mcast if");
    s
}

/// What [`Lab::routed`] made: namespace names, and the router's interfaces for the verifier.
#[derive(Debug, Clone)]
pub struct Routed {
    pub router: String,
    pub client: String,
    pub servers: Vec<String>,
    pub interfaces: Vec<String>,
}

impl Routed {
    pub fn interfaces(&self) -> Vec<&str> {
        self.interfaces.iter().map(String::as_str).collect()
    }
}

#[derive(Debug)]
pub struct Lab {
    base: String,
    pub namespaces: Vec<String>,
    pub children: Vec<(String, Child)>,
    pub dir: tempfile::TempDir,
    pub fixture: Fixture,
    /// Whether configs name the group key file (`group_pub`); default true.
    pub group_pub: bool,
    /// Groups the verifier's key file lists besides the fixture's (a benchmark's probe group).
    pub extra_key_groups: Vec<igmp_ext::GroupKeys>,
    /// IPv6 groups the verifier's key file lists (`group = "ff3e::…"` entries).
    pub key_groups6: Vec<igmp_ext::mld_verifier::GroupKeys6>,
    /// The verifier's `[keystore]` table; when set it replaces the key file (`keys`).
    pub verifier_keystore: Option<String>,
    /// The verifier's `[liveness] misses`; `None`: its default (6, 30 ms at the members' 5 ms
    /// beacons). Labs whose tests are not about liveness allow 40 (200 ms): these tests run two
    /// labs at once on two CPUs with a kernel that does not preempt kernel code
    /// (PREEMPT_NONE), and there the members' real-time beacon threads were seen held up 12 to
    /// 46 ms, and one member silent for 114 ms, by the other lab's namespace and nftables work
    /// (the member logs `liveness beacon late`; in the lab demo under a build, 99 ms). At the
    /// default the router then rightly finds a live member dead and moves its clients for a
    /// moment, which those tests would read as a fault of what they test. `tests/liveness.rs`
    /// keeps the default.
    pub liveness_misses: Option<u32>,
    /// The `[control] group` configs name; `None`: the fixture's `CONTROL` (an IPv6 one in
    /// `control6.rs`).
    pub control_group: Option<std::net::IpAddr>,
}

impl Lab {
    pub fn new(members: u32) -> Lab {
        require_root();
        static STALE: std::sync::Once = std::sync::Once::new();
        STALE.call_once(|| stale_netns::remove_stale_namespaces(PREFIX));
        let base = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            base,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            fixture: Fixture::new(members),
            group_pub: true,
            extra_key_groups: Vec::new(),
            key_groups6: Vec::new(),
            verifier_keystore: None,
            liveness_misses: Some(40),
            control_group: None,
        };
        lab.write_keys();
        lab
    }

    /// The fixture's group key, and each member's key with a certificate for the service and
    /// the control group, valid around now.
    fn write_keys(&self) {
        let d = self.dir.path();
        keys::write_public_key(
            &d.join("group.pub"),
            &self.fixture.group_key.verifying_key(),
        )
        .expect("group.pub");
        let now = daemon_kit::wall_clock();
        for m in &self.fixture.members {
            let body = CertificateBody {
                member_id: m.id,
                member_key: m.key.verifying_key(),
                issuer: KeyId::of(&self.fixture.group_key.verifying_key()),
                not_before: Timestamp(now.0.saturating_sub(3_600_000)),
                not_after: now.saturating_add(Duration::from_secs(86_400)),
                groups: vec![GROUP, CONTROL],
                slices: igmp_ext::SliceSet::full(),
            };
            let cert = body.issue(&self.fixture.group_key).expect("issue");
            keys::write_private_key(&d.join(format!("{}.key", m.id)), &m.key).expect("key");
            keys::write_certificate(&d.join(format!("{}.cert", m.id)), &cert).expect("cert");
        }
    }

    pub fn netns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.base);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        ip(&[
            "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
        ]);
        ip(&["-n", a, "link", "set", a_if, "up"]);
        ip(&["-n", b, "link", "set", b_if, "up"]);
    }

    pub fn addr(&self, ns: &str, ifname: &str, cidr: &str) {
        ip(&["-n", ns, "addr", "add", cidr, "dev", ifname]);
    }

    /// A bridge namespace with IGMP snooping off: it floods multicast like a plain switch.
    pub fn switch(&mut self, role: &str) -> String {
        let sw = self.netns(role);
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        sw
    }

    /// Plugs a new interface `ifname` of `ns` into the switch `sw` as port `port`.
    pub fn plug(&self, sw: &str, port: &str, ns: &str, ifname: &str) {
        self.veth(sw, port, ns, ifname);
        ip(&["-n", sw, "link", "set", port, "master", "br0"]);
    }

    pub fn sysctl(&self, ns: &str, kv: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-q", "-w", kv])
            .output()
            .expect("sysctl");
        assert!(out.status.success(), "sysctl {kv} in {ns}");
    }

    /// Makes `ns` a router: IPv4 forwarding on, reverse-path filtering off for `all`,
    /// `default` and `interfaces` (clients and servers sit on different subnets).
    pub fn router_forwarding(&self, ns: &str, interfaces: &[&str]) {
        self.sysctl(ns, "net.ipv4.ip_forward=1");
        for k in ["all", "default"].iter().chain(interfaces) {
            self.sysctl(ns, &format!("net.ipv4.conf.{k}.rp_filter=0"));
        }
    }

    /// A default route in `ns` via `gateway`.
    pub fn route_default(&self, ns: &str, gateway: &str) {
        ip(&["-n", ns, "route", "add", "default", "via", gateway]);
    }

    /// The routed layout: namespaces `rtr` and `cli` (the router's `c0` 10.1.0.1/24; the
    /// client's `cl0` holding `sources`, its default route via the router), the back-end
    /// switch `ctl`, and `members` members each on its own subnet ([`Lab::routed_member`]),
    /// the router forwarding between all of them. The verifier is left to the caller.
    pub fn routed(&mut self, members: usize, sources: &[Ipv4Addr]) -> Routed {
        let router = self.netns("rtr");
        let client = self.netns("cli");
        let backend = self.switch("ctl");
        self.veth(&router, "c0", &client, "cl0");
        self.addr(&router, "c0", "10.1.0.1/24");
        for a in sources {
            self.addr(&client, "cl0", &format!("{a}/24"));
        }
        self.route_default(&client, "10.1.0.1");
        let servers: Vec<String> = (1..=members)
            .map(|i| self.routed_member(&router, &backend, i, None))
            .collect();
        let interfaces: Vec<String> = std::iter::once("c0".to_owned())
            .chain((1..=members).map(|i| format!("s{i}")))
            .collect();
        let ifs: Vec<&str> = interfaces.iter().map(String::as_str).collect();
        self.router_forwarding(&router, &ifs);
        Routed {
            router,
            client,
            servers,
            interfaces,
        }
    }

    /// Member `i` (1-based) behind `router` on its own subnet, the layout every routed test
    /// and bench uses: namespace `srv{i}`, the router's `s{i}` 10.0.i.1/24 and the member's
    /// `m0` 10.0.i.2/24 (a veth pair, or ports `link.1`/`link.2` of the switch `link.0` when
    /// others share the link), its default route via the router, and its `ctl0` 10.77.0.i/24
    /// on the back-end switch `backend` (port `p{i}`). Returns the namespace.
    pub fn routed_member(
        &mut self,
        router: &str,
        backend: &str,
        i: usize,
        link: Option<(&str, &str, &str)>,
    ) -> String {
        let ns = self.netns(&format!("srv{i}"));
        match link {
            Some((sw, router_port, member_port)) => {
                self.plug(sw, router_port, router, &format!("s{i}"));
                self.plug(sw, member_port, &ns, "m0");
            }
            None => self.veth(router, &format!("s{i}"), &ns, "m0"),
        }
        self.addr(router, &format!("s{i}"), &format!("10.0.{i}.1/24"));
        self.addr(&ns, "m0", &format!("10.0.{i}.2/24"));
        self.plug(backend, &format!("p{i}"), &ns, "ctl0");
        self.addr(&ns, "ctl0", &format!("10.77.0.{i}/24"));
        self.route_default(&ns, &format!("10.0.{i}.1"));
        ns
    }

    /// Server namespaces `srv1`, `srv2`, ... plugged into the switch `sw` as ports `p1`,
    /// `p2`, ..., each with interface `eth0` holding one of `addrs` (a /24).
    pub fn switched_servers(&mut self, sw: &str, addrs: &[Ipv4Addr]) -> Vec<String> {
        let mut servers = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let ns = self.netns(&format!("srv{}", i + 1));
            self.plug(sw, &format!("p{}", i + 1), &ns, "eth0");
            self.addr(&ns, "eth0", &format!("{a}/24"));
            servers.push(ns);
        }
        servers
    }

    /// [`Lab::spawn_verifier`], then waits until its status socket answers; returns the socket.
    pub fn start_verifier(
        &mut self,
        router: &str,
        interfaces: &[&str],
        extra_config: &str,
        rust_log: Option<&str>,
    ) -> PathBuf {
        let socket = self.spawn_verifier(router, interfaces, extra_config, rust_log);
        wait_for("the verifier's status socket", || {
            verifier_status(&socket).is_some()
        });
        socket
    }

    /// Starts the real `manycast-verifier` in `router` on `interfaces` with the fixture's group
    /// key (a file key source, or the `[keystore]` table [`Lab::verifier_keystore`] when set),
    /// `extra_config` appended to its config (e.g. `[[vip]]` tables) and `RUST_LOG` set to
    /// `rust_log` if given; its log is `verifier.log`. Returns its status socket, without
    /// waiting for it.
    pub fn spawn_verifier(
        &mut self,
        router: &str,
        interfaces: &[&str],
        extra_config: &str,
        rust_log: Option<&str>,
    ) -> PathBuf {
        self.spawn_named_verifier("verifier", router, interfaces, extra_config, rust_log)
    }

    /// [`Lab::spawn_verifier`] for one of several verifiers: its files are `<name>.toml`,
    /// `<name>.log` and the socket `<name>.sock` (`status.sock` for "verifier"), and its
    /// process is the child `name`.
    pub fn spawn_named_verifier(
        &mut self,
        name: &str,
        router: &str,
        interfaces: &[&str],
        extra_config: &str,
        rust_log: Option<&str>,
    ) -> PathBuf {
        let d = self.dir.path().to_owned();
        let (key_source, keystore) = match &self.verifier_keystore {
            Some(table) => (String::new(), format!("\n{table}")),
            None => {
                // Each verifier its own file: one being written must not be read by another.
                let keys = if name == "verifier" {
                    d.join("keys.toml")
                } else {
                    d.join(format!("{name}-keys.toml"))
                };
                let mut groups = vec![self.fixture.group_keys()];
                groups.extend(self.extra_key_groups.iter().cloned());
                let text =
                    FileKeySource::render(&groups) + &FileKeySource::render6(&self.key_groups6);
                std::fs::write(&keys, text).expect("keys");
                (format!("keys = \"{}\"\n", keys.display()), String::new())
            }
        };
        let socket = if name == "verifier" {
            d.join("status.sock")
        } else {
            d.join(format!("{name}.sock"))
        };
        let config = d.join(format!("{name}.toml"));
        let liveness = self
            .liveness_misses
            .map(|m| format!("[liveness]\nmisses = {m}\n"))
            .unwrap_or_default();
        let interfaces: Vec<String> = interfaces.iter().map(|i| format!("\"{i}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "interfaces = [{}]\n{key_source}status_socket = \"{}\"\n{extra_config}{keystore}\n\
                 [vip_pin]\npin_dir = \"{}\"\n{liveness}",
                interfaces.join(", "),
                socket.display(),
                // VIP pin mode's tc program pins its maps on a bpf filesystem outside /sys
                // (which `ip netns exec` remounts), one directory per verifier: a restarted
                // one finds them.
                bpf_pin_root()
                    .join(format!("{}-{name}", self.base))
                    .display()
            ),
        )
        .expect("verifier config");
        let log = std::fs::File::create(d.join(format!("{name}.log"))).expect("log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", router])
            .arg(verifier_binary())
            .arg("--config")
            .arg(&config);
        if let Some(level) = rust_log {
            command.env("RUST_LOG", level);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start verifier");
        self.children.push((name.into(), child));
        socket
    }

    /// Writes member `i`'s (0-based) config and starts `manycast-server` in `ns`.
    pub fn start_server(&mut self, i: usize, ns: &str, interface: &str, control_if: &str) {
        self.start_server_with(i, ns, interface, control_if, "strategy = \"reset\"", "");
    }

    /// Member `i`'s admin socket.
    pub fn admin_socket(&self, i: usize) -> PathBuf {
        let id = self.fixture.members[i].id;
        self.dir.path().join(format!("{id}.sock"))
    }

    /// Member `i`'s status from its admin socket (none until it answers).
    pub fn admin_status(&self, i: usize) -> Option<manycast_server::admin::protocol::Status> {
        use manycast_server::admin::protocol::{AdminRequest, Answer};
        use std::io::{BufRead, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.admin_socket(i)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut line = serde_json::to_string(&AdminRequest::Status {}).ok()?;
        line.push('\n');
        s.write_all(line.as_bytes()).ok()?;
        let mut reply = String::new();
        std::io::BufReader::new(s).read_line(&mut reply).ok()?;
        serde_json::from_str::<Answer>(&reply).ok()?.status
    }

    /// [`Lab::start_server`] with `top` lines (top-level keys, then any tables) placed before
    /// the `[control]` table and `tables` appended after it.
    pub fn start_server_with(
        &mut self,
        i: usize,
        ns: &str,
        interface: &str,
        control_if: &str,
        top: &str,
        tables: &str,
    ) {
        let config = self.write_config(i, interface, control_if, top, tables);
        self.spawn_server(i, ns, &config);
    }

    /// Writes member `i`'s config file (see [`Lab::start_server_with`]) and returns its path.
    /// With [`Lab::group_pub`] `false` the file has no `group_pub` (the `[keystore]` tests).
    pub fn write_config(
        &self,
        i: usize,
        interface: &str,
        control_if: &str,
        top: &str,
        tables: &str,
    ) -> PathBuf {
        let id = self.fixture.members[i].id;
        let d = self.dir.path();
        let config = d.join(format!("{id}.toml"));
        let control = self
            .control_group
            .map_or_else(|| CONTROL.to_string(), |g| g.to_string());
        let group_pub = if self.group_pub {
            format!("group_pub = \"{}\"\n", d.join("group.pub").display())
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "group = \"{GROUP}\"\ninterface = \"{interface}\"\nservice_port = {PORT}\n\
                 member_key = \"{k}\"\nmember_cert = \"{c}\"\n{group_pub}\
                 metrics_file = \"{m}\"\nadmin_socket = \"{a}\"\n{top}\n\
                 [control]\ngroup = \"{control}\"\ninterface = \"{control_if}\"\n{tables}",
                k = d.join(format!("{id}.key")).display(),
                c = d.join(format!("{id}.cert")).display(),
                m = d.join(format!("{id}.prom")).display(),
                a = self.admin_socket(i).display(),
            ),
        )
        .expect("config");
        config
    }

    /// Starts `manycast-server` for member `i` in `ns` with `config`; its log is `<id>.log`.
    pub fn spawn_server(&mut self, i: usize, ns: &str, config: &Path) {
        self.spawn_server_env(i, ns, config, &[]);
    }

    /// [`Lab::spawn_server`] with `env` added to the daemon's environment (e.g. libfaketime's).
    pub fn spawn_server_env(&mut self, i: usize, ns: &str, config: &Path, env: &[(&str, &str)]) {
        let id = self.fixture.members[i].id;
        let log = std::fs::File::create(self.dir.path().join(format!("{id}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_manycast-server"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start manycast-server");
        self.children.push((format!("{id}"), child));
    }

    /// A metric from member `i`'s metrics file (0 until the file exists).
    /// Waits until the first two members both own slices at one epoch (a two-member cluster
    /// has come up, or has settled after a change).
    pub fn wait_split(&self) {
        wait_for("both members own slices at one epoch", || {
            self.metric(0, "slices") > 0
                && self.metric(1, "slices") > 0
                && self.metric(0, "epoch") == self.metric(1, "epoch")
        });
    }

    pub fn metric(&self, i: usize, name: &str) -> u64 {
        let id = self.fixture.members[i].id;
        let text =
            std::fs::read_to_string(self.dir.path().join(format!("{id}.prom"))).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("manycast_server_{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL to the process named `name` (by its own handle; `ip netns exec` execs the
    /// binary, so the child is the daemon).
    pub fn kill(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, name: &str) -> std::process::ExitStatus {
        self.send_term(name);
        self.wait_exit(name, Duration::from_secs(20))
    }

    /// SIGTERM to the process named `name`, without waiting.
    pub fn send_term(&mut self, name: &str) {
        let (_, c) = self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("process");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    }

    /// Whether the process named `name` has exited, and how.
    pub fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let (_, c) = self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("process");
        c.try_wait().expect("wait")
    }

    /// Waits up to `limit` (a deadline for a hung run, not a timing assertion) for the exit.
    pub fn wait_exit(&mut self, name: &str, limit: Duration) -> std::process::ExitStatus {
        let (_, c) = self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("process");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "{name} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every process's log, after its warnings and errors gathered in one place first (a CI
    /// log shows only part of a long output, and the debug lines hide them).
    pub fn logs(&self) -> String {
        let mut out = String::from("==== warnings and errors\n");
        for (n, _) in &self.children {
            let p = self.dir.path().join(format!("{n}.log"));
            let log = std::fs::read_to_string(p).unwrap_or_default();
            for line in log
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            {
                out.push_str(&format!("{n}: {line}\n"));
            }
        }
        for (n, _) in &self.children {
            let p = self.dir.path().join(format!("{n}.log"));
            out.push_str(&format!(
                "==== {n}\n{}\n",
                std::fs::read_to_string(p).unwrap_or_default()
            ));
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // MANYCAST_TEST_LOGS=<dir>: every lab's logs kept there, passed or failed.
        if let Ok(keep) = std::env::var("MANYCAST_TEST_LOGS") {
            let _ = std::fs::create_dir_all(&keep);
            let t = std::thread::current();
            let name = t.name().unwrap_or("t").replace("::", "-");
            let _ = std::fs::write(format!("{keep}/{name}-{}.log", self.base), self.logs());
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // The verifiers' pinned maps (their tc filters went with the namespaces).
        let prefix = format!("{}-", self.base);
        for e in std::fs::read_dir(BPF_PIN_ROOT)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

const BPF_PIN_ROOT: &str = "/run/manycast-test-bpf";

/// A bpf filesystem for the verifiers' pinned maps (VIP pin mode on `bpf`), mounted once in
/// the tests' mount namespace, which `ip netns exec` copies.
fn bpf_pin_root() -> PathBuf {
    let mounted = std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(BPF_PIN_ROOT))
    });
    if !mounted {
        std::fs::create_dir_all(BPF_PIN_ROOT).expect("bpf pin root");
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf", BPF_PIN_ROOT])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a bpf filesystem at {BPF_PIN_ROOT}");
    }
    PathBuf::from(BPF_PIN_ROOT)
}

/// Runs `f` on a thread inside `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// UDP clients, one socket per source address, kept across rounds so that their sessions
/// (address and port) persist.
#[derive(Debug)]
pub struct Clients {
    socks: Vec<(Ipv4Addr, std::net::UdpSocket)>,
}

impl Clients {
    /// Sockets made inside `ns` stay in it wherever they are used later.
    pub fn new(ns: &str, sources: &[Ipv4Addr]) -> Clients {
        let socks = in_netns(ns, || {
            sources
                .iter()
                .map(|&src| {
                    let s = client_socket(src);
                    s.set_read_timeout(Some(Duration::from_millis(300)))
                        .expect("timeout");
                    (src, s.into())
                })
                .collect()
        });
        Clients { socks }
    }

    /// One request per source per round, `rounds` times; per source every datagram received
    /// (server address, text) in order, stray or late ones included. A request without an
    /// answer is repeated a few times.
    pub fn ask(&self, rounds: usize) -> BTreeMap<Ipv4Addr, Vec<(Ipv4Addr, String)>> {
        let mut out: BTreeMap<Ipv4Addr, Vec<(Ipv4Addr, String)>> = BTreeMap::new();
        for _ in 0..rounds {
            for (src, s) in &self.socks {
                let got = out.entry(*src).or_default();
                let before = got.len();
                for _try in 0..5 {
                    s.send_to(b"hello", SocketAddrV4::new(GROUP, PORT))
                        .expect("send");
                    let mut buf = [0u8; 128];
                    while let Ok((n, from)) = s.recv_from(&mut buf) {
                        if let std::net::SocketAddr::V4(from) = from {
                            got.push((
                                *from.ip(),
                                String::from_utf8_lossy(&buf[..n]).trim().to_owned(),
                            ));
                        }
                    }
                    if got.len() > before {
                        break;
                    }
                }
            }
        }
        out
    }
}

/// [`Clients::ask`] with fresh sockets.
pub fn ask(
    ns: &str,
    sources: &[Ipv4Addr],
    rounds: usize,
) -> BTreeMap<Ipv4Addr, Vec<(Ipv4Addr, String)>> {
    Clients::new(ns, sources).ask(rounds)
}

/// One client's persistent session under continuous load: the answer to each request in
/// order, and what went wrong.
#[derive(Debug, Clone, Default)]
pub struct SessionLog {
    /// (server address, session number) for requests r1, r2, ... in order.
    pub answers: Vec<(Ipv4Addr, u64)>,
    /// Requests never answered after every retry.
    pub lost: u64,
    /// Replies for an earlier request id (a late duplicate of a retried request).
    pub late: u64,
    /// Replies that did not parse as `m<id> <n> r<k>`.
    pub garbled: u64,
}

impl SessionLog {
    /// Requests whose number is not one more than the previous one's (a gap or a repeat).
    pub fn breaks(&self) -> Vec<(usize, u64)> {
        self.answers
            .iter()
            .enumerate()
            .filter(|(i, (_, n))| *n != *i as u64 + 1)
            .map(|(i, (_, n))| (i + 1, *n))
            .collect()
    }
}

/// Parses `m<id> <n> r<k>` into (n, k).
fn parse_numbered(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split_whitespace();
    it.next()?.strip_prefix('m')?;
    let n = it.next()?.parse().ok()?;
    let k = it.next()?.strip_prefix('r')?.parse().ok()?;
    Some((n, k))
}

impl Clients {
    /// Each client's local address and port (its session key at the servers).
    pub fn local_addrs(&self) -> Vec<SocketAddrV4> {
        self.socks
            .iter()
            .filter_map(|(_, s)| match s.local_addr() {
                Ok(std::net::SocketAddr::V4(a)) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Until `stop` is set: each client in turn sends its next request `r<k>` to the group
    /// and waits for the reply carrying `r<k>`, resending the same request id after each read
    /// timeout (up to `tries` times, then the request counts as lost and the client moves on).
    /// Returns each source's log. Meant to run on its own thread while the test reallocates.
    pub fn run(
        &self,
        stop: &std::sync::atomic::AtomicBool,
        tries: u32,
    ) -> BTreeMap<Ipv4Addr, SessionLog> {
        self.run_from(stop, tries, &mut BTreeMap::new())
    }

    /// [`Clients::run`] continuing from the last request id of each source in `next` (a
    /// second run on the same sessions: the servers answer no id below the last one).
    pub fn run_from(
        &self,
        stop: &std::sync::atomic::AtomicBool,
        tries: u32,
        next: &mut BTreeMap<Ipv4Addr, u64>,
    ) -> BTreeMap<Ipv4Addr, SessionLog> {
        let mut logs: BTreeMap<Ipv4Addr, SessionLog> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            for (src, s) in &self.socks {
                let log = logs.entry(*src).or_default();
                let k = next.entry(*src).or_insert(0);
                *k += 1;
                let mut answered = false;
                for _try in 0..tries {
                    s.send_to(format!("r{k}").as_bytes(), SocketAddrV4::new(GROUP, PORT))
                        .expect("send");
                    let mut buf = [0u8; 128];
                    while let Ok((n, from)) = s.recv_from(&mut buf) {
                        let std::net::SocketAddr::V4(from) = from else {
                            continue;
                        };
                        let text = String::from_utf8_lossy(&buf[..n]);
                        match parse_numbered(&text) {
                            Some((number, id)) if id == *k && !answered => {
                                log.answers.push((*from.ip(), number));
                                answered = true;
                                break;
                            }
                            Some(_) => log.late += 1,
                            None => log.garbled += 1,
                        }
                    }
                    if answered {
                        break;
                    }
                }
                if !answered {
                    log.lost += 1;
                }
            }
        }
        logs
    }
}
