//! The router core without a network: signed joins from `igmp_ext::fixtures` go in as bytes, and
//! the tests assert on the ops, transmits and events that come out. No sockets, no root.

use super::*;
use crate::plan::MfcSpec;
use crate::plan::{VipChange, VipRoute, VipRule};
use crate::querier::Role;
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::join::{build_datagram, build_signed_report};
use igmp_ext::wire::igmp::{QueryRepr, QueryV3Fields, ReportRepr};
use igmp_ext::wire::record::{GroupRecordRepr, RecordType};
use igmp_ext::{GroupKeys, Slice};
use std::collections::HashMap;
use std::sync::Arc;

/// The members' link (the fixture's 10.0.0.0/24), VIF 0.
pub(super) const S1: u32 = 1;
/// The clients' link, VIF 1.
pub(super) const C0: u32 = 2;
/// A second link to the same members' subnet, VIF 2: a member can move here.
pub(super) const S2: u32 = 3;
const EVEN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const ODD: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
pub(super) const OUR_S1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

pub(super) fn at(secs: u64) -> Timestamp {
    NOW.saturating_add(Duration::from_secs(secs))
}

pub(super) fn config() -> RouterConfig {
    RouterConfig {
        verifier: VerifierConfig {
            claim_hold: Duration::from_secs(22),
            ..VerifierConfig::default()
        },
        querier: QuerierConfig::default(),
        admission: AdmissionConfig::default(),
        gap: GapPolicy::Drop,
        route_plain_groups: true,
        idle_timeout: Duration::from_secs(60),
        adopt_grace: Duration::from_secs(3),
        keep_kernel_state: false,
        vips: Vec::new(),
        vips6: Vec::new(),
        liveness: Default::default(),
        announce: Default::default(),
        control_groups: Vec::new(),
        protected6: vec![igmp_ext::Slice6::prefix(
            std::net::Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0, 0),
            32,
        )],
    }
}

pub(super) fn setup(dataplane: NativeDataplane) -> KernelSetup {
    let iface = |name: &str, ifindex, addr, vif| Interface {
        name: name.into(),
        ifindex,
        addr,
        vif,
    };
    let mut links = LinkTable::new();
    links.add(S1, Slice::prefix(Ipv4Addr::new(10, 0, 0, 0), 24));
    links.add(S2, Slice::prefix(Ipv4Addr::new(10, 0, 0, 0), 24));
    links.add(C0, Slice::prefix(Ipv4Addr::new(10, 1, 0, 0), 24));
    KernelSetup {
        dataplane,
        interfaces: vec![
            iface("s1", S1, OUR_S1, 0),
            iface("c0", C0, Ipv4Addr::new(10, 1, 0, 1), 1),
            iface("s2", S2, Ipv4Addr::new(10, 0, 0, 201), 2),
        ],
        links,
        adopted_vifs: Vec::new(),
        mfc_entries: Vec::new(),
        netdev_table_left: false,
        control_table_left: false,
        netdev6_table_left: false,
        vip6_table_left: false,
        vip_table_left: false,
        allmulti: Vec::new(),
    }
}

/// A core with the fixture's keys, started at [`NOW`], every op reported applied.
pub(super) struct Lab {
    pub(super) router: Router,
    pub(super) fixture: Fixture,
    pub(super) keys: HashMap<Ipv4Addr, Arc<GroupKeys>>,
    nonce: u64,
}

impl Lab {
    pub(super) fn new(config: RouterConfig, setup: KernelSetup) -> Lab {
        let fixture = Fixture::new(2);
        let keys = fixture.key_source();
        let mut router = Router::new(NOW, config, setup);
        router.handle_request(NOW, Request::Start);
        Lab {
            router,
            fixture,
            keys,
            nonce: 0,
        }
    }

    pub(super) fn mfc() -> Lab {
        Lab::new(config(), setup(NativeDataplane::Mroute))
    }

    /// Member `i` (0-based) joins for `slices` at `epoch`, stamped `now`, its datagram
    /// arriving on `ifindex`.
    pub(super) fn join(
        &mut self,
        now: Timestamp,
        i: usize,
        slices: &[Slice],
        epoch: u64,
        ifindex: u32,
    ) {
        self.nonce += 1;
        let claims = self.fixture.claims(slices, epoch, now, self.nonce);
        let datagram = self.fixture.datagram(i, &claims);
        self.router
            .handle_datagram(now, Some(ifindex), &datagram, &self.keys);
    }

