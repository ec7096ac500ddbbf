use super::*;
use std::time::Duration;

fn spec(name: &str, rise: u32, fall: u32) -> CheckSpec {
    CheckSpec {
        name: name.into(),
        probe: Probe::Tcp {
            addr: "127.0.0.1:80".into(),
        },
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(50),
        rise,
        fall,
    }
}

fn slow() -> Outcome {
    Outcome::Slow("no answer within 50 ms".into())
}

fn dead() -> Outcome {
    Outcome::Dead("connection refused".into())
}

/// Runs check 0 once at `t` with `o`.
fn run(h: &mut Health, t: u64, o: Outcome) {
    assert_eq!(h.start_due(Instant(t)), vec![0], "due at {t}");
    h.handle_result(Instant(t + 10), 0, o);
}

#[test]
fn starts_down_and_rises_after_rise_passes_in_a_row() {
    let mut h = Health::new(vec![spec("a", 2, 3)], Instant(0));
    assert_eq!(h.exit(), Some(Exit::Planned));
    assert_eq!(h.poll_timeout(), Some(Instant(0)));
    run(&mut h, 0, Outcome::Pass);
    assert_eq!(h.exit(), Some(Exit::Planned));
    // Running: nothing else is due until it reports.
    assert_eq!(h.start_due(Instant(100)), vec![0]);
    assert_eq!(h.poll_timeout(), None);
    h.handle_result(Instant(110), 0, slow());
    // A failure resets the passes.
    run(&mut h, 200, Outcome::Pass);
    assert_eq!(h.exit(), Some(Exit::Planned));
    run(&mut h, 300, Outcome::Pass);
    assert_eq!(h.exit(), None);
    let s = &h.status()[0];
    assert!(s.up);
    assert_eq!(
        (s.passes, s.fails, s.pass_total, s.slow_total),
        (2, 0, 3, 1)
    );
    assert_eq!(s.last.as_deref(), Some("pass"));
}

#[test]
fn falls_after_fall_failures_and_the_last_kind_decides_the_exit() {
    let mut h = Health::new(vec![spec("a", 1, 3)], Instant(0));
    run(&mut h, 0, Outcome::Pass);
    assert_eq!(h.exit(), None);
    run(&mut h, 100, slow());
    run(&mut h, 200, dead());
    assert_eq!(h.exit(), None, "two failures of three");
    run(&mut h, 300, slow());
    assert_eq!(h.exit(), Some(Exit::Planned), "down by a slow answer");
    // Dead while down: the member is out at once from then on.
    run(&mut h, 400, dead());
    assert_eq!(h.exit(), Some(Exit::Immediate));
    run(&mut h, 500, Outcome::Pass);
    assert_eq!(h.exit(), None, "rise 1");
    run(&mut h, 600, dead());
    run(&mut h, 700, dead());
    run(&mut h, 800, dead());
    assert_eq!(h.exit(), Some(Exit::Immediate));
    let s = &h.status()[0];
    assert_eq!(s.last.as_deref(), Some("dead: connection refused"));
    assert_eq!((s.dead_total, s.slow_total, s.pass_total), (5, 2, 2));
}

#[test]
fn a_flapping_service_never_comes_back_without_rise_passes_in_a_row() {
    let mut h = Health::new(vec![spec("a", 3, 2)], Instant(0));
    let mut t = 0;
    for _ in 0..3 {
        run(&mut h, t, Outcome::Pass);
        t += 100;
    }
    assert_eq!(h.exit(), None);
    // Pass, fail, pass, fail ...: one failure in a row never takes it down (fall 2) ...
    for i in 0..10 {
        run(&mut h, t, if i % 2 == 0 { dead() } else { Outcome::Pass });
        t += 100;
        assert_eq!(h.exit(), None);
    }
    run(&mut h, t, dead());
    t += 100;
    run(&mut h, t, dead());
    t += 100;
    assert_eq!(h.exit(), Some(Exit::Immediate));
    // ... and once down, two passes between failures never bring it back (rise 3).
    for i in 0..12 {
        run(&mut h, t, if i % 3 == 2 { slow() } else { Outcome::Pass });
        t += 100;
        assert!(h.exit().is_some(), "round {i}");
    }
}

#[test]
fn every_check_must_be_up_and_each_runs_on_its_own_interval() {
    let mut specs = vec![spec("a", 1, 1), spec("b", 1, 1)];
    specs[1].interval = Duration::from_millis(300);
    let mut h = Health::new(specs, Instant(0));
    assert_eq!(h.start_due(Instant(0)), vec![0, 1]);
    h.handle_result(Instant(5), 0, Outcome::Pass);
    assert_eq!(h.exit(), Some(Exit::Planned), "b not up yet");
    // A late result: the next run is at least now, not in the past.
    h.handle_result(Instant(350), 1, Outcome::Pass);
    assert_eq!(h.exit(), None);
    assert_eq!(h.poll_timeout(), Some(Instant(100)));
    assert_eq!(h.start_due(Instant(100)), vec![0]);
    assert_eq!(h.poll_timeout(), Some(Instant(350)));
    h.handle_result(Instant(120), 0, slow());
    assert_eq!(h.exit(), Some(Exit::Planned));
    // A result for a check that is not running, or unknown, changes nothing.
    h.handle_result(Instant(130), 0, Outcome::Pass);
    h.handle_result(Instant(130), 7, Outcome::Pass);
    assert_eq!(h.exit(), Some(Exit::Planned));
    assert!(Health::default().exit().is_none());
}
