//! Deterministic keys, certificates and signed joins for tests, examples, benchmarks and fuzz
//! seeds. Keys come from fixed seeds: never use these outside tests.

use crate::cert::{CertificateBody, KeyId, MemberCertificate, MemberId};
use crate::join::{build_datagram, build_signed_report, AllocationEpoch, JoinClaims, SliceEntry};
use crate::slice::{Slice, SliceSet};
use crate::time::Timestamp;
use crate::verify::{GroupKey, GroupKeys, LinkTable};
use crate::wire::record::RecordType;
use core::net::Ipv4Addr;
use ed25519_dalek::SigningKey;
use std::collections::HashMap;
use std::sync::Arc;

/// The interface index every fixture member is on.
pub const IFINDEX: u32 = 1;
/// 2026-11-23T00:00:00Z, the fixtures' "now".
pub const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

/// One member: id, key, certificate, address on the fixture link.
#[derive(Debug, Clone)]
pub struct FixtureMember {
    pub id: MemberId,
    pub key: SigningKey,
    pub cert: MemberCertificate,
    pub addr: Ipv4Addr,
}

/// A group with its key and `n` certified members on link 10.0.0.0/24.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub group: Ipv4Addr,
    pub group_key: SigningKey,
    pub members: Vec<FixtureMember>,
}

impl Fixture {
    pub fn new(n: u32) -> Self {
        Self::with_member_slices(n, SliceSet::full())
    }

    /// Members certified only for `slices`.
    pub fn with_member_slices(n: u32, slices: SliceSet) -> Self {
        let group = Ipv4Addr::new(232, 1, 1, 1);
        let group_key = SigningKey::from_bytes(&[0x01; 32]);
        let members = (1..=n)
            .map(|i| {
                let key = SigningKey::from_bytes(&seed(i));
                let body = CertificateBody {
                    member_id: MemberId(i),
                    member_key: key.verifying_key(),
                    issuer: KeyId::of(&group_key.verifying_key()),
                    not_before: Timestamp::from_secs(1_767_225_600), // 2026-01-01
                    not_after: Timestamp::from_secs(1_830_297_600),  // 2028-01-01
                    groups: vec![group],
                    slices: slices.clone(),
                };
                let cert = body
                    .issue(&group_key)
                    .expect("issuer matches the group key");
                FixtureMember {
                    id: MemberId(i),
                    key,
                    cert,
                    addr: Ipv4Addr::new(10, 0, 0, (i % 250 + 1) as u8),
                }
            })
            .collect();
        Fixture {
            group,
            group_key,
            members,
        }
    }

    /// The published keys, as a keystore client would return them.
    pub fn group_keys(&self) -> GroupKeys {
        GroupKeys {
            group: self.group,
            keys: vec![GroupKey::new(self.group_key.verifying_key())],
            revoked_members: Vec::new(),
        }
    }

    pub fn key_source(&self) -> HashMap<Ipv4Addr, Arc<GroupKeys>> {
        HashMap::from([(self.group, Arc::new(self.group_keys()))])
    }

    pub fn links(&self) -> LinkTable {
        let mut links = LinkTable::new();
        links.add(IFINDEX, Slice::prefix(Ipv4Addr::new(10, 0, 0, 0), 24));
        links
    }

    /// Claims by member `i` (0-based) for `slices` at `epoch`, stamped `now`, with a nonce
    /// derived from `nonce`.
    pub fn claims(&self, slices: &[Slice], epoch: u64, now: Timestamp, nonce: u64) -> JoinClaims {
        JoinClaims {
            group: self.group,
            record_type: if slices.is_empty() {
                RecordType::ChangeToIncludeMode
            } else {
                RecordType::ModeIsInclude
            },
            entries: slices.iter().copied().map(SliceEntry::include).collect(),
            epoch: AllocationEpoch(epoch),
            timestamp: now,
            nonce: nonce_bytes(nonce),
            standby: Vec::new(),
            liveness: Vec::new(),
        }
    }

    /// A whole signed datagram (IPv4 header included) from member `i` (0-based).
    pub fn datagram(&self, i: usize, claims: &JoinClaims) -> Vec<u8> {
        let m = &self.members[i];
        let igmp = build_signed_report(claims, m.addr, &m.cert, &m.key).expect("fixture joins fit");
        build_datagram(m.addr, &igmp)
    }

    /// Shorthand: member `i` joins for `slices` at `epoch` now, with nonce `nonce`.
    pub fn join(&self, i: usize, slices: &[Slice], epoch: u64, nonce: u64) -> Vec<u8> {
        self.datagram(i, &self.claims(slices, epoch, NOW, nonce))
    }
}

fn seed(i: u32) -> [u8; 32] {
    let mut s = [0x5a; 32];
    s[..4].copy_from_slice(&i.to_be_bytes());
    s
}

pub fn nonce_bytes(n: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[8..].copy_from_slice(&n.to_be_bytes());
    b
}

/// The worked example of SPEC.md §7: member 1 of `Fixture::new(1)` claims 0.0.0.1/0.0.0.3
/// (every address whose last two bits are 01) minus 10.0.0.0/8, at epoch 7, with nonce 1,
/// stamped [`NOW`]. Returns the whole datagram.
pub fn spec_example() -> Vec<u8> {
    let f = Fixture::new(1);
    let mut claims = f.claims(&[Slice::new(1, 3)], 7, NOW, 1);
    claims.entries.push(SliceEntry::exclude(Slice::prefix(
        Ipv4Addr::new(10, 0, 0, 0),
        8,
    )));
    f.datagram(0, &claims)
}
