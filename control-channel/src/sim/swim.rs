//! SWIM failure detection with the `foca` crate in virtual time (feature `swim`; issue 14 item
//! 4, a measurement prototype, not used by any daemon).
//!
//! Each member runs one `foca::Foca`; the simulator carries its datagrams with the network model
//! of [`super::NetConfig`] and runs its timers. Every datagram is authenticated as the control
//! messages are: `sender (4) | sequence (8) | foca payload | Ed25519 signature (64)` over a
//! domain prefix and all of that, signed with the member's key, verified (strict) with the
//! sender's key and checked against a per-sender replay window, and the foca header's source
//! must be the signing sender. What is left out: certificates (each member is given its peers'
//! keys up front, as if their `Hello`s had been verified) and timeliness (no wall-clock stamp).
//! Proposals and commits are not here: this measures detection and load only (NOTES.md).

use super::{NetConfig, Rng};
use crate::replay::ReplayWindow;
use core::time::Duration;
use foca::{AccumulatingRuntime, Codec, Foca, Member, OwnedNotification, PostcardCodec, Timer};
use igmp_ext::ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::num::{NonZeroU8, NonZeroUsize};

const DOMAIN: &[u8] = b"manycast-swim-v0";
const SIG_LEN: usize = 64;
const HEAD_LEN: usize = 12;

/// A member's SWIM identity: its member number and a generation that a restart bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SwimId {
    pub member: u32,
    pub generation: u16,
}

impl foca::Identity for SwimId {
    type Addr = u32;
    fn renew(&self) -> Option<Self> {
        Some(SwimId {
            member: self.member,
            generation: self.generation.wrapping_add(1),
        })
    }
    fn addr(&self) -> u32 {
        self.member
    }
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// The detector's timing; the rest of foca's config follows from it.
#[derive(Debug, Clone, Copy)]
pub struct SwimTiming {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub suspect_to_down: Duration,
    /// Gossip (piggybacked updates) every this long to `gossip_fanout` members.
    pub gossip_every: Duration,
    pub gossip_fanout: usize,
    pub indirect_probes: usize,
}

impl SwimTiming {
    /// Tuned for the 300 ms target on a LAN (sub-ms delays) without false downs at 5%
    /// loss (NOTES.md: a 40 ms suspicion detects faster but declares live members down).
    pub fn fast() -> Self {
        SwimTiming {
            probe_period: Duration::from_millis(30),
            probe_rtt: Duration::from_millis(8),
            suspect_to_down: Duration::from_millis(100),
            gossip_every: Duration::from_millis(20),
            gossip_fanout: 3,
            indirect_probes: 3,
        }
    }

    fn foca_config(&self, members: u32) -> foca::Config {
        let mut c = foca::Config::simple();
        c.notify_down_members = true;
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.suspect_to_down_after = self.suspect_to_down;
        c.num_indirect_probes = NonZeroUsize::new(self.indirect_probes.max(1)).expect("≥ 1");
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_every,
            num_members: NonZeroUsize::new(self.gossip_fanout.max(1)).expect("≥ 1"),
        });
        // Enough retransmissions of each update to reach everyone (log n rounds).
        let tx = (f64::from(members + 1).log10() * 4.0)
            .ceil()
            .clamp(2.0, 255.0) as u8;
        c.max_transmissions = NonZeroU8::new(tx).expect("≥ 2");
        c
    }
}

type Detector = Foca<SwimId, PostcardCodec, SmallRng, foca::NoCustomBroadcast>;

struct SwimNode {
    foca: Option<Detector>,
    id: SwimId,
    key: SigningKey,
    seq: u64,
    windows: HashMap<u32, ReplayWindow>,
    received: u64,
    refused: u64,
    foca_errors: u64,
    sent: u64,
    /// Bumped at each crash: timers of an older life are ignored.
    life: u64,
}

enum Ev {
    Deliver {
        to: usize,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        life: u64,
        timer: Timer<SwimId>,
    },
}

/// `MemberDown` as one member reported it: (virtual µs, observer index, member index).
pub type Down = (u64, usize, usize);

/// A group of members that detect each other's failures with foca.
pub struct SwimSim {
    now: u64,
    nodes: Vec<SwimNode>,
    keys: Vec<VerifyingKey>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    rng: Rng,
    net: NetConfig,
    timing: SwimTiming,
    downs: Vec<Down>,
    /// Copies of the datagrams delivered to this member ([`SwimSim::tap`]).
    tap: Option<(usize, Vec<Vec<u8>>)>,
}

impl core::fmt::Debug for SwimSim {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SwimSim")
            .field("now", &self.now)
            .field("members", &self.nodes.len())
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

fn member_key(i: usize) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    seed[8..16].copy_from_slice(b"swimkeys");
    SigningKey::from_bytes(&seed)
}

