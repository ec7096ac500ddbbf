//! What the lab test binaries share: the machine-wide lab lock, this build's daemons, and the
//! check that a lab script left nothing behind.

use std::sync::Mutex;

static LAB_LOCK: Mutex<()> = Mutex::new(());

/// Holds the in-process mutex and the machine-wide lab flock while alive.
pub struct LabLock {
    _flock: nix::fcntl::Flock<std::fs::File>,
    _guard: std::sync::MutexGuard<'static, ()>,
}

pub fn lab_lock() -> LabLock {
    let guard = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/manycast-lab.lock")
        .expect("open /tmp/manycast-lab.lock");
    let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock /tmp/manycast-lab.lock: {e}"));
    LabLock {
        _flock: flock,
        _guard: guard,
    }
}

#[path = "../../../testkit/workspace_bin.rs"]
mod workspace_bin;

/// The directory holding this build's daemons and admin tool (`target/<profile>/`), each built
/// here if missing or stale.
pub fn daemon_bin_dir() -> std::path::PathBuf {
    let server = workspace_bin::workspace_bin("manycast-server", "manycast-server");
    workspace_bin::workspace_bin("manycast-server", "manycastctl");
    workspace_bin::workspace_bin("manycast-verifier", "manycast-verifier");
    workspace_bin::workspace_bin("dns-keystore", "dns-keystore");
    server.parent().expect("target/<profile>").to_owned()
}

/// After a lab script printed `v` (with the `pids` it started): none of them still runs a
/// daemon of `bin_dir` or a lab script, no mininet host shell is left, and no lab link or
/// bridge.
pub fn assert_no_leftovers(name: &str, v: &serde_json::Value, bin_dir: &std::path::Path) {
    for pid in v["pids"].as_array().expect("pids") {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains(bin_dir.to_str().expect("utf-8 path")) && !cmdline.contains("/lab/"),
            "left running: {pid} {cmdline}"
        );
    }
    let procs = std::fs::read_dir("/proc").expect("/proc");
    for p in procs.filter_map(Result::ok) {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("mininet:"),
            "{name} left a mininet host: {:?}",
            p.path()
        );
    }
    let links = std::process::Command::new("ip")
        .args(["-br", "link"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    let left: Vec<_> = links
        .lines()
        .filter(|l| {
            let n = l.split_whitespace().next().unwrap_or_default();
            n.starts_with("r1-")
                || n.starts_with("srv")
                || ["s1", "s2", "s3", "s4", "s53", "s77", "s101", "s102"].contains(&n)
        })
        .collect();
    assert!(left.is_empty(), "{name} left links: {left:?}");
}
