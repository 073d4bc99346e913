"""The seed's application releases on real Docker, Consul and nginx, in both nginx modes:
serviceB (public route) calls serviceA through the internal endpoint ``servicea.local``, which
nginx serves on Docker's bridge gateway. Only changed services get a new color; the traffic of
every changed service moves in one proxy change per step (in the dynamic mode a POST: the same
nginx workers throughout); a paused release blocks single-service commands and is promoted or
aborted; a killed release is undone by the next command; a dry run shows the first step's
proxy change and changes nothing.

The tests of this module run in order on one application per nginx mode (each starts from
what the previous one left).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bluegreen_dev.dynamic_nginx import DynamicNginx, KeepAliveClient
from bluegreen_dev.sample_app import build_sample_app_images
from bluegreen_dev.sandbox import Nginx
from tests.integration.conftest import Env, cleanup
from tests.integration.test_reliability import Held

pytestmark = pytest.mark.integration
APP = "hello-world"
SERVICES = (f"{APP}.servicea", f"{APP}.serviceb")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-world" / "compose.yaml"


@pytest.fixture(scope="module", params=["local", "dynamic", "dynamic-table"])
def app(sandbox, request) -> Iterator[Env]:
    build_sample_app_images()
    mode = request.param
    if mode.startswith("dynamic"):  # dynamic-table: --nginx-routing table
        nginx = DynamicNginx(sandbox.root / f"nginx-app-{mode}",
                             routing="table" if mode == "dynamic-table" else "locations").start()
        extra = nginx.cli_env()
    else:
        nginx, extra = Nginx(sandbox.root / "nginx-app").start(), {}
    env = Env(sandbox, APP, nginx, extra_env=extra)
    yield env
    for service in SERVICES:
        cleanup(sandbox, service, nginx)
    for prefix in (f"{APP}._app", *SERVICES):
        requests.delete(f"{sandbox.consul.addr}/v1/kv/{prefix}?recurse=1", timeout=5)


def dynamic(env: Env) -> bool:
    return isinstance(env.nginx, DynamicNginx)


def compose(tmp_path: Path, a: str = "v1", b: str = "v1", b_body: str = "world!$") -> str:
    text = EXAMPLE.read_text().replace("bluegreen-servicea:v1", f"bluegreen-servicea:{a}")
    text = text.replace("bluegreen-serviceb:v1", f"bluegreen-serviceb:{b}")
    text = text.replace('bluegreen.test.expect-body: "world!$"', f'bluegreen.test.expect-body: "{b_body}"')
    path = tmp_path / f"compose-{a}-{b}.yaml"
    path.write_text(text)
    return str(path)


def body(env: Env) -> str:
    r = requests.get(env.nginx.url + "/", timeout=10)
    return r.text if r.status_code == 200 else f"HTTP {r.status_code}"


def ids(env: Env, service: str) -> set[str]:
    import docker

    found = docker.from_env().containers.list(filters={"label": f"bluegreen.service={service}"})
    return {c.id for c in found}


@contextlib.contextmanager
def load(env: Env) -> Iterator[KeepAliveClient]:
    """Users through the proxy during a release, never retrying: every answer must be 200 and
    allowed. In the dynamic mode on ONE kept-alive connection, and the nginx workers must be
    the same after the release (no reload); in the reload mode each request on a new
    connection (a reused one can meet an old worker closing it)."""
    client = KeepAliveClient(env.nginx.port, keep_alive=dynamic(env))
    workers = set(env.nginx.controller().workers()) if dynamic(env) else set()
    client.start()
    client.wait_requests(1)
    try:
        yield client
    finally:
        client.stop()
    assert client.errors == 0, client.error_kinds
    assert sum(client.seen.values()) > 0
    if dynamic(env):
        assert set(env.nginx.controller().workers()) == workers  # no reload


def ends_on(env: Env, action: str, served: str, allowed: set[str]) -> None:
    """``app ACTION`` under load: every answer one of ``allowed`` (never a mix of releases),
    then ``served`` alone, and no chains left (the colors left behind have stopped)."""
    with load(env) as users:
        r = env.bg("app", action, APP)
    assert r.code == 0, r.err
    assert set(users.seen) <= allowed
    assert body(env) == served
    assert status(env)["services"]["servicea"]["proxy_chains"] == {}


def status(env: Env) -> dict:
    """``app status --json``: exit 0, or 1 when it reports problems."""
    r = env.bg("app", "status", APP, "--json")
    report = json.loads(r.out)
    assert r.code == (1 if report["problems"] else 0), r.err
    return report


def test_first_release_serves_the_seeds_answer(app, tmp_path):
    r = app.bg("app", "deploy", "--file", compose(tmp_path))
    assert r.code == 0, r.err
    assert "release 1 is live" in r.out
    assert body(app) == "Hello world!"
    s = status(app)
    assert s["live_release"] == 1 and not s["problems"]
    assert {n: e["proxy_color"] for n, e in s["services"].items()} == {
        "servicea": "blue", "serviceb": "blue"}


def test_nothing_changed_changes_nothing(app, tmp_path):
    before = app.proxy_files()
    r = app.bg("app", "deploy", "--file", compose(tmp_path))
    assert r.code == 0 and "nothing changed" in r.out
    assert app.proxy_files() == before


def snapshot(env: Env) -> dict:
    """Everything an app command could change: nginx's files (and, in the dynamic mode, its
    state files and what it routes with), every KV key with its index, the agent's services,
    the containers."""
    import docker

    files = env.proxy_files()
    control = None
    if dynamic(env):
        files |= {str(p): p.read_text() for p in env.nginx.state_file.parent.iterdir()}
        served = env.nginx.proxy().read()
        control = {k: served[k] for k in ("generation", "services", "chains")}
    kv = requests.get(f"{env.consul_addr}/v1/kv/{APP}?recurse=1", timeout=5).json()
    agent = requests.get(f"{env.consul_addr}/v1/agent/services", timeout=5).json()
    # ignore_removed: other tests share the engine; a container of theirs removed between the
    # list and its inspection is not this application's
    containers = {c.name: (c.id, c.status) for c in docker.from_env().containers.list(
                  all=True, ignore_removed=True) if c.labels.get("bluegreen.service") in SERVICES}
    return {"files": files, "control": control, "agent": sorted(agent), "containers": containers,
            "kv": sorted((k["Key"], k["Value"], k["ModifyIndex"]) for k in kv)}


def test_dry_run_shows_the_first_steps_proxy_change_and_changes_nothing(app, tmp_path):
    before = snapshot(app)
    r = app.bg("app", "deploy", "--file", compose(tmp_path, a="v2", b="v2"), "--steps", "50,100",
               "--dry-run")
    assert r.code == 0, r.err
    assert "dry run, nothing changed" in r.out
    assert f"==> {APP}: the proxy at 50% (the first step)" in r.err
    # the new colors are not deployed: their containers by name, at the container port
    assert f"{APP}.serviceb-green-1:5001" in r.err and f"{APP}.servicea-green-3:5000" in r.err
    if dynamic(app):
        assert f"{APP}.serviceb: blue 100% 127.0.0.1:" in r.err and "-> green 50% " in r.err
        assert f"{APP}.servicea chains: (none) -> old callers 172.17." in r.err
    else:
        assert f"+# Managed by bluegreen: service={APP}.serviceb color=green weight=50" in r.err
        assert "+geo $remote_addr $bg_" in r.err  # the old release's callers kept on it
    assert snapshot(app) == before
    assert body(app) == "Hello world!"


def test_frontend_release_keeps_the_backend_shared(app, tmp_path):
    backend = ids(app, f"{APP}.servicea")
    with load(app) as users:
        r = app.bg("app", "deploy", "--file", compose(tmp_path, b="v2"), "--steps", "50,100")
    assert r.code == 0, r.err
    assert "servicea keep" in r.err and "serviceb change" in r.err
    assert set(users.seen) <= {"Hello world!", "Welcome to the world!"}
    assert body(app) == "Welcome to the world!"
    assert ids(app, f"{APP}.servicea") == backend  # unchanged: not redeployed


def test_backend_release_paused_then_promoted(app, tmp_path):
    with load(app) as users:
        r = app.bg("app", "deploy", "--file", compose(tmp_path, a="v2", b="v2"), "--steps",
                   "50,100", "--confirm")
    assert r.code == 0, r.err
    assert "paused at 50%" in r.out
    # shared serviceB: half of its calls reach the new serviceA
    assert set(users.seen) <= {"Welcome to the world!", "Welcome to the new world!"}
    s = status(app)
    assert s["inflight"]["state"] == "paused" and s["services"]["servicea"]["proxy_weight"] == 50
    # the services of an unfinished release move with it only
    r = app.bg("switch", f"{APP}.servicea", "--color", "blue")
    assert r.code == 1 and f"unfinished application release {APP} #3" in r.err
    r = app.bg("app", "deploy", "--file", compose(tmp_path, a="v3", b="v2"))
    assert r.code == 1 and "is paused at 50%" in r.err
    before = snapshot(app)
    for action in ("promote", "abort"):  # what they would do, changing nothing
        r = app.bg("app", action, APP, "--dry-run")
        assert r.code == 0, r.err
        assert "dry run, nothing changed" in r.out and "would" in r.err, r.err
        assert snapshot(app) == before
    with load(app) as users:
        r = app.bg("app", "promote", APP)
    assert r.code == 0, r.err
    assert set(users.seen) <= {"Welcome to the world!", "Welcome to the new world!"}
    assert body(app) == "Welcome to the new world!"
    assert status(app)["live_release"] == 3


def test_abort_returns_every_changed_service(app, tmp_path):
    """Both services change; under load, the abort never mixes the releases either: a
    request inside a new serviceB is answered by the new serviceA until the new colors stop."""
    old_chain, new_chain = "Welcome to the new world!", "Hello world!"
    r = app.bg("app", "deploy", "--file", compose(tmp_path, a="v1", b="v1"), "--steps", "50,100",
               "--confirm")
    assert r.code == 0, r.err
    ends_on(app, "abort", old_chain, {old_chain, new_chain})
    s = status(app)
    assert s["inflight"] is None and s["live_release"] == 3 and not s["problems"]
    hist = json.loads(app.bg("app", "history", APP, "--json").out)
    assert [h["result"] for h in hist] == ["ok", "ok", "ok", "aborted"]


def test_failing_tests_return_to_the_old_release(app, tmp_path):
    r = app.bg("app", "deploy", "--file", compose(tmp_path, b="v1", b_body="never-answered"),
               "--steps", "50,100")
    assert r.code == 1 and "Pre-integration tests of hello-world.serviceb failed" in r.err
    assert body(app) == "Welcome to the new world!"
    assert status(app)["inflight"] is None


@pytest.mark.parametrize("point", ["deploy:started", "pre-test:before", "switch:proxy-applied",
                                   "switch:at-50"])
def test_killed_release_is_undone_by_the_next_command(app, tmp_path, point):
    held = Held(app, tmp_path, [point], "app", "deploy", "--file",
                compose(tmp_path, a="v1", b="v2"), "--steps", "50,100")
    held.kill(point)
    s = status(app)
    assert s["inflight"]["state"] == "running"
    assert any("was interrupted" in p for p in s["problems"])
    r = app.bg("app", "deploy", "--file", compose(tmp_path, a="v2", b="v2"))
    assert r.code == 0, r.err
    assert "recover: interrupted release found" in r.err and "nothing changed" in r.out
    assert body(app) == "Welcome to the new world!"
    s = status(app)
    assert not s["problems"] and s["inflight"] is None
    for entry in s["services"].values():  # every route on a running, healthy color
        assert entry["proxy_color"] == entry["live_color"] and entry["healthy"][entry["live_color"]]


def test_both_change_every_request_stays_on_one_release(app, tmp_path):
    """Frontend and backend both change: at 50% a request that enters the new serviceB is
    answered by the new serviceA, one that enters the old serviceB by the old serviceA."""
    old_chain, new_chain = "Welcome to the new world!", "Hello world!"
    assert body(app) == old_chain
    with load(app) as users:
        r = app.bg("app", "deploy", "--file", compose(tmp_path, a="v1", b="v1"),
                   "--steps", "50,100", "--confirm")
    assert r.code == 0, r.err
    assert set(users.seen) <= {old_chain, new_chain}
    seen = {body(app) for _ in range(40)}
    assert seen == {old_chain, new_chain}  # both releases serve, never a mix
    servicea = status(app)["services"]["servicea"]  # what the proxy keeps each side on
    assert servicea["proxy_chains"] == {"new": servicea["moving"]["to"],
                                        "old": servicea["moving"]["from"]}
    ends_on(app, "promote", new_chain, {old_chain, new_chain})


def test_rollback_goes_back_and_forth_in_one_change(app):
    before = body(app)  # the last release: both services changed by it
    unchanged = snapshot(app)
    r = app.bg("app", "rollback", APP, "--dry-run")
    assert r.code == 0 and "dry run, nothing changed" in r.out, r.err
    assert snapshot(app) == unchanged and body(app) == before
    chains = {"Welcome to the new world!", "Hello world!"}  # a mix of releases is neither
    with load(app) as users:  # the chains hold across a rollback as across promote and abort
        r = app.bg("app", "rollback", APP, "--json")
    assert r.code == 0, r.err
    assert set(users.seen) <= chains, users.seen
    assert json.loads(r.out)["services"] == ["servicea", "serviceb"]
    assert body(app) == "Welcome to the new world!"  # the release before it
    assert not status(app)["problems"]
    assert status(app)["services"]["servicea"]["proxy_chains"] == {}
    with load(app) as users:  # the rolled-back release still runs: forward again
        r = app.bg("app", "rollback", APP)
    assert r.code == 0, r.err
    assert set(users.seen) <= chains, users.seen
    assert body(app) == before
    hist = json.loads(app.bg("app", "history", APP, "--json").out)
    assert [h["action"] for h in hist[-2:]] == ["app rollback", "app rollback"]


def test_one_call_per_phase_as_blue_green_deploy_app_makes_them(app, tmp_path):
    """The CLI as blueGreenDeployApp drives it, one Jenkins stage per call: `app check --json`
    names the phases (model.PHASES); `app deploy --until` the first, `app resume --until` each
    next one (after the last: the promotion); with --confirm the switch stops at the gate
    ("gate": true) and the same phase goes on. Under load: no failed request."""
    from bluegreen.model import PHASES

    path = compose(tmp_path, a="v1", b="v2")
    r = app.bg("app", "check", "--file", path, "--json")
    assert r.code == 0, r.err
    phases = json.loads(r.out)["phases"]
    assert phases == list(PHASES)
    release = status(app)["live_release"] + 1
    answers = []
    with load(app):
        argv = ["app", "deploy", "--file", path, "--steps", "50,100", "--confirm"]
        for phase in phases:
            while True:
                r = app.bg(*argv, "--until", phase, "--json")
                assert r.code == 0, r.err
                done = json.loads(r.out)
                answers.append((phase, done["result"], done.get("weight"), done.get("gate")))
                argv = ["app", "resume", APP]
                if not done.get("gate"):
                    break
    assert answers == [("deploy", "paused", 0, False), ("pre-test", "paused", 0, False),
                       ("switch", "paused", 50, True), ("switch", "paused", 100, False),
                       ("post-test", "ok", None, None)]
    s = status(app)
    assert s["live_release"] == release and s["inflight"] is None and not s["problems"]


def test_values_are_interpolated_from_the_environment(app, tmp_path):
    text = Path(compose(tmp_path, a="v1", b="v2")).read_text()
    path = tmp_path / "interpolated.yaml"
    path.write_text(text.replace("bluegreen-serviceb:v2", "bluegreen-serviceb:${BUILD_NUMBER}"))
    r = app.bg("app", "deploy", "--file", str(path), env=app.env | {"BUILD_NUMBER": "v2"})
    assert r.code == 0 and "nothing changed" in r.out, r.err  # the live release's image
    env = {k: v for k, v in app.env.items() if k != "BUILD_NUMBER"}
    r = app.bg("app", "deploy", "--file", str(path), env=env)
    assert r.code == 2
    assert "services.serviceb.image: variable BUILD_NUMBER is not set" in r.err


def test_a_renamed_service_taking_the_live_route_is_refused_before_anything_changes(app, tmp_path):
    """Renaming serviceb onto its own route passed check and --dry-run, then nginx refused it
    (duplicate location "/"): the removed service serves until promotion."""
    path = tmp_path / "renamed.yaml"
    path.write_text(Path(compose(tmp_path, a="v1", b="v2")).read_text().replace(
        "  serviceb:", "  frontend:"))
    assert app.bg("app", "check", "--file", str(path)).code == 0  # the file alone is valid
    before = snapshot(app)
    for extra in (["--dry-run"], []):
        r = app.bg("app", "deploy", "--file", str(path), *extra)
        assert r.code == 2, r.err
        assert "frontend takes route / of serviceb, which the file removes" in r.err
    assert snapshot(app) == before
