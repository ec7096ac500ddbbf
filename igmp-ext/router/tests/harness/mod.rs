//! Namespaces and command helpers are igmp-ext's interop harness itself (one copy, included by
//! path; namespaces are named `mct-<pid>-…` and reaped only when their process is gone, so both
//! test binaries can share the prefix), plus the router lab.
#![allow(dead_code)]

#[path = "../../../tests/harness/cmd.rs"]
pub mod cmd;
#[path = "../../../tests/harness/netns.rs"]
pub mod netns;
pub mod topo;
