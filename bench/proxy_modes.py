"""The proxy modes side by side, through the real CLI against the sandbox, in one run.

For nginx reloaded (``--nginx-mode local``) and nginx dynamic (``--nginx-mode dynamic``):

1. load: wrk (no retries) and non-retrying Python keep-alive clients through nginx during
   alternating ``bluegreen run``s: requests, socket errors (goal 0 in dynamic), p99;
2. switch latency to the first response of the new color: ``bluegreen switch`` in each mode and
   a bare ``nginx -s reload``;
3. ``bluegreen rollback`` with the old color running (goal: at most 100 ms median in dynamic):
   to the first response of the old color, and the whole command;
4. two proxies (``--proxy``) against one: switch and rollback;
5. the full cycle: ``bluegreen run`` and its phases (``<== Phase: ok in Ns``) against the sum of
   its primitives (start a container and see it healthy, two test requests, one switch, stop).

Prints the figures and a table (JSON with ``--json FILE``). All traffic goes to 127.0.0.1.

    PYTHONPATH=pyscripts .venv/bin/python bench/proxy_modes.py [--runs 20] [--reps 10]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bluegreen import wire
from bluegreen.model import Server
from bluegreen.proxy.dynamic import DynamicControl
from bluegreen.proxy.nginx import LocalNginx
from bluegreen_dev.dynamic_nginx import DynamicNginx, KeepAliveClient, parse_wrk
from bluegreen_dev.sandbox import Nginx, Sandbox, primitive_cycle

# the console script, as Jenkins runs it (bluegreenCli); ``python -m`` adds runpy's imports
_SCRIPT = Path(sys.executable).with_name("bluegreen")
BG = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "bluegreen"]
HTTP = ["--http", "/api/v1/books"]
PATH = "/api/v1/books"
# Between two probes of the version nginx serves (a fresh connection each): a first response
# is seen at most 2 ms late. (Every 5 ms instead moved no median by more than the noise.)
PROBE_INTERVAL = 0.002
IMAGES = ("bluegreen-sample:v1", "bluegreen-sample:v2")
PHASE_RE = re.compile(r"<== (?P<phase>[^:]+): ok in (?P<s>[\d.]+)s")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def version(url: str) -> str | None:
    """The version nginx serves, on a fresh connection (bluegreen.wire: a probe light enough
    not to slow down, on a 2-core machine, the command it times)."""
    try:
        status, body = wire.get(url + PATH, timeout=2)
        return json.loads(body)[0]["version"] if status == 200 else None
    except (OSError, ValueError):
        return None


class Mode:
    """One proxy setup: its nginx(es), the CLI's environment, a service of its own."""

    def __init__(self, name: str, url: str, env: dict[str, str], service: str,
                 nginxes: list[Nginx]) -> None:
        self.name, self.url, self.service, self.nginxes = name, url, service, nginxes
        self.env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        # compiled modules cached, as in an installed package
        self.env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "bg-proxy-modes-pyc")

    def bg(self, *args: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        p = subprocess.run([*BG, *args], env=self.env, capture_output=True, text=True, check=False)
        took = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"[{self.name}] bluegreen {' '.join(args)}: {p.stderr[-600:]}")
        return took, p.stderr

    def run(self, image: str) -> tuple[float, str]:
        return self.bg("run", self.service, "--image", image, *HTTP)


