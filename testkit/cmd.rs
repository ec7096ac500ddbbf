//! Running external programs (ip, bridge, sysctl, tshark, python) with a deadline, so that a stuck
//! tool fails the test instead of hanging it.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Long enough for scapy's import (about half a second) and tshark's start-up on a busy machine.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `program args…` to completion or until `timeout`, then kills it. Output is collected on
/// helper threads so that a child writing more than a pipe buffer cannot block. Never panics, so
/// that cleanup code running during unwinding can use it.
pub fn run_with_timeout(program: &str, args: &[&str], timeout: Duration) -> Result<Output, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            waited => {
                // Only this child, by its own handle.
                let _ = child.kill();
                let _ = child.wait();
                return Err(match waited {
                    Err(e) => format!("waiting for {program}: {e}"),
                    Ok(_) => format!("{program} {args:?} did not finish within {timeout:?}"),
                });
            }
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs a command that must succeed and returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = run_with_timeout(program, args, DEFAULT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout)
        .unwrap_or_else(|e| panic!("{program} {args:?} printed non-UTF-8: {e}"))
}
