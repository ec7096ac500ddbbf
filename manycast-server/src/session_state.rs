//! The bytes an old owner sends a new owner when slices move (SPEC.md §11.5): the sessions of the
//! moved slices, postcard-encoded. Under `handoff` the receiver continues them; under `forward` it
//! learns which clients to pass on to the old owner. Decoding untrusted bytes never panics: a
//! malformed transfer is an error and changes nothing.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Format version carried first, so that a later layout is refused rather than misread.
pub const VERSION: u8 = 1;

/// One client's session as it moves between members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub addr: u32,
    pub port: u16,
    /// Requests answered so far: the next reply carries `count + 1`.
    pub count: u64,
    /// The last request id answered and the number it got (a retransmission of it gets the same).
    pub last_request: Option<(u64, u64)>,
}

impl SessionRecord {
    pub fn client(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.addr), self.port)
    }
}

/// Everything one old owner sends one new owner for one allocation epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTransfer {
    pub version: u8,
    /// The epoch whose commit moved the slices.
    pub epoch: u64,
    /// The allocation units (SPEC.md §6) that moved from sender to receiver: their sessions
    /// are all in `sessions`, so the receiver stops waiting for them.
    pub units: Vec<u32>,
    pub sessions: Vec<SessionRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed session state")]
    Malformed,
    #[error("session state version {0} is not supported")]
    Version(u8),
}

impl StateTransfer {
    pub fn new(epoch: u64, units: Vec<u32>, sessions: Vec<SessionRecord>) -> Self {
        StateTransfer {
            version: VERSION,
            epoch,
            units,
            sessions,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain integers and vectors into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes; trailing bytes are refused like any other malformation.
    pub fn decode(bytes: &[u8]) -> Result<StateTransfer, DecodeError> {
        let (t, rest): (StateTransfer, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| DecodeError::Malformed)?;
        if !rest.is_empty() {
            return Err(DecodeError::Malformed);
        }
        if t.version != VERSION {
            return Err(DecodeError::Version(t.version));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = StateTransfer::new(
            7,
            vec![2, 6],
            vec![SessionRecord {
                addr: 0x0a01_0002,
                port: 4000,
                count: 12,
                last_request: Some((12, 12)),
            }],
        );
        let bytes = t.encode();
        assert_eq!(StateTransfer::decode(&bytes), Ok(t.clone()));
        assert_eq!(
            t.sessions[0].client(),
            "10.1.0.2:4000".parse::<SocketAddrV4>().unwrap()
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(StateTransfer::decode(&longer), Err(DecodeError::Malformed));
        for n in 0..bytes.len() {
            assert!(StateTransfer::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(StateTransfer::decode(&v2), Err(DecodeError::Version(2)));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u32 = 0x1234_5678;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = StateTransfer::decode(&bytes);
        }
    }
}
