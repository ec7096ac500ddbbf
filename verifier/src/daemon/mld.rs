//! The daemon's side of MLDv2 (issue 15, item 3): the packet socket that receives MLD on the
//! member-facing interfaces (`sys::mld_socket`), their IPv6 on-link prefixes for the core, and
//! what the socket holds handed to the core's MLDv2 path.

use super::{clocks, Daemon};
use crate::core::Router;
use crate::sys::mld_socket;
use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

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
    pub(super) fn read_mld(&mut self) {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..MAX_READS {
            let Some(sock) = &self.mld else { return };
            let r = match mld_socket::recv(sock.get_ref(), &mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "MLD receive");
                    break;
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
        debug!("MLD socket read");
    }
}
