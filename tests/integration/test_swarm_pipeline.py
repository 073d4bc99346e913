"""``bluegreen run --runtime swarm`` (the CLI, as users call it) on the swarm labs: a single node
and three nodes in their own network namespaces (``bluegreen_dev.swarm_lab``), the sandbox's
Consul and a private nginx; then a worker's dockerd killed during a deploy and during a switch.

Fault moments are hold points (``BLUEGREEN_TEST_HOLD``) plus conditions (the manager marks the
node down before the run goes on), never sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bluegreen.runtime.swarm import SwarmRuntime
from bluegreen_dev.sandbox import Nginx, Sandbox, wait_for
from bluegreen_dev.swarm_lab import Node, SwarmLab
from tests.integration import cluster_fixtures
from tests.integration.conftest import Env, cleanup, service_name
from tests.integration.test_reliability import Held, Traffic

pytestmark = pytest.mark.integration
swarm1 = cluster_fixtures.swarm1
swarm3 = cluster_fixtures.swarm3
swarm3_own = cluster_fixtures.swarm3_own
HTTP = ["--http", "/api/v1/books"]


def swarm_env(sandbox: Sandbox, lab: SwarmLab, hint: str) -> Env:
    name = service_name(hint)
    return Env(sandbox, name, Nginx(sandbox.root / f"nginx-{name}").start(), extra_env={
        "DOCKER_HOST": lab.manager.url, "BLUEGREEN_RUNTIME": "swarm"})


def swarm_cleanup(env: Env, lab: SwarmLab) -> None:
    rt = SwarmRuntime(lab.manager.url)
    for color in ("blue", "green"):
        rt.remove(env.service, color)
    cleanup(env.sandbox, env.service, env.nginx)


@pytest.fixture
def s1(sandbox: Sandbox, swarm1: SwarmLab, request: pytest.FixtureRequest) -> Iterator[Env]:
    env = swarm_env(sandbox, swarm1, request.node.name.removeprefix("test_"))
    yield env
    swarm_cleanup(env, swarm1)


@pytest.fixture
def s3(sandbox: Sandbox, swarm3: SwarmLab, request: pytest.FixtureRequest) -> Iterator[Env]:
    env = swarm_env(sandbox, swarm3, request.node.name.removeprefix("test_"))
    yield env
    swarm_cleanup(env, swarm3)


def run(env: Env, tag: str, *extra: str, scale: int = 3):
    return env.bg("run", env.service, "--image", f"bluegreen-sample:{tag}", "--scale", str(scale),
                  *HTTP, *extra)


def status(env: Env) -> dict:
    r = env.bg("status", env.service, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def live_tasks(env: Env, lab: SwarmLab, color: str | None = None) -> set[str]:
    """host:port of the tasks the manager reports running on ready nodes."""
    return {f"{c.address}:{c.port}" for c in SwarmRuntime(lab.manager.url).containers(env.service, color)
            if c.running and c.port}


def assert_routes_live(env: Env, lab: SwarmLab, color: str, count: int) -> set[str]:
    """nginx's upstream servers are exactly the live color's running tasks, all passing."""
    st = status(env)
    assert st["recorded_color"] == color and st["proxy"]["color"] == color, st
    servers = set(st["proxy"]["servers"])
    assert servers == live_tasks(env, lab, color), (servers, st)
    assert len(servers) == count
    passing = {i["address"] for i in st["colors"][color]["instances"] if i["status"] == "passing"}
    assert servers <= passing, st
    assert not st["problems"], st["problems"]
    return servers


def version_set(env: Env, requests_count: int = 30) -> set[str]:
    return {env.version() or "error" for _ in range(requests_count)}


def lifecycle(env: Env, lab: SwarmLab) -> None:
    """blue v1, green v2 (scale 3), rollback proxy-only and with the old color scaled back."""
    r = run(env, "v1")
    assert r.code == 0, r.err
    blue = assert_routes_live(env, lab, "blue", 3)
    assert {s.rsplit(":", 1)[0] for s in blue} == {n.ip for n in lab.nodes}  # spread
    assert version_set(env) == {"v1"}

    # green v2, blue kept: a rollback meanwhile is proxy-only. The run sleeps through
    # --keep-old; once it says so, the rollback takes the lock and the run is ended (SIGTERM).
    proc = env.popen("run", env.service, "--image", "bluegreen-sample:v2", "--scale", "3",
                     *HTTP, "--keep-old", "600")
    env.wait_for_line(proc, "rollback is proxy-only", timeout=170)
    green = assert_routes_live(env, lab, "green", 3)
    assert version_set(env) == {"v2"}
    rb = env.bg("rollback", env.service, "--json")
    assert rb.code == 0, rb.err
    assert json.loads(rb.out)["proxy_only"] is True
    proc.terminate()
    assert proc.wait(60) == 143
    assert assert_routes_live(env, lab, "blue", 3) == blue  # the same tasks: nothing restarted
    assert version_set(env) == {"v1"}
    r = env.bg("recover", env.service)  # the scale-down left by the ended run: blue is live
    assert r.code == 0, r.err
    assert assert_routes_live(env, lab, "blue", 3) == blue
    assert live_tasks(env, lab, "green") == green  # green kept (not due, or live elsewhere)

    # Back to green with blue scaled to 0; rollback scales blue back up first.
    r = run(env, "v2")
    assert r.code == 0, r.err
    assert_routes_live(env, lab, "green", 3)
    st = status(env)
    assert {c["state"] for c in st["colors"]["blue"]["containers"]} == {"exited"}
    assert live_tasks(env, lab, "blue") == set()
    rb = env.bg("rollback", env.service, "--json")
    assert rb.code == 0, rb.err
    assert json.loads(rb.out)["proxy_only"] is False
    again = assert_routes_live(env, lab, "blue", 3)
    assert not again & blue  # new tasks (new published ports)
    assert version_set(env) == {"v1"}
    assert env.bg("recover", env.service).code == 0
    env.assert_safe()


def test_pipeline_single_node(s1: Env, swarm1: SwarmLab) -> None:
    lifecycle(s1, swarm1)


def test_pipeline_three_nodes(s3: Env, swarm3: SwarmLab) -> None:
    lifecycle(s3, swarm3)


# -- a worker's dockerd killed ------------------------------------------------------------------


def kill_worker(lab: SwarmLab, victim: Node) -> None:
    victim.kill_dockerd()
    wait_for(lambda: lab.node_state(victim) == "down", 60, "the manager marks the node down", 0.2)


def assert_no_dead_route(env: Env, lab: SwarmLab, victim: Node) -> set[str]:
    st = status(env)
    servers = set(st["proxy"]["servers"])
    color = st["proxy"]["color"]
    assert servers and servers <= live_tasks(env, lab, color), (servers, st)
    assert all(not s.startswith(f"{victim.ip}:") for s in servers), servers
    registered = {i["address"] for c in ("blue", "green") for i in st["colors"][c]["instances"]}
    assert not any(a.startswith(f"{victim.ip}:") for a in registered), st
    return servers


@pytest.fixture
def s3own(sandbox: Sandbox, swarm3_own: SwarmLab, request: pytest.FixtureRequest) -> Iterator[Env]:
    env = swarm_env(sandbox, swarm3_own, request.node.name.removeprefix("test_"))
    yield env
    swarm_cleanup(env, swarm3_own)


@pytest.mark.parametrize("point", ["deploy:started", "switch:before"])
def test_worker_killed_during_run(s3own: Env, swarm3_own: SwarmLab, tmp_path, point: str) -> None:
    """On a lab of its own: the killed node is not revived (the lab goes with the test)."""
    env, lab = s3own, swarm3_own
    victim = lab.workers[-1]
    assert run(env, "v1").code == 0
    assert victim.ip in {s.rsplit(":", 1)[0] for s in assert_routes_live(env, lab, "blue", 3)}
    held = Held(env, tmp_path, [point], "run", env.service, "--image", "bluegreen-sample:v2",
                "--scale", "3", *HTTP)
    held.wait(point)
    with Traffic(env) as traffic:
        kill_worker(lab, victim)
        held.release(point)
        code, err = held.finish()
    assert code == 0, err
    if point == "switch:before":
        # The task on the dead node had been registered (and still answers: its container
        # outlives dockerd); the switch routes to what runs, not to what was registered.
        assert f"whose container no longer runs: {env.service}-green" in err, err
    # At deploy:started nothing is registered yet: the wait for health follows the task to
    # its replacement, and only what answered is registered.
    assert traffic.failed == [] and traffic.ok > 0, traffic.failed[:5]
    servers = assert_no_dead_route(env, lab, victim)
    assert len(servers) == 3, servers  # rescheduled on the two live nodes
    assert version_set(env) == {"v2"}
    r = env.bg("recover", env.service)
    assert r.code == 0, r.err
    env.assert_safe()
