//! IGMP flood control, sans-IO: token buckets per interface and per source address, checked
//! before any verification work. The per-source table is bounded so that a flood from spoofed
//! addresses cannot grow it without limit.

use igmp_ext::Timestamp;
use std::collections::HashMap;
use std::net::Ipv4Addr;

const MAX_SOURCES: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

impl Bucket {
    fn full(rate: u32, now: Timestamp) -> Self {
        Bucket {
            tokens: f64::from(rate),
            at: now,
        }
    }

    /// Refills at `rate` per second up to one second's worth, then takes one token if there is.
    fn take(&mut self, rate: u32, now: Timestamp) -> bool {
        let elapsed = now.as_millis().saturating_sub(self.at.as_millis()) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Which limit refused a datagram (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Interface,
    Source,
}

impl Limited {
    pub fn as_str(self) -> &'static str {
        match self {
            Limited::Interface => "interface",
            Limited::Source => "source",
        }
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    per_interface: u32,
    per_source: u32,
    interfaces: HashMap<u32, Bucket>,
    sources: HashMap<Ipv4Addr, Bucket>,
}

impl RateLimiter {
    pub fn new(per_interface: u32, per_source: u32) -> Self {
        RateLimiter {
            per_interface,
            per_source,
            interfaces: HashMap::new(),
            sources: HashMap::new(),
        }
    }

    /// Admits or refuses one datagram from `source` on `ifindex`. The source is charged first so
    /// that one noisy source does not use up its interface's budget for everyone.
    pub fn admit(&mut self, now: Timestamp, ifindex: u32, source: Ipv4Addr) -> Result<(), Limited> {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            // Forget sources whose bucket is full again; they lose nothing by it.
            let rate = self.per_source;
            self.sources.retain(|_, b| {
                let mut probe = *b;
                probe.take(rate, now);
                probe.tokens + 1.0 < f64::from(rate)
            });
            if self.sources.len() >= MAX_SOURCES {
                return Err(Limited::Source);
            }
        }
        let rate = self.per_source;
        let b = self
            .sources
            .entry(source)
            .or_insert_with(|| Bucket::full(rate, now));
        if !b.take(rate, now) {
            return Err(Limited::Source);
        }
        let rate = self.per_interface;
        let b = self
            .interfaces
            .entry(ifindex)
            .or_insert_with(|| Bucket::full(rate, now));
        if !b.take(rate, now) {
            return Err(Limited::Interface);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_source_then_per_interface_and_refills() {
        let mut r = RateLimiter::new(5, 3);
        let t0 = Timestamp::from_secs(10);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        for _ in 0..3 {
            assert_eq!(r.admit(t0, 1, a), Ok(()));
        }
        assert_eq!(r.admit(t0, 1, a), Err(Limited::Source));
        assert_eq!(r.admit(t0, 1, b), Ok(()));
        assert_eq!(r.admit(t0, 1, b), Ok(()));
        assert_eq!(r.admit(t0, 1, b), Err(Limited::Interface));
        // Another interface has its own budget.
        assert_eq!(r.admit(t0, 2, b), Err(Limited::Source));
        assert_eq!(r.admit(t0, 2, Ipv4Addr::new(10, 0, 0, 3)), Ok(()));
        // One second later the buckets are full again.
        let t1 = Timestamp::from_secs(11);
        assert_eq!(r.admit(t1, 1, a), Ok(()));
    }
}
