//! The VIP host executors: the host changes of VIP mode (put back on drop), the reset task of
//! the reset strategy, the forwarder of VIP forward and the sock_diag count a VIP drain waits
//! for. Each carries out one kind of node action; none decides anything.

use crate::config::Config;
use crate::vip::{ForwardHost, HostSetup, ResetTask, SockDiag, VipError};
use igmp_ext::{MemberId, SliceSet};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;
use tracing::warn;

/// What VIP mode holds on this host; empty in native mode.
#[derive(Debug, Default)]
pub struct Host {
    /// The VIP on loopback, the sysctls and VIP forward's overlay, table and rules.
    setup: Option<HostSetup>,
    /// The reset strategy's task: destroys the TCP connections of moved clients.
    reset: Option<ResetTask>,
}

impl Host {
    /// Sets the host up for `vip` (VIP mode), with VIP forward's changes when `forward` says,
    /// and starts the reset task with `reset`. On an error what was done is put back.
    pub fn apply(
        config: &Config,
        vip: Option<Ipv4Addr>,
        forward: Option<&ForwardHost>,
        reset: bool,
    ) -> Result<Host, VipError> {
        let Some(vip) = vip else {
            return Ok(Host::default());
        };
        let setup = HostSetup::apply(vip, forward)?;
        let delay = Duration::from_millis(config.vip.reset_delay_ms);
        Ok(Host {
            setup: Some(setup),
            reset: reset.then(|| ResetTask::spawn(vip, delay)),
        })
    }

    /// Hands the member's slices after a commit to the reset task.
    pub fn reset_moved(&self, slices: SliceSet) {
        if let Some(r) = &self.reset {
            r.set_slices(slices);
        }
    }

    /// (connections destroyed, destroys that failed) by the reset task so far.
    pub fn reset_counts(&self) -> Option<(u64, u64)> {
        self.reset.as_ref().map(ResetTask::counts)
    }

    fn forwarder(&mut self) -> Option<&mut crate::vip_forwarder::Forwarder> {
        self.setup.as_mut().and_then(|h| h.forwarder.as_mut())
    }

    /// Makes the kernel follow the forwarding plan; the units installed, without a forwarder
    /// `None`. A few `ip`/`nft` runs, only when the plan changed.
    pub fn forward_plan(&mut self, plan: &BTreeMap<u32, MemberId>) -> Option<usize> {
        self.forwarder().map(|f| f.apply(plan))
    }

    pub fn forward_peer(&mut self, member: MemberId, addr: Ipv4Addr) {
        if let Some(f) = self.forwarder() {
            f.set_peer(member, addr);
        }
    }

    pub fn forward_peer_left(&mut self, member: MemberId) {
        if let Some(f) = self.forwarder() {
            f.remove_peer(member);
        }
    }
}

/// The TCP connections to `vip` on this host, `None` (logged) when sock_diag fails: the VIP
/// leaves `lo` when the daemon exits, which would break them.
pub fn count_connections(vip: Ipv4Addr) -> Option<usize> {
    match SockDiag::new().and_then(|mut d| d.connections(vip)) {
        Ok(conns) => Some(conns.len()),
        // Unknown: the drain then ends at its timeout.
        Err(e) => {
            warn!("draining: cannot list VIP connections: {e}");
            None
        }
    }
}