    /// The same, sent from `addr` instead of the member's usual address.
    fn join_from(&mut self, now: Timestamp, i: usize, slices: &[Slice], addr: Ipv4Addr) {
        self.nonce += 1;
        let claims = self.fixture.claims(slices, 1, now, self.nonce);
        let m = &self.fixture.members[i];
        let igmp = build_signed_report(&claims, addr, &m.cert, &m.key).expect("fits");
        let datagram = build_datagram(addr, &igmp);
        self.router
            .handle_datagram(now, Some(S1), &datagram, &self.keys);
    }

    /// Every op since the last call, each reported applied; probes answered "no packets".
    pub(super) fn ops(&mut self) -> Vec<DataplaneOp> {
        let mut out = Vec::new();
        while let Some(op) = self.router.poll_op() {
            self.router.handle_op_result(&op, true);
            // Timing markers (`repoint_us`) change nothing in the kernel.
            if !matches!(op, DataplaneOp::Repoint { .. }) {
                out.push(op);
            }
        }
        out
    }

    /// The next op, past the timing markers.
    fn next_op(&mut self) -> Option<DataplaneOp> {
        std::iter::from_fn(|| self.router.poll_op())
            .find(|op| !matches!(op, DataplaneOp::Repoint { .. }))
    }

    /// The MFC installs and removes since the last call (probes left out).
    fn mfc_ops(&mut self) -> Vec<DataplaneOp> {
        self.ops()
            .into_iter()
            .filter(|op| !matches!(op, DataplaneOp::MfcProbe(_)))
            .collect()
    }

    pub(super) fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.router.poll_event()).collect()
    }

    pub(super) fn transmits(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.router.poll_transmit()).collect()
    }

    pub(super) fn status(&self, now: Timestamp) -> crate::status::Status {
        self.router.status(now, &Observed::default())
    }

    /// The members holding a claim on the fixture's group, by id.
    pub(super) fn holders(&self) -> Vec<MemberId> {
        self.router
            .verifier()
            .ownership()
            .claims(self.fixture.group)
            .map(|(m, _)| m)
            .collect()
    }
}

fn install(source: Ipv4Addr, group: Ipv4Addr, oifs: &[u16]) -> DataplaneOp {
    DataplaneOp::MfcInstall(MfcSpec {
        source,
        group,
        parent: 1,
        oifs: oifs.iter().copied().collect(),
    })
}

#[test]
fn mfc_entries_are_repointed_on_every_ownership_change() {
    let mut lab = Lab::mfc();
    let g = lab.fixture.group;
    lab.ops();
    // Two sources before anyone owns anything: dropped in the kernel.
    for s in [EVEN, ODD] {
        lab.router.handle_upcall(
            NOW,
            Upcall {
                msgtype: IGMPMSG_NOCACHE,
                vif: 1,
                source: s,
                group: g,
            },
        );
    }
    assert_eq!(
        lab.mfc_ops(),
        vec![install(EVEN, g, &[]), install(ODD, g, &[])]
    );
    // A new owner: member 1 claims everything on s1.
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    assert_eq!(
        lab.mfc_ops(),
        vec![install(EVEN, g, &[0]), install(ODD, g, &[0])]
    );
    // A takeover: member 2 takes the odd half at a later epoch, from s2. Only ODD moves.
    lab.join(NOW, 1, &[Slice::new(1, 1)], 2, S2);
    assert_eq!(lab.mfc_ops(), vec![install(ODD, g, &[2])]);
    // A leave: member 2 gives the odd half up; nobody owns it, so it drops.
    lab.join(at(1), 1, &[], 3, S2);
    assert_eq!(lab.mfc_ops(), vec![install(ODD, g, &[])]);
    // An expiry: member 1's claim was not refreshed within the hold (22 s).
    lab.router.handle_timeout(at(23));
    assert_eq!(lab.mfc_ops(), vec![install(EVEN, g, &[])]);
    assert!(lab
        .events()
        .iter()
        .any(|e| matches!(e, Event::ClaimsExpired { group: Some(x), .. } if *x == g)));
    let st = lab.status(at(23));
    assert_eq!(st.counters.upcalls, 2);
    assert_eq!(st.counters.joins_accepted, 3);
    // 2 at the upcalls, 2 for the new owner, then 1 each for the takeover, leave and expiry.
    assert_eq!(st.counters.mfc_installs, 7);
    assert!(st.mfc.iter().all(|r| r.oif == "drop"), "{:?}", st.mfc);
}

