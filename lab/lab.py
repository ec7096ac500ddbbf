#!/usr/bin/python3
"""Bring the Manycast lab up and down.

    lab/lab.py smoke [--json] [--topo sites]
                                start the default topology (or the `sites` one with FRR),
                                check reachability (sites: FRR converged first), stop
    lab/lab.py cli [--topo sites]
                                start it and open the mininet prompt
    lab/lab.py clean            remove anything a crashed run left: the daemons and clients a lab
                                recorded in /run/manycast-lab.pids (each by its pid),
                                mininet's own `mn -c`, and the topology's bridges

Always stops what it started: on success, on error, on Ctrl-C and on SIGTERM. Holds the
machine-wide lab lock /tmp/manycast-lab.lock while a lab runs (host names are fixed).
"""

import argparse
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mininet.cli import CLI  # noqa: E402
from mininet.log import setLogLevel  # noqa: E402
from mininet.net import Mininet  # noqa: E402
from mininet.nodelib import LinuxBridge  # noqa: E402

import cluster  # noqa: E402
import frr  # noqa: E402
import topo  # noqa: E402


def start():
    net = Mininet(topo=topo.ManycastTopo(), switch=LinuxBridge, controller=None,
                  autoSetMacs=True, waitConnected=False)
    net.start()
    topo.configure(net)
    return net


def start_sites(run_dir):
    """The `sites` topology with FRR on its five routers; returns (net, frr). FRR is started
    once the net is up; the caller stops both (FRR first), also when this raises."""
    net = Mininet(topo=topo.SitesTopo(), switch=LinuxBridge, controller=None,
                  autoSetMacs=True, waitConnected=False)
    net.start()
    topo.configure_sites(net)
    return net, frr.Frr(net, run_dir)


def sites_smoke(net):
    """From each client (its own address and two of its sources) to every server (both
    subnets of both sites) and the keystore; from every server to the keystore and to every
    server of the other site."""
    results = {}
    servers = [(name, addr) for s in topo.SITES for name, _, addr, _, _ in topo.site_servers(s)]
    ks = topo.KEYSTORE_SUBNET[2]
    for c in range(1, topo.CLIENTS + 1):
        cli = net.get(f"cli{c}")
        for src in [None] + topo.client_sources(c)[:2]:
            label = f"cli{c}" if src is None else f"cli{c}[{src}]"
            for name, addr in servers + [("ks", ks)]:
                results[f"{label}->{name}"] = ping(cli, addr, source_addr=src)
    for name, addr in servers:
        results[f"{name}->ks"] = ping(net.get(name), ks)
        for other, oaddr in servers:
            if other[3] != name[3]:
                results[f"{name}->{other}"] = ping(net.get(name), oaddr)
    return results


SILENCE = """table netdev lab_silence {
  chain silence_in { type filter hook ingress device "%(dev)s" priority -500; policy drop; }
}
table inet lab_silence {
  chain silence_out {
    type filter hook output priority -500; policy accept;
    oifname "%(dev)s" drop
  }
  chain silence_forward {
    type filter hook forward priority -500; policy accept;
    oifname "%(dev)s" drop
  }
}
"""


def silence(node, dev, on):
    """Drops everything `node` receives on and sends out of `dev`, the link staying up (a router
    that goes silent: only BFD or the OSPF dead interval can tell), or lifts that."""
    if on:
        with tempfile.NamedTemporaryFile("w", prefix="manycast-lab-", suffix=".nft") as f:
            f.write(SILENCE % {"dev": dev})
            f.flush()
            out = node.cmd(f"nft -f {f.name} 2>&1")
    else:
        out = node.cmd("nft delete table netdev lab_silence 2>&1; nft delete table inet lab_silence 2>&1")
    if out.strip():
        raise cluster.LabError(f"nft on {node.name}: {out.strip()}")


def sites_router_silence(net, routers, router="a1"):
    """`router` goes silent on its upstream link: `up` must drop it as next hop to the site's
    subnets (BFD, then OSPF), and clients must still reach every server of the site, the
    ones whose gateway is `router` too (it routes through its partner over the site subnets).
    Then the link comes back and `up` uses both site routers again. Returns the checks and
    the time `up` took to drop it (measured, not a test criterion)."""
    site = router[0]
    gone = str(topo.site_router_upstream_addr(router))
    subnets = [str(topo.site_subnet(site, n)) for n in range(1, topo.SITE_SUBNETS + 1)]
    before = {n: routers.next_hops("up", n) for n in subnets}
    t0 = time.monotonic()
    silence(net.get(router), f"{router}-up", True)
    try:
        cluster.wait_for(f"up to drop {router} as next hop",
                         lambda: all(gone not in routers.next_hops("up", n) for n in subnets),
                         timeout=30, interval=0.05)
        dropped_ms = round((time.monotonic() - t0) * 1000)
        # The silenced router routes through its partner once it, too, found `up` gone.
        cluster.wait_for(f"{router} to route to the clients through {partner_of(router)}",
                         lambda: routers.next_hops(router, str(topo.client_subnet(1)))
                         and not any(h.startswith("10.0.0.")
                                     for h in routers.next_hops(router, str(topo.client_subnet(1)))),
                         timeout=30, interval=0.05)
        during = {n: routers.next_hops("up", n) for n in subnets}
        reach = {f"cli1->{name}": ping(net.get("cli1"), addr)
                 for name, _, addr, _, _ in topo.site_servers(site)}
    finally:
        silence(net.get(router), f"{router}-up", False)
    cluster.wait_for(f"up to use {router} again",
                     lambda: all(gone in routers.next_hops("up", n) for n in subnets),
                     timeout=60, interval=0.2)
    return {"router": router, "next_hops_before": before, "next_hops_silenced": during,
            "reach_silenced": reach, "drop_ms": dropped_ms,
            "next_hops_after": {n: routers.next_hops("up", n) for n in subnets}}


