//! The one way the daemons run kernel-facing commands (`nft -f -`, `ip route ...`): a failure
//! names the command and carries its stderr as one line, so the operator sees what the kernel
//! refused.

use std::io::Write;
use std::process::{Command, Stdio};

/// A command that could not be started or exited non-zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{program} {args}: {message}")]
pub struct CommandError {
    pub program: String,
    /// The arguments, joined by spaces.
    pub args: String,
    /// Why: the spawn error, or the command's stderr on one line.
    pub message: String,
}

impl CommandError {
    fn new(program: &str, args: &[&str], message: impl Into<String>) -> Self {
        CommandError {
            program: program.to_owned(),
            args: args.join(" "),
            message: message.into(),
        }
    }
}

/// Runs `program args`, feeding it `stdin` when given; stdout is discarded.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), CommandError> {
    output_with_input(program, args, stdin).map(drop)
}

/// Runs `program args` and returns its stdout.
pub fn output(program: &str, args: &[&str]) -> Result<String, CommandError> {
    output_with_input(program, args, None)
}

fn output_with_input(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CommandError> {
    let fail = |message: String| CommandError::new(program, args, message);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Dropping the pipe at the end of this block closes it, so the command sees EOF.
        pipe.write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim().replace('\n', "; ");
        Err(fail(if stderr.is_empty() {
            out.status.to_string()
        } else {
            stderr
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_stdin_and_returns_stdout() {
        assert_eq!(output("echo", &["hello"]).as_deref(), Ok("hello\n"));
        assert_eq!(
            run("sh", &["-c", "read x; test \"$x\" = ok"], Some("ok\n")),
            Ok(())
        );
    }

    #[test]
    fn a_failure_names_the_command_and_its_stderr_on_one_line() {
        let e = run("sh", &["-c", "echo one >&2; echo two >&2; exit 3"], None).unwrap_err();
        assert_eq!(e.program, "sh");
        assert_eq!(e.message, "one; two");
        let e = run("/nonexistent/program", &["x"], None).unwrap_err();
        assert!(e.message.starts_with("cannot run"), "{e}");
        let e = run("false", &[], None).unwrap_err();
        assert!(e.message.contains("exit status: 1"), "{e}");
    }
}
