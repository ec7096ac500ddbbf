//! An IPv6 control group (SPEC.md §9.1, issue 15 item 5): its cluster id, the certificate check
//! against the IPv6 groups of version 2 certificates, and IPv6 direct paths (`DirectPath6`),
//! whose link-local form is reached over the link the announcement came in on.

use control_channel::wire::{DirectPath6, Header, Hello, Message};
use control_channel::{cluster_id6, Clock, Config, Destination, DropReason, Endpoint, Event};
use control_channel::{Identity, Instant};
use igmp_ext::cert::Ipv6Grant;
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::{CertificateBody, KeyId, MemberCertificate, MemberId, SliceSet};
use igmp_ext::{SliceSet6, Timestamp};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x4d43, 1);

fn clock() -> Clock {
    Clock::new(Instant(0), NOW)
}

/// Member `i`'s certificate listing `groups` (IPv4) and `groups6`.
fn certificate(
    f: &Fixture,
    i: usize,
    groups: Vec<Ipv4Addr>,
    groups6: Vec<Ipv6Addr>,
) -> MemberCertificate {
    let m = &f.members[i];
    let body = CertificateBody {
        member_id: m.id,
        member_key: m.key.verifying_key(),
        issuer: KeyId::of(&f.group_key.verifying_key()),
        not_before: Timestamp::from_secs(1_767_225_600),
        not_after: Timestamp::from_secs(1_830_297_600),
        groups,
        slices: SliceSet::full(),
    };
    let grant = Ipv6Grant {
        groups: groups6,
        slices: SliceSet6::full(),
    };
    body.issue_with_ipv6(&grant, &f.group_key).expect("issue")
}

fn endpoint(f: &Fixture, config: Config) -> Endpoint {
    Endpoint::new(
        config,
        Identity {
            key: f.members[0].key.clone(),
            certificate: certificate(f, 0, vec![], vec![GROUP6]),
        },
        f.group_key.verifying_key(),
        clock(),
    )
}

fn header(cluster: Ipv4Addr, sender: MemberId, seq: u64) -> Header {
    Header {
        cluster: u32::from(cluster),
        sender,
        epoch: 0,
        sequence: seq,
        timestamp: NOW,
    }
}

fn hello(f: &Fixture, i: usize, cert: &MemberCertificate, cluster: Ipv4Addr) -> Vec<u8> {
    Message::Hello(Hello {
        certificate: cert.as_bytes().to_vec(),
        weight: 1,
        reply_wanted: false,
    })
    .encode_signed(&header(cluster, f.members[i].id, 1), &f.members[i].key)
    .expect("fits")
}

fn link_local(scope: u32) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        "fe80::2".parse().expect("address"),
        4790,
        0,
        scope,
    ))
}

#[test]
fn the_cluster_id_of_an_ipv6_group_is_not_its_low_32_bits() {
    let id = cluster_id6(GROUP6);
    assert_ne!(u32::from(id), 0x4d43_0001);
    assert_eq!(id, cluster_id6(GROUP6), "the same group, the same id");
    let other = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x4d43, 2);
    assert_ne!(id, cluster_id6(other));
    assert_eq!(Config::new_ipv6(GROUP6).cluster, id);
}

/// The certificate must list the IPv6 group among its IPv6 groups (version 2): listing the
/// cluster id as an IPv4 group, or only the IPv4 groups, is `bad-certificate` as for an IPv4
/// group missing from a certificate; a header with another cluster id is `wrong-cluster`.
#[test]
fn an_ipv6_group_admits_members_whose_certificate_lists_it() {
    let f = Fixture::new(4);
    let id = cluster_id6(GROUP6);
    let mut e = endpoint(&f, Config::new_ipv6(GROUP6));
    let ipv4_only = certificate(&f, 1, vec![f.group, id], vec![]);
    assert_eq!(
        e.handle_datagram(clock(), link_local(7), &hello(&f, 1, &ipv4_only, id)),
        Err(DropReason::BadCertificate)
    );
    let other6 = certificate(
        &f,
        1,
        vec![],
        vec![Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 9)],
    );
    assert_eq!(
        e.handle_datagram(clock(), link_local(7), &hello(&f, 1, &other6, id)),
        Err(DropReason::BadCertificate)
    );
    let listed = certificate(&f, 1, vec![], vec![GROUP6]);
    assert_eq!(
        e.handle_datagram(
            clock(),
            link_local(7),
            &hello(&f, 2, &certificate(&f, 2, vec![], vec![GROUP6]), f.group)
        ),
        Err(DropReason::WrongCluster)
    );
    assert_eq!(e.counters().accepted, 0);
    assert_eq!(
        e.handle_datagram(clock(), link_local(7), &hello(&f, 1, &listed, id)),
        Ok(())
    );
    // An IPv4 group still asks the IPv4 groups: the IPv6-only certificate is refused there.
    let mut e4 = endpoint(&f, Config::new(f.group));
    assert_eq!(
        e4.handle_datagram(
            clock(),
            "10.0.0.2:4790".parse().expect("address"),
            &hello(&f, 1, &listed, f.group)
        ),
        Err(DropReason::BadCertificate)
    );
}

