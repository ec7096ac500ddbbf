//! Shared machinery for the interop tests: namespaces, raw capture, external tools. Some helpers
//! exist for tests other modules add (signed reports through tshark and the bridge), so not every
//! one is used by every build of this binary.
#![allow(dead_code)]

pub mod bridge;
pub mod capture;
#[path = "../../../testkit/cmd.rs"]
pub mod cmd;
pub mod frames;
pub mod mld;
#[path = "../../../testkit/netns.rs"]
pub mod netns;
pub mod pcap;
pub mod scapy;
#[path = "../../../testkit/stale_netns.rs"]
pub mod stale_netns;
pub mod tshark;
