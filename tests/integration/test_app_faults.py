"""The fault matrix of ``run``, for applications, on real Docker, Consul and nginx.

A two-service application (serviceB on the public route calls serviceA through the internal
endpoint ``servicea.local``, which nginx serves on Docker's bridge gateway) and a worker. Each
release flips both services between two versions (``Hello world!`` and ``Welcome to the new
world!``): any mix of the two would be a request that crossed releases. Faults: the Consul
agent restarted empty, SIGTERM, SIGINT and kill -9 of bluegreen at each phase of ``app deploy
--steps 50,100``, while paused, during ``app promote``, ``app abort`` and ``app rollback``;
nginx lost at a step; a container of the new color removed at a step. The moment is a hold
point (``BLUEGREEN_TEST_HOLD``), never a sleep.

Throughout each test users poll the public route and the internal endpoint: no answer other
than 2xx with an allowed body (the old or the new release's), whatever the fault; only while
nginx itself is down (stopped by the test) is the poller paused. Then the next command
settles it: ``app status`` exits 0 with no problem, every route on a running, healthy color,
and no release number reused.

The findings of issue 18 are tests here too: a registry restarted empty (with a release live,
or paused), single-service commands while a release is paused, another application declaring
an endpoint or a route, status after a kill -9 and the history after a signal at the 50% step.

The application lives on its own Consul agent (restarted empty by the tests) and its own
nginx, in the reload mode; a second one in the dynamic mode runs a subset (``MODES``, the
cells at the 50% step and the registry restarts). Each test starts from what the previous one
left on its application.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bluegreen_dev.dynamic_nginx import DynamicNginx
from bluegreen_dev.sample_app import build_sample_app_images
from bluegreen_dev.sandbox import ConsulAgent, Nginx, free_port
from tests.integration.conftest import Env, cleanup
from tests.integration.test_reliability import Held, restart_empty

pytestmark = pytest.mark.integration
SERVICES = ("servicea", "serviceb", "mailer")
GATEWAY = "172.17.0.1"  # Docker's bridge gateway: where nginx serves the internal endpoints
BACKEND = {"v1": "world!", "v2": "new world!"}  # serviceA through servicea.local


def answer(a: str, b: str) -> str:
    """The public answer: serviceB at ``b`` prepends its greeting to serviceA's at ``a``."""
    return ("Hello " if b == "v1" else "Welcome to the ") + BACKEND[a]


BODIES = {v: answer(v, v) for v in ("v1", "v2")}  # both services on one version
COMPOSE = """name: {app}
services:
  servicea:
    image: bluegreen-servicea:{a}
    labels:
      bluegreen.port: "5000"
      bluegreen.endpoint: {endpoint}
      bluegreen.health-path: /health
      bluegreen.test.http: /
      bluegreen.test.expect-body: "world!"
  serviceb:
    image: bluegreen-serviceb:{b}
    environment:
      - dep_endpoint=http://{endpoint}:{port}
    labels:
      bluegreen.port: "5001"
      bluegreen.route: {route}
      bluegreen.health-path: /health
      bluegreen.test.http: /
      bluegreen.test.expect-body: "world!$"
  mailer:
    image: bluegreen-servicea:{mailer}
    environment:
      - API=http://{endpoint}:{port}
"""


def start(sandbox, tmp: Path, name: str, mode: str) -> Env:
    """An application on its own Consul agent (the tests restart it empty) and its own nginx
    (its internal endpoints on their own port of the gateway: other nginx may serve port 80),
    its first release live."""
    build_sample_app_images()
    consul = ConsulAgent(tmp / "consul").start()
    extra = {"BLUEGREEN_INTERNAL_LISTEN": f"{GATEWAY}:{free_port()}"}
    if mode == "dynamic":
        nginx = DynamicNginx(tmp / "nginx").start()
        extra |= nginx.cli_env()
    else:
        nginx = Nginx(tmp / "nginx").start()
    env = Env(sandbox, name, nginx, consul, extra_env=extra)
    r = env.bg("app", "deploy", "--file", compose(env, tmp, "v1"))
    assert r.code == 0, r.err
    went_live(env, r.out)
    settled(env, "v1")
    return env


