//! # manycast-server
//!
//! The server daemon and the admin tool `manycastctl` (issue 6). The decisions are sans-IO:
//! [`node`] is one member's state machine (it owns the reference UDP [`service`] with local
//! slice filtering and the reallocation strategies for IPv4 and IPv6 clients, the
//! [`join_agent`] that decides when the signed joins go, the per-unit [`load`] meter, drain
//! sequencing and VIP forward's
//! [`vip_forward`] table and claim hold-back, and the [`health`] checks' state machine);
//! [`session_state`] is the moved-session encoding,
//! [`config`] the configuration, [`metrics`] the Prometheus text, [`keystore`] the check of our
//! credentials against the dns-keystore, [`admin::protocol`] the admin line protocol and
//! [`admin::requests`] what each admin request does.
//!
//! The I/O: [`daemon`] is the select loop and the executors (sockets, control-channel driver,
//! VIP host, signals); [`credentials`] reads the key files and the keystore at start; [`keys`]
//! the key and certificate files; [`vip`], [`vip6`] (the IPv6 VIP) and [`vip_forwarder`]
//! change the host for VIP mode; [`admin::server`] serves the admin socket and the HTTP
//! metrics.

pub mod admin;
pub mod beaconer;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod health;
pub mod join_agent;
pub mod keys;
pub mod keystore;
pub mod load;
pub mod metrics;
pub mod mld_agent;
pub mod node;
pub mod service;
pub mod session_state;
pub mod site_scope;
pub mod vip;
pub mod vip6;
pub mod vip_forward;
pub mod vip_forwarder;
