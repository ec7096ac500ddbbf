//! The daemon's sockets on the router link: the UDP service sockets (IPv4, and IPv6 with
//! `group6`) and the raw IGMP socket, plus the interface address lookup and the randomness the
//! joins need. Executors only: what arrives goes to the node, what the node says goes out.

use super::Shell;
use igmp_ext::Clock;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tracing::debug;

pub use daemon_kit::igmp::{igmp_socket, interface_addr, nonce, random_u64, send_report};

/// UDP socket for the service: joined to the group at the kernel level so that the kernel
/// delivers it (the kernel then also sends its own unsigned reports, which a verifier refuses).
pub fn service_socket(
    group: Ipv4Addr,
    port: u16,
    interface_addr: Ipv4Addr,
) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        port,
    )))?;
    s.join_multicast_v4(&group, &interface_addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// UDP socket for the service's IPv6 clients (`group6`, SPEC.md §11.3): `[::]:port`, IPv6
/// only (the IPv4 socket has the port's IPv4 side), joined to `group` on the service interface
/// `ifindex`. The router's `fwd ip6 to` our link-local address hands us the group's datagrams
/// as link-layer unicast; the kernel takes a datagram to a multicast destination only for a
/// group joined on the interface it arrived on, whatever its link-layer destination (the
/// kernel's own MLD reports for it are unsigned; a verifier refuses them).
pub fn service_socket6(group: Ipv6Addr, port: u16, ifindex: u32) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        port,
        0,
        0,
    )))?;
    s.join_multicast_v6(&group, ifindex)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// The next datagram on the IPv6 service socket; never, without one.
pub async fn recv6(udp6: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match udp6 {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// `ifname`'s MTU, from sysfs.
pub fn link_mtu(ifname: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// All routers on the link (RFC 1112): where liveness beacons go (SPEC.md §5.5).
pub const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);

/// UDP socket for liveness beacons: from our address on the router link at `port` (0: any),
/// TTL 1, out of that interface; the router's standby notices arrive on it.
pub fn beacon_socket(ifname: &str, addr: Ipv4Addr, port: u16) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(SocketAddrV4::new(addr, port)))?;
    s.bind_device(Some(ifname.as_bytes()))?;
    s.set_multicast_if_v4(&addr)?;
    s.set_multicast_ttl_v4(1)?;
    s.set_multicast_loop_v4(false)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Reads a raw datagram into an initialised buffer (socket2 wants `MaybeUninit`).
pub fn read_datagram(igmp: &AsyncFd<Socket>, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut s: &Socket = igmp.get_ref();
    s.read(buf)
}

impl Shell {
    /// Reads the raw IGMP socket dry: queries go to the node.
    pub(super) fn on_igmp_readable(&mut self, now: Clock) {
        let mut buf = [0u8; 2048];
        loop {
            match read_datagram(&self.igmp, &mut buf) {
                Ok(n) => self.node.handle_igmp(now, buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("igmp socket: {e}");
                    break;
                }
            }
        }
    }

    /// Sends a reply to an IPv6 client (a lost reply is a lost datagram; the client retries).
    pub(super) async fn reply6(&self, to: SocketAddrV6, payload: &[u8]) {
        if let Some(udp6) = &self.udp6 {
            if let Err(e) = udp6.send_to(payload, SocketAddr::V6(to)).await {
                debug!("reply to {to}: {e}");
            }
        }
    }
}
