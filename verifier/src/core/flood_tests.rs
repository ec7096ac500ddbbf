//! Floods against the core (issue 13, items 5 and 12): junk and forged joins, spoofed from a
//! member's address or from rotating addresses, must not keep a member's valid join out.
//! Counts and states only; no clocks.

use super::tests::{config, setup, Lab, S1};
use super::*;
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::join::{build_datagram, build_signed_report};
use igmp_ext::Slice;

/// An IPv4 datagram to 224.0.0.22 "from" `src` whose IGMP part fails its checksum: the cheapest
/// junk, refused before any key is looked up.
fn junk(src: Ipv4Addr) -> Vec<u8> {
    let mut igmp = [0u8; 16];
    igmp[0] = 0x22; // IGMPv3 membership report
    igmp[2] = 0xde; // a checksum that does not verify
    build_datagram(src, &igmp)
}

/// A spoofed address on the members' link (10.0.0.0/24), one per `n`, none a member's.
fn rotating(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, (n % 90) as u8 + 100)
}

/// Member `i`'s join signed with nonce `nonce`, sent "from" `from`: when `from` is not the
/// member's address, its signature does not verify (it covers the sender).
fn join_from(lab: &Lab, i: usize, nonce: u64, from: Ipv4Addr) -> Vec<u8> {
    let f = &lab.fixture;
    let m = &f.members[i];
    let claims = f.claims(&[Slice::new(i as u32, 7)], 1, NOW, nonce);
    let igmp = build_signed_report(&claims, m.addr, &m.cert, &m.key).expect("fits");
    build_datagram(from, &igmp)
}

fn small_budget() -> RouterConfig {
    let mut cfg = config();
    cfg.admission.verify_per_second = 100; // ten checks per round at most
    cfg.admission.backlog = 64;
    cfg
}

fn accepted(lab: &Lab) -> u64 {
    lab.status(NOW).counters.joins_accepted
}

/// Issue 13, item 5: junk "from" a member's address above the old per-source rate (50/s) made
/// the limiter, which ran before parsing, refuse that member's own valid join.
#[test]
fn junk_spoofed_from_a_members_address_does_not_block_its_join() {
    let mut lab = Lab::new(config(), setup(NativeDataplane::Mroute));
    let member = lab.fixture.members[0].addr;
    for _ in 0..500 {
        lab.router
            .handle_datagram(NOW, Some(S1), &junk(member), &lab.keys);
    }
    let join = lab.fixture.join(0, &[Slice::ALL], 1, 1);
    lab.router.handle_datagram(NOW, Some(S1), &join, &lab.keys);
    assert_eq!(accepted(&lab), 1, "{:?}", lab.events().last());
    assert_eq!(lab.holders().len(), 1);
}

/// Issue 13, item 5: junk from rotating spoofed sources above the old per-interface rate
/// (2,000/s) made the limiter refuse every join on the link.
#[test]
fn junk_from_rotating_sources_does_not_block_a_valid_join() {
    let mut lab = Lab::new(config(), setup(NativeDataplane::Mroute));
    for n in 0..5_000 {
        lab.router
            .handle_datagram(NOW, Some(S1), &junk(rotating(n)), &lab.keys);
    }
    let join = lab.fixture.join(1, &[Slice::ALL], 1, 1);
    lab.router.handle_datagram(NOW, Some(S1), &join, &lab.keys);
    assert_eq!(accepted(&lab), 1, "{:?}", lab.events().last());
}

