//! `handoff` and `forward` for IPv6 clients end to end (issue 15, item 5): the real verifier
//! with `protected6` steers each IPv6 source by its /56 (SPEC.md §10.2.2) to the member whose
//! signed MLDv2 join claims it; two real `manycast-server`s with `group6`. IPv6 clients keep
//! persistent sessions, sending numbered requests continuously while member 2 arrives and half
//! the units move. Every client's numbers must continue 1, 2, 3, ... with no gap, no repeat, no
//! lost request and no reset: under `handoff` a moved session continues at member 2, under
//! `forward` member 2 passes its datagrams back to member 1 (`Forward6`), which answers them.

use crate::harness::{verifier_status, wait_for, Lab, PORT};
use crate::native6::{certify_dual_stack, ipv6_layout, server6, socket6, sources6, unit_of};
use igmp_ext::fixtures::GROUP6;
use igmp_ext::{Slice6, SliceSet6};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};

/// Resends of one request id before it counts as lost (300 ms read timeout each).
const TRIES: u32 = 40;
pub(crate) const TABLES: &str =
    "[service]\nsession_idle_ms = 30000\n[reallocation]\nhold_ms = 1000\n";

/// One IPv6 client's session under load: (server address, number) for r1, r2, ... in order.
#[derive(Debug, Default)]
pub(crate) struct Log6 {
    pub(crate) answers: Vec<(Ipv6Addr, u64)>,
    pub(crate) lost: u64,
    /// Replies that were not `m<id> <n> r<k>` (a reset reply among them).
    pub(crate) other: Vec<String>,
}

impl std::fmt::Display for Log6 {
    /// A summary: the server changes (where, from whom, at which number) and what went wrong.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut last = None;
        for (i, (server, n)) in self.answers.iter().enumerate() {
            if last != Some(server) {
                write!(f, "r{}: {server} n={n}; ", i + 1)?;
                last = Some(server);
            }
        }
        let breaks: Vec<_> = self.breaks().into_iter().take(5).collect();
        write!(
            f,
            "{} answers, lost {}, breaks {breaks:?}, other {:?}",
            self.answers.len(),
            self.lost,
            self.other
        )
    }
}

impl Log6 {
    /// Requests whose number is not one more than the previous one's.
    pub(crate) fn breaks(&self) -> Vec<(usize, u64)> {
        self.answers
            .iter()
            .enumerate()
            .filter(|(i, (_, n))| *n != *i as u64 + 1)
            .map(|(i, (_, n))| (i + 1, *n))
            .collect()
    }
}

/// Parses `m<id> <n> r<k>` into (n, k).
fn numbered(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split_whitespace();
    it.next()?.strip_prefix('m')?;
    let n = it.next()?.parse().ok()?;
    let k = it.next()?.strip_prefix('r')?.parse().ok()?;
    Some((n, k))
}

/// Until `stop`: each client in turn sends `r<k>` to GROUP6 and waits for the reply carrying
/// `r<k>`, resending the same id after each read timeout (up to TRIES, then it is lost).
pub(crate) fn run(
    socks: &[(Ipv6Addr, std::net::UdpSocket)],
    stop: &AtomicBool,
) -> BTreeMap<Ipv6Addr, Log6> {
    let mut logs: BTreeMap<Ipv6Addr, Log6> = BTreeMap::new();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        for (src, s) in socks {
            let log = logs.entry(*src).or_default();
            let mut answered = false;
            for _try in 0..TRIES {
                s.send_to(
                    format!("r{k}").as_bytes(),
                    SocketAddrV6::new(GROUP6, PORT, 0, 0),
                )
                .expect("send");
                let mut buf = [0u8; 128];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let SocketAddr::V6(from) = from else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
                    match numbered(&text) {
                        Some((number, id)) if id == k => {
                            log.answers.push((*from.ip(), number));
                            answered = true;
                            break;
                        }
                        // A late reply to an earlier resend of a request already answered.
                        Some(_) => {}
                        None => log.other.push(text),
                    }
                }
                if answered {
                    break;
                }
            }
            log.lost += u64::from(!answered);
        }
    }
    logs
}

