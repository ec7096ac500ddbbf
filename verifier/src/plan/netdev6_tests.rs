use super::*;
use crate::sys::nfnl::ElementBatch;
use igmp_ext::join::AllocationEpoch;
use igmp_ext::ownership::Claim6;
use igmp_ext::{MemberId, Slice6, SliceSet6, Timestamp};

const G: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 1);
const MAP: &str = "group6_ff3e_0_0_0_0_0_8000_1";

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

/// Each member `m` (from 1) owns the units of the /56 site slicing over `bits` bits listed
/// for it, from `sender(m)` on ifindex `m + 2`.
fn owners(bits: u8, units: &[&[usize]]) -> OwnershipTable6 {
    let all = SliceSet6::site_slicing(bits);
    let mut t = OwnershipTable6::new();
    for (i, own) in units.iter().enumerate() {
        let m = i as u32 + 1;
        let slices: SliceSet6 = own.iter().map(|&u| all[u]).collect();
        t.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(m),
            claim(slices, m + 2, sender(m)),
        )
        .expect("claim");
    }
    t
}

/// Member 1 owns the first half of the /56 site slicing on ifindex 3, member 2 the second on
/// ifindex 4.
fn table() -> OwnershipTable6 {
    owners(1, &[&[0], &[1]])
}

fn device_of(ifindex: u32) -> Option<String> {
    (3..=5)
        .contains(&ifindex)
        .then(|| format!("s{}", ifindex - 2))
}

fn devices() -> Vec<String> {
    vec!["c0".into(), "s1".into(), "s2".into(), "s3".into()]
}

fn write(p: &mut Netdev6Planner, t: &OwnershipTable6, gap: GapPolicy) -> Option<NftBatch> {
    match p.update(t, gap, device_of) {
        Some(DataplaneOp::Netdev6Table(b)) => Some(b),
        None => None,
        Some(op) => panic!("{op:?}"),
    }
}

#[test]
fn each_owned_slice_goes_to_its_owners_hop_and_the_rest_is_dropped() {
    let mut p = Netdev6Planner::new(devices(), false);
    let batch = write(&mut p, &owners(2, &[&[0], &[1]]), GapPolicy::Drop).expect("a table");
    assert!(batch.rewrite);
    // Units of the two-bit site slicing: bits 8 and 9 of the fourth group (the /56's last).
    assert!(
        batch.contains(&format!(
            "\tmap {MAP} {{\n\t\ttype ipv6_addr : verdict\n\t\telements = {{ :: : jump m1_fe80_0_0_0_0_0_0_1, 0:0:0:100:: : jump m2_fe80_0_0_0_0_0_0_2 }}\n\t}}\n"
        )),
        "{batch}"
    );
    assert!(
        batch.contains("counter fwd ip6 to fe80::1 device \"s1\""),
        "{batch}"
    );
    assert!(
        batch.contains("counter fwd ip6 to fe80::2 device \"s2\""),
        "{batch}"
    );
    let ingress = &batch[batch.find("chain ingress").expect("ingress")..];
    assert_eq!(
        ingress,
        format!(
            "chain ingress {{\n\
             \t\ttype filter hook ingress devices = {{ \"c0\", \"s1\", \"s2\", \"s3\" }} priority 0; policy accept;\n\
             \t\tmeta l4proto ipv6-icmp accept\n\
             \t\tip6 daddr ff3e::8000:1 ip6 hoplimit 0-1 counter drop\n\
             \t\tip6 daddr ff3e::8000:1 ip6 saddr & 0:0:0:300:: vmap @{MAP}\n\
             \t\tip6 daddr ff3e::8000:1 counter drop\n\
             \t}}\n\
             }}\n"
        )
    );
    // The same ownership again (a refreshed join): nothing to write.
    assert_eq!(
        write(&mut p, &owners(2, &[&[0], &[1]]), GapPolicy::Drop),
        None
    );
}

#[test]
fn the_gap_policy_fallback_fills_the_unowned_values() {
    let mut p = Netdev6Planner::new(devices(), false);
    let t = owners(2, &[&[0], &[1]]);
    write(&mut p, &t, GapPolicy::Drop).expect("a table");
    // Member 1 as the fallback takes the unowned half: two elements added, nothing else.
    let b = write(&mut p, &t, GapPolicy::Fallback(MemberId(1))).expect("elements");
    assert!(!b.rewrite, "{b}");
    assert_eq!(
        b.text,
        format!("add element netdev manycast6 {MAP} {{ 0:0:0:200:: : jump m1_fe80_0_0_0_0_0_0_1, 0:0:0:300:: : jump m1_fe80_0_0_0_0_0_0_1 }}\n")
    );
    // A fallback member with no claim fills nothing.
    let groups = plan(&t, GapPolicy::Fallback(MemberId(9)), device_of, |_| 0);
    assert_eq!(groups[&G].elements.len(), 2);
}

