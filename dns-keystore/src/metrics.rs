//! The daemon's counters, rendered as Prometheus text through daemon-kit's [`Exposition`].

use daemon_kit::metrics::Exposition;
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
    pub state_write_failures: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Every counter as `keystore_<name>_total` (the prefix and `_total` come from the
    /// exposition).
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &AtomicU64); 9] = [
            ("queries_total", "queries answered", &self.queries),
            ("updates_total", "update requests received", &self.updates),
            (
                "updates_applied_total",
                "updates that changed the zone",
                &self.updates_applied,
            ),
            (
                "updates_refused_total",
                "updates refused by TSIG or RFC 2136 checks",
                &self.updates_refused,
            ),
            (
                "updates_oversized_total",
                "updates with too many records",
                &self.updates_oversized,
            ),
            (
                "updates_bad_record_total",
                "updates whose TXT record does not parse",
                &self.updates_bad_record,
            ),
            (
                "rate_limited_total",
                "requests dropped by the per-source rate limit",
                &self.rate_limited,
            ),
            (
                "zone_signed_total",
                "times the zone was signed",
                &self.zone_signed,
            ),
            (
                "state_write_failures_total",
                "updates answered SERVFAIL because the zone snapshot could not be written",
                &self.state_write_failures,
            ),
        ];
        let mut exposition = Exposition::new("keystore");
        for (name, help, v) in rows {
            exposition.counter(name, help, v.load(Relaxed));
        }
        exposition.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_under_its_name_with_its_value() {
        let m = Metrics::default();
        let counters = [
            ("keystore_queries_total", &m.queries),
            ("keystore_updates_total", &m.updates),
            ("keystore_updates_applied_total", &m.updates_applied),
            ("keystore_updates_refused_total", &m.updates_refused),
            ("keystore_updates_oversized_total", &m.updates_oversized),
            ("keystore_updates_bad_record_total", &m.updates_bad_record),
            ("keystore_rate_limited_total", &m.rate_limited),
            ("keystore_zone_signed_total", &m.zone_signed),
            (
                "keystore_state_write_failures_total",
                &m.state_write_failures,
            ),
        ];
        for (i, (_, counter)) in counters.iter().enumerate() {
            counter.store(i as u64 + 1, Relaxed);
        }
        let text = m.render();
        for (i, (name, _)) in counters.iter().enumerate() {
            assert!(
                text.contains(&format!("# TYPE {name} counter\n{name} {}\n", i + 1)),
                "{name} in\n{text}"
            );
        }
        assert!(text.contains("# HELP keystore_queries_total queries answered"));
    }
}
