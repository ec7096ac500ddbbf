//! Prometheus text exposition (format 0.0.4) of the daemon's counters, written to a file that a
//! node exporter's textfile collector (or a test) reads. Rendering is pure; only `write_file`
//! touches the disk, and it renames into place so that a reader never sees half a file.

use crate::service::ServiceCounters;
use control_channel::Counters;
use igmp_ext::MemberId;
use std::fmt::Write as _;
use std::path::Path;

/// Everything the daemon reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub member: u32,
    pub service: ServiceCounters,
    pub sessions: usize,
    pub control: Counters,
    pub joins_sent: u64,
    pub queries: u64,
    pub commits: u64,
    pub epoch: u64,
    pub slices: usize,
    /// Addresses covered by this member's slices (2^32 for the whole space).
    pub slice_addresses: u64,
    /// VIP mode, reset strategy: TCP connections of moved clients destroyed, and failed tries.
    pub vip_resets: u64,
    pub vip_reset_failures: u64,
    /// VIP mode, forward strategy: allocation units whose orphan TCP segments go to their old
    /// owner.
    pub vip_forward_units: u64,
    /// Forwarded datagrams that went over a direct path the old owner announced.
    pub forwarded_direct: u64,
    /// A drain is in progress.
    pub draining: bool,
    /// VIP mode, draining: open TCP connections to the VIP the drain still waits for.
    pub drain_connections: u64,
    /// `[keystore]` only: whether our credentials match the published record.
    pub keystore: Option<KeystoreStatus>,
}

/// What the keystore says of our credentials (SPEC.md §11.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeystoreStatus {
    /// The reason they no longer match (`Mismatch::label`), if so.
    pub mismatch: Option<&'static str>,
    /// Refreshes that got no validated answer.
    pub refresh_failures: u64,
    /// No validated answer for TTL + `max_stale` (verifiers fail closed).
    pub stale: bool,
}

