#!/usr/bin/python3
"""The lab's attacker (host atk, on server 1's subnet). Plain AF_PACKET sockets, no daemon help.

    attacker.py capture --iface atk-eth0 --sender 10.1.0.2 --out FILE [--group G]
        sniff the link until SIGTERM; keep the latest signed IGMPv3 report (non-empty claim)
        that `sender` sent (for group G only, if given), as its raw IPv4 datagram, in FILE
    attacker.py replay --iface atk-eth0 --packet FILE
        re-send the captured datagram byte for byte (the verifier must answer `duplicate`)
    attacker.py forge --iface atk-eth0 --packet FILE
        a well-formed report in the sender's name claiming the same slices at a much later
        epoch, with a fresh nonce and timestamp, but the old signature: what an attacker
        without the member key can make (the verifier must answer `bad-signature`)

replay and forge print one JSON line describing what was sent. Byte layout: SPEC.md §3.
"""

import argparse
import json
import os
import signal
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
IGMP_ALL_ROUTERS_MAC = bytes.fromhex("01005e000016")  # 224.0.0.22
MANYCAST_EXT = 0xFFFE
SUB_EPOCH, SUB_TIMESTAMP, SUB_NONCE = 0x0002, 0x0003, 0x0004


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def parse_signed_report(ip):
    """(igmp offset, {sub-TLV type: (offset in datagram, length)}, slice count) of a signed
    IGMPv3 report with one group record, or None."""
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 2:
        return None
    off = (ip[0] & 0xF) * 4
    igmp = ip[off:]
    if len(igmp) < 8 or igmp[0] != 0x22 or struct.unpack("!H", igmp[6:8])[0] != 1:
        return None
    _rtype, aux, nsrc = struct.unpack("!BBH", igmp[8:12])
    pos = 16 + 4 * nsrc + 4 * aux
    if len(igmp) < pos + 5:
        return None
    ext_type, ext_len = struct.unpack("!HH", igmp[pos:pos + 4])
    if ext_type != MANYCAST_EXT or igmp[pos + 4] != 1:
        return None
    subs = {}
    p, end = pos + 5, pos + 4 + ext_len
    while p + 4 <= end:
        t, n = struct.unpack("!HH", igmp[p:p + 4])
        subs[t] = (off + p + 4, n)
        p += 4 + n
    return off, subs, nsrc


def l2_socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.bind((iface, ETH_P_IP))
    return s


def capture(args):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    s = l2_socket(args.iface)
    s.settimeout(0.2)
    sender = socket.inet_aton(args.sender)
    group = socket.inet_aton(args.group) if args.group else None
    while not stop:
        try:
            frame = s.recv(65535)
        except socket.timeout:
            continue
        ip = frame[14:]
        if ip[12:16] != sender:
            continue
        parsed = parse_signed_report(ip)
        if parsed and group and ip[parsed[0] + 12:parsed[0] + 16] != group:
            continue
        if parsed and parsed[2] > 0:
            tmp = args.out + ".tmp"
            with open(tmp, "wb") as f:
                f.write(ip)
            os.replace(tmp, args.out)


def send(iface, ip):
    s = l2_socket(iface)
    mac = open(f"/sys/class/net/{iface}/address").read().strip()
    s.send(IGMP_ALL_ROUTERS_MAC + bytes.fromhex(mac.replace(":", "")) + struct.pack("!H", ETH_P_IP) + ip)


def describe(ip, subs):
    o, _ = subs[SUB_EPOCH]
    t, _ = subs[SUB_TIMESTAMP]
    n, _ = subs[SUB_NONCE]
    return {"sender": socket.inet_ntoa(ip[12:16]), "epoch": struct.unpack("!Q", ip[o:o + 8])[0],
            "timestamp_ms": struct.unpack("!Q", ip[t:t + 8])[0], "nonce": ip[n:n + 16].hex(),
            "bytes": len(ip)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["capture", "replay", "forge"])
    p.add_argument("--iface", required=True)
    p.add_argument("--sender", help="capture: whose reports to keep")
    p.add_argument("--out", help="capture: where to keep the latest report")
    p.add_argument("--group", help="capture: only reports for this group")
    p.add_argument("--packet", help="replay, forge: the captured datagram")
    args = p.parse_args()
    if args.command == "capture":
        if not args.sender or not args.out:
            sys.exit("attacker: capture needs --sender and --out")
        capture(args)
        return
    ip = bytearray(open(args.packet, "rb").read())
    parsed = parse_signed_report(bytes(ip))
    if parsed is None:
        sys.exit(f"attacker: {args.packet} is not a signed report")
    off, subs, _ = parsed
    if args.command == "forge":
        o, _ = subs[SUB_EPOCH]
        epoch = struct.unpack("!Q", ip[o:o + 8])[0]
        ip[o:o + 8] = struct.pack("!Q", epoch + 1000)
        t, _ = subs[SUB_TIMESTAMP]
        ip[t:t + 8] = struct.pack("!Q", int(time.time() * 1000))
        n, _ = subs[SUB_NONCE]
        ip[n:n + 16] = os.urandom(16)
        ip[off + 2:off + 4] = b"\0\0"
        ip[off + 2:off + 4] = struct.pack("!H", checksum(bytes(ip[off:])))
    send(args.iface, bytes(ip))
    print(json.dumps({"sent": args.command, **describe(ip, subs)}))


