//! Router-checked liveness (SPEC.md §5.5): a member proves to the routers on its link that it is
//! alive by revealing, every interval, the next value of a hash chain whose earlier point its
//! signed join carries. Each value hashes to the one before it, so a beacon costs the router a
//! few hashes and no signature, and nobody but the member, which alone holds the chain's seed,
//! can make the next one: an on-link host can copy a beacon it saw, never one the member has
//! not sent (issue 16, item 2).
//!
//! Sans-IO: the member builds a [`HashChain`] from a seed it draws; the router keeps a
//! [`ChainProgress`] per claim and advances it with each [`Beacon`].

use crate::cert::MemberId;
use core::net::Ipv4Addr;
use sha2::{Digest, Sha256};

/// Bytes of one chain value (128 bits: finding a preimage is the only way to forge a beacon).
pub const VALUE_LEN: usize = 16;

/// One value of a hash chain.
pub type ChainValue = [u8; VALUE_LEN];

const STEP_CONTEXT: &[u8] = b"manycast liveness v1\0";

/// The value revealed one step before `v`: `SHA-256(context || v)`, first 16 bytes.
pub fn step(v: &ChainValue) -> ChainValue {
    let digest = Sha256::new()
        .chain_update(STEP_CONTEXT)
        .chain_update(v)
        .finalize();
    let mut out = [0u8; VALUE_LEN];
    out.copy_from_slice(&digest[..VALUE_LEN]);
    out
}

/// The LIVENESS sub-TLV of a join (SPEC.md §3.2): "my beacons come every `interval_ms` from
/// chain `chain`, whose value at `index` is `value`". Signed with the join, so it is the point
/// the router checks later beacons against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LivenessAnchor {
    pub interval_ms: u16,
    /// Names the chain (the member draws it at random with the seed).
    pub chain: u64,
    pub index: u32,
    pub value: ChainValue,
}

impl LivenessAnchor {
    /// Encoded length: interval (2), chain (8), index (4), value (16).
    pub const LEN: usize = 30;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..2].copy_from_slice(&self.interval_ms.to_be_bytes());
        b[2..10].copy_from_slice(&self.chain.to_be_bytes());
        b[10..14].copy_from_slice(&self.index.to_be_bytes());
        b[14..30].copy_from_slice(&self.value);
        b
    }

    /// `None` unless `b` is exactly [`LivenessAnchor::LEN`] bytes with a non-zero interval.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        let interval_ms = u16::from_be_bytes([b[0], b[1]]);
        (interval_ms > 0).then(|| LivenessAnchor {
            interval_ms,
            chain: u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")),
            index: u32::from_be_bytes(b[10..14].try_into().expect("4 bytes")),
            value: b[14..30].try_into().expect("16 bytes"),
        })
    }
}

/// A member's chain: `len` values, revealed by increasing index, each hashing to the one before.
#[derive(Clone)]
pub struct HashChain {
    chain: u64,
    interval_ms: u16,
    /// `values[i]` is the value at index `i`; the last is the seed.
    values: Vec<ChainValue>,
}

impl core::fmt::Debug for HashChain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Not the values: the unrevealed ones are the member's secret.
        f.debug_struct("HashChain")
            .field("chain", &self.chain)
            .field("interval_ms", &self.interval_ms)
            .field("len", &self.values.len())
            .finish()
    }
}

impl HashChain {
    /// A chain of `len` values (at least 1) from a random `seed`, named `chain`.
    pub fn new(seed: ChainValue, chain: u64, interval_ms: u16, len: u32) -> Self {
        let len = len.max(1) as usize;
        let mut values = vec![seed; len];
        for i in (0..len - 1).rev() {
            values[i] = step(&values[i + 1]);
        }
        HashChain {
            chain,
            interval_ms: interval_ms.max(1),
            values,
        }
    }

    pub fn chain(&self) -> u64 {
        self.chain
    }

    pub fn interval_ms(&self) -> u16 {
        self.interval_ms
    }

    pub fn len(&self) -> u32 {
        self.values.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value at `index`, if the chain reaches that far.
    pub fn value(&self, index: u32) -> Option<ChainValue> {
        self.values.get(index as usize).copied()
    }

    /// The anchor a join signed at `index` carries.
    pub fn anchor(&self, index: u32) -> Option<LivenessAnchor> {
        Some(LivenessAnchor {
            interval_ms: self.interval_ms,
            chain: self.chain,
            index,
            value: self.value(index)?,
        })
    }

    /// The beacon for `index` on `group`.
    pub fn beacon(&self, group: Ipv4Addr, member: MemberId, index: u32) -> Option<Beacon> {
        Some(Beacon {
            group,
            member,
            chain: self.chain,
            index,
            value: self.value(index)?,
        })
    }
}

const BEACON_MAGIC: &[u8; 4] = b"MCLV";
const BEACON_VERSION: u8 = 1;

/// One liveness beacon (SPEC.md §5.5): UDP to 224.0.0.2 (all routers on the link), TTL 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beacon {
    pub group: Ipv4Addr,
    pub member: MemberId,
    pub chain: u64,
    pub index: u32,
    pub value: ChainValue,
}

