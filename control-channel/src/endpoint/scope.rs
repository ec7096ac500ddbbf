//! Allocation within a scope and by sites (issue 14 item 2, SPEC.md §9.4): the units a site's
//! group shares ([`Endpoint::set_scope`]), the sites its members' certificates name, and the
//! quota rule both give the coordinator's proposal and every member's commit check.

use super::{quotas_honoured, Endpoint};
use crate::time::Clock;
use crate::wire::{Proposal, Scope};
use igmp_ext::alloc::{group_quotas, scope_size};
use igmp_ext::{Allocation, MemberId, SiteId, Slice};

/// Why [`Endpoint::set_scope`] refused a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    #[error("scope names {got} units, the slicing has {expected}")]
    UnitCount { expected: usize, got: usize },
}

impl Endpoint {
    /// The units this member's group allocates among its members, from now on (SPEC.md §9.4):
    /// `None` (the default) is every unit. The coordinator proposes when the units change (not
    /// for a new upper epoch alone), and this member commits only proposals whose scope has
    /// the same units as its own; one that differs is kept, like a view mismatch, and
    /// committed once this member's scope catches up.
    pub fn set_scope(&mut self, now: Clock, scope: Option<Scope>) -> Result<(), ScopeError> {
        let expected = self.config.slicing.unit_count();
        if let Some(s) = scope.as_ref().filter(|s| s.units.len() != expected) {
            return Err(ScopeError::UnitCount {
                expected,
                got: s.units.len(),
            });
        }
        if !Scope::same_units(self.scope.as_ref(), scope.as_ref()) {
            // An allocation a peer advertises that this member could not take may be takable
            // now (its proposal's retransmissions may be over): ask for it again.
            for p in self.peers.values_mut() {
                p.advert_queries = 0;
            }
        }
        self.scope = scope;
        if !self.left {
            self.retry_deferred(now);
            self.maybe_propose(now);
        }
        Ok(())
    }

    /// The scope set by [`Endpoint::set_scope`].
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    /// The site `member`'s certificate names (`Some(None)`: none); `None` if this member holds
    /// no certificate for it. Sites come from verified certificates only, so every member
    /// holding the same certificates applies the same quotas.
    fn site_of(&self, member: MemberId) -> Option<Option<SiteId>> {
        if member == self.me {
            return Some(self.identity.certificate.site());
        }
        self.peers.get(&member).map(|p| p.certificate.site())
    }

    /// The site of each listed member, in order; `None` if a certificate is missing.
    pub(super) fn sites_of(&self, members: &[(u32, u32)]) -> Option<Vec<Option<SiteId>>> {
        members
            .iter()
            .map(|&(m, _)| self.site_of(MemberId(m)))
            .collect()
    }

    /// The proposal's quotas hold under the rule its members' certificates give here; false
    /// while one of them is unknown.
    pub(super) fn quotas_hold(&self, p: &Proposal, allocation: &Allocation) -> bool {
        self.sites_of(&p.members)
            .is_some_and(|sites| quotas_honoured(p, allocation, &sites))
    }

    /// The proposal names the same units as this member's own scope (both none, or equal).
    pub(super) fn scope_matches(&self, p: &Proposal) -> bool {
        Scope::same_units(p.scope.as_ref(), self.scope.as_ref())
    }

    /// What the coordinator proposes for `view` from `base`: the fewest moves within its
    /// scope, by site-aware quotas when every member of the view names a site.
    pub(super) fn allocate(&self, base: &Allocation, view: &[(MemberId, u32)]) -> Allocation {
        let units = self.scope_units();
        let members: Vec<(MemberId, u32, Option<SiteId>)> = view
            .iter()
            .map(|&(m, w)| (m, w, self.site_of(m).flatten()))
            .collect();
        let size = scope_size(&units, units.len());
        base.rebalanced_to(&units, &group_quotas(size, &members))
    }

    fn scope_units(&self) -> Vec<bool> {
        self.scope.as_ref().map_or_else(
            || vec![true; self.config.slicing.unit_count()],
            |s| s.units.clone(),
        )
    }

    /// The units this member takes if their owner fails (SPEC.md §5.5), under the committed
    /// allocation's own rule: its scope and its members' sites
    /// ([`CommittedAllocation::standby`](super::CommittedAllocation::standby)). Empty before
    /// the first commit.
    pub fn standby(&self) -> Vec<Slice> {
        let Some(c) = &self.committed else {
            return Vec::new();
        };
        let sites = self.sites_of(&c.proposal.members).unwrap_or_default();
        c.standby(self.me, &sites)
    }

    /// In an upper group of site agents: the units the committed allocation gives to the
    /// members whose certificates name `site` (the site scope its agents hand down), one entry
    /// per unit. `None` before the first commit.
    pub fn site_units(&self, site: SiteId) -> Option<Vec<bool>> {
        let c = self.committed.as_ref()?;
        Some(
            c.allocation
                .unit_owners()
                .iter()
                .map(|o| o.is_some_and(|m| self.site_of(m).flatten() == Some(site)))
                .collect(),
        )
    }
}
