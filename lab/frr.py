"""FRR (Debian `frr`) on the lab's routers: zebra, bfdd and ospfd per router, started by the lab
inside the router's namespace in the foreground (its children, recorded for `lab.py clean`),
each router's configs, pid files and sockets in its own directory `<run_dir>/frr-<router>/`
(FRR drops privileges to user `frr`, so that directory is frr's). The way
manycast-server/tests/support/frr.rs runs FRR for the redundant-verifier test, with OSPF instead
of BGP: see `ospf_configs` for why.

    f = Frr(net, run_dir, log)
    f.start_sites()               # every router of topo.SitesTopo
    picture = f.wait_converged()  # each router's routes, OSPF neighbours and BFD peers
    f.stop()                      # SIGTERM, SIGKILL after 5 s; also on error (the callers' finally)
"""

import json
import os
import signal
import subprocess
import sys
import time

import cluster
import topo

FRR = "/usr/lib/frr"
DAEMONS = ("zebra", "bfdd", "ospfd")
# BFD's transmit and receive interval; a neighbour is down after 3 missed (0.9 s). Slower than
# the redundant test's 100 ms: five routers' bfdd on a shared 2-core machine must not flap.
BFD_MS = 300
# OSPF hello and dead intervals (s): the dead interval is also the wait before a DR election on a
# broadcast link, so it bounds how long the lab takes to come up; BFD detects failures faster.
HELLO_S = 1
DEAD_S = 4


def ospf_configs(name, router_id, interfaces, passive=(), originate_default=False):
    """Each daemon's config file for one router: {daemon: text}. Separate files, as the
    redundant test's, since a daemon stops parsing a shared `frr.conf` sensibly at the first
    section it does not know.

    Why OSPF and not BGP: the lab is one administrative domain whose routers share broadcast
    links (the upstream LAN, the site subnets); OSPF finds its neighbours there by itself and
    announces every connected subnet with one `network` line, with no per-neighbour addresses or
    AS numbers to keep in step with the topology, converges in a few seconds (hello 1 s) and
    takes BFD per interface. BGP is what the redundant-verifier test uses, because there it
    carries the verifiers' VIP routes between separately run routers (SPEC.md §10.6); nothing in
    the sites lab needs policy between routers. The upstream router originates the default
    route: the client sources (global /32s on `up`) are reached through it, as the Internet
    would be, instead of 128 host routes in every router's table."""
    head = f"frr defaults traditional\nhostname {name}\nlog stdout informational\n"
    # Plain next hops, not kernel nexthop objects (frr.rs: FRR 8.4's zebra loses a multipath
    # group the kernel shrank when a link went down).
    zebra = f"{head}no zebra nexthop kernel enable\n"
    bfd = (f"{head}bfd\n profile lab\n  receive-interval {BFD_MS}\n  transmit-interval {BFD_MS}\n"
           "  detect-multiplier 3\n")
    ospf = head
    for intf in interfaces:
        ospf += f"interface {intf}\n ip ospf hello-interval {HELLO_S}\n ip ospf dead-interval {DEAD_S}\n"
        if intf not in passive:
            ospf += " ip ospf bfd\n ip ospf bfd profile lab\n"
    ospf += (f"router ospf\n ospf router-id {router_id}\n timers throttle spf 0 50 1000\n"
             " network 10.0.0.0/8 area 0\n")
    ospf += "".join(f" passive-interface {intf}\n" for intf in passive)
    if originate_default:
        ospf += " default-information originate always\n"
    return {"zebra": zebra, "bfdd": bfd, "ospfd": ospf}


def sites_configs():
    """{router: configs} for topo.SitesTopo: `up` is passive towards the clients and the
    keystore (no router there) and originates the default route; the site routers speak OSPF on
    the upstream LAN and on both site subnets (so a site router whose upstream link fails still
    routes through its partner)."""
    out = {}
    for router, intfs in topo.sites_router_interfaces().items():
        names = [i for i, _ in intfs]
        if router == "up":
            out[router] = ospf_configs(router, topo.UPSTREAM_SUBNET[1], names,
                                       passive=[i for i in names if i != "up-lan"],
                                       originate_default=True)
        else:
            out[router] = ospf_configs(router, topo.site_router_upstream_addr(router), names)
    return out


class FrrError(RuntimeError):
    pass


