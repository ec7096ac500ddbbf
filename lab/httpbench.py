#!/usr/bin/python3
"""`make bench B=http` (issue 16): wrk through the VIP to the nginx cluster vs the same wrk
straight at the servers' nginx, in the same run, on the default lab with the release daemons.

    lab/httpbench.py [--bin-dir target/release] [--run-dir DIR] [--seconds 5] [--rounds 5]
                     [--connections 16]

The cluster is `web.WebCluster` (web.py): srv1..srv4 each with nginx (one worker) and a
`manycast-server` in VIP mode (strategy pin, the nginx health check), the verifier steering
VIP 10.200.0.1 by the client's source address. Every wrk runs in cli1, one thread, the same
connection count, for the same time, with `--latency`; each pair (VIP, straight) runs back to
back, in alternating order from round to round; the rps and latency figures are medians over
the rounds, `ratio` and `new_conn_ratio` the medians of the per-round ratios (VIP over
straight, the two runs of a round back to back):

  keep-alive       wrk's default: `connections` connections held for the whole run
  new connection   `-H 'Connection: close'`: one request per connection (nginx closes)

wrk has one target and no source option, and the VIP steers by the client's source address: one
wrk from one address would reach one server. So cli1's nftables (table `ip httpbench`, the
client namespace only) spread wrk's connections, in both runs alike: wrk targets TARGET
(10.201.0.1, held by nobody); every new connection to it is DNATed (output hook) to `numgen inc
mod K` over a map and SNATed (postrouting) to `numgen inc mod K` over K of cli1's source
addresses, chosen (by curl through the VIP) so that each server owns K/N of them in the current
allocation. VIP run: the DNAT map holds the VIP K times; straight run: the N servers' own
addresses in turn. Both runs rewrite source and destination of every packet. The client-side
cost (conntrack, NAT, routing) is the same in both, each server gets 1/N of the connections in
both, and what differs is the path: the verifier's VIP steering at r1 (nft mark map, policy
routing, the pin's conntrack mark) and the VIP on the member's `lo`, against plain routing to
the server's address. "Straight at one server's nginx × N servers" is measured, not multiplied:
the N servers at once (on this 2-core machine every nginx shares one core, so one server's
figure times N would count that core N times). For reference `direct_one_*`: the same wrk
straight at srv1's nginx alone.

Pinning (2 cores): wrk on CPU 0 (`taskset -c 0`), every nginx worker on CPU 1
(`worker_cpu_affinity 10`); the daemons, the router's forwarding (softirq, on the CPU that sends)
and the rest float. Each nginx's `stub_status` (from its own host only) counts the requests it
served in each run: the VIP run's per-server shares are reported (`vip_share`).

IPv6 (the cluster is dual-stack, web.py; `--no-v6` leaves it out): after the IPv4 rounds the
same rounds from cli1's IPv6 sources through the IPv6 VIP vs straight at the servers' IPv6
addresses, with an `ip6 httpbench6` table DNATing TARGET6 likewise; its figures are the same
keys prefixed `http6_`. The IPv6 VIP pins on the verifier's nft flow tables (the tc program is
IPv4 only), so `http6_ratio` measures that path.

The last stdout line is the benchmark's JSON line (also written to target/bench/http.json).
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys

LAB = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(LAB)
sys.path.insert(0, LAB)

import cluster  # noqa: E402
import topo  # noqa: E402
import web  # noqa: E402

CLIENT = "cli1"
# wrk's target in every run: an address nobody holds, which cli1's DNAT rewrites to the VIP or
# to a server (so that both runs rewrite the destination: a DNAT to the address a packet
# already has is no rewrite at all, and would leave the straight runs one per-packet NAT more).
TARGET = "10.201.0.1"
TARGET6 = "2001:db8:201::1"  # the same for the IPv6 runs
WRK_CPU = "0"
NGINX_CPUS = "10"  # worker_cpu_affinity: CPU 1
PER_SERVER = 4  # client sources per server in the NAT map


def log(msg):
    print(f"httpbench: {msg}", file=sys.stderr, flush=True)


def stub_requests(c, name):
    """Requests nginx on `name` has served (its stub_status), or None."""
    out = c.run(name, ["curl", "-s", "--max-time", "2", f"http://127.0.0.1:{web.HTTP_PORT}/status"],
                check=False)
    m = re.search(r"^\s*\d+\s+\d+\s+(\d+)\s*$", out, re.M)
    return int(m.group(1)) if m else None


def spread_sources(c, six=False):
    """PER_SERVER of cli1's sources (IPv6 ones with `six`) per server, interleaved (srv1, srv2,
    ..., srv1, ...), by asking through the VIP who answers each."""
    srcs = topo.client_sources6(1) if six else topo.client_sources(1)
    answers = c.curl(1, [str(a) for a in srcs], tries=1)
    per = {s: [] for s in c.ids}
    for src, w in answers.items():
        if w[0] in per:
            per[w[0]].append(src)
    short = {s: len(v) for s, v in per.items() if len(v) < PER_SERVER}
    if short:
        raise cluster.LabError(f"too few of cli1's sources per server for the spread: {short}")
    return [per[s][k] for k in range(PER_SERVER) for s in c.ids]


def nat_table(six):
    """(family, table) of the client's NAT: `ip httpbench`, or `ip6 httpbench6` for IPv6."""
    return ("ip6", "httpbench6") if six else ("ip", "httpbench")


