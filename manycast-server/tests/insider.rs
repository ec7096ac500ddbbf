//! A compromised but certified member against real daemons (issue 13, SPEC.md §9.7): three
//! `manycast-server` members on one switch; member 3's daemon runs, and beside it, with its key
//! and certificate, forged proposals, extreme epochs, oversized weights and requests against
//! the others go out on the control group (`support::insider`). The simulator tests
//! (`control-channel/tests/attack.rs`) check the endpoint; this checks that the daemons refuse
//! the same datagrams off the wire with their configured `max_weight`, and count them.

use crate::harness::{wait_for, Lab};
use crate::support::insider::Insider;
use manycast_server::admin::protocol::Status;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

const MAX_WEIGHT: u32 = 2;

fn dropped(lab: &Lab, i: usize) -> BTreeMap<String, u64> {
    lab.admin_status(i)
        .map(|s| s.counters.control_dropped)
        .unwrap_or_default()
}

#[test]
fn forged_control_datagrams_from_a_certified_member_change_nothing() {
    let mut lab = Lab::new(3);
    let sw = lab.switch("sw");
    let addrs: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(10, 1, 0, 100 + i)).collect();
    let servers = lab.switched_servers(&sw, &addrs);
    let control = format!("max_weight = {MAX_WEIGHT}\n");
    for (i, ns) in servers.iter().enumerate() {
        // The insider (member 3) is configured with the largest weight and announces it.
        let top = if i == 2 {
            format!("strategy = \"reset\"\nweight = {MAX_WEIGHT}\n")
        } else {
            "strategy = \"reset\"\n".to_owned()
        };
        lab.start_server_with(i, ns, "eth0", "eth0", &top, &control);
    }
    // Settled: every member at one epoch with every weight in force, the same a second later.
    let settled = || {
        let s: Vec<Status> = (0..3).filter_map(|i| lab.admin_status(i)).collect();
        let in_force = |s: &Status| {
            s.members.len() == 3
                && s.members.iter().all(|m| {
                    m.live && m.allocation_weight.is_some() && m.allocation_weight == m.weight
                })
        };
        let agreed = s.len() == 3
            && s.iter().all(in_force)
            && s.windows(2).all(|w| w[0].epoch == w[1].epoch);
        agreed.then(|| s[0].epoch.clone()).flatten()
    };
    let mut last = None;
    wait_for(
        "three members at one epoch, the insider at its weight",
        || {
            let now = settled();
            let same = now.is_some() && now == last;
            last = now;
            if !same {
                std::thread::sleep(Duration::from_millis(900));
            }
            same
        },
    );
    let mut insider = Insider::start(&lab, 2, &servers[2], addrs[2], &servers[0], addrs[0]);
    wait_for("the observer hears the insider's daemon", || {
        insider.heard_daemon()
    });
    let before: Vec<_> = (0..2)
        .map(|i| lab.admin_status(i).expect("status"))
        .collect();
    let dropped_before: Vec<_> = (0..2).map(|i| dropped(&lab, i)).collect();
    // Two rounds, one datagram every 60 ms: each costs the insider's daemon one message
    // (`support::insider`), and it must stay live.
    for _round in 0..2 {
        for (name, header_epoch, m) in insider.attacks(&before[0], MAX_WEIGHT) {
            assert!(insider.send(name, header_epoch, &m), "{name} not sent");
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let forged = |prefix: &str| -> u64 {
        insider
            .sent
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    };
    let (proposals, requests) = (forged("proposal:"), forged("request:"));
    for i in 0..2 {
        let after = lab.admin_status(i).expect("status");
        let was = &before[i];
        assert_eq!(after.epoch, was.epoch, "member {} committed", i + 1);
        assert_eq!(after.unit_owner, was.unit_owner, "member {}", i + 1);
        assert!(after.unit_owner.iter().all(Option::is_some));
        let weights: BTreeMap<u32, (bool, Option<u32>)> = after
            .members
            .iter()
            .map(|m| (m.id, (m.live, m.weight)))
            .collect();
        let want: BTreeMap<u32, (bool, Option<u32>)> = [
            (1, (true, Some(1))),
            (2, (true, Some(1))),
            (3, (true, Some(MAX_WEIGHT))),
        ]
        .into();
        assert_eq!(weights, want, "member {}", i + 1);
        // Every forged proposal and request was refused and counted as such.
        let now = dropped(&lab, i);
        let delta = |r: &str| {
            now.get(r).copied().unwrap_or(0) - dropped_before[i].get(r).copied().unwrap_or(0)
        };
        let refused = delta("unauthorized") + delta("invalid-proposal") + delta("stale-epoch");
        assert!(
            refused >= proposals + requests,
            "member {}: {refused} refused of {proposals} proposals and {requests} requests; \
             dropped {now:?}, before {:?}",
            i + 1,
            dropped_before[i]
        );
    }
}
