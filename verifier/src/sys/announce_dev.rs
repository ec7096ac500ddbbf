//! The device announced routes go through (SPEC.md §10.6): a TUN device that is not
//! persistent, so it lives exactly as long as this process holds its file descriptor. When the
//! verifier dies, even by SIGKILL, the kernel closes the descriptor, removes the device and with
//! it every route through it, and the routing daemon withdraws them: a router whose verifier
//! is gone stops attracting traffic without anyone cleaning up. Nothing reads the device;
//! packets routed to it (a VIP's packets the steering did not take) are dropped at its queue.
//!
//! The third module of this crate with `unsafe`: one `ioctl(TUNSETIFF)` on a descriptor this
//! module opened and owns, with an `ifreq` it initialised and that outlives the call.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// The device's name.
pub const NAME: &str = "mcv-announce";

/// The open TUN device; dropping it removes the device and the routes through it.
#[derive(Debug)]
pub struct AnnounceDevice {
    _tun: File,
    pub ifindex: u32,
}

impl AnnounceDevice {
    /// Creates the device (`NAME`). Fails when another process holds a device of that name
    /// (another verifier in this network namespace).
    pub fn create() -> io::Result<AnnounceDevice> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        // SAFETY: `ifreq` is plain old data, valid zeroed.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(NAME.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: the descriptor is open and ours; TUNSETIFF reads and writes the `ifreq` it is
        // given, which lives on this stack frame for the whole call.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("creating the announce device {NAME} (TUNSETIFF): {e}"),
            ));
        }
        let ifindex = nix::net::if_::if_nametoindex(NAME).map_err(io::Error::from)?;
        Ok(AnnounceDevice { _tun: tun, ifindex })
    }
}
