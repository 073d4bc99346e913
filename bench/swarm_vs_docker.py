"""``bluegreen run`` on a 3-node Docker Swarm against the single Docker host, in one run.

The same sample image pair (v1/v2 alternating, so every run deploys the other color and stops
the old one), the same ``--scale``, the same Consul dev agent; one private nginx per target.
The swarm is the development lab (``bluegreen_dev.swarm_lab``: three dockerds, each in its own
network namespace, images loaded on every node); the single host is the machine's dockerd.
Runs alternate (docker, swarm, docker, ...) so load from others on the machine hits both
alike. Prints the median (and min/max) wall time of the CLI and of each phase, per target.

    sudo PYTHONPATH=pyscripts .venv/bin/python bench/swarm_vs_docker.py [--runs 5] [--scale 3]

Needs root (the lab). Everything it starts is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bluegreen_dev.sandbox import Nginx, Sandbox
from bluegreen_dev.swarm_lab import SwarmLab

PHASES = ("Deploy", "Update proxy", "Run post-integration tests", "stop-old")


def run_once(env: dict[str, str], service: str, image: str, scale: int) -> dict[str, float]:
    """One ``bluegreen run``; the CLI's wall time and its phases' seconds."""
    argv = [sys.executable, "-m", "bluegreen", "run", service, "--image", image, "--scale",
            str(scale), "--http", "/api/v1/books", "--json"]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"run {service} {image} failed ({p.returncode}): {p.stderr[-800:]}")
    summary = json.loads(p.stdout)
    times = {"total (CLI)": wall}
    times |= {ph["phase"]: float(ph["seconds"]) for ph in summary.get("phases", [])
              if ph["phase"] in PHASES}
    return times


def report(results: dict[str, list[dict[str, float]]], scale: int) -> None:
    names = ["total (CLI)", *PHASES]
    print(f"\nbluegreen run, scale {scale}, {len(next(iter(results.values())))} runs per target "
          f"(median [min-max] seconds)")
    print(f"{'':28}" + "".join(f"{t:>24}" for t in results))
    for name in names:
        cells = []
        for runs in results.values():
            values = [r[name] for r in runs if name in r]
            cells.append(f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"
                         if values else "-")
        print(f"{name:28}" + "".join(f"{c:>24}" for c in cells))


def cleanup(sandbox: Sandbox, service: str, nginx: Nginx, lab: SwarmLab | None) -> None:
    nginx.stop()
    if lab is None:
        sandbox.remove_containers(service)
        return
    client = lab.manager.client()
    for svc in client.services.list(filters={"label": f"bluegreen.service={service}"}):
        svc.remove()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bg-swarm-bench-") as tmp:
        root = Path(tmp)
        sandbox = Sandbox(root / "sandbox").start()
        lab = SwarmLab(root / "lab", 3, "bgbench", "10.213.9")
        targets: dict[str, tuple[dict[str, str], str, Nginx, SwarmLab | None]] = {}
        try:
            t0 = time.monotonic()
            lab.start()
            print(f"swarm lab: 3 nodes up in {time.monotonic() - t0:.1f}s", file=sys.stderr)
            for name, swarm in (("docker (1 host)", None), ("swarm (3 nodes)", lab)):
                service = f"bench-{'swarm' if swarm else 'docker'}-{os.getpid() % 10000}"
                nginx = Nginx(root / f"nginx-{service}").start()
                env = sandbox.env(nginx) | {"BLUEGREEN_KEEP_OLD": "0"}
                if swarm:
                    env |= {"DOCKER_HOST": swarm.manager.url, "BLUEGREEN_RUNTIME": "swarm"}
                else:
                    env.pop("DOCKER_HOST", None)
                targets[name] = (env, service, nginx, swarm)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            for i in range(args.runs + 1):  # the first round warms both up: not counted
                image = f"bluegreen-sample:v{1 + i % 2}"
                for name, (env, service, _nginx, _swarm) in targets.items():
                    times = run_once(env, service, image, args.scale)
                    print(f"round {i} {name}: {times['total (CLI)']:.2f}s"
                          + (" (warm-up)" if i == 0 else ""), file=sys.stderr)
                    if i:
                        results[name].append(times)
            report(results, args.scale)
        finally:
            for _env, service, nginx, swarm in targets.values():
                cleanup(sandbox, service, nginx, swarm)
            lab.close()
            sandbox.close()


if __name__ == "__main__":
    main()
