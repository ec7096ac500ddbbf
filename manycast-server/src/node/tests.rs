//! The node's decisions without a network: control-channel events and commits are built in
//! memory, time is passed in, and the tests read the actions and the signed joins it emits.

use super::*;
use crate::join_agent::{AgentConfig, Identity};
use crate::session_state::{SessionRecord, SessionRecord6, StateTransfer};
use control_channel::endpoint::{proposal_digest, proposal_for};
use control_channel::EpochId;
use igmp_ext::fixtures::{nonce_bytes, Fixture, NOW};
use igmp_ext::wire::igmp::IgmpPacket;
use igmp_ext::wire::record::RecordType;
use igmp_ext::{Allocation, JoinClaims, Timestamp, UnverifiedJoin};

const M1: MemberId = MemberId(1);
const M2: MemberId = MemberId(2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// Four units by the two low address bits.
const SLICING: Slicing = Slicing::LowOrder { bits: 2 };
const HOLD: Duration = Duration::from_millis(500);

/// Both clocks `ms` after the node's start (monotonic time from 0, the wall clock from NOW).
fn at(ms: u64) -> Clock {
    Clock::new(
        Instant::from_millis(ms),
        NOW.saturating_add(Duration::from_millis(ms)),
    )
}

/// A client in unit `unit` (10.1.0.x with x's low bits = unit).
fn client(unit: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 4 + unit), 7000)
}

fn native(strategy: Strategy) -> NodeConfig {
    NodeConfig {
        me: M1,
        strategy,
        slicing: SLICING,
        session_idle: Duration::from_secs(60),
        max_sessions: 100,
        hold: HOLD,
        drain_timeout: Duration::from_secs(30),
        direct_path: None,
        vip: None,
        vip_reset: false,
        vip_forward_linger: None,
        health: Vec::new(),
    }
}

fn vip_forward() -> NodeConfig {
    NodeConfig {
        direct_path: Some(SocketAddr::from((Ipv4Addr::new(10, 0, 1, 2), 4790))),
        vip: Some(VIP),
        vip_forward_linger: Some(Duration::from_secs(300)),
        ..native(Strategy::Forward)
    }
}

/// Member 1 of a fixture group, with a fixed random source for the report jitter.
fn node(config: NodeConfig) -> Node {
    let f = Fixture::new(2);
    let m = &f.members[0];
    assert_eq!(m.id, M1);
    let agent = JoinAgent::new(
        AgentConfig::default(),
        Identity {
            key: m.key.clone(),
            cert: m.cert.clone(),
            sender: m.addr,
        },
        f.group,
    );
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    Node::new(config, agent, Box::new(random), Instant(0))
}

/// A commit at `epoch` listing `members` (weight 1 each), unit i owned by `owners[i]`: the
/// event as the endpoint reports it to member 1, and the allocation it follows.
fn commit(
    epoch: u64,
    members: &[MemberId],
    owners: [Option<MemberId>; 4],
) -> (Event, CommittedAllocation) {
    let allocation = Allocation::from_unit_owners(SLICING, owners.to_vec()).expect("allocation");
    let id = EpochId {
        epoch,
        proposer: members[0].0,
        incarnation: 1,
    };
    let weighted: Vec<(MemberId, u32)> = members.iter().map(|&m| (m, 1)).collect();
    let proposal = proposal_for(id, &weighted, &allocation);
    let digest = proposal_digest(&proposal);
    let event = Event::Committed {
        id,
        digest,
        slices: allocation.slices_of(M1),
    };
    let committed = CommittedAllocation {
        proposal,
        allocation,
        digest,
    };
    (event, committed)
}

fn deliver(n: &mut Node, now: Clock, (event, committed): (Event, CommittedAllocation)) {
    n.handle_event(now, event, Some(&committed));
}

