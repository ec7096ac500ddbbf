//! Key and certificate files: shared with the verifier's site agent (its router key and
//! certificate are in the same formats), so they live in daemon-kit.

pub use daemon_kit::keys::*;
