//! Finds another workspace package's binary for an integration test. Cargo gives a test
//! `CARGO_BIN_EXE_*` only for its own package, so the binary is looked up beside the test's own
//! profile directory (`target/<profile>/`, which respects `CARGO_TARGET_DIR`). `cargo test
//! --workspace` has built it already; otherwise, or when a file under one of `src_dirs` is newer than it,
//! it is built here once with the test's profile. Included by `#[path]` from each test suite that
//! needs it (there is no shared test crate yet).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The path of `bin` from `package`, whose sources are under `src_dirs`, built if missing or
/// stale.
pub fn workspace_bin(package: &str, bin: &str, src_dirs: &[PathBuf]) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(bin);
    let newest_src = src_dirs.iter().filter_map(|d| newest_mtime(d)).max();
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    if built.is_none() || newest_src > built {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", package, "--bin", bin]);
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

/// The newest modification time of any file under `dir`, recursively.
fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                newest_mtime(&e.path())
            } else {
                meta.modified().ok()
            }
        })
        .max()
}
