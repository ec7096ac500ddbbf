#!/usr/bin/python3
"""The Manycast daemons on the `sites` topology (topo.SitesTopo, FRR from frr.py): the site
hierarchy (issue 14 item 2, SPEC.md §10.8), or with --flat each site a cluster of its own.

    lab/sites.py up [--bin-dir target/release] [--run-dir DIR] [--json] [--flat]
        bring the topology and the daemons up, print the routing picture, each site's cluster
        and (not --flat) the upper allocation, stop
    lab/sites.py demo [...]   the hierarchy's story (make demo TOPO=sites): clients answered per
        site; a1's verifier SIGKILLed; every server of site b SIGKILLed, then started again
    lab/sites.py bench [--seconds 300]   site b's servers SIGKILLed and restarted as many times
        as fit; prints one JSON line with site_failover_p50_ms / _p99_ms / _trials (make bench
        B=topology merges it)

What runs where:
  up          FRR (zebra, bfdd, ospfd; originates the default route); an ordinary
              `manycast-verifier` (native, nft) on the upstream LAN and the client links: its
              members are the site agents, it steers each unit to the agent that claims it
  a1, a2      FRR and a `manycast-verifier` each on the site's two subnets (redundant verifiers,
  b1, b2      SPEC.md §10.6: both verify and steer the same joins; each trusts the other as
              querier), carrying the site's control group between the subnets (§10.7); with
              `[site]` (H3): a site agent in the upper control group 239.78.0.1 on `<x>-up`
              (router certificate, member id 101/102/201/202, site 1/2) claiming upstream the
              units its site serves; native steering on nft hooks `<x>-up` too
  srva1..3    `manycast-server`, native mode, member ids 1-3, control group 239.77.1.1 routed
  srvb1..3    the same, member ids 4-6, control group 239.77.2.1
  ks          `dns-keystore` with the service group's and both control groups' records (one
              group key; the agents check their upper group's peers with the service group's)
  cli1, cli2  lab/client.py (demo, bench): every source sends to 232.1.1.1

With the hierarchy the servers run `control.site_scope`: each site's agents hand the site's
share of the upper allocation (its scope) down in a signed notice on their queries, and the
site's servers allocate only those units among themselves (SPEC.md §3.10, §10.8).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster  # noqa: E402
import frr  # noqa: E402
import hierarchy  # noqa: E402
import sites_view  # noqa: E402
import topo  # noqa: E402
from cluster import GROUP, KEYSTORE_ADDR, LabError, wait_for  # noqa: E402

# Each site's members' control group (carried between the site's two subnets by its routers).
CONTROL_GROUPS = {"a": "239.77.1.1", "b": "239.77.2.1"}
# The hierarchy: the site agents' upper control group on the upstream LAN, its port,
# the site ids in router certificates and the routers' member ids in the upper group (unique
# there and apart from the servers' 1-6, since one group key certifies both).
UPPER_GROUP = "239.78.0.1"
UPPER_PORT = 4791
SITE_IDS = {"a": 1, "b": 2}
ROUTER_IDS = {r: 100 * SITE_IDS[s] + int(r[1:]) for s in topo.SITES for r in topo.site_routers(s)}
SLICE_BITS = 8  # the servers' default `control.slice_bits`; the agents' must equal it
UPSTREAM_REFRESH_MS = 1000
SITE_TIMELINESS_MS = 3000


def partner(router):
    """The other router of `router`'s site."""
    return next(r for r in topo.site_routers(router[0]) if r != router)


