//! The built-in reference UDP service with local slice filtering and the reallocation strategies
//! (sans-IO; BRIEF decisions 6 and 8). Owns the per-client session table and decides, for each
//! datagram that reached this member, whether it is ours to answer: behind a plain router every
//! member receives every datagram, so only the owner of the source's slice may reply.
//!
//! Request (optional): `r<k>` (ASCII), a client-chosen request id. Reply: `m<member> <n>\n`
//! where n counts that client's requests from 1, with ` r<k>` appended when the request carried
//! an id; a request repeating the last id gets the same n again (a retransmission, not a new
//! request). `m<member> reset\n` tells a client that its session was dropped (reset strategy).
//!
//! When a commit moves slices, [`Service::handle_commit`] returns [`Action`]s: reset replies,
//! or one [`Action::SendState`] per new owner with the moved sessions (handoff: the new owner
//! continues them; forward: the new owner passes their datagrams back here). A new owner holds
//! datagrams of unknown clients in slices it gained from a live member until that member's
//! state arrives ([`Service::handle_state`]) or the hold time passes.
//!
//! IPv6 clients (`group6`, [`Service::with_ipv6`]; SPEC.md §11.3) share the table, keyed by
//! socket address: their unit is the same index in the /56 site slicing (SPEC.md §6.2), so an
//! IPv6 session moves with its unit exactly as an IPv4 one does, under every strategy.

mod session;

pub use session::{request_id, unit6_of};

use crate::config::Strategy;
use crate::session_state::{SessionRecord, SessionRecord6, StateTransfer};
use igmp_ext::{Allocation, Instant, MemberId, SliceSet, SliceSet6};
use session::{key, reply_text, reset_text, slices6_of, Answer, Session};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

/// Counts for metrics and tests, one set per client address family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Datagrams answered (here or for forwarded sessions).
    pub served: u64,
    /// Datagrams from sources outside our slices (another member's clients).
    pub filtered: u64,
    /// Datagrams from new clients refused because the table was full.
    pub refused_full: u64,
    /// Reset replies produced when slices moved away.
    pub resets: u64,
    /// Requests repeating the last request id, answered with the same number.
    pub retransmits: u64,
    /// Requests with an id below the last one answered (stale duplicates), not answered.
    pub stale: u64,
    /// Sessions sent to a new owner (handoff) or announced to it (forward).
    pub handed_off: u64,
    /// Sessions received from an old owner and continued here (handoff) or listed for
    /// forwarding (forward).
    pub received: u64,
    /// Datagrams passed to the old owner (forward, new-owner side).
    pub forwarded: u64,
    /// Forwarded datagrams answered here (forward, old-owner side).
    pub forwarded_served: u64,
    /// Forwarded datagrams refused: not from the slice's owner, or no such session here.
    pub forward_refused: u64,
    /// Datagrams held while waiting for an old owner's state.
    pub held: u64,
    /// Clients started fresh because the old owner's state did not come within the hold time.
    pub handoff_timeouts: u64,
    /// State transfers that could not be decoded.
    pub bad_state: u64,
}

/// A datagram to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// What the I/O shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reply(Reply),
    /// Pass a client datagram to the member that holds its session (`Endpoint::forward`).
    Forward {
        to: MemberId,
        client: SocketAddr,
        payload: Vec<u8>,
    },
    /// Send moved sessions to their new owner (`Endpoint::send_state`); the transfer id is the
    /// epoch. Report the outcome with [`Service::handle_transfer_done`].
    SendState {
        to: MemberId,
        transfer_id: u64,
        data: Vec<u8>,
    },
}

/// A unit this member gained from a live member in a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gain {
    /// None: gained in this member's first commit, when it did not know the previous owner,
    /// until the previous allocation names it ([`Service::handle_previous`]); no state is
    /// taken for the unit meanwhile (it is kept, see `unproven`).
    from: Option<MemberId>,
    epoch: u64,
    /// Until the old owner's state arrives, unknown clients wait (at most until this time).
    awaiting_until: Option<Instant>,
}

