//! The health-check executor (SPEC.md §11.9): runs one check when the node says so, within
//! its timeout, on a task of its own, and sends the outcome back to the select loop. Decides
//! nothing but how a probe's result reads: a pass, slow (no answer in time, the wrong HTTP
//! status, a TLS handshake refused) or dead (refused, reset, a failing command). The TLS
//! configuration of `https` checks (`tls`) is built once, at start.

use crate::health::config::url_host;
use crate::health::{CheckSpec, Outcome, Probe};
use std::io;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

pub use tls::tls_connectors;

/// The checks and the channel their outcomes come back on.
pub struct Checker {
    specs: Arc<[CheckSpec]>,
    /// Per check, its TLS client (`https` checks only).
    tls: Arc<[Option<TlsConnector>]>,
    tx: mpsc::UnboundedSender<(usize, Outcome)>,
    pub results: mpsc::UnboundedReceiver<(usize, Outcome)>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `TlsConnector` has no `Debug`.
        f.debug_struct("Checker")
            .field("specs", &self.specs)
            .finish_non_exhaustive()
    }
}

impl Checker {
    /// Reads the CA files of `https` checks (and the system's roots if one needs them): the
    /// error is one line naming the check.
    pub fn new(specs: Vec<CheckSpec>) -> Result<Checker, String> {
        let tls = tls_connectors(&specs)?;
        let (tx, results) = mpsc::unbounded_channel();
        Ok(Checker {
            specs: specs.into(),
            tls: tls.into(),
            tx,
            results,
        })
    }

    /// Runs check `i` on a task; its outcome arrives on `results`.
    pub fn start(&self, i: usize) {
        let Some(spec) = self.specs.get(i).cloned() else {
            return;
        };
        let tls = self.tls.get(i).cloned().flatten();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // The timeout covers the whole run: connect, handshake, request and status line.
            let outcome = match tokio::time::timeout(spec.timeout, probe(&spec.probe, tls)).await {
                Ok(o) => o,
                // The probe's future is dropped: its socket closes, its command is killed.
                Err(_) => {
                    Outcome::Slow(format!("no answer within {} ms", spec.timeout.as_millis()))
                }
            };
            let _ = tx.send((i, outcome));
        });
    }
}

async fn probe(p: &Probe, tls: Option<TlsConnector>) -> Outcome {
    match p {
        Probe::Tcp { addr } => match TcpStream::connect(addr.as_str()).await {
            Ok(_) => Outcome::Pass,
            Err(e) => connect_failed(&e),
        },
        Probe::Http {
            host,
            port,
            path,
            expect_status,
        } => http(host, *port, path, *expect_status).await,
        Probe::Https {
            host,
            port,
            path,
            expect_status,
            ..
        } => match tls {
            Some(tls) => https(&tls, host, *port, path, *expect_status).await,
            None => Outcome::Dead("no TLS configuration for this check".into()),
        },
        Probe::Command { argv } => command(argv).await,
    }
}

fn connect_failed(e: &io::Error) -> Outcome {
    Outcome::Dead(format!("connect: {e}"))
}

/// `GET path HTTP/1.1` with `Host` and `Connection: close`; the status line decides.
async fn http(host: &str, port: u16, path: &str, expect: u16) -> Outcome {
    match TcpStream::connect((host, port)).await {
        Ok(s) => get(s, host, port, 80, path, expect).await,
        Err(e) => connect_failed(&e),
    }
}

/// The same GET after a TLS handshake for the name `host`. A handshake rustls refuses (the
/// certificate not verified, an alert, not TLS at all) is slow: something answers, but not as
/// the service should; a connection closed or reset during it is dead.
async fn https(tls: &TlsConnector, host: &str, port: u16, path: &str, expect: u16) -> Outcome {
    let tcp = match TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => return connect_failed(&e),
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(host.to_owned()) else {
        // The configuration checked it.
        return Outcome::Dead(format!("{host:?} is not a TLS server name"));
    };
    match tls.connect(name, tcp).await {
        Ok(s) => get(s, host, port, 443, path, expect).await,
        Err(e) => handshake_failed(&e),
    }
}

