//! The built-in reference UDP service with local slice filtering (sans-IO; BRIEF decision 8).
//! Owns the per-client session table and decides, for each datagram that reached this member,
//! whether it is ours to answer: behind a plain router every member receives every datagram, so
//! only the owner of the source's slice may reply. Reply format (ASCII, one line):
//! `m<member> <n>\n` where n counts that client's requests from 1; `m<member> reset\n` tells a
//! client that its session was dropped here (reset strategy).

use crate::config::Strategy;
use igmp_ext::{MemberId, SliceSet, Timestamp};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    /// Requests answered so far.
    count: u64,
    last_seen: Timestamp,
}

/// Counts for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Datagrams answered.
    pub served: u64,
    /// Datagrams from sources outside our slices (another member's clients).
    pub filtered: u64,
    /// Datagrams from new clients refused because the table was full.
    pub refused_full: u64,
    /// Reset replies produced when slices moved away.
    pub resets: u64,
}

/// A datagram to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub to: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// The session table and the filter.
#[derive(Debug)]
pub struct Service {
    me: MemberId,
    strategy: Strategy,
    slices: SliceSet,
    sessions: HashMap<SocketAddrV4, Session>,
    idle: Duration,
    max_sessions: usize,
    counters: ServiceCounters,
}

impl Service {
    pub fn new(me: MemberId, strategy: Strategy, idle: Duration, max_sessions: usize) -> Self {
        Service {
            me,
            strategy,
            slices: SliceSet::new(),
            sessions: HashMap::new(),
            idle,
            max_sessions,
            counters: ServiceCounters::default(),
        }
    }

