#!/usr/bin/python3
"""The lab's web cluster (issue 16, item 6): nginx (Debian's) on every server behind the VIP.

    lab/web.py scenario [--bin-dir target/release] [--run-dir DIR] [--json]

Library (the demo, `httpbench.py` and the scenario below import it):
  Nginx        one server's nginx, started by the lab in the server's namespace with its own
               prefix under the lab's run directory (<run_dir>/nginx-<srv>/: nginx.conf,
               nginx.pid, error.log, temp dirs, www/index.html); never the system config,
               never a port outside the lab's namespaces. It serves one page, `served by srv2
               (10.2.0.2)`, on port 8080 of every IPv4 and IPv6 address of its server (the
               VIPs and the server's own), so the same nginx answers through a VIP and straight.
  health_table the `[[health]]` table (SPEC.md §11.9) that checks the local nginx over HTTP:
               nginx killed -> connects refused (dead) -> the member is taken out at once.
  WebCluster   a dual-stack `cluster.Cluster` whose service is the VIP 10.200.0.1 (group
               232.1.1.1) and the IPv6 VIP 2001:db8:200::1 (group ff3e::8000:1, the lab's
               GROUP6): both records published with `--vip`, a `[[vip]] pin = true` for each
               in the verifier, members in VIP mode (strategy pin, `vip.address6`, `group6`)
               with the health check, nginx started before them (a member with checks takes
               units only once its checks passed `rise` times).
  curl_vip     curl through the VIP of each source's family from client sources (one new
               connection per request, `--interface <source>`); `verifier_owners6` the owner
               of each IPv6 source's unit in the verifier's status.
  health       a member's check and hold from its admin status (`admin_status`, refreshed by
               the daemon once a second); `wrk_figures` parses wrk's summary.

nginx processes: `daemon off`, one master and one worker. mininet's `mnexec -d` makes the
master a session (and process group) leader, so `kill()` SIGKILLs the whole group (master and
worker, the service "crashes"), while it is still unreaped (its pid cannot have been reused);
`stop()` is a fast shutdown (SIGTERM), SIGKILL of the group after 5 s. `WebCluster.stop` stops
every nginx before the daemons; `cluster.kill_recorded` (lab.py clean) kills the process group
of a recorded group leader, so a crashed run leaves no worker behind either.

The scenario (`scenario`, e2e test `tests/tests/lab_web.rs`): curl through the VIP from 16
IPv4 sources of each client host and through the IPv6 VIP from 16 IPv6 sources of each (one
new connection per request, `--interface <source>`), the page's text says which server
answered, and each IPv6 source's owner in the verifier's status read right after (`owners6`);
nginx SIGKILLed on the server of one source X, the daemon alive; X and that server's IPv6
sources polled until other servers answer them; nginx started again and the member's check and
claims (both families) polled until they are back; then nginx killed and started FLAPS times (down
FLAP_DOWN_S, about `fall` check intervals, up FLAP_UP_S, less than `rise`), the member polled
until its check is up and it is back in, then every source polled until it is answered. It prints what it saw (one JSON line with
--json, also <run_dir>/result.json) and asserts nothing itself; no figure in it is a timing
the test checks (the times are reported).
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

LAB = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(LAB)
sys.path.insert(0, LAB)

import cluster  # noqa: E402
import dualstack  # noqa: E402
import topo  # noqa: E402

NGINX = "/usr/sbin/nginx"
VIP = "10.200.0.1"
# The IPv6 VIP: outside the lab's link prefixes (2001:db8:<0|100>:<n>::/64), as 10.200.0.1 is
# outside its IPv4 subnets; held on the members' `lo` only.
VIP6 = "2001:db8:200::1"
HTTP_PORT = 8080
PAGE_RE = re.compile(r"served by (srv\d+) \(([\d.]+)\)")
# The check of the local nginx. Every 300 ms (HAProxy's default is 2 s): a dead nginx is out
# after `fall` refused connects (0.3-0.6 s), back after `rise` passes.
HEALTH = {"interval_ms": 300, "timeout_ms": 250, "rise": 2, "fall": 2}
# As scenarios.py: debug daemons on a shared 2-core machine can stall past the default 200 ms.
DOWN_AFTER_MS = 1000
CURL_SOURCES = 16  # per client host
FLAPS = 4
FLAP_DOWN_S, FLAP_UP_S = 0.8, 0.3


def server_addr(name):
    return str(topo.server_subnet(int(name.removeprefix("srv")))[2])


def page_text(name):
    return f"served by {name} ({server_addr(name)})"


def who(text):
    """The server a page names, or None."""
    m = PAGE_RE.search(text or "")
    return m.group(1) if m else None


def latency_ms(text):
    """wrk's latency text (`850.00us`, `1.23ms`, `1.02s`) in ms, or None."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text or "")
    if not m:
        return None
    return round(float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)], 3)


