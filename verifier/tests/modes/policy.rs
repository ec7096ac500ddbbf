//! What the verifier does when nobody, or the wrong member, claims a source: the gap policy
//! (drop, fallback) in the kernel, on either data plane; joins refused for slices outside the
//! member's certificate or for a group it has no keys for; and the querier giving way to a
//! lower-addressed querier.

use super::native::{collect, mr_cache_lines};
use crate::harness::netns::Netns;
use crate::harness::topo::{client_sources, drain, wait_for, Dataplane, RouterLab, GROUP};
use igmp_ext::fixtures::Fixture;
use igmp_ext::wire::igmp::{IgmpRepr, QueryRepr, QueryV3Fields};
use igmp_ext::wire::ipv4::{Ipv4Repr, PROTOCOL_IGMP, TOS_INTERNETWORK_CONTROL};
use igmp_ext::{Slice, SliceSet};
use nix::sys::socket::MsgFlags;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

const EVEN: Slice = Slice::new(0, 1);
const ODD: Slice = Slice::new(1, 1);

fn is_even(a: Ipv4Addr) -> bool {
    u32::from(a) & 1 == 0
}

#[test]
fn gap_drop_sends_unowned_sources_nowhere() {
    let mut lab = RouterLab::new(2, "");
    lab.start();
    let dataplane = lab.dataplane();
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];
    lab.join(0, &[EVEN], 1);
    wait_for("one owner", || lab.status().ownership.len() == 1);
    if dataplane == Dataplane::Nft {
        wait_for("the map steers the even half only", || {
            lab.steered(GROUP) == BTreeMap::from([(1, 1)])
        });
    }

    // Odd sources have no owner. The even ones arriving shows that traffic flows at all.
    let sources = client_sources(6);
    lab.send_to_group(&sources, 2, 1);
    let got = collect(&rx, 1, 6);
    if dataplane == Dataplane::Mroute {
        wait_for("an entry per source", || lab.status().mfc.len() == 6);
    }
    let mut late = [drain(&rx[0]), drain(&rx[1])];
    for &s in &sources {
        let want = if is_even(s) { Some(&2) } else { None };
        assert_eq!(got[0].get(&s), want, "{s} at server 1: {got:?}");
        assert_eq!(got[1].get(&s), None, "{s} at server 2: {got:?}");
    }
    assert!(late.iter().all(Vec::is_empty), "late arrivals: {late:?}");
    let odd: Vec<Ipv4Addr> = sources.iter().copied().filter(|s| !is_even(*s)).collect();

    if dataplane == Dataplane::Nft {
        // The kernel's own counters: the 3 odd sources' 6 datagrams hit the group's drop rule,
        // the 6 even ones went toward member 1, none toward member 2.
        let c = lab.native_counters();
        assert_eq!(c.unowned_drops, 6, "{c:?}");
        assert_eq!(c.forwarded, BTreeMap::from([(1, 6)]), "{c:?}");
        lab.send_to_group(&odd, 2, 2);
        let got = collect(&rx, 2, 1);
        assert!(
            got.iter().all(BTreeMap::is_empty),
            "dropped sources arrived: {got:?}"
        );
        assert_eq!(lab.native_counters().unowned_drops, 12);
        let s = lab.status();
        assert!(s.mfc.is_empty() && s.counters.upcalls == 0, "{s:?}");
        return;
    }

    // The unowned sources have drop entries in the kernel: sending again makes no new upcall.
    let status = lab.status();
    for row in &status.mfc {
        let even = row
            .source
            .parse::<Ipv4Addr>()
            .map(is_even)
            .expect("source address");
        assert_eq!(row.oif == "drop", !even, "{row:?}");
        assert_eq!(row.member.is_none(), !even, "{row:?}");
    }
    assert_eq!(status.counters.upcalls, 6);
    lab.send_to_group(&odd, 2, 2);
    late = [drain(&rx[0]), drain(&rx[1])];
    assert!(
        late.iter().all(Vec::is_empty),
        "dropped sources arrived: {late:?}"
    );
    assert_eq!(lab.status().counters.upcalls, 6);
    assert_eq!(mr_cache_lines(&lab), 6);
}

