//! When a member sends its liveness beacons, and from which hash chain (SPEC.md §5.5), sans-IO.
//!
//! A chain's index `i` falls due `i` intervals after the chain's start, so a beacon sent late
//! carries the index of when it went, not the next in turn: the router bounds its work by the
//! time since the last value it accepted fell due. Halfway through a chain the next one is
//! ordered: drawing it costs a hash per interval of its life (12,000 at 5 ms over a minute,
//! tens of milliseconds in a debug build), so another thread draws it while the beacons go on
//! ([`ChainOrder`]); joins name it from then on beside the running one, which the router learns
//! long before any beacon needs it (a chain lasts at least four refreshes), and at the running
//! one's end the beacons go on from the next. Joins name the running chain where it is now too,
//! so that a member the router stopped hearing for longer than it will hash across is taken
//! back by its next join (a join too long for the link MTU leaves that anchor out first).

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
    /// The next chain was ordered and is not drawn yet.
    ordered: bool,
    next_beacon: Option<Instant>,
}

/// The next chain to draw, off the beacon thread: [`ChainOrder::draw`] then
/// [`Beaconer::add_next`].
#[derive(Debug, Clone, Copy)]
pub struct ChainOrder {
    seed: [u8; VALUE_LEN],
    chain: u64,
    interval_ms: u16,
    len: u32,
    start: Instant,
}

/// A chain drawn for a [`ChainOrder`].
#[derive(Debug)]
pub struct NextChain(Running);

