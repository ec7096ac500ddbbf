//! The control message format (SPEC.md §9.1): a fixed 40-byte big-endian header read through a
//! checked view, a postcard body, and an Ed25519 signature by the sender's member key over the
//! exact bytes sent. Parsing yields an [`UnverifiedMessage`]; only the endpoint, holding the
//! sender's verified certificate, turns it into a trusted message.

use igmp_ext::ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use igmp_ext::{MemberId, Timestamp};
use serde::{Deserialize, Serialize};

mod scope;
pub use scope::{Scope, SCOPE_TAG};

/// Domain separation: no other Manycast signature (joins, certificates) verifies as a control
/// message, and no control message as anything else.
pub const CONTROL_SIGNING_CONTEXT: &[u8] = b"manycast control v1\0";
/// "MC".
pub const MAGIC: [u8; 2] = [0x4d, 0x43];
/// 0x02 (issue 13): proposals carry their proposer's signature, requests the operator's.
pub const VERSION: u8 = 0x02;
pub const HEADER_LEN: usize = 40;
pub const SIGNATURE_LEN: usize = 64;
/// Largest datagram sent or accepted: fits a 1500-byte Ethernet MTU with IPv4/UDP headers and
/// room for tunnels, so control messages are never fragmented.
pub const MAX_DATAGRAM: usize = 1400;
/// Largest body that fits [`MAX_DATAGRAM`].
pub const MAX_BODY: usize = MAX_DATAGRAM - HEADER_LEN - SIGNATURE_LEN;

/// Byte ranges of the header (SPEC.md §9.1).
mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const TYPE: usize = 3;
    pub const CLUSTER: Range<usize> = 4..8;
    pub const SENDER: Range<usize> = 8..12;
    pub const EPOCH: Range<usize> = 12..20;
    pub const SEQUENCE: Range<usize> = 20..28;
    pub const TIMESTAMP: Range<usize> = 28..36;
    pub const BODY_LEN: Range<usize> = 36..38;
    pub const RESERVED: Range<usize> = 38..40;
}

/// Message type code points. Total: unknown codes parse as `Unknown` and are refused later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    Hello,
    Heartbeat,
    Proposal,
    Commit,
    Leave,
    Forward,
    DirectPath,
    StateQuery,
    StateChunk,
    StateAck,
    Nack,
    Request,
    Forward6,
    DirectPath6,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            0x01 => MessageType::Hello,
            0x02 => MessageType::Heartbeat,
            0x03 => MessageType::Proposal,
            0x04 => MessageType::Commit,
            0x05 => MessageType::Leave,
            0x06 => MessageType::Forward,
            0x07 => MessageType::DirectPath,
            0x08 => MessageType::StateQuery,
            0x09 => MessageType::StateChunk,
            0x0a => MessageType::StateAck,
            0x0b => MessageType::Nack,
            0x0c => MessageType::Request,
            0x0d => MessageType::Forward6,
            0x0e => MessageType::DirectPath6,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::Hello => 0x01,
            MessageType::Heartbeat => 0x02,
            MessageType::Proposal => 0x03,
            MessageType::Commit => 0x04,
            MessageType::Leave => 0x05,
            MessageType::Forward => 0x06,
            MessageType::DirectPath => 0x07,
            MessageType::StateQuery => 0x08,
            MessageType::StateChunk => 0x09,
            MessageType::StateAck => 0x0a,
            MessageType::Nack => 0x0b,
            MessageType::Request => 0x0c,
            MessageType::Forward6 => 0x0d,
            MessageType::DirectPath6 => 0x0e,
            MessageType::Unknown(v) => v,
        }
    }
}

/// Why bytes were refused before they reached protocol logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("datagram larger than {MAX_DATAGRAM} bytes")]
    Oversized,
    #[error("datagram shorter than its header, body and signature")]
    Truncated,
    #[error("not a Manycast control message (bad magic)")]
    BadMagic,
    #[error("control message version {0} is not supported")]
    UnknownVersion(u8),
    #[error("unknown control message type {0:#04x}")]
    UnknownType(u8),
    #[error("reserved header bits are set, or bytes follow the signature")]
    Malformed,
}

