"""Manycast's default lab topology, for mininet with LinuxBridge switches and no controller.

    one router r1 running the join verifier, with one subnet per attached network:
      srv1..srv4   four servers on four different subnets 10.<i>.0.0/24 (the patent's first
                   property: servers need not share a subnet)
      ks           the DNS keystore on 10.53.0.0/24
      cli1..cliN   client hosts on 10.100.<c>.0/24, each also holding many /32 source addresses
                   spread over the unicast IPv4 space, routed by r1
      atk          an attacker on server 1's subnet (10.1.0.66), so that its joins reach the
                   router on a link where members live
    and a back-end management segment: switch s77, 10.77.0.0/24, a second interface srv<i>-eth1
    (10.77.0.<i>) on every server, not connected to r1. The servers' control group runs there
    (the verifier routes only protected groups, so the control group needs a shared segment).

    Dual stack (`configure`): r1 forwards IPv6 too and holds ::1 of a prefix per server link
    (2001:db8:0:<i>::/64, server i ::2 with a default route via r1) and per client link
    (2001:db8:100:<c>::/64); each client also holds SOURCES_PER_CLIENT IPv6 sources, /128s in
    different /56s spread over the global unicast space, routed per /128 by r1 as the IPv4 ones.

Interactive use:  mn --custom lab/topo.py --topo manycast --switch lxbr --controller none
(then run `py configure(net)` at the mininet prompt to add the client source addresses).
"""

import ipaddress
import random
import sys
import tempfile

from mininet.node import Node
from mininet.topo import Topo

SERVERS = 4
CLIENTS = 2
SOURCES_PER_CLIENT = 64
SEED = 0x6D63  # "mc": the client addresses are the same on every run


