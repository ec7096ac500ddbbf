//! The daemon's counters, rendered as Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Every counter the keystore keeps; each refusal has its own.
#[derive(Debug, Default)]
pub struct Metrics {
    pub queries: AtomicU64,
    pub updates: AtomicU64,
    pub updates_applied: AtomicU64,
    pub updates_refused: AtomicU64,
    pub updates_oversized: AtomicU64,
    pub updates_bad_record: AtomicU64,
    pub rate_limited: AtomicU64,
    pub zone_signed: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let rows: [(&str, &str, &AtomicU64); 8] = [
            ("keystore_queries_total", "queries answered", &self.queries),
            (
                "keystore_updates_total",
                "update requests received",
                &self.updates,
            ),
            (
                "keystore_updates_applied_total",
                "updates that changed the zone",
                &self.updates_applied,
            ),
            (
                "keystore_updates_refused_total",
                "updates refused by TSIG or RFC 2136 checks",
                &self.updates_refused,
            ),
            (
                "keystore_updates_oversized_total",
                "updates with too many records",
                &self.updates_oversized,
            ),
            (
                "keystore_updates_bad_record_total",
                "updates whose TXT record does not parse",
                &self.updates_bad_record,
            ),
            (
                "keystore_rate_limited_total",
                "requests dropped by the per-source rate limit",
                &self.rate_limited,
            ),
            (
                "keystore_zone_signed_total",
                "times the zone was signed",
                &self.zone_signed,
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Relaxed)
            ));
        }
        out
    }
}
