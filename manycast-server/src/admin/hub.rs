//! What the daemon feeds the admin side: control-channel events as they happen (for `watch`)
//! and its counters every second (for `status` and the HTTP metrics).

use super::protocol::AdminEvent;
use crate::health::{Exit, HealthReport};
use crate::metrics::Snapshot;
use control_channel::wire::RequestAction;
use control_channel::{Event, RequestOutcome};
use igmp_ext::Timestamp;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// The events worth showing an operator; `None` for the rest (transfers, forwards).
pub fn admin_event(at: Timestamp, e: &Event) -> Option<AdminEvent> {
    let (kind, text) = match e {
        Event::MemberUp(m) => ("member-up", format!("member {m} up")),
        Event::MemberDown(m) => ("member-down", format!("member {m} down")),
        Event::MemberLeft(m) => ("member-left", format!("member {m} left")),
        Event::MemberRevoked(m) => (
            "member-revoked",
            format!("member {m} revoked (keystore): dropped from the control group"),
        ),
        Event::ClockUntimely {
            offset_ms,
            refused_by,
        } => (
            "clock-untimely",
            format!("our wall clock is {offset_ms} ms off our peers' ({refused_by} refuse our control messages as untimely)"),
        ),
        Event::ClockTimely { offset_ms } => (
            "clock-timely",
            format!("our wall clock is within the timeliness window again ({offset_ms} ms off our peers')"),
        ),
        Event::Unsendable { message, peers } => (
            "control-unsendable",
            format!("a {message:?} does not fit one datagram and was not sent ({peers} peers known)"),
        ),
        Event::Committed { id, slices, .. } => (
            "committed",
            format!("committed {id}: {} slices here", slices.len()),
        ),
        Event::Request {
            from,
            action,
            outcome,
            ..
        } => (
            "request",
            format!(
                "request from {from}: {} -> {}",
                describe_action(action),
                describe_outcome(outcome)
            ),
        ),
        _ => return None,
    };
    Some(AdminEvent {
        at_ms: at.0,
        kind: kind.to_owned(),
        text,
    })
}

fn describe_action(a: &RequestAction) -> String {
    match a {
        RequestAction::Rebalance => "rebalance".into(),
        RequestAction::Move { units, to } => format!("move {} units to m{to}", units.len()),
        RequestAction::Drain { member } => format!("drain m{member}"),
        RequestAction::Resume { member } => format!("resume m{member}"),
        _ => "unknown action".into(),
    }
}

fn describe_outcome(o: &RequestOutcome) -> String {
    match o {
        RequestOutcome::Proposed(id) => format!("proposed {id}"),
        RequestOutcome::Unchanged => "unchanged".into(),
        RequestOutcome::NotForMe => "not for this member".into(),
        RequestOutcome::Drained => "drained".into(),
        RequestOutcome::Resumed => "resumed".into(),
        RequestOutcome::Refused(r) => format!("refused: {r}"),
        _ => "unknown outcome".into(),
    }
}

/// The `watch` events for a change of this member's health checks: one per check that went up
/// or down, and one when the member as a whole leaves or rejoins the allocation.
pub fn health_events(
    at: Timestamp,
    before: &HealthReport,
    after: &HealthReport,
) -> Vec<AdminEvent> {
    let event = |text: String| AdminEvent {
        at_ms: at.0,
        kind: "health".to_owned(),
        text,
    };
    let mut out: Vec<AdminEvent> = after
        .checks
        .iter()
        .filter(|c| {
            before
                .checks
                .iter()
                .any(|b| b.name == c.name && b.up != c.up)
        })
        .map(|c| {
            event(format!(
                "health check {} {} ({})",
                c.name,
                if c.up { "up" } else { "down" },
                c.last.as_deref().unwrap_or("-")
            ))
        })
        .collect();
    if before.out != after.out {
        out.push(event(match after.out {
            None => "health checks up: this member takes units again".to_owned(),
            Some(Exit::Planned) => {
                "health checks failing: this member drains (weight 0)".to_owned()
            }
            Some(Exit::Immediate) => {
                "health check says dead: weight 0 and claim withdrawn at once".to_owned()
            }
        }));
    }
    out
}

/// Events in, counters in; the admin tasks read both.
#[derive(Debug, Clone)]
pub struct Hub {
    events: broadcast::Sender<AdminEvent>,
    snapshot: Arc<Mutex<Snapshot>>,
}

impl Hub {
    pub fn new(snapshot: Snapshot) -> Self {
        Hub {
            events: broadcast::channel(256).0,
            snapshot: Arc::new(Mutex::new(snapshot)),
        }
    }

    /// A control-channel event happened (no-op for kinds `watch` does not show).
    pub fn publish(&self, at: Timestamp, e: &Event) {
        if let Some(a) = admin_event(at, e) {
            // No subscriber is fine.
            let _ = self.events.send(a);
        }
    }

    /// This member's health changed (see [`health_events`]).
    pub fn publish_health(&self, at: Timestamp, before: &HealthReport, after: &HealthReport) {
        for a in health_events(at, before, after) {
            let _ = self.events.send(a);
        }
    }

    /// The daemon's latest counters.
    pub fn set_snapshot(&self, s: &Snapshot) {
        if let Ok(mut g) = self.snapshot.lock() {
            *g = s.clone();
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AdminEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::MemberId;

    #[test]
    fn events_for_watch() {
        let at = Timestamp(5);
        let e = admin_event(at, &Event::MemberDown(MemberId(3))).unwrap();
        assert_eq!(
            (e.kind.as_str(), e.text.as_str()),
            ("member-down", "member m3 down")
        );
        let e = admin_event(
            at,
            &Event::Request {
                from: MemberId(2),
                request_id: 1,
                action: RequestAction::Move {
                    units: vec![1, 2],
                    to: 1,
                },
                outcome: RequestOutcome::Refused(control_channel::RequestRefusal::BadUnit),
            },
        )
        .unwrap();
        assert_eq!(e.kind, "request");
        assert!(e.text.contains("move 2 units to m1"), "{}", e.text);
        assert!(
            e.text.contains("refused: unit number out of range"),
            "{}",
            e.text
        );
        assert!(admin_event(
            at,
            &Event::TransferComplete {
                to: MemberId(2),
                transfer_id: 1
            }
        )
        .is_none());
    }

    #[test]
    fn health_events_for_watch() {
        let check = |up: bool, last: &str| crate::health::CheckStatus {
            name: "web".into(),
            kind: "tcp".into(),
            target: "127.0.0.1:80".into(),
            up,
            last: Some(last.into()),
            passes: 0,
            fails: 0,
            rise: 2,
            fall: 3,
            pass_total: 0,
            slow_total: 0,
            dead_total: 0,
        };
        let up = HealthReport {
            checks: vec![check(true, "pass")],
            ..HealthReport::default()
        };
        let down = HealthReport {
            checks: vec![check(false, "dead: connect: refused")],
            out: Some(Exit::Immediate),
        };
        let e = health_events(Timestamp(9), &up, &down);
        let texts: Vec<&str> = e.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "health check web down (dead: connect: refused)",
                "health check says dead: weight 0 and claim withdrawn at once"
            ]
        );
        assert!(e.iter().all(|e| e.kind == "health" && e.at_ms == 9));
        assert!(health_events(Timestamp(9), &up, &up).is_empty());
        assert_eq!(health_events(Timestamp(9), &down, &up).len(), 2);
    }
}