def nat_rules(dests, sources, six=False):
    k = len(sources)
    dmap = ", ".join(f"{i} : {d}" for i, d in enumerate(dests))
    smap = ", ".join(f"{i} : {s}" for i, s in enumerate(sources))
    iface = f"{CLIENT}-eth0"
    fam, name = nat_table(six)
    return (f"table {fam} {name}\ndelete table {fam} {name}\n"
            f"table {fam} {name} {{\n"
            f"  chain out {{ type nat hook output priority -100; policy accept;\n"
            f"    {fam} daddr {TARGET6 if six else TARGET} tcp dport {web.HTTP_PORT} "
            f"dnat to numgen inc mod {k} map {{ {dmap} }}\n"
            "  }\n"
            f"  chain post {{ type nat hook postrouting priority 100; policy accept;\n"
            f"    oifname \"{iface}\" tcp dport {web.HTTP_PORT} snat to numgen inc mod {k} map {{ {smap} }}\n"
            f"  }}\n}}\n")


def target_url(six):
    return f"http://[{TARGET6}]:{web.HTTP_PORT}/" if six else f"http://{TARGET}:{web.HTTP_PORT}/"


def run_wrk(c, args, close, label, six=False):
    """One wrk run from CLIENT to the VIP (the NAT rules decide where it goes); its figures,
    and the requests each server's nginx counted meanwhile."""
    before = {s: stub_requests(c, s) for s in c.ids}
    cmd = ["taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s",
           "--timeout", "3s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(target_url(six))
    p = c.host(CLIENT).popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=args.seconds + 60)
    f = web.wrk_figures(out.decode())
    f["rc"] = p.returncode
    after = {s: stub_requests(c, s) for s in c.ids}
    # Minus the stub_status request itself.
    f["per_server"] = {s: (after[s] - before[s] - 1) if None not in (after[s], before[s]) else None
                       for s in c.ids}
    log(f"{label:28} {f['rps']:>10.1f} req/s  p50 {f['p50_ms']} ms  p99 {f['p99_ms']} ms  "
        f"errors {f['socket_errors']}  non-2xx {f['non_2xx']}  per server {f['per_server']}")
    if p.returncode != 0:
        log(f"wrk failed: {err.decode().strip()}")
    return f


