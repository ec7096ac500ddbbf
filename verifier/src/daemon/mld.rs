//! The daemon's side of MLDv2 (issue 15, item 3): the raw ICMPv6 socket that receives MLD on
//! the member-facing interfaces (`sys::mld_socket`), their IPv6 on-link prefixes for the core,
//! and what the socket holds, rebuilt into IPv6 datagrams, handed to the core's MLDv2 path.

use super::{clocks, Daemon, MAX_BURST};
use crate::core::{Event, Router};
use crate::rejection_log::Admit;
use crate::sys::mld_socket;
use igmp_ext::{Reason, Timestamp};
use socket2::{SockAddr, Socket};
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

/// Datagrams read before the loop looks at its other work.
const MAX_READS: usize = 1024;

/// The MLD sockets: reports in, the querier's queries out (one sender per interface).
#[derive(Debug, Default)]
pub(super) struct MldIo {
    pub(super) recv: Option<AsyncFd<Socket>>,
    senders: HashMap<u32, Socket>,
    /// This host's addresses: MLD from them is its own, skipped.
    own: Vec<Ipv6Addr>,
    /// Datagrams the kernel discarded for their ICMPv6 checksum: counted in the socket's drops
    /// (`SO_RXQ_OVFL`) but no sign of a full queue, so taken out of them.
    checksum_failures: u32,
    drops: crate::sys::igmp_socket::Drops,
}

/// Opens the MLD sockets on the core's interfaces and gives the core their IPv6 prefixes and
/// link-local addresses (read once, at start). Without them (no CAP_NET_RAW, no IPv6) the
/// verifier runs IPv4 only.
pub(super) fn open(core: &mut Router) -> MldIo {
    if !core.mld_enabled() {
        info!("no IPv6 group protected (verifier.protected6): MLD off, IPv4 only");
        return MldIo::default();
    }
    let ifindexes: Vec<u32> = core.interfaces().iter().map(|i| i.ifindex).collect();
    let if_inet6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    core.set_links6(mld_socket::links6(&if_inet6, &ifindexes));
    let recv = match mld_socket::open(&ifindexes).and_then(crate::sys::mroute::register_async) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "no MLD socket: MLDv2 joins are not received");
            None
        }
    };
    let mut senders = HashMap::new();
    let mut queried = Vec::new();
    for (ifindex, addr) in mld_socket::link_locals(&if_inet6, &ifindexes) {
        let name = core.ifname(ifindex);
        match mld_socket::sender(&name) {
            Ok(s) => {
                senders.insert(ifindex, s);
                queried.push((ifindex, addr));
            }
            Err(e) => warn!(error = %e, interface = %name, "no MLD query socket"),
        }
    }
    core.set_mld_query_interfaces(queried);
    MldIo {
        recv,
        senders,
        own: mld_socket::host_addresses(&if_inet6),
        ..MldIo::default()
    }
}

impl Daemon {
    /// Sends the MLDv2 querier's queries.
    pub(super) fn send_mld_queries(&mut self) {
        while let Some(t) = self.core.poll_transmit6() {
            let Some(s) = self.mld.senders.get(&t.ifindex) else {
                continue;
            };
            let dst = SocketAddrV6::new(igmp_ext::wire::mld::ALL_NODES, 0, 0, t.ifindex);
            match s.send_to(&t.datagram, &SockAddr::from(dst)) {
                Ok(_) => self.queries_sent += 1,
                Err(e) => debug!(error = %e, ifindex = t.ifindex, "MLD query not sent"),
            }
        }
    }

    /// Hands what the MLD socket holds to the core in bursts of at most [`MAX_BURST`], as the
    /// IGMP socket's (each burst's signed joins wait for the shared signature budget, then a
    /// round verifies what it admits), datagrams from other interfaces dropped. Stops after
    /// [`MAX_READS`] so that a flood cannot keep the loop from its other work; returns whether
    /// it stopped so (more may be waiting: readiness was cleared, so the loop comes back here
    /// by itself).
    pub(super) fn read_mld(&mut self) -> bool {
        let mut buf = vec![0u8; 65_536];
        let mut burst: Vec<(u32, Vec<u8>)> = Vec::with_capacity(MAX_BURST);
        let mut overflows_total = None;
        let mut more = true;
        for _ in 0..MAX_READS {
            let Some(sock) = &self.mld.recv else {
                more = false;
                break;
            };
            let r = match mld_socket::recv(sock.get_ref(), &mut buf) {
                Ok(Some(mld_socket::Read::Message(r))) => r,
                Ok(Some(mld_socket::Read::ChecksumFailed)) => {
                    self.mld.checksum_failures = self.mld.checksum_failures.wrapping_add(1);
                    continue;
                }
                Ok(None) => {
                    more = false;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "MLD receive");
                    more = false;
                    break;
                }
            };
            // The counter as of this read, less the checksum failures before it.
            let overflows = r
                .drops_total
                .map(|t| t.wrapping_sub(self.mld.checksum_failures));
            overflows_total = overflows.or(overflows_total);
            if self.mld.own.contains(&r.source)
                || !self
                    .core
                    .interfaces()
                    .iter()
                    .any(|i| i.ifindex == r.ifindex)
            {
                continue;
            }
            // Without a Hop-by-Hop header it is no MLD message (RFC 3810 §5): dropped unseen,
            // as the packet socket's filter dropped it.
            let Some(datagram) = r.datagram else {
                continue;
            };
            burst.push((r.ifindex, datagram));
            if burst.len() == MAX_BURST {
                self.handle_mld_burst(&mut burst);
            }
        }
        self.handle_mld_burst(&mut burst);
        if let Some(total) = overflows_total {
            self.note_mld_drops(total);
        }
        more
    }

    /// What the kernel dropped at the MLD socket's full queue goes to the core, which holds
    /// every IPv6 claim for it (SPEC.md §5.6). `total` is the socket's drop counter, checksum
    /// failures taken out.
    fn note_mld_drops(&mut self, total: u32) {
        let now = clocks();
        let dropped = self.mld.drops.update_for(
            now.mono,
            total,
            "MLD datagrams; every IPv6 claim is held one hold from now",
        );
        if dropped > 0 {
            self.core.handle_mld_socket_overflow(now, dropped);
            self.flush(now);
        }
    }

    fn handle_mld_burst(&mut self, burst: &mut Vec<(u32, Vec<u8>)>) {
        if burst.is_empty() {
            return;
        }
        let now = clocks();
        let items: Vec<(u32, &[u8])> = burst.iter().map(|(i, d)| (*i, d.as_slice())).collect();
        self.core.handle_mld_burst(now, &items, self.keys.source6());
        burst.clear();
        self.flush(now);
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
