//! Receiving MLD (issue 15, item 3): one packet socket (`AF_PACKET`, `SOCK_DGRAM`, IPv6) for
//! every member-facing interface. A raw ICMPv6 socket would hand over the ICMPv6 message only,
//! the Hop-by-Hop header and the hop limit as ancillary data; the packet socket gives the whole
//! IPv6 datagram as it arrived, Router Alert included, which is what the signed join's checks
//! read (SPEC.md §3.8), and the arrival interface in its address. A BPF filter passes only
//! datagrams whose first next header is Hop-by-Hop (every MLD message has one), so forwarded
//! client traffic never reaches user space; the all-MLDv2-routers MAC (33:33:00:00:00:16) is
//! joined on each interface so that a NIC's multicast filter lets reports in.
//!
//! Unsafe code: `setsockopt(PACKET_ADD_MEMBERSHIP)`, `getsockopt(PACKET_STATISTICS)` and
//! `recvfrom` with a `sockaddr_ll`, which neither socket2 nor nix wraps; each block states what
//! makes it sound.
#![allow(unsafe_code)]

use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use std::io;
use std::os::fd::AsRawFd;

const ETH_P_IPV6: u16 = 0x86dd;
/// 33:33 followed by the low 32 bits of ff02::16 (RFC 2464 §7).
const ALL_MLDV2_ROUTERS_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 0x16];

/// `ldb [6]; jeq #0 (Hop-by-Hop), accept, drop`: offsets from the IPv6 header (`SOCK_DGRAM`).
fn hop_by_hop_only() -> [SockFilter; 4] {
    [
        SockFilter::new(0x30, 0, 0, 6),      // BPF_LD | BPF_B | BPF_ABS
        SockFilter::new(0x15, 0, 1, 0),      // BPF_JMP | BPF_JEQ | BPF_K
        SockFilter::new(0x06, 0, 0, 65_535), // BPF_RET | BPF_K: the whole datagram
        SockFilter::new(0x06, 0, 0, 0),      // BPF_RET | BPF_K: nothing
    ]
}

/// Opens the socket, non-blocking, filtered, with the MLDv2 routers' MAC joined on each of
/// `ifindexes`. Needs CAP_NET_RAW, as the IGMP socket does.
pub fn open(ifindexes: &[u32]) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::PACKET,
        Type::DGRAM,
        Some(Protocol::from(i32::from(ETH_P_IPV6.to_be()))),
    )?;
    s.attach_filter(&hop_by_hop_only())?;
    s.set_nonblocking(true)?;
    for &ifindex in ifindexes {
        let mut mr_address = [0u8; 8];
        mr_address[..6].copy_from_slice(&ALL_MLDV2_ROUTERS_MAC);
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: libc::PACKET_MR_MULTICAST as libc::c_ushort,
            mr_alen: 6,
            mr_address,
        };
        // SAFETY: `mreq` is a valid packet_mreq that outlives the call, its size passed.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                core::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(s)
}

/// One datagram read into the caller's buffer: its length and the interface it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub ifindex: u32,
}

/// Reads one datagram without blocking; `None` when the queue is empty. Datagrams this host
/// sent (`PACKET_OUTGOING`) are skipped.
pub fn recv(s: &Socket, buf: &mut [u8]) -> io::Result<Option<Received>> {
    loop {
        // SAFETY: all-zero bytes are a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
        let mut addr_len = core::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `addr` are valid for writes of the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                s.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut addr as *mut libc::sockaddr_ll).cast(),
                &mut addr_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        if addr.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        return Ok(Some(Received {
            len: n as usize,
            ifindex: addr.sll_ifindex as u32,
        }));
    }
}

/// Datagrams the kernel dropped at the socket's full queue since the last call
/// (`PACKET_STATISTICS`, which reading resets).
pub fn take_drops(s: &Socket) -> io::Result<u32> {
    // SAFETY: all-zero bytes are a valid tpacket_stats.
    let mut stats: libc::tpacket_stats = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` is valid for writes of `len` bytes, and `len` for a write of its own.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stats.tp_drops)
}

/// The global on-link prefixes of `ifindexes`, from `/proc/net/if_inet6`'s text: what a
/// join's signed LINK prefix must be one of (link-local and host-scope addresses left out).
pub fn links6(if_inet6: &str, ifindexes: &[u32]) -> igmp_ext::verify6::LinkTable6 {
    let mut links = igmp_ext::verify6::LinkTable6::new();
    for line in if_inet6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, ifindex, plen, scope, ..] = f[..] else {
            continue;
        };
        let (Ok(addr), Ok(ifindex), Ok(plen), Ok(scope)) = (
            u128::from_str_radix(addr, 16),
            u32::from_str_radix(ifindex, 16),
            u8::from_str_radix(plen, 16),
            u8::from_str_radix(scope, 16),
        ) else {
            continue;
        };
        if scope == 0 && ifindexes.contains(&ifindex) {
            links.add(
                ifindex,
                igmp_ext::Slice6::prefix(std::net::Ipv6Addr::from(addr), plen),
            );
        }
    }
    links
}

/// The link-local address of each of `ifindexes` that has one, from `/proc/net/if_inet6`'s
/// text: the MLDv2 querier's source (RFC 3810 §5.1.14).
pub fn link_locals(if_inet6: &str, ifindexes: &[u32]) -> Vec<(u32, std::net::Ipv6Addr)> {
    let mut out: Vec<(u32, std::net::Ipv6Addr)> = Vec::new();
    for line in if_inet6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, ifindex, _, scope, ..] = f[..] else {
            continue;
        };
        let (Ok(addr), Ok(ifindex), Ok(0x20)) = (
            u128::from_str_radix(addr, 16),
            u32::from_str_radix(ifindex, 16),
            u8::from_str_radix(scope, 16),
        ) else {
            continue;
        };
        if ifindexes.contains(&ifindex) && !out.iter().any(|(i, _)| *i == ifindex) {
            out.push((ifindex, std::net::Ipv6Addr::from(addr)));
        }
    }
    out
}

/// A raw IPv6 socket that sends whole datagrams (IPPROTO_RAW: the kernel adds no header) out
/// of interface `name`: the MLDv2 querier's queries.
pub fn sender(name: &str) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )?;
    s.bind_device(Some(name.as_bytes()))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::Slice6;

    #[test]
    fn links6_reads_global_prefixes_of_the_given_interfaces() {
        let text = "\
20010db8000000010000000000000001 03 40 00 80     s1
fe800000000000000000000000000001 03 40 20 80     s1
20010db8000000020000000000000001 04 30 00 80     c0
00000000000000000000000000000001 01 80 10 80       lo
garbage
";
        let links = links6(text, &[3]);
        let p = |s: &str| s.parse::<Slice6>().expect("prefix");
        assert!(links.has_prefix(3, &p("2001:db8:0:1::/64")));
        assert!(!links.has_prefix(3, &p("fe80::/64")));
        assert!(!links.has_prefix(4, &p("2001:db8:0:2::/48")));
        let ll: std::net::Ipv6Addr = "fe80::1".parse().expect("address");
        assert_eq!(link_locals(text, &[3, 4]), vec![(3, ll)]);
    }
}
