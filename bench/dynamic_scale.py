"""The dynamic mode at 10, 100 and 1,000 services behind one nginx (issue 19, finding 3).

One private nginx (Debian's, with the Lua module) on loopback, two tiny backends ("blue",
"green"). For each size N: N services are added in one checked reload, then, medians of
``--repeat`` runs, through ``bluegreen.proxy.dynamic`` as the CLI drives it (the state file
written first, one POST, the read-back check, the last good copy):

- switch: one service from blue to green (POST + check), to the first response of green
  (change: the call alone, state file, POST, read-back and last good copy);
- rollback: the same service back to blue, to the first response of blue (switches and
  rollbacks alternate, with no reload in between);
- add (after them): one more service (a checked reload: render, ``nginx -t``, HUP, new workers), then the
  service removed again (not timed);
- nginx RSS (master and workers, from /proc) after the switches.

Prints a table (and JSON with ``--json FILE``). All traffic goes to 127.0.0.1.

    PYTHONPATH=pyscripts .venv/bin/python bench/dynamic_scale.py [--sizes 10,100,1000] [--repeat 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bluegreen.model import Route, Server
from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx


def first_response(port: int, path: str, want: str, deadline: float = 10.0) -> None:
    """Poll until ``path`` answers ``want`` (new connections, as a new client would)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            c.request("GET", path)
            r = c.getresponse()
            if r.read().decode() == want:
                return
        except OSError:
            pass
        finally:
            c.close()
    raise RuntimeError(f"{path} never answered {want}")


def rss_mb(pid: int) -> float:
    """RSS of nginx's master and its workers, MB."""
    pids = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit()
                    and _ppid(int(p)) == pid]
    total = 0
    for p in pids:
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue  # a worker of the last reload that has just exited
        for line in lines:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def measure(size: int, repeat: int, blue: Backend, green: Backend) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bg-scale-") as tmp:
        nginx = DynamicNginx(Path(tmp) / "nginx").start()
        try:
            proxy = nginx.proxy()
            names = [f"svc-{i:04d}" for i in range(size)]
            t0 = time.perf_counter()
            proxy.apply([Route(n, "blue", (Server("127.0.0.1", blue.port),),
                               location=f"/{n}") for n in names])
            setup_s = time.perf_counter() - t0
            target = names[size // 2]
            switch, rollback, add, change = [], [], [], []
            first_response(nginx.port, f"/{target}", "blue")  # every worker has synced
            for _ in range(repeat):  # no reload in between: a reload's new workers sync first
                t0 = time.perf_counter()
                proxy.apply([Route(target, "green", (Server("127.0.0.1", green.port),))])
                change.append((time.perf_counter() - t0) * 1000)
                first_response(nginx.port, f"/{target}", "green")
                switch.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                proxy.apply([Route(target, "blue", (Server("127.0.0.1", blue.port),))])
                first_response(nginx.port, f"/{target}", "blue")
                rollback.append((time.perf_counter() - t0) * 1000)
            for i in range(repeat):
                extra = f"extra-{i}"
                t0 = time.perf_counter()
                proxy.apply([Route(extra, "blue", (Server("127.0.0.1", blue.port),),
                                   location=f"/{extra}")])
                first_response(nginx.port, f"/{extra}", "blue")
                add.append((time.perf_counter() - t0) * 1000)
                proxy.remove([extra])
            rss = rss_mb(int(nginx.pid_file.read_text()))
        finally:
            nginx.stop()
    return {"services": size, "setup_s": round(setup_s, 2),
            "switch_ms": round(statistics.median(switch), 1),
            "change_ms": round(statistics.median(change), 1),
            "rollback_ms": round(statistics.median(rollback), 1),
            "add_ms": round(statistics.median(add), 1), "rss_mb": round(rss, 1),
            "raw": {"switch": switch, "change": change, "rollback": rollback, "add": add}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    blue, green = Backend("blue").start(), Backend("green").start()
    try:
        rows = [measure(int(n), args.repeat, blue, green) for n in args.sizes.split(",")]
    finally:
        blue.stop()
        green.stop()
    print(f"{'services':>8} {'switch ms':>10} {'(change ms)':>12} {'rollback ms':>12}"
          f" {'add ms':>8} {'RSS MB':>8} {'setup s':>8}")
    for r in rows:
        print(f"{r['services']:>8} {r['switch_ms']:>10} {r['change_ms']:>12} {r['rollback_ms']:>12}"
              f" {r['add_ms']:>8} {r['rss_mb']:>8} {r['setup_s']:>8}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
