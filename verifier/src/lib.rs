//! # manycast-verifier
//!
//! The router-side join verifier (issue 5): the IGMPv3 router on the configured interfaces, every
//! report through the `igmp-ext` pipeline, and client traffic steered in the kernel — the
//! multicast routing socket in native mode, nftables marks and policy routing in VIP and pin
//! modes. No client packet passes through this process.
//!
//! Sans-IO modules (`querier`, `steering`, `vip`, `ratelimit`, `config`, `status`) hold the logic
//! and their tests; `sys` and `daemon` own sockets, processes, the clock and signals.

pub mod config;
pub mod daemon;
pub mod keyfile;
pub mod netdev;
pub mod querier;
pub mod ratelimit;
pub mod status;
pub mod steering;
pub mod sys;
pub mod vip;