/// Issue 15: a unit that moves between members is one element re-pointed, in a batch the
/// executor sends over nfnetlink; the table (and the other member's chain and its counter)
/// stays. A member that appears gets its chain and its elements; one that goes, its elements
/// deleted. Before, each of these rewrote the whole table.
#[test]
fn a_move_is_one_element_change_not_a_table_write() {
    let mut p = Netdev6Planner::new(devices(), false);
    assert!(
        write(&mut p, &owners(2, &[&[0, 2], &[1]]), GapPolicy::Drop)
            .expect("first")
            .rewrite
    );
    // Unit 2 moves from member 1 to member 2.
    let b = write(&mut p, &owners(2, &[&[0], &[1, 2]]), GapPolicy::Drop).expect("a move");
    assert!(!b.rewrite);
    assert_eq!(
        b.text,
        format!(
            "delete element netdev manycast6 {MAP} {{ 0:0:0:200:: }}\n\
             add element netdev manycast6 {MAP} {{ 0:0:0:200:: : jump m2_fe80_0_0_0_0_0_0_2 }}\n"
        )
    );
    assert!(ElementBatch::parse(&b.text).is_some(), "nfnetlink takes it");
    // Member 3 appears with unit 3 (unowned so far): its chain, then its element.
    let b = write(&mut p, &owners(2, &[&[0], &[1, 2], &[3]]), GapPolicy::Drop).expect("new");
    assert!(!b.rewrite);
    assert_eq!(
        b.text,
        format!(
            "add chain netdev manycast6 m3_fe80_0_0_0_0_0_0_3\n\
             flush chain netdev manycast6 m3_fe80_0_0_0_0_0_0_3\n\
             add rule netdev manycast6 m3_fe80_0_0_0_0_0_0_3 meta iifname \"s3\" accept\n\
             add rule netdev manycast6 m3_fe80_0_0_0_0_0_0_3 counter fwd ip6 to fe80::3 device \"s3\"\n\
             add element netdev manycast6 {MAP} {{ 0:0:0:300:: : jump m3_fe80_0_0_0_0_0_0_3 }}\n"
        )
    );
    // Member 2 goes: its values are deleted (dropped by the group's gap rule), no more.
    let b = write(&mut p, &owners(2, &[&[0], &[], &[3]]), GapPolicy::Drop).expect("gone");
    assert!(!b.rewrite);
    assert_eq!(
        b.text,
        format!("delete element netdev manycast6 {MAP} {{ 0:0:0:100::, 0:0:0:200:: }}\n")
    );
    // A member heard on another interface: its chain is flushed and forwards out of the new
    // one.
    let b = p
        .update(&owners(2, &[&[0], &[], &[3]]), GapPolicy::Drop, |i| {
            device_of(if i == 3 { 5 } else { i })
        })
        .expect("the chain rewritten");
    let DataplaneOp::Netdev6Table(b) = b else {
        panic!("{b:?}")
    };
    assert!(!b.rewrite);
    assert!(
        b.text.starts_with(
            "add chain netdev manycast6 m1_fe80_0_0_0_0_0_0_1\n\
             flush chain netdev manycast6 m1_fe80_0_0_0_0_0_0_1\n\
             add rule netdev manycast6 m1_fe80_0_0_0_0_0_0_1 meta iifname \"s3\" accept\n"
        ),
        "{b}"
    );
}

#[test]
fn a_change_of_shape_rewrites_the_table() {
    let mut p = Netdev6Planner::new(devices(), false);
    write(&mut p, &table(), GapPolicy::Drop).expect("first");
    // A second group: rewritten with both maps.
    let mut t = table();
    let g2 = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 2);
    let all = SliceSet6::site_slicing(1);
    t.apply(
        Timestamp::from_secs(1),
        g2,
        MemberId(1),
        claim(SliceSet6::from(all[0]), 3, sender(1)),
    )
    .expect("claim");
    let b = write(&mut p, &t, GapPolicy::Drop).expect("a rewrite");
    assert!(b.rewrite);
    assert!(b.contains(&format!("map {MAP} {{")), "{b}");
    assert!(b.contains("map group6_ff3e_0_0_0_0_0_8000_2 {"), "{b}");
    // A coarser ownership (member 2 alone owns everything): the map keeps its mask, elements
    // move.
    let mut whole = OwnershipTable6::new();
    whole
        .apply(
            Timestamp::from_secs(1),
            G,
            MemberId(2),
            claim(SliceSet6::full(), 4, sender(2)),
        )
        .expect("claim");
    write(&mut p, &table(), GapPolicy::Drop).expect("the second group gone: a rewrite");
    let b = write(&mut p, &whole, GapPolicy::Drop).expect("elements");
    assert!(!b.rewrite, "{b}");
    // A finer mask than the map has (the four-unit slicing): rewritten.
    let b = write(&mut p, &owners(2, &[&[0], &[1]]), GapPolicy::Drop).expect("a rewrite");
    assert!(b.rewrite);
    // The last claim gone: the table is written without the group.
    let b = write(&mut p, &OwnershipTable6::new(), GapPolicy::Drop).expect("a rewrite");
    assert!(b.rewrite && !b.contains("ff3e"), "{b}");
}

