//! Why datagrams are dropped ([`DropReason`], one metrics label each) and the endpoint's
//! [`Counters`]. Plain data; the receive pipeline decides, this only names and counts.

use crate::wire;
use std::collections::BTreeMap;

/// Why a datagram was dropped. Each has a counter; a dropped datagram changes nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    Oversized,
    Truncated,
    BadMagic,
    UnknownVersion,
    UnknownType,
    Malformed,
    WrongCluster,
    OwnMessage,
    Untimely,
    UnknownSender,
    BadCertificate,
    BadSignature,
    Replayed,
    StaleEpoch,
    InvalidProposal,
    /// The sender's certificate is revoked, or its issuer is no longer published.
    Revoked,
    /// An authentic message the sender has no authority for: a proposal from a member that may
    /// not coordinate, an operator request without operator authority (SPEC.md §9.7).
    Unauthorized,
}

impl DropReason {
    pub const ALL: [DropReason; 17] = [
        DropReason::Oversized,
        DropReason::Truncated,
        DropReason::BadMagic,
        DropReason::UnknownVersion,
        DropReason::UnknownType,
        DropReason::Malformed,
        DropReason::WrongCluster,
        DropReason::OwnMessage,
        DropReason::Untimely,
        DropReason::UnknownSender,
        DropReason::BadCertificate,
        DropReason::BadSignature,
        DropReason::Replayed,
        DropReason::StaleEpoch,
        DropReason::InvalidProposal,
        DropReason::Revoked,
        DropReason::Unauthorized,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Truncated => "truncated",
            DropReason::BadMagic => "bad-magic",
            DropReason::UnknownVersion => "unknown-version",
            DropReason::UnknownType => "unknown-type",
            DropReason::Malformed => "malformed",
            DropReason::WrongCluster => "wrong-cluster",
            DropReason::OwnMessage => "own-message",
            DropReason::Untimely => "untimely",
            DropReason::UnknownSender => "unknown-sender",
            DropReason::BadCertificate => "bad-certificate",
            DropReason::BadSignature => "bad-signature",
            DropReason::Replayed => "replayed",
            DropReason::StaleEpoch => "stale-epoch",
            DropReason::InvalidProposal => "invalid-proposal",
            DropReason::Revoked => "revoked",
            DropReason::Unauthorized => "unauthorized",
        }
    }
}

impl From<wire::ParseError> for DropReason {
    fn from(e: wire::ParseError) -> Self {
        match e {
            wire::ParseError::Oversized => DropReason::Oversized,
            wire::ParseError::Truncated => DropReason::Truncated,
            wire::ParseError::BadMagic => DropReason::BadMagic,
            wire::ParseError::UnknownVersion(_) => DropReason::UnknownVersion,
            wire::ParseError::UnknownType(_) => DropReason::UnknownType,
            wire::ParseError::Malformed => DropReason::Malformed,
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub dropped: BTreeMap<DropReason, u64>,
    pub accepted: u64,
    pub sent: u64,
    /// Times this member found that most of its peers refuse its messages as untimely (its
    /// wall clock is off theirs by more than the timeliness window).
    pub clock_untimely: u64,
    /// Messages not sent because they do not fit one datagram ([`super::Event::Unsendable`]).
    pub unsendable: u64,
}

impl Counters {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}