class Bench:
    def __init__(self, sb: Sandbox, runs: int, reps: int) -> None:
        self.sb, self.runs, self.reps = sb, runs, reps
        self.results: dict[str, Any] = {"runs": runs, "reps": reps}
        self.last_wall = 0.0
        root = sb.root
        self.reload_nginx = Nginx(root / "pm-reload").start()
        self.dyn = DynamicNginx(root / "pm-dyn").start()
        self.two = [DynamicNginx(root / "pm-two-a").start(), DynamicNginx(root / "pm-two-b").start()]
        dyn_env = sb.env(self.dyn) | {"BLUEGREEN_NGINX_MODE": "dynamic",
                                      "BLUEGREEN_NGINX_CONTROL": self.dyn.control,
                                      "BLUEGREEN_NGINX_STATE_FILE": str(self.dyn.state_file)}
        a, b = self.two
        two_env = sb.env(a) | {"BLUEGREEN_NGINX_MODE": "dynamic", "BLUEGREEN_NGINX_CONTROL": a.control,
                               "BLUEGREEN_NGINX_STATE_FILE": str(a.state_file)}
        two = (f"a=dynamic\nb=dynamic,conf={b.conf},prefix={b.prefix},pid-file={b.pid_file},"
               f"upstream-dir={b.upstream_dir},include-dir={b.include_dir},control={b.control},"
               f"state-file={b.state_file}")
        self.modes = {
            "reload": Mode("reload", self.reload_nginx.url, sb.env(self.reload_nginx), "pm-reload",
                           [self.reload_nginx]),
            "dynamic": Mode("dynamic", self.dyn.url, dyn_env, "pm-dynamic", [self.dyn]),
            "two-dynamic": Mode("two-dynamic", a.url, two_env | {"BLUEGREEN_PROXY": two},
                                "pm-two", self.two),
        }

    # -- 1. load during alternating runs ---------------------------------------------------

    def load(self, name: str) -> None:
        mode = self.modes[name]
        mode.run(IMAGES[0])
        port = mode.nginxes[0].port
        wrk = subprocess.Popen(["wrk", "-t", "1", "-c", "10", "-d", "900s", "--timeout", "10s",
                                "--latency",
                                f"http://127.0.0.1:{port}{PATH}"], stdout=subprocess.PIPE, text=True)
        clients = [KeepAliveClient(port, PATH) for _ in range(2)]
        for c in clients:
            c.start()
        t0 = time.perf_counter()
        runs, phases = [], defaultdict(list)
        for i in range(self.runs):
            took, err = mode.run(IMAGES[(i + 1) % 2])
            runs.append(took)
            for m in PHASE_RE.finditer(err):
                phases[m.group("phase")].append(float(m.group("s")))
        duration = time.perf_counter() - t0
        wrk.send_signal(signal.SIGINT)
        w = parse_wrk(wrk.communicate(timeout=60)[0])
        for c in clients:
            c.stop()
        lat = [x for c in clients for x in c.latencies]
        kinds: dict[str, int] = defaultdict(int)
        for c in clients:
            for k, n in c.error_kinds.items():
                kinds[k] += n
        self.results[f"load_{name}"] = {
            "duration_s": duration, "run_median_s": median(runs),
            "phases_median_s": {k: median(v) for k, v in phases.items()},
            "wrk": {"requests": w["requests"], "socket_errors": w["socket_errors"],
                    "kinds": w["socket_error_kinds"], "non_2xx": w["non_2xx"], "p99_ms": w["p99_ms"]},
            "python": {"requests": sum(c.requests for c in clients),
                       "errors": sum(c.errors for c in clients), "kinds": dict(kinds),
                       "p99_ms": pct(lat, 0.99) * 1000}}
        r = self.results[f"load_{name}"]
        print(f"load {name:8}: {self.runs} runs, median {median(runs):.2f}s; wrk {w['requests']} "
              f"requests, {w['socket_errors']} socket errors {w['socket_error_kinds']}, "
              f"p99 {w['p99_ms']} ms; python {r['python']['requests']} requests, "
              f"{r['python']['errors']} errors {dict(kinds)}, p99 {r['python']['p99_ms']:.1f} ms",
              flush=True)

    # -- 2. switch latency; 3. rollback ------------------------------------------------------

    def both_running(self, mode: Mode) -> None:
        """Both colors running and verified: one rollback starts the stopped one."""
        if version(mode.url) is None:
            mode.run(IMAGES[0])
        mode.run(IMAGES[1] if version(mode.url) == "v1" else IMAGES[0])
        mode.bg("rollback", mode.service)

    def first_new(self, mode: Mode, action: Any, expect: str = "") -> float:
        """Seconds from starting ``action`` until nginx answers with the other version. When
        ``action`` starts a process, its whole wall time goes to ``self.last_wall`` and its
        standard error must contain ``expect``."""
        old = version(mode.url)
        proc = None
        t0 = time.perf_counter()
        proc = action()
        while True:
            v = version(mode.url)
            if v and v != old:
                took = time.perf_counter() - t0
                break
            if time.perf_counter() - t0 > 20:
                raise RuntimeError(f"[{mode.name}] never served the other color")
            time.sleep(PROBE_INTERVAL)
        if isinstance(proc, subprocess.Popen):
            err = proc.communicate(timeout=60)[1]
            self.last_wall = time.perf_counter() - t0
            if proc.returncode != 0 or expect not in err:
                raise RuntimeError(f"[{mode.name}] {proc.args} failed: {err}")
        return took

    def cli_switch(self, mode: Mode) -> Any:
        color = json.loads(subprocess.run([*BG, "status", mode.service, "--json"], env=mode.env,
                                          capture_output=True, text=True).stdout)["proxy"]["color"]
        new = "green" if color == "blue" else "blue"
        return lambda: subprocess.Popen([*BG, "switch", mode.service, "--color", new],
                                        env=mode.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)

    def latency(self, name: str) -> None:
        mode = self.modes[name]
        self.both_running(mode)
        switch, rollback = [], []
        for _ in range(self.reps):
            switch.append(self.first_new(mode, self.cli_switch(mode)))
            time.sleep(0.2)  # a reload's old workers finish
        walls = []
        for _ in range(self.reps):
            rollback.append(self.first_new(mode, lambda: subprocess.Popen(
                [*BG, "rollback", mode.service], env=mode.env, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True), expect="(proxy only)"))
            walls.append(self.last_wall)
            time.sleep(0.2)
        self.results[f"switch_{name}"] = {"median_ms": median(switch) * 1000,
                                          "p95_ms": pct(switch, 0.95) * 1000}
        self.results[f"rollback_{name}"] = {"median_ms": median(rollback) * 1000,
                                            "p95_ms": pct(rollback, 0.95) * 1000,
                                            "wall_median_ms": median(walls) * 1000,
                                            "wall_p95_ms": pct(walls, 0.95) * 1000}
        print(f"{name:11}: bluegreen switch to first new response median "
              f"{median(switch) * 1000:.0f} ms; rollback (proxy only) to first old response "
              f"median {median(rollback) * 1000:.0f} ms, whole command "
              f"{median(walls) * 1000:.0f} ms", flush=True)

    def bare_reload(self) -> None:
        """Switch the reload nginx's upstream file by hand, then ``nginx -s reload``."""
        mode, n = self.modes["reload"], self.reload_nginx
        upstream = n.upstream_dir / f"{mode.service}.conf"
        took = []
        for _ in range(self.reps):
            text = upstream.read_text()
            blue = json.loads(subprocess.run([*BG, "address", mode.service, "--color", "blue",
                                              "--json"], env=mode.env, capture_output=True,
                                             text=True).stdout or "[]")
            green = json.loads(subprocess.run([*BG, "address", mode.service, "--color", "green",
                                               "--json"], env=mode.env, capture_output=True,
                                              text=True).stdout or "[]")
            cur, new = (blue, green) if blue and blue[0] in text else (green, blue)
            upstream.write_text(text.replace(cur[0], new[0]))

            def act() -> None:
                subprocess.run(["nginx", "-p", str(n.prefix), "-c", str(n.conf), "-s", "reload"],
                               check=True, capture_output=True)

            took.append(self.first_new(mode, act))
            time.sleep(0.2)
        self.results["switch_bare_reload"] = {"median_ms": median(took) * 1000,
                                              "p95_ms": pct(took, 0.95) * 1000}
        print(f"bare nginx -s reload: first new response median {median(took) * 1000:.0f} ms",
              flush=True)

    # -- 5. full cycle without load, and the primitives of a run ------------------------------

    def cycle(self, name: str) -> None:
        mode = self.modes[name]
        runs, phases = [], defaultdict(list)
        for _ in range(max(3, self.reps // 2)):
            took, err = mode.run(IMAGES[1] if version(mode.url) == "v1" else IMAGES[0])
            runs.append(took)
            for m in PHASE_RE.finditer(err):
                phases[m.group("phase")].append(float(m.group("s")))
        self.results[f"cycle_{name}"] = {"run_median_s": median(runs),
                                         "phases_median_s": {k: median(v) for k, v in phases.items()}}
        print(f"cycle {name}: run median {median(runs):.2f}s, phases "
              f"{ {k: round(median(v), 2) for k, v in phases.items()} }", flush=True)

    def primitives(self) -> None:
        starts, tests, stops, reloads, posts = [], [], [], [], []
        ctl = LocalNginx("nginx", str(self.reload_nginx.conf), str(self.reload_nginx.prefix),
                         str(self.reload_nginx.pid_file))
        control = DynamicControl(self.dyn.control)
        svc = self.modes["dynamic"].service
        live = control.read()["services"][svc]
        for _ in range(max(3, self.reps // 2)):
            took = primitive_cycle(IMAGES[1], PATH, ctl.reload)
            for seconds, key in ((starts, "start"), (tests, "tests"), (stops, "stop"),
                                 (reloads, "reload")):
                seconds.append(took[key])
            t0 = time.perf_counter()
            control.apply({svc: [Server(e["address"], e["port"], e["weight"]) for e in live]})
            posts.append(time.perf_counter() - t0)
        base = median(starts) + median(tests) + median(stops)
        self.results["primitives"] = {
            "start_healthy_s": median(starts), "tests_s": median(tests), "stop_s": median(stops),
            "reload_s": median(reloads), "post_s": median(posts),
            "sum_reload_s": base + median(reloads), "sum_dynamic_s": base + median(posts)}
        print(f"primitives: start+healthy {median(starts):.2f}s, tests {median(tests):.3f}s, "
              f"stop {median(stops):.2f}s, reload {median(reloads):.3f}s, POST "
              f"{median(posts) * 1000:.1f} ms", flush=True)

    def close(self) -> None:
        for mode in self.modes.values():
            self.sb.remove_containers(mode.service)
        for n in (self.reload_nginx, self.dyn, *self.two):
            n.stop()


def table(r: dict[str, Any]) -> str:
    out = [f"Load during {r['runs']} alternating `bluegreen run`s (wrk -t1 -c10 --timeout 10s; 2 Python "
           "keep-alive clients, no retries):", "",
           "| mode | wrk requests | wrk socket errors | wrk p99 | python requests | python errors "
           "| python p99 | run median |", "|---|---|---|---|---|---|---|---|"]
    for name in ("reload", "dynamic", "two-dynamic"):
        x = r.get(f"load_{name}")
        if not x:
            continue
        w, p = x["wrk"], x["python"]
        out.append(f"| {name} | {w['requests']} | {w['socket_errors']} | {w['p99_ms']} ms | "
                   f"{p['requests']} | {p['errors']} | {p['p99_ms']:.1f} ms | "
                   f"{x['run_median_s']:.2f} s |")
    out += ["", "| to the first response of the new color | median | p95 |", "|---|---|---|"]
    for key, label in (("switch_dynamic", "`bluegreen switch`, dynamic"),
                       ("switch_two-dynamic", "`bluegreen switch`, two dynamic proxies"),
                       ("switch_reload", "`bluegreen switch`, reload"),
                       ("switch_bare_reload", "bare `nginx -s reload`"),
                       ("rollback_dynamic", "`bluegreen rollback` (old color running), dynamic"),
                       ("rollback_two-dynamic", "`bluegreen rollback`, two dynamic proxies"),
                       ("rollback_reload", "`bluegreen rollback` (old color running), reload")):
        if key in r:
            out.append(f"| {label} | {r[key]['median_ms']:.0f} ms | {r[key]['p95_ms']:.0f} ms |")
    out += ["", "| `bluegreen rollback` (old color running), the whole command | median | p95 |",
            "|---|---|---|"]
    for name in ("dynamic", "two-dynamic", "reload"):
        x = r.get(f"rollback_{name}")
        if x:
            out.append(f"| {name} | {x['wall_median_ms']:.0f} ms | {x['wall_p95_ms']:.0f} ms |")
    prim = r.get("primitives")
    if prim:
        out += ["", "| full cycle (no load) | run median | phases (median) | sum of primitives | ratio |",
                "|---|---|---|---|---|"]
        for name, key in (("reload", "sum_reload_s"), ("dynamic", "sum_dynamic_s")):
            x = r.get(f"cycle_{name}")
            if x:
                phases = ", ".join(f"{k} {v:.2f}s" for k, v in x["phases_median_s"].items())
                out.append(f"| {name} | {x['run_median_s']:.2f} s | {phases} | {prim[key]:.2f} s | "
                           f"{x['run_median_s'] / prim[key]:.2f}x |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="runs under load per mode")
    ap.add_argument("--reps", type=int, default=10, help="switches and rollbacks per mode")
    ap.add_argument("--json", help="write the raw results to this file")
    ap.add_argument("--parts", default="load,latency,cycle",
                    help="which measurements, comma-separated (default: all three)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    for tool in ("nginx", "wrk", "docker"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (scripts/bootstrap.sh installs it)")
    root = Path(tempfile.mkdtemp(prefix="bg-proxy-modes-"))
    sb = Sandbox(root).start()
    bench = Bench(sb, args.runs, args.reps)
    try:
        if "load" in parts:
            for name in ("reload", "dynamic", "two-dynamic"):
                bench.load(name)
        if "latency" in parts:
            for name in ("dynamic", "two-dynamic", "reload"):
                bench.latency(name)
            bench.bare_reload()
        if "cycle" in parts:
            for name in ("reload", "dynamic"):
                bench.cycle(name)
            bench.primitives()
    finally:
        bench.close()
        sb.close()
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(bench.results))
    if args.json:
        Path(args.json).write_text(json.dumps(bench.results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
