#!/usr/bin/python3
"""Lab end-to-end scenarios (issue 7 item 3) on the default topology with the real daemons.

    lab/scenarios.py NAME [--bin-dir target/release] [--run-dir DIR] [--json]

Each scenario brings the cluster up (cluster.py, under the machine-wide lab lock), puts the 128
client sources under load (client.py), does one thing to the system, and prints what the
clients, the servers and the verifier recorded as one JSON line (--json) or readable text. It
asserts nothing itself: the cargo tests in tests/tests/lab_scenarios.rs do. Everything started
is stopped on success, error, Ctrl-C and SIGTERM.

Scenarios (details in lab/README.md, "Scenarios"):
  attacks           stale, wrong-link, wrong-group and outside-the-certificate joins, forged
                    control messages: each refused with its reason, nothing changes
  verifier-restart  the verifier SIGKILLed under load and started again
  keystore-down     the DNS keystore stopped under load; cached keys, then fail closed
  control-loss      nftables drops 1 in 10 control datagrams on every server for 20 s
  plain-router      no verifier; r1 floods the group (smcroute); the servers filter locally
  dual-stack        IPv6 clients beside the IPv4 ones (128 sources each), one allocation;
                    each served by the owner the verifier holds, before and after a SIGKILL

`scenarios.py attack KIND ...` is the attacker side, run inside a lab host by the scenarios.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import sys
import time

LAB = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(LAB)
sys.path.insert(0, LAB)

import attacker  # noqa: E402
import cluster  # noqa: E402
import dualstack  # noqa: E402
import topo  # noqa: E402

PY = "/usr/bin/python3"
SELF = os.path.abspath(__file__)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The servers' failure detector declares a member down after 200 ms of silence (SPEC.md §9.3).
# On this shared 2-core machine a starved debug build misses that, and the members flap; the
# scenarios that are not about failure detection give it 1 s (still 5 x below keepalived's).
DOWN_AFTER_MS = 1000


class ScenarioCluster(cluster.Cluster):
    """The lab cluster with a few more configuration knobs for the scenarios, and the load."""

    def __init__(self, *a, verifier_extra="", keystore_extra="", record_ttl=300,
                 down_after_ms=DOWN_AFTER_MS, **kw):
        super().__init__(*a, **kw)
        self.down_after_ms = down_after_ms
        self.verifier_extra = verifier_extra  # TOML sections appended to verifier.toml
        self.keystore_extra = keystore_extra  # keys added to verifier.toml's [keystore]
        self.record_ttl = record_ttl
        self.clients = {}

    def start_keystore(self):
        d = self.path("keystore")
        os.makedirs(d, exist_ok=True)
        cfg = self.path("keystore.toml")
        with open(cfg, "w") as f:
            f.write(f'zone = "{cluster.ZONE}"\nstate_dir = "{d}/state"\n'
                    f'listen = "{cluster.KEYSTORE_ADDR}"\nrecord_ttl = {self.record_ttl}\n')
        self.retired.discard("keystore")
        self.spawn("keystore", "ks", [self.bin("dns-keystore"), "--config", cfg],
                   env={"RUST_LOG": "info"})
        cluster.wait_for("the keystore's TSIG key and trust anchor",
                         lambda: os.path.exists(self.tsig_key()) and os.path.exists(self.trust_anchor()))

    def publish(self):
        """The group record with the scenario's TTL (`--ttl`)."""
        super().publish(extra=["--ttl", str(self.record_ttl)])

    def start_verifier(self):
        self.retired.discard("verifier")
        super().start_verifier(extra=f"{self.keystore_extra}\n{self.verifier_extra}\n")

    def member_downs(self, a, b):
        """How many times a server logged another member down between a and b (epoch s)."""
        n = 0
        for s in self.ids:
            try:
                with open(self.path(f"{s}.log")) as f:
                    for line in f:
                        line = ANSI.sub("", line)
                        if "member down" not in line:
                            continue
                        t = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
                        if a <= t.timestamp() <= b:
                            n += 1
            except OSError:
                pass
        return n

    def start_clients(self, rate=10.0):
        """Load from every client source; dual stack: from the IPv6 sources too (client6-<c>)."""
        for cno in range(1, topo.CLIENTS + 1):
            for fam in (4, 6) if self.dual_stack else (4,):
                key = cno if fam == 4 else f"6-{cno}"
                self.clients[key] = self.path(f"client{key}.json")
                self.spawn(f"client{key}", f"cli{cno}",
                           [PY, os.path.join(LAB, "client.py"), "--client", str(cno),
                            "--out", self.clients[key], "--rate", str(rate), "--family", str(fam)])

        def answered(cno):
            try:
                with open(self.clients[cno] + ".progress") as f:
                    return sum(json.load(f)["per_server"].values()) > 0
            except (OSError, ValueError):
                return False
        cluster.wait_for("the clients' first answers", lambda: all(map(answered, self.clients)))

    def stop_clients(self):
        """Stops the load; {source: [(t, server name, text)]} of every reply."""
        for cno in self.clients:
            self.retire(f"client{cno}")
            self.signal(f"client{cno}", signal.SIGTERM)
        replies = {}
        for cno, path in self.clients.items():
            self.wait_exit(f"client{cno}")
            with open(path) as f:
                for src, v in json.load(f)["sources"].items():
                    replies[src] = [(t, self.server_name(s), txt) for t, s, txt in v["replies"]]
        return replies

    def server_name(self, addr):
        return dualstack.server_name(self.ids, addr)

    def attack(self, host, *args):
        """Runs `scenarios.py attack ...` inside `host`; its JSON line."""
        return json.loads(self.run(host, [PY, SELF, "attack", *args]).strip().splitlines()[-1])

    def ownership(self, st=None):
        st = st or self.verifier_status() or {}
        return sorted((r["member"], r["slices"], r["epoch"]) for r in st.get("ownership", [])
                      if r["group"] == cluster.GROUP)

    def server_counters(self, key):
        return {s: {k: v for k, v in self.server_metrics(s).items() if k.startswith(key)}
                for s in self.running_servers()}


