//! Namespaces (copied from igmp-ext's interop harness, prefix `mcv-`) and the router lab.
#![allow(dead_code)]

pub mod cmd;
pub mod netns;
pub mod topo;
