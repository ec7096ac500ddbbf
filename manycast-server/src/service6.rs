//! The reference UDP service for IPv6 clients (sans-IO; SPEC.md §11.3), beside the IPv4 one
//! ([`crate::service`]) when `group6` is set. The same requests, replies and session numbers; the
//! slices are the IPv6 counterparts of the member's committed IPv4 units (unit i ↔ unit i of the
//! /56 site slicing, SPEC.md §6.2), exactly what its signed MLDv2 join claims
//! ([`crate::mld_agent::units6`]). A datagram from a source outside them is not answered and is
//! counted: the router steered it wrong, or it came straight from the link.
//!
//! Reallocation: a commit that takes units away drops their IPv6 sessions. Under `reset` each
//! moved client gets `m<member> reset\n`, as an IPv4 one does; `handoff` and `forward` do not
//! carry IPv6 sessions (their transfer encoding and the control channel's `Forward` are IPv4),
//! so under them a moved IPv6 client gets the reset reply too and starts over at the new owner;
//! under `pin` (no native meaning) moved sessions are dropped without a reply, as IPv4 ones are.

use crate::config::Strategy;
use crate::mld_agent::units6;
use crate::service::{reply_text, request_id, reset_text, Answer, Session};
use igmp_ext::alloc::Slicing;
use igmp_ext::slice::DEFAULT_SITE_PREFIX_LEN;
use igmp_ext::{Instant, MemberId, SliceEntry, SliceSet, SliceSet6};
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

/// Counts for metrics and tests (the IPv6 counterparts of [`crate::service::ServiceCounters`]'
/// first six).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Service6Counters {
    /// Datagrams answered.
    pub served: u64,
    /// Datagrams from sources outside our IPv6 slices, not answered.
    pub filtered: u64,
    /// Datagrams from new clients refused because the table was full.
    pub refused_full: u64,
    /// Reset replies sent when units moved away.
    pub resets: u64,
    /// Requests repeating the last request id, answered with the same number.
    pub retransmits: u64,
    /// Requests with an id below the last one answered, not answered.
    pub stale: u64,
}

/// A datagram to send back to an IPv6 client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply6 {
    pub to: SocketAddrV6,
    pub payload: Vec<u8>,
}

/// The IPv6 session table and filter.
#[derive(Debug)]
pub struct Service6 {
    me: MemberId,
    strategy: Strategy,
    /// The allocation's (IPv4) slicing: its unit count is the site slicing's.
    slicing: Slicing,
    slices: SliceSet6,
    /// The IPv6 counterparts of the standby units the router steers here until the next
    /// commit (SPEC.md §5.5).
    standing_in: SliceSet6,
    sessions: HashMap<SocketAddrV6, Session>,
    idle: Duration,
    max_sessions: usize,
    counters: Service6Counters,
}

/// The session key: address, port and scope (the flow label and nothing else is dropped).
fn key(client: SocketAddrV6) -> SocketAddrV6 {
    SocketAddrV6::new(*client.ip(), client.port(), 0, client.scope_id())
}

impl Service6 {
    pub fn new(
        me: MemberId,
        strategy: Strategy,
        slicing: Slicing,
        idle: Duration,
        max_sessions: usize,
    ) -> Self {
        Service6 {
            me,
            strategy,
            slicing,
            slices: SliceSet6::new(),
            standing_in: SliceSet6::new(),
            sessions: HashMap::new(),
            idle,
            max_sessions,
            counters: Service6Counters::default(),
        }
    }

    pub fn counters(&self) -> Service6Counters {
        self.counters
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The IPv6 slices answered now.
    pub fn slices(&self) -> &SliceSet6 {
        &self.slices
    }

    /// The allocation unit of an IPv6 source: the low `bits` bits of its /56 prefix, the
    /// index of its slice in `SliceSet6::site_slicing(bits)`.
    pub fn unit_of(&self, addr: Ipv6Addr) -> usize {
        let shift = 128 - u32::from(DEFAULT_SITE_PREFIX_LEN);
        let units = self.slicing.unit_count() as u128;
        ((u128::from(addr) >> shift) % units.max(1)) as usize
    }

    /// A datagram from `from` arrived on the IPv6 service socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddrV6,
        payload: &[u8],
    ) -> Option<Reply6> {
        let from = key(from);
        if !self.slices.contains_addr(*from.ip()) && !self.standing_in.contains_addr(*from.ip()) {
            self.counters.filtered += 1;
            return None;
        }
        if !self.sessions.contains_key(&from) && self.sessions.len() >= self.max_sessions {
            self.counters.refused_full += 1;
            return None;
        }
        let request = request_id(payload);
        let session = self
            .sessions
            .entry(from)
            .or_insert_with(|| Session::fresh(now));
        let n = match session.answer(now, request) {
            Answer::Next(n) => n,
            Answer::Again(n) => {
                self.counters.retransmits += 1;
                n
            }
            Answer::Stale => {
                self.counters.stale += 1;
                return None;
            }
        };
        self.counters.served += 1;
        Some(Reply6 {
            to: from,
            payload: reply_text(self.me, n, request),
        })
    }

    /// A commit gave this member `mine` (its IPv4 slices): the IPv6 slices follow, and the
    /// sessions of units that left are dropped, their clients told to start over except under
    /// `pin` (see the module documentation).
    pub fn handle_commit(&mut self, mine: &SliceSet) -> Vec<Reply6> {
        self.standing_in = SliceSet6::new();
        let entries: Vec<SliceEntry> = mine.iter().copied().map(SliceEntry::include).collect();
        self.slices = units6(self.slicing, &entries)
            .into_iter()
            .map(|e| e.slice)
            .collect();
        let slices = &self.slices;
        let mut moved: Vec<SocketAddrV6> = self
            .sessions
            .keys()
            .filter(|c| !slices.contains_addr(*c.ip()))
            .copied()
            .collect();
        moved.sort();
        for c in &moved {
            self.sessions.remove(c);
        }
        if self.strategy == Strategy::Pin {
            return Vec::new();
        }
        self.counters.resets += moved.len() as u64;
        moved
            .into_iter()
            .map(|to| Reply6 {
                to,
                payload: reset_text(self.me),
            })
            .collect()
    }

    /// Answers the IPv6 counterparts of `units` (IPv4 standby units) too until the next
    /// commit: the router steers them here, their owner found dead (SPEC.md §5.5). Empty: no
    /// longer.
    pub fn stand_in(&mut self, units: &SliceSet) {
        let entries: Vec<SliceEntry> = units.iter().copied().map(SliceEntry::include).collect();
        self.standing_in = units6(self.slicing, &entries)
            .into_iter()
            .map(|e| e.slice)
            .collect();
    }

    /// Forgets clients silent for the idle time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.idle;
        self.sessions
            .retain(|_, s| now < s.last_seen.saturating_add(idle));
    }
}

#[cfg(test)]
#[path = "service6_tests.rs"]
mod tests;
