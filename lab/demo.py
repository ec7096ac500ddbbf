#!/usr/bin/python3
"""`make demo`: about a minute of Manycast on the default lab, everything measured in this run.

    lab/demo.py [--bin-dir target/release] [--out-dir target/demo] [--quick] [--json]

The story is a list of step functions (STEPS): keys made and published, the verifier and the
servers start and join, clients load the service (native mode, `strategy = "handoff"`; IPv6
clients beside the IPv4 ones, dualstack.py judges them against the verifier's claims), a
planned rebalance with the admin tool (`manycastctl drain`, then `resume`, allocation shown
before and after, every client session checked for a gap or a repeat), a second service on the
same servers in VIP mode, dual stack (demo_vip.py: an IPv4 and an IPv6 VIP, nginx on each
server, a `manycast-server` per server with `strategy = "pin"` and an HTTP health check of its
nginx, curl from IPv4 and IPv6 client sources, each IPv6 one checked against the owner the
verifier holds, a short wrk), nginx killed on one server (its sources of both families answered
elsewhere) and started again (the member comes back after `rise`), a planned change (a server leaves with SIGTERM), a server SIGKILLed and its slices taken over, a forged and a replayed
join from the attacker refused. A live status view runs meanwhile (ANSI, in place, on a
terminal; plain lines otherwise). At the end: a summary table, and the per-server load over time
with the events marked in OUT_DIR/load.svg.

--quick shortens the waits (for the e2e test); --json prints the measured results as one JSON
line on stdout (the view and the summary then go to stderr).
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

LAB = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(LAB)
sys.path.insert(0, LAB)

import cluster  # noqa: E402
import demo_vip  # noqa: E402
import dualstack  # noqa: E402
import load_svg  # noqa: E402
import topo  # noqa: E402
import web  # noqa: E402

KILLED = "srv2"
LEAVING = "srv4"
DRAINED = "srv3"
SAMPLE_S = 0.5
# The second service, in VIP mode (demo_vip.py): its own groups (IPv4 and IPv6), control group
# and ports on the same servers.
VIP, VIP6, VIP_GROUP, VIP_GROUP6 = demo_vip.VIP, demo_vip.VIP6, demo_vip.VIP_GROUP, demo_vip.VIP_GROUP6
VIP_CONTROL_GROUP = "239.77.0.2"
VIP_CONTROL_PORT = 4791
VIP_SERVICE_PORT = 5001  # the VIP daemon's reference UDP service (unused here; must not clash)
HTTP_PORT = web.HTTP_PORT
STRATEGY = "handoff"  # the native service's: sessions move with their slices
# The failure detector's timeout: the product's default (200 ms) for `make demo`. The e2e test
# passes --down-after-ms 1000, as scenarios.py does: with debug daemons on a shared 2-core
# machine every server can stall for more than 200 ms at once (nothing is queued to read then),
# each declares the others down, and the flapping allocation restarts client sessions.
DOWN_AFTER_MS = 200
# A draining member leaves once its sessions are handed off; bounded so that the lab's stop
# (SIGTERM, SIGKILL after 5 s) normally sees it leave.
DRAIN_TABLE = "[reallocation]\ndrain_timeout_ms = 4000\n"
# Refusals of the servers' own kernel reports (see step_attacks), not the attacker's.
KERNEL_NOISE = ("unsigned", "record-mismatch")


class StoryCluster(cluster.Cluster):
    """The lab cluster with what the story adds: certificates for a second (VIP) service, its
    group published and bound to the VIP (pinned) in the verifier, the native servers under
    `strategy = "handoff"` with an admin socket each, and the VIP-mode servers."""

    down_after_ms = DOWN_AFTER_MS
    dual_stack = True  # the native service serves IPv6 clients too (cluster.py)

    def make_keys(self):
        ctl = self.bin("manycastctl")
        k = self.path("keys")
        self.run(None, [ctl, "key", "new", f"{k}/group"])
        for name, mid in self.ids.items():
            self.run(None, [ctl, "key", "new", f"{k}/{name}"])
            self.run(None, [ctl, "cert", "issue", "--group-key", f"{k}/group.key", "--member-key",
                            f"{k}/{name}.pub", "--id", str(mid),
                            "--group", cluster.GROUP, "--group", cluster.CONTROL_GROUP,
                            "--group", VIP_GROUP, "--group", VIP_CONTROL_GROUP,
                            *self.cert_args6(), "--group6", VIP_GROUP6, "--out", f"{k}/{name}.cert"])
        self.make_operator()
        return self.run(None, [ctl, "key", "show", f"{k}/group.pub"]).strip()

    def publish(self):
        super().publish()
        super().publish(group=VIP_GROUP, name="demo-vip", extra=["--vip", VIP])
        self.publish6()
        super().publish(group=VIP_GROUP6, name="demo-vip6", extra=["--vip", VIP6])

    def start_verifier(self):
        super().start_verifier(
            groups=(cluster.GROUP, VIP_GROUP), groups6=(cluster.GROUP6, VIP_GROUP6),
            extra=web.vip_tables(VIP_GROUP, VIP_GROUP6))

    def start_server(self, name):
        super().start_server(name, control_port=4790, top=f'strategy = "{STRATEGY}"\n',
                             tables=DRAIN_TABLE)

    def start_vip_server(self, name):
        """The VIP service's member on server `name`: VIP mode, pin, its own control group, an
        HTTP health check of the server's nginx (web.py)."""
        super().start_server(name, service="vip-", group=VIP_GROUP, port=VIP_SERVICE_PORT,
                             control_group=VIP_CONTROL_GROUP, control_port=VIP_CONTROL_PORT,
                             top=web.vip_member(group6=VIP_GROUP6),
                             tables=DRAIN_TABLE + web.health_table())

    def nginx(self, name):
        """Server `name`'s nginx (web.Nginx: its files under the run directory)."""
        if not hasattr(self, "nginxes"):
            self.nginxes = {}
        return self.nginxes.setdefault(name, web.Nginx(self, name))

    def vip_health(self, name):
        """(check up, held out) of the VIP service's member on `name`."""
        return web.health(self.admin_socket(f"vip-{name}"))

    def stop(self):
        for n in getattr(self, "nginxes", {}).values():
            try:
                n.stop()
            except Exception as e:  # noqa: BLE001 - the rest must still be stopped
                print(f"demo: stopping nginx on {n.name}: {e}", file=sys.stderr)
        super().stop()

    def ctl(self, *args, json_out=False):
        """`manycastctl` (cluster commands through srv1's admin socket unless --socket given)."""
        args = self.operator_args(args)
        if "--socket" not in args:
            args += ["--socket", self.admin_socket("srv1")]
        out = self.run(None, [self.bin("manycastctl")] + args)
        return json.loads(out) if json_out else out

    def vip_claims(self):
        """{member: epoch} of the VIP group's claims the verifier holds."""
        st = self.verifier_status() or {}
        return {r["member"]: r["epoch"] for r in st.get("ownership", [])
                if r["group"] == VIP_GROUP and r["slices"].strip()}