def stop(sandbox, env: Env) -> None:
    for name in SERVICES:
        cleanup(sandbox, f"{env.service}.{name}", env.nginx, env.consul)
    assert env.consul is not None
    env.consul.stop()


@pytest.fixture(scope="module")
def app(sandbox, tmp_path_factory) -> Iterator[Env]:
    """The application in nginx's reload mode: the whole matrix."""
    env = start(sandbox, tmp_path_factory.mktemp("faults"), "faults", "local")
    yield env
    stop(sandbox, env)


@pytest.fixture(scope="module")
def dyn(sandbox, tmp_path_factory) -> Iterator[Env]:
    """The application in nginx's dynamic mode: a subset (``MODES``)."""
    env = start(sandbox, tmp_path_factory.mktemp("faultsdyn"), "faultsdyn", "dynamic")
    yield env
    stop(sandbox, env)


MODES = ["app", "dyn"]  # the fixtures of the cells run in both nginx modes


def compose(env: Env, tmp_path: Path, version: str, mailer: str | None = None,
            app: str | None = None, route: str = "/", endpoint: str = "servicea.local",
            b: str | None = None) -> str:
    """Both services at ``version`` (serviceB at ``b`` when given; the worker at ``mailer``,
    else as it runs), calling the endpoint on ``env``'s internal port."""
    app = app or env.service
    port = env.extra_env["BLUEGREEN_INTERNAL_LISTEN"].rpartition(":")[2]
    path = tmp_path / f"{app}-{version}-{b}-{mailer}-{route.strip('/')}-{endpoint}.yaml"
    mailer = mailer or worker_version(env) or "v1"
    path.write_text(COMPOSE.format(app=app, a=version, b=b or version, mailer=mailer,
                                   route=route, endpoint=endpoint, port=port))
    return str(path)


def internal_url(env: Env) -> str:
    return f"http://{env.extra_env['BLUEGREEN_INTERNAL_LISTEN']}/"


class Users:
    """Two pollers that never retry: the public route (serviceB calling serviceA through
    servicea.local) and the internal endpoint itself. Each answer must be 2xx with an allowed
    body; ``paused()`` stops sending (nginx down on purpose) and says so in ``outages``."""

    def __init__(self, env: Env, *releases: tuple[str, str]) -> None:
        """``releases``: the (serviceA, serviceB) versions users may meet."""
        self.env = env
        self.allowed = {"/": {answer(a, b) for a, b in releases},
                        "servicea.local": {BACKEND[a] for a, _ in releases}}
        self.seen: dict[str, dict[str, int]] = {"/": {}, "servicea.local": {}}
        self.bad: list[str] = []
        self._stop, self._go = threading.Event(), threading.Event()
        self._go.set()
        self._idle = [threading.Event(), threading.Event()]
        self._threads = [
            threading.Thread(target=self._loop, args=("/", env.nginx.url + "/", {}, 0),
                             daemon=True),
            threading.Thread(target=self._loop, args=(
                "servicea.local", internal_url(env), {"Host": "servicea.local"}, 1),
                daemon=True)]

    def _loop(self, what: str, url: str, headers: dict[str, str], i: int) -> None:
        while not self._stop.is_set():
            if not self._go.is_set():
                self._idle[i].set()
                self._go.wait()
                continue
            self._idle[i].clear()
            try:
                r = requests.get(url, headers=headers, timeout=10)
                answer = r.text if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"
            except requests.RequestException as exc:
                answer = type(exc).__name__
            self.seen[what][answer] = self.seen[what].get(answer, 0) + 1
            if answer not in self.allowed[what]:
                self.bad.append(f"{what}: {answer}")

    def pause(self) -> None:
        """Stop sending (and wait until no request is under way)."""
        self._go.clear()
        for idle in self._idle:
            assert idle.wait(30)

    def resume(self) -> None:
        self._go.set()

    def __enter__(self) -> Users:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._go.set()
        for t in self._threads:
            t.join(15)
        if exc[0] is None:
            assert self.bad == [], (self.bad[:10], self.seen)
            assert all(sum(s.values()) > 0 for s in self.seen.values()), self.seen


