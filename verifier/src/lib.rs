//! # manycast-verifier
//!
//! The router-side join verifier (issue 5): the IGMPv3 router on the configured interfaces, every
//! report through the `igmp-ext` pipeline, and client traffic steered in the kernel — MFC entries
//! or an nftables netdev table in native mode, nftables marks and policy routing in VIP and pin
//! modes. No client packet passes through this process.
//!
//! `core` is the sans-IO router (verifier, querier, admission to verification through
//! `admission`, data-plane planning through `plan`), tested without a network; `sys` is the only
//! code that touches the kernel; `daemon` owns the sockets, the clock and the signals and
//! connects the two.

pub mod admission;
pub mod config;
pub mod core;
pub mod daemon;
pub mod keyfile;
pub mod keys;
pub mod plan;
pub mod querier;
pub mod rejection_log;
pub mod status;
pub mod sys;
