//! VIP mode (issue 16, item 5): steering to the VIP, without and with pin, against plain routing
//! through a twin router; the re-points of a lab with a VIP; and `DATAPLANE_SWAP`'s ruleset
//! swaps. Split from `main.rs` for size, unchanged.

use crate::harness::topo::{wait_for, RouterLab};
use crate::{
    compare, install_sinks, median, owner_addr, phase, refresh_owners, two_owners, Workload,
    REPOINTS, ROUNDS, VIP,
};
use igmp_ext::Slice;
use std::time::{Duration, Instant};

/// VIP steering vs plain routing. Steered: datagrams to the VIP through the verifier's router,
/// its tables (the fast path's netdev table, the `ip` table of marks) and policy rules as it
/// wrote them. Plain: the same datagrams to the owners' own addresses through `twin`, a router
/// namespace of the same topology where no verifier ever ran. Not the VIP router with the
/// verifier's state taken out: the kernel sets a namespace's `fib_has_custom_rules` with its
/// first policy rule and never clears it, so every packet routed there walks the rule list
/// (`fib_rules_lookup`, ~12 % of a plain packet's cost in `perf`) even with the rules gone,
/// which flattered the steering (it made the earlier VIP figures). With `pin`, each of the 64
/// flows is in the pin table after its first packet, so the phases measure the established
/// flows' path (a flow's first packet costs one more insertion).
fn vip(lab: &mut RouterLab, twin: &RouterLab, what: &str) -> (f64, f64, f64) {
    two_owners(lab);
    wait_for("VIP routed to both members", || {
        lab.status()
            .vips
            .first()
            .is_some_and(|v| v.members.len() == 2)
    });
    // `DATAPLANE_VIP_SLOW=1`: the fast path's table taken out, so that the steered phases
    // measure the slow path alone (marks, policy routes, conntrack for pin), the VIP steering
    // before issue 16's item 5: an A/B in one run, outside the JSON line.
    if std::env::var_os("DATAPLANE_VIP_SLOW").is_some() {
        lab.router
            .exec("nft", &["delete", "table", "netdev", "manycast_vip"]);
    }
    let steered = Workload::new(lab, |_| VIP);
    let plain = Workload::new(twin, |k| owner_addr(twin, k));
    compare(
        what,
        (lab, &steered, &|| refresh_owners(lab)),
        (twin, &plain, &|| refresh_owners(twin)),
    )
}

