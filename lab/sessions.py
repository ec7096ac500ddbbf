#!/usr/bin/python3
"""Long-lived client sessions for the `reallocate` scenario: N concurrent sessions from one
client host, spread over its source addresses (topo.py), each keeping request load on the
service while slices move, every answer recorded.

    sessions.py udp  --client 1 --sessions 500 --out FILE [--interval 1.0] [--family 4]
    sessions.py http --client 1 --sessions 500 --out FILE --vip 10.200.0.1 [--http-port 8080]

--family 6: the sessions come from the host's IPv6 sources (topo.client_sources6) and go to
the IPv6 group (udp, default ff3e::8000:1, out of cli<c>-eth0) or to the IPv6 VIP given as
--vip (http).

udp:  one UDP socket per session (its own source address and port: one session at the
      server), sending `r<k>` to the group with one request outstanding and the same id resent
      after each `--timeout` (up to `--tries` times, then the request is lost and the session
      goes on with k+1). Replies `m<id> <n> r<k>` are answers, `m<id> reset` a reset, an answer
      for another id a late duplicate.
http: one keep-alive HTTP/1.1 connection per session to the VIP, `GET /` every interval; the
      lab's httpd.py answers `<server> <n>` with n the request's number on that connection. A
      connection reset or closed by the peer, or a request unanswered within --http-timeout,
      breaks the session (no reconnect: a long-lived connection that broke stays broken).

Runs until SIGTERM/SIGINT: then every session finishes its outstanding request (with its
retries) and FILE is written (JSON):
    {"mode", "family", "client", "start", "stop",
     "sessions": {"<src>:<port>": {"answers": [[t, server, n, k], ...], "resets": [[t, server]],
                                   "lost": [k, ...], "late": n, "garbled": n,
                                   "broken": null | "<why>"}}}
FILE.progress (rewritten every PROGRESS_S): sessions answered at least once, answers so far.
Times are wall-clock seconds (the lab's hosts share the machine's clock).
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import topo  # noqa: E402

PROGRESS_S = 0.5
IP_FREEBIND = 15  # linux/in.h; not exported by Python's socket module


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def parse_reply(text):
    """`m<id> <n> r<k>` -> ("answer", n, k); `m<id> reset` -> ("reset",); else None."""
    parts = text.split()
    if not parts or not parts[0].startswith("m"):
        return None
    if len(parts) == 2 and parts[1] == "reset":
        return ("reset",)
    if len(parts) == 3 and parts[2].startswith("r"):
        try:
            return ("answer", int(parts[1]), int(parts[2][1:]))
        except ValueError:
            return None
    return None


class Session:
    def __init__(self, index, src):
        self.index = index
        self.src = src
        self.port = None
        self.answers = []
        self.resets = []
        self.lost = []
        self.late = 0
        self.garbled = 0
        self.broken = None
        # udp: the request id awaited and the future its answer completes
        self.expect = None
        self.fut = None

    def key(self):
        # A connection that never opened has no port: named by its index instead.
        return f"{self.src}:{self.port if self.port is not None else f'unopened-{self.index}'}"

    def record(self):
        return {"answers": self.answers, "resets": self.resets, "lost": self.lost,
                "late": self.late, "garbled": self.garbled, "broken": self.broken}


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, session):
        self.s = session

    def datagram_received(self, data, addr):
        s = self.s
        got = parse_reply(data.decode(errors="replace"))
        if got is None:
            s.garbled += 1
        elif got[0] == "reset":
            s.resets.append([round(time.time(), 4), addr[0]])
        elif got[2] == s.expect and s.fut is not None and not s.fut.done():
            s.fut.set_result((round(time.time(), 4), addr[0], got[1], got[2]))
        else:
            s.late += 1


async def pause(stop, seconds):
    """Sleeps `seconds` unless `stop` is set first."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def udp_session(s, args, stop):
    loop = asyncio.get_running_loop()
    if args.family == 6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind((s.src, 0))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 8)
        # IPv6 multicast leaves by interface, not by source address.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF,
                        socket.if_nametoindex(f"cli{args.client}-eth0"))
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((s.src, 0))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(s.src))
    sock.setblocking(False)
    s.port = sock.getsockname()[1]
    transport, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(s), sock=sock)
    await pause(stop, random.uniform(0, args.interval))  # spread the sessions' requests
    k = 0
    try:
        while not stop.is_set():
            k += 1
            s.expect = k
            s.fut = loop.create_future()
            for _ in range(args.tries):
                try:
                    transport.sendto(f"r{k}".encode(), (args.group, args.port))
                except OSError:
                    pass  # no route for a moment: the retry covers it
                try:
                    s.answers.append(list(await asyncio.wait_for(asyncio.shield(s.fut), args.timeout)))
                    break
                except asyncio.TimeoutError:
                    continue
            else:
                s.lost.append(k)
            await pause(stop, args.interval)
    finally:
        transport.close()