def claim(row):
    """A verifier ownership row in a few words: epoch, slice entries, the first of them."""
    if not row:
        return "-"
    entries = row["slices"].split()
    more = f" +{len(entries) - 1}" if len(entries) > 1 else ""
    return f"epoch {row['epoch']}: {entries[0] if entries else 'none'}{more}"


def rate_series(points):
    """[(t, per second)] between consecutive (t, counter) points."""
    return [(t2, max(0.0, (v2 - v1) / (t2 - t1)))
            for (t1, v1), (t2, v2) in zip(points, points[1:]) if t2 > t1]


class Story(demo_vip.VipSteps):
    def __init__(self, c, args, out):
        self.c = c
        self.args = args
        self.out = out  # where the view and the summary go
        self.tty = out.isatty() and not args.json
        self.events = []  # (t, label, detail lines)
        self.marks = {}  # step name -> time
        # Per server, each metrics-file write seen: (file mtime, served_total). The server
        # rewrites the file every second; the mtime dates the value exactly.
        self.samples = {}
        self.status = None
        self.statuses = []  # (t, verifier status): the IPv6 owner check of each phase
        self.clients = {}
        self.clients6 = {}
        self.attacks = {}
        self.after_attacks = {}
        self.admin = {}  # allocations and answers of the admin step
        self.vip = {}  # curl answers and wrk figures of the VIP step
        self.last_epoch = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.t0 = time.time()
        self.sampler = None

    # -- events and the live view ----------------------------------------------------------------

    def event(self, label, detail=(), mark=None):
        t = time.time()
        with self.lock:
            self.events.append((t, label, list(detail)))
            if mark:
                self.marks[mark] = t
        if not self.tty:
            print(f"[{t - self.t0:6.1f}s] {label}", file=self.out, flush=True)
            for line in detail:
                print(f"           {line}", file=self.out, flush=True)

    def loads(self):
        """Requests per second per server between its last two metrics writes (0 once the
        server is gone)."""
        with self.lock:
            return {srv: rates[-1][1] if rates and self.c.alive(srv.split()[0]) else 0.0
                    for srv, rates in ((srv, rate_series(pts)) for srv, pts in self.samples.items())}

    def sample_loop(self):
        n = 0
        while not self.done.is_set():
            for srv in self.c.ids:
                mtime, m = self.c.server_metrics(srv, with_mtime=True)
                if mtime is None:
                    continue
                with self.lock:  # "srvN v6": its IPv6 answers
                    for key, value in ((srv, m.get("served_total", 0)), (f"{srv} v6", m.get("served6_total", 0))):
                        pts = self.samples.setdefault(key, [])
                        if not pts or pts[-1][0] != mtime:
                            pts.append((mtime, value))
            # Every new allocation epoch is an event, planned or not (a false "member down"
            # under CPU starvation shows here as an epoch the story did not ask for).
            epoch = max((int(self.c.server_metrics(srv).get("epoch", 0))
                         for srv in self.c.running_servers()), default=0)
            if epoch > self.last_epoch:
                self.last_epoch = epoch
                self.event(f"servers committed allocation epoch {epoch}")
            st = self.c.verifier_status()  # each sample: every phase window holds some
            if st is not None:
                self.status = st
                self.statuses.append((time.time(), st))
            if self.tty:
                self.render()
            elif n % 10 == 0 and self.c.procs.get("client1"):
                load = self.loads()
                print(f"[{time.time() - self.t0:6.1f}s] load req/s: " +
                      " ".join(f"{s.replace(' ', '/')}={v:.0f}" for s, v in sorted(load.items())), file=self.out, flush=True)
            n += 1
            self.done.wait(SAMPLE_S)

    def render(self):
        st = self.status or {}
        owners = {r["member"]: r for r in st.get("ownership", []) if r["group"] == cluster.GROUP}
        load = self.loads()
        lines = [f"\x1b[1mManycast lab demo\x1b[0m   t={time.time() - self.t0:5.1f}s   "
                 f"group {cluster.GROUP}:{cluster.PORT}   verifier on r1, keystore on ks",
                 "",
                 f"{'server':8} {'state':6} {'epoch':>5} {'units':>5} {'share':>6}  "
                 f"{'verifier holds':34} {'req/s':>6} {'IPv6':>5}"]
        for s, mid in self.c.ids.items():
            m = self.c.server_metrics(s)
            state = "up" if self.c.alive(s) else ("-" if s not in self.c.procs else "gone")
            share = m.get("slice_addresses", 0) / (1 << 32) * 100 if state == "up" else 0
            lines.append(f"{s:8} {state:6} {int(m.get('epoch', 0)):>5} "
                         f"{int(m.get('slices', 0)) if state == 'up' else 0:>5} {share:>5.1f}%  "
                         f"{claim(owners.get(mid)):34} {load.get(s, 0) if state == 'up' else 0:>6.0f} "
                         f"{load.get(f'{s} v6', 0) if state == 'up' else 0:>5.0f}")
        vip = sorted((r["member"], r["epoch"]) for r in st.get("ownership", [])
                     if r["group"] == VIP_GROUP and r["slices"].strip())
        six = sorted((r["member"], r["epoch"]) for r in st.get("ownership", []) if r["group"] == cluster.GROUP6)
        if six:
            lines.append(f"IPv6 clients (group {cluster.GROUP6}): the verifier holds the MLDv2 claims of members "
                         f"{', '.join(str(m) for m, _ in six)} at epochs {sorted({e for _, e in six})}")
        if vip:
            lines.append(f"VIP service {VIP} and {VIP6} (groups {VIP_GROUP}, {VIP_GROUP6}, pin): the verifier "
                         f"holds the IPv4 claims of members {', '.join(str(m) for m, _ in vip)} at epoch {vip[0][1]}")
        c = st.get("counters", {})
        rej = {r: n for r, n in c.get("rejected", []) if n}
        if st.get("dataplane") == "nft":
            kernel = f"nft map values {sum(r['values'] for r in st.get('native', []))}"
        else:
            kernel = f"MFC entries {c.get('mfc_entries', 0)}"
        lines += ["", f"verifier: joins accepted {c.get('joins_accepted', 0)}, {kernel}, "
                  f"rejected {rej or '{}'}", "", "events:"]
        with self.lock:
            recent = self.events[-9:]
        for t, label, detail in recent:
            lines.append(f"  {t - self.t0:6.1f}s  {label}")
            lines += [f"           {d}"[:150] for d in detail[:3]]
        self.out.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n")
        self.out.flush()

    def pause(self, full, quick):
        end = time.time() + (quick if self.args.quick else full)
        while time.time() < end:
            time.sleep(0.1)

    # -- the story -------------------------------------------------------------------------------

    def step_keys(self):
        self.c.start_net()
        self.event("lab up: r1, srv1..srv4 on four subnets, ks, cli1/cli2 (64 sources each), atk",
                   mark="lab")
        shown = self.c.make_keys()
        self.event("manycastctl: group key, 4 member keys and certificates (both services' groups and "
                   "control groups)",
                   shown.splitlines(), mark="keys")

    def step_keystore(self):
        self.c.start_keystore()
        self.c.publish()
        self.event(f"dns-keystore on ks; records of {cluster.GROUP}, {VIP_GROUP} (VIP {VIP}), "
                   f"{cluster.GROUP6} and {VIP_GROUP6} (VIP {VIP6}) published "
                   "over TSIG; dig shows the first:",
                   [line[:140] for line in self.c.dig().splitlines() if line.strip()], mark="published")

    def step_verifier(self):
        self.c.start_verifier()
        self.event(f"manycast-verifier on r1: group keys fetched from the keystore (DNSSEC); {cluster.GROUP} "
                   f"native, {VIP_GROUP} bound to VIP {VIP} and {VIP_GROUP6} to {VIP6}, with pin",
                   mark="verifier")
        # The attacker listens on srv1's link from now on, to capture a signed join.
        atk = self.c.path("atk-captured.bin")
        self.c.spawn("atk-capture", "atk", ["/usr/bin/python3", os.path.join(LAB, "attacker.py"),
                                            "capture", "--iface", "atk-eth0", "--sender",
                                            f"{topo.server_subnet(1)[2]}", "--out", atk,
                                            "--group", cluster.GROUP])

    def step_servers_join(self):
        self.c.start_servers()
        epoch, st = self.c.wait_converged()
        rows = sorted((r["member"], r["slices"]) for r in st["ownership"] if r["group"] == cluster.GROUP)
        self.event(f"4 servers joined: epoch {epoch}, the verifier holds their signed claims",
                   [f"member {m}: {s}" for m, s in rows], mark="joined")

    def step_clients(self):
        # Beside each client host's IPv4 load, the same from its IPv6 sources (client6-<c>).
        for cno in range(1, topo.CLIENTS + 1):
            for fam, name, files in ((4, f"client{cno}", self.clients), (6, f"client6-{cno}", self.clients6)):
                files[cno] = self.c.path(f"{name}.json")
                self.c.spawn(name, f"cli{cno}",
                             ["/usr/bin/python3", os.path.join(LAB, "client.py"), "--client", str(cno),
                              "--out", files[cno], "--rate", str(self.args.rate), "--family", str(fam)])
        # The phases are measured from the moment all clients get answers (a loaded machine
        # can take a while to start Python).
        def answered(path):
            try:
                with open(path + ".progress") as f:
                    return sum(json.load(f)["per_server"].values()) > 0
            except (OSError, ValueError):
                return False
        paths = list(self.clients.values()) + list(self.clients6.values())
        cluster.wait_for("the clients' first answers", lambda: all(map(answered, paths)))
        self.event(f"clients load the service: 2 × 64 IPv4 sources to {cluster.GROUP}:{cluster.PORT} and "
                   f"2 × 64 IPv6 sources (each in a /56 of its own) to [{cluster.GROUP6}]:{cluster.PORT}, "
                   f"{self.args.rate:g} req/s each (strategy = \"{STRATEGY}\")", mark="load")
        self.pause(8, 4)

    def allocation(self):
        """`manycastctl allocation` (table and JSON) through srv1's admin socket."""
        return self.c.ctl("allocation"), self.c.ctl("allocation", "--json", json_out=True)

    def step_admin_drain(self):
        """Planned rebalance with the admin tool under client load: drain a member (its units go
        to the others, its sessions are handed off), then resume it."""
        table, before = self.allocation()
        self.admin["before"] = before
        self.event("manycastctl allocation (srv1's admin socket), before:", table.splitlines())
        mid = self.c.ids[DRAINED]
        self.marks["drain"] = time.time()
        said = self.c.ctl("drain", f"m{mid}").strip()
        others = [s for s in self.c.running_servers() if s != DRAINED]

        def drained():
            # The others own the whole space at one epoch and the verifier holds their claims
            # at it; the drained member holds nothing (its claim is empty or gone).
            epochs = {int(self.c.server_metrics(s).get("epoch", 0)) for s in others}
            if len(epochs) != 1 or sum(self.c.server_metrics(s).get("slice_addresses", 0)
                                       for s in others) != 1 << 32:
                return None
            if self.c.server_metrics(DRAINED).get("slices", 1) != 0:
                return None
            epoch = epochs.pop()
            st = self.c.verifier_status() or {}
            rows = {r["member"]: r for r in st.get("ownership", [])
                    if r["group"] == cluster.GROUP and r["slices"].strip()}
            if set(rows) == {self.c.ids[s] for s in others} and all(
                    r["epoch"] == epoch for r in rows.values()):
                return epoch
            return None

        epoch = cluster.wait_for(f"{DRAINED}'s units to go to the others", drained)
        self.marks["drained"] = time.time()
        table, after = self.allocation()
        self.admin["drained"] = after
        self.admin["drain_said"] = said
        self.event(f"manycastctl drain m{mid}: {said}; verifier re-pointed at epoch {epoch}; "
                   "allocation after:", table.splitlines())
        self.pause(4, 2)
        self.marks["resume"] = time.time()
        said = self.c.ctl("resume", f"m{mid}").strip()
        epoch, _ = self.c.wait_converged()
        self.marks["resumed"] = time.time()
        table, after = self.allocation()
        self.admin["resumed"] = after
        self.admin["resume_said"] = said
        self.event(f"manycastctl resume m{mid}: {said}; all four serve again at epoch {epoch}:",
                   table.splitlines())
        self.pause(3, 1)

    def step_planned_leave(self):
        self.c.retire(LEAVING)
        self.c.signal(LEAVING, signal.SIGTERM)
        self.event(f"planned change: {LEAVING} leaves (SIGTERM: drains under {STRATEGY}, hands its "
                   "sessions off, then control Leave, signed empty claim)", mark="leave")
        rc = self.c.wait_exit(LEAVING)
        epoch, st = self.c.wait_converged()
        self.event(f"{LEAVING} exited ({rc}); its slices re-allocated, epoch {epoch}",
                   [f"member {r['member']}: {claim(r)}" for r in st["ownership"]
                    if r["group"] == cluster.GROUP], mark="left")
        self.pause(10, 3)

    def step_crash(self):
        before, _ = self.c.wait_converged()
        self.c.retire(KILLED)
        self.c.procs[KILLED].kill()
        self.event(f"{KILLED} SIGKILLed", mark="kill")
        self.c.wait_exit(KILLED)  # reaped: no longer counted as running
        def taken_over():
            r = self.c.converged()
            return r if r and r[0] > before else None
        epoch, st = cluster.wait_for(f"the survivors to take {KILLED}'s slices over", taken_over)
        self.event(f"survivors took {KILLED}'s slices over: epoch {epoch}, verifier re-pointed",
                   [f"member {r['member']}: {claim(r)}" for r in st["ownership"]
                    if r["group"] == cluster.GROUP], mark="taken")
        self.pause(10, 3)

    def step_attacks(self):
        packet = self.c.path("atk-captured.bin")
        cluster.wait_for("the attacker to capture a signed join of srv1",
                         lambda: os.path.exists(packet), timeout=30)
        attacker = ["/usr/bin/python3", os.path.join(LAB, "attacker.py")]
        for kind, verb, reason in (("forge", "forged", "bad-signature"), ("replay", "replayed", "duplicate")):
            before = self.c.rejected()
            sent = json.loads(self.c.run("atk", attacker + [kind, "--iface", "atk-eth0",
                                                            "--packet", packet]))
            # The servers' kernels keep sending their own unsigned reports for the group
            # (SPEC.md §11.3), so `unsigned` moves on its own and is left out; with the VIP
            # service's group joined too, a kernel report names two protected groups and is
            # refused as `record-mismatch` (SPEC.md §3.5), left out for the same reason.
            def new_rejections():
                now = self.c.rejected()
                return {r: n - before.get(r, 0) for r, n in now.items()
                        if n != before.get(r, 0) and r not in KERNEL_NOISE}
            try:
                delta = cluster.wait_for(f"the verifier to count the {verb} join", new_rejections,
                                         timeout=10)
            except cluster.LabError:
                delta = new_rejections()  # not refused: shown and reported as such
            self.attacks[kind] = {"sent": sent, "rejected": delta, "expected": reason}
            self.event(f"atk {verb} a join in srv1's name (epoch {sent['epoch']}): verifier "
                       f"refused it: {', '.join(f'{r} +{n}' for r, n in delta.items()) or 'NOT refused'}",
                       mark=kind)
        # Neither join changed who owns what: no claim at the forged epoch.
        st = self.c.verifier_status() or {}
        self.after_attacks = {"servers_epoch": self.last_epoch,
                              "claim_epochs": {str(r["member"]): r["epoch"] for r in st.get("ownership", [])
                                               if r["group"] == cluster.GROUP}}
        self.pause(3, 1)

    def step_stop_clients(self):
        names = [f"client{cno}" for cno in self.clients] + [f"client6-{cno}" for cno in self.clients6]
        for name in names:
            self.c.retire(name)
            self.c.signal(name, signal.SIGTERM)
        for name in names:
            self.c.wait_exit(name)
        self.event("clients stopped", mark="end")

    STEPS = ["step_keys", "step_keystore", "step_verifier", "step_servers_join", "step_clients",
             "step_admin_drain", "step_vip", "step_vip_health", "step_planned_leave", "step_crash",
             "step_attacks", "step_stop_clients"]

    def run(self):
        self.sampler = threading.Thread(target=self.sample_loop, daemon=True)
        self.sampler.start()
        try:
            for name in self.STEPS:
                getattr(self, name)()
        finally:
            self.done.set()
            self.sampler.join()
            if self.tty:
                self.render()


