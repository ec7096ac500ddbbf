//! `--status`, `--metrics`: the client side of the status socket.

use std::path::{Path, PathBuf};

/// Why `--status` or `--metrics` got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error("cannot reach the verifier at {}: {source}", socket.display())]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("status request: {0}")]
    Request(std::io::Error),
    #[error("status reply: {0}")]
    Reply(std::io::Error),
}

/// `--status`, `--metrics`: asks a running verifier over its unix socket.
pub fn query_status(socket: &Path, what: &str) -> Result<String, QueryError> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|source| {
        QueryError::Unreachable {
            socket: socket.to_owned(),
            source,
        }
    })?;
    s.write_all(format!("{what}\n").as_bytes())
        .map_err(QueryError::Request)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(QueryError::Reply)?;
    Ok(out)
}