/// Re-points measured in the verifier (its `repoint_us`, the median time to apply one
/// ownership change's ops) on the nft data plane with a VIP, so each re-point moves an element
/// of both nft tables: member 1 takes value 2 of the low two bits from member 2 and gives it
/// back, REPOINTS / 2 times, three joins each (member 2 keeps value 1, so the maps' mask and the
/// tables' shape stay).
/// Beside it, for comparison, what the same change cost before the tables were updated in
/// place: `nft list` of the native table (its counters) and `nft -f` of both whole tables, as
/// processes in the router's namespace. Returns (repoint_us, whole_table_us).
pub(crate) fn repoints(lab: &RouterLab) -> (u64, u64) {
    let s = |v| Slice::new(v, 3);
    lab.join(0, &[s(0)], 1);
    lab.join(1, &[s(1), s(2)], 1);
    let settled = |m1: u64| {
        move || {
            let st = lab.status();
            let n = st
                .native
                .iter()
                .filter(|r| r.member == 1)
                .map(|r| r.values)
                .sum::<u64>();
            n == m1 && st.vips.first().is_some_and(|v| v.members.len() == 2)
        }
    };
    wait_for("the first map", settled(1));
    let before = lab.status().counters;
    let mut epoch = 2;
    for _ in 0..REPOINTS / 2 {
        lab.join(0, &[s(0), s(2)], epoch);
        wait_for("member 1 takes value 2", settled(2));
        lab.join(0, &[s(0)], epoch + 1);
        lab.join(1, &[s(1), s(2)], epoch + 1);
        wait_for("member 2 has it back", settled(1));
        epoch += 2;
    }
    let after = lab.status().counters;
    eprintln!(
        "dataplane: re-points: {} timed, median {:?} us, p99 {:?} us, max {:?} us; \
         nft whole-table rewrites during them: {}",
        after.repoints - before.repoints,
        after.repoint_us,
        after.repoint_p99_us,
        after.repoint_max_us,
        after.nft_rewrites - before.nft_rewrites
    );
    // The same change the way it was made before: list, then both tables whole, by process.
    let native = lab
        .router
        .exec("nft", &["list", "table", "netdev", "manycast_native"]);
    let vip = lab
        .router
        .exec("nft", &["list", "table", "ip", "manycast_verifier"]);
    let whole = format!(
        "add table netdev manycast_native\ndelete table netdev manycast_native\n{native}\n\
         add table ip manycast_verifier\ndelete table ip manycast_verifier\n{vip}\n"
    );
    let mut spawned: Vec<u64> = (0..REPOINTS / 4)
        .map(|_| {
            lab.router.run(|| {
                let t = Instant::now();
                let out = std::process::Command::new("nft")
                    .args(["list", "table", "netdev", "manycast_native"])
                    .output()
                    .expect("nft list");
                assert!(out.status.success(), "nft list");
                let mut child = std::process::Command::new("nft")
                    .args(["-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .expect("nft -f");
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(whole.as_bytes())
                    .expect("write");
                assert!(child.wait().expect("nft -f").success(), "nft -f");
                t.elapsed().as_micros() as u64
            })
        })
        .collect();
    spawned.sort_unstable();
    let whole_us = spawned[spawned.len() / 2];
    eprintln!(
        "dataplane: the same change by nft processes (list + whole tables): median {whole_us} us"
    );
    (after.repoint_us.unwrap_or(0), whole_us)
}

/// `DATAPLANE_SWAP=name=file,…` (with `DATAPLANE_VIP_ONLY`): in the pinned VIP's lab, the
/// fast path's table replaced by each file in turn (`nft -f`, whole tables as the verifier
/// writes them for this lab: `benches/dataplane-swap/` has the pinned table as issue 16 first
/// wrote it, as it is now, and the unpinned one), alternating in every round, the same
/// traffic, router and moment for all: what one ruleset costs per packet against another,
/// which the load of the shared machine swamps between two runs. (Not the verifier's table
/// listed back: `nft list` 1.0.6 drops the pinned ingress rule's fragment mask.) Prints, per variant, the median sender CPU per datagram and packets per
/// second, and the median of the per-round ratios to the first variant. A measuring aid
/// outside the JSON line.
pub(crate) fn swap_rulesets(lab: &RouterLab, spec: &str) {
    two_owners(lab);
    wait_for("VIP routed to both members", || {
        lab.status()
            .vips
            .first()
            .is_some_and(|v| v.members.len() == 2)
    });
    let mut variants: Vec<(String, std::path::PathBuf)> = Vec::new();
    for item in spec.split(',') {
        let (name, file) = item.split_once('=').unwrap_or((item, item));
        variants.push((name.to_owned(), file.into()));
    }
    let w = Workload::new(lab, |_| VIP);
    let n = variants.len();
    let (mut ns, mut pps) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let (mut ns_ratio, mut pps_ratio) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    for r in 0..ROUNDS * 2 {
        let mut this = vec![(0.0, 0.0); n];
        for k in 0..n {
            let i = (k + r) % n;
            let path = variants[i].1.to_str().expect("a UTF-8 path");
            lab.router.exec("nft", &["-f", path]);
            // The flows' first packets (into the empty flow tables) outside the phase.
            w.blast(lab, Duration::from_millis(50));
            this[i] = phase(lab, &w, &|| refresh_owners(lab), None);
        }
        for i in 0..n {
            pps[i].push(this[i].0);
            ns[i].push(this[i].1);
            pps_ratio[i].push(this[i].0 / this[0].0);
            ns_ratio[i].push(this[0].1 / this[i].1);
        }
        eprintln!(
            "dataplane: swap round {r}: {}",
            variants
                .iter()
                .zip(&this)
                .map(|((name, _), (p, c))| format!("{name} {p:.0} pps {c:.0} ns"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for i in 0..n {
        eprintln!(
            "dataplane: swap {}: median {:.0} ns per datagram, {:.0} pps; per-round against {}: \
             CPU {:.3}, pps {:.3}",
            variants[i].0,
            median(ns[i].clone()),
            median(pps[i].clone()),
            variants[0].0,
            median(ns_ratio[i].clone()),
            median(pps_ratio[i].clone())
        );
    }
}

/// (ratio, steered, plain) of VIP steering without pin, then with pin, each in a fresh lab.
pub(crate) fn vips() -> ((f64, f64, f64), (f64, f64, f64)) {
    // `DATAPLANE_PIN=nft`: pin mode on the nftables flow tables rather than the tc program.
    let pin_plane = std::env::var("DATAPLANE_PIN").unwrap_or_else(|_| "bpf".into());
    let vip_lab = |pin: bool| {
        let mut lab = RouterLab::new(
            2,
            &format!("[vip_pin]\ndataplane = \"{pin_plane}\"\n[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\npin = {pin}\n"),
        );
        lab.log_filter = "info".into();
        install_sinks(&lab, "ip");
        lab.start();
        lab
    };
    // Plain routing's router: the same topology, no verifier.
    let twin = RouterLab::new(2, "");
    install_sinks(&twin, "ip");
    let plain = vip(&mut vip_lab(false), &twin, "vip");
    let mut pin_lab = vip_lab(true);
    let pinned = vip(&mut pin_lab, &twin, "vip-pin");
    // What the tc program forwarded (nothing on nft): the pinned phases went through it.
    let hops = manycast_verifier::sys::bpf::pinned_entries::<u32, [u32; 4]>(
        &pin_lab.pin_dir.join(manycast_verifier::sys::bpf::HOPS),
    );
    let by_bpf: u64 = hops
        .map(|h| {
            h.values()
                .map(|v| u64::from(v[3]) << 32 | u64::from(v[2]))
                .sum()
        })
        .unwrap_or(0);
    eprintln!("dataplane: pin mode on {pin_plane}: {by_bpf} packets forwarded by the tc program");
    (plain, pinned)
}
