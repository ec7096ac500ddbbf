//! # igmp-ext
//!
//! The IGMPv3 wire format (RFC 3376 / RFC 9776) and Manycast's signed slice extension, carried as
//! RFC 9279 TLVs after the last group record; the MLDv2 wire format (RFC 3810) with the IPv6 and
//! Hop-by-Hop headers it needs (`wire::mld`, `wire::ipv6`) and the same signed join over MLDv2
//! (`mld_join`, checked per datagram by `verify6`); slices of the IPv4 and IPv6 client address
//! spaces and their allocation; and the join verification pipeline that routers run (patent
//! WO 99/30460 Fig 6).
//!
//! This crate never opens a socket and never reads a clock: callers pass bytes and `now` in.
//! Untrusted bytes enter only through `new_checked` views; a parsed join is unverified until
//! [`verify::JoinVerifier`] turns it into a [`verify::VerifiedJoin`].

pub mod alloc;
pub mod cert;
/// Fixed-seed keys and joins for tests: not compiled into the daemons (feature `fixtures`).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod join;
pub mod liveness;
pub mod mld_join;
pub mod mld_verifier;
pub mod operator;
pub mod ownership;
pub mod replay;
pub mod scope;
pub mod signature;
pub mod slice;
pub mod time;
pub mod verify;
pub mod verify6;
pub mod wire;

pub use alloc::{Allocation, Slicing};
pub use cert::{
    CertificateBody, KeyId, MemberCertificate, MemberId, SiteId, UnverifiedBody,
    UnverifiedCertificate,
};
/// Re-exported so that callers name the same key types this crate checks signatures with.
pub use ed25519_dalek;
pub use join::{AllocationEpoch, JoinClaims, SliceEntry, SliceEntry6, UnverifiedJoin};
pub use mld_join::{JoinClaims6, UnverifiedMldJoin};
pub use slice::{Slice, Slice6, SliceSet, SliceSet6};
pub use time::{Clock, Instant, Timestamp};
pub use verify::{
    Accepted, GroupKeys, JoinVerifier, KeySource, Reason, Rejection, VerifiedJoin, VerifierConfig,
};
