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

Interactive use:  mn --custom lab/topo.py --topo manycast --switch lxbr --controller none
(then run `py configure(net)` at the mininet prompt to add the client source addresses).
"""

import ipaddress
import random

from mininet.node import Node
from mininet.topo import Topo

SERVERS = 4
CLIENTS = 2
SOURCES_PER_CLIENT = 64
SEED = 0x6D63  # "mc": the client addresses are the same on every run


class Router(Node):
    """A host that forwards IPv4; the verifier daemon runs inside it."""

    def config(self, **params):
        super().config(**params)
        self.cmd("sysctl -qw net.ipv4.ip_forward=1")
        # The reverse-path filter would drop client sources routed per /32.
        self.cmd("sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0")

    def terminate(self):
        self.cmd("sysctl -qw net.ipv4.ip_forward=0")
        super().terminate()


def server_subnet(i):
    return ipaddress.ip_network(f"10.{i}.0.0/24")


def backend_addr(i):
    """Server i's address on the back-end management segment (control group)."""
    return BACKEND_SUBNET[i]


def client_subnet(c):
    return ipaddress.ip_network(f"10.100.{c}.0/24")


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


def configure(net, clients=CLIENTS):
    """After start: client source addresses and the router's routes back to them; IGMP
    snooping off on the bridges (SPEC.md §3.6: a snooping switch must not filter by source)."""
    for sw in net.switches:
        sw.cmd(f"ip link set {sw.name} type bridge mcast_snooping 0")
    r1 = net.get("r1")
    for c in range(1, clients + 1):
        host = net.get(f"cli{c}")
        gw = client_subnet(c)[2]
        for a in client_sources(c):
            host.cmd(f"ip addr add {a}/32 dev {host.defaultIntf()}")
            r1.cmd(f"ip route add {a}/32 via {gw}")


topos = {"manycast": ManycastTopo}
