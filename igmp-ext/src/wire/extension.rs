//! RFC 9279 extension TLVs: the list that follows the last group record of an IGMPv3 or MLDv2
//! report (or the source list of a query) when the E flag is set. The same TLV shape is reused inside
//! Manycast's own extension value, so one reader serves both levels.

use super::{need, read_u16, WireError, WireResult};

/// The E flag in the 16-bit Flags field of an IGMPv3 or MLDv2 report (RFC 9279 §3; bit 0 in
/// IANA's "IGMP/MLD Report Message Flags" registry, i.e. the most significant bit).
pub const REPORT_FLAG_EXTENSION: u16 = 0x8000;
/// The E flag in the Flags/S/QRV octet of an IGMPv3 or MLDv2 query (RFC 9279 §3).
pub const QUERY_FLAG_EXTENSION: u8 = 0x80;

/// Extension Type 0: No-op (RFC 9279 §6).
pub const TYPE_NOOP: u16 = 0x0000;
/// The first of the two Extension Types reserved for experimental use (RFC 9279 §6). Manycast's
/// signed slice join uses it until a code point is assigned; see `SPEC.md`.
pub const TYPE_EXPERIMENTAL_MANYCAST: u16 = 0xfffe;

const TLV_HEADER_LEN: usize = 4;

/// One TLV borrowed from a checked buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

impl Tlv<'_> {
    /// Bytes this TLV occupies on the wire.
    pub fn wire_len(&self) -> usize {
        TLV_HEADER_LEN + self.value.len()
    }
}

/// Splits `buf` into TLVs. Fails when a header or value runs past the end, so that the list
/// "leaves no data after the last TLV" (RFC 9279 §3) by construction. An empty buffer yields an
/// empty list; callers that need at least one TLV check that themselves.
pub fn parse_tlvs(mut buf: &[u8]) -> WireResult<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        need("extension TLV header", buf, TLV_HEADER_LEN)?;
        let kind = read_u16(buf, 0);
        let len = usize::from(read_u16(buf, 2));
        need("extension TLV value", buf, TLV_HEADER_LEN + len)?;
        out.push(Tlv {
            kind,
            value: &buf[TLV_HEADER_LEN..TLV_HEADER_LEN + len],
        });
        buf = &buf[TLV_HEADER_LEN + len..];
    }
    Ok(out)
}

/// Appends one TLV to `out`.
pub fn push_tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) -> WireResult<()> {
    let len = u16::try_from(value.len())
        .map_err(|_| WireError::Malformed("TLV value longer than 65535 bytes"))?;
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        push_tlv(&mut buf, TYPE_NOOP, &[]).unwrap();
        push_tlv(&mut buf, TYPE_EXPERIMENTAL_MANYCAST, &[1, 2, 3]).unwrap();
        assert_eq!(buf, [0, 0, 0, 0, 0xff, 0xfe, 0, 3, 1, 2, 3]);
        let tlvs = parse_tlvs(&buf).unwrap();
        assert_eq!(
            tlvs,
            vec![
                Tlv {
                    kind: 0,
                    value: &[]
                },
                Tlv {
                    kind: 0xfffe,
                    value: &[1, 2, 3]
                }
            ]
        );
    }

    #[test]
    fn rejects_overrun_and_trailing_bytes() {
        assert!(parse_tlvs(&[0xff, 0xfe, 0, 4, 1, 2, 3]).is_err());
        assert!(parse_tlvs(&[0, 0, 0, 0, 0x12]).is_err());
        assert!(push_tlv(&mut Vec::new(), 1, &vec![0; 70_000]).is_err());
    }
}
