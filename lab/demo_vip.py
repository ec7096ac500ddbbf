"""The demo's VIP steps (demo.py's story, mixed into its `Story`): a second service on the same
servers in VIP mode, dual stack. The verifier binds VIP 10.200.0.1 to group 232.1.1.2 and the
IPv6 VIP 2001:db8:200::1 to group ff3e::8000:2, both pinned; every server runs nginx (web.py,
port 8080 on IPv4 and IPv6) and a `manycast-server` in VIP mode with both VIPs (strategy pin,
an HTTP health check of its nginx). curl from sampled IPv4 sources through the VIP and from
sampled IPv6 sources (each in a /56 of its own) through the IPv6 VIP: each answered by one
server, the IPv6 ones by the owner of their unit in the verifier's status read right after; a
short wrk from each client host. Then nginx is killed on one server (its sources of both
families answered elsewhere, by their new owners) and started again (the member comes back
after `rise`).
"""

import subprocess
import time

import cluster
import dualstack
import topo
import web

VIP, VIP6 = web.VIP, web.VIP6
VIP_GROUP = "232.1.1.2"
VIP_GROUP6 = "ff3e::8000:2"  # the VIP service's IPv6 group (the native service has ff3e::8000:1)
HTTP_PORT = web.HTTP_PORT
CURL_SOURCES = 16  # per client host and family
NGINX_KILLED = "srv3"  # its nginx is killed (its daemons live) in the health step


def not_owner6(answers, owners6):
    """IPv6 sources not answered, every time, by the one owner the verifier's status names."""
    return sorted(s for s, w in answers.items()
                  if s in owners6 and (len(set(w)) != 1 or [w[0]] != owners6[s]))


