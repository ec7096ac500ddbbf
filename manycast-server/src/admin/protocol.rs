//! The admin protocol (SPEC.md §11.8): one JSON object per line each way over the admin
//! socket. Requests, answers, the status and the `watch` lines. Plain data shared by the
//! daemon and `manycastctl`; nothing here touches a socket or the control channel.

pub use crate::health::{CheckStatus, Exit, HealthReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum AdminRequest {
    // Empty braces rather than unit variants: serde's deny_unknown_fields then refuses extra
    // keys on these too.
    Status {},
    /// Give `units` to member `to` (a swap within quotas).
    Move {
        units: Vec<u16>,
        to: u32,
    },
    /// Drain `member` (default: this daemon's member).
    Drain {
        #[serde(default)]
        member: Option<u32>,
    },
    /// Undo a drain of `member` (default: this daemon's member).
    Resume {
        #[serde(default)]
        member: Option<u32>,
    },
    /// Swap units between members to lower max/mean load.
    Rebalance {},
    /// Stream a status frame every second and every event as it happens.
    Watch {},
    /// `request` (move, rebalance, or drain/resume of another member) with an operator's
    /// certificate and signature over the control request it becomes (SPEC.md §9.7); made by
    /// `manycastctl --operator-key/--operator-cert`.
    Authorized {
        authority: control_channel::wire::OperatorAuthority,
        request: Box<AdminRequest>,
    },
}

/// One answer line (`watch` streams [`WatchLine`]s instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The epoch in force after an action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Answer {
    /// A refusal, with the reason.
    pub fn error(e: impl Into<String>) -> Self {
        Answer {
            ok: false,
            error: Some(e.into()),
            ..Answer::default()
        }
    }

    /// An action done, in force at `epoch`.
    pub fn done(message: String, epoch: Option<u64>) -> Self {
        Answer {
            ok: true,
            message: Some(message),
            epoch,
            ..Answer::default()
        }
    }
}

/// A line of a `watch` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchLine {
    Status(Box<Status>),
    Event(AdminEvent),
}

/// Something that happened at this member, for `watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminEvent {
    pub at_ms: u64,
    /// member-up, member-down, member-left, committed, request, clock-untimely, clock-timely.
    pub kind: String,
    pub text: String,
}

/// The cluster as this member sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub me: u32,
    /// This member's start time (ms), the incarnation in its epoch ids.
    pub incarnation: u64,
    pub epoch: Option<EpochStatus>,
    /// Low-order bits cutting the space into units.
    pub slice_bits: u8,
    pub members: Vec<MemberStatus>,
    /// Owner of each unit (member id), by unit number.
    pub unit_owner: Vec<Option<u32>>,
    /// Datagrams answered per unit in the load window, as the members report it.
    pub unit_load: Vec<u64>,
    /// Max over mean of the members' load per weight (1.0 = even); none without load.
    pub load_imbalance: Option<f64>,
    pub counters: CounterStatus,
    /// Most of this member's peers refuse its control messages as untimely: its wall clock is
    /// off theirs by more than the timeliness window (SPEC.md §9.3, "Clocks").
    #[serde(default)]
    pub clock_untimely: bool,
    /// This member's health checks (SPEC.md §11.9); peers' health is not carried by the
    /// control channel (a peer held out by its checks shows as weight 0).
    #[serde(default)]
    pub health: HealthReport,
    /// The IPv6 group the cluster serves (`group6`); absent without it and from older daemons.
    /// Unit i then also serves the IPv6 sources of site unit i (SPEC.md §6.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group6: Option<String>,
}

impl Status {
    /// The committed epoch, 0 before the first commit.
    pub fn epoch_number(&self) -> u64 {
        self.epoch.as_ref().map_or(0, |e| e.epoch)
    }

    /// Units `member` owns in the committed allocation.
    pub fn units_of(&self, member: u32) -> usize {
        self.unit_owner
            .iter()
            .filter(|o| **o == Some(member))
            .count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStatus {
    pub epoch: u64,
    pub proposer: u32,
    pub incarnation: u64,
    /// First 8 bytes of the allocation's digest, hex.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u32,
    pub me: bool,
    /// Live in this member's view (always true for itself unless it left).
    pub live: bool,
    /// The weight it last announced.
    pub weight: Option<u32>,
    /// The weight the committed allocation gave it; none if it is not in the allocation.
    pub allocation_weight: Option<u32>,
    /// The epoch it advertises as committed.
    pub committed_epoch: Option<u64>,
    /// When it started (ms since the Unix epoch), as its sequence numbers tell.
    pub incarnation: Option<u64>,
    pub units: usize,
    pub slices: Vec<String>,
    pub load: u64,
    /// Its wall clock minus this member's (ms), from its last authentic control message; for
    /// this member itself, its clock minus the median of its peers'. None if not heard lately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// With `group6`: the IPv6 counterparts of its units (the /56 site slicing, SPEC.md §6.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slices6: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CounterStatus {
    pub served: u64,
    pub filtered: u64,
    pub resets: u64,
    pub sessions: u64,
    pub joins_sent: u64,
    /// Signed MLDv2 joins sent for `group6`; absent from older daemons' status.
    #[serde(default)]
    pub mld_joins_sent: u64,
    /// The IPv6 service's counts (`group6`, SPEC.md §11.3); absent from older daemons' status.
    #[serde(default)]
    pub served6: u64,
    #[serde(default)]
    pub filtered6: u64,
    #[serde(default)]
    pub resets6: u64,
    #[serde(default)]
    pub sessions6: u64,
    pub commits: u64,
    pub control_accepted: u64,
    pub control_sent: u64,
    pub control_dropped: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_and_bad_ones_are_refused() {
        let ok = [
            (r#"{"cmd":"status"}"#, AdminRequest::Status {}),
            (r#"{"cmd":"rebalance"}"#, AdminRequest::Rebalance {}),
            (r#"{"cmd":"watch"}"#, AdminRequest::Watch {}),
            (
                r#"{"cmd":"move","units":[1,2],"to":3}"#,
                AdminRequest::Move {
                    units: vec![1, 2],
                    to: 3,
                },
            ),
            (r#"{"cmd":"drain"}"#, AdminRequest::Drain { member: None }),
            (
                r#"{"cmd":"resume","member":2}"#,
                AdminRequest::Resume { member: Some(2) },
            ),
        ];
        for (line, want) in ok {
            assert_eq!(serde_json::from_str::<AdminRequest>(line).unwrap(), want);
            // And the client's encoding is what the server reads.
            let back = serde_json::to_string(&want).unwrap();
            assert_eq!(serde_json::from_str::<AdminRequest>(&back).unwrap(), want);
        }
        for bad in [
            "",
            "{}",
            r#"{"cmd":"explode"}"#,
            r#"{"cmd":"move","units":[70000],"to":1}"#,
            r#"{"cmd":"move","units":[1]}"#,
            r#"{"cmd":"status","extra":1}"#,
            r#"{"cmd":"drain","member":-1}"#,
            "[1,2,3]",
        ] {
            assert!(serde_json::from_str::<AdminRequest>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_leave_out_what_they_do_not_carry() {
        let line = serde_json::to_string(&Answer::done("moved".into(), Some(7))).unwrap();
        assert_eq!(line, r#"{"ok":true,"message":"moved","epoch":7}"#);
        let line = serde_json::to_string(&Answer::error("no")).unwrap();
        assert_eq!(line, r#"{"ok":false,"error":"no"}"#);
    }
}
