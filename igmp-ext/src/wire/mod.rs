//! Checked views and `Repr`s for the bytes on the wire: IPv4 (only what IGMP needs), IGMP
//! v1/v2/v3 messages, IPv6 with its Hop-by-Hop header (only what MLD needs), MLDv1/v2 messages,
//! the group records IGMPv3 and MLDv2 share, and RFC 9279 extension TLVs.
//!
//! Every view follows the same shape: `Packet::new_checked(bytes)` is the only way in for untrusted
//! bytes; once it has returned `Ok`, no getter can panic. `Repr::parse` turns a view into owned
//! values; `Repr::emit` writes them back into a buffer of `buffer_len()` bytes.

pub mod extension;
pub mod igmp;
pub mod ipv4;
pub mod ipv6;
pub mod mld;
pub mod record;

use core::fmt;

/// Why bytes did not parse. Each variant says what was wrong with the bytes, never a caller bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the header or a length field announces.
    #[error("truncated: {what} needs {needed} bytes, {available} present")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    /// The Internet checksum (RFC 1071) does not sum to zero (for ICMPv6, with the pseudo-header).
    #[error("bad checksum")]
    Checksum,
    /// A field holds a value the format does not allow.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Well-formed bytes of a kind this parser does not handle (for example another IP protocol).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

pub type WireResult<T> = Result<T, WireError>;

/// Returns an error unless `buf` holds at least `needed` bytes.
pub(crate) fn need(what: &'static str, buf: &[u8], needed: usize) -> WireResult<()> {
    if buf.len() < needed {
        Err(WireError::Truncated {
            what,
            needed,
            available: buf.len(),
        })
    } else {
        Ok(())
    }
}

pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

pub(crate) fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(b)
}

/// The Internet checksum (RFC 1071), as used by IPv4 headers, IGMP (RFC 3376 §4.1.2) and ICMPv6
/// with its pseudo-header (RFC 4443 §2.3).
pub mod checksum {
    /// One's-complement sum of `data` folded to 16 bits (not yet inverted).
    pub fn sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            acc += u32::from(*last) << 8;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// One's-complement addition of two folded sums: the sum of two byte strings of even length
    /// laid end to end (a pseudo-header and a message, RFC 8200 §8.1).
    pub fn add(a: u16, b: u16) -> u16 {
        let s = u32::from(a) + u32::from(b);
        ((s & 0xffff) + (s >> 16)) as u16
    }

    /// The value to store in a zeroed checksum field so that the whole of `data` verifies.
    pub fn compute(data: &[u8]) -> u16 {
        !sum(data)
    }

    /// True when `data`, checksum field included, sums to 0xffff.
    pub fn verify(data: &[u8]) -> bool {
        sum(data) == 0xffff
    }
}

/// Shows bytes as lowercase hex, for error messages and `Debug` output.
pub(crate) struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 worked example: 0001 f203 f4f5 f6f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum::sum(&data), 0xddf2);
        assert_eq!(checksum::compute(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum::sum(&[0x12]), 0x1200);
    }

    #[test]
    fn verify_accepts_filled_checksum() {
        let mut data = [0x11, 0x64, 0x00, 0x00, 0, 0, 0, 0];
        let c = checksum::compute(&data);
        data[2..4].copy_from_slice(&c.to_be_bytes());
        assert!(checksum::verify(&data));
        data[5] ^= 1;
        assert!(!checksum::verify(&data));
    }
}
