//! The control group over IPv6 end to end (issue 15 item 5; SPEC.md §9.1): dual-stack clusters
//! of real `manycast-server`s whose `[control] group` is the link-scope `ff02::4d43:1` on the
//! back-end switch (hellos, heartbeats, proposals and commits over IPv6 multicast; replies and
//! state transfers unicast to link-local addresses), with the real verifier steering IPv4 and
//! IPv6 clients by the members' signed joins.

use crate::harness::{ask, verifier_status, wait_for, Clients, Lab, GROUP};
use crate::native6::{
    ask6, certify_dual_stack_with, ipv6_layout, owners6, server6, socket6, sources6, unit_of,
};
use crate::strategies6::{run as run6, StopOnDrop, TABLES};
use igmp_ext::fixtures::GROUP6;
use igmp_ext::{Slice, Slice6, SliceSet, SliceSet6};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

const CONTROL6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x4d43, 1);

/// IPv4 clients whose last octets spread over the units.
fn sources4() -> Vec<Ipv4Addr> {
    (2..26).map(|i| Ipv4Addr::new(10, 1, 0, i * 7)).collect()
}

/// A routed dual-stack lab of `members` with the IPv6 control group and certificates that list
/// it, the real verifier running: (lab, client namespace, server namespaces, verifier socket).
fn dual_stack_lab(members: u32) -> (Lab, String, Vec<String>, PathBuf) {
    let mut lab = Lab::new(members);
    lab.control_group = Some(IpAddr::V6(CONTROL6));
    certify_dual_stack_with(&mut lab, &[GROUP6, CONTROL6]);
    let routed = lab.routed(members as usize, &sources4());
    let (router, client, servers) = (
        routed.router.clone(),
        routed.client.clone(),
        routed.servers.clone(),
    );
    ipv6_layout(&lab, &router, &client, &servers, &sources6());
    let socket = lab.start_verifier(
        &router,
        &routed.interfaces(),
        "[verifier]\nprotected6 = [\"ff3e::/32\"]\n",
        None,
    );
    (lab, client, servers, socket)
}

/// Each member's slices of both groups as the verifier holds them at `epoch`.
type Held = BTreeMap<u32, (SliceSet, SliceSet6)>;

fn held_at(socket: &Path, epoch: u64) -> Held {
    let s = verifier_status(socket).expect("status");
    let mut out: Held = BTreeMap::new();
    for r in s.ownership.iter().filter(|r| r.epoch == epoch) {
        let e = out.entry(r.member).or_default();
        if r.group == GROUP.to_string() {
            e.0 = r
                .slices
                .split(' ')
                .map(|t| t.parse::<Slice>().expect("slice"))
                .collect();
        } else if r.group == GROUP6.to_string() {
            e.1 = r
                .slices
                .split(' ')
                .map(|t| t.parse::<Slice6>().expect("slice6"))
                .collect();
        }
    }
    out
}

/// Waits until members `live` (indices) committed one epoch and the verifier holds their
/// IPv4 and IPv6 claims at it; returns the epoch.
fn settled(lab: &Lab, socket: &Path, live: &[usize], after: u64) -> u64 {
    let ids: Vec<u32> = live.iter().map(|&i| lab.fixture.members[i].id.0).collect();
    let mut epoch = 0;
    wait_for(
        "the members committed one epoch and the verifier holds it",
        || {
            epoch = lab.metric(live[0], "epoch");
            epoch > after
                && live
                    .iter()
                    .all(|&i| lab.metric(i, "epoch") == epoch && lab.metric(i, "slices") > 0)
                && verifier_status(socket).is_some_and(|s| {
                    ids.iter().all(|&m| {
                        [GROUP.to_string(), GROUP6.to_string()].iter().all(|g| {
                            s.ownership
                                .iter()
                                .any(|r| r.member == m && r.epoch == epoch && &r.group == g)
                        })
                    })
                })
        },
    );
    epoch
}

