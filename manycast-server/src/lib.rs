//! # manycast-server
//!
//! The server daemon and the admin tool `manycastctl` (issue 6). So far: key and certificate
//! files ([`keys`]), the admin tool's key commands, and the sans-IO [`join_agent`] that decides
//! when a member sends its signed joins.

pub mod join_agent;
pub mod keys;
