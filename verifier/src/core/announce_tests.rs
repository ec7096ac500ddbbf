//! Issue 14, item 1: the route a redundant verifier holds for its routing daemon to announce
//! (SPEC.md §10.6), at the core. Shares `tests`' lab.

use super::tests::{at, config, setup, Lab, S1, VIP};
use super::*;
use crate::plan::vip::VipSpec;
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::verify::GroupKeys;
use igmp_ext::Slice;
use std::collections::HashMap;
use std::sync::Arc;

const PROTOCOL: u8 = 77;

fn announcing_lab(keep_kernel_state: bool) -> Lab {
    let mut cfg = config();
    cfg.keep_kernel_state = keep_kernel_state;
    cfg.vips = vec![VipSpec {
        address: VIP,
        group: Fixture::new(1).group,
        pin: false,
    }];
    cfg.announce = AnnounceConfig {
        enabled: true,
        protocol: PROTOCOL,
    };
    Lab::new(cfg, setup(NativeDataplane::Nft))
}

/// The announce ops among `ops`, as (on, protocol).
fn announced(ops: &[DataplaneOp]) -> Vec<(bool, u8)> {
    ops.iter()
        .filter_map(|op| match op {
            DataplaneOp::Announce { vip, on, protocol } if *vip == VIP => Some((*on, *protocol)),
            _ => None,
        })
        .collect()
}

fn withdrawals(events: &[Event]) -> Vec<Option<Withdrawn>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Announcement { withdrawn, .. } => Some(*withdrawn),
            _ => None,
        })
        .collect()
}

#[test]
fn a_vip_is_announced_only_while_this_router_can_verify_and_steer_it() {
    let mut lab = announcing_lab(false);
    // Start removes what a crashed verifier left, and holds nothing yet.
    assert_eq!(announced(&lab.ops()), [(false, PROTOCOL)]);
    lab.events();
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    lab.router.handle_keys(NOW, &lab.keys);
    assert_eq!(
        announced(&lab.ops()),
        [],
        "members are still answering the startup queries"
    );
    // The adopt grace (3 s) ends: keys usable, a claim, the map written.
    lab.join(at(2), 0, &[Slice::ALL], 1, S1);
    lab.router.handle_timeout(at(4));
    assert_eq!(announced(&lab.ops()), [(true, PROTOCOL)]);
    assert_eq!(withdrawals(&lab.events()), [None]);
    let status = lab.status(at(4));
    assert_eq!(status.announced, [VIP]);
    assert!(status.render_text().contains("(announced)"));
    let metrics = status.render_metrics();
    assert!(
        metrics.contains(&format!("vip_announced{{vip=\"{VIP}\"}} 1")),
        "{metrics}"
    );

    // The keys become unusable (the keystore's answer expired): withdrawn at the key check.
    let none: HashMap<Ipv4Addr, Arc<GroupKeys>> = HashMap::new();
    lab.router.handle_keys(at(5), &none);
    assert_eq!(announced(&lab.ops()), [(false, PROTOCOL)]);
    assert_eq!(withdrawals(&lab.events()), [Some(Withdrawn::NoKeys)]);
    assert!(lab.status(at(5)).announced.is_empty());
    lab.router.handle_keys(at(6), &lab.keys);
    assert_eq!(announced(&lab.ops()), [(true, PROTOCOL)]);
    lab.events();

    // A VIP steering write fails: withdrawn until one holds.
    lab.join(at(7), 1, &[Slice::new(1, 1)], 2, S1);
    let mut ops = Vec::new();
    while let Some(op) = lab.router.poll_op() {
        lab.router
            .handle_op_result(&op, !matches!(op, DataplaneOp::Vip(_)));
        ops.push(op);
    }
    assert!(ops.iter().any(|op| matches!(op, DataplaneOp::Vip(_))));
    assert_eq!(announced(&ops), [(false, PROTOCOL)]);
    assert_eq!(withdrawals(&lab.events()), [Some(Withdrawn::WriteFailed)]);
    // The next second's retry writes everything again, and it holds.
    lab.router.handle_timeout(at(8));
    assert_eq!(announced(&lab.ops()), [(true, PROTOCOL)]);
    lab.events();

    // Every claim gone: nobody to steer to.
    lab.join(at(9), 0, &[], 1, S1);
    lab.join(at(9), 1, &[], 2, S1);
    assert_eq!(announced(&lab.ops()), [(false, PROTOCOL)]);
    assert_eq!(withdrawals(&lab.events()), [Some(Withdrawn::NoOwner)]);
    lab.join(at(10), 0, &[Slice::ALL], 3, S1);
    assert_eq!(announced(&lab.ops()), [(true, PROTOCOL)]);
}

#[test]
fn stopping_withdraws_even_when_the_steering_stays() {
    let mut lab = announcing_lab(true);
    lab.router.handle_request(NOW, Request::Shutdown);
    assert_eq!(
        announced(&lab.ops()),
        [(false, PROTOCOL)],
        "stale cleanup only"
    );
    let mut lab = announcing_lab(true);
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    lab.router.handle_keys(NOW, &lab.keys);
    lab.router.handle_timeout(at(4));
    assert_eq!(announced(&lab.ops()), [(false, PROTOCOL), (true, PROTOCOL)]);
    lab.router.handle_request(at(5), Request::Shutdown);
    assert_eq!(announced(&lab.ops()), [(false, PROTOCOL)]);
    assert_eq!(
        withdrawals(&lab.events()).last(),
        Some(&Some(Withdrawn::Stopping))
    );
}