fn actions(n: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

/// The joins due at `now`, decoded from the signed datagrams.
fn joins(n: &mut Node, now: Clock) -> Vec<JoinClaims> {
    let mut nonce = 0;
    std::iter::from_fn(|| {
        nonce += 1;
        n.poll_transmit(now, nonce_bytes(nonce))
    })
    .map(|d| {
        let d = d.expect("a signed report");
        let ihl = usize::from(d[0] & 0x0f) * 4;
        let packet = IgmpPacket::new_checked(&d[ihl..]).expect("IGMP");
        let join = UnverifiedJoin::parse(&packet, |_| true)
            .expect("a signed join")
            .expect("for our group");
        join.claims().clone()
    })
    .collect()
}

fn entries(owners: [Option<MemberId>; 4]) -> Vec<SliceEntry> {
    let a = Allocation::from_unit_owners(SLICING, owners.to_vec()).expect("allocation");
    a.slices_of(M1)
        .iter()
        .copied()
        .map(SliceEntry::include)
        .collect()
}

fn plans(actions: &[Action]) -> Vec<BTreeMap<u32, MemberId>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ForwardPlan(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn reply_texts(actions: &[Action]) -> Vec<(SocketAddr, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Service(ServiceAction::Reply(r)) => {
                Some((r.to, String::from_utf8_lossy(&r.payload).into_owned()))
            }
            _ => None,
        })
        .collect()
}

/// The transfer an old owner sends when units move: `units` of M2's, and its sessions.
fn transfer(epoch: u64, units: Vec<u32>, sessions: &[SocketAddrV4]) -> Event {
    let records = sessions
        .iter()
        .map(|c| SessionRecord {
            addr: u32::from(*c.ip()),
            port: c.port(),
            count: 4,
            last_request: None,
        })
        .collect();
    Event::StateReceived {
        from: M2,
        transfer_id: epoch,
        data: StateTransfer::new(epoch, units, records, Vec::new()).encode(),
    }
}

const HALF: [Option<MemberId>; 4] = [Some(M1), Some(M2), Some(M1), Some(M2)];
const ALL_M1: [Option<MemberId>; 4] = [Some(M1); 4];
const ALL_M2: [Option<MemberId>; 4] = [Some(M2); 4];

#[test]
fn every_commit_is_claimed_with_its_slices_at_its_epoch() {
    let mut n = node(native(Strategy::Reset));
    assert!(
        joins(&mut n, at(0)).is_empty(),
        "nothing claimed before a commit"
    );
    deliver(&mut n, at(0), commit(3, &[M1, M2], HALF));
    let sent = joins(&mut n, at(0));
    assert_eq!(sent.len(), 1, "the change goes at once, its repeat later");
    assert_eq!(sent[0].record_type, RecordType::ChangeToIncludeMode);
    assert_eq!(sent[0].epoch, AllocationEpoch(3));
    assert_eq!(sent[0].entries, entries(HALF));
    deliver(&mut n, at(10), commit(4, &[M1], ALL_M1));
    let sent = joins(&mut n, at(10));
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].epoch, sent[0].entries.clone()),
        (AllocationEpoch(4), entries(ALL_M1))
    );
    // A commit that leaves us nothing is claimed too: an empty claim at its epoch.
    deliver(&mut n, at(20), commit(5, &[M1, M2], ALL_M2));
    let sent = joins(&mut n, at(20));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].epoch, AllocationEpoch(5));
    assert!(sent[0].entries.is_empty());
    let mut s = Snapshot::default();
    n.snapshot_into(&mut s);
    assert_eq!((s.commits, s.epoch, s.slices), (3, 5, 0));
}

/// The control channel's answer to a first commit: the allocation it was made from.
fn previous(owners: [Option<MemberId>; 4]) -> Event {
    Event::PreviousAllocation {
        id: EpochId {
            epoch: 4,
            proposer: 1,
            incarnation: 1,
        },
        allocation: Allocation::from_unit_owners(SLICING, owners.to_vec()).expect("allocation"),
    }
}

