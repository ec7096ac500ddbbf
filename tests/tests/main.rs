//! End-to-end tests on the mininet lab (`lab/`). They need root and the Debian `mininet` package
//! (`make test` installs it). Mininet's host and interface names are fixed, so only one lab runs
//! on the machine at a time: each test holds the machine-wide lab lock (flock on
//! `/tmp/manycast-lab.lock`, the one the lab scripts take themselves) from before the lab starts
//! until its leftover checks are done, and tells the scripts so (`MANYCAST_LAB_LOCK_HELD=1`).

mod lab_support;

use lab_support::{assert_no_leftovers, daemon_bin_dir, lab_lock};
use std::process::Command;

/// A lab script run with /usr/bin/python3 (Debian's mininet lives there); the caller holds
/// the lab lock.
fn python(script: &str) -> Command {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(format!("{}/../lab/{script}", env!("CARGO_MANIFEST_DIR")))
        .env("MANYCAST_LAB_LOCK_HELD", "1");
    cmd
}

fn lab(args: &[&str]) -> std::process::Output {
    python("lab.py")
        .args(args)
        .output()
        .expect("run lab/lab.py with /usr/bin/python3")
}

/// The default topology comes up: every host reaches every other through the router, client
/// source addresses from all over the space are routed, and the lab leaves nothing behind.
#[test]
fn lab_topology_smoke() {
    let _lock = lab_lock();
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
    // 8 hosts (4 servers, attacker, keystore, 2 clients): 56 ordered pairs, plus 8 client
    // sources and 8 client IPv6 sources (to srv1's IPv6 address).
    assert_eq!(results.len(), 56 + 8 + 8, "{results:?}");
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

fn reasons(v: &serde_json::Value) -> Vec<(String, u64)> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// The demo story, quick and non-interactive, with this build's daemons: the real keystore,
/// verifier and four servers on the lab; 128 client sources under load (strategy handoff); a
/// `manycastctl drain` and `resume` of one server; a second service in VIP mode, dual stack
/// (pinned IPv4 and IPv6 VIPs, nginx on every server with a health check of it, curl from IPv4
/// and IPv6 client sources, wrk, nginx killed on one server and started again); a planned leave (SIGTERM); a SIGKILL and
/// its takeover; a forged and a replayed join from the attacker. Checks what the clients, curl,
/// wrk, `manycastctl` and the verifier recorded (never a timing), then that nothing is left.
#[test]
fn lab_demo_story_native_and_vip_drain_takeover_and_attacks() {
    let bin_dir = daemon_bin_dir();
    let out_dir = bin_dir.join("lab-e2e-demo");
    let _lock = lab_lock();
    let out = python("demo.py")
        // 1000 ms failure detection, as the scenarios: debug daemons on a shared machine.
        .args(["--quick", "--json", "--down-after-ms", "1000", "--bin-dir"])
        .arg(&bin_dir)
        .arg("--out-dir")
        .arg(&out_dir)
        .output()
        .expect("run lab/demo.py with /usr/bin/python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("demo printed no JSON ({e}): {stdout}\n{stderr}"));
    assert!(out.status.success(), "{stderr}");

    // 2 clients × 64 sources, each answered by exactly one server while the cluster is stable:
    // with four servers, with one drained, resumed, after the planned leave, after the crash.
    assert_eq!(v["sources_total"], 128, "{stderr}");
    for phase in [
        "steady",
        "drained",
        "resumed",
        "before_crash",
        "after_crash",
    ] {
        let p = &v["phases"][phase];
        assert_eq!(p["sources"], 128, "{phase}: {p}");
        assert_eq!(p["exactly_one"], 128, "{phase}: {p}\n{stderr}");
    }
    // The admin tool's drain: the drained member (m3) owns no unit, the others every unit;
    // resume gives it units again. Under handoff no client session broke across the drain,
    // the resume and the SIGTERM leave: every client's numbers continue, no gap, no repeat.
    let admin = &v["admin"];
    let units = |k: &str, m: &str| admin[k]["units"][m].as_u64().unwrap_or(0);
    assert!(units("before", "3") > 0, "{admin}");
    assert_eq!(units("drained", "3"), 0, "{admin}");
    assert_eq!(
        ["1", "2", "4"]
            .iter()
            .map(|m| units("drained", m))
            .sum::<u64>(),
        256,
        "{admin}"
    );
    assert!(units("resumed", "3") > 0, "{admin}");
    let sessions = &v["sessions"];
    assert_eq!(sessions["strategy"], "handoff");
    for window in ["admin_drain_resume", "sigterm_leave", "planned"] {
        let b = &sessions[window];
        assert_eq!(b["sources_broken"], 0, "{window}: {b}");
        assert_eq!(
            (&b["gaps"], &b["repeats"]),
            (&0.into(), &0.into()),
            "{window}"
        );
    }

    // VIP mode: every curl source answered, and by one server each time (two requests each),
    // more than one server in use; the 32 IPv6 sources through the IPv6 VIP each by the owner
    // of its unit in the verifier's status, more than one server among them too; wrk from both
    // client hosts got answers without errors.
    let vip = &v["vip"];
    let curl_sources = vip["curl_sources"].as_u64().expect("curl_sources");
    assert!(curl_sources >= 16, "{vip}");
    assert_eq!(vip["curl6_sources"], 32, "{vip}");
    assert_eq!(vip["curl6_verifier_owner"], 32, "{vip}");
    assert!(
        vip["curl6_per_server"]
            .as_object()
            .expect("IPv6 per server")
            .len()
            > 1,
        "{vip}"
    );
    assert_eq!(vip["curl_one_server"], curl_sources, "{vip}");
    assert_eq!(vip["curl_unanswered"], serde_json::json!([]), "{vip}");
    assert!(
        vip["curl_per_server"]
            .as_object()
            .expect("per server")
            .len()
            > 1,
        "{vip}"
    );
    for (cli, w) in vip["wrk"].as_object().expect("wrk") {
        assert_eq!(w["rc"], 0, "{cli}: {w}");
        assert!(w["requests"].as_u64().unwrap_or(0) > 0, "{cli}: {w}");
        assert_eq!(
            (&w["socket_errors"], &w["non_2xx"]),
            (&0.into(), &0.into()),
            "{cli}: {w}"
        );
        assert!(
            w["server"].as_str().unwrap_or("").starts_with("srv"),
            "{cli}: {w}"
        );
    }
    assert_eq!(vip["wrk"].as_object().map(|o| o.len()), Some(2), "{vip}");
    // nginx SIGKILLed on one server, its daemons alive: its check says dead, its VIP claims
    // (both families) are withdrawn and its sampled sources get their page from other servers,
    // the IPv6 ones from their new owners; nginx started again: the member is back in and
    // answers sampled sources of both families again, each IPv6 one by its owner, none left
    // unanswered.
    let h = &vip["health"];
    let victim = h["victim"].as_str().expect("victim");
    let moved = h["moved_to"].as_object().expect("moved_to");
    assert!(!moved.is_empty(), "{h}");
    assert!(
        moved.values().all(|s| s
            .as_str()
            .is_some_and(|s| s != victim && s.starts_with("srv"))),
        "{h}"
    );
    assert_eq!(
        h["down_seen"],
        serde_json::json!({"up": false, "out": "immediate", "claim": false, "claim6": false}),
        "{h}"
    );
    for key in ["sources6", "back_sources6"] {
        assert!(!h[key].as_array().expect(key).is_empty(), "{key}: {h}");
    }
    assert_eq!(
        h["not_owner6"],
        serde_json::json!({"moved": [], "again": []}),
        "{h}"
    );
    assert_eq!(h["unanswered_after"], serde_json::json!([]), "{h}");

    // Every source of the killed server is answered by another one afterwards.
    let killed = v["killed_sources"].as_u64().expect("killed_sources");
    assert!(killed > 0, "the killed server served nobody: {v}");
    assert_eq!(v["killed_sources_answered_by_other"], killed, "{v}");
    assert_eq!(v["killed_sources_unanswered"], serde_json::json!([]));

    // IPv6 clients beside them (2 × 64 sources, each in a /56 of its own): in every phase each
    // is answered by exactly one server, the owner of its unit in the verifier's status of that
    // window, several servers in use; the killed server's IPv6 sources are answered by others
    // afterwards; every signed MLDv2 join was sent. Under handoff the IPv6 sessions go on
    // across the planned moves (drain and resume, SIGTERM leave) as the IPv4 ones do.
    let six = &v["ipv6"];
    assert_eq!(six["sources_total"], 128, "{six}");
    assert_eq!(six["mld_send_errors"], 0, "{six}");
    for phase in [
        "steady",
        "drained",
        "resumed",
        "before_crash",
        "after_crash",
    ] {
        let p = &six["phases"][phase];
        assert_eq!(p["sources"], 128, "IPv6 {phase}: {p}");
        assert_eq!(p["exactly_one"], 128, "IPv6 {phase}: {p}\n{stderr}");
        assert_eq!(p["verifier_owner"], 128, "IPv6 {phase}: {p}");
        let serving = p["by_server"]
            .as_object()
            .expect("by_server")
            .values()
            .filter(|n| n.as_u64() > Some(0))
            .count();
        assert!(serving > 1, "IPv6 {phase}: {p}");
    }
    assert_eq!(six["phases"]["drained"]["by_server"]["srv3"], 0, "{six}");
    assert_eq!(
        six["phases"]["after_crash"]["by_server"]["srv2"], 0,
        "{six}"
    );
    for window in ["admin_drain_resume", "sigterm_leave"] {
        let w = &six["sessions"][window];
        assert_eq!(w["resets"], 0, "IPv6 {window}: {w}");
        assert_eq!(w["sources_broken"], 0, "IPv6 {window}: {w}");
    }
    let crash6 = &six["crash"];
    assert!(crash6["sources"].as_u64() > Some(0), "{six}");
    assert_eq!(crash6["answered_by_other"], crash6["sources"], "{six}");

    // The attacker's joins are refused, each with its reason, and change nobody's claim.
    assert_eq!(
        reasons(&v["attacks"]["forge"]["rejected"]),
        vec![("bad-signature".to_owned(), 1)],
        "{}",
        v["attacks"]
    );
    assert_eq!(
        reasons(&v["attacks"]["replay"]["rejected"]),
        vec![("duplicate".to_owned(), 1)],
        "{}",
        v["attacks"]
    );
    // The forged join claimed srv1's slices at a far later epoch: no claim holds that epoch.
    let forged_epoch = v["attacks"]["forge"]["sent"]["epoch"]
        .as_u64()
        .expect("forged epoch");
    let claims = v["after_attacks"]["claim_epochs"]
        .as_object()
        .expect("claim epochs");
    assert!(!claims.is_empty(), "the verifier holds no claim: {v}");
    assert!(
        claims
            .values()
            .all(|e| e.as_u64().is_some_and(|e| e < forged_epoch)),
        "a claim at the forged epoch {forged_epoch}: {claims:?}"
    );
    let svg = std::fs::read_to_string(v["svg"].as_str().expect("svg path")).expect("load.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );

    // Nothing left: no process the demo started, no mininet host shell, no lab link or bridge.
    assert_no_leftovers("the demo", &v, &bin_dir);
}
