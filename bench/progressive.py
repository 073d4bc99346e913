"""Progressive delivery at the dynamic nginx (issue 21), in one run, all on 127.0.0.1.

1. Sticky clients: ``--clients`` simulated clients, each with its own cookie jar, through a
   sticky release 10 -> 50 -> 100 (``--requests`` requests per client at each step): the
   clients that saw the new release and then the old one (goal 0), and at each step the share
   of clients on the new release against the weight.
2. The cost of counting: wrk's requests per second through nginx (2 workers, in front of a
   static nginx backend, so that the proxy is what is measured) with bluegreen's Lua as it
   is, and with a copy of the same Lua in a temporary directory without any counting (its
   counting call in log_by_lua removed, and no counts dict seen by the workers: no counter
   looked up in the balancer, no flush timer); after a 1 s warm-up of each, ``--rounds``
   alternating runs of ``--seconds`` each (wrk: 1 thread, 32 connections), medians; and,
   less sensitive to other load on the machine, the CPU time nginx's workers spent per
   request.

    PYTHONPATH=pyscripts .venv/bin/python bench/progressive.py [--clients 1000] [--json FILE]
        [--plot docs/bench-sticky.png] [--plot-counting docs/bench-counting.png]
        [--other-lua DIR --other-name NAME]

``--other-lua``: a third variant in the same rounds, the Lua of DIR (for instance an older
``bluegreen_dynamic.lua``, to compare two ways of counting on the same machine at once).

The plots need matplotlib, a bench-only extra: ``.venv/bin/pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bluegreen.model import Route, Server
from bluegreen.proxy import dynamic as nginx_dynamic
from bluegreen.proxy.dynamic import NginxDynamicProxy
from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx, parse_wrk
from bluegreen_dev.sandbox import free_port, wait_for

SVC = "books-ms"
# What the "not counting" copy of the Lua replaces (each must be there once): the call that
# counts a request in log_by_lua, and the check that gives the workers their counters and
# their flush timer.
NO_COUNTING = {
    "        count_request(ctx)\n": "",
    "    has_figures = ngx.shared[FIGURES] ~= nil\n": "    has_figures = false\n",
}


def sticky_route(ports: dict[str, int], weight: int) -> Route:
    """green is the new release at ``weight`` percent (100: green only)."""
    if weight == 100:
        return Route(SVC, "green", (Server("127.0.0.1", ports["green"], 100, "green"),),
                     sticky=True)
    return Route(SVC, "green", (Server("127.0.0.1", ports["green"], weight, "green"),
                                Server("127.0.0.1", ports["blue"], 100 - weight, "blue")),
                 weight, sticky=True)


def request(port: int, jar: dict[str, str]) -> str:
    """One GET with the client's cookies; the cookies it sets go into ``jar``; the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/", headers={"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
                 if jar else {})
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    for name, value in resp.getheaders():
        if name.lower() == "set-cookie":
            key, _, val = value.split(";", 1)[0].partition("=")
            jar[key] = val
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}")
    return body


def sticky_clients(root: Path, clients: int, per_step: int) -> dict[str, Any]:
    backends = {c: Backend(c).start() for c in ("blue", "green")}
    nginx = DynamicNginx(root / "sticky").start()
    try:
        proxy = NginxDynamicProxy(nginx.proxy())
        ports = {c: b.port for c, b in backends.items()}
        jars: list[dict[str, str]] = [{} for _ in range(clients)]
        seen: list[list[str]] = [[] for _ in range(clients)]
        steps = []
        for weight in (10, 50, 100):
            proxy.apply([sticky_route(ports, weight)])
            on_new = 0
            t0 = time.perf_counter()
            for i in range(clients):
                bodies = [request(nginx.port, jars[i]) for _ in range(per_step)]
                seen[i] += bodies
                on_new += set(bodies) == {"green"}
            steps.append({"weight": weight, "clients_on_new": on_new,
                          "share_on_new_pct": round(100 * on_new / clients, 1),
                          "mixed_within_step": sum(len(set(s[-per_step:])) > 1 for s in seen),
                          "seconds": round(time.perf_counter() - t0, 1)})
        back = sum(any(a == "green" and b == "blue" for a, b in itertools.pairwise(s))
                   for s in seen)
        return {"clients": clients, "requests_per_client_per_step": per_step,
                "clients_new_then_old": back, "steps": steps,
                "clients_with_a_bucket": sum("bg_bucket" in j for j in jars)}
    finally:
        nginx.stop()
        for b in backends.values():
            b.stop()