if __name__ == "__main__":
    main()


# -- more attacks (lab/scenarios.py runs them through its `attack` command) -------------------

SUB_SLICES, SUB_CERTIFICATE, SUB_SIGNATURE = 0x0001, 0x0005, 0xFFFF
JOIN_DOMAIN = b"manycast signed join v1\0"
ROUTER_ALERT = bytes.fromhex("94040000")


def read_pem_body(path):
    """The bytes inside a PEM file (`manycastctl` certificates)."""
    import base64
    lines = [ln.strip() for ln in open(path) if ln.strip() and not ln.startswith("-----")]
    return base64.b64decode("".join(lines))


def ipv4_header(src, payload_len, dst="224.0.0.22"):
    """SPEC.md §3.1's IPv4 header: IHL 6 with Router Alert, ToS 0xc0, DF, TTL 1, protocol 2."""
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x46, 0xC0, 24 + payload_len, 0, 0x4000, 1, 2, 0,
                                socket.inet_aton(src), socket.inet_aton(dst)) + ROUTER_ALERT)
    hdr[10:12] = struct.pack("!H", checksum(bytes(hdr)))
    return bytes(hdr)


def sign_join(src, group, slices, epoch, key_path, cert_path, timestamp_ms=None):
    """A complete signed join datagram (SPEC.md §3) made here with a member key and its
    certificate: what a member (or an insider holding a member key) can send. `slices` are
    (value, mask) include entries."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    key = load_pem_private_key(open(key_path, "rb").read(), password=None)
    cert = read_pem_body(cert_path)
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms

    def sub(t, v):
        return struct.pack("!HH", t, len(v)) + v

    value = b"\x01" + sub(SUB_SLICES, b"".join(struct.pack("!BII", 0, v, m) for v, m in slices))
    value += sub(SUB_EPOCH, struct.pack("!Q", epoch)) + sub(SUB_TIMESTAMP, struct.pack("!Q", ts))
    value += sub(SUB_NONCE, os.urandom(16)) + sub(SUB_CERTIFICATE, cert)
    value += struct.pack("!HH", SUB_SIGNATURE, 64)
    ext_len = len(value) + 64  # the value ends with the signature sub-TLV's 64 bytes
    record = struct.pack("!BBH4s", 3, 0, len(slices), socket.inet_aton(group))
    record += b"".join(struct.pack("!I", v) for v, _ in slices)  # base addresses
    unsigned = (struct.pack("!BBHHH", 0x22, 0, 0, 0x8000, 1) + record
                + struct.pack("!HH", MANYCAST_EXT, ext_len) + value)
    sig = key.sign(JOIN_DOMAIN + socket.inet_aton(src) + unsigned)
    igmp = bytearray(unsigned + sig)
    igmp[2:4] = struct.pack("!H", checksum(bytes(igmp)))
    return ipv4_header(src, len(igmp)) + bytes(igmp)


def make_stale(ip, age_s):
    """A captured report with its timestamp `age_s` in the past and a fresh nonce (so that it is
    not a duplicate); checksum fixed up, the old signature kept."""
    ip = bytearray(ip)
    off, subs, _ = parse_signed_report(bytes(ip))
    t, _ = subs[SUB_TIMESTAMP]
    ip[t:t + 8] = struct.pack("!Q", int((time.time() - age_s) * 1000))
    n, _ = subs[SUB_NONCE]
    ip[n:n + 16] = os.urandom(16)
    ip[off + 2:off + 4] = b"\0\0"
    ip[off + 2:off + 4] = struct.pack("!H", checksum(bytes(ip[off:])))
    return bytes(ip)


CONTROL_MAGIC = b"MC"


def capture_control(iface, sender_id, port=4790, timeout=10.0):
    """The next control message (UDP payload) member `sender_id` sends to the control group
    port, sniffed on `iface` (AF_PACKET, so the daemon's own socket is left alone)."""
    s = l2_socket(iface)
    s.settimeout(0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = s.recv(65535)
        except socket.timeout:
            continue
        ip = frame[14:]
        if len(ip) < 28 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0xF) * 4:]
        if struct.unpack("!H", udp[2:4])[0] != port:
            continue
        msg = udp[8:]
        if msg[:2] == CONTROL_MAGIC and len(msg) >= 40 and struct.unpack("!I", msg[8:12])[0] == sender_id:
            return msg
    return None


def forge_control(msg, kind):
    """A captured control message (SPEC.md §9.1) made into a forgery: `bad-signature` flips one
    signature bit; `unknown-sender` names a member id nobody certified (the old signature kept)."""
    m = bytearray(msg)
    if kind == "bad-signature":
        m[-1] ^= 0x01
    elif kind == "unknown-sender":
        m[8:12] = struct.pack("!I", 4242)
    else:
        raise ValueError(kind)
    return bytes(m)


def send_control(iface_addr, group, port, msg):
    """Sends one datagram to the control group from the host's back-end address, TTL 1."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface_addr))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.sendto(msg, (group, port))
    s.close()