/// Asks every IPv4 and IPv6 client once and checks that the member whose slices at `epoch`
/// (as the verifier holds them) contain the source answered, alone. Returns who answered each.
fn served_by_owners(
    lab: &Lab,
    socket: &Path,
    client: &str,
    epoch: u64,
) -> (BTreeMap<Ipv4Addr, u32>, BTreeMap<Ipv6Addr, u32>) {
    let held = held_at(socket, epoch);
    let owner4 = |a: Ipv4Addr| {
        held.iter()
            .find(|(_, (s, _))| s.contains_addr(a))
            .map(|(m, _)| *m)
    };
    let owner6 = |a: Ipv6Addr| {
        held.iter()
            .find(|(_, (_, s))| s.contains_addr(a))
            .map(|(m, _)| *m)
    };
    let mut by4 = BTreeMap::new();
    for (src, got) in ask(client, &sources4(), 1) {
        let names: Vec<&str> = got
            .iter()
            .map(|(_, t)| t.split(' ').next().unwrap_or(""))
            .collect();
        let want = owner4(src).unwrap_or_else(|| panic!("{src}: no owner at {epoch}: {held:?}"));
        assert_eq!(
            names,
            vec![format!("m{want}")],
            "{src}: {got:?}\n{}",
            lab.logs()
        );
        by4.insert(src, want);
    }
    assert_eq!(by4.len(), sources4().len(), "every IPv4 client answered");
    let socks: Vec<(Ipv6Addr, std::net::UdpSocket)> = sources6()
        .iter()
        .map(|&a| (a, socket6(client, a, "cl0", 8)))
        .collect();
    let mut by6 = BTreeMap::new();
    for (src, (_, member, _)) in owners6(&ask6(&socks, 1)) {
        let want = owner6(src).unwrap_or_else(|| panic!("{src}: no owner at {epoch}: {held:?}"));
        assert_eq!(member, format!("m{want}"), "{src}\n{}", lab.logs());
        by6.insert(src, want);
    }
    assert_eq!(by6.len(), sources6().len(), "every IPv6 client answered");
    (by4, by6)
}

/// Three members agree over the IPv6 control group, serve IPv4 and IPv6 clients by their
/// owner, and after one member's SIGKILL the survivors commit the next epoch over it and take
/// its clients.
#[test]
fn a_dual_stack_cluster_agrees_over_an_ipv6_control_group_and_survives_a_crash() {
    let (mut lab, client, servers, socket) = dual_stack_lab(3);
    let top = format!("group6 = \"{GROUP6}\"\nstrategy = \"reset\"");
    for (i, ns) in servers.iter().enumerate() {
        lab.start_server_with(i, ns, "m0", "ctl0", &top, "");
    }
    let epoch = settled(&lab, &socket, &[0, 1, 2], 0);
    let ids: Vec<u32> = lab.fixture.members.iter().map(|m| m.id.0).collect();
    let (by4, by6) = served_by_owners(&lab, &socket, &client, epoch);
    for id in &ids {
        assert!(
            by4.values().any(|m| m == id) && by6.values().any(|m| m == id),
            "member {id} serves clients of both families: {by4:?} {by6:?}"
        );
    }
    lab.kill(&lab.fixture.members[2].id.to_string());
    let next = settled(&lab, &socket, &[0, 1], epoch);
    let (after4, after6) = served_by_owners(&lab, &socket, &client, next);
    assert!(after4.values().chain(after6.values()).all(|m| *m != ids[2]));
    let moved = by4.iter().filter(|(_, m)| **m == ids[2]).count()
        + by6.iter().filter(|(_, m)| **m == ids[2]).count();
    assert!(
        moved > 0,
        "the killed member had clients, now the survivors'"
    );
}

/// A planned move (member 2 arrives) under `handoff` with the IPv6 control group: member 1
/// hands the moved IPv4 and IPv6 sessions to member 2 in a state transfer unicast to member
/// 2's link-local direct path (`DirectPath6`), and every session continues with no gap, no
/// repeat and no lost request.
#[test]
fn handoff_over_an_ipv6_control_group_keeps_every_session() {
    let (mut lab, client, servers, socket) = dual_stack_lab(2);
    let top = format!("group6 = \"{GROUP6}\"\nstrategy = \"handoff\"");
    lab.start_server_with(0, &servers[0], "m0", "ctl0", &top, TABLES);
    let alone = settled(&lab, &socket, &[0], 0);
    let clients4 = Clients::new(&client, &sources4());
    let socks6: Vec<(Ipv6Addr, std::net::UdpSocket)> = sources6()
        .iter()
        .map(|&a| (a, socket6(&client, a, "cl0", 8)))
        .collect();
    let per_round = sources4().len() as u64;
    let stop = AtomicBool::new(false);
    let (logs4, logs6) = std::thread::scope(|scope| {
        let load4 = scope.spawn(|| clients4.run(&stop, 40));
        let load6 = scope.spawn(|| run6(&socks6, &stop));
        let guard = StopOnDrop(&stop);
        wait_for("three rounds of each family at member 1", || {
            lab.metric(0, "served_total") >= 3 * per_round
                && lab.metric(0, "served6_total") >= 3 * per_round
        });
        lab.start_server_with(1, &servers[1], "m0", "ctl0", &top, TABLES);
        settled(&lab, &socket, &[0, 1], alone);
        wait_for("member 1 handed sessions of both families over", || {
            lab.metric(0, "handed_off_total") > 0 && lab.metric(0, "handed_off6_total") > 0
        });
        let served = |lab: &Lab| {
            (0..2)
                .map(|i| lab.metric(i, "served_total") + lab.metric(i, "served6_total"))
                .sum::<u64>()
        };
        let before = served(&lab);
        wait_for("three more rounds after the move", || {
            served(&lab) >= before + 6 * per_round
        });
        drop(guard);
        (
            load4.join().expect("IPv4 load"),
            load6.join().expect("IPv6 load"),
        )
    });
    for (src, log) in &logs4 {
        assert_eq!(log.lost, 0, "{src}: {log:?}\n{}", lab.logs());
        assert!(log.breaks().is_empty(), "{src}: gaps or repeats: {log:?}");
    }
    for (src, log) in &logs6 {
        assert_eq!(log.lost, 0, "{src}: {log}\n{}", lab.logs());
        assert!(
            log.other.is_empty() && log.breaks().is_empty(),
            "{src}: {log}"
        );
    }
    assert_eq!(lab.metric(1, "handoff_timeouts_total"), 0, "{}", lab.logs());
    assert!(lab.metric(1, "handoff_received_total") > 0);
    // Member 1 sent the sessions to member 2's link-local direct path, zone and all.
    let id2 = lab.fixture.members[1].id;
    let log1 = std::fs::read_to_string(
        lab.dir
            .path()
            .join(format!("{}.log", lab.fixture.members[0].id)),
    )
    .expect("member 1's log");
    operator_moves_a_unit_back(&lab, &logs6);
    assert!(
        log1.lines().any(|l| l.contains("direct path")
            && l.contains(&format!("member={id2}"))
            && l.contains("[fe80::")
            && l.contains("]:4790")),
        "{log1}"
    );
}

