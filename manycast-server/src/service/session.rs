//! One client's session and the texts of the reference service (SPEC.md §11.3), and where an
//! IPv6 client belongs: its session key and its allocation unit.

use crate::mld_agent::units6;
use igmp_ext::slice::DEFAULT_SITE_PREFIX_LEN;
use igmp_ext::{Instant, MemberId, SliceEntry, SliceSet, SliceSet6, Slicing};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

/// One client's session, of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Session {
    /// Requests answered so far.
    pub(super) count: u64,
    pub(super) last_seen: Instant,
    /// Last request id answered and its number.
    pub(super) last_request: Option<(u64, u64)>,
}

impl Session {
    pub(super) fn fresh(now: Instant) -> Self {
        Session {
            count: 0,
            last_seen: now,
            last_request: None,
        }
    }

    /// The number this request gets; a retransmission of the last request gets its number
    /// again, an older request id (a stale duplicate, e.g. held while the session moved) none.
    pub(super) fn answer(&mut self, now: Instant, request: Option<u64>) -> Answer {
        self.last_seen = now;
        if let (Some(r), Some((last, n))) = (request, self.last_request) {
            if r == last {
                return Answer::Again(n);
            }
            if r < last {
                return Answer::Stale;
            }
        }
        self.count += 1;
        if let Some(r) = request {
            self.last_request = Some((r, self.count));
        }
        Answer::Next(self.count)
    }
}

pub(super) enum Answer {
    Next(u64),
    Again(u64),
    Stale,
}

/// The request id of a datagram, if it carries one (`r<digits>`, surrounding whitespace
/// ignored); anything else is an anonymous request.
pub fn request_id(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    text.strip_prefix('r')?.parse().ok()
}

/// A reply's text: `m<member> <n>\n`, with ` r<k>` before the newline for a request id.
pub(super) fn reply_text(me: MemberId, n: u64, request: Option<u64>) -> Vec<u8> {
    match request {
        Some(r) => format!("{me} {n} r{r}\n"),
        None => format!("{me} {n}\n"),
    }
    .into_bytes()
}

/// The reset reply: `m<member> reset\n` (the client's next request starts a new session at
/// its slice's new owner).
pub(super) fn reset_text(me: MemberId) -> Vec<u8> {
    format!("{me} reset\n").into_bytes()
}

/// The session key of an IPv6 client: address, port and scope (the flow label is dropped).
pub(super) fn key(client: SocketAddr) -> SocketAddr {
    match client {
        SocketAddr::V6(c) => SocketAddr::V6(SocketAddrV6::new(*c.ip(), c.port(), 0, c.scope_id())),
        v4 => v4,
    }
}

/// The allocation unit of an IPv6 source under `slicing`: the low bits of its /56 prefix, the
/// index of its slice in `SliceSet6::site_slicing` (SPEC.md §6.2).
pub fn unit6_of(slicing: Slicing, addr: Ipv6Addr) -> usize {
    let shift = 128 - u32::from(DEFAULT_SITE_PREFIX_LEN);
    let units = slicing.unit_count() as u128;
    ((u128::from(addr) >> shift) % units.max(1)) as usize
}

/// The IPv6 counterparts of IPv4 units (what the member's MLDv2 join claims for them).
pub(super) fn slices6_of(slicing: Slicing, units: &SliceSet) -> SliceSet6 {
    let entries: Vec<SliceEntry> = units.iter().copied().map(SliceEntry::include).collect();
    units6(slicing, &entries)
        .into_iter()
        .map(|e| e.slice)
        .collect()
}
