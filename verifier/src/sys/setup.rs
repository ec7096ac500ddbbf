//! What the daemon sets up in the kernel before the core starts: the configured interfaces and
//! their subnets, the raw IGMP socket (the MRT socket when the data plane is MFC), VIFs, the
//! query senders, and what an earlier verifier left (VIFs, MFC entries, the nft table).

use super::mroute::{self, MrouteControl};
use super::{nft, procfs};
use crate::core::{Dataplane, FoundEntry, KernelSetup, MrtInitError, NativeDataplane};
use crate::plan::{Interface, VifTable};
use daemon_kit::CommandError;
use igmp_ext::verify::LinkTable;
use igmp_ext::Slice;
use socket2::{InterfaceIndexOrAddress, Protocol, Socket};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use tracing::info;

/// 224.0.0.22, where IGMPv3 reports go: the router must be a member to receive them.
const ALL_V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);
/// 224.0.0.2, where IGMPv2 leaves go.
const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);

/// Why the kernel setup failed; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The configuration names an interface this host does not have.
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("interface {0} has no IPv4 address")]
    NoAddress(String),
    #[error("no free VIF (the kernel has 32)")]
    NoFreeVif,
    #[error(transparent)]
    Mrt(#[from] MrtInitError),
    /// The kernel refused a socket call.
    #[error("{what}: {source}")]
    Os {
        what: String,
        source: std::io::Error,
    },
    /// The kernel refused a call made through `nix`.
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
}

fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
    let what = what.into();
    move |source| SetupError::Os { what, source }
}

/// The sockets the daemon keeps.
#[derive(Debug)]
pub struct Sockets {
    /// Every report, query and (MFC data plane) upcall arrives here: the MRT socket, or a plain
    /// raw IGMP socket on the nft data plane. Non-blocking, with IP_PKTINFO.
    pub igmp: Socket,
    /// Where VIFs and MFC entries are changed (see `mroute`).
    pub control: MrouteControl,
    /// One raw socket per interface (by ifindex), for queries.
    pub senders: HashMap<u32, Socket>,
}

fn mrt_error(e: std::io::Error) -> MrtInitError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => MrtInitError::Busy,
        Some(libc::ENOPROTOOPT) => MrtInitError::Unsupported,
        _ => MrtInitError::Other(e.to_string()),
    }
}

/// (name, ifindex, first IPv4 address) of a configured interface.
type Found = (String, u32, Ipv4Addr);

/// Finds each configured interface's index and first IPv4 address, and every subnet on it.
fn discover(names: &[String]) -> Result<(Vec<Found>, LinkTable), SetupError> {
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs()
        .map_err(|source| SetupError::Sys {
            what: "cannot list interfaces",
            source,
        })?
        .collect();
    let mut out = Vec::new();
    let mut links = LinkTable::new();
    for name in names {
        let ifindex = nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|_| SetupError::NoSuchInterface(name.clone()))?;
        let mut first = None;
        for a in addrs.iter().filter(|a| &a.interface_name == name) {
            let (Some(addr), Some(mask)) = (
                a.address.as_ref().and_then(|s| s.as_sockaddr_in()),
                a.netmask.as_ref().and_then(|s| s.as_sockaddr_in()),
            ) else {
                continue;
            };
            let ip = addr.ip();
            let len = u32::from(mask.ip()).leading_ones() as u8;
            links.add(ifindex, Slice::prefix(ip, len));
            first.get_or_insert(ip);
        }
        let addr = first.ok_or_else(|| SetupError::NoAddress(name.clone()))?;
        out.push((name.clone(), ifindex, addr));
    }
    Ok((out, links))
}

/// The IGMP socket's receive buffer without the MRT data plane (which has its own, larger).
const IGMP_BUFFER: usize = 1 << 20;

