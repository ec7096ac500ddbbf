#!/usr/bin/python3
"""The Manycast daemons on the `sites` topology (topo.SitesTopo, FRR from frr.py).

    lab/sites.py up [--bin-dir target/release] [--run-dir DIR] [--json] [--hierarchy]
        bring the topology and the daemons up, print the routing picture and each site's
        cluster, stop
    lab/sites.py demo [...]   the same, narrated, with the hierarchy's steps marked pending

What runs where today (as far as main allows):
  up          FRR only (zebra, bfdd, ospfd; originates the default route)
  a1, a2      FRR and a `manycast-verifier` each on the site's two subnets (redundant verifiers,
  b1, b2      SPEC.md §10.6: both verify and steer the same joins; each trusts the other as
              querier), carrying the site's control group between the subnets (§10.7)
  srva1..3    `manycast-server`, native mode, member ids 1-3, control group 239.77.1.1 routed
  srvb1..3    the same, member ids 4-6, control group 239.77.2.1
  ks          `dns-keystore` with the service group's and both control groups' records
So each site is a single-site cluster of its own behind its two routers; the service group
232.1.1.1 is the same in both, from one group key.

The site hierarchy on top (`--hierarchy`; issue 14 item 2; /work/briefs/sites-design.md): an
ordinary verifier on `up` (its member links: the upstream LAN), router certificates naming the
site for the site routers (`manycastctl cert issue ... --site N`, on main: issued), a `[site]`
section in the site routers' verifier configs (H3), `control.site_scope = true` on the servers
(H1/H2). The configs are generated here (`upstream_verifier_config`, `site_section`), but the
verifier on main refuses `[site]` until H3's agent lands: `--hierarchy` then fails at start
with the daemon's own error ("unknown field `site`"). Nothing of the hierarchy is simulated.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster  # noqa: E402
import frr  # noqa: E402
import topo  # noqa: E402
from cluster import GROUP, KEYSTORE_ADDR, LabError, wait_for  # noqa: E402

# Each site's members' control group (carried between the site's two subnets by its routers).
CONTROL_GROUPS = {"a": "239.77.1.1", "b": "239.77.2.1"}
# The hierarchy (pending): the site agents' upper control group on the upstream LAN, its port,
# the site ids in router certificates and the routers' member ids in the upper group (unique
# there and apart from the servers' 1-6, since one group key certifies both).
UPPER_GROUP = "239.78.0.1"
UPPER_PORT = 4791
SITE_IDS = {"a": 1, "b": 2}
ROUTER_IDS = {r: 100 * SITE_IDS[s] + int(r[1:]) for s in topo.SITES for r in topo.site_routers(s)}
SLICE_BITS = 8  # the servers' default `control.slice_bits`; the agents' must equal it
UPSTREAM_REFRESH_MS = 1000


def partner(router):
    """The other router of `router`'s site."""
    return next(r for r in topo.site_routers(router[0]) if r != router)


class SitesCluster(cluster.Cluster):
    """`cluster.Cluster` on the sites topology: the same binaries, keystore, record publishing,
    process handling and teardown; its own net (with FRR), keys, verifiers and servers."""

    def __init__(self, bin_dir="target/release", run_dir=None, log=None, hierarchy=False):
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
        if self.hierarchy:
            self.publish(group=UPPER_GROUP, name="upper-ctl")

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
        groups = [GROUP, CONTROL_GROUPS[site]] + ([UPPER_GROUP] if self.hierarchy else [])
        return (f"interfaces = {json.dumps(ifs)}\n"
                f'status_socket = "{self.status_socket(router)}"\n'
                f"control_groups = {json.dumps([CONTROL_GROUPS[site]])}\n"
                f"[querier]\ntrusted_queriers = {json.dumps(trusted)}\n"
                f"{self.keystore_table(groups)}"
                f"{self.site_section(router) if self.hierarchy else ''}")

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
                f"{self.keystore_table([GROUP])}")

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
        routed by the site routers (SPEC.md §10.7); with the hierarchy, `site_scope`."""
        k = self.path("keys")
        control = f"down_after_ms = {self.down_after_ms}\n" if self.down_after_ms else ""
        if self.hierarchy:
            control += "site_scope = true\n"
        return (f'group = "{GROUP}"\ninterface = "{name}-eth0"\nservice_port = {cluster.PORT}\n'
                f'member_key = "{k}/{name}.key"\nmember_cert = "{k}/{name}.cert"\n'
                f'group_pub = "{k}/group.pub"\nmetrics_file = "{self.path(name + ".prom")}"\n'
                f'admin_socket = "{self.admin_socket(name)}"\n'
                f'[control]\ngroup = "{CONTROL_GROUPS[self.site_of[name]]}"\nrouted = true\nttl = 1\n'
                f"{control}")

    # -- convergence -------------------------------------------------------------------------

    def site_converged(self, site):
        """(epoch, claims per router) once the site's running servers agree on one epoch, their
        slices cover the address space, and both site routers hold exactly their claims at that
        epoch and carry the control group for each of them; else None."""
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
        if sum(self.server_metrics(s).get("slice_addresses", 0) for s in running) != 1 << 32:
            return None
        want = {self.ids[s] for s in running}
        out = {}
        for r in topo.site_routers(site):
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


PENDING = [
    "upstream verifier on `up` steering units to the site agents (H3: [site], upstream joins)",
    "site agents' upper control group on the upstream LAN (H3; router certificates: on main)",
    "scope hand-down in the site routers' queries, members allocating within it (H1, H2)",
    "site loss and router loss runs (issue 14 item 2)",
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "demo"])
    p.add_argument("--bin-dir", default="target/release")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument("--hierarchy", action="store_true",
                   help="also the site hierarchy's configs (refused by the daemons on main)")
    p.add_argument("--hold", type=float, default=0,
                   help="seconds to keep everything up after it converged (then the rejection "
                        "counters are read again)")
    p.add_argument("--down-after-ms", type=int, default=1000,
                   help="the servers' control.down_after_ms (1000: debug daemons on a shared machine)")
    args = p.parse_args()
    cluster.prepare_run("sites")
    narrate = (lambda m: print(m, flush=True)) if not args.json else (lambda m: None)
    c = SitesCluster(bin_dir=args.bin_dir, run_dir=args.run_dir or "target/lab-sites/run",
                     log=lambda m: print(m, file=sys.stderr), hierarchy=args.hierarchy)
    c.down_after_ms = args.down_after_ms
    result = {"lab": "sites", "hierarchy": args.hierarchy}
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
        narrate("2. keys, keystore, records; the site routers' verifiers; three servers per site ...")
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
        # Reasons with a count only. Expected today: `record-mismatch` (lab/README.md, sites).
        result["rejected"] = {r: {k: n for k, n in c.rejected(c.router_status(r)).items() if n}
                              for s in topo.SITES for r in topo.site_routers(s)}
        narrate(f"   joins the site routers rejected: {result['rejected']}")
        if args.command == "demo":
            narrate("3. the site hierarchy: pending (not run, not simulated):")
            for step in PENDING:
                narrate(f"   - {step}")
        result["pending"] = PENDING
    except (LabError, frr.FrrError) as e:
        result["error"] = str(e)
        print(f"sites: {e} (logs in {c.run_dir})", file=sys.stderr)
    except (KeyboardInterrupt, cluster.Interrupted):
        result["error"] = "interrupted"
    finally:
        result["pids"] = c.pids()
        c.stop()
    if args.json:
        print(json.dumps(result))
    sys.exit(1 if "error" in result else 0)


if __name__ == "__main__":
    main()
