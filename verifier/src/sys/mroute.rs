//! The kernel's IPv4 multicast routing API (linux/mroute.h): the one module of this crate that
//! needs `unsafe`, for the `setsockopt` calls the `libc` crate has no wrappers or structs for.
//!
//! Two raw IGMP sockets: the *mroute socket* (`MRT_INIT`) receives upcalls and IGMP; VIFs and
//! MFC entries are added through a second *control socket*, which makes the kernel flag them
//! static (`VIFF_STATIC`, `MFC_STATIC`), so that they survive a verifier restart or crash and
//! traffic the kernel already carries keeps flowing while the new process rebuilds its state.
#![allow(unsafe_code)]

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
/// `MAXVIFS`: the size of an MFC entry's TTL array.
pub const MAX_VIFS: usize = 32;
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
    if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &UPCALL_BUFFER)
        .is_err()
    {
        let _ = s.set_recv_buffer_size(UPCALL_BUFFER);
    }
    Ok(s)
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

/// A set of VIF numbers (bit `n` is VIF `n`): the outgoing interfaces of one MFC entry.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VifSet(u32);

impl VifSet {
    pub const EMPTY: VifSet = VifSet(0);

    pub fn one(vif: u16) -> VifSet {
        VifSet::EMPTY.with(vif)
    }

    /// Adds `vif`; numbers at or past [`MAX_VIFS`] are ignored (the kernel has no such VIF).
    pub fn with(self, vif: u16) -> VifSet {
        match 1u32.checked_shl(u32::from(vif)) {
            Some(bit) if usize::from(vif) < MAX_VIFS => VifSet(self.0 | bit),
            _ => self,
        }
    }

    pub fn without(self, vif: u16) -> VifSet {
        VifSet(self.0 & !1u32.checked_shl(u32::from(vif)).unwrap_or(0))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, vif: u16) -> bool {
        usize::from(vif) < MAX_VIFS && self.0 & (1 << vif) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = u16> {
        (0..MAX_VIFS as u16).filter(move |&v| self.contains(v))
    }
}

impl FromIterator<u16> for VifSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        iter.into_iter().fold(VifSet::EMPTY, VifSet::with)
    }
}

impl core::fmt::Debug for VifSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl serde::Serialize for VifSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// One MFC entry: packets from `source` to `group` arriving on VIF `parent` go out of every VIF
/// in `oifs` (none: dropped in the kernel, and no more upcalls for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfcSpec {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub parent: u16,
    pub oifs: VifSet,
}

impl MrouteControl {
    pub fn open() -> io::Result<Self> {
        Ok(MrouteControl {
            sock: raw_igmp_socket()?,
        })
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

/// `IGMPMSG_NOCACHE`: a packet for an (S,G) with no MFC entry; the kernel queued it.
pub const IGMPMSG_NOCACHE: u8 = 1;

/// An upcall (`struct igmpmsg`), read from bytes that arrived on the mroute socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upcall {
    pub msgtype: u8,
    pub vif: u16,
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
}

impl Upcall {
    /// `struct igmpmsg` overlays an IPv4 header whose protocol byte (`im_mbz`) is 0, which no
    /// real IGMP datagram has; `None` for anything else.
    pub fn parse(bytes: &[u8]) -> Option<Upcall> {
        let b = bytes.get(..20)?;
        if b[9] != 0 {
            return None;
        }
        Some(Upcall {
            msgtype: b[8],
            vif: u16::from(b[10]) | (u16::from(b[11]) << 8),
            source: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
            group: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upcall_is_told_apart_from_igmp() {
        let mut b = [0xa5u8; 20];
        b[8] = IGMPMSG_NOCACHE;
        b[9] = 0;
        b[10] = 3;
        b[11] = 0;
        b[12..16].copy_from_slice(&[10, 1, 0, 7]);
        b[16..20].copy_from_slice(&[232, 1, 1, 1]);
        let u = Upcall::parse(&b).expect("upcall");
        assert_eq!(u.msgtype, IGMPMSG_NOCACHE);
        assert_eq!(u.vif, 3);
        assert_eq!(u.source, Ipv4Addr::new(10, 1, 0, 7));
        assert_eq!(u.group, Ipv4Addr::new(232, 1, 1, 1));
        b[9] = 2; // IGMP
        assert!(Upcall::parse(&b).is_none());
        assert!(Upcall::parse(&b[..19]).is_none());
    }

    #[test]
    fn vif_sets_hold_only_real_vif_numbers() {
        let s: VifSet = [0, 3, 31, 32, 200].into_iter().collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 3, 31]);
        assert!(s.contains(3) && !s.contains(32));
        assert_eq!(s.without(3).without(40).iter().count(), 2);
        assert!(VifSet::one(40).is_empty());
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
