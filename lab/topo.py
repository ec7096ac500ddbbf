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


topos = {"manycast": ManycastTopo}
