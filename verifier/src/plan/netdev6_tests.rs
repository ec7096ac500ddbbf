use super::*;
use igmp_ext::join::AllocationEpoch;
use igmp_ext::ownership::Claim6;
use igmp_ext::{MemberId, Slice6, SliceSet6, Timestamp};

const G: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 1);

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

/// Member 1 owns the first half of the /56 site slicing on ifindex 3, member 2 the second on
/// ifindex 4.
fn table() -> OwnershipTable6 {
    let units = SliceSet6::site_slicing(1);
    let mut t = OwnershipTable6::new();
    for (i, unit) in units.iter().enumerate() {
        let m = i as u32 + 1;
        let sender = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, m as u16);
        t.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(m),
            claim(SliceSet6::from(*unit), m + 2, sender),
        )
        .expect("claim");
    }
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

#[test]
fn each_owned_slice_goes_to_its_owners_hop_and_the_rest_is_dropped() {
    let units = SliceSet6::site_slicing(1);
    let mut p = Netdev6Planner::new(devices());
    let Some(DataplaneOp::Netdev6Table(batch)) = p.update(&table(), GapPolicy::Drop, device_of)
    else {
        panic!("a table for the first claims");
    };
    assert!(batch.rewrite);
    let (a, b): (Slice6, Slice6) = (units[0], units[1]);
    let rule = |s: Slice6, chain: &str| {
        format!(
            "ip6 daddr ff3e::8000:1 ip6 saddr & {} == {} jump {chain}",
            Ipv6Addr::from(s.mask()),
            Ipv6Addr::from(s.value())
        )
    };
    assert!(batch.contains(&rule(a, "m1_fe80_0_0_0_0_0_0_1")), "{batch}");
    assert!(batch.contains(&rule(b, "m2_fe80_0_0_0_0_0_0_2")), "{batch}");
    assert!(
        batch.contains("counter fwd ip6 to fe80::1 device \"s1\""),
        "{batch}"
    );
    assert!(
        batch.contains("counter fwd ip6 to fe80::2 device \"s2\""),
        "{batch}"
    );
    assert!(batch.contains("ip6 daddr ff3e::8000:1 ip6 hoplimit 0-1 counter drop"));
    assert!(batch.contains("meta l4proto ipv6-icmp accept"));
    assert!(
        batch.ends_with("\t\tip6 daddr ff3e::8000:1 counter drop\n\t}\n}\n"),
        "{batch}"
    );
    assert!(batch.contains("devices = { \"c0\", \"s1\", \"s2\" }"));
    // The same ownership again (a refreshed join): nothing to write.
    assert_eq!(p.update(&table(), GapPolicy::Drop, device_of), None);
}

#[test]
fn the_gap_policy_fallback_takes_the_unowned_sources() {
    let mut t = table();
    // Member 2 leaves: its half is unowned and goes to member 1, the fallback.
    t.apply(
        Timestamp::from_secs(2),
        G,
        MemberId(2),
        claim(SliceSet6::default(), 4, Ipv6Addr::LOCALHOST),
    )
    .expect("leave");
    let groups = plan(&t, GapPolicy::Fallback(MemberId(1)), device_of);
    let text = ruleset(&devices(), &groups);
    assert!(
        text.contains("ip6 daddr ff3e::8000:1 jump m1_fe80_0_0_0_0_0_0_1\n"),
        "{text}"
    );
    assert!(!text.contains("m2_"), "{text}");
}

#[test]
fn nothing_is_written_before_a_claim_and_a_written_table_is_removed_on_stop() {
    let mut p = Netdev6Planner::new(devices());
    assert_eq!(
        p.update(&OwnershipTable6::new(), GapPolicy::Drop, device_of),
        None
    );
    assert_eq!(p.withdraw(), None, "nothing written, nothing to remove");
    assert!(p.update(&table(), GapPolicy::Drop, device_of).is_some());
    // The last claim gone: the table is written without the group (its sources dropped by no
    // rule at all: they are not protected traffic any more).
    let op = p.update(&OwnershipTable6::new(), GapPolicy::Drop, device_of);
    assert!(
        matches!(&op, Some(DataplaneOp::Netdev6Table(b)) if !b.contains("ff3e")),
        "{op:?}"
    );
    assert_eq!(p.withdraw(), Some(DataplaneOp::DeleteNetdev6Table));
}

#[test]
fn a_failed_write_is_written_again() {
    let mut p = Netdev6Planner::new(devices());
    let op = p
        .update(&table(), GapPolicy::Drop, device_of)
        .expect("written");
    p.completed(&op, false);
    assert_eq!(p.update(&table(), GapPolicy::Drop, device_of), Some(op));
}