def status(env: Env) -> tuple[int, dict]:
    r = env.bg("app", "status", env.service, "--json")
    report = json.loads(r.out)
    assert r.code == (1 if report["problems"] else 0), r.err
    return r.code, report


def live_version(env: Env) -> str:
    """What the application serves now (both services on one version)."""
    body = requests.get(env.nginx.url + "/", timeout=10).text
    return next(v for v, b in BODIES.items() if b == body)


def worker_version(env: Env) -> str | None:
    """The version the worker runs (its running container's image tag), if it runs."""
    import docker

    found = docker.from_env().containers.list(filters={
        "label": f"bluegreen.service={env.service}.mailer", "status": "running"})
    assert len(found) <= 1, found
    return found[0].attrs["Config"]["Image"].rpartition(":")[2] if found else None


def other(version: str) -> str:
    return "v2" if version == "v1" else "v1"


NUMBERS: dict[str, set[int]] = {}  # every release number that went live, by application


def went_live(env: Env, out: str) -> int:
    """A command's ``release N is live``: N was never live before (numbers are not reused)."""
    found = re.search(r"release (\d+) is live", out)
    assert found, out
    number, seen = int(found.group(1)), NUMBERS.setdefault(env.service, set())
    assert number not in seen, (number, seen)
    seen.add(number)
    return number


def settled(env: Env, served: str | None = None) -> dict:
    """Records agree with reality: ``app status`` exits 0 with no problem, no unfinished
    release, every route on a running, healthy color, the worker on its live color only."""
    code, s = status(env)
    assert code == 0 and s["problems"] == [] and s["inflight"] is None, s
    for name, e in s["services"].items():
        if e["kind"] == "worker":
            assert [c for c, up in e["running"].items() if up] == [e["live_color"]], (name, e)
            continue
        assert e["proxy_color"] == e["live_color"] and e["proxy_weight"] == 100, (name, e)
        assert e["healthy"][e["live_color"]] and e["running"][e["live_color"]], (name, e)
        assert e["proxy_chains"] == {}, (name, e)
    if served:
        assert live_version(env) == served
    return s


# -- the deploy: each fault at each phase --------------------------------------------------

DEPLOY_POINTS = ["deploy:started", "pre-test:before", "switch:before", "switch:at-50",
                 "post-test:before", "verified:before", "app:worker-started"]
CELLS = [("app", p, f) for p in DEPLOY_POINTS for f in ("consul", "SIGTERM", "kill")] + [
    ("app", "switch:at-50", "SIGINT"), ("app", "pre-test:before", "SIGINT")] + [
    ("dyn", "switch:at-50", f) for f in ("consul", "SIGTERM", "kill")]


class Hold(Held):
    """:class:`Held` whose ``wait`` fails at once, with the command's output, when the command
    ends before its hold point."""

    def wait(self, point: str) -> None:
        held, deadline = self.dir / f"{point}.held", time.monotonic() + 120
        while not held.exists():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"ended ({self.proc.returncode}) before {point}: {out}{err}")
            assert time.monotonic() < deadline, f"not at {point} after 120s"
            time.sleep(0.02)


def signal_at(held: Held, point: str, signum: int) -> tuple[int, str]:
    held.wait(point)
    held.proc.send_signal(signum)
    held.release(point)  # a shielded hold point raises once its critical section ends
    return held.finish()


def finish(held: Held) -> tuple[int, str, str]:
    out, err = held.proc.communicate(timeout=180)
    return held.proc.returncode, out, err


