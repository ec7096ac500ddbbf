"""The site hierarchy on the `sites` lab (issue 14 item 2, SPEC.md §10.8), read from the real
daemons: the upper allocation as each site router's verifier reports it (`status` → `site`),
the upstream verifier's steering of units to the site agents, the site verifiers' steering of
them to members, and the clients' answers (lab/client.py in cli1/cli2, to the service group).

The runs of `lab/sites.py demo` and `lab/sites.py bench` (module `sites` drives; this module only
observes and times):
  router_loss  a1's verifier SIGKILLed: its upper units go to a2, the clients keep their server
  site_loss    every server of site b SIGKILLed: site b's sources answered by site a (timed from
               the kill to the first site-a answer of the last of them)
  site_back    site b's servers started again: site b is steered to and answers again

Until the scope hand-down lands (H1/H2), every site's members allocate the whole space, so a
site's upstream claim is its agents' upper units (a site serves any unit it is given).
"""

import json
import os
import signal
import time

import cluster
import topo
from cluster import GROUP, LabError, wait_for

LAB = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
CLIENT_RATE = 10.0  # requests per second per source: 100 ms between one source's requests


def parse_slice(text):
    """A status slice (`a.b.c.d/len` or `value/mask` in dotted quads) as (value, mask)."""
    addr, _, m = text.partition("/")
    value = int.from_bytes(bytes(int(o) for o in addr.split(".")), "big")
    if "." in m:
        mask = int.from_bytes(bytes(int(o) for o in m.split(".")), "big")
    else:
        mask = (0xFFFFFFFF << (32 - int(m))) & 0xFFFFFFFF if int(m) else 0
    return value, mask


def as_int(addr):
    return int.from_bytes(bytes(int(o) for o in str(addr).split(".")), "big")


def owner(status, addr):
    """The member whose live claim on the service group holds `addr` in `status`, or None."""
    a = as_int(addr)
    for row in (status or {}).get("ownership", []):
        if row["group"] != GROUP or row.get("liveness") == "dead":
            continue
        for s in row["slices"].split():
            value, mask = parse_slice(s)
            if a & mask == value:
                return row["member"]
    return None


def sources():
    return [str(a) for c in range(1, topo.CLIENTS + 1) for a in topo.client_sources(c)]


