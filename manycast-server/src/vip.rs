//! VIP mode (SPEC.md §11.7): the member holds the unicast VIP on loopback and answers clients
//! directly (direct server return), with the ARP sysctls that keep it from claiming the VIP on
//! its links; under the reset strategy it destroys the TCP connections of clients whose slice
//! moved away, through sock_diag `SOCK_DESTROY`.
//!
//! [`HostSetup`] changes the host and puts every change back when dropped (SIGTERM, an error,
//! a panic that unwinds), including the forward strategy's overlay, table, sysctls and rule
//! move ([`crate::vip_forward`], [`crate::vip_forwarder`], SPEC.md §11.7.1). [`moved_connections`] is the pure decision; [`SockDiag`] the kernel
//! side, on the maintained `netlink-packet-sock-diag` and `netlink-sys` crates.

use crate::config::{Config, Mode, Overlay, Strategy};
use crate::vip_forward;
use crate::vip_forwarder::Forwarder;
use daemon_kit::command::{self, CommandError};
use igmp_ext::{MemberId, SliceSet};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DESTROY};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The interface that holds the VIP.
pub const LOOPBACK: &str = "lo";

/// A failed host change, as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VipError {
    #[error("{path}: {source}")]
    Sysctl { path: String, source: io::Error },
    /// The kernel refused a change (`ip`, `nft`), or the command could not run.
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("member {member} has no address in vip.forward_overlay {overlay} (hosts 1..={max})")]
    NoOverlayAddress {
        member: MemberId,
        overlay: Overlay,
        max: u64,
    },
    #[error("listing interface addresses: {0}")]
    Interfaces(io::Error),
}

/// The sysctls direct server return needs, as (path, value). The kernel uses the larger of
/// `all` and the interface's value for both, so `all` covers every link.
/// - `arp_ignore = 1`: answer ARP only for addresses of the interface it arrived on. Without
///   it, every member on a shared segment answers "who has VIP" (all of them hold it on `lo`)
///   and the router's neighbour entry for the VIP flips between them.
/// - `arp_announce = 2`: never use the VIP as the sender address of our own ARP requests.
///   Replies leave from the VIP; without it the member asks "who has gateway, tell VIP" and
///   the router learns VIP → this member's MAC.
///
/// `rp_filter` needs no change: a client's packet arrives on the interface the member's
/// route back to the client uses, so strict reverse-path filtering passes (the end-to-end
/// test runs the members with `rp_filter = 1`).
pub const SYSCTLS: [(&str, u32); 2] = [
    ("/proc/sys/net/ipv4/conf/all/arp_ignore", 1),
    ("/proc/sys/net/ipv4/conf/all/arp_announce", 2),
];

/// What VIP mode changed on the host, undone by [`HostSetup::restore`] or on drop.
#[derive(Debug)]
pub struct HostSetup {
    vip: Ipv4Addr,
    /// False when the VIP was on loopback already (the operator's): then it stays.
    added_address: bool,
    /// Sysctls we changed, with the value they had, in the order changed.
    saved: Vec<(PathBuf, String)>,
    /// Forward strategy: the overlay device exists.
    added_device: bool,
    /// Forward strategy: the nftables table exists.
    added_table: bool,
    /// Forward strategy: the `local` rule moved from preference 0 to [`vip_forward::LOCAL_PREF`].
    moved_local_rule: bool,
    /// Forward strategy with the IPv6 VIP: its table exists, and the IPv6 `local` rule moved.
    added_table6: bool,
    moved_local_rule6: bool,
    /// Forward strategy: the routes and rules toward old owners.
    pub forwarder: Option<Forwarder>,
}

