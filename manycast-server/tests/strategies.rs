//! The `handoff` and `forward` strategies end to end with the real binaries: two
//! `manycast-server`s on different subnets (10.0.1.0/24, 10.0.2.0/24) behind a router running
//! the real `manycast-verifier`, their control group on a back-end segment, and clients with
//! persistent sessions sending numbered requests continuously while member 2 arrives (half the
//! slices move) and while member 1 is drained by SIGTERM. Every client's numbers must continue
//! 1, 2, 3, ... with no gap, no repeat and no lost request.

use crate::harness::{
    steered_members, verifier_status, wait_for, Clients, Lab, Routed, SessionLog,
};
use manycast_verifier::status::Status;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The servers' addresses behind the verifier (two subnets) and on the plain switch.
const ROUTED: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 2, 2)];
const SWITCHED: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 101), Ipv4Addr::new(10, 1, 0, 102)];
/// Resends of one request id before it counts as lost (300 ms read timeout each).
const TRIES: u32 = 40;
/// Short session idle time so that a drained member's forwarded sessions end soon after the
/// clients stop; long against the clients' gaps between requests.
const TABLES: &str = "[service]\nsession_idle_ms = 3000\n[reallocation]\nhold_ms = 1000\n\
                      drain_timeout_ms = 25000\n";

/// Sources spread over the low-order bits, so that some move and some stay (SPEC.md §6).
fn sources() -> Vec<Ipv4Addr> {
    [2u8, 3, 4, 5, 130, 131, 132, 133, 66, 194]
        .iter()
        .map(|&b| Ipv4Addr::new(10, 1, 0, b))
        .collect()
}

/// A topology with its namespaces, interfaces and addresses.
struct Setup {
    lab: Lab,
    client: String,
    servers: Vec<String>,
    /// The verifier's status socket; none behind a plain switch.
    socket: Option<PathBuf>,
    service_if: &'static str,
    control_if: &'static str,
    addrs: [Ipv4Addr; 2],
}

/// Client, both servers and their control group on one bridge that floods the group to every
/// member (no verifier; BRIEF decision 8): both servers see every datagram.
fn switch_lab() -> Setup {
    let mut lab = Lab::new(2);
    let client = lab.netns("cli");
    let sw = lab.switch("sw");
    lab.plug(&sw, "pc", &client, "cl0");
    for a in &sources() {
        lab.addr(&client, "cl0", &format!("{a}/24"));
    }
    let servers = lab.switched_servers(&sw, &SWITCHED);
    Setup {
        lab,
        client,
        servers,
        socket: None,
        service_if: "eth0",
        control_if: "eth0",
        addrs: SWITCHED,
    }
}

/// Router with the verifier, client namespace, two server namespaces on their own subnets,
/// control back-end.
fn verifier_lab() -> Setup {
    let mut lab = Lab::new(2);
    let r = lab.routed(2, &sources());
    let socket = lab.start_verifier(&r.router, &r.interfaces(), "", None);
    let Routed {
        client, servers, ..
    } = r;
    Setup {
        lab,
        client,
        servers,
        socket: Some(socket),
        service_if: "m0",
        control_if: "ctl0",
        addrs: ROUTED,
    }
}

fn served(lab: &Lab) -> u64 {
    lab.metric(0, "served_total") + lab.metric(1, "served_total")
}

