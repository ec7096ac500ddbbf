#!/usr/bin/python3
"""Every reallocation strategy under load on the default lab topology (issue 7 `reallocate`,
issue 6 "done when"): long-lived client sessions keep request load on the service while slices
move, and every broken session, lost request and repeated answer is counted.

    lab/reallocate.py [--strategies reset,forward,handoff,pin] [--connections 1000]
                      [--connections6 N] [--no-ipv6]
                      [--bin-dir target/release] [--run-dir DIR] [--bench]
                      [--server-strategy S]   (a check of the counting: S in the servers)

Per strategy a fresh cluster (cluster.py, real daemons, real verifier) with srv1..srv3 serving;
`--connections` sessions split over cli1 and cli2 (sessions.py: each a UDP socket or a TCP
connection of its own, spread over the hosts' 64 source addresses each); then, under that load,
three moves, each waited for until the servers agree on one epoch and the verifier holds
exactly their claims:
  join    srv4's daemon starts: a quarter of the units move to it
  move    `manycastctl move --to m2` of up to MOVE_UNITS units of srv1 that hold sessions
          (srv2 gives srv1 as many back: quotas stay)
  drain   `manycastctl drain m3`, then SIGTERM to srv3's daemon (which drains first under
          forward, handoff and pin, and leaves at once under reset)
then SETTLE_S more seconds of load; the clients stop and report.

  reset / forward / handoff: native UDP to 232.1.1.1:5000, the servers' reference service
      with `strategy = "<it>"`; requests `r<k>`, one outstanding per session, resent every
      0.3 s up to 40 times.
  pin: VIP mode (the group bound to VIP 10.200.0.1 with `pin = true` in the verifier, members
      `mode = "vip"`, `strategy = "pin"`), httpd.py bound to the VIP on every server, one
      keep-alive HTTP/1.1 connection per session with a GET every interval.

IPv6 sessions beside them (unless `--no-ipv6`; `--connections6`, default `--connections`): the
cluster is dual-stack (cluster.py `dual_stack`: one allocation for both families, the verifier
holding each member's IPv4 and MLDv2 claims); each client host's sessions6 come from its IPv6
sources (topo.client_sources6, each in a /56 of its own), under reset, forward and handoff to
the native service's group6 [ff3e::8000:1]:5000, under pin to the IPv6 VIP 2001:db8:200::1
(`[[vip]]` bound to group6 with `pin = true` in the verifier, `vip.address6` in the members,
httpd.py listening on it too). Counted with the same rules, per family: the IPv4 figures keep
their keys, the IPv6 ones are under `ipv6` (bench line: the same keys ending in 6). An IPv6
source's unit is the low 8 bits of its /56 (SPEC.md §6.2).

Counting, per session (the rules of manycast-server/tests/strategies.rs):
  broken    it got a reset reply, or its answers' numbers are not exactly 1..n (a repeat, a
            gap, or a restart at 1 at another server), or (TCP) its connection was reset,
            closed by the peer, or a request failed
  lost      a request id never answered (after its retries; TCP: a request without response)
  repeated  answers carrying a number that server already gave this session
  moved     answered by more than one server (only possible under reset, or a broken session)
Time to finish (`finish_ms`): the sum over the three moves of the time from the action (srv4's
start, the `move` command, the `drain` command) until it is complete: every running member
committed one new epoch, their slices cover the space and the verifier holds exactly their
claims at it; for the drain also srv3 owning nothing and, under reset and handoff, srv3's
daemon exited after its SIGTERM. The fixed load pauses between the moves are not counted.
Under forward and pin srv3 keeps serving its sessions until they end:
`drained_exit_after_load_ms` is the time from the clients' stop until it exited (forward: the
sessions' idle timeout; pin: the connections' close).

Progress goes to stderr; the last stdout line is one JSON object. With `--bench` it is the
benchmark line, also written to target/bench/reallocate.json. Everything started is stopped on
success, error, Ctrl-C and SIGTERM.
"""

import argparse
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time

LAB = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(LAB)
sys.path.insert(0, LAB)

import cluster  # noqa: E402
import topo  # noqa: E402