/// Forged joins claiming member 0 (its certificate copied, the signature broken by a spoofed
/// sender) arrive from rotating addresses far above the verification budget. Member 0's
/// refresh from where its claim is goes first (class "expected") and is accepted in the same
/// round; the forgeries wait or are shed, and no member's claim is lost.
#[test]
fn a_refresh_from_the_claims_place_is_verified_first_under_a_forgery_flood() {
    let mut lab = Lab::new(small_budget(), setup(NativeDataplane::Mroute));
    let own = lab.fixture.members[0].addr;
    let first = join_from(&lab, 0, 1, own);
    lab.router.handle_datagram(NOW, Some(S1), &first, &lab.keys);
    assert_eq!(accepted(&lab), 1);
    let forged: Vec<Vec<u8>> = (0..500)
        .map(|n| join_from(&lab, 0, 100 + n as u64, rotating(n)))
        .collect();
    let refresh = join_from(&lab, 0, 2, own);
    let mut burst: Vec<(Option<u32>, &[u8])> =
        forged.iter().map(|d| (Some(S1), d.as_slice())).collect();
    burst.push((Some(S1), &refresh));
    lab.events();
    lab.router.handle_burst(NOW, &burst, &lab.keys);
    assert_eq!(
        accepted(&lab),
        2,
        "the refresh was verified in the flood's round"
    );
    let st = lab.status(NOW).counters;
    let round = st.verify_checked - 1;
    assert!(round <= 10, "the budget held: {round}");
    assert_eq!(st.verify_backlog, 64 - round, "the backlog is bounded");
    let shed = st.rate_limited.iter().find(|(l, _)| l == "capacity");
    assert_eq!(shed.map(|(_, n)| *n), Some(500 + 1 - 64));
    let expected = st.verify_queued.iter().find(|(c, _)| c == "expected");
    assert_eq!(expected.map(|(_, n)| *n), Some(1));
    // Every forgery that got a check was refused for its signature, none for anything else.
    let bad = st.rejected.iter().find(|(r, _)| r == "bad-signature");
    assert_eq!(bad.map(|(_, n)| *n), Some(round - 1));
}

/// Issue 13, item 12: a burst of valid joins with one forged among them is verified as one
/// batch; the batch fails, so each is checked alone: the valid ones are accepted and the
/// forged one is refused with its reason.
#[test]
fn a_burst_with_one_forgery_accepts_the_valid_joins() {
    let mut lab = Lab::new(config(), setup(NativeDataplane::Mroute));
    let f = Fixture::new(6);
    lab.keys = f.key_source();
    lab.fixture = f;
    let mut joins: Vec<Vec<u8>> = (0..6)
        .map(|i| join_from(&lab, i, i as u64, lab.fixture.members[i].addr))
        .collect();
    joins[3] = join_from(&lab, 3, 3, rotating(3));
    let burst: Vec<(Option<u32>, &[u8])> = joins.iter().map(|d| (Some(S1), d.as_slice())).collect();
    lab.events();
    lab.router.handle_burst(NOW, &burst, &lab.keys);
    let events = lab.events();
    let accepted: Vec<MemberId> = events
        .iter()
        .filter_map(|e| match e {
            Event::JoinAccepted { member, .. } => Some(*member),
            _ => None,
        })
        .collect();
    assert_eq!(accepted, [1, 2, 3, 5, 6].map(MemberId));
    let refused: Vec<(Reason, Option<Ipv4Addr>)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected { reason, sender, .. } => Some((*reason, *sender)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [(Reason::BadSignature, Some(rotating(3)))]);
}

/// A copy of member `i`'s join for `slices` at `epoch`, stamped `now`, from the member's own
/// address, whose signature does not verify (it was made for another sender): every cheap check
/// passes, so only a signature check can refuse it.
fn bad_copy(
    lab: &Lab,
    i: usize,
    slices: &[Slice],
    epoch: u64,
    now: Timestamp,
    nonce: u64,
) -> Vec<u8> {
    let f = &lab.fixture;
    let m = &f.members[i];
    let claims = f.claims(slices, epoch, now, nonce);
    let igmp = build_signed_report(&claims, rotating(0), &m.cert, &m.key).expect("fits");
    build_datagram(m.addr, &igmp)
}

