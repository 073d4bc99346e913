"""nginx's dynamic mode (with each --nginx-routing) and reload mode at 10, 100 and 1,000
services, under wrk, and HAProxy's runtime API against the dynamic POST (issue 19, item 7),
in one run.

Part ``scale``: for each size N and each mode, one private nginx (Debian's; the dynamic one
with the Lua module, 2 workers each) on loopback in front of two tiny backends ("blue",
"green"), N services added in one change (each with its public location ``/svc-NNNN``), then,
through bluegreen's proxy classes as the CLI drives them:

- quiet (no load), medians of ``--repeat``: a switch of one service (blue to green) to the
  first response of green on a new connection; its rollback (back to blue) to the first
  response of blue; adding one more service (a checked reload: files, ``nginx -t``, HUP, new
  workers; with the routing table, a POST) to its first response; nginx's RSS (master and
  workers, once old workers left);
- under wrk (``wrk -t1 -c4`` on the switched service's public location, kept-alive
  connections, no retry): the same ``--repeat`` switches and rollbacks, then ``--repeat``
  additions, each series in its own wrk run: requests, non-2xx, socket errors.

Dynamic mode (``dynamic``: a location per service; ``table``: ``--nginx-routing table``): a
switch is ``DynamicProxy.apply`` (a line appended to the state file's journal, one POST whose
answer carries the read-back, checked, the line appended to the last good copy); an addition
is its checked reload, or with the routing table a POST like a switch. Also: what a change adds on the rare occasion
it rewrites the state file's base (its journal outgrew it) and how many one-service switches
that takes. Reload mode: ``NginxProxy.apply``
(the service's files, ``nginx -t``, HUP, wait until new workers serve alone).

Part ``haproxy``: Debian's haproxy (2.6; ``bash scripts/bench-deps.sh`` installs it) with a
private configuration on loopback, its admin socket in a temp dir, one backend ``be`` with
servers blue and green (``option http-server-close``: a new connection to the server for
each request, as nginx makes here; the backends' keep-alive connections answer with a 40 ms
delayed ACK); a dynamic nginx with one service. Each switch is timed from the command's start
to the first response of the new server on a new connection. HAProxy: ``set server be/NEW
state ready; set server be/OLD state maint`` over the admin socket; dynamic:
``DynamicControl.apply`` (journal line, POST, its read-back checked, last good copy); a bare
POST of the same routes (no state file, no check: nginx's own part). Two ways: each proxy
under its own wrk (``-t1 -c4``) only, in blocks of ``--switches``/2 alternated twice (HAProxy's
switches, then nginx's dynamic and bare POST interleaved, again); then ``--switches``
switches of all three interleaved with both proxies under wrk at once.

All traffic goes to 127.0.0.1. Prints tables (JSON with ``--json FILE``).

    PYTHONPATH=pyscripts .venv/bin/python bench/proxy_scale.py [--sizes 10,100,1000] [--repeat 10]
        [--switches 30] [--parts scale,haproxy] [--modes dynamic,reload] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bluegreen.model import Route, Server
from bluegreen.proxy import dynamic_state
from bluegreen.proxy.dynamic import DynamicControl
from bluegreen.proxy.nginx import LocalNginx, NginxProxy
from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx, parse_wrk
from bluegreen_dev.sandbox import Nginx, free_port, wait_for
from dynamic_scale import first_response, rss_mb

MODES = ("dynamic", "table", "reload")
DYNAMIC = ("dynamic", "table")  # the dynamic mode with each --nginx-routing
WRK = ["wrk", "-t", "1", "-c", "4", "-d", "3600s"]


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


@contextlib.contextmanager
def wrk(url: str) -> Iterator[dict[str, Any]]:
    """wrk on ``url`` while the block runs; the dict gets its figures at the end."""
    out: dict[str, Any] = {}
    proc = subprocess.Popen([*WRK, url], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # its connections open (a warm-up, not a fault's timing)
        yield out
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        text = proc.communicate(timeout=60)[0]
    stats = parse_wrk(text)
    out.update({k: stats[k] for k in ("requests", "non_2xx", "socket_errors", "socket_error_kinds")})


class Mode:
    """One nginx in one mode, with N services routed to blue."""

    def __init__(self, mode: str, root: Path, blue: Backend, green: Backend) -> None:
        self.mode, self.servers = mode, {"blue": Server("127.0.0.1", blue.port),
                                         "green": Server("127.0.0.1", green.port)}
        self.nginx: Nginx = DynamicNginx(root, routing="table" if mode == "table" else
                                         "locations") if mode in DYNAMIC else Nginx(root)
        n = self.nginx
        try:
            n.start()
            wait_for(lambda: len(self.controller.workers()) == n.workers, 10, "nginx workers", 0.005)
        except BaseException:
            n.stop()  # it may have started
            raise
        if isinstance(n, DynamicNginx):
            self.dyn = n.proxy()
        else:
            self.reload = NginxProxy(self.controller, n.upstream_dir, n.include_dir)
        self.added = 0

    @property
    def controller(self) -> LocalNginx:
        n = self.nginx
        return LocalNginx("nginx", str(n.conf), str(n.prefix), str(n.pid_file))

    def route(self, name: str, color: str) -> Route:
        return Route(name, color, (self.servers[color],), location=f"/{name}")

    def apply(self, routes: list[Route]) -> None:
        if self.mode in DYNAMIC:
            self.dyn.apply(routes)
        else:
            self.reload.apply(routes)

    def add(self) -> str:
        """One more service (a checked reload in both modes); its name."""
        name = f"extra-{self.added:04d}"
        self.added += 1
        self.apply([self.route(name, "blue")])
        return name

    def rss(self) -> float:
        self.controller.drain(30)  # the workers of earlier reloads gone
        return rss_mb(int(self.nginx.pid_file.read_text()))


def series(m: Mode, target: str, repeat: int) -> dict[str, list[float]]:
    """``repeat`` switches and rollbacks of ``target``, alternating (ms)."""
    out: dict[str, list[float]] = {"switch": [], "change": [], "rollback": []}
    port = m.nginx.port
    for _ in range(repeat):
        t0 = time.perf_counter()
        m.apply([m.route(target, "green")])
        out["change"].append((time.perf_counter() - t0) * 1000)
        first_response(port, f"/{target}", "green")
        out["switch"].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        m.apply([m.route(target, "blue")])
        first_response(port, f"/{target}", "blue")
        out["rollback"].append((time.perf_counter() - t0) * 1000)
    return out


def additions(m: Mode, repeat: int) -> list[float]:
    took = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        name = m.add()
        first_response(m.nginx.port, f"/{name}", "blue")
        took.append((time.perf_counter() - t0) * 1000)
    return took


def rewrites(m: Mode, target: str, repeat: int) -> tuple[list[float], int]:
    """Dynamic mode: what a change adds when it rewrites the state file's base (once the
    journal has outgrown it): the base written anew and the last good copy copied whole (ms,
    ``repeat`` times); and after how many switches of one service that happens."""
    state = str(m.nginx.state_file)
    took = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        dynamic_state.rewrite(state, dynamic_state.read_document(state))
        dynamic_state.keep_last_good(state)
        took.append((time.perf_counter() - t0) * 1000)
    m.apply([m.route(target, "blue")])  # one journal line
    line = Path(dynamic_state.journal_path(state)).stat().st_size
    limit = max(dynamic_state.MIN_JOURNAL, Path(state).stat().st_size)
    return took, limit // line + 1


def measure(mode: str, size: int, repeat: int, blue: Backend, green: Backend) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bg-{mode}-") as tmp:
        m = Mode(mode, Path(tmp) / "nginx", blue, green)
        try:
            names = [f"svc-{i:04d}" for i in range(size)]
            t0 = time.perf_counter()
            m.apply([m.route(n, "blue") for n in names])
            setup_s = time.perf_counter() - t0
            target = names[size // 2]
            first_response(m.nginx.port, f"/{target}", "blue")
            quiet = series(m, target, repeat)
            rewrite = rewrites(m, target, repeat) if mode in DYNAMIC else None
            rss = m.rss()
            quiet["add"] = additions(m, repeat)
            url = f"http://127.0.0.1:{m.nginx.port}/{target}"
            with wrk(url) as wrk_switch:
                loaded = series(m, target, repeat)
            with wrk(url) as wrk_add:
                loaded["add"] = additions(m, repeat)
        finally:
            m.nginx.stop()
    row = {"mode": mode, "services": size, "setup_s": round(setup_s, 2), "rss_mb": round(rss, 1),
           "wrk_switch": wrk_switch, "wrk_add": wrk_add, "raw": {"quiet": quiet, "wrk": loaded}}
    if rewrite:
        row["rewrite_ms"], row["changes_per_rewrite"] = median(rewrite[0]), rewrite[1]
    for k in ("switch", "change", "rollback", "add"):
        row[f"{k}_ms"] = median(quiet[k])
        row[f"{k}_wrk_ms"] = median(loaded[k])
    return row


# -- HAProxy's runtime API against the dynamic POST -------------------------------------------

HAPROXY_CFG = """global
    stats socket {sock} mode 600 level admin
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-server-close
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server blue 127.0.0.1:{blue}
    server green 127.0.0.1:{green} disabled
