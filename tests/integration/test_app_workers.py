"""Workers and removed services of an application release, on real Docker, Consul and nginx.

``mailer`` (no port) and ``indexer`` (a port and a health path, no route) are workers: their
new color is created at deploy, started at promotion, and only then is the old one stopped
(a swap, not blue-green). ``extra`` (an internal endpoint nobody calls) is removed by a later
file: it serves until promotion, then leaves the proxy and stops; rollback brings it back.

The tests of this module run in order on one application (each starts from what the previous
one left).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bluegreen_dev.sample_app import build_sample_app_images
from bluegreen_dev.sandbox import Nginx
from tests.integration.conftest import Env, cleanup
from tests.integration.test_reliability import Held

pytestmark = pytest.mark.integration
APP = "wk"
SERVICES = ("api", "web", "mailer", "indexer", "extra")
API = """
  api:
    image: bluegreen-servicea:v1
    labels:
      bluegreen.port: "5000"
      bluegreen.endpoint: api.local
      bluegreen.health-path: /health
"""
WEB = """
  web:
    image: bluegreen-serviceb:{web}
    environment:
      - dep_endpoint=http://api.local
    labels:
      bluegreen.port: "5001"
      bluegreen.route: /
      bluegreen.health-path: /health
      bluegreen.test.http: /
"""
WORKERS = """
  mailer:
    image: bluegreen-servicea:{mailer}
    environment:
      - API=http://api.local
  indexer:
    image: bluegreen-serviceb:{indexer}
    labels:
      bluegreen.port: "5001"
      bluegreen.health-path: /health
"""
EXTRA = """
  extra:
    image: bluegreen-servicea:v1
    labels:
      bluegreen.port: "5000"
      bluegreen.endpoint: extra.local
      bluegreen.health-path: /health
"""


@pytest.fixture(scope="module")
def app(sandbox) -> Iterator[Env]:
    build_sample_app_images()
    nginx = Nginx(sandbox.root / "nginx-workers").start()
    env = Env(sandbox, APP, nginx)
    yield env
    for name in SERVICES:
        cleanup(sandbox, f"{APP}.{name}", nginx)
    requests.delete(f"{sandbox.consul.addr}/v1/kv/{APP}._app?recurse=1", timeout=5)


def compose(tmp_path: Path, web: str = "v1", mailer: str = "v1", indexer: str = "v1",
            extra: bool = True, api: bool = True) -> str:
    text = f"name: {APP}\nservices:" + (API if api else "") + WEB.format(web=web) \
        + WORKERS.format(mailer=mailer, indexer=indexer) + (EXTRA if extra else "")
    path = tmp_path / f"{APP}-{web}-{mailer}-{indexer}-{extra}-{api}.yaml"
    path.write_text(text)
    return str(path)


def states(name: str) -> dict[str, str]:
    """The service's containers by color: ``running``, ``exited``, ``created``."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=bluegreen.service={APP}.{name}",
                          "--format", '{{.Label "bluegreen.color"}} {{.State}}'],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines())


def status(env: Env) -> dict:
    r = env.bg("app", "status", APP, "--json")
    report = json.loads(r.out)
    assert r.code == (1 if report["problems"] else 0), r.err  # problems: exit 1
    return report


def in_proxy(env: Env, name: str) -> bool:
    return any(f"{APP}.{name}" in text for text in env.proxy_files().values())


def body(env: Env) -> str:
    r = requests.get(env.nginx.url + "/", timeout=10)
    return r.text if r.status_code == 200 else f"HTTP {r.status_code}"


def test_first_release_starts_the_workers(app, tmp_path):
    r = app.bg("app", "deploy", "--file", compose(tmp_path))
    assert r.code == 0, r.err
    assert body(app) == "Hello world!"
    assert states("mailer") == {"blue": "running"} and states("indexer") == {"blue": "running"}
    s = status(app)
    assert not s["problems"], s["problems"]
    assert (s["services"]["mailer"]["kind"], s["services"]["mailer"]["live_color"]) == (
        "worker", "blue")
    assert s["services"]["indexer"]["healthy"]["blue"]  # its port is checked by Consul
    assert not in_proxy(app, "mailer") and in_proxy(app, "extra")
    plain = app.bg("app", "status", APP).out
    assert "mailer: worker (swapped at promotion, not blue-green), live blue" in plain


def test_a_paused_release_leaves_the_worker_alone_and_abort_changes_nothing(app, tmp_path):
    r = app.bg("app", "deploy", "--file", compose(tmp_path, web="v2", mailer="v2"),
               "--steps", "50,100", "--confirm")
    assert r.code == 0, r.err
    assert "mailer change (image bluegreen-servicea:v1 -> bluegreen-servicea:v2) blue -> green " \
           "[worker: swapped at promotion, not blue-green]" in r.err
    s = status(app)
    assert s["inflight"]["state"] == "paused" and s["services"]["web"]["proxy_weight"] == 50
    assert states("mailer") == {"blue": "running", "green": "created"}  # waits for promotion
    r = app.bg("app", "abort", APP)
    assert r.code == 0, r.err
    assert states("mailer")["blue"] == "running" and states("mailer")["green"] != "running"
    s = status(app)
    assert s["inflight"] is None and s["live_release"] == 1 and not s["problems"]
    assert body(app) == "Hello world!"


