//! The liveness beacon socket (SPEC.md §5.5): UDP to 224.0.0.2 (all routers on the link) at the
//! configured port, joined on every served interface, read with the arrival interface, the
//! sender and the kernel's drop count. What a beacon proves is the core's to decide.

use super::igmp_socket::{self, Drops};
use super::setup::SetupError;
use crate::plan::Interface;
use igmp_ext::time::Instant;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use tokio::io::unix::AsyncFd;

const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);
/// Most datagrams one drain reads before the loop's other work gets a turn.
const MAX_READS: usize = 1024;

/// The open beacon socket and its drop counter.
#[derive(Debug)]
pub struct BeaconSocket {
    socket: AsyncFd<Socket>,
    drops: Drops,
}

fn sys(what: &'static str) -> impl Fn(std::io::Error) -> SetupError {
    move |e| SetupError::Sys {
        what,
        source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

impl BeaconSocket {
    /// Binds `port` and joins 224.0.0.2 on each of `interfaces`.
    pub fn open(port: u16, interfaces: &[Interface]) -> Result<BeaconSocket, SetupError> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(sys("beacon socket"))?;
        s.set_reuse_address(true)
            .map_err(sys("beacon socket SO_REUSEADDR"))?;
        s.bind(&SockAddr::from(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            port,
        )))
        .map_err(sys("beacon socket bind"))?;
        for i in interfaces {
            s.join_multicast_v4_n(&ALL_ROUTERS, &InterfaceIndexOrAddress::Index(i.ifindex))
                .map_err(sys("beacon socket: join 224.0.0.2"))?;
        }
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
            .map_err(|source| SetupError::Sys {
                what: "beacon socket IP_PKTINFO",
                source,
            })?;
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RxqOvfl, &1).map_err(
            |source| SetupError::Sys {
                what: "beacon socket SO_RXQ_OVFL",
                source,
            },
        )?;
        s.set_nonblocking(true)
            .map_err(sys("beacon socket nonblocking"))?;
        Ok(BeaconSocket {
            socket: super::mroute::register_async(s).map_err(sys("beacon socket (tokio)"))?,
            drops: Drops::default(),
        })
    }

    /// Sends a standby notice to the member's beacon socket (the address and port its beacons
    /// come from); a lost one is sent again by the core.
    pub fn send_notice(&self, notice: &igmp_ext::liveness::StandbyNotice, to: SocketAddrV4) {
        let to = SockAddr::from(to);
        if let Err(e) = self.socket.get_ref().send_to(&notice.encode(), &to) {
            tracing::debug!(error = %e, "standby notice");
        }
    }

    /// Waits until a beacon may be waiting.
    pub async fn readable(&self) -> std::io::Result<()> {
        let mut guard = self.socket.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Reads what is queued (at most [`MAX_READS`]), handing each datagram with its sender and
    /// interface to `each`; returns how many the kernel dropped since the last drain, and
    /// whether the queue was read empty (everything that arrived before the call was handed).
    pub fn drain(
        &mut self,
        now: Instant,
        mut each: impl FnMut(&[u8], SocketAddrV4, u32),
    ) -> (u64, bool) {
        let mut buf = [0u8; 512];
        let mut drops_total = None;
        let mut empty = false;
        for _ in 0..MAX_READS {
            let r = match igmp_socket::recv(self.socket.get_ref().as_raw_fd(), &mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    empty = true;
                    break;
                }
                Err(_) => break,
            };
            drops_total = r.drops_total.or(drops_total);
            if let (Some(source), Some(ifindex)) = (r.source, r.ifindex) {
                each(&buf[..r.len.min(buf.len())], source, ifindex);
            }
        }
        let dropped = drops_total.map_or(0, |total| {
            self.drops.update_for(
                now,
                total,
                "liveness beacons; nobody is found dead for the silence",
            )
        });
        (dropped, empty)
    }
}