    pub fn counters(&self) -> ServiceCounters {
        self.counters
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn slices(&self) -> &SliceSet {
        &self.slices
    }

    /// Whether this member answers `client` now.
    pub fn serves(&self, client: &SocketAddrV4) -> bool {
        self.slices.contains_addr(*client.ip())
    }

    /// A datagram from `from` arrived; returns the reply, if it is ours to answer. The payload
    /// is not interpreted, so nothing in it can make this fail.
    pub fn handle_datagram(&mut self, now: Timestamp, from: SocketAddrV4) -> Option<Reply> {
        if !self.serves(&from) {
            self.counters.filtered += 1;
            return None;
        }
        if !self.sessions.contains_key(&from) && self.sessions.len() >= self.max_sessions {
            self.counters.refused_full += 1;
            return None;
        }
        let session = self.sessions.entry(from).or_insert(Session {
            count: 0,
            last_seen: now,
        });
        session.count += 1;
        session.last_seen = now;
        self.counters.served += 1;
        Some(Reply {
            to: from,
            payload: format!("{} {}\n", self.me, session.count).into_bytes(),
        })
    }

    /// A new allocation: `slices` are ours from now on. Sessions of clients we no longer serve
    /// are dropped; under the reset strategy each of them gets a reset reply so that the client
    /// knows to start over with the new owner.
    pub fn set_slices(&mut self, slices: SliceSet) -> Vec<Reply> {
        self.slices = slices;
        let moved: Vec<SocketAddrV4> = self
            .sessions
            .keys()
            .filter(|c| !self.slices.contains_addr(*c.ip()))
            .copied()
            .collect();
        let mut replies = Vec::new();
        for client in moved {
            self.sessions.remove(&client);
            if self.strategy == Strategy::Reset {
                self.counters.resets += 1;
                replies.push(Reply {
                    to: client,
                    payload: format!("{} reset\n", self.me).into_bytes(),
                });
            }
        }
        replies.sort_by_key(|r| r.to);
        replies
    }

    /// Forgets clients silent for the idle time.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let idle = self.idle;
        self.sessions
            .retain(|_, s| now < s.last_seen.saturating_add(idle));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::Slice;
    use std::net::Ipv4Addr;

    const NOW: Timestamp = Timestamp::from_secs(1_000);

    fn client(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, last), port)
    }

    fn even() -> SliceSet {
        std::iter::once(Slice::new(0, 1)).collect()
    }

    fn service(strategy: Strategy) -> Service {
        let mut s = Service::new(MemberId(1), strategy, Duration::from_secs(60), 3);
        assert!(s.set_slices(even()).is_empty());
        s
    }

    #[test]
    fn counts_per_client_address_and_port() {
        let mut s = service(Strategy::Reset);
        let a = |s: &mut Service, c| s.handle_datagram(NOW, c).map(|r| r.payload);
        assert_eq!(a(&mut s, client(2, 7)), Some(b"m1 1\n".to_vec()));
        assert_eq!(a(&mut s, client(2, 7)), Some(b"m1 2\n".to_vec()));
        assert_eq!(a(&mut s, client(2, 8)), Some(b"m1 1\n".to_vec()));
        assert_eq!(a(&mut s, client(4, 7)), Some(b"m1 1\n".to_vec()));
        assert_eq!(s.counters().served, 4);
    }

    #[test]
    fn other_members_clients_are_filtered() {
        let mut s = service(Strategy::Reset);
        assert_eq!(s.handle_datagram(NOW, client(3, 7)), None);
        assert_eq!(s.counters().filtered, 1);
        assert_eq!(s.session_count(), 0);
        // Before any commit nothing is ours.
        let mut fresh = Service::new(MemberId(1), Strategy::Reset, Duration::from_secs(1), 9);
        assert_eq!(fresh.handle_datagram(NOW, client(2, 7)), None);
    }

    #[test]
    fn full_table_refuses_new_clients_but_serves_known_ones() {
        let mut s = service(Strategy::Reset);
        for p in 1..=3 {
            assert!(s.handle_datagram(NOW, client(2, p)).is_some());
        }
        assert_eq!(s.handle_datagram(NOW, client(2, 4)), None);
        assert_eq!(s.counters().refused_full, 1);
        assert!(s.handle_datagram(NOW, client(2, 1)).is_some());
    }

    #[test]
    fn reset_strategy_resets_moved_sessions_only() {
        let mut s = service(Strategy::Reset);
        s.handle_datagram(NOW, client(2, 7));
        s.handle_datagram(NOW, client(4, 7));
        s.handle_datagram(NOW, client(6, 7));
        // Now only addresses with bit 1 clear stay ours: 10.1.0.4 keeps its session.
        let replies = s.set_slices(std::iter::once(Slice::new(0, 3)).collect());
        let to: Vec<_> = replies.iter().map(|r| r.to).collect();
        assert_eq!(to, vec![client(2, 7), client(6, 7)]);
        assert!(replies.iter().all(|r| r.payload == b"m1 reset\n"));
        assert_eq!(s.counters().resets, 2);
        assert_eq!(s.session_count(), 1);
        assert_eq!(
            s.handle_datagram(NOW, client(4, 7)).map(|r| r.payload),
            Some(b"m1 2\n".to_vec())
        );
    }

    #[test]
    fn other_strategies_drop_moved_sessions_silently() {
        let mut s = service(Strategy::Pin);
        s.handle_datagram(NOW, client(2, 7));
        assert!(s.set_slices(SliceSet::new()).is_empty());
        assert_eq!(s.session_count(), 0);
    }

    #[test]
    fn idle_sessions_expire() {
        let mut s = service(Strategy::Reset);
        s.handle_datagram(NOW, client(2, 7));
        s.handle_timeout(NOW.saturating_add(Duration::from_secs(59)));
        assert_eq!(s.session_count(), 1);
        s.handle_timeout(NOW.saturating_add(Duration::from_secs(60)));
        assert_eq!(s.session_count(), 0);
        assert_eq!(
            s.handle_datagram(NOW, client(2, 7)).map(|r| r.payload),
            Some(b"m1 1\n".to_vec())
        );
    }
}