#[test]
fn vip_forward_holds_a_first_claim_until_the_previous_allocation_names_the_old_owner() {
    let mut n = node(vip_forward());
    // Member 1 just started: it gains units 1 and 3 without knowing who had them.
    let first = [Some(M2), Some(M1), Some(M2), Some(M1)];
    deliver(&mut n, at(0), commit(5, &[M1, M2], first));
    assert!(joins(&mut n, at(0)).is_empty(), "the claim is held back");
    assert_eq!(n.held_claim(), Some(&(entries(first), AllocationEpoch(5))));
    assert_eq!(plans(&actions(&mut n)), vec![BTreeMap::new()]);
    // Still held just before the hold ends.
    n.handle_timeout(at(499));
    assert!(joins(&mut n, at(499)).is_empty());
    // Member 2's transfer alone proves nothing (issue 13): still held.
    n.handle_event(at(499), transfer(5, vec![1, 3], &[]), None);
    assert!(joins(&mut n, at(499)).is_empty());
    // The previous allocation names member 2 as the old owner: forwarding first, then the
    // claim.
    n.handle_event(at(499), previous([Some(M2); 4]), None);
    let done = actions(&mut n);
    assert_eq!(
        plans(&done).last(),
        Some(&BTreeMap::from([(1, M2), (3, M2)]))
    );
    let sent = joins(&mut n, at(499));
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].epoch, sent[0].entries.clone()),
        (AllocationEpoch(5), entries(first))
    );
    assert_eq!(n.held_claim(), None);
}

#[test]
fn a_held_claim_goes_out_when_the_hold_time_passes() {
    let mut n = node(vip_forward());
    deliver(&mut n, at(0), commit(5, &[M1, M2], HALF));
    assert!(joins(&mut n, at(0)).is_empty());
    assert_eq!(
        n.poll_timeout(),
        Some(at(500).mono),
        "woken when the hold ends"
    );
    n.handle_timeout(at(500));
    let sent = joins(&mut n, at(500));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].epoch, AllocationEpoch(5));
    // Nothing to forward: the old owner never said which units were its.
    assert_eq!(plans(&actions(&mut n)).last(), Some(&BTreeMap::new()));
}

#[test]
fn only_a_vip_forward_member_holds_its_claim_and_only_while_old_owners_are_unknown() {
    // Native forward: claimed at once.
    let mut n = node(native(Strategy::Forward));
    deliver(&mut n, at(0), commit(5, &[M1, M2], HALF));
    assert_eq!(joins(&mut n, at(0)).len(), 1);
    // VIP forward, alone in the cluster: nobody to wait for.
    let mut n = node(vip_forward());
    deliver(&mut n, at(0), commit(1, &[M1], ALL_M1));
    assert_eq!(joins(&mut n, at(0)).len(), 1);
    // A later commit gains unit 1 from M2, known from the previous allocation: claimed at once,
    // and forwarded to M2.
    deliver(&mut n, at(10), commit(2, &[M1, M2], ALL_M2));
    deliver(
        &mut n,
        at(20),
        commit(3, &[M1, M2], [Some(M2), Some(M1), Some(M2), Some(M2)]),
    );
    let sent = joins(&mut n, at(20));
    assert_eq!(sent.last().map(|j| j.epoch), Some(AllocationEpoch(3)));
    assert_eq!(
        plans(&actions(&mut n)).last(),
        Some(&BTreeMap::from([(1, M2)]))
    );
    // M2 leaves: its overlay peer goes and nothing is forwarded to it any more.
    n.handle_event(at(30), Event::MemberLeft(M2), None);
    let done = actions(&mut n);
    assert_eq!(done.first(), Some(&Action::ForwardPeerLeft(M2)));
    assert_eq!(plans(&done).last(), Some(&BTreeMap::new()));
}

