//! The node's reaction to its health checks (SPEC.md §11.9).

use super::*;
use crate::health::{CheckSpec, Outcome, Probe};

/// One TCP check every 100 ms, rise 2, fall 2.
fn checked() -> NodeConfig {
    NodeConfig {
        health: vec![CheckSpec {
            name: "web".into(),
            probe: Probe::Tcp {
                addr: "127.0.0.1:80".into(),
            },
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            rise: 2,
            fall: 2,
        }],
        ..native(Strategy::Reset)
    }
}

/// Runs the check due at `ms` with `outcome`; the actions that follow.
fn check(n: &mut Node, ms: u64, outcome: Outcome) -> Vec<Action> {
    n.handle_timeout(at(ms));
    assert_eq!(actions(n), vec![Action::RunCheck(0)], "check due at {ms}");
    n.handle_health(at(ms + 5), 0, outcome);
    actions(n)
}

fn slow() -> Outcome {
    Outcome::Slow("no answer within 50 ms".into())
}

fn dead() -> Outcome {
    Outcome::Dead("connect: Connection refused".into())
}

/// A member whose check rose at 100 ms and that owns half the units at epoch 1.
fn healthy_with_half() -> Node {
    let mut n = node(checked());
    assert_eq!(
        actions(&mut n),
        vec![Action::Hold(true)],
        "out until the checks rise"
    );
    assert!(check(&mut n, 0, Outcome::Pass).is_empty());
    assert_eq!(check(&mut n, 100, Outcome::Pass), vec![Action::Hold(false)]);
    deliver(&mut n, at(110), commit(1, &[M1, M2], HALF));
    let sent = joins(&mut n, at(110));
    assert_eq!(sent.last().map(|j| j.entries.clone()), Some(entries(HALF)));
    actions(&mut n);
    n
}

#[test]
fn without_checks_nothing_changes() {
    let mut n = node(native(Strategy::Reset));
    assert!(actions(&mut n).is_empty());
    n.handle_timeout(at(0));
    assert!(actions(&mut n).is_empty());
    assert_eq!(n.health_report(), HealthReport::default());
}

#[test]
fn a_degraded_service_drains_and_keeps_its_claim_until_the_commit() {
    let mut n = healthy_with_half();
    assert!(check(&mut n, 200, slow()).is_empty(), "one failure of two");
    assert_eq!(check(&mut n, 300, slow()), vec![Action::Hold(true)]);
    assert_eq!(n.health_report().out, Some(Exit::Planned));
    // Planned: no join until the allocation moves the units.
    assert!(joins(&mut n, at(305)).is_empty());
    deliver(&mut n, at(320), commit(2, &[M1, M2], ALL_M2));
    let sent = joins(&mut n, at(320));
    assert_eq!(
        sent.last().map(|j| (j.entries.len(), j.epoch)),
        Some((0, AllocationEpoch(2)))
    );
    actions(&mut n);
    // Back after rise passes in a row, not before.
    assert!(check(&mut n, 400, Outcome::Pass).is_empty());
    assert!(check(&mut n, 500, slow()).is_empty());
    assert!(check(&mut n, 600, Outcome::Pass).is_empty());
    assert_eq!(check(&mut n, 700, Outcome::Pass), vec![Action::Hold(false)]);
    assert_eq!(n.health_report().out, None);
}

#[test]
fn a_dead_service_withdraws_its_claim_at_once_and_claims_again_when_up() {
    let mut n = healthy_with_half();
    check(&mut n, 200, dead());
    assert_eq!(check(&mut n, 300, dead()), vec![Action::Hold(true)]);
    assert_eq!(n.health_report().out, Some(Exit::Immediate));
    let sent = joins(&mut n, at(305));
    assert_eq!(
        sent.first().map(|j| (j.entries.len(), j.epoch)),
        Some((0, AllocationEpoch(1)))
    );
    // A commit that still gives us units (made before our weight 0 arrived) is not claimed.
    deliver(&mut n, at(310), commit(2, &[M1, M2], ALL_M1));
    assert!(joins(&mut n, at(310)).iter().all(|j| j.entries.is_empty()));
    actions(&mut n);
    check(&mut n, 400, Outcome::Pass);
    assert_eq!(check(&mut n, 500, Outcome::Pass), vec![Action::Hold(false)]);
    // The last commit's units are claimed again at its epoch.
    let sent = joins(&mut n, at(505));
    assert_eq!(
        sent.first().map(|j| (j.entries.clone(), j.epoch)),
        Some((entries(ALL_M1), AllocationEpoch(2)))
    );
}
