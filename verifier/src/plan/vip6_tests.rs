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
    table_of(1, 2)
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
        Some(DataplaneOp::Vip6Table(w)) => w.batch,
        other => panic!("expected a table write, got {other:?}"),
    }
}

fn fast(op: &Option<DataplaneOp>) -> Vec<FastVip6> {
    match op {
        Some(DataplaneOp::Vip6Table(w)) => w.fast.clone(),
        other => panic!("expected a table write, got {other:?}"),
    }
}

fn value(s: Slice6) -> Ipv6Addr {
    Ipv6Addr::from(s.value())
}

const X: &str = "2001_db8_ffff_0_0_0_0_80";
const M1: &str = "m1_fe80_0_0_0_0_0_0_1";
const M2: &str = "m2_fe80_0_0_0_0_0_0_2";

#[test]
fn each_source_goes_to_its_slices_owner_and_unowned_ones_are_dropped() {
    let units = SliceSet6::site_slicing(1);
    let mut p = planner(false);
    let at = Timestamp::from_secs(1);
    let op = p.update(at, &table(), GapPolicy::Drop, device_of);
    assert!(fast(&op).is_empty(), "no pin, nothing for the tc program");
    let batch = written(op);
    assert!(batch.rewrite);
    assert!(batch.starts_with(REWRITE_HEAD), "{batch}");
    let (a, b) = (units[0], units[1]);
    let mask = Ipv6Addr::from(a.mask() | b.mask());
    let slices =
        format!("\tchain s_{X} {{\n\t\tip6 saddr & {mask} vmap @sl_{X}\n\t\tcounter drop\n\t}}\n");
    assert!(batch.contains(&slices), "{batch}");
    assert!(
        batch.contains(&format!(
            "\tmap sl_{X} {{\n\t\ttype ipv6_addr : verdict\n\t\telements = {{ {} : goto {M1}, {} : goto {M2} }}\n\t}}",
            value(a),
            value(b)
        )),
        "{batch}"
    );
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
    let units = SliceSet6::site_slicing(1);
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
        batch.contains(&format!(
            "elements = {{ {} : goto {M1}, {} : goto {M1} }}",
            value(units[0]),
            value(units[1])
        )),
        "{batch}"
    );
    assert!(!batch.contains("m2_"), "{batch}");
}

/// Issue 15 item 3: a re-point writes only the moved elements, one batch the executor sends
/// over nfnetlink, so the hop chains (and their counters) stay; a change of shape rewrites the
/// table keeping its flow tables by name.
#[test]
fn a_repoint_writes_only_the_moved_elements() {
    let units = SliceSet6::site_slicing(1);
    let mut p = planner(false);
    let first = p.update(
        Timestamp::from_secs(1),
        &table(),
        GapPolicy::Drop,
        device_of,
    );
    p.completed(first.as_ref().expect("written"), true);
    let second = written(p.update(
        Timestamp::from_secs(2),
        &moved(),
        GapPolicy::Drop,
        device_of,
    ));
    assert!(!second.rewrite, "{second}");
    assert_eq!(
        second.text,
        format!(
            "delete element netdev {TABLE} sl_{X} {{ {0} }}\nadd element netdev {TABLE} sl_{X} {{ {0} : goto {M2} }}\n",
            value(units[0])
        )
    );
    assert!(crate::sys::nfnl::ElementBatch::parse(&second).is_some());
    // Back again: member 1's chain is still there, only the element moves.
    let third = written(p.update(
        Timestamp::from_secs(3),
        &table(),
        GapPolicy::Drop,
        device_of,
    ));
    assert!(!third.rewrite && !third.contains("chain"), "{third}");
    // A finer mask changes the shape: rewritten, its names deleted, no listing needed.
    let mut t = table();
    let mut quarter = claim(SliceSet6::site_slicing(2)[0].into(), 3, sender(1));
    quarter.epoch = AllocationEpoch(2);
    t.apply(Timestamp::from_secs(4), G, MemberId(1), quarter)
        .expect("member 1 keeps a quarter");
    let fourth = written(p.update(Timestamp::from_secs(4), &t, GapPolicy::Drop, device_of));
    assert!(fourth.rewrite);
    assert!(
        fourth.starts_with(&format!(
            "add table netdev {TABLE}\nflush table netdev {TABLE}\nadd map netdev {TABLE} sl_{X} {{ type ipv6_addr : verdict; }}\ndelete map netdev {TABLE} sl_{X}\n"
        )),
        "{fourth}"
    );
    assert!(!fourth.contains(REWRITE_HEAD), "{fourth}");
    // A failed write makes the kernel unknown: whole again, the executor keeps the pins.
    p.completed(
        &DataplaneOp::Vip6Table(Vip6Write {
            batch: fourth,
            devices: devices(),
            fast: vec![],
        }),
        false,
    );
    let fifth = written(p.update(
        Timestamp::from_secs(5),
        &table(),
        GapPolicy::Drop,
        device_of,
    ));
    assert!(fifth.starts_with(REWRITE_HEAD), "{fifth}");
}