pub(crate) struct StopOnDrop<'a>(pub(crate) &'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Member 1 alone, load, member 2 arrives (a planned move of half the units), more load.
/// Returns the lab (for metrics) and every client's log.
fn move_under_load(strategy: &str) -> (Lab, BTreeMap<Ipv6Addr, Log6>) {
    let mut lab = Lab::new(2);
    certify_dual_stack(&mut lab);
    let routed = lab.routed(2, &[Ipv4Addr::new(10, 1, 0, 2)]);
    let (router, client, servers) = (
        routed.router.clone(),
        routed.client.clone(),
        routed.servers.clone(),
    );
    // Every other site: units from 0 to 242, some in each half.
    let srcs: Vec<Ipv6Addr> = sources6().into_iter().step_by(2).collect();
    ipv6_layout(&lab, &router, &client, &servers, &srcs);
    let socket = lab.start_verifier(
        &router,
        &routed.interfaces(),
        "[verifier]\nprotected6 = [\"ff3e::/32\"]\n",
        None,
    );
    let top = format!("group6 = \"{GROUP6}\"\nstrategy = \"{strategy}\"");
    let ids: Vec<u32> = lab.fixture.members.iter().map(|m| m.id.0).collect();
    let claims_at = |epoch: u64, members: &[u32]| {
        verifier_status(&socket).is_some_and(|s| {
            members.iter().all(|&m| {
                s.ownership
                    .iter()
                    .any(|r| r.member == m && r.epoch == epoch && r.group == GROUP6.to_string())
            })
        })
    };
    lab.start_server_with(0, &servers[0], "m0", "ctl0", &top, TABLES);
    wait_for("member 1 owns everything", || {
        lab.metric(0, "slice_addresses") == 1 << 32
    });
    let alone = lab.metric(0, "epoch");
    wait_for("the verifier holds member 1's IPv6 claim", || {
        claims_at(alone, &ids[..1])
    });
    let socks: Vec<(Ipv6Addr, std::net::UdpSocket)> = srcs
        .iter()
        .map(|&a| (a, socket6(&client, a, "cl0", 8)))
        .collect();
    let per_round = srcs.len() as u64;
    let served = |lab: &Lab| lab.metric(0, "served6_total") + lab.metric(1, "served6_total");
    let stop = AtomicBool::new(false);
    let logs = std::thread::scope(|scope| {
        let load = scope.spawn(|| run(&socks, &stop));
        let guard = StopOnDrop(&stop);
        wait_for("three rounds at member 1", || {
            lab.metric(0, "served6_total") >= 3 * per_round
        });
        lab.start_server_with(1, &servers[1], "m0", "ctl0", &top, TABLES);
        lab.wait_split();
        let split = lab.metric(0, "epoch");
        wait_for("the verifier holds both members' IPv6 claims", || {
            claims_at(split, &ids)
        });
        wait_for("member 1 counted the IPv6 sessions it moved", || {
            lab.metric(0, "handed_off6_total") > 0
        });
        let before = served(&lab);
        wait_for("three more rounds after the move", || {
            served(&lab) >= before + 3 * per_round
        });
        drop(guard);
        load.join().expect("load thread")
    });
    for (src, log) in &logs {
        assert_eq!(log.lost, 0, "{src}: lost requests: {log}\n{}", lab.logs());
        assert!(log.other.is_empty(), "{src}: no reset, nothing else: {log}");
        assert!(log.breaks().is_empty(), "{src}: gaps or repeats: {log}");
        assert!(log.answers.len() >= 6, "{src}: {log}");
    }
    // Some sessions moved and some stayed (their units by the /56, SPEC.md §6.2).
    let moved = lab.metric(0, "handed_off6_total");
    assert!(0 < moved && moved < per_round, "{moved} of {per_round}");
    let units: std::collections::BTreeSet<u8> = srcs.iter().map(|&a| unit_of(a)).collect();
    assert!(units.len() > 1);
    assert_eq!(lab.metric(0, "resets6_total"), 0);
    assert_eq!(lab.metric(1, "handoff_timeouts_total"), 0);
    (lab, logs)
}

