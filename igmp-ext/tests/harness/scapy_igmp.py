"""Scapy side of igmp-ext's interop tests (run with the system /usr/bin/python3, which has scapy).

    scapy_igmp.py build            print one JSON object {name: hex of a full IPv4 datagram}
    scapy_igmp.py decode HEX...    print one JSON list, scapy's view of each datagram

Every datagram built here goes through scapy's own builders (IGMP, IGMPv3, IGMPv3mq, IGMPv3mr,
IGMPv3gr) and `igmpize()`, so the Rust side parses bytes it did not write.
"""
import json
import sys

from scapy.layers.inet import IP, IPOption_Router_Alert
from scapy.packet import Raw, Padding
from scapy.contrib.igmp import IGMP
from scapy.contrib.igmpv3 import IGMPv3, IGMPv3mq, IGMPv3mr, IGMPv3gr
from scapy.utils import checksum

HOST = "10.0.0.9"


def ip(dst):
    return IP(src=HOST, dst=dst, tos=0xC0)


def finish(pkt):
    # igmpize() adds Router Alert, sets TTL 1 and encodes Max Resp Code as RFC 3376 wants.
    layer = pkt.getlayer(IGMPv3) or pkt.getlayer(IGMP)
    if not layer.igmpize():
        raise SystemExit("scapy refused to igmpize " + pkt.summary())
    return bytes(pkt).hex()


def build():
    out = {}
    out["v3_report"] = finish(
        ip("224.0.0.22")
        / IGMPv3(type=0x22, mrcode=0)
        / IGMPv3mr(
            records=[
                IGMPv3gr(rtype=1, maddr="232.1.1.1", srcaddrs=["10.0.0.1", "10.0.0.2"]),
                IGMPv3gr(rtype=2, maddr="239.1.1.3", srcaddrs=["10.9.9.9"]),
                IGMPv3gr(rtype=3, maddr="239.1.1.2", srcaddrs=[]),
                IGMPv3gr(rtype=4, maddr="239.1.1.1", srcaddrs=[]),
                IGMPv3gr(rtype=5, maddr="232.1.1.2", srcaddrs=["10.0.0.3"]),
                IGMPv3gr(rtype=6, maddr="232.1.1.3", srcaddrs=["10.0.0.4", "10.0.0.5"]),
            ]
        )
    )
    # RFC 9279: E flag in the report's Flags field, TLVs after the last record (No-op, then a
    # 3-byte value under the experimental type 0xfffe).
    out["v3_report_extension"] = finish(
        ip("224.0.0.22")
        / IGMPv3(type=0x22, mrcode=0)
        / IGMPv3mr(res2=0x8000, records=[IGMPv3gr(rtype=5, maddr="232.1.1.1", srcaddrs=["10.0.0.1"])])
        / Raw(bytes.fromhex("00000000" "fffe0003" "616263"))
    )
    out["v3_query_group_source"] = finish(
        ip("232.1.1.1")
        / IGMPv3(type=0x11, mrcode=100)
        / IGMPv3mq(gaddr="232.1.1.1", s=1, qrv=2, qqic=125, srcaddrs=["10.0.0.1", "10.0.0.2"])
    )
    # 200 tenths of a second is above 127, so igmpize() encodes it as RFC 3376's float.
    out["v3_query_general"] = finish(
        ip("224.0.0.1") / IGMPv3(type=0x11, mrcode=200) / IGMPv3mq(gaddr="0.0.0.0", qrv=7, qqic=60)
    )
    out["v2_query_general"] = finish(ip("224.0.0.1") / IGMP(type=0x11, mrcode=100, gaddr="0.0.0.0"))
    out["v2_query_group"] = finish(ip("239.1.2.3") / IGMP(type=0x11, mrcode=10, gaddr="239.1.2.3"))
    out["v1_query"] = finish(ip("224.0.0.1") / IGMP(type=0x11, mrcode=0, gaddr="0.0.0.0"))
    out["v2_report"] = finish(ip("239.1.2.3") / IGMP(type=0x16, gaddr="239.1.2.3"))
    out["v2_leave"] = finish(ip("224.0.0.2") / IGMP(type=0x17, gaddr="239.1.2.3"))
    print(json.dumps(out))


def igmp_layer(pkt):
    layer = pkt.payload
    while layer and not isinstance(layer, (IGMP, IGMPv3)):
        layer = layer.payload
    return layer or None


def checksum_recomputed(layer):
    """Rebuilds the layer with its checksum deleted, so scapy computes it afresh."""
    fresh = layer.copy()
    fresh.chksum = None
    return int.from_bytes(bytes(fresh)[2:4], "big")


def ip_checksum_recomputed(pkt):
    fresh = pkt.copy()
    fresh.chksum = None
    return int.from_bytes(bytes(fresh)[10:12], "big")


def decode_one(hexstr):
    pkt = IP(bytes.fromhex(hexstr))
    d = {
        "ip": {
            "src": pkt.src,
            "dst": pkt.dst,
            "ttl": pkt.ttl,
            "tos": pkt.tos,
            "proto": pkt.proto,
            "flags": str(pkt.flags),
            "frag": pkt.frag,
            "len": pkt.len,
            "options": [type(o).__name__ for o in pkt.options],
            "chksum": pkt.chksum,
            "chksum_recomputed": ip_checksum_recomputed(pkt),
        }
    }
    layer = igmp_layer(pkt)
    if layer is None:
        d["igmp"] = None
        print(json.dumps(d))
        return d
    g = {
        "class": type(layer).__name__,
        "type": layer.type,
        "mrcode": layer.mrcode,
        "chksum": layer.chksum,
        "chksum_recomputed": checksum_recomputed(layer),
        # RFC 1071 over the whole message as scapy delimits it: 0 when it verifies.
        "chksum_verifies": checksum(bytes(layer)) == 0,
    }
    if isinstance(layer, IGMPv3):
        body = layer.payload
        if isinstance(body, IGMPv3mr):
            g["flags"] = body.res2
            g["numgrp"] = body.numgrp
            g["records"] = [
                {
                    "rtype": r.rtype,
                    "auxdlen": r.auxdlen,
                    "numsrc": r.numsrc,
                    "maddr": r.maddr,
                    "srcaddrs": list(r.srcaddrs or []),
                }
                for r in body.records
            ]
            body = body.payload
        elif isinstance(body, IGMPv3mq):
            g["gaddr"] = body.gaddr
            g["resv"] = body.resv
            g["s"] = body.s
            g["qrv"] = body.qrv
            g["qqic"] = body.qqic
            g["numsrc"] = body.numsrc
            g["srcaddrs"] = list(body.srcaddrs or [])
            body = body.payload
        trailing = b""
        while body:
            if isinstance(body, (Raw, Padding)):
                trailing += bytes(body.load)
            body = body.payload
        g["trailing"] = trailing.hex()
    else:
        g["gaddr"] = layer.gaddr
    d["igmp"] = g
    return d


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "build":
        build()
    elif len(sys.argv) >= 2 and sys.argv[1] == "decode":
        print(json.dumps([decode_one(h) for h in sys.argv[2:]]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
