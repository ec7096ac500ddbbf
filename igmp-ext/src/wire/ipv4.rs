//! The IPv4 header, as far as IGMP needs it (RFC 791): addresses, TTL, ToS, the payload bounds
//! given by Total Length, and the Router Alert option (RFC 2113) that IGMPv3 reports carry.

use super::{checksum, need, read_u16, WireError, WireResult};
use core::net::Ipv4Addr;

/// IP protocol number of IGMP.
pub const PROTOCOL_IGMP: u8 = 0x02;
/// ToS byte IGMPv3 messages are sent with: precedence Internetwork Control (RFC 3376 §4).
pub const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;
/// The Router Alert option (RFC 2113 §2.1): copied flag, class 0, number 20, length 4, value 0.
pub const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    pub const OPTIONS: usize = 20;
}

/// Minimum IPv4 header length.
pub const HEADER_LEN: usize = field::OPTIONS;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A checked view of an IPv4 datagram.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version, header length, Total Length against the buffer, and the header checksum.
    /// Bytes past Total Length (link-layer padding) are allowed and ignored.
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let buf = buffer.as_ref();
        need("IPv4 header", buf, HEADER_LEN)?;
        if buf[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed("IP version is not 4"));
        }
        let header_len = usize::from(buf[field::VER_IHL] & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::Malformed("IPv4 header length below 20"));
        }
        need("IPv4 options", buf, header_len)?;
        let total = usize::from(read_u16(buf, field::LENGTH.start));
        if total < header_len {
            return Err(WireError::Malformed(
                "IPv4 total length below header length",
            ));
        }
        need("IPv4 payload", buf, total)?;
        if !checksum::verify(&buf[..header_len]) {
            return Err(WireError::Checksum);
        }
        // Walk the options once so that later getters can trust their structure.
        options_router_alert(&buf[HEADER_LEN..header_len])?;
        Ok(Ipv4Packet { buffer })
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buf()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn total_len(&self) -> usize {
        usize::from(read_u16(self.buf(), field::LENGTH.start))
    }

    pub fn tos(&self) -> u8 {
        self.buf()[field::TOS]
    }

    pub fn ttl(&self) -> u8 {
        self.buf()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buf()[field::PROTOCOL]
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buf()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buf()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// True for a fragment (MF set or a non-zero offset). IGMP is never fragmented legitimately.
    pub fn is_fragment(&self) -> bool {
        let f = read_u16(self.buf(), field::FLG_OFF.start);
        f & FLAG_MF != 0 || f & FRAG_OFFSET_MASK != 0
    }

    /// True when the options carry Router Alert (RFC 2113).
    pub fn router_alert(&self) -> bool {
        let opts = &self.buf()[HEADER_LEN..self.header_len()];
        options_router_alert(opts).unwrap_or(false)
    }

    /// The payload as bounded by Total Length.
    pub fn payload(&self) -> &[u8] {
        &self.buf()[self.header_len()..self.total_len()]
    }
}

/// Walks IPv4 options (RFC 791 §3.1) and reports whether Router Alert is among them.
fn options_router_alert(mut opts: &[u8]) -> WireResult<bool> {
    let mut found = false;
    while let Some(&kind) = opts.first() {
        match kind {
            0x00 => break,             // End of Option List
            0x01 => opts = &opts[1..], // No Operation
            _ => {
                let len = usize::from(
                    *opts
                        .get(1)
                        .ok_or(WireError::Malformed("IPv4 option without length"))?,
                );
                if len < 2 || len > opts.len() {
                    return Err(WireError::Malformed("IPv4 option length out of bounds"));
                }
                if kind == ROUTER_ALERT[0] && len == 4 {
                    found = true;
                }
                opts = &opts[len..];
            }
        }
    }
    Ok(found)
}

/// The IPv4 header fields we send. Emits a header with DF set and, when asked, Router Alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub router_alert: bool,
    pub payload_len: usize,
}

impl Ipv4Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Self {
        Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            router_alert: packet.router_alert(),
            payload_len: packet.payload().len(),
        }
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN
            + if self.router_alert {
                ROUTER_ALERT.len()
            } else {
                0
            }
    }

    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the header into `buf[..header_len()]` and fills its checksum.
    ///
    /// # Panics
    /// When `buf` is shorter than `header_len()` or the datagram would exceed 65535 bytes:
    /// both are caller bugs, not properties of received bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let header_len = self.header_len();
        let total =
            u16::try_from(self.buffer_len()).expect("IPv4 datagram longer than 65535 bytes");
        let buf = &mut buf[..header_len];
        buf[field::VER_IHL] = 0x40 | (header_len / 4) as u8;
        buf[field::TOS] = self.tos;
        buf[field::LENGTH].copy_from_slice(&total.to_be_bytes());
        buf[field::IDENT].copy_from_slice(&[0, 0]);
        buf[field::FLG_OFF].copy_from_slice(&FLAG_DF.to_be_bytes());
        buf[field::TTL] = self.ttl;
        buf[field::PROTOCOL] = self.protocol;
        buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
        buf[field::SRC].copy_from_slice(&self.src_addr.octets());
        buf[field::DST].copy_from_slice(&self.dst_addr.octets());
        if self.router_alert {
            buf[field::OPTIONS..field::OPTIONS + 4].copy_from_slice(&ROUTER_ALERT);
        }
        let c = checksum::compute(buf);
        buf[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An IGMPv3 report header as Linux sends it: ToS 0xc0, DF, TTL 1, Router Alert, to 224.0.0.22.
    const HEADER: [u8; 24] = [
        0x46, 0xc0, 0x00, 0x28, 0x00, 0x00, 0x40, 0x00, 0x01, 0x02, 0x00, 0x00, 0x0a, 0x00, 0x00,
        0x02, 0xe0, 0x00, 0x00, 0x16, 0x94, 0x04, 0x00, 0x00,
    ];

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 2),
            dst_addr: Ipv4Addr::new(224, 0, 0, 22),
            protocol: PROTOCOL_IGMP,
            ttl: 1,
            tos: TOS_INTERNETWORK_CONTROL,
            router_alert: true,
            payload_len: 16,
        }
    }

    #[test]
    fn emit_then_parse() {
        let r = repr();
        let mut buf = vec![0xa5; r.buffer_len()];
        r.emit(&mut buf);
        let mut expected = HEADER;
        let c = checksum::compute(&expected);
        expected[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(&buf[..24], &expected[..]);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p), r);
        assert!(!p.is_fragment());
        assert_eq!(p.payload().len(), 16);
    }

    #[test]
    fn rejects_bad_inputs() {
        let r = repr();
        let mut buf = vec![0; r.buffer_len()];
        r.emit(&mut buf);
        assert!(matches!(
            Ipv4Packet::new_checked(&buf[..10]),
            Err(WireError::Truncated { .. })
        ));
        let mut bad = buf.clone();
        bad[12] ^= 1;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Checksum
        );
        assert!(
            Ipv4Packet::new_checked(&buf[..30]).is_err(),
            "total length beyond buffer"
        );
        let mut v6 = buf.clone();
        v6[0] = 0x66;
        assert!(Ipv4Packet::new_checked(&v6[..]).is_err());
    }

    #[test]
    fn option_walk_never_panics() {
        for opts in [
            &[0x94u8][..],
            &[0x94, 0x00],
            &[0x94, 0x09, 0, 0],
            &[0x01, 0x01, 0x00, 0x44],
        ] {
            let _ = options_router_alert(opts);
        }
        assert_eq!(options_router_alert(&[0x01, 0x94, 0x04, 0, 0]), Ok(true));
    }
}
