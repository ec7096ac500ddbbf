//! MLD over IPv6 for the interop tests: two namespaces on a veth with fixed link-local addresses
//! and no duplicate address detection (so that the kernel sends from its link-local address at
//! once, not from `::`, RFC 3590), an AF_PACKET capture that sees whole IPv6 packets, IPv6
//! source-specific joins through the socket API, and datagrams built and taken apart with our
//! `Repr`s.

use super::capture;
use super::netns::{Lab, Netns};
use igmp_ext::wire::ipv6::{Ipv6Packet, Ipv6Repr, NEXT_HEADER_ICMPV6, ROUTER_ALERT_MLD};
use igmp_ext::wire::mld::{MldPacket, MldRepr};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub const HOST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
pub const PEER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
const ETH_P_IPV6: u16 = 0x86dd;

/// A host whose kernel speaks MLDv2 and a peer that watches the link.
#[derive(Debug, Clone)]
pub struct MldPair {
    pub host: Netns,
    pub peer: Netns,
    pub host_if: &'static str,
    pub peer_if: &'static str,
    pub host_ifindex: u32,
    pub peer_ifindex: u32,
}

/// Two namespaces joined by a veth, `h0` with fe80::1 and `p0` with fe80::2 and no other IPv6
/// address; the host sends MLDv2 and repeats state changes within 50 ms.
pub fn mld_pair(lab: &Lab) -> MldPair {
    let host = lab.netns("mld-host");
    let peer = lab.netns("mld-peer");
    for ns in [&host, &peer] {
        // Inherited by interfaces made afterwards: no DAD, no generated link-local address.
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.addr_gen_mode", "1");
    }
    lab.veth(&host, "h0", &peer, "p0");
    host.sysctl("net.ipv6.conf.h0.force_mld_version", "2");
    // State-change retransmissions go out at random within this interval (default 1000 ms).
    // Set before the address: its solicited-node join is a state change too, and one scheduled
    // with the default interval would repeat every pending record up to a second later.
    host.sysctl("net.ipv6.conf.h0.mldv2_unsolicited_report_interval", "50");
    host.ip(&["addr", "add", "fe80::1/64", "dev", "h0", "nodad"]);
    peer.ip(&["addr", "add", "fe80::2/64", "dev", "p0", "nodad"]);
    MldPair {
        host_ifindex: host.ifindex("h0"),
        peer_ifindex: peer.ifindex("p0"),
        host,
        peer,
        host_if: "h0",
        peer_if: "p0",
    }
}

/// An AF_PACKET socket (SOCK_DGRAM, ETH_P_IPV6) in a namespace: every IPv6 packet on its links,
/// from the IPv6 header on, exactly as on the wire.
#[derive(Debug)]
pub struct Ipv6Capture {
    sock: Socket,
}

impl Ipv6Capture {
    pub fn open(ns: &Netns) -> Self {
        let sock = ns.run(|| {
            let proto = Protocol::from(i32::from(ETH_P_IPV6.to_be()));
            Socket::new(Domain::PACKET, Type::DGRAM, Some(proto)).expect("AF_PACKET socket")
        });
        Ipv6Capture { sock }
    }

    /// The next packet or `None` once `deadline` has passed.
    pub fn recv_until(&self, deadline: Instant) -> Option<Vec<u8>> {
        capture::recv_until(&self.sock, deadline, "AF_PACKET")
    }