class SitesCluster(cluster.Cluster):
    """`cluster.Cluster` on the sites topology: the same binaries, keystore, record publishing,
    process handling and teardown; its own net (with FRR), keys, verifiers and servers."""

    def __init__(self, bin_dir="target/release", run_dir=None, log=None, hierarchy=True):
        super().__init__(bin_dir=bin_dir, run_dir=run_dir, servers=0, log=log)
        self.hierarchy = hierarchy
        self.ids = {}
        self.site_of = {}
        for s in topo.SITES:
            for name, _, _, _, mid in topo.site_servers(s):
                self.ids[name] = mid
                self.site_of[name] = s
        self.frr = None
        self.routing = None

    # -- steps -------------------------------------------------------------------------------

    def start_net(self):
        from mininet.net import Mininet
        from mininet.nodelib import LinuxBridge

        self.lock.acquire(self.log)
        if os.path.exists(cluster.PID_FILE) or os.path.exists("/sys/class/net/s90"):
            cluster.clean_leftovers()
        if os.path.exists(self.run_dir):
            shutil.rmtree(self.run_dir)
        os.makedirs(self.path("keys"))
        self.net = Mininet(topo=topo.SitesTopo(), switch=LinuxBridge, controller=None,
                           autoSetMacs=True, waitConnected=False)
        self.net.start()
        topo.configure_sites(self.net)
        self.frr = frr.Frr(self.net, self.run_dir, self.log)
        self.frr.start_sites()
        self.routing = self.frr.wait_converged()
        return self.routing

    def make_keys(self):
        """The group key; per server a key and a certificate for the service group and its
        site's control group; the operator. With the hierarchy, per site router a key and a
        router certificate naming its site (H1's `--site`)."""
        ctl = self.bin("manycastctl")
        k = self.path("keys")
        self.run(None, [ctl, "key", "new", f"{k}/group"])
        for name, mid in self.ids.items():
            self.run(None, [ctl, "key", "new", f"{k}/{name}"])
            self.run(None, [ctl, "cert", "issue", "--group-key", f"{k}/group.key", "--member-key",
                            f"{k}/{name}.pub", "--id", str(mid), "--group", GROUP,
                            "--group", CONTROL_GROUPS[self.site_of[name]],
                            "--out", f"{k}/{name}.cert"])
        if self.hierarchy:
            for router, rid in ROUTER_IDS.items():
                self.run(None, [ctl, "key", "new", f"{k}/{router}"])
                self.run(None, [ctl, "cert", "issue", "--group-key", f"{k}/group.key",
                                "--member-key", f"{k}/{router}.pub", "--id", str(rid),
                                "--site", str(SITE_IDS[router[0]]), "--group", GROUP,
                                "--group", UPPER_GROUP, "--out", f"{k}/{router}.cert"])
        # The operator's authority for `manycastctl move/drain` in site a's cluster.
        self.make_operator(control_group=CONTROL_GROUPS["a"])
        return self.run(None, [ctl, "key", "show", f"{k}/group.pub"]).strip()

    def publish_all(self):
        """The service group's record and each control group's (the site routers carry a
        control group only for members whose shared join verifies with its key)."""
        self.publish()
        for s, g in CONTROL_GROUPS.items():
            self.publish(group=g, name=f"site-{s}-ctl")

    def keystore_table(self, groups):
        return (f'[keystore]\nserver = "{KEYSTORE_ADDR}"\ntrust_anchor = "{self.trust_anchor()}"\n'
                f"groups = {json.dumps(list(groups))}\n")

    def status_socket(self, router):
        return self.path(f"verifier-{router}.sock")

    def site_verifier_config(self, router):
        """A site router's verifier: member links = the site's two subnets, the partner router
        trusted as querier, the site's control group carried between the subnets; with the
        hierarchy, the `[site]` section."""
        site = router[0]
        ifs = [f"{router}-n{n}" for n in range(1, topo.SITE_SUBNETS + 1)]
        other = partner(router)
        trusted = [str(topo.site_router_addr(other, n)) for n in range(1, topo.SITE_SUBNETS + 1)]
        # The agent checks its upper group's peers with the service group's keys (H3).
        groups = [GROUP, CONTROL_GROUPS[site]]
        text = (f"interfaces = {json.dumps(ifs)}\n"
                f'status_socket = "{self.status_socket(router)}"\n'
                f"control_groups = {json.dumps([CONTROL_GROUPS[site]])}\n")
        if not self.hierarchy:
            return (text + f"[querier]\ntrusted_queriers = {json.dumps(trusted)}\n"
                    + self.keystore_table(groups))
        # A site whose servers all died restarts its control group at epoch 1, which the site
        # verifiers refuse while the dead members' claims and epoch fences last: a short
        # timeliness window and frequent queries (as manycast-server/tests/sites.rs) let site b
        # come back within seconds. Native steering on nft hooks the upstream interface too.
        return (text + f"[verifier]\ntimeliness_window_ms = {SITE_TIMELINESS_MS}\n"
                f"[querier]\ntrusted_queriers = {json.dumps(trusted)}\n"
                f"query_interval_ms = 1000\nquery_response_interval_ms = 500\n"
                f'[native]\ndataplane = "nft"\n'
                f"{self.keystore_table(groups)}{self.site_section(router)}")

    def site_section(self, router):
        """The `[site]` section of a site router's verifier (H3's brief: the names there): the
        upstream interface (not one of `interfaces`), the router key and certificate, the
        service group claimed upstream, the upper control group and port on the upstream LAN,
        the weight, the members' slicing and the upstream join's refresh."""
        k = self.path("keys")
        return (f'[site]\nupstream = "{router}-up"\nrouter_key = "{k}/{router}.key"\n'
                f'router_certificate = "{k}/{router}.cert"\ngroup = "{GROUP}"\n'
                f'upper_group = "{UPPER_GROUP}"\nupper_port = {UPPER_PORT}\nweight = 1\n'
                f"slice_bits = {SLICE_BITS}\nrefresh_ms = {UPSTREAM_REFRESH_MS}\n")

    def upstream_verifier_config(self):
        """The upstream router's verifier: an ordinary one, whose members are the site
        routers' agents on the upstream LAN, the clients on their links."""
        ifs = ["up-lan"] + [f"up-c{c}" for c in range(1, topo.CLIENTS + 1)]
        return (f"interfaces = {json.dumps(ifs)}\n"
                f'status_socket = "{self.status_socket("up")}"\n'
                f'[native]\ndataplane = "nft"\n{self.keystore_table([GROUP])}')

    def spawn_verifier(self, router, text):
        cfg = self.path(f"verifier-{router}.toml")
        with open(cfg, "w") as f:
            f.write(text)
        self.spawn(f"verifier-{router}", router, [self.bin("manycast-verifier"), "--config", cfg],
                   env={"RUST_LOG": "info"})

    def start_verifiers(self):
        routers = [r for s in topo.SITES for r in topo.site_routers(s)]
        for r in routers:
            self.spawn_verifier(r, self.site_verifier_config(r))
        if self.hierarchy:
            self.spawn_verifier("up", self.upstream_verifier_config())
            routers.append("up")
        for r in routers:
            wait_for(f"{r}'s verifier status socket",
                     lambda r=r: self.check_processes() or self.router_status(r) is not None)

    def router_status(self, router):
        """A verifier's status (JSON through its status socket), or None."""
        try:
            p = subprocess.run([self.bin("manycast-verifier"), "--status", "--json", "--socket",
                                self.status_socket(router)], capture_output=True, timeout=5)
        except subprocess.TimeoutExpired:
            return None
        try:
            return json.loads(p.stdout) if p.returncode == 0 else None
        except ValueError:
            return None

    def server_config(self, name, service="", **_):
        """A server: native mode on its subnet, its site's control group on the same interface,
        routed by the site routers (SPEC.md §10.7); with the hierarchy `control.site_scope`: they
        allocate only the scope their site routers hand down."""
        k = self.path("keys")
        control = f"down_after_ms = {self.down_after_ms}\n" if self.down_after_ms else ""
        return (f'group = "{GROUP}"\ninterface = "{name}-eth0"\nservice_port = {cluster.PORT}\n'
                f'member_key = "{k}/{name}.key"\nmember_cert = "{k}/{name}.cert"\n'
                f'group_pub = "{k}/group.pub"\nmetrics_file = "{self.path(name + ".prom")}"\n'
                f'admin_socket = "{self.admin_socket(name)}"\n'
                f'[control]\ngroup = "{CONTROL_GROUPS[self.site_of[name]]}"\nrouted = true\nttl = 1\n'
                f"site_scope = {'true' if self.hierarchy else 'false'}\n{control}")

    # -- convergence -------------------------------------------------------------------------

    def site_converged(self, site):
        """(epoch, claims per router) once the site's running servers agree on one epoch, their
        slices cover the address space (with the hierarchy: the site's scope, once its routers
        have one), and both site routers hold exactly their claims at that epoch and carry the
        control group for each of them; else None."""
        self.check_processes()
        running = [s for s in self.running_servers() if self.site_of[s] == site]
        epochs = set()
        for s in running:
            m = self.server_metrics(s)
            if not m.get("slices"):
                return None
            epochs.add(int(m.get("epoch", 0)))
        if len(epochs) != 1:
            return None
        epoch = epochs.pop()
        if sum(self.server_metrics(s).get("slice_addresses", 0) for s in running) != \
                self.site_addresses(site):
            return None
        want = {self.ids[s] for s in running}
        out = {}
        for r in [r for r in topo.site_routers(site) if self.alive(f"verifier-{r}")]:
            st = self.router_status(r)
            if st is None:
                return None
            rows = [row for row in st["ownership"] if row["group"] == GROUP]
            if {row["member"] for row in rows} != want or any(row["epoch"] != epoch for row in rows):
                return None
            if {row["member"] for row in st.get("control", [])} != want:
                return None
            out[r] = {"members": sorted(want),
                      "control": sorted((row["member"], row["interface"])
                                        for row in st.get("control", []))}
        return epoch, out

    def site_addresses(self, site):
        """How many client addresses the site's servers share: with the hierarchy the site's
        scope (its routers' `scope_units`; none handed down yet: every unit), else all."""
        units = 0
        if self.hierarchy:
            for r in [r for r in topo.site_routers(site) if self.alive(f"verifier-{r}")]:
                units = max(units, ((self.router_status(r) or {}).get("site") or {})
                            .get("scope_units", 0))
        return (units or 1 << SLICE_BITS) << (32 - SLICE_BITS)

    def member_units(self):
        """{site: {server: units}}: each running server's share of the address space, in units."""
        out = {s: {} for s in topo.SITES}
        for name in self.running_servers():
            addrs = int(self.server_metrics(name).get("slice_addresses", 0))
            out[self.site_of[name]][name] = addrs >> (32 - SLICE_BITS)
        return out

    def converged(self):
        out = {}
        for s in topo.SITES:
            c = self.site_converged(s)
            if c is None:
                return None
            out[s] = {"epoch": c[0], "routers": c[1]}
        return out

    def wait_converged(self, timeout=60):
        return wait_for("each site's servers to agree on one epoch and both its routers to hold "
                        "their claims", self.converged, timeout=timeout)

    def up(self):
        self.start_net()
        self.make_keys()
        self.start_keystore()
        self.publish_all()
        self.start_verifiers()
        self.start_servers()
        return self.wait_converged()

    def pids(self):
        return [p.pid for p in self.procs.values()] + (self.frr.pids() if self.frr else [])

    def stop(self):
        """FRR first (its daemons are the net's), then what `Cluster.stop` stops."""
        if self.frr is not None:
            self.frr.stop()
        super().stop()




