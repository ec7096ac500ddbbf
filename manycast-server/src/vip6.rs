//! VIP mode over IPv6 (issue 15, SPEC.md §11.7.2): the member holds the IPv6 VIP (`vip.address6`)
//! on loopback beside the IPv4 one and answers its clients directly; the verifier steers each
//! IPv6 client to the owner of its /56's unit. [`HostSetup6`] changes the host and puts it back
//! when dropped; [`moved_connections6`] is the pure decision of the reset pass; the sock_diag
//! side is [`SockDiag`]'s AF_INET6 requests, here. Under forward the IPv6 VIP's segments take
//! the IPv4 VIP's overlay (`vip::HostSetup`, `vip_forward::ruleset6`, `vip_forwarder`).
//!
//! What IPv6 needs that IPv4 does not, and the reverse (tried on this kernel, SPEC.md §11.7.2):
//! - no `arp_ignore` counterpart: Linux answers a neighbour solicitation only for an address on
//!   the interface it arrived on (`ndisc_recv_ns`; no `proxy_ndp`, and a /128 joins no anycast
//!   address), so a VIP on `lo` is never advertised on the link;
//! - no `arp_announce` counterpart either: the member's own solicitations take their source from
//!   the outgoing interface (`ndisc_solicit`);
//! - but source address selection (RFC 6724) takes candidates from every interface: when the
//!   link's global address is deprecated (rule 3) or missing (rule 2), Linux picks the VIP for
//!   the member's own connections out of the link, whose answers the router would then steer
//!   by the client's unit to any member. `use_oif_addrs_only = 1` on `interface` keeps the
//!   candidates to that interface's addresses.

use crate::mld_agent::units6;
use crate::vip::{self, ResetOutcome, SockDiag, VipError, LOOPBACK};
use igmp_ext::alloc::Slicing;
use igmp_ext::{SliceEntry, SliceSet, SliceSet6};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET6, SOCK_DESTROY};
use netlink_packet_sock_diag::inet::SocketId;
use netlink_packet_sock_diag::SockDiagMessage;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};
use std::path::PathBuf;
use tracing::{info, warn};

/// The sysctl that keeps the VIP out of source address selection on the link, raised on
/// `interface` only if below (the kernel reads it per interface; `all` does not count).
pub fn source_sysctl(interface: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{interface}/use_oif_addrs_only")
}

/// What VIP mode changed on the host for the IPv6 VIP, undone by [`HostSetup6::restore`] or on
/// drop.
#[derive(Debug)]
pub struct HostSetup6 {
    vip: Ipv6Addr,
    /// False when the VIP was on loopback already (the operator's): then it stays.
    added_address: bool,
    /// The sysctl we changed, with the value it had.
    saved: Option<(PathBuf, String)>,
}

/// Whether `addr` is one of `ifname`'s IPv6 addresses.
pub fn has_address6(ifname: &str, addr: Ipv6Addr) -> io::Result<bool> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addrs
        .filter(|a| a.interface_name == ifname)
        .any(|a| a.address.and_then(|s| s.as_sockaddr_in6().map(|s| s.ip())) == Some(addr)))
}

impl HostSetup6 {
    /// Keeps the VIP out of source address selection on `interface`, then adds `vip`/128 on
    /// loopback without duplicate address detection (loopback has no link to detect on; `nodad`
    /// makes sure the address is never tentative, a state in which it takes no connections).
    /// On an error, what was already changed is put back.
    pub fn apply(vip: Ipv6Addr, interface: &str) -> Result<HostSetup6, VipError> {
        let mut setup = HostSetup6 {
            vip,
            added_address: false,
            saved: None,
        };
        let path = source_sysctl(interface);
        let old = vip::read_sysctl(&path)?;
        if !old.parse::<u32>().is_ok_and(|v| v >= 1) {
            vip::write_sysctl(&path, "1")?;
            info!(sysctl = %path, old = %old, new = 1, "VIP mode (IPv6)");
            setup.saved = Some((PathBuf::from(path), old));
        }
        let present = has_address6(LOOPBACK, vip).map_err(VipError::Interfaces)?;
        if !present {
            let cidr = format!("{vip}/128");
            vip::ip(&["-6", "addr", "add", &cidr, "dev", LOOPBACK, "nodad"])?;
            setup.added_address = true;
            info!(%vip, "IPv6 VIP added on {LOOPBACK}");
        }
        Ok(setup)
    }

    pub fn vip(&self) -> Ipv6Addr {
        self.vip
    }

