//! A member whose claim a crash scattered keeps its clients (SPEC.md §3.2): three real
//! `manycast-server`s at the default 8-bit slicing behind the real verifier, on links of MTU
//! 576 (the datagram every IPv4 host must accept, RFC 791). Started together they take every
//! third unit each; when one is killed, the survivors take its units one by one, so a
//! survivor's claim has many slices that do not merge. As SLICES such a join does not fit the
//! link even without its standby units and beacon anchors (the raw socket does not fragment:
//! EMSGSIZE, and the claim expires). As a UNITS bitmap it fits, the verifier holds it at the
//! new epoch, and every source is answered by its owner.

use crate::harness::{ask, verifier_status, wait_for, Lab, Routed, GROUP};
use crate::native6::ip_in;
use igmp_ext::fixtures::nonce_bytes;
use igmp_ext::join::{build_datagram, build_signed_report, JoinClaims};
use igmp_ext::wire::record::RecordType;
use igmp_ext::{AllocationEpoch, Slice, SliceEntry, SliceSet, Timestamp};
use manycast_server::keys;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The members' and the router's link MTU.
const MTU: usize = 576;

/// Sources over the whole 8-bit slicing: unit n is the addresses ending in n.
fn sources() -> Vec<Ipv4Addr> {
    (0..36u8)
        .map(|k| Ipv4Addr::new(10, 1, 0, 2 + 7 * k))
        .collect()
}

/// Each member's IPv4 slices at `epoch` as the verifier holds them.
fn claims_at(socket: &std::path::Path, epoch: u64) -> BTreeMap<u32, SliceSet> {
    let Some(s) = verifier_status(socket) else {
        return BTreeMap::new();
    };
    s.ownership
        .iter()
        .filter(|r| r.epoch == epoch && r.group == GROUP.to_string())
        .map(|r| {
            let set = r.slices.split(' ').filter_map(|t| t.parse::<Slice>().ok());
            (r.member, set.collect())
        })
        .collect()
}

/// The length of member `i`'s join claiming `slices` as SLICES, with nothing else that could
/// be left out (no standby units, no beacon anchors), signed with its certificate.
fn slices_join_len(lab: &Lab, i: usize, slices: &SliceSet) -> usize {
    let m = &lab.fixture.members[i];
    let path = lab.dir.path().join(format!("{}.cert", m.id));
    let group_key = lab.fixture.group_key.verifying_key();
    let cert = keys::read_verified_certificate(&path, &group_key, daemon_kit::wall_clock())
        .expect("the lab's certificate");
    let claims = JoinClaims {
        group: GROUP,
        record_type: RecordType::ModeIsInclude,
        entries: slices.iter().copied().map(SliceEntry::include).collect(),
        epoch: AllocationEpoch(1),
        timestamp: Timestamp(0),
        nonce: nonce_bytes(1),
        standby: Vec::new(),
        liveness: Vec::new(),
        as_units: false,
    };
    let addr = Ipv4Addr::new(10, 0, i as u8 + 1, 2);
    let igmp = build_signed_report(&claims, addr, &cert, &m.key).expect("build");
    build_datagram(addr, &igmp).len()
}

#[test]
fn a_survivor_whose_units_a_crash_scattered_keeps_its_clients_on_a_576_byte_link() {
    let mut lab = Lab::new(3);
    let srcs = sources();
    let Routed {
        router,
        client,
        servers,
        ..
    } = lab.routed(3, &srcs);
    let mtu = MTU.to_string();
    for (i, ns) in servers.iter().enumerate() {
        ip_in(ns, &["link", "set", "m0", "mtu", &mtu]);
        ip_in(
            &router,
            &["link", "set", &format!("s{}", i + 1), "mtu", &mtu],
        );
    }
    let socket = lab.start_verifier(&router, &["c0", "s1", "s2", "s3"], "", Some("debug"));
    for (i, ns) in servers.iter().enumerate() {
        lab.start_server(i, ns, "m0", "ctl0");
    }
    let ids: Vec<u32> = lab.fixture.members.iter().map(|m| m.id.0).collect();
    let mut epoch = 0;
    wait_for(
        "the verifier holds three claims at the members' epoch",
        || {
            epoch = lab.metric(0, "epoch");
            (0..3).all(|i| lab.metric(i, "epoch") == epoch && lab.metric(i, "slices") > 0)
                && claims_at(&socket, epoch).len() == 3
        },
    );

    // Member 3 dies without a word: the survivors take its units at a later epoch.
    let m3 = lab.fixture.members[2].id.to_string();
    lab.kill(&m3);
    let mut later = 0;
    wait_for("both survivors own everything at a later epoch", || {
        later = lab.metric(0, "epoch");
        later > epoch
            && lab.metric(1, "epoch") == later
            && lab.metric(0, "slice_addresses") + lab.metric(1, "slice_addresses") == 1 << 32
    });
    let mut held = BTreeMap::new();
    wait_for(
        "the verifier holds both survivors' claims at that epoch",
        || {
            held = claims_at(&socket, later);
            held.keys().copied().collect::<Vec<_>>() == ids[..2]
        },
    );
    // What makes this test matter: some survivor's claim would not fit as SLICES.
    let longest = (0..2)
        .map(|i| slices_join_len(&lab, i, &held[&ids[i]]))
        .max()
        .expect("two survivors");
    assert!(
        longest > MTU,
        "no survivor's claim is scattered enough to need UNITS ({longest} bytes as SLICES): {held:?}"
    );

    // Every source is answered by the survivor whose claim holds it, from its link address.
    let replies = ask(&client, &srcs, 1);
    assert_eq!(replies.len(), srcs.len(), "every source asked: {replies:?}");
    for (src, got) in &replies {
        let owner = ids[..2]
            .iter()
            .position(|m| held[m].contains(u32::from(*src)))
            .expect("a survivor owns every address");
        let server = Ipv4Addr::new(10, 0, owner as u8 + 1, 2);
        let from: BTreeSet<Ipv4Addr> = got.iter().map(|(a, _)| *a).collect();
        assert_eq!(from, [server].into(), "{src}: {got:?}");
    }
}
