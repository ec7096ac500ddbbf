//! # manycast-server
//!
//! The server daemon and the admin tool `manycastctl` (issue 6): key and certificate files
//! ([`keys`]), the daemon's configuration ([`config`]), the sans-IO [`join_agent`] that decides
//! when a member sends its signed joins, the sans-IO reference UDP [`service`] with local slice
//! filtering and the reallocation strategies (its moved-session encoding in
//! [`session_state`]), Prometheus [`metrics`], and the I/O shell [`daemon`] that wires them to the control
//! channel, a raw IGMP socket and the service socket; [`vip`] holds VIP mode's host changes and
//! the reset of moved TCP connections; per-unit [`load`] for load-aware rebalancing, and the
//! [`admin`] socket that `manycastctl` talks to; [`keystore`] checks the member's credentials
//! against the dns-keystore.

pub mod admin;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod join_agent;
pub mod keys;
pub mod keystore;
pub mod load;
pub mod metrics;
pub mod node;
pub mod service;
pub mod session_state;
pub mod vip;
pub mod vip_forward;
pub mod vip_forwarder;
