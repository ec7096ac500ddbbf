//! Native multicast mode: upcall → MFC entry toward the owner of the source's slice, first
//! packets kept, re-pointing on reallocation, refusals counted, clean shutdown, and restart.

use crate::harness::topo::{client_sources, drain, wait_for, RouterLab};
use igmp_ext::Slice;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};

const EVEN: Slice = Slice::new(0, 1);
const ODD: Slice = Slice::new(1, 1);

/// Collects from every receiver until `total` datagrams with `tag` arrived (or the deadline).
pub(super) fn collect(rx: &[UdpSocket], tag: u8, total: usize) -> Vec<BTreeMap<Ipv4Addr, usize>> {
    let mut got = vec![BTreeMap::new(); rx.len()];
    let mut n = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while n < total && std::time::Instant::now() < deadline {
        for (i, r) in rx.iter().enumerate() {
            for (src, t, _) in drain(r) {
                if t == tag {
                    *got[i].entry(src).or_insert(0) += 1;
                    n += 1;
                }
            }
        }
    }
    got
}

pub(super) fn mr_cache_lines(lab: &RouterLab) -> usize {
    lab.router.proc_net("ip_mr_cache").lines().skip(1).count()
}

fn assert_split(got: &[BTreeMap<Ipv4Addr, usize>], sources: &[Ipv4Addr], per_source: usize) {
    for &s in sources {
        let owner = if u32::from(s) & 1 == 0 { 0 } else { 1 };
        assert_eq!(
            got[owner].get(&s).copied(),
            Some(per_source),
            "{s} should reach server {} with every packet: {got:?}",
            owner + 1
        );
        assert_eq!(
            got[1 - owner].get(&s),
            None,
            "{s} reached the wrong server: {got:?}"
        );
    }
}

#[test]
fn native_mode_steers_each_source_to_its_owner_and_repoints() {
    let mut lab = RouterLab::new(2, "");
    lab.start();
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];
    lab.join(0, &[EVEN], 1);
    lab.join(1, &[ODD], 1);
    wait_for("two owners", || lab.status().ownership.len() == 2);

    // Three datagrams per new source, back to back: the kernel queues the first ones while the
    // verifier answers the upcall, then releases them.
    let sources = client_sources(8);
    lab.send_to_group(&sources, 3, 1);
    let got = collect(&rx, 1, 24);
    assert_split(&got, &sources, 3);
    assert_eq!(mr_cache_lines(&lab), 8);
    let status = lab.status();
    assert_eq!(status.counters.upcalls, 8);
    assert!(status.mfc.iter().all(|m| m.iif == "c0"
        && m.member.is_some()
        && m.oif == format!("s{}", m.member.unwrap_or(0))));

    // Member 2 takes every slice at a later epoch: every entry now points at server 2.
    lab.join(1, &[Slice::ALL], 2);
    wait_for("member 2 owns everything", || {
        let s = lab.status();
        s.ownership.len() == 1 && s.mfc.iter().all(|m| m.member == Some(2))
    });
    lab.send_to_group(&sources, 2, 2);
    let got = collect(&rx, 2, 16);
    assert!(got[0].is_empty(), "server 1 still receives: {got:?}");
    assert!(sources.iter().all(|s| got[1].get(s) == Some(&2)), "{got:?}");

    // Bad input: a forged signature, a truncated report; the receivers' own kernel reports for
    // the protected group are unsigned. All refused and counted; ownership unchanged.
    let m = &lab.fixture.members[0];
    let claims = lab
        .fixture
        .claims(&[Slice::ALL], 9, crate::harness::topo::wall_now(), 999);
    let mut igmp =
        igmp_ext::join::build_signed_report(&claims, lab.servers[0].addr, &m.cert, &m.key)
            .expect("join");
    let last = igmp.len() - 1;
    igmp[last] ^= 0x01;
    igmp_ext::wire::igmp::fill_checksum(&mut igmp);
    let forged = igmp_ext::join::build_datagram(lab.servers[0].addr, &igmp);
    lab.send_from_server(0, &forged);
    let mut truncated = forged.clone();
    truncated.truncate(30);
    truncated[2..4].copy_from_slice(&30u16.to_be_bytes());
    lab.send_from_server(0, &truncated);
    wait_for("refusals counted", || {
        lab.rejected("bad-signature") >= 1 && lab.rejected("unsigned") >= 1
    });
    let s = lab.status();
    assert_eq!(s.ownership.len(), 1);
    assert_eq!(s.ownership[0].member, 2);

    // Clean shutdown removes every entry and VIF.
    assert!(lab.stop().success());
    assert_eq!(mr_cache_lines(&lab), 0);
    assert_eq!(lab.router.proc_net("ip_mr_vif").lines().skip(1).count(), 0);
}