def upper_lines(pic):
    """The upper allocation, one line per site router (its verifier's `site` status)."""
    return [f"   {r}: site {v['site']}, member {v['member']}, upper epoch {v['upper_epoch']}, "
            f"units {v['own_units']}, upstream claim {v['claim_units']}, weight {v['weight']}"
            for r, v in sorted(pic["routers"].items())]


def hierarchy_up(c, narrate):
    """The upper allocation settled and every source answered by the server the two levels of
    steering name (client load running); the figures."""
    h = hierarchy.Hierarchy(c, ROUTER_IDS, 1 << SLICE_BITS)
    pic = h.wait_upper("the upper allocation: every agent at one upper epoch claiming its units "
                       "upstream, the upstream verifier holding those claims",
                       lambda p: all(v["weight"] > 0 for v in p.values()))
    narrate("3. the upper allocation (each site router's verifier, `status` → site):")
    for line in upper_lines(pic):
        narrate(line)
    shares = wait_scope_split(c, pic)
    for site, units in sorted(shares.items()):
        narrate(f"   site {site}'s servers split its scope of {sum(units.values())} units: {units}")
    pic["member_units"] = shares
    h.start_clients("story")
    steer = h.wait_as_steered("every source answered by the server the two levels of steering "
                              "name")
    return h, pic, steer