#[test]
fn gap_fallback_sends_unowned_sources_to_the_fallback_member() {
    let mut lab = RouterLab::new(2, "[native]\ngap = \"fallback\"\nfallback_member = 2\n");
    lab.start();
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];
    // Member 1 owns the even quarter-pairs; member 2 only sources ending in binary 01. Sources
    // ending in 11 have no owner: the fallback (member 2) gets them.
    lab.join(0, &[EVEN], 1);
    lab.join(1, &[Slice::new(1, 3)], 1);
    wait_for("two owners", || lab.status().ownership.len() == 2);

    let sources = client_sources(8); // 10.1.0.2 ..= 10.1.0.9
    lab.send_to_group(&sources, 2, 1);
    let got = collect(&rx, 1, 16);
    for &s in &sources {
        let server = if is_even(s) { 0 } else { 1 };
        assert_eq!(got[server].get(&s), Some(&2), "{s}: {got:?}");
        assert_eq!(got[1 - server].get(&s), None, "{s}: {got:?}");
    }
    if lab.dataplane() == Dataplane::Nft {
        // Mask 0.0.0.3: values 0 and 2 to member 1, 1 (its claim) and 3 (the gap) to member 2;
        // nothing reached the drop rule.
        assert_eq!(lab.steered(GROUP), BTreeMap::from([(1, 2), (2, 2)]));
        let table = lab.native_table().expect("the nft table");
        assert!(
            table.contains("0.0.0.3 : jump m2_10_0_2_2"),
            "the gap does not go to the fallback:\n{table}"
        );
        let c = lab.native_counters();
        assert_eq!(c.unowned_drops, 0, "{c:?}");
        assert_eq!(c.forwarded, BTreeMap::from([(1, 8), (2, 8)]), "{c:?}");
        return;
    }
    let status = lab.status();
    let unowned: Vec<_> = status
        .mfc
        .iter()
        .filter(|r| {
            r.source
                .parse::<Ipv4Addr>()
                .is_ok_and(|a| u32::from(a) & 3 == 3)
        })
        .collect();
    assert_eq!(unowned.len(), 2, "{:?}", status.mfc);
    assert!(
        unowned.iter().all(|r| r.member == Some(2) && r.oif == "s2"),
        "{unowned:?}"
    );
}

#[test]
fn joins_outside_the_certificate_or_for_an_unserved_group_install_nothing() {
    // Both members are certified for the even half only.
    let fixture = Fixture::with_member_slices(2, [EVEN].into_iter().collect::<SliceSet>());
    let mut lab = RouterLab::with_fixture(fixture, "");
    lab.start();
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];

    // Member 2 claims the odd half: outside its certificate.
    lab.join(1, &[ODD], 1);
    // Member 1 claims a protected group the router has no keys for.
    lab.join_group(0, Ipv4Addr::new(232, 9, 9, 9), &[EVEN], 1);
    wait_for("both refusals counted", || {
        lab.rejected("outside-certificate") == 1 && lab.rejected("unknown-group") == 1
    });
    let s = lab.status();
    assert!(s.ownership.is_empty(), "{:?}", s.ownership);
    assert_eq!(s.counters.joins_accepted, 0);
    assert_eq!(s.counters.mfc_installs, 0);

    // Traffic from an odd source reaches nobody: its entry (made by the upcall) drops it; on
    // nft nothing is steered for either group, so the kernel has no way to forward it.
    let odd = client_sources(2)[1];
    lab.send_to_group(&[odd], 2, 1);
    match lab.dataplane() {
        Dataplane::Mroute => {
            wait_for("the upcall's entry", || lab.status().mfc.len() == 1);
            assert!(drain(&rx[0]).is_empty() && drain(&rx[1]).is_empty());
            let s = lab.status();
            assert_eq!(s.mfc[0].oif, "drop", "{:?}", s.mfc);
        }
        Dataplane::Nft => {
            let got = collect(&rx, 1, 1);
            assert!(got.iter().all(BTreeMap::is_empty), "{got:?}");
            assert!(lab.steered(GROUP).is_empty());
            assert!(lab.steered(Ipv4Addr::new(232, 9, 9, 9)).is_empty());
            let table = lab.native_table().unwrap_or_default();
            assert!(!table.contains("fwd"), "something is steered:\n{table}");
            assert!(lab.native_counters().forwarded.is_empty());
        }
    }

    // The same restricted certificate is accepted for what it does cover.
    lab.join(0, &[EVEN], 1);
    wait_for("member 1 owns the even half", || {
        lab.status().ownership.len() == 1
    });
    let s = lab.status();
    assert_eq!(s.ownership[0].member, 1);
    assert_eq!(s.counters.joins_accepted, 1);
    if lab.dataplane() == Dataplane::Nft {
        wait_for("the even half steered to member 1", || {
            lab.steered(GROUP) == BTreeMap::from([(1, 1)])
        });
    }
}