/// Member 1 alone, load, member 2 arrives, more load, SIGTERM to member 1 (drain), more load
/// (`forward`: until member 1's sessions are forwarded, then the clients stop so that they end
/// and member 1 can leave). Returns the lab (for metrics), how many sessions moved when member
/// 2 arrived, and every client's log.
fn reallocate_under_load(
    strategy: &str,
    setup: Setup,
) -> (Lab, u64, BTreeMap<Ipv4Addr, SessionLog>) {
    let Setup {
        mut lab,
        client,
        servers,
        socket,
        service_if,
        control_if,
        addrs,
    } = setup;
    // Behind a plain switch there is no verifier to ask: every check of it passes.
    let verifier = |check: &dyn Fn(&Status) -> bool| {
        socket
            .as_deref()
            .is_none_or(|s| verifier_status(s).is_some_and(|st| check(&st)))
    };
    let srcs = sources();
    let per_round = srcs.len() as u64;
    lab.start_server_with(
        0,
        &servers[0],
        service_if,
        control_if,
        &format!("strategy = \"{strategy}\""),
        TABLES,
    );
    wait_for(
        "member 1 owns everything and the verifier holds its claim",
        || {
            lab.metric(0, "slice_addresses") == 1 << 32
                && verifier(&|s| s.ownership.iter().any(|r| r.member == 1))
        },
    );
    let clients = Clients::new(&client, &srcs);
    let stop = AtomicBool::new(false);
    let logs = std::thread::scope(|scope| {
        let load = scope.spawn(|| clients.run(&stop, TRIES));
        // Every step below waits under load; if one times out, stop the load first so that
        // the panic is not hidden behind a thread that never ends.
        let guard = StopOnDrop(&stop);
        wait_for("three rounds at member 1", || {
            lab.metric(0, "served_total") >= 3 * per_round
        });

        lab.start_server_with(
            1,
            &servers[1],
            service_if,
            control_if,
            &format!("strategy = \"{strategy}\""),
            TABLES,
        );
        lab.wait_split();
        wait_for("the verifier steers some sources to member 2", || {
            verifier(&|s| steered_members(s).contains(&Some(2)))
        });
        let before = served(&lab);
        wait_for("three more rounds after the move", || {
            served(&lab) >= before + 3 * per_round
        });
        wait_for("member 1 counted the sessions it moved", || {
            lab.metric(0, "handed_off_total") > 0
        });
        let moved = lab.metric(0, "handed_off_total");
        if strategy == "forward" {
            check_new_sessions_go_to_the_new_owner(&client, &srcs, addrs[1]);
            forge_forwards(&lab, &client, &clients, addrs[0]);
        }

        lab.send_term("m1");
        wait_for("member 1 drained: member 2 owns everything", || {
            lab.metric(1, "slice_addresses") == 1 << 32
        });
        let before = served(&lab);
        wait_for("three more rounds after the drain", || {
            served(&lab) >= before + 3 * per_round
        });
        if strategy == "handoff" {
            // Member 1 leaves as soon as member 2 has acknowledged its sessions, under load.
            wait_for("member 1 exits after handing its sessions off", || {
                lab.exited("m1").is_some()
            });
            let before = lab.metric(1, "served_total");
            wait_for("three rounds at member 2 alone", || {
                lab.metric(1, "served_total") >= before + 3 * per_round
            });
        }
        drop(guard);
        (moved, load.join().expect("load thread"))
    });
    let (moved, logs) = logs;
    // Forward: member 1 serves its forwarded sessions to their end, then leaves.
    let st = lab.wait_exit("m1", Duration::from_secs(30));
    assert!(st.success(), "member 1 exit status {st}\n{}", lab.logs());
    for (src, log) in &logs {
        assert_eq!(log.lost, 0, "{src}: lost requests: {log:?}");
        assert_eq!(log.garbled, 0, "{src}: {log:?}");
        assert!(
            log.breaks().is_empty(),
            "{src}: gaps or repeats at (request, number) {:?}: {log:?}",
            log.breaks()
        );
        assert!(log.answers.len() >= 9, "{src}: {log:?}");
    }
    (lab, moved, logs)
}

/// An outsider on the client subnet sends member 1's direct path a `Forward` for every
/// client's live session, claiming to be member 2 but signed with a key the group never
/// certified. Member 1 must drop each (`bad-signature`); had one been served, that client's
/// next number would skip one, which the per-client checks would catch.
fn forge_forwards(lab: &Lab, client_ns: &str, clients: &Clients, member_1: Ipv4Addr) {
    use control_channel::wire::{Forward, Header, Message};
    let forger = igmp_ext::ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let now = daemon_kit::wall_clock();
    let targets = clients.local_addrs();
    let before = lab.metric(0, "control_dropped_total{reason=\"bad-signature\"}");
    crate::harness::in_netns(client_ns, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        for (i, c) in targets.iter().enumerate() {
            let header = Header {
                cluster: u32::from(crate::harness::CONTROL),
                sender: igmp_ext::MemberId(2),
                epoch: 0,
                sequence: (now.0 << 21) + i as u64,
                timestamp: now,
            };
            let m = Message::Forward(Forward {
                to: 1,
                client_addr: u32::from(*c.ip()),
                client_port: c.port(),
                payload: b"r999999".to_vec(),
            });
            let bytes = m.encode_signed(&header, &forger).expect("encode");
            s.send_to(&bytes, (member_1, 4790))
                .expect("send forged forward");
        }
    });
    wait_for("member 1 dropped every forged forward", || {
        lab.metric(0, "control_dropped_total{reason=\"bad-signature\"}")
            >= before + targets.len() as u64
    });
}

struct StopOnDrop<'a>(&'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Fresh sockets (new sessions) from the same sources while the old ones are forwarded: the
/// sources in member 2's slices start new sessions at member 2.
fn check_new_sessions_go_to_the_new_owner(client: &str, srcs: &[Ipv4Addr], member_2: Ipv4Addr) {
    let fresh = Clients::new(client, srcs);
    let stop = AtomicBool::new(false);
    let mut new_at_2 = 0;
    // A few rounds: run() finishes the round in which stop is set.
    let logs = std::thread::scope(|scope| {
        let h = scope.spawn(|| fresh.run(&stop, TRIES));
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        h.join().expect("fresh clients")
    });
    for (src, log) in &logs {
        assert_eq!(log.lost, 0, "{src}: {log:?}");
        assert!(log.breaks().is_empty(), "{src}: {log:?}");
        let servers: Vec<Ipv4Addr> = log.answers.iter().map(|(s, _)| *s).collect();
        assert!(servers.windows(2).all(|w| w[0] == w[1]), "{src}: {log:?}");
        new_at_2 += usize::from(servers.first() == Some(&member_2));
    }
    assert!(new_at_2 > 0, "no new session at member 2: {logs:?}");
}

