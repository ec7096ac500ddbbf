//! The IPv6 header (RFC 8200 §3) and the Hop-by-Hop Options header (§4.3), as far as MLD needs
//! them: addresses, hop limit, the Router Alert option (RFC 2711) that every MLD message carries
//! (RFC 3810 §5), the upper-layer payload, and the pseudo-header of upper-layer checksums (§8.1).
//!
//! Extension headers other than Hop-by-Hop are refused as [`WireError::Unsupported`]: MLD messages
//! never carry them. Hop-by-Hop options are read as RFC 8200 §4.2 asks: Pad1 and PadN are skipped,
//! Router Alert is read, and an option of any other type is skipped when the two high bits of its
//! type are 00 and refused as `Unsupported` otherwise (01, 10 and 11 all say "discard the packet";
//! the ICMP Parameter Problem that 10 and 11 ask for is the receiving kernel's to send, not ours).

use super::{checksum, need, read_u16, read_u32, WireError, WireResult};
use core::net::Ipv6Addr;

/// Next Header value of the Hop-by-Hop Options header (RFC 8200 §4.3).
pub const NEXT_HEADER_HOP_BY_HOP: u8 = 0x00;
/// Next Header value of ICMPv6 (RFC 4443), which carries MLD.
pub const NEXT_HEADER_ICMPV6: u8 = 0x3a;
/// Router Alert value for MLD messages (RFC 2711 §2.1).
pub const ROUTER_ALERT_MLD: u16 = 0x0000;
/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// Length of the Hop-by-Hop header [`Ipv6Repr::emit`] writes: Router Alert and a PadN of two bytes,
/// as the Linux kernel sends MLD (RFC 3810 §5).
pub const HOP_BY_HOP_LEN: usize = 8;

/// Hop-by-Hop option types (RFC 8200 §4.2, RFC 2711 §2.1).
const OPT_PAD1: u8 = 0x00;
const OPT_PADN: u8 = 0x01;
const OPT_ROUTER_ALERT: u8 = 0x05;
/// The Router Alert option's data length.
const ROUTER_ALERT_DATA_LEN: u8 = 2;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// True for the Next Header values IANA lists as IPv6 extension headers ("IPv6 Extension Header
/// Types"): Hop-by-Hop, Routing, Fragment, ESP, AH, Destination Options, Mobility, HIP, Shim6 and
/// the two experimental values.
pub fn is_extension_header(next_header: u8) -> bool {
    matches!(
        next_header,
        0x00 | 0x2b | 0x2c | 0x32 | 0x33 | 0x3c | 0x87 | 0x8b | 0x8c | 0xfd | 0xfe
    )
}

