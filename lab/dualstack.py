"""The IPv6 side of the lab's measurements (issue 15 item 7): which server answered each IPv6
client source, whether that is the owner the verifier holds for the source's unit, and what the
demo story and the `dual-stack` scenario report about it.

The verifier's status lists each member's IPv6 claim for GROUP6 as Slice6 text (`2001:db8::/32`
or `value/mask` in IPv6 notation, entries separated by spaces, `(none)` when empty; SPEC.md
§6.2); a source belongs to a member when one of its entries matches it. Nothing here asserts:
the cargo tests do, on the JSON.
"""

import ipaddress

import cluster
import topo


def is6(src):
    return ":" in src


def server_name(ids, addr):
    """The lab name of the server whose IPv4 or IPv6 link address is `addr` (else `addr`)."""
    for s, i in ids.items():
        if addr in (str(topo.server_subnet(i)[2]), str(topo.server_subnet6(i)[2])):
            return s
    return addr


def parse_slice6(text):
    """`addr/len` or `addr/mask` -> (value, mask) as integers."""
    addr, _, m = text.partition("/")
    value = int(ipaddress.IPv6Address(addr))
    if ":" in m:
        mask = int(ipaddress.IPv6Address(m))
    else:
        n = int(m)
        mask = ((1 << n) - 1) << (128 - n) if n else 0
    return value & mask, mask


def claims6(status, group=cluster.GROUP6):
    """{member: [(value, mask)]} of the IPv6 claims for `group` the verifier holds."""
    out = {}
    for r in (status or {}).get("ownership", []):
        if r["group"] == group:
            text = r["slices"].strip()
            out[r["member"]] = [] if text in ("", "(none)") else [parse_slice6(t) for t in text.split()]
    return out


def owners6(claims, src):
    """The members whose IPv6 claim covers `src` (one, when the verifier's state is sound)."""
    a = int(ipaddress.IPv6Address(src))
    return sorted(m for m, entries in claims.items() if any(a & mask == value for value, mask in entries))


def served(replies, a, b):
    """Per source, the servers that answered it (not with a reset) in [a, b)."""
    return {src: {s for t, s, txt in rs if a <= t < b and not txt.endswith("reset")}
            for src, rs in replies.items()}


def owner_check(replies6, a, b, status, ids):
    """IPv6 sources in [a, b): answered by exactly one server, and by the owner of their unit in
    the verifier's `status` (taken when the window's allocation was committed)."""
    claims = claims6(status)
    by_id = {i: s for s, i in ids.items()}
    per = served(replies6, a, b)
    wrong = {}
    for src, got in per.items():
        want = [by_id.get(m, f"m{m}") for m in owners6(claims, src)]
        if len(got) == 1 and [next(iter(got))] != want:
            wrong[src] = {"answered": next(iter(got)), "verifier_owner": want}
    return {"window_s": round(b - a, 2), "sources": len(per),
            "exactly_one": sum(1 for v in per.values() if len(v) == 1),
            "verifier_owner": sum(1 for src, v in per.items() if len(v) == 1 and src not in wrong),
            "not_verifier_owner": dict(sorted(wrong.items())[:5]),
            "none": sorted(s for s, v in per.items() if not v)[:5],
            "several": {s: sorted(v) for s, v in sorted(per.items()) if len(v) > 1},
            "by_server": {s: sum(1 for v in per.values() if v == {s}) for s in ids}}