/// A checked view over a control datagram: once [`ControlPacket::new_checked`] succeeded, no
/// getter can panic.
#[derive(Debug, Clone, Copy)]
pub struct ControlPacket<T: AsRef<[u8]>> {
    buffer: T,
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

impl<T: AsRef<[u8]>> ControlPacket<T> {
    /// The only way in for untrusted bytes: checks size, magic, version, type, reserved bits and
    /// that header + body + signature is exactly the datagram.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() > MAX_DATAGRAM {
            return Err(ParseError::Oversized);
        }
        if b.len() < HEADER_LEN + SIGNATURE_LEN {
            return Err(ParseError::Truncated);
        }
        if b[field::MAGIC] != MAGIC {
            return Err(ParseError::BadMagic);
        }
        if b[field::VERSION] != VERSION {
            return Err(ParseError::UnknownVersion(b[field::VERSION]));
        }
        if let MessageType::Unknown(t) = MessageType::from(b[field::TYPE]) {
            return Err(ParseError::UnknownType(t));
        }
        if b[field::RESERVED] != [0, 0] {
            return Err(ParseError::Malformed);
        }
        let body_len = usize::from(u16::from_be_bytes([b[36], b[37]]));
        let total = HEADER_LEN + body_len + SIGNATURE_LEN;
        if b.len() < total {
            return Err(ParseError::Truncated);
        }
        if b.len() > total {
            return Err(ParseError::Malformed);
        }
        Ok(ControlPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn message_type(&self) -> MessageType {
        MessageType::from(self.b()[field::TYPE])
    }
    pub fn cluster(&self) -> u32 {
        be_u32(&self.b()[field::CLUSTER])
    }
    pub fn sender(&self) -> MemberId {
        MemberId(be_u32(&self.b()[field::SENDER]))
    }
    pub fn epoch(&self) -> u64 {
        be_u64(&self.b()[field::EPOCH])
    }
    pub fn sequence(&self) -> u64 {
        be_u64(&self.b()[field::SEQUENCE])
    }
    pub fn timestamp(&self) -> Timestamp {
        Timestamp(be_u64(&self.b()[field::TIMESTAMP]))
    }
    pub fn body_len(&self) -> usize {
        usize::from(u16::from_be_bytes([
            self.b()[field::BODY_LEN.start],
            self.b()[field::BODY_LEN.start + 1],
        ]))
    }
    pub fn body(&self) -> &[u8] {
        &self.b()[HEADER_LEN..HEADER_LEN + self.body_len()]
    }
    /// Header and body: the bytes the signature covers (after the context prefix).
    pub fn signed_part(&self) -> &[u8] {
        &self.b()[..HEADER_LEN + self.body_len()]
    }
    pub fn signature(&self) -> Signature {
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(&self.b()[HEADER_LEN + self.body_len()..]);
        Signature::from_bytes(&s)
    }

    /// Strict Ed25519 verification over the context prefix, header and body.
    pub fn verify_signature(&self, key: &VerifyingKey) -> bool {
        igmp_ext::signature::verify(key, &signing_message(self.signed_part()), &self.signature())
    }
}

fn signing_message(signed_part: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTROL_SIGNING_CONTEXT.len() + signed_part.len());
    m.extend_from_slice(CONTROL_SIGNING_CONTEXT);
    m.extend_from_slice(signed_part);
    m
}

/// The header fields a sender chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub cluster: u32,
    pub sender: MemberId,
    /// The sender's committed allocation epoch.
    pub epoch: u64,
    pub sequence: u64,
    pub timestamp: Timestamp,
}

/// An allocation epoch together with the member that proposed it. Ordered so that the greater
/// value wins: the later epoch, and for the same epoch the lower proposer id (SPEC.md §9.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct EpochId {
    pub epoch: u64,
    pub proposer: u32,
    /// When the proposer started (ms): a member that restarts without stable storage may
    /// propose an epoch number it already used, and this keeps the two apart.
    pub incarnation: u64,
}