/// A claim whose slices would make the map wider than 2^16 values with the others' is
/// steered by a rule per slice before the map, not left out; such rules are part of the
/// table's shape.
#[test]
fn a_claim_the_map_cannot_hold_gets_rules_of_its_own() {
    let mut t = owners(1, &[&[0]]);
    // 34 bits: a /33 within member 1's unit's complement.
    let prefix = Slice6::new(
        Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0x100, 0, 0, 0, 0).into(),
        Ipv6Addr::new(0xffff, 0xffff, 0x8000, 0x100, 0, 0, 0, 0).into(),
    );
    t.apply(
        Timestamp::from_secs(1),
        G,
        MemberId(2),
        claim(SliceSet6::from(prefix), 4, sender(2)),
    )
    .expect("a disjoint claim");
    let mut p = Netdev6Planner::new(devices(), false);
    let b = write(&mut p, &t, GapPolicy::Drop).expect("a table");
    let rule =
        "ip6 daddr ff3e::8000:1 ip6 saddr & ffff:ffff:8000:100:: == 2001:db8:8000:100:: jump m2_fe80_0_0_0_0_0_0_2\n";
    let (at_rule, at_map) = (b.find(rule), b.find("vmap @"));
    assert!(at_rule.is_some() && at_rule < at_map, "{b}");
    assert!(
        b.contains("elements = { :: : jump m1_fe80_0_0_0_0_0_0_1 }\n"),
        "member 2 is not in the map: {b}"
    );
    // Member 2 gone: the rule goes, a rewrite.
    assert!(
        write(&mut p, &owners(1, &[&[0]]), GapPolicy::Drop)
            .expect("a rewrite")
            .rewrite
    );
}

#[test]
fn nothing_is_written_before_a_claim_and_a_written_table_is_removed_on_stop() {
    let mut p = Netdev6Planner::new(devices(), false);
    assert_eq!(
        write(&mut p, &OwnershipTable6::new(), GapPolicy::Drop),
        None
    );
    assert_eq!(p.withdraw(), None, "nothing written, nothing to remove");
    assert!(write(&mut p, &table(), GapPolicy::Drop).is_some());
    assert_eq!(p.withdraw(), Some(DataplaneOp::DeleteNetdev6Table));
}

#[test]
fn a_failed_write_is_written_again_whole() {
    let mut p = Netdev6Planner::new(devices(), false);
    let first = p
        .update(&table(), GapPolicy::Drop, device_of)
        .expect("written");
    p.completed(&first, false);
    assert_eq!(p.update(&table(), GapPolicy::Drop, device_of), Some(first));
    // A failed element update too (member 2 gone): what the kernel holds is unknown.
    let op = p
        .update(&owners(1, &[&[0]]), GapPolicy::Drop, device_of)
        .expect("elements");
    assert!(
        matches!(&op, DataplaneOp::Netdev6Table(b) if !b.rewrite),
        "{op:?}"
    );
    p.completed(&op, false);
    let again = write(&mut p, &owners(1, &[&[0]]), GapPolicy::Drop).expect("again");
    assert!(again.rewrite);
}

/// Issue 15: a table an earlier verifier left (SIGKILL, `keep_kernel_state`) keeps steering
/// through the adopt grace: nothing is written while claims come back, then the rebuilt plan
/// replaces it whole. A clean stop removes an adopted table even if nothing was written.
#[test]
fn an_adopted_table_is_held_until_release_then_replaced() {
    let mut p = Netdev6Planner::new(devices(), true);
    assert!(p.is_holding());
    assert_eq!(write(&mut p, &table(), GapPolicy::Drop), None);
    assert_eq!(
        write(&mut p, &owners(2, &[&[0], &[1]]), GapPolicy::Drop),
        None
    );
    let Some(DataplaneOp::Netdev6Table(b)) = p.release() else {
        panic!("the rebuilt plan on release");
    };
    assert!(b.rewrite, "the adopted table is replaced whole");
    assert!(
        b.contains("0:0:0:100:: : jump m2_fe80_0_0_0_0_0_0_2"),
        "{b}"
    );
    assert!(!p.is_holding());
    assert_eq!(p.release(), None, "released once");
    // From then on, changes are element updates against what was written.
    let b = write(&mut p, &owners(2, &[&[0], &[1, 2]]), GapPolicy::Drop).expect("elements");
    assert!(!b.rewrite, "{b}");
    // Nothing adopted: nothing to release.
    assert_eq!(Netdev6Planner::new(devices(), false).release(), None);
    // Adopted and stopped during the grace: the table is removed.
    let mut p = Netdev6Planner::new(devices(), true);
    assert_eq!(write(&mut p, &table(), GapPolicy::Drop), None);
    assert_eq!(p.withdraw(), Some(DataplaneOp::DeleteNetdev6Table));
}