# -- analysis: everything below is computed from what the clients and servers recorded ---------

def session_breaks(replies, a, b):
    """Per source, the reference service's numbers (`m<id> <n>`) answered between a and b: a
    session continues when each number is the previous one plus 1. Returns the gaps (a number
    skipped), the repeats or restarts (a number not above the previous), and the sources with
    either."""
    gaps = repeats = 0
    broken = []
    for src, rs in replies.items():
        prev, bad = None, False
        for t, _, txt in rs:
            if t >= b:
                break
            try:
                n = int(txt.split()[1])
            except (IndexError, ValueError):
                continue  # `m<id> reset`: not a number (never sent under handoff)
            # The answer before the window counts as the previous one of the first inside it.
            if t >= a and prev is not None and n > prev + 1:
                gaps += 1
                bad = True
            elif t >= a and prev is not None and n <= prev:
                repeats += 1
                bad = True
            prev = n
        if bad:
            broken.append(src)
    return {"gaps": gaps, "repeats": repeats, "sources_broken": len(broken),
            "examples": sorted(broken)[:5]}


def server_of(c, addr):
    return dualstack.server_name(c.ids, addr)


def analyse(story):
    c, m = story.c, story.marks
    replies = {}  # source -> [(t, server, text)]
    sent = 0
    for path in story.clients.values():
        with open(path) as f:
            data = json.load(f)
        for src, v in data["sources"].items():
            replies[src] = [(t, server_of(c, s), txt) for t, s, txt in v["replies"]]
            sent += v["sent"]

    def served_in(src, a, b):
        return {s for t, s, txt in replies[src] if a <= t < b and not txt.endswith("reset")}

    settle = 0.5  # after a convergence, resets and in-flight replies of the old owner end
    windows = {"steady": (m["load"] + 1.0, m["drain"]), "drained": (m["drained"] + settle, m["resume"]),
               "resumed": (m["resumed"] + settle, m["leave"]),
               "before_crash": (m["left"] + settle, m["kill"]),
               "after_crash": (m["taken"] + settle, m["forge"])}
    phases = {}
    for name, (a, b) in windows.items():
        per = {src: served_in(src, a, b) for src in replies}
        phases[name] = {
            "window_s": round(b - a, 2),
            "sources": len(per),
            "exactly_one": sum(1 for v in per.values() if len(v) == 1),
            "none": sorted(s for s, v in per.items() if not v),
            "several": {s: sorted(v) for s, v in per.items() if len(v) > 1},
            "owner": {s: next(iter(v)) for s, v in per.items() if len(v) == 1},
        }
    replies6 = {}
    for path in story.clients6.values():
        with open(path) as f:
            for src, v in json.load(f)["sources"].items():
                replies6[src] = [(t, server_of(c, s), txt) for t, s, txt in v["replies"]]

    def status_in(a, b):  # the verifier's status sampled in the window (else the last before it)
        return ([st for t, st in story.statuses if a <= t <= b] or
                [st for t, st in story.statuses if t <= b] or [None])[-1]
    ipv6 = dualstack.analyse6(c, replies6, windows, {n: status_in(*w) for n, w in windows.items()},
                              m, KILLED, session_breaks)
    before = phases["before_crash"]["owner"]
    killed_sources = sorted(s for s, o in before.items() if o == KILLED)
    gaps, client_gaps, unanswered = [], [], []
    for src in killed_sources:
        first = next((t for t, s, txt in replies[src]
                      if t > m["kill"] and s != KILLED and not txt.endswith("reset")), None)
        last = max((t for t, s, _ in replies[src] if t <= m["kill"]), default=None)
        if first is None:
            unanswered.append(src)
            continue
        gaps.append((first - m["kill"]) * 1000)
        if last is not None:
            client_gaps.append((first - last) * 1000)
    # Sources a server gained at the planned change and at the crash.
    takeovers = {s: 0 for s in c.ids}
    for a, b in (("steady", "drained"), ("drained", "resumed"), ("resumed", "before_crash"),
                 ("before_crash", "after_crash")):
        for src, o in phases[b]["owner"].items():
            if phases[a]["owner"].get(src) not in (None, o):
                takeovers[o] += 1
    servers = {}
    for s in c.ids:
        metrics = c.server_metrics(s)
        servers[s] = {
            "sources": len({src for src, rs in replies.items() for _, o, txt in rs
                            if o == s and not txt.endswith("reset")}),
            "replies_received": sum(1 for rs in replies.values() for _, o, txt in rs
                                    if o == s and not txt.endswith("reset")),
            "served_total": int(metrics.get("served_total", 0)),
            "resets_total": int(metrics.get("resets_total", 0)),
            "takeovers": takeovers[s],
        }
    q = lambda xs, p: round(sorted(xs)[min(len(xs) - 1, int(p * len(xs)))], 1) if xs else None  # noqa: E731
    return {
        "demo": "story",
        "quick": story.args.quick,
        "sources_total": len(replies),
        "requests_sent": sent,
        "phases": {k: {kk: vv for kk, vv in v.items() if kk != "owner"} for k, v in phases.items()},
        "killed": KILLED,
        "left": LEAVING,
        "killed_sources": len(killed_sources),
        # Answered after the takeover, and only by servers other than the killed one (whether
        # by exactly one is the after_crash phase's count).
        "killed_sources_answered_by_other": sum(
            1 for s in killed_sources
            if served_in(s, *windows["after_crash"]) and KILLED not in served_in(s, *windows["after_crash"])),
        "killed_sources_unanswered": unanswered,
        "failover_gap_ms": {"p50": q(gaps, 0.5), "max": round(max(gaps), 1) if gaps else None,
                            "client_seen_max": round(max(client_gaps), 1) if client_gaps else None},
        "servers": servers,
        # Every client session across the planned changes (drain, resume, SIGTERM leave: sessions
        # handed off), and across the crash (a SIGKILLed member hands nothing off: its clients
        # start new sessions at the survivors, shown, not a failure of the strategy).
        "sessions": {"strategy": STRATEGY,
                     "planned": session_breaks(replies, m["load"], m["kill"]),
                     "admin_drain_resume": session_breaks(replies, m["drain"], m["resumed"] + settle),
                     "sigterm_leave": session_breaks(replies, m["leave"], m["left"] + settle),
                     "crash": session_breaks(replies, m["kill"], m["end"])},
        "ipv6": ipv6,
        "admin": admin_summary(story.admin),
        "vip": web.vip_summary(story.vip),
        "attacks": story.attacks,
        "after_attacks": story.after_attacks,
        "events": [{"t": round(t - story.t0, 2), "what": label} for t, label, _ in story.events],
    }


