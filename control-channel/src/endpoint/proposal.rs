//! Allocations as the wire carries them (SPEC.md §9.4): the committed allocation, the proposal
//! encoding and its digest, the validity rule every member applies, and the quota-keeping move
//! of operator requests. Pure functions: no endpoint state.

use super::event::RequestRefusal;
use crate::wire::{EpochId, Proposal};
use igmp_ext::alloc::{group_quotas, scope_size};
use igmp_ext::{Allocation, MemberId, SiteId, Slice, Slicing};
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
    /// The units `me` takes if their owner fails (SPEC.md §5.5) under this allocation's own
    /// rule: within its proposal's scope, by site-aware quotas when `sites` (one per listed
    /// member, in order; missing entries name no site) names a site for every member. A group
    /// of member certificates passes `&[]`. [`Endpoint::standby`](super::Endpoint::standby)
    /// fills in the sites its peers' certificates name.
    pub fn standby(&self, me: MemberId, sites: &[Option<SiteId>]) -> Vec<Slice> {
        let n = self.allocation.unit_owners().len();
        let units = self
            .proposal
            .scope
            .as_ref()
            .map_or_else(|| vec![true; n], |s| s.units.clone());
        let members: Vec<(MemberId, u32, Option<SiteId>)> = self
            .proposal
            .members
            .iter()
            .enumerate()
            .map(|(i, &(m, w))| (MemberId(m), w, sites.get(i).copied().flatten()))
            .collect();
        self.allocation.standby_in(&units, &members, me)
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
    let bytes = unsigned.encode().unwrap_or_default();
    let mut d = [0u8; 32];
    d.copy_from_slice(&Sha256::digest(&bytes));
    d
}

/// The decision rule's validity check (SPEC.md §9.4): [`proposal_allocation`] and
/// [`quotas_honoured`], `sites` being the site each listed member's certificate names, in the
/// order of `p.members`.
pub fn validate_proposal(
    p: &Proposal,
    slicing: Slicing,
    sites: &[Option<SiteId>],
) -> Option<Allocation> {
    let allocation = proposal_allocation(p, slicing)?;
    quotas_honoured(p, &allocation, sites).then_some(allocation)
}

/// The structure of a proposal: the proposer is the lowest member listed, member ids are
/// distinct and sorted, every unit's owner is listed, and with a scope, it has one entry per
/// unit and no unit outside it is owned. Quotas are [`quotas_honoured`]'s.
pub fn proposal_allocation(p: &Proposal, slicing: Slicing) -> Option<Allocation> {
    if p.members.is_empty() || p.members.len() > MAX_MEMBERS {
        return None;
    }
    if !p.members.windows(2).all(|w| w[0].0 < w[1].0) || p.members[0].0 != p.id.proposer {
        return None;
    }
    if let Some(scope) = &p.scope {
        let outside_owned = p
            .owners
            .iter()
            .zip(&scope.units)
            .any(|(&o, &inside)| !inside && o != NO_OWNER);
        if scope.units.len() != slicing.unit_count() || outside_owned {
            return None;
        }
    }
    let mut owners = Vec::with_capacity(p.owners.len());
    for &o in &p.owners {
        if o == NO_OWNER {
            owners.push(None);
        } else {
            owners.push(Some(MemberId(p.members.get(usize::from(o))?.0)));
        }
    }
    Allocation::from_unit_owners(slicing, owners)
}

/// Every listed member owns exactly its quota of the proposal's scope (all units without
/// one), so weights are honoured and no unit is owned twice or, while any weight is positive,
/// left unowned. Quotas are site-aware when `sites` names a site for every member
/// ([`group_quotas`]); `sites` must list one entry per member.
pub fn quotas_honoured(p: &Proposal, allocation: &Allocation, sites: &[Option<SiteId>]) -> bool {
    if sites.len() != p.members.len() {
        return false;
    }
    let members: Vec<(MemberId, u32, Option<SiteId>)> = p
        .members
        .iter()
        .zip(sites)
        .map(|(&(m, w), &s)| (MemberId(m), w, s))
        .collect();
    let units = allocation.unit_owners().len();
    let size = p
        .scope
        .as_ref()
        .map_or(units, |s| scope_size(&s.units, units));
    group_quotas(size, &members)
        .into_iter()
        .all(|(m, q)| allocation.units_of(m) == q)
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
        scope: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Scope;

    /// Four units, members 1 and 2 at weight 1, scope = units 0 and 2.
    fn scoped(owners: Vec<u8>, units: Vec<bool>) -> Proposal {
        let slicing = Slicing::LowOrder { bits: 2 };
        let empty = Allocation::empty(slicing);
        let mut p = proposal_for(
            EpochId {
                epoch: 1,
                proposer: 1,
                incarnation: 0,
            },
            &[(MemberId(1), 1), (MemberId(2), 1)],
            &empty,
        );
        p.owners = owners;
        p.scope = Some(Scope {
            upper_epoch: 4,
            units,
        });
        p
    }

    #[test]
    fn a_scoped_proposal_owns_its_quota_of_the_scope_and_nothing_outside() {
        let slicing = Slicing::LowOrder { bits: 2 };
        let inside = vec![true, false, true, false];
        let ok = scoped(vec![0, NO_OWNER, 1, NO_OWNER], inside.clone());
        assert!(validate_proposal(&ok, slicing, &[None, None]).is_some());
        // A unit outside the scope owned: refused whatever the quotas.
        let outside = scoped(vec![0, 1, 1, NO_OWNER], inside.clone());
        assert_eq!(proposal_allocation(&outside, slicing), None);
        // Quotas are over the scope's two units: one each, not two.
        let lopsided = scoped(vec![0, NO_OWNER, 0, NO_OWNER], inside.clone());
        assert!(proposal_allocation(&lopsided, slicing).is_some());
        assert_eq!(validate_proposal(&lopsided, slicing, &[None, None]), None);
        // A scope of another slicing's unit count.
        let short = scoped(vec![0, NO_OWNER, 1, NO_OWNER], vec![true, false, true]);
        assert_eq!(proposal_allocation(&short, slicing), None);
        // Sites must be given for every member.
        assert_eq!(validate_proposal(&ok, slicing, &[None]), None);
    }

    #[test]
    fn site_quotas_apply_only_when_every_member_names_a_site() {
        let slicing = Slicing::LowOrder { bits: 2 };
        let mut p = scoped(vec![0, 1, 2, 2], vec![true; 4]);
        p.members = vec![(1, 1), (2, 1), (3, 1)];
        let (a, b) = (Some(SiteId(1)), Some(SiteId(2)));
        // Sites 1 {1, 2} and 2 {3}: two units each side.
        assert!(validate_proposal(&p, slicing, &[a, a, b]).is_some());
        assert_eq!(validate_proposal(&p, slicing, &[a, a, None]), None);
        p.owners = vec![0, 0, 1, 2];
        assert!(validate_proposal(&p, slicing, &[a, a, None]).is_some());
        assert_eq!(validate_proposal(&p, slicing, &[a, a, b]), None);
    }
}
