//! Agreement on the allocation (SPEC.md §9.4): the decision rule (the lowest live member
//! proposes when the live view differs from the committed member list), commits, and proposal
//! retransmission until every live member acknowledges.

use super::{
    proposal_allocation, proposal_digest, proposal_for, CommittedAllocation, Deferred, Destination,
    DropReason, Endpoint, Event, PendingProposal, MAX_ADVERT_QUERIES, MAX_EPOCH_STEP, MAX_MEMBERS,
};
use crate::time::Clock;
use crate::wire::{Commit, EpochId, Message, NackReason, Proposal, StateQuery, StateSubject};
use igmp_ext::{Allocation, MemberId};
use std::collections::BTreeSet;

impl Endpoint {
    /// A proposal, from its proposer or relayed (anti-entropy). Checked in order (SPEC.md §9.7):
    /// the decision rule's structure; the proposer's own signature inside it (a member cannot
    /// propose in another's name); an epoch at most [`MAX_EPOCH_STEP`] beyond this member's
    /// reference; then greater than the committed epoch id; and finally that it is what the
    /// rules let its proposer propose here: its members and weights are this member's view
    /// (so its proposer is the lowest live member, every live member's units go to live
    /// members, and all units are covered) and its scope this member's. A proposal that fails
    /// only that last check is deferred and committed when the view (or the scope) catches up
    /// (a member heard a moment later). Quotas are checked as soon as every listed member's
    /// certificate (its site) is known here, at the latest when the view matches.
    pub(super) fn on_proposal(&mut self, now: Clock, sender: MemberId, seq: u64, p: Proposal) {
        let refuse = |this: &mut Self, reason: DropReason| {
            *this.counters.dropped.entry(reason).or_default() += 1;
            let nack = match reason {
                DropReason::StaleEpoch => NackReason::StaleEpoch,
                _ => NackReason::InvalidProposal,
            };
            this.nack(now, sender, seq, nack);
        };
        let Some(allocation) = proposal_allocation(&p, self.config.slicing) else {
            return refuse(self, DropReason::InvalidProposal);
        };
        if self.sites_of(&p.members).is_some() && !self.quotas_hold(&p, &allocation) {
            return refuse(self, DropReason::InvalidProposal);
        }
        if !self.peers.contains_key(&MemberId(p.id.proposer)) && MemberId(p.id.proposer) != self.me
        {
            // Relayed from a proposer we have not met yet: ask for certificates; the answer
            // to our query did not count.
            if let Some(peer) = self.peers.get_mut(&sender) {
                peer.advert_queries = peer.advert_queries.saturating_sub(1);
            }
            self.send_hello(now, true);
            return refuse(self, DropReason::Unauthorized);
        }
        if !self.signed_by_proposer(&p) {
            return refuse(self, DropReason::Unauthorized);
        }
        if p.id.epoch > self.reference_epoch().saturating_add(MAX_EPOCH_STEP) {
            return refuse(self, DropReason::InvalidProposal);
        }
        // Signed by a certified member and within the step: a proposal above it comes next.
        self.max_epoch_seen = self.max_epoch_seen.max(p.id.epoch);
        let digest = proposal_digest(&p);
        match &self.committed {
            Some(c) if c.id() == p.id && c.digest == digest => {
                // Already ours; acknowledge again in case our commit was lost.
                self.send_commit(now);
                return;
            }
            Some(c) if self.previous.is_none() && c.proposal.base == p.id && p.id.epoch > 0 => {
                // The allocation our first commit was made from, as we asked its proposer.
                self.events.push_back(Event::PreviousAllocation {
                    id: p.id,
                    allocation: allocation.clone(),
                });
                self.previous = Some(CommittedAllocation {
                    proposal: p,
                    allocation,
                    digest,
                });
                return;
            }
            // A second copy of the answer about our previous allocation: nothing to say.
            Some(_) if self.previous.as_ref().is_some_and(|pr| pr.id() == p.id) => return,
            Some(c) if c.id() >= p.id => return refuse(self, DropReason::StaleEpoch),
            _ => {}
        }
        if !self.matches_view(&p) || !self.scope_matches(&p) {
            // The answer to our query for what `sender` advertises does not hold it back any
            // more; the proposal waits for our view.
            if let Some(peer) = self.peers.get_mut(&sender) {
                if peer.committed.is_some_and(|(id, _)| id == p.id) {
                    peer.advert_queries = MAX_ADVERT_QUERIES;
                }
            }
            if self.deferred.as_ref().is_none_or(|d| d.proposal.id <= p.id) {
                let until = now.mono.saturating_add(self.config.down_after * 2);
                self.deferred = Some(Deferred { proposal: p, until });
            }
            return;
        }
        // The view matches, so every listed member's certificate is known.
        if !self.quotas_hold(&p, &allocation) {
            return refuse(self, DropReason::InvalidProposal);
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

    /// Commits the deferred proposal if the view now matches it; drops it when it expired or
    /// something newer was committed.
    pub(super) fn retry_deferred(&mut self, now: Clock) {
        let Some(d) = self.deferred.take() else {
            return;
        };
        let mine = self.committed.as_ref().map(|c| c.id());
        if mine.is_some_and(|m| m >= d.proposal.id) {
            return;
        }
        if now.mono >= d.until {
            *self
                .counters
                .dropped
                .entry(DropReason::Unauthorized)
                .or_default() += 1;
            return;
        }
        if !self.matches_view(&d.proposal) || !self.scope_matches(&d.proposal) {
            self.deferred = Some(d);
            return;
        }
        let Some(allocation) = proposal_allocation(&d.proposal, self.config.slicing)
            .filter(|a| self.quotas_hold(&d.proposal, a))
        else {
            *self
                .counters
                .dropped
                .entry(DropReason::InvalidProposal)
                .or_default() += 1;
            return;
        };
        let digest = proposal_digest(&d.proposal);
        self.commit(
            now,
            CommittedAllocation {
                proposal: d.proposal,
                allocation,
                digest,
            },
        );
    }

    /// The proposer (`id.proposer`) signed the proposal with the key of its certificate.
    fn signed_by_proposer(&self, p: &Proposal) -> bool {
        let proposer = MemberId(p.id.proposer);
        let key = if proposer == self.me {
            self.identity.key.verifying_key()
        } else {
            match self.peers.get(&proposer) {
                Some(peer) => peer.key,
                None => return false,
            }
        };
        p.verify(self.cluster, &key)
    }

    /// The proposal's members and weights are this member's view; or, for a member that is
    /// not in its own committed allocation yet (it just started), its view without itself
    /// (it catches up on the cluster's allocation, then the coordinator adds it).
    fn matches_view(&self, p: &Proposal) -> bool {
        let view: Vec<(u32, u32)> = self.view().iter().map(|&(m, w)| (m.0, w)).collect();
        if p.members == view {
            return true;
        }
        let participant = self
            .committed
            .as_ref()
            .is_some_and(|c| c.members().iter().any(|&(m, _)| m == self.me));
        !participant
            && p.members.iter().all(|&(m, _)| m != self.me.0)
            && view
                .iter()
                .filter(|&&(m, _)| m != self.me.0)
                .eq(p.members.iter())
    }

    /// The epoch a proposal is measured against: the committed one; before the first commit,
    /// the median of what the live peers advertise (one liar cannot move it).
    pub(super) fn reference_epoch(&self) -> u64 {
        if let Some(c) = &self.committed {
            return c.id().epoch;
        }
        let mut adverts: Vec<u64> = self
            .peers
            .values()
            .filter(|p| p.live)
            .filter_map(|p| p.committed.map(|(id, _)| id.epoch))
            .collect();
        adverts.sort_unstable();
        adverts.get(adverts.len() / 2).copied().unwrap_or(0)
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
        if self.deferred.as_ref().is_some_and(|d| d.proposal.id <= id) {
            self.deferred = None;
        }
        self.max_epoch_seen = self.max_epoch_seen.max(id.epoch);
        let first = self.committed.is_none();
        let base = c.proposal.base;
        let proposer = MemberId(c.id().proposer);
        let listed = c.members().iter().any(|&(m, _)| m == self.me);
        self.previous = self.committed.replace(c);
        self.events
            .push_back(Event::Committed { id, digest, slices });
        self.send_commit(now);
        if first && listed && base.epoch > 0 && proposer != self.me {
            // Who owned our new units before? Ask the proposer for what it made this from
            // (twice: a lost answer costs the held clients the hold time).
            let m = Message::StateQuery(StateQuery {
                query_id: self.fresh_query_id(),
                subject: StateSubject::Previous,
            });
            self.send_to_member(now, proposer, &m);
            self.send_to_member(now, proposer, &m);
        }
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
                    self.own_weight()
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

    /// Whether this member is in its own committed allocation.
    fn is_participant(&self) -> bool {
        self.committed
            .as_ref()
            .is_some_and(|c| c.members().iter().any(|&(m, _)| m == self.me))
    }

    /// Live peers' advertised committed epochs within reach of our reference epoch.
    fn adverts_in_reach(&self) -> impl Iterator<Item = EpochId> + '_ {
        let reach = self.reference_epoch().saturating_add(MAX_EPOCH_STEP);
        self.peers
            .values()
            .filter(|p| p.live)
            .filter_map(|p| p.committed.map(|(id, _)| id))
            .filter(move |id| id.epoch <= reach)
    }

    /// A live peer advertises a greater committed epoch id than ours, within reach.
    fn peer_ahead(&self) -> bool {
        let mine = self.committed.as_ref().map(|c| c.id());
        self.adverts_in_reach()
            .any(|id| id.epoch > 0 && mine.is_none_or(|m| id > m))
    }

    /// Before it is in an allocation, a member waits to fetch what a live peer advertises
    /// (within reach, at most [`MAX_ADVERT_QUERIES`] queries per advertisement) rather than
    /// propose from nothing: a restarted coordinator then moves as few units as possible.
    pub(super) fn behind(&self) -> bool {
        if self.is_participant() {
            return false;
        }
        let mine = self.committed.as_ref().map(|c| c.id());
        let reach = self.reference_epoch().saturating_add(MAX_EPOCH_STEP);
        self.peers.values().any(|p| {
            p.live
                && p.advert_queries < MAX_ADVERT_QUERIES
                && p.committed.is_some_and(|(id, _)| {
                    id.epoch > 0 && id.epoch <= reach && mine.is_none_or(|m| id > m)
                })
        })
    }

    /// The decision rule (SPEC.md §9.4): the lowest live member proposes when the live view
    /// differs from the committed member list, or its scope from the committed one's units,
    /// and nobody live is ahead of it.
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
        // A live peer ahead of us with an allocation we cannot take (the other side of a
        // healed partition, or a liar): propose above it, once our last proposal is settled.
        let unify = self.peer_ahead() && self.pending.is_none();
        let settled = self
            .committed
            .as_ref()
            .is_some_and(|c| c.members() == view && self.scope_matches(&c.proposal));
        if settled && !unify {
            return;
        }
        let base = self
            .committed
            .as_ref()
            .map(|c| c.allocation.clone())
            .unwrap_or_else(|| Allocation::empty(self.config.slicing));
        let allocation = self.allocate(&base, &view);
        self.propose(now, &view, allocation);
    }

    /// Proposes `allocation` for `view` within this member's scope at the next epoch, commits
    /// it here and retransmits it until the live members acknowledge it.
    pub(super) fn propose(
        &mut self,
        now: Clock,
        view: &[(MemberId, u32)],
        allocation: Allocation,
    ) -> EpochId {
        let mine = self.committed.as_ref().map(|c| c.id());
        // Above everything seen within reach (bounded by the step rule, so never near the
        // last epoch): proposals checked, and what live peers advertise.
        let epoch = self
            .adverts_in_reach()
            .map(|id| id.epoch)
            .fold(
                self.max_epoch_seen.max(mine.map_or(0, |m| m.epoch)),
                u64::max,
            )
            .saturating_add(1);
        let id = EpochId {
            epoch,
            proposer: self.me.0,
            incarnation: self.incarnation.0,
        };
        let mut proposal = proposal_for(id, view, &allocation);
        proposal.base = mine.unwrap_or_default();
        proposal.scope = self.scope.clone();
        proposal.sign(self.cluster, &self.identity.key);
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
