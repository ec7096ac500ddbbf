//! VIP mode's routes and policy rules through one rtnetlink socket kept for the life of the
//! executor (the maintained `netlink-packet-route` and `netlink-sys` crates, as the server's
//! socket cleanup uses): no `ip` process per change. Each call is one request answered by the
//! kernel's ACK or error, and does what the `ip` command in its doc did before.

use crate::plan::{VipRoute, VipRule};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use std::io;
use std::net::IpAddr;

/// A route or rule request the kernel refused, named like the `ip` command it replaces.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct RtnlError {
    pub what: String,
    pub source: io::Error,
}

/// A NETLINK_ROUTE socket in the verifier's network namespace.
#[derive(Debug)]
pub struct Rtnl {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl Rtnl {
    pub fn new() -> io::Result<Rtnl> {
        let mut socket = netlink_sys::Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// `ip route replace <vip>/32 via <via> table <table>`.
    pub fn route_replace(&mut self, r: &VipRoute) -> Result<(), RtnlError> {
        let mut m = route(r);
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(r.via)));
        let flags = NLM_F_CREATE | NLM_F_REPLACE;
        self.request(RouteNetlinkMessage::NewRoute(m), flags)
            .map_err(|source| RtnlError {
                what: format!(
                    "ip route replace {}/32 via {} table {}",
                    r.vip, r.via, r.table
                ),
                source,
            })
    }

    /// `ip route del <vip>/32 table <table>`.
    pub fn route_del(&mut self, r: &VipRoute) -> Result<(), RtnlError> {
        let mut m = route(r);
        m.header.scope = RouteScope::NoWhere;
        self.request(RouteNetlinkMessage::DelRoute(m), 0)
            .map_err(|source| RtnlError {
                what: format!("ip route del {}/32 table {}", r.vip, r.table),
                source,
            })
    }

    /// `ip rule add pref <priority> fwmark <mark> table <table>`, after deleting the same rule
    /// so that a restart does not stack duplicates.
    pub fn rule_add(&mut self, r: &VipRule) -> Result<(), RtnlError> {
        let _ = self.rule_del(r);
        self.request(
            RouteNetlinkMessage::NewRule(rule(r)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|source| RtnlError {
            what: format!(
                "ip rule add pref {} fwmark {:#x} table {}",
                r.priority, r.mark, r.table
            ),
            source,
        })
    }

    /// `ip rule del pref <priority> fwmark <mark> table <table>`.
    pub fn rule_del(&mut self, r: &VipRule) -> Result<(), RtnlError> {
        self.request(RouteNetlinkMessage::DelRule(rule(r)), 0)
            .map_err(|source| RtnlError {
                what: format!(
                    "ip rule del pref {} fwmark {:#x} table {}",
                    r.priority, r.mark, r.table
                ),
                source,
            })
    }

    /// Sends one request and waits for its ACK (an error answer becomes the error).
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            let mut rest: &[u8] = &buf;
            while !rest.is_empty() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink message length",
                    ));
                }
                // Netlink messages are 4-byte aligned within a datagram.
                rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = msg.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    };
                }
            }
        }
    }
}

/// The route's key: `<vip>/32` in `table` (above 255, so in RTA_TABLE, as `ip` does).
fn route(r: &VipRoute) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 32;
    m.header.table = table_byte(r.table);
    m.attributes = vec![
        RouteAttribute::Table(r.table),
        RouteAttribute::Destination(RouteAddress::Inet(r.vip)),
    ];
    m
}

fn rule(r: &VipRule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.table = table_byte(r.table);
    m.header.action = RuleAction::ToTable;
    m.attributes = vec![
        RuleAttribute::Priority(r.priority),
        RuleAttribute::FwMark(r.mark),
        RuleAttribute::Table(r.table),
    ];
    m
}

/// The header's 8-bit table field: the id when it fits, else RT_TABLE_UNSPEC (the attribute
/// carries it).
fn table_byte(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(0)
}

/// The announced routes (SPEC.md §10.6): `<vip>/32` through the announce device in the main
/// table, tagged with the configured route protocol.
impl Rtnl {
    /// `ip route replace <vip>/32 dev <ifindex> proto <protocol> scope link`.
    pub fn announce_replace(
        &mut self,
        vip: IpAddr,
        protocol: u8,
        ifindex: u32,
    ) -> Result<(), RtnlError> {
        let mut m = announced(vip, protocol);
        m.header.scope = RouteScope::Link;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Oif(ifindex));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map_err(|source| RtnlError {
            what: format!(
                "ip route replace {vip}/{} dev {ifindex} proto {protocol}",
                host_len(vip)
            ),
            source,
        })
    }

    /// `ip route del <vip>/32 proto <protocol>`; a route that is not there is no error (the
    /// goal is its absence).
    pub fn announce_del(&mut self, vip: IpAddr, protocol: u8) -> Result<(), RtnlError> {
        let mut m = announced(vip, protocol);
        m.header.scope = RouteScope::NoWhere;
        match self.request(RouteNetlinkMessage::DelRoute(m), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other.map_err(|source| RtnlError {
                what: format!("ip route del {vip}/{} proto {protocol}", host_len(vip)),
                source,
            }),
        }
    }

    /// `ip link set <ifindex> up`.
    pub fn link_up(&mut self, ifindex: u32) -> Result<(), RtnlError> {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|source| RtnlError {
                what: format!("ip link set {ifindex} up"),
                source,
            })
    }
}

/// A host route's prefix length: /32, or /128 for an IPv6 VIP.
fn host_len(vip: IpAddr) -> u8 {
    if vip.is_ipv4() {
        32
    } else {
        128
    }
}

fn announced(vip: IpAddr, protocol: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    let (family, destination) = match vip {
        IpAddr::V4(a) => (AddressFamily::Inet, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, RouteAddress::Inet6(a)),
    };
    m.header.address_family = family;
    m.header.destination_prefix_length = host_len(vip);
    m.header.table = MAIN_TABLE;
    m.header.protocol = RouteProtocol::from(protocol);
    m.attributes = vec![RouteAttribute::Destination(destination)];
    m
}

/// RT_TABLE_MAIN.
const MAIN_TABLE: u8 = 254;
