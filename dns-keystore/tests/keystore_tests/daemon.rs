//! Starts the real daemon on a free loopback port and kills it when dropped, even on failure.

use dns_keystore::admin::Admin;
use dns_keystore::client::{ClientConfig, KeystoreClient};
use dns_keystore::validate::TrustAnchor;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const ZONE: &str = "groups.manycast.test";
pub const BIN: &str = env!("CARGO_BIN_EXE_dns-keystore");

/// The daemon the tests start: this build's, or the one `DNS_KEYSTORE_BIN` names (to run the
/// same tests and benchmark against another build, such as the one before a fix).
pub fn daemon_bin() -> String {
    std::env::var("DNS_KEYSTORE_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of the call.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
        let port = udp
            .local_addr()
            .expect("bound socket has an address")
            .port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[derive(Debug)]
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub extra: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dns-keystore-test-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

impl Daemon {
    pub fn start(tag: &str) -> Daemon {
        Self::start_with(tag, "")
    }

    pub fn start_with(tag: &str, extra: &str) -> Daemon {
        let mut d = Self::new(tag, extra);
        d.spawn();
        d
    }

    /// A daemon's directory and port, not started yet.
    pub fn new(tag: &str, extra: &str) -> Daemon {
        Daemon {
            child: None,
            dir: temp_dir(tag),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            extra: extra.to_owned(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("keystore.toml")
    }

    /// (Re)starts the daemon on the same state directory and port, and waits until it answers.
    pub fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{why}");
        }
    }

    /// As [`Daemon::spawn`], but a daemon that exits or does not answer is an `Err` with its log.
    pub fn try_spawn(&mut self) -> Result<(), String> {
        // `extra` may set its own TTL (a key may appear only once in TOML).
        let ttl = if self.extra.contains("record_ttl") {
            ""
        } else {
            "record_ttl = 300\n"
        };
        std::fs::write(
            self.config_path(),
            format!(
                "zone = \"{ZONE}\"\nstate_dir = \"{}\"\nlisten = \"{}\"\n{ttl}metrics_interval = 1\n{}\n",
                self.dir.join("state").display(),
                self.addr,
                self.extra
            ),
        )
        .expect("write the config");
        let child = Command::new(daemon_bin())
            .arg("--config")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("daemon.log")).expect("log file"))
            .spawn()
            .expect("start dns-keystore");
        self.child = Some(child);
        for _ in 0..200 {
            let out = dig(self.addr, &["+short", "+tries=1", "+time=1", ZONE, "SOA"]);
            if out.status.success() && !out.stdout.is_empty() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "dns-keystore exited ({status}); log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("dns-keystore did not answer; log:\n{}", self.log()))
    }

    /// SIGKILL: the daemon gets no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
        child.wait().expect("wait for the daemon")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn anchor_path(&self) -> PathBuf {
        self.state().join("trust-anchor.conf")
    }

    pub fn anchor(&self) -> TrustAnchor {
        TrustAnchor::parse(&std::fs::read_to_string(self.anchor_path()).expect("anchor file"))
            .expect("anchor parses")
    }

    pub fn admin(&self) -> Admin {
        let key = std::fs::read(self.state().join("tsig.key")).expect("tsig key");
        Admin::new(self.addr, ZONE, "manycast-admin", key, 300).expect("admin client")
    }

    pub fn client(&self) -> KeystoreClient {
        KeystoreClient::new(ClientConfig::new(self.addr, self.anchor()))
    }

    pub fn metric(&self, name: &str) -> u64 {
        let text = std::fs::read_to_string(self.state().join("metrics.prom")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e} (install bind9-dnsutils and knot-dnsutils)"))
}

pub fn dig(addr: SocketAddr, args: &[&str]) -> Output {
    let at = format!("@{}", addr.ip());
    let port = addr.port().to_string();
    let mut all = vec![at.as_str(), "-p", port.as_str(), "+norec"];
    all.extend_from_slice(args);
    run("dig", &all)
}

pub fn kdig(addr: SocketAddr, args: &[&str]) -> Output {
    let at = format!("@{}", addr.ip());
    let port = addr.port().to_string();
    let mut all = vec![at.as_str(), "-p", port.as_str(), "+norec"];
    all.extend_from_slice(args);
    run("kdig", &all)
}

/// delv validating from `anchor` as the root of trust for the zone.
pub fn delv(addr: SocketAddr, anchor: &Path, args: &[&str]) -> String {
    let at = format!("@{}", addr.ip());
    let port = addr.port().to_string();
    let anchor = anchor.display().to_string();
    let root = format!("+root={ZONE}");
    let mut all = vec![
        "-a",
        anchor.as_str(),
        at.as_str(),
        "-p",
        port.as_str(),
        root.as_str(),
    ];
    all.extend_from_slice(args);
    let out = run("delv", &all);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fixture group's record as the tests publish it: protected, `f`'s group key, a VIP.
pub fn group_record(f: &igmp_ext::fixtures::Fixture) -> dns_keystore::record::GroupRecord {
    dns_keystore::record::GroupRecord {
        group: f.group,
        name: "web".into(),
        owner: "ops@example.org".into(),
        protected: true,
        keys: vec![f.group_key.verifying_key()],
        not_before: igmp_ext::Timestamp::from_secs(1_700_000_000),
        not_after: igmp_ext::Timestamp::from_secs(4_000_000_000),
        revoked: vec![],
        vip: Some(std::net::Ipv4Addr::new(203, 0, 113, 10)),
    }
}
