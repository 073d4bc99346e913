"""``--partial`` for application releases on two real proxies (a: a dynamic nginx, b: an nginx
reloaded): with b down, ``app deploy`` and ``app rollback`` are refused without it and change
nothing; with it they change a, record b behind under ``<app>._app/proxies-behind``;
``app status`` names b once it is back, and ``app recover`` (or the next app command) brings it
in line first. The tests run in order on one application."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bluegreen_dev.dynamic_nginx import DynamicNginx
from bluegreen_dev.sandbox import Nginx
from tests.integration.conftest import Env, cleanup
from tests.integration.test_proxy_faults import proxy_b

pytestmark = pytest.mark.integration
APP = "partialapp"
SERVICES = (f"{APP}.web", f"{APP}.api")
COMPOSE = """name: {app}
services:
  web:
    image: bluegreen-sample:{v}
    labels:
      bluegreen.port: "8080"
      bluegreen.route: /
      bluegreen.health-path: /
  api:
    image: bluegreen-sample:{v}
    labels:
      bluegreen.port: "8080"
      bluegreen.route: /api/
      bluegreen.health-path: /
"""


def compose(tmp: Path, version: str) -> str:
    path = tmp / f"{version}.yaml"
    path.write_text(COMPOSE.format(app=APP, v=version))
    return str(path)


def served(nginx: Nginx) -> tuple[str | None, str | None]:
    """The versions of web (``/``) and api (``/api/v1/books``) through ``nginx``."""
    web = requests.get(nginx.url + "/", timeout=5)
    api = requests.get(nginx.url + "/api/v1/books", timeout=5)
    return (web.text.split()[-1] if web.status_code == 200 else None,
            json.loads(api.text)[0]["version"] if api.status_code == 200 else None)


def behind_record(env: Env) -> dict | None:
    r = requests.get(f"{env.consul_addr}/v1/kv/{APP}._app/proxies-behind?raw",
                     **env.consul_kwargs)
    return r.json() if r.status_code == 200 else None


class Pair:
    def __init__(self, env: Env, a: DynamicNginx, b: Nginx, tmp: Path) -> None:
        self.env, self.a, self.b, self.tmp = env, a, b, tmp

    def both(self) -> tuple[tuple[str | None, str | None], tuple[str | None, str | None]]:
        return served(self.a), served(self.b)


@pytest.fixture(scope="module")
def pair(sandbox, tmp_path_factory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("apppartial")
    a = DynamicNginx(tmp / "nginx-a").start()
    b = Nginx(tmp / "nginx-b").start()
    env = Env(sandbox, APP, a,
              extra_env=a.cli_env() | {"BLUEGREEN_PROXY": f"a=dynamic\n{proxy_b(b)}"})
    r = env.bg("app", "deploy", "--file", compose(tmp, "v1"))
    assert r.code == 0, r.err
    p = Pair(env, a, b, tmp)
    assert p.both() == (("v1", "v1"), ("v1", "v1"))
    yield p
    b.stop()
    for service in SERVICES:
        cleanup(sandbox, service, a)
    requests.delete(f"{env.consul_addr}/v1/kv/{APP}._app?recurse=1", timeout=5)


def test_app_deploy_with_a_proxy_down_is_refused_without_partial(pair):
    pair.b.stop()
    r = pair.env.bg("app", "deploy", "--file", compose(pair.tmp, "v2"))
    assert r.code == 3, r.err
    assert "proxy b (nginx) unreachable" in r.err and "--partial" in r.err
    assert served(pair.a) == ("v1", "v1") and behind_record(pair.env) is None


def test_app_deploy_partial_changes_a_and_records_b_behind(pair):
    r = pair.env.bg("app", "deploy", "--file", compose(pair.tmp, "v2"), "--partial")
    assert r.code == 0, r.err
    assert served(pair.a) == ("v2", "v2")
    record = behind_record(pair.env)
    assert record is not None and set(record["proxies"]) == {"b"}
    assert {r["service"] for r in record["proxies"]["b"]["routes"]} == set(SERVICES)
    pair.b.start()  # back with what it served before: the old release
    assert served(pair.b) == ("v1", "v1")
    status = pair.env.bg("app", "status", APP, "--json")
    assert status.code == 1, status.err
    assert "proxy b is behind since" in status.out + status.err


def test_app_recover_brings_b_in_line(pair):
    r = pair.env.bg("app", "recover", APP)
    assert r.code == 0, r.err
    assert "proxy b, behind since" in r.out + r.err and "brought in line" in r.out + r.err
    assert pair.both() == (("v2", "v2"), ("v2", "v2"))
    assert behind_record(pair.env) is None
    assert pair.env.bg("app", "status", APP).code == 0


def test_app_rollback_partial_then_the_next_command_brings_b_in_line(pair):
    pair.b.stop()
    refused = pair.env.bg("app", "rollback", APP)
    assert refused.code == 3 and "--partial" in refused.err, refused.err
    assert served(pair.a) == ("v2", "v2")
    r = pair.env.bg("app", "rollback", APP, "--partial")
    assert r.code == 0, r.err
    assert served(pair.a) == ("v1", "v1")
    pair.b.start()
    assert served(pair.b) == ("v2", "v2")  # behind: still the release rolled back from
    r = pair.env.bg("app", "deploy", "--file", compose(pair.tmp, "v2"))
    assert r.code == 0, r.err
    assert "brought in line" in r.out + r.err
    assert pair.both() == (("v2", "v2"), ("v2", "v2"))
    assert behind_record(pair.env) is None
