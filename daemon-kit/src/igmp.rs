//! The raw IGMP socket signed joins go out on (a member's to its router, a site agent's to the
//! upstream router), and the interface address they are sent from.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use tokio::io::unix::AsyncFd;

/// IGMPv3 reports go to all IGMPv3-capable routers (RFC 3376 §4.2.14).
pub const ALL_V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);
const IPPROTO_IGMP: i32 = 2;

/// The first IPv4 address of `ifname`, if it has one.
pub fn interface_addr(ifname: &str) -> io::Result<Option<Ipv4Addr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addrs
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip())))
}

/// Raw IGMP socket on the router link: sends our complete datagrams (IP_HDRINCL; the Router
/// Alert option is in them already) and receives the queries. The kernel hands a raw socket
/// only IGMP for groups this host joined; 224.0.0.1 (general queries) always is.
pub fn igmp_socket(ifname: &str, addr: Ipv4Addr) -> io::Result<AsyncFd<Socket>> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_IGMP)))?;
    s.set_header_included_v4(true)?;
    s.bind_device(Some(ifname.as_bytes()))?;
    s.set_multicast_if_v4(&addr)?;
    s.set_nonblocking(true)?;
    // `new` is deprecated for types whose descriptor could change under it; a `Socket` owns its
    // descriptor for its whole life, and the safe-code rule of this workspace rules out the
    // `unsafe fn register` that replaces it.
    #[allow(deprecated)]
    AsyncFd::new(s)
}

/// Sends one signed report (a complete IPv4 datagram) to 224.0.0.22.
pub fn send_report(igmp: &AsyncFd<Socket>, datagram: &[u8]) -> io::Result<usize> {
    let to = SockAddr::from(SocketAddrV4::new(ALL_V3_ROUTERS, 0));
    igmp.get_ref().send_to(datagram, &to)
}

/// Uniform u64s from the OS: report jitter, and the seeds of liveness chains, which must be
/// unguessable (a guessed seed would let anyone keep a dead member alive at the router).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random generator (getrandom) works");
    u64::from_le_bytes(b)
}

pub fn nonce() -> [u8; igmp_ext::join::NONCE_LEN] {
    let mut b = [0u8; igmp_ext::join::NONCE_LEN];
    if getrandom::fill(&mut b).is_err() {
        // Still unique per report: the verifier's replay cache keys on the nonce.
        b[..8].copy_from_slice(&random_u64().to_le_bytes());
        b[8..].copy_from_slice(&crate::wall_clock().0.to_le_bytes());
    }
    b
}