def admin_summary(admin):
    """The admin step's allocations in short: per member, units and load; the answers."""
    def short(a):
        return {"epoch": (a.get("epoch") or {}).get("epoch"),
                "units": {str(x["id"]): x["units"] for x in a.get("members", [])},
                "load_imbalance": a.get("load_imbalance")}
    return {k: (short(v) if isinstance(v, dict) else v) for k, v in admin.items()}


# -- the picture ---------------------------------------------------------------------------

def write_svg(story, path):
    """OUT_DIR/load.svg: the per-server load over time (load_svg.py) with the story's events."""
    t_start = story.marks["load"]
    t_end = story.marks["end"]
    series = {key: [(t, v) for t, v in rate_series(story.samples.get(key, [])) if t_start <= t <= t_end]
              for srv in story.c.ids for key in (srv, f"{srv} v6")}
    # A server that exited serves nothing from then on: its line drops to 0 at the exit.
    for key, mark in ((k, mark) for srv, mark in ((LEAVING, "left"), (KILLED, "taken")) for k in (srv, f"{srv} v6")):
        if series[key] and mark in story.marks:
            series[key].append((story.marks[mark], 0.0))
    victim = story.vip.get("health", {}).get("victim", demo_vip.NGINX_KILLED)
    labels = {"drain": f"manycastctl drain {DRAINED}", "resume": f"resume {DRAINED}",
              "vip": "VIP service up (curl, wrk)", "nginx_kill": f"nginx on {victim} killed",
              "nginx_back": f"nginx on {victim} back", "leave": f"{LEAVING} leaves (SIGTERM)",
              "kill": f"{KILLED} SIGKILL", "taken": "takeover committed",
              "forge": "forged join refused", "replay": "replayed join refused"}
    events = [(story.marks[m], label) for m, label in labels.items() if m in story.marks]
    load_svg.write(path, series, t_start, t_end, events, measured_at=story.t0)


