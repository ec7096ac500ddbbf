//! The `sites` lab topology (issue 14 item 5): an upstream router `up` with the clients and the
//! keystore, two sites of two site routers and three servers on two subnets each, FRR (zebra,
//! bfdd, ospfd) on every router, started and stopped by the lab. Root, the Debian `mininet`
//! and `frr` packages are needed (`scripts/setup.sh`). Holds the machine-wide lab lock, as
//! tests/main.rs does.

mod lab_support;

use lab_support::{assert_no_leftovers, daemon_bin_dir, lab_lock};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

/// The sites topology's routers, their interfaces and subnets (lab/topo.py, "the `sites`
/// topology").
const ROUTERS: [&str; 5] = ["up", "a1", "a2", "b1", "b2"];
const SUBNETS: [&str; 8] = [
    "10.0.0.0/24",
    "10.53.0.0/24",
    "10.100.1.0/24",
    "10.100.2.0/24",
    "10.11.0.0/24",
    "10.12.0.0/24",
    "10.21.0.0/24",
    "10.22.0.0/24",
];
const SERVERS: [&str; 6] = ["srva1", "srva2", "srva3", "srvb1", "srvb2", "srvb3"];

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The sites topology comes up with FRR converged: every router has a route to every subnet
/// (its own or learned by OSPF) and the site routers a default route towards `up`, every OSPF
/// neighbour is Full and every BFD peer up; each client, from its own address and from client
/// sources, reaches every server (both subnets of both sites) and the keystore by unicast,
/// each server reaches the keystore and the other site's servers; a site router gone silent
/// is routed around. Afterwards no FRR daemon,
/// no mininet host, no lab link and no named network namespace is left.
#[test]
fn lab_sites_topology_frr_converges_and_routes_every_subnet() {
    let _lock = lab_lock();
    let out = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/lab.py"))
        .env("MANYCAST_LAB_LOCK_HELD", "1")
        .args(["smoke", "--topo", "sites", "--json"])
        .output()
        .expect("run lab/lab.py with /usr/bin/python3");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("lab smoke printed no JSON ({e}): {stdout}\n{stderr}"));

    // The routing picture FRR gave (`vtysh -c 'show ip route json'` etc. in each router).
    let routing = v["routing"].as_object().expect("routing picture");
    assert_eq!(
        routing.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(ROUTERS),
        "{v}"
    );
    for (router, p) in routing {
        let routes = p["routes"].as_object().expect("routes");
        for subnet in SUBNETS {
            assert!(
                routes.contains_key(subnet),
                "{router} has no route to {subnet}: {p}"
            );
        }
        // Learned subnets come from OSPF (no static route was configured in any router).
        for (prefix, proto) in routes {
            assert!(
                proto == "connected" || proto == "ospf" || proto == "kernel",
                "{router} {prefix}: {proto}"
            );
        }
        let own_site = |s: &str| {
            router == "up"
                && (s.starts_with("10.100.") || s == "10.53.0.0/24" || s == "10.0.0.0/24")
                || router != "up"
                    && (s == "10.0.0.0/24" || s.starts_with(&format!("10.{}", site_digit(router))))
        };
        for subnet in SUBNETS.iter().filter(|s| !own_site(s)) {
            assert_eq!(routes[*subnet], "ospf", "{router} {subnet}: {p}");
        }
        if router != "up" {
            assert_eq!(routes["0.0.0.0/0"], "ospf", "{router}: {p}");
        }
        // OSPF: every other router is a neighbour, settled: Full, or 2-Way between two routers
        // that are neither the DR nor the BDR of a broadcast link (they exchange no database).
        let nbrs = p["ospf_neighbours"].as_object().expect("neighbours");
        assert_eq!(nbrs.len(), 4, "{router}: {p}");
        let states: BTreeSet<_> = nbrs
            .values()
            .flat_map(|s| {
                s.as_array()
                    .expect("states")
                    .iter()
                    .filter_map(Value::as_str)
            })
            .collect();
        assert!(states.contains("Full"), "{router}: {p}");
        assert!(
            states.is_subset(&BTreeSet::from(["Full", "2-Way"])),
            "{router}: {p}"
        );
        // BFD under every adjacency: up has the four site routers, a site router the other
        // four routers on the upstream LAN plus its partner on each site subnet.
        let peers = p["bfd_peers"].as_object().expect("bfd peers");
        assert_eq!(
            peers.len(),
            if router == "up" { 4 } else { 6 },
            "{router}: {p}"
        );
        assert!(peers.values().all(|s| s == "up"), "{router}: {p}");
    }

    // Unicast reachability: 2 clients × (own address + 2 sources) × (6 servers + keystore),
    // and each server to the keystore and the other site's 3 servers.
    let results = v["results"].as_object().expect("results");
    assert_eq!(results.len(), 2 * 3 * 7 + 6 * 4, "{results:?}");
    for server in SERVERS {
        assert!(
            results.contains_key(&format!("cli1->{server}")),
            "{results:?}"
        );
    }
    let failed: Vec<_> = results.iter().filter(|(_, ok)| *ok != true).collect();
    assert!(failed.is_empty(), "unreachable: {failed:?}\n{stderr}");
    assert!(out.status.success(), "{stderr}");

    // a1 goes silent on its upstream link (everything dropped both ways, the link up): `up`
    // spreads site a's subnets over both site routers before, drops a1 (BFD under OSPF), and
    // the client still reaches every server of site a, those whose gateway is a1 too (a1 routes
    // through a2 over the site subnets); with the link back, `up` uses both again. How long
    // `up` took is printed, not asserted.
    let s = &v["router_silence"];
    let both = serde_json::json!(["10.0.0.11", "10.0.0.12"]);
    for subnet in ["10.11.0.0/24", "10.12.0.0/24"] {
        assert_eq!(s["next_hops_before"][subnet], both, "{s}");
        assert_eq!(
            s["next_hops_silenced"][subnet],
            serde_json::json!(["10.0.0.12"]),
            "{s}"
        );
        assert_eq!(s["next_hops_after"][subnet], both, "{s}");
    }
    let reach = s["reach_silenced"].as_object().expect("reach");
    assert_eq!(reach.len(), 3, "{s}");
    assert!(reach.values().all(|ok| ok == true), "{s}");
    eprintln!("a1 silenced: up dropped it after {} ms", s["drop_ms"]);

    assert_sites_left_nothing(&v);
}

