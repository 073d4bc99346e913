"""Quick commands against the interpreter's own start: `bluegreen color next|current` on the
file registry, `python3 -c pass`, alternated in one run; prints medians and the ratio.

    python bench/quick_commands.py [--runs 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, BLUEGREEN_REGISTRY="file", BLUEGREEN_STATE_FILE=f"{tmp}/s.json",
                   BLUEGREEN_UPSTREAM_DIR=f"{tmp}/up", BLUEGREEN_INCLUDE_DIR=f"{tmp}/inc")
        commands = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            "bluegreen color next svc": [sys.executable, "-m", "bluegreen", "color", "next", "svc"],
            "bluegreen color current svc": [sys.executable, "-m", "bluegreen", "color", "current",
                                             "svc"],
        }
        for argv in commands.values():  # warm-up
            wall(argv, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                times[name].append(wall(argv, env))
    base = statistics.median(times["python3 -c pass"])
    print(f"{'command':32} {'median ms':>10} {'p90 ms':>8} {'x python':>9}")
    for name, values in times.items():
        med = statistics.median(values)
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        print(f"{name:32} {med * 1000:10.1f} {p90 * 1000:8.1f} {med / base:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
