"""The sites demo's live view and load picture (lab/sites.py demo): while the story runs, a
sampler reads every server's metrics and every router's `status` → site; every few seconds it
prints one line per level (the upper allocation: each site router's upper units and weight;
each server's replies per second), and at the end it draws the per-server load over the story
with its events (load_svg.py). Read from the daemons only, nothing simulated."""

import threading
import time

import load_svg
import topo

SAMPLE_S = 0.5
PRINT_EVERY = 6  # samples between two printed frames


def rate_series(points):
    """[(t, per second)] between consecutive (t, counter) points."""
    return [(t2, max(0.0, (v2 - v1) / (t2 - t1)))
            for (t1, v1), (t2, v2) in zip(points, points[1:]) if t2 > t1]


class LiveView:
    def __init__(self, c, narrate):
        self.c = c
        self.narrate = narrate
        self.t0 = time.time()
        self.samples = {}  # server: [(metrics mtime, served_total)]
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(timeout=10)

    def servers(self):
        return sorted(self.c.ids)

    def sample(self):
        for srv in self.servers():
            mtime, m = self.c.server_metrics(srv, with_mtime=True)
            if mtime is None:
                continue
            with self.lock:
                pts = self.samples.setdefault(srv, [])
                if not pts or pts[-1][0] != mtime:
                    pts.append((mtime, m.get("served_total", 0)))

    def rates(self):
        """Replies per second per server between its last two metrics writes (0 once gone)."""
        with self.lock:
            return {srv: (rate_series(pts)[-1][1] if len(pts) > 1 and self.c.alive(srv) else 0.0)
                    for srv, pts in self.samples.items()}

    def frame(self):
        upper = []
        for s in topo.SITES:
            for r in topo.site_routers(s):
                st = (self.c.router_status(r) or {}).get("site") if self.c.alive(f"verifier-{r}") \
                    else None
                upper.append(f"{r}={st['own_units']}u/w{st['weight']}" if st else f"{r}=down")
        rates = self.rates()
        load = " ".join(f"{srv}={rates.get(srv, 0):.0f}" for srv in self.servers())
        self.narrate(f"   [{time.time() - self.t0:5.1f}s] upper {' '.join(upper)} | req/s {load}")

    def loop(self):
        n = 0
        while not self.done.is_set():
            try:
                self.sample()
                if n % PRINT_EVERY == 0:
                    self.frame()
            except (OSError, RuntimeError, ValueError, KeyError, TypeError):
                pass  # a daemon between exit and restart: the next sample reads it again
            n += 1
            self.done.wait(SAMPLE_S)

    def write_svg(self, path, events):
        """The per-server load over the story, with `events` [(t, label)] marked."""
        with self.lock:
            series = {srv: rate_series(pts) for srv, pts in self.samples.items()}
        t_end = time.time()
        load_svg.write(path, series, self.t0, t_end, events, measured_at=self.t0)
        return path
