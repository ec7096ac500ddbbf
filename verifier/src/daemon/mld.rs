//! The daemon's side of MLDv2 (issue 15, item 3): the packet socket that receives MLD on the
//! member-facing interfaces (`sys::mld_socket`), their IPv6 on-link prefixes for the core, and
//! what the socket holds handed to the core's MLDv2 path.

use super::{clocks, Daemon};
use crate::core::{Event, Router};
use crate::rejection_log::Admit;
use crate::sys::mld_socket;
use igmp_ext::{Reason, Timestamp};
use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

/// Datagrams read before the loop looks at its other work.
const MAX_READS: usize = 1024;

/// Opens the MLD socket on the core's interfaces and gives the core their IPv6 prefixes (read
/// once, at start). Without it (no CAP_NET_RAW, no IPv6) the verifier runs IPv4 only.
pub(super) fn open(core: &mut Router) -> Option<AsyncFd<Socket>> {
    let ifindexes: Vec<u32> = core.interfaces().iter().map(|i| i.ifindex).collect();
    let if_inet6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    core.set_links6(mld_socket::links6(&if_inet6, &ifindexes));
    match mld_socket::open(&ifindexes).and_then(crate::sys::mroute::register_async) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "no MLD socket: MLDv2 joins are not received");
            None
        }
    }
}

impl Daemon {
    /// Hands what the MLD socket holds to the core, datagrams from other interfaces dropped.
    /// Stops after [`MAX_READS`] so that a flood cannot keep the loop from its other work;
    /// returns whether it stopped so (more may be waiting: readiness was cleared, so the loop
    /// comes back here by itself).
    pub(super) fn read_mld(&mut self) -> bool {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..MAX_READS {
            let Some(sock) = &self.mld else { return false };
            let r = match mld_socket::recv(sock.get_ref(), &mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => return false,
                Err(e) => {
                    warn!(error = %e, "MLD receive");
                    return false;
                }
            };
            if !self
                .core
                .interfaces()
                .iter()
                .any(|i| i.ifindex == r.ifindex)
            {
                continue;
            }
            let now = clocks();
            self.core
                .handle_mld_datagram(now, r.ifindex, &buf[..r.len], self.keys.source6());
            self.flush(now);
        }
        true
    }

    /// The MLDv2 path's events (and nothing else: other events were logged by `log`).
    /// Refusals share the IGMP refusals' per-reason window (duplicates at DEBUG).
    pub(super) fn log_mld(&mut self, now: Timestamp, e: Event) {
        match e {
            Event::MldJoinAccepted {
                member,
                group,
                epoch,
                slices,
                ifindex,
                sender,
            } => info!(
                %member, %group, %epoch, %slices, interface = %self.core.ifname(ifindex),
                %sender, "MLDv2 join accepted"
            ),
            Event::MldRejected {
                reason: reason @ Reason::Duplicate,
                detail,
                ..
            } => debug!(%reason, %detail, "MLD report rejected"),
            Event::MldRejected {
                reason,
                ifindex,
                detail,
            } if self.rejections.admit(now, reason) == Admit::Log => warn!(
                %reason, interface = %self.core.ifname(ifindex), %detail, "MLD report rejected"
            ),
            Event::MldClaimsExpired { group, lost } => {
                info!(?group, ?lost, "IPv6 claims expired")
            }
            _ => {}
        }
    }
}
