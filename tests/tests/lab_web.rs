//! The lab's web cluster (issue 16 item 6, issue 15 over IPv6): `lab/web.py scenario --json`
//! with this build's debug daemons: nginx on every server behind the VIP and the IPv6 VIP, each
//! member in VIP mode with both VIPs and an HTTP health check of its nginx. Asserts on what curl
//! got through the VIPs (the page names the server that answered), on the members' health in
//! their admin status and on the verifier's claims of both families; never on a timing. Root, mininet and nginx are needed (`scripts/setup.sh`). Holds the machine-wide
//! lab lock (flock on `/tmp/manycast-lab.lock`) from before the lab starts until its leftover
//! checks are done, and tells the script so (`MANYCAST_LAB_LOCK_HELD=1`); the script stops
//! everything it started (nginx included), also on failure.

mod lab_support;

use lab_support::{assert_no_leftovers, daemon_bin_dir, lab_lock};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// {source: server} for the sources answered by one server on every try; panics naming the
/// step if a source got no page or pages from two servers.
fn one_server_each(v: &Value, step: &str) -> BTreeMap<String, String> {
    let answers = v[step].as_object().unwrap_or_else(|| panic!("{step}: {v}"));
    assert!(!answers.is_empty(), "{step}: no curl answers");
    answers
        .iter()
        .map(|(src, tries)| {
            let who: BTreeSet<&str> = tries
                .as_array()
                .expect("tries")
                .iter()
                .map(|w| w.as_str().expect("server"))
                .collect();
            assert!(
                who.len() == 1 && !who.contains("-"),
                "{step}: source {src} got {who:?}"
            );
            (src.clone(), who.into_iter().next().expect("one").to_owned())
        })
        .collect()
}

/// The IPv6 sources of `step`'s answers (`one`): 32, each answered by exactly the server whose
/// claim in the verifier's status (read right after the curl) covers its /56's unit.
fn assert_ipv6_by_their_owner(v: &Value, one: &BTreeMap<String, String>, step: &str) {
    let owners = &v["owners6"][step];
    let six: Vec<_> = one.iter().filter(|(s, _)| s.contains(':')).collect();
    assert_eq!(six.len(), 32, "{step}: IPv6 sources {six:?}");
    for (src, server) in six {
        assert_eq!(
            owners[src.as_str()],
            serde_json::json!([server]),
            "{step}: {src} answered by {server}, the verifier's owner is {}",
            owners[src.as_str()]
        );
    }
}

