"""A bad release stopped by its gate (issue 21): the new color fails 5% of its requests; at its
10% step the gate (``--max-error-rate 1``) must undo it within one window, and the share of all
requests that got a 5xx must stay under 0.5%.

A private sandbox (dockerd, Consul, the dynamic nginx) on loopback. ``bluegreen-sample:v1``
serves; Python clients on kept-alive connections (not retrying) request through nginx all the
time, every 20th request of each to ``/cgi-bin/fail`` (the ``flaky`` sample answers it 500, the
others 404): so the new color fails 5% of the requests it gets. Then ``bluegreen run --image
bluegreen-sample:flaky --steps 10,100 --step-wait W --max-error-rate 1 --min-requests N``.
Figures: requests and 5xx during the run (from its start to its end) and while the new color
was routed, the time from the switch to 10% until the proxy was back, against the window.

    PYTHONPATH=pyscripts .venv/bin/python bench/bad_release.py [--step-wait 10] [--clients 4]
        [--plot docs/bench-bad-release.png]

``--plot``: the clients' requests/s and 5xx over time (0.5 s bins), the switch to 10%, the
gate's verdict and the proxy back on the old release marked; needs matplotlib, a bench-only
extra: ``.venv/bin/pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bluegreen_dev.dynamic_nginx import DynamicNginx
from bluegreen_dev.sandbox import Sandbox

SVC = "bench-bad-release"
BG = [sys.executable, "-m", "bluegreen"]


class Clients:
    """``n`` clients, each on one kept-alive connection; every answer kept as (time, status)."""

    def __init__(self, port: int, n: int, fail_every: int = 20) -> None:
        self.port, self.fail_every = port, fail_every
        self.answers: list[list[tuple[float, int]]] = [[] for _ in range(n)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True)
                         for i in range(n)]

    def _loop(self, index: int) -> None:
        seen = self.answers[index]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        i = index  # the clients' failing requests do not come at once
        while not self._stop.is_set():
            i += 1
            path = "/cgi-bin/fail" if i % self.fail_every == 0 else "/api/v1/books"
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                seen.append((time.monotonic(), resp.status))
            except (OSError, http.client.HTTPException):
                seen.append((time.monotonic(), 0))  # no answer: counted as a failure
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def start(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def timeline(self, origin: float, width: float) -> list[tuple[float, int, int]]:
        """(seconds since ``origin`` of each bin, answers, 5xx or no answer) per ``width`` s."""
        bins: dict[int, list[int]] = {}
        for answers in self.answers:
            for t, s in answers:
                row = bins.setdefault(int((t - origin) // width), [0, 0])
                row[0] += 1
                row[1] += s >= 500 or s == 0
        return [(k * width, n, bad) for k, (n, bad) in sorted(bins.items())]

    def between(self, start: float, end: float) -> tuple[int, int]:
        """(answers, 5xx or no answer) between two instants."""
        got = [s for answers in self.answers for t, s in answers if start <= t <= end]
        return len(got), sum(1 for s in got if s >= 500 or s == 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-wait", type=float, default=10.0)
    ap.add_argument("--min-requests", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--json", help="write the figures there too")
    ap.add_argument("--plot", help="draw requests/s and 5xx over time to this PNG (matplotlib)")
    args = ap.parse_args()
    if args.plot:
        import matplotlib  # noqa: F401  (missing: say so before the run, not after)
    with tempfile.TemporaryDirectory(prefix="bg-bad-release-") as tmp:
        root = Path(tmp)
        sandbox = Sandbox(root / "sandbox").start()
        nginx = DynamicNginx(root / "nginx").start()
        env = sandbox.env(nginx) | {
            "BLUEGREEN_NGINX_MODE": "dynamic", "BLUEGREEN_NGINX_CONTROL": nginx.control,
            "BLUEGREEN_NGINX_STATE_FILE": str(nginx.state_file)}
        try:
            first = subprocess.run([*BG, "run", SVC, "--image", "bluegreen-sample:v1"], env=env,
                                   capture_output=True, text=True, check=False)
            if first.returncode:
                print(first.stderr, file=sys.stderr)
                return 1
            figures = release(env, nginx.port, args)
        finally:
            nginx.stop()
            sandbox.remove_containers(SVC)
            sandbox.close()
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def release(env: dict[str, str], port: int, args: argparse.Namespace) -> dict[str, object]:
    clients = Clients(port, args.clients).start()
    time.sleep(1.0)  # load first: the release starts under it (a figure, not a verdict)
    argv = [*BG, "run", SVC, "--image", "bluegreen-sample:flaky", "--http", "/api/v1/books",
            "--steps", "10,100", "--step-wait", str(args.step_wait), "--max-error-rate", "1",
            "--min-requests", str(args.min_requests), "--min-requests-wait", "60"]
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    marks: dict[str, float] = {}
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip())
        now = time.monotonic()
        if "10% to the new color" in line:
            marks["switch"] = now
        elif line.startswith("gate at 10%"):
            marks["gate"] = now
            gate_line = line.strip()
        elif "proxy switched back" in line:
            marks["back"] = now
    code = proc.wait()
    end = time.monotonic()
    time.sleep(1.0)
    clients.stop()
    if args.plot:
        plot(clients.timeline(start, 0.5), {k: v - start for k, v in marks.items()},
             end - start, args, Path(args.plot))
    total, bad = clients.between(start, end)
    routed, routed_bad = clients.between(marks.get("switch", end), marks.get("back", end))
    return {
        "exit": code, "aborted": code == 1 and "back" in marks,
        "step_wait_s": args.step_wait, "clients": args.clients,
        "requests_during_run": total, "5xx_during_run": bad,
        "5xx_share_during_run_pct": round(100 * bad / total, 3) if total else None,
        "requests_at_10pct": routed, "5xx_at_10pct": routed_bad,
        "switch_to_back_s": round(marks["back"] - marks["switch"], 2)
        if {"back", "switch"} <= marks.keys() else None,
        "run_s": round(end - start, 2), "gate_line": gate_line if "gate" in marks else None,
        "error": lines[-1] if lines else "",
    }


def plot(bins: list[tuple[float, int, int]], marks: dict[str, float], run_s: float,
         args: argparse.Namespace, path: Path) -> None:
    """Requests/s and 5xx/s of the clients over time, the release's moments marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.5
    bins = bins[:-1]  # the last bin ends when the clients stop: partial
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), dpi=110, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    xs = [t for t, _, _ in bins]
    top.step(xs, [n / width for _, n, _ in bins], where="post", color="#1f77b4",
             label="requests/s (all answers)")
    bottom.bar(xs, [bad / width for _, _, bad in bins], width=width, align="edge",
               color="#d62728", linewidth=0, label="5xx (or no answer)/s")
    labels = {"switch": ("10% to the new color", "#2ca02c"),
              "gate": ("the gate's verdict", "#ff7f0e"),
              "back": ("abort: the proxy back on the old color", "#000000")}
    for key, (text, color) in labels.items():
        if key in marks:
            for ax in (top, bottom):
                ax.axvline(marks[key], color=color, linewidth=1.2, linestyle="--",
                           label=f"{text} ({marks[key]:.1f} s)" if ax is top else None)
    if {"switch", "back"} <= marks.keys():
        bottom.axvspan(marks["switch"], marks["back"], color="#2ca02c", alpha=0.08,
                       label="the new color routed (10%)")
    top.axvline(run_s, color="#7f7f7f", linewidth=0.8, label=f"the run ends ({run_s:.1f} s)")
    top.set_ylabel("requests/s")
    bottom.set_ylabel("5xx/s")
    bottom.set_xlabel(f"seconds since `bluegreen run` started ({args.clients} keep-alive "
                      f"clients, every 20th request to /cgi-bin/fail; --step-wait "
                      f"{args.step_wait:g})")
    top.set_title("A bad release (fails 5% of its requests) stopped by its gate at 10%")
    top.set_ylim(bottom=0)
    bottom.set_ylim(bottom=0)
    top.legend(loc="lower left", fontsize=8)
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
