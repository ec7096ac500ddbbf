#!/usr/bin/python3
"""Lab client load: from each of a client host's source addresses, UDP requests to the service
group at a steady rate; every reply recorded per source (time, server address, the reference
service's reply text `m<id> <n>` or `m<id> reset`).

    client.py --client 1 --out FILE [--rate 10] [--group 232.1.1.1] [--port 5000] [--family 4]

--family 6: from the client's IPv6 sources (topo.client_sources6) to the IPv6 group
(default ff3e::8000:1), multicast hop limit 8 out of the host's interface.

Runs inside a client host (cli1, cli2) until SIGTERM or SIGINT, then writes FILE (JSON):
    {"client": 1, "start": t0, "stop": t1, "rate": r,
     "sources": {"<addr>": {"sent": n, "replies": [[t, "<server>", "<text>"], ...]}}}
Every PROGRESS_S it also rewrites FILE.progress with the replies per server so far (for the
live view) and each source's latest reply (`"last": {"<addr>": [t, "<server>"]}`, for a waiter). Times are wall-clock seconds (the lab's hosts share the machine's clock).
"""

import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import topo  # noqa: E402

PROGRESS_S = 0.5


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--client", type=int, required=True, help="client number: its sources (topo.py)")
    p.add_argument("--out", required=True)
    p.add_argument("--rate", type=float, default=10.0, help="requests per second per source")
    p.add_argument("--group", default=None, help="default 232.1.1.1, or ff3e::8000:1 with --family 6")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--family", type=int, choices=(4, 6), default=4)
    args = p.parse_args()
    six = args.family == 6
    if args.group is None:
        args.group = "ff3e::8000:1" if six else "232.1.1.1"

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    sel = selectors.DefaultSelector()
    sources = {}
    # The host's one interface toward r1 (IPv6 multicast goes out of an interface, not an address).
    ifindex = socket.if_nametoindex(f"cli{args.client}-eth0") if six else 0
    for a in (topo.client_sources6 if six else topo.client_sources)(args.client):
        a = str(a)
        if six:
            # Hop limit 8: the router drops the group's datagrams that arrive with 1.
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.bind((a, 0))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 8)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((a, 0))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(a))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, a)
        sources[a] = {"sock": s, "sent": 0, "replies": []}

    order = list(sources)
    interval = 1.0 / args.rate / len(order)  # requests spread evenly over the sources
    t0 = time.time()
    next_send = time.monotonic()
    next_progress = next_send + PROGRESS_S
    i = 0
    per_server = {}
    last = {}
    while not stop:
        now = time.monotonic()
        while now >= next_send:
            a = order[i % len(order)]
            try:
                sources[a]["sock"].sendto(b"hello", (args.group, args.port))
                sources[a]["sent"] += 1
            except OSError:
                pass  # not sent (no route yet): not counted; the gap shows in the replies
            i += 1
            next_send += interval
        for key, _ in sel.select(timeout=max(0.0, min(next_send, next_progress) - time.monotonic())):
            s = key.fileobj
            while True:
                try:
                    data, addr = s.recvfrom(256)
                    server = addr[0]
                except BlockingIOError:
                    break
                except OSError:
                    break
                sources[key.data]["replies"].append(
                    [round(time.time(), 4), server, data.decode(errors="replace").strip()])
                per_server[server] = per_server.get(server, 0) + 1
                last[key.data] = [round(time.time(), 4), server]
        if time.monotonic() >= next_progress:
            next_progress += PROGRESS_S
            write_json(args.out + ".progress", {"t": time.time(), "per_server": per_server,
                                                "last": last})
    out = {"client": args.client, "family": args.family, "start": t0, "stop": time.time(), "rate": args.rate,
           "sources": {a: {"sent": v["sent"], "replies": v["replies"]} for a, v in sources.items()}}
    write_json(args.out, out)


if __name__ == "__main__":
    main()
