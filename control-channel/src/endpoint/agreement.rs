//! Agreement on the allocation (SPEC.md §9.4): the decision rule (the lowest live member
//! proposes when the live view differs from the committed member list), commits, and proposal
//! retransmission until every live member acknowledges.

use super::{
    proposal_digest, proposal_for, validate_proposal, CommittedAllocation, Destination, DropReason,
    Endpoint, Event, PendingProposal, MAX_MEMBERS,
};
use crate::time::Clock;
use crate::wire::{Commit, EpochId, Message, NackReason, Proposal};
use igmp_ext::{Allocation, MemberId};
use std::collections::BTreeSet;

impl Endpoint {
    pub(super) fn on_proposal(&mut self, now: Clock, sender: MemberId, seq: u64, p: Proposal) {
        self.max_epoch_seen = self.max_epoch_seen.max(p.id.epoch);
        let Some(allocation) = validate_proposal(&p, self.config.slicing) else {
            *self
                .counters
                .dropped
                .entry(DropReason::InvalidProposal)
                .or_default() += 1;
            self.nack(now, sender, seq, NackReason::InvalidProposal);
            return;
        };
        let digest = proposal_digest(&p);
        match &self.committed {
            Some(c) if c.id() == p.id && c.digest == digest => {
                // Already ours; acknowledge again in case our commit was lost.
                self.send_commit(now);
                return;
            }
            Some(c) if c.id() >= p.id => {
                *self
                    .counters
                    .dropped
                    .entry(DropReason::StaleEpoch)
                    .or_default() += 1;
                self.nack(now, sender, seq, NackReason::StaleEpoch);
                return;
            }
            _ => {}
        }
        self.commit(
            now,
            CommittedAllocation {
                proposal: p,
                allocation,
                digest,
            },
        );
    }

    /// A peer's `Commit`: counts toward our pending proposal and is what it now advertises.
    pub(super) fn on_commit(&mut self, sender: MemberId, c: Commit) {
        if let Some(pending) = &mut self.pending {
            if c.id >= pending.id {
                pending.acked.insert(sender);
            }
        }
        if let Some(p) = self.peers.get_mut(&sender) {
            p.committed = Some((c.id, u64::from_be_bytes(first8(&c.digest))));
        }
    }

    pub(super) fn commit(&mut self, now: Clock, c: CommittedAllocation) {
        let id = c.id();
        let digest = c.digest;
        let slices = c.allocation.slices_of(self.me);
        if self.pending.as_ref().is_some_and(|p| p.id < id) {
            self.pending = None;
        }
        self.committed = Some(c);
        self.events
            .push_back(Event::Committed { id, digest, slices });
        self.send_commit(now);
    }

    pub(super) fn send_commit(&mut self, now: Clock) {
        if let Some(c) = &self.committed {
            let m = Message::Commit(Commit {
                id: c.id(),
                digest: c.digest,
            });
            self.send(now, Destination::Group, &m);
        }
    }

    /// This member and every live peer with the weight it announced, ascending.
    pub(super) fn view(&self) -> Vec<(MemberId, u32)> {
        self.live_members()
            .into_iter()
            .take(MAX_MEMBERS)
            .map(|m| {
                let w = if m == self.me {
                    self.config.weight
                } else {
                    self.peers.get(&m).map_or(0, |p| p.weight)
                };
                (m, w)
            })
            .collect()
    }

    /// Our last proposal is still missing a live member's acknowledgement: one change at a time.
    pub(super) fn unacknowledged(&self, c: &CommittedAllocation) -> bool {
        self.pending.as_ref().is_some_and(|pending| {
            c.members().iter().any(|(m, _)| {
                !pending.acked.contains(m) && self.peers.get(m).is_some_and(|p| p.live)
            })
        })
    }

    /// A live peer advertises a greater committed epoch id than ours.
    pub(super) fn behind(&self) -> bool {
        let mine = self.committed.as_ref().map(|c| c.id());
        self.peers.values().any(|p| {
            p.live
                && p.committed
                    .is_some_and(|(id, _)| id.epoch > 0 && mine.is_none_or(|m| id > m))
        })
    }

    /// The decision rule (SPEC.md §9.4): the lowest live member proposes when the live view
    /// differs from the committed member list and nobody live is ahead of it.
    pub(super) fn maybe_propose(&mut self, now: Clock) {
        if self.left || now.mono < self.started.saturating_add(self.config.startup_quiet) {
            return;
        }
        // A member whose clock its peers refuse would propose a view without them.
        if self.clock_untimely {
            return;
        }
        let view = self.view();
        if view.first().map(|&(m, _)| m) != Some(self.me) {
            return;
        }
        if self.behind() {
            return;
        }
        if self.committed.as_ref().is_some_and(|c| c.members() == view) {
            return;
        }
        let base = self
            .committed
            .as_ref()
            .map(|c| c.allocation.clone())
            .unwrap_or_else(|| Allocation::empty(self.config.slicing));
        let allocation = base.rebalanced(&view);
        self.propose(now, &view, allocation);
    }

    /// Proposes `allocation` for `view` at the next epoch, commits it here and retransmits it
    /// until the live members acknowledge it.
    pub(super) fn propose(
        &mut self,
        now: Clock,
        view: &[(MemberId, u32)],
        allocation: Allocation,
    ) -> EpochId {
        let mine = self.committed.as_ref().map(|c| c.id());
        let epoch = self
            .max_epoch_seen
            .max(mine.map_or(0, |m| m.epoch))
            .saturating_add(1);
        let id = EpochId {
            epoch,
            proposer: self.me.0,
            incarnation: self.incarnation.0,
        };
        let proposal = proposal_for(id, view, &allocation);
        let digest = proposal_digest(&proposal);
        self.max_epoch_seen = epoch;
        let m = Message::Proposal(proposal.clone());
        self.send(now, Destination::Group, &m);
        self.pending = Some(PendingProposal {
            id,
            acked: BTreeSet::from([self.me]),
            retransmit_at: now.mono.saturating_add(self.config.retransmit_after),
            tries: 0,
        });
        self.commit(
            now,
            CommittedAllocation {
                proposal,
                allocation,
                digest,
            },
        );
        id
    }

    pub(super) fn retransmit_proposal(&mut self, now: Clock) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        if now.mono < pending.retransmit_at {
            return;
        }
        let Some(c) = &self.committed else {
            self.pending = None;
            return;
        };
        let missing = c
            .members()
            .iter()
            .any(|(m, _)| !pending.acked.contains(m) && self.peers.get(m).is_some_and(|p| p.live));
        if !missing || pending.tries >= 20 || c.id() != pending.id {
            self.pending = None;
            return;
        }
        pending.tries += 1;
        pending.retransmit_at = now.mono.saturating_add(self.config.retransmit_after);
        let m = Message::Proposal(c.proposal.clone());
        self.send(now, Destination::Group, &m);
    }
}

fn first8(d: &[u8; 32]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    b
}