class Hierarchy:
    """Observes a running `sites.SitesCluster` with the hierarchy (`c`)."""

    def __init__(self, c, router_ids, units):
        self.c = c
        self.router_ids = router_ids  # router name -> member id in the upper group
        self.router_of = {mid: r for r, mid in router_ids.items()}
        self.units = units
        self.server_of = {str(addr): name for s in topo.SITES
                          for name, _, addr, _, _ in topo.site_servers(s)}
        self.server_by_id = {mid: name for s in topo.SITES
                             for name, _, _, _, mid in topo.site_servers(s)}
        self.clients = {}

    def live_routers(self):
        return [r for r in self.router_ids if self.c.alive(f"verifier-{r}")]

    # -- the upper allocation and the two levels of steering ----------------------------------

    def upper(self):
        """{router: its `site` status} for the live site routers, or None if one has none."""
        out = {}
        for r in self.live_routers():
            st = self.c.router_status(r)
            if st is None or not st.get("site"):
                return None
            out[r] = st["site"]
        return out

    def upper_converged(self, want=None):
        """The upper picture once the live agents agree on one upper epoch, their units cover
        the slicing, each claims upstream exactly its own units (its site's members serve every
        unit) and the upstream verifier holds exactly those claims at that epoch; `want(picture)`
        may ask more. Else None."""
        self.c.check_processes()
        pic = self.upper()
        if not pic:
            return None
        epochs = {s["upper_epoch"] for s in pic.values()}
        if len(epochs) != 1 or None in epochs:
            return None
        epoch = epochs.pop()
        if sum(s["own_units"] for s in pic.values()) != self.units:
            return None
        if any(s["claim_units"] != s["own_units"] for s in pic.values()):
            return None
        up = self.c.router_status("up")
        if up is None:
            return None
        rows = {row["member"]: row["epoch"] for row in up["ownership"]
                if row["group"] == GROUP and row["slices"].strip() and row.get("liveness") != "dead"}
        claiming = {s["member"]: epoch for s in pic.values() if s["claim_units"]}
        if rows != claiming:
            return None
        if want is not None and not want(pic):
            return None
        return {"upper_epoch": epoch, "routers": pic}

    def wait_upper(self, what, want=None, timeout=60):
        return wait_for(what, lambda: self.upper_converged(want), timeout=timeout)

    def steering(self):
        """{source: (router, server)}: the agent the upstream verifier steers the source's unit
        to and the member that agent's site verifier steers it to; None where either is missing."""
        up = self.c.router_status("up")
        site_status = {r: self.c.router_status(r) for r in self.live_routers()}
        out = {}
        for src in sources():
            router = self.router_of.get(owner(up, src))
            member = owner(site_status.get(router), src) if router else None
            out[src] = (router, self.server_by_id.get(member)) if member else None
        return out

    # -- clients ------------------------------------------------------------------------------

    def start_clients(self, tag):
        """Every client source sends to the service group (lab/client.py) until stop_clients."""
        self.clients = {}
        for cno in range(1, topo.CLIENTS + 1):
            name = f"client{cno}-{tag}"
            self.clients[name] = self.c.path(f"{name}.json")
            self.c.spawn(name, f"cli{cno}", [PY, os.path.join(LAB, "client.py"), "--client", str(cno),
                                             "--out", self.clients[name], "--rate", str(CLIENT_RATE)])

    def last_replies(self):
        """{source: (t, server name)} of each source's latest reply so far (the progress files)."""
        out = {}
        for path in self.clients.values():
            try:
                with open(path + ".progress") as f:
                    last = json.load(f).get("last", {})
            except (OSError, ValueError):
                continue
            out.update({src: (t, self.server_of.get(a, a)) for src, (t, a) in last.items()})
        return out

    def stop_clients(self):
        """Stops the load; {source: [(t, server name)]} of every reply."""
        for name in self.clients:
            self.c.retire(name)
            self.c.signal(name, signal.SIGTERM)
        replies = {}
        for name, path in self.clients.items():
            self.c.wait_exit(name)
            with open(path) as f:
                for src, v in json.load(f)["sources"].items():
                    replies[src] = [(t, self.server_of.get(a, a)) for t, a, _ in v["replies"]]
        self.clients = {}
        return replies

    def wait_answered(self, what, ok, since, timeout=60):
        """Waits until every source's latest reply came after `since` (wall clock) and from a
        server `ok(source, server)` accepts; returns the latest replies."""
        def done():
            self.c.check_processes()
            last = self.last_replies()
            srcs = sources()
            return last if all(s in last and last[s][0] > since and ok(s, last[s][1])
                               for s in srcs) else None
        return wait_for(what, done, timeout=timeout, interval=0.2)

    def wait_as_steered(self, what, since=None, want=None, timeout=60):
        """Waits until every source has a steered (router, server), `want(steering)` holds if
        given, and every source's latest reply came from its steered server after `since`
        (default: one second ago, so the answer is a current one); returns the steering."""
        def done():
            self.c.check_processes()
            steer = self.steering()
            if any(v is None for v in steer.values()) or (want and not want(steer)):
                return None
            last = self.last_replies()
            after = since if since is not None else time.time() - 1.0
            return steer if all(s in last and last[s][0] > after and last[s][1] == v[1]
                                for s, v in steer.items()) else None
        return wait_for(what, done, timeout=timeout, interval=0.3)


def answered_by(replies, a, b):
    """{source: set of servers that answered it in [a, b]} (wall clock)."""
    return {src: {srv for t, srv in rs if a <= t <= b} for src, rs in replies.items()}


