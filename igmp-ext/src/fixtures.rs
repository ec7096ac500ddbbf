//! Deterministic keys, certificates and signed joins for tests, examples, benchmarks and fuzz
//! seeds. Keys come from fixed seeds: never use these outside tests.

use crate::alloc::Slicing;
use crate::cert::{CertificateBody, Ipv6Grant, KeyId, MemberCertificate, MemberId, SiteId};
use crate::join::{
    build_datagram, build_signed_report, AllocationEpoch, JoinClaims, SliceEntry, SliceEntry6,
};
use crate::mld_join::{build_mld_datagram, build_signed_mld_report, JoinClaims6};
use crate::mld_verifier::GroupKeys6;
use crate::scope::ScopeNotice;
use crate::slice::{Slice, Slice6, SliceSet, SliceSet6};
use crate::time::Timestamp;
use crate::verify::{GroupKey, GroupKeys, LinkTable, Reason, Rejection};
use crate::verify6::{GrantSource6, LinkTable6, MemberGrant6};
use crate::wire::record::RecordType;
use core::net::{Ipv4Addr, Ipv6Addr};
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

    /// Members certified for every IPv4 slice of the group and for `slices6` of [`GROUP6`]:
    /// version 2 certificates (SPEC.md §4.2), whose IPv6 grant the verifier takes for MLDv2
    /// joins.
    pub fn dual_stack(n: u32, slices6: SliceSet6) -> Self {
        let mut f = Self::new(n);
        let ipv6 = Ipv6Grant {
            groups: vec![GROUP6],
            slices: slices6,
        };
        for m in &mut f.members {
            m.cert = m
                .cert
                .body()
                .issue_with_ipv6(&ipv6, &f.group_key)
                .expect("fixture certificates fit");
        }
        f
    }

    /// Site routers of a site hierarchy (SPEC.md §4.3): router `i` (1-based) has member id
    /// `i`, a fixed-seed key of its own (not a member's) and a router certificate for the
    /// group, all slices, naming `sites[i - 1]`, on the fixture link. Site 0 panics: it is no
    /// site.
    pub fn routers(sites: &[SiteId]) -> Self {
        let mut f = Self::new(sites.len() as u32);
        for (m, &site) in f.members.iter_mut().zip(sites) {
            m.key = SigningKey::from_bytes(&router_seed(m.id.0));
            let mut body = m.cert.body().clone();
            body.member_key = m.key.verifying_key();
            m.cert = body
                .issue_router(site, &f.group_key)
                .expect("fixture router certificates name a site and fit");
        }
        f
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

    /// The published keys of [`GROUP6`] (the same group key), for MLDv2 joins.
    pub fn key_source6(&self) -> HashMap<Ipv6Addr, Arc<GroupKeys6>> {
        let keys = GroupKeys6 {
            group: GROUP6,
            keys: vec![GroupKey::new(self.group_key.verifying_key())],
            revoked_members: Vec::new(),
        };
        HashMap::from([(GROUP6, Arc::new(keys))])
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
            as_units: false,
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

/// Router keys' seeds: distinct from members' ([`seed`]).
fn router_seed(i: u32) -> [u8; 32] {
    let mut s = [0xa5; 32];
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

impl Fixture {
    /// Router `i` (0-based; of [`Fixture::routers`]) signs `notice`: the additional data of
    /// its query (SPEC.md §3.10).
    pub fn scope_data(&self, i: usize, notice: &ScopeNotice) -> Vec<u8> {
        let m = &self.members[i];
        notice
            .additional_data(&m.cert, &m.key)
            .expect("fixture notices name the router's site and fit")
    }

    /// A notice for the fixture group from site `site` at `upper_epoch`, stamped [`NOW`]: the
    /// units of `slicing` listed in `units`.
    pub fn scope_notice(
        &self,
        site: SiteId,
        upper_epoch: u64,
        slicing: Slicing,
        units: &[usize],
    ) -> ScopeNotice {
        let mut flags = vec![false; slicing.unit_count()];
        for &u in units {
            flags[u] = true;
        }
        ScopeNotice {
            group: self.group,
            site,
            upper_epoch,
            timestamp: NOW,
            slicing,
            units: flags,
        }
    }
}

/// The worked example of SPEC.md §3.10: router 1 of `Fixture::routers(&[SiteId(1)])` tells its
/// site's members that at upper epoch 3 site 1 has units 0, 2 and 5 of the 3-bit low-order
/// slicing of 232.1.1.1, stamped [`NOW`]. Returns the query's additional data (the TLV).
pub fn scope_spec_example() -> Vec<u8> {
    let f = Fixture::routers(&[SiteId(1)]);
    let notice = f.scope_notice(SiteId(1), 3, Slicing::LowOrder { bits: 3 }, &[0, 2, 5]);
    f.scope_data(0, &notice)
}

/// The IPv6 group of the MLDv2 fixtures: in the protected SSM range ff3e::/32.
pub const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 1);
/// The on-link prefix of the MLDv2 fixture link ([`IFINDEX`]).
pub const LINK6: Slice6 = Slice6::new(0x2001_0db8_0000_0001u128 << 64, u128::MAX << 64);

impl Fixture {
    /// Member `i`'s (0-based) link-local address: fe80::(i + 1).
    pub fn addr6(&self, i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, (i % 0xfffe + 1) as u16)
    }

    /// The router's IPv6 links: [`LINK6`] on [`IFINDEX`].
    pub fn links6(&self) -> LinkTable6 {
        let mut links = LinkTable6::new();
        links.add(IFINDEX, LINK6);
        links
    }

    /// MLDv2 claims on [`GROUP6`] and [`LINK6`] for `slices` at `epoch`, stamped `now`.
    pub fn claims6(
        &self,
        slices: &[Slice6],
        epoch: u64,
        now: Timestamp,
        nonce: u64,
    ) -> JoinClaims6 {
        JoinClaims6 {
            group: GROUP6,
            record_type: if slices.is_empty() {
                RecordType::ChangeToIncludeMode
            } else {
                RecordType::ModeIsInclude
            },
            entries: slices.iter().copied().map(SliceEntry6::include).collect(),
            epoch: AllocationEpoch(epoch),
            timestamp: now,
            nonce: nonce_bytes(nonce),
            link: LINK6,
            standby: Vec::new(),
            liveness: Vec::new(),
            as_units: false,
        }
    }

    /// A whole signed MLDv2 datagram (IPv6 and Hop-by-Hop headers included) from member `i`.
    pub fn datagram6(&self, i: usize, claims: &JoinClaims6) -> Vec<u8> {
        let m = &self.members[i];
        let sender = self.addr6(i);
        let mld =
            build_signed_mld_report(claims, sender, &m.cert, &m.key).expect("fixture joins fit");
        build_mld_datagram(sender, &mld)
    }

    /// Grants for [`GROUP6`]: each member's key and `slices`, looked up by its certificate's
    /// exact bytes, whatever the certificates say (the router's verifier,
    /// `mld_verifier::MldJoinVerifier`, reads their IPv6 section instead).
    pub fn grants6(&self, slices: SliceSet6) -> FixtureGrants6 {
        FixtureGrants6 {
            grants: self
                .members
                .iter()
                .map(|m| {
                    let grant = MemberGrant6 {
                        member: m.id,
                        member_key: m.key.verifying_key(),
                        issuer: KeyId::of(&self.group_key.verifying_key()),
                        slices: slices.clone(),
                    };
                    (m.cert.as_bytes().to_vec(), grant)
                })
                .collect(),
        }
    }
}

/// [`GrantSource6`] of the fixture: refuses other groups as `unknown-group` and certificates it
/// does not know as `bad-certificate`.
#[derive(Debug, Clone)]
pub struct FixtureGrants6 {
    pub grants: Vec<(Vec<u8>, MemberGrant6)>,
}

impl GrantSource6 for FixtureGrants6 {
    fn grant(
        &self,
        group: Ipv6Addr,
        certificate: &[u8],
        _now: Timestamp,
    ) -> Result<MemberGrant6, Rejection> {
        let refuse = |reason, detail: &str| Rejection {
            reason,
            detail: detail.to_owned(),
            sender: None,
        };
        if group != GROUP6 {
            return Err(refuse(Reason::UnknownGroup, "no keys for the group"));
        }
        self.grants
            .iter()
            .find(|(c, _)| c == certificate)
            .map(|(_, g)| g.clone())
            .ok_or_else(|| refuse(Reason::BadCertificate, "unknown certificate"))
    }
}

/// The worked example of SPEC.md §3.8: member 1 of `Fixture::new(1)`, from fe80::1 on
/// 2001:db8:0:1::/64, claims every address whose /56 prefix ends in binary 01
/// (`0:0:0:100::/0:0:0:300::`) minus 2001:db8::/32, for ff3e::8000:1 at epoch 7, nonce 1,
/// stamped [`NOW`]. Returns the whole datagram.
pub fn mld_spec_example() -> Vec<u8> {
    let f = Fixture::new(1);
    let mut claims = f.claims6(&[Slice6::new(1 << 72, 3 << 72)], 7, NOW, 1);
    claims.entries.push(SliceEntry6::exclude(Slice6::prefix(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
    )));
    f.datagram6(0, &claims)
}
