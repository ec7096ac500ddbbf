//! The real `dns-keystore` daemon for this package's tests and benchmarks (`tests/keystore`,
//! `benches/insider.rs`), and the `manycastctl` runs that update and read it. Included by
//! `#[path]`; it needs a root module `harness` (`tests/harness.rs`) for `workspace_bin`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `dns-keystore` daemon of this build.
fn keystore_bin() -> PathBuf {
    crate::harness::workspace_bin::workspace_bin("dns-keystore", "dns-keystore")
}

pub const ZONE: &str = "groups.manycast.test";

/// Runs this build's `manycastctl` with `args`.
pub fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_manycastctl"))
        .args(args)
        .output()
        .expect("run manycastctl")
}

/// Its standard output, after asserting that it succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `manycastctl <head> <common> <tail>`.
pub fn ctl_args(head: &[&str], common: &[String], tail: &[&str]) -> Output {
    let mut all: Vec<&str> = head.to_vec();
    all.extend(common.iter().map(String::as_str));
    all.extend_from_slice(tail);
    ctl(&all)
}

/// A port free for both UDP and TCP on `ip` (in the calling thread's namespace).
fn free_port(ip: Ipv4Addr) -> u16 {
    loop {
        let udp = UdpSocket::bind((ip, 0)).expect("bind an ephemeral UDP port");
        let port = udp.local_addr().expect("bound address").port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// The daemon, killed when dropped (also when an assertion fails).
pub struct Keystore {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    /// Its state directory: TSIG key and trust anchor.
    pub state: PathBuf,
}

impl Drop for Keystore {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Keystore {
    pub fn start(dir: &Path) -> Keystore {
        Keystore::start_with_ttl(dir, 300)
    }

    /// The daemon on loopback with `record_ttl` seconds on its records.
    pub fn start_with_ttl(dir: &Path, record_ttl: u32) -> Keystore {
        Keystore::start_on(dir, Ipv4Addr::LOCALHOST, record_ttl)
    }

    /// The daemon listening on `ip` (a free port) with `record_ttl` seconds on its records, in
    /// the calling thread's network namespace; waits until it answers.
    pub fn start_on(dir: &Path, ip: Ipv4Addr, record_ttl: u32) -> Keystore {
        let addr = SocketAddr::from((ip, free_port(ip)));
        let state = dir.join("keystore-state");
        let config = dir.join("keystore.toml");
        std::fs::write(
            &config,
            format!(
                "zone = \"{ZONE}\"\nstate_dir = \"{}\"\nlisten = \"{addr}\"\nrecord_ttl = {record_ttl}\n",
                state.display()
            ),
        )
        .expect("write the keystore config");
        let log = std::fs::File::create(dir.join("keystore.log")).expect("log file");
        let child = Command::new(keystore_bin())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dns-keystore");
        let k = Keystore {
            child: Some(child),
            addr,
            state,
        };
        for _ in 0..200 {
            let out = k.dig(&["+tries=1", "+time=1", ZONE, "SOA"]);
            if out.status.success() && !out.stdout.is_empty() {
                return k;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "dns-keystore did not answer; log:\n{}",
            std::fs::read_to_string(dir.join("keystore.log")).unwrap_or_default()
        );
    }

    pub fn dig(&self, args: &[&str]) -> Output {
        let server = match self.addr.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => a.to_string(),
        };
        Command::new("dig")
            .args([
                &format!("@{server}"),
                "-p",
                &self.addr.port().to_string(),
                "+norec",
                "+short",
            ])
            .args(args)
            .output()
            .expect("run dig (install bind9-dnsutils)")
    }

    /// The TXT text at `name` as dig prints it, character-strings joined.
    pub fn txt(&self, name: &str) -> String {
        let out = String::from_utf8_lossy(&self.dig(&[name, "TXT"]).stdout).into_owned();
        out.trim().trim_matches('"').split("\" \"").collect()
    }

    pub fn a(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.dig(&[name, "A"]).stdout)
            .trim()
            .to_owned()
    }

    /// The options every update command takes.
    pub fn update_args(&self) -> Vec<String> {
        vec![
            "--server".into(),
            self.addr.to_string(),
            "--tsig-key".into(),
            self.state.join("tsig.key").display().to_string(),
            "--zone".into(),
            ZONE.into(),
        ]
    }

    pub fn show_args(&self) -> Vec<String> {
        vec![
            "--server".into(),
            self.addr.to_string(),
            "--trust-anchor".into(),
            self.state.join("trust-anchor.conf").display().to_string(),
        ]
    }

    /// `manycastctl keystore <head> <update options> --ttl <ttl> <tail>` (in the calling
    /// thread's namespace); its output, after asserting that it succeeded.
    pub fn update(&self, ttl: u32, head: &[&str], tail: &[&str]) -> String {
        let mut upd = self.update_args();
        upd.extend(["--ttl".to_owned(), ttl.to_string()]);
        ok(&ctl_args(head, &upd, tail))
    }

    /// Publishes `group`'s record (name `web`) with the group key in `pub_file`.
    pub fn publish(&self, ttl: u32, group: Ipv4Addr, pub_file: &Path) -> String {
        self.update(
            ttl,
            &["keystore", "publish"],
            &[
                "--group",
                &group.to_string(),
                "--name",
                "web",
                "--owner",
                "ops@example.org",
                "--group-pub",
                &pub_file.display().to_string(),
            ],
        )
    }

    /// Revokes the member key `member_key` (a key id or key file) in `group`'s record.
    pub fn revoke(&self, ttl: u32, group: Ipv4Addr, member_key: &str) -> String {
        self.update(
            ttl,
            &["keystore", "revoke"],
            &["--group", &group.to_string(), "--member-key", member_key],
        )
    }

    /// The lines of a daemon's `[keystore]` table (header not included) that point at
    /// `server` (normally [`Keystore::addr`]) with this keystore's trust anchor, the refresh
    /// interval and the daemon's own rollback marks file `marks`.
    pub fn client_lines(&self, server: &str, refresh_ms: u64, marks: &Path) -> String {
        format!(
            "server = \"{server}\"\ntrust_anchor = \"{}\"\nrefresh_ms = {refresh_ms}\n\
             rollback_marks = \"{}\"\n",
            self.state.join("trust-anchor.conf").display(),
            marks.display()
        )
    }
}
