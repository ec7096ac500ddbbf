//! The verifier's MLDv2 receive path (issue 15, item 3): a member namespace sends a signed
//! MLDv2 join (built with the igmp-ext builder, hop limit 1, Router Alert) from its link-local
//! address over a veth; the real verifier reads it from its packet socket, verifies it against
//! the IPv6 section of the member's certificate and the key file's IPv6 group keys, and shows
//! the claim in its status. A forged join (another member's signature) is refused by reason
//! and changes nothing; a report from `::` (duplicate address detection) is ignored. The
//! verifier's MLDv2 querier sends general queries on the member's link.

use crate::harness::netns::Netns;
use crate::harness::topo::{wait_for, wall_now, RouterLab};
use igmp_ext::fixtures::{Fixture, GROUP6};
use igmp_ext::mld_join::{build_mld_datagram, build_signed_mld_report};
use igmp_ext::wire::ipv6::Ipv6Packet;
use igmp_ext::wire::mld::{fill_checksum, ALL_MLDV2_ROUTERS};
use igmp_ext::{SliceSet6, Timestamp};
use manycast_verifier::keyfile::FileKeySource;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv6Addr, SocketAddrV6};

/// Sends one complete IPv6 packet as it is out of `ifname` of `ns` (IPPROTO_RAW implies
/// IPV6_HDRINCL on Linux: the kernel adds nothing).
pub(super) fn send_raw_v6(ns: &Netns, ifname: &str, packet: &[u8]) {
    let ifindex = ns.ifindex(ifname);
    let ip = Ipv6Packet::new_checked(packet).expect("an IPv6 packet to send");
    let dst = SocketAddrV6::new(ip.dst_addr(), 0, 0, ifindex);
    let sent = ns.run(|| {
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(255)))
            .expect("raw IPv6 socket");
        s.bind_device(Some(ifname.as_bytes()))
            .expect("SO_BINDTODEVICE");
        s.send_to(packet, &SockAddr::from(dst))
            .expect("send raw IPv6 packet")
    });
    assert_eq!(sent, packet.len(), "short raw send");
}

fn mld_counter(lab: &RouterLab, reason: &str) -> u64 {
    lab.status()
        .counters
        .mld_rejected
        .iter()
        .find(|(r, _)| r == reason)
        .map(|(_, n)| *n)
        .unwrap_or(0)
}

/// Member `i`'s signed MLDv2 join for `units` of the /56 site slicing, stamped `now`.
pub(super) fn join6(
    f: &Fixture,
    i: usize,
    units: &[igmp_ext::Slice6],
    nonce: u64,
    now: Timestamp,
) -> Vec<u8> {
    let claims = f.claims6(units, 1, now, nonce);
    let m = &f.members[i];
    let mld = build_signed_mld_report(&claims, f.addr6(i), &m.cert, &m.key).expect("join fits");
    build_mld_datagram(f.addr6(i), &mld)
}

