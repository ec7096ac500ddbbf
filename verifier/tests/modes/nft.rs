//! The nft data plane itself (`native.dataplane = "nft"`, forced so that these run on every
//! kernel): a new source's first datagram is forwarded (there is no upcall to wait for), what a
//! router owes a forwarded datagram (TTL ≤ 1 dropped, TTL decremented), nothing sent back out of
//! the interface it came in on; and `dataplane = "mroute"` refused on a kernel without ipmr.

use super::native::collect;
use crate::harness::topo::{
    kernel_has_mroute, wait_for, Capture, Dataplane, RouterLab, GROUP, NATIVE_TABLE, PORT,
};
use igmp_ext::Slice;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

const NFT: &str = "[native]\ndataplane = \"nft\"\n";
const EVEN: Slice = Slice::new(0, 1);
const ODD: Slice = Slice::new(1, 1);

/// A lab on the nft data plane with member 1 owning the even half and member 2 the odd half,
/// the map written.
fn two_halves() -> RouterLab {
    let mut lab = RouterLab::new(2, NFT);
    lab.start();
    assert_eq!(lab.dataplane(), Dataplane::Nft);
    lab.join(0, &[EVEN], 1);
    lab.join(1, &[ODD], 1);
    wait_for("the map steers both halves", || {
        lab.steered(GROUP) == BTreeMap::from([(1, 1), (2, 1)])
    });
    lab
}

#[test]
fn the_first_datagram_of_every_new_source_arrives() {
    let lab = two_halves();
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];
    // 24 sources the router has never seen, one datagram each, back to back.
    let sources: Vec<Ipv4Addr> = (1..=24).map(|i| Ipv4Addr::new(10, 1, 2, i)).collect();
    for (k, &src) in sources.iter().enumerate() {
        lab.send_raw_udp(src, GROUP, 8, 1, k as u8);
    }
    let got = collect(&rx, 1, sources.len());
    for &s in &sources {
        let owner = usize::from(u32::from(s) & 1 == 1);
        assert_eq!(got[owner].get(&s), Some(&1), "{s} at its owner: {got:?}");
        assert_eq!(got[1 - owner].get(&s), None, "{s} at the other: {got:?}");
    }
    let c = lab.native_counters();
    assert_eq!(c.forwarded, BTreeMap::from([(1, 12), (2, 12)]), "{c:?}");
    let s = lab.status();
    assert_eq!(s.counters.upcalls, 0);
    // Still one map value per half: no state per source.
    assert_eq!(lab.steered(GROUP), BTreeMap::from([(1, 1), (2, 1)]));
}

#[test]
fn ttl_one_is_not_forwarded_and_forwarded_ttl_is_decremented() {
    let lab = two_halves();
    // What reaches server 1's link, whether or not its host accepts it.
    let wire = Capture::open(&lab.servers[0].ns, "m0");
    let src = Ipv4Addr::new(10, 1, 2, 2); // even: member 1
    lab.send_raw_udp(src, GROUP, 1, 1, 0);
    lab.send_raw_udp(src, GROUP, 5, 2, 0);
    lab.send_raw_udp(src, GROUP, 2, 3, 0);
    let seen = wire.udp_to(GROUP);
    assert_eq!(
        seen,
        vec![(src, 4, vec![2, 0]), (src, 1, vec![3, 0])],
        "TTL 1 dropped, 5 → 4, 2 → 1"
    );
    let c = lab.native_counters();
    assert_eq!(c.ttl_drops, 1, "{c:?}");
    assert_eq!(c.forwarded.get(&1), Some(&2), "{c:?}");
}

/// A UDP socket in server `i` that sends to the group out of its link, without looping its
/// own datagrams back to itself.
fn server_sender(lab: &RouterLab, i: usize) -> Socket {
    let addr = lab.servers[i].addr;
    lab.servers[i].ns.run(|| {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp");
        s.bind(&SockAddr::from(SocketAddrV4::new(addr, 0)))
            .expect("bind");
        s.set_multicast_if_v4(&addr).expect("multicast if");
        s.set_multicast_ttl_v4(8).expect("ttl");
        s.set_multicast_loop_v4(false).expect("no loop");
        s
    })
}

#[test]
fn a_datagram_is_not_sent_back_out_of_the_interface_it_came_in_on() {
    let lab = two_halves();
    let wire = [
        Capture::open(&lab.servers[0].ns, "m0"),
        Capture::open(&lab.servers[1].ns, "m0"),
    ];
    let to = SockAddr::from(SocketAddrV4::new(GROUP, PORT));
    // Both servers' addresses (10.0.1.2, 10.0.2.2) are even: member 1, on server 1's link.
    // Server 2's datagram crosses to server 1; server 1's own would go back where it came
    // from, so it goes nowhere.
    let two = lab.servers[1].addr;
    server_sender(&lab, 1).send_to(&[1, 0], &to).expect("send");
    server_sender(&lab, 0).send_to(&[1, 1], &to).expect("send");
    let at_one = wire[0].udp_to(GROUP);
    let at_two = wire[1].udp_to(GROUP);
    assert_eq!(
        at_one,
        vec![(two, 7, vec![1, 0])],
        "server 1's link: only server 2's datagram"
    );
    assert!(at_two.is_empty(), "server 2's link: {at_two:?}");
    let c = lab.native_counters();
    assert_eq!(c.forwarded, BTreeMap::from([(1, 1), (2, 0)]), "{c:?}");
}

