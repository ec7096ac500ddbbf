//! What the core reports as it goes: for the daemon's log, and for tests.

use super::PlanKind;
use crate::plan::PlanError;
use crate::querier::Role;
use igmp_ext::{AllocationEpoch, MemberId, Reason, SliceSet, SliceSet6, Timestamp};
use std::net::{Ipv4Addr, Ipv6Addr};

/// What happened, for the daemon's log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Kernel state an earlier verifier left was taken over; kept as is until the grace ends.
    Adopted {
        entries: usize,
        vifs: usize,
    },
    JoinAccepted {
        member: MemberId,
        group: Ipv4Addr,
        epoch: AllocationEpoch,
        slices: SliceSet,
        ifindex: u32,
        /// The join's signed stamp (the member's wall clock when it sent it).
        stamp: Timestamp,
        /// How old that stamp was when the join was accepted (wall clock, ms; negative
        /// when the member's clock is ahead): the network's delay plus the time it waited for
        /// verification.
        age_ms: i64,
    },
    /// A report refused by the verifier.
    Rejected {
        reason: Reason,
        sender: Option<Ipv4Addr>,
        ifindex: u32,
        detail: String,
    },
    /// Claims the keys no longer back were dropped: their member key revoked, or their
    /// certificate's issuer retired.
    ClaimsRevoked {
        group: Option<Ipv4Addr>,
        lost: Vec<(MemberId, SliceSet)>,
    },
    /// Claims not refreshed in time were dropped.
    ClaimsExpired {
        group: Option<Ipv4Addr>,
        lost: Vec<(MemberId, SliceSet)>,
    },
    RoleChanged {
        ifindex: u32,
        role: Role,
    },
    GroupJoined {
        ifindex: u32,
        group: Ipv4Addr,
    },
    GroupExpired {
        ifindex: u32,
        group: Ipv4Addr,
    },
    /// A group's map was written without a claim it cannot express (counted as
    /// `claims_left_out`); everything else in the plan was applied.
    PlanFailed {
        kind: PlanKind,
        group: Ipv4Addr,
        error: PlanError,
    },
    /// A watched member's beacons stopped: its units went to their standbys (SPEC.md §5.5).
    MemberSilent {
        group: Ipv4Addr,
        member: MemberId,
    },
    /// A VIP's route for the routing daemon was announced (`withdrawn` none) or withdrawn,
    /// and why (SPEC.md §10.6).
    Announcement {
        vip: std::net::IpAddr,
        withdrawn: Option<super::Withdrawn>,
    },
    /// Shutdown with `keep_kernel_state`: nothing is withdrawn (announcements are).
    KernelStateKept,
    /// A signed MLDv2 join was accepted (issue 15): `member` now owns `slices` of the IPv6
    /// `group` at `epoch`, reached at its link-local `sender` on `ifindex`.
    MldJoinAccepted {
        member: MemberId,
        group: Ipv6Addr,
        epoch: AllocationEpoch,
        slices: SliceSet6,
        ifindex: u32,
        sender: Ipv6Addr,
    },
    /// An MLD report refused; the detail names the sender.
    MldRejected {
        reason: Reason,
        ifindex: u32,
        detail: String,
    },
    /// IPv6 claims not refreshed in time were dropped.
    MldClaimsExpired {
        group: Option<Ipv6Addr>,
        lost: Vec<(MemberId, SliceSet6)>,
    },
}
