//! Namespaces and command helpers are igmp-ext's interop harness itself (one copy, included by
//! path; namespaces are named `mct-<pid>-…` and reaped only when their process is gone, so both
//! test binaries can share the prefix), plus the router lab.
#![allow(dead_code)]

#[path = "../../../testkit/cmd.rs"]
pub mod cmd;
#[path = "../../../testkit/netns.rs"]
pub mod netns;
#[path = "../../../testkit/stale_netns.rs"]
pub mod stale_netns;
pub mod topo;
