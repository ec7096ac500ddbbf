//! Receiving MLD (issue 15, item 3): one raw ICMPv6 socket for every member-facing interface,
//! joined to ff02::16 (all-MLDv2-routers) on each, with a kernel ICMPv6 filter that passes only
//! MLD (query, MLDv1 report and done, MLDv2 report). It sees only ICMPv6 the kernel delivers to
//! this host, never forwarded client traffic: a packet socket for all IPv6 taxed every
//! forwarded packet with its tap and filter (~0.4 µs each, measured).
//!
//! The socket hands over the ICMPv6 message; the rest of what the signed join's checks read
//! (SPEC.md §3.8) comes as ancillary data: source (the recvmsg address), destination and arrival
//! interface (`IPV6_PKTINFO`), hop limit (`IPV6_HOPLIMIT`) and the Hop-by-Hop header as received,
//! Router Alert in it (`IPV6_HOPOPTS`). [`datagram`] rebuilds from them the IPv6 datagram the
//! core's parsers take; a message without a Hop-by-Hop header gets none and is dropped here, as
//! the packet socket's filter dropped it. The kernel checks the ICMPv6 checksum (RFC 3542 §3.1:
//! it cannot be turned off on ICMPv6 sockets) and discards a bad message, counting it in the
//! socket's drops. Linux 6.18 does so before queueing it (seen in `modes::mld`), where no reader
//! can tell it from an overflow; kernels that check on reading fail a blocking read with
//! `EHOSTUNREACH`, which [`recv`] reports as [`Read::ChecksumFailed`].
//!
//! Unsafe code: `recvmsg` with its control messages, `setsockopt(ICMP6_FILTER)` and
//! `ioctl(FIONREAD)`, which neither socket2 nor nix wraps; each block states what makes it sound.
#![allow(unsafe_code)]

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// `ICMP6_FILTER` (netinet/icmp6.h; not in libc): a 256-bit set of ICMPv6 types, a set bit
/// blocking its type.
const ICMP6_FILTER: libc::c_int = 1;
/// The ICMPv6 types of MLD: query, MLDv1 report and done (RFC 2710), MLDv2 report (RFC 3810).
const MLD_TYPES: [u8; 4] = [130, 131, 132, 143];
/// A read is only started with a datagram queued (`FIONREAD`), so it never waits; should it
/// ever, this bounds the wait.
const READ_TIMEOUT: Duration = Duration::from_millis(1);

/// The filter's 8 words with only `MLD_TYPES` passing.
fn mld_only() -> [u32; 8] {
    let mut blocked = [u32::MAX; 8];
    for t in MLD_TYPES {
        blocked[usize::from(t >> 5)] &= !(1u32 << (t & 31));
    }
    blocked
}

/// Opens the socket: MLD types only, joined to ff02::16 on each of `ifindexes`, with the
/// ancillary data [`recv`] reads and the kernel's drop counter (`SO_RXQ_OVFL`). Blocking, with
/// a short timeout: see [`recv`]. Needs CAP_NET_RAW, as the IGMP socket does.
pub fn open(ifindexes: &[u32]) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    let filter = mld_only();
    set_opt(&s, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)?;
    for opt in [
        libc::IPV6_RECVPKTINFO,
        libc::IPV6_RECVHOPLIMIT,
        libc::IPV6_RECVHOPOPTS,
    ] {
        set_opt(&s, libc::IPPROTO_IPV6, opt, &1 as &libc::c_int)?;
    }
    set_opt(&s, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &1 as &libc::c_int)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    for &ifindex in ifindexes {
        // The kernel delivers a datagram to ff02::16 only on an interface that joined it, and
        // without multicast routing nothing else joins it for us.
        s.join_multicast_v6(&igmp_ext::wire::mld::ALL_MLDV2_ROUTERS, ifindex)?;
    }
    Ok(s)
}

fn set_opt<T>(s: &Socket, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid, initialised `T` that outlives the call, its size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            core::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the socket gives for one MLD message: the IPv6 header's fields the core reads, the
/// Hop-by-Hop header as received (from its Next Header byte to its end), and the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub hop_limit: u8,
    pub hop_by_hop: Option<&'a [u8]>,
    pub icmp: &'a [u8],
}

/// The IPv6 datagram `parts` arrived in, as far as the core reads one: the fixed header
/// (traffic class and flow label 0: nothing reads them), Next Header 0, the Hop-by-Hop header's
/// bytes, the ICMPv6 message. `None` without a Hop-by-Hop header (every MLD message has one:
/// the packet socket's filter dropped the others, so does this) or when the whole would not
/// fit a Payload Length.
pub fn datagram(parts: &Parts<'_>) -> Option<Vec<u8>> {
    use igmp_ext::wire::ipv6::{HEADER_LEN, NEXT_HEADER_HOP_BY_HOP};
    let hop_by_hop = parts.hop_by_hop.filter(|h| !h.is_empty())?;
    let payload_len = u16::try_from(hop_by_hop.len() + parts.icmp.len()).ok()?;
    let mut d = Vec::with_capacity(HEADER_LEN + usize::from(payload_len));
    d.extend_from_slice(&[0x60, 0, 0, 0]);
    d.extend_from_slice(&payload_len.to_be_bytes());
    d.push(NEXT_HEADER_HOP_BY_HOP);
    d.push(parts.hop_limit);
    d.extend_from_slice(&parts.source.octets());
    d.extend_from_slice(&parts.destination.octets());
    d.extend_from_slice(hop_by_hop);
    d.extend_from_slice(parts.icmp);
    Some(d)
}

