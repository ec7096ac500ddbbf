//! Plumbing that every Manycast daemon needs and no sans-IO library may have: reading the
//! clock, loading a TOML config file, key and certificate files, the raw IGMP socket joins go out on, logging, running the kernel-facing commands (`nft`, `ip`), and
//! serving Prometheus text. Nothing here makes a protocol decision.

pub mod clock;
pub mod command;
pub mod config;
pub mod igmp;
pub mod keys;
pub mod logging;
pub mod metrics;

pub use clock::{now, wall_clock};
pub use command::CommandError;
pub use config::ConfigError;