#[test]
fn the_mroute_data_plane_is_refused_in_one_line_on_a_kernel_without_it() {
    let mut lab = RouterLab::new(1, "[native]\ndataplane = \"mroute\"\n");
    if kernel_has_mroute() {
        lab.start();
        assert_eq!(lab.dataplane(), Dataplane::Mroute);
        assert!(lab.stop().success());
        return;
    }
    let (status, stderr) = lab.run_to_exit();
    assert!(!status.success(), "started without ipmr: {stderr}");
    let naming: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CONFIG_IP_MROUTE"))
        .collect();
    assert_eq!(naming.len(), 1, "{stderr}");
    assert!(naming[0].starts_with("manycast-verifier: "), "{stderr}");
    // Refused before it touched anything.
    assert_eq!(lab.native_table(), None, "{NATIVE_TABLE} made");
    assert!(lab.router_interfaces().iter().all(|i| !lab.allmulti(i)));
}

/// The group's map as the kernel holds it: masked source value → member (from the chain
/// each element jumps to, `m<member>_<address>`).
fn kernel_map(lab: &RouterLab) -> BTreeMap<String, u32> {
    let o = GROUP.octets();
    let map = format!("group_{}_{}_{}_{}", o[0], o[1], o[2], o[3]);
    let json = lab
        .router
        .exec("nft", &["-j", "list", "map", "netdev", NATIVE_TABLE, &map]);
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("nft JSON: {e}\n{json}"));
    let mut out = BTreeMap::new();
    for o in v["nftables"].as_array().into_iter().flatten() {
        for e in o
            .pointer("/map/elem")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            let key = e[0].as_str().unwrap_or_else(|| panic!("key in {e}"));
            let target = e[1]
                .pointer("/jump/target")
                .and_then(|t| t.as_str())
                .unwrap_or_else(|| panic!("jump in {e}"));
            let member = target
                .strip_prefix('m')
                .and_then(|r| r.split('_').next())
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("chain {target}"));
            out.insert(key.to_owned(), member);
        }
    }
    out
}

/// Issue 16, item 3: re-points change the map's elements in place (no table rewrite), so the
/// kernel's map follows every ownership change and the chains' packet counters carry on from
/// one change to the next instead of starting again at zero; each change is timed.
#[test]
fn repoints_move_map_elements_in_place_and_keep_the_counters() {
    // Slices of the low two bits: member 2 keeps one of mask 3 throughout, so the map's mask
    // (the finest any claim uses) stays 3 and the table's shape never changes.
    let s = |v| Slice::new(v, 3);
    let mut lab = RouterLab::new(2, NFT);
    lab.start();
    lab.join(0, &[s(0)], 1);
    lab.join(1, &[s(1), s(2)], 1);
    let phases: [&[(&str, u32)]; 4] = [
        &[("0.0.0.0", 1), ("0.0.0.1", 2), ("0.0.0.2", 2)],
        // Member 1 takes value 2 at a later epoch: one element re-pointed.
        &[("0.0.0.0", 1), ("0.0.0.1", 2), ("0.0.0.2", 1)],
        // Member 1 gives it back: the element goes (no owner)...
        &[("0.0.0.0", 1), ("0.0.0.1", 2)],
        // ...and member 2 claims it again.
        &[("0.0.0.0", 1), ("0.0.0.1", 2), ("0.0.0.2", 2)],
    ];
    let steps: [&dyn Fn(); 3] = [
        &|| lab.join(0, &[s(0), s(2)], 2),
        &|| lab.join(0, &[s(0)], 3),
        &|| lab.join(1, &[s(1), s(2)], 3),
    ];
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];
    let sources = crate::harness::topo::client_sources(8);
    let mut sent: BTreeMap<u32, u64> = BTreeMap::new();
    let mut rewrites = None;
    for (k, phase) in phases.iter().enumerate() {
        if k > 0 {
            steps[k - 1]();
        }
        let want: BTreeMap<String, u32> = phase.iter().map(|&(v, m)| (v.into(), m)).collect();
        let per_member = want.values().fold(BTreeMap::new(), |mut a, &m| {
            *a.entry(m).or_insert(0u64) += 1;
            a
        });
        wait_for(&format!("phase {k} in the status"), || {
            lab.steered(GROUP) == per_member
        });
        assert_eq!(kernel_map(&lab), want, "phase {k}");
        let status = lab.status();
        // The table was written whole once, at the start; never again.
        let r = *rewrites.get_or_insert(status.counters.nft_rewrites);
        assert_eq!(
            status.counters.nft_rewrites, r,
            "phase {k} rewrote the table"
        );
        // Traffic: every source reaches its value's owner (value 3 has none: dropped).
        let tag = k as u8 + 1;
        lab.send_to_group(&sources, 2, tag);
        let owner = |a: Ipv4Addr| want.get(&Ipv4Addr::from(u32::from(a) & 3).to_string());
        let expected = sources.iter().filter(|&&a| owner(a).is_some()).count() * 2;
        let got = collect(&rx, tag, expected);
        for &a in &sources {
            match owner(a) {
                Some(&m) => {
                    *sent.entry(m).or_insert(0) += 2;
                    assert_eq!(got[m as usize - 1].get(&a), Some(&2), "{a}: {got:?}");
                }
                None => assert!(got.iter().all(|g| !g.contains_key(&a)), "{a}: {got:?}"),
            }
        }
    }
    // Every packet of every phase is in the kernel's counters: none were reset.
    let c = lab.native_counters();
    assert_eq!(c.forwarded, sent, "{c:?}");
    let status = lab.status();
    assert_eq!(status.counters.native_forwarded, sent.values().sum::<u64>());
    // The three re-points were timed (and the joins before them).
    assert!(status.counters.repoints >= 3, "{:?}", status.counters);
    assert!(status.counters.repoint_us.is_some());
    // Each of the three went to the kernel straight over nfnetlink, not through libnftables'
    // parser and cache (issue 16: ~550 µs for a quarter of a map that way).
    assert!(status.counters.nfnl_batches >= 3, "{:?}", status.counters);
}
