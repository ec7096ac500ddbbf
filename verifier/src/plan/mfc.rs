//! Native multicast mode on the kernel's multicast routing (the MFC data plane), pure: which MFC
//! entry each (S,G) should have, given the ownership table. Upcalls create entries; ownership
//! changes re-point them; idle ones are removed. `crate::sys::mroute` applies the ops through
//! the mroute control socket (SPEC.md §10.2).
//!
//! An entry of a protected group has at most one outgoing VIF, so two owners for one source never
//! reach the kernel. Plain (unprotected) groups are routed like any IGMP multicast router does:
//! toward every VIF with listeners, except the one the packet came in on (SPEC.md §10.5).

use super::{Change, DataplaneOp, MfcSpec, PlanFailure, Planner, Target, View, VifSet, VifTable};
use core::time::Duration;
use igmp_ext::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use tracing::{debug, info};

/// The kernel's packet counter of one probed (S,G) entry (the idle sweep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    pub group: Ipv4Addr,
    pub source: Ipv4Addr,
    /// `Ok(None)`: the kernel has no such entry; `Err(())`: it could not be read.
    pub packets: Result<Option<u64>, ()>,
}

/// `IGMPMSG_NOCACHE`: a packet for an (S,G) with no MFC entry; the kernel queued it.
pub const IGMPMSG_NOCACHE: u8 = 1;

/// An upcall (`struct igmpmsg`), read from bytes that arrived on the mroute socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upcall {
    pub msgtype: u8,
    pub vif: u16,
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
}

