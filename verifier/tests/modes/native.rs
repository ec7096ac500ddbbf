//! Native multicast mode on either data plane: upcall → MFC entry toward the owner of the
//! source's slice (mroute), or the netdev map by `ip saddr & mask` (nft); first packets kept,
//! re-pointing on reallocation, refusals counted, clean shutdown, and restart.

use crate::harness::topo::{client_sources, drain, wait_for, Dataplane, RouterLab, GROUP};
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

/// The nft data plane steers `GROUP` to exactly `members`, one map value each (mask 0.0.0.1
/// for two halves), and its table forwards to each member's address out of its link.
fn assert_nft_steers(lab: &RouterLab, members: &[u32]) {
    let want: BTreeMap<u32, u64> = members.iter().map(|&m| (m, 1)).collect();
    wait_for("the nft map written", || lab.steered(GROUP) == want);
    let table = lab.native_table().expect("the nft table in the kernel");
    for &m in members {
        let fwd = format!("fwd ip to 10.0.{m}.2 device \"s{m}\"");
        assert!(table.contains(&fwd), "no `{fwd}` in:\n{table}");
    }
}

#[test]
fn native_mode_steers_each_source_to_its_owner_and_repoints() {
    let mut lab = RouterLab::new(2, "");
    let ifaces = lab.router_interfaces();
    assert!(
        ifaces.iter().all(|i| !lab.allmulti(i)),
        "allmulticast before the start"
    );
    lab.start();
    let dataplane = lab.dataplane();
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];
    lab.join(0, &[EVEN], 1);
    lab.join(1, &[ODD], 1);
    wait_for("two owners", || lab.status().ownership.len() == 2);
    if dataplane == Dataplane::Nft {
        assert_nft_steers(&lab, &[1, 2]);
        // The table must see every group's frames, which a NIC filters unless asked.
        assert!(
            ifaces.iter().all(|i| lab.allmulti(i)),
            "allmulticast not set"
        );
    }

    // Three datagrams per new source, back to back: with mroute the kernel queues the first ones
    // while the verifier answers the upcall, then releases them; nft has nothing to wait for.
    let sources = client_sources(8);
    lab.send_to_group(&sources, 3, 1);
    let got = collect(&rx, 1, 24);
    assert_split(&got, &sources, 3);
    let status = lab.status();
    match dataplane {
        Dataplane::Mroute => {
            assert_eq!(mr_cache_lines(&lab), 8);
            assert_eq!(status.counters.upcalls, 8);
            assert!(status.mfc.iter().all(|m| m.iif == "c0"
                && m.member.is_some()
                && m.oif == format!("s{}", m.member.unwrap_or(0))));
        }
        Dataplane::Nft => {
            // No upcall, no per-source state: the kernel's own counters saw 4 sources × 3 per
            // member go out toward it.
            assert_eq!(status.counters.upcalls, 0);
            assert!(status.mfc.is_empty(), "{:?}", status.mfc);
            let c = lab.native_counters();
            assert_eq!(c.forwarded, BTreeMap::from([(1, 12), (2, 12)]), "{c:?}");
            assert_eq!((c.unowned_drops, c.ttl_drops), (0, 0), "{c:?}");
        }
    }

    // Member 2 takes every slice at a later epoch: everything now points at server 2.
    lab.join(1, &[Slice::ALL], 2);
    wait_for("member 2 owns everything", || {
        let s = lab.status();
        s.ownership.len() == 1
            && match dataplane {
                Dataplane::Mroute => s.mfc.iter().all(|m| m.member == Some(2)),
                Dataplane::Nft => lab.steered(GROUP).keys().eq([&2]),
            }
    });
    if dataplane == Dataplane::Nft {
        // No map element jumps to member 1's chain any more (the chain itself may stay until
        // the next rewrite: a re-point moves elements only).
        let table = lab.native_table().expect("the nft table");
        let elements: String = table
            .lines()
            .skip_while(|l| !l.contains("elements = {"))
            .take_while(|l| !l.trim_start().starts_with('}'))
            .collect();
        assert!(
            !elements.contains("jump m1_"),
            "still steers to member 1:\n{table}"
        );
    }
    lab.send_to_group(&sources, 2, 2);
    let got = collect(&rx, 2, 16);
    assert!(got[0].is_empty(), "server 1 still receives: {got:?}");
    assert!(sources.iter().all(|s| got[1].get(s) == Some(&2)), "{got:?}");

    // Bad input: a forged signature, a truncated report; the receivers' own kernel reports for
    // the protected group are unsigned. All refused and counted; ownership unchanged.
    let forged = forged_join(&lab, 9, 999);
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

    // Clean shutdown removes every entry and VIF, or the nft table, and gives the interfaces
    // their allmulticast flag back.
    assert!(lab.stop().success());
    match dataplane {
        Dataplane::Mroute => {
            assert_eq!(mr_cache_lines(&lab), 0);
            assert_eq!(lab.router.proc_net("ip_mr_vif").lines().skip(1).count(), 0);
        }
        Dataplane::Nft => {
            assert_eq!(
                lab.native_table(),
                None,
                "the nft table outlived the verifier"
            );
            assert!(
                ifaces.iter().all(|i| !lab.allmulti(i)),
                "allmulticast left on"
            );
        }
    }
}

