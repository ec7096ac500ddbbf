//! The daemon's part in reallocation (SPEC.md §11.5, §11.6): carrying out the service's
//! [`Action`]s over the control channel, the strategy events, and drain. Kept apart from the
//! main loop in `daemon.rs`.

use super::random_u64;
use super::Runtime;
use crate::service::Action;
use control_channel::driver;
use control_channel::{CommittedAllocation, Endpoint, Event};
use igmp_ext::{AllocationEpoch, MemberId, SliceEntry, Timestamp};
use tracing::{debug, info, warn};

/// A drain in progress (SPEC.md §11.6).
#[derive(Debug, Clone, Copy)]
pub(super) struct Drain {
    pub(super) deadline: Timestamp,
    /// A commit since the drain began left this member without slices.
    pub(super) emptied: bool,
}

impl Drain {
    /// Whether a drain starts emptied: a member whose last commit left it without slices (an
    /// admin `drain` of it, then SIGTERM) sees no further commit, since its weight 0 changes
    /// nothing, and would otherwise wait out the drain timeout.
    pub(super) fn already_emptied(commits: u64, slices: usize) -> bool {
        commits > 0 && slices == 0
    }
}

impl Runtime {
    /// Starts draining: weight 0 over the control channel, so the next allocation moves every
    /// slice away; sessions go by the configured strategy, and [`Runtime::drain_finished`]
    /// says when the member may leave. Idempotent. The entry point for SIGTERM and for an
    /// admin request.
    pub fn begin_drain(&mut self, handle: &driver::DriverHandle) {
        if self.drain.is_some() {
            return;
        }
        info!(strategy = self.config.strategy.as_str(), "draining");
        self.drain = Some(Drain {
            deadline: driver::wall_clock().saturating_add(self.config.drain_timeout()),
            emptied: Drain::already_emptied(self.snapshot.commits, self.snapshot.slices),
        });
        self.snapshot.draining = true;
        handle.with(|ep, now| ep.drain(now));
    }

    /// Whether a drain is done: no slices left, no moved session needs us any more and, in VIP
    /// mode, no TCP connection to the VIP is left on this host (pinned ones end by themselves);
    /// or the drain timeout passed.
    pub fn drain_finished(&self, now: Timestamp) -> bool {
        match self.drain {
            None => false,
            Some(d) if now >= d.deadline => {
                warn!(
                    vip_connections_cut = self.drain_connections.unwrap_or(0),
                    "drain timeout: leaving with moved sessions or VIP connections still active"
                );
                true
            }
            Some(d) => {
                d.emptied
                    && !self.service.has_moved_sessions()
                    && (self.vip.is_none() || self.drain_connections == Some(0))
            }
        }
    }

    /// While draining in VIP mode, counts the open TCP connections to the VIP (sock_diag): the
    /// VIP leaves `lo` when the daemon exits, which would break them. Once per tick.
    pub(super) fn count_drain_connections(&mut self) {
        let Some(vip) = self.vip.filter(|_| self.drain.is_some()) else {
            self.drain_connections = None;
            self.snapshot.drain_connections = 0;
            return;
        };
        match crate::vip::SockDiag::new().and_then(|mut d| d.connections(vip)) {
            Ok(conns) => {
                if self.drain_connections != Some(conns.len()) {
                    info!(connections = conns.len(), "draining: VIP connections left");
                }
                self.drain_connections = Some(conns.len());
                self.snapshot.drain_connections = conns.len() as u64;
            }
            // Unknown: the drain then ends at its timeout.
            Err(e) => warn!("draining: cannot list VIP connections: {e}"),
        }
    }