/// A client the new owner passes on to the old owner (forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ForwardEntry {
    to: MemberId,
    last_seen: Instant,
    /// When an allocation stopped listing `to`; the entry is dropped one hold time later
    /// unless `to` is listed again (a false down lasts one commit or two).
    unlisted_since: Option<Instant>,
}

/// Most datagrams held per client while its state is on the way.
const MAX_HELD_PER_CLIENT: usize = 8;
/// Transfers that arrived before their commit, kept until it comes.
const MAX_EARLY_TRANSFERS: usize = 64;

/// The session table, the filter and the strategies.
#[derive(Debug)]
pub struct Service {
    me: MemberId,
    strategy: Strategy,
    slices: SliceSet,
    /// Whether IPv6 clients are served (`group6`), and their slices: the IPv6 counterparts of
    /// `slices` and `standing_in` (unit i of the site slicing for unit i).
    ipv6: bool,
    slices6: SliceSet6,
    standing_in6: SliceSet6,
    /// Standby units the router steers here while their owner is found dead (SPEC.md §5.5),
    /// until the next commit.
    standing_in: SliceSet,
    /// Members the router found dead (its standby notices, SPEC.md §5.5): a unit gained from
    /// one that the commit no longer lists does not wait for its sessions.
    found_dead: BTreeSet<MemberId>,
    allocation: Option<Allocation>,
    epoch: u64,
    sessions: HashMap<SocketAddr, Session>,
    /// Forward, old-owner side: sessions of slices that moved away, served to their end for
    /// datagrams the new owner forwards.
    moved_out: HashMap<SocketAddr, Session>,
    /// Forward, new-owner side: clients whose datagrams go to the old owner.
    forward_to: HashMap<SocketAddr, ForwardEntry>,
    gains: BTreeMap<usize, Gain>,
    held: HashMap<SocketAddr, Vec<Vec<u8>>>,
    early: Vec<(MemberId, StateTransfer)>,
    /// Transfers naming units whose old owner is not known yet (first commit), kept until the
    /// previous allocation says who owned them (at most [`MAX_EARLY_TRANSFERS`]).
    unproven: Vec<(MemberId, StateTransfer)>,
    /// The last owner of each unit in any allocation seen, for units nobody owns now: their
    /// sessions come from it when a later commit gives them to this member.
    last_owner: Vec<Option<MemberId>>,
    /// Transfers sent and not yet reported done: a draining member waits for them.
    outgoing: BTreeSet<(MemberId, u64)>,
    idle: Duration,
    hold: Duration,
    max_sessions: usize,
    counters: ServiceCounters,
    counters6: ServiceCounters,
}

impl Service {
    pub fn new(me: MemberId, strategy: Strategy, idle: Duration, max_sessions: usize) -> Self {
        Service {
            me,
            strategy,
            slices: SliceSet::new(),
            ipv6: false,
            slices6: SliceSet6::new(),
            standing_in6: SliceSet6::new(),
            standing_in: SliceSet::new(),
            found_dead: BTreeSet::new(),
            allocation: None,
            epoch: 0,
            sessions: HashMap::new(),
            moved_out: HashMap::new(),
            forward_to: HashMap::new(),
            gains: BTreeMap::new(),
            held: HashMap::new(),
            early: Vec::new(),
            unproven: Vec::new(),
            last_owner: Vec::new(),
            outgoing: BTreeSet::new(),
            idle,
            hold: Duration::from_millis(500),
            max_sessions,
            counters: ServiceCounters::default(),
            counters6: ServiceCounters::default(),
        }
    }

    /// Also answers IPv6 clients, in the IPv6 counterparts of this member's units.
    pub fn with_ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// How long a new owner holds an unknown client's datagrams waiting for the old owner.
    pub fn with_hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// The counts for IPv4 clients (and transfers that could not be decoded).
    pub fn counters(&self) -> ServiceCounters {
        self.counters
    }

    /// The counts for IPv6 clients.
    pub fn counters6(&self) -> ServiceCounters {
        self.counters6
    }

    fn count(&mut self, client: &SocketAddr) -> &mut ServiceCounters {
        match client {
            SocketAddr::V4(_) => &mut self.counters,
            SocketAddr::V6(_) => &mut self.counters6,
        }
    }