impl Ord for EpochId {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then(other.proposer.cmp(&self.proposer))
            .then(self.incarnation.cmp(&other.incarnation))
    }
}

impl PartialOrd for EpochId {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl core::fmt::Display for EpochId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "e{}/m{}", self.epoch, self.proposer)
    }
}

/// Announces a member: its certificate (cached by receivers) and weight. Patent claim 7.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub certificate: Vec<u8>,
    pub weight: u32,
    /// Set by a member that has just heard from members it cannot verify (it started, or they
    /// did): receivers answer with their own `Hello`.
    pub reply_wanted: bool,
}

/// Sent every heartbeat interval to the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub weight: u32,
    /// Members the sender heard directly within the down timeout, with the age of that hearing in
    /// milliseconds: the indirect evidence that keeps lossy members from being declared down.
    pub heard: Vec<(u32, u16)>,
    /// The sender's committed allocation and the first 8 bytes of its digest.
    pub committed: EpochId,
    pub digest: u64,
    /// Load per allocation unit (unit number, load in the application's units).
    pub load: Vec<(u16, u32)>,
}

/// An allocation for one epoch: who is in it (id, weight), and the owner of every unit as an
/// index into `members`. Patent claims 8-9, Fig 13.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: EpochId,
    pub members: Vec<(u32, u32)>,
    pub owners: Vec<u8>,
    /// The committed allocation the proposer made this one from (zero: none): a member whose
    /// first commit this is fetches it to learn its units' previous owners (SPEC.md §11.5).
    pub base: EpochId,
    /// The proposer's (`id.proposer`) member-key signature over [`Proposal::signed_bytes`]:
    /// a proposal relayed by another member (anti-entropy) still names who made it.
    pub signature: Vec<u8>,
    /// The scope it allocates within, if any: not a postcard field but an extension after them
    /// ([`Proposal::encode`]), so proposals without one keep their encoding.
    #[serde(skip)]
    pub scope: Option<Scope>,
}

/// Domain separation for the proposer's signature inside a proposal.
pub const PROPOSAL_SIGNING_CONTEXT: &[u8] = b"manycast proposal v2\0";

impl Proposal {
    /// Context, cluster id, and the postcard encoding of the proposal with an empty signature.
    pub fn signed_bytes(&self, cluster: u32) -> Vec<u8> {
        let unsigned = Proposal {
            signature: Vec::new(),
            ..self.clone()
        };
        let body = unsigned.encode().unwrap_or_default();
        [PROPOSAL_SIGNING_CONTEXT, &cluster.to_be_bytes(), &body].concat()
    }

    /// Signs it as its proposer.
    pub fn sign(&mut self, cluster: u32, key: &SigningKey) {
        let m = self.signed_bytes(cluster);
        self.signature = igmp_ext::signature::sign(key, &m).to_bytes().to_vec();
    }

    /// Whether `key` (the proposer's) signed it.
    pub fn verify(&self, cluster: u32, key: &VerifyingKey) -> bool {
        let Ok(sig) = <[u8; SIGNATURE_LEN]>::try_from(self.signature.as_slice()) else {
            return false;
        };
        igmp_ext::signature::verify(
            key,
            &self.signed_bytes(cluster),
            &Signature::from_bytes(&sig),
        )
    }
}

/// "I committed this allocation."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: EpochId,
    pub digest: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LeaveKind {
    /// Stops now: take my slices.
    Leave,
    /// Keeps running but wants no slices (weight 0) so that it can be stopped without resets.
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    pub kind: LeaveKind,
}

/// A client packet passed to the member that holds its connection (patent claim 10, Fig 14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The member meant to handle it (a forward over the group reaches everyone).
    pub to: u32,
    pub client_addr: u32,
    pub client_port: u16,
    pub payload: Vec<u8>,
}

