//! End to end in native UDP mode with the real binaries: two `manycast-server`s on different
//! subnets behind a router running the real `manycast-verifier`, their control group on a
//! back-end segment; and the same two behind a plain flooding switch with no verifier.

use crate::harness::{ask, steered_members, verifier_status, wait_for, Clients, Lab, Routed};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The servers' addresses behind the plain switch.
const SWITCHED: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 101), Ipv4Addr::new(10, 1, 0, 102)];

fn sources(n: u8) -> Vec<Ipv4Addr> {
    (2..2 + n).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect()
}

/// Per source: the one server that answered, and the session numbers it sent in order.
fn owners(
    replies: &BTreeMap<Ipv4Addr, Vec<(Ipv4Addr, String)>>,
) -> BTreeMap<Ipv4Addr, (Ipv4Addr, Vec<u64>)> {
    replies
        .iter()
        .map(|(src, got)| {
            let servers: BTreeSet<_> = got.iter().map(|(s, _)| *s).collect();
            assert_eq!(servers.len(), 1, "{src} answered by {servers:?}: {got:?}");
            let numbers: Vec<u64> = got
                .iter()
                .map(|(_, t)| {
                    t.split(' ')
                        .nth(1)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("reply {t:?}"))
                })
                .collect();
            assert!(
                numbers.windows(2).all(|w| w[0] < w[1]),
                "{src}: session numbers not increasing: {numbers:?}"
            );
            (*src, (got[0].0, numbers))
        })
        .collect()
}

#[test]
fn two_servers_behind_the_verifier_split_sources_and_take_over_after_a_crash() {
    let mut lab = Lab::new(2);
    let srcs = sources(12);
    let Routed {
        router,
        client,
        servers,
        ..
    } = lab.routed(2, &srcs);

    // The real verifier, configured like its own tests.
    let socket = lab.start_verifier(&router, &["c0", "s1", "s2"], "", Some("debug"));

    lab.start_server(0, &servers[0], "m0", "ctl0");
    lab.start_server(1, &servers[1], "m0", "ctl0");
    lab.wait_split();
    assert_eq!(
        lab.metric(0, "slice_addresses") + lab.metric(1, "slice_addresses"),
        1 << 32,
        "the two members' slices cover the address space"
    );
    // The members' epoch, read again while waiting: a busy machine can make them find each
    // other down for a moment and commit again before the verifier has both claims.
    let mut epoch = 0;
    wait_for(
        "the verifier holds both members' claims at their epoch",
        || {
            epoch = lab.metric(0, "epoch");
            verifier_status(&socket).is_some_and(|s| {
                let rows: Vec<_> = s.ownership.iter().filter(|r| r.epoch == epoch).collect();
                rows.len() == 2 && rows.iter().map(|r| r.member).collect::<BTreeSet<_>>().len() == 2
            })
        },
    );

    let got = owners(&ask(&client, &srcs, 3));
    let server_addr = |i: u8| Ipv4Addr::new(10, 0, i, 2);
    let mut by_server: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (src, (server, numbers)) in &got {
        assert_eq!(numbers, &vec![1, 2, 3], "{src}");
        *by_server.entry(*server).or_default() += 1;
    }
    assert_eq!(got.len(), srcs.len(), "every source answered: {got:?}");
    assert_eq!(
        by_server.keys().copied().collect::<Vec<_>>(),
        vec![server_addr(1), server_addr(2)],
        "both servers serve some sources: {got:?}"
    );
    // The servers' kernels also report the group, unsigned: refused and counted.
    let s = verifier_status(&socket).expect("status");
    assert!(s.counters.joins_accepted >= 2);

    // Server 2 dies without a word: server 1 takes every slice at a later epoch, re-joins, and
    // the verifier re-points.
    lab.kill("m2");
    wait_for("member 1 owns everything at a later epoch", || {
        lab.metric(0, "epoch") > epoch
            && verifier_status(&socket).is_some_and(|s| steered_members(&s) == [Some(1)].into())
    });
    let after = owners(&ask(&client, &srcs, 2));
    for (src, (server, numbers)) in &after {
        assert_eq!(
            *server,
            server_addr(1),
            "{src} not answered by the survivor"
        );
        // Fresh client sockets (new ports): new sessions everywhere.
        let expect = vec![1, 2];
        assert_eq!(numbers, &expect, "{src}");
    }
    assert_eq!(after.len(), srcs.len());

    // SIGTERM: the survivor leaves (signed empty claim) and exits cleanly.
    assert!(lab.terminate("m1").success(), "{}", lab.logs());
    wait_for("the verifier dropped member 1's claim", || {
        verifier_status(&socket).is_some_and(|s| s.ownership.iter().all(|r| r.member != 1))
    });
}