#[test]
fn the_verifier_accepts_a_signed_mld_join_and_refuses_a_forged_one() {
    let fixture = Fixture::dual_stack(2, SliceSet6::full());
    // MLD is on only with an IPv6 group protected.
    let mut lab = RouterLab::with_fixture(
        fixture.clone(),
        "[verifier]\nprotected6 = [\"ff3e::/32\"]\n",
    );
    // The IPv6 group's keys beside the IPv4 group's.
    let keys = lab.dir.join("keys.toml");
    let text = FileKeySource::render(&[fixture.group_keys()])
        + &FileKeySource::render6(&[(*fixture.key_source6()[&GROUP6]).clone()]);
    std::fs::write(&keys, text).expect("key file");
    // Server 1's link is the fixture's LINK6 (2001:db8:0:1::/64); the member speaks from its
    // fixture link-local address, fe80::1.
    lab.router.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:0:1::1/64",
        "dev",
        "s1",
        "nodad",
    ]);
    let (member, ifname) = (lab.servers[0].ns.clone(), lab.servers[0].ifname.clone());
    member.ip(&["-6", "addr", "add", "fe80::1/64", "dev", &ifname, "nodad"]);
    // Opened before the verifier starts, so that its first (startup) query is caught.
    let queries = member.run(|| {
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).expect("icmpv6");
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        s
    });
    lab.start();
    let units = SliceSet6::site_slicing(2);
    // The verifier's MLDv2 querier: a general query (type 130, 28 bytes or more) arrives.
    let mut buf = [0u8; 1500];
    wait_for("an MLDv2 general query from the verifier", || {
        while let Ok(n) = std::io::Read::read(&mut &queries, &mut buf) {
            if n >= 28 && buf[0] == 130 {
                return true;
            }
        }
        false
    });

    // Forged: member 2's signature over member 1's join, which carries member 1's certificate.
    let now = wall_now();
    let good = join6(&fixture, 0, &units[..1], 1, now);
    let other = join6(&fixture, 1, &units[..1], 1, now);
    let mut forged = good.clone();
    let sig_at = forged.len() - 64;
    forged[sig_at..].copy_from_slice(&other[other.len() - 64..]);
    let ip = igmp_ext::wire::ipv6::HEADER_LEN + 8;
    fill_checksum(&mut forged[ip..], fixture.addr6(0), ALL_MLDV2_ROUTERS);
    send_raw_v6(&member, &ifname, &forged);
    wait_for("the forged join refused", || {
        mld_counter(&lab, "bad-signature") >= 1
    });
    let status = lab.status();
    assert!(
        !status
            .ownership
            .iter()
            .any(|r| r.group == GROUP6.to_string()),
        "a forged join claims nothing: {:?}",
        status.ownership
    );
    assert_eq!(status.counters.mld_joins_accepted, 0);

    // From `::` (duplicate address detection): ignored, not refused.
    let mut dad = good.clone();
    dad[8..24].fill(0);
    send_raw_v6(&member, &ifname, &dad);

    // The real join: accepted, its claim in the status.
    send_raw_v6(&member, &ifname, &good);
    wait_for("the signed MLDv2 join accepted", || {
        lab.status().counters.mld_joins_accepted == 1
    });
    let status = lab.status();
    let row = status
        .ownership
        .iter()
        .find(|r| r.group == GROUP6.to_string())
        .unwrap_or_else(|| panic!("no IPv6 claim in {:?}\n{}", status.ownership, lab.log()));
    assert_eq!(row.member, fixture.members[0].id.0);
    assert_eq!(row.sender, "fe80::1");
    assert_eq!(row.interface, "s1");
    assert_eq!(row.slices, units[0].to_string());
    // The member's kernel sends its own reports from `::` while its addresses are tentative.
    assert!(status.counters.mld_unspecified_ignored >= 1);
    let refused: u64 = status.counters.mld_rejected.iter().map(|(_, n)| n).sum();
    assert_eq!(refused, 1, "only the forged join was refused");
    // The same datagram again is a duplicate.
    send_raw_v6(&member, &ifname, &good);
    wait_for("the replayed join refused", || {
        mld_counter(&lab, "duplicate") == 1
    });
    lab.stop();
}

/// The inodes of the verifier's open sockets.
fn socket_inodes(lab: &RouterLab) -> Vec<String> {
    let pid = lab.daemon_pid().expect("the verifier runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the verifier's fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect()
}

/// How many of the verifier's sockets the router namespace's `table` (`packet` or `raw6`)
/// lists with `matches` true of the row's fields; `inode_at` is the inode's field.
fn sockets_in(
    lab: &RouterLab,
    table: &str,
    inode_at: usize,
    matches: impl Fn(&[&str]) -> bool,
) -> usize {
    let inodes = socket_inodes(lab);
    let path = format!("/proc/thread-self/net/{table}");
    let text = lab
        .router
        .run(|| std::fs::read_to_string(&path).expect("socket table"));
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<&str>>())
        .filter(|f| {
            f.get(inode_at)
                .is_some_and(|inode| inodes.iter().any(|i| i == inode))
                && matches(f)
        })
        .count()
}

/// The verifier's packet sockets for IPv6 (`/proc/net/packet`: sk RefCnt Type Proto Iface R
/// Rmem User Inode): none since MLD moved to a raw ICMPv6 socket, which taps no forwarded
/// packet.
fn ipv6_packet_sockets(lab: &RouterLab) -> usize {
    sockets_in(lab, "packet", 8, |f| {
        f.get(3).is_some_and(|p| p.eq_ignore_ascii_case("86dd"))
    })
}

/// The verifier's raw ICMPv6 sockets (`/proc/net/raw6`: sl local_address:protocol … inode at
/// field 9; 3A is ICMPv6).
fn icmpv6_sockets(lab: &RouterLab) -> usize {
    sockets_in(lab, "raw6", 9, |f| {
        f.get(1)
            .is_some_and(|a| a.to_ascii_uppercase().ends_with(":003A"))
    })
}

