//! What an admin request does (SPEC.md §11.8), decided without I/O: from the request, the
//! status before it and the endpoint's local check, either an answer at once or a control
//! request to send and the status in which it is done. `server` runs the steps.

use super::protocol::{AdminRequest, Answer, Status};
use control_channel::wire::RequestAction;
use control_channel::RequestRefusal;
use std::time::Duration;

/// How long an action waits for the cluster to commit its result.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint said before a request went out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precheck {
    /// Nothing to check for this request.
    None,
    /// Rebalance computed here first (the coordinator sees the same loads): (units moved,
    /// unchanged); `None` without a committed allocation.
    Rebalance(Option<(usize, bool)>),
    /// A move checked against the committed allocation (`move_units`); `None` without one.
    Move(Option<Result<(), RequestRefusal>>),
}

/// The next step of a request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Step {
    Answer(Box<Answer>),
    /// Send `action` to the cluster, then answer when `until` holds for the status, or say
    /// it was not committed after [`ACTION_TIMEOUT`].
    Request {
        action: RequestAction,
        until: Until,
    },
}

/// The status in which a request is done.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Until {
    /// A later epoch than `after` (rebalance), with what the answer reports.
    LaterEpoch {
        after: u64,
        moves: usize,
        imbalance_before: Option<f64>,
    },
    /// Every unit of `units` belongs to `to`.
    Owned { units: Vec<u16>, to: u32 },
    /// `member` owns no units and has weight 0 (or is not in the allocation).
    Drained(u32),
    /// `member` has a positive weight in the allocation.
    Resumed(u32),
}

fn answer(a: Answer) -> Step {
    Step::Answer(Box::new(a))
}

fn fmt_imbalance(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}"))
}

/// The first step of `request`, given the status before it and the endpoint's check.
pub fn plan(request: AdminRequest, before: &Status, check: Precheck) -> Step {
    let epoch = before.epoch_number();
    match request {
        AdminRequest::Status {} => answer(Answer {
            ok: true,
            status: Some(before.clone()),
            ..Answer::default()
        }),
        AdminRequest::Rebalance {} => match check {
            Precheck::Rebalance(Some((_, true))) => answer(Answer::done(
                format!(
                    "already balanced (max/mean load {})",
                    fmt_imbalance(before.load_imbalance)
                ),
                Some(epoch),
            )),
            Precheck::Rebalance(Some((moves, false))) => Step::Request {
                action: RequestAction::Rebalance,
                until: Until::LaterEpoch {
                    after: epoch,
                    moves,
                    imbalance_before: before.load_imbalance,
                },
            },
            _ => answer(Answer::error("no committed allocation yet")),
        },
        AdminRequest::Move { units, to } => match check {
            Precheck::Move(Some(Ok(()))) => {
                let until = Until::Owned {
                    units: units.clone(),
                    to,
                };
                if until.holds(before) {
                    return answer(Answer::done(
                        format!("m{to} owns those units already"),
                        Some(epoch),
                    ));
                }
                Step::Request {
                    action: RequestAction::Move { units, to },
                    until,
                }
            }
            Precheck::Move(Some(Err(e))) => answer(Answer::error(format!("move refused: {e}"))),
            _ => answer(Answer::error("no committed allocation yet")),
        },
        AdminRequest::Drain { member } | AdminRequest::Resume { member } => {
            let drain = matches!(request, AdminRequest::Drain { .. });
            let member = member.unwrap_or(before.me);
            if !before.members.iter().any(|m| m.id == member) {
                return answer(Answer::error(format!("unknown member m{member}")));
            }
            if drain {
                Step::Request {
                    action: RequestAction::Drain { member },
                    until: Until::Drained(member),
                }
            } else {
                Step::Request {
                    action: RequestAction::Resume { member },
                    until: Until::Resumed(member),
                }
            }
        }
        AdminRequest::Watch {} => answer(Answer::error("watch is a stream; send it alone")),
        AdminRequest::Authorized { .. } => answer(Answer::error(
            "bad request: an authorized request inside another",
        )),
    }
}

impl Until {
    /// Whether the request is done in `s`.
    pub fn holds(&self, s: &Status) -> bool {
        let weight = |member: u32| {
            s.members
                .iter()
                .find(|m| m.id == member)
                .and_then(|m| m.allocation_weight)
        };
        match self {
            Until::LaterEpoch { after, .. } => s.epoch_number() > *after,
            Until::Owned { units, to } => units
                .iter()
                .all(|&u| s.unit_owner.get(usize::from(u)) == Some(&Some(*to))),
            Until::Drained(m) => s.units_of(*m) == 0 && weight(*m).is_none_or(|w| w == 0),
            Until::Resumed(m) => weight(*m).is_some_and(|w| w > 0),
        }
    }

    /// The answer once it holds in `s`.
    pub fn done(&self, s: &Status) -> Answer {
        let message = match self {
            Until::LaterEpoch {
                moves,
                imbalance_before,
                ..
            } => format!(
                "rebalanced: {moves} units moved, max/mean load {} -> {}",
                fmt_imbalance(*imbalance_before),
                fmt_imbalance(s.load_imbalance)
            ),
            Until::Owned { units, to } => format!("moved {} units to m{to}", units.len()),
            Until::Drained(m) => format!("drained: m{m} owns {} units", s.units_of(*m)),
            Until::Resumed(m) => format!("resumed: m{m} owns {} units", s.units_of(*m)),
        };
        Answer::done(message, Some(s.epoch_number()))
    }