impl SwimSim {
    /// `members` members that know each other's keys and identities (as after their hellos),
    /// starting at uniform times within the first 50 ms.
    pub fn new(seed: u64, members: u32, timing: SwimTiming) -> Self {
        let keys: Vec<SigningKey> = (0..members as usize).map(member_key).collect();
        let mut sim = SwimSim {
            now: 0,
            keys: keys.iter().map(SigningKey::verifying_key).collect(),
            nodes: keys
                .into_iter()
                .enumerate()
                .map(|(i, key)| SwimNode {
                    foca: None,
                    id: SwimId {
                        member: i as u32,
                        generation: 0,
                    },
                    key,
                    seq: 0,
                    windows: HashMap::new(),
                    received: 0,
                    refused: 0,
                    foca_errors: 0,
                    sent: 0,
                    life: 0,
                })
                .collect(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            rng: Rng::new(seed),
            net: NetConfig::default(),
            timing,
            downs: Vec::new(),
            tap: None,
        };
        for i in 0..sim.nodes.len() {
            let at = sim.rng.below(50_000);
            sim.now = at;
            sim.start(i, seed);
        }
        sim.now = 0;
        sim
    }

    fn start(&mut self, i: usize, seed: u64) {
        let members = self.nodes.len() as u32;
        let rng = SmallRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
        let mut foca = Foca::new(
            self.nodes[i].id,
            self.timing.foca_config(members),
            rng,
            PostcardCodec,
        );
        let others: Vec<Member<SwimId>> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, n)| Member::alive(n.id))
            .collect();
        let mut rt = AccumulatingRuntime::new();
        foca.apply_many(others.into_iter(), false, &mut rt)
            .expect("known members apply");
        self.nodes[i].foca = Some(foca);
        self.drain(i, &mut rt);
    }

    pub fn now_ms(&self) -> u64 {
        self.now / 1000
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }
    /// Datagrams delivered to member `i` (each one's signature verified unless refused sooner).
    pub fn received(&self, i: usize) -> u64 {
        self.nodes[i].received
    }
    pub fn sent(&self, i: usize) -> u64 {
        self.nodes[i].sent
    }
    /// Datagrams refused by the authentication wrapper (size, signature, header source,
    /// replay).
    pub fn refused(&self, i: usize) -> u64 {
        self.nodes[i].refused
    }
    /// Authentic datagrams foca refused (`handle_data` errors).
    pub fn foca_errors(&self, i: usize) -> u64 {
        self.nodes[i].foca_errors
    }
    pub fn downs(&self) -> &[Down] {
        &self.downs
    }
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].foca.is_some()
    }
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// Keeps a copy of every datagram delivered to member `i` from now on (tests).
    pub fn tap(&mut self, i: usize) {
        self.tap = Some((i, Vec::new()));
    }
    pub fn tapped(&self) -> &[Vec<u8>] {
        self.tap.as_ref().map_or(&[], |(_, v)| v.as_slice())
    }

    /// Delivers `bytes` to member `i` now, as if it came from the network (tests: forged or
    /// tampered datagrams).
    pub fn inject(&mut self, to: usize, bytes: Vec<u8>) {
        self.push(self.now, Ev::Deliver { to, bytes });
    }

    /// A datagram member `from` signed now, carrying `payload` as foca data (tests).
    pub fn sign_as(&mut self, from: usize, payload: &[u8]) -> Vec<u8> {
        let node = &mut self.nodes[from];
        node.seq += 1;
        let mut bytes = Vec::with_capacity(HEAD_LEN + payload.len() + SIG_LEN);
        bytes.extend_from_slice(&node.id.member.to_be_bytes());
        bytes.extend_from_slice(&node.seq.to_be_bytes());
        bytes.extend_from_slice(payload);
        let sig = igmp_ext::signature::sign(&node.key, &signed(&bytes));
        bytes.extend_from_slice(&sig.to_bytes());
        bytes
    }

    /// Stops member `i` at once, losing its state.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].foca = None;
        self.nodes[i].life += 1;
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn drain(&mut self, i: usize, rt: &mut AccumulatingRuntime<SwimId>) {
        while let Some((to, data)) = rt.to_send() {
            let node = &mut self.nodes[i];
            node.seq += 1;
            node.sent += 1;
            let mut bytes = Vec::with_capacity(HEAD_LEN + data.len() + SIG_LEN);
            bytes.extend_from_slice(&node.id.member.to_be_bytes());
            bytes.extend_from_slice(&node.seq.to_be_bytes());
            bytes.extend_from_slice(&data);
            let sig = igmp_ext::signature::sign(&node.key, &signed(&bytes));
            bytes.extend_from_slice(&sig.to_bytes());
            let to = to.member as usize;
            if to >= self.nodes.len() || self.rng.chance(self.net.loss) {
                continue;
            }
            let delay = self.net.delay_min_us + self.rng.below(self.net.delay_jitter_us + 1);
            self.push(self.now + delay, Ev::Deliver { to, bytes });
        }
        while let Some((after, timer)) = rt.to_schedule() {
            let at = self.now + u64::try_from(after.as_micros()).unwrap_or(u64::MAX / 2);
            let life = self.nodes[i].life;
            self.push(
                at,
                Ev::Timer {
                    node: i,
                    life,
                    timer,
                },
            );
        }
        while let Some(n) = rt.to_notify() {
            if let OwnedNotification::MemberDown(id) = n {
                self.downs.push((self.now, i, id.member as usize));
            }
        }
    }

    /// Checks the wrapper; on success returns the foca payload.
    fn authenticate(&mut self, to: usize, bytes: &[u8]) -> Option<usize> {
        if bytes.len() < HEAD_LEN + SIG_LEN {
            return None;
        }
        let (signed_part, sig) = bytes.split_at(bytes.len() - SIG_LEN);
        let sender = u32::from_be_bytes(signed_part[..4].try_into().ok()?);
        let seq = u64::from_be_bytes(signed_part[4..12].try_into().ok()?);
        let key = self.keys.get(sender as usize)?;
        let sig = Signature::from_bytes(sig.try_into().ok()?);
        if !igmp_ext::signature::verify(key, &signed(signed_part), &sig) {
            return None;
        }
        let payload = &signed_part[HEAD_LEN..];
        let header: foca::Header<SwimId> = PostcardCodec.decode_header(payload).ok()?;
        if header.src.member != sender {
            return None;
        }
        let window = self.nodes[to].windows.entry(sender).or_default();
        if !window.is_fresh(seq) {
            return None;
        }
        window.record(seq);
        Some(bytes.len() - SIG_LEN)
    }

    /// Runs until virtual time `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        let until = until_ms * 1000;
        while let Some(&Reverse((at, key))) = self.queue.peek() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            let Some(ev) = self.events.remove(&key) else {
                continue;
            };
            let mut rt = AccumulatingRuntime::new();
            match ev {
                Ev::Deliver { to, bytes } => {
                    if self.nodes[to].foca.is_none() {
                        continue;
                    }
                    self.nodes[to].received += 1;
                    if let Some((_, v)) = self.tap.as_mut().filter(|(t, _)| *t == to) {
                        v.push(bytes.clone());
                    }
                    let Some(end) = self.authenticate(to, &bytes) else {
                        self.nodes[to].refused += 1;
                        continue;
                    };
                    let foca = self.nodes[to].foca.as_mut().expect("running");
                    if foca.handle_data(&bytes[HEAD_LEN..end], &mut rt).is_err() {
                        self.nodes[to].foca_errors += 1;
                    }
                    self.drain(to, &mut rt);
                }
                Ev::Timer { node, life, timer } => {
                    if self.nodes[node].life != life {
                        continue;
                    }
                    let Some(foca) = self.nodes[node].foca.as_mut() else {
                        continue;
                    };
                    let _ = foca.handle_timer(timer, &mut rt);
                    self.drain(node, &mut rt);
                }
            }
        }
        self.now = self.now.max(until);
    }
}