/// Issue 13 (`make bench B=attack` at the generator's top rate): bad-signature copies from a
/// member's own address, far above the verification budget, drowned the member's refreshes in
/// its own class, and its claim expired while the member was alive (its clients black-holed,
/// the control group none the wiser). A copy shed unverified from where the claim is may have
/// been the refresh, so it now keeps the claim; a later epoch still takes the slices at once,
/// and once the flood ends the claim expires as before.
#[test]
fn a_flood_of_copies_from_a_members_address_expires_none_of_its_claims() {
    use super::tests::at;
    let mut lab = Lab::new(small_budget(), setup(NativeDataplane::Mroute));
    let half = [Slice::new(0, 1)];
    lab.join(NOW, 0, &half, 1, S1);
    assert_eq!(lab.holders(), [MemberId(1)]);
    // The member sends nothing the flood lets through: 50 s of copies, 200 a second (the
    // budget checks 100), each second's in one burst. Then the control group moves the slices
    // to member 2 (a later epoch), whose join arrives amid the flood: it takes them.
    let mut nonce = 1_000;
    let mut burst_at = |lab: &mut Lab, t: u64, extra: Option<Vec<u8>>| {
        let mut copies: Vec<Vec<u8>> = (0..200)
            .map(|_| {
                nonce += 1;
                bad_copy(lab, 0, &half, 1, at(t), nonce)
            })
            .collect();
        copies.extend(extra);
        let burst: Vec<(Option<u32>, &[u8])> =
            copies.iter().map(|d| (Some(S1), d.as_slice())).collect();
        lab.router.handle_burst(at(t), &burst, &lab.keys);
        let tick = at(t).saturating_add(core::time::Duration::from_millis(500));
        lab.router.handle_timeout(tick);
    };
    for t in 1..=50 {
        burst_at(&mut lab, t, None);
        assert_eq!(lab.holders(), [MemberId(1)], "the claim expired at {t} s");
    }
    assert!(lab.status(at(50)).counters.claims_held_unverified > 0);
    let f = &lab.fixture;
    let takeover = f.datagram(1, &f.claims(&half, 2, at(51), 1));
    burst_at(&mut lab, 51, Some(takeover));
    assert_eq!(
        lab.holders(),
        [MemberId(2)],
        "the later epoch took the slices"
    );
}

/// The other side of the rule above: copies the verifier does check (here 5 a second against a
/// budget of 100) and refuses keep no claim, so a slow stream of forgeries cannot keep a dead
/// member's slices, and neither can a flood that stopped.
#[test]
fn checked_copies_keep_no_claim_past_its_hold() {
    use super::tests::at;
    let mut lab = Lab::new(small_budget(), setup(NativeDataplane::Mroute));
    let half = [Slice::new(0, 1)];
    lab.join(NOW, 0, &half, 1, S1);
    let mut nonce = 1_000;
    let mut gone_at = None;
    for t in 1..=30 {
        let copies: Vec<Vec<u8>> = (0..5)
            .map(|_| {
                nonce += 1;
                bad_copy(&lab, 0, &half, 1, at(t), nonce)
            })
            .collect();
        let burst: Vec<(Option<u32>, &[u8])> =
            copies.iter().map(|d| (Some(S1), d.as_slice())).collect();
        lab.router.handle_burst(at(t), &burst, &lab.keys);
        lab.router.handle_timeout(at(t));
        if gone_at.is_none() && lab.holders().is_empty() {
            gone_at = Some(t);
        }
    }
    assert_eq!(
        gone_at,
        Some(22),
        "the claim lasts its hold (22 s), no more"
    );
    let c = lab.status(at(30)).counters;
    assert_eq!(c.claims_held_unverified, 0);
    let bad = c.rejected.iter().find(|(r, _)| r == "bad-signature");
    assert_eq!(bad.map(|(_, n)| *n), Some(150), "every copy was checked");
}

/// Issue 13 (`make bench B=attack` at the generator's top rate): the kernel dropped two of every
/// five datagrams at the verifier's full socket queue, members' refreshes among them, and a
/// live member's claim expired. The daemon now reads the socket's drop counter (SO_RXQ_OVFL)
/// and tells the core, which keeps every claim one hold from the last drop; once drops stop,
/// claims expire as before.
#[test]
fn a_socket_overflow_expires_no_claim_until_a_hold_after_it_ends() {
    use super::tests::at;
    let mut lab = Lab::mfc();
    lab.join(NOW, 0, &[Slice::new(0, 1)], 1, S1);
    for t in 1..=40 {
        lab.router.handle_socket_overflow(at(t), 500);
        lab.router.handle_timeout(at(t));
        assert_eq!(lab.holders(), [MemberId(1)], "the claim expired at {t} s");
    }
    let c = lab.status(at(40)).counters;
    assert_eq!(c.socket_drops, 40 * 500);
    assert_eq!(c.claims_held_unverified, 40);
    lab.router.handle_timeout(at(61));
    assert_eq!(lab.holders(), [MemberId(1)], "held until 40 s + 22 s");
    lab.router.handle_timeout(at(62));
    assert!(lab.holders().is_empty());
}
