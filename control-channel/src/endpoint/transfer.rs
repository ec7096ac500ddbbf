//! State queries and chunked state transfer (Fig 12): go-back-N with cumulative acks, so a
//! resent or restarted transfer resumes where it stopped; a transfer that stops progressing
//! fails with an event. Transfers may finish after this member left.

use super::{
    Endpoint, Event, IncomingTransfer, OutgoingTransfer, SendError, MAX_INCOMING_PER_SENDER,
    MAX_INCOMING_TOTAL,
};
use crate::time::Clock;
use crate::wire::{self, Message, NackReason, StateAck, StateChunk, StateQuery, StateSubject};
use igmp_ext::MemberId;

impl Endpoint {
    /// Asks `to` for application state under `key` (a connection handoff, Fig 12); the answer
    /// arrives as [`Event::StateReceived`] with the returned id as transfer id.
    pub fn query_state(
        &mut self,
        now: Clock,
        to: MemberId,
        key: Vec<u8>,
    ) -> Result<u64, SendError> {
        if !self.peers.contains_key(&to) {
            return Err(SendError::UnknownMember);
        }
        let query_id = self.fresh_query_id();
        let m = Message::StateQuery(StateQuery {
            query_id,
            subject: StateSubject::Application(key),
        });
        if self.send_to_member(now, to, &m) {
            Ok(query_id)
        } else {
            Err(SendError::TooLarge)
        }
    }

    /// A query for our allocation (answered with its proposal) or for application state (an
    /// event for the application to answer).
    pub(super) fn on_state_query(&mut self, now: Clock, sender: MemberId, seq: u64, q: StateQuery) {
        match q.subject {
            StateSubject::Allocation => {
                if let Some(c) = &self.committed {
                    let m = Message::Proposal(c.proposal.clone());
                    self.send_to_member(now, sender, &m);
                }
            }
            StateSubject::Previous => {
                if let Some(c) = &self.previous {
                    let m = Message::Proposal(c.proposal.clone());
                    self.send_to_member(now, sender, &m);
                }
            }
            StateSubject::Application(key) => self.events.push_back(Event::StateQueried {
                from: sender,
                query_id: q.query_id,
                key,
            }),
            #[allow(unreachable_patterns)]
            _ => self.nack(now, sender, seq, NackReason::UnknownState),
        }
    }

    /// Sends `data` to `to` in acknowledged chunks (go-back-N with cumulative acks). The receiver
    /// acknowledges what it holds, so a resent or restarted transfer resumes where it stopped.
    pub fn send_state(
        &mut self,
        now: Clock,
        to: MemberId,
        transfer_id: u64,
        data: Vec<u8>,
    ) -> Result<(), SendError> {
        if !self.peers.contains_key(&to) {
            return Err(SendError::UnknownMember);
        }
        if data.len() > self.config.max_state_len || u32::try_from(data.len()).is_err() {
            return Err(SendError::TooLarge);
        }
        if self.outgoing.contains_key(&(to, transfer_id)) {
            return Err(SendError::TransferExists);
        }
        self.outgoing.insert(
            (to, transfer_id),
            OutgoingTransfer {
                to,
                id: transfer_id,
                data,
                acked: 0,
                sent_up_to: 0,
                retransmit_at: now.mono,
                tries_without_progress: 0,
            },
        );
        self.pump_transfer(now, (to, transfer_id));
        Ok(())
    }

    /// Sends the chunks of the window not yet sent.
    pub(super) fn pump_transfer(&mut self, now: Clock, key: (MemberId, u64)) {
        let chunk = self.config.chunk_size.clamp(1, wire::MAX_BODY - 64);
        let window = self.config.transfer_window.max(1);
        let retransmit = self.config.retransmit_after;
        let mut chunks = Vec::new();
        let dest;
        {
            let Some(t) = self.outgoing.get_mut(&key) else {
                return;
            };
            let limit = (t.acked + window * chunk).min(t.data.len());
            let total = u32::try_from(t.data.len()).unwrap_or(u32::MAX);
            // An empty transfer is one empty chunk.
            if t.data.is_empty() && t.sent_up_to == 0 {
                chunks.push(StateChunk {
                    transfer_id: t.id,
                    offset: 0,
                    total: 0,
                    data: Vec::new(),
                });
            }
            while t.sent_up_to < limit {
                let end = (t.sent_up_to + chunk).min(t.data.len());
                chunks.push(StateChunk {
                    transfer_id: t.id,
                    offset: u32::try_from(t.sent_up_to).unwrap_or(u32::MAX),
                    total,
                    data: t.data[t.sent_up_to..end].to_vec(),
                });
                t.sent_up_to = end;
            }
            if !chunks.is_empty() {
                t.retransmit_at = now.mono.saturating_add(retransmit);
            }
            dest = t.to;
        }
        for c in chunks {
            self.send_to_member(now, dest, &Message::StateChunk(c));
        }
    }