#[test]
fn behind_a_plain_flooding_switch_each_source_is_answered_once() {
    let mut lab = Lab::new(2);
    let client = lab.netns("cli");
    let sw = lab.switch("sw");
    lab.plug(&sw, "pc", &client, "cl0");
    let srcs = sources(12);
    for a in &srcs {
        lab.addr(&client, "cl0", &format!("{a}/24"));
    }
    let servers = lab.switched_servers(&sw, &SWITCHED);
    lab.start_server(0, &servers[0], "eth0", "eth0");
    lab.start_server(1, &servers[1], "eth0", "eth0");
    lab.wait_split();
    let got = owners(&ask(&client, &srcs, 3));
    assert_eq!(got.len(), srcs.len(), "every source answered: {got:?}");
    let servers_used: BTreeSet<_> = got.values().map(|(s, _)| *s).collect();
    assert_eq!(servers_used.len(), 2, "{got:?}");
    for (src, (_, numbers)) in &got {
        assert_eq!(numbers, &vec![1, 2, 3], "{src}");
    }
    // Both servers saw every datagram; each filtered the other's.
    // Each member writes its metrics file on its own second: wait for both counts, or a
    // file written just before the last answer shows one short.
    wait_for("metrics written", || {
        lab.metric(0, "filtered_total") + lab.metric(1, "filtered_total") >= 36
            && lab.metric(0, "served_total") + lab.metric(1, "served_total") >= 36
    });
    assert_eq!(
        lab.metric(0, "served_total") + lab.metric(1, "served_total"),
        36
    );
}

#[test]
fn reset_strategy_tells_moved_clients_to_start_over() {
    let mut lab = Lab::new(2);
    let client = lab.netns("cli");
    let sw = lab.switch("sw");
    lab.plug(&sw, "pc", &client, "cl0");
    // Low bytes on both sides of 128: which units move depends on the allocation, so the
    // sources spread over the low-order bits (the default slicing, SPEC.md §6).
    let srcs: Vec<Ipv4Addr> = [2u8, 3, 4, 5, 130, 131, 132, 133, 66, 194]
        .iter()
        .map(|&b| Ipv4Addr::new(10, 1, 0, b))
        .collect();
    for a in &srcs {
        lab.addr(&client, "cl0", &format!("{a}/24"));
    }
    let servers = lab.switched_servers(&sw, &SWITCHED);
    let (s1, s2) = (Ipv4Addr::new(10, 1, 0, 101), Ipv4Addr::new(10, 1, 0, 102));
    lab.start_server(0, &servers[0], "eth0", "eth0");
    wait_for("member 1 owns everything", || {
        lab.metric(0, "slice_addresses") == 1 << 32
    });
    let clients = Clients::new(&client, &srcs);
    let first = owners(&clients.ask(2));
    assert!(
        first.values().all(|(s, n)| *s == s1 && n == &vec![1, 2]),
        "{first:?}"
    );

    // Member 2 arrives: half the slices move to it, and member 1 resets the moved sessions.
    lab.start_server(1, &servers[1], "eth0", "eth0");
    lab.wait_split();
    let next = clients.ask(1);
    let mut moved = 0;
    for (src, got) in &next {
        let texts: Vec<(Ipv4Addr, &str)> = got.iter().map(|(a, t)| (*a, t.as_str())).collect();
        if texts.iter().any(|(a, _)| *a == s2) {
            moved += 1;
            assert_eq!(texts, vec![(s1, "m1 reset"), (s2, "m2 1")], "{src}");
        } else {
            assert_eq!(texts, vec![(s1, "m1 3")], "{src}");
        }
    }
    assert!(moved > 0 && moved < srcs.len(), "{next:?}");
    wait_for("reset counter written", || {
        lab.metric(0, "resets_total") == moved as u64
    });
}