#[test]
fn restarted_verifier_keeps_kernel_entries_and_rebuilds_ownership() {
    // A grace of 8 s (the default is 4.5 s here) keeps the check of traffic before any member
    // re-joined inside the grace on a loaded machine.
    let mut lab = RouterLab::new(
        2,
        "[shutdown]\nkeep_kernel_state = true\n[native]\nadopt_grace_ms = 8000\n",
    );
    lab.start();
    let dataplane = lab.dataplane();
    let rx = [lab.group_receiver(0), lab.group_receiver(1)];
    lab.join(0, &[EVEN], 1);
    lab.join(1, &[ODD], 1);
    wait_for("two owners", || lab.status().ownership.len() == 2);
    if dataplane == Dataplane::Nft {
        assert_nft_steers(&lab, &[1, 2]);
    }
    let sources = client_sources(6);
    lab.send_to_group(&sources, 2, 1);
    assert_split(&collect(&rx, 1, 12), &sources, 2);

    assert!(lab.stop().success());
    match dataplane {
        Dataplane::Mroute => assert_eq!(
            mr_cache_lines(&lab),
            6,
            "entries kept for the next verifier"
        ),
        Dataplane::Nft => {
            let table = lab
                .native_table()
                .expect("the nft table kept for the next verifier");
            assert!(table.contains("device \"s1\"") && table.contains("device \"s2\""));
        }
    }

    // The new process takes the entries (or the table) over and queries at once; traffic the
    // kernel carries keeps flowing before any member has answered.
    lab.start();
    let s = lab.status();
    assert!(s.ownership.is_empty());
    assert!(s.counters.queries_sent >= 1);
    let before_rejoin = match dataplane {
        Dataplane::Mroute => {
            assert_eq!(s.mfc.len(), 6);
            0
        }
        Dataplane::Nft => {
            // Held, not rewritten: the kept table is what steers now.
            assert_eq!(s.counters.nft_transactions, 0);
            assert!(lab.native_table().is_some(), "the kept table is gone");
            lab.native_counters().forwarded.values().sum::<u64>()
        }
    };
    lab.send_to_group(&sources, 2, 2);
    assert_split(&collect(&rx, 2, 12), &sources, 2);
    if dataplane == Dataplane::Nft {
        // The kept table's own counters carried them (the next verifier wrote nothing).
        let now = lab.native_counters().forwarded.values().sum::<u64>();
        assert_eq!(now - before_rejoin, 12, "not carried by the kept table");
        assert_eq!(lab.status().counters.nft_transactions, 0);
    }

    // Members answer the query; after the grace period the entries follow the rebuilt table.
    lab.join(0, &[EVEN], 1);
    lab.join(1, &[ODD], 1);
    wait_for("entries settled on the rebuilt owners", || {
        let s = lab.status();
        s.ownership.len() == 2
            && match dataplane {
                Dataplane::Mroute => s.mfc.len() == 6 && s.mfc.iter().all(|m| m.member.is_some()),
                Dataplane::Nft => s.counters.nft_transactions >= 1,
            }
    });
    if dataplane == Dataplane::Nft {
        assert_nft_steers(&lab, &[1, 2]);
    }
    lab.send_to_group(&sources, 2, 3);
    assert_split(&collect(&rx, 3, 12), &sources, 2);

    // Without keep_kernel_state the second verifier cleans up what the first one left too:
    // the table, and the allmulticast flag the first one set.
    let text = std::fs::read_to_string(&lab.config).expect("config");
    std::fs::write(&lab.config, text.replace("keep_kernel_state = true", "")).expect("config");
    // The config is read at start only: restart once more, then stop cleanly.
    assert!(lab.stop().success());
    lab.start();
    wait_for("the kept state adopted again", || {
        lab.status().counters.queries_sent >= 1
    });
    assert!(lab.stop().success());
    if dataplane == Dataplane::Nft {
        assert_eq!(lab.native_table(), None, "the table outlived a clean stop");
        let ifaces = lab.router_interfaces();
        assert!(
            ifaces.iter().all(|i| !lab.allmulti(i)),
            "allmulticast left on"
        );
    } else {
        assert_eq!(mr_cache_lines(&lab), 0);
    }
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
    if lab.skip_without_mroute(
        "idle_entries_leave_the_kernel_and_busy_ones_stay",
        "idle expiry of per-source MFC entries (SIOCGETSGCNT)",
    ) {
        // What holds instead: the nft data plane keeps no per-source state to expire; the map
        // has one value per half whatever the sources, and nothing went through an upcall.
        let s = lab.status();
        assert_eq!(lab.steered(GROUP), BTreeMap::from([(1, 1), (2, 1)]));
        assert!(s.mfc.is_empty() && s.counters.upcalls == 0, "{s:?}");
        return;
    }
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

/// Issue 13, defect 16: a flood of refused reports is logged as a few lines and one summary per
/// reason and window, not a line each; every refusal is still counted.
#[test]
fn a_flood_of_forged_joins_is_logged_as_a_summary() {
    let mut lab = RouterLab::new(1, "");
    lab.start();
    let forged = forged_join(&lab, 1, 7);
    // Under the per-source limit (50/s, burst 50), so that every one reaches the verifier.
    let sent = 40;
    for _ in 0..sent {
        lab.send_from_server(0, &forged);
    }
    wait_for("every forgery counted", || {
        lab.rejected("bad-signature") == sent
    });
    let lines = |log: &str| log.matches("report rejected").count() as u64;
    let logged = lines(&lab.log());
    assert!(
        logged <= u64::from(manycast_verifier::rejection_log::PER_WINDOW),
        "{logged} lines for {sent} refusals"
    );
    // When the window ends, one summary line counts the rest.
    wait_for("the summary", || {
        lab.log().contains("more reports rejected")
    });
    let log = lab.log();
    let summary = log
        .lines()
        .find(|l| l.contains("more reports rejected"))
        .expect("summary line");
    assert!(
        summary.contains(&format!("{} more reports rejected", sent - logged)),
        "{summary}"
    );
    assert!(lab.stop().success());
}

/// Server 1's join for every slice at `epoch` with its signature's last bit flipped (the IGMP
/// checksum fixed, so that the signature check is what refuses it).
fn forged_join(lab: &RouterLab, epoch: u64, nonce: u64) -> Vec<u8> {
    let m = &lab.fixture.members[0];
    let claims = lab.fixture.claims(
        &[Slice::ALL],
        epoch,
        crate::harness::topo::wall_now(),
        nonce,
    );
    let mut igmp =
        igmp_ext::join::build_signed_report(&claims, lab.servers[0].addr, &m.cert, &m.key)
            .expect("join");
    let last = igmp.len() - 1;
    igmp[last] ^= 0x01;
    igmp_ext::wire::igmp::fill_checksum(&mut igmp);
    igmp_ext::join::build_datagram(lab.servers[0].addr, &igmp)
}