"""


class HAProxy:
    def __init__(self, root: Path, blue: Backend, green: Backend) -> None:
        binary = shutil.which("haproxy")
        if not binary:
            raise SystemExit("haproxy is not installed: run `bash scripts/bench-deps.sh`")
        self.port, self.sock = free_port(), root / "admin.sock"
        cfg = root / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(sock=self.sock, port=self.port, blue=blue.port,
                                          green=green.port))
        self.proc = subprocess.Popen([binary, "-db", "-q", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self.sock.exists()

        try:
            wait_for(up, 10, "haproxy", 0.02)
        except BaseException:
            self.stop()
            raise
        self.version = subprocess.run([binary, "-v"], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[0]

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(4096):
                chunks.append(chunk)
        answer = b"".join(chunks).decode().strip()
        if answer:
            raise RuntimeError(f"haproxy answered {answer!r} to {line!r}")
        return answer

    def switch(self, new: str, old: str) -> None:
        self.command(f"set server be/{new} state ready; set server be/{old} state maint")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _switches(actions: dict[str, tuple[int, Callable[[str, str], Any]]], switches: int,
              took: dict[str, list[float]], change: dict[str, list[float]]) -> None:
    """``switches`` alternating switches of each action, interleaved: the call's time and the
    time to the first response of the new server on a new connection."""
    for i in range(switches):
        new, old = ("green", "blue") if i % 2 == 0 else ("blue", "green")
        for name, (port, act) in actions.items():
            t0 = time.perf_counter()
            act(new, old)
            change[name].append((time.perf_counter() - t0) * 1000)
            first_response(port, "/", new)
            took[name].append((time.perf_counter() - t0) * 1000)


def _figures(took: dict[str, list[float]], change: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in took:
        out[f"{name}_ms"], out[f"{name}_change_ms"] = median(took[name]), median(change[name])
    for name in ("dynamic", "bare_post"):
        out[f"{name}_ratio"] = round(statistics.median(took[name])
                                     / statistics.median(took["haproxy"]), 2)
    return out | {"raw": {"took": took, "change": change}}


def haproxy_part(switches: int, blue: Backend, green: Backend) -> dict[str, Any]:
    """Two ways, in one run: each proxy under its own wrk only (HAProxy's switches, then
    nginx's, the two blocks alternated twice: the proxy measured has the cores to itself, with
    its own load), then both under wrk at once (the two proxies and the two wrk share the
    cores, and the proxy that answers wrk faster gets more of them)."""
    with tempfile.TemporaryDirectory(prefix="bg-haproxy-") as tmp:
        hap = HAProxy(Path(tmp), blue, green)
        nginx = DynamicNginx(Path(tmp) / "nginx")
        try:
            nginx.start()
            servers = {"blue": Server("127.0.0.1", blue.port), "green": Server("127.0.0.1", green.port)}
            nginx.proxy().apply([Route("svc", "blue", (servers["blue"],), location="/")])
            control = DynamicControl(nginx.control, nginx.state_file)
            first_response(nginx.port, "/", "blue")
            first_response(hap.port, "/", "blue")

            def bare(new: str, _old: str) -> None:
                body = {"services": {"svc": [{"address": "127.0.0.1", "port": servers[new].port,
                                              "weight": 100}]}}
                status, _doc = control._request("POST", json.dumps(body).encode())
                if status != 200:
                    raise RuntimeError(f"POST answered {status}")

            actions: dict[str, tuple[int, Callable[[str, str], Any]]] = {
                "haproxy": (hap.port, hap.switch),
                "dynamic": (nginx.port, lambda new, _old: control.apply({"svc": [servers[new]]})),
                "bare_post": (nginx.port, bare)}
            own: dict[str, Any] = {"took": {k: [] for k in actions}, "change": {k: [] for k in actions},
                                   "wrk_haproxy": [], "wrk_dynamic": []}
            blocks = [("haproxy", hap.port, ["haproxy"]),
                      ("dynamic", nginx.port, ["dynamic", "bare_post"])] * 2
            for label, port, names in blocks:  # an even number of switches per block
                with wrk(f"http://127.0.0.1:{port}/") as w:
                    _switches({k: actions[k] for k in names}, max(2, switches // 4 * 2),
                              own["took"], own["change"])
                own[f"wrk_{label}"].append(w)
            both_took: dict[str, list[float]] = {k: [] for k in actions}
            both_change: dict[str, list[float]] = {k: [] for k in actions}
            with wrk(f"http://127.0.0.1:{hap.port}/") as wrk_hap, \
                    wrk(f"http://127.0.0.1:{nginx.port}/") as wrk_dyn:
                _switches(actions, switches, both_took, both_change)
        finally:
            nginx.stop()
            hap.stop()
    return {"version": hap.version, "switches": switches,
            "own_load": _figures(own["took"], own["change"])
            | {"wrk_haproxy": own["wrk_haproxy"], "wrk_dynamic": own["wrk_dynamic"]},
            "both_loaded": _figures(both_took, both_change)
            | {"wrk_haproxy": [wrk_hap], "wrk_dynamic": [wrk_dyn]}}


def errors(w: dict[str, Any]) -> str:
    kinds = {k: v for k, v in w["socket_error_kinds"].items() if v}
    return f"{w['requests']} req, {w['non_2xx']} non-2xx, {w['socket_errors']} socket {kinds or ''}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--switches", type=int, default=30)
    ap.add_argument("--parts", default="scale,haproxy")
    ap.add_argument("--modes", default=",".join(MODES), help="the nginx modes of part scale")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if "haproxy" in parts and not shutil.which("haproxy"):
        print("haproxy is not installed: run `bash scripts/bench-deps.sh`", file=sys.stderr)
        return 2
    backends: list[Backend] = []
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "load_before": Path("/proc/loadavg").read_text().split()[:3]}
    try:
        for name in ("blue", "green"):
            backends.append(Backend(name))
            backends[-1].start()
        blue, green = backends
        if "scale" in parts:
            rows = results["scale"] = []
            for n in args.sizes.split(","):
                for mode in args.modes.split(","):
                    r = measure(mode, int(n), args.repeat, blue, green)
                    rows.append(r)
                    print(f"{mode:8} {r['services']:>5}: switch {r['switch_ms']} ms (change "
                          f"{r['change_ms']}), rollback {r['rollback_ms']} ms, add {r['add_ms']} ms, "
                          f"RSS {r['rss_mb']} MB, setup {r['setup_s']} s"
                          + (f", base rewrite {r['rewrite_ms']} ms every "
                             f"{r['changes_per_rewrite']} switches" if "rewrite_ms" in r else "")
                          + f" | under wrk: switch "
                          f"{r['switch_wrk_ms']}, rollback {r['rollback_wrk_ms']}, add "
                          f"{r['add_wrk_ms']} ms; wrk switches {errors(r['wrk_switch'])}; "
                          f"wrk adds {errors(r['wrk_add'])}", flush=True)
        if "haproxy" in parts:
            h = results["haproxy"] = haproxy_part(args.switches, blue, green)
            for way, title in (("own_load", "each under its own wrk"),
                               ("both_loaded", "both under wrk at once")):
                f = h[way]
                print(f"{h['version'].split(' - ')[0]}, {title}: HAProxy {f['haproxy_ms']} ms "
                      f"(command {f['haproxy_change_ms']} ms); dynamic {f['dynamic_ms']} ms (call "
                      f"{f['dynamic_change_ms']} ms), {f['dynamic_ratio']}x; bare POST "
                      f"{f['bare_post_ms']} ms (call {f['bare_post_change_ms']} ms), "
                      f"{f['bare_post_ratio']}x; wrk haproxy "
                      f"{'; '.join(errors(w) for w in f['wrk_haproxy'])}; wrk dynamic "
                      f"{'; '.join(errors(w) for w in f['wrk_dynamic'])}", flush=True)
    finally:
        for b in backends:
            b.stop()
    results["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
