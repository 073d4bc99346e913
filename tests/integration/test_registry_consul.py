"""The Consul registry passes the registry contract on a real agent."""

from __future__ import annotations

import itertools

import pytest
import requests

from bluegreen.registry.base import holder_info
from bluegreen.registry.consul import ConsulRegistry
from tests.contract import RegistryContract, health_server  # noqa: F401

pytestmark = pytest.mark.integration
_n = itertools.count()


class TestConsulRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, sandbox):
        prefix = f"contract{next(_n)}/"
        yield ConsulRegistry(sandbox.consul.addr, prefix=prefix)
        requests.delete(f"{sandbox.consul.addr}/v1/kv/{prefix}?recurse=1", timeout=5)
        for sid in requests.get(f"{sandbox.consul.addr}/v1/agent/services", timeout=5).json():
            if sid.startswith("svc-"):
                requests.put(f"{sandbox.consul.addr}/v1/agent/service/deregister/{sid}", timeout=5)


def test_consul_key_layout_is_the_books(sandbox):
    reg = ConsulRegistry(sandbox.consul.addr)
    reg.set_color("layout-ms", "blue")
    raw = requests.get(f"{sandbox.consul.addr}/v1/kv/layout-ms/color?raw", timeout=5).text
    assert raw == "blue"
    reg.set_color("layout-ms", None)


def test_stale_lock_of_a_dead_process_is_freed(sandbox):
    """A holder killed with -9 on this host: its lock is taken over at once, not after the TTL."""
    reg = ConsulRegistry(sandbox.consul.addr, prefix="stale/")
    api = sandbox.consul.addr + "/v1"
    sid = requests.put(f"{api}/session/create", json={"TTL": "60s", "LockDelay": "0s",
                                                      "Behavior": "delete"}, timeout=5).json()["ID"]
    dead = holder_info() | {"pid": 2**22 - 7, "pid_start": "1"}
    import json

    assert requests.put(f"{api}/kv/stale/svc/lock?acquire={sid}", data=json.dumps(dead),
                        timeout=5).json() is True
    said = []
    with reg.lock("svc", on_stale=said.append):
        pass
    assert said and "stale lock" in said[0]
