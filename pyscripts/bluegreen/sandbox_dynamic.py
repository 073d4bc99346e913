"""A private nginx in dynamic mode on loopback, for the tests and the benchmark."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from bluegreen import nginx_dynamic
from bluegreen.proxy import LocalNginx
from bluegreen.sandbox import Nginx, free_port, wait_for


@dataclass
class DynamicNginx(Nginx):
    """:class:`bluegreen.sandbox.Nginx` that loads the Lua module and has a control port."""

    control_port: int = 0

    @property
    def control(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    @property
    def state_file(self) -> Path:
        return self.prefix / "state" / "routes.json"

    @property
    def include_path(self) -> Path:
        return self.upstream_dir / nginx_dynamic.INCLUDE_NAME

    def write_conf(self, daemon: bool) -> None:
        super().write_conf(daemon)
        self.control_port = self.control_port or free_port()
        self.conf.write_text(nginx_dynamic.load_module_lines() + self.conf.read_text())
        if not self.include_path.exists():  # the control server, before any service
            nginx_dynamic.write_atomic(self.include_path, nginx_dynamic.render_http(
                [], self.control, self.state_file))

    def controller(self) -> LocalNginx:
        return LocalNginx("nginx", str(self.conf), str(self.prefix), str(self.pid_file))

    def proxy(self, location: str = "/") -> nginx_dynamic.DynamicProxy:
        return nginx_dynamic.DynamicProxy(self.controller(), self.include_path, self.include_dir,
                                          self.control, self.state_file, location)

    def kill(self) -> None:
        """Stop nginx at once (SIGTERM: fast shutdown), and wait until it is gone."""
        pid = int(self.pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "nginx exit", 0.01)