/// A packet of an IPv6 client passed on (as [`Forward`]; its own type so that a member that
/// knows only IPv4 forwards refuses it as an unknown type rather than misreading it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward6 {
    pub to: u32,
    /// The client's address, network order.
    pub client_addr: [u8; 16],
    pub client_port: u16,
    pub payload: Vec<u8>,
}

/// "Use this unicast path to reach me" (patent claim 10, Fig 15): forwarded packets and bulk
/// transfers then bypass the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectPath {
    pub addr: u32,
    pub port: u16,
}

/// An IPv6 direct path (as [`DirectPath`]; its own type so that a member that knows only IPv4
/// paths refuses it as an unknown type). A link-local address carries no zone on the wire: the
/// receiver reaches it over the link the announcement came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectPath6 {
    /// Network order.
    pub addr: [u8; 16],
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StateSubject {
    /// The sender's committed allocation, answered with a [`Proposal`].
    Allocation,
    /// Application state (connection state for a handoff, Fig 12 step 1230), answered with a
    /// state transfer.
    Application(Vec<u8>),
    /// The allocation the sender committed before its current one, answered with its
    /// [`Proposal`] (or nothing).
    Previous,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateQuery {
    pub query_id: u64,
    pub subject: StateSubject,
}

/// One chunk of a state transfer larger than a datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChunk {
    pub transfer_id: u64,
    pub offset: u32,
    pub total: u32,
    pub data: Vec<u8>,
}

/// Cumulative acknowledgement: every byte before `next_offset` arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateAck {
    pub transfer_id: u64,
    pub next_offset: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NackReason {
    /// A proposal older than (or conflicting with) the receiver's committed epoch.
    StaleEpoch,
    /// A proposal that breaks the decision rule (SPEC.md §9.4).
    InvalidProposal,
    UnknownTransfer,
    StateTooLarge,
    UnknownState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// Sequence number of the refused message.
    pub refused_sequence: u64,
    pub reason: NackReason,
}

/// An operator action (the admin tool) carried to the cluster (SPEC.md §9.4, "Requests").
/// No action can change how many units a member owns: moves and rebalances are swaps within the
/// quotas, and a weight changes only when its own member announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RequestAction {
    /// The coordinator swaps units between members to lower max/mean load
    /// (`Allocation::rebalanced_by_load`).
    Rebalance,
    /// The coordinator gives `units` to member `to`, which gives each previous owner one of its
    /// other units back (its least loaded), so every member keeps its count.
    Move { units: Vec<u16>, to: u32 },
    /// `member` drains itself: weight 0, so the next allocation gives it nothing.
    Drain { member: u32 },
    /// `member` announces its configured weight again (undoes a drain).
    Resume { member: u32 },
}

/// An operator's authority for one request (SPEC.md §9.7): its certificate from the group key
/// (`igmp_ext::operator`), when it signed, and its signature over the control group, that time
/// and the postcard encoding of the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAuthority {
    pub certificate: Vec<u8>,
    /// Wall-clock ms: refused outside the timeliness window, and unless newer than the last
    /// request acted on from the same operator key.
    pub issued_at: u64,
    pub signature: Vec<u8>,
}

impl RequestAction {
    /// The bytes an operator signs for this action.
    pub fn signed_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// The member this action is about when it is only about one member's own weight.
    pub fn subject(&self) -> Option<u32> {
        match self {
            RequestAction::Drain { member } | RequestAction::Resume { member } => Some(*member),
            _ => None,
        }
    }
}

/// Sent to the group by a member; see [`RequestAction`]. A member may drain or resume itself;
/// anything else needs `authority`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the sender, to match the outcome events.
    pub request_id: u64,
    pub action: RequestAction,
    pub authority: Option<OperatorAuthority>,
}

/// A decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    Hello(Hello),
    Heartbeat(Heartbeat),
    Proposal(Proposal),
    Commit(Commit),
    Leave(Leave),
    Forward(Forward),
    DirectPath(DirectPath),
    StateQuery(StateQuery),
    StateChunk(StateChunk),
    StateAck(StateAck),
    Nack(Nack),
    Request(Request),
    Forward6(Forward6),
    DirectPath6(DirectPath6),
}