class VipSteps:
    """The story's steps `step_vip` and `step_vip_health` (self.c is demo.StoryCluster)."""

    def curl_vips(self, sources, tries=1):
        """curl through the VIP of each source's family (web.curl_vip), and each IPv6 source's
        owner in the verifier's status read right after."""
        got = web.curl_vip(self.c, sources, tries)
        return got, web.verifier_owners6(self.c, got, VIP_GROUP6)

    def steered(self):
        return web.steered(self.c.verifier_status(), VIP_GROUP, VIP_GROUP6)

    def step_vip(self):
        """The VIP service up; curl from client sources of both families (one source per
        request) and a short wrk."""
        servers = self.c.running_servers()
        # nginx first: a member with a check takes units once the check passed `rise` times.
        for name in servers:
            self.c.nginx(name).start()
        for name in servers:
            self.c.start_vip_server(name)
        want = {self.c.ids[s] for s in servers}

        def claimed():
            self.c.check_processes()
            claims = self.c.vip_claims()
            return claims if set(claims) == want and len(set(claims.values())) == 1 else None

        claims = cluster.wait_for("the VIP service's members to join (verifier claims)", claimed)
        for name in servers:
            cluster.wait_for(f"{name}'s VIP daemon to put {VIP} and {VIP6} on lo",
                             lambda: web.vips_on_lo(self.c, name))
        # The IPv6 VIP's table is written once the verifier's adopt grace is over.
        cluster.wait_for("the verifier to steer both VIPs to every member", self.steered)
        h = web.HEALTH
        self.event(f"VIP service: group {VIP_GROUP} bound to {VIP} and {VIP_GROUP6} to {VIP6} (pin) in "
                   f"the verifier; nginx on each server (port {HTTP_PORT}, IPv4 and IPv6, a page such as "
                   f"\"{web.page_text('srv1')}\"); {len(servers)} manycast-server in VIP mode (strategy "
                   f"pin, both VIPs, an HTTP check of the local nginx every {h['interval_ms']} ms, fall "
                   f"{h['fall']}, rise {h['rise']}) joined at epoch {next(iter(claims.values()))}",
                   mark="vip")
        # curl: every source of a sample twice, each request from one source.
        answers, owners6 = self.curl_vips(web.sampled_sources(CURL_SOURCES), tries=2)
        self.vip["curl"], self.vip["owners6"] = answers, owners6
        per = {4: {}, 6: {}}
        for src, who in answers.items():
            if len(set(who)) == 1 and who[0] != "-":
                fam = per[6 if ":" in src else 4]
                fam[who[0]] = fam.get(who[0], 0) + 1
        n6 = len(owners6)
        self.event(f"curl --interface <source> http://{VIP}:{HTTP_PORT}/ and http://[{VIP6}]:{HTTP_PORT}/, "
                   f"2 requests from each of {len(answers) - n6} IPv4 and {n6} IPv6 sources: answered by "
                   f"one server both times, IPv4 per server {dict(sorted(per[4].items()))}, IPv6 per "
                   f"server {dict(sorted(per[6].items()))}; IPv6 sources not answered by the owner the "
                   f"verifier holds for their unit: {len(not_owner6(answers, owners6))}", mark="curl")
        self.wrk()
        self.marks["vip_done"] = time.time()

    def wrk(self):
        """wrk through the VIP from each client host's primary address (wrk cannot pick its
        source address)."""
        secs = 2 if self.args.quick else 3
        procs = {}
        for cno in range(1, topo.CLIENTS + 1):
            procs[cno] = self.c.host(f"cli{cno}").popen(
                ["wrk", "-t1", "-c4", f"-d{secs}s", "--timeout", "3s", "--latency",
                 f"http://{VIP}:{HTTP_PORT}/"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for cno, p in procs.items():
            out, err = p.communicate(timeout=secs + 30)
            src = str(topo.client_subnet(cno)[2])
            who = web.who(self.c.run(f"cli{cno}", ["curl", "-s", "--max-time", "3",
                                                   f"http://{VIP}:{HTTP_PORT}/"], check=False)) or "-"
            fig = web.wrk_figures(out.decode())
            fig.update({"source": src, "server": who, "rc": p.returncode, "seconds": secs})
            self.vip.setdefault("wrk", {})[f"cli{cno}"] = fig
            self.event(f"wrk -t1 -c4 -d{secs}s from cli{cno} ({src}, served by {who}): "
                       f"{fig.get('requests')} requests, {fig.get('rps')} req/s, latency avg "
                       f"{fig.get('latency_avg')} p99 {fig.get('latency_p99')}, socket errors "
                       f"{fig.get('socket_errors')}, non-2xx {fig.get('non_2xx')}")

    def step_vip_health(self):
        """nginx SIGKILLed on one server, its daemons alive: the VIP member's check says dead,
        the member withdraws its claims at once and its units move; its curl sources of both
        families are answered by the others. nginx starts again: the check passes `rise` times,
        the member is back."""
        owner = {s: w[0] for s, w in self.vip["curl"].items() if len(set(w)) == 1 and w[0] != "-"}
        victim = NGINX_KILLED if NGINX_KILLED in owner.values() else sorted(owner.values())[0]
        mine = sorted(s for s, o in owner.items() if o == victim)
        mid = self.c.ids[victim]
        sock = self.c.admin_socket(f"vip-{victim}")
        self.c.nginx(victim).kill()
        n6 = sum(1 for s in mine if ":" in s)
        self.event(f"nginx on {victim} SIGKILLed (its manycast-server daemons run on); curl from "
                   f"its {len(mine) - n6} IPv4 and {n6} IPv6 sampled sources until other servers "
                   "answer", mark="nginx_kill")

        def moved():
            got = web.curl_vip(self.c, mine)
            return got if all(w[0] not in ("-", victim) for w in got.values()) else None

        cluster.wait_for(f"{victim}'s sources to be answered by other servers", moved,
                         timeout=60, interval=0.3)
        after, owners6 = self.curl_vips(mine)
        self.marks["nginx_moved"] = time.time()
        try:  # the admin status is refreshed once a second
            cluster.wait_for(f"{victim}'s status to show its check down",
                             lambda: web.health(sock)[0] is False, timeout=10, interval=0.2)
        except cluster.LabError:
            pass
        up, out = web.health(sock)
        claim = mid in self.c.vip_claims()
        claim6 = mid in {m for m, e in dualstack.claims6(self.c.verifier_status(), VIP_GROUP6).items() if e}
        self.event(f"{victim}'s nginx check: {'up' if up else 'down'}, member out: {out}; the "
                   f"verifier holds {'a' if claim else 'no'} IPv4 and {'an' if claim6 else 'no'} IPv6 "
                   f"claim of m{mid}; its sources now:",
                   [f"{s}: {victim} -> {after[s][0]}" for s in mine])
        self.c.nginx(victim).start()
        self.marks["nginx_restart"] = time.time()
        want = set(self.c.ids[s] for s in self.c.running_servers())

        def back():
            claims = self.c.vip_claims()
            u, o = web.health(sock)
            return (u and o is None and set(claims) == want and len(set(claims.values())) == 1
                    and self.steered() and next(iter(claims.values())))

        epoch = cluster.wait_for(f"{victim}'s check up and its VIP claims back", back, timeout=60)
        again, owners6_again = self.curl_vips(list(self.vip["curl"]))
        answering = sorted(s for s, w in again.items() if w[0] == victim)
        self.event(f"nginx on {victim} started again: its check passed {web.HEALTH['rise']} times, "
                   f"m{mid} is back in the VIP service at epoch {epoch}; it answers "
                   f"{len(answering)} of the {len(again)} sampled sources "
                   f"({sum(1 for s in answering if ':' in s)} IPv6)", mark="nginx_back")
        self.vip["health"] = {
            "victim": victim, "sources": mine,
            "sources6": [s for s in mine if ":" in s],
            "moved_to": {s: after[s][0] for s in mine},
            "down_seen": {"up": up, "out": out, "claim": claim, "claim6": claim6},
            "back_epoch": epoch,
            "back_sources": answering,
            "back_sources6": [s for s in answering if ":" in s],
            "unanswered_after": sorted(s for s, w in again.items() if w[0] == "-"),
            # IPv6 sources not answered by the owner the verifier held right after the curl.
            "not_owner6": {"moved": not_owner6(after, owners6),
                           "again": not_owner6(again, owners6_again)},
        }
        self.pause(2, 1)
