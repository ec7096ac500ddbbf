//! The kernel's IPv4 multicast routing API (linux/mroute.h): the one module of this crate that
//! needs `unsafe`, for the `setsockopt` calls the `libc` crate has no wrappers or structs for.
//!
//! Two raw IGMP sockets: the *mroute socket* (`MRT_INIT`) receives upcalls and IGMP; VIFs and
//! MFC entries are added through a second *control socket*, which makes the kernel flag them
//! static (`VIFF_STATIC`, `MFC_STATIC`), so that they survive a verifier restart or crash and
//! traffic the kernel already carries keeps flowing while the new process rebuilds its state.
#![allow(unsafe_code)]

use crate::plan::{MfcSpec, MAX_VIFS};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

const MRT_INIT: libc::c_int = 200;
const MRT_DONE: libc::c_int = 201;
const MRT_ADD_VIF: libc::c_int = 202;
const MRT_DEL_VIF: libc::c_int = 203;
const MRT_ADD_MFC: libc::c_int = 204;
const MRT_DEL_MFC: libc::c_int = 205;
const VIFF_USE_IFINDEX: u8 = 0x08;

/// `struct vifctl` with the union as the interface index (`VIFF_USE_IFINDEX`).
#[repr(C)]
struct VifCtl {
    vifc_vifi: u16,
    vifc_flags: u8,
    vifc_threshold: u8,
    vifc_rate_limit: u32,
    vifc_lcl_ifindex: i32,
    vifc_rmt_addr: u32,
}

/// `struct mfcctl`.
#[repr(C)]
struct MfcCtl {
    mfcc_origin: u32,
    mfcc_mcastgrp: u32,
    mfcc_parent: u16,
    mfcc_ttls: [u8; MAX_VIFS],
    mfcc_pkt_cnt: u32,
    mfcc_byte_cnt: u32,
    mfcc_wrong_if: u32,
    mfcc_expire: i32,
}

/// `SIOCGETSGCNT` (`SIOCPROTOPRIVATE + 1`): one (S,G) entry's counters.
const SIOCGETSGCNT: libc::c_ulong = 0x89E1;

/// `struct sioc_sg_req`.
#[repr(C)]
struct SiocSgReq {
    src: u32,
    grp: u32,
    pktcnt: libc::c_ulong,
    bytecnt: libc::c_ulong,
    wrong_if: libc::c_ulong,
}

const _: () = assert!(core::mem::size_of::<VifCtl>() == 16);
const _: () = assert!(core::mem::size_of::<MfcCtl>() == 60);

pub fn raw_igmp_socket() -> io::Result<Socket> {
    Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_IGMP)),
    )
}

