//! The scope a proposal allocates within (SPEC.md §9.1, issue 14 item 2): a site's control group
//! shares only the units the upper group gave its site. On the wire it follows the proposal's
//! postcard body as a tagged extension, so a proposal without a scope is byte for byte what
//! members before it send and accept, and one with a scope is refused by them as malformed
//! (trailing bytes) rather than misread.

use super::{ParseError, Proposal};
use serde::{Deserialize, Serialize};

/// Units a group allocates among its members: the upper group's committed epoch that gave
/// them, and one entry per unit of the slicing, by unit number (`true`: in scope).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    pub upper_epoch: u64,
    pub units: Vec<bool>,
}

impl Scope {
    /// Whether two (optional) scopes name the same units: the commit rule's test (SPEC.md
    /// §9.4). A new upper epoch with the same units changes nothing here.
    pub fn same_units(a: Option<&Scope>, b: Option<&Scope>) -> bool {
        a.map(|s| &s.units) == b.map(|s| &s.units)
    }
}

/// Tag of the scope extension after a proposal's body.
pub const SCOPE_TAG: u8 = 0x01;
/// Most units a scope may name: as many as an allocation may have.
const MAX_SCOPE_UNITS: usize = 1 << igmp_ext::alloc::MAX_BITS;

/// The extension's postcard form: the unit count, then a bitmap of one bit per unit, unit `i`
/// at bit `i % 8` of byte `i / 8` (the UNITS/STANDBY order, SPEC.md §3.2), no bit past the last.
#[derive(Serialize, Deserialize)]
struct ScopeWire {
    upper_epoch: u64,
    units: u32,
    bitmap: Vec<u8>,
}

impl ScopeWire {
    fn of(s: &Scope) -> ScopeWire {
        let mut bitmap = vec![0u8; s.units.len().div_ceil(8)];
        for (i, _) in s.units.iter().enumerate().filter(|(_, &b)| b) {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        ScopeWire {
            upper_epoch: s.upper_epoch,
            units: u32::try_from(s.units.len()).unwrap_or(u32::MAX),
            bitmap,
        }
    }

    /// The scope, if the count is in range and the bitmap holds exactly its bits.
    fn scope(&self) -> Option<Scope> {
        let n = usize::try_from(self.units).ok()?;
        if n == 0 || n > MAX_SCOPE_UNITS || self.bitmap.len() != n.div_ceil(8) {
            return None;
        }
        let spare = self.bitmap.len() * 8 - n;
        if spare > 0 && self.bitmap.last().is_some_and(|&b| b >> (8 - spare) != 0) {
            return None;
        }
        Some(Scope {
            upper_epoch: self.upper_epoch,
            units: (0..n)
                .map(|i| self.bitmap[i / 8] & (1 << (i % 8)) != 0)
                .collect(),
        })
    }
}

impl Proposal {
    /// The body: the postcard encoding of its fields, then, only with a scope, [`SCOPE_TAG`]
    /// and the scope. The signature and digest cover these same bytes.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut body = postcard::to_stdvec(self)?;
        if let Some(scope) = &self.scope {
            body.push(SCOPE_TAG);
            body.extend(postcard::to_stdvec(&ScopeWire::of(scope))?);
        }
        Ok(body)
    }