/// Why a beacon's bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BeaconParseError {
    #[error("wrong length for a beacon or notice: {0} bytes")]
    Length(usize),
    #[error("not a Manycast liveness beacon or notice (magic)")]
    Magic,
    #[error("unsupported beacon version {0}")]
    Version(u8),
}

impl Beacon {
    /// magic (4), version (1), reserved (3), group (4), member (4), chain (8), index (4),
    /// value (16).
    pub const LEN: usize = 44;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(BEACON_MAGIC);
        b[4] = BEACON_VERSION;
        b[8..12].copy_from_slice(&self.group.octets());
        b[12..16].copy_from_slice(&self.member.0.to_be_bytes());
        b[16..24].copy_from_slice(&self.chain.to_be_bytes());
        b[24..28].copy_from_slice(&self.index.to_be_bytes());
        b[28..44].copy_from_slice(&self.value);
        b
    }

    /// Parses exactly one beacon; reserved bytes are ignored (a later version may use them).
    pub fn decode(b: &[u8]) -> Result<Self, BeaconParseError> {
        let b: &[u8; Self::LEN] = b
            .try_into()
            .map_err(|_| BeaconParseError::Length(b.len()))?;
        if &b[0..4] != BEACON_MAGIC {
            return Err(BeaconParseError::Magic);
        }
        if b[4] != BEACON_VERSION {
            return Err(BeaconParseError::Version(b[4]));
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Ok(Beacon {
            group: Ipv4Addr::from(u32_at(8)),
            member: MemberId(u32_at(12)),
            chain: u64::from_be_bytes(b[16..24].try_into().expect("8 bytes")),
            index: u32_at(24),
            value: b[28..44].try_into().expect("16 bytes"),
        })
    }
}

const NOTICE_MAGIC: &[u8; 4] = b"MCLS";
const NOTICE_ACTIVE: u8 = 0x01;

/// The router's word to a standby (SPEC.md §5.5): "I steer `dead`'s units of `group` at
/// `epoch` to you" (`active`), or "no longer" (not `active`). UDP from the router's address on
/// the link to the standby's address at the beacon port. Unauthenticated: it only tells the
/// member to answer what the router sends it, which behind a verifier is the router's choice
/// anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyNotice {
    pub group: Ipv4Addr,
    pub dead: MemberId,
    pub epoch: u64,
    pub active: bool,
}

impl StandbyNotice {
    /// magic (4), version (1), flags (1), reserved (2), group (4), dead member (4), epoch (8).
    pub const LEN: usize = 24;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(NOTICE_MAGIC);
        b[4] = BEACON_VERSION;
        b[5] = if self.active { NOTICE_ACTIVE } else { 0 };
        b[8..12].copy_from_slice(&self.group.octets());
        b[12..16].copy_from_slice(&self.dead.0.to_be_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, BeaconParseError> {
        let b: &[u8; Self::LEN] = b
            .try_into()
            .map_err(|_| BeaconParseError::Length(b.len()))?;
        if &b[0..4] != NOTICE_MAGIC {
            return Err(BeaconParseError::Magic);
        }
        if b[4] != BEACON_VERSION {
            return Err(BeaconParseError::Version(b[4]));
        }
        Ok(StandbyNotice {
            group: Ipv4Addr::new(b[8], b[9], b[10], b[11]),
            dead: MemberId(u32::from_be_bytes(b[12..16].try_into().expect("4 bytes"))),
            epoch: u64::from_be_bytes(b[16..24].try_into().expect("8 bytes")),
            active: b[5] & NOTICE_ACTIVE != 0,
        })
    }
}

/// Why a beacon did not advance a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BeaconError {
    #[error("beacon for chain {got:#x}, the claim's is {want:#x}")]
    OtherChain { got: u64, want: u64 },
    /// Not after the last value accepted: a copy, or older than what is known.
    #[error("index {index} is not after {last}")]
    NotNewer { index: u32, last: u32 },
    /// Further ahead than the router allows at this moment (it would cost that many hashes).
    #[error("index {index} is {gap} past {last}, more than {max_gap}")]
    TooFarAhead {
        index: u32,
        last: u32,
        gap: u32,
        max_gap: u32,
    },
    #[error("value at index {index} does not hash to the one at {last}")]
    BadValue { index: u32, last: u32 },
}

/// The router's knowledge of one chain: the newest value proven, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainProgress {
    pub chain: u64,
    pub index: u32,
    pub value: ChainValue,
}

