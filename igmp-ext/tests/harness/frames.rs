//! Building full IGMP datagrams with our `Repr`s, and parsing received ones back, the way every
//! interop test needs them.

use igmp_ext::wire::igmp::{IgmpPacket, IgmpRepr, ReportRepr};
use igmp_ext::wire::ipv4::{Ipv4Packet, Ipv4Repr, PROTOCOL_IGMP};
use igmp_ext::wire::record::{GroupRecordRepr, RecordType};
use std::net::Ipv4Addr;

pub fn record(
    record_type: RecordType,
    group: Ipv4Addr,
    sources: &[Ipv4Addr],
) -> GroupRecordRepr<Ipv4Addr> {
    GroupRecordRepr {
        record_type,
        group,
        sources: sources.to_vec(),
        aux_data: vec![],
    }
}

/// A v3 report without extension.
pub fn report(records: Vec<GroupRecordRepr<Ipv4Addr>>) -> IgmpRepr {
    IgmpRepr::V3Report(ReportRepr {
        flags: 0,
        records,
        additional_data: vec![],
    })
}

pub fn emit_igmp(igmp: &IgmpRepr) -> Vec<u8> {
    let mut buf = vec![0; igmp.buffer_len()];
    igmp.emit(&mut buf);
    buf
}

/// A complete datagram as a host sends IGMP: ToS 0xc0, TTL 1, Router Alert (RFC 3376 §4).
pub fn datagram(src: Ipv4Addr, dst: Ipv4Addr, igmp: &IgmpRepr) -> Vec<u8> {
    igmp_ext::join::igmp_datagram(src, dst, &emit_igmp(igmp))
}

/// A datagram taken apart by our parsers.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub ip: Ipv4Repr,
    /// The IGMP message exactly as received (bounded by Total Length).
    pub igmp_bytes: Vec<u8>,
    pub igmp: IgmpRepr,
    pub checksum_ok: bool,
}

/// Parses with the checked views only, as a router would; any failure says which layer failed.
pub fn parse_datagram(bytes: &[u8]) -> Result<Parsed, String> {
    let ip = Ipv4Packet::new_checked(bytes).map_err(|e| format!("IPv4: {e}"))?;
    if ip.protocol() != PROTOCOL_IGMP {
        return Err(format!("IP protocol {} is not IGMP", ip.protocol()));
    }
    let igmp = IgmpPacket::new_checked(ip.payload()).map_err(|e| format!("IGMP: {e}"))?;
    let repr = IgmpRepr::parse(&igmp).map_err(|e| format!("IGMP repr: {e}"))?;
    Ok(Parsed {
        ip: Ipv4Repr::parse(&ip),
        igmp_bytes: ip.payload().to_vec(),
        checksum_ok: igmp.verify_checksum(),
        igmp: repr,
    })
}
