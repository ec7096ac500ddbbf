//! Every message this member sends goes through here: header (sequence numbers, epoch),
//! signature, the rule that a member that left sends nothing but transfers, and where a message
//! to one member goes (its direct path, else where it speaks from, else the group).

use super::{ms, Destination, Endpoint, Event, Transmit, UNSENDABLE_REPORT_EVERY};
use crate::time::{Clock, Instant};
use crate::wire::{EncodeError, Header, Message, MessageType, Nack, NackReason};
use igmp_ext::MemberId;

impl Endpoint {
    pub(super) fn header(&mut self, now: Clock) -> Header {
        self.sequence += 1;
        Header {
            cluster: self.cluster,
            sender: self.me,
            epoch: self.committed.as_ref().map_or(0, |c| c.id().epoch),
            sequence: self.sequence,
            timestamp: now.wall,
        }
    }

    pub(super) fn send(&mut self, now: Clock, destination: Destination, m: &Message) -> bool {
        match self.try_send(now, destination, m) {
            Ok(sent) => sent,
            Err(EncodeError::TooLarge) => {
                self.report_unsendable(now, m.message_type());
                false
            }
            Err(EncodeError::Serialize) => false,
        }
    }

    /// Like [`Endpoint::send`], for a caller with a smaller message to fall back on: a message
    /// too large for a datagram is neither sent nor reported. `Ok(false)`: not allowed now.
    pub(super) fn try_send(
        &mut self,
        now: Clock,
        destination: Destination,
        m: &Message,
    ) -> Result<bool, EncodeError> {
        // After leaving, any message would count as a sign of life and bring this member back
        // into its peers' views; only running transfers may finish.
        let allowed_after_leave = matches!(
            m,
            Message::Leave(_) | Message::StateChunk(_) | Message::StateAck(_)
        );
        if self.left && !allowed_after_leave {
            return Ok(false);
        }
        let header = self.header(now);
        let payload = m.encode_signed(&header, &self.identity.key)?;
        self.counters.sent += 1;
        self.transmits.push_back(Transmit {
            destination,
            payload,
        });
        Ok(true)
    }

    /// A message that had to go out does not fit a datagram: counted every time, reported to
    /// the application once per type every [`UNSENDABLE_REPORT_EVERY`], so that a group grown
    /// past what one datagram can describe says so instead of going silent.
    fn report_unsendable(&mut self, now: Clock, message: MessageType) {
        self.counters.unsendable += 1;
        let due = |at: Instant| now.mono.0.saturating_sub(at.0) >= ms(UNSENDABLE_REPORT_EVERY);
        match self
            .unsendable_reported
            .iter_mut()
            .find(|(t, _)| *t == message)
        {
            Some((_, at)) if !due(*at) => return,
            Some((_, at)) => *at = now.mono,
            None => self.unsendable_reported.push((message, now.mono)),
        }
        self.events.push_back(Event::Unsendable {
            message,
            peers: self.peers.len(),
        });
    }

    pub(super) fn destination_of(&self, member: MemberId) -> Destination {
        match self.peers.get(&member) {
            Some(p) => match (p.direct_path, p.addr) {
                (Some(d), _) => Destination::Unicast(d),
                (None, Some(a)) => Destination::Unicast(a),
                _ => Destination::Group,
            },
            None => Destination::Group,
        }
    }

    pub(super) fn send_to_member(&mut self, now: Clock, member: MemberId, m: &Message) -> bool {
        let d = self.destination_of(member);
        self.send(now, d, m)
    }

    pub(super) fn nack(&mut self, now: Clock, to: MemberId, seq: u64, reason: NackReason) {
        let m = Message::Nack(Nack {
            refused_sequence: seq,
            reason,
        });
        self.send_to_member(now, to, &m);
    }

    pub(super) fn fresh_query_id(&mut self) -> u64 {
        self.next_query_id += 1;
        self.next_query_id
    }
}

#[cfg(feature = "sim")]
impl Endpoint {
    /// Test-only (feature `sim`): sends `m` to the group, signed with this member's key, with
    /// `header_epoch` in the header instead of the committed epoch. It lets a test play a
    /// compromised but certified member (`crate::attack`); no daemon is built with it.
    pub fn danger_send_raw(&mut self, now: Clock, header_epoch: u64, m: &Message) -> bool {
        let mut header = self.header(now);
        header.epoch = header_epoch;
        match m.encode_signed(&header, &self.identity.key) {
            Ok(payload) => {
                self.transmits.push_back(Transmit {
                    destination: Destination::Group,
                    payload,
                });
                true
            }
            Err(_) => false,
        }
    }
}