#[test]
fn restarted_verifier_keeps_kernel_entries_and_rebuilds_ownership() {
    let mut lab = RouterLab::new(2, "[shutdown]\nkeep_kernel_state = true\n");
    lab.start();
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];
    lab.join(0, &[EVEN], 1);
    lab.join(1, &[ODD], 1);
    wait_for("two owners", || lab.status().ownership.len() == 2);
    let sources = client_sources(6);
    lab.send_to_group(&sources, 2, 1);
    assert_split(&collect(&rx, 1, 12), &sources, 2);

    assert!(lab.stop().success());
    assert_eq!(
        mr_cache_lines(&lab),
        6,
        "entries kept for the next verifier"
    );

    // The new process takes the entries over and queries at once; traffic the kernel carries
    // keeps flowing before any member has answered.
    lab.start();
    let s = lab.status();
    assert!(s.ownership.is_empty());
    assert_eq!(s.mfc.len(), 6);
    assert!(s.counters.queries_sent >= 1);
    lab.send_to_group(&sources, 2, 2);
    assert_split(&collect(&rx, 2, 12), &sources, 2);

    // Members answer the query; after the grace period the entries follow the rebuilt table.
    lab.join(0, &[EVEN], 1);
    lab.join(1, &[ODD], 1);
    wait_for("entries settled on the rebuilt owners", || {
        let s = lab.status();
        s.ownership.len() == 2 && s.mfc.len() == 6 && s.mfc.iter().all(|m| m.member.is_some())
    });
    lab.send_to_group(&sources, 2, 3);
    assert_split(&collect(&rx, 3, 12), &sources, 2);
}

#[test]
fn idle_entries_leave_the_kernel_and_busy_ones_stay() {
    // Idle expiry reads each entry's kernel counter (SIOCGETSGCNT), a slice per tick.
    let mut lab = RouterLab::new(2, "[native]\nidle_timeout_ms = 2000\n");
    lab.start();
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];
    lab.join(0, &[EVEN], 1);
    lab.join(1, &[ODD], 1);
    wait_for("two owners", || lab.status().ownership.len() == 2);
    let sources = client_sources(2);
    let (busy, quiet) = (sources[0], sources[1]);
    lab.send_to_group(&sources, 1, 1);
    assert_split(&collect(&rx, 1, 2), &sources, 1);
    assert_eq!(mr_cache_lines(&lab), 2);

    // `busy` keeps sending (every 50 ms, far inside the 2 s); `quiet` stops.
    let mut tag = 2u8;
    wait_for("the quiet source's entry removed from the kernel", || {
        lab.send_to_group(&[busy], 1, tag);
        tag = tag.wrapping_add(1).max(2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let s = lab.status();
        s.mfc.len() == 1 && s.mfc[0].source == busy.to_string() && mr_cache_lines(&lab) == 1
    });
    // The busy source never needed a second upcall; the quiet one's next packet makes one and
    // still arrives (first packet kept).
    assert_eq!(lab.status().counters.upcalls, 2);
    for r in &rx {
        drain(r);
    }
    lab.send_to_group(&[quiet], 1, 1);
    let got = collect(&rx, 1, 1);
    assert_eq!(got[1].get(&quiet), Some(&1), "{got:?}");
    assert_eq!(lab.status().counters.upcalls, 3);
}