/// One MLD message read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The interface it arrived on (`IPV6_PKTINFO`).
    pub ifindex: u32,
    /// Its source (the recvmsg address).
    pub source: Ipv6Addr,
    /// The datagram rebuilt by [`datagram`]; `None` if it had no Hop-by-Hop header.
    pub datagram: Option<Vec<u8>>,
    /// The socket's drop counter (`SO_RXQ_OVFL`), when the kernel attached it (only once it is
    /// non-zero). It counts checksum failures too: those of [`Read::ChecksumFailed`], and on
    /// kernels that check before queueing, every one.
    pub drops_total: Option<u32>,
}

/// What one [`recv`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Message(Received),
    /// The kernel discarded the queue's first datagram for its ICMPv6 checksum, and counted it
    /// in the socket's drops.
    ChecksumFailed,
}

/// Bytes of the first datagram queued; 0 when the queue is empty.
fn first_queued(s: &Socket) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int, and `n` is one, valid for writes.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Reads one message if one is queued; `None` when the queue is empty. Messages that came
/// truncated (message or ancillary data) are skipped.
///
/// The socket blocks: on a kernel that checks the checksum on reading, a read that fails it
/// then says so (`EHOSTUNREACH`), where a non-blocking one says `EAGAIN`, as an empty queue
/// does, and the loop would stop with datagrams still queued. Only this one reader takes from
/// the queue, so a read started after `FIONREAD` found a datagram finds it too.
pub fn recv(s: &Socket, buf: &mut [u8]) -> io::Result<Option<Read>> {
    // pktinfo, hop limit, the overflow counter and a Hop-by-Hop header of at most 2,048 bytes,
    // each with its cmsghdr: 4 KiB is room for all.
    let mut control = [0u64; 512];
    loop {
        if first_queued(s)? == 0 {
            return Ok(None);
        }
        // SAFETY: all-zero bytes are a valid sockaddr_in6 and msghdr.
        let mut addr: libc::sockaddr_in6 = unsafe { core::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = core::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = core::mem::size_of_val(&control);
        // SAFETY: `msg` points at `addr`, `iov` (over `buf`) and `control`, all valid for
        // writes of the lengths it gives and alive across the call.
        let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EHOSTUNREACH) => Ok(Some(Read::ChecksumFailed)),
                Some(libc::EAGAIN) => Ok(None),
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            continue;
        }
        let mut ifindex = 0;
        let mut destination = None;
        let mut hop_limit = None;
        let mut hop_by_hop = None;
        let mut drops_total = None;
        // SAFETY: the kernel filled `control` up to `msg_controllen`; the CMSG macros walk
        // it within those bounds, and each payload is read unaligned, no longer than its
        // header's length says.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - (data as usize - c as usize);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                        if len >= core::mem::size_of::<libc::in6_pktinfo>() =>
                    {
                        let p = data.cast::<libc::in6_pktinfo>().read_unaligned();
                        ifindex = p.ipi6_ifindex;
                        destination = Some(Ipv6Addr::from(p.ipi6_addr.s6_addr));
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) if len >= 4 => {
                        let h = data.cast::<libc::c_int>().read_unaligned();
                        hop_limit = u8::try_from(h).ok();
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_HOPOPTS) => {
                        hop_by_hop = Some(core::slice::from_raw_parts(data, len).to_vec());
                    }
                    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) if len >= 4 => {
                        drops_total = Some(data.cast::<u32>().read_unaligned());
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let (Some(destination), Some(hop_limit), true) = (destination, hop_limit, ifindex != 0)
        else {
            continue;
        };
        let source = Ipv6Addr::from(addr.sin6_addr.s6_addr);
        let parts = Parts {
            source,
            destination,
            hop_limit,
            hop_by_hop: hop_by_hop.as_deref(),
            icmp: &buf[..n as usize],
        };
        return Ok(Some(Read::Message(Received {
            ifindex,
            source,
            datagram: datagram(&parts),
            drops_total,
        })));
    }
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

