//! End-to-end tests of the assembled system live here (see `tests/README.md`).

pub mod cluster_bench;
