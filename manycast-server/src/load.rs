//! Per-unit load of the service (sans-IO): how many datagrams this member answered for each
//! allocation unit over the last few seconds. The daemon reports it in control heartbeats
//! (`Endpoint::set_load`), where the coordinator sums every member's report for a load-aware
//! rebalance (SPEC.md §6.1, §9.4).

use igmp_ext::alloc::Slicing;
use std::collections::VecDeque;
use std::net::Ipv4Addr;

/// Seconds of history in a reported load.
pub const WINDOW_SECONDS: usize = 5;

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
        let unit = self.slicing.unit_of(u32::from(client));
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
    /// heartbeat carries them (unit number, count).
    pub fn report(&self) -> Vec<(u16, u32)> {
        (0..self.current.len())
            .filter_map(|u| {
                let sum = self
                    .past
                    .iter()
                    .map(|b| b[u])
                    .fold(self.current[u], u32::saturating_add);
                let unit = u16::try_from(u).ok()?;
                (sum > 0).then_some((unit, sum))
            })
            .collect()
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
}