PY = "/usr/bin/python3"
STRATEGIES = ("reset", "forward", "handoff", "pin")
JOINER = "srv4"
DRAINED = "srv3"
MOVE_FROM, MOVE_TO = "srv1", "srv2"
MOVE_UNITS = 8
VIP = "10.200.0.1"
VIP6 = "2001:db8:200::1"
HTTP_PORT = 8080
WARM_S = 3.0  # load before the first move
SETTLE_S = 3.0  # load after each move
INTERVAL_S = 1.0  # between a session's requests
# As scenarios.py: debug daemons on this shared 2-core machine can stall past the default
# 200 ms failure detector; a false "member down" would move slices on its own.
DOWN_AFTER_MS = 1000
# A forwarded (or pinned UDP) session ends this long after its client's last request, so the
# drained member can leave soon after the load stops.
SESSION_IDLE_MS = 3000
DRAIN_TIMEOUT_MS = 120_000


class ReallocCluster(cluster.Cluster):
    """The lab cluster for one strategy: the servers' strategy, and for pin the VIP service
    (group record with the VIP, `[[vip]] pin = true` in the verifier, VIP-mode members)."""

    down_after_ms = DOWN_AFTER_MS

    def __init__(self, strategy, server_strategy=None, ipv6=True, **kw):
        super().__init__(**kw)
        self.strategy = strategy
        # IPv6 sessions beside the IPv4 ones: the dual-stack cluster (cluster.py).
        self.dual_stack = ipv6
        # Another strategy in the servers' configs than the scenario's: only to check that the
        # counting sees breakage (e.g. the pin scenario's VIP cluster with `reset` members).
        self.server_strategy = server_strategy or strategy
        self.vip = strategy == "pin"
        self.clients = {}

    def families(self):
        return (4, 6) if self.dual_stack else (4,)

    def publish(self):
        super().publish(name="realloc", extra=["--vip", VIP] if self.vip else [])
        if self.dual_stack:
            cluster.Cluster.publish(self, group=cluster.GROUP6, name="realloc6",
                                    extra=["--vip", VIP6] if self.vip else [])

    def start_verifier(self):
        vip = ""
        if self.vip:
            vip = f'[[vip]]\naddress = "{VIP}"\ngroup = "{cluster.GROUP}"\npin = true\n'
            if self.dual_stack:
                vip += f'[[vip]]\naddress = "{VIP6}"\ngroup = "{cluster.GROUP6}"\npin = true\n'
        super().start_verifier(extra=vip)

    def start_server(self, name):
        top = f'strategy = "{self.server_strategy}"\n'
        if self.vip:
            top += f'mode = "vip"\n[vip]\naddress = "{VIP}"\n'
            if self.dual_stack:
                top += f'address6 = "{VIP6}"\n'
        tables = (f"[service]\nsession_idle_ms = {SESSION_IDLE_MS}\n"
                  f"[reallocation]\ndrain_timeout_ms = {DRAIN_TIMEOUT_MS}\n")
        super().start_server(name, top=top, tables=tables)

    def start_http(self, name):
        binds = ["--bind", VIP] + (["--bind", VIP6] if self.dual_stack else [])
        self.spawn(f"http-{name}", name, [PY, os.path.join(LAB, "httpd.py"), "--name", name,
                                          *binds, "--port", str(HTTP_PORT)])

    def ctl(self, *args):
        out = self.run(None, [self.bin("manycastctl")] + self.operator_args(args)
                       + ["--socket", self.admin_socket(MOVE_FROM)])
        return out.strip()

    def status(self, name):
        """Server `name`'s own view through its admin socket (`manycastctl allocation --json`),
        or None: read at once, unlike the metrics file, which is written once a second."""
        try:
            p = subprocess.run([self.bin("manycastctl"), "allocation", "--json", "--socket",
                                self.admin_socket(name)], capture_output=True, text=True, timeout=5)
            return json.loads(p.stdout) if p.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            return None

    def settled(self, without=()):
        """The epoch once every running server (but `without`) has committed the same one, its
        units all owned by those servers, and the verifier holds exactly their claims at it."""
        self.check_processes()
        names = [s for s in self.running_servers() if s not in without]
        views = [self.status(s) for s in names]
        if any(v is None or v.get("epoch") is None for v in views):
            return None
        epochs = {v["epoch"]["epoch"] for v in views}
        if len(epochs) != 1:
            return None
        epoch = epochs.pop()
        want = {self.ids[s] for s in names}
        if any(set(v["unit_owner"]) != want for v in views):
            return None
        st = self.verifier_status()
        if st is None:
            return None
        for group in (cluster.GROUP, cluster.GROUP6) if self.dual_stack else (cluster.GROUP,):
            rows = [r for r in st["ownership"] if r["group"] == group and r["slices"].strip()]
            if {r["member"] for r in rows} != want or any(r["epoch"] != epoch for r in rows):
                return None
        return epoch

    def allocation(self):
        out = self.run(None, [self.bin("manycastctl"), "allocation", "--json", "--socket",
                              self.admin_socket(MOVE_FROM)])
        return json.loads(out)

    def start_sessions(self, counts, interval):
        """counts[family] sessions over the client hosts (one sessions.py per host and family);
        returns once every session has an answer."""
        mode = "http" if self.vip else "udp"
        per = {}
        for fam, n in counts.items():
            for c in range(1, topo.CLIENTS + 1):
                k = n // topo.CLIENTS + (1 if c <= n % topo.CLIENTS else 0)
                if k:
                    per[(fam, c)] = k
        for (fam, cno), k in per.items():
            name = sessions_name(fam, cno)
            self.clients[(fam, cno)] = self.path(f"{name}.json")
            self.spawn(name, f"cli{cno}",
                       [PY, os.path.join(LAB, "sessions.py"), mode, "--client", str(cno),
                        "--family", str(fam), "--sessions", str(k), "--out", self.clients[(fam, cno)],
                        "--interval", str(interval), "--vip", VIP6 if fam == 6 else VIP,
                        "--http-port", str(HTTP_PORT)])

        def progress(key):
            try:
                with open(self.clients[key] + ".progress") as f:
                    return json.load(f)
            except (OSError, ValueError):
                return {}

        def all_answered():
            self.check_processes()
            return all(progress(key).get("answered", 0) + progress(key).get("broken", 0) >= k
                       for key, k in per.items())
        cluster.wait_for("every session's first answer", all_answered, timeout=60)
        return {key: progress(key) for key in per}

    def stop_sessions(self):
        """{family: {session: record}} from every client."""
        for fam, cno in self.clients:
            self.retire(sessions_name(fam, cno))
            self.signal(sessions_name(fam, cno), signal.SIGTERM)
        out = {fam: {} for fam in self.families()}
        for (fam, cno), path in self.clients.items():
            # Outstanding UDP requests finish their retries (40 x 0.3 s) first.
            wait_exit(self, sessions_name(fam, cno), 60, "of its SIGTERM")
            with open(path) as f:
                out[fam].update(json.load(f)["sessions"])
        return out


