//! Plain (unprotected) groups: routed like any IGMP multicast router routes them, toward every
//! interface with listeners except the one a packet came in on, following listeners as they come
//! and go (SPEC.md §10.5). The hosts join with the kernel (IP_ADD_MEMBERSHIP), so the reports
//! the verifier sees are their kernels' own IGMPv3 reports.
//!
//! The routing needs the kernel's multicast routing (MFC entries). On the nft data plane
//! (kernels without CONFIG_IP_MROUTE) plain groups are not routed: those runs assert what
//! holds there instead (the querier still tracks the hosts; nothing crosses between subnets)
//! and say SKIPPED for the rest.

use crate::harness::topo::{wait_for, RouterLab};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

const PLAIN: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
const PLAIN_PORT: u16 = 5100;
/// Deadline for datagrams that must arrive (a hung run, not a timing assertion).
const WAIT: Duration = Duration::from_secs(10);

/// A UDP socket in server `i`'s namespace that sends to and (when `join`) receives the plain
/// group on its one link, with a TTL that lets it cross the router.
fn member_socket(lab: &RouterLab, i: usize, join: bool) -> UdpSocket {
    let s = &lab.servers[i];
    let addr = s.addr;
    s.ns.run(|| {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp");
        sock.set_reuse_address(true).expect("reuse");
        sock.bind(&SockAddr::from(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            PLAIN_PORT,
        )))
        .expect("bind");
        sock.set_multicast_if_v4(&addr).expect("multicast if");
        sock.set_multicast_ttl_v4(8).expect("ttl");
        if join {
            sock.join_multicast_v4(&PLAIN, &addr).expect("join");
        }
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        sock.into()
    })
}

fn send(sock: &UdpSocket, tag: u8, count: u8) {
    for k in 0..count {
        sock.send_to(&[tag, k], SocketAddrV4::new(PLAIN, PLAIN_PORT))
            .expect("send");
    }
}

/// Per receiver: sender address → datagrams with `tag`, until `want` arrived in all or `within`
/// ran out (a deadline for a hung run, or the quiet period of a check that nothing arrives).
fn gather(
    rx: &[&UdpSocket],
    tag: u8,
    want: usize,
    within: Duration,
) -> Vec<BTreeMap<Ipv4Addr, usize>> {
    let mut got = vec![BTreeMap::new(); rx.len()];
    let mut n = 0;
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 16];
    while n < want && Instant::now() < deadline {
        for (i, r) in rx.iter().enumerate() {
            while let Ok((len, std::net::SocketAddr::V4(from))) = r.recv_from(&mut buf) {
                if len == 2 && buf[0] == tag {
                    *got[i].entry(*from.ip()).or_insert(0) += 1;
                    n += 1;
                }
            }
        }
    }
    got
}

fn listening(lab: &RouterLab) -> Vec<String> {
    let mut l: Vec<String> = lab
        .status()
        .listeners
        .into_iter()
        .filter(|l| l.group == PLAIN.to_string())
        .map(|l| l.interface)
        .collect();
    l.sort();
    l
}

/// Packets the router sent out of `ifname`'s VIF (`/proc/net/ip_mr_vif`, PktsOut).
fn vif_packets_out(lab: &RouterLab, ifname: &str) -> u64 {
    lab.router
        .proc_net("ip_mr_vif")
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&ifname)).then(|| f.get(5)?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no VIF for {ifname}"))
}

/// On a kernel without multicast routing: the verifier still hears and counts the hosts'
/// reports and follows a leave, but no host's datagram reaches another subnet (each host
/// gets only its own, by local loopback).
fn assert_plain_not_routed(lab: &RouterLab, socks: &[UdpSocket]) {
    let addrs: Vec<Ipv4Addr> = lab.servers.iter().map(|s| s.addr).collect();
    let all: Vec<String> = (1..=socks.len()).map(|i| format!("s{i}")).collect();
    assert_eq!(listening(lab), all);
    assert!(lab.status().counters.plain_accepted >= socks.len() as u64);
    for s in socks {
        send(s, 1, 3);
    }
    let rx: Vec<&UdpSocket> = socks.iter().collect();
    // Each host's own 3 copies are certain; wait out the rest for anything that crossed.
    let got = gather(&rx, 1, usize::MAX, Duration::from_secs(2));
    for (i, g) in got.iter().enumerate() {
        let want = BTreeMap::from([(addrs[i], 3)]);
        assert_eq!(
            g,
            &want,
            "host {} got traffic from another subnet: {got:?}",
            i + 1
        );
    }
    assert!(lab.status().mfc.is_empty());
    // A leave: the group-specific queries go unanswered and the listener goes.
    let last = socks.len() - 1;
    socks[last]
        .leave_multicast_v4(&PLAIN, &addrs[last])
        .expect("leave");
    wait_for("the leaving host's listener gone", || {
        listening(lab) == all[..last]
    });
}