def served(replies, a, b):
    """Per source, the servers that answered it (not with a reset) in [a, b)."""
    return {src: {s for t, s, txt in rs if a <= t < b and not txt.endswith("reset")}
            for src, rs in replies.items()}


def once_stats(replies, a, b):
    per = served(replies, a, b)
    return {"window_s": round(b - a, 2), "sources": len(per),
            "exactly_one": sum(1 for v in per.values() if len(v) == 1),
            "none": sorted(s for s, v in per.items() if not v),
            "several": {s: sorted(v) for s, v in per.items() if len(v) > 1}}


def owners(replies, a, b):
    return {src: next(iter(v)) for src, v in served(replies, a, b).items() if len(v) == 1}


def silences(replies, a, b):
    """Per source, the longest time without an answer from any server within [a, b], in ms."""
    out = {}
    for src, rs in replies.items():
        ts = [a] + sorted(t for t, _, txt in rs if a <= t <= b and not txt.endswith("reset")) + [b]
        out[src] = round(max(y - x for x, y in zip(ts, ts[1:])) * 1000, 1)
    return out


def quantiles(xs):
    if not xs:
        return None
    xs = sorted(xs)
    return {"p50": xs[len(xs) // 2], "max": xs[-1]}


def rejected_since(c, before):
    """New verifier rejections since `before`. The servers' kernels keep sending their own
    unsigned reports for the group (SPEC.md §11.3), so `unsigned` moves on its own: left out."""
    now = c.rejected()
    return {r: n - before.get(r, 0) for r, n in now.items() if n != before.get(r, 0) and r != "unsigned"}


def wait_rejection(c, before, what):
    try:
        return cluster.wait_for(f"the verifier to count the {what}", lambda: rejected_since(c, before),
                                timeout=10)
    except cluster.LabError:
        return rejected_since(c, before)  # not refused: reported as such


def sleep(s):
    end = time.time() + s
    while time.time() < end:
        time.sleep(0.1)


# -- scenarios ------------------------------------------------------------------------------------

ATTACK_IFACE = "atk-eth0"
INSIDER_ID = 9  # certified for another group only
NARROW_ID = 5  # certified for half of the address space


def scenario_attacks(c, log):
    k = c.path("keys")
    c.start_net()
    c.make_keys()
    ctl = c.bin("manycastctl")
    # Two insiders holding real member keys certified by the group key: one for another group
    # (and the control group), one for the service group but only for 0.0.0.0/1.
    c.run(None, [ctl, "key", "new", f"{k}/insider"])
    c.run(None, [ctl, "cert", "issue", "--group-key", f"{k}/group.key", "--member-key",
                 f"{k}/insider.pub", "--id", str(INSIDER_ID), "--group", "232.9.9.9",
                 "--group", cluster.CONTROL_GROUP, "--out", f"{k}/insider.cert"])
    c.run(None, [ctl, "key", "new", f"{k}/narrow"])
    c.run(None, [ctl, "cert", "issue", "--group-key", f"{k}/group.key", "--member-key",
                 f"{k}/narrow.pub", "--id", str(NARROW_ID), "--group", cluster.GROUP,
                 "--slice", "0.0.0.0/1", "--out", f"{k}/narrow.cert"])
    c.start_keystore()
    c.publish()
    # The attacker records srv1's joins before the verifier runs: a genuine signed join the
    # verifier has never seen (so not a `duplicate`).
    live = c.path("atk-captured.bin")
    c.spawn("atk-capture", "atk", [PY, os.path.join(LAB, "attacker.py"), "capture", "--iface",
                                   ATTACK_IFACE, "--sender", str(topo.server_subnet(1)[2]), "--out", live])
    c.start_servers()
    cluster.wait_for("srv1's first signed join on its link", lambda: os.path.exists(live))
    unseen = c.path("atk-unseen.bin")
    shutil.copy(live, unseen)
    c.start_verifier()
    epoch, st = c.wait_converged()
    before_own = c.ownership(st)
    before_commits = {s: c.server_metrics(s).get("commits_total") for s in c.running_servers()}
    c.start_clients()
    log(f"cluster at epoch {epoch}, clients answered")
    t_attacks = time.time()
    results = {}
    atk_addr = str(topo.ATTACKER_ADDR)

    def one(kind, expected, host, *args):
        before = c.rejected()
        sent = c.attack(host, kind, *args)
        got = wait_rejection(c, before, f"{kind} join")
        results[kind] = {"sent": sent, "expected": expected, "rejected": got}
        log(f"{kind}: {sent} -> {got}")

    # wrong-link first: the unseen join must still be timely (±30 s).
    one("wrong-link", "wrong-link", "cli1", "--iface", "cli1-eth0", "--packet", unseen)
    # A valid join (fresh timestamp and nonce, signed with the narrow member's key, inside its
    # certificate) at epoch 0: refused only at the last step, because the cluster's claims are
    # newer; it shows that the joins made here carry good signatures.
    one("valid-but-older", "slice-conflict", "atk", "--iface", ATTACK_IFACE, "--src", atk_addr,
        "--key", f"{k}/narrow.key", "--cert", f"{k}/narrow.cert", "--slice", "0.0.0.0/1",
        "--epoch", "0")
    one("outside-certificate", "outside-certificate", "atk", "--iface", ATTACK_IFACE, "--src",
        atk_addr, "--key", f"{k}/narrow.key", "--cert", f"{k}/narrow.cert", "--slice", "0.0.0.0/0",
        "--epoch", str(epoch + 1000))
    one("wrong-group", "group-not-allowed", "atk", "--iface", ATTACK_IFACE, "--src", atk_addr,
        "--key", f"{k}/insider.key", "--cert", f"{k}/insider.cert", "--slice", "0.0.0.0/0",
        "--epoch", str(epoch + 1000))
    one("stale", "untimely", "atk", "--iface", ATTACK_IFACE, "--packet", live, "--age", "120")

    # Forged control messages, sent on the back-end segment from srv1's host: a captured
    # message of srv2 with one signature bit flipped, and one naming an uncertified sender.
    control = {}
    for kind in ("bad-signature", "unknown-sender"):
        before = c.server_counters("control_dropped_total")
        sent = c.attack("srv1", kind, "--iface", "srv1-eth1", "--src", str(topo.backend_addr(1)))

        def delta():
            now = c.server_counters("control_dropped_total")
            d = {s: {k2.split('"')[1]: v - before[s].get(k2, 0) for k2, v in m.items()
                     if v != before[s].get(k2, 0)} for s, m in now.items()}
            # every server but the captured sender (srv2 sees its own id) counts the forgery
            return d if all(d[s] for s in d if s != "srv2") else None
        try:
            got = cluster.wait_for(f"the servers to count the {kind} control message", delta, timeout=10)
        except cluster.LabError:
            now = c.server_counters("control_dropped_total")
            got = {s: {k2.split('"')[1]: v - before[s].get(k2, 0) for k2, v in m.items()
                       if v != before[s].get(k2, 0)} for s, m in now.items()}
        control[kind] = {"sent": sent, "dropped": got}
        log(f"control {kind}: {got}")
    sleep(2)  # the load keeps running after the last attack
    t_end = time.time()
    # Measured before the clients stop (a starved machine can stall a server at that moment).
    st = c.verifier_status()
    epoch_after = c.agreed_epoch()
    commits_after = {s: c.server_metrics(s).get("commits_total") for s in c.running_servers()}
    replies = c.stop_clients()
    c.check_processes()
    before_owner = owners(replies, t_attacks - 3, t_attacks)
    after_owner = owners(replies, t_attacks, t_end)
    return {
        "attacks": results,
        "control": control,
        "epoch_before": epoch,
        "epoch_after": epoch_after,
        "ownership_unchanged": c.ownership(st) == before_own,
        "commits_unchanged": commits_after == before_commits,
        "during_attacks": once_stats(replies, t_attacks, t_end),
        "member_downs": c.member_downs(t_attacks, t_end),
        "claim_members": sorted({m for m, _, _ in c.ownership(st)}),
        "max_claim_epoch": max((e for _, _, e in c.ownership(st)), default=None),
        "owner_changed": sorted(s for s, o in after_owner.items() if before_owner.get(s) not in (None, o)),
    }


def kernel_routes_multicast(c):
    """Whether r1's kernel has multicast routing (CONFIG_IP_MROUTE): the verifier then uses MFC
    entries, else the nftables data plane (SPEC.md §10.2.1), and smcroute cannot run."""
    return c.run("r1", ["sh", "-c", "test -e /proc/net/ip_mr_cache && echo yes || echo no"]).strip() == "yes"


def kernel_steering_entries(c):
    """What steers native traffic in r1's kernel now: MFC entries, or the nft map's elements."""
    if kernel_routes_multicast(c):
        return len(c.run("r1", ["cat", "/proc/net/ip_mr_cache"]).splitlines()[1:])
    text = c.run("r1", ["nft", "list", "table", "netdev", "manycast_native"], check=False)
    return text.count(": jump m")


def scenario_verifier_restart(c, log):
    c.up()
    epoch0 = c.agreed_epoch()
    c.start_clients()
    sleep(3)
    t_kill = time.time()
    c.retire("verifier")
    c.procs["verifier"].kill()
    c.wait_exit("verifier")
    dataplane = "mroute" if kernel_routes_multicast(c) else "nft"
    kernel_while_down = kernel_steering_entries(c)
    log(f"verifier SIGKILLed; r1's kernel still holds {kernel_while_down} steering entries ({dataplane})")
    sleep(1)
    t_start = time.time()
    c.start_verifier()
    epoch, st = c.wait_converged()
    t_conv = time.time()
    if dataplane == "mroute":
        adopted = st["counters"].get("mfc_entries")
    else:
        adopted = sum(r["values"] for r in st.get("native", []))
    log(f"verifier back, claims rebuilt at epoch {epoch}")
    sleep(4)
    t_end = time.time()
    replies = c.stop_clients()
    c.check_processes()
    before = owners(replies, t_kill - 2, t_kill)
    after = owners(replies, t_conv + 0.5, t_end)
    gaps = silences(replies, t_kill - 1, t_conv + 0.5)
    down = served(replies, t_kill + 0.2, t_start)
    return {
        "epoch_before": epoch0,
        "epoch_after": epoch,
        "claims": [{"member": m, "epoch": e} for m, _, e in c.ownership(st)],
        "dataplane": dataplane,
        "kernel_entries_while_down": kernel_while_down,
        "kernel_entries_after_restart": adopted,
        "down_s": round(t_start - t_kill, 2),
        "before": once_stats(replies, t_kill - 2, t_kill),
        "after": once_stats(replies, t_conv + 0.5, t_end),
        "owner_changed": sorted(s for s, o in after.items() if before.get(s) not in (None, o)),
        "client_gap_ms": quantiles(list(gaps.values())),
        "sources_silent_over_1s": sum(1 for g in gaps.values() if g > 1000),
        "sources_answered_while_down": sum(1 for v in down.values() if v),
        "sources": len(down),
    }


# The keystore scenario's timers: the record's TTL and how long the verifier may use keys past
# it when the keystore does not answer (SPEC.md §8.5), both short so that the test is short.
KS_RECORD_TTL_S = 2
KS_MAX_STALE_MS = 10_000


def scenario_keystore_down(c, log):
    c.up()
    epoch0 = c.agreed_epoch()
    c.start_clients()
    sleep(2)
    accepted = lambda: (c.verifier_status() or {}).get("counters", {}).get("joins_accepted", 0)  # noqa: E731
    t_stop = time.time()
    c.retire("keystore")
    c.signal("keystore", signal.SIGTERM)
    c.wait_exit("keystore")
    dig = c.run("r1", ["dig", f"@{cluster.KEYSTORE_ADDR.split(':')[0]}", "+time=1", "+tries=1",
                       "+short", "g.example", "TXT"], check=False)
    log("keystore stopped")
    before = c.rejected()
    acc0 = accepted()
    # Within TTL + max_stale of the last fetch the verifier keeps accepting the members'
    # refreshes (every 10 s, and answers to its queries) with the cached keys.
    stale_end = t_stop + KS_RECORD_TTL_S + KS_MAX_STALE_MS / 1000 - 1
    try:
        cluster.wait_for("a refresh accepted on cached keys",
                         lambda: accepted() > acc0 and time.time() < stale_end, timeout=stale_end - time.time())
    except cluster.LabError:
        pass
    acc_cached = accepted() - acc0
    rej_cached = rejected_since(c, before)
    log(f"on cached keys: {acc_cached} joins accepted, rejected {rej_cached}")
    # Past it, the cache is empty and the verifier fails closed: refreshes are refused.
    try:
        cluster.wait_for("a refresh refused as key-unavailable",
                         lambda: rejected_since(c, before).get("key-unavailable"), timeout=25)
    except cluster.LabError:
        pass
    t_closed = time.time()
    rej_after = rejected_since(c, before)
    acc1 = accepted()
    log(f"after max_stale: rejected {rej_after}")
    sleep(2)
    t_end = time.time()
    st = c.verifier_status()
    epoch_after = c.agreed_epoch()
    replies = c.stop_clients()
    c.check_processes()
    return {
        "epoch_before": epoch0,
        "dig_while_down": dig.strip(),
        "accepted_on_cached_keys": acc_cached,
        "rejected_on_cached_keys": rej_cached,
        "rejected_after_max_stale": rej_after,
        "accepted_after_max_stale": accepted() - acc1,
        "stale_s": round(t_closed - t_stop, 1),
        "claims": [{"member": m, "epoch": e} for m, _, e in c.ownership(st)],
        "epoch_after": epoch_after,
        "while_cached": once_stats(replies, t_stop, min(stale_end, t_closed)),
        "after_max_stale": once_stats(replies, t_closed, t_end),
        "member_downs": c.member_downs(t_stop, t_end),
    }


LOSS_S = 20


def loss_rules(iface, port):
    """nftables for one server host: count the control datagrams arriving on `iface`, drop one
    in ten at random (netem is not available here)."""
    return (f"table inet manycast_lab_loss {{\n chain input {{\n"
            f"  type filter hook input priority 0; policy accept;\n"
            f"  iifname \"{iface}\" udp dport {port} counter\n"
            f"  iifname \"{iface}\" udp dport {port} numgen random mod 10 == 0 counter drop\n"
            f" }}\n}}\n")


def loss_counters(c, host):
    out = c.run(host, ["nft", "list", "table", "inet", "manycast_lab_loss"])
    packets = [int(ln.split("packets")[1].split()[0]) for ln in out.splitlines() if "packets" in ln]
    return {"seen": packets[0], "dropped": packets[1]}


def scenario_control_loss(c, log):
    epoch0, _ = c.up()
    c.start_clients()
    sleep(2)
    commits0 = {s: c.server_metrics(s).get("commits_total") for s in c.running_servers()}
    t_on = time.time()
    for s, i in c.ids.items():
        path = c.path(f"loss-{s}.nft")
        with open(path, "w") as f:
            f.write(loss_rules(f"{s}-eth1", 4790))
        c.run(s, ["nft", "-f", path])
    log(f"dropping 1 in 10 control datagrams on every server for {LOSS_S} s")
    sleep(LOSS_S)
    counters = {s: loss_counters(c, s) for s in c.ids}
    for s in c.ids:
        c.run(s, ["nft", "delete", "table", "inet", "manycast_lab_loss"])
    t_off = time.time()
    epoch_loss = c.agreed_epoch()
    commits1 = {s: c.server_metrics(s).get("commits_total") for s in c.running_servers()}
    # Whatever happened meanwhile, the cluster must end at one allocation the verifier holds.
    epoch_final, st = c.wait_converged()
    t_conv = time.time()
    sleep(3)
    t_end = time.time()
    replies = c.stop_clients()
    c.check_processes()
    seen = sum(v["seen"] for v in counters.values())
    dropped = sum(v["dropped"] for v in counters.values())
    return {
        "down_after_ms": c.down_after_ms,
        "loss_s": round(t_off - t_on, 1),
        "nft": counters,
        "dropped_share": round(dropped / seen, 3) if seen else None,
        "epoch_before": epoch0,
        "epoch_after_loss": epoch_loss,
        "epoch_final": epoch_final,
        "claims": [{"member": m, "epoch": e} for m, _, e in c.ownership(st)],
        "commits_during_loss": sum((commits1.get(s) or 0) - (commits0.get(s) or 0) for s in commits0),
        "member_downs": c.member_downs(t_on, t_off),
        "during_loss": once_stats(replies, t_on, t_off),
        "after": once_stats(replies, t_conv + 0.5, t_end),
    }


FLOOD_TABLE = "plain_flood"


def scenario_plain_router(c, log):
    """No verifier: r1 is a plain router that floods the group from the clients to every server;
    the servers filter by their agreed slices (SPEC.md §11.3). With kernel multicast routing r1
    runs smcroute, a real multicast routing daemon, with a (*,G) route to all four server links.
    Without it (no CONFIG_IP_MROUTE) no multicast router can run on r1, so an nftables netdev
    rule stands in for it: every datagram to the group from a client link is duplicated, frame
    unchanged, to all four server links (what smcroute's routes do, minus the TTL decrement)."""
    c.start_net()
    c.make_keys()
    clients = [f"r1-c{cno}" for cno in range(1, topo.CLIENTS + 1)]
    server_links = [f"r1-s{i}" for i in c.ids.values()]
    router = "smcroute" if kernel_routes_multicast(c) else "nft-dup"
    if router == "smcroute":
        cfg = c.path("smcroute.conf")
        with open(cfg, "w") as f:
            for link in clients:
                f.write(f"mroute from {link} group {cluster.GROUP} to {' '.join(server_links)}\n")
        c.spawn("smcroute", "r1", ["smcrouted", "-n", "-f", cfg, "-i", "manycast-lab", "-l", "info",
                                   "-u", c.path("smcroute.sock"), "-P", c.path("smcroute.pid")])
    else:
        devices = ", ".join(f'"{d}"' for d in clients)
        dups = " ".join(f'dup to "{d}"' for d in server_links)
        c.run("r1", ["nft", "-f", "-"], input=(
            f"table netdev {FLOOD_TABLE} {{\n\tchain ingress {{\n"
            f"\t\ttype filter hook ingress devices = {{ {devices} }} priority 0; policy accept;\n"
            f"\t\tip daddr {cluster.GROUP} ip protocol udp counter {dups} drop\n\t}}\n}}\n"))
        log(f"r1 floods {cluster.GROUP} to {len(server_links)} server links (nft dup: this kernel has no multicast routing)")
    c.start_servers()

    def agreed():
        c.check_processes()
        e = c.agreed_epoch()
        covered = sum(c.server_metrics(s).get("slice_addresses", 0) for s in c.running_servers())
        return e if e is not None and covered == 1 << 32 else None
    epoch = cluster.wait_for("the servers to agree on one allocation", agreed)
    before = {s: c.server_metrics(s) for s in c.ids}
    c.start_clients()
    t_load = time.time()
    sleep(5)
    t_end = time.time()
    replies = c.stop_clients()
    if router == "smcroute":
        mfc = c.run("r1", ["cat", "/proc/net/ip_mr_cache"]).splitlines()[1:]
        # An (S,G) entry forwarding to all four servers has four "oif:ttl" fields.
        flood = {"mfc_entries": len(mfc),
                 "mfc_to_all_servers": sum(1 for ln in mfc
                                           if len([x for x in ln.split() if ":" in x]) == len(c.ids))}
    else:
        rule = [ln for ln in c.run("r1", ["nft", "list", "table", "netdev", FLOOD_TABLE]).splitlines()
                if "dup to" in ln][0]
        flood = {"flooded_packets": int(rule.split("packets ")[1].split()[0]),
                 "flood_targets": rule.count("dup to")}
    c.check_processes()
    after = {s: c.server_metrics(s) for s in c.ids}
    delta = {s: {k: int(after[s].get(k, 0) - before[s].get(k, 0)) for k in ("served_total", "filtered_total")}
             for s in c.ids}
    return {
        "epoch": epoch,
        "epoch_after": c.agreed_epoch(),
        "router": router,
        **flood,
        "servers": delta,
        "load": once_stats(replies, t_load, t_end),
        "member_downs": c.member_downs(t_load, t_end),
    }


def scenario_dual_stack(c, log):
    """IPv6 clients beside IPv4 ones on one allocation (issue 15 item 7): the verifier protects
    ff3e::/32 with GROUP6's key from the keystore, every server has `group6` and a version 2
    certificate. Each IPv6 source must be answered by exactly one server, the owner of its /56's
    unit in the verifier's status, with four servers and after one is SIGKILLed."""
    c.dual_stack = True
    epoch0, _ = c.up()
    c.start_clients()
    sleep(4)
    t_before = time.time()
    st_before = c.verifier_status()
    epoch_before = c.agreed_epoch()
    killed = "srv2"
    c.retire(killed)
    c.procs[killed].kill()
    t_kill = time.time()
    c.wait_exit(killed)
    log(f"{killed} SIGKILLed")

    def taken_over():
        r = c.converged()
        return r if r and r[0] > epoch_before else None
    epoch_after, st_after = cluster.wait_for(f"the survivors to take {killed}'s slices over", taken_over)
    t_conv = time.time()
    log(f"survivors hold every unit at epoch {epoch_after}, the verifier their IPv4 and IPv6 claims")
    sleep(4)
    t_end = time.time()
    replies = c.stop_clients()
    c.check_processes()
    r4 = {s: rs for s, rs in replies.items() if not dualstack.is6(s)}
    r6 = {s: rs for s, rs in replies.items() if dualstack.is6(s)}
    a, b = t_before - 3, t_before
    owner_before = {s: next(iter(v)) for s, v in dualstack.served(r6, a, b).items() if len(v) == 1}
    return {
        "epoch_start": epoch0,
        "epoch_before": epoch_before,
        "epoch_after": epoch_after,
        "killed": killed,
        "claims6": {str(m): len(e) for m, e in dualstack.claims6(st_after).items()},
        "before": {"ipv4": once_stats(r4, a, b),
                   "ipv6": dualstack.owner_check(r6, a, b, st_before, c.ids)},
        "after": {"ipv4": once_stats(r4, t_conv + 0.5, t_end),
                  "ipv6": dualstack.owner_check(r6, t_conv + 0.5, t_end, st_after, c.ids)},
        "crash6": dualstack.failover(r6, owner_before, killed, t_kill),
        "servers": {s: {k: int(v) for k, v in c.server_metrics(s).items()
                        if k in ("served_total", "served6_total", "filtered6_total", "resets6_total")}
                    for s in c.ids},
        "member_downs": c.member_downs(t_before - 3, t_end),
        "mld_send_errors": c.mld_send_errors(),
    }


SCENARIOS = {"attacks": scenario_attacks, "verifier-restart": scenario_verifier_restart,
             "keystore-down": scenario_keystore_down, "control-loss": scenario_control_loss,
             "plain-router": scenario_plain_router, "dual-stack": scenario_dual_stack}


# -- the attacker side (inside a lab host) ---------------------------------------------------------

def slice_arg(text):
    import ipaddress
    net = ipaddress.ip_network(text)
    return int(net.network_address), int(net.netmask)


def attack_main(argv):
    p = argparse.ArgumentParser(prog="scenarios.py attack")
    p.add_argument("kind")
    p.add_argument("--iface", required=True)
    p.add_argument("--packet")
    p.add_argument("--age", type=float, default=120)
    p.add_argument("--src")
    p.add_argument("--key")
    p.add_argument("--cert")
    p.add_argument("--slice", action="append", default=[])
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--group", default=cluster.GROUP)
    a = p.parse_args(argv)
    if a.kind in ("bad-signature", "unknown-sender"):
        msg = attacker.capture_control(a.iface, sender_id=2, port=4790)
        if msg is None:
            sys.exit("attack: no control message of member 2 seen")
        attacker.send_control(a.src, cluster.CONTROL_GROUP, 4790, attacker.forge_control(msg, a.kind))
        print(json.dumps({"sent": a.kind, "type": msg[3], "bytes": len(msg)}))
        return
    if a.kind == "wrong-link":
        ip = open(a.packet, "rb").read()
    elif a.kind == "stale":
        ip = attacker.make_stale(open(a.packet, "rb").read(), a.age)
    else:
        ip = attacker.sign_join(a.src, a.group, [slice_arg(s) for s in a.slice], a.epoch, a.key, a.cert)
    attacker.send(a.iface, ip)
    _, subs, _ = attacker.parse_signed_report(ip)
    desc = attacker.describe(ip, subs)
    desc["age_ms"] = int(time.time() * 1000) - desc["timestamp_ms"]
    print(json.dumps({"sent": a.kind, **desc}))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "attack":
        attack_main(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(SCENARIOS))
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    p.add_argument("--run-dir", default=None)
    p.add_argument("--json", action="store_true", help="one JSON line of results on stdout")
    args = p.parse_args()
    cluster.prepare_run("scenarios")

    t0 = time.time()

    def log(msg):
        print(f"[{args.name} {time.time() - t0:5.1f}s] {msg}", file=sys.stderr, flush=True)
    kw = {}
    if args.name == "control-loss":
        kw = {"down_after_ms": 200}  # the failure detector's default: the point of the scenario
    if args.name == "keystore-down":
        kw = {"record_ttl": KS_RECORD_TTL_S,
              "keystore_extra": f"refresh_ms = 1000\nmax_stale_ms = {KS_MAX_STALE_MS}"}
    try:
        c = ScenarioCluster(bin_dir=args.bin_dir, log=log,
                            run_dir=args.run_dir or os.path.join(ROOT, "target", "lab-scenarios", args.name),
                            **kw)
    except cluster.LabError as e:
        sys.exit(f"scenarios: {e}")
    result = None
    try:
        result = {"scenario": args.name, **SCENARIOS[args.name](c, log)}
    except (KeyboardInterrupt, cluster.Interrupted):
        print("scenarios: interrupted; stopping the lab", file=sys.stderr)
        sys.exit(130)
    except cluster.LabError as e:
        print(f"scenarios: {e} (logs in {c.run_dir})", file=sys.stderr)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pids = [p.pid for p in c.procs.values()]
        c.stop()
    result["pids"] = pids
    result["run_dir"] = c.run_dir
    with open(c.path("result.json"), "w") as f:
        json.dump(result, f)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