def sessions_name(family, cno):
    """The IPv4 clients keep their old names (sessions<c>); the IPv6 ones are sessions6-<c>."""
    return f"sessions{cno}" if family == 4 else f"sessions6-{cno}"


def server_name(addr):
    """A reply's source address (a server's IPv4 or IPv6 service-interface address) or httpd's
    name."""
    for i in range(1, topo.SERVERS + 1):
        if addr in (str(topo.server_subnet(i)[2]), str(topo.server_subnet6(i)[2])):
            return f"srv{i}"
    return addr


def unit_of(addr, bits=8):
    """A source's allocation unit: the low-order bits of an IPv4 address, of an IPv6 /56."""
    a = ipaddress.ip_address(addr)
    if a.version == 6:
        return topo.site_unit6(a, bits)
    return int(a) & ((1 << bits) - 1)


def analyse_session(rec):
    """One session's verdict (the counting rules in the module doc)."""
    answers = rec["answers"]
    numbers = [a[2] for a in answers]
    servers = [server_name(a[1]) for a in answers]
    seen = {}
    repeated = 0
    for srv, n in zip(servers, numbers):
        if n in seen.setdefault(srv, set()):
            repeated += 1
        seen[srv].add(n)
    why = []
    if rec["resets"]:
        why.append("reset")
    if numbers != list(range(1, len(numbers) + 1)):
        why.append("numbers")
    if rec.get("broken"):
        why.append(rec["broken"])
    # Under reset: the session restarts at 1 with its new server after each reset.
    segments = []
    for srv, n in zip(servers, numbers):
        if n == 1 or not segments:
            segments.append([srv, []])
        segments[-1][1].append(n)
    restarts_clean = all(nums == list(range(1, len(nums) + 1)) for _, nums in segments) and all(
        a[0] != b[0] for a, b in zip(segments, segments[1:]))
    return {"answers": len(answers), "lost": len(rec["lost"]), "repeated": repeated,
            "resets": len(rec["resets"]), "servers": sorted(set(servers)),
            "server_changes": sum(1 for a, b in zip(servers, servers[1:]) if a != b),
            "last_server": servers[-1] if servers else None, "why_broken": why,
            "restarts_clean": restarts_clean}


