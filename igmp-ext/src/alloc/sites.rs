//! Site-aware quotas (issue 14 item 2, SPEC.md §6): in an upper control group whose members are
//! the site routers' agents, units are first shared among sites and then within each site, so
//! that losing one agent of a site moves its units only to the site's other agents.

use super::{largest_remainder, quotas};
use crate::cert::{MemberId, SiteId};
use std::collections::BTreeMap;

/// Units per member for `n` units when every member belongs to a site: the units are split
/// among sites by site weight (the largest weight among the site's members, so a site whose
/// members all weigh 0 gets nothing), then each site's units among its members by weight; both
/// by largest remainder, ties to the lower site id, then to the lower member id ([`quotas`]).
/// A site's share does not change while a member of its largest weight stays.
pub fn site_quotas(n: usize, members: &[(MemberId, u32, SiteId)]) -> BTreeMap<MemberId, usize> {
    let mut site_weight: BTreeMap<SiteId, u32> = BTreeMap::new();
    for &(_, w, s) in members {
        let e = site_weight.entry(s).or_default();
        *e = (*e).max(w);
    }
    let sites: Vec<(SiteId, u32)> = site_weight.into_iter().collect();
    let mut out = BTreeMap::new();
    for (site, units) in largest_remainder(n, &sites) {
        let local: Vec<(MemberId, u32)> = members
            .iter()
            .filter(|&&(_, _, s)| s == site)
            .map(|&(m, w, _)| (m, w))
            .collect();
        out.extend(quotas(units, &local));
    }
    out
}

/// The quotas a control group applies (SPEC.md §9.4): [`site_quotas`] when every member names a
/// site, else [`quotas`] (a flat group, or one where any member's certificate names no site).
pub fn group_quotas(
    n: usize,
    members: &[(MemberId, u32, Option<SiteId>)],
) -> BTreeMap<MemberId, usize> {
    let sited: Option<Vec<(MemberId, u32, SiteId)>> = members
        .iter()
        .map(|&(m, w, s)| s.map(|s| (m, w, s)))
        .collect();
    match sited {
        Some(sited) => site_quotas(n, &sited),
        None => {
            let flat: Vec<(MemberId, u32)> = members.iter().map(|&(m, w, _)| (m, w)).collect();
            quotas(n, &flat)
        }
    }
}
