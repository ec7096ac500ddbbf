//! Issue 17, items 1-3: acknowledged updates survive SIGKILL whole, damaged state stops the
//! start, and a full disk (a small tmpfs the test mounts) refuses updates and first starts
//! cleanly.

use super::burst::{self, Found, Model, Rng};
use super::daemon::*;
use daemon_kit::wall_clock;
use dns_keystore::admin::AdminError;
use dns_keystore::client::FetchError;
use dns_keystore::record::GroupRecord;
use igmp_ext::ed25519_dalek::SigningKey;
use igmp_ext::Timestamp;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STATE_FILE: &str = "zone.state";

fn record(i: u8) -> GroupRecord {
    GroupRecord {
        group: Ipv4Addr::new(232, 7, 7, i),
        name: format!("d{i}"),
        owner: "ops@example.org".into(),
        protected: true,
        keys: vec![SigningKey::from_bytes(&[i | 0x40; 32]).verifying_key()],
        not_before: Timestamp::from_secs(1_700_000_000),
        not_after: Timestamp::from_secs(4_000_000_000),
        revoked: vec![],
        vip: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The record as the validating client sees it at its group-address name.
fn fetched(d: &Daemon, r: &GroupRecord) -> Result<GroupRecord, FetchError> {
    runtime()
        .block_on(d.client().fetch(r.group, wall_clock()))
        .map(|(r, _, _)| r)
}

fn publish(d: &Daemon, r: &GroupRecord) -> Result<(), AdminError> {
    runtime().block_on(d.admin().publish(r))
}

#[test]
fn acknowledged_updates_survive_sigkill_whole() {
    let seed = wall_clock().as_millis();
    eprintln!("crash trials: seed {seed}");
    let mut rng = Rng::new(seed);
    let mut d = Daemon::start("crash");
    let mut model = Arc::new(Mutex::new(Model::default()));
    let mut total = Found::default();
    for _ in 0..4 {
        total += burst::trial(&mut d, &mut model, &mut rng, true);
    }
    let acked = model.lock().expect("model").acked_updates;
    eprintln!("crash trials: {acked} acknowledged updates, {total:?}");
    assert!(acked > 0 && total.checked > 0, "no update was acknowledged");
    assert_eq!(
        total.acked_lost, 0,
        "acknowledged updates lost (seed {seed})"
    );
    assert_eq!(total.torn, 0, "torn updates (seed {seed})");
}

/// Starts the daemon expecting it to refuse: its exit status and stderr. One that serves
/// instead is killed after 10 s and reported.
fn start_refused(d: &Daemon) -> (std::process::ExitStatus, String) {
    let err = d.dir.join("refused.log");
    let mut child = Command::new(daemon_bin())
        .arg("--config")
        .arg(d.config_path())
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("log file"))
        .spawn()
        .expect("start dns-keystore");
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            let soa = text(&dig(d.addr, &["+short", ZONE, "SOA"]));
            panic!("the daemon started on damaged state (SOA {soa:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(err).unwrap_or_default())
}

#[test]
fn damaged_state_stops_the_start_with_one_line() {
    let mut d = Daemon::start("damaged");
    let r = record(1);
    publish(&d, &r).expect("publish");
    assert!(d.stop().success());
    let path = d.state().join(STATE_FILE);
    let good = std::fs::read(&path).expect("state file");

    let mut flipped = good.clone();
    let at = good.len() / 2;
    flipped[at] ^= 0x20;
    let cases: [(&str, Option<Vec<u8>>); 4] = [
        ("cut short", Some(good[..good.len() - 7].to_vec())),
        ("a byte changed", Some(flipped)),
        ("empty", Some(vec![])),
        ("missing next to the keys", None),
    ];
    for (what, bytes) in cases {
        match bytes {
            Some(b) => std::fs::write(&path, b).expect("damage"),
            None => std::fs::remove_file(&path).expect("remove"),
        }
        let (status, err) = start_refused(&d);
        assert!(!status.success(), "{what}: exit {status}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(
            err.starts_with("dns-keystore: state ") && err.contains(STATE_FILE),
            "{what}: {err}"
        );
    }

    // Restored, it serves the record; a leftover temporary file (an unanswered update's) is
    // removed, not read.
    std::fs::write(&path, &good).expect("restore");
    std::fs::write(d.state().join("zone.state.tmp"), &good[..10]).expect("temp");
    d.spawn();
    assert_eq!(fetched(&d, &r), Ok(r.clone()));
    assert!(!d.state().join("zone.state.tmp").exists());
}

/// A tmpfs of `size` bytes mounted over `at`, unmounted when dropped (also on a failed test).
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path, size: usize) -> Option<SmallDisk> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        if !root {
            eprintln!("full-disk tests need root to mount a tmpfs: skipped");
            return None;
        }
        std::fs::create_dir_all(at).expect("mount point");
        let out = run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                at.to_str().expect("utf-8 path"),
            ],
        );
        assert!(out.status.success(), "mount tmpfs: {out:?}");
        Some(SmallDisk { at: at.to_owned() })
    }

    /// Fills the disk, then frees `pages` 4 KiB pages (tmpfs allocates whole pages).
    fn fill_leaving(&self, pages: u64) {
        let path = self.at.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = [0xa5u8; 4096];
        let mut len = 0u64;
        while f.write_all(&chunk).is_ok() {
            len += 4096;
        }
        let _ = f.flush();
        f.set_len(len.saturating_sub(pages * 4096))
            .expect("truncate filler");
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.at.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

#[test]
fn full_disk_at_first_start_leaves_a_state_the_next_start_uses() {
    // Each amount of free space stops the first start at a different file (or not at all).
    for pages in 0..7 {
        let mut d = Daemon::new(&format!("firstfull{pages}"), "");
        let Some(disk) = SmallDisk::mount(&d.state(), 256 * 1024) else {
            return;
        };
        disk.fill_leaving(pages);
        match d.try_spawn() {
            Ok(()) => {
                eprintln!("{pages} pages free: the first start serves");
                d.kill();
            }
            Err(why) => {
                eprintln!(
                    "{pages} pages free: the first start stops: {}",
                    d.log().lines().last().unwrap_or_default()
                );
                let log = d.log();
                let last = log.lines().last().unwrap_or_default();
                assert!(
                    last.starts_with("dns-keystore: state "),
                    "{pages} pages free: {why}"
                );
            }
        }
        disk.free();
        if let Err(why) = d.try_spawn() {
            panic!("{pages} pages free at first start, then freed: {why}");
        }
        let soa = text(&dig(d.addr, &["+short", ZONE, "SOA"]));
        assert!(soa.contains(" 3600 600 86400 "), "{pages}: SOA {soa:?}");
        let r = record(2);
        publish(&d, &r).expect("publish after space was freed");
        assert_eq!(fetched(&d, &r), Ok(r.clone()), "{pages} pages");
        d.kill();
        drop(disk);
    }
}

/// The TXT text at `name` as dig shows it (empty when absent).
fn dig_txt(d: &Daemon, name: &str) -> String {
    text(&dig(d.addr, &["+short", name, "TXT"]))
        .trim()
        .to_owned()
}

#[test]
fn full_disk_refuses_updates_and_keeps_serving_the_last_good_zone() {
    let mut d = Daemon::new("fullupdate", "");
    d.extra = format!(
        "metrics_file = \"{}\"",
        d.dir.join("metrics.prom").display()
    );
    let Some(disk) = SmallDisk::mount(&d.state(), 256 * 1024) else {
        return;
    };
    d.spawn();
    let a = record(3);
    publish(&d, &a).expect("publish with space");
    // With 0 to 3 pages free, each update either applies whole or is refused with SERVFAIL and
    // changes nothing, now and after a crash; the last good zone is served throughout.
    let mut outcomes = vec![];
    for pages in 0..4u8 {
        disk.fill_leaving(u64::from(pages));
        let b = record(10 + pages);
        let applied = match publish(&d, &b) {
            Ok(()) => true,
            Err(err) => {
                assert!(matches!(err, AdminError::Refused(_)), "{err}");
                assert!(
                    err.to_string().contains("SERVFAIL")
                        || err.to_string().contains("Server Failure"),
                    "{err}"
                );
                false
            }
        };
        eprintln!(
            "{pages} pages free: update {}",
            if applied { "applied" } else { "refused" }
        );
        let expect = if applied {
            Ok(b.clone())
        } else {
            Err(FetchError::NoRecord)
        };
        assert_eq!(fetched(&d, &b), expect, "{pages} pages free");
        assert_eq!(fetched(&d, &a), Ok(a.clone()), "{pages} pages free");
        outcomes.push((b, applied));
        disk.free();
    }
    let refused = outcomes.iter().filter(|(_, applied)| !applied).count();
    assert!(refused > 0, "no update was refused on a full disk");
    let metrics = d.dir.join("metrics.prom");
    let counted = format!("keystore_state_write_failures_total {refused}\n");
    for _ in 0..50 {
        if std::fs::read_to_string(&metrics)
            .unwrap_or_default()
            .contains(&counted)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text_now = std::fs::read_to_string(&metrics).unwrap_or_default();
    assert!(text_now.contains(&counted), "{text_now}");
    let out = delv(
        d.addr,
        &d.anchor_path(),
        &["d3.groups.manycast.test", "TXT"],
    );
    assert!(out.contains("; fully validated"), "{out}");

    // After a crash: what was applied is there, whole under both names; nothing else.
    d.kill();
    d.spawn();
    assert_eq!(fetched(&d, &a), Ok(a.clone()));
    for (b, applied) in &outcomes {
        let expect = if *applied {
            Ok(b.clone())
        } else {
            Err(FetchError::NoRecord)
        };
        assert_eq!(fetched(&d, b), expect, "{} after the restart", b.name);
        let at_group = format!(
            "{}.{}.{}.{}.g.{ZONE}",
            b.group.octets()[3],
            b.group.octets()[2],
            b.group.octets()[1],
            b.group.octets()[0]
        );
        let at_service = format!("{}.{ZONE}", b.name);
        assert_eq!(
            dig_txt(&d, &at_group),
            dig_txt(&d, &at_service),
            "{} torn",
            b.name
        );
    }
    // With space again, updates apply.
    let c = record(20);
    publish(&d, &c).expect("publish after space was freed");
    assert_eq!(fetched(&d, &c), Ok(c.clone()));
    assert!(d.stop().success());
}
