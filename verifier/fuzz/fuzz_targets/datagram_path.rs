//! The router's whole datagram path: any bytes, cut into datagrams, through
//! `Router::handle_burst` (cheap checks, admission, batch verification, ownership, planning)
//! with the fixture's keys, then every output polled. No panic, no input slower than the
//! per-input time limit, and nothing but a fixture member's join is ever accepted.
//!
//! Each datagram also goes to `Router::handle_beacon`, as if from a member's address.
//!
//! Input: one control byte (bits 0-1: the arrival interface — members' link, clients' link,
//! unknown, one we do not serve; bit 2: a timer tick after each burst; bits 3-7: datagrams per
//! burst), then datagrams, each a big-endian u16 length and its bytes; bytes that do not make a
//! whole length-prefixed datagram are one last datagram.
#![no_main]
#[path = "common.rs"]
mod common;

use common::{datagrams, router, CLIENTS, MEMBERS};
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::GroupKeys;
use libfuzzer_sys::fuzz_target;
use manycast_verifier::core::{Event, NativeDataplane};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    static FIXTURE: OnceLock<(Fixture, HashMap<Ipv4Addr, Arc<GroupKeys>>)> = OnceLock::new();
    let (f, keys) = FIXTURE.get_or_init(|| {
        let f = Fixture::new(2);
        let keys = f.key_source();
        (f, keys)
    });
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let ifindex = [Some(MEMBERS), Some(CLIENTS), None, Some(99)][usize::from(control & 3)];
    let per_burst = usize::from(control >> 3).max(1);
    let mut r = router(NativeDataplane::Mroute, Vec::new(), |_| {});
    let mut now = NOW;
    for burst in datagrams(rest).chunks(per_burst) {
        let items: Vec<(Option<u32>, &[u8])> = burst.iter().map(|d| (ifindex, *d)).collect();
        r.handle_burst(now, &items, keys);
        // The same bytes as liveness beacons from a fixture member's address: a seed's join
        // makes a watched claim, whose chain no fuzzed beacon can advance.
        for d in burst {
            r.handle_beacon(
                now,
                d,
                std::net::SocketAddrV4::new(f.members[0].addr, 7410),
                MEMBERS,
            );
        }
        if control & 4 != 0 {
            now = now.saturating_add(Duration::from_millis(100));
            r.handle_timeout(now);
        }
        while let Some(e) = r.poll_event() {
            if let Event::JoinAccepted { member, .. } = e {
                // A fuzzer cannot forge Ed25519: an accepted join is a seed's, byte for byte.
                assert!(f.members.iter().any(|m| m.id == member));
            }
        }
        while let Some(op) = r.poll_op() {
            r.handle_op_result(&op, true);
        }
        while r.poll_transmit().is_some() {}
        while r.poll_notice().is_some() {}
    }
    let _ = r.status(now, &Default::default());
});