/// What the forward strategy needs to set the host up (SPEC.md §11.7.1).
#[derive(Debug, Clone)]
pub struct ForwardHost {
    pub overlay: Overlay,
    pub member: MemberId,
    /// Our direct-path address: the overlay's tunnel end here (peers send to theirs).
    pub local: Ipv4Addr,
    pub vni: u32,
    pub port: u16,
    /// `ip saddr & unit_mask` is the source's allocation unit (low-order slicing).
    pub unit_mask: u32,
    /// The IPv6 VIP, forwarded over the same overlay (SPEC.md §11.7.2), with the slicing's
    /// bits (its units are the /56 site slicing's) and the service interface (router
    /// advertisements keep being taken there once IPv6 forwarding is on).
    pub vip6: Option<(std::net::Ipv6Addr, u8, String)>,
}

impl ForwardHost {
    /// What VIP forward needs on this host, or `None` when the configuration is not VIP mode
    /// with the forward strategy. The overlay runs between the members' direct-path addresses.
    pub fn new(
        config: &Config,
        member: MemberId,
        direct_path: Option<std::net::SocketAddr>,
    ) -> Option<ForwardHost> {
        // The overlay runs between IPv4 paths (the configuration refuses an IPv6 one here).
        let direct_path = match direct_path {
            Some(std::net::SocketAddr::V4(p)) => Some(p),
            _ => None,
        };
        let vip = config.vip.address.filter(|_| config.mode == Mode::Vip);
        match (
            vip,
            config.strategy,
            config.vip.forward_overlay,
            direct_path,
        ) {
            (Some(_), Strategy::Forward, Some(overlay), Some(path)) => Some(ForwardHost {
                overlay,
                member,
                local: *path.ip(),
                vni: config.vip.forward_vni,
                port: config.vip.forward_port,
                unit_mask: config.control_config().slicing.unit(0).mask(),
                vip6: config
                    .vip
                    .address6
                    .map(|v| (v, config.control.slice_bits, config.interface.clone())),
            }),
            _ => None,
        }
    }
}

/// Sysctls the forward strategy sets to exactly these values (saved and put back), after its
/// nftables table exists: `nf_conntrack_tcp_loose` appears only once conntrack runs in this
/// namespace.
/// - `nf_conntrack_tcp_loose = 0`: a mid-stream segment of a connection this host never saw is
///   `ct state invalid` instead of being picked up as established; that is what gets marked.
/// - `ip_forward = 1`: the marked segments leave again, over the overlay.
pub const FORWARD_SYSCTLS: [(&str, &str); 2] = [
    ("/proc/sys/net/netfilter/nf_conntrack_tcp_loose", "0"),
    ("/proc/sys/net/ipv4/ip_forward", "1"),
];

pub(crate) fn read_sysctl(path: &str) -> Result<String, VipError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| VipError::Sysctl {
            path: path.to_owned(),
            source,
        })
}

pub(crate) fn write_sysctl(path: &str, value: &str) -> Result<(), VipError> {
    std::fs::write(path, value).map_err(|source| VipError::Sysctl {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn ip(args: &[&str]) -> Result<(), VipError> {
    Ok(command::run("ip", args, None)?)
}

/// Applies an nftables script as one transaction (`nft -f -`).
fn nft(script: &str) -> Result<(), VipError> {
    Ok(command::run("nft", &["-f", "-"], Some(script))?)
}

/// Whether `addr` is one of `ifname`'s IPv4 addresses.
pub fn has_address(ifname: &str, addr: Ipv4Addr) -> io::Result<bool> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addrs
        .filter(|a| a.interface_name == ifname)
        .any(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())) == Some(addr)))
}

/// Whether the IPv6 `local` routing rule sits at preference `pref`.
fn local_rule_at6(pref: u32) -> Result<bool, VipError> {
    let pref = pref.to_string();
    let out = command::output("ip", &["-6", "rule", "show", "pref", pref.as_str()])?;
    Ok(out.lines().any(|l| l.trim_end().ends_with("lookup local")))
}

/// Whether the `local` routing rule sits at preference `pref` (`ip -4 rule show pref N`).
fn local_rule_at(pref: u32) -> Result<bool, VipError> {
    let pref = pref.to_string();
    let out = command::output("ip", &["-4", "rule", "show", "pref", pref.as_str()])?;
    Ok(out.lines().any(|l| l.trim_end().ends_with("lookup local")))
}