/// With no IPv6 group protected (`verifier.protected6` empty, the default) the verifier is
/// IPv4 only: it holds no MLD socket, so it neither reads MLD nor is an MLD querier on its
/// links; with one, it holds its raw ICMPv6 MLD socket, and no IPv6 packet socket.
#[test]
fn mld_is_off_unless_an_ipv6_group_is_protected() {
    let fixture = Fixture::dual_stack(2, SliceSet6::full());
    let mut off = RouterLab::with_fixture(fixture.clone(), "");
    off.start();
    wait_for("the IPv4-only verifier's status", || {
        off.try_status().is_some()
    });
    assert_eq!(icmpv6_sockets(&off), 0, "no MLD socket without protected6");
    assert_eq!(ipv6_packet_sockets(&off), 0);
    drop(off);
    let mut on = RouterLab::with_fixture(fixture, "[verifier]\nprotected6 = [\"ff3e::/32\"]\n");
    on.start();
    wait_for("the dual-stack verifier's MLD socket", || {
        icmpv6_sockets(&on) == 1
    });
    assert_eq!(ipv6_packet_sockets(&on), 0, "no tap on forwarded IPv6");
}

/// An MLDv1 report (RFC 2710) for `group` from `src` to `dst` with hop limit `hops`, in the
/// IPv6 datagram MLD uses (Hop-by-Hop, Router Alert); its checksum right or not.
fn v1_report(src: Ipv6Addr, dst: Ipv6Addr, hops: u8, group: Ipv6Addr, good: bool) -> Vec<u8> {
    let mut mld = vec![131, 0, 0, 0, 0, 0, 0, 0];
    mld.extend_from_slice(&group.octets());
    fill_checksum(&mut mld, src, dst);
    if !good {
        mld[2] ^= 0xff;
    }
    let mut d = build_mld_datagram(src, &mld);
    d[7] = hops;
    d[24..40].copy_from_slice(&dst.octets());
    d
}

/// The verifier's MLD socket sees only what the kernel delivers to the router (issue 15): an
/// MLD-typed datagram with Router Alert that a client sends through the router to a member's
/// address is forwarded to the member and never reaches the verifier (the packet socket it
/// replaced read every forwarded IPv6 datagram, this one included, and refused it as
/// `unsigned`: an MLDv1 report for a protected group). The same report from the member's link
/// to ff02::16 is refused, once; with a wrong checksum the kernel discards it before the core
/// sees it (no `bad-checksum`), and the report behind it is still read.
#[test]
fn forwarded_ipv6_never_reaches_the_mld_socket() {
    let fixture = Fixture::dual_stack(2, SliceSet6::full());
    let mut lab = RouterLab::with_fixture(
        fixture.clone(),
        "[verifier]\nprotected6 = [\"ff3e::/32\"]\n",
    );
    let member_addr: Ipv6Addr = "2001:db8:0:1::2".parse().expect("address");
    let client_addr: Ipv6Addr = "2001:db8:1::1".parse().expect("address");
    let (member, ifname) = (lab.servers[0].ns.clone(), lab.servers[0].ifname.clone());
    lab.router.sysctl("net.ipv6.conf.all.forwarding", "1");
    for (addr, dev) in [("2001:db8:0:1::100/64", "s1"), ("2001:db8:1::100/64", "c0")] {
        lab.router
            .ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"]);
    }
    member.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:0:1::2/64",
        "dev",
        &ifname,
        "nodad",
    ]);
    let ll = format!("{}/64", fixture.addr6(0));
    member.ip(&["-6", "addr", "add", &ll, "dev", &ifname, "nodad"]);
    lab.client.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "cl0",
        "nodad",
    ]);
    lab.client.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:0:1::/64",
        "via",
        "2001:db8:1::100",
    ]);
    let heard = member.run(|| {
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).expect("icmpv6");
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        s
    });
    lab.start();
    wait_for("the verifier's status", || lab.try_status().is_some());
    let group: Ipv6Addr = "ff3e::1".parse().expect("group");

    // Through the router to the member's address: forwarded (the member hears it), unseen.
    let through = v1_report(client_addr, member_addr, 64, group, true);
    let mut buf = [0u8; 1500];
    wait_for("the forwarded report at the member", || {
        send_raw_v6(&lab.client, "cl0", &through);
        while let Ok(n) = std::io::Read::read(&mut &heard, &mut buf) {
            if n >= 24 && buf[0] == 131 && buf[8..24] == group.octets() {
                return true;
            }
        }
        false
    });

    // On the member's link to ff02::16: a wrong checksum, then the same report right.
    let src = fixture.addr6(0);
    send_raw_v6(
        &member,
        &ifname,
        &v1_report(src, ALL_MLDV2_ROUTERS, 1, group, false),
    );
    send_raw_v6(
        &member,
        &ifname,
        &v1_report(src, ALL_MLDV2_ROUTERS, 1, group, true),
    );
    wait_for("the on-link report refused", || {
        mld_counter(&lab, "unsigned") >= 1
    });
    let status = lab.status();
    assert_eq!(
        mld_counter(&lab, "unsigned"),
        1,
        "only the on-link report refused, not the forwarded ones: {:?}",
        status.counters.mld_rejected
    );
    assert_eq!(
        mld_counter(&lab, "bad-checksum"),
        0,
        "the kernel discards it"
    );
    lab.stop();
}

