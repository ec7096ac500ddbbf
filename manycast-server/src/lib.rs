//! # manycast-server
//!
//! The server daemon and the admin tool `manycastctl` (issue 6). So far: key and certificate
//! files ([`keys`]) and the admin tool's key commands.

pub mod keys;