impl HostSetup {
    /// Raises the ARP sysctls that are below what direct server return needs and adds the VIP
    /// /32 on loopback. On an error, what was already changed is put back.
    /// With `forward`, also the overlay, the forwarding table, the sysctls and the rule move
    /// of the forward strategy ([`HostSetup::apply_forward`]).
    pub fn apply(vip: Ipv4Addr, forward: Option<&ForwardHost>) -> Result<HostSetup, VipError> {
        let mut setup = HostSetup {
            vip,
            added_address: false,
            saved: Vec::new(),
            added_device: false,
            added_table: false,
            moved_local_rule: false,
            added_table6: false,
            moved_local_rule6: false,
            forwarder: None,
        };
        for (path, want) in SYSCTLS {
            let old = read_sysctl(path)?;
            // A stricter value the operator set stays.
            if old.parse::<u32>().is_ok_and(|v| v >= want) {
                continue;
            }
            write_sysctl(path, &want.to_string())?;
            info!(sysctl = path, old = %old, new = want, "VIP mode");
            setup.saved.push((PathBuf::from(path), old));
        }
        let present = has_address(LOOPBACK, vip).map_err(VipError::Interfaces)?;
        if !present {
            ip(&["-4", "addr", "add", &format!("{vip}/32"), "dev", LOOPBACK])?;
            setup.added_address = true;
            info!(%vip, "VIP added on {LOOPBACK}");
        }
        if let Some(f) = forward {
            // On an error `setup` drops and puts back what was done.
            setup.apply_forward(f)?;
        }
        Ok(setup)
    }

