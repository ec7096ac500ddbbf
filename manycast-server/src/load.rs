//! Per-unit load of the service (sans-IO): how many datagrams this member answered for each
//! allocation unit over the last few seconds. The daemon reports it in control heartbeats
//! (`Endpoint::set_load`), where the coordinator sums every member's report for a load-aware
//! rebalance (SPEC.md §6.1, §9.4).

use igmp_ext::alloc::Slicing;
use std::collections::VecDeque;
use std::net::Ipv4Addr;

/// Seconds of history in a reported load.
pub const WINDOW_SECONDS: usize = 5;
/// Most units in one report: at most 8 bytes each (postcard varints), they leave room in a
/// heartbeat (SPEC.md §9.1, 1,296-byte body) for the rest of it with dozens of members.
pub const MAX_REPORTED_UNITS: usize = 120;

/// Counts per unit in one-second buckets; the load is the sum over the last
/// [`WINDOW_SECONDS`] full seconds and the current one.
#[derive(Debug, Clone)]
pub struct LoadMeter {
    slicing: Slicing,
    current: Vec<u32>,
    past: VecDeque<Vec<u32>>,
}

impl LoadMeter {
    pub fn new(slicing: Slicing) -> Self {
        LoadMeter {
            slicing,
            current: vec![0; slicing.unit_count()],
            past: VecDeque::with_capacity(WINDOW_SECONDS),
        }
    }

    /// One datagram from `client` was answered.
    pub fn record(&mut self, client: Ipv4Addr) {
        self.record_unit(self.slicing.unit_of(u32::from(client)));
    }

    /// One datagram of allocation unit `unit` was answered (an IPv6 client's unit, SPEC.md §6.2).
    pub fn record_unit(&mut self, unit: usize) {
        if let Some(c) = self.current.get_mut(unit) {
            *c = c.saturating_add(1);
        }
    }

    /// Called once a second: closes the current bucket and drops the oldest.
    pub fn tick(&mut self) {
        let closed = std::mem::replace(&mut self.current, vec![0; self.slicing.unit_count()]);
        if self.past.len() == WINDOW_SECONDS {
            self.past.pop_front();
        }
        self.past.push_back(closed);
    }

    /// Datagrams answered per unit over the window, only the units that had any, as the
    /// heartbeat carries them (unit number, count): the [`MAX_REPORTED_UNITS`] most loaded
    /// (ties to the lower unit), in unit order.
    pub fn report(&self) -> Vec<(u16, u32)> {
        let mut all: Vec<(u16, u32)> = (0..self.current.len())
            .filter_map(|u| {
                let sum = self
                    .past
                    .iter()
                    .map(|b| b[u])
                    .fold(self.current[u], u32::saturating_add);
                let unit = u16::try_from(u).ok()?;
                (sum > 0).then_some((unit, sum))
            })
            .collect();
        if all.len() > MAX_REPORTED_UNITS {
            all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(MAX_REPORTED_UNITS);
            all.sort_unstable();
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_unit_over_the_window() {
        let mut m = LoadMeter::new(Slicing::LowOrder { bits: 2 });
        m.record(Ipv4Addr::new(10, 0, 0, 1)); // unit 1
        m.record(Ipv4Addr::new(10, 0, 0, 5)); // unit 1
        m.record(Ipv4Addr::new(10, 0, 0, 7)); // unit 3
        assert_eq!(m.report(), vec![(1, 2), (3, 1)]);
        m.tick();
        m.record(Ipv4Addr::new(10, 0, 0, 4)); // unit 0
        assert_eq!(m.report(), vec![(0, 1), (1, 2), (3, 1)]);
        // The first second falls out of the window after WINDOW_SECONDS more ticks.
        for _ in 0..WINDOW_SECONDS - 1 {
            m.tick();
        }
        assert_eq!(m.report(), vec![(0, 1), (1, 2), (3, 1)]);
        m.tick();
        assert_eq!(m.report(), vec![(0, 1)]);
        m.tick();
        assert_eq!(m.report(), vec![]);
    }

    #[test]
    fn a_report_keeps_the_most_loaded_units_and_fits_a_heartbeat() {
        let mut m = LoadMeter::new(Slicing::LowOrder { bits: 16 });
        for u in 0..1000u32 {
            // Unit u gets u % 7 + 1 datagrams, and unit 999 a huge count.
            for _ in 0..(u % 7 + 1) {
                m.record(Ipv4Addr::from(u));
            }
        }
        for _ in 0..100_000 {
            m.record(Ipv4Addr::from(999u32));
        }
        let r = m.report();
        assert_eq!(r.len(), MAX_REPORTED_UNITS);
        assert!(r.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(r.contains(&(999, 100_000 + 999 % 7 + 1)));
        assert!(r.iter().all(|&(_, n)| n >= 7));
        let hb = control_channel::wire::Heartbeat {
            weight: u32::MAX,
            heard: (0..32).map(|i| (u32::MAX - i, u16::MAX)).collect(),
            committed: control_channel::EpochId {
                epoch: u64::MAX,
                proposer: u32::MAX,
                incarnation: u64::MAX,
            },
            digest: u64::MAX,
            load: r.iter().map(|&(u, _)| (u16::MAX - u, u32::MAX)).collect(),
        };
        let header = control_channel::wire::Header {
            cluster: 0,
            sender: igmp_ext::MemberId(1),
            epoch: 0,
            sequence: 0,
            timestamp: igmp_ext::Timestamp(0),
        };
        let key = igmp_ext::ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let signed = control_channel::wire::Message::Heartbeat(hb).encode_signed(&header, &key);
        assert!(signed.is_ok(), "{signed:?}");
    }
}