/// Nothing left after a sites lab printed `v` (with the `pids` it started): FRR's daemons,
/// mininet's hosts, the sites topology's links and bridges, a named namespace of a lab host.
fn assert_sites_left_nothing(v: &Value) {
    for pid in v["pids"].as_array().expect("pids") {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !text(&cmdline).contains("/usr/lib/frr/"),
            "FRR left running: {pid} {}",
            text(&cmdline)
        );
    }
    for p in std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
    {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        assert!(
            !text(&cmdline).contains("mininet:"),
            "a mininet host left: {:?}",
            p.path()
        );
    }
    let links = Command::new("ip")
        .args(["-br", "link"])
        .output()
        .expect("ip link");
    let left: Vec<_> = text(&links.stdout)
        .lines()
        .filter(|l| {
            let n = l.split_whitespace().next().unwrap_or_default();
            ROUTERS.iter().any(|r| n.starts_with(&format!("{r}-")))
                || n.starts_with("srv")
                || ["s11", "s12", "s21", "s22", "s53", "s90", "s101", "s102"].contains(&n)
        })
        .map(str::to_owned)
        .collect();
    assert!(left.is_empty(), "lab links left: {left:?}");
    // Mininet's hosts are unnamed namespaces (held by the host shells checked above); none of
    // the lab's may show up as a named one either. (Other namespace tests on the machine may
    // hold named namespaces of their own meanwhile, so the list need not be empty.)
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let netns = text(&netns.stdout);
    let lab_hosts: Vec<_> = ROUTERS
        .iter()
        .chain(&SERVERS)
        .chain(&["ks", "cli1", "cli2"])
        .collect();
    assert!(
        !netns.lines().any(|l| lab_hosts
            .iter()
            .any(|h| l.split_whitespace().next() == Some(**h))),
        "lab namespaces left: {netns}"
    );
}

/// "1" for a site-a router, "2" for site b: its site's subnets are 10.1x.0.0/24 / 10.2x.0.0/24.
fn site_digit(router: &str) -> char {
    if router.starts_with('a') {
        '1'
    } else {
        '2'
    }
}