    /// The forward strategy's host changes (the recipe of SPEC.md §11.7.1): a unicast VXLAN
    /// device without MAC learning over the service link with this member's overlay address
    /// and fixed MAC, VXLAN accepted only from the members (the table's guard), loose reverse-path
    /// filtering on it (segments of clients whose route points elsewhere arrive on it), the
    /// marking table, the sysctls, and the `local` rule moved behind the forwarding rules.
    fn apply_forward(&mut self, f: &ForwardHost) -> Result<(), VipError> {
        let addr = f
            .overlay
            .host(f.member.0)
            .ok_or(VipError::NoOverlayAddress {
                member: f.member,
                overlay: f.overlay,
                max: f.overlay.max_member(),
            })?;
        // The table (with the overlay guard, no peers yet: VXLAN from nobody) before the device,
        // so that there is no moment when the device takes frames from anyone.
        nft(&vip_forward::ruleset(self.vip, f.unit_mask, f.port))?;
        self.added_table = true;
        if let Some((vip6, bits, _)) = &f.vip6 {
            nft(&vip_forward::ruleset6(*vip6, *bits))?;
            self.added_table6 = true;
        }
        // A device of that name left by a killed daemon is ours; a fresh one starts clean.
        let _ = ip(&["link", "del", vip_forward::DEVICE]);
        let (vni, port, local) = (f.vni.to_string(), f.port.to_string(), f.local.to_string());
        // No learning: peers' MACs are fixed and entered statically (`Forwarder::set_peer`),
        // so a frame on the overlay can teach the device nothing.
        let mac = vip_forward::overlay_mac(f.member);
        ip(&[
            "link",
            "add",
            vip_forward::DEVICE,
            "address",
            &mac,
            "type",
            "vxlan",
            "id",
            &vni,
            "local",
            &local,
            "dstport",
            &port,
            "nolearning",
        ])?;
        self.added_device = true;
        let cidr = format!("{addr}/{}", f.overlay.prefix_len());
        ip(&["-4", "addr", "add", &cidr, "dev", vip_forward::DEVICE])?;
        if f.vip6.is_some() {
            let cidr6 = format!("{}/64", vip_forward::overlay6(f.member));
            ip(&[
                "-6",
                "addr",
                "add",
                &cidr6,
                "dev",
                vip_forward::DEVICE,
                "nodad",
            ])?;
        }
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/rp_filter", vip_forward::DEVICE),
            "2",
        )?;
        ip(&["link", "set", vip_forward::DEVICE, "up"])?;
        info!(device = vip_forward::DEVICE, %addr, vni = f.vni, local = %f.local, "VIP forward: overlay up");
        for (path, want) in FORWARD_SYSCTLS {
            let old = read_sysctl(path)?;
            if old != want {
                write_sysctl(path, want)?;
                info!(sysctl = path, old = %old, new = want, "VIP forward");
                self.saved.push((PathBuf::from(path), old));
            }
        }
        if let Some((_, _, interface)) = &f.vip6 {
            self.apply_forward6(interface)?;
        }
        if local_rule_at(0)? {
            let local = vip_forward::LOCAL_PREF.to_string();
            ip(&["-4", "rule", "add", "pref", &local, "lookup", "local"])?;
            self.moved_local_rule = true;
            ip(&["-4", "rule", "del", "pref", "0", "lookup", "local"])?;
            info!(
                pref = vip_forward::LOCAL_PREF,
                "VIP forward: local rule moved"
            );
        }
        let forwarder = Forwarder::new(self.vip, f.overlay, f.member);
        self.forwarder = Some(match &f.vip6 {
            Some((vip6, bits, _)) => forwarder.with_vip6(*vip6, *bits),
            None => forwarder,
        });
        Ok(())
    }

    /// The IPv6 VIP's part of the forward strategy (SPEC.md §11.7.2): IPv6 forwarding on (the
    /// marked segments leave again; the kernel forwards IPv6 only with `all.forwarding`),
    /// router advertisements still taken on `interface` (forwarding turns `accept_ra = 1`
    /// off), and the IPv6 `local` rule moved behind the forwarding rules.
    fn apply_forward6(&mut self, interface: &str) -> Result<(), VipError> {
        let forwarding = "/proc/sys/net/ipv6/conf/all/forwarding";
        let accept_ra = format!("/proc/sys/net/ipv6/conf/{interface}/accept_ra");
        for (path, from, want) in [
            (accept_ra.as_str(), Some("1"), "2"),
            (forwarding, None, "1"),
        ] {
            let old = read_sysctl(path)?;
            if old != want && from.is_none_or(|f| old == f) {
                write_sysctl(path, want)?;
                info!(sysctl = path, old = %old, new = want, "VIP forward (IPv6)");
                self.saved.push((PathBuf::from(path), old));
            }
        }
        if local_rule_at6(0)? {
            let local = vip_forward::LOCAL_PREF.to_string();
            ip(&["-6", "rule", "add", "pref", &local, "lookup", "local"])?;
            self.moved_local_rule6 = true;
            ip(&["-6", "rule", "del", "pref", "0", "lookup", "local"])?;
        }
        Ok(())
    }

    /// Puts back every change; safe to call twice. Errors are logged and the rest still undone.
    pub fn restore(&mut self) {
        if let Some(f) = &mut self.forwarder {
            f.restore();
        }
        self.forwarder = None;
        if self.moved_local_rule {
            // Added back before the moved one goes, so that there is always a local rule.
            let local = vip_forward::LOCAL_PREF.to_string();
            let back = ip(&["-4", "rule", "add", "pref", "0", "lookup", "local"])
                .and_then(|()| ip(&["-4", "rule", "del", "pref", &local, "lookup", "local"]));
            match back {
                Ok(()) => info!("VIP forward: local rule back at preference 0"),
                Err(e) => warn!("{e}"),
            }
            self.moved_local_rule = false;
        }
        if self.moved_local_rule6 {
            let local = vip_forward::LOCAL_PREF.to_string();
            let back = ip(&["-6", "rule", "add", "pref", "0", "lookup", "local"])
                .and_then(|()| ip(&["-6", "rule", "del", "pref", &local, "lookup", "local"]));
            if let Err(e) = back {
                warn!("{e}");
            }
            self.moved_local_rule6 = false;
        }
        if self.added_table6 {
            if let Err(e) = nft(&format!("delete table ip6 {}\n", vip_forward::NFT_TABLE6)) {
                warn!("{e}");
            }
            self.added_table6 = false;
        }
        if self.added_table {
            let delete = format!("delete table ip {}\n", vip_forward::NFT_TABLE);
            if let Err(e) = nft(&delete) {
                warn!("{e}");
            }
            self.added_table = false;
        }
        if self.added_device {
            match ip(&["link", "del", vip_forward::DEVICE]) {
                Ok(()) => info!(device = vip_forward::DEVICE, "VIP forward: overlay removed"),
                Err(e) => warn!("{e}"),
            }
            self.added_device = false;
        }
        if self.added_address {
            match ip(&[
                "-4",
                "addr",
                "del",
                &format!("{}/32", self.vip),
                "dev",
                LOOPBACK,
            ]) {
                Ok(()) => info!(vip = %self.vip, "VIP removed from {LOOPBACK}"),
                Err(e) => warn!("{e}"),
            }
            self.added_address = false;
        }
        for (path, old) in self.saved.drain(..).rev() {
            let p = path.to_string_lossy();
            match write_sysctl(&p, &old) {
                Ok(()) => info!(sysctl = %p, restored = %old, "VIP mode"),
                Err(e) => warn!("{e}"),
            }
        }
    }
}