#[test]
fn pin_looks_flows_up_first_and_a_repoint_moves_elements_only() {
    let units = SliceSet6::site_slicing(1);
    let mut p = planner(true);
    let op = p.update(
        Timestamp::from_secs(1),
        &table(),
        GapPolicy::Drop,
        device_of,
    );
    // The tc program's view: the VIP, its map's mask and elements, both hops.
    let f = fast(&op);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].mask, units[0].mask() | units[1].mask());
    assert_eq!(
        f[0].elements,
        [(units[0].value(), 1), (units[1].value(), 2)]
    );
    assert_eq!(f[0].hops.keys().copied().collect::<Vec<_>>(), [1, 2]);
    let first = written(op);
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
    // A slice goes to its owner's mark chain, which returns to the protocol chain.
    assert!(
        first.contains("\tchain k1 {\n\t\tmeta mark set 0x4d430001\n\t}\n"),
        "{first}"
    );
    assert!(
        first.contains(&format!("{} : goto k1", value(units[0]))),
        "{first}"
    );
    assert!(first.contains(
        "elements = { 0x4d430001 : jump m1_fe80_0_0_0_0_0_0_1, 0x4d430002 : jump m2_fe80_0_0_0_0_0_0_2 }"
    ));
    // An open connection's packet: its pin, refreshed for days, to its member's hop.
    assert!(first.contains(&format!(
        "@th,104,8 & 0x7 == 0x0 meta mark set {FLOW} map @pin_{X} update @pin_{X} {{ {FLOW} timeout 432000s : meta mark }} meta mark vmap @hop_{X}"
    )));

    // Member 2 takes member 1's half: one element moves, member 1 keeps its hop (its pinned
    // flows still reach it), the flow tables are not touched.
    let at = Timestamp::from_secs(2);
    let second = written(p.update(at, &moved(), GapPolicy::Drop, device_of));
    assert_eq!(
        second.text,
        format!(
            "delete element netdev {TABLE} sl_{X} {{ {0} }}\nadd element netdev {TABLE} sl_{X} {{ {0} : goto k2 }}\n",
            value(units[0])
        )
    );

    // Past the linger member 1's hop goes from the hop map: its pins then follow the slices.
    let later = Timestamp::from_secs(2 + LINGER_S);
    let op = p.update(later, &moved(), GapPolicy::Drop, device_of);
    assert_eq!(fast(&op)[0].hops.keys().copied().collect::<Vec<_>>(), [2]);
    let third = written(op);
    assert_eq!(
        third.text,
        format!("delete element netdev {TABLE} hop_{X} {{ 0x4d430001 }}\n")
    );
}

/// The tc program's slice map leaves out the values a per-slice rule overrides (a claim the map
/// could not take): their sources are passed on to the table, which has the rule.
#[test]
fn the_programs_slices_leave_out_what_a_rule_overrides() {
    let plan = Vip6Plan {
        address: VIP,
        pin: true,
        slices: GroupPlan6 {
            mask: 1,
            elements: vec![(0, hop6(1)), (1, hop6(2))],
            rules: vec![(0x10, 0x11, hop6(3))],
        },
        hops: BTreeMap::new(),
    };
    assert_eq!(FastVip6::of(&plan).elements, [(1, 2)]);
}

fn hop6(m: u32) -> Hop6 {
    Hop6 {
        member: m,
        via: sender(m),
        device: format!("s{m}"),
    }
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
        "table netdev {TABLE} {{\n\tchain m1_fe80_0_0_0_0_0_0_1 {{\n\t}}\n\tchain k1 {{\n\t}}\n\tchain s_{X} {{\n\t}}\n\tchain tcp_{X} {{\n\t}}\n\tchain udp_{X} {{\n\t}}\n\tchain ingress {{\n\t\ttype filter hook ingress devices = {{ \"s1\" }} priority -10; policy accept;\n\t}}\n}}\n"
    );
    let kept = keep_flow_tables(&text, &listing).expect("a table this version wrote");
    assert!(kept.contains(&format!("delete map netdev {TABLE} hop_{X}\n")));
    // The slice map is declared first: the version before had none.
    assert!(kept.contains(&format!(
        "add map netdev {TABLE} sl_{X} {{ type ipv6_addr : verdict; }}\ndelete map netdev {TABLE} sl_{X}\n"
    )));
    assert!(kept.contains(&format!("delete chain netdev {TABLE} k1\n")));
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

/// A member without a mark (id above 0xffff) is in the tc program's maps but not in the nft
/// table, so a slice moving between two such members changes the program's view alone: it is
/// handed out all the same (before, nothing was, and new flows kept going to the old owner).
#[test]
fn the_programs_view_is_handed_out_when_only_it_changed() {
    let (a, b) = (0x1_0001, 0x1_0002);
    let units = SliceSet6::site_slicing(1);
    // b takes a's half at a later epoch.
    let mut moved = table_of(a, b);
    let mut c = claim(units.iter().copied().collect(), 4, sender(2));
    c.epoch = AllocationEpoch(2);
    moved
        .apply(Timestamp::from_secs(2), G, MemberId(b), c)
        .expect("move");
    let mut p = planner(true);
    let op = p.update(
        Timestamp::from_secs(1),
        &table_of(a, b),
        GapPolicy::Drop,
        device_of,
    );
    assert_eq!(
        fast(&op)[0].elements,
        [(units[0].value(), a), (units[1].value(), b)]
    );
    let op = p.update(Timestamp::from_secs(2), &moved, GapPolicy::Drop, device_of);
    assert_eq!(
        fast(&op)[0].elements,
        [(units[0].value(), b), (units[1].value(), b)]
    );
    // Nothing changed since: nothing is handed out.
    let again = p.update(Timestamp::from_secs(3), &moved, GapPolicy::Drop, device_of);
    assert!(again.is_none(), "{again:?}");
}

/// `a` owns the first half of the /56 site slicing on ifindex 3, `b` the second on ifindex 4.
fn table_of(a: u32, b: u32) -> OwnershipTable6 {
    let units = SliceSet6::site_slicing(1);
    let mut t = OwnershipTable6::new();
    for (i, (m, unit)) in [(a, units[0]), (b, units[1])].into_iter().enumerate() {
        let n = i as u32 + 1;
        t.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(m),
            claim(SliceSet6::from(unit), n + 2, sender(n)),
        )
        .expect("claim");
    }
    t
}