/// Every address of this host, from `/proc/net/if_inet6`'s text: MLD from one of them is this
/// host's own (the kernel's reports for groups it joined, looped back), skipped as the packet
/// socket skipped what it sent.
pub fn host_addresses(if_inet6: &str) -> Vec<Ipv6Addr> {
    if_inet6
        .lines()
        .filter_map(|l| u128::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .map(Ipv6Addr::from)
        .collect()
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
    // Our own queries must not come back to the MLD socket (multicast loopback is on by
    // default; the packet socket skipped outgoing datagrams instead).
    s.set_multicast_loop_v6(false)?;
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

    /// A plain MLDv2 report from `src` as the kernel sends one: IPv6, Hop-by-Hop with Router
    /// Alert, the report (checksummed).
    fn report_datagram(src: Ipv6Addr) -> Vec<u8> {
        use igmp_ext::wire::mld::{fill_checksum, ALL_MLDV2_ROUTERS};
        // Type 143, one record: CHANGE_TO_EXCLUDE (4) of ff3e::1, no sources.
        let mut mld = vec![143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
        mld.extend_from_slice(&"ff3e::1".parse::<Ipv6Addr>().expect("group").octets());
        fill_checksum(&mut mld, src, ALL_MLDV2_ROUTERS);
        igmp_ext::mld_join::build_mld_datagram(src, &mld)
    }

    #[test]
    fn the_rebuilt_datagram_is_the_one_that_arrived_and_parses() {
        use igmp_ext::wire::ipv6::{Ipv6Packet, HEADER_LEN, HOP_BY_HOP_LEN};
        use igmp_ext::wire::mld::{MldPacket, ALL_MLDV2_ROUTERS};
        let src: Ipv6Addr = "fe80::1".parse().expect("address");
        let sent = report_datagram(src);
        let hbh_end = HEADER_LEN + HOP_BY_HOP_LEN;
        // What the raw socket gives: the message and, apart, the header's fields.
        let parts = Parts {
            source: src,
            destination: ALL_MLDV2_ROUTERS,
            hop_limit: 1,
            hop_by_hop: Some(&sent[HEADER_LEN..hbh_end]),
            icmp: &sent[hbh_end..],
        };
        let rebuilt = datagram(&parts).expect("a Hop-by-Hop header: rebuilt");
        assert_eq!(rebuilt, sent);
        let ip = Ipv6Packet::new_checked(&rebuilt[..]).expect("the core's IPv6 parser");
        assert_eq!(ip.src_addr(), src);
        assert_eq!(ip.dst_addr(), ALL_MLDV2_ROUTERS);
        assert_eq!(ip.hop_limit(), 1);
        assert_eq!(ip.router_alert(), Some(0));
        assert_eq!(ip.upper_layer_protocol(), 58);
        let mld = MldPacket::new_checked(ip.payload()).expect("the MLD parser");
        assert!(mld.verify_checksum(ip.src_addr(), ip.dst_addr()));
        // Another hop limit or source is carried as received: the core's checks see it.
        let far = Parts {
            hop_limit: 64,
            ..parts
        };
        let far = datagram(&far).expect("rebuilt");
        assert_eq!(
            Ipv6Packet::new_checked(&far[..])
                .expect("parses")
                .hop_limit(),
            64
        );
    }

    #[test]
    fn without_a_hop_by_hop_header_nothing_is_rebuilt() {
        use igmp_ext::wire::ipv6::{HEADER_LEN, HOP_BY_HOP_LEN};
        use igmp_ext::wire::mld::ALL_MLDV2_ROUTERS;
        let src: Ipv6Addr = "fe80::1".parse().expect("address");
        let sent = report_datagram(src);
        let icmp = &sent[HEADER_LEN + HOP_BY_HOP_LEN..];
        let parts = Parts {
            source: src,
            destination: ALL_MLDV2_ROUTERS,
            hop_limit: 1,
            hop_by_hop: None,
            icmp,
        };
        assert_eq!(datagram(&parts), None);
        assert_eq!(
            datagram(&Parts {
                hop_by_hop: Some(&[]),
                ..parts
            }),
            None
        );
        // Too long for a Payload Length: refused, not truncated.
        let big = vec![0u8; 65_536];
        assert_eq!(
            datagram(&Parts {
                hop_by_hop: Some(&sent[HEADER_LEN..HEADER_LEN + HOP_BY_HOP_LEN]),
                icmp: &big,
                ..parts
            }),
            None
        );
    }

    #[test]
    fn the_kernel_filter_passes_mld_types_only() {
        let f = mld_only();
        let passes = |t: u8| f[usize::from(t >> 5)] & (1 << (t & 31)) == 0;
        let passed: Vec<u8> = (0..=255).filter(|&t| passes(t)).collect();
        assert_eq!(passed, MLD_TYPES);
    }

    #[test]
    fn host_addresses_lists_every_address() {
        let text = "\
20010db8000000010000000000000001 03 40 00 80     s1
fe800000000000000000000000000001 03 40 20 80     s1
";
        let a = |s: &str| s.parse::<Ipv6Addr>().expect("address");
        assert_eq!(
            host_addresses(text),
            vec![a("2001:db8:0:1::1"), a("fe80::1")]
        );
    }
}
