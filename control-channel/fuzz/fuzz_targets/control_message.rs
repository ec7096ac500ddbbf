//! Any bytes as a control datagram: the parser and an endpoint that knows one peer never panic,
//! and a refused datagram changes nothing the endpoint exposes.
#![no_main]
use control_channel::wire::{self, Hello, Message};
use control_channel::{Clock, Config, Endpoint, Identity, Instant};
use igmp_ext::fixtures::{Fixture, NOW};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture::new(2))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = wire::parse(data) {
        assert_eq!(m.packet.signed_part().len() + wire::SIGNATURE_LEN, data.len());
    }
    let f = fixture();
    let now = Clock::new(Instant(0), NOW);
    let mut e = Endpoint::new(
        Config::new(f.group),
        Identity {
            key: f.members[0].key.clone(),
            certificate: f.members[0].cert.clone(),
        },
        f.group_key.verifying_key(),
        now,
    );
    let peer = &f.members[1];
    let hello = Message::Hello(Hello {
        certificate: peer.cert.as_bytes().to_vec(),
        weight: 1,
        reply_wanted: false,
    })
    .encode_signed(
        &wire::Header {
            cluster: u32::from(f.group),
            sender: peer.id,
            epoch: 0,
            sequence: 1,
            timestamp: NOW,
        },
        &peer.key,
    )
    .expect("fits");
    let from = "10.0.0.2:4000".parse().expect("address");
    e.handle_datagram(now, from, &hello).expect("hello accepted");
    let before = (e.live_members(), e.committed().cloned(), e.counters().accepted);
    if e.handle_datagram(now, from, data).is_err() {
        assert_eq!(
            before,
            (e.live_members(), e.committed().cloned(), e.counters().accepted)
        );
    }
});