    /// Sessions held: our own plus moved ones still served here (forward).
    pub fn session_count(&self) -> usize {
        self.sessions.len() + self.moved_out.len()
    }

    /// IPv6 sessions among them.
    pub fn session_count6(&self) -> usize {
        let v6 = |c: &&SocketAddr| c.is_ipv6();
        self.sessions.keys().filter(v6).count() + self.moved_out.keys().filter(v6).count()
    }

    pub fn slices(&self) -> &SliceSet {
        &self.slices
    }

    /// The IPv6 slices answered now (empty unless [`Service::with_ipv6`]).
    pub fn slices6(&self) -> &SliceSet6 {
        &self.slices6
    }

    /// Whether `client` is in this member's committed slices.
    fn owns(&self, client: &SocketAddr) -> bool {
        match client {
            SocketAddr::V4(c) => self.slices.contains_addr(*c.ip()),
            SocketAddr::V6(c) => self.slices6.contains_addr(*c.ip()),
        }
    }

    /// Whether this member answers `client` now.
    pub fn serves(&self, client: &SocketAddr) -> bool {
        match client {
            SocketAddr::V4(c) => {
                self.slices.contains_addr(*c.ip()) || self.standing_in.contains_addr(*c.ip())
            }
            SocketAddr::V6(c) => {
                self.slices6.contains_addr(*c.ip()) || self.standing_in6.contains_addr(*c.ip())
            }
        }
    }

    /// Answers `units` too until the next commit: the router said it steers them here, their
    /// owner being found dead (SPEC.md §5.5). Empty: no longer.
    pub fn stand_in(&mut self, units: SliceSet) {
        if let Some(a) = self.allocation.as_ref().filter(|_| self.ipv6) {
            self.standing_in6 = slices6_of(a.slicing(), &units);
        }
        self.standing_in = units;
    }

    /// The router found `member` dead (`dead`), or hears it again.
    pub fn note_found_dead(&mut self, member: MemberId, dead: bool) {
        if dead {
            self.found_dead.insert(member);
        } else {
            self.found_dead.remove(&member);
        }
    }

    /// Whether sessions that moved away still need this member: forwarded sessions not yet
    /// ended, or handoff transfers not yet acknowledged. A draining member leaves when this
    /// is false.
    pub fn has_moved_sessions(&self) -> bool {
        !self.moved_out.is_empty() || !self.outgoing.is_empty()
    }

    /// The allocation unit of `client` (for IPv6, its index in the site slicing).
    pub fn unit_of(&self, client: &SocketAddr) -> Option<usize> {
        let slicing = self.allocation.as_ref()?.slicing();
        Some(match client {
            SocketAddr::V4(c) => slicing.unit_of(u32::from(*c.ip())),
            SocketAddr::V6(c) => unit6_of(slicing, *c.ip()),
        })
    }

    /// Whether `client`'s unit waits for an old owner's state.
    fn awaiting(&self, client: &SocketAddr) -> bool {
        self.unit_of(client)
            .and_then(|u| self.gains.get(&u))
            .is_some_and(|g| g.awaiting_until.is_some())
    }

    fn reply(&self, to: SocketAddr, n: u64, request: Option<u64>) -> Reply {
        Reply {
            to,
            payload: reply_text(self.me, n, request),
        }
    }