def analyse(strategy, sessions, alloc_before, alloc_after):
    owner0 = alloc_before["unit_owner"]
    owner1 = alloc_after["unit_owner"]
    out = {"connections": len(sessions), "broken": 0, "lost": 0, "repeated": 0, "answers": 0,
           "moved": 0, "in_moved_units": 0, "resets_received": 0, "why_broken": {},
           "examples": []}
    reset_anomalies = []
    for key, rec in sorted(sessions.items()):
        v = analyse_session(rec)
        src = key.rsplit(":", 1)[0]
        u = unit_of(src)
        out["answers"] += v["answers"]
        out["lost"] += v["lost"]
        out["repeated"] += v["repeated"]
        out["resets_received"] += v["resets"]
        moved = len(v["servers"]) > 1
        out["moved"] += moved
        out["in_moved_units"] += owner0[u] != owner1[u]
        if v["why_broken"]:
            out["broken"] += 1
            for w in v["why_broken"]:
                out["why_broken"][w] = out["why_broken"].get(w, 0) + 1
            if len(out["examples"]) < 5:
                out["examples"].append({"session": key, **v, "raw": {
                    "answers": rec["answers"][:40], "resets": rec["resets"], "lost": rec["lost"],
                    "broken": rec.get("broken")}})
        if strategy == "reset":
            # A session that changed server got one reset per change and restarted at 1 with
            # the new server; one that did not change got none; each ends at its unit's owner.
            ok = (v["resets"] == v["server_changes"] and v["restarts_clean"]
                  and v["last_server"] == f"srv{owner1[u]}")
            if not ok:
                reset_anomalies.append({"session": key, **v, "unit_owner_after": owner1[u]})
    if strategy == "reset":
        out["reset_anomalies"] = len(reset_anomalies)
        out["reset_anomaly_examples"] = reset_anomalies[:5]
    return out


