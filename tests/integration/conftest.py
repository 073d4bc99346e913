"""Fixtures on the real components: dockerd, a Consul dev agent and nginx on loopback.

A component that cannot be started is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from bluegreen_dev.sandbox import ConsulAgent, Nginx, Sandbox

ROOT = Path(__file__).resolve().parents[2]
BLUEGREEN = [sys.executable, "-m", "bluegreen"]
_counter = itertools.count()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("sandbox")).start()
    yield sb
    sb.close()


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Env:
    """One service in the sandbox, with the CLI pointed at it."""

    sandbox: Sandbox
    service: str
    nginx: Nginx
    consul: ConsulAgent | None = None  # the sandbox's agent unless the test brings its own
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. the dynamic nginx mode

    @property
    def consul_addr(self) -> str:
        return (self.consul or self.sandbox.consul).addr

    @property
    def consul_kwargs(self) -> dict:
        """``requests`` arguments for the agent (its CA, a client certificate, a token)."""
        return (self.consul or self.sandbox.consul).requests_kwargs()

    @property
    def env(self) -> dict[str, str]:
        return self.sandbox.env(self.nginx) | {"CONSUL_HTTP_ADDR": self.consul_addr} | self.extra_env

    def bg(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Result:
        p = subprocess.run([*BLUEGREEN, *args], env=env or self.env, capture_output=True,
                           text=True, timeout=timeout, check=False)
        return Result(p.returncode, p.stdout, p.stderr)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*BLUEGREEN, *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def get(self, path: str = "/api/v1/books") -> requests.Response:
        return requests.get(self.nginx.url + path, timeout=5)

    def version(self) -> str | None:
        r = self.get()
        return json.loads(r.text)[0]["version"] if r.status_code == 200 else None

    def kv(self, name: str) -> str | None:
        r = requests.get(f"{self.consul_addr}/v1/kv/{self.service}/{name}?raw", **self.consul_kwargs)
        return r.text if r.status_code == 200 else None

    def passing(self, color: str) -> list[dict]:
        r = requests.get(f"{self.consul_addr}/v1/health/service/"
                         f"{self.service}-{color}?passing=1", **self.consul_kwargs)
        return r.json()

    def catalog_services(self) -> list[str]:
        return list(requests.get(f"{self.consul_addr}/v1/catalog/services",
                                 **self.consul_kwargs).json())

    def containers(self) -> dict[str, str]:
        out = subprocess.run(["docker", "ps", "-a", "--filter",
                              f"label=bluegreen.service={self.service}",
                              "--format", "{{.Names}} {{.State}}"],
                             capture_output=True, text=True, check=True).stdout
        return dict(line.split() for line in out.splitlines())

    def proxy_files(self) -> dict[str, str]:
        nginx = self.nginx
        return {str(p): p.read_text() for d in (nginx.upstream_dir, nginx.include_dir)
                for p in sorted(d.glob("*.conf"))}

    def snapshot(self) -> dict:
        """Everything a command could change: nginx files, KV, catalog, containers."""
        kv = requests.get(f"{self.consul_addr}/v1/kv/{self.service}?recurse=1",
                          **self.consul_kwargs)
        return {"files": self.proxy_files(),
                "kv": sorted((k["Key"], k["Value"]) for k in kv.json()) if kv.ok else [],
                "catalog": sorted(self.catalog_services()), "containers": self.containers()}

    def assert_safe(self) -> None:
        """The invariant: the proxy routes to a running, healthy color and the record agrees."""
        status = json.loads(self.bg("status", self.service, "--json").out)
        proxy_color = status["proxy"]["color"]
        assert status["recorded_color"] == proxy_color, status
        assert not status["problems"], status["problems"]
        if proxy_color:
            running = [c for c in status["colors"][proxy_color]["containers"]
                       if c["state"] == "running"]
            assert running, status
            assert self.passing(proxy_color), status
            assert self.get().status_code == 200
        else:
            assert self.get().status_code == 404

    def wait_for_line(self, proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if marker in line:
                return "".join(seen)
        raise AssertionError(f"{marker!r} not seen; got {''.join(seen)}")


def cleanup(sandbox: Sandbox, name: str, nginx: Nginx, consul: ConsulAgent | None = None) -> None:
    nginx.stop()
    sandbox.remove_containers(name)
    consul = consul or sandbox.consul
    agent, kwargs = f"{consul.addr}/v1/agent", consul.requests_kwargs()
    for sid, svc_def in requests.get(f"{agent}/services", **kwargs).json().items():
        if svc_def.get("Meta", {}).get("bluegreen_service") == name:
            requests.put(f"{agent}/service/deregister/{sid}", **kwargs)


def service_name(hint: str) -> str:
    name = f"t{os.getpid() % 1000}-{next(_counter)}-{hint[:16]}".lower()
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name).strip("-")


@pytest.fixture
def svc(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[Env]:
    name = service_name(request.node.name.removeprefix("test_"))
    env = Env(sandbox, name, Nginx(sandbox.root / f"nginx-{name}").start())
    yield env
    cleanup(sandbox, name, env.nginx)


@pytest.fixture(scope="module")
def module_svc(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[Env]:
    name = service_name(request.module.__name__.rsplit(".", 1)[-1])
    env = Env(sandbox, name, Nginx(sandbox.root / f"nginx-{name}").start())
    yield env
    cleanup(sandbox, name, env.nginx)


@contextlib.contextmanager
def dynamic_service(sandbox: Sandbox, request: pytest.FixtureRequest, live: str | None = None,
                    routing: str = "locations", **extra: str) -> Iterator[Env]:
    """A service of its own behind a dynamic nginx of its own (named after the test), with
    ``extra`` in the CLI's environment; ``live``: an image run first (its HTTP tests on
    /api/v1/books); ``routing``: the nginx's --nginx-routing. Both removed afterwards."""
    from bluegreen_dev.dynamic_nginx import DynamicNginx

    name = service_name(request.node.name.removeprefix("test_"))
    nginx = DynamicNginx(sandbox.root / f"nginx-{name}", routing=routing).start()
    env = Env(sandbox, name, nginx, extra_env=nginx.cli_env() | extra)
    try:
        if live:
            r = env.bg("run", name, "--image", live, "--http", "/api/v1/books")
            assert r.code == 0, r.err
        yield env
    finally:
        cleanup(sandbox, name, nginx)
