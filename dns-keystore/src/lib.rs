//! dns-keystore: the DNSSEC-signed DNS server that publishes Manycast group records and keys
//! (issue 3), and the client side the router's verifier uses to look them up.
//!
//! Layering: [`record`], [`cert_record`] and [`names`] are sans-IO (text and names in, checked values out);
//! [`validate`] checks DNSSEC answers given `now`; [`client`] and [`server`] own sockets.

#[cfg(feature = "daemon")]
pub mod admin;
pub mod cert_record;
#[cfg(feature = "daemon")]
pub mod client;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod metrics;
pub mod names;
pub mod record;
#[cfg(feature = "daemon")]
pub mod server;
#[cfg(feature = "daemon")]
pub mod snapshot;
#[cfg(feature = "daemon")]
pub mod state;
pub mod validate;
#[cfg(feature = "daemon")]
pub mod zone;
