//! The site agent (SPEC.md §10.8, issue 14 item 2), sans-IO: a site router's verifier is a
//! member of the upper control group among the site routers, and a "member" of the upstream
//! verifier for the service group. From the upper group's committed allocation and the service
//! group's steering (what this verifier steers, to live members) it decides the upstream claim
//! (its own upper units that its site can serve), the weight to announce upstream (0 once the
//! site has no live member), the site scope (the units of all agents of its site) and when a
//! join goes out. The daemon (`daemon/site.rs`) runs the upper group and sends the joins.

use super::Router;
use core::net::Ipv4Addr;
use core::time::Duration;
use igmp_ext::alloc::Slicing;
use igmp_ext::{AllocationEpoch, Instant, MemberId, SiteId, SliceSet};
use std::collections::BTreeMap;

/// Settings of one site agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAgentConfig {
    /// The protected service group claimed upstream.
    pub group: Ipv4Addr,
    /// The slicing of the upper allocation, the members' and the upstream claim's.
    pub slicing: Slicing,
    /// The weight announced while the site has a live member.
    pub weight: u32,
    /// Unprompted refresh of the upstream join; below the upstream verifier's claim hold.
    pub refresh: Duration,
    /// A changed claim goes at once and once more after this (a lost datagram must not leave
    /// the upstream verifier steering to the old claim until the next refresh).
    pub repeat: Duration,
}

/// The upper group's committed allocation as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpperView {
    /// The committed epoch number: the upstream join's epoch.
    pub epoch: u64,
    /// Each unit's agent.
    pub owners: Vec<Option<MemberId>>,
    /// Each known agent's site, from its router certificate.
    pub sites: BTreeMap<MemberId, SiteId>,
}

/// One member claim the site's verifier steers for the service group (its failover view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeredClaim {
    pub member: MemberId,
    pub slices: SliceSet,
    /// Found dead by its missing beacons (SPEC.md §5.5): what it still holds is not served.
    pub dead: bool,
}

/// What the agent claims upstream: at `epoch`, exactly these units (none: a leave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamClaim {
    pub epoch: AllocationEpoch,
    /// One bool per unit of the slicing.
    pub units: Vec<bool>,
}

impl UpstreamClaim {
    pub fn unit_count(&self) -> usize {
        self.units.iter().filter(|u| **u).count()
    }
}

/// The site's scope in the upper allocation: the units of all agents of the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteScope {
    pub upper_epoch: u64,
    pub units: Vec<bool>,
}

/// The site agent's decisions.
#[derive(Debug)]
pub struct SiteAgent {
    config: SiteAgentConfig,
    me: MemberId,
    site: SiteId,
    upper: Option<UpperView>,
    /// Units the site's verifier steers to a live member.
    served: Vec<bool>,
    /// Whether any live member holds a verified claim for the group.
    live_member: bool,
    /// The claim last sent, and when the next send is due.
    sent: Option<UpstreamClaim>,
    next_send: Option<Instant>,
    repeat_due: bool,
    joins_sent: u64,
}

impl SiteAgent {
    pub fn new(config: SiteAgentConfig, me: MemberId, site: SiteId) -> Self {
        let units = config.slicing.unit_count();
        SiteAgent {
            config,
            me,
            site,
            upper: None,
            served: vec![false; units],
            live_member: false,
            sent: None,
            next_send: None,
            repeat_due: false,
            joins_sent: 0,
        }
    }

    pub fn me(&self) -> MemberId {
        self.me
    }

    pub fn site(&self) -> SiteId {
        self.site
    }

    pub fn config(&self) -> &SiteAgentConfig {
        &self.config
    }

    /// The upper group committed (or the agent learnt of) an allocation; `None` before any.
    /// An allocation of another slicing than ours is a misconfiguration and claims nothing.
    pub fn handle_upper(&mut self, now: Instant, view: Option<UpperView>) {
        let view = view.filter(|v| v.owners.len() == self.config.slicing.unit_count());
        self.upper = view;
        self.changed(now);
    }

    /// The service group's steering changed: `claims` are the site verifier's (failover view).
    pub fn handle_service(&mut self, now: Instant, claims: &[SteeredClaim]) {
        let slicing = self.config.slicing;
        let live: SliceSet = claims
            .iter()
            .filter(|c| !c.dead)
            .flat_map(|c| c.slices.iter().copied())
            .collect();
        self.served = (0..slicing.unit_count())
            .map(|i| SliceSet::from(slicing.unit(i)).is_subset_of(&live))
            .collect();
        self.live_member = claims.iter().any(|c| !c.dead && !c.slices.is_empty());
        self.changed(now);
    }

    /// The weight to announce in the upper group: the configured one while the site's verifier
    /// holds at least one live verified member claim for the group, else 0 (the site lost its
    /// members, so the other sites take its units).
    pub fn weight(&self) -> u32 {
        if self.live_member {
            self.config.weight
        } else {
            0
        }
    }

    /// The upper epoch, once the upper group has committed.
    pub fn upper_epoch(&self) -> Option<u64> {
        self.upper.as_ref().map(|u| u.epoch)
    }

    /// This agent's units in the upper allocation.
    pub fn own_units(&self) -> Vec<bool> {
        match &self.upper {
            Some(u) => u.owners.iter().map(|o| *o == Some(self.me)).collect(),
            None => vec![false; self.config.slicing.unit_count()],
        }
    }