impl Upcall {
    /// `struct igmpmsg` overlays an IPv4 header whose protocol byte (`im_mbz`) is 0, which no
    /// real IGMP datagram has; `None` for anything else.
    pub fn parse(bytes: &[u8]) -> Option<Upcall> {
        let b = bytes.get(..20)?;
        if b[9] != 0 {
            return None;
        }
        Some(Upcall {
            msgtype: b[8],
            vif: u16::from(b[10]) | (u16::from(b[11]) << 8),
            source: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
            group: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub parent: u16,
    pub oifs: VifSet,
    pub target: Option<Target>,
    /// Packet counter at the last sweep, and when it last moved.
    #[serde(skip)]
    last_packets: u64,
    #[serde(skip)]
    last_active: Timestamp,
}

/// The (S,G) entries this verifier put in the kernel.
#[derive(Debug, Default)]
pub struct MfcPlanner {
    entries: BTreeMap<(Ipv4Addr, Ipv4Addr), Entry>,
    /// The last (group, source) the idle sweep looked at: it goes round in slices.
    sweep_cursor: Option<(Ipv4Addr, Ipv4Addr)>,
}

fn oifs_for(target: Target, parent: u16, vifs: &VifTable) -> VifSet {
    // Never back out of the arrival interface: the kernel would not, and it is a loop.
    match target {
        Target::Member { ifindex, .. } => vifs
            .vif_of(ifindex)
            .filter(|&v| v != parent)
            .map_or(VifSet::EMPTY, VifSet::one),
        Target::Listeners { vifs } => vifs.without(parent),
        Target::Drop => VifSet::EMPTY,
    }
}

impl MfcPlanner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = ((Ipv4Addr, Ipv4Addr), &Entry)> {
        self.entries.iter().map(|(&k, e)| (k, e))
    }

    fn spec(group: Ipv4Addr, source: Ipv4Addr, e: &Entry) -> MfcSpec {
        MfcSpec {
            source,
            group,
            parent: e.parent,
            oifs: e.oifs,
        }
    }

    /// An IGMPMSG_NOCACHE upcall for (source, group) that arrived on VIF `parent`.
    pub fn upcall(
        &mut self,
        now: Timestamp,
        source: Ipv4Addr,
        group: Ipv4Addr,
        parent: u16,
        target: Target,
        vifs: &VifTable,
    ) -> DataplaneOp {
        let e = Entry {
            parent,
            oifs: oifs_for(target, parent, vifs),
            target: Some(target),
            last_packets: 0,
            last_active: now,
        };
        let op = DataplaneOp::MfcInstall(Self::spec(group, source, &e));
        self.entries.insert((group, source), e);
        op
    }

    /// Takes over an entry found in the kernel at start (left by an earlier process): kept as
    /// it is until [`MfcPlanner::repoint`] runs with rebuilt ownership.
    pub fn adopt(
        &mut self,
        now: Timestamp,
        source: Ipv4Addr,
        group: Ipv4Addr,
        parent: u16,
        oifs: VifSet,
    ) {
        self.entries.insert(
            (group, source),
            Entry {
                parent,
                oifs,
                target: None,
                last_packets: 0,
                last_active: now,
            },
        );
    }

    /// Re-points every entry of `group` (all groups when `None`) to `target(group, source)`;
    /// returns the entries that changed. Adopted entries are left alone until
    /// [`MfcPlanner::settle_adopted`]: while ownership is being rebuilt after a restart, a
    /// partial table must not pull traffic away from where the kernel sends it.
    pub fn repoint(
        &mut self,
        group: Option<Ipv4Addr>,
        target: impl Fn(Ipv4Addr, Ipv4Addr) -> Target,
        vifs: &VifTable,
    ) -> Vec<DataplaneOp> {
        self.repoint_where(group, false, target, vifs)
    }

    /// Ends the restart grace: adopted entries follow the rebuilt ownership from now on.
    pub fn settle_adopted(
        &mut self,
        target: impl Fn(Ipv4Addr, Ipv4Addr) -> Target,
        vifs: &VifTable,
    ) -> Vec<DataplaneOp> {
        self.repoint_where(None, true, target, vifs)
    }

    pub fn adopted(&self) -> usize {
        self.entries.values().filter(|e| e.target.is_none()).count()
    }

    fn repoint_where(
        &mut self,
        group: Option<Ipv4Addr>,
        adopted: bool,
        target: impl Fn(Ipv4Addr, Ipv4Addr) -> Target,
        vifs: &VifTable,
    ) -> Vec<DataplaneOp> {
        let mut ops = Vec::new();
        for (&(g, s), e) in self.entries.iter_mut() {
            if group.is_some_and(|want| want != g) || e.target.is_none() != adopted {
                continue;
            }
            let t = target(g, s);
            let oifs = oifs_for(t, e.parent, vifs);
            e.target = Some(t);
            if oifs != e.oifs {
                e.oifs = oifs;
                ops.push(DataplaneOp::MfcInstall(Self::spec(g, s, e)));
            }
        }
        ops
    }

    /// The next `budget` entries for the idle sweep (round robin, so that a sweep costs the
    /// same with 100 entries or 100,000): their kernel counters are to be read and handed to
    /// [`MfcPlanner::counted`].
    pub fn probe(&mut self, budget: usize) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        use core::ops::Bound::{Excluded, Unbounded};
        let after = match self.sweep_cursor {
            Some(k) => (Excluded(k), Unbounded),
            None => (Unbounded, Unbounded),
        };
        let mut keys: Vec<(Ipv4Addr, Ipv4Addr)> = self
            .entries
            .range(after)
            .map(|(&k, _)| k)
            .take(budget)
            .collect();
        if let (Some(cursor), true) = (self.sweep_cursor, keys.len() < budget) {
            // Wrap around: from the start up to where this call began.
            let left = budget - keys.len();
            keys.extend(self.entries.range(..=cursor).map(|(&k, _)| k).take(left));
        }
        if let Some(&last) = keys.last() {
            self.sweep_cursor = Some(last);
        }
        keys
    }

    /// The kernel's packet counters of probed (group, source) entries, `None` when the kernel
    /// has no such entry (then it is forgotten here too): removes those whose counter has not
    /// moved for `idle`. An entry is removed at most one round after it went idle, a round
    /// being `len / budget` probes.
    pub fn counted(
        &mut self,
        now: Timestamp,
        idle: Duration,
        counts: impl IntoIterator<Item = ((Ipv4Addr, Ipv4Addr), Option<u64>)>,
    ) -> Vec<DataplaneOp> {
        let mut ops = Vec::new();
        for ((g, s), packets) in counts {
            let Some(p) = packets else {
                self.entries.remove(&(g, s));
                continue;
            };
            let Some(e) = self.entries.get_mut(&(g, s)) else {
                continue;
            };
            if p != e.last_packets {
                e.last_packets = p;
                e.last_active = now;
            } else if now >= e.last_active.saturating_add(idle) {
                ops.push(DataplaneOp::MfcRemove(Self::spec(g, s, e)));
                self.entries.remove(&(g, s));
            }
        }
        ops
    }

    /// [`MfcPlanner::probe`] and [`MfcPlanner::counted`] in one, with `packets` as the kernel.
    pub fn sweep(
        &mut self,
        now: Timestamp,
        idle: Duration,
        budget: usize,
        mut packets: impl FnMut(Ipv4Addr, Ipv4Addr) -> Option<u64>,
    ) -> Vec<DataplaneOp> {
        let counts: Vec<_> = self
            .probe(budget)
            .into_iter()
            .map(|(g, s)| ((g, s), packets(g, s)))
            .collect();
        self.counted(now, idle, counts)
    }

    /// Removes everything (clean shutdown).
    pub fn drain(&mut self) -> Vec<DataplaneOp> {
        let ops = self
            .entries
            .iter()
            .map(|(&(g, s), e)| DataplaneOp::MfcRemove(Self::spec(g, s, e)))
            .collect();
        self.entries.clear();
        ops
    }
}

impl Planner for MfcPlanner {
    fn plan(
        &mut self,
        _now: Timestamp,
        view: &View<'_>,
        change: Change,
        out: &mut Vec<DataplaneOp>,
    ) -> Vec<PlanFailure> {
        let target = |g, s| view.target(g, s);
        match change {
            Change::Ownership(group) => out.extend(self.repoint(group, target, view.vifs)),
            // A protected group is steered by ownership, not by listeners.
            Change::Listeners(group) if !view.verifier.is_protected(group) => {
                let ops = self.repoint(Some(group), target, view.vifs);
                if !ops.is_empty() {
                    debug!(%group, changed = ops.len(), "plain group entries follow their listeners");
                }
                out.extend(ops);
            }
            Change::Settle => {
                let ops = self.settle_adopted(target, view.vifs);
                if !ops.is_empty() {
                    info!(
                        changed = ops.len(),
                        "entries taken over at start now follow the rebuilt ownership"
                    );
                }
                out.extend(ops);
            }
            Change::Listeners(_) | Change::Retry => {}
        }
        Vec::new()
    }