/// Curl from 32 IPv4 sources through the VIP and 32 IPv6 sources (each in a /56 of its own)
/// through the IPv6 VIP gets pages from at least two servers in each family, each source always
/// from the same one, each IPv6 source from the owner of its unit in the verifier's status.
/// nginx SIGKILLed on the server answering IPv4 source X (its daemon alive): the member's check
/// goes down and both its claims are withdrawn, X and the victim's IPv6 sources get their page
/// from other servers (the IPv6 ones from their new owners), no source is answered by the
/// victim any more and none is left unanswered. nginx started again: the check comes back up,
/// the member is no longer held out and the verifier holds both its claims again, and it
/// answers sources of both families again. Then nginx on that server flaps (killed and started
/// four times, quickly; the check sees it dead): afterwards its check is up, it is back in, and
/// no source of either family is black-holed.
#[test]
fn lab_web_cluster_nginx_health_moves_sources_and_brings_them_back() {
    let bin_dir = daemon_bin_dir();
    let run_dir = bin_dir.join("lab-web").join("run");
    let _lock = lab_lock();
    let out = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/web.py"))
        .env("MANYCAST_LAB_LOCK_HELD", "1")
        .args(["scenario", "--json", "--bin-dir"])
        .arg(&bin_dir)
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .expect("run lab/web.py with /usr/bin/python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "web scenario failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("web.py printed no JSON ({e}): {stdout}\n{stderr}"));

    // Before: every source answered, always by the same server (the IPv6 ones by their
    // owner); more than one server in use in each family.
    let before = one_server_each(&v, "before");
    assert_eq!(before.len(), 64, "{}", v["before"]);
    assert_ipv6_by_their_owner(&v, &before, "before");
    for six in [false, true] {
        let servers: BTreeSet<&String> = before
            .iter()
            .filter(|(s, _)| s.contains(':') == six)
            .map(|(_, w)| w)
            .collect();
        assert!(
            servers.len() >= 2,
            "one server answers everybody (IPv6: {six}): {before:?}"
        );
    }

    // The kill: X was the victim's, and is now another server's; the victim's daemon runs,
    // its check is down and it is held out at once (connect refused: dead), its claim gone.
    let (x, victim) = (
        v["x"].as_str().expect("x"),
        v["victim"].as_str().expect("victim"),
    );
    assert_eq!(before[x], victim);
    let moved_to = v["x_after_kill"].as_str().expect("x_after_kill");
    assert!(moved_to != victim && moved_to.starts_with("srv"), "{v}");
    assert_eq!(
        v["victim_alive"], true,
        "the victim's daemon stopped: {stderr}"
    );
    assert_eq!(
        v["victim_health_after_kill"],
        serde_json::json!({"up": false, "out": "immediate"}),
    );
    assert_eq!(v["victim_claim_after_kill"], false);
    assert_eq!(v["victim_claim6_after_kill"], false);
    let after_kill = one_server_each(&v, "after_kill");
    assert_eq!(after_kill.len(), 64);
    assert_ipv6_by_their_owner(&v, &after_kill, "after_kill");
    assert!(
        after_kill.values().all(|s| s != victim),
        "the victim still answers: {after_kill:?}"
    );
    assert_eq!(after_kill[x], moved_to);
    // The victim's IPv6 sources moved too (each to its new owner, asserted above).
    let mine6 = v["victim_sources6"].as_array().expect("victim_sources6");
    assert!(!mine6.is_empty(), "the victim answered no IPv6 source: {v}");
    for src in mine6 {
        assert_eq!(before[src.as_str().expect("source")], victim);
    }
    // Only the victim's sources moved (pin: the others keep their server).
    for (src, s) in &before {
        if s != victim {
            assert_eq!(&after_kill[src], s, "{src} moved without cause");
        }
    }

    // nginx back: the check is up, the member not held out, its claim back at the verifier,
    // and it answers sources again.
    assert_eq!(
        v["victim_health_after_restart"],
        serde_json::json!({"up": true, "out": null}),
    );
    assert_eq!(v["victim_claim_after_restart"], true);
    assert_eq!(v["victim_claim6_after_restart"], true);
    let after_restart = one_server_each(&v, "after_restart");
    assert_ipv6_by_their_owner(&v, &after_restart, "after_restart");
    for six in [false, true] {
        assert!(
            after_restart
                .iter()
                .any(|(s, w)| w == victim && s.contains(':') == six),
            "the victim answers no source (IPv6: {six}) after its nginx came back: {after_restart:?}"
        );
    }

    // The flapping service: every source answered at the end, each by one server, every check
    // up and no member held out.
    assert_eq!(v["flaps"], 4);
    assert!(
        v["flap_dead_checks"].as_u64().unwrap_or(0) > 0,
        "the check never saw the flapping nginx dead: {v}"
    );
    assert_eq!(v["after_flaps_unanswered"], serde_json::json!([]), "{v}");
    let after_flaps = one_server_each(&v, "after_flaps");
    assert_eq!(after_flaps.len(), 64);
    assert_ipv6_by_their_owner(&v, &after_flaps, "after_flaps");
    for (s, h) in v["after_flaps_health"].as_object().expect("health") {
        assert_eq!(h, &serde_json::json!({"up": true, "out": null}), "{s}");
    }

    // Nothing left: the daemons, nginx masters and workers, mininet hosts, lab links.
    assert_no_leftovers("the web scenario", &v, &bin_dir);
    for pid in v["nginx_pids"].as_array().expect("nginx_pids") {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).starts_with("nginx:"),
            "nginx left running: {pid}"
        );
    }
    assert!(
        v["nginx_pids"].as_array().is_some_and(|p| p.len() >= 8),
        "{}",
        v["nginx_pids"]
    );
}