def summary(result, out):
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p("")
    p("Summary (measured in this run)")
    p(f"{'server':8} {'sources':>8} {'replies':>8} {'served_total':>13} {'resets':>7} {'takeovers':>10}"
      f" {'IPv6 sources':>13} {'served6_total':>14} {'resets6':>8}")
    six = result["ipv6"]["servers"]
    for s, v in result["servers"].items():
        p(f"{s:8} {v['sources']:>8} {v['replies_received']:>8} {v['served_total']:>13} "
          f"{v['resets_total']:>7} {v['takeovers']:>10} {six[s]['sources']:>13} {six[s]['served6_total']:>14} "
          f"{six[s]['resets6_total']:>8}")
    for name, ph in result["phases"].items():
        p(f"{name:13} ({ph['window_s']:.1f} s): {ph['exactly_one']}/{ph['sources']} sources served by "
          f"exactly one server; unanswered {len(ph['none'])}, several {len(ph['several'])}")
    g = result["failover_gap_ms"]
    p(f"failover ({result['killed']} SIGKILL): {result['killed_sources_answered_by_other']}/"
      f"{result['killed_sources']} of its sources answered by another server; gap from the kill to the "
      f"first answer p50 {g['p50']} ms, max {g['max']} ms (longest silence a client saw {g['client_seen_max']} ms)")
    for name, b in result["sessions"].items():
        if isinstance(b, dict):
            p(f"sessions ({result['sessions']['strategy']}) {name:19}: {b['sources_broken']} sources broken "
              f"({b['gaps']} gaps, {b['repeats']} repeats/restarts in the numbers each client got)")
    dualstack.summary6(result["ipv6"], p)
    a = result["admin"]
    for k in ("before", "drained", "resumed"):
        if k in a:
            p(f"allocation {k:8} epoch {a[k]['epoch']}: units per member {a[k]['units']}, "
              f"max/mean load {a[k]['load_imbalance']}")
    v = result["vip"]
    p(f"VIP {VIP}:{HTTP_PORT} (pin): curl from {v['curl_sources']} sources ({v['curl_requests']} requests): "
      f"{v['curl_one_server']} answered by one server every time, {len(v['curl_unanswered'])} unanswered; "
      f"sources per server {v['curl_per_server']}; of them IPv6 through {VIP6}: {v['curl6_sources']} "
      f"sources, {v['curl6_verifier_owner']} answered by the owner the verifier holds for their unit, "
      f"per server {v['curl6_per_server']}")
    for cli, w in v["wrk"].items():
        p(f"wrk from {cli} ({w['source']} -> {w['server']}), {w['seconds']} s, 4 connections: "
          f"{w['requests']} requests, {w['rps']} req/s, latency avg {w['latency_avg']} "
          f"p99 {w['latency_p99']}, socket errors {w['socket_errors']}, non-2xx {w['non_2xx']}")
    h = v.get("health") or {}
    if h:
        moved = sorted(set(h["moved_to"].values()))
        p(f"VIP health: nginx on {h['victim']} killed (daemons alive): check {h['down_seen']}; its "
          f"{len(h['sources'])} sampled sources ({len(h['sources6'])} IPv6) answered by {moved}; nginx "
          f"back: member back at epoch {h['back_epoch']}, answering {len(h['back_sources'])} sampled "
          f"sources ({len(h['back_sources6'])} IPv6), {len(h['unanswered_after'])} unanswered; IPv6 "
          f"sources not answered by their verifier owner {h['not_owner6']}")
    epoch = result["after_attacks"].get("servers_epoch")
    p(f"allocation epochs committed: {epoch} (the story asks for one per join, "
      f"drain, resume, leave and takeover; more means members were declared down and up again, "
      f"see 'member down' in the servers' logs)")
    for kind, a in result["attacks"].items():
        verb = {"forge": "forged", "replay": "replayed"}[kind]
        p(f"{verb} join from atk: refused with {a['rejected'] or 'nothing'} "
          f"(expected {a['expected']})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    p.add_argument("--out-dir", default=os.path.join(ROOT, "target", "demo"))
    p.add_argument("--quick", action="store_true", help="short waits (tests)")
    p.add_argument("--down-after-ms", type=int, default=DOWN_AFTER_MS,
                   help="the servers' failure-detector timeout (control.down_after_ms)")
    p.add_argument("--json", action="store_true", help="one JSON line of results on stdout")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second per client source")
    args = p.parse_args()
    cluster.prepare_run("demo")
    out = sys.stderr if args.json else sys.stdout
    try:
        c = StoryCluster(bin_dir=args.bin_dir, run_dir=os.path.join(args.out_dir, "run"),
                            log=lambda s: print(s, file=out))
        c.down_after_ms = args.down_after_ms
    except cluster.LabError as e:
        sys.exit(f"demo: {e}")
    story = Story(c, args, out)
    result = None
    try:
        story.run()
        result = analyse(story)
        svg = os.path.join(args.out_dir, "load.svg")
        write_svg(story, svg)
        result["svg"] = svg
    except (KeyboardInterrupt, cluster.Interrupted):
        print("demo: interrupted; stopping the lab", file=sys.stderr)
        sys.exit(130)
    except cluster.LabError as e:
        print(f"demo: {e} (logs in {c.run_dir})", file=sys.stderr)
        sys.exit(1)
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        result_pids = [p.pid for p in c.procs.values()]
        c.stop()
    result["pids"] = result_pids
    summary(result, out)
    print(f"\nPicture: {result['svg']}   (logs and raw client records: {c.run_dir})", file=out)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
