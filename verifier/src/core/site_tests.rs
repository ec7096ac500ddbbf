//! The site agent's rules (SPEC.md §10.8): what it claims upstream, the weight it announces,
//! the site scope, and when its joins go.

use super::*;

const A1: MemberId = MemberId(101);
const A2: MemberId = MemberId(102);
const B1: MemberId = MemberId(201);
const SITE_A: SiteId = SiteId(1);
const SITE_B: SiteId = SiteId(2);
const BITS: u8 = 3;
const REFRESH: Duration = Duration::from_secs(10);
const REPEAT: Duration = Duration::from_secs(1);

fn config(weight: u32) -> SiteAgentConfig {
    SiteAgentConfig {
        group: Ipv4Addr::new(232, 1, 1, 1),
        slicing: Slicing::LowOrder { bits: BITS },
        weight,
        refresh: REFRESH,
        repeat: REPEAT,
    }
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn agent() -> SiteAgent {
    SiteAgent::new(config(3), A1, SITE_A)
}

/// Units 0..8 owned as `owners` says (`a`: A1, `b`: A2, `x`: B1, `.`: nobody).
fn upper(epoch: u64, owners: &str) -> UpperView {
    let owners = owners
        .chars()
        .map(|c| match c {
            'a' => Some(A1),
            'b' => Some(A2),
            'x' => Some(B1),
            _ => None,
        })
        .collect();
    UpperView {
        epoch,
        owners,
        sites: [(A1, SITE_A), (A2, SITE_A), (B1, SITE_B)].into(),
    }
}

fn slicing() -> Slicing {
    Slicing::LowOrder { bits: BITS }
}

/// A member claim on `units`.
fn claim(member: u32, units: &[usize], dead: bool) -> SteeredClaim {
    SteeredClaim {
        member: MemberId(member),
        slices: units.iter().map(|&i| slicing().unit(i)).collect(),
        dead,
    }
}

fn units(bits: &str) -> Vec<bool> {
    bits.chars().map(|c| c == '1').collect()
}

#[test]
fn the_claim_is_own_upper_units_that_a_live_member_serves_at_the_upper_epoch() {
    let mut a = agent();
    assert_eq!(a.claim(), None, "nothing before the upper group commits");
    a.handle_service(
        at(0),
        &[claim(1, &[0, 1, 2, 3], false), claim(2, &[4, 5, 6], false)],
    );
    assert_eq!(a.claim(), None, "members alone claim nothing upstream");
    a.handle_upper(at(0), Some(upper(7, "aaxxaabx")));
    let c = a.claim().expect("a claim");
    assert_eq!(c.epoch, AllocationEpoch(7));
    // Ours: 0, 1, 4, 5; unit 7 is B1's and not served anyway, unit 6 is A2's.
    assert_eq!(c.units, units("11001100"));
    // Unit 5 no longer served: no longer claimed.
    a.handle_service(
        at(1),
        &[claim(1, &[0, 1, 2, 3], false), claim(2, &[4, 6], false)],
    );
    assert_eq!(a.claim().unwrap().units, units("11001000"));
}

#[test]
fn a_dead_members_units_are_not_served_unless_the_failover_view_gave_them_to_a_live_one() {
    let mut a = agent();
    a.handle_upper(at(0), Some(upper(2, "aaaaaaaa")));
    // Member 2 found dead, no standby took its units: the failover view leaves them with it.
    a.handle_service(
        at(0),
        &[
            claim(1, &[0, 1, 2, 3], false),
            claim(2, &[4, 5, 6, 7], true),
        ],
    );
    assert_eq!(a.claim().unwrap().units, units("11110000"));
    // A standby took them (the view gives them to member 1).
    a.handle_service(at(1), &[claim(1, &[0, 1, 2, 3, 4, 5, 6, 7], false)]);
    assert_eq!(a.claim().unwrap().units, units("11111111"));
}

#[test]
fn a_unit_only_partly_served_is_not_claimed() {
    let mut a = agent();
    a.handle_upper(at(0), Some(upper(2, "aaaaaaaa")));
    // Half of unit 0 (a slice of a finer slicing): the site cannot serve the whole unit.
    let half = Slicing::LowOrder { bits: BITS + 1 }.unit(0);
    let c = SteeredClaim {
        member: MemberId(1),
        slices: [half, slicing().unit(1)].into_iter().collect(),
        dead: false,
    };
    a.handle_service(at(0), &[c]);
    assert_eq!(a.claim().unwrap().units, units("01000000"));
}

#[test]
fn weight_is_the_configured_one_while_a_live_member_claims_else_zero() {
    let mut a = agent();
    assert_eq!(a.weight(), 0, "no member yet");
    a.handle_service(at(0), &[claim(1, &[0], false)]);
    assert_eq!(a.weight(), 3);
    a.handle_service(at(1), &[claim(1, &[0], true), claim(2, &[1], false)]);
    assert_eq!(a.weight(), 3, "one of two members dead");
    a.handle_service(at(2), &[claim(1, &[0], true), claim(2, &[1], true)]);
    assert_eq!(a.weight(), 0, "every member dead");
    a.handle_service(at(3), &[]);
    assert_eq!(a.weight(), 0, "every claim gone");
    // The weight does not depend on the upper allocation: a site with no units yet announces
    // its weight so that it gets some.
    a.handle_upper(at(4), Some(upper(3, "xxxxxxxx")));
    a.handle_service(at(4), &[claim(1, &[0], false)]);
    assert_eq!(a.weight(), 3);
    assert_eq!(a.claim().unwrap().unit_count(), 0);
}

#[test]
fn the_scope_is_the_units_of_every_agent_of_our_site() {
    let mut a = agent();
    assert_eq!(a.scope(), None);
    a.handle_upper(at(0), Some(upper(4, "aabbxx.a")));
    let s = a.scope().unwrap();
    assert_eq!(s.upper_epoch, 4);
    assert_eq!(s.units, units("11110001"));
    // Our own units count even when our certificate's site is not in the view.
    let mut view = upper(5, "aabbxx.a");
    view.sites.clear();
    a.handle_upper(at(1), Some(view));
    assert_eq!(a.scope().unwrap().units, units("11000001"));
    assert_eq!(a.own_units(), units("11000001"));
}

#[test]
fn a_change_goes_at_once_and_again_after_repeat_then_every_refresh() {
    let mut a = agent();
    assert_eq!(a.poll_join(at(0)), None);
    assert_eq!(a.poll_timeout(), None, "nothing to send before a commit");
    a.handle_service(at(0), &[claim(1, &[0, 1, 2, 3, 4, 5, 6, 7], false)]);
    a.handle_upper(at(100), Some(upper(1, "aaaaxxxx")));
    assert_eq!(a.poll_timeout(), Some(at(100)));
    let first = a.poll_join(at(100)).expect("at once");
    assert_eq!(first.units, units("11110000"));
    assert_eq!(a.poll_join(at(101)), None);
    assert_eq!(a.poll_timeout(), Some(at(1_100)), "the repeat");
    assert_eq!(a.poll_join(at(1_100)), Some(first.clone()));
    assert_eq!(a.poll_timeout(), Some(at(11_100)), "then the refresh");
    // The same allocation again (a heartbeat's view) changes nothing.
    a.handle_upper(at(2_000), Some(upper(1, "aaaaxxxx")));
    assert_eq!(a.poll_timeout(), Some(at(11_100)));
    assert_eq!(a.poll_join(at(11_100)), Some(first));
    // A new epoch, even with the same units, goes at once: the upstream verifier fences by it.
    a.handle_upper(at(12_000), Some(upper(2, "aaaaxxxx")));
    assert_eq!(a.poll_timeout(), Some(at(12_000)));
    assert_eq!(a.poll_join(at(12_000)).unwrap().epoch, AllocationEpoch(2));
    assert_eq!(a.joins_sent(), 4);
}

#[test]
fn an_allocation_of_another_slicing_claims_nothing_and_does_not_spin() {
    let mut a = agent();
    a.handle_service(at(0), &[claim(1, &[0], false)]);
    a.handle_upper(at(0), Some(upper(1, "aaaaaaaa")));
    assert!(a.poll_join(at(0)).is_some());
    let mut wrong = upper(2, "aaaaaaaa");
    wrong.owners.push(Some(A1));
    a.handle_upper(at(1), Some(wrong));
    assert_eq!(a.claim(), None);
    // The repeat was due; with no claim it is dropped rather than polled for ever.
    assert_eq!(a.poll_join(at(5_000)), None);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn the_leave_is_an_empty_claim_at_the_last_epoch_and_only_after_a_join() {
    let mut a = agent();
    assert_eq!(a.leave(), None, "never joined: nothing to leave");
    a.handle_service(at(0), &[claim(1, &[0, 1], false)]);
    a.handle_upper(at(0), Some(upper(9, "aaaaaaaa")));
    a.poll_join(at(0)).expect("join");
    let leave = a.leave().expect("leave");
    assert_eq!(leave.epoch, AllocationEpoch(9));
    assert_eq!(leave.unit_count(), 0);
    assert_eq!(leave.units.len(), 8);
    assert_eq!(a.poll_timeout(), None);
}

mod router {
    use super::super::super::tests::{config, setup, Lab, S1};
    use crate::core::NativeDataplane;
    use crate::plan::DataplaneOp;
    use igmp_ext::fixtures::NOW;
    use igmp_ext::{MemberId, Slice};

    /// The upstream interface: not one of the verifier's.
    const UP0: u32 = 9;

    #[test]
    fn the_upstream_interface_is_hooked_for_steering_but_its_igmp_is_ignored() {
        let mut lab = Lab::new(config(), setup(NativeDataplane::Nft));
        assert!(lab.router.steer_also("up0".into()));
        lab.ops();
        // A signed join arriving on the upstream interface (our own looped back, another site
        // router's) is no member's claim here.
        lab.join(NOW, 0, &[Slice::ALL], 1, UP0);
        assert!(
            lab.holders().is_empty(),
            "a join on the upstream interface was taken"
        );
        assert!(lab.router.steered_claims(lab.fixture.group).is_empty());
        lab.join(NOW, 1, &[Slice::ALL], 1, S1);
        assert_eq!(lab.holders(), [MemberId(2)]);
        // The steering chain hooks the upstream interface too: clients' packets arrive there.
        let ops = lab.ops();
        assert!(
            matches!(&ops[..], [DataplaneOp::NetdevTable(t)] if t.text.contains("devices = { \"s1\", \"c0\", \"s2\", \"up0\" }")),
            "{ops:?}"
        );
        // No query goes out there.
        assert!(lab.transmits().iter().all(|t| t.ifindex != UP0));
        let steered = lab.router.steered_claims(lab.fixture.group);
        assert_eq!(steered.len(), 1);
        assert_eq!((steered[0].member, steered[0].dead), (MemberId(2), false));
        assert!(steered[0].slices.is_full());
    }

    #[test]
    fn the_mfc_data_plane_cannot_hook_the_upstream_interface() {
        let mut lab = Lab::mfc();
        assert!(!lab.router.steer_also("up0".into()));
    }
}