/// Issue 13, item 10 (a known defect, not fixed here): a member that re-joins with the same
/// slices from another interface or address changes nothing in the ownership table's slices,
/// so the kernel keeps its old target. This test pins today's behaviour.
#[test]
fn a_member_that_moves_is_repointed() {
    // Issue 13, defect 10: the same claim from another interface or address used to change
    // nothing in the kernel, so the member's clients kept going to where it was.
    let mut lab = Lab::mfc();
    let g = lab.fixture.group;
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    lab.router.handle_upcall(
        NOW,
        Upcall {
            msgtype: IGMPMSG_NOCACHE,
            vif: 1,
            source: EVEN,
            group: g,
        },
    );
    assert_eq!(lab.mfc_ops(), vec![install(EVEN, g, &[0])]);
    // The same claim now arrives on s2: the entry follows it there.
    lab.join(at(1), 0, &[Slice::ALL], 1, S2);
    assert_eq!(lab.mfc_ops(), vec![install(EVEN, g, &[2])]);
    let st = lab.status(at(1));
    assert_eq!(st.mfc[0].oif, "s2");
    assert_eq!(st.ownership[0].interface, "s2");
    // A new source goes to s2 too.
    lab.router.handle_upcall(
        at(1),
        Upcall {
            msgtype: IGMPMSG_NOCACHE,
            vif: 1,
            source: ODD,
            group: g,
        },
    );
    assert_eq!(lab.mfc_ops(), vec![install(ODD, g, &[2])]);

    // On the nft data plane: the member's address changes, the map's next hop follows.
    let mut lab = Lab::new(config(), setup(NativeDataplane::Nft));
    lab.ops();
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    let ops = lab.ops();
    assert!(
        matches!(&ops[..], [DataplaneOp::NetdevTable(t)] if t.contains("fwd ip to 10.0.0.2 device \"s1\"")),
        "{ops:?}"
    );
    lab.join_from(at(1), 0, &[Slice::ALL], Ipv4Addr::new(10, 0, 0, 77));
    let ops = lab.ops();
    assert!(
        matches!(&ops[..], [DataplaneOp::NetdevTable(t)] if t.contains("fwd ip to 10.0.0.77 device \"s1\"")),
        "{ops:?}"
    );
    assert_eq!(lab.status(at(1)).ownership[0].sender, "10.0.0.77");
    assert_eq!(lab.status(at(1)).native[0].via, "10.0.0.77");
}

#[test]
fn the_data_plane_is_chosen_by_config_and_by_what_mrt_init_did() {
    use NativeDataplane::{Mroute, Nft};
    let unsupported = || Some(Err(MrtInitError::Unsupported));
    assert!(!Dataplane::Nft.tries_mroute());
    assert!(Dataplane::Auto.tries_mroute() && Dataplane::Mroute.tries_mroute());
    assert_eq!(Dataplane::Nft.decide(None), Ok(Nft));
    assert_eq!(Dataplane::Auto.decide(Some(Ok(()))), Ok(Mroute));
    assert_eq!(Dataplane::Mroute.decide(Some(Ok(()))), Ok(Mroute));
    // auto falls back to nft only on a kernel without multicast routing.
    assert_eq!(Dataplane::Auto.decide(unsupported()), Ok(Nft));
    assert_eq!(
        Dataplane::Auto.decide(Some(Err(MrtInitError::Busy))),
        Err(MrtInitError::Busy)
    );
    // mroute, forced, refuses to start there, in one line naming the kernel option.
    let e = Dataplane::Mroute.decide(unsupported()).unwrap_err();
    assert!(e.to_string().contains("CONFIG_IP_MROUTE"), "{e}");
    assert!(!e.to_string().contains('\n'));
    // The core runs what was chosen: no upcall handling on nft.
    let mut lab = Lab::new(config(), setup(Nft));
    assert_eq!(lab.router.dataplane(), Nft);
    lab.ops();
    lab.router.handle_upcall(
        NOW,
        Upcall {
            msgtype: IGMPMSG_NOCACHE,
            vif: 1,
            source: EVEN,
            group: lab.fixture.group,
        },
    );
    assert_eq!(lab.ops(), vec![]);
    assert_eq!(lab.status(NOW).dataplane, "nft");
}