def check_answers(steering, answers):
    """Per source, whether it was answered by exactly the server the two levels steer it to:
    (as steered, [(source, steered, answered)] of the others)."""
    good, bad = 0, []
    for src, steered in steering.items():
        got = answers.get(src, set())
        if steered is not None and got == {steered[1]}:
            good += 1
        else:
            bad.append((src, steered, sorted(got)))
    return good, bad


def breaks(replies, a, b):
    """Sources whose answering server changed between consecutive replies in [a, b], and the
    longest time (ms) any source went unanswered in [a, b]."""
    changed, longest = [], 0.0
    for src, rs in replies.items():
        window = [(t, s) for t, s in rs if a <= t <= b]
        if any(s1 != s2 for (_, s1), (_, s2) in zip(window, window[1:])):
            changed.append(src)
        times = [a] + [t for t, _ in window] + [b]
        longest = max(longest, max(t2 - t1 for t1, t2 in zip(times, times[1:])))
    return changed, round(longest * 1000)


def first_answer_by(replies, srcs, servers, since, until):
    """For each of `srcs`, the first reply in (since, until] from one of `servers` from which on
    every reply came from them; ms after `since` of the last of these (None if one has none)."""
    worst = 0.0
    for src in srcs:
        rs = [(t, s) for t, s in replies.get(src, []) if since < t <= until]
        first = None
        for t, s in rs:
            if s in servers:
                first = t if first is None else first
            else:
                first = None
        if first is None:
            return None
        worst = max(worst, first - since)
    return round(worst * 1000)


def site_servers(site):
    return {name for name, *_ in topo.site_servers(site)}


def kill_site_servers(c, site):
    for name in site_servers(site):
        c.retire(name)
        c.signal(name, signal.SIGKILL)
    for name in site_servers(site):
        c.wait_exit(name)


def restart_site_servers(c, site):
    for name in sorted(site_servers(site)):
        c.retired.discard(name)
        c.start_server(name)


def site_loss(h, site="b", timeout=90):
    """Kills every server of `site` under client load; returns the figures. The load must run."""
    other = next(s for s in topo.SITES if s != site)
    steer = h.steering()
    lost = [src for src, st in steer.items() if st and st[0][0] == site]
    if not lost:
        raise LabError(f"no source steered to site {site} before its loss: {steer}")
    t0 = time.time()
    kill_site_servers(h.c, site)
    keep = site_servers(other)
    h.wait_answered(f"every source of site {site} answered by site {other}",
                    lambda s, srv: srv in keep, since=t0, timeout=timeout)
    routers = [r for r in h.router_ids if r[0] == site]
    pic = h.wait_upper(f"site {site}'s agents at weight 0, the upstream verifier re-pointed",
                       lambda p: all(p[r]["weight"] == 0 for r in routers if r in p),
                       timeout=timeout)
    return {"killed_at": t0, "sources": lost, "upper": pic}


def site_back(h, site="b", timeout=120):
    """Starts `site`'s servers again; returns when the upstream verifier steers some sources to
    the site and each source is answered by exactly the server the two levels name."""
    t0 = time.time()
    restart_site_servers(h.c, site)
    h.c.wait_converged(timeout=timeout)
    routers = [r for r in h.router_ids if r[0] == site]
    pic = h.wait_upper(f"site {site} takes a share of the units again",
                       lambda p: any(p[r]["own_units"] for r in routers if r in p), timeout=timeout)

    steer = h.wait_as_steered(f"site {site}'s sources answered by site {site} again",
                              want=lambda st: any(v[0][0] == site for v in st.values()),
                              timeout=timeout)
    return {"restarted_at": t0, "back_ms": round((time.time() - t0) * 1000), "upper": pic,
            "sources": sorted(s for s, st in steer.items() if st[0][0] == site)}