def wait_scope_split(c, pic, timeout=60):
    """{site: {server: units}} once each site's servers split exactly its scope (the units of
    its routers in the upper picture `pic`) evenly: the scope hand-down at work."""
    scope = {s: sum(v["own_units"] for r, v in pic["routers"].items() if r[0] == s)
             for s in topo.SITES}

    def split():
        shares = c.member_units()
        for s, units in shares.items():
            n = len(units)
            if not n or sum(units.values()) != scope[s] or \
                    any(u not in (scope[s] // n, -(-scope[s] // n)) for u in units.values()):
                return None
        return shares
    return wait_for("each site's servers to split exactly its scope", split, timeout=timeout)


def story(c, narrate, result):
    """The hierarchy's demo runs (lab/hierarchy.py): clients answered per site, a site router
    lost, a site's servers lost and back. Figures from the clients' own records; a live view
    (one line every few seconds) while it runs and the load picture at the end."""
    with sites_view.LiveView(c, narrate) as view:
        marks = told_story(c, narrate, result)
    path = os.path.join(os.path.dirname(c.run_dir), "load.svg")
    result["load_svg"] = view.write_svg(path, marks)
    narrate(f"   the load picture: {path}")


def told_story(c, narrate, result):
    """The story's steps (see `story`); the events to mark in the load picture."""
    h, result["upper"], steer = hierarchy_up(c, narrate)
    a = time.time()
    time.sleep(2)
    b = time.time()
    router_before = {r: v["own_units"] for r, v in result["upper"]["routers"].items()}

    narrate("4. a1's verifier SIGKILLed (its agent gone; a1 still routes unicast) ...")
    c.retire("verifier-a1")
    t_kill = time.time()
    c.signal("verifier-a1", signal.SIGKILL)
    c.wait_exit("verifier-a1")
    # Site-aware quotas (SPEC.md §9.4) keep site a's share: all of a1's units should go to a2
    # (with flat quotas they would spread over the live agents). Shown as it happens.
    pic = h.wait_upper("a1's units at the live agents, the upstream verifier re-pointed",
                       lambda p: p["a2"]["upper_epoch"] > result["upper"]["upper_epoch"])
    t_repointed = time.time()
    steer_after = h.wait_as_steered("every source answered as steered after a1's loss",
                                    since=t_repointed)
    time.sleep(2)
    t_router_end = time.time()
    for line in upper_lines(pic):
        narrate(line)

    narrate("5. every server of site b SIGKILLed ...")
    loss = hierarchy.site_loss(h, "b")
    for line in upper_lines(loss["upper"]):
        narrate(line)
    narrate("6. site b's servers started again ...")
    back = hierarchy.site_back(h, "b")
    for line in upper_lines(back["upper"]):
        narrate(line)
    time.sleep(2)
    t_end = time.time()
    steer_end = h.steering()
    replies = h.stop_clients()

    good, bad = hierarchy.check_answers(steer, hierarchy.answered_by(replies, a, b))
    per_site = {s: sum(1 for v in steer.values() if v and v[0][0] == s) for s in topo.SITES}
    result["answers"] = {"sources": len(steer), "as_steered": good, "wrong": bad[:10],
                         "per_site": per_site}
    narrate(f"   clients: {good} of {len(steer)} sources answered by exactly the server the two "
            f"levels steer them to; sources per site {per_site}")
    changed, gap = hierarchy.breaks(replies, t_kill - 1, t_router_end)
    after_a1 = hierarchy.check_answers(steer_after, hierarchy.answered_by(replies, t_repointed + 1,
                                                                          t_router_end))
    # Where a1's sources went, and which of them changed server: a source still in site a
    # (now through a2) must keep its member; one moved to site b cannot.
    moved = {src: steer_after[src][0] for src, v in steer.items() if v[0] == "a1"}
    to = {r: sum(1 for x in moved.values() if x == r) for r in sorted(set(moved.values()))}
    same_site_breaks = [src for src in changed if steer[src][0][0] == steer_after[src][0][0]]
    result["router_loss"] = {
        "a1_units": router_before["a1"], "units_after": {r: v["own_units"] for r, v in
                                                         pic["routers"].items()},
        "a1_sources": len(moved), "a1_sources_to": to,
        "repointed_ms": round((t_repointed - t_kill) * 1000), "breaks": len(changed),
        "breaks_same_site": len(same_site_breaks),
        "breaks_site_changed": sum(1 for s in changed if s not in same_site_breaks),
        "site_changed": sum(1 for s in steer if steer[s][0][0] != steer_after[s][0][0]),
        "longest_gap_ms": gap, "as_steered_after": after_a1[0], "wrong_after": after_a1[1][:10],
        "upper_epoch_after": pic["upper_epoch"]}
    r = result["router_loss"]
    narrate(f"   a1 lost: the upper group re-allocated at epoch {pic['upper_epoch']} "
            f"(units now {r['units_after']}), the upstream verifier re-pointed "
            f"{r['repointed_ms']} ms after the kill; a1's {len(moved)} sources went to {to}; "
            f"{len(changed)} sources changed server ({len(same_site_breaks)} of those that stayed "
            f"in their site), longest gap {gap} ms")
    b_srcs = loss["sources"]
    t_back = back["restarted_at"]
    fail_ms = hierarchy.first_answer_by(replies, b_srcs, hierarchy.site_servers("a"),
                                        loss["killed_at"], t_back)
    result["site_loss"] = {"sources": len(b_srcs), "answered_by_a_ms": fail_ms,
                           "upper_epoch_after": loss["upper"]["upper_epoch"],
                           "weights_b": [loss["upper"]["routers"][r]["weight"]
                                         for r in ("b1", "b2")],
                           "claims_b": [loss["upper"]["routers"][r]["claim_units"]
                                        for r in ("b1", "b2")]}
    narrate(f"   site b lost: its {len(b_srcs)} sources all answered by site a {fail_ms} ms after "
            f"the kill (the last of them)")
    end = hierarchy.check_answers(steer_end, hierarchy.answered_by(replies, t_end - 1.5, t_end))
    result["site_back"] = {"back_ms": back["back_ms"], "sources_b": len(back["sources"]),
                           "as_steered": end[0], "wrong": end[1][:10]}
    narrate(f"   site b back: steered to and answering {len(back['sources'])} sources "
            f"{back['back_ms']} ms after its servers' restart; {end[0]} of {len(steer_end)} "
            f"sources answered as steered")
    return [(t_kill, "a1's verifier SIGKILL"), (loss["killed_at"], "site b's servers SIGKILL"),
            (t_back, "site b's servers restarted")]


def bench(c, seconds, narrate):
    """`site_failover_*_ms`: site b's servers SIGKILLed and started again, as many trials as fit
    in `seconds`; per trial the time from the kill until every source of site b was answered by
    site a (the last source's first site-a answer, from the clients' records)."""
    h, _, _ = hierarchy_up(c, narrate)
    trials = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or not trials:
        loss = hierarchy.site_loss(h, "b")
        back = hierarchy.site_back(h, "b")
        trials.append((loss, back))
        narrate(f"   trial {len(trials)}: site b lost ({len(loss['sources'])} sources), back "
                f"after {back['back_ms']} ms")
    replies = h.stop_clients()
    ms = []
    for loss, back in trials:
        v = hierarchy.first_answer_by(replies, loss["sources"], hierarchy.site_servers("a"),
                                      loss["killed_at"], back["restarted_at"])
        if v is None:
            raise LabError(f"a trial's site-b source was never answered by site a: {loss}")
        ms.append(v)
    ms.sort()

    def pct(p):
        return ms[min(len(ms) - 1, int(round(p * (len(ms) - 1))))]
    return {"site_failover_p50_ms": pct(0.5), "site_failover_p99_ms": pct(0.99),
            "site_failover_max_ms": ms[-1], "site_failover_trials": len(ms),
            "site_failover_ms": ms}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "demo", "bench"])
    p.add_argument("--bin-dir", default="target/release")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument("--flat", action="store_true",
                   help="each site a cluster of its own, no upstream verifier, no site agents")
    p.add_argument("--hold", type=float, default=0,
                   help="seconds to keep everything up after it converged (then the rejection "
                        "counters are read again)")
    p.add_argument("--down-after-ms", type=int, default=1000,
                   help="the servers' control.down_after_ms (1000: debug daemons on a shared machine)")
    p.add_argument("--seconds", type=float, default=300,
                   help="bench: trials start while this many seconds have not passed")
    args = p.parse_args()
    if args.flat and args.command != "up":
        p.error("--flat: only `up` (the demo and the bench run the hierarchy)")
    cluster.prepare_run("sites")
    narrate = (lambda m: print(m, flush=True)) if not args.json else (lambda m: None)
    c = SitesCluster(bin_dir=args.bin_dir, run_dir=args.run_dir or "target/lab-sites/run",
                     log=lambda m: print(m, file=sys.stderr), hierarchy=not args.flat)
    c.down_after_ms = args.down_after_ms
    result = {"lab": "sites", "hierarchy": not args.flat}
    try:
        narrate("1. the sites topology, FRR on the five routers (OSPF + BFD) ...")
        result["routing"] = c.start_net()
        if not args.json:
            frr.print_picture(result["routing"])
        import lab
        result["unicast"] = lab.sites_smoke(c.net)
        bad = [k for k, ok in result["unicast"].items() if not ok]
        narrate(f"   unicast: {len(result['unicast']) - len(bad)} of {len(result['unicast'])} pings "
                f"answered (clients and their sources to every server and the keystore, servers "
                f"to the keystore and the other site){': FAILED ' + ', '.join(bad) if bad else ''}")
        narrate("2. keys, keystore, records; the verifiers (site routers" +
                ("" if args.flat else " with [site], and `up`") + "); three servers per site ...")
        c.make_keys()
        c.start_keystore()
        c.publish_all()
        c.start_verifiers()
        c.start_servers()
        result["sites"] = c.wait_converged()
        for s, v in result["sites"].items():
            narrate(f"   site {s}: members {v['routers'][topo.site_routers(s)[0]]['members']} at "
                    f"epoch {v['epoch']}; both routers hold their claims and carry their control "
                    f"group: {v['routers'][topo.site_routers(s)[0]]['control']}")
        if args.hold:
            narrate(f"   holding {args.hold:.0f} s ...")
            time.sleep(args.hold)
            result["sites_after_hold"] = c.wait_converged()
        # Reasons with a count only. Expected: `unsigned` (the servers' kernel reports; lab/README.md).
        result["rejected"] = {r: {k: n for k, n in c.rejected(c.router_status(r)).items() if n}
                              for s in topo.SITES for r in topo.site_routers(s)}
        narrate(f"   joins the site routers rejected: {result['rejected']}")
        if args.command == "demo":
            story(c, narrate, result)
        elif args.command == "bench":
            result.update(bench(c, args.seconds, narrate))
        elif not args.flat:
            result["upper"] = hierarchy.Hierarchy(c, ROUTER_IDS, 1 << SLICE_BITS).wait_upper(
                "the upper allocation settled")
        if not args.flat:
            result["rejected_up"] = {k: n for k, n in c.rejected(c.router_status("up")).items() if n}
            narrate(f"   joins the upstream verifier rejected: {result['rejected_up']}")
    except (LabError, frr.FrrError) as e:
        result["error"] = str(e)
        print(f"sites: {e} (logs in {c.run_dir})", file=sys.stderr)
    except (KeyboardInterrupt, cluster.Interrupted):
        result["error"] = "interrupted"
    finally:
        result["pids"] = c.pids()
        c.stop()
    if args.command == "bench" and "error" not in result:
        # The trials on a line of their own: the JSON line is merged into the topology line.
        print(f"site failover trials (ms): {result['site_failover_ms']}", flush=True)
        keys = ["site_failover_p50_ms", "site_failover_p99_ms", "site_failover_max_ms",
                "site_failover_trials"]
        print(json.dumps({"bench": "sites", **{k: result[k] for k in keys}}), flush=True)
    elif args.json:
        print(json.dumps(result))
    sys.exit(1 if "error" in result else 0)


if __name__ == "__main__":
    main()
