//! Tests of the MLDv2 join agent: the unit mapping, and joins an MLDv2 verifier accepts.

use super::*;
use igmp_ext::fixtures::{nonce_bytes, Fixture, GROUP6, IFINDEX, LINK6, NOW as WALL};
use igmp_ext::mld_verifier::{MldJoinVerifier, MldOutcome};
use igmp_ext::verify6::MldVerifierConfig;
use igmp_ext::{Slice, VerifierConfig};

const NOW: Instant = Instant::from_secs(1);

fn clock(t: Instant) -> Clock {
    Clock::new(t, WALL.saturating_add(t.saturating_duration_since(NOW)))
}

fn counter() -> impl FnMut() -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn agent(f: &Fixture, slicing: Slicing) -> MldAgent {
    let m = &f.members[0];
    let mut a = MldAgent::new(
        AgentConfig::default(),
        m.key.clone(),
        m.cert.clone(),
        GROUP6,
        slicing,
    );
    assert!(a.set_link(Link6 {
        sender: f.addr6(0),
        prefix: LINK6
    }));
    a
}

/// Everything sent until `until`, with the time it was sent.
fn drain(a: &mut MldAgent, until: Instant, nonce: &mut u64) -> Vec<(Instant, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = a.poll_timeout().filter(|&t| t <= until) {
        while let Some(d) = a.poll_transmit(clock(t), nonce_bytes(*nonce)) {
            *nonce += 1;
            out.push((t, d.expect("the join builds")));
        }
    }
    out
}

/// Unit i of the IPv4 slicing maps to unit i of the IPv6 site slicing, for both slicings and
/// for merged slices.
#[test]
fn units_map_by_number() {
    let site = SliceSet6::site_slicing(2);
    for slicing in [Slicing::LowOrder { bits: 2 }, Slicing::Prefix { bits: 2 }] {
        let one = units6(slicing, &[SliceEntry::include(slicing.unit(2))]);
        assert_eq!(one, vec![SliceEntry6::include(site[2])], "{slicing:?}");
        let two: Vec<SliceEntry> = [1, 3]
            .iter()
            .map(|&i| SliceEntry::include(slicing.unit(i)))
            .collect();
        let set: SliceSet6 = units6(slicing, &two).iter().map(|e| e.slice).collect();
        let expected: SliceSet6 = [site[1], site[3]].into_iter().collect();
        assert_eq!(set, expected, "{slicing:?}");
    }
    // Every address: all four units, merged into one slice.
    let all = units6(
        Slicing::LowOrder { bits: 2 },
        &[SliceEntry::include(Slice::ALL)],
    );
    assert_eq!(all, vec![SliceEntry6::include(Slice6::ALL)]);
    assert!(units6(Slicing::LowOrder { bits: 2 }, &[]).is_empty());
}

/// Nothing goes before the link is known; then the change goes robustness times, each join
/// accepted by an MLDv2 verifier with the mapped units; a leave empties the claim.
#[test]
fn joins_wait_for_the_link_verify_and_leave() {
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let slicing = Slicing::LowOrder { bits: 2 };
    let m = &f.members[0];
    let mut a = MldAgent::new(
        AgentConfig::default(),
        m.key.clone(),
        m.cert.clone(),
        GROUP6,
        slicing,
    );
    let mut rng = counter();
    a.set_claim(
        NOW,
        &[SliceEntry::include(slicing.unit(1))],
        &[],
        AllocationEpoch(1),
        &mut rng,
    );
    assert_eq!(a.poll_timeout(), None, "no link yet: nothing due");
    assert!(a.poll_transmit(clock(NOW), nonce_bytes(0)).is_none());
    assert!(!a.set_link(Link6 {
        sender: Ipv6Addr::UNSPECIFIED,
        prefix: LINK6
    }));
    assert!(a.set_link(Link6 {
        sender: f.addr6(0),
        prefix: LINK6
    }));
    let mut nonce = 0;
    let sent = drain(
        &mut a,
        NOW.saturating_add(Duration::from_secs(2)),
        &mut nonce,
    );
    assert_eq!(sent.len(), 2, "robustness 2");
    let mut v = MldJoinVerifier::new(
        MldVerifierConfig::default(),
        &VerifierConfig::default(),
        f.links6(),
    );
    for (t, d) in &sent {
        let r = v.handle_datagram(clock(*t), IFINDEX, d, &f.key_source6());
        assert!(matches!(r, Ok(MldOutcome::Join { .. })), "{r:?}");
    }
    let claim = v.ownership().claims(GROUP6).next().expect("a claim").1;
    let expected: SliceSet6 = [SliceSet6::site_slicing(2)[1]].into_iter().collect();
    assert_eq!(claim.slices, expected);
    let t = NOW.saturating_add(Duration::from_secs(3));
    a.leave(t, &mut rng);
    let sent = drain(
        &mut a,
        t.saturating_add(Duration::from_secs(3600)),
        &mut nonce,
    );
    assert_eq!(sent.len(), 2, "the leave, robustness times, then silence");
    for (t, d) in &sent {
        v.handle_datagram(clock(*t), IFINDEX, d, &f.key_source6())
            .expect("the leave is accepted");
    }
    assert_eq!(v.ownership().claims(GROUP6).count(), 0, "the claim is gone");
    assert_eq!(a.poll_timeout(), None);
}