impl Drop for HostSetup {
    fn drop(&mut self) {
        self.restore();
    }
}

/// A TCP connection to the VIP as sock_diag reports it; `cookie` names the socket exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConn {
    pub local: SocketAddrV4,
    pub peer: SocketAddrV4,
    pub cookie: [u8; 8],
}

/// The connections whose client is outside `slices`: the router no longer sends them here.
pub fn moved_connections<'a>(
    conns: &'a [TcpConn],
    slices: &'a SliceSet,
) -> impl Iterator<Item = &'a TcpConn> + 'a {
    conns
        .iter()
        .filter(move |c| !slices.contains_addr(*c.peer.ip()))
}

/// Connection states worth destroying: everything with a peer, but not LISTEN (the
/// application's own socket), TIME_WAIT or CLOSE (nothing left to end).
fn connected_states() -> StateFlags {
    StateFlags::ESTABLISHED
        | StateFlags::SYN_RECV
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// A NETLINK_SOCK_DIAG socket in the daemon's network namespace.
#[derive(Debug)]
pub struct SockDiag {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl SockDiag {
    pub fn new() -> io::Result<SockDiag> {
        let mut socket = netlink_sys::Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(SockDiag { socket, seq: 0 })
    }

    /// Sends one request about `family`'s (AF_INET, AF_INET6) TCP sockets in connected states.
    pub(crate) fn send(
        &mut self,
        family: u8,
        message_type: u16,
        flags: u16,
        socket_id: SocketId,
    ) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: connected_states(),
                socket_id,
            })
            .into(),
        );
        packet.finalize();
        // The crate builds the request (inet_diag_req_v2) and names SOCK_DESTROY, but its
        // message type is always SOCK_DIAG_BY_FAMILY; a destroy is the same body under type 21.
        packet.header.message_type = message_type;
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Reads answers to request `seq` and hands each inner message to `f`, until the dump's
    /// DONE or an ACK/NACK. A NACK becomes the error.
    pub(crate) fn receive(
        &mut self,
        seq: u32,
        mut f: impl FnMut(SockDiagMessage),
    ) -> io::Result<()> {
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            let mut rest: &[u8] = &buf;
            while !rest.is_empty() {
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(rest)
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
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => f(m),
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    // Noop, Overrun (the payload type is non-exhaustive): nothing for us.
                    _ => {}
                }
            }
        }
    }

    /// The TCP connections whose local address is `vip`: AF_INET sockets, and the AF_INET6
    /// sockets with IPv4-mapped addresses that a listener on `[::]` with `IPV6_V6ONLY` off
    /// accepts IPv4 connections into (Python's `http.server` by default; the AF_INET dump
    /// does not list them). Both are named by their IPv4 addresses: the kernel finds either
    /// kind by them when one is destroyed.
    pub fn connections(&mut self, vip: Ipv4Addr) -> io::Result<Vec<TcpConn>> {
        let mut out = Vec::new();
        for (family, any) in [
            (AF_INET, SocketId::new_v4()),
            (AF_INET6, SocketId::new_v6()),
        ] {
            let dump = netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY;
            let seq = self.send(family, dump, NLM_F_REQUEST | NLM_F_DUMP, any)?;
            self.receive(seq, |m| {
                let SockDiagMessage::InetResponse(r) = m else {
                    return;
                };
                let id = &r.header.socket_id;
                let v4 = |a: IpAddr| match a {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(a) => a.to_ipv4_mapped(),
                };
                if let (Some(local), Some(peer)) =
                    (v4(id.source_address), v4(id.destination_address))
                {
                    if local == vip {
                        out.push(TcpConn {
                            local: SocketAddrV4::new(local, id.source_port),
                            peer: SocketAddrV4::new(peer, id.destination_port),
                            cookie: id.cookie,
                        });
                    }
                }
            })?;
        }
        Ok(out)
    }

    /// Destroys one connection: the kernel sends the client a RST and the application's
    /// socket fails with ECONNABORTED (tcp_abort).
    pub fn destroy(&mut self, conn: &TcpConn) -> io::Result<()> {
        let id = SocketId {
            source_port: conn.local.port(),
            destination_port: conn.peer.port(),
            source_address: IpAddr::V4(*conn.local.ip()),
            destination_address: IpAddr::V4(*conn.peer.ip()),
            interface_id: 0,
            cookie: conn.cookie,
        };
        let seq = self.send(AF_INET, SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, id)?;
        self.receive(seq, |_| {})
    }
}

