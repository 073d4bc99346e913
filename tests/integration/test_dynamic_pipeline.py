"""The whole pipeline with ``--nginx-mode dynamic`` on real Docker, Consul and an nginx with the
Lua module, with each ``--nginx-routing``: a switch is a POST (the same nginx workers before and
after; with the routing table, adding the service too), clients on kept-alive connections see
no error, rollback is proxy-only, and nginx restarted comes back routing as recorded."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Env, dynamic_service

pytestmark = pytest.mark.integration
HTTP = ["--http", "/api/v1/books"]


@pytest.fixture(params=["locations", "table"])
def dsvc(sandbox, request) -> Iterator[Env]:
    with dynamic_service(sandbox, request, routing=request.param) as env:
        yield env


def workers(env: Env) -> set[int]:
    return set(env.nginx.controller().workers())


class KeptAlive:
    """One client on one kept-alive connection that never retries: every failure counts."""

    def __init__(self, env: Env) -> None:
        self.port, self.ok, self.failed = env.nginx.port, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/api/v1/books")
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.ok += 1
                else:
                    self.failed.append(resp.status)
            except (OSError, http.client.HTTPException) as exc:
                self.failed.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def __enter__(self) -> KeptAlive:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def test_runs_switch_without_reload_and_without_client_errors(dsvc):
    svc = dsvc
    first = workers(svc)
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", *HTTP)
    assert r.code == 0, r.err
    assert svc.version() == "v1"
    before = workers(svc)
    if svc.nginx.routing == "table":
        assert before == first  # the service added by a POST, not a reload
    with KeptAlive(svc) as client:
        run = svc.popen("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP,
                        "--keep-old", "30")
        svc.wait_for_line(run, "keeping")  # v2 live, v1 kept running for a rollback
        assert svc.version() == "v2"
        r = svc.bg("rollback", svc.service, "--json")
        assert r.code == 0, r.err
        assert run.wait(120) == 0
    assert json.loads(r.out)["proxy_only"] is True
    assert svc.version() == "v1"
    assert workers(svc) == before  # no reload: the same workers served throughout
    assert client.failed == [] and client.ok > 0
    status = json.loads(svc.bg("status", svc.service, "--json").out)
    assert status["proxy"]["color"] == "blue"
    svc.assert_safe()


def test_nginx_restarted_routes_as_recorded(dsvc):
    svc = dsvc
    assert svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", *HTTP).code == 0
    assert svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP).code == 0
    svc.nginx.kill()
    svc.nginx.start()
    assert svc.version() == "v2"
    svc.assert_safe()


def test_dry_run_shows_the_change_and_changes_nothing(dsvc):
    svc = dsvc
    assert svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", *HTTP).code == 0
    assert svc.bg("deploy", svc.service, "--color", "green", "--image",
                  "bluegreen-sample:v2").code == 0
    before = svc.snapshot()
    r = svc.bg("switch", svc.service, "--color", "green", "--dry-run")
    assert r.code == 0, r.err
    assert f"{svc.service}: blue 100%" in r.err and "-> green 100%" in r.err
    assert svc.snapshot() == before and svc.version() == "v1"