/// A whole IGMP datagram from `src` to `dst`, as a host's or another router's kernel sends it.
fn igmp_from(src: Ipv4Addr, dst: Ipv4Addr, igmp: IgmpRepr) -> Vec<u8> {
    super::igmp_datagram(src, dst, igmp)
}

/// A general query from `src`, as another router on s1 sends it.
fn query_from(src: Ipv4Addr) -> Vec<u8> {
    let igmp = IgmpRepr::Query(QueryRepr {
        max_resp_code: 20,
        group: Ipv4Addr::UNSPECIFIED,
        v3: Some(QueryV3Fields {
            flags: 0,
            suppress: false,
            qrv: 2,
            qqic: 10,
            sources: Vec::new(),
            additional_data: Vec::new(),
        }),
    });
    igmp_from(src, Ipv4Addr::new(224, 0, 0, 1), igmp)
}

/// A host's IGMPv3 report with one record for `group`: EXCLUDE {} joins, TO_IN {} leaves.
pub(super) fn host_report(group: Ipv4Addr, record_type: RecordType) -> Vec<u8> {
    let report = IgmpRepr::V3Report(ReportRepr {
        flags: 0,
        records: vec![GroupRecordRepr {
            record_type,
            group,
            sources: Vec::new(),
            aux_data: Vec::new(),
        }],
        additional_data: Vec::new(),
    });
    igmp_from(
        Ipv4Addr::new(10, 1, 0, 9),
        Ipv4Addr::new(224, 0, 0, 22),
        report,
    )
}

#[test]
fn plain_group_entries_follow_their_listeners() {
    let plain = Ipv4Addr::new(239, 1, 2, 3);
    let mut lab = Lab::mfc();
    lab.events();
    // A source on s1 sends to the plain group before anyone listens: dropped in the kernel.
    let upcall = Upcall {
        msgtype: IGMPMSG_NOCACHE,
        vif: 0,
        source: Ipv4Addr::new(10, 0, 0, 50),
        group: plain,
    };
    lab.router.handle_upcall(NOW, upcall);
    let entry = |oifs: &[u16]| {
        DataplaneOp::MfcInstall(MfcSpec {
            source: upcall.source,
            group: plain,
            parent: 0,
            oifs: oifs.iter().copied().collect(),
        })
    };
    assert_eq!(lab.mfc_ops(), vec![entry(&[])]);
    // A host on c0 joins: the entry opens toward c0 at once, not at the next tick.
    let join = host_report(plain, RecordType::ModeIsExclude);
    lab.router.handle_datagram(NOW, Some(C0), &join, &lab.keys);
    assert_eq!(lab.mfc_ops(), vec![entry(&[1])]);
    assert_eq!(
        lab.events(),
        vec![Event::GroupJoined {
            ifindex: C0,
            group: plain
        }]
    );
    assert_eq!(lab.status(NOW).counters.plain_accepted, 1);
    // It leaves: group-specific queries, then after LMQT (2 × 1 s) the entry drops again.
    let leave = host_report(plain, RecordType::ChangeToIncludeMode);
    lab.router
        .handle_datagram(at(1), Some(C0), &leave, &lab.keys);
    assert_eq!(lab.mfc_ops(), vec![]);
    lab.router.handle_timeout(at(1));
    let specific = lab.transmits();
    assert!(
        specific.iter().any(|t| t.ifindex == C0 && t.dst == plain),
        "{specific:?}"
    );
    lab.router.handle_timeout(at(3));
    assert_eq!(lab.mfc_ops(), vec![entry(&[])]);
    // With plain groups not routed, the same upcall is a drop entry whatever the listeners.
    let mut cfg = config();
    cfg.route_plain_groups = false;
    let mut lab = Lab::new(cfg, setup(NativeDataplane::Mroute));
    lab.router.handle_datagram(NOW, Some(C0), &join, &lab.keys);
    lab.router.handle_upcall(NOW, upcall);
    assert_eq!(lab.mfc_ops(), vec![entry(&[])]);
}

