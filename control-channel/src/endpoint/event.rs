//! What the endpoint tells its application: [`Event`]s, and the outcome of an operator request
//! at this member ([`RequestOutcome`], [`RequestRefusal`]). Plain data; no protocol logic.

use crate::wire::{EpochId, MessageType, NackReason, RequestAction};
use core::net::SocketAddr;
use igmp_ext::{MemberId, SliceSet};

/// How often an [`Event::Unsendable`] is repeated for one message type while it lasts.
pub const UNSENDABLE_REPORT_EVERY: core::time::Duration = core::time::Duration::from_secs(10);

/// What the application learns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    MemberUp(MemberId),
    /// Nobody this member can hear has heard `0` within the down timeout.
    MemberDown(MemberId),
    MemberLeft(MemberId),
    /// The keystore revoked this member's key or withdrew the group key that certified it: it
    /// is out of the view at once and everything it sends is refused (`revoked`).
    MemberRevoked(MemberId),
    /// Most of the peers heard recently (at least two) refuse this member's messages as
    /// `untimely`: its wall clock is `offset_ms` off the median of theirs, beyond the timeliness
    /// window. It stays out of their views, and does not coordinate, until its clock is back.
    ClockUntimely {
        offset_ms: i64,
        refused_by: usize,
    },
    /// A message this member had to send does not fit one datagram ([`crate::wire::MAX_DATAGRAM`])
    /// and was not sent: in a flat group of a few hundred members a heartbeat lists more peers
    /// than fit, and a proposal more members, so the group stops working. Reported at most once
    /// per message type every [`UNSENDABLE_REPORT_EVERY`] while it lasts; counted every time.
    Unsendable {
        message: MessageType,
        /// Peers this member knows of when it happened.
        peers: usize,
    },
    /// This member's wall clock is within the timeliness window of most peers' again.
    ClockTimely {
        offset_ms: i64,
    },
    /// The allocation that this member's first commit was made from, fetched from its
    /// proposer: it names the previous owner of each unit (SPEC.md §11.5).
    PreviousAllocation {
        id: EpochId,
        allocation: igmp_ext::Allocation,
    },
    /// A new allocation is in force; `slices` are this member's.
    Committed {
        id: EpochId,
        /// SHA-256 of the proposal: names the allocation.
        digest: [u8; 32],
        slices: SliceSet,
    },
    Forwarded {
        from: MemberId,
        /// An IPv4 client (`Forward`) or an IPv6 one (`Forward6`).
        client: SocketAddr,
        payload: Vec<u8>,
    },
    /// A peer's direct path: IPv4 (`DirectPath`) or IPv6 (`DirectPath6`, a link-local one
    /// with the scope id of the link it was announced on).
    DirectPath {
        member: MemberId,
        addr: SocketAddr,
    },
    StateQueried {
        from: MemberId,
        query_id: u64,
        key: Vec<u8>,
    },
    StateReceived {
        from: MemberId,
        transfer_id: u64,
        data: Vec<u8>,
    },
    TransferComplete {
        to: MemberId,
        transfer_id: u64,
    },
    TransferFailed {
        to: MemberId,
        transfer_id: u64,
    },
    Nacked {
        from: MemberId,
        refused_sequence: u64,
        reason: NackReason,
    },
    /// An operator request (SPEC.md §9.4, "Requests") reached this member, from a peer or
    /// from [`Endpoint::request`](crate::Endpoint::request), and this is what it did about it.
    Request {
        from: MemberId,
        request_id: u64,
        action: RequestAction,
        outcome: RequestOutcome,
    },
}

/// What a member did with an operator request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// This member is the coordinator and proposed (and committed) this epoch.
    Proposed(EpochId),
    /// This member is the coordinator and the allocation would not change.
    Unchanged,
    /// Not the coordinator, or not the member named: nothing to do here.
    NotForMe,
    /// This member drained itself (weight 0).
    Drained,
    /// This member announces its configured weight again.
    Resumed,
    /// The coordinator refused the request; nothing changed.
    Refused(RequestRefusal),
}

/// Why a request was refused (by the coordinator, or by any member for want of authority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestRefusal {
    #[error("no committed allocation yet")]
    NoAllocation,
    #[error("a membership change or an unacknowledged proposal is in progress; try again")]
    Busy,
    #[error("member is not in the committed allocation or owns no units")]
    UnknownMember,
    #[error("unit number out of range or the unit has no owner")]
    BadUnit,
    #[error("the member has fewer other units than it would receive")]
    NotEnoughUnits,
    /// About another member, without a valid operator signature (SPEC.md §9.7).
    #[error("needs an operator's signature and certificate (only a member's own drain and resume do not)")]
    Unauthorized,
}