    pub(super) async fn apply(&mut self, handle: &driver::DriverHandle, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Reply(r) => {
                    // The per-unit load the coordinator balances by: datagrams answered.
                    self.load.record(*r.to.ip());
                    self.send_replies(vec![r]).await;
                }
                Action::Forward {
                    to,
                    client,
                    payload,
                } => {
                    if self.direct_paths.contains(&to) {
                        self.snapshot.forwarded_direct += 1;
                    }
                    handle.with(move |ep, now| {
                        if let Err(e) = ep.forward(now, to, client, payload) {
                            debug!(member = %to, %client, "forward: {e}");
                        }
                    });
                }
                Action::SendState {
                    to,
                    transfer_id,
                    data,
                } => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    handle.with(move |ep, now| {
                        let _ = tx.send(ep.send_state(now, to, transfer_id, data));
                    });
                    match rx.await {
                        Ok(Ok(())) => debug!(member = %to, transfer_id, "sending moved sessions"),
                        Ok(Err(e)) => {
                            warn!(member = %to, "cannot send moved sessions: {e}");
                            self.service.handle_transfer_done(to, transfer_id);
                        }
                        Err(_) => self.service.handle_transfer_done(to, transfer_id),
                    }
                }
            }
        }
    }

    /// A commit: the service compares the new owners with the previous ones.
    pub(super) async fn reallocate(
        &mut self,
        handle: &driver::DriverHandle,
        now: Timestamp,
        no_slices: bool,
    ) {
        if let Some(d) = &mut self.drain {
            d.emptied |= no_slices;
            if no_slices {
                // A count from before this commit may miss a connection that came meanwhile.
                self.drain_connections = None;
            }
        }
        // The event names our slices; the strategies need every owner, before and after.
        if let Some(c) = committed_allocation(handle).await {
            let members: Vec<MemberId> = c.members().into_iter().map(|(m, _)| m).collect();
            let actions = self
                .service
                .handle_commit(now, c.id().epoch, &members, &c.allocation);
            self.apply(handle, actions).await;
            self.sync_vip_forward(now, Some(&members));
        }
    }

    /// VIP forward: brings the forwarding table up to date with what the service knows of
    /// gained units (after a commit, a transfer, and once a tick for the linger) and makes the
    /// kernel follow it. `listed`: the members of a new commit.
    pub(super) fn sync_vip_forward(&mut self, now: Timestamp, listed: Option<&[MemberId]>) {
        let Some(table) = &mut self.vip_forward else {
            return;
        };
        table.note_gains(now, self.service.gains_from_members());
        if let Some(listed) = listed {
            table.note_members(now, listed);
        }
        table.expire(now);
        if let Some(f) = self.vip_host.as_mut().and_then(|h| h.forwarder.as_mut()) {
            // A few `ip`/`nft` runs, only when the plan changed (commits, transfers, expiry).
            self.snapshot.vip_forward_units = f.apply(&table.plan()) as u64;
        }
        if self.pending_claim.is_some() && !self.service.awaits_old_owners() {
            if let Some((entries, epoch)) = self.pending_claim.take() {
                info!(epoch = epoch.0, "VIP forward: old owners known, claiming");
                self.agent.set_claim(now, entries, epoch, &mut random_u64);
                self.flush_joins(now);
            }
        }
    }

    /// Sends the claim of a commit, except under VIP forward while a gained unit's old owner is
    /// unknown (this member's first commit): the router would send that unit's established
    /// connections here before the forwarding exists, and this host would answer them RST.
    /// Held back, the unit has no owner at the router for that while (its segments are dropped,
    /// and TCP resends them); released by [`Runtime::sync_vip_forward`] once the transfers
    /// named the old owners or the hold time passed.
    pub(super) fn claim_after_forwarding(
        &mut self,
        now: Timestamp,
        entries: Vec<SliceEntry>,
        epoch: AllocationEpoch,
    ) {
        if self.vip_forward.is_some() && self.service.awaits_old_owners() {
            debug!(
                epoch = epoch.0,
                "VIP forward: claim held until the old owners are known"
            );
            self.pending_claim = Some((entries, epoch));
            return;
        }
        self.pending_claim = None;
        self.agent.set_claim(now, entries, epoch, &mut random_u64);
        self.flush_joins(now);
    }

    /// VIP forward: a member that left serves no connection any more.
    pub(super) fn vip_forward_member_left(&mut self, now: Timestamp, m: MemberId) {
        if let Some(table) = &mut self.vip_forward {
            table.member_left(m);
        }
        if let Some(f) = self.vip_host.as_mut().and_then(|h| h.forwarder.as_mut()) {
            f.remove_peer(m);
        }
        self.sync_vip_forward(now, None);
    }

    pub(super) async fn on_reallocation_event(
        &mut self,
        handle: &driver::DriverHandle,
        now: Timestamp,
        event: Event,
    ) {
        match event {
            Event::Forwarded {
                from,
                client,
                payload,
            } => {
                if let Some(r) = self.service.handle_forwarded(now, from, client, &payload) {
                    self.send_replies(vec![r]).await;
                }
            }
            Event::StateReceived { from, data, .. } => {
                let actions = self.service.handle_state(now, from, &data);
                self.apply(handle, actions).await;
                // A member that just started learns its units' old owners from their transfers.
                self.sync_vip_forward(now, None);
            }
            Event::TransferComplete { to, transfer_id } => {
                self.service.handle_transfer_done(to, transfer_id);
            }
            Event::TransferFailed { to, transfer_id } => {
                warn!(member = %to, transfer_id, "moved sessions not delivered");
                self.service.handle_transfer_done(to, transfer_id);
            }
            Event::DirectPath { member, addr } => {
                if self.direct_paths.insert(member) {
                    info!(%member, %addr, "direct path");
                }
                if let Some(f) = self.vip_host.as_mut().and_then(|h| h.forwarder.as_mut()) {
                    f.set_peer(member, *addr.ip());
                }
            }
            other => debug!(?other, "control event"),
        }
    }
}

/// The allocation the endpoint follows now, fetched from the driver task.
async fn committed_allocation(handle: &driver::DriverHandle) -> Option<CommittedAllocation> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.with(move |ep: &mut Endpoint, _| {
        let _ = tx.send(ep.committed().cloned());
    });
    rx.await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::Drain;

    #[test]
    fn a_drain_starts_emptied_only_after_a_commit_without_slices() {
        assert!(Drain::already_emptied(4, 0));
        assert!(!Drain::already_emptied(4, 12));
        // Not yet committed: the first commit may still give it slices to hand on.
        assert!(!Drain::already_emptied(0, 0));
    }
}