/// A checked view of an IPv6 packet with at most a Hop-by-Hop header before its upper layer.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
    /// Where the upper-layer payload starts: after the fixed header and any Hop-by-Hop header.
    upper_offset: usize,
    upper_protocol: u8,
    router_alert: Option<u16>,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks the version, Payload Length against the buffer, the Hop-by-Hop header and its options,
    /// and that no other extension header follows. Bytes past Payload Length (link-layer padding)
    /// are allowed and ignored.
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let buf = buffer.as_ref();
        need("IPv6 header", buf, HEADER_LEN)?;
        if buf[0] >> 4 != 6 {
            return Err(WireError::Malformed("IP version is not 6"));
        }
        let payload_len = usize::from(read_u16(buf, field::PAYLOAD_LEN.start));
        let mut next = buf[field::NEXT_HEADER];
        if payload_len == 0 && next == NEXT_HEADER_HOP_BY_HOP {
            return Err(WireError::Unsupported(
                "IPv6 jumbogram (Payload Length 0 with Hop-by-Hop, RFC 2675)",
            ));
        }
        need("IPv6 payload", buf, HEADER_LEN + payload_len)?;
        let payload = &buf[HEADER_LEN..HEADER_LEN + payload_len];
        let mut upper_offset = HEADER_LEN;
        let mut router_alert = None;
        if next == NEXT_HEADER_HOP_BY_HOP {
            need("Hop-by-Hop header", payload, 2)?;
            let len = (usize::from(payload[1]) + 1) * 8;
            need("Hop-by-Hop options", payload, len)?;
            router_alert = walk_options(&payload[2..len])?;
            next = payload[0];
            upper_offset += len;
        }
        if next == NEXT_HEADER_HOP_BY_HOP {
            // RFC 8200 §4.1: Hop-by-Hop may only follow the IPv6 header immediately.
            return Err(WireError::Malformed(
                "Hop-by-Hop header not directly after the IPv6 header",
            ));
        }
        if is_extension_header(next) {
            return Err(WireError::Unsupported(
                "IPv6 extension header other than Hop-by-Hop",
            ));
        }
        Ok(Ipv6Packet {
            buffer,
            upper_offset,
            upper_protocol: next,
            router_alert,
        })
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn traffic_class(&self) -> u8 {
        (read_u32(self.buf(), field::VER_TC_FLOW.start) >> 20) as u8
    }

    pub fn flow_label(&self) -> u32 {
        read_u32(self.buf(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }

    /// The Payload Length field: extension headers and upper layer together.
    pub fn payload_len(&self) -> usize {
        usize::from(read_u16(self.buf(), field::PAYLOAD_LEN.start))
    }

    /// The Next Header field of the fixed header (0 when a Hop-by-Hop header follows).
    pub fn next_header(&self) -> u8 {
        self.buf()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buf()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buf()[field::SRC]))
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buf()[field::DST]))
    }

    pub fn has_hop_by_hop(&self) -> bool {
        self.next_header() == NEXT_HEADER_HOP_BY_HOP
    }

    /// The Router Alert value (RFC 2711: 0 for MLD) when the Hop-by-Hop header carries the option.
    pub fn router_alert(&self) -> Option<u16> {
        self.router_alert
    }

    /// The protocol of the upper layer, after any Hop-by-Hop header (58 for ICMPv6).
    pub fn upper_layer_protocol(&self) -> u8 {
        self.upper_protocol
    }

    /// Bytes before the upper layer: the fixed header and any Hop-by-Hop header.
    pub fn header_len(&self) -> usize {
        self.upper_offset
    }

    /// The upper-layer message as bounded by Payload Length.
    pub fn payload(&self) -> &[u8] {
        &self.buf()[self.upper_offset..HEADER_LEN + self.payload_len()]
    }
}

fn addr(b: &[u8]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    o
}

/// Walks Hop-by-Hop options (RFC 8200 §4.2) and returns the Router Alert value if present.
fn walk_options(mut opts: &[u8]) -> WireResult<Option<u16>> {
    let mut router_alert = None;
    while let Some(&kind) = opts.first() {
        if kind == OPT_PAD1 {
            opts = &opts[1..];
            continue;
        }
        let len = usize::from(
            *opts
                .get(1)
                .ok_or(WireError::Malformed("Hop-by-Hop option without length"))?,
        );
        let data = opts.get(2..2 + len).ok_or(WireError::Malformed(
            "Hop-by-Hop option runs past its header",
        ))?;
        match kind {
            OPT_PADN => {}
            OPT_ROUTER_ALERT => {
                if len != usize::from(ROUTER_ALERT_DATA_LEN) {
                    return Err(WireError::Malformed("Router Alert option length is not 2"));
                }
                if router_alert.is_some() {
                    // RFC 2711 §2.1 defines one value per packet; two could disagree.
                    return Err(WireError::Malformed("two Router Alert options"));
                }
                router_alert = Some(read_u16(data, 0));
            }
            // RFC 8200 §4.2: 00 in the two high bits means "skip over this option".
            unknown if unknown >> 6 == 0 => {}
            _ => {
                return Err(WireError::Unsupported(
                    "Hop-by-Hop option whose type says to discard the packet",
                ))
            }
        }
        opts = &opts[2 + len..];
    }
    Ok(router_alert)
}

