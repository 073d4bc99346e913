"""nginx's dynamic mode (a POST to the Lua balancer) against its reload mode, in one run.

Two private nginx on loopback, one per mode, in front of the same two tiny backends ("blue",
"green"). For each mode and each client (wrk; 4 non-retrying Python clients, each on one
keep-alive connection): requests, failed requests, p50/p99 during alternating switches. Then
the switch latency to the first response of the new color: dynamic, reload (bluegreen's: write
the upstream file, ``nginx -t``, HUP, wait for the new workers), and a bare ``nginx -s reload``.
Prints the figures (and JSON with ``--json FILE``). All traffic goes to 127.0.0.1. The
backends (Python, one process each) bound the throughput: compare requests per second, and
note that during a reload the old workers still use the old color, so both backends serve.

    PYTHONPATH=pyscripts .venv/bin/python bench/dynamic_vs_reload.py [--switches 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bluegreen.model import Route, Server
from bluegreen.proxy.nginx import LocalNginx, NginxProxy
from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx, KeepAliveClient, parse_wrk
from bluegreen_dev.sandbox import Nginx

SVC = "books-ms"
COLORS = ("blue", "green")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def color_of(port: int) -> str | None:
    """The color answering on a fresh connection (None on any error)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        return body if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None


def first_new_response(port: int, new: str, action: Callable[[], Any], timeout: float = 10) -> float:
    """Seconds from starting ``action`` until nginx first answers with color ``new`` (a probe
    thread requests on fresh connections meanwhile)."""
    seen: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            if color_of(port) == new:
                seen.append(time.perf_counter())
                return
            time.sleep(0.0005)

    worker, prober = threading.Thread(target=action), threading.Thread(target=probe)
    t0 = time.perf_counter()
    worker.start()
    prober.start()
    prober.join(timeout)
    done.set()
    worker.join()
    if not seen:
        raise RuntimeError(f"nginx on port {port} never served {new}")
    return seen[0] - t0


