"""A second dockerd that speaks the Engine API over TLS on a loopback TCP port, client
certificates verified (``--tlsverify``), as a production engine at ``tcp://host:2376``.

Everything is its own: data root, exec root (with its managed containerd), pidfile, a unix
socket for loading images, a bridge ``bgtls<N>`` on 10.215.<N>.0/24 without iptables rules
(published ports go through docker-proxy). Needs root, like the sandbox's dockerd.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen.errors import OperationFailed
from bluegreen_dev.sandbox import free_port, wait_for


@dataclass
class TLSDockerd:
    root: Path
    ca: Path  # the CA that signed the server's and the clients' certificates
    server: Any  # bluegreen_dev.certs.Pair: the engine's certificate (IP 127.0.0.1)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def bridge(self) -> str:
        return f"bgtls{self.port % 10000}"

    def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``docker`` on this engine's unix socket (no TLS): images, clean-up."""
        return subprocess.run(["docker", "-H", f"unix://{self.socket}", *args],
                              capture_output=True, text=True, check=False)

    def start(self, timeout: float = 60.0) -> TLSDockerd:
        self.port = self.port or free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        subnet = f"10.215.{self.port % 250 + 1}"
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True,
                       capture_output=True)
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - handed to the daemon
        self.proc = subprocess.Popen(
            [shutil.which("dockerd") or "/usr/sbin/dockerd",
             f"--data-root={self.root / 'data'}", f"--exec-root={self.root / 'exec'}",
             f"--pidfile={self.root / 'docker.pid'}", f"-H=unix://{self.socket}",
             f"-H=tcp://127.0.0.1:{self.port}", "--tlsverify", f"--tlscacert={self.ca}",
             f"--tlscert={self.server.cert}", f"--tlskey={self.server.key}",
             f"--bridge={self.bridge}", "--iptables=false", "--ip-masq=false",
             "--storage-driver=overlay2", "--log-level=warn"],
            stdout=log, stderr=log, start_new_session=True)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise OperationFailed(f"the TLS dockerd exited; see {self.root / 'dockerd.log'}")
            return self.local("version").returncode == 0

        try:
            wait_for(answers, timeout, "the TLS dockerd", 0.2)
        except OperationFailed:
            self.stop()
            raise
        return self

    def load(self, *images: str) -> None:
        """Copy ``images`` from the main engine (no registry)."""
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", f"unix://{self.socket}", "load"], stdin=save.stdout,
                              capture_output=True, text=True, check=False)
        save.wait()
        if save.returncode or load.returncode:
            raise OperationFailed(f"cannot load {images} into the TLS dockerd: {load.stderr[-300:]}")

    def stop(self) -> None:
        """Remove its containers, stop it, remove its bridge and files."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.local("ps", "-aq").stdout.split()
            if ids:
                self.local("rm", "-f", *ids)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            for sub in ("exec", "data"):
                subprocess.run(["umount", "-R", str(self.root / sub)], capture_output=True,
                               check=False)
        shutil.rmtree(self.root, ignore_errors=True)
