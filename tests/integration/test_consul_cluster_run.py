"""``bluegreen run`` with Consul as a 3-server cluster (bluegreen talking to the client agent,
``bluegreen_dev.consul_cluster``) whose leader is killed while a run holds the deploy lock.

The run either completes, or fails with exit 3 and a message naming Consul; a second run
started meanwhile never gets the lock; the color record and the history survive; the next run
succeeds once a new leader is elected. The kill moment is a hold point, never a sleep.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bluegreen_dev.consul_cluster import ConsulCluster, http_get
from bluegreen_dev.sandbox import Nginx, Sandbox, wait_for
from tests.integration import cluster_fixtures
from tests.integration.conftest import Env, cleanup, service_name
from tests.integration.test_reliability import Held

pytestmark = pytest.mark.integration
consul_cluster = cluster_fixtures.consul_cluster_own  # a cluster of each test's own
HTTP = ["--http", "/api/v1/books"]


@pytest.fixture
def csvc(sandbox: Sandbox, consul_cluster: ConsulCluster, request: pytest.FixtureRequest
         ) -> Iterator[Env]:
    name = service_name(request.node.name.removeprefix("test_"))
    env = Env(sandbox, name, Nginx(sandbox.root / f"nginx-{name}").start(),
              consul_cluster.client)  # type: ignore[arg-type] - the same .addr as ConsulAgent
    yield env
    cleanup(sandbox, name, env.nginx, consul_cluster.client)  # type: ignore[arg-type]


def run(env: Env, tag: str, *extra: str):
    return env.bg("run", env.service, "--image", f"bluegreen-sample:{tag}", *HTTP, *extra)


def history(env: Env) -> list[dict]:
    r = env.bg("history", env.service, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def tolerant(cluster: ConsulCluster) -> bool:
    """Autopilot says the cluster survives losing a server: every server a healthy voter
    (a server restarted by an earlier test is a non-voter until it has been stable)."""
    status, data = http_get(cluster.client.http, "/v1/operator/autopilot/health")
    health = json.loads(data) if status == 200 else {}
    return bool(health.get("Healthy")) and health.get("FailureTolerance", 0) >= 1


def assert_lock_refused(env: Env) -> None:
    """A second run meanwhile: refused by the lock, or (no leader yet) exit 3 naming Consul;
    never a second holder."""
    r = run(env, "v3")
    assert (r.code == 1 and f"{env.service} is locked by" in r.err) or \
        (r.code == 3 and "Consul" in r.err), (r.code, r.err)


@pytest.mark.parametrize("point", ["switch:before", "switch:proxy-applied"])
def test_leader_killed_during_run(csvc: Env, consul_cluster: ConsulCluster, tmp_path,
                                  point: str) -> None:
    env = csvc
    wait_for(lambda: tolerant(consul_cluster), 60, "a cluster that survives losing its leader", 0.2)
    assert run(env, "v1").code == 0
    assert env.version() == "v1"
    before = history(env)
    held = Held(env, tmp_path, [point], "run", env.service, "--image", "bluegreen-sample:v2",
                *HTTP)
    old = None
    try:
        held.wait(point)
        assert_lock_refused(env)
        old = consul_cluster.kill_leader()
        assert_lock_refused(env)  # during the election
        held.release(point)
        code, err = held.finish()
        assert code == 0 or (code == 3 and "Consul" in err), (code, err)
        consul_cluster.wait_leader(other_than=old)
        expected = ("green", "v2") if code == 0 else ("blue", "v1")
        assert (env.kv("color"), env.version()) == expected, err
        after = history(env)
        assert after[: len(before)] == before  # nothing lost
        assert env.kv("lock") is None  # released (session destroyed)
        env.assert_safe()
        nxt = run(env, "v3")  # after the new election
        assert nxt.code == 0, nxt.err
        assert env.version() == "v3"
        assert [h["result"] for h in history(env)][-1] == "ok"
        env.assert_safe()
    finally:
        if held.proc.poll() is None:
            held.release(point)
            held.proc.kill()
        if old is not None:
            consul_cluster.restart(old)
