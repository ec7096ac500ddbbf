"""Scapy side of igmp-ext's MLD interop tests (run with the system /usr/bin/python3, which has scapy).

    scapy_mld.py build            print one JSON object {name: hex of a full IPv6 packet}
    scapy_mld.py decode HEX...    print one JSON list, scapy's view of each packet

Every packet built here goes through scapy's own IPv6, Hop-by-Hop and MLD layers (inet6), which
also fill lengths, counts and the ICMPv6 checksum, so the Rust side parses bytes it did not write.
"""
import json
import sys

from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrHopByHop,
    PadN,
    RouterAlert,
    ICMPv6MLDMultAddrRec,
    ICMPv6MLDone,
    ICMPv6MLQuery,
    ICMPv6MLQuery2,
    ICMPv6MLReport,
    ICMPv6MLReport2,
)
from scapy.packet import Raw

HOST = "fe80::9"
MLD_LAYERS = (ICMPv6MLQuery2, ICMPv6MLReport2, ICMPv6MLQuery, ICMPv6MLReport, ICMPv6MLDone)


def ip(dst):
    # RFC 3810 §5: hop limit 1, Router Alert 0 in a Hop-by-Hop header (padded to 8 bytes).
    return IPv6(src=HOST, dst=dst, hlim=1) / IPv6ExtHdrHopByHop(
        options=[RouterAlert(value=0), PadN(optdata=b"")]
    )


def build():
    out = {}
    out["v2_report"] = ip("ff02::16") / ICMPv6MLReport2(
        records=[
            ICMPv6MLDMultAddrRec(rtype=1, dst="ff3e::8000:1", sources=["2001:db8::1", "2001:db8::2"]),
            ICMPv6MLDMultAddrRec(rtype=2, dst="ff15::3", sources=["2001:db8::9"]),
            ICMPv6MLDMultAddrRec(rtype=3, dst="ff15::2", sources=[]),
            ICMPv6MLDMultAddrRec(rtype=4, dst="ff15::1", sources=[]),
            ICMPv6MLDMultAddrRec(rtype=5, dst="ff3e::8000:2", sources=["2001:db8::3"]),
            ICMPv6MLDMultAddrRec(rtype=6, dst="ff3e::8000:3", sources=["2001:db8::4", "2001:db8::5"]),
        ]
    )
    # RFC 9279: E flag in the report's Flags field, TLVs after the last record (No-op, then a
    # 3-byte value under the experimental type 0xfffe).
    out["v2_report_extension"] = (
        ip("ff02::16")
        / ICMPv6MLReport2(
            reserved=0x8000,
            records=[ICMPv6MLDMultAddrRec(rtype=5, dst="ff3e::8000:1", sources=["2001:db8::1"])],
        )
        / Raw(bytes.fromhex("00000000" "fffe0003" "616263"))
    )
    out["v2_query_general"] = ip("ff02::1") / ICMPv6MLQuery2(mrd=10000, mladdr="::", QRV=2, QQIC=125)
    out["v2_query_group_source"] = ip("ff3e::8000:1") / ICMPv6MLQuery2(
        mrd=0x8123, mladdr="ff3e::8000:1", S=1, QRV=2, QQIC=0x8a, sources=["2001:db8::1", "2001:db8::2"]
    )
    out["v1_query"] = ip("ff02::1") / ICMPv6MLQuery(mrd=10000, mladdr="::")
    out["v1_report"] = ip("ff15::1") / ICMPv6MLReport(mladdr="ff15::1")
    out["v1_done"] = ip("ff02::2") / ICMPv6MLDone(mladdr="ff15::1")
    return {name: bytes(pkt).hex() for name, pkt in out.items()}


def checksum_recomputed(pkt, layer):
    """The checksum scapy computes itself for the same packet (pseudo-header included)."""
    copy = IPv6(bytes(pkt))
    inner = copy.getlayer(type(layer))
    del inner.cksum
    return IPv6(bytes(copy)).getlayer(type(layer)).cksum


def decode_one(hexstr):
    pkt = IPv6(bytes.fromhex(hexstr))
    hbh = pkt.getlayer(IPv6ExtHdrHopByHop)
    ra = [o.value for o in (hbh.options if hbh else []) if isinstance(o, RouterAlert)]
    out = {
        "ipv6": {
            "src": pkt.src,
            "dst": pkt.dst,
            "hlim": pkt.hlim,
            "plen": pkt.plen,
            "nh": pkt.nh,
            "hbh_nh": hbh.nh if hbh else None,
            "router_alert": ra,
        }
    }
    layer = next((pkt.getlayer(c) for c in MLD_LAYERS if pkt.getlayer(c) is not None), None)
    if layer is None:
        out["mld"] = None
        return out
    mld = {
        "class": type(layer).__name__,
        "type": layer.type,
        "cksum": layer.cksum,
        "cksum_recomputed": checksum_recomputed(pkt, layer),
    }
    if isinstance(layer, ICMPv6MLReport2):
        mld["flags"] = layer.reserved
        mld["records_number"] = layer.records_number
        # Scapy 2.5 dissects each record after the first as the payload of the one before, and
        # whatever follows the last one as yet another record: follow the chain for exactly
        # Nr of Mcast Address Records.
        records = []
        for r in layer.records:
            while isinstance(r, ICMPv6MLDMultAddrRec) and len(records) < layer.records_number:
                records.append(r)
                r = r.payload
        mld["records"] = [
            {"rtype": r.rtype, "auxdata_len": r.auxdata_len, "dst": r.dst, "sources": list(r.sources)}
            for r in records
        ]
        # Where the records end by their own counts (Aux Data Len in 32-bit words).
        end = 8 + sum(20 + 16 * len(r.sources) + 4 * (r.auxdata_len or 0) for r in records)
        mld["additional"] = bytes(layer)[end:].hex()
    elif isinstance(layer, ICMPv6MLQuery2):
        mld.update(
            mrd=layer.mrd, mladdr=layer.mladdr, resv=layer.Resv, s=layer.S, qrv=layer.QRV,
            qqic=layer.QQIC, sources=list(layer.sources), additional=bytes(layer.payload).hex(),
        )
    else:
        mld.update(mrd=layer.mrd, mladdr=layer.mladdr)
    out["mld"] = mld
    return out


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "build":
        print(json.dumps(build()))
    elif len(sys.argv) >= 2 and sys.argv[1] == "decode":
        print(json.dumps([decode_one(h) for h in sys.argv[2:]]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
