//! Operator requests (SPEC.md §9.4, "Requests"): sending one, acting on it once per request id,
//! and at the coordinator turning a move or rebalance into a new epoch with the same members
//! and weights (so the validity rule is unchanged).

use super::{move_units, Destination, DropReason, Endpoint, Event, RequestOutcome, RequestRefusal};
use crate::time::Clock;
use crate::wire::{Message, OperatorAuthority, Request, RequestAction};
use core::net::Ipv4Addr;
use igmp_ext::operator::OperatorCertificate;
use igmp_ext::{KeyId, MemberId, Timestamp};

impl Endpoint {
    /// Sends an operator request to the group and acts on it here too (this member may be the
    /// coordinator or the member named). Returns the request id; the outcome at each member
    /// is an [`Event::Request`] there. Sent twice, as a leave is: receivers act on a request id
    /// once, and a lost request would need the operator to retry.
    ///
    /// Without `authority` only this member's own drain or resume is acted on; anything else
    /// needs an operator's ([`crate::wire::OperatorAuthority`], SPEC.md §9.7).
    pub fn request(&mut self, now: Clock, action: RequestAction) -> u64 {
        self.request_with_authority(now, action, None)
    }

    /// [`Endpoint::request`] carrying an operator's signature and certificate.
    pub fn request_with_authority(
        &mut self,
        now: Clock,
        action: RequestAction,
        authority: Option<OperatorAuthority>,
    ) -> u64 {
        self.next_request_id += 1;
        let request_id = (self.incarnation.0 << 16) | (self.next_request_id & 0xffff);
        let r = Request {
            request_id,
            action,
            authority,
        };
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
        // A member speaks for itself: its own drain or resume needs nothing more. Anything
        // about other members needs an operator's authority.
        if r.action.subject() != Some(from.0) {
            if let Err(refusal) = self.check_operator(now, &r) {
                *self
                    .counters
                    .dropped
                    .entry(DropReason::Unauthorized)
                    .or_default() += 1;
                self.events.push_back(Event::Request {
                    from,
                    request_id: r.request_id,
                    action: r.action,
                    outcome: RequestOutcome::Refused(refusal),
                });
                return;
            }
        }
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
        // A scope change not yet proposed: the move would be made in the old scope.
        if !self.quiet_over
            || self.unacknowledged(c)
            || self.behind()
            || c.members() != view
            || !self.scope_matches(&c.proposal)
        {
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

    /// The operator's certificate verifies against a published group key for this cluster,
    /// its key is not revoked, its signature covers this action, and it was issued within the
    /// timeliness window and after the last request acted on from that operator key (so a
    /// captured request cannot be replayed, by its relay or anyone else). Records it.
    fn check_operator(&mut self, now: Clock, r: &Request) -> Result<KeyId, RequestRefusal> {
        let a = r.authority.as_ref().ok_or(RequestRefusal::Unauthorized)?;
        let keys: Vec<_> = self.trusted_group_keys().copied().collect();
        let revoked: Vec<KeyId> = self.revoked.iter().copied().collect();
        let cert = OperatorCertificate::verify(
            &a.certificate,
            &keys,
            Ipv4Addr::from(self.cluster),
            &revoked,
            now.wall,
        )
        .map_err(|_| RequestRefusal::Unauthorized)?;
        let issued_at = Timestamp(a.issued_at);
        if issued_at.abs_diff(now.wall) > self.config.timeliness_window {
            return Err(RequestRefusal::Unauthorized);
        }
        cert.verify_request(issued_at, &r.action.signed_bytes(), &a.signature)
            .map_err(|_| RequestRefusal::Unauthorized)?;
        let id = cert.key_id();
        if self
            .operator_last
            .get(&id)
            .is_some_and(|&l| a.issued_at <= l)
        {
            return Err(RequestRefusal::Unauthorized);
        }
        self.operator_last.insert(id, a.issued_at);
        Ok(id)
    }
}