/// Member 1 met over `from`, then its `DirectPath6` for `path` (also from `from`).
fn met_with_path(e: &mut Endpoint, f: &Fixture, from: SocketAddr, path: Ipv6Addr) -> Vec<Event> {
    let cluster = cluster_id6(GROUP6);
    let cert = certificate(f, 1, vec![f.group], vec![GROUP6]);
    e.handle_datagram(clock(), from, &hello(f, 1, &cert, cluster))
        .expect("hello");
    let announce = Message::DirectPath6(DirectPath6 {
        addr: path.octets(),
        port: 4791,
    })
    .encode_signed(&header(cluster, f.members[1].id, 2), &f.members[1].key)
    .expect("fits");
    e.handle_datagram(clock(), from, &announce)
        .expect("direct path");
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// Where the endpoint sends member 1's next unicast (a forwarded datagram).
fn destination_of_member_1(e: &mut Endpoint, f: &Fixture) -> Destination {
    while e.poll_transmit().is_some() {}
    e.forward(
        clock(),
        f.members[1].id,
        "10.9.0.1:5000".parse().expect("address"),
        vec![1],
    )
    .expect("forward");
    e.poll_transmit().expect("a datagram").destination
}

#[test]
fn a_link_local_direct_path_is_reached_over_the_link_it_was_announced_on() {
    let f = Fixture::new(2);
    let mut e = endpoint(&f, Config::new_ipv6(GROUP6));
    let path: Ipv6Addr = "fe80::1:2".parse().expect("address");
    let events = met_with_path(&mut e, &f, link_local(7), path);
    let want = SocketAddr::V6(SocketAddrV6::new(path, 4791, 0, 7));
    assert!(
        events.contains(&Event::DirectPath {
            member: f.members[1].id,
            addr: want
        }),
        "{events:?}"
    );
    assert_eq!(
        destination_of_member_1(&mut e, &f),
        Destination::Unicast(want)
    );
    // A global address needs no zone.
    let global: Ipv6Addr = "2001:db8::2".parse().expect("address");
    let mut e = endpoint(&f, Config::new_ipv6(GROUP6));
    met_with_path(&mut e, &f, link_local(7), global);
    let want = SocketAddr::V6(SocketAddrV6::new(global, 4791, 0, 0));
    assert_eq!(
        destination_of_member_1(&mut e, &f),
        Destination::Unicast(want)
    );
}

/// A path the channel's socket cannot reach is ignored, and the member stays reached where it
/// speaks from: a link-local one announced from an IPv4 source (it has no zone), the
/// unspecified address, a multicast and an IPv4-mapped one.
#[test]
fn an_unreachable_direct_path6_is_ignored() {
    let f = Fixture::new(2);
    let cases: [(SocketAddr, &str); 4] = [
        ("10.0.0.2:4790".parse().expect("address"), "fe80::1:2"),
        (link_local(7), "::"),
        (link_local(7), "ff02::1"),
        (link_local(7), "::ffff:10.0.0.9"),
    ];
    for (from, path) in cases {
        let mut e = endpoint(&f, Config::new_ipv6(GROUP6));
        let events = met_with_path(&mut e, &f, from, path.parse().expect("address"));
        assert!(
            !events
                .iter()
                .any(|ev| matches!(ev, Event::DirectPath { .. })),
            "{path}: {events:?}"
        );
        assert_eq!(
            destination_of_member_1(&mut e, &f),
            Destination::Unicast(from),
            "{path}"
        );
    }
}

/// An IPv4 channel's socket cannot reach an IPv6 path: the announcement is ignored and the
/// member is reached where it speaks from.
#[test]
fn an_ipv4_group_ignores_ipv6_direct_paths() {
    let f = Fixture::new(2);
    let mut e = endpoint(&f, Config::new(f.group));
    let from: SocketAddr = "10.0.0.2:4790".parse().expect("address");
    let cert = certificate(&f, 1, vec![f.group], vec![GROUP6]);
    e.handle_datagram(clock(), from, &hello(&f, 1, &cert, f.group))
        .expect("hello");
    let announce = Message::DirectPath6(DirectPath6 {
        addr: Ipv6Addr::LOCALHOST.octets(),
        port: 4791,
    })
    .encode_signed(&header(f.group, f.members[1].id, 2), &f.members[1].key)
    .expect("fits");
    e.handle_datagram(clock(), from, &announce)
        .expect("accepted");
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(
        !events
            .iter()
            .any(|ev| matches!(ev, Event::DirectPath { .. })),
        "{events:?}"
    );
    assert_eq!(
        destination_of_member_1(&mut e, &f),
        Destination::Unicast(from)
    );
}

/// A `DirectPath6` body cut short or with a byte too many is `malformed`; decoding never panics
/// on any prefix.
#[test]
fn a_bad_direct_path6_body_is_malformed() {
    let body = postcard::to_stdvec(&DirectPath6 {
        addr: [0xfe; 16],
        port: 4791,
    })
    .expect("encode");
    let t = control_channel::wire::MessageType::DirectPath6;
    for cut in 0..body.len() {
        assert!(Message::decode(t, &body[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = body.clone();
    long.push(0);
    assert_eq!(
        Message::decode(t, &long),
        Err(control_channel::wire::ParseError::Malformed)
    );
    assert!(matches!(
        Message::decode(t, &body),
        Ok(Message::DirectPath6(_))
    ));
}

/// The fuzz seed `direct_path6`: member 2's signed `DirectPath6` on the IPv6 channel, as the
/// fuzz target's endpoint (which met member 2 with sequence 1) takes it: its cluster id picks the
/// target's IPv6 channel, its odd length a link-local source.
#[test]
fn the_fuzz_seed_is_a_direct_path6() {
    let f = Fixture::new(2);
    let bytes = Message::DirectPath6(DirectPath6 {
        addr: "fe80::2".parse::<Ipv6Addr>().expect("address").octets(),
        port: 100,
    })
    .encode_signed(
        &header(cluster_id6(GROUP6), f.members[1].id, 2),
        &f.members[1].key,
    )
    .expect("fits");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/seeds/control_message/direct_path6"
    );
    if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
        std::fs::write(path, &bytes).expect("write the seed");
    }
    assert_eq!(std::fs::read(path).expect("the seed"), bytes);
    assert_eq!(bytes.len() % 2, 1);
}
