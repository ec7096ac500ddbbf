//! Joining and leaving: certificates announced in `Hello`s (on a timer, on demand, at most one
//! per heartbeat interval), and `Leave`/drain from this member and its peers. Who is live is
//! the failure detector's business (`failure.rs`).

use super::{Destination, Endpoint, Event};
use crate::time::Clock;
use crate::wire::{Hello, Leave, LeaveKind, Message};
use igmp_ext::MemberId;

impl Endpoint {
    /// A peer's `Hello`: its weight, and our certificate back if it is new or asks.
    pub(super) fn on_hello(&mut self, now: Clock, sender: MemberId, h: Hello, first_contact: bool) {
        let max_weight = self.config.max_weight;
        if let Some(p) = self.peers.get_mut(&sender) {
            p.weight = h.weight.min(max_weight);
        }
        // A new member (or one that asks) gets our certificate back at once, so that
        // it can verify us within one round trip instead of one hello interval.
        if (first_contact || h.reply_wanted) && !self.left {
            self.send_hello(now, false);
        }
    }

    /// A peer's `Leave`: gone at once, without waiting for the down timeout; or its drain
    /// (weight 0).
    pub(super) fn on_leave(&mut self, sender: MemberId, seq: u64, l: Leave) {
        let Some(p) = self.peers.get_mut(&sender) else {
            return;
        };
        match l.kind {
            LeaveKind::Leave => {
                p.left_at = Some(seq);
                p.alive_estimate = None;
                p.last_direct = None;
                if p.live {
                    p.live = false;
                    self.events.push_back(Event::MemberLeft(sender));
                }
            }
            LeaveKind::Drain => p.weight = 0,
        }
    }

    pub(super) fn send_hello(&mut self, now: Clock, reply_wanted: bool) {
        // At most one hello per heartbeat interval, however many strangers speak.
        if let Some(t) = self.hello_sent_at {
            let allowed = t.saturating_add(self.config.heartbeat_interval);
            if now.mono < allowed {
                // A due periodic hello waits for the limit rather than leaving a deadline in
                // the past, which would spin the driver.
                self.next_hello = self.next_hello.max(allowed);
                return;
            }
        }
        self.hello_sent_at = Some(now.mono);
        self.next_hello = now.mono.saturating_add(self.config.hello_interval);
        let m = Message::Hello(Hello {
            certificate: self.identity.certificate.as_bytes().to_vec(),
            weight: self.own_weight(),
            reply_wanted,
        });
        self.send(now, Destination::Group, &m);
    }

    /// Leaves the group now: peers take this member's slices at once instead of waiting for
    /// the failure detector.
    pub fn leave(&mut self, now: Clock) {
        let m = Message::Leave(Leave {
            kind: LeaveKind::Leave,
        });
        // Sent twice: a lost leave costs a down timeout, a duplicate costs nothing.
        self.send(now, Destination::Group, &m);
        self.send(now, Destination::Group, &m);
        self.left = true;
        self.pending = None;
    }

    /// Drains: weight 0, so the next allocation gives this member no slices.
    pub fn drain(&mut self, now: Clock) {
        self.config.weight = 0;
        let m = Message::Leave(Leave {
            kind: LeaveKind::Drain,
        });
        self.send(now, Destination::Group, &m);
        self.maybe_propose(now);
    }

    /// Holds this member at weight 0 (its service fails its health checks) or releases it. A
    /// hold is apart from [`Endpoint::drain`] and a resume: the weight announced is 0 while
    /// held, else the drained-or-resumed one, so a release never undoes an operator's drain and
    /// an operator's resume while held takes effect only at the release.
    pub fn set_held(&mut self, now: Clock, held: bool) {
        if self.held == held {
            return;
        }
        self.held = held;
        if held {
            // Peers take weight 0 at once, as for a drain.
            let m = Message::Leave(Leave {
                kind: LeaveKind::Drain,
            });
            self.send(now, Destination::Group, &m);
        } else {
            // The weight travels in heartbeats: announce it now rather than in 50 ms.
            self.send_heartbeat(now);
        }
        self.maybe_propose(now);
    }

    /// Whether [`Endpoint::set_held`] holds this member at weight 0.
    pub fn held(&self) -> bool {
        self.held
    }
}