    fn completed(&mut self, _op: &DataplaneOp, _ok: bool) {}

    fn withdraw(&mut self, out: &mut Vec<DataplaneOp>) {
        out.extend(self.drain());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{resolve, GapPolicy};
    use igmp_ext::ownership::{Claim, OwnershipTable};
    use igmp_ext::{AllocationEpoch, MemberId, Slice};

    const G: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
    const EVEN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const ODD: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);

    fn claim(slices: &[Slice], epoch: u64, ifindex: u32) -> Claim {
        Claim {
            slices: slices.iter().copied().collect(),
            epoch: AllocationEpoch(epoch),
            ifindex,
            sender: Ipv4Addr::new(10, 0, 0, 1),
            expires: igmp_ext::Instant::from_secs(100),
            member_key: igmp_ext::KeyId([1; 8]),
            issuer: igmp_ext::KeyId([2; 8]),
            standby: igmp_ext::SliceSet::default(),
            liveness: Vec::new(),
            waiting: igmp_ext::SliceSet::default(),
        }
    }

    fn vifs() -> VifTable {
        let mut v = VifTable::default();
        v.insert(10, 0); // clients
        v.insert(11, 1); // member 1
        v.insert(12, 2); // member 2
        v
    }

    #[test]
    fn upcall_installs_toward_owner_and_gap_follows_policy() {
        let mut t = OwnershipTable::new();
        t.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(1),
            claim(&[Slice::new(0, 1)], 1, 11),
        )
        .unwrap();
        let now = Timestamp::from_secs(1);
        let mut st = MfcPlanner::new();
        let tgt = resolve(&t, GapPolicy::Drop, G, EVEN);
        assert_eq!(
            st.upcall(now, EVEN, G, 0, tgt, &vifs()),
            DataplaneOp::MfcInstall(MfcSpec {
                source: EVEN,
                group: G,
                parent: 0,
                oifs: VifSet::one(1)
            })
        );
        // The odd half has no owner: dropped, or sent to the fallback member.
        assert_eq!(resolve(&t, GapPolicy::Drop, G, ODD), Target::Drop);
        assert_eq!(
            resolve(&t, GapPolicy::Fallback(MemberId(1)), G, ODD),
            Target::Member {
                member: 1,
                ifindex: 11
            }
        );
        assert_eq!(
            resolve(&t, GapPolicy::Fallback(MemberId(9)), G, ODD),
            Target::Drop
        );
        let op = st.upcall(now, ODD, G, 0, Target::Drop, &vifs());
        assert!(matches!(
            op,
            DataplaneOp::MfcInstall(MfcSpec {
                oifs: VifSet::EMPTY,
                ..
            })
        ));
    }