#[test]
fn a_lower_addressed_querier_silences_ours_until_its_timer_expires() {
    let mut cfg = config();
    cfg.querier.trusted_queriers = vec![Ipv4Addr::new(10, 0, 0, 1)];
    let mut lab = Lab::new(cfg, setup(NativeDataplane::Mroute));
    // Start: a general query on every interface, from our own address there.
    let sent = lab.transmits();
    assert_eq!(sent.len(), 3);
    let on_s1 = sent
        .iter()
        .find(|t| t.ifindex == S1)
        .expect("a query on s1");
    assert_eq!(on_s1.datagram[12..16], OUR_S1.octets());
    assert_eq!(on_s1.dst, Ipv4Addr::new(224, 0, 0, 1));
    // Our own query looped back is ignored; a higher address does not displace us.
    lab.router
        .handle_datagram(NOW, Some(S1), &on_s1.datagram, &lab.keys);
    lab.router.handle_datagram(
        NOW,
        Some(S1),
        &query_from(Ipv4Addr::new(10, 0, 0, 250)),
        &lab.keys,
    );
    assert_eq!(lab.router.querier().role(S1), Some(Role::Querier));
    lab.events();
    // A lower address takes over on s1 only.
    lab.router.handle_datagram(
        NOW,
        Some(S1),
        &query_from(Ipv4Addr::new(10, 0, 0, 1)),
        &lab.keys,
    );
    assert_eq!(
        lab.events(),
        vec![Event::RoleChanged {
            ifindex: S1,
            role: Role::NonQuerier
        }]
    );
    // Other Querier Present Interval: 2 × 10 s + 1 s. Until then, nothing of ours on s1.
    let mut now = NOW;
    while now < at(21) {
        now = Timestamp(lab.router.poll_timeout().as_millis());
        lab.router.handle_timeout(now);
        let sent = lab.transmits();
        if now < at(21) {
            assert!(
                sent.iter().all(|t| t.ifindex != S1),
                "queried on s1 at {now:?}"
            );
        }
    }
    assert_eq!(lab.router.querier().role(S1), Some(Role::Querier));
    assert!(lab.events().contains(&Event::RoleChanged {
        ifindex: S1,
        role: Role::Querier
    }));
    lab.router.handle_timeout(at(22));
    let st = lab.status(at(22));
    let s1 = st.interfaces.iter().find(|i| i.name == "s1").expect("s1");
    assert_eq!(s1.role, "Some(Querier)");
}