    /// What to claim upstream now: own upper units that the site serves (a unit steered to a
    /// live member), at the upper epoch; `None` before the upper group has committed.
    pub fn claim(&self) -> Option<UpstreamClaim> {
        let upper = self.upper.as_ref()?;
        let units = upper
            .owners
            .iter()
            .zip(&self.served)
            .map(|(owner, served)| *owner == Some(self.me) && *served)
            .collect();
        Some(UpstreamClaim {
            epoch: AllocationEpoch(upper.epoch),
            units,
        })
    }

    /// The site's scope: the units of every agent of our site (ourselves included, whether or
    /// not our certificate's site reached the view), at the upper epoch.
    pub fn scope(&self) -> Option<SiteScope> {
        let upper = self.upper.as_ref()?;
        let ours = |m: &MemberId| *m == self.me || upper.sites.get(m) == Some(&self.site);
        Some(SiteScope {
            upper_epoch: upper.epoch,
            units: upper
                .owners
                .iter()
                .map(|o| o.is_some_and(|m| ours(&m)))
                .collect(),
        })
    }

    /// A changed claim is due at once, and once more after `repeat`.
    fn changed(&mut self, now: Instant) {
        let claim = self.claim();
        if claim.is_some() && claim != self.sent {
            self.next_send = Some(now);
            self.repeat_due = true;
        }
    }

    /// When [`SiteAgent::poll_join`] has something next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_send
    }

    /// The join to send now, if one is due: the claim (refreshed every `refresh`).
    pub fn poll_join(&mut self, now: Instant) -> Option<UpstreamClaim> {
        if self.next_send.is_none_or(|t| now < t) {
            return None;
        }
        let Some(claim) = self.claim() else {
            self.next_send = None;
            return None;
        };
        let after = if std::mem::take(&mut self.repeat_due) {
            self.config.repeat
        } else {
            self.config.refresh
        };
        self.next_send = Some(now.saturating_add(after));
        self.sent = Some(claim.clone());
        self.joins_sent += 1;
        Some(claim)
    }

    /// The leave at shutdown: nothing at the upper epoch; `None` if nothing was ever claimed.
    pub fn leave(&mut self) -> Option<UpstreamClaim> {
        let sent = self.sent.take()?;
        self.next_send = None;
        self.joins_sent += 1;
        Some(UpstreamClaim::empty(&sent))
    }

    /// Joins handed out (leaves included).
    pub fn joins_sent(&self) -> u64 {
        self.joins_sent
    }
}

impl UpstreamClaim {
    /// The same epoch, no units.
    fn empty(like: &UpstreamClaim) -> UpstreamClaim {
        UpstreamClaim {
            epoch: like.epoch,
            units: vec![false; like.units.len()],
        }
    }
}

impl Router {
    /// Steers packets arriving on `device` as well (a site router's upstream interface), which
    /// is not one of the verifier's interfaces: no query goes there and its IGMP is ignored.
    /// Only the nft data plane can; false on the MFC one.
    pub fn steer_also(&mut self, device: String) -> bool {
        match &mut self.native {
            super::Native::Nft(p) => {
                p.add_device(device);
                true
            }
            super::Native::Mfc(_) => false,
        }
    }

    /// The claims this verifier steers for `group` (its failover view while members are found
    /// dead), each with whether its member is dead: what a site agent serves (SPEC.md §10.8).
    pub fn steered_claims(&self, group: Ipv4Addr) -> Vec<SteeredClaim> {
        let table = self.liveness.view().unwrap_or(self.verifier.ownership());
        table
            .claims(group)
            .map(|(member, c)| SteeredClaim {
                member,
                slices: c.slices.clone(),
                dead: self.liveness.state(group, member) == Some(true),
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "site_tests.rs"]
mod tests;

/// The general query that hands `scope` down to the site's members on one member link (SPEC.md
/// §3.10, §10.8): from `src` to 224.0.0.1 with TTL 1 and Router Alert, its additional data the
/// scope notice signed by the router key under its router certificate at `now`. Members answer
/// it like any general query (within `max_resp`).
#[allow(clippy::too_many_arguments)]
pub fn scope_query(
    src: Ipv4Addr,
    group: Ipv4Addr,
    site: SiteId,
    slicing: Slicing,
    scope: &SiteScope,
    now: igmp_ext::Timestamp,
    max_resp: Duration,
    cert: &igmp_ext::MemberCertificate,
    key: &igmp_ext::ed25519_dalek::SigningKey,
) -> Result<Vec<u8>, igmp_ext::scope::ScopeBuildError> {
    use igmp_ext::wire::igmp::{encode_code, IgmpRepr, QueryRepr, QueryV3Fields, ALL_SYSTEMS};
    let notice = igmp_ext::scope::ScopeNotice {
        group,
        site,
        upper_epoch: scope.upper_epoch,
        timestamp: now,
        slicing,
        units: scope.units.clone(),
    };
    let mut v3 = QueryV3Fields {
        flags: 0,
        suppress: false,
        qrv: 2,
        qqic: 0,
        sources: Vec::new(),
        additional_data: Vec::new(),
    };
    notice.sign_into(&mut v3, cert, key)?;
    let tenths = u32::try_from(max_resp.as_millis() / 100).unwrap_or(u32::MAX);
    let query = QueryRepr {
        max_resp_code: encode_code(tenths),
        group: Ipv4Addr::UNSPECIFIED,
        v3: Some(v3),
    };
    Ok(super::igmp_datagram(
        src,
        ALL_SYSTEMS,
        IgmpRepr::Query(query),
    ))
}