/// A raw IGMP socket in `ns`: every IGMP datagram delivered there (queries to 224.0.0.1 too).
fn igmp_listener(ns: &Netns) -> Socket {
    ns.run(|| {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(2))).expect("raw IGMP");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        s
    })
}

/// Membership queries from `from` received since the last call.
fn queries_from(sock: &Socket, from: Ipv4Addr) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 1500];
    while let Ok(len) = nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        let bytes = &buf[..len];
        let ihl = usize::from(bytes.first().map_or(0, |b| b & 0x0f)) * 4;
        let src = bytes
            .get(12..16)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
        if src == Some(from) && bytes.get(ihl) == Some(&0x11) {
            n += 1;
        }
    }
    n
}

/// A general IGMPv3 query from `src` (QQIC 1 s, QRV 2, max response 0.5 s).
fn general_query(src: Ipv4Addr) -> Vec<u8> {
    let igmp = IgmpRepr::Query(QueryRepr {
        max_resp_code: 5,
        group: Ipv4Addr::UNSPECIFIED,
        v3: Some(QueryV3Fields {
            flags: 0,
            suppress: false,
            qrv: 2,
            qqic: 1,
            sources: Vec::new(),
            additional_data: Vec::new(),
        }),
    });
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: Ipv4Addr::new(224, 0, 0, 1),
        protocol: PROTOCOL_IGMP,
        ttl: 1,
        tos: TOS_INTERNETWORK_CONTROL,
        router_alert: true,
        payload_len: igmp.buffer_len(),
    };
    let mut out = vec![0u8; ip.buffer_len()];
    ip.emit(&mut out);
    igmp.emit(&mut out[ip.header_len()..]);
    out
}

fn role_on(lab: &RouterLab, ifname: &str) -> String {
    lab.status()
        .interfaces
        .iter()
        .find(|i| i.name == ifname)
        .map(|i| i.role.clone())
        .unwrap_or_default()
}

#[test]
fn a_lower_addressed_querier_silences_ours_until_it_goes_quiet() {
    // The other router (played by the server at 10.0.1.2) is configured as trusted: queries
    // from anyone else are ignored (issue 13, item 8).
    let mut lab = RouterLab::new(
        1,
        "[querier]\nquery_interval_ms = 1000\nquery_response_interval_ms = 500\n\
         trusted_queriers = [\"10.0.1.2\"]\n",
    );
    // The router takes 10.0.1.9 on the server link, so the server (10.0.1.2) is the lower
    // address and wins the election (RFC 3376 §6.6.2).
    let ours = Ipv4Addr::new(10, 0, 1, 9);
    lab.router.ip(&["addr", "del", "10.0.1.1/24", "dev", "s1"]);
    lab.router.add_addr("s1", ours, 24);
    let other = lab.servers[0].addr;
    let watch = igmp_listener(&lab.servers[0].ns);
    lab.start();
    let mut seen = 0;
    wait_for("our startup queries on s1", || {
        seen += queries_from(&watch, ours);
        seen >= 2
    });
    assert_eq!(role_on(&lab, "s1"), "Some(Querier)");

    // The other querier speaks; ours steps down and stays quiet for as long as it keeps
    // querying (every 500 ms, well inside the Other Querier Present Interval of 2.25 s).
    lab.send_from_server(0, &general_query(other));
    wait_for("our querier to step down", || {
        role_on(&lab, "s1") == "Some(NonQuerier)"
    });
    queries_from(&watch, ours);
    for _ in 0..8 {
        lab.send_from_server(0, &general_query(other));
        std::thread::sleep(Duration::from_millis(500));
    }
    // Four of our own query intervals passed: a querier would have sent about four.
    assert_eq!(
        queries_from(&watch, ours),
        0,
        "queries while not the querier"
    );
    assert_eq!(role_on(&lab, "s1"), "Some(NonQuerier)");
    assert_eq!(
        role_on(&lab, "c0"),
        "Some(Querier)",
        "the other link is not affected"
    );

    // The other querier goes quiet: ours takes over again.
    wait_for("our querier to resume", || queries_from(&watch, ours) >= 1);
    assert_eq!(role_on(&lab, "s1"), "Some(Querier)");
}