/// A general MLD query is answered; one for another group is not.
#[test]
fn queries_are_answered() {
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let slicing = Slicing::LowOrder { bits: 2 };
    let mut a = agent(&f, slicing);
    let mut rng = counter();
    a.set_claim(
        NOW,
        &[SliceEntry::include(Slice::ALL)],
        &[],
        AllocationEpoch(1),
        &mut rng,
    );
    let mut nonce = 0;
    drain(
        &mut a,
        NOW.saturating_add(Duration::from_secs(2)),
        &mut nonce,
    );
    let t = NOW.saturating_add(Duration::from_secs(5));
    let other = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0, 9);
    a.handle_query(t, other, Duration::from_secs(1), &mut rng);
    assert!(drain(&mut a, t.saturating_add(Duration::from_secs(2)), &mut nonce).is_empty());
    a.handle_query(t, Ipv6Addr::UNSPECIFIED, Duration::from_secs(1), &mut rng);
    let sent = drain(&mut a, t.saturating_add(Duration::from_secs(2)), &mut nonce);
    assert_eq!(sent.len(), 1, "the general query answered once");
}

/// The MLDv2 join names the IPv4 join's standby units by number (unit i ↔ unit i of the /56
/// site slicing) and the chains of the IPv4 join's beacons (SPEC.md §5.5); the verifier records
/// both with the IPv6 claim. A join past the MTU leaves the standby units out first.
#[test]
fn the_join_names_the_ipv4_standby_units_and_beacon_chains() {
    use crate::beaconer::{Beaconer, SharedBeaconer};
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let slicing = Slicing::LowOrder { bits: 8 };
    let mut rng = counter();
    let mut b = Beaconer::new(
        f.group,
        f.members[0].id,
        Duration::from_millis(5),
        Duration::from_secs(60),
        NOW,
        &mut rng,
    );
    b.start(NOW);
    let beacons: SharedBeaconer = std::sync::Arc::new(std::sync::Mutex::new(b));
    let anchors = crate::beaconer::lock(&beacons).anchors(NOW);
    assert!(!anchors.is_empty());
    let mine: Vec<SliceEntry> = [1, 2, 3]
        .iter()
        .map(|&i| SliceEntry::include(slicing.unit(i)))
        .collect();
    let standby: Vec<SliceEntry> = [7, 200]
        .iter()
        .map(|&i| SliceEntry::include(slicing.unit(i)))
        .collect();
    let site = SliceSet6::site_slicing(8);
    let sent_with = |mtu: usize| {
        let m = &f.members[0];
        let config = AgentConfig {
            max_datagram: mtu,
            ..AgentConfig::default()
        };
        let mut a = MldAgent::new(config, m.key.clone(), m.cert.clone(), GROUP6, slicing)
            .with_beacons(beacons.clone());
        assert!(a.set_link(Link6 {
            sender: f.addr6(0),
            prefix: LINK6
        }));
        let mut rng = counter();
        a.set_claim(NOW, &mine, &standby, AllocationEpoch(4), &mut rng);
        assert_eq!(
            a.standby(),
            &[
                SliceEntry6::include(site[7]),
                SliceEntry6::include(site[200])
            ]
        );
        let d = a
            .poll_transmit(clock(NOW), nonce_bytes(1))
            .expect("due")
            .expect("builds");
        let mut v = MldJoinVerifier::new(
            MldVerifierConfig::default(),
            &VerifierConfig::default(),
            f.links6(),
        );
        let r = v.handle_datagram(clock(NOW), IFINDEX, &d, &f.key_source6());
        assert!(matches!(r, Ok(MldOutcome::Join { .. })), "{r:?}");
        let claim = v
            .ownership()
            .claims(GROUP6)
            .next()
            .expect("a claim")
            .1
            .clone();
        (d.len(), claim, a.trimmed())
    };
    let (len, claim, trimmed) = sent_with(1500);
    let expected: SliceSet6 = [site[7], site[200]].into_iter().collect();
    assert_eq!(claim.standby, expected);
    assert_eq!(claim.liveness, anchors, "the IPv4 join's chains");
    assert_eq!(trimmed, 0);
    let (_, claim, trimmed) = sent_with(len - 1);
    assert!(claim.standby.is_empty(), "standby units left out first");
    assert_eq!(claim.liveness, anchors);
    assert_eq!(trimmed, 1);
}

