"""An application release against a single-service run, side by side in one run: a 10-service
application with 1, 3 and 10 changed services released by one `bluegreen app deploy` each,
against one `bluegreen run` of one service (the issue's goal: each within 1.3x of the run). Wall
time, nginx reloads, and the answers `hey` got (one of the changed services, through nginx)
during each release. Everything in a private sandbox on loopback.

    python bench/app_release.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bluegreen_dev.sandbox import Nginx, Sandbox

BG = [sys.executable, "-m", "bluegreen"]
SERVICES, CHANGED = 10, 3


def compose(path: Path, version_of: dict[int, str]) -> str:
    lines = ["name: bench", "services:"]
    for i in range(SERVICES):
        route = "/" if i == 0 else f"/s{i}/"
        lines += [f"  s{i}:", f"    image: bluegreen-sample:{version_of.get(i, 'v1')}",
                  "    labels:", '      bluegreen.port: "8080"', f"      bluegreen.route: {route}"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def logging_nginx(root: Path) -> Nginx:
    """A sandbox nginx whose error log records each reload ("reconfiguring")."""
    nginx = Nginx(root).start()
    nginx.conf.write_text(nginx.conf.read_text().replace("error.log warn;", "error.log notice;"))
    subprocess.run(["nginx", "-p", str(nginx.prefix), "-c", str(nginx.conf), "-s", "reload"],
                   check=True, capture_output=True)
    return nginx


def reloads(nginx: Nginx) -> int:
    return (nginx.prefix / "logs" / "error.log").read_text().count("reconfiguring")


def under_hey(url: str, fn: object) -> tuple[float, dict[str, int]]:
    """Run ``fn`` while hey loads ``url``; (wall seconds of fn, hey's status counts/errors)."""
    hey = subprocess.Popen(["hey", "-z", "600s", "-c", "4", "-o", "csv", url],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(1.0)  # load first: the release must start under it (a figure, not a verdict)
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    took = time.perf_counter() - start
    time.sleep(0.5)
    hey.send_signal(2)
    out, _ = hey.communicate(timeout=60)
    counts: dict[str, int] = {}
    for row in out.splitlines()[1:]:
        parts = row.split(",")
        key = parts[6] if len(parts) > 6 else "?"  # status code ("" for a socket error)
        counts[key or "error"] = counts.get(key or "error", 0) + 1
    return took, counts


def bg(env: dict[str, str], *args: str) -> None:
    subprocess.run([*BG, *args], env=env, check=True, capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bluegreen-bench-app-"))
    sb = Sandbox(root).start()
    try:
        app_nginx, single_nginx = logging_nginx(root / "app"), logging_nginx(root / "single")
        app_env, single_env = sb.env(app_nginx), sb.env(single_nginx)
        bg(app_env, "app", "deploy", "--file", compose(root / "c.yaml", {}))
        bg(single_env, "run", "single0", "--image", "bluegreen-sample:v1", "--location", "/")
        rows = []
        for n in range(args.rounds):
            version = "v2" if n % 2 == 0 else "v1"
            r0 = reloads(single_nginx)
            took, counts = under_hey(f"{single_nginx.url}/api/v1/books", lambda v=version: bg(
                single_env, "run", "single0", "--image", f"bluegreen-sample:{v}",
                "--location", "/"))
            rows.append(("run (one service)", took, reloads(single_nginx) - r0, counts))
            for changed in (1, 3, SERVICES):
                # each size moves its services to `version` and back, so each release changes
                # exactly `changed` services
                for v in (version, "v1" if version == "v2" else "v2"):
                    r0 = reloads(app_nginx)
                    spec = compose(root / f"c{n}-{changed}-{v}.yaml",
                                   dict.fromkeys(range(changed), v))
                    took, counts = under_hey(f"{app_nginx.url}/api/v1/books",
                                             lambda f=spec: bg(app_env, "app", "deploy",
                                                               "--file", f))
                    rows.append((f"app deploy ({changed} of {SERVICES} changed)", took,
                                 reloads(app_nginx) - r0, counts))
        base = statistics.median(r[1] for r in rows if r[0] == "run (one service)")
        print(f"{'release':32} {'wall s':>7} {'x run':>6} {'reloads':>8}  hey answers during it")
        for name in dict.fromkeys(r[0] for r in rows):
            mine = [r for r in rows if r[0] == name]
            wall = statistics.median(r[1] for r in mine)
            loads = statistics.median(r[2] for r in mine)
            total: dict[str, int] = {}
            for r in mine:
                for k, v in r[3].items():
                    total[k] = total.get(k, 0) + v
            print(f"{name:32} {wall:7.2f} {wall / base:6.2f} {loads:8.0f}  "
                  f"{json.dumps(total, sort_keys=True)}")
    finally:
        for name in ("single0", *(f"bench.s{i}" for i in range(SERVICES))):
            sb.remove_containers(name)
        for d in ("app", "single"):
            Nginx(root / d).stop()
        sb.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