class Frr:
    def __init__(self, net, run_dir, log=None):
        if not os.access(f"{FRR}/ospfd", os.X_OK):
            raise FrrError("FRR is not installed: run scripts/setup.sh (Debian package frr)")
        self.net = net
        self.run_dir = os.path.abspath(run_dir)
        self.log = log or (lambda msg: None)
        self.procs = []  # (router, daemon, Popen)
        self.dirs = {}  # router -> its FRR directory

    def start(self, router, configs):
        """Starts zebra, bfdd and ospfd in `router` with `configs` ({daemon: text}); their
        output goes to `<run_dir>/frr-<router>-<daemon>.log`."""
        d = os.path.join(self.run_dir, f"frr-{router}")
        os.makedirs(d, exist_ok=True)
        # FRR runs as user frr: it must reach its directory inside the run directory.
        os.chmod(self.run_dir, 0o755)
        for daemon, text in configs.items():
            with open(os.path.join(d, f"{daemon}.conf"), "w") as f:
                f.write(text)
        subprocess.run(["chown", "-R", "frr:frr", d], check=True)
        self.dirs[router] = d
        node = self.net.get(router)
        for daemon in DAEMONS:
            args = [f"{FRR}/{daemon}", "-f", f"{d}/{daemon}.conf", "-i", f"{d}/{daemon}.pid",
                    "-z", f"{d}/zserv.api", "--vty_socket", d, "--log", "stdout"]
            if daemon == "bfdd":
                # Its control socket defaults to /var/run/frr/bfdd.sock: one per router here.
                args += ["--bfdctl", f"{d}/bfdd.sock"]
            with open(os.path.join(self.run_dir, f"frr-{router}-{daemon}.log"), "w") as logf:
                p = node.popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
            cluster.record_pid(p.pid, args)
            self.procs.append((router, daemon, p))
            if daemon == "zebra":
                cluster.wait_for(f"zebra's API socket on {router}",
                                 lambda: os.path.exists(f"{d}/zserv.api") or p.poll() is not None)
                self.check()

    def start_sites(self):
        for router, configs in sites_configs().items():
            self.start(router, configs)

    def pids(self):
        return [p.pid for _, _, p in self.procs]

    def check(self):
        """FrrError if a daemon exited (its config refused, a socket taken), with its log's
        last line."""
        for router, daemon, p in self.procs:
            if p.poll() is not None:
                path = os.path.join(self.run_dir, f"frr-{router}-{daemon}.log")
                try:
                    with open(path) as f:
                        last = (f.read().strip().splitlines() or [""])[-1]
                except OSError:
                    last = ""
                raise FrrError(f"{daemon} on {router} exited ({p.returncode}): {last}")

    def vtysh(self, router, command):
        """`vtysh -c <command>` against `router`'s FRR."""
        p = self.net.get(router).popen(["vtysh", "--vty_socket", self.dirs[router], "-c", command],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, _ = p.communicate(timeout=30)
        return out.decode(errors="replace")

    def vtysh_json(self, router, command):
        try:
            return json.loads(self.vtysh(router, command + " json") or "{}")
        except ValueError:
            return {}

    def routes(self, router):
        """{prefix: protocol} of the routes zebra selected in `router` (`show ip route json`)."""
        out = {}
        for prefix, entries in self.vtysh_json(router, "show ip route").items():
            for e in entries:
                if e.get("selected"):
                    out[prefix] = e.get("protocol")
        return out

    def next_hops(self, router, prefix):
        """The gateways of `router`'s kernel route to `prefix` (several under ECMP); [] when it
        has none or the route is connected."""
        out = self.net.get(router).cmd(f"ip -j -4 route show {prefix}")
        try:
            routes = json.loads(out or "[]")
        except ValueError:
            return []
        hops = []
        for r in routes:
            hops += [r["gateway"]] if "gateway" in r else []
            hops += [n["gateway"] for n in r.get("nexthops", []) if "gateway" in n]
        return sorted(hops)

    def picture(self):
        """The routing picture: per router its selected routes, its OSPF neighbours (router id
        and state) and its BFD peers (address and status)."""
        pic = {}
        for router in self.dirs:
            nbrs = self.vtysh_json(router, "show ip ospf neighbor").get("neighbors", {})
            peers = self.vtysh_json(router, "show bfd peers")
            pic[router] = {
                "routes": self.routes(router),
                "ospf_neighbours": {rid: sorted({n.get("nbrState", "?").split("/")[0] for n in ns})
                                    for rid, ns in nbrs.items()},
                "bfd_peers": {p.get("peer"): p.get("status") for p in peers
                              if isinstance(peers, list)},
            }
        return pic

    def converged(self, subnets, default_via=("up",)):
        """The picture once every router has a selected route to each of `subnets` and, except
        the routers in `default_via`, a default route, every BFD peer is up and every OSPF
        adjacency settled; else None."""
        self.check()
        pic = self.picture()
        for router, p in pic.items():
            want = {str(n) for n in subnets}
            if router not in default_via:
                want.add("0.0.0.0/0")
            if not want <= set(p["routes"]):
                return None
            if not p["bfd_peers"] or any(s != "up" for s in p["bfd_peers"].values()):
                return None
            # Adjacencies settled: Full, or 2-Way between two routers neither of which is the
            # DR or BDR of their broadcast link (they exchange no database, RFC 2328 §10.4).
            states = {s for ss in p["ospf_neighbours"].values() for s in ss}
            if not states or not states <= {"Full", "2-Way"}:
                return None
        return pic

    def wait_converged(self, subnets=None, timeout=90):
        subnets = subnets if subnets is not None else topo.sites_subnets()
        return cluster.wait_for("FRR to converge (every router a route to every subnet, BFD up)",
                                lambda: self.converged(subnets), timeout=timeout, interval=0.5)

    def stop(self):
        """SIGTERM to every daemon, SIGKILL after 5 s; waits for each."""
        for _, _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, _, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def print_picture(picture, file=sys.stdout):
    """The routing picture, one block per router: OSPF neighbours, BFD peers, routes."""
    for router, p in picture.items():
        print(f"{router}: OSPF neighbours "
              + ", ".join(f"{rid} {'/'.join(st)}" for rid, st in sorted(p["ospf_neighbours"].items()))
              + "; BFD " + ", ".join(f"{a} {st}" for a, st in sorted(p["bfd_peers"].items())),
              file=file)
        for prefix, proto in sorted(p["routes"].items()):
            print(f"    {prefix:<18} {proto}", file=file)
