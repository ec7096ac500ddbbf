//! When a member sends its liveness beacons, and from which hash chain (SPEC.md §5.5), sans-IO.
//!
//! A chain's index `i` falls due `i` intervals after the chain's start, so a beacon sent late
//! carries the index of when it went, not the next in turn: the router bounds its work by the
//! time since the last beacon it accepted. Halfway through a chain the next one is drawn; from
//! then on joins name it instead (the router keeps what it knows of the running one, and learns
//! the next long before any beacon needs it: a chain lasts at least four refreshes), and at the
//! running one's end the beacons go on from the next. One anchor per join keeps joins within a
//! link MTU.

use igmp_ext::liveness::{Beacon, HashChain, LivenessAnchor, VALUE_LEN};
use igmp_ext::{Instant, MemberId};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The beacons' state, shared by the thread that sends them (so that a busy main loop does not
/// silence the member at the router) and the join agent (which names the chain in joins).
pub type SharedBeaconer = Arc<Mutex<Beaconer>>;

/// Locks `b` (state stays consistent across a panic elsewhere: every update is one call).
pub fn lock(b: &SharedBeaconer) -> MutexGuard<'_, Beaconer> {
    b.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A chain and when its index 0 falls due.
#[derive(Debug)]
struct Running {
    chain: HashChain,
    start: Instant,
}

impl Running {
    fn end(&self, interval: Duration) -> Instant {
        self.start
            .saturating_add(interval * self.chain.len().saturating_sub(1))
    }
}

/// One member's beacons for one group.
#[derive(Debug)]
pub struct Beaconer {
    group: Ipv4Addr,
    member: MemberId,
    interval: Duration,
    /// How long one chain lasts.
    life: Duration,
    /// The chain beacons come from, then the next one once drawn.
    chains: VecDeque<Running>,
    next_beacon: Option<Instant>,
}

/// Whether [`Beaconer::poll_beacon`] drew a new chain: joins must name it soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drawn {
    Nothing,
    NextChain,
}

