//! dns-keystore: the DNSSEC-signed DNS server that publishes Manycast group records and keys
//! (issue 3), and the client side the router's verifier uses to look them up.
//!
//! Layering: [`record`], [`cert_record`] and [`names`] are sans-IO (text and names in, checked values out);
//! [`validate`] checks DNSSEC answers given `now`; [`client`] and [`server`] own sockets.

pub mod admin;
pub mod cert_record;
pub mod client;
pub mod config;
pub mod metrics;
pub mod names;
pub mod record;
pub mod server;
pub mod state;
pub mod validate;
