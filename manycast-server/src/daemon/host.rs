//! The VIP host executors: the host changes of VIP mode (put back on drop), the reset task of
//! the reset strategy, the forwarder of VIP forward and the sock_diag count a VIP drain waits
//! for. Each carries out one kind of node action; none decides anything.

use crate::config::Config;
use crate::vip::{self, ForwardHost, HostSetup, ResetPass, ResetTask, SockDiag, VipError};
use crate::vip6::{self, HostSetup6};
use igmp_ext::{MemberId, SliceSet};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// What VIP mode holds on this host; empty in native mode.
#[derive(Debug, Default)]
pub struct Host {
    /// The VIP on loopback, the sysctls and VIP forward's overlay, table and rules.
    setup: Option<HostSetup>,
    /// The IPv6 VIP on loopback and its sysctl (`vip.address6`, SPEC.md §11.7.2).
    setup6: Option<HostSetup6>,
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
        // On an error `setup` drops and puts the IPv4 changes back.
        let vip6 = config.vip.address6;
        let setup6 = vip6
            .map(|v| HostSetup6::apply(v, &config.interface))
            .transpose()?;
        let delay = Duration::from_millis(config.vip.reset_delay_ms);
        let pass = reset_pass(config, vip, vip6);
        Ok(Host {
            setup: Some(setup),
            setup6,
            reset: reset.then(|| ResetTask::spawn(pass, delay)),
        })
    }

    /// The TCP connections to the VIPs on this host, `None` (logged) when sock_diag fails: the
    /// VIPs leave `lo` when the daemon exits, which would break them.
    pub fn count_connections(&self, vip: Ipv4Addr) -> Option<usize> {
        let vip6 = self.setup6.as_ref().map(HostSetup6::vip);
        let count = SockDiag::new().and_then(|mut d| {
            let v6 = match vip6 {
                Some(v) => d.connections6(v)?.len(),
                None => 0,
            };
            Ok(d.connections(vip)?.len() + v6)
        });
        match count {
            Ok(n) => Some(n),
            // Unknown: the drain then ends at its timeout.
            Err(e) => {
                warn!("draining: cannot list VIP connections: {e}");
                None
            }
        }
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

/// What a reset pass (the reset strategy's) destroys: the moved connections to both VIPs.
fn reset_pass(config: &Config, vip: Ipv4Addr, vip6: Option<Ipv6Addr>) -> Arc<ResetPass> {
    let slicing = config.control_config().slicing;
    Arc::new(move |mine: &SliceSet| {
        let mut total = vip::reset_moved(vip, mine)?;
        if let Some(v6) = vip6 {
            let o = vip6::reset_moved6(v6, slicing, mine)?;
            total.destroyed += o.destroyed;
            total.failed += o.failed;
        }
        Ok(total)
    })
}
