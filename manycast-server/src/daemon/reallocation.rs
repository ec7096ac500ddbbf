//! The daemon's part in reallocation (SPEC.md §11.5, §11.6): carrying out the service's
//! [`Action`]s over the control channel, the strategy events, and drain. Kept apart from the
//! main loop in `daemon.rs`.

use super::Runtime;
use crate::service::Action;
use control_channel::driver;
use control_channel::{CommittedAllocation, Endpoint, Event};
use igmp_ext::{MemberId, Timestamp};
use tracing::{debug, info, warn};

/// A drain in progress (SPEC.md §11.6).
#[derive(Debug, Clone, Copy)]
pub(super) struct Drain {
    pub(super) deadline: Timestamp,
    /// A commit since the drain began left this member without slices.
    pub(super) emptied: bool,
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
            emptied: false,
        });
        self.snapshot.draining = true;
        handle.with(|ep, now| ep.drain(now));
    }

    /// Whether a drain is done: no slices left and no moved session needs us any more, or the
    /// drain timeout passed.
    pub fn drain_finished(&self, now: Timestamp) -> bool {
        match self.drain {
            None => false,
            Some(d) if now >= d.deadline => {
                warn!("drain timeout: leaving with moved sessions still active");
                true
            }
            Some(d) => d.emptied && !self.service.has_moved_sessions(),
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
        }
        // The event names our slices; the strategies need every owner, before and after.
        if let Some(c) = committed_allocation(handle).await {
            let members: Vec<MemberId> = c.members().into_iter().map(|(m, _)| m).collect();
            let actions = self
                .service
                .handle_commit(now, c.id().epoch, &members, &c.allocation);
            self.apply(handle, actions).await;
        }
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