    /// Decodes a body: the fields, then nothing or exactly one well-formed scope extension.
    /// Never panics.
    pub fn decode(body: &[u8]) -> Result<Proposal, ParseError> {
        let (mut p, rest) =
            postcard::take_from_bytes::<Proposal>(body).map_err(|_| ParseError::Malformed)?;
        match rest.split_first() {
            None => {}
            Some((&SCOPE_TAG, ext)) => match postcard::take_from_bytes::<ScopeWire>(ext) {
                Ok((w, [])) => p.scope = Some(w.scope().ok_or(ParseError::Malformed)?),
                _ => return Err(ParseError::Malformed),
            },
            Some(_) => return Err(ParseError::Malformed),
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EpochId;

    fn proposal(scope: Option<Scope>) -> Proposal {
        Proposal {
            id: EpochId {
                epoch: 5,
                proposer: 1,
                incarnation: 7,
            },
            members: vec![(1, 1), (2, 3)],
            owners: vec![0, 0xff, 1, 1, 0xff, 0xff, 1, 0xff, 0xff, 0xff],
            base: EpochId::default(),
            signature: vec![9; 64],
            scope,
        }
    }

    fn scope() -> Scope {
        let units = [
            true, false, true, true, false, false, true, false, false, true,
        ];
        Scope {
            upper_epoch: 300,
            units: units.to_vec(),
        }
    }

    #[test]
    fn a_proposal_without_a_scope_is_encoded_as_before() {
        // Byte vector of the session-12 encoding (postcard of the five fields).
        let p = proposal(None);
        let mut expected = vec![5, 1, 7, 2, 1, 1, 2, 3, 10, 0, 0xff, 1, 1, 0xff, 0xff, 1];
        expected.extend([0xff, 0xff, 0xff, 0, 0, 0, 64]);
        expected.extend([9; 64]);
        assert_eq!(p.encode().unwrap(), expected);
        assert_eq!(Proposal::decode(&expected).unwrap(), p);
    }

    #[test]
    fn a_scope_round_trips_after_the_fields() {
        let p = proposal(Some(scope()));
        let plain = proposal(None).encode().unwrap();
        let b = p.encode().unwrap();
        assert_eq!(&b[..plain.len()], &plain[..]);
        // Tag, upper epoch 300 (varint), 10 units, 2 bitmap bytes: units 0 2 3 6 | 9.
        assert_eq!(
            &b[plain.len()..],
            &[SCOPE_TAG, 0xac, 0x02, 10, 2, 0x4d, 0x02]
        );
        assert_eq!(Proposal::decode(&b).unwrap(), p);
    }

    #[test]
    fn a_malformed_scope_is_refused() {
        let plain = proposal(None).encode().unwrap();
        let with = |ext: &[u8]| [plain.as_slice(), ext].concat();
        for (ext, why) in [
            (&[0x02, 0, 10, 2, 0x4d, 0x02][..], "unknown tag"),
            (&[SCOPE_TAG][..], "tag alone"),
            (&[SCOPE_TAG, 0, 10, 2, 0x4d][..], "bitmap cut short"),
            (
                &[SCOPE_TAG, 0, 10, 1, 0x4d][..],
                "bitmap shorter than the units",
            ),
            (&[SCOPE_TAG, 0, 10, 3, 0x4d, 0x02, 0][..], "bitmap longer"),
            (
                &[SCOPE_TAG, 0, 10, 2, 0x4d, 0x06][..],
                "bit past the last unit",
            ),
            (&[SCOPE_TAG, 0, 0, 0][..], "no units"),
            (&[SCOPE_TAG, 0, 10, 2, 0x4d, 0x02, 0][..], "trailing byte"),
            (
                &[SCOPE_TAG, 0, 0x81, 0x80, 0x04, 0][..],
                "more units than an allocation",
            ),
        ] {
            assert_eq!(
                Proposal::decode(&with(ext)),
                Err(ParseError::Malformed),
                "{why}"
            );
        }
    }

    #[test]
    fn the_fuzz_seed_is_a_scoped_proposal() {
        let seed = include_bytes!("../../fuzz/seeds/control_message/proposal_scope");
        let m = crate::wire::parse(seed).expect("parses").message;
        let crate::wire::Message::Proposal(p) = m else {
            panic!("not a proposal: {m:?}");
        };
        let scope = p.scope.expect("scoped");
        assert_eq!(scope.units.len(), 256);
        assert!(scope.units.iter().step_by(2).all(|&b| b));
        assert!(!scope.units.iter().skip(1).step_by(2).any(|&b| b));
    }
}
