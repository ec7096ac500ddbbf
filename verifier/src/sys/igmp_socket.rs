//! Reading the IGMP socket: one datagram with the interface it arrived on, and the kernel's
//! count of datagrams it dropped at the full queue (`SO_RXQ_OVFL`, asked for in `setup`).

use igmp_ext::time::Instant;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn};
use std::io::IoSliceMut;
use std::os::fd::RawFd;
use std::time::Duration;
use tracing::warn;

/// One datagram read into the caller's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    /// The interface it arrived on (IP_PKTINFO); `None` if the kernel did not say.
    pub ifindex: Option<u32>,
    /// The socket's drop counter, when the kernel attached it (only once it is non-zero).
    pub drops_total: Option<u32>,
    /// The sender's address and port (for a raw socket, port 0; the address is also in the
    /// datagram's IPv4 header).
    pub source: Option<std::net::SocketAddrV4>,
}

/// Reads one datagram without blocking; `None` when the queue is empty.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> std::io::Result<Option<Received>> {
    let mut iov = [IoSliceMut::new(buf)];
    // Room for both: a truncated control message would lose the interface, and a datagram
    // without one is ignored.
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo, u32);
    let msg = match nix::sys::socket::recvmsg::<SockaddrIn>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(m) => m,
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut out = Received {
        len: msg.bytes,
        ifindex: None,
        drops_total: None,
        source: msg
            .address
            .map(|a| std::net::SocketAddrV4::new(a.ip(), a.port())),
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(p) => {
                    out.ifindex = u32::try_from(p.ipi_ifindex).ok().filter(|&i| i != 0);
                }
                ControlMessageOwned::RxqOvfl(total) => out.drops_total = Some(total),
                _ => {}
            }
        }
    }
    Ok(Some(out))
}

/// The socket's drops seen so far, and a warning at most once per window with what was
/// dropped since the last one (a flood would otherwise log a line per read).
#[derive(Debug, Default)]
pub struct Drops {
    seen: u32,
    unlogged: u64,
    logged_at: Option<Instant>,
}

const LOG_WINDOW: Duration = Duration::from_secs(10);

impl Drops {
    /// The counter a read carried; returns how many datagrams were dropped since the last.
    pub fn update(&mut self, now: Instant, total: u32) -> u64 {
        self.update_for(
            now,
            total,
            "IGMP datagrams; every claim is held one hold from now",
        )
    }

    /// [`Drops::update`] with what was dropped and what it means, for the warning.
    pub fn update_for(&mut self, now: Instant, total: u32, what: &str) -> u64 {
        let n = u64::from(total.wrapping_sub(self.seen));
        self.seen = total;
        if n == 0 {
            return 0;
        }
        self.unlogged += n;
        if self
            .logged_at
            .is_none_or(|at| now >= at.saturating_add(LOG_WINDOW))
        {
            warn!(
                dropped = self.unlogged,
                "the kernel dropped {what} at the full socket queue (a flood faster than we read)"
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
        n
    }
}