impl ChainOrder {
    /// Computes the chain: one hash per value.
    pub fn draw(self) -> NextChain {
        NextChain(Running {
            chain: HashChain::new(self.seed, self.chain, self.interval_ms, self.len),
            start: self.start,
        })
    }
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
            ordered: false,
            next_beacon: None,
        };
        let NextChain(first) = b.order(now, random).draw();
        b.chains.push_back(first);
        b
    }

    fn order(&self, start: Instant, random: &mut dyn FnMut() -> u64) -> ChainOrder {
        let mut seed = [0u8; VALUE_LEN];
        seed[..8].copy_from_slice(&random().to_be_bytes());
        seed[8..].copy_from_slice(&random().to_be_bytes());
        ChainOrder {
            seed,
            chain: random(),
            interval_ms: u16::try_from(self.interval.as_millis()).unwrap_or(u16::MAX),
            len: (self.life.as_millis() / self.interval.as_millis().max(1)) as u32 + 1,
            start,
        }
    }

    /// The chain drawn for the last [`ChainOrder`]: joins name it from now on.
    pub fn add_next(&mut self, next: NextChain) {
        self.ordered = false;
        self.chains.push_back(next.0);
    }

    /// Index of `r`'s chain due at `now` (0 before its start).
    fn index_at(&self, r: &Running, now: Instant) -> u32 {
        let since = now.saturating_duration_since(r.start);
        (since.as_millis() / self.interval.as_millis().max(1)) as u32
    }

    /// The anchors a join signed at `now` carries: the running chain where it is now, then the
    /// next chain at its start once drawn (the one to keep if only one fits).
    pub fn anchors(&self, now: Instant) -> Vec<LivenessAnchor> {
        let running = self.chains.front().and_then(|r| {
            let i = self.index_at(r, now).min(r.chain.len().saturating_sub(1));
            r.chain.anchor(i)
        });
        let next = self.chains.get(1).and_then(|n| n.chain.anchor(0));
        running.into_iter().chain(next).collect()
    }

    /// Starts beaconing (a claim was made); nothing is sent before.
    pub fn start(&mut self, now: Instant) {
        if self.next_beacon.is_none() {
            self.next_beacon = Some(self.next_send(now));
        }
    }

    /// When the beacon after `now` goes: the middle of the next interval on the running
    /// chain's timeline, so that a beacon sent up to half an interval early or late still
    /// carries the index due then and the router gets each index once. Sent on a grid of their
    /// own (from when the claim was made), beacons sat near the indices' boundaries, and a
    /// millisecond of wake-up jitter sent one index twice and skipped the next.
    fn next_send(&self, now: Instant) -> Instant {
        let Some(running) = self.chains.front() else {
            return now.saturating_add(self.interval);
        };
        let slot = self.index_at(running, now).saturating_add(1);
        running
            .start
            .saturating_add(self.interval * slot + self.interval / 2)
    }

    /// Stops beaconing (the member left its claim).
    pub fn stop(&mut self) {
        self.next_beacon = None;
    }

    /// The interval between beacons.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_beacon
    }

    /// The beacon due at `now`, if any; orders the next chain halfway through the running one
    /// (the caller draws it elsewhere and hands it to [`Beaconer::add_next`]) and moves on to
    /// it at the running one's end.
    pub fn poll_beacon(
        &mut self,
        now: Instant,
        random: &mut dyn FnMut() -> u64,
    ) -> (Option<Beacon>, Option<ChainOrder>) {
        if self.next_beacon.is_none_or(|t| t > now) {
            return (None, None);
        }
        // A member that fell behind skips the indices it missed.
        while self.chains.len() > 1 && self.chains[0].end(self.interval) < now {
            self.chains.pop_front();
        }
        let mut order = None;
        if self.chains.len() == 1 && !self.ordered {
            let running = &self.chains[0];
            let half = running.start.saturating_add(self.life / 2);
            if now >= half {
                order = Some(self.order(running.end(self.interval), random));
                self.ordered = true;
            }
        }
        self.next_beacon = Some(self.next_send(now));
        let running = &self.chains[0];
        let index = self.index_at(running, now);
        if index == 0 || index >= running.chain.len() {
            // Index 0 is what the join names; past the end there is nothing left to reveal.
            return (None, order);
        }
        (running.chain.beacon(self.group, self.member, index), order)
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

    /// Beacons every 10 ms from 2 s chains, started at 0.
    fn two_second_chains() -> (impl FnMut() -> u64, Beaconer) {
        let mut random = counter();
        let iv = Duration::from_millis(10);
        let start = Instant::from_secs(0);
        let mut b = Beaconer::new(
            G,
            MemberId(3),
            iv,
            Duration::from_secs(2),
            start,
            &mut random,
        );
        b.start(start);
        (random, b)
    }

    /// Every beacon, through a chain hand-over, proves a later value to a router that knows
    /// only what the joins said; the next chain is named in joins long before it is needed.
    #[test]
    fn beacons_prove_progress_across_a_chain_hand_over() {
        let (mut random, mut b) = two_second_chains();
        let mut router: Vec<ChainProgress> = b
            .anchors(Instant::from_secs(0))
            .into_iter()
            .map(ChainProgress::from)
            .collect();
        let (mut accepted, mut draws) = (0, 0);
        let mut t = Instant::from_secs(0);
        let mut ordered = None;
        while t < Instant::from_secs(5) {
            t = b.poll_timeout().unwrap();
            // The chain drawn for an order arrives a few beacons later.
            if let Some((order, at)) = ordered.take() {
                if t >= at {
                    b.add_next(ChainOrder::draw(order));
                    draws += 1;
                    // The join sent for it names the running chain where it is and the new
                    // one at its start: the router keeps the running one's progress.
                    let anchors = b.anchors(t);
                    assert_eq!(anchors.len(), 2);
                    assert_eq!(anchors[1].index, 0);
                    router.retain(|p| p.chain != anchors[1].chain);
                    router.push(ChainProgress::from(anchors[1]));
                } else {
                    ordered = Some((order, at));
                }
            }
            let (beacon, order) = b.poll_beacon(t, &mut random);
            if let Some(order) = order {
                assert!(ordered.is_none(), "ordered once");
                ordered = Some((order, t.saturating_add(Duration::from_millis(50))));
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

    /// Beacons go in the middle of their index's interval: woken up to half an interval late
    /// (or early), each still carries the next index, none twice and none skipped. Started at
    /// a claim made 4 ms into an interval, they used to go 4 ms into each, and 1 ms of
    /// jitter sent an index twice.
    #[test]
    fn jitter_of_less_than_half_an_interval_neither_repeats_nor_skips_an_index() {
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
        b.start(Instant::from_millis(1_009));
        let jitter = [0, 1, 4, 0, 4, 2, 0, 3, 1, 4, 0];
        let mut sent = Vec::new();
        for k in 0..200 {
            let due = b.poll_timeout().expect("beaconing");
            let late = Duration::from_millis(jitter[k % jitter.len()]);
            let (beacon, _) = b.poll_beacon(due.saturating_add(late), &mut random);
            sent.push(beacon.expect("a beacon due").index);
        }
        let expected: Vec<u32> = (1..=200).collect();
        assert_eq!(sent, expected);
    }

    /// A join names the running chain where it is now, so that a router that stopped hearing
    /// the member for longer than it hashes across (and found it dead) takes it back at its
    /// next join. It used to name only the next chain in a chain's second half: such a member
    /// stayed dead until the running chain ended, up to half a chain's life (30 s).
    #[test]
    fn a_join_names_the_running_chain_where_it_is_now_beside_the_next() {
        let (mut random, mut b) = two_second_chains();
        let (_, order) = b.poll_beacon(Instant::from_millis(1_200), &mut random);
        b.add_next(order.expect("ordered halfway").draw());
        let now = Instant::from_millis(1_500);
        let anchors = b.anchors(now);
        assert_eq!(anchors.len(), 2, "{anchors:?}");
        assert_eq!(anchors[0].index, 150, "the running chain where it is now");
        assert_eq!(anchors[1].index, 0, "the next at its start");
        // A router that re-anchors at the join accepts the next beacon, however long it heard
        // nothing before.
        let mut p = ChainProgress::from(anchors[0]);
        let (beacon, _) = b.poll_beacon(Instant::from_millis(1_510), &mut random);
        assert!(p.advance(&beacon.expect("a beacon due"), 4).is_ok());
    }
}
