//! The daemon's MLD sockets, when `group6` is configured (SPEC.md §3.8): a raw IPPROTO_RAW
//! socket that sends the agent's complete IPv6 datagrams (hop limit 1, Hop-by-Hop Router Alert,
//! to ff02::16) out of the service interface, and a raw ICMPv6 socket bound to it that hears
//! the MLD queries. The link (our link-local address once duplicate address detection is done,
//! and the global on-link prefix) is read from /proc/net/if_inet6 until it is known.

use super::Shell;
use crate::mld_agent::Link6;
use igmp_ext::mld_join::is_link_local;
use igmp_ext::wire::mld::ALL_MLDV2_ROUTERS;
use igmp_ext::Slice6;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

/// `IFA_F_TENTATIVE` (linux/if_addr.h): duplicate address detection still running.
const IFA_F_TENTATIVE: u32 = 0x40;
/// `IFA_F_DADFAILED`: the address is a duplicate, unusable.
const IFA_F_DADFAILED: u32 = 0x08;

pub struct Mld {
    ifname: String,
    pub ifindex: u32,
    send: Socket,
    pub recv: AsyncFd<Socket>,
}

/// Opens the MLD sockets on `ifname`.
pub fn open(ifname: &str) -> io::Result<Mld> {
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
    let send = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )?;
    send.bind_device(Some(ifname.as_bytes()))?;
    let recv = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    recv.bind_device(Some(ifname.as_bytes()))?;
    recv.set_nonblocking(true)?;
    // As for the IGMP socket: a `Socket` owns its descriptor for its whole life.
    #[allow(deprecated)]
    let recv = AsyncFd::new(recv)?;
    Ok(Mld {
        ifname: ifname.to_owned(),
        ifindex,
        send,
        recv,
    })
}

/// `ifname`'s link for MLDv2 joins from `/proc/net/if_inet6` text: the first link-local address
/// that passed duplicate address detection, and the first global address's prefix.
pub fn parse_link(if_inet6: &str, ifname: &str) -> Option<Link6> {
    let mut sender = None;
    let mut prefix = None;
    // address(32 hex) ifindex prefix_len scope flags name, all hex but the name.
    for line in if_inet6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, _, plen, scope, flags, name] = f[..] else {
            continue;
        };
        if name != ifname {
            continue;
        }
        let (Ok(addr), Ok(plen), Ok(scope), Ok(flags)) = (
            u128::from_str_radix(addr, 16),
            u8::from_str_radix(plen, 16),
            u8::from_str_radix(scope, 16),
            u32::from_str_radix(flags, 16),
        ) else {
            continue;
        };
        let addr = Ipv6Addr::from(addr);
        if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0 {
            continue;
        }
        if is_link_local(addr) {
            sender = sender.or(Some(addr));
        } else if scope == 0 && plen <= 128 {
            prefix = prefix.or(Some(Slice6::prefix(addr, plen)));
        }
    }
    Some(Link6 {
        sender: sender?,
        prefix: prefix?,
    })
}

impl Mld {
    /// The link as the kernel has it now, if it is ready.
    fn link(&self) -> Option<Link6> {
        let text = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
        parse_link(&text, &self.ifname)
    }

    fn send(&self, datagram: &[u8]) -> io::Result<usize> {
        let to = SocketAddrV6::new(ALL_MLDV2_ROUTERS, 0, 0, self.ifindex);
        self.send.send_to(datagram, &SockAddr::from(to))
    }
}

impl Shell {
    /// Reads the link until it is known (and follows a change of it).
    pub(super) fn refresh_link6(&mut self) {
        let Some(mld) = &self.mld else { return };
        match mld.link() {
            Some(link) if self.node.agent6().and_then(|a| a.link()) != Some(link) => {
                info!(sender = %link.sender, prefix = %link.prefix, "MLDv2 joins: link ready");
                self.node.set_link6(link);
            }
            Some(_) => {}
            None => {
                debug!("MLDv2 joins: waiting for a link-local address past DAD and a global prefix")
            }
        }
    }

    /// Sends the MLDv2 joins due.
    pub(super) fn flush6(&mut self) {
        let Some(mld) = &self.mld else { return };
        let now = daemon_kit::now();
        while let Some(d) = self.node.poll_transmit6(now, super::sockets::nonce()) {
            match d {
                Ok(datagram) => match mld.send(&datagram) {
                    Ok(_) => self.snapshot.mld_joins_sent += 1,
                    Err(e) => warn!("sending signed MLDv2 report: {e}"),
                },
                Err(e) => warn!("building signed MLDv2 report: {e}"),
            }
        }
    }

    /// Queries heard on the ICMPv6 socket go to the node.
    pub(super) fn on_mld_readable(&mut self) {
        let Some(mld) = &self.mld else { return };
        let mut buf = [0u8; 1500];
        loop {
            let mut s: &Socket = mld.recv.get_ref();
            match io::Read::read(&mut s, &mut buf) {
                Ok(n) => self
                    .node
                    .handle_mld(daemon_kit::now(), buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("mld socket: {e}");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tentative link-local address is not used (Linux would send from `::`); the global
    /// address gives the prefix; other interfaces are ignored.
    #[test]
    fn the_link_waits_for_dad() {
        let tentative = "fe800000000000000000000000000001 05 40 20 c0     m0\n\
                         20010db8000000010000000000000002 05 40 00 80     m0\n\
                         fe800000000000000000000000000009 06 40 20 80     other\n";
        assert_eq!(parse_link(tentative, "m0"), None);
        let done = tentative.replace("20 c0", "20 80");
        let link = parse_link(&done, "m0").expect("ready");
        assert_eq!(link.sender, "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(link.prefix.to_string(), "2001:db8:0:1::/64");
        let no_global = "fe800000000000000000000000000001 05 40 20 80     m0\n";
        assert_eq!(parse_link(no_global, "m0"), None);
    }
}
