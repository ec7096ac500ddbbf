//! Any bytes through the IPv6 and MLD views: no panic, and what parses re-emits to bytes that
//! parse to the same value with a checksum valid for the packet's addresses.
#![no_main]
use igmp_ext::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use igmp_ext::wire::mld::{MldPacket, MldRepr, ALL_MLDV2_ROUTERS};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv6Addr;

fn mld(data: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let Ok(packet) = MldPacket::new_checked(data) else { return };
    let _ = (packet.verify_checksum(src, dst), packet.additional_data().len(), packet.query_version());
    let _ = (packet.group_addr(), packet.query_sources().len(), packet.group_records().count());
    // The signed-join parser too: any bytes, any group protected; never a panic.
    let _ = igmp_ext::UnverifiedMldJoin::parse(&packet, |_| true);
    let Ok(repr) = MldRepr::parse(&packet) else { return };
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut out, src, dst);
    let again = MldPacket::new_checked(&out[..]).expect("our own bytes parse");
    assert!(again.verify_checksum(src, dst));
    assert_eq!(MldRepr::parse(&again).expect("and decode"), repr);
}

fuzz_target!(|data: &[u8]| {
    // The whole input as an IPv6 packet, then its payload as MLD; and the whole input as MLD.
    if let Ok(ip) = Ipv6Packet::new_checked(data) {
        let r = Ipv6Repr::parse(&ip);
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut out);
        let again = Ipv6Packet::new_checked(&out[..]).expect("our own header parses");
        assert_eq!(Ipv6Repr::parse(&again), r);
        mld(ip.payload(), r.src_addr, r.dst_addr);
    }
    mld(data, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1), ALL_MLDV2_ROUTERS);
});