/// Handoff: each client answered by member 1, then only by member 2, numbers continuous;
/// every session handed off exactly once.
fn check_handoff(strategy_run: (Lab, u64, BTreeMap<Ipv4Addr, SessionLog>), addrs: [Ipv4Addr; 2]) {
    let (lab, moved_at_arrival, logs) = strategy_run;
    let [s1, s2] = addrs;
    for (src, log) in &logs {
        let servers: Vec<Ipv4Addr> = log.answers.iter().map(|(s, _)| *s).collect();
        // Member 1 first; once member 2 answers, never member 1 again.
        assert_eq!(servers.first(), Some(&s1), "{src}: {log:?}");
        assert_eq!(servers.last(), Some(&s2), "{src}: {log:?}");
        let switch = servers.iter().position(|s| *s == s2).expect("switched");
        assert!(servers[switch..].iter().all(|s| *s == s2), "{src}: {log:?}");
    }
    // Every session moved exactly once: some when member 2 arrived, the rest at the drain.
    let n = logs.len() as u64;
    assert!(
        0 < moved_at_arrival && moved_at_arrival < n,
        "{moved_at_arrival}"
    );
    assert_eq!(lab.metric(0, "handed_off_total"), n);
    assert_eq!(lab.metric(1, "handoff_received_total"), n);
    assert_eq!(lab.metric(1, "handoff_timeouts_total"), 0);
    assert_eq!(lab.metric(1, "forwarded_total"), 0);
}

/// Forward: every answer from member 1 (the sessions' old owner), also after the move and
/// during the drain; member 2 forwarded, member 1 served each forwarded datagram.
fn check_forward(strategy_run: (Lab, u64, BTreeMap<Ipv4Addr, SessionLog>), addrs: [Ipv4Addr; 2]) {
    let (lab, moved_at_arrival, logs) = strategy_run;
    let n = logs.len() as u64;
    assert!(
        0 < moved_at_arrival && moved_at_arrival < n,
        "{moved_at_arrival}"
    );
    // The rest were listed at the drain (with the fresh sessions member 1 started meanwhile).
    assert!(lab.metric(0, "handed_off_total") >= n);
    for (src, log) in &logs {
        assert!(
            log.answers.iter().all(|(s, _)| *s == addrs[0]),
            "{src}: {log:?}"
        );
    }
    let forwarded = lab.metric(1, "forwarded_total");
    assert!(forwarded > 0);
    // Each forwarded datagram that reached member 1 was answered or was a stale duplicate
    // (behind a flooding switch member 2 may hold requests that member 1 still answered
    // directly before its own commit, and forwards them once it has the list). Forwards are
    // UDP: one lost on a loaded host is resent by its client, so the sum may fall short of
    // member 2's count (seen once in about twenty runs, by one), never exceed it.
    let diag = std::fs::read_to_string(lab.dir.path().join("m1.prom")).unwrap_or_default();
    let answered = lab.metric(0, "forwarded_served_total");
    assert!(answered > 0, "{diag}");
    assert!(
        answered + lab.metric(0, "stale_requests_total") <= forwarded,
        "{forwarded} forwarded\n{diag}"
    );
    assert_eq!(lab.metric(0, "forward_refused_total"), 0);
    // Member 1 announced its direct path and member 2 used it.
    assert!(lab.metric(1, "forwarded_direct_total") > 0);
    assert_eq!(lab.metric(1, "handoff_timeouts_total"), 0);
}

#[test]
fn handoff_continues_every_session_across_a_move_and_a_drain() {
    check_handoff(reallocate_under_load("handoff", verifier_lab()), ROUTED);
}

#[test]
fn forward_lets_the_old_owner_serve_its_sessions_to_their_end() {
    // Member 1's direct path (10.0.1.2) is on another subnet than member 2: through the router.
    check_forward(reallocate_under_load("forward", verifier_lab()), ROUTED);
}

#[test]
fn handoff_behind_a_plain_flooding_switch() {
    // Both members see every datagram: around a commit one may answer a request the other
    // then answers again from the handed-off state (same request id, same number).
    check_handoff(reallocate_under_load("handoff", switch_lab()), SWITCHED);
}

#[test]
fn forward_behind_a_plain_flooding_switch() {
    check_forward(reallocate_under_load("forward", switch_lab()), SWITCHED);
}