    /// The answer when it did not hold within [`ACTION_TIMEOUT`].
    pub fn not_committed(&self, before: &Status) -> Answer {
        if matches!(self, Until::Resumed(m) if *m == before.me) && before.health.out.is_some() {
            let failing: Vec<&str> = before
                .health
                .checks
                .iter()
                .filter(|c| !c.up)
                .map(|c| c.name.as_str())
                .collect();
            return Answer::error(format!(
                "resume: m{}'s health checks are failing ({}): it stays at weight 0 and resumes \
                 by itself once every check is up",
                before.me,
                failing.join(", ")
            ));
        }
        let what = match self {
            Until::LaterEpoch { .. } => "rebalance",
            Until::Owned { .. } => "move",
            Until::Drained(_) => "drain",
            Until::Resumed(_) => "resume",
        };
        let coordinator = before
            .members
            .iter()
            .find(|m| m.live)
            .map_or_else(|| "?".to_owned(), |m| format!("m{}", m.id));
        Answer::error(format!(
            "{what}: not committed within {} s (the coordinator {coordinator} may be busy with \
             another change or have refused it; see its log, then try again)",
            ACTION_TIMEOUT.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::protocol::{CounterStatus, MemberStatus};

    fn member(id: u32, weight: Option<u32>) -> MemberStatus {
        MemberStatus {
            id,
            me: id == 1,
            live: true,
            weight,
            allocation_weight: weight,
            committed_epoch: Some(4),
            incarnation: None,
            units: 0,
            slices: Vec::new(),
            load: 0,
            clock_offset_ms: None,
            slices6: Vec::new(),
        }
    }

    /// Two members, m1 owning units 0 and 1, m2 units 2 and 3, at epoch 4.
    fn status() -> Status {
        Status {
            me: 1,
            incarnation: 0,
            epoch: Some(crate::admin::protocol::EpochStatus {
                epoch: 4,
                proposer: 1,
                incarnation: 0,
                digest: "00".into(),
            }),
            slice_bits: 2,
            group6: None,
            members: vec![member(1, Some(1)), member(2, Some(1))],
            unit_owner: vec![Some(1), Some(1), Some(2), Some(2)],
            unit_load: vec![0; 4],
            load_imbalance: None,
            counters: CounterStatus::default(),
            clock_untimely: false,
            health: Default::default(),
        }
    }

    #[test]
    fn a_resume_held_back_by_failing_health_checks_says_so() {
        let mut s = status();
        let generic = Until::Resumed(s.me).not_committed(&s);
        assert!(generic
            .error
            .as_deref()
            .unwrap_or("")
            .contains("not committed"));
        s.health.out = Some(crate::health::Exit::Planned);
        s.health.checks.push(crate::health::CheckStatus {
            name: "web".into(),
            kind: "http".into(),
            target: "http://127.0.0.1:80/".into(),
            up: false,
            last: None,
            passes: 0,
            fails: 3,
            rise: 2,
            fall: 3,
            pass_total: 0,
            slow_total: 3,
            dead_total: 0,
        });
        let a = Until::Resumed(s.me).not_committed(&s);
        let e = a.error.unwrap_or_default();
        assert!(e.contains("health checks are failing (web)"), "{e}");
    }

    #[test]
    fn answered_at_once_without_a_request() {
        let s = status();
        let Step::Answer(a) = plan(AdminRequest::Status {}, &s, Precheck::None) else {
            panic!("status is answered at once");
        };
        assert_eq!(a.status, Some(s.clone()));
        let unknown = plan(AdminRequest::Drain { member: Some(9) }, &s, Precheck::None);
        assert_eq!(unknown, answer(Answer::error("unknown member m9")));
        let owned = plan(
            AdminRequest::Move {
                units: vec![0, 1],
                to: 1,
            },
            &s,
            Precheck::Move(Some(Ok(()))),
        );
        assert_eq!(
            owned,
            answer(Answer::done("m1 owns those units already".into(), Some(4)))
        );
        let refused = plan(
            AdminRequest::Move {
                units: vec![9],
                to: 1,
            },
            &s,
            Precheck::Move(Some(Err(RequestRefusal::BadUnit))),
        );
        assert_eq!(
            refused,
            answer(Answer::error(
                "move refused: unit number out of range or the unit has no owner"
            ))
        );
        let balanced = plan(
            AdminRequest::Rebalance {},
            &s,
            Precheck::Rebalance(Some((0, true))),
        );
        assert!(
            matches!(balanced, Step::Answer(a) if a.ok && a.message.as_deref() == Some("already balanced (max/mean load n/a)"))
        );
        let none = plan(AdminRequest::Rebalance {}, &s, Precheck::Rebalance(None));
        assert_eq!(none, answer(Answer::error("no committed allocation yet")));
    }

    #[test]
    fn a_request_is_done_when_the_status_shows_it() {
        let mut s = status();
        let Step::Request { action, until } =
            plan(AdminRequest::Drain { member: None }, &s, Precheck::None)
        else {
            panic!("a drain is a request");
        };
        assert_eq!(action, RequestAction::Drain { member: 1 });
        assert!(!until.holds(&s));
        s.unit_owner = vec![Some(2); 4];
        s.members[0].allocation_weight = Some(0);
        s.epoch.as_mut().unwrap().epoch = 5;
        assert!(until.holds(&s));
        assert_eq!(
            until.done(&s),
            Answer::done("drained: m1 owns 0 units".into(), Some(5))
        );
        let Step::Request { until, .. } = plan(
            AdminRequest::Move {
                units: vec![2],
                to: 1,
            },
            &status(),
            Precheck::Move(Some(Ok(()))),
        ) else {
            panic!("a move is a request");
        };
        assert!(!until.holds(&status()));
        let e = until.not_committed(&status()).error.unwrap();
        assert!(
            e.starts_with("move: not committed within 5 s (the coordinator m1"),
            "{e}"
        );
    }
}
