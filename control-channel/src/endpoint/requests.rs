//! Operator requests (SPEC.md §9.4, "Requests"): sending one, acting on it once per request id,
//! and at the coordinator turning a move or rebalance into a new epoch with the same members
//! and weights (so the validity rule is unchanged).

use super::{move_units, Destination, Endpoint, Event, RequestOutcome, RequestRefusal};
use crate::time::Clock;
use crate::wire::{Message, Request, RequestAction};
use igmp_ext::MemberId;

impl Endpoint {
    /// Sends an operator request to the group and acts on it here too (this member may be the
    /// coordinator or the member named). Returns the request id; the outcome at each member
    /// is an [`Event::Request`] there. Sent twice, as a leave is: receivers act on a request id
    /// once, and a lost request would need the operator to retry.
    pub fn request(&mut self, now: Clock, action: RequestAction) -> u64 {
        self.next_request_id += 1;
        let request_id = (self.incarnation.0 << 16) | (self.next_request_id & 0xffff);
        let r = Request { request_id, action };
        let m = Message::Request(r.clone());
        self.send(now, Destination::Group, &m);
        self.send(now, Destination::Group, &m);
        self.on_request(now, self.me, r);
        request_id
    }

    /// An operator request: the member it names acts on a drain or resume, the coordinator on
    /// a move or rebalance; everyone else reports `NotForMe`.
    pub(super) fn on_request(&mut self, now: Clock, from: MemberId, r: Request) {
        if self.left {
            return;
        }
        // Ids grow per sender (start time, then a counter): anything not newer is a repeat.
        if self
            .last_request
            .get(&from)
            .is_some_and(|&l| r.request_id <= l)
        {
            return;
        }
        self.last_request.insert(from, r.request_id);
        let outcome = match &r.action {
            RequestAction::Drain { member } if MemberId(*member) == self.me => {
                self.drain(now);
                RequestOutcome::Drained
            }
            RequestAction::Resume { member } if MemberId(*member) == self.me => {
                self.config.weight = self.configured_weight;
                // The weight travels in heartbeats: announce it now rather than in 50 ms.
                self.send_heartbeat(now);
                self.maybe_propose(now);
                RequestOutcome::Resumed
            }
            RequestAction::Drain { .. } | RequestAction::Resume { .. } => RequestOutcome::NotForMe,
            RequestAction::Rebalance | RequestAction::Move { .. } => {
                self.coordinate_request(now, &r.action)
            }
        };
        self.events.push_back(Event::Request {
            from,
            request_id: r.request_id,
            action: r.action,
            outcome,
        });
    }

    /// A move or rebalance at the coordinator: a new epoch with the same members and weights,
    /// so every member's quota, and the validity rule, are unchanged.
    pub(super) fn coordinate_request(
        &mut self,
        now: Clock,
        action: &RequestAction,
    ) -> RequestOutcome {
        let view = self.view();
        if view.first().map(|&(m, _)| m) != Some(self.me) {
            return RequestOutcome::NotForMe;
        }
        let Some(c) = &self.committed else {
            return RequestOutcome::Refused(RequestRefusal::NoAllocation);
        };
        if !self.quiet_over || self.unacknowledged(c) || self.behind() || c.members() != view {
            return RequestOutcome::Refused(RequestRefusal::Busy);
        }
        let load = self.unit_loads();
        let next = match action {
            RequestAction::Rebalance => c.allocation.rebalanced_by_load(&view, &load),
            RequestAction::Move { units, to } => {
                match move_units(&c.allocation, units, MemberId(*to), &load) {
                    Ok(a) => a,
                    Err(e) => return RequestOutcome::Refused(e),
                }
            }
            _ => return RequestOutcome::NotForMe,
        };
        if next == c.allocation {
            return RequestOutcome::Unchanged;
        }
        RequestOutcome::Proposed(self.propose(now, &view, next))
    }
}