    /// Puts back every change; safe to call twice. Errors are logged and the rest still undone.
    pub fn restore(&mut self) {
        if self.added_address {
            let cidr = format!("{}/128", self.vip);
            match vip::ip(&["-6", "addr", "del", &cidr, "dev", LOOPBACK]) {
                Ok(()) => info!(vip = %self.vip, "IPv6 VIP removed from {LOOPBACK}"),
                Err(e) => warn!("{e}"),
            }
            self.added_address = false;
        }
        if let Some((path, old)) = self.saved.take() {
            let p = path.to_string_lossy();
            match vip::write_sysctl(&p, &old) {
                Ok(()) => info!(sysctl = %p, restored = %old, "VIP mode (IPv6)"),
                Err(e) => warn!("{e}"),
            }
        }
    }
}

impl Drop for HostSetup6 {
    fn drop(&mut self) {
        self.restore();
    }
}

/// A TCP connection to the IPv6 VIP as sock_diag reports it; `cookie` (with the interface, for
/// a link-local client) names the socket exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConn6 {
    pub local: SocketAddrV6,
    pub peer: SocketAddrV6,
    pub interface: u32,
    pub cookie: [u8; 8],
}

/// The IPv6 slices of a member that owns `mine` (its IPv4 units): unit i ↔ unit i of the /56
/// site slicing, exactly what its MLDv2 join claims and what the router steers to it.
pub fn slices6(slicing: Slicing, mine: &SliceSet) -> SliceSet6 {
    let entries: Vec<SliceEntry> = mine.iter().copied().map(SliceEntry::include).collect();
    units6(slicing, &entries)
        .into_iter()
        .map(|e| e.slice)
        .collect()
}

/// The connections whose client is outside `slices6`: the router no longer sends them here.
pub fn moved_connections6<'a>(
    conns: &'a [TcpConn6],
    slices6: &'a SliceSet6,
) -> impl Iterator<Item = &'a TcpConn6> + 'a {
    conns
        .iter()
        .filter(move |c| !slices6.contains_addr(*c.peer.ip()))
}

impl SockDiag {
    /// The TCP connections whose local address is `vip` (AF_INET6 sockets).
    pub fn connections6(&mut self, vip: Ipv6Addr) -> io::Result<Vec<TcpConn6>> {
        let seq = self.send(
            AF_INET6,
            netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            SocketId::new_v6(),
        )?;
        let mut out = Vec::new();
        self.receive(seq, |m| {
            let SockDiagMessage::InetResponse(r) = m else {
                return;
            };
            let id = &r.header.socket_id;
            if let (IpAddr::V6(local), IpAddr::V6(peer)) =
                (id.source_address, id.destination_address)
            {
                if local == vip {
                    out.push(TcpConn6 {
                        local: SocketAddrV6::new(local, id.source_port, 0, 0),
                        peer: SocketAddrV6::new(peer, id.destination_port, 0, id.interface_id),
                        interface: id.interface_id,
                        cookie: id.cookie,
                    });
                }
            }
        })?;
        Ok(out)
    }

    /// Destroys one IPv6 connection: the client gets a RST, the application's socket fails
    /// with ECONNABORTED.
    pub fn destroy6(&mut self, conn: &TcpConn6) -> io::Result<()> {
        let id = SocketId {
            source_port: conn.local.port(),
            destination_port: conn.peer.port(),
            source_address: IpAddr::V6(*conn.local.ip()),
            destination_address: IpAddr::V6(*conn.peer.ip()),
            interface_id: conn.interface,
            cookie: conn.cookie,
        };
        let seq = self.send(AF_INET6, SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, id)?;
        self.receive(seq, |_| {})
    }
}

/// Destroys every connection to the IPv6 `vip` whose client is outside the IPv6 counterparts
/// of `mine`.
pub fn reset_moved6(vip: Ipv6Addr, slicing: Slicing, mine: &SliceSet) -> io::Result<ResetOutcome> {
    let slices6 = slices6(slicing, mine);
    let mut diag = SockDiag::new()?;
    let conns = diag.connections6(vip)?;
    let mut outcome = ResetOutcome::default();
    for c in moved_connections6(&conns, &slices6) {
        match diag.destroy6(c) {
            Ok(()) => {
                outcome.destroyed += 1;
                info!(client = %c.peer, local = %c.local, "reset: IPv6 connection destroyed");
            }
            Err(e) => {
                outcome.failed += 1;
                warn!(client = %c.peer, "reset: SOCK_DESTROY: {e}");
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
#[path = "vip6_tests.rs"]
mod tests;
