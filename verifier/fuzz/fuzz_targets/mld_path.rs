//! The router's MLDv2 path: any bytes, cut into IPv6 datagrams, through
//! `Router::handle_mld_burst` (cheap checks, the admission shared with IGMPv3, verification,
//! IPv6 ownership, planning of the `manycast6` table) with a dual-stack fixture's keys, then
//! every output polled; now and then the socket overflows. No panic, no input slower than the
//! per-input time limit, and nothing but a fixture member's join is ever accepted.
//!
//! Input: one control byte (bits 0-1: the arrival interface — members' link, clients' link,
//! one we do not serve, another; bit 2: a timer tick after each burst; bits 3-7: datagrams per
//! burst), then datagrams, each a big-endian u16 length and its bytes; bytes that do not make a
//! whole length-prefixed datagram are one last datagram. A burst whose first byte is 0xff also
//! reports drops at the MLD socket's full queue.
#![no_main]
#[path = "common.rs"]
mod common;

use common::{datagrams, router, CLIENTS, MEMBERS};
use igmp_ext::fixtures::{Fixture, LINK6, NOW};
use igmp_ext::mld_verifier::GroupKeys6;
use igmp_ext::verify6::LinkTable6;
use igmp_ext::{Slice6, SliceSet6};
use libfuzzer_sys::fuzz_target;
use manycast_verifier::core::{Event, NativeDataplane};
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    type Keys6 = HashMap<Ipv6Addr, Arc<GroupKeys6>>;
    static FIXTURE: OnceLock<(Fixture, Keys6)> = OnceLock::new();
    let (f, keys6) = FIXTURE.get_or_init(|| {
        let f = Fixture::dual_stack(2, SliceSet6::full());
        let keys6 = f.key_source6();
        (f, keys6)
    });
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let ifindex = [MEMBERS, CLIENTS, 99, 0][usize::from(control & 3)];
    let per_burst = usize::from(control >> 3).max(1);
    let protected6 = vec![Slice6::prefix(
        Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0, 0),
        32,
    )];
    let mut r = router(NativeDataplane::Nft, protected6, |r| {
        let mut links6 = LinkTable6::new();
        links6.add(MEMBERS, LINK6);
        r.set_links6(links6);
    });
    let mut now = NOW;
    for burst in datagrams(rest).chunks(per_burst) {
        let items: Vec<(u32, &[u8])> = burst.iter().map(|d| (ifindex, *d)).collect();
        r.handle_mld_burst(now, &items, keys6);
        if burst.first().and_then(|d| d.first()) == Some(&0xff) {
            r.handle_mld_socket_overflow(now, 1);
        }
        if control & 4 != 0 {
            now = now.saturating_add(Duration::from_millis(100));
            r.handle_timeout(now);
        }
        while let Some(e) = r.poll_event() {
            if let Event::MldJoinAccepted { member, .. } = e {
                // A fuzzer cannot forge Ed25519: an accepted join is a seed's, byte for byte.
                assert!(f.members.iter().any(|m| m.id == member));
            }
        }
        while let Some(op) = r.poll_op() {
            r.handle_op_result(&op, true);
        }
        while r.poll_transmit().is_some() {}
        while r.poll_transmit6().is_some() {}
        while r.poll_notice().is_some() {}
    }
    let _ = r.status(now, &Default::default());
});