def wrk_figures(out):
    """wrk's summary (run with --latency) as numbers: requests, req/s, latency average and p99
    as printed and p50/p99 in ms, socket errors of every kind, non-2xx/3xx responses."""
    f = {"requests": None, "rps": None, "latency_avg": None, "latency_p99": None,
         "p50_ms": None, "p99_ms": None, "socket_errors": 0, "non_2xx": 0}
    m = re.search(r"(\d+) requests in", out)
    if m:
        f["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        f["rps"] = float(m.group(1))
    m = re.search(r"^\s+Latency\s+(\S+)", out, re.M)
    if m:
        f["latency_avg"] = m.group(1)
    m = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    if m:
        f["p50_ms"] = latency_ms(m.group(1))
    m = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if m:
        f["latency_p99"] = m.group(1)
        f["p99_ms"] = latency_ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        f["socket_errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        f["non_2xx"] = int(m.group(1))
    return f


def health_table(port=HTTP_PORT, **timing):
    t = dict(HEALTH, **timing)
    return (f'[[health]]\nname = "nginx"\nkind = "http"\ntarget = "http://127.0.0.1:{port}/"\n'
            f'expect_status = 200\ninterval_ms = {t["interval_ms"]}\n'
            f'timeout_ms = {t["timeout_ms"]}\nrise = {t["rise"]}\nfall = {t["fall"]}\n')


def admin_status(sock):
    """A member's status through its admin socket `sock` (SPEC.md §11.8), or None. The daemon
    refreshes it once a second."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(sock)
            s.sendall(b'{"cmd":"status"}\n')
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf).get("status")
    except (OSError, ValueError):
        return None


def health(sock):
    """(the nginx check up, why the member is held out: None, "planned" or "immediate") from the
    member's admin status; (None, None) if it does not answer."""
    st = admin_status(sock)
    if st is None:
        return None, None
    h = st.get("health") or {}
    checks = {c["name"]: c for c in h.get("checks", [])}
    out = h.get("out")
    return checks.get("nginx", {}).get("up"), out.lower() if isinstance(out, str) else out


def dead_checks(sock):
    """How many runs of the member's checks found the service dead (status' dead_total)."""
    st = admin_status(sock) or {}
    return sum(ch.get("dead_total", 0) for ch in (st.get("health") or {}).get("checks", []))


class Nginx:
    """Server `name`'s nginx in the lab `c` (a `cluster.Cluster`): its files under
    <run_dir>/nginx-<name>/, its process `nginx-<name>` among the cluster's."""

    def __init__(self, c, name, port=HTTP_PORT, cpus=None):
        self.c, self.name, self.port = c, name, port
        self.proc_name = f"nginx-{name}"
        self.prefix = c.path(f"nginx-{name}")
        self.cpus = cpus  # worker_cpu_affinity bit mask (a string), or None
        self.starts = 0
        self.pids = []  # every master and worker started

    def conf(self):
        p = self.prefix
        affinity = f"worker_cpu_affinity {self.cpus};\n" if self.cpus else ""
        temps = "".join(f"    {k}_temp_path {p}/tmp/{k};\n"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return (f"# The lab's nginx on {self.name} (lab/web.py); not the system's.\n"
                f"daemon off;\nmaster_process on;\nworker_processes 1;\n{affinity}"
                f"pid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n"
                "events {\n    worker_connections 4096;\n}\n"
                "http {\n    types { text/html html; }\n    default_type text/plain;\n"
                "    access_log off;\n    sendfile on;\n    tcp_nopush on;\n    tcp_nodelay on;\n"
                # wrk's keep-alive connections stay open for the whole run (nginx's default
                # closes one after 1,000 requests).
                "    keepalive_timeout 65s;\n    keepalive_requests 10000000;\n"
                f"{temps}"
                f"    server {{\n        listen {self.port} backlog=4096;\n"
                f"        listen [::]:{self.port} backlog=4096;\n"
                f"        root {p}/www;\n        location / {{ index index.html; }}\n"
                # Requests served, for the benchmark; from the server's own host only.
                "        location = /status { stub_status; allow 127.0.0.1; deny all; }\n"
                "    }\n}\n")

    def write(self):
        os.makedirs(os.path.join(self.prefix, "www"), exist_ok=True)
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        with open(os.path.join(self.prefix, "www", "index.html"), "w") as f:
            f.write(f"<!doctype html><title>Manycast lab: {self.name}</title>"
                    f"<p>{page_text(self.name)}</p>\n")
        with open(os.path.join(self.prefix, "nginx.conf"), "w") as f:
            f.write(self.conf())

    def start(self):
        """Starts nginx in the server's namespace (the files written first time) and waits
        until it answers on its port there."""
        if self.starts == 0:
            self.write()
        self.starts += 1
        self.c.retired.discard(self.proc_name)
        self.c.spawn(self.proc_name, self.name,
                     [NGINX, "-p", self.prefix + "/", "-c", os.path.join(self.prefix, "nginx.conf"),
                      "-e", os.path.join(self.prefix, "error.log")])
        cluster.wait_for(f"nginx on {self.name}", lambda: self.answers() or self.failed(),
                         timeout=20)
        if self.failed():
            raise cluster.LabError(f"nginx on {self.name} exited: {self.error_log()}")
        # Master and worker, for the caller's leftover check.
        pid = self.c.procs[self.proc_name].pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                workers = [int(w) for w in f.read().split()]
        except OSError:
            workers = []
        self.pids += [pid] + workers

    def failed(self):
        p = self.c.procs.get(self.proc_name)
        return p is not None and p.poll() is not None

    def error_log(self):
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read().strip().splitlines()[-1:]
        except OSError:
            return []

    def answers(self):
        """nginx answers with its page on its server's own address (from inside)."""
        out = self.c.run(self.name, ["curl", "-s", "--max-time", "2",
                                     f"http://127.0.0.1:{self.port}/"], check=False)
        return who(out) == self.name

    def alive(self):
        return self.c.alive(self.proc_name)

    def kill(self):
        """SIGKILL to master and worker (the process group the master leads), then reaped."""
        p = self.c.procs.get(self.proc_name)
        if p is None or p.poll() is not None:
            return
        self.c.retire(self.proc_name)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)

    def stop(self):
        """Fast shutdown (SIGTERM: the master stops its worker and exits), SIGKILL of the
        group after 5 s."""
        p = self.c.procs.get(self.proc_name)
        if p is None or p.poll() is not None:
            return
        self.c.retire(self.proc_name)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()


def vip_tables(group, group6, vip=VIP, vip6=VIP6):
    """The verifier's `[[vip]]` tables: `vip` bound to `group`, `vip6` to `group6`, both pinned."""
    return "".join(f'[[vip]]\naddress = "{a}"\ngroup = "{g}"\npin = true\n'
                   for a, g in ((vip, group), (vip6, group6)))


def vip_member(group6=None, vip=VIP, vip6=VIP6):
    """A member's top-level keys in VIP mode (strategy pin) with both VIPs; `group6` when the
    lab does not add it (`cluster.Cluster.server_config` adds GROUP6 to the native group's)."""
    six = f'group6 = "{group6}"\n' if group6 else ""
    return f'{six}mode = "vip"\nstrategy = "pin"\n[vip]\naddress = "{vip}"\naddress6 = "{vip6}"\n'


def vips_on_lo(c, name):
    """Both VIPs are on server `name`'s `lo` (its VIP daemon put them there)."""
    return (VIP in c.run(name, ["ip", "-4", "addr", "show", "dev", "lo"], check=False)
            and f"{VIP6}/128" in c.run(name, ["ip", "-6", "addr", "show", "dev", "lo"], check=False))


def curl_vip(c, sources, tries=1, max_time=3):
    """{source: [server or '-' per try]}: a new connection per request from each source, IPv4
    ones to the VIP and IPv6 ones to the IPv6 VIP, one after the other on their client host
    (curl's --interface picks the source)."""
    by_client = {}
    for src in sources:
        by_client.setdefault(client_of(src), []).append(src)
    out = {}
    for cno, srcs in sorted(by_client.items()):
        script = ("for s in " + " ".join(srcs) + "; do case $s in "
                  f"*:*) u='http://[{VIP6}]:{HTTP_PORT}/';; *) u='http://{VIP}:{HTTP_PORT}/';; esac; "
                  f"for k in $(seq {tries}); do echo \"$s $(curl -s -g --max-time {max_time} "
                  "--interface $s $u | tr -d '\\n')\"; done; done")
        for line in c.run(f"cli{cno}", ["sh", "-c", script], check=False).splitlines():
            src, _, text = line.partition(" ")
            out.setdefault(src, []).append(who(text) or "-")
    return out


def vip_steers(status, vip):
    """The members the verifier's status says the kernel steers `vip` to (its `vips` row; an
    IPv6 VIP's row is empty until its table is written, e.g. during the adopt grace)."""
    for row in (status or {}).get("vips", []):
        if row["address"] == vip:
            return {m[0] for m in row["members"]}
    return set()


def steered(status, group, group6, vip=VIP, vip6=VIP6):
    """Whether, in one verifier status, each VIP is steered to every member with a claim of
    its group (both sets non-empty)."""
    st = status or {}
    four = {r["member"] for r in st.get("ownership", []) if r["group"] == group and r["slices"].strip()}
    six = {m for m, e in dualstack.claims6(st, group6).items() if e}
    return bool(four and six) and four <= vip_steers(st, vip) and six <= vip_steers(st, vip6)


def verifier_owners6(c, sources, group=cluster.GROUP6):
    """{IPv6 source: [server]}: the members whose IPv6 claim for `group` in the verifier's
    status (read now) covers the source's unit; one when the verifier's state is sound."""
    claims = dualstack.claims6(c.verifier_status(), group)
    by_id = {i: s for s, i in c.ids.items()}
    return {s: [by_id.get(m, f"m{m}") for m in dualstack.owners6(claims, s)]
            for s in sources if dualstack.is6(s)}


class WebCluster(cluster.Cluster):
    """The lab cluster serving the VIP with nginx on every server (see the module's doc)."""

    down_after_ms = DOWN_AFTER_MS
    dual_stack = True  # IPv6 clients through VIP6, bound to cluster.GROUP6

    def __init__(self, health=None, nginx_cpus=None, **kw):
        super().__init__(**kw)
        self.health_timing = dict(HEALTH, **(health or {}))
        self.nginx = {name: Nginx(self, name, cpus=nginx_cpus) for name in self.ids}

    def publish(self):
        super().publish(name="web", extra=["--vip", VIP])
        super().publish(group=cluster.GROUP6, name="web6", extra=["--vip", VIP6])

    def start_verifier(self):
        super().start_verifier(extra=vip_tables(cluster.GROUP, cluster.GROUP6))

    def start_server(self, name):
        super().start_server(name, top=vip_member(), tables=health_table(**self.health_timing))

    def vip_on_lo(self, name):
        return vips_on_lo(self, name)

    def up(self):
        """The lab, the keystore, the verifier, nginx on every server, then the members; returns
        once they converged and each has put the VIP on its `lo`."""
        self.start_net()
        self.make_keys()
        self.start_keystore()
        self.publish()
        self.start_verifier()
        for n in self.nginx.values():
            n.start()
        self.start_servers()
        got = self.wait_converged(timeout=60)
        for name in self.ids:
            cluster.wait_for(f"{name} to put {VIP} and {VIP6} on lo", lambda: self.vip_on_lo(name))
        # The claims are held before the kernel steers by them: the IPv6 VIP's table is written
        # only after the verifier's adopt grace (SPEC.md §10.3.1).
        cluster.wait_for("the verifier to steer both VIPs to every member", self.steered)
        return got

    def steered(self):
        return steered(self.verifier_status(), cluster.GROUP, cluster.GROUP6)

    def health(self, name):
        """(check up, held out) of server `name` (see the module function `health`)."""
        return health(self.admin_socket(name))

    def dead_checks(self, name):
        return dead_checks(self.admin_socket(name))

    def claims(self):
        """{member id: epoch} of the non-empty claims the verifier holds for the service."""
        st = self.verifier_status() or {}
        return {r["member"]: r["epoch"] for r in st.get("ownership", [])
                if r["group"] == cluster.GROUP and r["slices"].strip()}

    def claims6(self):
        """The members with a non-empty IPv6 claim for the service's IPv6 group."""
        return {m for m, e in dualstack.claims6(self.verifier_status()).items() if e}

    def curl(self, cno, sources, tries=1, max_time=3):
        """{source: [server or '-' per try]} from sources of client host `cno` (`curl_vip`)."""
        assert all(client_of(s) == cno for s in sources)
        return curl_vip(self, sources, tries, max_time)

    def curl_all(self, n=CURL_SOURCES, tries=1):
        """`curl_vip` from the first `n` IPv4 and the first `n` IPv6 sources of every client."""
        return curl_vip(self, sampled_sources(n), tries)

    def stop(self):
        for n in self.nginx.values():
            try:
                n.stop()
            except Exception as e:  # noqa: BLE001 - the rest must still be stopped
                print(f"web: stopping nginx on {n.name}: {e}", file=sys.stderr)
        super().stop()


def client_of(src):
    """The client host holding source `src` (IPv4 or IPv6)."""
    for cno in range(1, topo.CLIENTS + 1):
        if src in {str(a) for a in topo.client_sources(cno) + topo.client_sources6(cno)}:
            return cno
    raise ValueError(src)


def sampled_sources(n=CURL_SOURCES):
    """The first `n` IPv4 and the first `n` IPv6 sources of every client host."""
    return [str(a) for cno in range(1, topo.CLIENTS + 1)
            for a in topo.client_sources(cno)[:n] + topo.client_sources6(cno)[:n]]


def curl_step(c, r, step, tries=1):
    """curl from every sampled source into r[step], and r["owners6"][step]: each IPv6 source's
    owner in the verifier's status read right after (the allocation is settled then)."""
    got = r[step] = curl_vip(c, sampled_sources(), tries)
    r.setdefault("owners6", {})[step] = verifier_owners6(c, got)
    return got


def scenario(c, log):
    """The web scenario (module doc); returns what it saw."""
    r = {"servers": list(c.ids), "vip": VIP, "vip6": VIP6}
    c.up()
    log("web cluster up: nginx on every server, members in VIP mode (both VIPs) with the nginx check")
    before = curl_step(c, r, "before", tries=2)
    owner = {s: w[0] for s, w in before.items() if len(set(w)) == 1 and w[0] != "-"}
    r["before_one_server"] = len(owner)
    r["before_servers"] = sorted(set(owner.values()))
    log(f"curl from {len(before)} sources: answered by {r['before_servers']}")
    if not any(not dualstack.is6(s) for s in owner):
        raise cluster.LabError(f"no IPv4 source answered through the VIP: {before}")
    # X: an IPv4 source of srv2 if there is one (any answered IPv4 source otherwise).
    x = next((s for s, o in sorted(owner.items()) if o == "srv2" and not dualstack.is6(s)),
             sorted(s for s in owner if not dualstack.is6(s))[0])
    victim = owner[x]
    mine6 = sorted(s for s, o in owner.items() if o == victim and dualstack.is6(s))
    r["x"], r["victim"], r["victim_sources6"] = x, victim, mine6
    mid = c.ids[victim]
    t0 = time.monotonic()
    c.nginx[victim].kill()
    log(f"nginx on {victim} SIGKILLed (its manycast-server runs on); polling {x}")
    seen = []

    def moved():
        w = curl_vip(c, [x], max_time=2)[x][0]
        seen.append(w)
        return w if w not in ("-", victim) else None

    r["x_after_kill"] = cluster.wait_for(f"{x} to be answered by another server than {victim}",
                                         moved, timeout=60, interval=0.2)
    r["x_moved_s"] = round(time.monotonic() - t0, 2)
    r["x_seen_while_moving"] = seen

    def moved6():  # its IPv6 sources: the same allocation, carried by its MLDv2 join
        got = curl_vip(c, mine6, max_time=2)
        return all(w[0] not in ("-", victim) for w in got.values())

    try:
        cluster.wait_for(f"{victim}'s IPv6 sources to be answered by other servers", moved6,
                         timeout=30, interval=0.2)
    except cluster.LabError:
        pass  # what they get is reported below, and the test asserts on it
    r["sources6_moved_s"] = round(time.monotonic() - t0, 2)
    r["victim_alive"] = c.alive(victim)
    r["victim_claim_after_kill"] = mid in c.claims()
    r["victim_claim6_after_kill"] = mid in c.claims6()
    # The admin status is refreshed once a second: polled until it shows the check down (a
    # hang guard; what it shows then is reported, and the test asserts on it).
    try:
        cluster.wait_for(f"{victim}'s status to show its check down",
                         lambda: c.health(victim)[0] is False, timeout=10, interval=0.2)
    except cluster.LabError:
        pass
    r["victim_health_after_kill"] = dict(zip(("up", "out"), c.health(victim)))
    after_kill = curl_step(c, r, "after_kill")
    r["after_kill_from_victim"] = sorted(s for s, w in after_kill.items() if victim in w)
    r["after_kill_unanswered"] = sorted(s for s, w in after_kill.items() if "-" in w)
    log(f"{x} now answered by {r['x_after_kill']}; {len(r['after_kill_unanswered'])} sources "
        "unanswered, none by the victim" if not r["after_kill_from_victim"] else
        f"victim still answers {r['after_kill_from_victim']}")
    # Back: nginx again; the check passes `rise` times, the member takes units again.
    c.nginx[victim].start()

    def back():
        up, out = c.health(victim)
        return (up and out is None and mid in c.claims() and mid in c.claims6()
                and c.converged() and c.steered())

    cluster.wait_for(f"{victim}'s check up and its claims back", back, timeout=60)
    r["victim_health_after_restart"] = dict(zip(("up", "out"), c.health(victim)))
    r["victim_claim_after_restart"] = mid in c.claims()
    r["victim_claim6_after_restart"] = mid in c.claims6()
    after_restart = curl_step(c, r, "after_restart")
    r["after_restart_servers"] = sorted({w[0] for w in after_restart.values() if w[0] != "-"})
    log(f"nginx on {victim} back: check up, claims back; servers answering "
        f"{r['after_restart_servers']}")
    # Flapping: nginx killed and started again quickly a few times on the victim: down about
    # `fall` check intervals (taken out), up for less than `rise` intervals (back or not).
    dead_before = c.dead_checks(victim)
    for _ in range(FLAPS):
        c.nginx[victim].kill()
        time.sleep(FLAP_DOWN_S)
        c.nginx[victim].start()
        time.sleep(FLAP_UP_S)
    r["flaps"] = FLAPS
    # The status is refreshed once a second: let it catch up before reading it.
    time.sleep(2)
    cluster.wait_for(f"{victim}'s check up and its claims back after the flapping", back, timeout=60)
    r["flap_dead_checks"] = c.dead_checks(victim) - dead_before
    log(f"nginx on {victim} flapped {FLAPS} times; polling every source until answered")
    all_sources = set(sampled_sources())

    def all_answered():
        got = curl_vip(c, sampled_sources())
        return got if all("-" not in w for w in got.values()) and set(got) == all_sources else None

    t1 = time.monotonic()
    try:
        cluster.wait_for("every source answered after the flapping", all_answered, timeout=90,
                         interval=0.5)
    except cluster.LabError:
        pass
    last = curl_step(c, r, "after_flaps")
    r["after_flaps_unanswered"] = sorted(s for s, w in last.items() if "-" in w)
    r["after_flaps_s"] = round(time.monotonic() - t1, 2)
    r["after_flaps_health"] = {s: dict(zip(("up", "out"), c.health(s))) for s in c.ids}
    log(f"after the flapping: {len(r['after_flaps_unanswered'])} sources unanswered")
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["scenario"])
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    p.add_argument("--run-dir", default=os.path.join(ROOT, "target", "lab-web", "run"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cluster.prepare_run("web")

    def log(msg):
        print(f"web: {msg}", file=sys.stderr, flush=True)

    try:
        c = WebCluster(bin_dir=args.bin_dir, run_dir=args.run_dir, log=log)
    except cluster.LabError as e:
        sys.exit(f"web: {e}")
    result = None
    try:
        result = scenario(c, log)
    except (KeyboardInterrupt, cluster.Interrupted):
        print("web: interrupted; stopping the lab", file=sys.stderr)
        sys.exit(130)
    except cluster.LabError as e:
        print(f"web: {e} (logs in {c.run_dir})", file=sys.stderr)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pids = [p.pid for p in c.procs.values()]
        c.stop()
    result["pids"] = pids
    result["nginx_pids"] = [pid for n in c.nginx.values() for pid in n.pids]
    with open(os.path.join(args.run_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    if args.json:
        print(json.dumps(result))
    else:
        json.dump(result, sys.stdout, indent=1)
        print()


def vip_summary(vip):
    """The demo's VIP step (curl answers per source, wrk figures, the health step) in short;
    `curl6_*` of its IPv6 sources, `curl6_verifier_owner` those answered every time by the one
    owner the verifier's status held for their unit right after the curl (`owners6`)."""
    answers = vip.get("curl", {})
    owners6 = vip.get("owners6", {})
    per_server, per_server6 = {}, {}
    for src, who in answers.items():
        if len(set(who)) == 1 and who[0] != "-":
            for per in (per_server, per_server6) if dualstack.is6(src) else (per_server,):
                per[who[0]] = per.get(who[0], 0) + 1
    return {"curl6_sources": sum(1 for s in answers if dualstack.is6(s)),
            "curl6_verifier_owner": sum(1 for s, w in answers.items() if s in owners6
                                        and len(set(w)) == 1 and [w[0]] == owners6[s]),
            "curl6_per_server": per_server6,
            "curl_sources": len(answers),
            "curl_requests": sum(len(w) for w in answers.values()),
            "curl_one_server": sum(1 for w in answers.values() if len(set(w)) == 1 and w[0] != "-"),
            "curl_unanswered": sorted(s for s, w in answers.items() if "-" in w),
            "curl_per_server": per_server,
            "wrk": vip.get("wrk", {}),
            "health": vip.get("health", {})}


if __name__ == "__main__":
    main()
