//! Removing the namespaces of test processes that died without unwinding (SIGKILL, or a
//! `timeout` that sent SIGTERM): named `<prefix><pid>-…`, removed when that pid is gone. Their
//! daemons are killed first: a namespace's processes outlive `ip netns del`, and a leftover
//! verifier or member would answer the next run's joins. Std only, so that every harness can
//! include it by path.

use std::process::Command;

pub fn remove_stale_namespaces(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_err() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &name]).output() {
            for p in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", p]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
}