#[test]
fn plain_group_crosses_the_verifier_between_subnets_and_follows_listeners() {
    let mut lab = RouterLab::new(3, "");
    lab.start();
    // Three hosts on three subnets (10.0.1/24, 10.0.2/24, 10.0.3/24) behind the verifier.
    let socks: Vec<UdpSocket> = (0..3).map(|i| member_socket(&lab, i, true)).collect();
    wait_for("the kernels' reports for the plain group", || {
        listening(&lab) == ["s1", "s2", "s3"]
    });
    if lab.skip_without_mroute(
        "plain_group_crosses_the_verifier_between_subnets_and_follows_listeners",
        "plain-group routing through MFC entries",
    ) {
        assert_plain_not_routed(&lab, &socks);
        assert!(lab.stop().success());
        return;
    }
    let addrs: Vec<Ipv4Addr> = lab.servers.iter().map(|s| s.addr).collect();

    // Every host sends three datagrams; each gets the other two hosts' three (the kernel
    // queued the first ones during the upcall and released them), and its own only by local
    // loopback, never a second time through the router.
    for s in &socks {
        send(s, 1, 3);
    }
    let rx: Vec<&UdpSocket> = socks.iter().collect();
    let got = gather(&rx, 1, 27, WAIT);
    for (i, g) in got.iter().enumerate() {
        for a in &addrs {
            assert_eq!(g.get(a), Some(&3), "host {} from {a}: {got:?}", i + 1);
        }
    }
    let status = lab.status();
    for (i, a) in addrs.iter().enumerate() {
        let row = status
            .mfc
            .iter()
            .find(|m| m.group == PLAIN.to_string() && m.source == a.to_string())
            .unwrap_or_else(|| panic!("no entry for {a}: {:?}", status.mfc));
        let others: Vec<String> = (1..=3)
            .filter(|&k| k != i + 1)
            .map(|k| format!("s{k}"))
            .collect();
        assert_eq!(row.iif, format!("s{}", i + 1));
        assert_eq!(row.oif, others.join(","));
        assert_eq!(row.member, None);
    }

    // Host 3 leaves (its kernel sends a leave; group-specific queries go unanswered): entries
    // stop sending out of s3. Counted by the kernel's own VIF counter, as host 3 no longer
    // accepts the group and could not tell.
    socks[2]
        .leave_multicast_v4(&PLAIN, &addrs[2])
        .expect("leave");
    wait_for("host 3's listener gone", || listening(&lab) == ["s1", "s2"]);
    wait_for("entries no longer send out of s3", || {
        lab.status()
            .mfc
            .iter()
            .filter(|m| m.group == PLAIN.to_string())
            .all(|m| !m.oif.split(',').any(|o| o == "s3"))
    });
    let s3_out = vif_packets_out(&lab, "s3");
    send(&socks[0], 2, 3);
    send(&socks[1], 2, 3);
    let rx: Vec<&UdpSocket> = socks.iter().collect();
    let got = gather(&rx[..2], 2, 6, WAIT);
    assert_eq!(got[0].get(&addrs[1]), Some(&3), "{got:?}");
    assert_eq!(got[1].get(&addrs[0]), Some(&3), "{got:?}");
    assert_eq!(
        vif_packets_out(&lab, "s3"),
        s3_out,
        "sent toward a subnet with no listener"
    );

    // Host 3 joins again: the existing entries open toward s3 without waiting for new sources.
    socks[2]
        .join_multicast_v4(&PLAIN, &addrs[2])
        .expect("join again");
    wait_for("host 3 listens again", || {
        listening(&lab) == ["s1", "s2", "s3"]
    });
    send(&socks[0], 3, 2);
    let got = gather(&[&socks[2]], 3, 2, WAIT);
    assert_eq!(got[0].get(&addrs[0]), Some(&2), "{got:?}");
    assert!(lab.stop().success());
}

#[test]
fn plain_groups_switched_off_are_dropped_in_the_kernel() {
    let mut lab = RouterLab::new(2, "[native]\nroute_plain_groups = false\n");
    lab.start();
    let socks: Vec<UdpSocket> = (0..2).map(|i| member_socket(&lab, i, true)).collect();
    wait_for("the kernels' reports for the plain group", || {
        listening(&lab) == ["s1", "s2"]
    });
    if lab.skip_without_mroute(
        "plain_groups_switched_off_are_dropped_in_the_kernel",
        "drop entries for plain groups in the MFC",
    ) {
        assert_plain_not_routed(&lab, &socks);
        return;
    }
    send(&socks[0], 1, 3);
    wait_for("a drop entry for host 1", || {
        lab.status()
            .mfc
            .iter()
            .any(|m| m.group == PLAIN.to_string() && m.oif == "drop")
    });
    // Host 1's own copies arrive by loopback; host 2 gets nothing, and the kernel sent nothing
    // out of s2.
    let got = gather(&[&socks[1]], 1, 1, Duration::from_secs(1));
    assert!(got[0].is_empty(), "{got:?}");
    assert_eq!(vif_packets_out(&lab, "s2"), 0);
    assert_eq!(lab.status().counters.upcalls, 1);
}
