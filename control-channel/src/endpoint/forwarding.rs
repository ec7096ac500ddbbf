//! Client packets passed between members and the direct (unicast) paths members announce for
//! them (patent claim 10, Fig 15). Where a message to one member goes is `sending.rs`'s
//! `destination_of`.

use super::{Destination, Endpoint, Event, SendError};
use crate::time::Clock;
use crate::wire::{DirectPath, Forward, Message};
use core::net::{Ipv4Addr, SocketAddrV4};
use igmp_ext::MemberId;

impl Endpoint {
    /// Passes a client packet to `to` (patent claim 10): over its direct path if it announced
    /// one, else unicast to where its messages come from, else over the group.
    pub fn forward(
        &mut self,
        now: Clock,
        to: MemberId,
        client: SocketAddrV4,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        if !self.peers.contains_key(&to) {
            return Err(SendError::UnknownMember);
        }
        let m = Message::Forward(Forward {
            to: to.0,
            client_addr: u32::from(*client.ip()),
            client_port: client.port(),
            payload,
        });
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
                client: SocketAddrV4::new(Ipv4Addr::from(f.client_addr), f.client_port),
                payload: f.payload,
            });
        }
    }

    /// Tells the group "use this unicast address to reach me" (patent claim 10, Fig 15).
    pub fn advertise_direct_path(&mut self, now: Clock, addr: SocketAddrV4) {
        let m = Message::DirectPath(DirectPath {
            addr: u32::from(*addr.ip()),
            port: addr.port(),
        });
        self.send(now, Destination::Group, &m);
    }

    /// A peer's unicast address for messages to it.
    pub(super) fn on_direct_path(&mut self, sender: MemberId, d: DirectPath) {
        let addr = SocketAddrV4::new(Ipv4Addr::from(d.addr), d.port);
        if let Some(p) = self.peers.get_mut(&sender) {
            p.direct_path = Some(addr);
        }
        self.events.push_back(Event::DirectPath {
            member: sender,
            addr,
        });
    }
}