@pytest.mark.parametrize(("mode", "point", "fault"), CELLS)
def test_deploy_fault(request, tmp_path, mode, point, fault):
    app = request.getfixturevalue(mode)
    old = live_version(app)
    new = other(old)
    # only a release that changes the worker swaps it
    mailer = other(worker_version(app) or "v1") if point == "app:worker-started" else None
    file = compose(app, tmp_path, new, mailer)
    settled(app)
    with Users(app, (old, old), (new, new)):
        held = Hold(app, tmp_path, [point], "app", "deploy", "--file", file, "--steps", "50,100")
        if fault == "consul":
            held.wait(point)
            restart_empty(app.consul)
            held.release(point)
            code, out, err = finish(held)
            assert code == 0, err
            went_live(app, out)
            served = new
        elif fault == "kill":
            held.kill(point)
            code, s = status(app)
            assert code == 1 and s["inflight"] and s["problems"], s
            if point == "switch:at-50":  # finding 4: the interrupted release, at its weight
                assert s["inflight"]["weight"] == 50, s
                assert s["services"]["serviceb"]["proxy_weight"] == 50, s
                assert any("interrupted at 50%" in p for p in s["problems"]), s
            # the next command settles it: app recover, or (every other point) the next deploy
            nxt = ("deploy", "--file", file) if DEPLOY_POINTS.index(point) % 2 == 0 else (
                "recover", app.service)
            r = app.bg("app", *nxt)
            assert r.code == 0, r.err
            assert "interrupted release found" in r.err + r.out, r.err
            served = new if nxt[0] == "deploy" else None
            if nxt[0] == "deploy":
                went_live(app, r.out)
        else:
            signum = getattr(signal, fault)
            code, err = signal_at(held, point, signum)
            assert code == 128 + signum, err
            assert f"stopped by {fault}" in err, err
            served = old
            last = json.loads(app.bg("app", "history", app.service, "--json").out)[-1]
            assert last["result"] == "aborted", last
            if point == "switch:at-50":  # finding 4: recorded at the weight it stopped at
                assert last["weight"] == 50, last
        settled(app, served)


# -- a paused release, and the commands that end it ------------------------------------------


def paused(env: Env, tmp_path: Path) -> tuple[str, str]:
    """A release of both services paused at 50%: (old, new) versions."""
    old = live_version(env)
    settled(env)
    r = env.bg("app", "deploy", "--file", compose(env, tmp_path, other(old)), "--steps", "50,100",
               "--confirm")
    assert r.code == 0 and "paused at 50%" in r.out, r.err
    return old, other(old)


def after(env: Env, fault: str, code: int, err: str, changed: bool = True) -> None:
    """What a fault left, and the next command settling it. kill -9 leaves an unfinished
    release that ``app status`` reports (exit 1; ``changed=False``: killed before it changed
    the proxy, what the records say is still true). A registry restarted empty
    after the command's last record (nothing can prevent that) is reported too. A signal ends
    the command with its exit status, after its clean-up. Then ``app recover`` settles what
    ``app status`` reports."""
    if fault == "consul":
        assert code == 0, err
    elif fault != "kill":
        signum = getattr(signal, fault)
        assert code == 128 + signum and f"stopped by {fault}" in err, err
    status_code, s = status(env)
    if fault == "kill" and changed:
        assert status_code == 1 and s["problems"], s
    if status_code or s["inflight"]:
        r = env.bg("app", "recover", env.service)
        assert r.code == 0, r.err


@pytest.mark.parametrize(("mode", "action"), [("app", "promote"), ("app", "abort"),
                                             ("dyn", "promote")])
def test_registry_restarted_empty_while_paused(request, tmp_path, mode, action):
    """Finding 1: the paused release is rebuilt from the containers and the proxy; promote
    and abort still work."""
    app = request.getfixturevalue(mode)
    old, new = paused(app, tmp_path)
    with Users(app, (old, old), (new, new)):
        restart_empty(app.consul)
        code, s = status(app)
        assert code == 1 and s["problems"], s  # the registry lost what the proxy routes
        r = app.bg("app", action, app.service)
        assert r.code == 0, r.err
        assert "rebuilt from its containers and the proxy" in r.err, r.err
        assert "paused at 50%" in r.err, r.err
        if action == "promote":
            went_live(app, r.out)
        settled(app, new if action == "promote" else old)


ACTION_POINTS = {"promote": ["switch:at-100", "post-test:before", "verified:before"],
                 "abort": ["switch:before", "switch:proxy-applied"],
                 "rollback": ["switch:before", "switch:proxy-applied"]}


