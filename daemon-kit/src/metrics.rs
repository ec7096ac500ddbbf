//! Prometheus text (format 0.0.4) for the daemons' metrics, through `prometheus-client`, and the
//! small HTTP listener that serves it.
//!
//! The daemons keep their counters in plain structs (the sans-IO cores own them and status
//! shows the same numbers), so metrics are a snapshot: each scrape builds an [`Exposition`]
//! from the current values and renders it.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The `Content-Type` of what [`Exposition::render`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Label name/value pairs of one row of a family.
pub type Labels = Vec<(String, String)>;

/// One scrape's metrics, under a common prefix (`manycast_server`, `manycast_verifier`, ...).
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
}

// prometheus-client ends every help text with a period itself.
fn help(text: &str) -> &str {
    text.trim_end_matches('.')
}

// Counters are registered without their `_total`: prometheus-client appends it.
fn counter_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Exposition {
    pub fn new(prefix: &str) -> Self {
        Exposition {
            registry: Registry::with_prefix(prefix),
        }
    }

    /// A counter; `name` may carry its `_total` suffix or not, the output always does.
    pub fn counter(&mut self, name: &str, help_text: &str, value: u64) {
        self.registry.register(
            counter_name(name),
            help(help_text),
            ConstCounter::new(value),
        );
    }

    pub fn gauge(&mut self, name: &str, help_text: &str, value: i64) {
        self.registry
            .register(name, help(help_text), ConstGauge::new(value));
    }

    /// A gauge with a fractional value (a ratio, seconds).
    pub fn gauge_f64(&mut self, name: &str, help_text: &str, value: f64) {
        self.registry
            .register(name, help(help_text), ConstGauge::new(value));
    }

    /// A counter family: one row per label set. A family with no rows is still declared.
    pub fn counter_family(
        &mut self,
        name: &str,
        help_text: &str,
        rows: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let family = Family::<Labels, Counter<u64, AtomicU64>>::default();
        for (labels, value) in rows {
            family.get_or_create(&labels).inc_by(value);
        }
        self.registry
            .register(counter_name(name), help(help_text), family);
    }

    /// A gauge family: one row per label set.
    pub fn gauge_family(
        &mut self,
        name: &str,
        help_text: &str,
        rows: impl IntoIterator<Item = (Labels, i64)>,
    ) {
        let family = Family::<Labels, Gauge>::default();
        for (labels, value) in rows {
            family.get_or_create(&labels).set(value);
        }
        self.registry.register(name, help(help_text), family);
    }

    /// The Prometheus text of everything registered.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and every name was a valid metric name.
        prometheus_text::encode(&mut out, &self.registry)
            .expect("encoding into a String does not fail");
        out
    }
}

/// One label, for [`Exposition::counter_family`] and [`Exposition::gauge_family`].
pub fn label(name: &str, value: impl ToString) -> Labels {
    vec![(name.to_owned(), value.to_string())]
}

/// Serves `render()` as Prometheus text over HTTP/1.0 on `listener`: whatever the request, the
/// answer is the metrics. Each connection gets its own task ([`respond`]).
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
) {
    let render = std::sync::Arc::new(render);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(respond(stream, render()));
    }
}

/// Answers one metrics request with `body`, for a daemon whose metrics are rendered on its own
/// loop: render there, then `tokio::spawn(respond(stream, body))`, so that a slow client never
/// holds the loop. The client gets 2 s in all and at most 8 KiB of request head.
pub async fn respond(mut stream: tokio::net::TcpStream, body: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(2), async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_families_in_prometheus_text() {
        let mut m = Exposition::new("manycast_test");
        m.counter("served_total", "Datagrams answered.", 5);
        m.gauge("member", "This member's id.", 2);
        m.gauge_f64("load_ratio", "Share of the load.", 0.5);
        m.counter_family(
            "dropped_total",
            "Dropped, by reason.",
            [(label("reason", "bad-signature"), 3)],
        );
        m.gauge_family("slices", "Slices per member.", [(label("member", 7), 4)]);
        let text = m.render();
        for want in [
            "# HELP manycast_test_served_total Datagrams answered.\n",
            "# TYPE manycast_test_served_total counter\n",
            "manycast_test_served_total 5\n",
            "# TYPE manycast_test_member gauge\n",
            "manycast_test_member 2\n",
            "manycast_test_load_ratio 0.5\n",
            "manycast_test_dropped_total{reason=\"bad-signature\"} 3\n",
            "manycast_test_slices{member=\"7\"} 4\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains(".."), "{text}");
    }

    #[tokio::test]
    async fn serves_the_text_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_http(listener, || "x_total 1\n".to_owned()));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nx_total 1\n"), "{answer}");
        server.abort();
    }
}