def test_workers_are_swapped_at_promotion(app, tmp_path):
    r = app.bg("app", "deploy", "--file", compose(tmp_path, mailer="v2", indexer="v2"),
               "--steps", "50,100", "--confirm")
    assert r.code == 0, r.err
    assert states("mailer")["blue"] == "running" and states("mailer")["green"] == "created"
    r = app.bg("app", "promote", APP)
    assert r.code == 0, r.err
    assert states("mailer") == {"blue": "exited", "green": "running"}
    assert states("indexer") == {"blue": "exited", "green": "running"}
    s = status(app)
    assert s["live_release"] == 2 and not s["problems"], s["problems"]
    assert s["services"]["indexer"]["healthy"] == {"blue": False, "green": True}
    hist = json.loads(app.bg("app", "history", APP, "--json").out)
    assert hist[-1]["changed"] == {"mailer": "blue -> green", "indexer": "blue -> green"}


def test_a_swap_killed_with_both_colors_running_is_undone_by_the_next_command(app, tmp_path):
    held = Held(app, tmp_path, ["app:worker-started"], "app", "deploy", "--file",
                compose(tmp_path, mailer="v1", indexer="v2"))
    held.wait("app:worker-started")
    assert states("mailer") == {"blue": "running", "green": "running"}  # started, not yet stopped
    held.kill()
    assert status(app)["inflight"]["state"] == "swapping"
    r = app.bg("app", "deploy", "--file", compose(tmp_path, mailer="v2", indexer="v2"))
    assert r.code == 0, r.err
    assert "interrupted release found" in r.err and "nothing changed" in r.out
    assert states("mailer") == {"blue": "exited", "green": "running"}
    s = status(app)
    assert s["inflight"] is None and s["live_release"] == 2 and not s["problems"]


def test_a_removed_endpoint_still_called_is_refused(app, tmp_path):
    before = app.proxy_files()
    # extra.local still declares the .local names: the file alone is invalid (app check)
    r = app.bg("app", "deploy", "--file", compose(tmp_path, mailer="v2", indexer="v2", api=False))
    assert r.code == 2 and "no service declares endpoint 'api.local'" in r.err
    # no .local endpoint left: only the live release knows api.local was one
    assert app.bg("app", "check", "--file", compose(tmp_path, mailer="v2", indexer="v2",
                                                    api=False, extra=False)).code == 0
    r = app.bg("app", "deploy", "--file", compose(tmp_path, mailer="v2", indexer="v2",
                                                  api=False, extra=False))
    assert r.code == 2
    assert "web calls api.local, the endpoint of api, which the file removes" in r.err
    assert "mailer calls api.local" in r.err
    assert app.proxy_files() == before and status(app)["inflight"] is None


def test_removed_service_serves_until_promotion_and_rollback_brings_it_back(app, tmp_path):
    without = compose(tmp_path, mailer="v1", indexer="v2", extra=False)
    before = app.proxy_files()
    r = app.bg("app", "deploy", "--file", without, "--dry-run")
    assert r.code == 0, r.err
    assert "extra remove (not in the file) blue -> - [serves until promotion, then leaves the " \
           "proxy and stops]" in r.err
    assert "mailer change" in r.err and app.proxy_files() == before
    r = app.bg("app", "deploy", "--file", without, "--steps", "50,100", "--confirm")
    assert r.code == 0, r.err
    assert in_proxy(app, "extra") and states("extra") == {"blue": "running"}
    assert status(app)["services"]["extra"]["removing"]
    r = app.bg("app", "promote", APP)
    assert r.code == 0, r.err
    assert not in_proxy(app, "extra") and states("extra") == {"blue": "exited"}
    assert states("mailer") == {"blue": "running", "green": "exited"}
    assert body(app) == "Hello world!"
    s = status(app)
    assert "extra" not in s["services"] and not s["problems"], s["problems"]

    r = app.bg("app", "rollback", APP, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["services"] == ["extra", "mailer"]
    assert in_proxy(app, "extra") and states("extra") == {"blue": "running"}
    assert states("mailer") == {"blue": "exited", "green": "running"}
    s = status(app)
    assert s["live_release"] == 2 and not s["problems"], s["problems"]
    assert s["services"]["extra"]["proxy_color"] == "blue"


def test_rollback_forward_again_removes_it_again(app):
    r = app.bg("app", "rollback", APP, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["dropped"] == ["extra"]
    assert not in_proxy(app, "extra")
    assert states("mailer") == {"blue": "running", "green": "exited"}
    s = status(app)
    assert s["live_release"] == 3 and not s["problems"], s["problems"]


def test_a_rollback_killed_during_its_swap_is_settled_by_the_next_command(app, tmp_path):
    held = Held(app, tmp_path, ["app:worker-started"], "app", "rollback", APP)
    held.kill("app:worker-started")
    assert states("mailer") == {"blue": "running", "green": "running"}
    s = status(app)
    assert s["live_release"] == 2  # recorded before the swap
    assert s["problems"] == ["mailer: worker: release 2 says green, running: blue, green"]
    r = app.bg("app", "deploy", "--file", compose(tmp_path, mailer="v2", indexer="v2"))
    assert r.code == 0, r.err
    assert "nothing changed" in r.out
    assert states("mailer") == {"blue": "exited", "green": "running"}
    assert not status(app)["problems"]
