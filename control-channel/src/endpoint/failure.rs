//! The failure detector (SPEC.md §9.3): heartbeats out, direct and indirect (heard-by-others)
//! evidence in, and the live/down decision with its events. A heartbeat also carries the
//! sender's weight, load and committed epoch, so a member behind it fetches its allocation here.

use super::{ms, Destination, Endpoint, Event, MAX_ADVERT_QUERIES};
use crate::time::{Clock, Instant};
use crate::wire::{EncodeError, EpochId, Heartbeat, Message, StateQuery, StateSubject};
use igmp_ext::MemberId;

/// Indirect evidence about a member counts only while this member heard it directly within
/// this many down timeouts (800 ms by default): a crashed member is declared down at most that
/// long after its last message, whatever its peers report.
const INDIRECT_SPAN: u64 = 4;

impl Endpoint {
    pub(super) fn on_heartbeat(&mut self, now: Clock, sender: MemberId, hb: Heartbeat) {
        let sender_live = self.peers.get(&sender).is_some_and(|p| p.left_at.is_none());
        let max_weight = self.config.max_weight;
        if let Some(p) = self.peers.get_mut(&sender) {
            p.weight = hb.weight.min(max_weight);
            if p.committed.is_none_or(|(id, _)| id != hb.committed) {
                p.advert_queries = 0;
            }
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
        // Indirect evidence: the sender heard these members `age` ms ago. It only bridges
        // gaps in what we hear ourselves (loss): it counts for a member we heard directly
        // within `INDIRECT_SPAN` down timeouts, so no peer's reports, true or not, keep a
        // member alive here that we stopped hearing (SPEC.md §9.3, §9.7).
        let down = ms(self.config.down_after);
        let span = down.saturating_mul(INDIRECT_SPAN);
        for (m, age) in hb.heard {
            let m = MemberId(m);
            if m == self.me || u64::from(age) >= down {
                continue;
            }
            if let Some(p) = self.peers.get_mut(&m) {
                let heard_lately = p
                    .last_direct
                    .is_some_and(|d| now.mono.0 < d.0.saturating_add(span));
                if p.left_at.is_none() && heard_lately {
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
            let due = due
                && self
                    .peers
                    .get(&sender)
                    .is_some_and(|p| p.advert_queries < MAX_ADVERT_QUERIES);
            if due {
                if let Some(p) = self.peers.get_mut(&sender) {
                    p.last_query = Some(now.mono);
                    p.advert_queries = p.advert_queries.saturating_add(1);
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
            #[cfg(feature = "sim")]
            let live = live && !self.external_down.contains(&m);
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

    /// Simulator only (feature `sim`): an outside failure detector (the SWIM prototype,
    /// `sim::swim`) declares `member` down; it stays down for this endpoint's life, whatever
    /// its heartbeats say. The decision rule then runs as for a down from the heartbeats.
    #[cfg(feature = "sim")]
    pub fn sim_external_down(&mut self, now: Clock, member: MemberId) {
        self.external_down.insert(member);
        self.update_liveness(now);
        self.retry_deferred(now);
        self.maybe_propose(now);
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
            weight: self.own_weight(),
            heard,
            committed,
            digest,
            load: self.load.clone(),
        });
        if let Err(EncodeError::TooLarge) = self.try_send(now, Destination::Group, &m) {
            // Too many load entries for one datagram: send liveness without them (and report
            // it if even that does not fit).
            let Message::Heartbeat(mut hb) = m else {
                return;
            };
            hb.load.clear();
            self.send(now, Destination::Group, &Message::Heartbeat(hb));
        }
    }
}
