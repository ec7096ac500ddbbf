//! IPv6 VIPs at the core (issue 15, item 3): the table follows the MLDv2 ownership (at once,
//! or once the adopt grace is over when an earlier verifier left one), the /128 route is
//! announced under the IPv4 VIP's conditions, and a clean stop removes both.

use super::tests::{at, config, setup, Lab, S1};
use super::*;
use crate::plan::vip6::Vip6Spec;
use crate::plan::NftBatch;
use igmp_ext::fixtures::{Fixture, GROUP6, LINK6, NOW};
use igmp_ext::verify6::LinkTable6;
use igmp_ext::SliceSet6;
use std::net::{IpAddr, Ipv6Addr};

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x80);

/// `left`: an earlier verifier left its IPv6 VIP table.
fn lab(left: bool) -> (Lab, Fixture) {
    let mut cfg = config();
    cfg.vips6 = vec![Vip6Spec {
        address: VIP6,
        group: GROUP6,
        pin: true,
    }];
    cfg.announce = AnnounceConfig {
        enabled: true,
        protocol: 77,
    };
    let mut setup = setup(NativeDataplane::Nft);
    setup.vip6_table_left = left;
    let mut lab = Lab::new(cfg, setup);
    let mut links = LinkTable6::new();
    links.add(S1, LINK6);
    lab.router.set_links6(links);
    (lab, Fixture::dual_stack(2, SliceSet6::full()))
}

fn vip6_tables(ops: &[DataplaneOp]) -> Vec<&NftBatch> {
    ops.iter()
        .filter_map(|o| match o {
            DataplaneOp::Vip6Table(w) => Some(&w.batch),
            _ => None,
        })
        .collect()
}

fn announced6(ops: &[DataplaneOp]) -> Vec<bool> {
    ops.iter()
        .filter_map(|o| match o {
            DataplaneOp::Announce { vip, on, .. } if *vip == IpAddr::V6(VIP6) => Some(*on),
            _ => None,
        })
        .collect()
}

#[test]
fn an_ipv6_vip_is_steered_after_the_grace_announced_and_removed_on_stop() {
    let (mut lab, f) = lab(true);
    // Start clears what a crashed verifier may have announced, for both families.
    assert_eq!(announced6(&lab.ops()), [false]);
    let units = SliceSet6::site_slicing(1);
    let d = f.datagram6(0, &f.claims6(&units[..1], 1, NOW, 1));
    lab.router
        .handle_mld_datagram(NOW, S1, &d, &f.key_source6());
    lab.router.handle_keys6(NOW, &f.key_source6());
    let ops = lab.ops();
    assert!(
        vip6_tables(&ops).is_empty(),
        "a table an earlier verifier left keeps steering through the grace: {ops:?}"
    );
    assert!(announced6(&ops).is_empty());
    let row = |lab: &mut Lab, t: u64| {
        let status = lab.status(at(t));
        let row = status.vips.iter().find(|v| v.address == VIP6.to_string());
        row.expect("the IPv6 VIP in the status").members.len()
    };
    assert_eq!(
        row(&mut lab, 1),
        0,
        "no steering shown before the table is written"
    );
    // The grace (3 s) ends: the table is written, then the route announced.
    lab.router.handle_timeout(at(4));
    let ops = lab.ops();
    let tables = vip6_tables(&ops);
    let fwd = format!("fwd ip6 to {} device \"s1\"", f.addr6(0));
    assert!(
        matches!(&tables[..], [t] if t.contains(&fwd) && t.contains(&format!("ip6 daddr {VIP6}"))),
        "{ops:?}"
    );
    assert_eq!(announced6(&ops), [true]);
    let status = lab.status(at(4));
    assert!(status.announced.contains(&IpAddr::V6(VIP6)));
    assert_eq!(status.pin_dataplane6, "nft");
    let row = status
        .vips
        .iter()
        .find(|v| v.address == VIP6.to_string())
        .expect("the IPv6 VIP in the status");
    assert_eq!(row.members.len(), 1);
    assert!(status
        .render_text()
        .contains(&format!("vip {VIP6} group {GROUP6} (pin) (announced)")));
    assert!(status
        .render_metrics()
        .contains(&format!("vip_announced{{vip=\"{VIP6}\"}} 1")));

    // A failed write withdraws the route; the next tick writes the table again (whole: the
    // executor keeps the pins it finds), then the route is back.
    let op = DataplaneOp::Vip6Table(crate::plan::vip6::Vip6Write {
        batch: tables[0].clone(),
        devices: Vec::new(),
        fast: Vec::new(),
    });
    lab.router.handle_op_result(&op, false);
    assert_eq!(announced6(&lab.ops()), [false]);
    lab.router.handle_timeout(at(5));
    let ops = lab.ops();
    assert!(
        matches!(&vip6_tables(&ops)[..], [t] if t.starts_with(crate::plan::vip6::REWRITE_HEAD)),
        "{ops:?}"
    );
    assert_eq!(announced6(&ops), [true]);

    // Keys unusable: withdrawn (and not announced again while they stay so).
    let none: std::collections::HashMap<
        Ipv6Addr,
        std::sync::Arc<igmp_ext::mld_verifier::GroupKeys6>,
    > = Default::default();
    lab.router.handle_keys6(at(6), &none);
    assert_eq!(announced6(&lab.ops()), [false]);
    lab.router.handle_keys6(at(7), &f.key_source6());
    assert_eq!(announced6(&lab.ops()), [true]);

    // A clean stop withdraws the route and removes the table.
    lab.router.handle_request(at(8), Request::Shutdown);
    let ops = lab.ops();
    assert_eq!(announced6(&ops), [false]);
    assert!(ops.contains(&DataplaneOp::DeleteVip6Table), "{ops:?}");
}

/// A verifier that finds no IPv6 VIP table has no steering to keep: it writes the table from
/// the first accepted MLDv2 join, as the IPv4 VIP's and the IPv6 native table are, rather than
/// leaving the VIP's clients unrouted for the grace (seen in the lab: keep-alive connections
/// opened a few seconds after a fresh start were refused). Announcing still waits for it.
#[test]
fn an_ipv6_vip_with_no_table_left_is_steered_from_the_first_join() {
    let (mut lab, f) = lab(false);
    lab.ops();
    let units = SliceSet6::site_slicing(1);
    let d = f.datagram6(0, &f.claims6(&units[..1], 1, NOW, 1));
    lab.router
        .handle_mld_datagram(NOW, S1, &d, &f.key_source6());
    lab.router.handle_keys6(NOW, &f.key_source6());
    let ops = lab.ops();
    let fwd = format!("fwd ip6 to {} device \"s1\"", f.addr6(0));
    assert!(
        matches!(&vip6_tables(&ops)[..], [t] if t.contains(&fwd)),
        "{ops:?}"
    );
    assert!(
        announced6(&ops).is_empty(),
        "announced in the grace: {ops:?}"
    );
    let status = lab.status(at(1));
    let row = status.vips.iter().find(|v| v.address == VIP6.to_string());
    assert_eq!(row.expect("the IPv6 VIP in the status").members.len(), 1);
    // The grace ends: nothing to rewrite (the table is in sync), the route goes out.
    lab.router.handle_timeout(at(4));
    let ops = lab.ops();
    assert!(vip6_tables(&ops).is_empty(), "{ops:?}");
    assert_eq!(announced6(&ops), [true]);
}
