//! The status an admin client sees (SPEC.md §11.8): built from the control endpoint's view of
//! the cluster and the daemon's counters. Pure: an endpoint and a snapshot in, a [`Status`] out.

use super::protocol::{CounterStatus, EpochStatus, MemberStatus, Status};
use crate::metrics::Snapshot;
use crate::mld_agent::units6;
use control_channel::Endpoint;
use igmp_ext::{MemberId, SliceEntry, SliceSet, Slicing};
use std::collections::{BTreeMap, BTreeSet};

/// The counters a status carries.
pub fn counters_of(s: &Snapshot) -> CounterStatus {
    CounterStatus {
        served: s.service.served,
        filtered: s.service.filtered,
        resets: s.service.resets,
        sessions: s.sessions as u64,
        joins_sent: s.joins_sent,
        mld_joins_sent: s.mld_joins_sent,
        served6: s.service6.served,
        filtered6: s.service6.filtered,
        resets6: s.service6.resets,
        sessions6: s.sessions6 as u64,
        commits: s.commits,
        control_accepted: s.control.accepted,
        control_sent: s.control.sent,
        control_dropped: s
            .control
            .dropped
            .iter()
            .map(|(r, n)| (r.as_str().to_owned(), *n))
            .collect(),
    }
}

/// The status of `ep`, with the daemon's counters.
pub fn status_of(ep: &Endpoint, counters: &Snapshot) -> Status {
    let me = ep.id();
    let live: BTreeSet<MemberId> = ep.live_members().into_iter().collect();
    let committed = ep.committed();
    let in_allocation: BTreeMap<MemberId, u32> = committed
        .map(|c| c.members())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut ids: BTreeSet<MemberId> = ep.known_peers().into_iter().collect();
    ids.insert(me);
    ids.extend(in_allocation.keys().copied());
    let unit_load = ep.unit_loads();
    let slicing = ep.config().slicing;
    let members = ids
        .into_iter()
        .map(|m| {
            let (units, slices, load, slices6) = match committed {
                Some(c) => {
                    let a = &c.allocation;
                    let load = a
                        .unit_owners()
                        .iter()
                        .zip(&unit_load)
                        .filter(|(o, _)| **o == Some(m))
                        .map(|(_, l)| *l)
                        .sum();
                    let mine = a.slices_of(m);
                    let slices = mine.iter().map(|s| s.to_string()).collect();
                    let slices6 = match counters.group6 {
                        Some(_) => slices6_of(slicing, &mine),
                        None => Vec::new(),
                    };
                    (a.units_of(m), slices, load, slices6)
                }
                None => (0, Vec::new(), 0, Vec::new()),
            };
            MemberStatus {
                id: m.0,
                me: m == me,
                live: live.contains(&m),
                weight: ep.weight_of(m),
                allocation_weight: in_allocation.get(&m).copied(),
                committed_epoch: if m == me {
                    committed.map(|c| c.id().epoch)
                } else {
                    ep.peer_committed(m).map(|id| id.epoch)
                },
                incarnation: ep.peer_incarnation(m).map(|t| t.0),
                units,
                slices,
                load,
                clock_offset_ms: if m == me {
                    ep.clock_offset()
                } else {
                    ep.peer_clock_offset(m)
                },
                slices6,
            }
        })
        .collect();
    Status {
        me: me.0,
        incarnation: ep.incarnation().0,
        epoch: committed.map(|c| EpochStatus {
            epoch: c.id().epoch,
            proposer: c.id().proposer,
            incarnation: c.id().incarnation,
            digest: c.digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
        }),
        slice_bits: slicing.bits(),
        members,
        unit_owner: committed.map_or_else(
            || vec![None; slicing.unit_count()],
            |c| {
                c.allocation
                    .unit_owners()
                    .iter()
                    .map(|o| o.map(|m| m.0))
                    .collect()
            },
        ),
        load_imbalance: committed
            .and_then(|c| c.allocation.load_imbalance(&c.members(), &unit_load)),
        unit_load,
        counters: counters_of(counters),
        clock_untimely: ep.clock_untimely(),
        health: counters.health.clone(),
        group6: counters.group6.map(|g| g.to_string()),
    }
}

/// The IPv6 slices of `units` (their site-slicing counterparts), as text.
fn slices6_of(slicing: Slicing, units: &SliceSet) -> Vec<String> {
    let entries: Vec<SliceEntry> = units.iter().copied().map(SliceEntry::include).collect();
    units6(slicing, &entries)
        .iter()
        .map(|e| e.slice.to_string())
        .collect()
}
