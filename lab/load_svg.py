"""The demo's picture: per-server load over time as an SVG line chart, events as dashed
vertical lines (no plotting package: plain SVG text)."""

import os
import time

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write(path, series, t_start, t_end, events, measured_at):
    """`series`: {name: [(t, per second)]} (a name ending in " v6" dashed); `events`: [(t, label)] in the order to draw them;
    times are wall-clock seconds, shown from `t_start`."""
    top = max([v for pts in series.values() for _, v in pts] + [1.0])
    tick = next(m * 10 ** e for e in range(0, 7) for m in (1, 2, 5) if top / (m * 10 ** e) <= 6)
    ymax = tick * (int(top / tick) + 1)
    W, H, L, R, T, B = 960, 420, 60, 150, 30, 50
    pw, ph = W - L - R, H - T - B
    x = lambda t: L + (t - t_start) / max(1e-6, t_end - t_start) * pw  # noqa: E731
    y = lambda v: T + ph - v / ymax * ph  # noqa: E731
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="18" font-size="13">Per-server load (replies/s, from the servers\' metrics), '
         f'measured {time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(measured_at))}</text>',
         f'<line x1="{L}" y1="{T + ph}" x2="{L + pw}" y2="{T + ph}" stroke="black"/>',
         f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T + ph}" stroke="black"/>']
    for k in range(int(ymax / tick) + 1):
        v = k * tick
        o.append(f'<line x1="{L - 4}" y1="{y(v):.1f}" x2="{L + pw}" y2="{y(v):.1f}" stroke="#eee"/>'
                 f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    step = max(1, int((t_end - t_start) / 10))
    t = 0
    while t_start + t <= t_end:
        o.append(f'<text x="{x(t_start + t):.1f}" y="{T + ph + 15}" text-anchor="middle">{t}s</text>')
        t += step
    o.append(f'<text x="{L + pw / 2}" y="{H - 10}" text-anchor="middle">time since the clients started (s)</text>')
    for n, (at, label) in enumerate(events):
        xv = x(at)
        right = xv > L + pw * 0.7
        o.append(f'<line x1="{xv:.1f}" y1="{T}" x2="{xv:.1f}" y2="{T + ph}" stroke="#555" stroke-dasharray="4,3"/>'
                 f'<text x="{xv + (-3 if right else 3):.1f}" y="{T + 12 + 12 * (n % 4)}" fill="#333" '
                 f'text-anchor="{"end" if right else "start"}">{esc(label)}</text>')
    # A series named "<name> v6" (its IPv6 answers) is drawn dashed in <name>'s colour.
    bases = list(dict.fromkeys(s.removesuffix(" v6") for s in series))
    for i, (s, pts) in enumerate(series.items()):
        col = COLOURS[bases.index(s.removesuffix(" v6")) % len(COLOURS)]
        dash = ' stroke-dasharray="6,3"' if s.endswith(" v6") else ""
        if pts:
            d = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
            o.append(f'<polyline fill="none" stroke="{col}" stroke-width="2"{dash} points="{d}"/>')
        o.append(f'<line x1="{L + pw + 15}" y1="{T + 16 * i + 2}" x2="{L + pw + 27}" y2="{T + 16 * i + 2}" '
                 f'stroke="{col}" stroke-width="3"{dash}/>'
                 f'<text x="{L + pw + 32}" y="{T + 16 * i + 5}">{s}</text>')
    o.append("</svg>")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")