/// The lab's defect (issue 15): at the default 8-bit slicing, a member whose units a crash
/// scattered (the 128 units of even bit parity: no two are siblings, nothing merges; every
/// other unit would merge into one slice) and that stands by for the other 128,
/// with its beacon chains, sends its join whole within the IPv6 minimum MTU (1,280 bytes,
/// unfragmentable), and the router grants every unit. Per-slice SLICES made it over 6 KB,
/// past any link (EMSGSIZE), and the claim expired.
#[test]
fn scattered_units_at_the_default_slicing_fit_the_minimum_mtu() {
    use crate::beaconer::{Beaconer, SharedBeaconer};
    let f = Fixture::dual_stack(1, SliceSet6::full());
    let slicing = Slicing::LowOrder { bits: 8 };
    let mut rng = counter();
    let mut b = Beaconer::new(
        f.group,
        f.members[0].id,
        Duration::from_millis(5),
        Duration::from_secs(60),
        NOW,
        &mut rng,
    );
    b.start(NOW);
    let beacons: SharedBeaconer = std::sync::Arc::new(std::sync::Mutex::new(b));
    let anchors = crate::beaconer::lock(&beacons).anchors(NOW);
    let parity = |odd: u32| -> Vec<SliceEntry> {
        (0..256usize)
            .filter(|i| i.count_ones() % 2 == odd)
            .map(|i| SliceEntry::include(slicing.unit(i)))
            .collect()
    };
    let (mine, standby) = (parity(0), parity(1));
    let m = &f.members[0];
    let config = AgentConfig {
        max_datagram: 1280,
        ..AgentConfig::default()
    };
    let mut a = MldAgent::new(config, m.key.clone(), m.cert.clone(), GROUP6, slicing)
        .with_beacons(beacons.clone());
    assert!(a.set_link(Link6 {
        sender: f.addr6(0),
        prefix: LINK6
    }));
    a.set_claim(NOW, &mine, &standby, AllocationEpoch(4), &mut rng);
    let d = a
        .poll_transmit(clock(NOW), nonce_bytes(1))
        .expect("due")
        .expect("builds");
    assert!(d.len() <= 1280, "{} bytes", d.len());
    assert_eq!(a.trimmed(), 0, "nothing left out");
    let mut v = MldJoinVerifier::new(
        MldVerifierConfig::default(),
        &VerifierConfig::default(),
        f.links6(),
    );
    let r = v.handle_datagram(clock(NOW), IFINDEX, &d, &f.key_source6());
    assert!(matches!(r, Ok(MldOutcome::Join { .. })), "{r:?}");
    let claim = v.ownership().claims(GROUP6).next().expect("a claim").1;
    let site = SliceSet6::site_slicing(8);
    let units = |odd: u32| -> SliceSet6 {
        (0..256usize)
            .filter(|i| i.count_ones() % 2 == odd)
            .map(|i| site[i])
            .collect()
    };
    assert_eq!(claim.slices, units(0));
    assert_eq!(claim.slices.len(), 128, "nothing merged");
    assert_eq!(claim.standby, units(1));
    assert_eq!(claim.liveness, anchors);
}
