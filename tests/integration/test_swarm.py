"""SwarmRuntime on real swarms: a single node, then three nodes in their own network namespaces
(``bluegreen_dev.swarm_lab``), with a worker's dockerd killed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from bluegreen.errors import OperationFailed
from bluegreen.model import Container, DeploySpec
from bluegreen.runtime.swarm import SwarmRuntime
from bluegreen_dev.swarm_lab import SwarmLab
from tests.integration import cluster_fixtures

pytestmark = pytest.mark.integration
swarm1 = cluster_fixtures.swarm1
swarm3 = cluster_fixtures.swarm3
swarm3_own = cluster_fixtures.swarm3_own
IMAGE = "bluegreen-sample:v1"


def books(c: Container) -> str:
    r = requests.get(f"http://{c.address}:{c.port}/api/v1/books", timeout=5)
    r.raise_for_status()
    return str(r.json()[0]["version"])


def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.2)


def test_single_node_lifecycle(swarm1: SwarmLab) -> None:
    rt = SwarmRuntime(swarm1.manager.url)
    rt.ping()
    started = rt.start("sw-life", "blue", DeploySpec(IMAGE, 8080, {"K": "v"}, scale=2))
    assert len(started) == 2 and all(c.running and c.port for c in started)
    assert {c.address for c in started} == {swarm1.manager.ip}
    listed = rt.containers("sw-life")
    assert [c.id for c in listed] == [c.id for c in started]
    assert all((c.service, c.color, c.container_port, c.image) == ("sw-life", "blue", 8080, IMAGE)
               for c in listed)
    healthy = rt.wait_healthy(started, 30)
    assert [books(c) for c in healthy] == ["v1", "v1"]
    labels = swarm1.manager.client().services.get("sw-life-blue").attrs["Spec"]["Labels"]
    assert labels["SERVICE_IGNORE"] == "true" and labels["bluegreen.health-path"] == "/"

    assert rt.stop("sw-life", "blue") == sorted(c.name for c in started)
    stopped = rt.containers("sw-life", "blue")
    assert [(c.name, c.state, c.port) for c in stopped] == [
        ("sw-life-blue.1", "exited", None), ("sw-life-blue.2", "exited", None)]
    for c in started:
        with pytest.raises(requests.ConnectionError):
            books(c)

    again = rt.restart("sw-life", "blue")
    assert len(again) == 2 and not {c.id for c in again} & {c.id for c in started}
    assert [books(c) for c in rt.wait_healthy(again, 30)] == ["v1", "v1"]

    assert rt.remove("sw-life", "blue") == sorted(c.name for c in again)
    assert rt.containers("sw-life") == []


def test_single_node_failing_task(swarm1: SwarmLab) -> None:
    rt = SwarmRuntime(swarm1.manager.url)
    try:
        with pytest.raises(OperationFailed, match="non-zero exit"):  # from start or the wait
            rt.wait_healthy(rt.start("sw-crash", "green", DeploySpec("bluegreen-sample:crash")), 30)
    finally:
        rt.remove("sw-crash", "green")
    assert rt.containers("sw-crash") == []


def test_unhealthy_task_times_out(swarm1: SwarmLab) -> None:
    rt = SwarmRuntime(swarm1.manager.url)
    try:
        started = rt.start("sw-sick", "blue", DeploySpec("bluegreen-sample:unhealthy"))
        with pytest.raises(OperationFailed, match="not healthy within"):
            rt.wait_healthy(started, 3)
    finally:
        rt.remove("sw-sick", "blue")


def test_worker_is_not_a_manager(swarm3: SwarmLab) -> None:
    with pytest.raises(OperationFailed, match="not a swarm manager"):
        SwarmRuntime(swarm3.workers[0].url).ping()


def test_replicas_spread_and_reachable(swarm3: SwarmLab) -> None:
    rt = SwarmRuntime(swarm3.manager.url)
    try:
        started = rt.wait_healthy(rt.start("sw-spread", "blue", DeploySpec(IMAGE, scale=3)), 60)
        assert {c.address for c in started} == {n.ip for n in swarm3.nodes}
        assert [books(c) for c in started] == ["v1"] * 3  # from the root namespace
    finally:
        rt.remove("sw-spread", "blue")


def test_worker_dockerd_killed(swarm3_own: SwarmLab) -> None:
    """On a lab of its own: the killed node need not come back for the tests after it (a
    revived dockerd that reattaches to earlier tests' tasks can take minutes)."""
    swarm3 = swarm3_own
    rt = SwarmRuntime(swarm3.manager.url)
    victim = swarm3.workers[-1]
    try:
        started = rt.wait_healthy(rt.start("sw-fault", "blue", DeploySpec("bluegreen-sample:v2",
                                                                    scale=3)), 60)
        assert victim.ip in {c.address for c in started}
        victim.kill_dockerd()
        until(lambda: swarm3.node_state(victim) == "down", 60, "manager marks the node down")
        seen: list[list[Container]] = []

        def rescheduled() -> bool:
            running = [c for c in rt.containers("sw-fault") if c.running]
            seen.append(running)
            return len(running) == 3
        until(rescheduled, 90, "3 running tasks on the live nodes")
        assert all(victim.ip not in {c.address for c in running} for running in seen)
        healthy = rt.wait_healthy(rt.containers("sw-fault"), 60)
        assert len(healthy) == 3 and victim.ip not in {c.address for c in healthy}
        assert [books(c) for c in healthy] == ["v2"] * 3
    finally:
        rt.remove("sw-fault", "blue")