/// The daemons on the sites topology without the hierarchy (lab/sites.py up --flat): each site
/// is a single-site cluster of its own. Its three servers, on two subnets, coordinate through
/// the control group their two site routers carry between the subnets, agree on one allocation
/// covering the address space, and both routers' verifiers hold exactly those claims (the
/// redundant verifiers of SPEC.md §10.6). FRR converged first. No upstream verifier, no site
/// agents.
#[test]
fn lab_sites_each_site_runs_as_a_cluster_behind_both_its_routers() {
    let bin_dir = daemon_bin_dir();
    let _lock = lab_lock();
    let out = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/sites.py"))
        .env("MANYCAST_LAB_LOCK_HELD", "1")
        .args(["up", "--flat", "--json", "--bin-dir"])
        .arg(&bin_dir)
        .arg("--run-dir")
        .arg(bin_dir.join("lab-sites"))
        .output()
        .expect("run lab/sites.py with /usr/bin/python3");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("sites printed no JSON ({e}): {stdout}\n{stderr}"));
    assert!(v.get("error").is_none(), "{v}\n{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        v["routing"].as_object().map(|o| o.len()),
        Some(ROUTERS.len()),
        "{v}"
    );
    // The unicast checks of the smoke test, run before the daemons start.
    let unicast = v["unicast"].as_object().expect("unicast");
    assert_eq!(unicast.len(), 2 * 3 * 7 + 6 * 4, "{unicast:?}");
    assert!(unicast.values().all(|ok| ok == true), "{unicast:?}");
    for (site, routers, members, subnet1, subnet2) in [
        ("a", ["a1", "a2"], [1, 2, 3], [1, 3], [2]),
        ("b", ["b1", "b2"], [4, 5, 6], [4, 6], [5]),
    ] {
        let s = &v["sites"][site];
        assert!(s["epoch"].as_u64() >= Some(1), "site {site}: {s}");
        for r in routers {
            let row = &s["routers"][r];
            assert_eq!(row["members"], serde_json::json!(members), "{r}: {s}");
            // The control group carried for each member on its own subnet's interface.
            let carried: Vec<(u64, String)> = row["control"]
                .as_array()
                .expect("control rows")
                .iter()
                .map(|c| {
                    (
                        c[0].as_u64().unwrap_or(0),
                        c[1].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            let mut want: Vec<(u64, String)> = subnet1
                .iter()
                .map(|m| (*m, format!("{r}-n1")))
                .chain(subnet2.iter().map(|m| (*m, format!("{r}-n2"))))
                .collect();
            want.sort();
            assert_eq!(carried, want, "{r}: {s}");
        }
    }
    assert_no_leftovers("the sites lab", &v, &bin_dir);
    assert_sites_left_nothing(&v);
}

/// Runs `lab/sites.py demo --json` (the hierarchy's story) under the lab lock; its JSON line
/// and stderr.
fn sites_demo(bin_dir: &std::path::Path) -> (Value, String) {
    let out = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/sites.py"))
        .env("MANYCAST_LAB_LOCK_HELD", "1")
        .args(["demo", "--json", "--bin-dir"])
        .arg(bin_dir)
        .arg("--run-dir")
        .arg(bin_dir.join("lab-sites-hierarchy"))
        .output()
        .expect("run lab/sites.py with /usr/bin/python3");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("sites demo printed no JSON ({e}): {stdout}\n{stderr}"));
    assert!(v.get("error").is_none(), "{v}\n{stderr}");
    assert!(out.status.success(), "{stderr}");
    (v, stderr)
}

/// The site hierarchy on the sites lab (issue 14 item 2, `lab/sites.py demo`): `up` runs an
/// ordinary verifier (native, nft), a1/a2/b1/b2 verifiers with `[site]` and router certificates,
/// the servers a control group per site. (a) The four agents agree on one upper epoch, each
/// claims upstream exactly its upper units, both sites hold units, each site's three servers
/// split exactly its share (the scope its routers hand down, `control.site_scope`), and every client source is answered by
/// exactly the server the two levels of steering name (upstream verifier → agent, that agent's
/// site verifier → member). (b) a1's verifier SIGKILLed: all its units go to a2 at a new upper
/// epoch (site-aware quotas), every source is answered as steered again, none changes server. (c) Every server of site b SIGKILLed: b1/b2 announce weight 0 and claim
/// nothing, and every source site b served is answered by site a. (d) Site b's servers back:
/// site b is steered to again and every source is answered as steered. Times are printed, not
/// asserted. Afterwards nothing is left.
#[test]
fn lab_sites_hierarchy_steers_each_source_to_one_site_and_survives_router_and_site_loss() {
    let bin_dir = daemon_bin_dir();
    let _lock = lab_lock();
    let (v, _) = sites_demo(&bin_dir);

    // (a) The upper allocation and the answers before anything fails.
    let upper = &v["upper"];
    let routers = upper["routers"].as_object().expect("upper routers");
    assert_eq!(routers.len(), 4, "{upper}");
    let mut units = 0;
    let mut per_site = [0u64; 2];
    for (r, s) in routers {
        assert_eq!(s["upper_epoch"], upper["upper_epoch"], "{r}: {upper}");
        assert_eq!(s["claim_units"], s["own_units"], "{r}: {upper}");
        assert_eq!(s["weight"], 1, "{r}: {upper}");
        assert_eq!(
            s["site"].as_u64(),
            Some(if r.starts_with('a') { 1 } else { 2 }),
            "{r}: {upper}"
        );
        let own = s["own_units"].as_u64().expect("units");
        units += own;
        per_site[usize::from(r.starts_with('b'))] += own;
    }
    assert_eq!(
        units, 256,
        "the upper allocation covers the slicing: {upper}"
    );
    assert!(
        per_site.iter().all(|u| *u > 0),
        "both sites hold units: {upper}"
    );
    for (site, scope) in [("a", per_site[0]), ("b", per_site[1])] {
        let shares = upper["member_units"][site]
            .as_object()
            .expect("member units");
        let units: Vec<u64> = shares.values().filter_map(Value::as_u64).collect();
        assert_eq!(units.len(), 3, "site {site}'s servers: {upper}");
        assert_eq!(
            units.iter().sum::<u64>(),
            scope,
            "site {site}'s servers own exactly its scope: {upper}"
        );
        assert!(
            units.iter().all(|u| u.abs_diff(scope / 3) <= 1),
            "site {site}'s servers split its scope evenly: {upper}"
        );
    }
    let answers = &v["answers"];
    assert_eq!(answers["sources"], 128, "{answers}");
    assert_eq!(
        answers["as_steered"], answers["sources"],
        "every source answered by exactly its steered server: {answers}"
    );
    assert!(
        answers["per_site"]["a"].as_u64() > Some(0) && answers["per_site"]["b"].as_u64() > Some(0),
        "{answers}"
    );

    // (b) A site router lost: site-aware quotas keep site a's share, so the upper group gives
    // all of a1's units to a2 at a new upper epoch, the upstream verifier re-points them to a2,
    // and a2's site verifier steers them to the same members: no source changes server.
    let r = &v["router_loss"];
    assert!(
        r["upper_epoch_after"].as_u64() > upper["upper_epoch"].as_u64(),
        "{r}"
    );
    let site_a = routers["a1"]["own_units"].as_u64().unwrap_or(0)
        + routers["a2"]["own_units"].as_u64().unwrap_or(0);
    let after = r["units_after"].as_object().expect("units after");
    assert!(!after.contains_key("a1"), "{r}");
    assert_eq!(after["a2"].as_u64(), Some(site_a), "{r}");
    let a1_sources = r["a1_sources"].as_u64().expect("a1's sources");
    assert!(a1_sources > 0, "{r}");
    assert_eq!(
        r["a1_sources_to"],
        serde_json::json!({ "a2": a1_sources }),
        "{r}"
    );
    assert_eq!(r["breaks"], 0, "no source changed server: {r}");
    assert_eq!(r["as_steered_after"], 128, "{r}");

    // (c) A site's servers lost: site b claims nothing, site a answers its sources.
    let l = &v["site_loss"];
    assert!(l["sources"].as_u64() > Some(0), "{l}");
    assert_eq!(l["weights_b"], serde_json::json!([0, 0]), "{l}");
    assert_eq!(l["claims_b"], serde_json::json!([0, 0]), "{l}");
    assert!(
        l["answered_by_a_ms"].is_u64(),
        "every source of site b answered by site a after the loss: {l}"
    );

    // (d) Site b's servers back: it serves a share again, every answer as steered.
    let b = &v["site_back"];
    assert!(b["sources_b"].as_u64() > Some(0), "{b}");
    assert_eq!(b["as_steered"], 128, "{b}");
    eprintln!(
        "hierarchy: a1 lost, re-pointed after {} ms, its sources to {} (longest gap {} ms); \
         site b lost, its {} sources answered by site a after {} ms; site b back after {} ms",
        r["repointed_ms"],
        r["a1_sources_to"],
        r["longest_gap_ms"],
        l["sources"],
        l["answered_by_a_ms"],
        b["back_ms"]
    );
    // The load picture: a line per server, from the servers' own metrics.
    let svg_path = v["load_svg"].as_str().expect("load picture");
    let svg = std::fs::read_to_string(svg_path).expect("load.svg written");
    for server in ["srva1", "srva2", "srva3", "srvb1", "srvb2", "srvb3"] {
        assert!(
            svg.contains(&format!(">{server}<")),
            "{server} in {svg_path}"
        );
    }
    assert_no_leftovers("the sites lab", &v, &bin_dir);
    assert_sites_left_nothing(&v);
}
