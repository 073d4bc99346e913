"""A 3-server Consul cluster on loopback (``bluegreen_dev.consul_cluster``): forms, survives the loss of
its leader, and ConsulRegistry on its client agent keeps working across the election."""

from __future__ import annotations

import json
import time

import pytest

from bluegreen.model import Instance
from bluegreen.registry.consul import ConsulRegistry
from bluegreen_dev.consul_cluster import ConsulCluster, http_get
from tests.integration import cluster_fixtures

pytestmark = pytest.mark.integration
consul_cluster = cluster_fixtures.consul_cluster


def passing(reg: ConsulRegistry, service: str, color: str, count: int) -> list[Instance]:
    deadline = time.monotonic() + 30
    while len(found := reg.instances(service, color, passing=True)) < count:
        assert time.monotonic() < deadline, f"{count} passing instance(s) not reached"
        time.sleep(0.1)
    return found


def test_cluster_forms(consul_cluster: ConsulCluster) -> None:
    leader = consul_cluster.wait_leader()
    _, peers = http_get(consul_cluster.client.http, "/v1/status/peers")
    assert sorted(json.loads(peers)) == sorted(s.rpc for s in consul_cluster.servers)
    assert leader in consul_cluster.servers
    ConsulRegistry(consul_cluster.client.addr).ping()


def test_leader_killed_registry_survives(consul_cluster: ConsulCluster) -> None:
    reg = ConsulRegistry(consul_cluster.client.addr)
    svc = "cc-failover"
    reg.set_color(svc, "blue")
    reg.append_json(svc, "history", {"run": 1}, keep=50)
    check = f"http://{consul_cluster.client.http}/v1/status/leader"
    reg.register(Instance(id="cc-failover-blue.1", service=svc, color="blue",
                          address="127.0.0.1", port=1, check_url=check))
    passing(reg, svc, "blue", 1)

    old = consul_cluster.kill_leader()
    new = consul_cluster.wait_leader(other_than=old)
    try:
        assert new is not old and new.alive
        reg.ping()
        assert reg.get_color(svc) == "blue"
        assert reg.get_json(svc, "history") == [{"run": 1}]
        reg.set_color(svc, "green")
        reg.append_json(svc, "history", {"run": 2}, keep=50)
        with reg.lock(svc):
            assert reg.kv_get(reg.key(svc, "lock"))
        assert reg.kv_get(reg.key(svc, "lock")) is None
        reg.register(Instance(id="cc-failover-green.1", service=svc, color="green",
                              address="127.0.0.1", port=2, check_url=check))
        assert [i.id for i in passing(reg, svc, "green", 1)] == ["cc-failover-green.1"]
    finally:
        consul_cluster.restart(old)
    # The old leader rejoined as a follower and holds what was written while it was down.
    assert consul_cluster.wait_leader() is not None
    deadline = time.monotonic() + 30
    while (http_get(old.http, f"/v1/kv/{svc}/color?raw&stale")[1] != b"green"):
        assert time.monotonic() < deadline, "the restarted server never caught up"
        time.sleep(0.1)
    assert reg.get_json(svc, "history") == [{"run": 1}, {"run": 2}]
    for inst in ("cc-failover-blue.1", "cc-failover-green.1"):
        reg.deregister(inst)