    /// Collects MLD packets (ICMPv6 behind at most a Hop-by-Hop header) whose source is `from`
    /// until `done` holds for what was collected and then nothing more has come for `quiet` (so
    /// that retransmissions are included), or panics after `timeout`.
    pub fn collect_from(
        &self,
        from: Ipv6Addr,
        timeout: Duration,
        quiet: Duration,
        done: impl Fn(&[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        capture::collect(
            |until| self.recv_until(until),
            |p| is_mld_from(p, from),
            &format!("MLD packets from {from}"),
            (timeout, quiet),
            done,
        )
    }
}

/// Chooses by the raw bytes, not by our parser, so that a packet our parser refused is still
/// collected and fails the test where it is checked.
fn is_mld_from(p: &[u8], from: Ipv6Addr) -> bool {
    let icmp_type = match p.get(6) {
        Some(0) => p
            .get(40)
            .filter(|nh| **nh == NEXT_HEADER_ICMPV6)
            .and(p.get(48)),
        Some(&NEXT_HEADER_ICMPV6) => p.get(40),
        _ => None,
    };
    p.len() >= 40
        && p[8..24] == from.octets()
        && matches!(icmp_type, Some(0x82 | 0x83 | 0x84 | 0x8f))
}

/// `setsockopt(IPPROTO_IPV6, MCAST_JOIN_SOURCE_GROUP or MCAST_LEAVE_SOURCE_GROUP)` (RFC 3678
/// §5.1.2): socket2 has no IPv6 source-specific join.
#[allow(unsafe_code)]
pub fn source_membership_v6(
    sock: &Socket,
    ifindex: u32,
    group: Ipv6Addr,
    source: Ipv6Addr,
    join: bool,
) -> io::Result<()> {
    fn storage(addr: Ipv6Addr) -> libc::sockaddr_storage {
        let sa = SockAddr::from(SocketAddrV6::new(addr, 0, 0, 0));
        // SAFETY: sockaddr_storage is plain old data; every bit pattern is valid, and SockAddr's
        // storage is at most as large and laid out the same way.
        let mut out: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = usize::try_from(sa.len()).expect("sockaddr length");
        // SAFETY: both point to at least `len` bytes (SockAddr guarantees its length fits its
        // storage, and sockaddr_storage is the largest socket address), and do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                sa.as_ptr().cast::<u8>(),
                std::ptr::addr_of_mut!(out).cast::<u8>(),
                len,
            );
        }
        out
    }
    let req = libc::group_source_req {
        gsr_interface: ifindex,
        gsr_group: storage(group),
        gsr_source: storage(source),
    };
    let opt = if join {
        libc::MCAST_JOIN_SOURCE_GROUP
    } else {
        libc::MCAST_LEAVE_SOURCE_GROUP
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::group_source_req>())
        .expect("group_source_req size");
    // SAFETY: `req` is a valid group_source_req that lives across the call, `len` is its size,
    // and the descriptor belongs to `sock`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            opt,
            std::ptr::addr_of!(req).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The IPv6 header MLD is sent with (RFC 3810 §5): hop limit 1, Hop-by-Hop with Router Alert 0.
pub fn mld_ip(src: Ipv6Addr, dst: Ipv6Addr, msg: &MldRepr) -> Ipv6Repr {
    Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: NEXT_HEADER_ICMPV6,
        hop_limit: 1,
        traffic_class: 0,
        flow_label: 0,
        router_alert: Some(ROUTER_ALERT_MLD),
        payload_len: msg.buffer_len(),
    }
}

/// A complete IPv6 packet carrying `msg`, checksum filled.
pub fn mld_datagram(src: Ipv6Addr, dst: Ipv6Addr, msg: &MldRepr) -> Vec<u8> {
    let ip = mld_ip(src, dst, msg);
    let mut buf = vec![0; ip.buffer_len()];
    ip.emit(&mut buf);
    msg.emit(&mut buf[ip.header_len()..], src, dst);
    buf
}

pub fn emit_mld(msg: &MldRepr, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf, src, dst);
    buf
}

pub fn emit_ip(ip: &Ipv6Repr) -> Vec<u8> {
    let mut buf = vec![0; ip.header_len()];
    ip.emit(&mut buf);
    buf
}

/// A packet taken apart by our parsers.
#[derive(Debug, Clone)]
pub struct ParsedMld {
    pub ip: Ipv6Repr,
    /// The IPv6 and Hop-by-Hop headers exactly as received.
    pub ip_header: Vec<u8>,
    /// The MLD message exactly as received (bounded by Payload Length).
    pub mld_bytes: Vec<u8>,
    pub mld: MldRepr,
    pub checksum_ok: bool,
}

/// Parses with the checked views only, as a router would; any failure says which layer failed.
pub fn parse_mld_datagram(bytes: &[u8]) -> Result<ParsedMld, String> {
    let ip = Ipv6Packet::new_checked(bytes).map_err(|e| format!("IPv6: {e}"))?;
    if ip.upper_layer_protocol() != NEXT_HEADER_ICMPV6 {
        return Err(format!(
            "upper layer {} is not ICMPv6",
            ip.upper_layer_protocol()
        ));
    }
    let mld = MldPacket::new_checked(ip.payload()).map_err(|e| format!("MLD: {e}"))?;
    let repr = MldRepr::parse(&mld).map_err(|e| format!("MLD repr: {e}"))?;
    Ok(ParsedMld {
        ip: Ipv6Repr::parse(&ip),
        ip_header: bytes[..ip.header_len()].to_vec(),
        mld_bytes: ip.payload().to_vec(),
        checksum_ok: mld.verify_checksum(ip.src_addr(), ip.dst_addr()),
        mld: repr,
    })
}

/// Sends one complete IPv6 packet as it is out of `ifname` of `ns` (IPPROTO_RAW implies
/// IPV6_HDRINCL on Linux: the kernel adds nothing).
pub fn send_raw_v6(ns: &Netns, ifname: &str, ifindex: u32, packet: &[u8]) {
    let ip = Ipv6Packet::new_checked(packet).expect("an IPv6 packet to send");
    let dst = SocketAddrV6::new(ip.dst_addr(), 0, 0, ifindex);
    let sent = ns.run(|| {
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(255)))
            .expect("raw IPv6 socket");
        s.bind_device(Some(ifname.as_bytes()))
            .expect("SO_BINDTODEVICE");
        s.send_to(packet, &SockAddr::from(dst))
            .expect("send raw IPv6 packet")
    });
    assert_eq!(sent, packet.len(), "short raw send");
}