STATIC_CONF = """daemon off;
worker_processes 1;
pid {root}/static.pid;
error_log {root}/static-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{name}"; }}
    }}
}}
"""


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (``/proc/<pid>/stat``)."""
    import os

    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class StaticBackend:
    """An nginx that answers every request with a fixed body (fast, unlike the Python one)."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.port = root, free_port()
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        conf = root / "static.conf"
        conf.write_text(STATIC_CONF.format(root=root, port=self.port, name=name))
        self.proc = subprocess.Popen(["nginx", "-p", str(root), "-c", str(conf)],
                                     stderr=subprocess.DEVNULL)

        def up() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            conn.request("GET", "/")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok

        wait_for(up, 10, "static backend", 0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def counting_cost(root: Path, rounds: int, seconds: int, other_lua: str | None = None,
                  other_name: str = "other Lua") -> dict[str, Any]:
    backend = StaticBackend(root / "static", "blue")
    lua_copy = root / "lua-no-counting"
    shutil.copytree(nginx_dynamic.lua_dir(), lua_copy)
    lua = lua_copy / "bluegreen_dynamic.lua"
    text = lua.read_text()
    for old, new in NO_COUNTING.items():
        if text.count(old) != 1:
            raise RuntimeError(f"not found once in the Lua: {old.strip()!r}")
        text = text.replace(old, new)
    lua.write_text(text)
    nginxes = {}
    try:
        variants = [("counting", None), ("not counting", str(lua_copy))]
        if other_lua:
            variants.append((other_name, other_lua))
        for i, (variant, lua_path) in enumerate(variants):
            n = DynamicNginx(root / f"nginx-{i}").start()
            nginxes[variant] = n
            engine = nginx_dynamic.DynamicProxy(n.controller(), n.include_path, n.include_dir,
                                                n.control, n.state_file, lua_path=lua_path)
            engine.apply([Route(SVC, "blue", (Server("127.0.0.1", backend.port, 100, "blue"),))])
        for n in nginxes.values():  # warm up: connections, the Lua code, the caches
            subprocess.run(["wrk", "-t", "1", "-c", "32", "-d", "1s", f"http://127.0.0.1:{n.port}/"],
                           capture_output=True, check=True)
        rps: dict[str, list[float]] = {v: [] for v in nginxes}
        cpu_us: dict[str, list[float]] = {v: [] for v in nginxes}
        for _ in range(rounds):
            for variant, n in nginxes.items():
                workers = list(n.controller().workers())
                before = cpu_seconds(workers)
                out = subprocess.run(["wrk", "-t", "1", "-c", "32", "-d", f"{seconds}s",
                                      "--latency", f"http://127.0.0.1:{n.port}/"],
                                     capture_output=True, text=True, check=True).stdout
                stats = parse_wrk(out)
                if stats["socket_errors"] or stats["non_2xx"]:
                    raise RuntimeError(f"{variant}: errors under load: {stats}")
                rps[variant].append(stats["requests"] / seconds)
                cpu_us[variant].append(1e6 * (cpu_seconds(workers) - before) / stats["requests"])
        counted = NginxDynamicProxy(nginx_dynamic.DynamicProxy(
            nginxes["counting"].controller(), nginxes["counting"].include_path,
            nginxes["counting"].include_dir, nginxes["counting"].control,
            nginxes["counting"].state_file)).figures([SVC])[SVC]["blue"]
        medians = {v: statistics.median(r) for v, r in rps.items()}
        cpu = {v: statistics.median(r) for v, r in cpu_us.items()}
        ratios = [a / b for a, b in zip(rps["counting"], rps["not counting"], strict=True)]
        other = {}
        if other_lua:
            other = {"other_lua": other_lua, "other_name": other_name,
                     "other_cost_pct": round(100 * (1 - medians[other_name] / medians["not counting"]), 2),
                     "other_cpu_cost_pct": round(100 * (cpu[other_name] / cpu["not counting"] - 1), 2)}
        return {**other, "rounds": rounds, "seconds": seconds, "rps": rps, "cpu_us": cpu_us,
                "median_rps": {v: round(m) for v, m in medians.items()},
                "cost_pct": round(100 * (1 - medians["counting"] / medians["not counting"]), 2),
                "paired_cost_pct": round(100 * (1 - statistics.median(ratios)), 2),
                "worker_cpu_us_per_request": {v: round(m, 1) for v, m in cpu.items()},
                "cpu_cost_pct": round(100 * (cpu["counting"] / cpu["not counting"] - 1), 2),
                "requests_counted": counted.requests}
    finally:
        for n in nginxes.values():
            n.stop()
        backend.stop()


def plot_sticky(s: dict[str, Any], path: Path) -> None:
    """The share of clients on the new release at each step against the weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = [step["weight"] for step in s["steps"]]
    shares = [step["share_on_new_pct"] for step in s["steps"]]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot([0, 100], [0, 100], color="#7f7f7f", linewidth=1, linestyle="--",
            label="the weight (exact split)")
    ax.bar(weights, shares, width=8, color="#2ca02c", alpha=0.8,
           label="clients on the new release")
    for w, share, step in zip(weights, shares, s["steps"], strict=True):
        ax.annotate(f"{step['clients_on_new']} ({share}%)", (w, share), ha="center",
                    va="bottom", xytext=(0, 3), textcoords="offset points", fontsize=9)
    ax.set_xticks(weights, [f"{w}%" for w in weights])
    ax.set_xlim(0, 115)
    ax.set_ylim(0, 112)
    ax.set_xlabel("weight of the new release at the step")
    ax.set_ylabel("clients on the new release (%)")
    ax.set_title(f"{s['clients']} sticky clients, {s['requests_per_client_per_step']} requests "
                 f"each per step: {s['clients_new_then_old']} saw new then old")
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_counting(c: dict[str, Any], path: Path) -> None:
    """Requests/s and the workers' CPU per request of each round, counting against not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"counting": "#d62728", "not counting": "#1f77b4", c.get("other_name"): "#7f7f7f"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), dpi=110, sharex=True)
    rounds = range(1, c["rounds"] + 1)
    for variant, color in colors.items():
        if variant not in c["rps"]:
            continue
        top.plot(rounds, c["rps"][variant], marker="o", markersize=3, color=color,
                 label=f"{variant}: median {c['median_rps'][variant]:,}")
        bottom.plot(rounds, c["cpu_us"][variant], marker="o", markersize=3, color=color,
                    label=f"{variant}: median {c['worker_cpu_us_per_request'][variant]} us")
    top.set_ylabel("requests/s (wrk)")
    title = (f"Counting against not counting: requests/s {-c['cost_pct']:+.1f}% "
             f"(paired {-c['paired_cost_pct']:+.1f}%), workers' CPU per request "
             f"{c['cpu_cost_pct']:+.1f}%")
    if "other_lua" in c:
        title += (f"\n{c['other_name']} against not counting: requests/s {-c['other_cost_pct']:+.1f}%, "
                  f"CPU per request {c['other_cpu_cost_pct']:+.1f}%")
    top.set_title(title, fontsize=10)
    bottom.set_ylabel("nginx workers' CPU per request (us)")
    bottom.set_xlabel(f"round ({c['seconds']} s of wrk per variant, alternating)")
    from matplotlib.ticker import MaxNLocator

    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (top, bottom):
        ax.set_ylim(bottom=0)
        ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=3, help="per client and step")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--other-lua", help="also measure the Lua of this directory (e.g. an "
                        "older bluegreen_dynamic.lua), a third variant in the same rounds")
    parser.add_argument("--other-name", default="other Lua", help="what to call it")
    parser.add_argument("--plot", help="draw the sticky clients' split to this PNG (matplotlib)")
    parser.add_argument("--plot-counting", help="draw each round's requests/s and CPU per "
                        "request to this PNG (matplotlib)")
    args = parser.parse_args()
    if args.plot or args.plot_counting:
        import matplotlib  # noqa: F401  (missing: say so before the run, not after)
    root = Path(tempfile.mkdtemp(prefix="bg-progressive-"))
    try:
        results = {"sticky": sticky_clients(root, args.clients, args.requests),
                   "counting": counting_cost(root, args.rounds, args.seconds, args.other_lua,
                                            args.other_name)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    s, c = results["sticky"], results["counting"]
    print(f"sticky: {s['clients']} clients x {s['requests_per_client_per_step']} requests per "
          f"step; clients that saw new then old: {s['clients_new_then_old']}")
    for step in s["steps"]:
        print(f"  weight {step['weight']:3d}%: {step['clients_on_new']} clients on new "
              f"({step['share_on_new_pct']}%), {step['mixed_within_step']} mixed within the step")
    print(f"counting: median requests/s {c['median_rps']} over {c['rounds']} x {c['seconds']} s; "
          f"cost {c['cost_pct']}% (median of paired runs {c['paired_cost_pct']}%); nginx "
          f"workers' CPU per request {c['worker_cpu_us_per_request']} us: "
          f"+{c['cpu_cost_pct']}%")
    if "other_lua" in c:
        print(f"{c['other_name']} ({c['other_lua']}): cost {c['other_cost_pct']}% requests/s, "
              f"{c['other_cpu_cost_pct']:+}% CPU per request against not counting")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.plot:
        plot_sticky(s, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.plot_counting:
        plot_counting(c, Path(args.plot_counting))
        print(f"plot: {args.plot_counting}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
