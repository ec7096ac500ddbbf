//! An upper control group of site agents (issue 14 item 2, SPEC.md §9.4) in the simulator: four
//! agents in two sites, each with a router certificate naming its site, so the group uses
//! site-aware quotas. An agent's loss moves its units only to its site's other agent; a whole
//! site's loss, or both its agents at weight 0, moves them to the other site; weight back, the
//! site takes its share again.

use control_channel::sim::{Sim, SimConfig};
use control_channel::CommittedAllocation;
use igmp_ext::{MemberId, SiteId, SliceSet};
use std::time::Duration;

fn committed(sim: &Sim, i: usize) -> CommittedAllocation {
    sim.endpoint(i)
        .and_then(|e| e.committed())
        .cloned()
        .expect("committed")
}

/// Agents 1 and 2 in site 1, agents 3 and 4 in site 2, settled.
fn two_sites(seed: u64) -> Sim {
    let mut cfg = SimConfig::new(seed, 4);
    cfg.sites = [1, 1, 2, 2].map(|s| Some(SiteId(s))).to_vec();
    let mut sim = Sim::new(&cfg);
    assert!(sim.run_until_converged(Duration::from_secs(2)).is_some());
    sim.run_for(Duration::from_millis(300));
    sim
}

fn site_of(m: MemberId) -> u32 {
    if m.0 <= 2 {
        1
    } else {
        2
    }
}

/// Units whose owner changed from `a` to `b`, as (unit, before, after).
fn changes(
    a: &CommittedAllocation,
    b: &CommittedAllocation,
) -> Vec<(usize, Option<MemberId>, Option<MemberId>)> {
    let (x, y) = (a.allocation.unit_owners(), b.allocation.unit_owners());
    (0..x.len())
        .filter(|&u| x[u] != y[u])
        .map(|u| (u, x[u], y[u]))
        .collect()
}

/// Node `i` holds itself at weight 0 (its site lost its members) or lets go.
fn hold(sim: &mut Sim, i: usize, held: bool) {
    let now = sim.local_now(i);
    sim.endpoint_mut(i).expect("running").set_held(now, held);
    sim.flush(i);
}

#[test]
fn an_agents_loss_moves_its_units_to_its_site_and_a_sites_loss_to_the_other_site() {
    let mut sim = two_sites(41);
    let start = committed(&sim, 0);
    for m in 1..=4 {
        assert_eq!(start.allocation.units_of(MemberId(m)), 64);
    }
    // Agent 1 stands by for all of agent 2's units, as the group will commit them.
    let standby: SliceSet = sim
        .endpoint(0)
        .expect("running")
        .standby()
        .into_iter()
        .collect();
    assert_eq!(standby, start.allocation.slices_of(MemberId(2)));
    // Each site's scope is what its two agents own, as every agent sees it.
    for i in 0..4 {
        let e = sim.endpoint(i).expect("running");
        let site1 = e.site_units(SiteId(1)).expect("committed");
        let site2 = e.site_units(SiteId(2)).expect("committed");
        for (u, o) in start.allocation.unit_owners().iter().enumerate() {
            assert_eq!(site1[u], o.is_some_and(|m| site_of(m) == 1));
            assert_eq!(site2[u], o.is_some_and(|m| site_of(m) == 2));
        }
    }
    // Agent 1 (the coordinator) dies: its units go to agent 2 only; site 2 is untouched.
    sim.crash(0);
    assert!(sim.run_until_converged(Duration::from_secs(2)).is_some());
    let one_gone = committed(&sim, 1);
    let moved = changes(&start, &one_gone);
    assert_eq!(moved.len(), 64);
    assert!(moved
        .iter()
        .all(|&(_, from, to)| from == Some(MemberId(1)) && to == Some(MemberId(2))));
    // Agent 2 dies too: site 1 is gone, its units spread over site 2's agents.
    sim.crash(1);
    assert!(sim.run_until_converged(Duration::from_secs(2)).is_some());
    let site_gone = committed(&sim, 2);
    let moved = changes(&one_gone, &site_gone);
    assert_eq!(moved.len(), 128);
    assert!(moved
        .iter()
        .all(|&(_, from, to)| from == Some(MemberId(2)) && to.is_some_and(|m| site_of(m) == 2)));
    assert_eq!(site_gone.allocation.units_of(MemberId(3)), 128);
    assert_eq!(site_gone.allocation.units_of(MemberId(4)), 128);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_site_at_weight_zero_gives_its_units_to_the_other_site_and_takes_them_back() {
    let mut sim = two_sites(42);
    let start = committed(&sim, 0);
    hold(&mut sim, 2, true);
    hold(&mut sim, 3, true);
    sim.run_for(Duration::from_millis(300));
    assert!(sim.converged());
    let drained = committed(&sim, 0);
    assert_eq!(drained.allocation.units_of(MemberId(1)), 128);
    assert_eq!(drained.allocation.units_of(MemberId(2)), 128);
    let moved = changes(&start, &drained);
    assert_eq!(moved.len(), 128, "only site 2's units moved");
    assert!(moved
        .iter()
        .all(|&(_, from, to)| from.is_some_and(|m| site_of(m) == 2)
            && to.is_some_and(|m| site_of(m) == 1)));
    // One agent of site 2 back at weight 1: site 2's weight is 1 again, and that agent takes
    // the whole of the site's half.
    hold(&mut sim, 3, false);
    sim.run_for(Duration::from_millis(300));
    assert!(sim.converged());
    let half = committed(&sim, 0);
    assert_eq!(half.allocation.units_of(MemberId(4)), 128);
    assert_eq!(half.allocation.units_of(MemberId(3)), 0);
    assert_eq!(changes(&drained, &half).len(), 128);
    // Both back: site 2's agents share its half again; site 1 is not disturbed.
    hold(&mut sim, 2, false);
    sim.run_for(Duration::from_millis(300));
    assert!(sim.converged());
    let back = committed(&sim, 0);
    for m in 1..=4 {
        assert_eq!(back.allocation.units_of(MemberId(m)), 64);
    }
    let moved = changes(&half, &back);
    assert_eq!(moved.len(), 64);
    assert!(moved
        .iter()
        .all(|&(_, from, to)| from == Some(MemberId(4)) && to == Some(MemberId(3))));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_group_where_one_member_names_no_site_keeps_flat_quotas() {
    // Agent 4 carries a member certificate: today's rule, so agent 1's units spread over all
    // three survivors, which is what tells the two rules apart above.
    let mut cfg = SimConfig::new(43, 4);
    cfg.sites = vec![Some(SiteId(1)), Some(SiteId(1)), Some(SiteId(2)), None];
    let mut sim = Sim::new(&cfg);
    assert!(sim.run_until_converged(Duration::from_secs(2)).is_some());
    let start = committed(&sim, 0);
    sim.crash(0);
    assert!(sim.run_until_converged(Duration::from_secs(2)).is_some());
    let after = committed(&sim, 1);
    let heirs: std::collections::BTreeSet<_> =
        changes(&start, &after).iter().filter_map(|c| c.2).collect();
    assert_eq!(heirs.len(), 3, "{heirs:?}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