/// One's-complement sum (not inverted) of the upper-layer pseudo-header (RFC 8200 §8.1):
/// source, destination, upper-layer packet length (32 bits), three zero bytes, next header.
pub fn pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, upper_len: u32, next_header: u8) -> u16 {
    let mut ph = [0u8; 40];
    ph[0..16].copy_from_slice(&src.octets());
    ph[16..32].copy_from_slice(&dst.octets());
    ph[32..36].copy_from_slice(&upper_len.to_be_bytes());
    ph[39] = next_header;
    checksum::sum(&ph)
}

/// The IPv6 header fields we send, and, when `router_alert` is set, the 8-byte Hop-by-Hop header
/// (Router Alert, PadN) MLD messages carry. `next_header` is the upper layer's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    /// The upper-layer protocol (58 for ICMPv6), never an extension header.
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
    /// The Router Alert value (RFC 2711); [`ROUTER_ALERT_MLD`] for MLD.
    pub router_alert: Option<u16>,
    /// Bytes of the upper-layer message (Payload Length less the Hop-by-Hop header).
    pub payload_len: usize,
}

impl Ipv6Repr {
    /// The fields of a checked packet. A Hop-by-Hop header without Router Alert (padding or
    /// skippable options only) is not represented: `emit` writes one only for Router Alert.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Self {
        Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.upper_layer_protocol(),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
            router_alert: packet.router_alert(),
            payload_len: packet.payload().len(),
        }
    }

    /// Bytes before the upper layer.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
            + if self.router_alert.is_some() {
                HOP_BY_HOP_LEN
            } else {
                0
            }
    }

    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Checks what the header can express and what [`Ipv6Packet`] accepts back.
    pub fn validate(&self) -> WireResult<()> {
        if self.flow_label > 0x000f_ffff {
            return Err(WireError::Malformed("flow label wider than 20 bits"));
        }
        if is_extension_header(self.next_header) {
            return Err(WireError::Malformed(
                "next header names an extension header; only Hop-by-Hop is emitted",
            ));
        }
        let hop_by_hop = self.header_len() - HEADER_LEN;
        if self.payload_len > usize::from(u16::MAX) - hop_by_hop {
            return Err(WireError::Malformed("IPv6 payload longer than 65535 bytes"));
        }
        Ok(())
    }

    /// Writes the header (and Hop-by-Hop header) into `buf[..header_len()]`.
    ///
    /// # Panics
    /// When `validate()` fails or `buf` is shorter than `header_len()`: caller bugs, not
    /// properties of received bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        self.validate()
            .expect("IPv6 header exceeds what its fields can express");
        let payload_len = (self.buffer_len() - HEADER_LEN) as u16;
        let buf = &mut buf[..self.header_len()];
        let vtf = (6u32 << 28) | (u32::from(self.traffic_class) << 20) | self.flow_label;
        buf[field::VER_TC_FLOW].copy_from_slice(&vtf.to_be_bytes());
        buf[field::PAYLOAD_LEN].copy_from_slice(&payload_len.to_be_bytes());
        buf[field::HOP_LIMIT] = self.hop_limit;
        buf[field::SRC].copy_from_slice(&self.src_addr.octets());
        buf[field::DST].copy_from_slice(&self.dst_addr.octets());
        match self.router_alert {
            None => buf[field::NEXT_HEADER] = self.next_header,
            Some(value) => {
                buf[field::NEXT_HEADER] = NEXT_HEADER_HOP_BY_HOP;
                let [hi, lo] = value.to_be_bytes();
                // Next Header, Hdr Ext Len 0 (8 bytes), Router Alert, PadN with no data bytes.
                buf[HEADER_LEN..HEADER_LEN + HOP_BY_HOP_LEN].copy_from_slice(&[
                    self.next_header,
                    0x00,
                    OPT_ROUTER_ALERT,
                    ROUTER_ALERT_DATA_LEN,
                    hi,
                    lo,
                    OPT_PADN,
                    0x00,
                ]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);

    /// An MLDv2 report's header as Linux sends it, written out from RFC 8200 §3 and §4.3:
    /// version 6, class 0, flow 0, Payload Length 8 + 28, Next Header 0 (Hop-by-Hop), hop limit
    /// 1, fe80::1 → ff02::16; then Next Header 58, Hdr Ext Len 0, Router Alert 05 02 0000, PadN 01 00.
    const HEADER: [u8; 48] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00,
        0x01, // ver/class/flow, length 36, HbH, hop 1
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // src fe80::1
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16, // dst ff02::16
        0x3a, 0x00, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00, // HbH: ICMPv6, RA 0, PadN
    ];

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: SRC,
            dst_addr: DST,
            next_header: NEXT_HEADER_ICMPV6,
            hop_limit: 1,
            traffic_class: 0,
            flow_label: 0,
            router_alert: Some(ROUTER_ALERT_MLD),
            payload_len: 28,
        }
    }

    #[test]
    fn emit_then_parse_byte_exact() {
        let r = repr();
        let mut buf = vec![0xa5; r.buffer_len()];
        r.emit(&mut buf);
        assert_eq!(&buf[..48], &HEADER[..]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), r);
        assert_eq!(p.header_len(), 48);
        assert_eq!(p.payload_len(), 36);
        assert!(p.has_hop_by_hop());
        assert_eq!(p.payload(), &[0xa5; 28][..]);
    }

    #[test]
    fn without_hop_by_hop_and_with_padding() {
        let r = Ipv6Repr {
            router_alert: None,
            traffic_class: 0xc0,
            flow_label: 0x12345,
            ..repr()
        };
        let mut buf = vec![0xa5; r.buffer_len() + 6];
        r.emit(&mut buf);
        assert_eq!(&buf[..4], &[0x6c, 0x01, 0x23, 0x45]);
        assert_eq!(buf[6], NEXT_HEADER_ICMPV6);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), r, "link padding is ignored");
        assert_eq!(p.payload().len(), 28);
    }

    fn with_options(opts: &[u8]) -> WireResult<Option<u16>> {
        // A Hop-by-Hop header of 8 or 16 bytes holding `opts` (6 or 14 bytes).
        let mut pkt = HEADER[..40].to_vec();
        let hbh_len = opts.len() + 2;
        pkt[5] = hbh_len as u8;
        pkt.extend_from_slice(&[0x3a, (hbh_len / 8 - 1) as u8]);
        pkt.extend_from_slice(opts);
        Ipv6Packet::new_checked(&pkt[..]).map(|p| p.router_alert())
    }

    #[test]
    fn hop_by_hop_options() {
        assert_eq!(
            with_options(&[0x05, 0x02, 0x00, 0x00, 0x01, 0x00]),
            Ok(Some(0))
        );
        assert_eq!(
            with_options(&[0x00, 0x00, 0x05, 0x02, 0x00, 0x01]),
            Ok(Some(1))
        );
        assert_eq!(with_options(&[0x01, 0x04, 0, 0, 0, 0]), Ok(None));
        // Unknown type 0x1e (high bits 00) is skipped; 0x5e (01), 0x9e (10), 0xde (11) discard.
        assert_eq!(
            with_options(&[0x1e, 0x00, 0x05, 0x02, 0x00, 0x00]),
            Ok(Some(0))
        );
        for t in [0x5e, 0x9e, 0xde] {
            assert!(matches!(
                with_options(&[t, 0x00, 0x05, 0x02, 0x00, 0x00]),
                Err(WireError::Unsupported(_))
            ));
        }
        let malformed = [
            &[0x05u8, 0x03, 0x00, 0x00, 0x00, 0x00][..], // Router Alert of 3 bytes
            &[0x01, 0x05, 0, 0, 0, 0],                   // PadN past the end
            &[0x00, 0x00, 0x00, 0x00, 0x00, 0x01],       // option type without length
            &[0x05, 0x02, 0, 0, 0x05, 0x02, 0, 0, 0, 0, 0, 0, 0, 0], // two Router Alerts
        ];
        for opts in malformed {
            assert!(
                matches!(with_options(opts), Err(WireError::Malformed(_))),
                "{opts:02x?}"
            );
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let mut buf = vec![0; repr().buffer_len()];
        repr().emit(&mut buf);
        assert!(matches!(
            Ipv6Packet::new_checked(&buf[..39]),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            Ipv6Packet::new_checked(&buf[..70]),
            Err(WireError::Truncated { .. })
        ));
        let mut v4 = buf.clone();
        v4[0] = 0x45;
        assert!(matches!(
            Ipv6Packet::new_checked(&v4[..]),
            Err(WireError::Malformed(_))
        ));
        let mut jumbo = buf.clone();
        jumbo[4..6].copy_from_slice(&[0, 0]);
        assert!(matches!(
            Ipv6Packet::new_checked(&jumbo[..]),
            Err(WireError::Unsupported(_))
        ));
        for ext in [0x2b, 0x2c, 0x3c, 0x33] {
            let mut other = buf.clone();
            other[40] = ext;
            assert!(matches!(
                Ipv6Packet::new_checked(&other[..]),
                Err(WireError::Unsupported(_))
            ));
        }
        let mut twice = buf.clone();
        twice[40] = NEXT_HEADER_HOP_BY_HOP;
        assert!(matches!(
            Ipv6Packet::new_checked(&twice[..]),
            Err(WireError::Malformed(_))
        ));
        let mut long_hbh = buf.clone();
        long_hbh[41] = 4; // 40 bytes of options announced, 34 bytes of payload present
        assert!(matches!(
            Ipv6Packet::new_checked(&long_hbh[..]),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn validate_refuses_what_parse_would_not_give_back() {
        let bad = [
            Ipv6Repr {
                flow_label: 0x10_0000,
                ..repr()
            },
            Ipv6Repr {
                next_header: 0x2c,
                ..repr()
            },
            Ipv6Repr {
                payload_len: 65535 - 7,
                ..repr()
            },
            Ipv6Repr {
                payload_len: usize::MAX,
                ..repr()
            },
        ];
        for r in bad {
            assert!(r.validate().is_err(), "{r:?}");
        }
        assert!(Ipv6Repr {
            payload_len: 65535 - 8,
            ..repr()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn pseudo_header_layout() {
        // RFC 8200 §8.1: the sum of src, dst, length and next header words, folded.
        let s = pseudo_header_sum(SRC, DST, 28, NEXT_HEADER_ICMPV6);
        let words: u32 = 0xfe80 + 0x0001 + 0xff02 + 0x0016 + 28 + 0x3a;
        let folded = (words & 0xffff) + (words >> 16);
        assert_eq!(u32::from(s), folded);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn repr() -> impl Strategy<Value = Ipv6Repr> {
            (
                any::<u128>(),
                any::<u128>(),
                any::<u8>().prop_filter("upper layer", |n| !is_extension_header(*n)),
                any::<u8>(),
                any::<u8>(),
                0u32..0x10_0000,
                any::<Option<u16>>(),
                0usize..64,
            )
                .prop_map(|(s, d, nh, hop, tc, flow, ra, len)| Ipv6Repr {
                    src_addr: Ipv6Addr::from(s),
                    dst_addr: Ipv6Addr::from(d),
                    next_header: nh,
                    hop_limit: hop,
                    traffic_class: tc,
                    flow_label: flow,
                    router_alert: ra,
                    payload_len: len,
                })
        }

        proptest! {
            #[test]
            fn emit_parse_round_trip(r in repr()) {
                let mut buf = vec![0xa5; r.buffer_len()];
                r.emit(&mut buf);
                let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
                prop_assert_eq!(Ipv6Repr::parse(&p), r);
            }

            #[test]
            fn arbitrary_bytes(mut bytes in prop::collection::vec(any::<u8>(), 0..96)) {
                // Make the version and length plausible half of the time, so that the
                // Hop-by-Hop walk sees arbitrary options.
                if bytes.len() >= 48 && bytes[0] & 1 == 0 {
                    bytes[0] = 0x60;
                    bytes[4] = 0;
                    bytes[5] = (bytes.len() - 40) as u8;
                    bytes[6] = 0;
                }
                if let Ok(p) = Ipv6Packet::new_checked(&bytes[..]) {
                    let r = Ipv6Repr::parse(&p);
                    prop_assert_eq!(r.payload_len, p.payload().len());
                    prop_assert!(p.header_len() + p.payload().len() <= bytes.len());
                }
            }
        }
    }
}
