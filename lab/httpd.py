#!/usr/bin/python3
"""A small HTTP/1.1 keep-alive server for the lab's VIP service under many connections.

    httpd.py --name srv1 --bind 10.200.0.1 [--bind 2001:db8:200::1] [--port 8080]

Answers every request with `<name> <n>\\n`, n the request's number on its connection, so a
client sees which server answers and that no request was skipped or answered twice.
asyncio, one thread: `python3 -m http.server` runs a thread per connection, and 1,000 held
keep-alive connections on this 2-core machine are a thousand threads; this needs no package.
Binds with IP_FREEBIND (IPV6_FREEBIND for an IPv6 VIP), so it may start before the member
daemon puts the VIP on `lo`; one listening socket per `--bind`.
"""

import argparse
import asyncio
import signal
import socket

IP_FREEBIND = 15  # linux/in.h
IPV6_FREEBIND = 78  # linux/in6.h; neither is exported by Python's socket module


def listener(addr, port):
    six = ":" in addr
    sock = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if six:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    sock.bind((addr, port))
    return sock


async def serve_connection(name, reader, writer):
    n = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            n += 1
            body = f"{name} {n}\n".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--bind", required=True, action="append", help="an address to listen on (repeatable)")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args()
    servers = [await asyncio.start_server(lambda r, w: serve_connection(args.name, r, w),
                                          sock=listener(a, args.port), backlog=4096)
               for a in args.bind]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