def median(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def bench(c, args):
    """Both families on one cluster: the IPv4 figures, then `http6_*`, the same runs through
    the IPv6 VIP vs straight at the servers' IPv6 addresses (cli1's IPv6 sources, `ip6` NAT)."""
    c.up()
    # Conntrack entries of the closed connections: cli1's own table only (the client side).
    c.run(CLIENT, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=5"],
          check=False)
    line = measure(c, args, six=False)
    if args.v6:
        six = measure(c, args, six=True)
        line.update({f"http6_{k}": v for k, v in six.items()
                     if k not in ("bench", "servers", "connections", "seconds", "rounds")})
    return line


def measure(c, args, six):
    """The rounds of one family (module doc); its figures as the JSON line's keys."""
    if six:
        srv_addrs = [str(topo.server_subnet6(c.ids[s])[2]) for s in c.ids]
    else:
        srv_addrs = [web.server_addr(s) for s in c.ids]
    sources = spread_sources(c, six)
    k = len(sources)
    n = len(c.ids)
    rules = {"vip": nat_rules([web.VIP6 if six else web.VIP] * k, sources, six),
             "direct": nat_rules([srv_addrs[i % n] for i in range(k)], sources, six),
             "direct_one": nat_rules([srv_addrs[0]] * k, sources, six)}
    fam = "IPv6 " if six else ""

    def use(kind):
        c.run(CLIENT, ["nft", "-f", "-"], input=rules[kind])

    # The spread works: 2N new connections from cli1 (no source chosen) reach every server.
    use("vip")
    seen = [web.who(c.run(CLIENT, ["curl", "-s", "-g", "--max-time", "3", target_url(six)],
                          check=False))
            for _ in range(2 * n)]
    log(f"{k} {fam}sources ({PER_SERVER} per server); {2 * n} curls through the {fam}VIP from "
        f"{CLIENT} answered by {seen}")
    if set(seen) != set(c.ids):
        raise cluster.LabError(f"the NAT spread does not reach every server: {seen}")
    runs = {(kind, close): [] for kind in ("vip", "direct") for close in (False, True)}
    for r in range(args.rounds):
        for close in (False, True):
            order = ("vip", "direct") if r % 2 == 0 else ("direct", "vip")
            for kind in order:
                use(kind)
                label = f"{fam}round {r + 1} {kind} {'new-conn' if close else 'keep-alive'}"
                runs[(kind, close)].append(run_wrk(c, args, close, label, six))
    one = {}
    for close in (False, True):
        use("direct_one")
        one[close] = run_wrk(c, args, close, f"{fam}direct_one {'new-conn' if close else 'keep-alive'}",
                             six)
    c.run(CLIENT, ["nft", "delete", "table", *nat_table(six)], check=False)

    def fig(kind, close, key):
        return median(f[key] for f in runs[(kind, close)])

    errors = sum(f["socket_errors"] + f["non_2xx"] + (1 if f["rc"] else 0)
                 for fs in list(runs.values()) + [[one[False], one[True]]] for f in fs)
    share = {}
    for f in runs[("vip", False)] + runs[("vip", True)]:
        for s, v in f["per_server"].items():
            share[s] = share.get(s, 0) + (v or 0)
    total = sum(share.values()) or 1
    vip_rps, direct_rps = fig("vip", False, "rps"), fig("direct", False, "rps")
    vip_nc, direct_nc = fig("vip", True, "rps"), fig("direct", True, "rps")

    def ratios(close):
        """Per round, VIP over straight: each pair ran back to back, so a round's ratio is
        what the load of the moment affects least."""
        return [round(v["rps"] / d["rps"], 3) if d["rps"] else None
                for v, d in zip(runs[("vip", close)], runs[("direct", close)])]
    line = {
        "bench": "http",
        "vip_rps": vip_rps,
        "direct_rps": direct_rps,
        "ratio": median(ratios(False)),
        "vip_p99_ms": fig("vip", False, "p99_ms"),
        "new_conn_ratio": median(ratios(True)),
        "vip_new_conn_rps": vip_nc,
        "direct_new_conn_rps": direct_nc,
        "direct_p99_ms": fig("direct", False, "p99_ms"),
        "vip_new_conn_p99_ms": fig("vip", True, "p99_ms"),
        "direct_new_conn_p99_ms": fig("direct", True, "p99_ms"),
        "direct_one_rps": one[False]["rps"],
        "direct_one_new_conn_rps": one[True]["rps"],
        "vip_share": {s: round(v / total, 3) for s, v in share.items()},
        "errors": errors,
        "servers": n,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rounds_ratio": ratios(False),
        "rounds_new_conn_ratio": ratios(True),
        "rounds_vip_rps": [f["rps"] for f in runs[("vip", False)]],
        "rounds_direct_rps": [f["rps"] for f in runs[("direct", False)]],
        "rounds_vip_new_conn_rps": [f["rps"] for f in runs[("vip", True)]],
        "rounds_direct_new_conn_rps": [f["rps"] for f in runs[("direct", True)]],
    }
    with open(os.path.join(c.run_dir, "runs6.json" if six else "runs.json"), "w") as f:
        json.dump({"runs": {f"{k}-{'close' if cl else 'keepalive'}": v for (k, cl), v in runs.items()},
                   "direct_one": one, "sources": sources}, f, indent=1)
    return line


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    p.add_argument("--run-dir", default=os.path.join(ROOT, "target", "bench", "http-run"))
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--no-v6", dest="v6", action="store_false",
                   help="leave out the IPv6 runs (the http6_* keys)")
    args = p.parse_args()
    cluster.prepare_run("httpbench")
    try:
        c = web.WebCluster(bin_dir=args.bin_dir, run_dir=args.run_dir, log=log,
                           nginx_cpus=NGINX_CPUS)
    except cluster.LabError as e:
        sys.exit(f"httpbench: {e}")
    line = None
    try:
        line = bench(c, args)
    except (KeyboardInterrupt, cluster.Interrupted):
        print("httpbench: interrupted; stopping the lab", file=sys.stderr)
        sys.exit(130)
    except cluster.LabError as e:
        print(f"httpbench: {e} (logs in {c.run_dir})", file=sys.stderr)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        c.stop()
    text = json.dumps(line, separators=(",", ":"))
    out = os.path.join(ROOT, "target", "bench", "http.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
