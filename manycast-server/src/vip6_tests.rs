//! Tests of `vip6.rs`: which IPv6 connections a reset pass destroys, and the kernel side.

use super::*;
use igmp_ext::Slice;
use std::io::Read;
use std::net::{TcpListener, TcpStream};

const SLICING: Slicing = Slicing::LowOrder { bits: 8 };

fn vip6() -> Ipv6Addr {
    "2001:db8:f::1".parse().unwrap()
}

/// A client in the /56 whose low byte is `unit` (the site unit), with interface id `host`,
/// in /64 `subnet` of that /56.
fn client(unit: u8, subnet: u8, host: u16) -> Ipv6Addr {
    let group3 = (u16::from(unit) << 8) | u16::from(subnet);
    Ipv6Addr::new(0x2001, 0xdb8, 1, group3, 0, 0, 0, host)
}

fn conn(peer: Ipv6Addr) -> TcpConn6 {
    TcpConn6 {
        local: SocketAddrV6::new(vip6(), 80, 0, 0),
        peer: SocketAddrV6::new(peer, 40000, 0, 0),
        interface: 0,
        cookie: [0; 8],
    }
}

/// Units {1, 3} (the IPv4 addresses ending in 1 or 3) are ours: an IPv6 client stays when its
/// /56's low byte is 1 or 3, whichever /64 of it and interface id it uses (its temporary
/// addresses change those), and moves otherwise.
#[test]
fn an_ipv6_connection_moves_with_its_sites_unit() {
    let mine: SliceSet = [Slice::new(1, 0xff), Slice::new(3, 0xff)]
        .into_iter()
        .collect();
    let slices6 = slices6(SLICING, &mine);
    let conns = vec![
        conn(client(1, 0, 2)),
        conn(client(1, 0xff, 0x1234)),
        conn(client(2, 0, 2)),
        conn(client(3, 7, 9)),
        conn(client(4, 1, 2)),
        // Unit 1 of a /56 elsewhere: the unit is the /56's low byte, whatever is above it.
        conn(Ipv6Addr::new(
            0x2a00, 0x1450, 0x4001, 0x0100, 0, 0, 0, 0x200e,
        )),
        // The low byte of the interface id is 1, of the /56 is 2: unit 2.
        conn(client(2, 1, 1)),
    ];
    let moved: Vec<Ipv6Addr> = moved_connections6(&conns, &slices6)
        .map(|c| *c.peer.ip())
        .collect();
    assert_eq!(
        moved,
        vec![client(2, 0, 2), client(4, 1, 2), client(2, 1, 1)]
    );
}

#[test]
fn owning_everything_moves_nothing_and_owning_nothing_moves_everything() {
    let conns: Vec<TcpConn6> = (0..=255u8).map(|u| conn(client(u, u, 2))).collect();
    let all = slices6(SLICING, &SliceSet::full());
    assert_eq!(moved_connections6(&conns, &all).count(), 0);
    let none = slices6(SLICING, &SliceSet::default());
    assert_eq!(moved_connections6(&conns, &none).count(), conns.len());
    // Half the units, as a single slice (the even ones): half the connections move.
    let even = slices6(SLICING, &SliceSet::from(Slice::new(0, 1)));
    let moved: Vec<u8> = moved_connections6(&conns, &even)
        .map(|c| (c.peer.ip().segments()[3] >> 8) as u8)
        .collect();
    assert_eq!(
        moved,
        (0..=255u8).filter(|u| u % 2 == 1).collect::<Vec<_>>()
    );
}

/// Fewer slice bits: unit i of 4 bits is the /56s whose low nibble is i.
#[test]
fn the_units_follow_the_slicing_width() {
    let slicing = Slicing::LowOrder { bits: 4 };
    let mine = SliceSet::from(slicing.unit(5));
    let slices6 = slices6(slicing, &mine);
    let conns = vec![
        conn(client(0x05, 0, 2)),
        conn(client(0xf5, 0, 2)),
        conn(client(0x06, 0, 2)),
    ];
    let moved: Vec<Ipv6Addr> = moved_connections6(&conns, &slices6)
        .map(|c| *c.peer.ip())
        .collect();
    assert_eq!(moved, vec![client(0x06, 0, 2)]);
}

/// The real kernel (needs root for SOCK_DESTROY): an IPv6 connection over loopback is listed
/// by the AF_INET6 dump and destroyed; the client sees a reset.
#[test]
fn sock_diag_lists_and_destroys_a_real_ipv6_connection() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "SOCK_DESTROY needs CAP_NET_ADMIN: run the tests as root"
    );
    let lo = Ipv6Addr::LOCALHOST;
    let listener = TcpListener::bind((lo, 0)).expect("listen on ::1 (IPv6 on lo?)");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (_server_side, _) = listener.accept().expect("accept");
    let client_port = client.local_addr().expect("addr").port();
    let mut diag = SockDiag::new().expect("sock_diag");
    let conns = diag.connections6(lo).expect("dump");
    let accepted = conns
        .iter()
        .find(|c| c.peer.port() == client_port)
        .unwrap_or_else(|| panic!("accepted socket not listed: {conns:?}"))
        .clone();
    // The IPv4 dump does not list it: the reset of each VIP looks at its own family.
    let v4 = diag
        .connections(std::net::Ipv4Addr::LOCALHOST)
        .expect("dump");
    assert!(!v4.iter().any(|c| c.peer.port() == client_port), "{v4:?}");
    diag.destroy6(&accepted).expect("destroy");
    let mut b = [0u8; 1];
    let r = client.read(&mut b);
    assert!(
        matches!(&r, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "client read after destroy: {r:?}"
    );
    assert!(diag.destroy6(&accepted).is_err());
    assert!(!diag
        .connections6(lo)
        .expect("dump")
        .iter()
        .any(|c| c.peer.port() == client_port));
}