    /// A datagram from `from` arrived. The payload is only read for a request id, so nothing in
    /// it can make this fail.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        payload: &[u8],
    ) -> Vec<Action> {
        let from = key(from);
        if !self.serves(&from) {
            self.count(&from).filtered += 1;
            return Vec::new();
        }
        if !self.sessions.contains_key(&from) {
            if let Some(entry) = self.forward_to.get_mut(&from) {
                entry.last_seen = now;
                let to = entry.to;
                self.count(&from).forwarded += 1;
                return vec![Action::Forward {
                    to,
                    client: from,
                    payload: payload.to_vec(),
                }];
            }
            let awaiting = self.awaiting(&from);
            if awaiting {
                let room = self.held.contains_key(&from) || self.held.len() < self.max_sessions;
                if room {
                    let queue = self.held.entry(from).or_default();
                    if queue.len() < MAX_HELD_PER_CLIENT {
                        queue.push(payload.to_vec());
                        self.count(&from).held += 1;
                    }
                }
                return Vec::new();
            }
            if self.sessions.len() >= self.max_sessions {
                self.count(&from).refused_full += 1;
                return Vec::new();
            }
        }
        let request = request_id(payload);
        let session = self
            .sessions
            .entry(from)
            .or_insert_with(|| Session::fresh(now));
        let answer = session.answer(now, request);
        let counts = self.count(&from);
        let n = match answer {
            Answer::Next(n) => n,
            Answer::Again(n) => {
                counts.retransmits += 1;
                n
            }
            Answer::Stale => {
                counts.stale += 1;
                return Vec::new();
            }
        };
        counts.served += 1;
        vec![Action::Reply(self.reply(from, n, request))]
    }

    /// A datagram the owner of `client`'s slice passed to us (forward strategy). Answered only
    /// for a session that moved away from here and only when `from` owns the client's slice
    /// now, so a member cannot make us answer for clients that are not its own.
    pub fn handle_forwarded(
        &mut self,
        now: Instant,
        from: MemberId,
        client: SocketAddr,
        payload: &[u8],
    ) -> Option<Reply> {
        let client = key(client);
        let owner = match (&self.allocation, self.unit_of(&client)) {
            (Some(a), Some(unit)) => a.unit_owners().get(unit).copied().flatten(),
            _ => None,
        };
        let request = request_id(payload);
        let answer = match self.moved_out.get_mut(&client) {
            Some(s) if owner == Some(from) => s.answer(now, request),
            _ => {
                self.count(&client).forward_refused += 1;
                return None;
            }
        };
        let counts = self.count(&client);
        let n = match answer {
            Answer::Next(n) => n,
            Answer::Again(n) => {
                counts.retransmits += 1;
                n
            }
            Answer::Stale => {
                counts.stale += 1;
                return None;
            }
        };
        counts.served += 1;
        counts.forwarded_served += 1;
        Some(self.reply(client, n, request))
    }

    /// A new allocation at `epoch`; `members` are the members it lists (forwarding to a member
    /// missing from it stops).
    pub fn handle_commit(
        &mut self,
        now: Instant,
        epoch: u64,
        members: &[MemberId],
        allocation: &Allocation,
    ) -> Vec<Action> {
        let previous = self.allocation.replace(allocation.clone());
        self.epoch = self.epoch.max(epoch);
        self.slices = allocation.slices_of(self.me);
        self.standing_in = SliceSet::default();
        self.standing_in6 = SliceSet6::default();
        let slicing = allocation.slicing();
        if self.ipv6 {
            self.slices6 = slices6_of(slicing, &self.slices);
        }
        let owners = allocation.unit_owners();
        let mut actions = Vec::new();

        // Units that left us, by new owner (None: nobody owns them now).
        let mut lost: BTreeMap<Option<MemberId>, BTreeSet<usize>> = BTreeMap::new();
        let waits = matches!(self.strategy, Strategy::Handoff | Strategy::Forward);
        let await_until = waits.then(|| now.saturating_add(self.hold));
        let others_listed = members.iter().any(|&m| m != self.me);
        if previous.is_none() && others_listed {
            // A member that just started does not know who owned its units before: it waits
            // for whatever transfers name them.
            for (unit, &owner) in owners.iter().enumerate() {
                if owner == Some(self.me) {
                    self.gains.insert(
                        unit,
                        Gain {
                            from: None,
                            epoch,
                            awaiting_until: await_until,
                        },
                    );
                }
            }
        }
        if let Some(prev) = &previous {
            if prev.slicing() == slicing {
                for (unit, (&before, &after)) in prev.unit_owners().iter().zip(owners).enumerate() {
                    if before == Some(self.me) && after != Some(self.me) {
                        lost.entry(after).or_default().insert(unit);
                    }
                    // A unit gained from another member: its sessions may be on the way. Also
                    // when that member is not listed any more: a member declared down by
                    // mistake (an overloaded host) still sends them. Not when the router found
                    // it dead too (two observers agree it is gone, item 4 of issue 16): its
                    // clients start fresh at once rather than after the hold.
                    match (before, after) {
                        (Some(old), Some(new)) if new == self.me && old != self.me => {
                            let gone = !members.contains(&old) && self.found_dead.contains(&old);
                            self.gains.insert(
                                unit,
                                Gain {
                                    from: Some(old),
                                    epoch,
                                    awaiting_until: if gone { None } else { await_until },
                                },
                            );
                        }
                        // A unit nobody owned (all weights zero, or a flap): its last owner
                        // kept its sessions meanwhile and sends them.
                        (None, Some(new)) if new == self.me && others_listed => {
                            let last = self.last_owner.get(unit).copied().flatten();
                            if let Some(old) = last.filter(|&o| o != self.me) {
                                self.gains.insert(
                                    unit,
                                    Gain {
                                        from: Some(old),
                                        epoch,
                                        awaiting_until: await_until,
                                    },
                                );
                            }
                        }
                        (_, after) if after != Some(self.me) => {
                            self.gains.remove(&unit);
                        }
                        _ => {}
                    }
                }
            }
        }

        self.found_dead.retain(|m| !members.contains(m));
        self.note_owners(allocation);
        // Sessions of clients we no longer serve, by the owner of their unit now.
        let unit = |c: &SocketAddr| match c {
            SocketAddr::V4(c) => slicing.unit_of(u32::from(*c.ip())),
            SocketAddr::V6(c) => unit6_of(slicing, *c.ip()),
        };
        let mut moved: BTreeMap<Option<MemberId>, Vec<(SocketAddr, Session)>> = BTreeMap::new();
        let gone: Vec<SocketAddr> = self
            .sessions
            .keys()
            .filter(|c| !self.owns(c))
            .copied()
            .collect();
        for client in gone {
            if let Some(s) = self.sessions.remove(&client) {
                moved
                    .entry(owners[unit(&client)])
                    .or_default()
                    .push((client, s));
            }
        }
        // Forwarded sessions whose slice came back are ours again; held datagrams of slices we
        // no longer own are dropped.
        let back: Vec<SocketAddr> = self
            .moved_out
            .keys()
            .filter(|c| self.owns(c))
            .copied()
            .collect();
        for client in back {
            if let Some(s) = self.moved_out.remove(&client) {
                self.sessions.insert(client, s);
            }
        }
        // Forwarding entries outlive a brief loss of the slice or a false down of the old
        // owner (a flapping allocation) but not the old owner's departure: one hold time
        // after it stops being listed, its clients start fresh here.
        for f in self.forward_to.values_mut() {
            if members.contains(&f.to) {
                f.unlisted_since = None;
            } else {
                f.unlisted_since.get_or_insert(now);
            }
        }
        let held = std::mem::take(&mut self.held);
        self.held = held.into_iter().filter(|(c, _)| self.owns(c)).collect();

        match self.strategy {
            Strategy::Reset => {
                let mut clients: Vec<SocketAddr> =
                    moved.into_values().flatten().map(|(c, _)| c).collect();
                clients.sort();
                for client in clients {
                    self.count(&client).resets += 1;
                    actions.push(Action::Reply(Reply {
                        to: client,
                        payload: reset_text(self.me),
                    }));
                }
            }
            Strategy::Handoff | Strategy::Forward => {
                // Sessions of units nobody owns now stay here (not served) until a commit
                // gives those units an owner, which then gets them.
                for (client, session) in moved.remove(&None).unwrap_or_default() {
                    self.sessions.insert(client, session);
                }
                let mut targets: BTreeMap<MemberId, BTreeSet<usize>> = BTreeMap::new();
                for (to, units) in lost {
                    if let Some(to) = to {
                        targets.entry(to).or_default().extend(units);
                    }
                }
                for (to, sessions) in &moved {
                    if let Some(to) = *to {
                        let units = targets.entry(to).or_default();
                        units.extend(sessions.iter().map(|(c, _)| unit(c)));
                    }
                }
                for (to, units) in targets {
                    let mut sessions = moved.remove(&Some(to)).unwrap_or_default();
                    sessions.sort_by_key(|(c, _)| *c);
                    let (mut records, mut records6) = (Vec::new(), Vec::new());
                    for (client, s) in &sessions {
                        self.count(client).handed_off += 1;
                        match client {
                            SocketAddr::V4(c) => records.push(SessionRecord {
                                addr: u32::from(*c.ip()),
                                port: c.port(),
                                count: s.count,
                                last_request: s.last_request,
                            }),
                            SocketAddr::V6(c) => records6.push(SessionRecord6 {
                                addr: c.ip().octets(),
                                port: c.port(),
                                count: s.count,
                                last_request: s.last_request,
                            }),
                        }
                    }
                    if self.strategy == Strategy::Forward {
                        self.moved_out.extend(sessions);
                    }
                    self.outgoing.insert((to, epoch));
                    let units = units.iter().map(|&u| u as u32).collect();
                    actions.push(Action::SendState {
                        to,
                        transfer_id: epoch,
                        data: StateTransfer::new(epoch, units, records, records6).encode(),
                    });
                }
            }
            // Pin relies on the router keeping old flows (VIP mode); natively nothing moves.
            _ => {}
        }

        // State that arrived before this commit.
        let early = std::mem::take(&mut self.early);
        for (from, t) in early {
            if t.epoch <= self.epoch {
                actions.extend(self.apply_state(now, from, t));
            } else {
                self.early.push((from, t));
            }
        }
        actions
    }

    /// State from an old owner (`Event::StateReceived`).
    pub fn handle_state(&mut self, now: Instant, from: MemberId, data: &[u8]) -> Vec<Action> {
        let t = match StateTransfer::decode(data) {
            Ok(t) => t,
            Err(_) => {
                self.counters.bad_state += 1;
                return Vec::new();
            }
        };
        if t.epoch > self.epoch {
            // The old owner committed first; keep it for our commit.
            if self.early.len() < MAX_EARLY_TRANSFERS {
                self.early.push((from, t));
            }
            return Vec::new();
        }
        self.apply_state(now, from, t)
    }

    fn apply_state(&mut self, now: Instant, from: MemberId, t: StateTransfer) -> Vec<Action> {
        // Only clients of units we gained from the sender: a member cannot plant sessions for
        // clients of another member's slices. Units whose old owner we do not know yet (our
        // first commit) wait for the previous allocation with the transfer kept.
        let covered: BTreeSet<usize> = t.units.iter().map(|&u| u as usize).collect();
        let unknown = self
            .gains
            .iter()
            .any(|(u, g)| g.from.is_none() && g.awaiting_until.is_some() && covered.contains(u));
        if unknown && self.unproven.len() < MAX_EARLY_TRANSFERS {
            self.unproven.push((from, t.clone()));
        }
        let from_sender = |_unit: usize, g: &Gain| g.from == Some(from) && g.epoch <= t.epoch;
        for (client, count, last_request) in t.clients() {
            let accepted = self
                .unit_of(&client)
                .and_then(|u| self.gains.get(&u).map(|g| from_sender(u, g)))
                .unwrap_or(false);
            if !accepted || !self.serves(&client) || self.sessions.contains_key(&client) {
                continue;
            }
            self.count(&client).received += 1;
            match self.strategy {
                Strategy::Forward => {
                    self.forward_to.insert(
                        client,
                        ForwardEntry {
                            to: from,
                            last_seen: now,
                            unlisted_since: None,
                        },
                    );
                }
                _ => {
                    self.sessions.insert(
                        client,
                        Session {
                            count,
                            last_seen: now,
                            last_request,
                        },
                    );
                }
            }
        }
        for (&unit, g) in self.gains.iter_mut() {
            if from_sender(unit, g) {
                g.awaiting_until = None;
            }
        }
        self.release_held(now, false)
    }

    /// Remembers each unit's owner, for units that later have none.
    fn note_owners(&mut self, allocation: &Allocation) {
        let owners = allocation.unit_owners();
        if self.last_owner.len() != owners.len() {
            self.last_owner = vec![None; owners.len()];
        }
        for (last, &o) in self.last_owner.iter_mut().zip(owners) {
            if o.is_some() {
                *last = o;
            }
        }
    }

    /// Answers held datagrams of clients no longer waiting (or all of them when `timed_out`).
    fn release_held(&mut self, now: Instant, timed_out: bool) -> Vec<Action> {
        let ready: Vec<SocketAddr> = self
            .held
            .keys()
            .filter(|c| !self.awaiting(c))
            .copied()
            .collect();
        let mut actions = Vec::new();
        for client in ready {
            if timed_out && !self.sessions.contains_key(&client) {
                self.count(&client).handoff_timeouts += 1;
            }
            for payload in self.held.remove(&client).unwrap_or_default() {
                actions.extend(self.handle_datagram(now, client, &payload));
            }
        }
        actions
    }

    /// The allocation the one of this member's first commit was made from (the control channel
    /// fetched it, `Event::PreviousAllocation`): it names the old owner of each unit gained
    /// then, and the transfers kept meanwhile are taken from those owners only. Units nobody
    /// else owned wait for nothing.
    pub fn handle_previous(&mut self, now: Instant, previous: &Allocation) -> Vec<Action> {
        let owners = previous.unit_owners();
        for (&unit, g) in self.gains.iter_mut() {
            if g.from.is_none() {
                match owners.get(unit).copied().flatten() {
                    Some(old) if old != self.me => g.from = Some(old),
                    _ => g.awaiting_until = None,
                }
            }
        }
        let mut actions = Vec::new();
        for (from, t) in std::mem::take(&mut self.unproven) {
            actions.extend(self.apply_state(now, from, t));
        }
        actions.extend(self.release_held(now, false));
        actions
    }

    /// Units this member owns that it gained from a member it knows, with the epoch of the
    /// move: in VIP mode the old owner serves their clients' older TCP connections (forward).
    pub fn gains_from_members(&self) -> impl Iterator<Item = (u32, MemberId, u64)> + '_ {
        self.gains
            .iter()
            .filter_map(|(&unit, g)| Some((u32::try_from(unit).ok()?, g.from?, g.epoch)))
    }

    /// Whether some gained unit still waits to learn its old owner (this member's first commit,
    /// until the old owner's transfer names the unit or the hold time passes).
    pub fn awaits_old_owners(&self) -> bool {
        self.gains
            .values()
            .any(|g| g.from.is_none() && g.awaiting_until.is_some())
    }

    /// The outcome of a [`Action::SendState`] (`TransferComplete`/`TransferFailed`, or the
    /// send refused).
    pub fn handle_transfer_done(&mut self, to: MemberId, transfer_id: u64) {
        self.outgoing.remove(&(to, transfer_id));
    }

    /// The next time [`Service::handle_timeout`] has something to do before the idle sweep.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let waits = self.gains.values().filter_map(|g| g.awaiting_until);
        let unlisted = self
            .forward_to
            .values()
            .filter_map(|f| Some(f.unlisted_since?.saturating_add(self.hold)));
        waits.chain(unlisted).min()
    }

    /// Forgets clients silent for the idle time, and stops waiting for state that did not come
    /// within the hold time: the held clients start fresh sessions.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let idle = self.idle;
        let alive = |last: Instant| now < last.saturating_add(idle);
        self.sessions.retain(|_, s| alive(s.last_seen));
        self.moved_out.retain(|_, s| alive(s.last_seen));
        let hold = self.hold;
        self.forward_to.retain(|_, f| {
            alive(f.last_seen)
                && f.unlisted_since
                    .is_none_or(|t| now < t.saturating_add(hold))
        });
        let mut expired = false;
        for g in self.gains.values_mut() {
            if g.awaiting_until.is_some_and(|t| now >= t) {
                g.awaiting_until = None;
                expired = true;
            }
        }
        if !self.awaits_old_owners() {
            self.unproven.clear();
        }
        if expired {
            self.release_held(now, true)
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "service_ipv6_tests.rs"]
mod ipv6_tests;
