//! End-to-end tests on the mininet lab (`lab/`). They need root and the Debian `mininet` package
//! (`make test` installs it). Mininet's interface names are fixed, so lab tests never run two
//! labs at once: each takes `LAB_LOCK` first.

use std::process::Command;
use std::sync::Mutex;

static LAB_LOCK: Mutex<()> = Mutex::new(());

fn lab(args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/lab.py");
    Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run lab/lab.py with /usr/bin/python3")
}

/// The default topology comes up: every host reaches every other through the router, client
/// source addresses from all over the space are routed, and the lab leaves nothing behind.
#[test]
fn lab_topology_smoke() {
    let _guard = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = lab(&["smoke", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "lab smoke printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let results = v["results"].as_object().expect("results object");
    // 8 hosts (4 servers, attacker, keystore, 2 clients): 56 ordered pairs, plus 8 client sources.
    assert_eq!(results.len(), 56 + 8, "{results:?}");
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, ok)| ok != &&serde_json::Value::Bool(true))
        .collect();
    assert!(failed.is_empty(), "unreachable: {failed:?}");
    assert!(out.status.success());
    let links = Command::new("ip")
        .args(["-br", "link"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links
            .lines()
            .any(|l| l.starts_with("r1-") || l.starts_with("s53")),
        "lab left links: {links}"
    );
}