/// Why a message could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("message body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("message body could not be serialised")]
    Serialize,
}

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Heartbeat(_) => MessageType::Heartbeat,
            Message::Proposal(_) => MessageType::Proposal,
            Message::Commit(_) => MessageType::Commit,
            Message::Leave(_) => MessageType::Leave,
            Message::Forward(_) => MessageType::Forward,
            Message::DirectPath(_) => MessageType::DirectPath,
            Message::StateQuery(_) => MessageType::StateQuery,
            Message::StateChunk(_) => MessageType::StateChunk,
            Message::StateAck(_) => MessageType::StateAck,
            Message::Nack(_) => MessageType::Nack,
            Message::Request(_) => MessageType::Request,
            Message::Forward6(_) => MessageType::Forward6,
            Message::DirectPath6(_) => MessageType::DirectPath6,
        }
    }

    fn encode_body(&self) -> Result<Vec<u8>, EncodeError> {
        let r = match self {
            Message::Hello(m) => postcard::to_stdvec(m),
            Message::Heartbeat(m) => postcard::to_stdvec(m),
            Message::Proposal(m) => m.encode(),
            Message::Commit(m) => postcard::to_stdvec(m),
            Message::Leave(m) => postcard::to_stdvec(m),
            Message::Forward(m) => postcard::to_stdvec(m),
            Message::DirectPath(m) => postcard::to_stdvec(m),
            Message::StateQuery(m) => postcard::to_stdvec(m),
            Message::StateChunk(m) => postcard::to_stdvec(m),
            Message::StateAck(m) => postcard::to_stdvec(m),
            Message::Nack(m) => postcard::to_stdvec(m),
            Message::Request(m) => postcard::to_stdvec(m),
            Message::Forward6(m) => postcard::to_stdvec(m),
            Message::DirectPath6(m) => postcard::to_stdvec(m),
        };
        r.map_err(|_| EncodeError::Serialize)
    }

    /// Decodes a body of type `t`. Trailing bytes are refused so that one signature covers one
    /// meaning. Never panics.
    pub fn decode(t: MessageType, body: &[u8]) -> Result<Message, ParseError> {
        fn take<'a, M: Deserialize<'a>>(body: &'a [u8]) -> Result<M, ParseError> {
            match postcard::take_from_bytes::<M>(body) {
                Ok((m, [])) => Ok(m),
                _ => Err(ParseError::Malformed),
            }
        }
        Ok(match t {
            MessageType::Hello => Message::Hello(take(body)?),
            MessageType::Heartbeat => Message::Heartbeat(take(body)?),
            MessageType::Proposal => Message::Proposal(Proposal::decode(body)?),
            MessageType::Commit => Message::Commit(take(body)?),
            MessageType::Leave => Message::Leave(take(body)?),
            MessageType::Forward => Message::Forward(take(body)?),
            MessageType::DirectPath => Message::DirectPath(take(body)?),
            MessageType::StateQuery => Message::StateQuery(take(body)?),
            MessageType::StateChunk => Message::StateChunk(take(body)?),
            MessageType::StateAck => Message::StateAck(take(body)?),
            MessageType::Nack => Message::Nack(take(body)?),
            MessageType::Request => Message::Request(take(body)?),
            MessageType::Forward6 => Message::Forward6(take(body)?),
            MessageType::DirectPath6 => Message::DirectPath6(take(body)?),
            MessageType::Unknown(v) => return Err(ParseError::UnknownType(v)),
        })
    }

    /// Header, body and signature: the exact bytes to send.
    pub fn encode_signed(&self, header: &Header, key: &SigningKey) -> Result<Vec<u8>, EncodeError> {
        let body = self.encode_body()?;
        if body.len() > MAX_BODY {
            return Err(EncodeError::TooLarge);
        }
        let body_len = u16::try_from(body.len()).map_err(|_| EncodeError::TooLarge)?;
        let mut b = Vec::with_capacity(HEADER_LEN + body.len() + SIGNATURE_LEN);
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(u8::from(self.message_type()));
        b.extend_from_slice(&header.cluster.to_be_bytes());
        b.extend_from_slice(&header.sender.0.to_be_bytes());
        b.extend_from_slice(&header.epoch.to_be_bytes());
        b.extend_from_slice(&header.sequence.to_be_bytes());
        b.extend_from_slice(&header.timestamp.0.to_be_bytes());
        b.extend_from_slice(&body_len.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&body);
        let sig = igmp_ext::signature::sign(key, &signing_message(&b));
        b.extend_from_slice(&sig.to_bytes());
        Ok(b)
    }
}

