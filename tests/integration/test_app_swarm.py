"""The seed's application released on ``--runtime swarm`` (the CLI, as users call it) on the
3-node swarm lab (``bluegreen_dev.swarm_lab``), the sandbox's Consul and a private nginx.

serviceB (public route ``/``) calls serviceA through the internal endpoint ``servicea.local``;
nginx serves it on the lab's uplink address (``--internal-listen <subnet>.1:80``), which the
tasks reach from every node. A task's call arrives there from its node's address (the node's
NAT), so the proxy cannot tell the callers of each release apart: a release that would need
version-consistent chains (a caller and its callee both changing) is refused before anything
changes; a frontend release, a backend release (serviceB shared: weights) and a rollback run
under load with 0 failed requests.

The tests of this module run in order on one application (each starts from what the previous
one left). Moments are chosen by what the commands have done, never by sleeps.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bluegreen.runtime.swarm import SwarmRuntime
from bluegreen_dev.dynamic_nginx import KeepAliveClient
from bluegreen_dev.sample_app import build_sample_app_images, sample_app_refs
from bluegreen_dev.sandbox import Nginx, Sandbox
from bluegreen_dev.swarm_lab import SwarmLab
from tests.integration import cluster_fixtures
from tests.integration.conftest import Env, cleanup

pytestmark = pytest.mark.integration
swarm3 = cluster_fixtures.swarm3
APP = "hello-world"
SERVICES = (f"{APP}.servicea", f"{APP}.serviceb")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-world" / "compose.yaml"
OLD, NEW_B, NEW_A = "Hello world!", "Welcome to the world!", "Hello new world!"


@pytest.fixture(scope="module")
def app(sandbox: Sandbox, swarm3: SwarmLab) -> Iterator[Env]:
    build_sample_app_images()
    swarm3.load_images(sample_app_refs())
    nginx = Nginx(sandbox.root / "nginx-app-swarm").start()
    env = Env(sandbox, APP, nginx, extra_env={
        "DOCKER_HOST": swarm3.manager.url, "BLUEGREEN_RUNTIME": "swarm",
        "BLUEGREEN_INTERNAL_LISTEN": f"{swarm3.subnet}.1:80"})
    yield env
    rt = SwarmRuntime(swarm3.manager.url)
    for service in SERVICES:
        for color in ("blue", "green"):
            rt.remove(service, color)
        cleanup(sandbox, service, nginx)
    for prefix in (f"{APP}._app", *SERVICES):
        requests.delete(f"{sandbox.consul.addr}/v1/kv/{prefix}?recurse=1", timeout=5)


def compose(tmp_path: Path, a: str = "v1", b: str = "v1") -> str:
    """The example with 2 tasks per service, serviceB's test accepting either backend."""
    text = EXAMPLE.read_text().replace("bluegreen-servicea:v1", f"bluegreen-servicea:{a}")
    text = text.replace("bluegreen-serviceb:v1", f"bluegreen-serviceb:{b}")
    text = text.replace("replicas: 3", "replicas: 2")
    path = tmp_path / f"compose-{a}-{b}.yaml"
    path.write_text(text)
    return str(path)


def body(env: Env) -> str:
    r = requests.get(env.nginx.url + "/", timeout=10)
    return r.text if r.status_code == 200 else f"HTTP {r.status_code}"


@contextlib.contextmanager
def load(env: Env) -> Iterator[KeepAliveClient]:
    """Users on the public route during a whole command, never retrying, each request on a
    new connection (a reload ends the old workers' connections): every answer must be 200."""
    client = KeepAliveClient(env.nginx.port, keep_alive=False)
    client.start()
    client.wait_requests(1)
    try:
        yield client
    finally:
        client.stop()
    assert client.errors == 0, client.error_kinds
    assert sum(client.seen.values()) > 0


def status(env: Env) -> dict:
    r = env.bg("app", "status", APP, "--json")
    report = json.loads(r.out)
    assert r.code == (1 if report["problems"] else 0), r.err
    return report


def assert_clean(env: Env, colors: dict[str, str]) -> None:
    """``app status`` exits 0 with no problem; each service routed, at 100%, to its color."""
    r = env.bg("app", "status", APP, "--json")
    assert r.code == 0, (r.out, r.err)
    s = json.loads(r.out)
    assert not s["problems"] and s["inflight"] is None, s
    assert {n: (e["proxy_color"], e["proxy_weight"]) for n, e in s["services"].items()} == {
        n: (c, 100) for n, c in colors.items()}, s


def tasks(lab: SwarmLab, service: str) -> set[str]:
    return {c.id for c in SwarmRuntime(lab.manager.url).containers(service) if c.running}