/// Opens everything for `names` on the configured data plane. Nothing is changed in the kernel
/// before the data plane is decided, so a refused start leaves no trace.
pub fn setup(names: &[String], dataplane: Dataplane) -> Result<(KernelSetup, Sockets), SetupError> {
    let (found, links) = discover(names)?;
    let mrt = dataplane
        .tries_mroute()
        .then(|| mroute::open_mroute_socket().map_err(mrt_error));
    let (mrt_socket, mrt_result) = match mrt {
        Some(Ok(s)) => (Some(s), Some(Ok(()))),
        Some(Err(e)) => (None, Some(Err(e))),
        None => (None, None),
    };
    let fell_back = matches!(mrt_result, Some(Err(MrtInitError::Unsupported)));
    let chosen = dataplane.decide(mrt_result)?;
    if fell_back {
        info!("this kernel has no multicast routing (CONFIG_IP_MROUTE): native mode steers with the nftables data plane");
    }
    let igmp = match mrt_socket {
        Some(s) => s,
        None => {
            let s = mroute::raw_igmp_socket().map_err(os("raw IGMP socket"))?;
            // Room for bursts of joins (the kernel doubles it for its bookkeeping), past a
            // default rmem_max (208 KiB) if we may. Not more: under a flood the verifier cannot
            // read in full, a queue this size is always full, and every datagram waits its
            // length (8 MiB: legitimate joins waited p99 560 ms instead of 21-32 ms in
            // `make bench B=attack`); what it drops holds claims (SPEC.md §5.4 step 5).
            mroute::force_recv_buffer(&s, IGMP_BUFFER);
            s
        }
    };
    let use_mrt = chosen == NativeDataplane::Mroute;
    let control = MrouteControl::open().map_err(os("raw IGMP socket"))?;

    // VIFs an earlier process left (they are static, see `mroute`) are reused.
    let mut vifs = VifTable::default();
    let mut adopted_vifs = Vec::new();
    for v in use_mrt.then(procfs::read_vifs).unwrap_or_default() {
        if let Some((_, ifindex, _)) = found.iter().find(|(n, _, _)| *n == v.ifname) {
            vifs.insert(*ifindex, v.vif);
            adopted_vifs.push(v.vif);
        }
    }
    let mut interfaces = Vec::new();
    for (name, ifindex, addr) in found {
        let vif = match vifs.vif_of(ifindex) {
            Some(v) => v,
            // The nft data plane has no VIFs; the numbers only index the interfaces.
            None if !use_mrt => {
                let v = interfaces.len() as u16;
                vifs.insert(ifindex, v);
                v
            }
            None => {
                let v = vifs.free_vif().ok_or(SetupError::NoFreeVif)?;
                control
                    .add_vif(v, ifindex)
                    .map_err(os(format!("MRT_ADD_VIF {name}")))?;
                vifs.insert(ifindex, v);
                v
            }
        };
        for (group, text) in [(ALL_V3_ROUTERS, "224.0.0.22"), (ALL_ROUTERS, "224.0.0.2")] {
            igmp.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))
                .map_err(os(format!("join {text} on {name}")))?;
        }
        interfaces.push(Interface {
            name,
            ifindex,
            addr,
            vif,
        });
    }
    nix::sys::socket::setsockopt(&igmp, nix::sys::socket::sockopt::Ipv4PacketInfo, &true).map_err(
        |source| SetupError::Sys {
            what: "IP_PKTINFO",
            source,
        },
    )?;
    // Each read then says how many datagrams the kernel dropped at the full queue: a flood
    // faster than we read loses joins we never see, and the core must know (SPEC.md §5.4).
    nix::sys::socket::setsockopt(&igmp, nix::sys::socket::sockopt::RxqOvfl, &1).map_err(
        |source| SetupError::Sys {
            what: "SO_RXQ_OVFL",
            source,
        },
    )?;
    igmp.set_nonblocking(true).map_err(os("nonblocking"))?;

    let mut senders = HashMap::new();
    for i in &interfaces {
        let s = Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .map_err(os("raw socket"))?;
        s.bind_device(Some(i.name.as_bytes()))
            .map_err(os(format!("bind to {}", i.name)))?;
        let _ = s.set_multicast_loop_v4(false);
        senders.insert(i.ifindex, s);
    }

    let mfc_entries = use_mrt
        .then(procfs::read_cache)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|line| {
            Some(FoundEntry {
                group: line.group,
                source: line.source,
                parent: line.parent?,
                oifs: line.oifs.iter().map(|&(v, _)| v).collect(),
            })
        })
        .collect();
    let netdev_table_left = !use_mrt && nft::netdev_table_exists();
    let mut allmulti = Vec::new();
    for i in interfaces.iter().filter(|_| !use_mrt) {
        match nft::allmulti(&i.name) {
            Some(false) => {
                nft::set_allmulti(&i.name, true)?;
                allmulti.push(i.name.clone());
            }
            // Left on with that table (keep_kernel_state): ours to restore at a clean
            // shutdown, or it would stay on for good after a restart.
            Some(true) if netdev_table_left => allmulti.push(i.name.clone()),
            _ => {}
        }
    }
    let setup = KernelSetup {
        dataplane: chosen,
        interfaces,
        links,
        adopted_vifs,
        mfc_entries,
        netdev_table_left,
        vip_table_left: nft::vip_table_exists(),
        control_table_left: nft::control_table_exists(),
        netdev6_table_left: nft::netdev6_table_exists(),
        vip6_table_left: nft::vip6_table_exists(),
        allmulti,
    };
    Ok((
        setup,
        Sockets {
            igmp,
            control,
            senders,
        },
    ))
}
