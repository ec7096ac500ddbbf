//! Helpers shared by these tests and this package's benchmarks (which include them by `#[path]`).

pub mod frr;
pub mod insider;
pub mod keystore_daemon;
pub mod redundant_lab;
pub mod vip_member;
