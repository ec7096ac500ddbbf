//! Any bytes through the IPv4 and IGMP views: no panic, and what parses re-emits to bytes that
//! parse to the same value.
#![no_main]
use igmp_ext::wire::igmp::{IgmpPacket, IgmpRepr};
use igmp_ext::wire::ipv4::Ipv4Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ip) = Ipv4Packet::new_checked(data) {
        let _ = (ip.router_alert(), ip.payload().len(), ip.is_fragment());
    }
    let Ok(packet) = IgmpPacket::new_checked(data) else { return };
    let _ = (packet.verify_checksum(), packet.additional_data().len(), packet.query_version());
    let Ok(repr) = IgmpRepr::parse(&packet) else { return };
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut out);
    let again = IgmpRepr::parse(&IgmpPacket::new_checked(&out[..]).expect("our own bytes parse")).expect("and decode");
    assert_eq!(again, repr);
});