async def http_request(reader, writer, timeout):
    """One GET on a kept-alive connection; its body. Raises on reset, close or timeout."""
    writer.write(b"GET / HTTP/1.1\r\nHost: manycast\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return (await asyncio.wait_for(reader.readexactly(length), timeout)).decode(errors="replace")


async def http_session(s, args, stop):
    await pause(stop, random.uniform(0, args.interval))
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(args.vip, args.http_port, local_addr=(s.src, 0)), args.http_timeout)
    except (OSError, asyncio.TimeoutError) as e:
        s.broken = f"connect: {type(e).__name__}" + (f" ({e.strerror})" if getattr(e, "strerror", None) else "")
        return
    s.port = writer.get_extra_info("sockname")[1]
    k = 0
    try:
        while not stop.is_set():
            k += 1
            try:
                body = await http_request(reader, writer, args.http_timeout)
            except asyncio.TimeoutError:
                s.lost.append(k)
                s.broken = "timeout"
                return
            except asyncio.IncompleteReadError:
                s.lost.append(k)
                s.broken = "closed by peer"
                return
            except OSError as e:
                s.lost.append(k)
                s.broken = type(e).__name__
                return
            parts = body.split()
            try:
                s.answers.append([round(time.time(), 4), parts[0], int(parts[1]), k])
            except (IndexError, ValueError):
                s.garbled += 1
            await pause(stop, args.interval)
    finally:
        writer.close()


async def progress(sessions, path, stop):
    while not stop.is_set():
        write_json(path, {"t": time.time(),
                          "answered": sum(1 for s in sessions if s.answers),
                          "answers": sum(len(s.answers) for s in sessions),
                          "broken": sum(1 for s in sessions if s.broken)})
        await pause(stop, PROGRESS_S)


async def run(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    sources = [str(a) for a in (topo.client_sources6 if args.family == 6 else topo.client_sources)(args.client)]
    sessions = [Session(i, sources[i % len(sources)]) for i in range(args.sessions)]
    one = udp_session if args.mode == "udp" else http_session
    t0 = time.time()
    tasks = [asyncio.create_task(one(s, args, stop)) for s in sessions]
    prog = asyncio.create_task(progress(sessions, args.out + ".progress", stop))
    await asyncio.gather(*tasks, return_exceptions=True)
    await prog
    for s, t in zip(sessions, tasks):
        if t.exception() is not None and s.broken is None:
            s.broken = f"client error: {t.exception()!r}"
    write_json(args.out, {"mode": args.mode, "family": args.family, "client": args.client, "start": t0,
                          "stop": time.time(),
                          "sessions": {s.key(): s.record() for s in sessions}})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["udp", "http"])
    p.add_argument("--client", type=int, required=True, help="client number: its sources (topo.py)")
    p.add_argument("--sessions", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between a session's requests")
    p.add_argument("--family", type=int, choices=(4, 6), default=4)
    p.add_argument("--group", default=None, help="default 232.1.1.1, or ff3e::8000:1 with --family 6")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--timeout", type=float, default=0.3, help="udp: seconds before a resend")
    p.add_argument("--tries", type=int, default=40, help="udp: sends of one request id")
    p.add_argument("--vip", default="10.200.0.1")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--http-timeout", type=float, default=10.0)
    args = p.parse_args()
    if args.group is None:
        args.group = "ff3e::8000:1" if args.family == 6 else "232.1.1.1"
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
