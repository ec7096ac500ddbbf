//! Issue 17, "Time": a member's wall clock stepped while the real daemons run (see
//! `clock_cluster.rs`). Counts only; the waits are hang guards.

use crate::clock_cluster::ClockCluster;
use std::time::Duration;

/// (a) A member stepped back 5 s: nothing is reallocated and no client session is reset.
/// (b) A member running 60 s ahead is excluded (its joins are refused as untimely, its peers
/// refuse its control messages, its metrics say so), then stepped back to the right time: it
/// comes back with at most one leave and one rejoin, and no session is reset beyond those in
/// the units that moved.
#[test]
fn a_member_clock_step_back_costs_at_most_a_leave_and_a_rejoin() {
    let mut c = ClockCluster::start(3, 36, 2_000);
    let warm = c.window(Duration::from_secs(2), |_| {});
    eprintln!("warm-up: {}", warm.json());
    assert!(warm.answered > 0, "{}", c.lab.logs());

    let back5 = c.window(Duration::from_secs(6), |c| c.set_offset(-5));
    eprintln!("clock step back 5 s: {}", back5.json());
    assert_eq!(back5.commits, vec![0, 0, 0], "{}", back5.json());
    assert_eq!(back5.resets, 0, "{}", back5.json());
    assert_eq!(back5.owner_changes, 0, "{}", back5.json());
    assert_eq!(back5.lost, 0, "{}", back5.json());

    // 60 s ahead: out of the cluster, and it says so.
    let untimely_before = c.untimely_joins();
    c.set_offset(60);
    c.wait_excluded();
    let stepped = c.stepped;
    crate::harness::wait_for("the stepped member's metrics say it is untimely", || {
        c.lab.metric(stepped, "control_clock_untimely_total") > 0
    });
    crate::harness::wait_for("the verifier refuses its joins as untimely", || {
        c.untimely_joins() > untimely_before
    });
    let ahead = c.window(Duration::from_secs(3), |_| {});
    eprintln!("while 60 s ahead: {}", ahead.json());

    let back = c.window(Duration::from_secs(10), |c| c.set_offset(0));
    eprintln!("clock step back 60 s to the right time: {}", back.json());
    c.wait_settled(3);
    assert!(back.max_commits() <= 2, "{}", back.json());
    assert_eq!(back.resets, 0, "{}", back.json());
    // Nothing is lost while it comes back. This window falls where the members' first hash
    // chains hand over (half a minute in): a false liveness death there used to black-hole a
    // member's units until its chain ended (up to 30 s), and lose requests or reset sessions.
    assert_eq!(back.lost, 0, "{}", back.json());
}