/// What one reset pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetOutcome {
    pub destroyed: u64,
    /// Gone before we got to them (closed meanwhile) or refused by the kernel.
    pub failed: u64,
}

/// Destroys every connection to `vip` whose client is outside `slices`.
pub fn reset_moved(vip: Ipv4Addr, slices: &SliceSet) -> io::Result<ResetOutcome> {
    let mut diag = SockDiag::new()?;
    let conns = diag.connections(vip)?;
    let mut outcome = ResetOutcome::default();
    for c in moved_connections(&conns, slices) {
        match diag.destroy(c) {
            Ok(()) => {
                outcome.destroyed += 1;
                info!(client = %c.peer, local = %c.local, "reset: connection destroyed");
            }
            Err(e) => {
                outcome.failed += 1;
                warn!(client = %c.peer, "reset: SOCK_DESTROY: {e}");
            }
        }
    }
    Ok(outcome)
}

/// One reset pass: destroys the connections whose client is outside the member's slices
/// ([`reset_moved`] for the IPv4 VIP, `vip6::reset_moved6` for the IPv6 one, or both).
pub type ResetPass = dyn Fn(&SliceSet) -> io::Result<ResetOutcome> + Send + Sync;

/// Reset passes run by a task: each commit hands the member's new slices over; the task waits
/// `delay` (commits meanwhile coalesce: it uses the latest slices), then runs the pass.
#[derive(Debug)]
pub struct ResetTask {
    slices: tokio::sync::watch::Sender<Option<SliceSet>>,
    destroyed: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ResetTask {
    pub fn spawn(pass: Arc<ResetPass>, delay: Duration) -> ResetTask {
        let (tx, mut rx) = tokio::sync::watch::channel(None::<SliceSet>);
        let destroyed = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (d, f) = (destroyed.clone(), failed.clone());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                tokio::time::sleep(delay).await;
                let Some(slices) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let pass = pass.clone();
                match tokio::task::spawn_blocking(move || pass(&slices)).await {
                    Ok(Ok(o)) => {
                        d.fetch_add(o.destroyed, Ordering::Relaxed);
                        f.fetch_add(o.failed, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => warn!("reset: sock_diag: {e}"),
                    Err(e) => warn!("reset task: {e}"),
                }
            }
        });
        ResetTask {
            slices: tx,
            destroyed,
            failed,
        }
    }

