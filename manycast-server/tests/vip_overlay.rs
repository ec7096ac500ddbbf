//! Issue 13, item 15: VIP forward's VXLAN overlay takes frames only from the current members.
//! An off-member host that sends VXLAN to a member's tunnel end reaches nothing (dropped and
//! counted before the VXLAN device, no FDB entry learned); a member's frames still arrive.

use crate::harness::{in_netns, wait_for};
use crate::vip::{ip_out, nft_in, VipLab};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;

/// Member 1's tunnel end (its direct-path address; member 2's is 10.0.2.2) and the overlay's
/// defaults.
const MEMBER_1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const VXLAN_PORT: u16 = 4789;
const VNI: u32 = 7700;
/// The inner source MAC of the forged frames: it must not be learned.
const FORGED_MAC: [u8; 6] = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];

/// A VXLAN datagram (RFC 7348 §5) carrying a broadcast ARP request for `target` from `mac`.
fn vxlan_arp(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut d = vec![0x08, 0, 0, 0];
    d.extend_from_slice(&(VNI << 8).to_be_bytes());
    d.extend_from_slice(&[0xff; 6]);
    d.extend_from_slice(&mac);
    d.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    d.extend_from_slice(&mac);
    d.extend_from_slice(&sender.octets());
    d.extend_from_slice(&[0; 6]);
    d.extend_from_slice(&target.octets());
    d
}

/// Sends `n` copies of `datagram` from namespace `ns` to member 1's VXLAN port.
fn send(ns: &str, datagram: &[u8], n: usize) {
    in_netns(ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        for _ in 0..n {
            s.send_to(datagram, SocketAddrV4::new(MEMBER_1, VXLAN_PORT))
                .expect("send");
        }
    });
}

fn rx_packets(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg("/sys/class/net/mcfwd0/statistics/rx_packets")
        .output()
        .expect("cat");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Packets the overlay guard dropped in `ns` (0 when there is no guard).
fn guard_drops(ns: &str) -> u64 {
    let (_, text) = nft_in(
        ns,
        &["list", "chain", "ip", "manycast_vip_forward", "input"],
    );
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn vip_forward_overlay_takes_vxlan_only_from_members() {
    let mut v = VipLab::new(false, &[]);
    v.start_member(0, "forward");
    v.start_member(1, "forward");
    v.wait_for_two_owners();
    let srv1 = v.servers[0].clone();
    let srv2 = v.servers[1].clone();
    wait_for("member 1 floods overlay frames to member 2", || {
        ip_out(&srv1, &["-d", "link", "show", "mcfwd0"]).contains("vxlan")
            && Command::new("ip")
                .args([
                    "netns", "exec", &srv1, "bridge", "fdb", "show", "dev", "mcfwd0",
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("dst 10.0.2.2"))
    });
    let before = rx_packets(&srv1);
    let drops_before = guard_drops(&srv1);
    // The client's host is on no member's list: 20 forged frames.
    let forged = vxlan_arp(
        FORGED_MAC,
        Ipv4Addr::new(10, 99, 0, 66),
        Ipv4Addr::new(10, 99, 0, 1),
    );
    send(&v.client, &forged, 20);
    // Member 2 is: 5 frames from its own address.
    let member = vxlan_arp(
        [0x02, 0x77, 0, 0, 0, 2],
        Ipv4Addr::new(10, 99, 0, 2),
        Ipv4Addr::new(10, 99, 0, 1),
    );
    send(&srv2, &member, 5);
    wait_for("member 2's frames arrive on member 1's overlay", || {
        rx_packets(&srv1) >= before + 5
    });
    wait_for("every forged frame is accounted for", || {
        guard_drops(&srv1) - drops_before + rx_packets(&srv1) - before >= 25
    });
    // Every forged frame was dropped by the guard (a frame is dropped or delivered, not both),
    // so none reached the overlay. What arrived is member 2's: its 5, and possibly frames its
    // kernel sends on the device by itself (IPv6 neighbour discovery or MLD on the overlay's
    // link-local address, flooded to every FDB peer; a 6th frame was seen once in a loaded run,
    // not captured).
    assert_eq!(
        guard_drops(&srv1) - drops_before,
        20,
        "off-member VXLAN frames reached member 1's overlay"
    );
    assert!(rx_packets(&srv1) - before >= 5);
    let fdb = Command::new("ip")
        .args([
            "netns", "exec", &srv1, "bridge", "fdb", "show", "dev", "mcfwd0",
        ])
        .output()
        .expect("bridge fdb");
    let fdb = String::from_utf8_lossy(&fdb.stdout).to_string();
    assert!(
        !fdb.contains("02:66:66:66:66:66"),
        "learned a forged MAC:\n{fdb}"
    );
    assert!(
        !fdb.contains("02:77:00:00:00:02"),
        "learned a MAC at all:\n{fdb}"
    );
    assert!(
        ip_out(&srv1, &["-d", "link", "show", "mcfwd0"]).contains("nolearning"),
        "learning is off"
    );
}
