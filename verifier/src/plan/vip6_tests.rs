use super::*;
use igmp_ext::join::AllocationEpoch;
use igmp_ext::ownership::Claim6;
use igmp_ext::{MemberId, Slice6, SliceSet6};

const G: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 1);
const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x80);

fn claim(slices: SliceSet6, ifindex: u32, sender: Ipv6Addr) -> Claim6 {
    Claim6 {
        slices,
        epoch: AllocationEpoch(1),
        ifindex,
        sender,
        expires: igmp_ext::Instant::from_millis(1_000_000),
        member_key: igmp_ext::KeyId([1; 8]),
        issuer: igmp_ext::KeyId([2; 8]),
        standby: SliceSet6::default(),
        liveness: Vec::new(),
        waiting: SliceSet6::default(),
    }
}

fn sender(m: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, m as u16)
}

/// Member 1 owns the first half of the /56 site slicing on ifindex 3, member 2 the second on
/// ifindex 4.
fn table() -> OwnershipTable6 {
    let units = SliceSet6::site_slicing(1);
    let mut t = OwnershipTable6::new();
    for (i, unit) in units.iter().enumerate() {
        let m = i as u32 + 1;
        t.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(m),
            claim(SliceSet6::from(*unit), m + 2, sender(m)),
        )
        .expect("claim");
    }
    t
}

/// Member 2 takes both halves at a later epoch; member 1 keeps a claim of nothing.
fn moved() -> OwnershipTable6 {
    let mut t = table();
    let mut c = claim(
        SliceSet6::site_slicing(1).into_iter().collect(),
        4,
        sender(2),
    );
    c.epoch = AllocationEpoch(2);
    t.apply(Timestamp::from_secs(2), G, MemberId(2), c)
        .expect("move");
    t
}

fn device_of(ifindex: u32) -> Option<String> {
    (3..=4)
        .contains(&ifindex)
        .then(|| format!("s{}", ifindex - 2))
}

fn devices() -> Vec<String> {
    vec!["c0".into(), "s1".into(), "s2".into()]
}

fn planner(pin: bool) -> Vip6Planner {
    Vip6Planner::new(
        vec![Vip6Spec {
            address: VIP,
            group: G,
            pin,
        }],
        devices(),
    )
}

fn written(op: Option<DataplaneOp>) -> NftBatch {
    match op {
        Some(DataplaneOp::Vip6Table(b)) => b,
        other => panic!("expected a table write, got {other:?}"),
    }
}

fn rule(s: Slice6, to: &str) -> String {
    format!(
        "ip6 saddr & {} == {} {to}",
        Ipv6Addr::from(s.mask()),
        Ipv6Addr::from(s.value())
    )
}

const X: &str = "2001_db8_ffff_0_0_0_0_80";

#[test]
fn each_source_goes_to_its_slices_owner_and_unowned_ones_are_dropped() {
    let units = SliceSet6::site_slicing(1);
    let mut p = planner(false);
    let at = Timestamp::from_secs(1);
    let batch = written(p.update(at, &table(), GapPolicy::Drop, device_of));
    assert!(batch.rewrite);
    assert!(batch.starts_with(REWRITE_HEAD), "{batch}");
    let (a, b) = (units[0], units[1]);
    let slices = format!(
        "\tchain s_{X} {{\n\t\t{}\n\t\t{}\n\t\tcounter drop\n\t}}\n",
        rule(a, "goto m1_fe80_0_0_0_0_0_0_1"),
        rule(b, "goto m2_fe80_0_0_0_0_0_0_2")
    );
    assert!(batch.contains(&slices), "{batch}");
    for m in 1..=2 {
        let hop = format!(
            "chain m{m}_fe80_0_0_0_0_0_0_{m} {{\n\t\tcounter fwd ip6 to fe80::{m} device \"s{m}\"\n\t}}"
        );
        assert!(batch.contains(&hop), "{batch}");
    }
    assert!(batch.contains(&format!(
        "\t\tip6 daddr {VIP} ip6 hoplimit > 1 goto s_{X}\n"
    )));
    // Neighbour discovery and MLD first, never steered; no flow tables without pin.
    let icmp = batch.find("nd-neighbor-solicit").expect("ND accepted");
    assert!(icmp < batch.find("ip6 daddr 2001:db8").expect("VIP rule"));
    assert!(batch.contains("mld2-listener-report } accept"));
    assert!(!batch.contains("map pin_"), "{batch}");
    assert!(batch.contains("priority -10;"));
    // Nothing moved: nothing written.
    assert_eq!(p.update(at, &table(), GapPolicy::Drop, device_of), None);
}

#[test]
fn the_gap_fallback_takes_sources_no_one_owns() {
    let mut t = table();
    t.apply(
        Timestamp::from_secs(2),
        G,
        MemberId(2),
        claim(SliceSet6::default(), 4, sender(2)),
    )
    .expect("leave");
    let mut p = planner(false);
    let at = Timestamp::from_secs(2);
    let batch = written(p.update(at, &t, GapPolicy::Fallback(MemberId(1)), device_of));
    assert!(
        batch.contains("\t\tgoto m1_fe80_0_0_0_0_0_0_1\n\t\tcounter drop\n"),
        "{batch}"
    );
    assert!(!batch.contains("m2_"), "{batch}");
}

