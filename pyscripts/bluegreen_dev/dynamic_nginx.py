"""A private nginx in dynamic mode on loopback, for the tests and the benchmark."""

from __future__ import annotations

import collections
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen import templates
from bluegreen.proxy import dynamic as nginx_dynamic
from bluegreen.proxy.nginx import LocalNginx, write_atomic
from bluegreen_dev.sandbox import Nginx, free_port, wait_for


@dataclass
class DynamicNginx(Nginx):
    """:class:`bluegreen.sandbox.Nginx` that loads the Lua module and has a control port."""

    control_port: int = 0
    control_unix: bool = False  # the control server on ``<prefix>/control/control.sock`` instead
    setup: bool = True  # write bluegreen's include before starting (False: as a user's nginx)
    routing: str = "locations"  # bluegreen's --nginx-routing

    @property
    def control(self) -> str:
        if self.control_unix:
            return f"unix:{self.prefix / 'control' / 'control.sock'}"
        return f"127.0.0.1:{self.control_port}"

    @property
    def secret_file(self) -> Path:
        return Path(nginx_dynamic.secret_path(self.state_file))

    def secret_headers(self) -> dict[str, str]:
        """The control secret's header (for requests the tests make by hand)."""
        return {nginx_dynamic.SECRET_HEADER: nginx_dynamic.read_secret(self.secret_file) or ""}

    @property
    def state_file(self) -> Path:
        return self.prefix / "state" / "routes.json"

    def cli_env(self) -> dict[str, str]:
        """The environment that points the CLI at this nginx in the dynamic mode."""
        return {"BLUEGREEN_NGINX_MODE": "dynamic", "BLUEGREEN_NGINX_CONTROL": self.control,
                "BLUEGREEN_NGINX_STATE_FILE": str(self.state_file),
                "BLUEGREEN_NGINX_ROUTING": self.routing}

    @property
    def include_path(self) -> Path:
        return self.upstream_dir / nginx_dynamic.INCLUDE_NAME

    def write_conf(self, daemon: bool) -> None:
        super().write_conf(daemon)
        self.control_port = self.control_port or free_port()
        self.conf.write_text(nginx_dynamic.load_module_lines() + self.conf.read_text())
        if self.setup and not self.include_path.exists():  # the control server, before any service
            nginx_dynamic.ensure_secret(self.secret_file)
            nginx_dynamic.private_socket_dir(self.control)
            write_atomic(self.include_path, nginx_dynamic.render_http(
                [], self.control, self.state_file, table=self.routing == "table"))
            if self.routing == "table":
                write_atomic(self.include_dir / nginx_dynamic.TABLE_NAME,
                             templates.render_keyed(nginx_dynamic.TABLE_TEMPLATE))

    def start(self) -> DynamicNginx:
        """Start, and return once all workers run (a reload right after sees them as old)."""
        super().start()
        ctl = self.controller()
        wait_for(lambda: list(ctl.workers().values()) == [False] * self.workers, 10, "nginx workers",
                 0.005)
        return self

    def controller(self) -> LocalNginx:
        return LocalNginx("nginx", str(self.conf), str(self.prefix), str(self.pid_file))

    def proxy(self, location: str = "/", internal_listen: str = "172.17.0.1:80"
              ) -> nginx_dynamic.DynamicProxy:
        return nginx_dynamic.DynamicProxy(self.controller(), self.include_path, self.include_dir,
                                          self.control, self.state_file, location,
                                          internal_listen=internal_listen, routing=self.routing)

    def kill(self) -> None:
        """Stop nginx at once (SIGTERM: fast shutdown), and wait until it is gone."""
        pid = int(self.pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "nginx exit", 0.01)


_BACKEND = """
import http.server, os, sys, time
name, port, gate = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        while self.path == "/hold" and not os.path.exists(gate):
            time.sleep(0.005)
        body = name
        if self.path.startswith("/echo"):  # what reached the backend
            body = name + b" " + self.path.encode() + b" " + "|".join(
                f"{k}: {v}" for k, v in self.headers.items()).encode()
        self.send_response(500 if self.path == "/fail" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True
    def handle_error(self, request, client_address):
        pass  # a client gone mid-answer (nginx aborting at the end of a load run)
S(("127.0.0.1", port), H).serve_forever()
"""


@dataclass
class Backend:
    """A tiny HTTP server on 127.0.0.1 (its own process) answering every GET and POST with its
    name (``/fail``: with status 500; ``/echo...``: its name, the path and the headers it
    got); ``GET /hold`` answers only once the file ``gate`` exists."""

    name: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    gate: str = "/nonexistent"

    def start(self) -> Backend:
        self.port = self.port or free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", _BACKEND, self.name, str(self.port),
                                      self.gate])

        def up() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_for(up, 10, f"backend {self.name}", 0.02)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class KeepAliveClient(threading.Thread):
    """GETs in a loop on ONE persistent connection, never retrying: every failed request is
    counted (and the connection reopened). ``seen`` counts responses by body; ``timeline`` has
    each request's end (``time.perf_counter()``) and its body, or ``"failed"``. ``keep_alive``
    False: a new connection for each request (what survives an nginx reload)."""

    def __init__(self, port: int, path: str = "/", keep_alive: bool = True) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.keep_alive = port, path, keep_alive
        self.requests = self.errors = 0
        self.seen: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self.error_kinds: collections.Counter[str] = collections.Counter()
        self.timeline: list[tuple[float, str]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._halt.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                if resp.status != 200:
                    raise http.client.HTTPException(f"status {resp.status}")
                self.seen[body] += 1
            except (OSError, http.client.HTTPException) as exc:
                body = "failed"
                self.errors += 1
                self.error_kinds[type(exc).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            if not self.keep_alive:
                conn.close()  # the next request opens a new connection
            end = time.perf_counter()
            self.latencies.append(end - t0)
            self.timeline.append((end, body))
            self.requests += 1
        conn.close()

    def wait_requests(self, n: int, timeout: float = 30.0) -> None:
        """Wait until this client has made ``n`` more requests."""
        target = self.requests + n
        wait_for(lambda: self.requests >= target, timeout, f"{n} client requests", 0.001)

    def stop(self) -> None:
        self._halt.set()
        self.join(15)


_WRK_ERRORS_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests, socket errors (by kind), non-2xx/3xx and latency percentiles of ``wrk --latency``."""
    m = _WRK_ERRORS_RE.search(out)
    counts = [int(g) for g in m.groups()] if m else [0, 0, 0, 0]
    kinds = dict(zip(("connect", "read", "write", "timeout"), counts, strict=True))
    requests = re.search(r"(\d+) requests in", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    pct = {}
    for p, value, unit in re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)$", out, re.M):
        pct[p] = float(value) * _UNIT_MS[unit]
    return {"requests": int(requests.group(1)) if requests else 0, "socket_errors": sum(counts),
            "socket_error_kinds": kinds, "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "p50_ms": pct.get("50"), "p99_ms": pct.get("99")}
