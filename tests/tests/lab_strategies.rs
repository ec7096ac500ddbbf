//! Every reallocation strategy under load in the lab (issue 6 "done when", issue 7 item 3):
//! each test runs `lab/reallocate.py --strategies NAME` with this build's debug daemons on the
//! mininet lab: long-lived client sessions (UDP sessions, or keep-alive TCP connections to the
//! VIP under pin) keep request load on the service while a member joins, the admin moves units
//! and a member is drained. IPv6 sessions run beside the IPv4 ones on the dual-stack cluster
//! (issue 15: from the clients' IPv6 sources to the native service's group6, or to the IPv6 VIP
//! under pin) and are judged by the same rules, per family. The script counts, per session,
//! broken sessions, lost requests and repeated answers; the tests assert on those counts (never
//! a timing). Root and the Debian `mininet` package are needed; each test holds the
//! machine-wide lab lock.

mod lab_support;

use lab_support::{assert_no_leftovers, daemon_bin_dir, lab_lock};
use serde_json::Value;
use std::process::Command;

/// Sessions per test: enough for every server to hold some and every move to hit some.
const CONNECTIONS: u32 = 120;
/// IPv6 sessions beside them: one per IPv6 source of each client host (64 each, every one in
/// a /56 of its own), fewer than IPv4 to keep the test's time.
const CONNECTIONS6: u32 = 64;

/// Runs one strategy; its result, after checking that it left no process and no lab link.
fn reallocate(strategy: &str) -> Value {
    let bin_dir = daemon_bin_dir();
    let _lock = lab_lock();
    let out = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/reallocate.py"))
        .env("MANYCAST_LAB_LOCK_HELD", "1")
        .args(["--strategies", strategy, "--connections"])
        .arg(CONNECTIONS.to_string())
        .arg("--connections6")
        .arg(CONNECTIONS6.to_string())
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--run-dir")
        .arg(bin_dir.join("lab-reallocate").join(strategy))
        .output()
        .expect("run lab/reallocate.py with /usr/bin/python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{strategy} failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{strategy} printed no JSON ({e}): {stdout}\n{stderr}"));
    assert_no_leftovers(strategy, &v, &bin_dir);
    let r = v["strategies"][strategy].clone();
    assert_eq!(r["connections"], CONNECTIONS, "{r}");
    assert_eq!(r["ipv6"]["connections"], CONNECTIONS6, "{r}");
    // Not vacuous: the moves took units that hold sessions of each family away from their
    // first owner.
    for family in [&r, &r["ipv6"]] {
        assert!(
            count(family, "in_moved_units") > 0,
            "no session in a moved unit: {r}"
        );
    }
    r
}

fn count(r: &Value, key: &str) -> u64 {
    r[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {r}"))
}

fn server_total(r: &Value, counter: &str) -> u64 {
    let servers = r["servers"].as_object().expect("servers");
    servers
        .values()
        .map(|m| m[counter].as_u64().unwrap_or(0))
        .sum()
}

/// Forward, handoff and pin: no session broke, no request was lost, nothing was answered twice.
fn assert_unbroken(r: &Value) {
    assert_eq!(
        (count(r, "broken"), count(r, "lost"), count(r, "repeated")),
        (0, 0, 0),
        "broken, lost, repeated: {r}"
    );
}

/// Reset: the sessions whose slice moved got a reset reply and restarted at 1 with their new
/// owner (one reset per change of server), the others kept their server and numbers, and every
/// session ends at its unit's final owner; IPv4 and IPv6 sessions alike.
#[test]
fn lab_reset_restarts_exactly_the_moved_sessions_at_their_new_owner() {
    let r = reallocate("reset");
    for family in [&r, &r["ipv6"]] {
        assert_eq!(count(family, "reset_anomalies"), 0, "{r}");
        let moved = count(family, "moved");
        assert!(moved > 0, "no session moved: {r}");
        assert_eq!(
            count(family, "broken"),
            moved,
            "a session that kept its server broke: {r}"
        );
        assert!(count(family, "resets_received") >= moved, "{r}");
    }
    assert!(server_total(&r, "resets6_total") > 0, "{r}");
}

/// Forward: every session stays with the server it started on (the new owners pass its
/// datagrams on), none broke or lost a request, and forwarding did happen, for each family.
#[test]
fn lab_forward_keeps_every_session_at_its_first_server() {
    let r = reallocate("forward");
    for family in [&r, &r["ipv6"]] {
        assert_unbroken(family);
        assert_eq!(count(family, "moved"), 0, "a session changed server: {r}");
    }
    for counter in ["forwarded_total", "forwarded6_total"] {
        assert!(server_total(&r, counter) > 0, "nothing in {counter}: {r}");
    }
    // The drained member left once the load stopped and its sessions went idle.
    assert!(r["drained_exit_after_load_ms"].is_u64(), "{r}");
}

/// Handoff: sessions of moved slices continue at their new owner with the next number; none
/// broke or lost a request; IPv4 and IPv6 sessions alike.
#[test]
fn lab_handoff_continues_every_moved_session_at_its_new_owner() {
    let r = reallocate("handoff");
    for family in [&r, &r["ipv6"]] {
        assert_unbroken(family);
        assert!(count(family, "moved") > 0, "no session changed server: {r}");
    }
    for counter in ["handoff_received_total", "received6_total"] {
        assert!(server_total(&r, counter) > 0, "nothing in {counter}: {r}");
    }
}

/// Pin (VIP mode, the verifier pinning established connections): every keep-alive connection,
/// to the IPv4 VIP or the IPv6 one, keeps answering from its first server through the join, the
/// move and the drain; the drained member leaves once the connections close.
#[test]
fn lab_pin_keeps_every_connection_across_the_moves() {
    let r = reallocate("pin");
    for family in [&r, &r["ipv6"]] {
        assert_unbroken(family);
        assert_eq!(
            count(family, "moved"),
            0,
            "a connection changed server: {r}"
        );
    }
    assert!(r["drained_exit_after_load_ms"].is_u64(), "{r}");
}
