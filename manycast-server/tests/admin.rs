//! The admin tool against a real cluster: three `manycast-server` daemons on a plain flooding
//! switch (no verifier: the control channel and local filtering only), driven by the real
//! `manycastctl` binary through their admin sockets. Members, drain and resume of another
//! member, a move, and a load-aware rebalance under skewed load from real UDP clients.

use crate::harness::{in_netns, wait_for, Lab, CONTROL, GROUP, PORT};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_manycastctl"))
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run manycastctl")
}

/// Makes an operator key and certificate (group key → `manycastctl operator issue`) in the
/// lab's directory; returns the `--operator-key/--operator-cert` arguments that actions on
/// other members need (SPEC.md §9.7).
pub(crate) fn operator(lab: &Lab) -> Vec<String> {
    let d = lab.dir.path();
    let group = d.join("group-admin.key");
    manycast_server::keys::write_private_key(&group, &lab.fixture.group_key).expect("group key");
    let prefix = d.join("operator");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_manycastctl"))
            .args(args)
            .output()
            .expect("run manycastctl");
        ok(&out)
    };
    run(&["key", "new", &prefix.display().to_string()]);
    let cert = d.join("operator.cert");
    run(&[
        "operator",
        "issue",
        "--group-key",
        &group.display().to_string(),
        "--operator-key",
        &d.join("operator.pub").display().to_string(),
        "--control-group",
        &lab.control_group
            .map_or_else(|| CONTROL.to_string(), |g| g.to_string()),
        "--out",
        &cert.display().to_string(),
    ]);
    vec![
        "--operator-key".into(),
        d.join("operator.key").display().to_string(),
        "--operator-cert".into(),
        cert.display().to_string(),
    ]
}

/// `args` followed by the operator's arguments.
fn with(args: &[&str], op: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string())
        .chain(op.iter().cloned())
        .collect()
}

pub(crate) fn ctl_as(socket: &Path, args: &[&str], op: &[String]) -> Output {
    let all = with(args, op);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    ctl(socket, &refs)
}

pub(crate) fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "manycastctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn json(socket: &Path, args: &[&str]) -> Value {
    let text = ok(&ctl(socket, args));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// The epoch an action's answer names: "... (epoch N)".
pub(crate) fn answered_epoch(out: &str) -> u64 {
    out.trim()
        .rsplit_once("(epoch ")
        .and_then(|(_, e)| e.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no epoch in {out:?}"))
}

/// `allocation --json` from `socket` once that daemon has committed `epoch` (the answering
/// daemon has; the others commit a moment later).
pub(crate) fn allocation_at(socket: &Path, epoch: u64) -> Value {
    let mut alloc = Value::Null;
    wait_for("the member to commit the epoch", || {
        alloc = json(socket, &["allocation", "--json"]);
        alloc["epoch"]["epoch"].as_u64().is_some_and(|e| e >= epoch)
    });
    alloc
}

/// Units per member id from `allocation --json`.
fn units(alloc: &Value) -> BTreeMap<u64, u64> {
    alloc["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().expect("id"),
                m["units"].as_u64().expect("units"),
            )
        })
        .collect()
}

fn owners(alloc: &Value) -> Vec<Option<u64>> {
    alloc["unit_owner"]
        .as_array()
        .expect("unit_owner")
        .iter()
        .map(Value::as_u64)
        .collect()
}

/// Max over mean of the members' summed unit load (all weights are 1 here).
fn imbalance(owner: &[Option<u64>], load: &[u64]) -> f64 {
    let mut per: BTreeMap<u64, u64> = BTreeMap::new();
    for (o, l) in owner.iter().zip(load) {
        if let Some(m) = o {
            *per.entry(*m).or_default() += l;
        }
    }
    let total: u64 = per.values().sum();
    let max = per.values().copied().max().unwrap_or(0);
    max as f64 / (total as f64 / per.len() as f64)
}