#[test]
fn handoff_continues_every_ipv6_session_at_its_new_owner() {
    let (lab, logs) = move_under_load("handoff");
    let mut at_2 = 0;
    for (src, log) in &logs {
        let servers: Vec<Ipv6Addr> = log.answers.iter().map(|(s, _)| *s).collect();
        assert_eq!(servers.first(), Some(&server6(1)), "{src}: {log}");
        // Once member 2 answers, never member 1 again.
        if let Some(switch) = servers.iter().position(|s| *s == server6(2)) {
            assert!(
                servers[switch..].iter().all(|s| *s == server6(2)),
                "{src}: {log}"
            );
            at_2 += 1;
        }
    }
    let moved = lab.metric(0, "handed_off6_total");
    assert_eq!(at_2, moved, "each moved session continued at member 2");
    assert_eq!(lab.metric(1, "received6_total"), moved);
    assert_eq!(lab.metric(1, "forwarded6_total"), 0);
    manycastctl_shows_and_moves_ipv6_slices(&lab, &logs);
}

/// `manycastctl allocation` / `members` / `watch` show each member's IPv6 slices beside its
/// IPv4 ones, and they are where the sessions went; `move` takes an IPv6 client address.
fn manycastctl_shows_and_moves_ipv6_slices(lab: &Lab, logs: &BTreeMap<Ipv6Addr, Log6>) {
    use crate::admin::{allocation_at, answered_epoch, ctl, ctl_as, json, ok, operator};
    let socket = lab.admin_socket(0);
    let alloc = json(&socket, &["allocation", "--json"]);
    assert_eq!(alloc["group6"], GROUP6.to_string(), "{alloc}");
    let slices6 = |alloc: &serde_json::Value, id: u64| -> SliceSet6 {
        let members = alloc["members"].as_array().expect("members");
        let m = members.iter().find(|m| m["id"] == id).expect("member");
        let list = m["slices6"].as_array().expect("slices6");
        list.iter()
            .map(|s| {
                s.as_str()
                    .and_then(|s| s.parse::<Slice6>().ok())
                    .expect("an IPv6 slice")
            })
            .collect()
    };
    let (of_1, of_2) = (slices6(&alloc, 1), slices6(&alloc, 2));
    for (src, log) in logs {
        let last = log.answers.last().map(|(s, _)| *s);
        let expect_2 = last == Some(server6(2));
        assert_eq!(of_2.contains_addr(*src), expect_2, "{src}: {alloc}");
        assert_eq!(of_1.contains_addr(*src), !expect_2, "{src}: {alloc}");
    }
    let table = ok(&ctl(&socket, &["allocation"]));
    assert!(table.contains("  IPv6 "), "{table}");
    let members = ok(&ctl(&socket, &["members"]));
    assert!(
        members.contains(&format!("IPv6 group {GROUP6}")),
        "{members}"
    );
    let frame = ok(&ctl(&socket, &["watch", "--once"]));
    assert!(
        frame.contains("  IPv6 ") && frame.contains("IPv6: served "),
        "{frame}"
    );

    // Move the unit of a source member 2 serves back to member 1, named by the source.
    let (src, _) = logs
        .iter()
        .find(|(_, log)| log.answers.last().map(|(s, _)| *s) == Some(server6(2)))
        .expect("a source at member 2");
    let op = operator(lab);
    let out = ok(&ctl_as(
        &socket,
        &["move", &src.to_string(), "--to", "1"],
        &op,
    ));
    let alloc = allocation_at(&socket, answered_epoch(&out));
    let unit = usize::from(unit_of(*src));
    assert_eq!(alloc["unit_owner"][unit], 1, "{alloc}");
    assert!(slices6(&alloc, 1).contains_addr(*src), "{alloc}");
}

#[test]
fn forward_lets_the_old_owner_serve_its_ipv6_sessions() {
    let (lab, logs) = move_under_load("forward");
    for (src, log) in &logs {
        assert!(
            log.answers.iter().all(|(s, _)| *s == server6(1)),
            "{src}: every answer from member 1: {log}"
        );
    }
    // Each datagram member 1 answered for member 2 was one member 2 forwarded (the metrics
    // files are written once a second: member 2's catches up with member 1's).
    let answered = lab.metric(0, "forwarded_served6_total");
    assert!(answered > 0);
    wait_for(
        "member 2 forwarded every datagram member 1 answered for it",
        || lab.metric(1, "forwarded6_total") >= answered,
    );
    assert_eq!(lab.metric(0, "forward_refused_total"), 0);
}