fn signed(part: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + part.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(part);
    m
}

/// One crash in a settled group: ms from the crash until every survivor reported the victim
/// down, or `None` within `limit`; and how many `MemberDown` reports were about others (false
/// downs) in the run.
pub fn crash_trial(
    seed: u64,
    members: u32,
    timing: SwimTiming,
    limit: Duration,
) -> (Option<u64>, usize) {
    let mut rng = Rng::new(seed ^ 0xc0ffee);
    let mut sim = SwimSim::new(seed, members, timing);
    sim.run_until(1000 + rng.below(100));
    let victim = rng.below(u64::from(members)) as usize;
    sim.crash(victim);
    let crashed = sim.now;
    let survivors = sim.running();
    let end = sim.now_ms() + u64::try_from(limit.as_millis()).unwrap_or(u64::MAX / 2);
    let mut detect = None;
    while sim.now_ms() < end {
        let next = sim.now_ms() + 5;
        sim.run_until(next);
        let mut seen = vec![false; sim.len()];
        for &(at, obs, m) in sim.downs() {
            if m == victim && at >= crashed {
                seen[obs] = true;
            }
        }
        if survivors.iter().all(|&i| seen[i]) {
            let last = sim
                .downs()
                .iter()
                .filter(|&&(at, _, m)| m == victim && at >= crashed)
                .map(|&(at, _, _)| at)
                .max()
                .unwrap_or(crashed);
            detect = Some((last - crashed) / 1000);
            break;
        }
    }
    let false_downs = sim.downs().iter().filter(|&&(_, _, m)| m != victim).count();
    (detect, false_downs)
}