    pub(super) fn retransmit_transfers(&mut self, now: Clock) {
        let due: Vec<(MemberId, u64)> = self
            .outgoing
            .iter()
            .filter(|(_, t)| now.mono >= t.retransmit_at)
            .map(|(&k, _)| k)
            .collect();
        for key in due {
            let Some(t) = self.outgoing.get_mut(&key) else {
                continue;
            };
            t.tries_without_progress += 1;
            if t.tries_without_progress > 20 {
                self.outgoing.remove(&key);
                self.events.push_back(Event::TransferFailed {
                    to: key.0,
                    transfer_id: key.1,
                });
                continue;
            }
            // Go back to the last acknowledged byte.
            t.sent_up_to = t.acked;
            t.retransmit_at = now.mono.saturating_add(self.config.retransmit_after);
            self.pump_transfer(now, key);
        }
    }

    pub(super) fn on_chunk(&mut self, now: Clock, sender: MemberId, seq: u64, c: StateChunk) {
        let total = c.total as usize;
        if total > self.config.max_state_len {
            self.nack(now, sender, seq, NackReason::StateTooLarge);
            return;
        }
        let key = (sender, c.transfer_id);
        if !self.incoming.contains_key(&key) && !self.room_for_incoming(sender) {
            self.nack(now, sender, seq, NackReason::StateTooLarge);
            return;
        }
        let t = self.incoming.entry(key).or_insert(IncomingTransfer {
            total,
            data: Vec::new(),
            complete: false,
            last_progress: now.mono,
        });
        t.last_progress = now.mono;
        if t.total != total {
            return;
        }
        let offset = c.offset as usize;
        if !t.complete && offset == t.data.len() && offset + c.data.len() <= total {
            t.data.extend_from_slice(&c.data);
        }
        let next_offset = u32::try_from(t.data.len()).unwrap_or(u32::MAX);
        let mut done = None;
        if !t.complete && t.data.len() == t.total {
            t.complete = true;
            done = Some(core::mem::take(&mut t.data));
            // Keep the length so duplicates are acknowledged as complete.
            t.data = Vec::new();
        }
        let ack_offset = if t.complete { c.total } else { next_offset };
        let m = Message::StateAck(StateAck {
            transfer_id: c.transfer_id,
            next_offset: ack_offset,
        });
        self.send_to_member(now, sender, &m);
        if let Some(data) = done {
            self.events.push_back(Event::StateReceived {
                from: sender,
                transfer_id: c.transfer_id,
                data,
            });
        }
    }

    /// Room for one more incoming transfer from `sender`: at most [`MAX_INCOMING_PER_SENDER`]
    /// from one member and [`MAX_INCOMING_TOTAL`] in all. Complete transfers (kept to re-ack
    /// duplicates) give way first, oldest first; running ones are never evicted, so a sender
    /// over its bound is refused (`Nack(state-too-large)`) until its transfers end or expire.
    fn room_for_incoming(&mut self, sender: MemberId) -> bool {
        loop {
            let mine = self.incoming.keys().filter(|(m, _)| *m == sender).count();
            if mine < MAX_INCOMING_PER_SENDER && self.incoming.len() < MAX_INCOMING_TOTAL {
                return true;
            }
            let victim = self
                .incoming
                .iter()
                .filter(|(k, t)| t.complete && (mine < MAX_INCOMING_PER_SENDER || k.0 == sender))
                .min_by_key(|(_, t)| t.last_progress)
                .map(|(&k, _)| k);
            match victim {
                Some(k) => {
                    self.incoming.remove(&k);
                }
                None => return false,
            }
        }
    }

    /// Drops incoming transfers without a chunk for [`Config::transfer_linger`]
    /// (`super::Config`): a stalled sender's partial state, and completed ones kept for re-acks.
    pub(super) fn prune_incoming(&mut self, now: Clock) {
        let linger = self.config.transfer_linger;
        self.incoming
            .retain(|_, t| now.mono < t.last_progress.saturating_add(linger));
    }

    pub(super) fn on_ack(&mut self, now: Clock, sender: MemberId, a: StateAck) {
        let key = (sender, a.transfer_id);
        let Some(t) = self.outgoing.get_mut(&key) else {
            return;
        };
        let next = (a.next_offset as usize).min(t.data.len());
        if next > t.acked || (t.data.is_empty() && a.next_offset == 0) {
            t.acked = next;
            t.sent_up_to = t.sent_up_to.max(next);
            t.tries_without_progress = 0;
            t.retransmit_at = now.mono.saturating_add(self.config.retransmit_after);
        }
        if t.acked >= t.data.len() {
            self.outgoing.remove(&key);
            self.events.push_back(Event::TransferComplete {
                to: sender,
                transfer_id: a.transfer_id,
            });
            return;
        }
        self.pump_transfer(now, key);
    }
}