/// A datagram whose structure checked out and whose body decoded, but whose signature, sender and
/// freshness have not been checked: only the endpoint acts on it, after checking them.
#[derive(Debug, Clone)]
pub struct UnverifiedMessage<'a> {
    pub packet: ControlPacket<&'a [u8]>,
    pub message: Message,
}

/// Parses header and body; checks nothing that needs keys or state. The fuzz target's entry.
pub fn parse(bytes: &[u8]) -> Result<UnverifiedMessage<'_>, ParseError> {
    let packet = ControlPacket::new_checked(bytes)?;
    let message = Message::decode(packet.message_type(), packet.body())?;
    Ok(UnverifiedMessage { packet, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3u8; 32])
    }

    fn header() -> Header {
        Header {
            cluster: 0xe801_0101,
            sender: MemberId(2),
            epoch: 7,
            sequence: 0x0102_0304_0506_0708,
            timestamp: Timestamp(1_795_392_000_000),
        }
    }

    #[test]
    fn header_layout_byte_vector() {
        let msg = Message::Leave(Leave {
            kind: LeaveKind::Drain,
        });
        let b = msg.encode_signed(&header(), &key()).unwrap();
        let expected_header: [u8; HEADER_LEN] = [
            0x4d, 0x43, 0x02, 0x05, 0xe8, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0,
            0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 0x00, 0x00, 0x01, 0xa2, 0x05, 0xb3, 0xd0, 0x00, 0x00,
            0x01, 0x00, 0x00,
        ];
        assert_eq!(&b[..HEADER_LEN], &expected_header);
        // postcard: enum variant index 1 = Drain.
        assert_eq!(b[HEADER_LEN], 0x01);
        assert_eq!(b.len(), HEADER_LEN + 1 + SIGNATURE_LEN);
        let p = parse(&b).unwrap();
        assert_eq!(p.message, msg);
        assert_eq!(p.packet.sender(), MemberId(2));
        assert_eq!(p.packet.epoch(), 7);
        assert_eq!(p.packet.sequence(), 0x0102_0304_0506_0708);
        assert!(p.packet.verify_signature(&key().verifying_key()));
    }

    #[test]
    fn every_type_round_trips() {
        let msgs = vec![
            Message::Hello(Hello {
                certificate: vec![1, 2, 3],
                weight: 5,
                reply_wanted: true,
            }),
            Message::Heartbeat(Heartbeat {
                weight: 1,
                heard: vec![(1, 20), (3, 40)],
                committed: EpochId {
                    epoch: 4,
                    proposer: 1,
                    incarnation: 0,
                },
                digest: 99,
                load: vec![(0, 10)],
            }),
            Message::Proposal(Proposal {
                id: EpochId {
                    epoch: 5,
                    proposer: 1,
                    incarnation: 0,
                },
                members: vec![(1, 1), (2, 3)],
                owners: vec![0, 1, 1, 1],
                base: EpochId::default(),
                signature: vec![9; 64],
                scope: None,
            }),
            Message::Commit(Commit {
                id: EpochId::default(),
                digest: [7; 32],
            }),
            Message::Forward(Forward {
                to: 3,
                client_addr: 0x0a00_0001,
                client_port: 443,
                payload: vec![0xa5; 100],
            }),
            Message::Forward6(Forward6 {
                to: 3,
                client_addr: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                client_port: 443,
                payload: vec![0x5a; 100],
            }),
            Message::DirectPath(DirectPath {
                addr: 0x0a00_0002,
                port: 4000,
            }),
            Message::DirectPath6(DirectPath6 {
                addr: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                port: 4000,
            }),
            Message::StateQuery(StateQuery {
                query_id: 9,
                subject: StateSubject::Application(b"conn".to_vec()),
            }),
            Message::StateChunk(StateChunk {
                transfer_id: 1,
                offset: 0,
                total: 3,
                data: vec![1, 2, 3],
            }),
            Message::StateAck(StateAck {
                transfer_id: 1,
                next_offset: 3,
            }),
            Message::Nack(Nack {
                refused_sequence: 4,
                reason: NackReason::UnknownTransfer,
            }),
            Message::Request(Request {
                request_id: 1,
                action: RequestAction::Rebalance,
                authority: Some(OperatorAuthority {
                    certificate: vec![1; 125],
                    issued_at: 5,
                    signature: vec![2; 64],
                }),
            }),
            Message::Request(Request {
                request_id: 2,
                action: RequestAction::Move {
                    units: vec![3, 300],
                    to: 2,
                },
                authority: None,
            }),
            Message::Request(Request {
                request_id: 3,
                action: RequestAction::Drain { member: 9 },
                authority: None,
            }),
            Message::Request(Request {
                request_id: 4,
                action: RequestAction::Resume { member: 9 },
                authority: None,
            }),
        ];
        for m in msgs {
            let b = m.encode_signed(&header(), &key()).unwrap();
            let p = parse(&b).unwrap();
            assert_eq!(p.message, m);
            assert!(p.packet.verify_signature(&key().verifying_key()));
        }
    }

    #[test]
    fn refuses_bad_structure() {
        let b = Message::Leave(Leave {
            kind: LeaveKind::Leave,
        })
        .encode_signed(&header(), &key())
        .unwrap();
        for n in 0..b.len() {
            assert!(parse(&b[..n]).is_err(), "prefix of {n} bytes parsed");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(parse(&long).unwrap_err(), ParseError::Malformed);
        let mut v = b.clone();
        v[2] = 1;
        assert_eq!(parse(&v).unwrap_err(), ParseError::UnknownVersion(1));
        let mut t = b.clone();
        t[3] = 0x7f;
        assert_eq!(parse(&t).unwrap_err(), ParseError::UnknownType(0x7f));
        let mut m = b.clone();
        m[0] = 0;
        assert_eq!(parse(&m).unwrap_err(), ParseError::BadMagic);
        assert_eq!(
            parse(&vec![0u8; MAX_DATAGRAM + 1]).unwrap_err(),
            ParseError::Oversized
        );
        let mut forged = b.clone();
        forged[HEADER_LEN] ^= 1; // Leave -> Drain changes the signed bytes
        let p = parse(&forged);
        assert!(p.is_err() || !p.unwrap().packet.verify_signature(&key().verifying_key()));
    }

    #[test]
    fn request_bodies_refuse_unknown_actions_and_trailing_bytes() {
        // postcard: request id 1 (varint), the action's variant index, no authority.
        assert_eq!(
            Message::decode(MessageType::Request, &[1, 0, 0]),
            Ok(Message::Request(Request {
                request_id: 1,
                action: RequestAction::Rebalance,
                authority: None,
            }))
        );
        for bad in [
            &[1u8, 4, 0][..],
            &[1, 0, 0, 0],
            &[1, 0],
            &[1],
            &[],
            &[1, 1, 5, 0],
        ] {
            assert_eq!(
                Message::decode(MessageType::Request, bad),
                Err(ParseError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn epoch_order_prefers_later_then_lower_proposer() {
        let id = |epoch, proposer, incarnation| EpochId {
            epoch,
            proposer,
            incarnation,
        };
        assert!(id(5, 1, 0) > id(5, 3, 9));
        assert!(id(6, 9, 0) > id(5, 1, 0));
        assert!(id(5, 1, 2) > id(5, 1, 1));
    }
}