class Router(Node):
    """A host that forwards IPv4 and IPv6; the verifier daemon runs inside it."""

    def config(self, **params):
        super().config(**params)
        self.cmd("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
        # The reverse-path filter would drop client sources routed per /32.
        self.cmd("sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0")

    def terminate(self):
        self.cmd("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0")
        super().terminate()


def server_subnet(i):
    return ipaddress.ip_network(f"10.{i}.0.0/24")


def backend_addr(i):
    """Server i's address on the back-end management segment (control group)."""
    return BACKEND_SUBNET[i]


def client_subnet(c):
    return ipaddress.ip_network(f"10.100.{c}.0/24")


def server_subnet6(i):
    """Server i's link prefix: r1 is ::1, the server ::2 (its MLDv2 joins name this prefix)."""
    return ipaddress.ip_network(f"2001:db8:0:{i}::/64")


def client_subnet6(c):
    return ipaddress.ip_network(f"2001:db8:100:{c}::/64")


KEYSTORE_SUBNET = ipaddress.ip_network("10.53.0.0/24")
BACKEND_SUBNET = ipaddress.ip_network("10.77.0.0/24")
ATTACKER_ADDR = "10.1.0.66"


def client_sources(c, n=SOURCES_PER_CLIENT, seed=SEED):
    """Deterministic unicast addresses outside the lab's own 10/8, spread over the whole space
    so that both low-order and prefix slicings see every client."""
    rng = random.Random(seed * 1000 + c)
    out = []
    while len(out) < n:
        a = ipaddress.ip_address(rng.getrandbits(32))
        if a.is_global and not a.is_multicast and a not in ipaddress.ip_network("10.0.0.0/8"):
            out.append(a)
    return out


# The lab's own IPv6 space: client sources are drawn outside it.
LAB6 = ipaddress.ip_network("2001:db8::/32")


def site_unit6(a, bits=8):
    """The allocation unit of IPv6 source `a` under the default site slicing (SPEC.md §6.2):
    the `bits` lowest bits of its /56 prefix."""
    return (int(a) >> 72) & ((1 << bits) - 1)


def client_sources6(c, n=SOURCES_PER_CLIENT, seed=SEED):
    """Deterministic global unicast IPv6 sources, each in a /56 of its own (the default IPv6
    slicing keys on the /56, SPEC.md §6.2), spread over 2000::/3 so that every unit is likely
    drawn; the interface identifiers are random too."""
    rng = random.Random(seed * 1000 + 100 + c)
    out, sites = [], set()
    while len(out) < n:
        a = ipaddress.ip_address((0b001 << 125) | rng.getrandbits(125))
        site = int(a) >> 72
        if a.is_global and a not in LAB6 and site not in sites:
            sites.add(site)
            out.append(a)
    return out


class ManycastTopo(Topo):
    def build(self, servers=SERVERS, clients=CLIENTS):
        r1 = self.addHost("r1", cls=Router, ip=None)
        for i in range(1, servers + 1):
            net = server_subnet(i)
            sw = self.addSwitch(f"s{i}")
            self.addHost(f"srv{i}", ip=f"{net[2]}/24", defaultRoute=f"via {net[1]}")
            self.addLink(f"srv{i}", sw)
            self.addLink(r1, sw, intfName1=f"r1-s{i}", params1={"ip": f"{net[1]}/24"})
        backend = self.addSwitch("s77")
        for i in range(1, servers + 1):
            self.addLink(f"srv{i}", backend, intfName1=f"srv{i}-eth1",
                         params1={"ip": f"{backend_addr(i)}/24"})
        self.addHost("atk", ip=f"{ATTACKER_ADDR}/24", defaultRoute=f"via {server_subnet(1)[1]}")
        self.addLink("atk", "s1")
        sw = self.addSwitch("s53")
        self.addHost("ks", ip=f"{KEYSTORE_SUBNET[2]}/24", defaultRoute=f"via {KEYSTORE_SUBNET[1]}")
        self.addLink("ks", sw)
        self.addLink(r1, sw, intfName1="r1-ks", params1={"ip": f"{KEYSTORE_SUBNET[1]}/24"})
        for c in range(1, clients + 1):
            net = client_subnet(c)
            sw = self.addSwitch(f"s10{c}")
            self.addHost(f"cli{c}", ip=f"{net[2]}/24", defaultRoute=f"via {net[1]}")
            self.addLink(f"cli{c}", sw)
            self.addLink(r1, sw, intfName1=f"r1-c{c}", params1={"ip": f"{net[1]}/24"})


def configure(net, clients=CLIENTS, servers=None):
    """After start: client source addresses and the router's routes back to them; IGMP
    snooping off on the bridges (SPEC.md §3.6: a snooping switch must not filter by source;
    the same holds for MLD snooping, which the same switch option turns off); the IPv6 side
    (module docstring). Global IPv6 addresses skip duplicate address detection (nothing else
    numbers these links); the link-local ones go through it, and a server's MLDv2 joins wait
    for it."""
    for sw in net.switches:
        sw.cmd(f"ip link set {sw.name} type bridge mcast_snooping 0")
    r1 = net.get("r1")
    if servers is None:
        servers = sum(1 for h in net.hosts if h.name.startswith("srv"))
    for i in range(1, servers + 1):
        net6 = server_subnet6(i)
        r1.cmd(f"ip -6 addr add {net6[1]}/64 dev r1-s{i} nodad")
        srv = net.get(f"srv{i}")
        srv.cmd(f"ip -6 addr add {net6[2]}/64 dev srv{i}-eth0 nodad")
        srv.cmd(f"ip -6 route add default via {net6[1]}")
    for c in range(1, clients + 1):
        host = net.get(f"cli{c}")
        gw = client_subnet(c)[2]
        for a in client_sources(c):
            host.cmd(f"ip addr add {a}/32 dev {host.defaultIntf()}")
            r1.cmd(f"ip route add {a}/32 via {gw}")
        net6 = client_subnet6(c)
        r1.cmd(f"ip -6 addr add {net6[1]}/64 dev r1-c{c} nodad")
        host.cmd(f"ip -6 addr add {net6[2]}/64 dev {host.defaultIntf()} nodad")
        host.cmd(f"ip -6 route add default via {net6[1]}")
        # One `ip -batch` per host: 64 `ip` processes each cost seconds on a loaded machine.
        srcs = client_sources6(c)
        ip_batch(host, "-6", [f"addr add {a}/128 dev {host.defaultIntf()} nodad" for a in srcs])
        ip_batch(r1, "-6", [f"route add {a}/128 via {net6[2]}" for a in srcs])


def ip_batch(node, options, lines):
    """`ip <options> -batch` of `lines` inside `node` (the lab's hosts share the filesystem)."""
    with tempfile.NamedTemporaryFile("w", prefix="manycast-lab-ip-", suffix=".batch") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        out = node.cmd(f"ip {options} -force -batch {f.name} 2>&1")
    if out.strip():
        print(f"topo: ip -batch on {node.name}: {out.strip()[:300]}", file=sys.stderr)


# -- the `sites` topology (issue 14 item 5): two sites behind an upstream router, FRR routing --
#
#   clients cli1, cli2 (10.100.<c>.0/24 + SOURCES_PER_CLIENT /32 sources each, routed by `up`)
#   keystore ks (10.53.0.0/24)         all on `up`, the upstream router
#   upstream LAN 10.0.0.0/24 (switch s90): up .1, a1 .11, a2 .12, b1 .21, b2 .22
#   site a: subnets 10.11.0.0/24 (s11) and 10.12.0.0/24 (s12), a1 = .1 and a2 = .2 on both;
#           servers srva1 (10.11.0.11), srva2 (10.12.0.12), srva3 (10.11.0.13)
#   site b: the same on 10.21.0.0/24 (s21) and 10.22.0.0/24 (s22), servers srvb1..srvb3
#
# Every router runs FRR (lab/frr.py: zebra, bfdd, ospfd); a server's default route is its
# subnet's first site router on subnet 1 (x1) and the second on subnet 2 (x2).

SITES = ("a", "b")
SITE_ROUTERS = 2
SITE_SERVERS = 3
SITE_SUBNETS = 2
UPSTREAM_SUBNET = ipaddress.ip_network("10.0.0.0/24")


def site_no(site):
    """1 for site a, 2 for site b: the digit in the site's subnets and switch names."""
    return SITES.index(site) + 1


def site_subnet(site, n):
    """Site `site`'s server subnet n (1-based): 10.<10 * site + n>.0.0/24."""
    return ipaddress.ip_network(f"10.{10 * site_no(site) + n}.0.0/24")


def site_routers(site):
    return [f"{site}{r}" for r in range(1, SITE_ROUTERS + 1)]


def site_router_upstream_addr(router):
    """A site router's address on the upstream LAN: a1 .11, a2 .12, b1 .21, b2 .22."""
    return UPSTREAM_SUBNET[10 * site_no(router[0]) + int(router[1:])]


def site_router_addr(router, n):
    """A site router's address on its site's subnet n: x1 is .1, x2 is .2."""
    return site_subnet(router[0], n)[int(router[1:])]


def site_servers(site):
    """Site `site`'s servers: (name, subnet number, address, gateway, member id). Server k sits
    on subnet 1 if k is odd, else subnet 2, at .10+k; its gateway is the subnet's own router
    (x1 on subnet 1, x2 on subnet 2); member ids run over both sites (a: 1-3, b: 4-6)."""
    out = []
    for k in range(1, SITE_SERVERS + 1):
        n = (k - 1) % SITE_SUBNETS + 1
        net = site_subnet(site, n)
        gw = site_router_addr(site_routers(site)[n - 1], n)
        out.append((f"srv{site}{k}", n, net[10 + k], gw, SITE_SERVERS * (site_no(site) - 1) + k))
    return out


def sites_router_interfaces():
    """Every router's interfaces: {router: [(interface, address/prefix)]}."""
    out = {"up": [("up-lan", f"{UPSTREAM_SUBNET[1]}/24"), ("up-ks", f"{KEYSTORE_SUBNET[1]}/24")]}
    out["up"] += [(f"up-c{c}", f"{client_subnet(c)[1]}/24") for c in range(1, CLIENTS + 1)]
    for site in SITES:
        for r in site_routers(site):
            intfs = [(f"{r}-up", f"{site_router_upstream_addr(r)}/24")]
            intfs += [(f"{r}-n{n}", f"{site_router_addr(r, n)}/24")
                      for n in range(1, SITE_SUBNETS + 1)]
            out[r] = intfs
    return out


def sites_subnets():
    """Every subnet of the sites topology (what each router must have a route to)."""
    nets = [UPSTREAM_SUBNET, KEYSTORE_SUBNET] + [client_subnet(c) for c in range(1, CLIENTS + 1)]
    return nets + [site_subnet(s, n) for s in SITES for n in range(1, SITE_SUBNETS + 1)]


class SitesTopo(Topo):
    """Two sites of servers behind site routers, an upstream router in front (see above)."""

    def build(self):
        intfs = sites_router_interfaces()
        for r in intfs:
            self.addHost(r, cls=Router, ip=None)
        lan = self.addSwitch("s90")
        self.addLink("up", lan, intfName1="up-lan", params1={"ip": intfs["up"][0][1]})
        sw = self.addSwitch("s53")
        self.addHost("ks", ip=f"{KEYSTORE_SUBNET[2]}/24", defaultRoute=f"via {KEYSTORE_SUBNET[1]}")
        self.addLink("ks", sw)
        self.addLink("up", sw, intfName1="up-ks", params1={"ip": intfs["up"][1][1]})
        for c in range(1, CLIENTS + 1):
            net = client_subnet(c)
            sw = self.addSwitch(f"s10{c}")
            self.addHost(f"cli{c}", ip=f"{net[2]}/24", defaultRoute=f"via {net[1]}")
            self.addLink(f"cli{c}", sw)
            self.addLink("up", sw, intfName1=f"up-c{c}", params1={"ip": f"{net[1]}/24"})
        for site in SITES:
            switches = {}
            for n in range(1, SITE_SUBNETS + 1):
                switches[n] = self.addSwitch(f"s{10 * site_no(site) + n}")
            for r in site_routers(site):
                (up_if, up_ip), *site_ifs = intfs[r]
                self.addLink(r, lan, intfName1=up_if, params1={"ip": up_ip})
                for n, (name, ip) in enumerate(site_ifs, start=1):
                    self.addLink(r, switches[n], intfName1=name, params1={"ip": ip})
            for name, n, addr, gw, _ in site_servers(site):
                self.addHost(name, ip=f"{addr}/24", defaultRoute=f"via {gw}")
                self.addLink(name, switches[n])


def configure_sites(net, clients=CLIENTS):
    """After start: IGMP snooping off on the bridges (as `configure`), the client source
    addresses and `up`'s routes back to them (IPv4 only: the sites topology has no IPv6)."""
    for sw in net.switches:
        sw.cmd(f"ip link set {sw.name} type bridge mcast_snooping 0")
    up = net.get("up")
    for c in range(1, clients + 1):
        host = net.get(f"cli{c}")
        gw = client_subnet(c)[2]
        srcs = client_sources(c)
        ip_batch(host, "-4", [f"addr add {a}/32 dev {host.defaultIntf()}" for a in srcs])
        ip_batch(up, "-4", [f"route add {a}/32 via {gw}" for a in srcs])


topos = {"manycast": ManycastTopo, "sites": SitesTopo}