def partner_of(router):
    return next(r for r in topo.site_routers(router[0]) if r != router)


def ping(src, dst_addr, source_addr=None):
    """Reachable: an echo reply within 3 s (a request every 0.2 s until one is answered; with
    -w, -c counts replies). One request with a 1 s wait failed once for a fresh IPv6 source on
    a loaded machine (neighbour discovery on two links before the first reply)."""
    opt = f"-I {source_addr}" if source_addr else ""
    out = src.cmd(f"ping -c1 -i0.2 -w3 {opt} {dst_addr}")
    return " bytes from " in out


def smoke(net):
    """Every server, the keystore, the attacker and every client source reach each other
    through r1; so do client IPv6 sources and srv1's IPv6 address."""
    results = {}
    hosts = [h for h in net.hosts if h.name != "r1"]
    for h in hosts:
        for other in hosts:
            if other is not h:
                results[f"{h.name}->{other.name}"] = ping(h, other.IP())
    for c in range(1, topo.CLIENTS + 1):
        cli = net.get(f"cli{c}")
        for a in topo.client_sources(c)[:4]:
            results[f"cli{c}[{a}]->srv1"] = ping(cli, net.get("srv1").IP(), source_addr=a)
        for a in topo.client_sources6(c)[:4]:
            results[f"cli{c}[{a}]->srv1"] = ping(cli, topo.server_subnet6(1)[2], source_addr=a)
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["smoke", "cli", "clean"])
    p.add_argument("--json", action="store_true", help="print results as one JSON line")
    p.add_argument("--topo", choices=["manycast", "sites"], default="manycast",
                   help="the default topology or the two-site one with FRR (lab/README.md)")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("lab: needs root (network namespaces, bridges)")
    if args.command == "clean":
        # Under the lock: a crashed lab released it; a live one is waited for, not broken.
        lock = cluster.LabLock()
        lock.acquire(lambda m: print(m, file=sys.stderr))
        killed = cluster.clean_leftovers()
        lock.release()
        print(f"lab: stopped {killed} leftover process(es); mininet cleaned")
        return
    setLogLevel("warning")
    net = routers = None
    run_dir = None
    ok = False

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    lock = cluster.LabLock()
    lock.acquire(lambda m: print(m, file=sys.stderr))
    try:
        if args.topo == "sites":
            run_dir = tempfile.mkdtemp(prefix="manycast-lab-sites-")
            net, routers = start_sites(run_dir)
            routers.start_sites()
            picture = routers.wait_converged()
        else:
            net = start()
        if args.command == "cli":
            if routers is not None:
                frr.print_picture(picture)
                print(f"lab: FRR's configs, sockets and logs in {run_dir} "
                      f"(a1 vtysh --vty_socket {run_dir}/frr-a1 -c 'show ip route')")
            CLI(net)
            ok = True
        else:
            results = smoke(net) if routers is None else sites_smoke(net)
            failover = sites_router_silence(net, routers) if routers is not None else None
            if args.json:
                out = {"lab": "smoke", "topo": args.topo, "results": results}
                if routers is not None:
                    out.update(routing=picture, pids=routers.pids(), router_silence=failover)
                print(json.dumps(out))
            else:
                if routers is not None:
                    frr.print_picture(picture)
                for k, good in results.items():
                    print(f"{'ok  ' if good else 'FAIL'} {k}")
                if failover is not None:
                    print(f"before: {failover['next_hops_before']}")
                    print(f"{failover['router']} silenced on its upstream link: up dropped it "
                          f"after {failover['drop_ms']} ms; next hops {failover['next_hops_silenced']}; "
                          f"reached {failover['reach_silenced']}; after: {failover['next_hops_after']}")
            ok = all(results.values())
            if not ok:
                sys.exit(1)
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if routers is not None:
            routers.stop()
        if net is not None:
            net.stop()
        if os.path.exists(cluster.PID_FILE):
            os.unlink(cluster.PID_FILE)
        lock.release()
        if run_dir is not None:
            if ok:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                print(f"lab: FRR configs and logs kept in {run_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