    #[test]
    fn ownership_change_repoints_only_what_moved() {
        let mut t = OwnershipTable::new();
        t.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(1),
            claim(&[Slice::ALL], 1, 11),
        )
        .unwrap();
        let now = Timestamp::from_secs(1);
        let mut st = MfcPlanner::new();
        for s in [EVEN, ODD] {
            let tgt = resolve(&t, GapPolicy::Drop, G, s);
            st.upcall(now, s, G, 0, tgt, &vifs());
        }
        // Member 2 takes the odd half at a later epoch.
        t.apply(
            Timestamp::from_secs(1),
            G,
            MemberId(2),
            claim(&[Slice::new(1, 1)], 2, 12),
        )
        .unwrap();
        let ops = st.repoint(Some(G), |g, s| resolve(&t, GapPolicy::Drop, g, s), &vifs());
        assert_eq!(
            ops,
            vec![DataplaneOp::MfcInstall(MfcSpec {
                source: ODD,
                group: G,
                parent: 0,
                oifs: VifSet::one(2)
            })]
        );
        // Nothing moved: nothing to do. Another group: untouched.
        assert!(st
            .repoint(Some(G), |g, s| resolve(&t, GapPolicy::Drop, g, s), &vifs())
            .is_empty());
        assert!(st
            .repoint(
                Some(Ipv4Addr::new(232, 9, 9, 9)),
                |_, _| Target::Drop,
                &vifs()
            )
            .is_empty());
        // A member on the clients' own link is never an outgoing interface.
        let ops = st.repoint(
            None,
            |_, _| Target::Member {
                member: 3,
                ifindex: 10,
            },
            &vifs(),
        );
        assert!(ops.iter().all(|op| matches!(
            op,
            DataplaneOp::MfcInstall(MfcSpec {
                oifs: VifSet::EMPTY,
                ..
            })
        )));
    }

    #[test]
    fn adopted_entries_stay_until_settled() {
        let mut st = MfcPlanner::new();
        let t0 = Timestamp::from_secs(0);
        st.adopt(t0, EVEN, G, 0, VifSet::one(2));
        let to_one = |_, _| Target::Member {
            member: 1,
            ifindex: 11,
        };
        assert!(st.repoint(Some(G), to_one, &vifs()).is_empty());
        assert_eq!(st.adopted(), 1);
        let ops = st.settle_adopted(to_one, &vifs());
        assert!(matches!(
            ops[..],
            [DataplaneOp::MfcInstall(MfcSpec { oifs, .. })] if oifs == VifSet::one(1)
        ));
        assert_eq!(st.adopted(), 0);
    }

    #[test]
    fn plain_groups_go_to_every_listening_vif_but_the_arrival_one() {
        const PLAIN: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
        let now = Timestamp::from_secs(1);
        let mut st = MfcPlanner::new();
        let listeners = |vifs: &[u16]| Target::Listeners {
            vifs: vifs.iter().copied().collect(),
        };
        // Arrives on VIF 1; listeners on 0, 1 and 2: out of 0 and 2 only.
        let op = st.upcall(now, EVEN, PLAIN, 1, listeners(&[0, 1, 2]), &vifs());
        assert_eq!(
            op,
            DataplaneOp::MfcInstall(MfcSpec {
                source: EVEN,
                group: PLAIN,
                parent: 1,
                oifs: [0, 2].into_iter().collect()
            })
        );
        // A listener leaves VIF 0: re-pointed to VIF 2 only; the arrival VIF alone is no change.
        let ops = st.repoint(Some(PLAIN), |_, _| listeners(&[1, 2]), &vifs());
        assert!(matches!(
            ops[..],
            [DataplaneOp::MfcInstall(MfcSpec { oifs, .. })] if oifs == VifSet::one(2)
        ));
        assert!(st
            .repoint(Some(PLAIN), |_, _| listeners(&[1, 2]), &vifs())
            .is_empty());
        // The last one leaves: the entry drops in the kernel (and stays, so no more upcalls).
        let ops = st.repoint(Some(PLAIN), |_, _| listeners(&[1]), &vifs());
        assert!(matches!(
            ops[..],
            [DataplaneOp::MfcInstall(MfcSpec {
                oifs: VifSet::EMPTY,
                ..
            })]
        ));
        assert_eq!(st.len(), 1);
    }

    #[test]
    fn idle_entries_expire_and_busy_ones_stay() {
        let mut st = MfcPlanner::new();
        let t0 = Timestamp::from_secs(0);
        st.upcall(t0, EVEN, G, 0, Target::Drop, &vifs());
        st.upcall(t0, ODD, G, 0, Target::Drop, &vifs());
        let idle = Duration::from_secs(10);
        // Both move at 5 s; only ODD moves after.
        assert!(st
            .sweep(Timestamp::from_secs(5), idle, usize::MAX, |_, _| Some(1))
            .is_empty());
        let ops = st.sweep(Timestamp::from_secs(15), idle, usize::MAX, |_, s| {
            Some(if s == ODD { 2 } else { 1 })
        });
        assert_eq!(ops.len(), 1);
        assert!(matches!(
            ops[0],
            DataplaneOp::MfcRemove(MfcSpec { source: EVEN, .. })
        ));
        // An entry the kernel lost is forgotten without an operation.
        assert!(st
            .sweep(Timestamp::from_secs(16), idle, usize::MAX, |_, _| None)
            .is_empty());
        assert!(st.is_empty());
    }

    #[test]
    fn sweep_goes_round_in_slices_of_its_budget() {
        let mut st = MfcPlanner::new();
        let t0 = Timestamp::from_secs(0);
        let sources: Vec<Ipv4Addr> = (1..=10).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        for &s in &sources {
            st.upcall(t0, s, G, 0, Target::Drop, &vifs());
        }
        // Four calls of 3 look at every entry once, then go round again.
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut this_call = 0;
            st.sweep(t0, Duration::from_secs(10), 3, |_, s| {
                seen.push(s);
                this_call += 1;
                Some(1)
            });
            assert!(this_call <= 3);
        }
        assert_eq!(seen.len(), 12);
        assert_eq!(seen[..10], sources[..]);
        assert_eq!(seen[10..], sources[..2]);
        // All idle at 20 s: removed over the following rounds, at most 3 per call.
        let mut removed = 0;
        for _ in 0..4 {
            let ops = st.sweep(
                Timestamp::from_secs(20),
                Duration::from_secs(10),
                3,
                |_, _| Some(1),
            );
            assert!(ops.len() <= 3);
            removed += ops.len();
        }
        assert_eq!(removed, 10);
        assert!(st.is_empty());
        // A budget larger than the table looks at each entry once.
        st.upcall(t0, sources[0], G, 0, Target::Drop, &vifs());
        let mut calls = 0;
        st.sweep(t0, Duration::from_secs(10), 100, |_, _| {
            calls += 1;
            Some(1)
        });
        assert_eq!(calls, 1);
    }
    #[test]
    fn upcall_is_told_apart_from_igmp() {
        let mut b = [0xa5u8; 20];
        b[8] = IGMPMSG_NOCACHE;
        b[9] = 0;
        b[10] = 3;
        b[11] = 0;
        b[12..16].copy_from_slice(&[10, 1, 0, 7]);
        b[16..20].copy_from_slice(&[232, 1, 1, 1]);
        let u = Upcall::parse(&b).expect("upcall");
        assert_eq!(u.msgtype, IGMPMSG_NOCACHE);
        assert_eq!(u.vif, 3);
        assert_eq!(u.source, Ipv4Addr::new(10, 1, 0, 7));
        assert_eq!(u.group, Ipv4Addr::new(232, 1, 1, 1));
        b[9] = 2; // IGMP
        assert!(Upcall::parse(&b).is_none());
        assert!(Upcall::parse(&b[..19]).is_none());
    }

    #[test]
    fn vif_sets_hold_only_real_vif_numbers() {
        let s: VifSet = [0, 3, 31, 32, 200].into_iter().collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 3, 31]);
        assert!(s.contains(3) && !s.contains(32));
        assert_eq!(s.without(3).without(40).iter().count(), 2);
        assert!(VifSet::one(40).is_empty());
    }
}