/// Sends one datagram per source every 50 ms from the client namespace until dropped.
struct LoadGenerator {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoadGenerator {
    fn start(ns: &str, sources: Vec<Ipv4Addr>) -> Self {
        let sockets: Vec<std::net::UdpSocket> = in_netns(ns, || {
            sources
                .iter()
                .map(|&src| {
                    let s = std::net::UdpSocket::bind(SocketAddrV4::new(src, 0)).expect("bind");
                    s.set_multicast_ttl_v4(4).expect("ttl");
                    s.set_nonblocking(true).expect("nonblocking");
                    s
                })
                .collect()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            while !flag.load(Ordering::Relaxed) {
                for s in &sockets {
                    let _ = s.send_to(b"load", SocketAddrV4::new(GROUP, PORT));
                    // Replies are not needed; read them so the buffers never fill.
                    while s.recv_from(&mut buf).is_ok() {}
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        LoadGenerator {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn manycastctl_drives_three_daemons_drain_move_and_rebalance_by_load() {
    let mut lab = Lab::new(3);
    let client = lab.netns("cli");
    let sw = lab.switch("sw");
    lab.plug(&sw, "pc", &client, "cl0");
    let addrs: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(10, 1, 0, 100 + i)).collect();
    let servers = lab.switched_servers(&sw, &addrs);
    lab.start_server(0, &servers[0], "eth0", "eth0");
    lab.start_server(1, &servers[1], "eth0", "eth0");
    lab.start_server_with(
        2,
        &servers[2],
        "eth0",
        "eth0",
        "metrics_listen = \"127.0.0.1:9464\"\n",
        "",
    );
    let sock: Vec<_> = (0..3).map(|i| lab.admin_socket(i)).collect();
    let op = operator(&lab);
    wait_for("three members own slices at one epoch", || {
        (0..3).all(|i| lab.metric(i, "slices") > 0)
            && lab.metric(0, "epoch") == lab.metric(1, "epoch")
            && lab.metric(1, "epoch") == lab.metric(2, "epoch")
    });
    for s in &sock {
        let mode = std::fs::metadata(s)
            .expect("admin socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", s.display());
    }

    // members: three, all live, from any daemon.
    let members = json(&sock[1], &["members", "--json"]);
    let list = members["members"].as_array().expect("members");
    assert_eq!(list.len(), 3, "{members}");
    assert!(list.iter().all(|m| m["live"] == true), "{members}");
    assert!(
        list.iter().all(|m| m["incarnation"].as_u64().is_some()),
        "{members}"
    );
    assert_eq!(members["me"], 2);
    let table = ok(&ctl(&sock[1], &["members"]));
    assert!(table.contains("m2*") && table.contains("m3 "), "{table}");
    let alloc = json(&sock[0], &["allocation", "--json"]);
    let start = units(&alloc);
    assert_eq!(start.values().sum::<u64>(), 256, "{alloc}");
    assert!(start.values().all(|&n| n > 0), "{start:?}");

    // Drain member 3 from member 1's socket: its units go to 0, the others take them.
    let out = ok(&ctl_as(&sock[0], &["drain", "m3"], &op));
    assert!(out.contains("drained: m3 owns 0 units"), "{out}");
    let drained = units(&allocation_at(&sock[1], answered_epoch(&out)));
    assert_eq!(drained.get(&3).copied().unwrap_or(0), 0, "{drained:?}");
    assert_eq!(drained[&1] + drained[&2], 256, "{drained:?}");
    wait_for("member 3 reports no slices", || {
        lab.metric(2, "slices") == 0
    });
    let out = ok(&ctl_as(&sock[1], &["resume", "3"], &op));
    assert!(out.contains("resumed"), "{out}");
    let resumed = units(&allocation_at(&sock[2], answered_epoch(&out)));
    assert_eq!(resumed, start, "equal weights again: the same quotas");

    // Move three of member 2's units to member 1: member 1 gives three back.
    let alloc = allocation_at(&sock[2], answered_epoch(&out));
    let before = owners(&alloc);
    let of2: Vec<usize> = (0..256).filter(|&u| before[u] == Some(2)).take(3).collect();
    let list = of2
        .iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = ok(&ctl_as(&sock[2], &["move", &list, "--to", "m1"], &op));
    assert!(out.contains("moved 3 units to m1"), "{out}");
    let move_epoch = answered_epoch(&out);
    let after_move = allocation_at(&sock[0], move_epoch);
    let after = owners(&after_move);
    for &u in &of2 {
        assert_eq!(after[u], Some(1), "unit {u}");
    }
    assert_eq!(units(&after_move), units(&alloc), "quotas unchanged");
    assert_eq!(
        before.iter().zip(&after).filter(|(a, b)| a != b).count(),
        6,
        "three units in, three back"
    );
    // Refusals change nothing and say why.
    let bad = ctl_as(&sock[0], &["move", "999", "--to", "m1"], &op);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unit number out of range"),
        "{bad:?}"
    );
    let bad = ctl(&sock[0], &["drain", "m9"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown member m9"));
    assert_eq!(owners(&json(&sock[0], &["allocation", "--json"])), after);

    // Skewed load: 24 clients whose units (the low 8 address bits) all belong to member 1.
    let hot: Vec<Ipv4Addr> = (2u8..=250)
        .filter(|&b| !(100..=103).contains(&b) && after[usize::from(b)] == Some(1))
        .take(24)
        .map(|b| Ipv4Addr::new(10, 1, 0, b))
        .collect();
    assert_eq!(hot.len(), 24);
    for a in &hot {
        lab.addr(&client, "cl0", &format!("{a}/24"));
    }
    let load = LoadGenerator::start(&client, hot.clone());
    let mut skewed = Value::Null;
    wait_for("every hot unit reported in heartbeats", || {
        skewed = allocation_at(&sock[1], move_epoch);
        let unit_load: Vec<u64> = skewed["unit_load"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        hot.iter().all(|a| {
            unit_load
                .get(usize::from(a.octets()[3]))
                .is_some_and(|&l| l > 0)
        })
    });
    let load_before: Vec<u64> = skewed["unit_load"]
        .as_array()
        .expect("unit_load")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let owner_before = owners(&skewed);
    let before = imbalance(&owner_before, &load_before);
    assert!(before > 2.5, "all load on member 1: {before}");

    let out = ok(&ctl_as(&sock[1], &["rebalance"], &op));
    assert!(out.contains("rebalanced:"), "{out}");
    let balanced = allocation_at(&sock[2], answered_epoch(&out));
    let owner_after = owners(&balanced);
    assert_eq!(units(&balanced), units(&skewed), "quotas unchanged");
    // Judged on the load the coordinator saw (a few units of window drift aside).
    let after = imbalance(&owner_after, &load_before);
    assert!(after < before, "max/mean {before:.2} -> {after:.2}");
    let moved = owner_before
        .iter()
        .zip(&owner_after)
        .filter(|(a, b)| a != b)
        .count();
    eprintln!("rebalance: max/mean {before:.2} -> {after:.2}, {moved} units moved, {out}");
    // Each hot unit leaves at most once and a cold one comes back for it.
    assert!(moved <= 2 * hot.len(), "{moved} units moved");
    // And the clients are really served that way now: datagrams answered per member (metrics
    // files), counted from a point where every member runs the new epoch.
    let epoch = answered_epoch(&out);
    wait_for("every member's metrics at the rebalanced epoch", || {
        (0..3).all(|i| lab.metric(i, "epoch") >= epoch)
    });
    let start: Vec<u64> = (0..3).map(|i| lab.metric(i, "served_total")).collect();
    let mut served = vec![0u64; 3];
    wait_for("480 more datagrams answered", || {
        served = (0..3)
            .map(|i| lab.metric(i, "served_total") - start[i])
            .collect();
        served.iter().sum::<u64>() >= 480
    });
    drop(load);
    let mean = served.iter().sum::<u64>() as f64 / 3.0;
    let measured = *served.iter().max().unwrap_or(&0) as f64 / mean;
    eprintln!("answered per member after the rebalance: {served:?}, max/mean {measured:.2}");
    assert!(served.iter().all(|&n| n > 0), "{served:?}");
    assert!(
        measured < before - 1.0,
        "{served:?}: max/mean {measured:.2}"
    );

    // The live watch: frames with the events of a drain, and a clean exit on Ctrl-C (SIGINT).
    let mut watch = Command::new(env!("CARGO_BIN_EXE_manycastctl"))
        .args(["watch", "--socket"])
        .arg(&sock[0])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("manycastctl watch");
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        let mut stdout = watch.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = seen.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        })
    };
    let seen_has = |what: &str| seen.lock().map(|s| s.contains(what)).unwrap_or(false);
    wait_for("a watch frame", || seen_has("MEMBER"));
    ok(&ctl(&sock[1], &["drain"]));
    wait_for("the drain's events in the watch", || {
        seen_has("request from m2: drain m2") && seen_has("committed e")
    });
    let pid = nix::unistd::Pid::from_raw(watch.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = watch.wait().expect("watch exit");
    let _ = reader.join();
    assert!(
        status.success(),
        "watch exits cleanly on Ctrl-C: {status:?}"
    );
    assert!(seen_has("\x1b[?25h"), "cursor shown again");

    // watch --once prints one readable frame; metrics over HTTP from member 3.
    let frame = ok(&ctl(&sock[0], &["watch", "--once"]));
    assert!(
        frame.contains("MEMBER") && frame.contains("max/mean"),
        "{frame}"
    );
    eprintln!("{frame}");
    let text = in_netns(&servers[2], || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9464").expect("metrics_listen");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        text
    });
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    assert!(text.contains("manycast_server_member 3\n"), "{text}");
    // A daemon stopping removes its socket.
    assert!(lab.terminate("m3").success());
    assert!(!sock[2].exists());
}

/// An admin `drain` of a member, then SIGTERM to it under handoff (the lab's `reallocate`
/// scenario does this): it owns nothing and has nothing left to hand off, so it leaves at once.
/// Before the fix it waited for a commit emptying it, which never came (its weight was already
/// 0), until `drain_timeout_ms`.
#[test]
fn sigterm_after_an_admin_drain_leaves_without_waiting_for_the_drain_timeout() {
    let mut lab = Lab::new(2);
    let sw = lab.switch("sw");
    let addrs: Vec<Ipv4Addr> = (1..=2).map(|i| Ipv4Addr::new(10, 1, 0, 110 + i)).collect();
    let servers = lab.switched_servers(&sw, &addrs);
    // Far beyond the wait for the exit below: leaving within it is the drain ending.
    let tables = "[reallocation]\ndrain_timeout_ms = 600000\n";
    for (i, ns) in servers.iter().enumerate() {
        lab.start_server_with(i, ns, "eth0", "eth0", "strategy = \"handoff\"\n", tables);
    }
    wait_for("two members own slices at one epoch", || {
        (0..2).all(|i| lab.metric(i, "slices") > 0)
            && lab.metric(0, "epoch") == lab.metric(1, "epoch")
    });
    let op = operator(&lab);
    let out = ok(&ctl_as(&lab.admin_socket(0), &["drain", "m2"], &op));
    assert!(out.contains("drained: m2 owns 0 units"), "{out}");
    wait_for("member 2 reports no slices", || {
        lab.metric(1, "slices") == 0
    });
    lab.send_term("m2");
    let status = lab.wait_exit("m2", Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", lab.logs());
}