def failover(replies6, owner_before, killed, t_kill):
    """The killed server's IPv6 sources: answered afterwards by another server (not with a
    reset), the gap from the kill to that first answer, and the longest silence a client saw."""
    mine = sorted(s for s, o in owner_before.items() if o == killed)
    gaps, seen, unanswered = [], [], []
    for src in mine:
        first = next((t for t, s, txt in replies6[src]
                      if t > t_kill and s != killed and not txt.endswith("reset")), None)
        last = max((t for t, s, _ in replies6[src] if t <= t_kill), default=None)
        if first is None:
            unanswered.append(src)
            continue
        gaps.append((first - t_kill) * 1000)
        if last is not None:
            seen.append((first - last) * 1000)

    def q(xs, p):
        return round(sorted(xs)[min(len(xs) - 1, int(p * len(xs)))], 1) if xs else None
    return {"sources": len(mine), "answered_by_other": len(mine) - len(unanswered),
            "unanswered": unanswered[:5],
            "gap_ms": {"p50": q(gaps, 0.5), "max": q(gaps, 1.0),
                       "client_seen_max": q(seen, 1.0)}}


def resets(replies6, a, b):
    """Reset replies IPv6 clients got in [a, b), and the sources that got one."""
    got = {src: sum(1 for t, _, txt in rs if a <= t < b and txt.endswith("reset"))
           for src, rs in replies6.items()}
    return {"resets": sum(got.values()), "sources": sum(1 for n in got.values() if n)}


def analyse6(c, replies6, windows, snapshots, marks, killed, session_breaks):
    """The demo story's IPv6 results: per phase window (name -> (a, b), the verifier's status
    of that allocation in `snapshots[name]`), the crash, and the sessions: `handoff` carries IPv6
    sessions with their units (SPEC.md §11.5), so any reset an IPv6 client got is counted."""
    phases = {name: owner_check(replies6, a, b, snapshots.get(name), c.ids)
              for name, (a, b) in windows.items()}
    per_before = served(replies6, *windows["before_crash"])
    owner_before = {s: next(iter(v)) for s, v in per_before.items() if len(v) == 1}
    servers = {}
    for s in c.ids:
        m = c.server_metrics(s)
        servers[s] = {"sources": len({src for src, rs in replies6.items() for _, o, txt in rs
                                      if o == s and not txt.endswith("reset")}),
                      "served6_total": int(m.get("served6_total", 0)),
                      "resets6_total": int(m.get("resets6_total", 0))}
    return {
        "sources_total": len(replies6),
        "mld_send_errors": c.mld_send_errors(),
        "phases": phases,
        "crash": failover(replies6, owner_before, killed, marks["kill"]),
        "servers": servers,
        "sessions": {
            "admin_drain_resume": {**resets(replies6, marks["drain"], marks["resumed"] + 0.5),
                                   **session_breaks(replies6, marks["drain"], marks["resumed"] + 0.5)},
            "sigterm_leave": {**resets(replies6, marks["leave"], marks["left"] + 0.5),
                              **session_breaks(replies6, marks["leave"], marks["left"] + 0.5)},
            "crash": {**resets(replies6, marks["kill"], marks["end"]),
                      **session_breaks(replies6, marks["kill"], marks["end"])},
        },
    }


def summary6(r, p):
    """The story's IPv6 lines of the summary, `p` printing one."""
    if not r:
        return
    p(f"IPv6 clients ({r['sources_total']} sources, group {cluster.GROUP6}):")
    for name, ph in r["phases"].items():
        p(f"  {name:13} ({ph['window_s']:.1f} s): {ph['exactly_one']}/{ph['sources']} served by exactly "
          f"one server, {ph['verifier_owner']} by the owner the verifier holds; unanswered "
          f"{len(ph['none'])}, several {len(ph['several'])}; per server {ph['by_server']}")
    f = r["crash"]
    g = f["gap_ms"]
    p(f"  failover: {f['answered_by_other']}/{f['sources']} of the killed server's IPv6 sources answered "
      f"by another server; gap from the kill p50 {g['p50']} ms, max {g['max']} ms (longest silence "
      f"a client saw {g['client_seen_max']} ms)")
    for name, s in r["sessions"].items():
        p(f"  sessions (handoff) {name:19}: {s['resets']} resets to {s['sources']} sources, "
          f"{s['sources_broken']} sources restarted or skipped")
