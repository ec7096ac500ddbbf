//! # control-channel
//!
//! Manycast's authenticated control-group protocol (patent WO 99/30460 claims 7-12, Fig 13-15):
//! signed, sequence-numbered messages on a multicast group; membership and failure detection;
//! allocation epochs used as fencing tokens; forwarding, direct paths and chunked state transfer.
//!
//! [`endpoint::Endpoint`] is the sans-IO core: it never opens a socket and never reads a clock;
//! it is given a [`Clock`] (monotonic time for every timer, wall time only for signed timestamps).
//! [`driver`] runs it over UDP multicast with tokio; `sim` (feature `sim`, for tests and
//! benchmarks) runs many of them in a deterministic simulated network. The normative
//! description is SPEC.md §9.

pub mod driver;
pub mod endpoint;
pub mod replay;
#[cfg(feature = "sim")]
pub mod sim;
pub mod time;
pub mod wire;

pub use endpoint::{
    cluster_id6, CommittedAllocation, Config, Counters, Destination, DropReason, Endpoint, Event,
    Identity, RequestOutcome, RequestRefusal, ScopeError, SendError, Transmit,
};
pub use time::{Clock, Instant};
pub use wire::{EpochId, Scope};