class Bench:
    def __init__(self, root: Path, switches: int, interval: float) -> None:
        self.switches, self.interval = switches, interval
        self.backends = {c: Backend(c).start() for c in COLORS}
        self.reload_nginx = Nginx(root / "reload").start()
        self.reload_proxy = NginxProxy(LocalNginx("nginx", str(self.reload_nginx.conf),
                                             str(self.reload_nginx.prefix),
                                             str(self.reload_nginx.pid_file)),
                                       self.reload_nginx.upstream_dir, self.reload_nginx.include_dir)
        self.dyn_nginx = DynamicNginx(root / "dynamic").start()
        self.dyn_proxy = self.dyn_nginx.proxy()
        self.ports = {"reload": self.reload_nginx.port, "dynamic": self.dyn_nginx.port}
        self.switch_to: dict[str, Callable[[str], Any]] = {
            "reload": self.reload_switch, "dynamic": self.dynamic_switch}
        for mode in self.ports:
            self.switch_to[mode]("blue")
        self.results: dict[str, Any] = {"switches": switches, "interval_s": interval}
        self.timelines: dict[str, dict[str, Any]] = {}  # mode -> the Python clients' requests

    def server(self, color: str) -> list[Server]:
        return [Server("127.0.0.1", self.backends[color].port)]

    def route(self, color: str) -> list[Route]:
        return [Route(SVC, color, tuple(self.server(color)))]

    def reload_switch(self, color: str) -> None:
        self.reload_proxy.apply(self.route(color))

    def dynamic_switch(self, color: str) -> None:
        self.dyn_proxy.apply({SVC: self.server(color)})

    def bare_reload(self, color: str) -> None:
        """Write the upstream file and run ``nginx -s reload`` (returns once signalled)."""
        plan = self.reload_proxy.plan(self.route(color))
        upstream = next(p for p in plan if p.parent == self.reload_nginx.upstream_dir)
        upstream.write_text(plan[upstream] or "")
        n = self.reload_nginx
        subprocess.run(["nginx", "-p", str(n.prefix), "-c", str(n.conf), "-s", "reload"], check=True,
                       capture_output=True)

    # -- under load ---------------------------------------------------------------------------

    def switch_series(self, mode: str, starts: list[float] | None = None) -> list[float]:
        """``switches`` alternating switches (blue first is live): the duration of each;
        ``starts`` gets the moment each began."""
        took = []
        for i in range(self.switches):
            t0 = time.perf_counter()
            if starts is not None:
                starts.append(t0)
            self.switch_to[mode](COLORS[(i + 1) % 2])
            took.append(time.perf_counter() - t0)
            time.sleep(self.interval)
        if self.switches % 2:
            self.switch_to[mode]("blue")
        return took

    def load_wrk(self, mode: str) -> dict[str, Any]:
        wrk = subprocess.Popen(["wrk", "-t", "2", "-c", "20", "-d", "600s", "--latency",
                                f"http://127.0.0.1:{self.ports[mode]}/"],
                               stdout=subprocess.PIPE, text=True)
        t0 = time.perf_counter()
        time.sleep(1)
        took = self.switch_series(mode)
        time.sleep(1)
        wrk.send_signal(signal.SIGINT)
        out = wrk.communicate(timeout=60)[0]
        stats = parse_wrk(out)
        return {"duration_s": time.perf_counter() - t0, "requests": stats["requests"], "errors": stats["socket_errors"] + stats["non_2xx"],
                "socket_errors": stats["socket_error_kinds"], "non_2xx": stats["non_2xx"],
                "p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"],
                "switch_median_ms": statistics.median(took) * 1000}

    def load_python(self, mode: str, clients: int = 4) -> dict[str, Any]:
        running = [KeepAliveClient(self.ports[mode]) for _ in range(clients)]
        t0 = time.perf_counter()
        for c in running:
            c.start()
        time.sleep(1)
        starts: list[float] = []
        took = self.switch_series(mode, starts)
        time.sleep(1)
        for c in running:
            c.stop()
        duration = time.perf_counter() - t0
        self.timelines[mode] = {"t0": t0, "switches": [s - t0 for s in starts],
                                "responses": sorted((t - t0, body) for c in running
                                                    for t, body in c.timeline)}
        latencies = [x for c in running for x in c.latencies]
        kinds: dict[str, int] = {}
        for c in running:
            for kind, n in c.error_kinds.items():
                kinds[kind] = kinds.get(kind, 0) + n
        return {"duration_s": duration, "requests": sum(c.requests for c in running),
                "errors": sum(c.errors for c in running), "error_kinds": kinds,
                "p50_ms": pct(latencies, 0.50) * 1000, "p99_ms": pct(latencies, 0.99) * 1000,
                "switch_median_ms": statistics.median(took) * 1000}

    def under_load(self) -> None:
        for tool, run in (("wrk", self.load_wrk), ("python", self.load_python)):
            for mode in ("reload", "dynamic"):
                r = run(mode)
                self.results[f"load_{tool}_{mode}"] = r
                print(f"load {tool:6} {mode:7}: {r['requests']} requests in {r['duration_s']:.1f} s, "
                      f"{r['errors']} failed "
                      f"{r.get('socket_errors') or r.get('error_kinds') or ''}, p50 "
                      f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, switch median "
                      f"{r['switch_median_ms']:.1f} ms", flush=True)

    # -- switch latency ---------------------------------------------------------------------

    def latency(self) -> None:
        actions = {"dynamic": ("dynamic", self.dynamic_switch),
                   "reload": ("reload", self.reload_switch),
                   "bare_reload": ("reload", self.bare_reload)}
        for name, (mode, action) in actions.items():
            times, current = [], "blue"
            for _ in range(self.switches):
                new = "green" if current == "blue" else "blue"
                times.append(first_new_response(self.ports[mode], new, lambda a=action, c=new: a(c)))
                current = new
                time.sleep(0.3)  # let a reload's old workers go
            if current != "blue":
                action("blue")
                time.sleep(0.3)
            self.results[f"latency_{name}"] = {"median_ms": statistics.median(times) * 1000,
                                               "p95_ms": pct(times, 0.95) * 1000, "n": len(times)}
            print(f"switch latency {name:11}: median {ms(statistics.median(times))}, "
                  f"p95 {ms(pct(times, 0.95))}", flush=True)

    def close(self) -> None:
        self.reload_nginx.stop()
        self.dyn_nginx.stop()
        for b in self.backends.values():
            b.stop()


