"""A 3-server Consul cluster plus a client agent, all on loopback, for failover tests.

Servers ``127.0.0.<base+1..n>``, the client agent (what bluegreen talks to) ``127.0.0.<base+n+1>``,
each with Consul's standard ports on its own address (HTTP 8500, server RPC 8300, Serf 8301/
8302); DNS and gRPC are off. ``raft_multiplier`` 1 (production timing, not the default 5) so a
new leader is elected about a second after the old one dies. Uses the cached agent
(``sandbox.consul_binary()``). Development code: no ACLs, no TLS, nothing beyond 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.errors import OperationFailed
from bluegreen_dev.sandbox import consul_binary


def http_get(addr: str, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    import http.client

    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Agent:
    """One Consul agent (server or client) on its own loopback address."""

    name: str
    ip: str
    workdir: Path
    server: bool
    join: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"{self.ip}:8500"

    @property
    def addr(self) -> str:
        """For ``CONSUL_HTTP_ADDR`` / ``ConsulRegistry``."""
        return f"http://{self.http}"

    def requests_kwargs(self) -> dict[str, Any]:
        """``requests`` arguments that reach this agent (plain http, no ACLs), as
        ``sandbox.ConsulAgent.requests_kwargs`` for the agents with TLS and ACLs."""
        return {"timeout": 5}

    @property
    def rpc(self) -> str:
        """How ``/v1/status/leader`` names this server."""
        return f"{self.ip}:8300"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, expect: int) -> None:
        if self.alive:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "perf.json").write_text(json.dumps({"performance": {"raft_multiplier": 1}}))
        argv = [str(consul_binary()), "agent", f"-node={self.name}", f"-bind={self.ip}",
                f"-client={self.ip}", f"-data-dir={self.workdir / 'data'}",
                f"-config-file={self.workdir / 'perf.json'}", "-dns-port=-1", "-grpc-port=-1",
                "-grpc-tls-port=-1", "-ui=false", "-log-level=warn", "-disable-host-node-id",
                "-retry-interval=1s",
                *[f"-retry-join={j}" for j in self.join]]
        if self.server:
            argv += ["-server", f"-bootstrap-expect={expect}"]
        log = open(self.workdir / "consul.log", "ab")  # noqa: SIM115 - handed to the agent
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def leader(self) -> str:
        """The leader's RPC address as this agent sees it ('' for none or no answer)."""
        if not self.alive:
            return ""
        try:
            status, data = http_get(self.http, "/v1/status/leader")
        except OSError:
            return ""
        return str(json.loads(data or b'""')) if status == 200 else ""


@dataclass
class ConsulCluster:
    root: Path
    servers_count: int = 3
    base: int = 20  # servers 127.0.0.21.., client after them
    servers: list[Agent] = field(init=False)
    client: Agent = field(init=False)

    def __post_init__(self) -> None:
        if not (self.base >= 1 and self.base + self.servers_count + 1 <= 254):
            raise OperationFailed("loopback addresses out of range")
        ips = [f"127.0.0.{self.base + i}" for i in range(1, self.servers_count + 2)]
        join = ips[: self.servers_count]
        self.servers = [Agent(f"server{i + 1}", ip, self.root / f"server{i + 1}", True,
                              [j for j in join if j != ip])
                        for i, ip in enumerate(join)]
        self.client = Agent("client", ips[-1], self.root / "client", False, join)

    @property
    def agents(self) -> list[Agent]:
        return [*self.servers, self.client]

    def start(self, timeout: float = 60.0) -> ConsulCluster:
        for agent in self.agents:
            agent.start(self.servers_count)
        self.wait_leader(timeout)
        self._wait(lambda: self._members_alive() == len(self.agents), timeout, "all members alive")
        return self

    def _members_alive(self) -> int:
        _, data = http_get(self.client.http, "/v1/agent/members")
        return sum(1 for m in json.loads(data) if m.get("Status") == 1)

    @staticmethod
    def _wait(predicate: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                if predicate():  # type: ignore[operator]
                    return
            if time.monotonic() >= deadline:
                raise OperationFailed(f"Consul cluster: {what} not reached after {timeout:g}s")
            time.sleep(0.1)

    def leader(self) -> Agent | None:
        """The server that the client agent and every live server agree is leader."""
        views = {a.leader() for a in self.agents if a.alive}
        if len(views) != 1:
            return None
        rpc = views.pop()
        return next((s for s in self.servers if s.rpc == rpc and s.alive), None)

    def wait_leader(self, timeout: float = 30.0, other_than: Agent | None = None) -> Agent:
        found: list[Agent] = []

        def elected() -> bool:
            leader = self.leader()
            if leader is not None and leader is not other_than:
                found.append(leader)
                return True
            return False

        self._wait(elected, timeout, "an agreed leader" + (f" other than {other_than.name}"
                                                           if other_than else ""))
        return found[-1]

    def kill_leader(self) -> Agent:
        """SIGKILL the current leader; return it (``restart`` it later)."""
        leader = self.wait_leader()
        leader.kill()
        return leader

    def restart(self, agent: Agent, timeout: float = 60.0) -> None:
        agent.start(self.servers_count)
        self._wait(lambda: agent.leader() and self._members_alive() == len(self.agents), timeout,
                   f"{agent.name} back in the cluster")

    def close(self) -> None:
        for agent in self.agents:
            agent.kill(signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)