fn handshake_failed(e: &io::Error) -> Outcome {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(refused) => Outcome::Slow(format!("TLS handshake: {refused}")),
        None => Outcome::Dead(format!("TLS handshake: {e}")),
    }
}

async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    port: u16,
    default_port: u16,
    path: &str,
    expect: u16,
) -> Outcome {
    let host_header = if port == default_port {
        url_host(host)
    } else {
        format!("{}:{port}", url_host(host))
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: manycast-server health check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = s.write_all(request.as_bytes()).await {
        return Outcome::Dead(format!("sending the request: {e}"));
    }
    // The status line fits in the first read or a few; at most 1 KiB is read.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) => return Outcome::Dead(format!("reading the answer: {e}")),
        }
    }
    match status_code(&buf) {
        Some(code) if code == expect => Outcome::Pass,
        Some(code) => Outcome::Slow(format!("HTTP status {code}, expected {expect}")),
        None if buf.is_empty() => Outcome::Dead("connection closed without an answer".into()),
        None => Outcome::Slow("not an HTTP status line".into()),
    }
}

/// The status code of an `HTTP/1.x NNN ...` status line.
fn status_code(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// Runs `argv` (no shell, no input, output discarded); killed when the timeout drops it.
async fn command(argv: &[String]) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::Dead("empty command".into());
    };
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(s) if s.success() => Outcome::Pass,
        Ok(s) => Outcome::Dead(format!("{program}: {s}")),
        Err(e) => Outcome::Dead(format!("{program}: {e}")),
    }
}

mod tls;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nServer: x\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 200"), Some(200));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20000 OK\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    /// Regression: `http://[::1]:port/` was connected to as the name `[::1]` (a failed lookup,
    /// a dead check) and `http://[::1]/` refused as not host:port.
    #[test]
    fn http_checks_reach_an_ipv6_literal() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                let (mut c, _) = l.accept().await.unwrap();
                let mut req = [0u8; 512];
                let n = c.read(&mut req).await.unwrap();
                let req = String::from_utf8_lossy(&req[..n]).into_owned();
                c.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
                req
            });
            let config = crate::health::HealthCheckConfig {
                name: None,
                kind: crate::health::CheckKind::Http,
                target: crate::health::config::Target::Text(format!("http://[::1]:{port}/h")),
                expect_status: None,
                ca: None,
                danger_skip_verify: false,
                interval_ms: 2_000,
                timeout_ms: 1_000,
                rise: 1,
                fall: 1,
            };
            let spec = crate::health::config::specs(&[config]).unwrap().remove(0);
            assert_eq!(spec.target(), format!("http://[::1]:{port}/h"));
            assert_eq!(probe(&spec.probe, None).await, Outcome::Pass);
            let req = server.await.unwrap();
            assert!(
                req.contains(&format!("\r\nHost: [::1]:{port}\r\n")),
                "{req}"
            );
        });
    }

    #[test]
    fn probes_against_a_local_listener_and_commands() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 503 Busy\r\n\r\n"] {
                    let (mut c, _) = l.accept().await.unwrap();
                    let mut req = [0u8; 512];
                    let n = c.read(&mut req).await.unwrap();
                    let req = String::from_utf8_lossy(&req[..n]).into_owned();
                    assert!(
                        req.starts_with("GET /h HTTP/1.1\r\nHost: 127.0.0.1:"),
                        "{req}"
                    );
                    c.write_all(answer.as_bytes()).await.unwrap();
                }
            });
            let get = || http("127.0.0.1", port, "/h", 200);
            assert_eq!(get().await, Outcome::Pass);
            assert!(matches!(get().await, Outcome::Slow(w) if w.contains("503")));
            server.await.unwrap();
            // Nothing listens now: refused, dead.
            assert!(matches!(get().await, Outcome::Dead(_)));
            let tcp = Probe::Tcp {
                addr: format!("127.0.0.1:{port}"),
            };
            assert!(matches!(probe(&tcp, None).await, Outcome::Dead(_)));
            let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            assert_eq!(command(&argv(&["true"])).await, Outcome::Pass);
            assert!(matches!(command(&argv(&["false"])).await, Outcome::Dead(_)));
            assert!(matches!(
                command(&argv(&["/nonexistent/x"])).await,
                Outcome::Dead(_)
            ));
        });
    }
}