impl From<LivenessAnchor> for ChainProgress {
    fn from(a: LivenessAnchor) -> Self {
        ChainProgress {
            chain: a.chain,
            index: a.index,
            value: a.value,
        }
    }
}

impl ChainProgress {
    /// Checks `beacon` against what is known and, if it proves a later value, records it. At
    /// most `max_gap` hashes: the caller bounds the work one datagram can cost. A refused
    /// beacon changes nothing.
    pub fn advance(&mut self, beacon: &Beacon, max_gap: u32) -> Result<(), BeaconError> {
        if beacon.chain != self.chain {
            return Err(BeaconError::OtherChain {
                got: beacon.chain,
                want: self.chain,
            });
        }
        let (index, last) = (beacon.index, self.index);
        if index <= last {
            return Err(BeaconError::NotNewer { index, last });
        }
        let gap = index - last;
        if gap > max_gap {
            return Err(BeaconError::TooFarAhead {
                index,
                last,
                gap,
                max_gap,
            });
        }
        let mut v = beacon.value;
        for _ in 0..gap {
            v = step(&v);
        }
        if v != self.value {
            return Err(BeaconError::BadValue { index, last });
        }
        self.index = index;
        self.value = beacon.value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);

    fn chain() -> HashChain {
        HashChain::new([7; VALUE_LEN], 0xfeed, 10, 100)
    }

    #[test]
    fn each_value_hashes_to_the_one_before() {
        let c = chain();
        for i in 1..c.len() {
            assert_eq!(step(&c.value(i).unwrap()), c.value(i - 1).unwrap());
        }
        assert_eq!(c.value(99), Some([7; VALUE_LEN]));
        assert_eq!(c.value(100), None);
    }

    #[test]
    fn beacons_advance_in_order_with_gaps_and_copies_do_not() {
        let c = chain();
        let mut p = ChainProgress::from(c.anchor(10).unwrap());
        let b = |i| c.beacon(G, MemberId(1), i).unwrap();
        assert_eq!(p.advance(&b(11), 8), Ok(()));
        assert_eq!(
            p.advance(&b(11), 8),
            Err(BeaconError::NotNewer {
                index: 11,
                last: 11
            })
        );
        assert_eq!(p.advance(&b(15), 8), Ok(()), "lost beacons leave a gap");
        assert!(matches!(
            p.advance(&b(40), 8),
            Err(BeaconError::TooFarAhead { gap: 25, .. })
        ));
        assert_eq!(p.index, 15);
    }

    #[test]
    fn a_value_nobody_revealed_cannot_be_made_and_a_wrong_one_changes_nothing() {
        let c = chain();
        let mut p = ChainProgress::from(c.anchor(10).unwrap());
        let before = p;
        // An on-link host has seen every value up to 10; it tries the next index with each.
        for seen in 0..=10 {
            let forged = Beacon {
                value: c.value(seen).unwrap(),
                ..c.beacon(G, MemberId(1), 11).unwrap()
            };
            assert!(matches!(
                p.advance(&forged, 8),
                Err(BeaconError::BadValue { .. })
            ));
        }
        let other = Beacon {
            chain: 1,
            ..c.beacon(G, MemberId(1), 11).unwrap()
        };
        assert!(matches!(
            p.advance(&other, 8),
            Err(BeaconError::OtherChain { .. })
        ));
        assert_eq!(p, before);
    }

    #[test]
    fn beacon_and_anchor_round_trip_and_bad_bytes_are_refused() {
        let b = chain().beacon(G, MemberId(42), 5).unwrap();
        assert_eq!(Beacon::decode(&b.encode()), Ok(b));
        let mut bytes = b.encode();
        bytes[0] = b'X';
        assert_eq!(Beacon::decode(&bytes), Err(BeaconParseError::Magic));
        bytes = b.encode();
        bytes[4] = 2;
        assert_eq!(Beacon::decode(&bytes), Err(BeaconParseError::Version(2)));
        assert_eq!(
            Beacon::decode(&bytes[..43]),
            Err(BeaconParseError::Length(43))
        );
        let n = StandbyNotice {
            group: G,
            dead: MemberId(7),
            epoch: 9,
            active: true,
        };
        assert_eq!(StandbyNotice::decode(&n.encode()), Ok(n));
        assert_eq!(
            StandbyNotice::decode(&b.encode()),
            Err(BeaconParseError::Length(Beacon::LEN))
        );
        let a = chain().anchor(3).unwrap();
        assert_eq!(LivenessAnchor::decode(&a.encode()), Some(a));
        assert_eq!(LivenessAnchor::decode(&a.encode()[..29]), None);
        let mut zero = a.encode();
        zero[0..2].copy_from_slice(&[0, 0]);
        assert_eq!(LivenessAnchor::decode(&zero), None, "interval 0 is refused");
    }
}
