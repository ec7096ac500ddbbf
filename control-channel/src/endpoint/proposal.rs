//! Allocations as the wire carries them (SPEC.md §9.4): the committed allocation, the proposal
//! encoding and its digest, the validity rule every member applies, and the quota-keeping move
//! of operator requests. Pure functions: no endpoint state.

use super::event::RequestRefusal;
use crate::wire::{EpochId, Proposal};
use igmp_ext::alloc::quotas;
use igmp_ext::{Allocation, MemberId, Slicing};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The allocation this member follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedAllocation {
    pub proposal: Proposal,
    pub allocation: Allocation,
    pub digest: [u8; 32],
}

impl CommittedAllocation {
    pub fn id(&self) -> EpochId {
        self.proposal.id
    }
    pub fn members(&self) -> Vec<(MemberId, u32)> {
        self.proposal
            .members
            .iter()
            .map(|&(m, w)| (MemberId(m), w))
            .collect()
    }
    pub(super) fn digest_prefix(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.digest[..8]);
        u64::from_be_bytes(b)
    }
}

/// Index meaning "no owner" in [`Proposal::owners`]; members are indexed 0..=254.
pub const NO_OWNER: u8 = 0xff;
pub const MAX_MEMBERS: usize = 255;

/// SHA-256 of the proposal's postcard encoding without its signature: names one allocation.
pub fn proposal_digest(p: &Proposal) -> [u8; 32] {
    let unsigned = Proposal {
        signature: Vec::new(),
        ..p.clone()
    };
    let bytes = postcard::to_stdvec(&unsigned).unwrap_or_default();
    let mut d = [0u8; 32];
    d.copy_from_slice(&Sha256::digest(&bytes));
    d
}

/// The decision rule's validity check (SPEC.md §9.4): the proposer is the lowest member listed,
/// member ids are distinct and sorted, every unit's owner is listed, and every member owns
/// exactly its weighted quota, so weights are honoured and no unit is owned twice or, while any
/// weight is positive, left unowned.
pub fn validate_proposal(p: &Proposal, slicing: Slicing) -> Option<Allocation> {
    if p.members.is_empty() || p.members.len() > MAX_MEMBERS {
        return None;
    }
    if !p.members.windows(2).all(|w| w[0].0 < w[1].0) || p.members[0].0 != p.id.proposer {
        return None;
    }
    let mut owners = Vec::with_capacity(p.owners.len());
    for &o in &p.owners {
        if o == NO_OWNER {
            owners.push(None);
        } else {
            owners.push(Some(MemberId(p.members.get(usize::from(o))?.0)));
        }
    }
    let allocation = Allocation::from_unit_owners(slicing, owners)?;
    let members: Vec<(MemberId, u32)> = p.members.iter().map(|&(m, w)| (MemberId(m), w)).collect();
    let quota = quotas(slicing.unit_count(), &members);
    for (m, q) in quota {
        if allocation.units_of(m) != q {
            return None;
        }
    }
    Some(allocation)
}

/// Encodes an allocation as a proposal body, unsigned ([`Proposal::sign`]).
pub fn proposal_for(id: EpochId, members: &[(MemberId, u32)], allocation: &Allocation) -> Proposal {
    let index: BTreeMap<MemberId, u8> = members
        .iter()
        .enumerate()
        .map(|(i, &(m, _))| (m, u8::try_from(i).unwrap_or(NO_OWNER)))
        .collect();
    Proposal {
        id,
        members: members.iter().map(|&(m, w)| (m.0, w)).collect(),
        owners: allocation
            .unit_owners()
            .iter()
            .map(|o| o.and_then(|m| index.get(&m).copied()).unwrap_or(NO_OWNER))
            .collect(),
        base: EpochId::default(),
        signature: Vec::new(),
    }
}

/// A move within quotas (SPEC.md §9.4, "Requests"): `to` receives `units`, and gives each
/// previous owner one of its own other units back, its least loaded first (ties to the lower
/// unit number), so that every member keeps its unit count. Units `to` already owns stay.
pub fn move_units(
    allocation: &Allocation,
    units: &[u16],
    to: MemberId,
    unit_load: &[u64],
) -> Result<Allocation, RequestRefusal> {
    let owners = allocation.unit_owners();
    if allocation.units_of(to) == 0 {
        return Err(RequestRefusal::UnknownMember);
    }
    let listed: BTreeSet<usize> = units.iter().map(|&u| usize::from(u)).collect();
    if listed
        .iter()
        .any(|&u| owners.get(u).is_none_or(|o| o.is_none()))
    {
        return Err(RequestRefusal::BadUnit);
    }
    let incoming: Vec<usize> = listed
        .iter()
        .copied()
        .filter(|&u| owners[u] != Some(to))
        .collect();
    let mut giveable: Vec<(u64, usize)> = (0..owners.len())
        .filter(|u| owners[*u] == Some(to) && !listed.contains(u))
        .map(|u| (unit_load.get(u).copied().unwrap_or(0), u))
        .collect();
    giveable.sort_unstable();
    if incoming.len() > giveable.len() {
        return Err(RequestRefusal::NotEnoughUnits);
    }
    let mut next = owners.to_vec();
    for (&u, &(_, back)) in incoming.iter().zip(&giveable) {
        next[back] = owners[u];
        next[u] = Some(to);
    }
    Allocation::from_unit_owners(allocation.slicing(), next).ok_or(RequestRefusal::BadUnit)
}