def wait_exit(c, name, timeout, what):
    try:
        c.wait_exit(name, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise cluster.LabError(f"{name} did not exit within {timeout:.0f} s {what}") from None


def sleep(s):
    end = time.time() + s
    while time.time() < end:
        time.sleep(0.1)


def run_strategy(strategy, args, log):
    run_dir = os.path.join(args.run_dir, strategy)
    c = ReallocCluster(strategy, server_strategy=args.server_strategy, ipv6=args.ipv6,
                       bin_dir=args.bin_dir, run_dir=run_dir, log=log)
    try:
        return run_on(c, strategy, args, log)
    finally:
        pids = [p.pid for p in c.procs.values()]
        c.stop()
        args.pids.extend(pids)


def run_on(c, strategy, args, log):
    first = [s for s in c.ids if s != JOINER]
    c.start_net()
    c.make_keys()
    c.start_keystore()
    c.publish()
    c.start_verifier()
    if c.vip:
        for s in c.ids:
            c.start_http(s)
    for s in first:
        c.start_server(s)
    epoch0, _ = c.wait_converged(timeout=60)
    log(f"{strategy}: {', '.join(first)} serving at epoch {epoch0}")
    counts = {4: args.connections, **({6: args.connections6} if c.dual_stack else {})}
    c.start_sessions(counts, args.interval)
    log(f"{strategy}: {' + '.join(f'{n} IPv{f}' for f, n in counts.items())} sessions answered")
    sleep(WARM_S)
    alloc0 = c.allocation()
    marks = {}

    # join
    t_join = time.time()
    c.start_server(JOINER)
    e_join = cluster.wait_for(f"{JOINER}'s join to settle", c.settled, timeout=60, interval=0.05)
    marks["join_settled_ms"] = round((time.time() - t_join) * 1000)
    log(f"{strategy}: {JOINER} joined, epoch {e_join}")
    sleep(SETTLE_S)

    # move: units of srv1 that hold IPv4 sessions (the clients' sources' low-order 8 bits),
    # those that hold IPv6 sessions too first (the same choice as before without IPv6)
    a = c.allocation()
    m_from, m_to = c.ids[MOVE_FROM], c.ids[MOVE_TO]
    used = sorted({unit_of(str(x)) for cno in range(1, topo.CLIENTS + 1) for x in topo.client_sources(cno)})
    used6 = {unit_of(str(x)) for cno in range(1, topo.CLIENTS + 1) for x in topo.client_sources6(cno)
             } if c.dual_stack else set()
    units = sorted(sorted((u for u in used if a["unit_owner"][u] == m_from),
                          key=lambda u: u not in used6)[:MOVE_UNITS])
    t_move = time.time()
    said = c.ctl("move", "--to", f"m{m_to}", ",".join(map(str, units)))
    e_move = cluster.wait_for("the move to settle", lambda: (lambda e: e if e and e > e_join else None)(c.settled()),
                              timeout=60, interval=0.05)
    marks["move_settled_ms"] = round((time.time() - t_move) * 1000)
    log(f"{strategy}: move of units {units} to m{m_to}: {said}; epoch {e_move}")
    sleep(SETTLE_S)

    # drain: the admin drain, then SIGTERM
    t_drain = time.time()
    said = c.ctl("drain", f"m{c.ids[DRAINED]}")

    def drained():
        e = c.settled(without=(DRAINED,))
        if e is None or e <= e_move:
            return None
        # srv3's own view: the same epoch, no unit of its own
        v = c.status(DRAINED)
        if v is None or v.get("epoch") is None or v["epoch"]["epoch"] != e or c.ids[DRAINED] in v["unit_owner"]:
            return None
        return e
    e_drain = cluster.wait_for(f"{DRAINED}'s units to go to the others", drained, timeout=60, interval=0.05)
    t_drained = time.time()
    log(f"{strategy}: drain m{c.ids[DRAINED]}: {said}; epoch {e_drain}")
    c.retire(DRAINED)
    c.signal(DRAINED, signal.SIGTERM)
    t_exit = None
    if strategy in ("reset", "handoff"):
        wait_exit(c, DRAINED, 60, "of its SIGTERM after the admin drain")
        t_exit = time.time()
        log(f"{strategy}: {DRAINED} exited")
    marks["drain_settled_ms"] = round((max(t_drained, t_exit or 0) - t_drain) * 1000)
    # The time the cluster spent reallocating: the three moves, not the load pauses between.
    finish_ms = marks["join_settled_ms"] + marks["move_settled_ms"] + marks["drain_settled_ms"]
    sleep(SETTLE_S)

    # metrics before the clients stop (a starved server may stall then)
    metrics = {s: c.server_metrics(s) for s in c.ids}
    alloc1 = c.allocation()
    t_stop = time.time()
    sessions = c.stop_sessions()
    log(f"{strategy}: clients stopped, "
        f"{' + '.join(f'{len(v)} IPv{f}' for f, v in sessions.items())} sessions reported")
    drained_exit = None
    if t_exit is None:
        try:
            wait_exit(c, DRAINED, SESSION_IDLE_MS / 1000 + 30, "of the load's stop")
            drained_exit = round((time.time() - t_stop) * 1000)
            log(f"{strategy}: {DRAINED} exited after its sessions ended")
        except cluster.LabError as e:  # reported as None
            log(f"{strategy}: {e}")
    c.check_processes()
    counters = ("served_total", "resets_total", "handed_off_total", "handoff_received_total",
                "handoff_timeouts_total", "held_total", "forwarded_total", "forwarded_served_total",
                "forwarded_direct_total", "forward_refused_total", "sessions_refused_total",
                "vip_resets_total", "drain_connections", "served6_total", "resets6_total",
                "handed_off6_total", "received6_total", "forwarded6_total", "forwarded_served6_total")
    result = analyse(strategy, sessions[4], alloc0, alloc1)
    result["ipv6"] = analyse(strategy, sessions[6], alloc0, alloc1) if 6 in sessions else None
    result.update({
        "strategy": strategy,
        "finish_ms": finish_ms,
        "drained_exit_after_load_ms": drained_exit,
        "epochs": {"start": epoch0, "join": e_join, "move": e_move, "drain": e_drain},
        "moved_units": {"requested": units, "answer": said},
        "marks": marks,
        "servers": {s: {k: int(m.get(k, 0)) for k in counters if k in m} for s, m in metrics.items()},
    })
    log(f"{strategy}: {counts_line(result)}, finish {finish_ms} ms")
    if result["ipv6"]:
        log(f"{strategy}: IPv6 {counts_line(result['ipv6'])}")
    return result


def counts_line(r):
    return (f"connections {r['connections']}, broken {r['broken']}, lost {r['lost']}, "
            f"repeated {r['repeated']}, moved {r['moved']}, in moved units {r['in_moved_units']}")


def bench_line(results, n, n6):
    line = {"bench": "reallocate"}
    r = {s: results.get(s, {}) for s in STRATEGIES}
    line["reset_broken"] = r["reset"].get("broken")
    for s in ("forward", "handoff", "pin"):
        line[f"{s}_broken"] = r[s].get("broken")
        line[f"{s}_lost"] = r[s].get("lost")
    line["connections"] = n
    for s in STRATEGIES:
        line[f"{s}_finish_ms"] = r[s].get("finish_ms")
    for s in STRATEGIES:
        line[f"{s}_repeated"] = r[s].get("repeated")
    line["reset_lost"] = r["reset"].get("lost")
    line["reset_moved"] = r["reset"].get("moved")
    # The IPv6 sessions' figures: the same keys ending in 6 (None with --no-ipv6).
    r6 = {s: r[s].get("ipv6") or {} for s in STRATEGIES}
    line["reset_broken6"] = r6["reset"].get("broken")
    for s in ("forward", "handoff", "pin"):
        line[f"{s}_broken6"] = r6[s].get("broken")
        line[f"{s}_lost6"] = r6[s].get("lost")
    line["connections6"] = n6
    for s in STRATEGIES:
        line[f"{s}_repeated6"] = r6[s].get("repeated")
    line["reset_lost6"] = r6["reset"].get("lost")
    line["reset_moved6"] = r6["reset"].get("moved")
    return line


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--connections6", type=int, default=None,
                   help="IPv6 sessions beside them (default: as many as --connections)")
    p.add_argument("--no-ipv6", dest="ipv6", action="store_false",
                   help="IPv4 sessions only, on a cluster without IPv6 (for comparison)")
    p.add_argument("--interval", type=float, default=INTERVAL_S, help="seconds between a session's requests")
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    p.add_argument("--run-dir", default=os.path.join(ROOT, "target", "lab-reallocate"))
    p.add_argument("--bench", action="store_true", help="write target/bench/reallocate.json")
    p.add_argument("--server-strategy", choices=STRATEGIES,
                   help="write this strategy into the servers' configs instead of the scenario's "
                        "(a check that the counting sees breakage; never with --bench)")
    args = p.parse_args()
    strategies = [s for s in args.strategies.split(",") if s]
    if args.connections6 is None:
        args.connections6 = args.connections
    if not args.ipv6:
        args.connections6 = 0
    if args.bench and args.server_strategy:
        sys.exit("reallocate: --server-strategy is a check of the counting, not a benchmark")
    for s in strategies:
        if s not in STRATEGIES:
            sys.exit(f"reallocate: unknown strategy {s!r}; known: {', '.join(STRATEGIES)}")
    cluster.prepare_run("reallocate")
    t0 = time.time()

    def log(msg):
        print(f"[reallocate {time.time() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)
    args.pids = []
    # One lock across every strategy's cluster: no other lab slips in between them.
    lock = cluster.LabLock()
    lock.acquire(log)
    os.environ["MANYCAST_LAB_LOCK_HELD"] = "1"
    results = {}
    try:
        for s in strategies:
            results[s] = run_strategy(s, args, log)
    except (KeyboardInterrupt, cluster.Interrupted):
        print("reallocate: interrupted; stopping the lab", file=sys.stderr)
        sys.exit(130)
    except cluster.LabError as e:
        print(f"reallocate: {e} (logs in {args.run_dir})", file=sys.stderr)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lock.release()
    out = {**bench_line(results, args.connections, args.connections6), "pids": args.pids, "run_dir": args.run_dir,
           "strategies": results}
    with open(os.path.join(args.run_dir, "result.json"), "w") as f:
        json.dump(out, f)
    for s, r in results.items():
        print(f"{s:8} {counts_line(r)}, finish {r['finish_ms']} ms", file=sys.stderr)
        if r["ipv6"]:
            print(f"{s:8} IPv6 {counts_line(r['ipv6'])}", file=sys.stderr)
    if args.bench:
        line = bench_line(results, args.connections, args.connections6)
        os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
        with open(os.path.join(ROOT, "target", "bench", "reallocate.json"), "w") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line))
    else:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
