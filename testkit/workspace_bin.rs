//! Finds another workspace package's binary for an integration test. Cargo gives a test
//! `CARGO_BIN_EXE_*` only for its own package, so the binary is looked up beside the test's own
//! profile directory (`target/<profile>/`, which respects `CARGO_TARGET_DIR`), after `cargo
//! build` of it with the test's profile, once per test process: cargo knows what the binary
//! depends on (a list of source directories kept by hand here went stale and ran old daemons),
//! and when it is fresh the build is a no-op. Included by `#[path]` from each test suite that
//! needs it (there is no shared test crate yet).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The path of `bin` from `package`, built first if cargo finds it missing or stale.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(bin);
    // Held across the build: tests running in parallel build each binary once, one at a time.
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built
        .get_or_insert_with(HashSet::new)
        .insert(bin.to_owned())
    {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "-p", package, "--bin", bin]);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {bin} failed"
        );
    }
    path
}