#[test]
fn pin_looks_flows_up_first_and_a_repoint_keeps_the_flow_tables() {
    let units = SliceSet6::site_slicing(1);
    let mut p = planner(true);
    let first = written(p.update(
        Timestamp::from_secs(1),
        &table(),
        GapPolicy::Drop,
        device_of,
    ));
    // The first write replaces the table whole; the executor keeps what a listing shows.
    assert!(first.starts_with(REWRITE_HEAD));
    for set in ["pin", "fin", "upin"] {
        assert!(
            first.contains(&format!(
                "\tmap {set}_{X} {{\n\t\t{FLOW_TYPE}\n\t\tsize 262144\n\t\tflags dynamic,timeout\n\t}}"
            )),
            "{first}"
        );
    }
    assert!(first.contains(&format!(
        "ip6 daddr {VIP} ip6 hoplimit > 1 ip6 nexthdr vmap {{ 6 : goto tcp_{X}, 17 : goto udp_{X} }}"
    )));
    assert!(first.contains(&rule(units[0], "meta mark set 0x4d430001 return")));
    assert!(first.contains(
        "elements = { 0x4d430001 : jump m1_fe80_0_0_0_0_0_0_1, 0x4d430002 : jump m2_fe80_0_0_0_0_0_0_2 }"
    ));
    // An open connection's packet: its pin, refreshed for days, to its member's hop.
    assert!(first.contains(&format!(
        "@th,104,8 & 0x7 == 0x0 meta mark set {FLOW} map @pin_{X} update @pin_{X} {{ {FLOW} timeout 432000s : meta mark }} meta mark vmap @hop_{X}"
    )));
    p.completed(&DataplaneOp::Vip6Table(first.clone()), true);

    // Member 2 takes member 1's half: the slice rules move, member 1 keeps its hop (its pinned
    // flows still reach it), and the rewrite keeps the flow tables.
    let at = Timestamp::from_secs(2);
    let second = written(p.update(at, &moved(), GapPolicy::Drop, device_of));
    assert!(
        second.starts_with(&format!(
            "add table netdev {TABLE}\nflush table netdev {TABLE}\ndelete map netdev {TABLE} hop_{X}\n"
        )),
        "{second}"
    );
    assert!(!second.contains(&format!("delete map netdev {TABLE} pin_")));
    assert!(second.contains(&format!("delete chain netdev {TABLE} tcp_{X}\n")));
    assert!(second.contains(&format!("delete chain netdev {TABLE} ingress\n")));
    assert!(
        !second.contains("meta mark set 0x4d430001 return"),
        "{second}"
    );
    assert!(
        second.contains("meta mark set 0x4d430002 return"),
        "{second}"
    );
    assert!(second.contains("0x4d430001 : jump m1_fe80_0_0_0_0_0_0_1"));

    // Past the linger member 1's hop goes: its pins then follow the slices.
    let later = Timestamp::from_secs(2 + LINGER_S);
    let third = written(p.update(later, &moved(), GapPolicy::Drop, device_of));
    let body = third
        .split_once("table netdev manycast_vip6 {")
        .expect("body")
        .1;
    assert!(!body.contains("m1_"), "{third}");
    assert!(
        third.contains("delete chain netdev manycast_vip6 m1_"),
        "{third}"
    );
}

#[test]
fn a_listing_of_an_unknown_table_is_replaced_whole_and_a_known_one_keeps_its_pins() {
    let mut p = planner(true);
    let text = written(p.update(
        Timestamp::from_secs(1),
        &table(),
        GapPolicy::Drop,
        device_of,
    ));
    let listing = format!(
        "table netdev {TABLE} {{\n\tchain m1_fe80_0_0_0_0_0_0_1 {{\n\t}}\n\tchain s_{X} {{\n\t}}\n\tchain tcp_{X} {{\n\t}}\n\tchain udp_{X} {{\n\t}}\n\tchain ingress {{\n\t\ttype filter hook ingress devices = {{ \"s1\" }} priority -10; policy accept;\n\t}}\n}}\n"
    );
    let kept = keep_flow_tables(&text, &listing).expect("a table this version wrote");
    assert!(kept.contains(&format!("delete map netdev {TABLE} hop_{X}\n")));
    assert!(!kept.contains("delete table"), "{kept}");
    assert!(!kept.contains(&format!("delete map netdev {TABLE} pin_")));
    // No table: nothing to keep. A chain this version does not name: replaced whole.
    assert_eq!(keep_flow_tables(&text, "table netdev other {\n}\n"), None);
    let odd = listing.replace("chain udp_", "chain v_");
    assert_eq!(keep_flow_tables(&text, &odd), None);
    // A VIP no longer pinned: its flow tables go too.
    let unpinned = written(planner(false).update(
        Timestamp::from_secs(1),
        &table(),
        GapPolicy::Drop,
        device_of,
    ));
    let kept = keep_flow_tables(&unpinned, &listing).expect("kept");
    assert!(
        kept.contains(&format!("delete map netdev {TABLE} pin_{X}\n")),
        "{kept}"
    );
}

#[test]
fn a_failed_write_is_written_again_and_a_stop_removes_the_table() {
    let mut p = planner(true);
    assert_eq!(p.withdraw(), None, "nothing written, nothing to remove");
    let empty = OwnershipTable6::new();
    assert_eq!(
        p.update(Timestamp::from_secs(1), &empty, GapPolicy::Drop, device_of),
        None,
        "nothing before the first claim"
    );
    let at = Timestamp::from_secs(1);
    let op = p
        .update(at, &table(), GapPolicy::Drop, device_of)
        .expect("written");
    p.completed(&op, false);
    let again = written(p.update(at, &table(), GapPolicy::Drop, device_of));
    assert!(
        again.starts_with(REWRITE_HEAD),
        "unknown kernel: whole, the executor keeps pins"
    );
    assert_eq!(p.withdraw(), Some(DataplaneOp::DeleteVip6Table));
}