#[test]
fn sigterm_drain_asks_for_weight_zero_and_leaves_once_the_commit_without_us_is_handed_off() {
    let mut n = node(native(Strategy::Handoff));
    deliver(&mut n, at(0), commit(1, &[M1, M2], HALF));
    // A first commit waits for old owners' state; none comes, so the client starts here.
    n.handle_datagram(at(1), client(0), b"r1");
    n.handle_timeout(at(500));
    assert_eq!(reply_texts(&actions(&mut n)).len(), 1);
    n.begin_drain(at(600));
    assert_eq!(actions(&mut n), vec![Action::Drain]);
    n.begin_drain(at(601));
    assert!(actions(&mut n).is_empty(), "a second begin changes nothing");
    assert!(!n.drain_finished(at(700)), "still owns slices");
    // The coordinator's next allocation gives everything to M2: our sessions go there.
    deliver(&mut n, at(800), commit(2, &[M1, M2], ALL_M2));
    let moved: Vec<(MemberId, u64, StateTransfer)> = actions(&mut n)
        .into_iter()
        .filter_map(|a| match a {
            Action::Service(ServiceAction::SendState {
                to,
                transfer_id,
                data,
            }) => Some((
                to,
                transfer_id,
                StateTransfer::decode(&data).expect("decodes"),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].0, moved[0].1), (M2, 2));
    assert_eq!(moved[0].2.sessions[0].client(), client(0));
    let sent = joins(&mut n, at(800));
    assert!(sent.iter().all(|j| j.entries.is_empty()), "empty claim");
    assert!(
        !n.drain_finished(at(900)),
        "the transfer is not acknowledged yet"
    );
    n.handle_event(
        at(1_000),
        Event::TransferComplete {
            to: M2,
            transfer_id: 2,
        },
        None,
    );
    assert!(n.drain_finished(at(1_000)));
}

#[test]
fn a_refused_transfer_does_not_hold_the_drain() {
    let mut n = node(native(Strategy::Handoff));
    deliver(&mut n, at(0), commit(1, &[M1, M2], HALF));
    n.begin_drain(at(1));
    deliver(&mut n, at(2), commit(2, &[M1, M2], ALL_M2));
    assert!(!n.drain_finished(at(3)));
    n.handle_send_failed(M2, 2);
    assert!(n.drain_finished(at(3)));
}

#[test]
fn a_drain_that_starts_after_the_member_was_emptied_ends_without_another_commit() {
    // An admin drain emptied member 1 (SPEC.md §11.6); then SIGTERM: no further commit comes.
    let mut n = node(native(Strategy::Pin));
    deliver(&mut n, at(0), commit(1, &[M1, M2], HALF));
    deliver(&mut n, at(10), commit(2, &[M1, M2], ALL_M2));
    n.begin_drain(at(20));
    assert!(n.drain_finished(at(20)));
    // Before any commit a drain waits for one, up to the drain timeout.
    let mut fresh = node(native(Strategy::Pin));
    fresh.begin_drain(at(0));
    assert!(!fresh.drain_finished(at(29_999)));
    assert!(fresh.drain_finished(at(30_000)));
}

#[test]
fn a_vip_drain_waits_for_a_count_of_zero_taken_after_the_emptying_commit() {
    let mut n = node(NodeConfig {
        vip: Some(VIP),
        ..native(Strategy::Pin)
    });
    deliver(&mut n, at(0), commit(1, &[M1, M2], HALF));
    n.handle_tick(at(1_000));
    assert!(
        !actions(&mut n).contains(&Action::CountVipConnections(VIP)),
        "counted only while draining"
    );
    n.begin_drain(at(1_100));
    n.handle_tick(at(2_000));
    assert!(actions(&mut n).contains(&Action::CountVipConnections(VIP)));
    n.handle_vip_connections(0);
    assert!(!n.drain_finished(at(2_001)), "not emptied yet");
    deliver(&mut n, at(2_100), commit(2, &[M1, M2], ALL_M2));
    assert!(
        !n.drain_finished(at(2_101)),
        "a count from before the commit does not count"
    );
    n.handle_tick(at(3_000));
    assert!(actions(&mut n).contains(&Action::CountVipConnections(VIP)));
    n.handle_vip_connections(2);
    let mut s = Snapshot::default();
    n.snapshot_into(&mut s);
    assert_eq!((s.draining, s.drain_connections), (true, 2));
    assert!(
        !n.drain_finished(at(3_001)),
        "pinned connections still open"
    );
    n.handle_vip_connections(0);
    assert!(n.drain_finished(at(4_001)));
}

#[test]
fn a_move_resets_the_moved_clients_under_reset() {
    let mut n = node(NodeConfig {
        vip: Some(VIP),
        vip_reset: true,
        ..native(Strategy::Reset)
    });
    deliver(&mut n, at(0), commit(1, &[M1, M2], HALF));
    n.handle_datagram(at(1), client(0), b"");
    n.handle_datagram(at(1), client(2), b"");
    actions(&mut n);
    // Unit 2 moves to M2.
    let after = [Some(M1), Some(M2), Some(M2), Some(M2)];
    deliver(&mut n, at(10), commit(2, &[M1, M2], after));
    let done = actions(&mut n);
    let ours = Allocation::from_unit_owners(SLICING, after.to_vec())
        .expect("allocation")
        .slices_of(M1);
    assert_eq!(done.first(), Some(&Action::ResetMoved(ours)));
    assert_eq!(
        reply_texts(&done),
        vec![(client(2).into(), "m1 reset\n".to_owned())]
    );
}

/// Which VIP configurations hand each commit's slices to the reset task: `reset`, with or
/// without the IPv6 VIP; not `pin`, and not `forward`, whose overlay carries both VIPs'
/// connections (SPEC.md §11.7.2).
#[test]
fn the_reset_task_runs_under_reset_only_with_or_without_an_ipv6_vip() {
    let file = |strategy: &str, vip6: bool| {
        let text = format!(
            "group = \"232.1.1.1\"\ngroup6 = \"ff3e::8000:1\"\ninterface = \"eth0\"\n\
             member_key = \"/k\"\nmember_cert = \"/c\"\ngroup_pub = \"/g\"\nmode = \"vip\"\n\
             strategy = \"{strategy}\"\n[vip]\naddress = \"10.200.0.1\"\n{}\
             forward_overlay = \"10.99.0.0/24\"\n",
            if vip6 {
                "address6 = \"2001:db8:f::1\"\n"
            } else {
                ""
            }
        );
        let config = Config::parse(&text).expect("config");
        let path = Some(SocketAddr::from((Ipv4Addr::new(10, 0, 1, 2), 4790)));
        NodeConfig::new(&config, M1, path).vip_reset
    };
    assert!(file("reset", false) && file("reset", true));
    assert!(!file("forward", false) && !file("forward", true));
    assert!(!file("pin", false) && !file("pin", true));
}

#[test]
fn a_new_owner_under_forward_passes_moved_clients_to_the_old_owner() {
    let mut n = node(native(Strategy::Forward));
    deliver(&mut n, at(0), commit(1, &[M1, M2], HALF));
    n.handle_event(
        at(1),
        Event::DirectPath {
            member: M2,
            addr: SocketAddr::from((Ipv4Addr::new(10, 0, 2, 2), 4790)),
        },
        None,
    );
    // Unit 1 comes to us from M2, which sends its session of client(1).
    deliver(
        &mut n,
        at(10),
        commit(2, &[M1, M2], [Some(M1), Some(M1), Some(M1), Some(M2)]),
    );
    actions(&mut n);
    n.handle_datagram(at(11), client(1), b"r9");
    assert!(actions(&mut n).is_empty(), "held until M2's state arrives");
    n.handle_event(at(12), transfer(2, vec![1], &[client(1)]), None);
    let done = actions(&mut n);
    let forward = Action::Service(ServiceAction::Forward {
        to: M2,
        client: client(1).into(),
        payload: b"r9".to_vec(),
    });
    assert_eq!(
        done,
        vec![forward],
        "the held datagram goes to the old owner"
    );
    let mut s = Snapshot::default();
    n.snapshot_into(&mut s);
    assert_eq!((s.service.forwarded, s.forwarded_direct), (1, 1));
    // Another client of the unit is ours.
    n.handle_datagram(at(13), SocketAddrV4::new(*client(1).ip(), 7001), b"");
    assert_eq!(reply_texts(&actions(&mut n)).len(), 1);
}

#[test]
fn answered_datagrams_are_reported_as_load_per_unit() {
    let mut n = node(native(Strategy::Reset));
    deliver(
        &mut n,
        at(0),
        commit(1, &[M1, M2], [Some(M1), Some(M1), Some(M1), Some(M2)]),
    );
    for _ in 0..3 {
        n.handle_datagram(at(1), client(1), b"");
    }
    n.handle_datagram(at(1), client(2), b"");
    // Unit 3 is M2's: filtered, not answered, no load.
    n.handle_datagram(at(1), client(3), b"");
    actions(&mut n);
    n.handle_tick(at(1_000));
    let load: Vec<Vec<(u16, u32)>> = actions(&mut n)
        .into_iter()
        .filter_map(|a| match a {
            Action::SetLoad(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(load, vec![vec![(1, 3), (2, 1)]]);
}

#[test]
fn the_direct_path_is_announced_to_newcomers_and_every_tick() {
    let mut n = node(vip_forward());
    let path = vip_forward().direct_path.expect("set");
    n.handle_event(at(0), Event::MemberUp(M2), None);
    assert_eq!(actions(&mut n), vec![Action::AdvertiseDirectPath(path)]);
    n.handle_tick(at(1_000));
    assert!(actions(&mut n).contains(&Action::AdvertiseDirectPath(path)));
    // Its direct path is M2's underlay address for the overlay.
    n.handle_event(
        at(1),
        Event::DirectPath {
            member: M2,
            addr: SocketAddr::from((Ipv4Addr::new(10, 0, 2, 2), 4790)),
        },
        None,
    );
    assert_eq!(
        actions(&mut n),
        vec![Action::ForwardPeer {
            member: M2,
            addr: Ipv4Addr::new(10, 0, 2, 2)
        }]
    );
}

#[test]
fn leaving_sends_the_empty_claim_robustness_times() {
    let mut n = node(native(Strategy::Reset));
    deliver(&mut n, at(0), commit(1, &[M1], ALL_M1));
    joins(&mut n, at(0));
    joins(&mut n, at(1_000));
    n.leave(at(2_000));
    let mut sent = joins(&mut n, at(2_000));
    while let Some(t) = n.poll_join_timeout() {
        sent.extend(joins(&mut n, at(t.as_millis())));
    }
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|j| j.entries.is_empty() && j.epoch == AllocationEpoch(1)));
}

#[test]
fn igmp_that_is_not_a_query_is_ignored() {
    let mut n = node(native(Strategy::Reset));
    for bytes in [&[][..], &[0x45][..], &[0x4f, 0, 0, 0][..], &[0x45; 64][..]] {
        n.handle_igmp(at(0), bytes);
    }
    let mut s = Snapshot::default();
    n.snapshot_into(&mut s);
    assert_eq!(s.queries, 0);
}

/// `control.site_scope`: the scope notice of a query heard on the link reaches the tracker,
/// judged by the wall clock, and a new scope becomes the control group's (`Action::SetScope`);
/// the query is still answered as before.
#[test]
fn a_querys_scope_notice_reaches_the_site_scope_tracker_and_sets_the_groups_scope() {
    use crate::site_scope::SiteScopeTracker;
    use igmp_ext::join::build_datagram;
    use igmp_ext::wire::igmp::QueryV3Fields;
    use igmp_ext::SiteId;
    let routers = Fixture::routers(&[SiteId(7)]);
    let tracker = SiteScopeTracker::new(routers.group, &[routers.group_key.verifying_key()], &[]);
    let mut n = node(native(Strategy::Reset)).with_site_scope(tracker);
    let notice = routers.scope_notice(SiteId(7), 2, SLICING, &[1, 2]);
    let mut v3 = QueryV3Fields {
        flags: 0,
        suppress: false,
        qrv: 2,
        qqic: 125,
        sources: vec![],
        additional_data: vec![],
    };
    let r = &routers.members[0];
    notice.sign_into(&mut v3, &r.cert, &r.key).unwrap();
    let query = IgmpRepr::Query(QueryRepr {
        max_resp_code: 10,
        group: Ipv4Addr::UNSPECIFIED,
        v3: Some(v3),
    });
    let mut igmp = vec![0u8; query.buffer_len()];
    query.emit(&mut igmp);
    let datagram = build_datagram(r.addr, &igmp);
    // A minute late: untimely, refused, nothing kept.
    n.handle_igmp(at(60_000), &datagram);
    let t = n.site_scope().unwrap();
    assert_eq!(t.current(routers.group), None);
    assert_eq!(
        t.counters().refused(igmp_ext::scope::ScopeReason::Untimely),
        1
    );
    let set_scope = |n: &mut Node| -> Vec<control_channel::Scope> {
        actions(n)
            .into_iter()
            .filter_map(|a| match a {
                Action::SetScope(s) => Some(s),
                _ => None,
            })
            .collect()
    };
    assert_eq!(set_scope(&mut n), [], "a refused notice sets no scope");
    n.handle_igmp(at(0), &datagram);
    let kept = n.site_scope().unwrap().current(routers.group).unwrap();
    assert_eq!((kept.site, kept.upper_epoch), (SiteId(7), 2));
    assert_eq!(kept.units, [false, true, true, false]);
    // The new scope goes to the control endpoint, once: the same notice again changes nothing.
    assert_eq!(
        set_scope(&mut n),
        [control_channel::Scope {
            upper_epoch: 2,
            units: vec![false, true, true, false],
        }]
    );
    n.handle_igmp(at(0), &datagram);
    assert_eq!(set_scope(&mut n), []);
    let mut s = Snapshot::default();
    n.snapshot_into(&mut s);
    assert_eq!(s.queries, 3);
    let status = s.site_scope.expect("tracked");
    assert_eq!(
        (status.counters.accepted, status.current),
        (2, Some((2, 2)))
    );
}

#[test]
fn the_old_owner_hands_off_per_new_owner_and_answers_only_the_owners_forwards() {
    // Handoff: one transfer per new owner, named by the epoch of the move.
    let mut n = node(native(Strategy::Handoff));
    deliver(&mut n, at(0), commit(1, &[M1], ALL_M1));
    n.handle_datagram(at(1), client(2), b"r1");
    actions(&mut n);
    deliver(&mut n, at(10), commit(2, &[M1, M2], HALF));
    let sent: Vec<(MemberId, u64, Vec<SocketAddrV4>)> = actions(&mut n)
        .into_iter()
        .filter_map(|a| match a {
            Action::Service(ServiceAction::SendState {
                to,
                transfer_id,
                data,
            }) => {
                let t = StateTransfer::decode(&data).expect("decodes");
                Some((
                    to,
                    transfer_id,
                    t.sessions.iter().map(|r| r.client()).collect(),
                ))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        vec![(M2, 2, vec![])],
        "client(2) stays: unit 2 is still ours"
    );

    // Forward: the moved session stays here, answered only for the new owner's forwards.
    let mut n = node(native(Strategy::Forward));
    deliver(&mut n, at(0), commit(1, &[M1], ALL_M1));
    n.handle_datagram(at(1), client(1), b"r1");
    actions(&mut n);
    deliver(&mut n, at(10), commit(2, &[M1, M2], HALF));
    assert!(actions(&mut n)
        .iter()
        .any(|a| matches!(a, Action::Service(ServiceAction::SendState { to, .. }) if *to == M2)));
    let forwarded = |from| Event::Forwarded {
        from,
        client: client(1).into(),
        payload: b"r2".to_vec(),
    };
    n.handle_event(at(20), forwarded(MemberId(3)), None);
    assert!(
        actions(&mut n).is_empty(),
        "m3 does not own the client's unit"
    );
    n.handle_event(at(21), forwarded(M2), None);
    assert_eq!(
        reply_texts(&actions(&mut n)),
        vec![(client(1).into(), "m1 2 r2\n".to_owned())]
    );
    n.handle_tick(at(1_000));
    let load: Vec<Action> = actions(&mut n)
        .into_iter()
        .filter(|a| matches!(a, Action::SetLoad(_)))
        .collect();
    assert_eq!(
        load,
        vec![Action::SetLoad(vec![(1, 1)])],
        "a forwarded datagram is the new owner's load, not ours"
    );
}

/// What the shell reads at `mono_ms` of monotonic time when the wall clock has been stepped
/// by `step_s` seconds since the node started (issue 17).
fn stepped(mono_ms: u64, step_s: i64) -> Clock {
    let wall = NOW.0 as i64 + mono_ms as i64 + step_s * 1_000;
    Clock::new(
        Instant::from_millis(mono_ms),
        Timestamp(u64::try_from(wall).expect("after the epoch")),
    )
}

/// A step of the wall clock, back or forward by 60 s, while monotonic time runs on: the claim
/// is refreshed when it is due by monotonic time (not a minute late, not at once) and a
/// session seen 28 s ago is not swept as idle.
#[test]
fn a_wall_clock_step_moves_no_timer_and_expires_no_session() {
    for step in [-60, 60] {
        let mut n = node(native(Strategy::Reset));
        deliver(&mut n, stepped(0, 0), commit(1, &[M1], ALL_M1));
        let reports = joins(&mut n, stepped(0, 0)).len() + joins(&mut n, stepped(1_000, 0)).len();
        assert_eq!(reports, 2, "the change, robustness times");
        n.handle_datagram(stepped(2_000, 0), client(1), b"r1");
        actions(&mut n);
        // The wall clock steps at 5 s; the node runs on, a tick a second, until 70 s.
        let mut refreshed_at = Vec::new();
        let mut second_reply = Vec::new();
        for s in 5..=70u64 {
            let now = stepped(s * 1_000, step);
            n.handle_tick(now);
            n.handle_timeout(now);
            if s == 30 {
                actions(&mut n);
                n.handle_datagram(now, client(1), b"r2");
                second_reply = reply_texts(&actions(&mut n));
            }
            actions(&mut n);
            if !joins(&mut n, now).is_empty() {
                refreshed_at.push(s);
            }
        }
        // The last change report went at 1 s: the refresh is due 60 s (AgentConfig) later.
        assert_eq!(refreshed_at, vec![61], "step {step} s");
        assert_eq!(
            second_reply,
            vec![(client(1).into(), "m1 2 r2\n".to_owned())],
            "step {step} s: the session goes on"
        );
    }
}

mod health;

/// With `group6`, a commit's claim goes over MLDv2 at once too (unit i ↔ unit i of the site
/// slicing) and the leave empties it; nothing goes before the link is known.
#[test]
fn a_commit_is_claimed_over_mld_at_once_and_left() {
    use crate::mld_agent::{Link6, MldAgent};
    use igmp_ext::fixtures::{GROUP6, LINK6};
    use igmp_ext::mld_join::UnverifiedMldJoin;
    use igmp_ext::wire::mld::MldPacket;
    use igmp_ext::SliceSet6;
    let f = Fixture::dual_stack(2, SliceSet6::full());
    let m = &f.members[0];
    let six = MldAgent::new(
        AgentConfig::default(),
        m.key.clone(),
        m.cert.clone(),
        GROUP6,
        SLICING,
    );
    let mut n = node(native(Strategy::Reset)).with_agent6(six);
    let (event, committed) = commit(1, &[M1, M2], HALF);
    let t = Clock::new(Instant(10), NOW);
    n.handle_event(t, event, Some(&committed));
    assert!(n.poll_transmit6(t, nonce_bytes(1)).is_none(), "no link yet");
    n.set_link6(Link6 {
        sender: f.addr6(0),
        prefix: LINK6,
    });
    let claim = |d: Vec<u8>| {
        let ip = igmp_ext::wire::ipv6::Ipv6Packet::new_checked(&d[..]).expect("IPv6");
        let mld = MldPacket::new_checked(&d[ip.header_len()..]).expect("MLD");
        let j = UnverifiedMldJoin::parse(&mld, |_| true)
            .expect("parses")
            .expect("a join");
        (j.claims().record_type, j.claims().slices().expect("slices"))
    };
    let d = n.poll_transmit6(t, nonce_bytes(2)).expect("due at once");
    let (rt, slices) = claim(d.expect("builds"));
    assert_eq!(rt, RecordType::ChangeToIncludeMode);
    let site = SliceSet6::site_slicing(2);
    let expected: SliceSet6 = [site[0], site[2]].into_iter().collect();
    assert_eq!(slices, expected, "units 0 and 2");
    n.leave(Clock::new(Instant(20), NOW));
    let d = n.poll_transmit6(Clock::new(Instant(20), NOW), nonce_bytes(3));
    let (_, slices) = claim(d.expect("the leave at once").expect("builds"));
    assert!(slices.is_empty(), "the leave claims nothing");
}

#[path = "tests_ipv6.rs"]
mod ipv6;
