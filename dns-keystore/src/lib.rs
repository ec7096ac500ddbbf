//! dns-keystore: the DNSSEC-signed DNS server that publishes Manycast group records and keys
//! (issue 3), and the client side the router's verifier uses to look them up.
//!
//! Layering: [`record`], [`cert_record`] and [`names`] are sans-IO (text and names in, checked values out);
//! [`validate`] checks DNSSEC answers given `now`; [`client`] and [`server`] own sockets.
//! [`snapshot`] is the zone's on-disk format and its one writer; [`zone`] owns the served zone
//! and makes each update atomic and durable before it is answered (SPEC.md §8.8). [`retry`] is
//! the client's sans-IO retry schedule and rate limit (SPEC.md §8.5).

#[cfg(feature = "daemon")]
pub mod admin;
pub mod cert_record;
#[cfg(feature = "daemon")]
pub mod client;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod marks;
#[cfg(feature = "daemon")]
pub mod metrics;
pub mod names;
pub mod record;
pub mod retry;
#[cfg(feature = "daemon")]
pub mod server;
#[cfg(feature = "daemon")]
pub mod snapshot;
#[cfg(feature = "daemon")]
pub mod state;
pub mod validate;
#[cfg(feature = "daemon")]
pub mod zone;