/// The verifier's own MLD never comes back to its MLD socket (the packet socket skipped what
/// this host sent): its queries go out without multicast loopback, and its kernel's reports
/// (for ff02::16, which it joined) come from the router's own addresses, skipped. With every
/// neighbour's IPv6 off, nothing MLD reaches the verifier however many queries it sends.
#[test]
fn the_verifiers_own_mld_does_not_come_back_to_it() {
    let fixture = Fixture::dual_stack(2, SliceSet6::full());
    let mut lab = RouterLab::with_fixture(
        fixture,
        "[verifier]\nprotected6 = [\"ff3e::/32\"]\n\
         [querier]\nquery_interval_ms = 1000\nquery_response_interval_ms = 500\n",
    );
    let neighbours: Vec<(Netns, String)> = lab
        .servers
        .iter()
        .map(|s| (s.ns.clone(), s.ifname.clone()))
        .chain(std::iter::once((lab.client.clone(), "cl0".to_owned())))
        .collect();
    for (ns, ifname) in &neighbours {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1");
    }
    // The querier's sources are the link-local addresses usable at start: DAD done.
    wait_for("the router's link-local addresses", || {
        let text = lab
            .router
            .run(|| std::fs::read_to_string("/proc/thread-self/net/if_inet6").expect("if_inet6"));
        let ready = |dev: &str| {
            text.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 6
                    && f[5] == dev
                    && f[3] == "20"
                    && u8::from_str_radix(f[4], 16).is_ok_and(|flags| flags & 0x40 == 0)
            })
        };
        ["c0", "s1", "s2"].into_iter().all(ready)
    });
    // Member 1's link as it carries IPv6 (a packet socket: its own IPv6 is off).
    let (member, ifname) = &neighbours[0];
    let link = member.run(|| {
        let s = Socket::new(
            Domain::PACKET,
            Type::DGRAM,
            Some(Protocol::from(i32::from(0x86ddu16.to_be()))),
        )
        .expect("packet socket");
        s.bind_device(Some(ifname.as_bytes())).expect("bind");
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        s
    });
    lab.start();
    // Two MLD queries (next header Hop-by-Hop, then ICMPv6 type 130) on the link.
    let mut queries = 0;
    let mut buf = [0u8; 1500];
    wait_for(
        "two MLD queries from the verifier on member 1's link",
        || {
            while let Ok(n) = std::io::Read::read(&mut &link, &mut buf) {
                if n >= 48 + 28 && buf[6] == 0 && buf[40] == 58 && buf[48] == 130 {
                    queries += 1;
                }
            }
            queries >= 2
        },
    );
    // A looped-back copy is queued at sending: by a later status it has been read.
    let sent = lab.status().counters.queries_sent;
    wait_for("more queries sent", || {
        lab.status().counters.queries_sent > sent
    });
    let c = lab.status().counters;
    assert_eq!(
        (c.mld_plain_accepted, c.mld_joins_accepted),
        (0, 0),
        "MLD seen with no neighbour speaking IPv6:\n{}",
        lab.log()
    );
    let refused: u64 = c.mld_rejected.iter().map(|(_, n)| n).sum();
    assert_eq!(refused, 0, "{:?}", c.mld_rejected);
    lab.stop();
}
