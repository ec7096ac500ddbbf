//! Slices of the IPv6 source space (issue 15, item 2): the same (value, mask) algebra and the
//! same bounded build as IPv4's, over 128-bit addresses, and the default IPv6 slicing, which
//! fixes bits of the site prefix only, so that a client keeps its server while its temporary
//! addresses change (SPEC.md §6.2).

use super::{SliceOf, SliceSetOf};
use core::fmt;
use core::net::Ipv6Addr;
use core::str::FromStr;

/// A slice of the IPv6 source space.
pub type Slice6 = SliceOf<u128>;
/// A set of slices of the IPv6 source space.
pub type SliceSet6 = SliceSetOf<u128>;

/// The prefix whose lowest bits the default IPv6 slicing fixes ([`SliceSet6::site_slicing`]):
/// /56, what RIPE-690 recommends delegating to a residential end site, so the bits just above
/// it tell sites apart while a site's own subnet id (bits 56..64) and every host's interface
/// identifier (the low 64 bits, where temporary addresses change) are left free.
pub const DEFAULT_SITE_PREFIX_LEN: u8 = 56;

impl SliceOf<u128> {
    /// The slice of addresses matching `value` under `mask`; bits of `value` outside the mask
    /// are dropped.
    pub const fn new(value: u128, mask: u128) -> Self {
        SliceOf {
            value: value & mask,
            mask,
        }
    }

    /// A CIDR prefix: the top `len` bits of `addr` (len 0..=128, clamped).
    pub fn prefix(addr: Ipv6Addr, len: u8) -> Self {
        let mask = match len.min(128) {
            0 => 0,
            n => u128::MAX << (128 - u32::from(n)),
        };
        Self::new(addr.into(), mask)
    }

    /// The lowest address in the slice: what a multicast address record lists for it.
    pub fn base(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.value)
    }

    pub fn contains_addr(&self, addr: Ipv6Addr) -> bool {
        self.contains(addr.into())
    }

    /// True when the mask fixes no bit of the low 64 (the interface identifier, RFC 4291
    /// §2.5.1): every address of a /64 is in the slice or none is, so a host's temporary
    /// addresses (RFC 8981) all fall in the same slices.
    pub const fn keeps_interface_ids_together(&self) -> bool {
        self.mask as u64 == 0
    }
}

impl SliceSetOf<u128> {
    /// The 2^bits slices that split the space by the `bits` lowest bits of its `prefix_len`-bit
    /// prefix (`prefix_len` clamped to `bits..=64`, `bits` to 24): the IPv6 counterpart of the
    /// IPv4 low-order slicing, one level up. Every mask bit lies in the /64 prefix.
    pub fn prefix_bits_slicing(bits: u8, prefix_len: u8) -> Vec<Slice6> {
        let bits = u32::from(bits.min(24));
        let prefix_len = u32::from(prefix_len.min(64)).max(bits);
        let shift = 128 - prefix_len;
        let mask = ((1u128 << bits) - 1) << shift;
        (0..1u128 << bits)
            .map(|v| Slice6::new(v << shift, mask))
            .collect()
    }

    /// The default IPv6 slicing: the `bits` lowest bits of the /56 ([`DEFAULT_SITE_PREFIX_LEN`]).
    /// A client stays in one slice while its interface identifier changes (temporary
    /// addresses) and while it moves between the subnets of its site.
    pub fn site_slicing(bits: u8) -> Vec<Slice6> {
        Self::prefix_bits_slicing(bits, DEFAULT_SITE_PREFIX_LEN)
    }

    /// The 2^bits slices that split the space by its `bits` highest bits (CIDR prefixes).
    pub fn prefix_slicing(bits: u8) -> Vec<Slice6> {
        let bits = u32::from(bits.min(24));
        if bits == 0 {
            return vec![Slice6::ALL];
        }
        let shift = 128 - bits;
        (0..1u128 << bits)
            .map(|v| Slice6::new(v << shift, u128::MAX << shift))
            .collect()
    }

    pub fn contains_addr(&self, addr: Ipv6Addr) -> bool {
        self.contains(addr.into())
    }

    /// True when the set covers the whole address space.
    pub fn is_full(&self) -> bool {
        SliceSet6::full().difference(self).is_empty()
    }
}

impl fmt::Display for Slice6 {
    /// CIDR (`2001:db8::/32`) when the mask is a prefix, else `value/mask` in IPv6 notation
    /// (`0:0:0:1::/0:0:0:ff::`: the eighth byte of the /64 prefix is 1).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = Ipv6Addr::from(self.value);
        if self.mask.leading_ones() + self.mask.trailing_zeros() == 128 {
            write!(f, "{value}/{}", self.mask.count_ones())
        } else {
            write!(f, "{value}/{}", Ipv6Addr::from(self.mask))
        }
    }
}

/// Why an IPv6 slice string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv6 slice {input:?}: expected ADDR/LEN or ADDR/MASK, for example 2001:db8::/32 or 0:0:0:1::/0:0:0:ff::")]
pub struct Slice6ParseError {
    input: String,
}

impl FromStr for Slice6 {
    type Err = Slice6ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || Slice6ParseError {
            input: s.to_owned(),
        };
        let (addr, rest) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv6Addr = addr.trim().parse().map_err(|_| err())?;
        let rest = rest.trim();
        if let Ok(len) = rest.parse::<u8>() {
            if len > 128 {
                return Err(err());
            }
            return Ok(Slice6::prefix(addr, len));
        }
        let mask: Ipv6Addr = rest.parse().map_err(|_| err())?;
        Ok(Slice6::new(addr.into(), mask.into()))
    }
}

#[cfg(test)]
#[path = "slice6_tests.rs"]
mod tests;
