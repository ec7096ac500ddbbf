//! Any bytes as a control datagram: the parser and an endpoint that knows one peer never panic,
//! and a refused datagram changes nothing the endpoint exposes. The cluster id in the header
//! picks the channel: the IPv6 control group's (SPEC.md §9.1) an IPv6 one, any other the IPv4
//! one; the datagram's length picks the source's family, so that no path trusts it (an IPv4
//! source on an IPv6 channel cannot happen, yet must not panic).
#![no_main]
use control_channel::wire::{self, Hello, Message};
use control_channel::{cluster_id6, Clock, Config, Endpoint, Identity, Instant};
use igmp_ext::cert::Ipv6Grant;
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::{MemberCertificate, SliceSet6};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x4d43, 1);

/// The fixture, and the peer's certificate reissued to list the IPv6 control group too.
fn fixture() -> &'static (Fixture, MemberCertificate) {
    static F: OnceLock<(Fixture, MemberCertificate)> = OnceLock::new();
    F.get_or_init(|| {
        let f = Fixture::new(2);
        let grant = Ipv6Grant {
            groups: vec![GROUP6],
            slices: SliceSet6::full(),
        };
        let body = f.members[1].cert.body().clone();
        let cert = body.issue_with_ipv6(&grant, &f.group_key).expect("issue");
        (f, cert)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = wire::parse(data) {
        assert_eq!(
            m.packet.signed_part().len() + wire::SIGNATURE_LEN,
            data.len()
        );
    }
    let (f, cert6) = fixture();
    let ipv6 = data.get(4..8) == Some(&cluster_id6(GROUP6).octets()[..]);
    let (config, cluster) = if ipv6 {
        (Config::new_ipv6(GROUP6), cluster_id6(GROUP6))
    } else {
        (Config::new(f.group), f.group)
    };
    let now = Clock::new(Instant(0), NOW);
    let mut e = Endpoint::new(
        config,
        Identity {
            key: f.members[0].key.clone(),
            certificate: f.members[0].cert.clone(),
        },
        f.group_key.verifying_key(),
        now,
    );
    let peer = &f.members[1];
    let hello = Message::Hello(Hello {
        certificate: cert6.as_bytes().to_vec(),
        weight: 1,
        reply_wanted: false,
    })
    .encode_signed(
        &wire::Header {
            cluster: u32::from(cluster),
            sender: peer.id,
            epoch: 0,
            sequence: 1,
            timestamp: NOW,
        },
        &peer.key,
    )
    .expect("fits");
    let from: SocketAddr = if data.len() % 2 == 0 {
        "10.0.0.2:4000".parse().expect("address")
    } else {
        "[fe80::2%3]:4000".parse().expect("address")
    };
    e.handle_datagram(now, from, &hello)
        .expect("hello accepted");
    let before = (
        e.live_members(),
        e.committed().cloned(),
        e.counters().accepted,
    );
    if e.handle_datagram(now, from, data).is_err() {
        assert_eq!(
            before,
            (
                e.live_members(),
                e.committed().cloned(),
                e.counters().accepted
            )
        );
    }
});
