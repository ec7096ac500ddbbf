//! The failure detector (SPEC.md §9.3): heartbeats out, direct and indirect (heard-by-others)
//! evidence in, and the live/down decision with its events. A heartbeat also carries the
//! sender's weight, load and committed epoch, so a member behind it fetches its allocation here.

use super::{ms, Destination, Endpoint, Event};
use crate::time::{Clock, Instant};
use crate::wire::{EpochId, Heartbeat, Message, StateQuery, StateSubject};
use igmp_ext::MemberId;

impl Endpoint {
    pub(super) fn on_heartbeat(&mut self, now: Clock, sender: MemberId, hb: Heartbeat) {
        let sender_live = self.peers.get(&sender).is_some_and(|p| p.left_at.is_none());
        if let Some(p) = self.peers.get_mut(&sender) {
            p.weight = hb.weight;
            p.committed = Some((hb.committed, hb.digest));
            p.load = hb.load;
        }
        if let Some(pending) = &mut self.pending {
            if hb.committed >= pending.id {
                pending.acked.insert(sender);
            }
        }
        if !sender_live {
            return;
        }
        // Indirect evidence: the sender heard these members `age` ms ago.
        let down = ms(self.config.down_after);
        for (m, age) in hb.heard {
            let m = MemberId(m);
            if m == self.me || u64::from(age) >= down {
                continue;
            }
            if let Some(p) = self.peers.get_mut(&m) {
                if p.left_at.is_none() {
                    let t = Instant(now.mono.0.saturating_sub(u64::from(age)));
                    p.alive_estimate = Some(p.alive_estimate.map_or(t, |a| a.max(t)));
                }
            }
        }
        // Behind the sender: fetch its allocation (anti-entropy, SPEC.md §9.4).
        let mine = self.committed.as_ref().map(|c| c.id());
        if mine.is_none_or(|m| hb.committed > m) && hb.committed.epoch > 0 {
            let interval = self.config.heartbeat_interval;
            let due = self.peers.get(&sender).is_some_and(|p| {
                p.last_query
                    .is_none_or(|q| now.mono >= q.saturating_add(interval))
            });
            if due {
                if let Some(p) = self.peers.get_mut(&sender) {
                    p.last_query = Some(now.mono);
                }
                let query_id = self.fresh_query_id();
                let m = Message::StateQuery(StateQuery {
                    query_id,
                    subject: StateSubject::Allocation,
                });
                self.send_to_member(now, sender, &m);
            }
        }
    }

    pub(super) fn update_liveness(&mut self, now: Clock) {
        let down = ms(self.config.down_after);
        for (&m, p) in self.peers.iter_mut() {
            let live = p.left_at.is_none()
                && p.alive_estimate
                    .is_some_and(|a| now.mono.0 < a.0.saturating_add(down));
            if live != p.live {
                p.live = live;
                self.events.push_back(if live {
                    Event::MemberUp(m)
                } else {
                    Event::MemberDown(m)
                });
            }
        }
    }

    pub(super) fn send_heartbeat(&mut self, now: Clock) {
        let down = ms(self.config.down_after);
        let heard = self
            .peers
            .iter()
            .filter_map(|(&m, p)| {
                let age = now.mono.0.saturating_sub(p.last_direct?.0);
                (age < down && p.left_at.is_none())
                    .then(|| (m.0, u16::try_from(age).unwrap_or(u16::MAX)))
            })
            .collect();
        let (committed, digest) = self
            .committed
            .as_ref()
            .map_or((EpochId::default(), 0), |c| (c.id(), c.digest_prefix()));
        let m = Message::Heartbeat(Heartbeat {
            weight: self.config.weight,
            heard,
            committed,
            digest,
            load: self.load.clone(),
        });
        if !self.send(now, Destination::Group, &m) {
            // Too many load entries for one datagram: send liveness without them.
            let Message::Heartbeat(mut hb) = m else {
                return;
            };
            hb.load.clear();
            self.send(now, Destination::Group, &Message::Heartbeat(hb));
        }
    }
}