impl Snapshot {
    pub fn new(member: MemberId) -> Self {
        Snapshot {
            member: member.0,
            ..Snapshot::default()
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP manycast_server_{name} {help}");
            let _ = writeln!(out, "# TYPE manycast_server_{name} {kind}");
            let _ = writeln!(out, "manycast_server_{name} {value}");
        };
        let s = &self.service;
        metric(
            "member",
            "gauge",
            "This member's id.",
            u64::from(self.member),
        );
        metric("served_total", "counter", "Datagrams answered.", s.served);
        metric(
            "filtered_total",
            "counter",
            "Datagrams from sources outside this member's slices, not answered.",
            s.filtered,
        );
        metric(
            "sessions_refused_total",
            "counter",
            "Datagrams from new clients refused because the session table was full.",
            s.refused_full,
        );
        metric("resets_total", "counter", "Reset replies sent.", s.resets);
        metric(
            "retransmits_total",
            "counter",
            "Requests repeating the last request id, answered with the same number.",
            s.retransmits,
        );
        metric(
            "stale_requests_total",
            "counter",
            "Requests with an id below the session's last one (stale duplicates), not answered.",
            s.stale,
        );
        metric(
            "handed_off_total",
            "counter",
            "Sessions of moved slices sent to their new owner (handoff or forward list).",
            s.handed_off,
        );
        metric(
            "handoff_received_total",
            "counter",
            "Sessions received from an old owner (continued, or listed for forwarding).",
            s.received,
        );
        metric(
            "forwarded_total",
            "counter",
            "Datagrams of moved sessions passed to their old owner.",
            s.forwarded,
        );
        metric(
            "forwarded_direct_total",
            "counter",
            "Of those, datagrams sent over the old owner's direct path.",
            self.forwarded_direct,
        );
        metric(
            "forwarded_served_total",
            "counter",
            "Forwarded datagrams answered by this member as the old owner.",
            s.forwarded_served,
        );
        metric(
            "forward_refused_total",
            "counter",
            "Forwarded datagrams refused (not from the slice's owner or no such session).",
            s.forward_refused,
        );
        metric(
            "held_total",
            "counter",
            "Datagrams held while waiting for an old owner's session state.",
            s.held,
        );
        metric(
            "handoff_timeouts_total",
            "counter",
            "Clients started fresh because the old owner's state did not come in time.",
            s.handoff_timeouts,
        );
        metric(
            "bad_state_total",
            "counter",
            "Session state transfers that could not be decoded.",
            s.bad_state,
        );
        metric(
            "draining",
            "gauge",
            "1 while this member drains.",
            u64::from(self.draining),
        );
        metric(
            "drain_connections",
            "gauge",
            "VIP mode, draining: TCP connections to the VIP the drain still waits for.",
            self.drain_connections,
        );
        metric(
            "sessions",
            "gauge",
            "Client sessions held.",
            self.sessions as u64,
        );
        metric(
            "joins_sent_total",
            "counter",
            "Signed IGMPv3 reports sent.",
            self.joins_sent,
        );
        metric(
            "queries_total",
            "counter",
            "IGMP queries heard.",
            self.queries,
        );
        metric(
            "commits_total",
            "counter",
            "Allocations committed.",
            self.commits,
        );
        metric(
            "epoch",
            "gauge",
            "Epoch of the committed allocation.",
            self.epoch,
        );
        metric(
            "slices",
            "gauge",
            "Slices this member owns.",
            self.slices as u64,
        );
        metric(
            "slice_addresses",
            "gauge",
            "Source addresses covered by this member's slices.",
            self.slice_addresses,
        );
        metric(
            "vip_forward_units",
            "gauge",
            "VIP mode, forward strategy: allocation units whose mid-stream TCP segments go to their old owner.",
            self.vip_forward_units,
        );
        metric(
            "vip_resets_total",
            "counter",
            "VIP mode, reset strategy: TCP connections of moved clients destroyed (sock_diag).",
            self.vip_resets,
        );
        metric(
            "vip_reset_failures_total",
            "counter",
            "VIP mode, reset strategy: SOCK_DESTROY requests that failed.",
            self.vip_reset_failures,
        );
        if let Some(k) = &self.keystore {
            metric(
                "keystore_ok",
                "gauge",
                "1 while the keystore's validated record backs our certificate and key, else 0.",
                u64::from(k.mismatch.is_none()),
            );
            metric(
                "keystore_refresh_failures_total",
                "counter",
                "Keystore refreshes without a validated answer.",
                k.refresh_failures,
            );
            metric(
                "keystore_stale",
                "gauge",
                "1 when no validated keystore answer came for TTL + max_stale (verifiers fail closed).",
                u64::from(k.stale),
            );
        }
        metric(
            "control_accepted_total",
            "counter",
            "Control messages accepted.",
            self.control.accepted,
        );
        metric(
            "control_sent_total",
            "counter",
            "Control messages sent.",
            self.control.sent,
        );
        let _ = writeln!(
            out,
            "# HELP manycast_server_control_dropped_total Control messages dropped, by reason."
        );
        let _ = writeln!(out, "# TYPE manycast_server_control_dropped_total counter");
        for (reason, n) in &self.control.dropped {
            let _ = writeln!(
                out,
                "manycast_server_control_dropped_total{{reason=\"{}\"}} {n}",
                reason.as_str()
            );
        }
        if let Some(reason) = self.keystore.as_ref().and_then(|k| k.mismatch) {
            let _ = writeln!(
                out,
                "# HELP manycast_server_keystore_mismatch Why our credentials no longer match the keystore."
            );
            let _ = writeln!(out, "# TYPE manycast_server_keystore_mismatch gauge");
            let _ = writeln!(
                out,
                "manycast_server_keystore_mismatch{{reason=\"{reason}\"}} 1"
            );
        }
        out
    }
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Serves `render()` as Prometheus text to every HTTP request on `listener`, whatever its path
/// (as the verifier does): reads the request head, answers, closes.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let render = std::sync::Arc::new(render);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let limit = std::time::Duration::from_secs(2);
            let _ = tokio::time::timeout(limit, async move {
                // Read until the end of the request head (or 8 KiB); the request is not
                // interpreted further.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = render();
                let response = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_once_with_values() {
        let mut s = Snapshot::new(MemberId(2));
        s.service.served = 5;
        s.service.filtered = 7;
        s.slice_addresses = 1 << 31;
        s.vip_resets = 4;
        s.control
            .dropped
            .insert(control_channel::DropReason::BadSignature, 3);
        let text = s.render();
        assert!(text.contains("manycast_server_member 2\n"));
        assert!(text.contains("manycast_server_served_total 5\n"));
        assert!(text.contains("manycast_server_filtered_total 7\n"));
        assert!(text.contains("manycast_server_slice_addresses 2147483648\n"));
        assert!(text.contains("manycast_server_vip_resets_total 4\n"));
        assert!(text.contains("manycast_server_vip_reset_failures_total 0\n"));
        assert!(
            text.contains("manycast_server_control_dropped_total{reason=\"bad-signature\"} 3\n")
        );
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert_eq!(text.matches(line).count(), 1, "{line}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.prom");
        write_file(&p, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }
}