    /// The member's slices after a commit.
    pub fn set_slices(&self, slices: SliceSet) {
        self.slices.send_replace(Some(slices));
    }

    /// (connections destroyed, destroys that failed) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.destroyed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::Slice;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn conn(peer: [u8; 4]) -> TcpConn {
        TcpConn {
            local: SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 1), 80),
            peer: SocketAddrV4::new(Ipv4Addr::from(peer), 40000),
            cookie: [0; 8],
        }
    }

    #[test]
    fn only_clients_outside_the_slices_move() {
        let conns = vec![
            conn([10, 1, 0, 2]),
            conn([10, 1, 0, 3]),
            conn([10, 1, 0, 4]),
        ];
        // Even low bit stays.
        let slices = SliceSet::from(Slice::new(0, 1));
        let moved: Vec<_> = moved_connections(&conns, &slices).collect();
        assert_eq!(moved, vec![&conns[1]]);
        assert_eq!(moved_connections(&conns, &SliceSet::full()).count(), 0);
        assert_eq!(
            moved_connections(&conns, &SliceSet::default()).count(),
            conns.len()
        );
    }

    /// An application listening on all addresses of both families (`[::]` with
    /// `IPV6_V6ONLY` off: Python's `http.server` by default, nginx with `ipv6only=off`) holds
    /// its IPv4 connections in AF_INET6 sockets, with IPv4-mapped addresses. The IPv4 VIP's
    /// connections must be found and destroyed there too.
    #[test]
    fn sock_diag_finds_ipv4_connections_of_a_dual_stack_listener() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "SOCK_DESTROY needs CAP_NET_ADMIN: run the tests as root"
        );
        let any = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        any.set_only_v6(false).expect("dual stack");
        any.bind(&std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)).into())
            .expect("bind [::]");
        any.listen(8).expect("listen");
        let listener: TcpListener = any.into();
        let port = listener.local_addr().expect("addr").port();
        let lo = Ipv4Addr::LOCALHOST;
        let mut client = TcpStream::connect((lo, port)).expect("connect");
        let (_server_side, _) = listener.accept().expect("accept");
        let client_port = client.local_addr().expect("addr").port();
        let mut diag = SockDiag::new().expect("sock_diag");
        let conns = diag.connections(lo).expect("dump");
        let accepted = conns
            .iter()
            .find(|c| c.peer.port() == client_port && c.local.port() == port)
            .unwrap_or_else(|| panic!("accepted IPv4-mapped socket not listed: {conns:?}"))
            .clone();
        assert_eq!(*accepted.peer.ip(), lo);
        diag.destroy(&accepted).expect("destroy");
        let mut b = [0u8; 1];
        let r = client.read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "client read after destroy: {r:?}"
        );
    }

    /// The real kernel (needs root for SOCK_DESTROY): a connection over loopback is listed by
    /// the dump and destroyed; the client sees a reset.
    #[test]
    fn sock_diag_lists_and_destroys_a_real_connection() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "SOCK_DESTROY needs CAP_NET_ADMIN: run the tests as root"
        );
        let lo = Ipv4Addr::LOCALHOST;
        let listener = TcpListener::bind((lo, 0)).expect("listen");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (_server_side, _) = listener.accept().expect("accept");
        let client_port = client.local_addr().expect("addr").port();
        let mut diag = SockDiag::new().expect("sock_diag");
        let conns = diag.connections(lo).expect("dump");
        // Both ends have local address 127.0.0.1; the accepted one has the client as peer.
        let accepted = conns
            .iter()
            .find(|c| c.peer.port() == client_port)
            .unwrap_or_else(|| panic!("accepted socket not listed: {conns:?}"))
            .clone();
        diag.destroy(&accepted).expect("destroy");
        let mut b = [0u8; 1];
        let r = client.read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "client read after destroy: {r:?}"
        );
        // Gone now: a second destroy names a socket that no longer exists.
        assert!(diag.destroy(&accepted).is_err());
        assert!(!diag
            .connections(lo)
            .expect("dump")
            .iter()
            .any(|c| c.peer.port() == client_port));
    }
}