#[test]
fn vip_plan_puts_routes_before_the_map_and_removes_what_went_stale() {
    let mut cfg = config();
    cfg.vips = vec![VipSpec {
        address: VIP,
        group: Fixture::new(1).group,
        pin: false,
    }];
    let mut lab = Lab::new(cfg, setup(NativeDataplane::Mroute));
    // Start: the table is written once even with no owner (the gap rule drops).
    let ops = lab.ops();
    let [DataplaneOp::Vip(first)] = &ops[..] else {
        panic!("{ops:?}");
    };
    assert!(first.routes.is_empty() && first.rules.is_empty());
    assert!(first
        .ruleset
        .contains("ip daddr 10.200.0.1 meta mark 0 counter drop"));
    // Member 1 owns the even half, member 2 the odd half.
    lab.join(NOW, 0, &[Slice::new(0, 1)], 1, S1);
    lab.join(NOW, 1, &[Slice::new(1, 1)], 1, S1);
    let changes: Vec<VipChange> = lab
        .ops()
        .into_iter()
        .filter_map(|op| match op {
            DataplaneOp::Vip(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    let route = |m: u32, via| VipRoute {
        vip: VIP,
        via,
        table: 0x4d43_0000 + m,
    };
    let rule = |m: u32| VipRule {
        mark: 0x4d43_0000 | m,
        table: 0x4d43_0000 + m,
        priority: 5000,
    };
    assert_eq!(
        changes[0].routes,
        vec![route(1, Ipv4Addr::new(10, 0, 0, 2))]
    );
    assert_eq!(changes[0].rules, vec![rule(1)]);
    // The second only adds what is new.
    assert_eq!(
        changes[1].routes,
        vec![route(2, Ipv4Addr::new(10, 0, 0, 3))]
    );
    assert_eq!(changes[1].rules, vec![rule(2)]);
    // The map gets member 2's element alone (issue 16, item 3: no table rewrite), and so does
    // the fast path's (item 5), after the chain of its hop.
    assert_eq!(
        changes[1].ruleset.text,
        "add element ip manycast_verifier vip_10_200_0_1 { 0.0.0.1 : 0x4d430002 }\n\
         add chain netdev manycast_vip m2_10_0_0_3\n\
         add rule netdev manycast_vip m2_10_0_0_3 counter fwd ip to 10.0.0.3 device \"s1\"\n\
         add element netdev manycast_vip vip_10_200_0_1 { 0.0.0.1 : jump m2_10_0_0_3 }\n"
    );
    assert!(!changes[1].ruleset.rewrite);
    // Member 2 leaves: its route and rule go after the map no longer points at them.
    lab.join(at(1), 1, &[], 2, S1);
    let ops = lab.ops();
    let [DataplaneOp::Vip(c)] = &ops[..] else {
        panic!("{ops:?}");
    };
    assert!(c.routes.is_empty() && c.rules.is_empty());
    assert_eq!(c.stale_routes, vec![route(2, Ipv4Addr::new(10, 0, 0, 3))]);
    assert_eq!(c.stale_rules, vec![rule(2)]);
    assert!(!c.ruleset.contains("0x4d430002"));
    assert_eq!(lab.status(at(1)).vips[0].members.len(), 1);
    // Shutdown withdraws what is left.
    lab.router.handle_request(at(2), Request::Shutdown);
    let ops = lab.ops();
    assert!(
        ops.contains(&DataplaneOp::VipRemove {
            routes: vec![route(1, Ipv4Addr::new(10, 0, 0, 2))],
            rules: vec![rule(1)],
        }),
        "{ops:?}"
    );
    assert_eq!(ops.last(), Some(&DataplaneOp::MrtDone));
}

#[test]
fn a_failed_vip_change_writes_everything_again_next_time() {
    let mut cfg = config();
    cfg.vips = vec![VipSpec {
        address: VIP,
        group: Fixture::new(1).group,
        pin: true,
    }];
    let mut lab = Lab::new(cfg, setup(NativeDataplane::Mroute));
    lab.ops();
    lab.join(NOW, 0, &[Slice::new(0, 1)], 1, S1);
    let op = lab.next_op().expect("a VIP change");
    lab.router.handle_op_result(&op, false);
    assert_eq!(lab.status(NOW).counters.kernel_errors, 1);
    assert_eq!(lab.status(NOW).counters.nft_transactions, 1);
    lab.join(NOW, 1, &[Slice::new(1, 1)], 1, S1);
    let ops = lab.ops();
    let [DataplaneOp::Vip(c)] = &ops[..] else {
        panic!("{ops:?}");
    };
    assert_eq!(c.routes.len(), 2, "member 1's route again, and member 2's");
    assert_eq!(c.rules.len(), 2);
    assert!(c.ruleset.contains("ct mark"));
}

/// A VIP table an earlier verifier left (SIGKILL, or `keep_kernel_state`) keeps steering until
/// the members have answered the startup queries: the first join used to rewrite it with that
/// member alone, and every other member's clients were dropped until it re-joined.
#[test]
fn a_kept_vip_table_is_held_until_the_grace_ends_then_rewritten() {
    let mut cfg = config();
    cfg.vips = vec![VipSpec {
        address: VIP,
        group: Fixture::new(1).group,
        pin: true,
    }];
    let mut kept = setup(NativeDataplane::Mroute);
    kept.vip_table_left = true;
    let mut lab = Lab::new(cfg, kept);
    assert!(
        matches!(
            lab.events().first(),
            Some(Event::Adopted { entries: 1, .. })
        ),
        "the kept VIP table is taken over"
    );
    lab.ops();
    lab.join(NOW, 0, &[Slice::new(0, 1)], 1, S1);
    lab.router.handle_timeout(at(2));
    let vip_ops = |ops: Vec<DataplaneOp>| -> Vec<DataplaneOp> {
        ops.into_iter()
            .filter(|o| matches!(o, DataplaneOp::Vip(_) | DataplaneOp::VipRemove { .. }))
            .collect()
    };
    assert_eq!(vip_ops(lab.ops()), vec![], "held during the grace");
    // The grace (3 s) ends: everything is written again from the rebuilt ownership, once.
    lab.join(at(2), 1, &[Slice::new(1, 1)], 1, S2);
    lab.router.handle_timeout(at(3));
    let ops = vip_ops(lab.ops());
    let [DataplaneOp::Vip(c)] = &ops[..] else {
        panic!("{ops:?}");
    };
    assert_eq!((c.routes.len(), c.rules.len()), (2, 2), "{c:?}");
    assert!(c.ruleset.rewrite, "the kept table is replaced whole");
    lab.router.handle_timeout(at(4));
    assert_eq!(vip_ops(lab.ops()), vec![]);
}

#[test]
fn a_kept_nft_table_is_held_until_the_grace_ends_then_rewritten() {
    let mut kept = setup(NativeDataplane::Nft);
    kept.netdev_table_left = true;
    kept.allmulti = vec!["s1".into()];
    let mut lab = Lab::new(config(), kept);
    assert_eq!(
        lab.events().first(),
        Some(&Event::Adopted {
            entries: 1,
            vifs: 0
        })
    );
    // Members re-join during the grace: the kernel's table is left alone.
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    assert_eq!(lab.ops(), vec![]);
    lab.router.handle_timeout(at(2));
    assert_eq!(lab.ops(), vec![]);
    // The grace (3 s) ends: the table is rewritten from the rebuilt ownership, once.
    lab.router.handle_timeout(at(3));
    let ops = lab.ops();
    assert!(
        matches!(&ops[..], [DataplaneOp::NetdevTable(t)] if t.contains("jump m1_10_0_0_2")),
        "{ops:?}"
    );
    lab.router.handle_timeout(at(4));
    assert_eq!(lab.ops(), vec![]);
    assert_eq!(lab.status(at(4)).counters.nft_transactions, 1);
    // A clean shutdown removes the table and gives the allmulticast flag back.
    lab.router.handle_request(at(5), Request::Shutdown);
    assert_eq!(
        lab.ops(),
        vec![
            DataplaneOp::DeleteNetdevTable,
            DataplaneOp::SetAllmulti {
                ifname: "s1".into(),
                on: false
            }
        ]
    );

    // Nothing kept: the first claim writes the table at once, and the grace rewrites nothing.
    let mut lab = Lab::new(config(), setup(NativeDataplane::Nft));
    assert_eq!(lab.ops(), vec![], "no claim, no group, no table");
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    assert!(matches!(&lab.ops()[..], [DataplaneOp::NetdevTable(_)]));
    lab.router.handle_timeout(at(3));
    assert_eq!(lab.ops(), vec![]);
}

#[test]
fn a_failed_nft_write_is_retried_every_second_until_it_holds() {
    let mut lab = Lab::new(config(), setup(NativeDataplane::Nft));
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    let start = lab.next_op().expect("the table for the first claim");
    lab.router.handle_op_result(&start, false);
    assert_eq!(lab.ops(), vec![]);
    // Within the same second: nothing; the next second: the same table again.
    lab.router
        .handle_timeout(NOW.saturating_add(Duration::from_millis(500)));
    assert_eq!(lab.ops(), vec![]);
    lab.router.handle_timeout(at(1));
    assert_eq!(lab.ops(), vec![start.clone()]);
    lab.router.handle_timeout(at(2));
    assert_eq!(lab.ops(), vec![]);
    let st = lab.status(at(2));
    assert_eq!(
        (st.counters.kernel_errors, st.counters.nft_transactions),
        (1, 1)
    );
}

#[test]
fn adopted_mfc_entries_stay_until_the_grace_ends() {
    let mut left = setup(NativeDataplane::Mroute);
    let g = Fixture::new(1).group;
    left.adopted_vifs = vec![0, 1];
    left.mfc_entries = vec![
        FoundEntry {
            group: g,
            source: EVEN,
            parent: 1,
            oifs: VifSet::one(2),
        },
        // A plain group's entry is not ours when plain groups are not routed.
        FoundEntry {
            group: Ipv4Addr::new(239, 1, 2, 3),
            source: EVEN,
            parent: 1,
            oifs: VifSet::one(0),
        },
    ];
    let mut cfg = config();
    cfg.route_plain_groups = false;
    let mut lab = Lab::new(cfg, left);
    assert_eq!(
        lab.events().first(),
        Some(&Event::Adopted {
            entries: 1,
            vifs: 2
        })
    );
    lab.join(NOW, 0, &[Slice::ALL], 1, S1);
    assert_eq!(lab.mfc_ops(), vec![]);
    lab.router.handle_timeout(at(3));
    assert_eq!(lab.mfc_ops(), vec![install(EVEN, g, &[0])]);
    // Shutdown: entries, VIFs, what an earlier verifier left on its VIFs, then MRT_DONE.
    lab.router.handle_request(at(4), Request::Shutdown);
    let ops = lab.mfc_ops();
    assert_eq!(
        ops[1..],
        [
            DataplaneOp::DelVif(0),
            DataplaneOp::DelVif(1),
            DataplaneOp::DelVif(2),
            DataplaneOp::MfcRemoveLeftovers {
                parents: vec![0, 1]
            },
            DataplaneOp::MrtDone,
        ]
    );
    assert!(matches!(
        ops[0],
        DataplaneOp::MfcRemove(MfcSpec { source: EVEN, .. })
    ));
}

#[test]
fn idle_entries_are_probed_and_removed() {
    let mut lab = Lab::mfc();
    let g = lab.fixture.group;
    lab.router.handle_upcall(
        NOW,
        Upcall {
            msgtype: IGMPMSG_NOCACHE,
            vif: 1,
            source: EVEN,
            group: g,
        },
    );
    lab.ops();
    lab.router.handle_timeout(at(1));
    let probe = lab.router.poll_op();
    assert_eq!(probe, Some(DataplaneOp::MfcProbe(vec![(g, EVEN)])));
    // An unreadable counter is a kernel error, and the entry stays.
    let probed = |packets| {
        vec![Probed {
            group: g,
            source: EVEN,
            packets,
        }]
    };
    lab.router.handle_mfc_counters(at(1), probed(Err(())));
    assert_eq!(lab.status(at(1)).counters.kernel_errors, 1);
    // Unmoved for the idle timeout (60 s): removed.
    lab.router
        .handle_mfc_counters(at(70), probed(Ok(Some(u64::MAX))));
    assert!(matches!(
        &lab.ops()[..],
        [DataplaneOp::MfcRemove(MfcSpec { source: EVEN, .. })]
    ));
    assert_eq!(lab.status(at(70)).counters.mfc_entries, 0);
}

#[test]
fn shutdown_keeps_kernel_state_when_configured() {
    let mut cfg = config();
    cfg.keep_kernel_state = true;
    let mut lab = Lab::new(cfg, setup(NativeDataplane::Nft));
    lab.ops();
    lab.events();
    lab.router.handle_request(at(1), Request::Shutdown);
    assert_eq!(lab.ops(), vec![]);
    assert_eq!(lab.events(), vec![Event::KernelStateKept]);
}

/// Both clocks `ms` after the core's start (NOW), the wall clock stepped by `step_s` seconds.
fn stepped(ms: u64, step_s: i64) -> Clock {
    let wall = NOW.0 as i64 + ms as i64 + step_s * 1_000;
    Clock::new(
        Instant(NOW.0 + ms),
        Timestamp(u64::try_from(wall).expect("after the epoch")),
    )
}

/// Issue 17: a step of the router's wall clock, back or forward by 60 s, 5 s after a join,
/// changes nothing that was scheduled: the queries go at the same moments and the claim
/// expires after its hold (22 s) of monotonic time, neither at once nor a minute late.
#[test]
fn a_wall_clock_step_moves_no_query_and_no_claim_expiry() {
    let run = |step: i64| {
        let mut lab = Lab::mfc();
        lab.transmits();
        lab.join(at(1), 0, &[Slice::ALL], 1, S1);
        lab.events();
        let (mut queries, mut expired) = (Vec::new(), Vec::new());
        for ms in (1_100..=40_000).step_by(100) {
            lab.router
                .handle_timeout(stepped(ms, if ms >= 5_000 { step } else { 0 }));
            lab.ops();
            queries.extend(lab.transmits().iter().map(|t| (ms, t.ifindex)));
            let gone = lab
                .events()
                .into_iter()
                .filter(|e| matches!(e, Event::ClaimsExpired { lost, .. } if !lost.is_empty()));
            expired.extend(gone.map(|_| ms));
        }
        (queries, expired)
    };
    let (queries, expired) = run(0);
    assert_eq!(expired, vec![23_000], "the hold ends 22 s after the join");
    assert!(!queries.is_empty());
    for step in [-60, 60] {
        assert_eq!(
            run(step),
            (queries.clone(), expired.clone()),
            "step {step} s"
        );
    }
}