def table(r: dict[str, Any]) -> str:
    lines = ["| client | mode | requests (per s) | failed | p50 | p99 | switch (under load) |",
             "|---|---|---|---|---|---|---|"]
    for tool in ("wrk", "python"):
        for mode in ("reload", "dynamic"):
            x = r[f"load_{tool}_{mode}"]
            detail = x.get("socket_errors") if tool == "wrk" else x.get("error_kinds")
            rate = x["requests"] / x["duration_s"]
            lines.append(f"| {tool} | {mode} | {x['requests']} ({rate:.0f}) | {x['errors']} {detail or ''} | "
                         f"{x['p50_ms']:.1f} ms | {x['p99_ms']:.1f} ms | {x['switch_median_ms']:.1f} ms |")
    lines += ["", "| switch to the first response of the new color | median | p95 |", "|---|---|---|"]
    for name, label in (("dynamic", "dynamic: POST"), ("reload", "reload: file, nginx -t, HUP, new workers"),
                        ("bare_reload", "bare: file + nginx -s reload")):
        x = r[f"latency_{name}"]
        lines.append(f"| {label} | {x['median_ms']:.1f} ms | {x['p95_ms']:.1f} ms |")
    return "\n".join(lines)


def draw(timelines: dict[str, dict[str, Any]], path: Path) -> None:
    """Responses per 50 ms of the keep-alive Python clients, by color, failed ones in red, one
    panel per mode; a vertical line where each switch began."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"blue": "#1f77b4", "green": "#2ca02c", "failed": "#d62728"}
    fig, axes = plt.subplots(len(timelines), 1, figsize=(12, 3.2 * len(timelines)), dpi=110,
                             sharex=True, squeeze=False)
    for ax, (mode, tl) in zip(axes[:, 0], timelines.items(), strict=True):
        buckets: dict[int, dict[str, int]] = {}
        for t, body in tl["responses"]:
            label = body if body in colors else "failed" if body == "failed" else "other"
            row = buckets.setdefault(int(t / 0.05), {})
            row[label] = row.get(label, 0) + 1
        keys = sorted(buckets)
        bottom = [0] * len(keys)
        for label in ("blue", "green", "other", "failed"):
            ys = [buckets[k].get(label, 0) for k in keys]
            if not any(ys):
                continue
            failed = sum(ys) if label == "failed" else None
            ax.bar([k * 0.05 for k in keys], ys, width=0.05, bottom=bottom, align="edge",
                   color=colors.get(label, "#7f7f7f"), linewidth=0,
                   label=f"failed ({failed})" if failed is not None else label)
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        for s in tl["switches"]:
            ax.axvline(s, color="black", linewidth=0.5, alpha=0.5)
        total_failed = sum(1 for _, body in tl["responses"] if body == "failed")
        ax.set_title(f"{mode}: {len(tl['responses'])} requests, {total_failed} failed")
        ax.set_ylabel("responses / 50 ms")
        ax.legend(loc="lower right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds (vertical lines: a switch begins); keep-alive clients "
                           "that never retry")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between switches")
    parser.add_argument("--json", help="write the raw results to this file")
    parser.add_argument("--plot", help="draw the Python clients' requests by mode to this PNG "
                        "(needs matplotlib: pip install -e '.[bench]')")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (scripts/bootstrap.sh installs it)")
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    print(f"{nginx_v}; {args.switches} alternating switches per session, every "
          f"{args.interval:g} s; all traffic on 127.0.0.1", flush=True)
    with tempfile.TemporaryDirectory(prefix="bg-dyn-bench-") as tmp:
        bench = Bench(Path(tmp), args.switches, args.interval)
        try:
            bench.under_load()
            bench.latency()
        finally:
            bench.close()
    print()
    print(table(bench.results))
    if args.json:
        Path(args.json).write_text(json.dumps(bench.results, indent=1) + "\n")
    if args.plot:
        draw(bench.timelines, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