impl Beaconer {
    /// Beacons every `interval` (at least 1 ms) from chains lasting `life` (at least 2
    /// intervals); the first chain starts at `now`, drawn from `random`.
    pub fn new(
        group: Ipv4Addr,
        member: MemberId,
        interval: Duration,
        life: Duration,
        now: Instant,
        random: &mut dyn FnMut() -> u64,
    ) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let mut b = Beaconer {
            group,
            member,
            interval,
            life: life.max(interval * 2),
            chains: VecDeque::new(),
            next_beacon: None,
        };
        let first = b.draw(now, random);
        b.chains.push_back(first);
        b
    }

    fn draw(&self, start: Instant, random: &mut dyn FnMut() -> u64) -> Running {
        let mut seed = [0u8; VALUE_LEN];
        seed[..8].copy_from_slice(&random().to_be_bytes());
        seed[8..].copy_from_slice(&random().to_be_bytes());
        let len = (self.life.as_millis() / self.interval.as_millis().max(1)) as u32 + 1;
        let interval_ms = u16::try_from(self.interval.as_millis()).unwrap_or(u16::MAX);
        Running {
            chain: HashChain::new(seed, random(), interval_ms, len),
            start,
        }
    }

    /// Index of `r`'s chain due at `now` (0 before its start).
    fn index_at(&self, r: &Running, now: Instant) -> u32 {
        let since = now.saturating_duration_since(r.start);
        (since.as_millis() / self.interval.as_millis().max(1)) as u32
    }

    /// The anchor a join signed at `now` carries: the next chain at its start once drawn,
    /// else the running chain where it is now.
    pub fn anchors(&self, now: Instant) -> Vec<LivenessAnchor> {
        let anchor = match self.chains.get(1) {
            Some(next) => next.chain.anchor(0),
            None => self.chains.front().and_then(|r| {
                let i = self.index_at(r, now).min(r.chain.len().saturating_sub(1));
                r.chain.anchor(i)
            }),
        };
        anchor.into_iter().collect()
    }

    /// Starts beaconing (a claim was made); nothing is sent before.
    pub fn start(&mut self, now: Instant) {
        if self.next_beacon.is_none() {
            self.next_beacon = Some(now.saturating_add(self.interval));
        }
    }

    /// Stops beaconing (the member left its claim).
    pub fn stop(&mut self) {
        self.next_beacon = None;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_beacon
    }

    /// The beacon due at `now`, if any; draws the next chain halfway through the running one
    /// and moves on to it at the running one's end.
    pub fn poll_beacon(
        &mut self,
        now: Instant,
        random: &mut dyn FnMut() -> u64,
    ) -> (Option<Beacon>, Drawn) {
        let Some(due) = self.next_beacon.filter(|&t| t <= now) else {
            return (None, Drawn::Nothing);
        };
        // The next beacon one interval after this one was due, or after now if we fell behind.
        let next = due.saturating_add(self.interval);
        self.next_beacon = Some(if next > now {
            next
        } else {
            now.saturating_add(self.interval)
        });
        while self.chains.len() > 1 && self.chains[0].end(self.interval) < now {
            self.chains.pop_front();
        }
        let mut drawn = Drawn::Nothing;
        if self.chains.len() == 1 {
            let running = &self.chains[0];
            let half = running.start.saturating_add(self.life / 2);
            if now >= half {
                let next = self.draw(running.end(self.interval), random);
                self.chains.push_back(next);
                drawn = Drawn::NextChain;
            }
        }
        let running = &self.chains[0];
        let index = self.index_at(running, now);
        if index == 0 || index >= running.chain.len() {
            // Index 0 is what the join names; past the end there is nothing left to reveal.
            return (None, drawn);
        }
        (running.chain.beacon(self.group, self.member, index), drawn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::liveness::ChainProgress;

    const G: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0u64;
        move || {
            n += 1;
            n
        }
    }

    /// Every beacon, through a chain hand-over, proves a later value to a router that knows
    /// only what the joins said; the next chain is named in joins long before it is needed.
    #[test]
    fn beacons_prove_progress_across_a_chain_hand_over() {
        let mut random = counter();
        let iv = Duration::from_millis(10);
        let mut b = Beaconer::new(
            G,
            MemberId(3),
            iv,
            Duration::from_secs(2),
            Instant::from_secs(0),
            &mut random,
        );
        b.start(Instant::from_secs(0));
        let mut router: Vec<ChainProgress> = b
            .anchors(Instant::from_secs(0))
            .into_iter()
            .map(ChainProgress::from)
            .collect();
        let (mut accepted, mut draws) = (0, 0);
        let mut t = Instant::from_secs(0);
        while t < Instant::from_secs(5) {
            t = b.poll_timeout().unwrap();
            let (beacon, drawn) = b.poll_beacon(t, &mut random);
            if drawn == Drawn::NextChain {
                draws += 1;
                // The join sent for it names only the new chain: the router keeps the running
                // one's progress beside it.
                let anchors = b.anchors(t);
                assert_eq!(anchors.len(), 1);
                assert_eq!(anchors[0].index, 0);
                router.retain(|p| p.chain != anchors[0].chain);
                router.push(ChainProgress::from(anchors[0]));
            }
            if let Some(beacon) = beacon {
                assert!(
                    router.iter_mut().any(|p| p.advance(&beacon, 4).is_ok()),
                    "beacon {} of chain {:#x} at {t} proves nothing",
                    beacon.index,
                    beacon.chain
                );
                accepted += 1;
            }
        }
        assert!(draws >= 2, "two hand-overs in 5 s of 2 s chains: {draws}");
        assert!(accepted >= 490, "a beacon every 10 ms: {accepted}");
    }

    /// A member that fell behind sends the index due now, skipping the ones it missed.
    #[test]
    fn a_late_beacon_carries_the_index_due_when_it_goes() {
        let mut random = counter();
        let iv = Duration::from_millis(10);
        let start = Instant::from_secs(1);
        let mut b = Beaconer::new(
            G,
            MemberId(3),
            iv,
            Duration::from_secs(60),
            start,
            &mut random,
        );
        b.start(start);
        let (beacon, _) = b.poll_beacon(Instant::from_millis(1_055), &mut random);
        assert_eq!(beacon.unwrap().index, 5);
        assert_eq!(b.poll_timeout(), Some(Instant::from_millis(1_065)));
    }
}