fn set_ip_opt<T>(sock: &Socket, opt: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(core::mem::size_of::<T>())
        .map_err(|_| io::Error::other("option too large"))?;
    // SAFETY: `value` is a live reference to a `T`, so the pointer is valid for reads of
    // `size_of::<T>()` bytes for the duration of the call; the kernel only copies from it. Every
    // `T` passed here is `#[repr(C)]` plain data (or a c_int) matching the kernel's layout, and
    // the fd is owned by `sock`, open for the whole call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            opt,
            (value as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket the kernel sends upcalls (`IGMPMSG_*`) and IGMP to; there is one per namespace.
pub fn open_mroute_socket() -> io::Result<Socket> {
    let s = raw_igmp_socket()?;
    set_ip_opt(&s, MRT_INIT, &1 as &libc::c_int)?;
    // A burst of new sources is a burst of upcalls; when this socket's queue is full the kernel
    // drops the upcall and the queued first packet with it (`make bench B=dataplane`). The
    // default (rmem_default, ~208 KiB) holds a few hundred; raise it past rmem_max if we may
    // (we run as root: SO_RCVBUFFORCE), else as far as SO_RCVBUF goes.
    force_recv_buffer(&s, UPCALL_BUFFER);
    Ok(s)
}

/// Sets the receive buffer to `bytes`, past `rmem_max` if we may (root: SO_RCVBUFFORCE), else
/// as far as SO_RCVBUF goes.
pub fn force_recv_buffer(s: &Socket, bytes: usize) {
    if nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::RcvBufForce, &bytes).is_err() {
        let _ = s.set_recv_buffer_size(bytes);
    }
}

/// Receive buffer of the mroute socket: about 16,000 queued upcalls.
const UPCALL_BUFFER: usize = 16 << 20;

/// Stops multicast routing through `sock` (MRT_DONE); closing the socket does the same.
pub fn mrt_done(sock: &Socket) -> io::Result<()> {
    set_ip_opt(sock, MRT_DONE, &0 as &libc::c_int)
}

/// The socket VIFs and MFC entries are changed through; see the module comment for why it is
/// not the mroute socket.
#[derive(Debug)]
pub struct MrouteControl {
    sock: Socket,
}

impl MrouteControl {
    /// The socket takes only setsockopts, but as a raw IGMP socket the kernel would queue a
    /// copy of every IGMP datagram to it, never read: a filter that accepts nothing keeps its
    /// queue empty (under `make bench B=attack` it held a full queue and a million drops).
    pub fn open() -> io::Result<Self> {
        let sock = raw_igmp_socket()?;
        // BPF_RET | BPF_K, 0: keep no bytes of any packet.
        sock.attach_filter(&[socket2::SockFilter::new(0x06, 0, 0, 0)])?;
        Ok(MrouteControl { sock })
    }

    pub fn add_vif(&self, vifi: u16, ifindex: u32) -> io::Result<()> {
        let ctl = VifCtl {
            vifc_vifi: vifi,
            vifc_flags: VIFF_USE_IFINDEX,
            vifc_threshold: 1,
            vifc_rate_limit: 0,
            vifc_lcl_ifindex: i32::try_from(ifindex)
                .map_err(|_| io::Error::other("ifindex out of range"))?,
            vifc_rmt_addr: 0,
        };
        set_ip_opt(&self.sock, MRT_ADD_VIF, &ctl)
    }

    pub fn del_vif(&self, vifi: u16) -> io::Result<()> {
        let ctl = VifCtl {
            vifc_vifi: vifi,
            vifc_flags: 0,
            vifc_threshold: 0,
            vifc_rate_limit: 0,
            vifc_lcl_ifindex: 0,
            vifc_rmt_addr: 0,
        };
        set_ip_opt(&self.sock, MRT_DEL_VIF, &ctl)
    }

    fn mfcctl(spec: &MfcSpec) -> MfcCtl {
        let mut ttls = [0u8; MAX_VIFS];
        for oif in spec.oifs.iter() {
            // Forward when the packet's TTL is above 1: a TTL-1 packet must not leave its link.
            ttls[usize::from(oif)] = 1;
        }
        MfcCtl {
            mfcc_origin: u32::from_ne_bytes(spec.source.octets()),
            mfcc_mcastgrp: u32::from_ne_bytes(spec.group.octets()),
            mfcc_parent: spec.parent,
            mfcc_ttls: ttls,
            mfcc_pkt_cnt: 0,
            mfcc_byte_cnt: 0,
            mfcc_wrong_if: 0,
            mfcc_expire: 0,
        }
    }

    /// Adds or replaces the (S,G) entry; the kernel then sends the packets it queued for it.
    pub fn add_mfc(&self, spec: &MfcSpec) -> io::Result<()> {
        set_ip_opt(&self.sock, MRT_ADD_MFC, &Self::mfcctl(spec))
    }

    pub fn del_mfc(&self, spec: &MfcSpec) -> io::Result<()> {
        set_ip_opt(&self.sock, MRT_DEL_MFC, &Self::mfcctl(spec))
    }

    /// The packet counter of the kernel's (source, group) entry, `None` when there is none.
    /// One lookup in the kernel's hash table: unlike `/proc/net/ip_mr_cache`, whose reads walk
    /// the entry list from the start for every page (10 s for 100,000 entries here), the cost
    /// does not grow with the table.
    pub fn packets(&self, source: Ipv4Addr, group: Ipv4Addr) -> io::Result<Option<u64>> {
        let mut req = SiocSgReq {
            src: u32::from_ne_bytes(source.octets()),
            grp: u32::from_ne_bytes(group.octets()),
            pktcnt: 0,
            bytecnt: 0,
            wrong_if: 0,
        };
        // SAFETY: `req` is a live, writable `#[repr(C)]` struct laid out as the kernel's
        // `struct sioc_sg_req`, which SIOCGETSGCNT reads and writes in place; the fd is owned by
        // `self.sock`, open for the whole call.
        let rc = unsafe {
            libc::ioctl(
                self.sock.as_raw_fd(),
                SIOCGETSGCNT as _,
                &mut req as *mut SiocSgReq,
            )
        };
        if rc == 0 {
            // `c_ulong` is 32 bits on some targets, 64 on this one.
            #[allow(clippy::unnecessary_cast)]
            return Ok(Some(req.pktcnt as u64));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

/// Registers the mroute socket with tokio's reactor.
pub fn register_async(sock: Socket) -> io::Result<tokio::io::unix::AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor: it is open now, is closed only when the `Socket` is
    // dropped, and `as_raw_fd` always returns that same descriptor. The `Socket` is moved into
    // the `AsyncFd`, so it lives exactly as long as the registration.
    unsafe { tokio::io::unix::AsyncFd::register(sock) }.map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::VifSet;

    #[test]
    fn mfc_entries_forward_on_their_outgoing_vifs_only() {
        let s: VifSet = [0, 3, 31, 32, 200].into_iter().collect();
        let ctl = MrouteControl::mfcctl(&MfcSpec {
            source: Ipv4Addr::new(10, 1, 0, 7),
            group: Ipv4Addr::new(239, 1, 1, 1),
            parent: 1,
            oifs: s,
        });
        let ttls = ctl.mfcc_ttls;
        assert_eq!((ttls[0], ttls[1], ttls[3], ttls[31]), (1, 0, 1, 1));
    }
}
