//! The admin side of the daemon (SPEC.md §11.8): the line protocol `manycastctl` speaks
//! ([`protocol`], plain data shared with the tool), the status built from the control
//! endpoint ([`status`]), what the daemon feeds in ([`hub`]), what each request does
//! ([`requests`], decided without I/O) and the socket and metrics tasks that run it
//! ([`server`]). Moves, drains and rebalances become control-channel requests (SPEC.md §9.4,
//! "Requests"); the answer comes when the cluster has committed the result, or says why not.

pub mod hub;
pub mod protocol;
pub mod requests;
pub mod server;
pub mod status;
