//! Client packets passed between members and the direct (unicast) paths members announce for
//! them (patent claim 10, Fig 15). Where a message to one member goes is `sending.rs`'s
//! `destination_of`.

use super::{Destination, Endpoint, Event, SendError};
use crate::time::Clock;
use crate::wire::{DirectPath, DirectPath6, Forward, Forward6, Message};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use igmp_ext::MemberId;

impl Endpoint {
    /// Passes a client packet to `to` (patent claim 10): over its direct path if it announced
    /// one, else unicast to where its messages come from, else over the group. An IPv6
    /// client's packet goes as `Forward6`.
    pub fn forward(
        &mut self,
        now: Clock,
        to: MemberId,
        client: SocketAddr,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        if !self.peers.contains_key(&to) {
            return Err(SendError::UnknownMember);
        }
        let m = match client {
            SocketAddr::V4(c) => Message::Forward(Forward {
                to: to.0,
                client_addr: u32::from(*c.ip()),
                client_port: c.port(),
                payload,
            }),
            SocketAddr::V6(c) => Message::Forward6(Forward6 {
                to: to.0,
                client_addr: c.ip().octets(),
                client_port: c.port(),
                payload,
            }),
        };
        if self.send_to_member(now, to, &m) {
            Ok(())
        } else {
            Err(SendError::TooLarge)
        }
    }

    /// A client packet a peer passed on; only the member it names takes it.
    pub(super) fn on_forward(&mut self, sender: MemberId, f: Forward) {
        if f.to == self.me.0 {
            self.events.push_back(Event::Forwarded {
                from: sender,
                client: SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(f.client_addr),
                    f.client_port,
                )),
                payload: f.payload,
            });
        }
    }

    /// An IPv6 client's packet a peer passed on.
    pub(super) fn on_forward6(&mut self, sender: MemberId, f: Forward6) {
        if f.to == self.me.0 {
            let ip = Ipv6Addr::from(f.client_addr);
            self.events.push_back(Event::Forwarded {
                from: sender,
                client: SocketAddr::V6(SocketAddrV6::new(ip, f.client_port, 0, 0)),
                payload: f.payload,
            });
        }
    }

    /// Tells the group "use this unicast address to reach me" (patent claim 10, Fig 15): an
    /// IPv4 address as `DirectPath`, an IPv6 one as `DirectPath6` (its scope id stays here).
    pub fn advertise_direct_path(&mut self, now: Clock, addr: impl Into<SocketAddr>) {
        let m = match addr.into() {
            SocketAddr::V4(a) => Message::DirectPath(DirectPath {
                addr: u32::from(*a.ip()),
                port: a.port(),
            }),
            SocketAddr::V6(a) => Message::DirectPath6(DirectPath6 {
                addr: a.ip().octets(),
                port: a.port(),
            }),
        };
        self.send(now, Destination::Group, &m);
    }

    /// A peer's unicast address for messages to it. One that is not a unicast address (the
    /// unspecified address, a multicast or the broadcast address) is ignored: the peer stays
    /// reached where it speaks from.
    pub(super) fn on_direct_path(&mut self, sender: MemberId, d: DirectPath) {
        let ip = Ipv4Addr::from(d.addr);
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return;
        }
        self.set_direct_path(sender, SocketAddr::V4(SocketAddrV4::new(ip, d.port)));
    }

    /// A peer's IPv6 unicast address. A link-local one is reached over the link the
    /// announcement came in on: the scope id of its source; from an IPv4 source it has none,
    /// and cannot be reached, so it is ignored, as are the unspecified address, multicast and
    /// IPv4-mapped ones (those are `DirectPath`'s). An IPv4 channel's socket cannot reach an
    /// IPv6 path: it is ignored there.
    pub(super) fn on_direct_path6(&mut self, sender: MemberId, from: SocketAddr, d: DirectPath6) {
        if self.config.group6.is_none() {
            return;
        }
        let ip = Ipv6Addr::from(d.addr);
        if ip.is_unspecified() || ip.is_multicast() || ip.to_ipv4_mapped().is_some() {
            return;
        }
        let scope = match from {
            SocketAddr::V6(f) if ip.is_unicast_link_local() => f.scope_id(),
            _ => 0,
        };
        if ip.is_unicast_link_local() && scope == 0 {
            return;
        }
        self.set_direct_path(
            sender,
            SocketAddr::V6(SocketAddrV6::new(ip, d.port, 0, scope)),
        );
    }

    fn set_direct_path(&mut self, sender: MemberId, addr: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&sender) {
            p.direct_path = Some(addr);
        }
        self.events.push_back(Event::DirectPath {
            member: sender,
            addr,
        });
    }
}
