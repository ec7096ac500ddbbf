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
use igmp_ext::fixtures::{Fixture, LINK6, NOW};
use igmp_ext::mld_verifier::GroupKeys6;
use igmp_ext::verify::LinkTable;
use igmp_ext::verify6::LinkTable6;
use igmp_ext::{Slice, Slice6, SliceSet6, VerifierConfig};
use libfuzzer_sys::fuzz_target;
use manycast_verifier::admission::AdmissionConfig;
use manycast_verifier::core::{Event, KernelSetup, NativeDataplane, Request, Router, RouterConfig};
use manycast_verifier::plan::{GapPolicy, Interface};
use manycast_verifier::querier::QuerierConfig;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const MEMBERS: u32 = 1;
const CLIENTS: u32 = 2;

fn router() -> Router {
    let config = RouterConfig {
        verifier: VerifierConfig::default(),
        querier: QuerierConfig::default(),
        admission: AdmissionConfig {
            verify_per_second: 1_000,
            backlog: 64,
            ..AdmissionConfig::default()
        },
        gap: GapPolicy::Drop,
        route_plain_groups: true,
        idle_timeout: Duration::from_secs(60),
        adopt_grace: Duration::from_secs(3),
        keep_kernel_state: false,
        vips: Vec::new(),
        liveness: Default::default(),
        announce: Default::default(),
        control_groups: Vec::new(),
        protected6: vec![Slice6::prefix(Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0, 0), 32)],
    };
    let mut links = LinkTable::new();
    links.add(MEMBERS, Slice::prefix(Ipv4Addr::new(10, 0, 0, 0), 24));
    links.add(CLIENTS, Slice::prefix(Ipv4Addr::new(10, 1, 0, 0), 24));
    let iface = |name: &str, ifindex, addr, vif| Interface {
        name: name.into(),
        ifindex,
        addr,
        vif,
    };
    let setup = KernelSetup {
        dataplane: NativeDataplane::Nft,
        interfaces: vec![
            iface("s1", MEMBERS, Ipv4Addr::new(10, 0, 0, 200), 0),
            iface("c0", CLIENTS, Ipv4Addr::new(10, 1, 0, 1), 1),
        ],
        links,
        adopted_vifs: Vec::new(),
        mfc_entries: Vec::new(),
        netdev_table_left: false,
        control_table_left: false,
        vip_table_left: false,
        allmulti: Vec::new(),
    };
    let mut r = Router::new(NOW, config, setup);
    let mut links6 = LinkTable6::new();
    links6.add(MEMBERS, LINK6);
    r.set_links6(links6);
    r.handle_request(NOW, Request::Start);
    r
}

fn datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = data
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        match len {
            Some(len) if data.len() >= 2 + len => {
                out.push(&data[2..2 + len]);
                data = &data[2 + len..];
            }
            _ => {
                out.push(data);
                break;
            }
        }
    }
    out
}

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
    let mut r = router();
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