@pytest.mark.parametrize(("action", "point", "fault"), [
    (a, p, f) for a, points in ACTION_POINTS.items() for p in points
    for f in ("consul", "SIGTERM", "kill")] + [("promote", "switch:at-100", "SIGINT")])
def test_action_fault(app, tmp_path, action, point, fault):
    """A fault during ``app promote`` / ``app abort`` (of a release paused at 50%) or ``app
    rollback`` (of the live release)."""
    if action == "rollback":  # from a release deployed now (the registry may have lost the
        new = live_version(app)  # record of the one before): back to the one it replaced
        settled(app)
        old = other(new)
        r = app.bg("app", "deploy", "--file", compose(app, tmp_path, old))
        assert r.code == 0, r.err
        went_live(app, r.out)
    else:
        old, new = paused(app, tmp_path)
    with Users(app, (old, old), (new, new)):
        held = Hold(app, tmp_path, [point], "app", action, app.service)
        held.wait(point)
        if fault == "consul":
            restart_empty(app.consul)
        elif fault == "kill":
            held.kill()
        else:
            held.proc.send_signal(getattr(signal, fault))
        held.release(point)
        code, out, err = finish(held)
        # killed before the proxy changed, an abort or a rollback leaves nothing to report
        after(app, fault, code, err, changed=point != "switch:before")
        if action == "promote" and fault == "consul":
            went_live(app, out)
        settled(app, (old if action == "abort" else new) if fault == "consul" else None)


# -- the proxy and the containers under a release ---------------------------------------------


def test_nginx_lost_at_a_step(app, tmp_path):
    """nginx stopped at 50%, started again once the release has failed: users are paused
    while nginx is down on purpose (nothing answers then), and asserted before and after."""
    old = live_version(app)
    new = other(old)
    settled(app)
    with Users(app, (old, old), (new, new)) as users:
        held = Hold(app, tmp_path, ["switch:at-50"], "app", "deploy", "--file",
                    compose(app, tmp_path, new), "--steps", "50,100")
        held.wait("switch:at-50")
        users.pause()
        app.nginx.stop()
        held.release("switch:at-50")
        code, _out, err = finish(held)
        assert code != 0 and "nginx" in err, err
        app.nginx.start()  # with the files it had: the proxy as the failed release left it
        users.resume()
        status_code, s = status(app)
        assert status_code == 1 and s["problems"], s
        r = app.bg("app", "recover", app.service)
        assert r.code == 0, r.err
        settled(app, old)


def test_a_new_container_removed_at_a_step(app, tmp_path):
    """serviceB's new container removed at 50%: nginx retries the old one, users see
    nothing; the release fails and is undone. (serviceA's new container removed would fail
    the requests already inside the new serviceB: its chain keeps them on the new serviceA.)"""
    import docker

    old = live_version(app)
    new = other(old)
    settled(app)
    with Users(app, (old, old), (new, new)):
        held = Hold(app, tmp_path, ["switch:at-50"], "app", "deploy", "--file",
                    compose(app, tmp_path, new), "--steps", "50,100")
        held.wait("switch:at-50")
        color = status(app)[1]["services"]["serviceb"]["moving"]["to"]
        client = docker.from_env()
        for c in client.containers.list(filters={"label": f"bluegreen.service={app.service}.serviceb"}):
            if c.labels.get("bluegreen.color") == color:
                c.remove(force=True)
        held.release("switch:at-50")
        code, _out, err = finish(held)
        assert code == 1 and "undone; the old release serves" in err, err
        code, _s = status(app)
        if code:
            assert app.bg("app", "recover", app.service).code == 0
        settled(app, old)


# -- the findings of the issue ----------------------------------------------------------------


def ids(service: str) -> set[str]:
    import docker

    found = docker.from_env().containers.list(filters={"label": f"bluegreen.service={service}"})
    return {c.id for c in found}