def test_first_release_runs_on_the_swarm(app: Env, swarm3: SwarmLab, tmp_path: Path) -> None:
    r = app.bg("app", "deploy", "--file", compose(tmp_path))
    assert r.code == 0, r.err
    assert "release 1 is live" in r.out
    assert body(app) == OLD  # serviceB reached serviceA through nginx's internal endpoint
    assert_clean(app, {"servicea": "blue", "serviceb": "blue"})
    found = SwarmRuntime(swarm3.manager.url).app_containers(APP)
    assert len([c for c in found if c.running]) == 4, found
    assert {(c.service, c.label("bluegreen.release"), json.loads(c.label("bluegreen.record") or
             "{}").get("name")) for c in found} == {(f"{APP}.servicea", "1", "servicea"),
                                                  (f"{APP}.serviceb", "1", "serviceb")}
    assert len({c.address for c in found}) > 1  # spread over the nodes


def test_frontend_release_under_load(app: Env, swarm3: SwarmLab, tmp_path: Path) -> None:
    backend = tasks(swarm3, f"{APP}.servicea")
    with load(app) as users:
        r = app.bg("app", "deploy", "--file", compose(tmp_path, b="v2"), "--steps", "50,100")
    assert r.code == 0, r.err
    assert "servicea keep" in r.err and "serviceb change" in r.err
    assert set(users.seen) <= {OLD, NEW_B}, users.seen
    assert users.seen[NEW_B] > 0
    assert body(app) == NEW_B
    assert tasks(swarm3, f"{APP}.servicea") == backend  # unchanged: not redeployed
    assert_clean(app, {"servicea": "blue", "serviceb": "green"})


def test_rollback_under_load(app: Env) -> None:
    with load(app) as users:
        r = app.bg("app", "rollback", APP, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["services"] == ["serviceb"]
    assert set(users.seen) <= {OLD, NEW_B}, users.seen
    assert body(app) == OLD
    assert_clean(app, {"servicea": "blue", "serviceb": "blue"})


def test_caller_and_callee_changing_together_is_refused(app: Env, tmp_path: Path) -> None:
    """Chains would need the proxy to tell each release's serviceB tasks apart by address;
    on the swarm they call from their node's address: refused (exit 2), nothing changed."""
    before = (app.proxy_files(), status(app))
    for extra in (("--dry-run",), ()):
        r = app.bg("app", "deploy", "--file", compose(tmp_path, a="v2", b="v2"), *extra)
        assert r.code == 2, (r.out, r.err)
        assert "serviceb calls servicea.local and both change" in r.err, r.err
        assert "release servicea first, then serviceb" in r.err
    assert (app.proxy_files(), status(app)) == before
    assert body(app) == OLD


def test_backend_release_under_load(app: Env, swarm3: SwarmLab, tmp_path: Path) -> None:
    """serviceA alone: the shared serviceB sends each step's share of its calls to the new
    serviceA (no chain needed: serviceB has one release)."""
    frontend = tasks(swarm3, f"{APP}.serviceb")
    with load(app) as users:
        r = app.bg("app", "deploy", "--file", compose(tmp_path, a="v2"), "--steps", "50,100")
    assert r.code == 0, r.err
    assert "release 3 is live" in r.out  # never 2 again: release 2 (rolled back from) still runs
    assert set(users.seen) <= {OLD, NEW_A}, users.seen
    assert body(app) == NEW_A
    assert tasks(swarm3, f"{APP}.serviceb") == frontend
    assert_clean(app, {"servicea": "green", "serviceb": "blue"})


def test_records_lost_are_rebuilt_from_the_tasks(app: Env, swarm3: SwarmLab,
                                                 tmp_path: Path) -> None:
    """The registry lost the application's records while serviceB's release 2 (rolled back
    from) still runs beside release 3: the next command rebuilds release 3 from the tasks'
    labels and what the proxy routes, and changes nothing (under load: 0 failed)."""
    running = {s: tasks(swarm3, s) for s in SERVICES}
    requests.delete(f"{app.consul_addr}/v1/kv/{APP}._app?recurse=1", timeout=5)
    with load(app) as users:
        r = app.bg("app", "deploy", "--file", compose(tmp_path, a="v2"))
    assert r.code == 0, r.err
    assert "nothing changed" in r.out, (r.out, r.err)
    assert "app-live (missing) rebuilt: release 3 {'servicea': 'green', 'serviceb': 'blue'}" \
        in r.err, r.err
    assert "app-inflight rebuilt" not in r.err
    assert set(users.seen) == {NEW_A}, users.seen
    assert {s: tasks(swarm3, s) for s in SERVICES} == running
    assert_clean(app, {"servicea": "green", "serviceb": "blue"})
