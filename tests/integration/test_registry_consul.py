"""The Consul registry passes the registry contract on a real agent."""

from __future__ import annotations

import _thread
import itertools
import time

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


def test_a_held_lock_is_renewed_until_released(sandbox, monkeypatch):
    """The renewer renews the session while the lock is held, on Consul itself, and ends
    with the lock."""
    from bluegreen.registry import consul

    monkeypatch.setattr(consul, "RENEW_EVERY", 0.02)
    renewals = []
    real = consul._ConsulLease.renew
    monkeypatch.setattr(consul._ConsulLease, "renew",
                        lambda lease: (renewals.append(lease.sid), real(lease)))
    reg = ConsulRegistry(sandbox.consul.addr, prefix="renew/")
    threads = _thread._count()
    with reg.lock("svc") as lease:
        deadline = time.monotonic() + 30
        while len(renewals) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert renewals[:3] == [lease.sid] * 3 and not lease.lost
        info = requests.get(f"{sandbox.consul.addr}/v1/session/info/{lease.sid}", timeout=5)
        assert info.json() and info.json()[0]["ID"] == lease.sid
    deadline = time.monotonic() + 30
    while _thread._count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _thread._count() == threads, "the renewer outlived the lock"
    assert requests.get(f"{sandbox.consul.addr}/v1/session/info/{lease.sid}",
                        timeout=5).json() in (None, [])