@pytest.mark.parametrize("mode", MODES)
def test_registry_restarted_empty_then_a_backend_release(request, tmp_path, mode):
    """Finding 1: the live release survives the registry restarted empty; a release that
    changes serviceA moves serviceA only, with no outage, under a new number."""
    app = request.getfixturevalue(mode)
    old = live_version(app)
    new = other(old)
    settled(app)
    frontend = ids(f"{app.service}.serviceb")
    with Users(app, (old, old), (new, old)):
        restart_empty(app.consul)
        code, s = status(app)
        assert code == 1 and s["problems"], s  # containers run, no release recorded
        r = app.bg("app", "deploy", "--file", compose(app, tmp_path, new, b=old), "--steps", "50,100")
        assert r.code == 0, r.err
        assert "serviceb keep" in r.err and "servicea change" in r.err, r.err
        before = set(NUMBERS[app.service])
        assert went_live(app, r.out) > max(before)
        settled(app)
    assert ids(f"{app.service}.serviceb") == frontend  # untouched
    assert requests.get(app.nginx.url + "/", timeout=10).text == answer(new, old)
    r = app.bg("app", "deploy", "--file", compose(app, tmp_path, new))  # one version again
    assert r.code == 0, r.err
    went_live(app, r.out)
    settled(app, new)


def snapshot(env: Env) -> dict:
    """What a command could change: nginx's files, the application's KV records with their
    indexes, the agent's services, the containers and their states."""
    import docker

    kv = requests.get(f"{env.consul_addr}/v1/kv/{env.service}?recurse=1", timeout=5).json()
    agent = requests.get(f"{env.consul_addr}/v1/agent/services", timeout=5).json()
    containers = {c.name: (c.id, c.status) for c in docker.from_env().containers.list(all=True)
                  if c.labels.get("bluegreen.app") == env.service or c.name.startswith("intruder")}
    return {"files": env.proxy_files(), "agent": sorted(agent), "containers": containers,
            "kv": sorted((k["Key"], k["Value"], k["ModifyIndex"]) for k in kv)}


def test_single_service_commands_are_refused_while_paused(app, tmp_path):
    """Finding 2: while a release is paused, no single-service command changes one of its
    services; each is refused naming the release, and nothing changes."""
    old, new = paused(app, tmp_path)
    s = status(app)[1]
    number = s["inflight"]["release"]
    with Users(app, (old, old), (new, new)):
        before = snapshot(app)
        for name in ("servicea", "serviceb"):
            service, moving = f"{app.service}.{name}", s["services"][name]["moving"]
            image = f"bluegreen-{name}:{old}"
            for cmd in (("stop", service, "--color", moving["from"]),
                        ("stop", service, "--color", moving["to"]),
                        ("rollback", service),
                        ("deploy", service, "--color", moving["from"], "--image", image),
                        ("recover", service),
                        ("switch", service, "--color", moving["from"]),
                        ("run", service, "--image", image),
                        ("post-test", service, "--current", moving["from"], "--next",
                         moving["to"], "--http", "/")):
                r = app.bg(*cmd)
                assert r.code != 0, (cmd, r.out, r.err)
                assert f"unfinished application release {app.service} #{number}" in r.err, (cmd, r.err)
        assert snapshot(app) == before
        r = app.bg("app", "abort", app.service)
        assert r.code == 0, r.err
        settled(app, old)


@pytest.mark.parametrize("clash", ["endpoint", "route"])
def test_another_application_cannot_take_a_route_or_an_endpoint(app, tmp_path, clash):
    """Finding 3: a second application declaring the first one's internal endpoint (or
    public route) is refused with exit 2 before anything changes."""
    settled(app)
    served = live_version(app)
    file = compose(app, tmp_path, "v1", app="intruder",
                   **({"route": "/intruder"} if clash == "endpoint" else
                      {"endpoint": "intruder.local"}))
    taken = "servicea.local" if clash == "endpoint" else "route /"
    before = snapshot(app)
    with Users(app, (served, served)):
        for dry in (("--dry-run",), ()):
            r = app.bg("app", "deploy", "--file", file, *dry)
            assert r.code == 2, (dry, r.out, r.err)
            assert taken in r.err and f"{app.service}." in r.err, r.err
        assert snapshot(app) == before
    settled(app, served)