/// `manycast-server --check-config` on `config`.
fn check_config(config: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_manycast-server"))
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .output()
        .expect("run manycast-server")
}

/// A certificate that does not list the IPv6 control group among its IPv6 groups stops the
/// daemon at start with one line, as for an IPv4 control group it does not list.
#[test]
fn a_certificate_without_the_ipv6_control_group_is_refused_at_start() {
    let mut lab = Lab::new(1);
    lab.control_group = Some(IpAddr::V6(CONTROL6));
    certify_dual_stack_with(&mut lab, &[GROUP6]);
    let config = lab.write_config(0, "lo", "lo", &format!("group6 = \"{GROUP6}\""), "");
    let out = check_config(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("does not allow control.group {CONTROL6}")),
        "{err}"
    );
    certify_dual_stack_with(&mut lab, &[GROUP6, CONTROL6]);
    let out = check_config(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An operator certified for the IPv6 control group (`operator issue --control-group ff02::…`
/// names its cluster id) moves the unit of a client member 2 serves back to member 1.
fn operator_moves_a_unit_back(lab: &Lab, logs6: &BTreeMap<Ipv6Addr, crate::strategies6::Log6>) {
    use crate::admin::{allocation_at, answered_epoch, ctl_as, operator};
    let (src, _) = logs6
        .iter()
        .find(|(_, log)| log.answers.last().map(|(s, _)| *s) == Some(server6(2)))
        .expect("a source at member 2");
    let socket = lab.admin_socket(0);
    let out = crate::ok(&ctl_as(
        &socket,
        &["move", &src.to_string(), "--to", "1"],
        &operator(lab),
    ));
    let alloc = allocation_at(&socket, answered_epoch(&out));
    assert_eq!(
        alloc["unit_owner"][usize::from(unit_of(*src))],
        1,
        "{alloc}"
    );
}

/// A link-scope IPv6 control group on an interface without a link-local address (here `lo`,
/// which has only ::1) stops the daemon at start with one line naming what is missing.
#[test]
fn an_ipv6_control_group_needs_a_link_local_address_on_the_control_interface() {
    let mut lab = Lab::new(1);
    lab.control_group = Some(IpAddr::V6(CONTROL6));
    certify_dual_stack_with(&mut lab, &[GROUP6, CONTROL6]);
    let ns = lab.netns("solo");
    crate::native6::ip_in(&ns, &["link", "set", "lo", "up"]);
    let config = lab.write_config(0, "lo", "lo", "", "");
    lab.spawn_server(0, &ns, &config);
    let name = lab.fixture.members[0].id.to_string();
    let status = lab.wait_exit(&name, std::time::Duration::from_secs(20));
    assert!(!status.success());
    let log = std::fs::read_to_string(lab.dir.path().join(format!("{name}.log"))).expect("log");
    let want = format!(
        "control.group: {CONTROL6} needs an IPv6 link-local address on the control interface lo"
    );
    assert!(log.contains(&want), "{log}");
}
