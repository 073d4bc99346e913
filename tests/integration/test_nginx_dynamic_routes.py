"""The dynamic nginx's routes stored per service (issue 19): a worker that missed generations
converges, a change of several services is seen all at once or not at all, a full dict
refuses a change before any of it is seen, and the read-back of a change reads only its
services (GET ?services=...). On the real nginx with Debian's Lua module."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bluegreen.errors import OperationFailed
from bluegreen.model import Route, Server
from bluegreen.proxy.dynamic import CONTROL_PATH, DynamicControl
from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx
from bluegreen_dev.sandbox import wait_for
from tests.integration import dynamic_fixtures

pytestmark = pytest.mark.integration

backends = dynamic_fixtures.backends
nginx = dynamic_fixtures.nginx
NAMES = ("alpha", "beta", "gamma", "delta")


def get(port: int, path: str) -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def control_get(n: DynamicNginx, query: str) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", int(n.control.rpartition(":")[2]), timeout=10)
    try:
        c.request("GET", CONTROL_PATH + query, headers=n.secret_headers())
        r = c.getresponse()
        return r.status, json.loads(r.read().decode())
    finally:
        c.close()


def server(backends: dict[str, Backend], color: str) -> Server:
    return Server("127.0.0.1", backends[color].port)


def route(backends: dict[str, Backend], name: str, color: str, location: str | None = None
          ) -> Route:
    return Route(name, color, (server(backends, color),),
                 location=f"/{name}" if location is None else location)


def set_up(n: DynamicNginx, backends: dict[str, Backend]) -> DynamicControl:
    """NAMES on blue, each at /NAME (one checked reload); every worker on that generation."""
    proxy = n.proxy()
    gen = proxy.apply([route(backends, name, "blue") for name in NAMES])
    wait_for(lambda: {w["generation"] for w in proxy.read()["workers"]} == {gen}, 10, "workers")
    return proxy.client


EVENT_WAIT = {"232", "281"}  # x86_64 epoll_wait, epoll_pwait: a worker's idle event loop


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The worker ``pid`` stopped (SIGSTOP): it neither syncs nor accepts; resumed after. It
    is stopped only where it waits for events (epoll_wait), holding no shared dict's lock: a
    worker stopped inside one (its counts' flush, every 0.25 s) would block every other
    worker's next request. Stopped elsewhere, it is resumed and stopped again."""
    for _attempt in range(1000):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: _proc_state(pid) == "T", 10, "the worker stopped", 0.001)
        with open(f"/proc/{pid}/syscall") as fh:
            if fh.read().split()[0] in EVENT_WAIT:
                break
        os.kill(pid, signal.SIGCONT)
    else:
        raise AssertionError(f"worker {pid} was never stopped in its event loop")
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def generations(client: DynamicControl) -> dict[int, int]:
    return {w["pid"]: w["generation"] for w in client.read()["workers"]}


@pytest.mark.parametrize("missed", [3, 12])  # within the deltas kept (8), and beyond them
def test_a_worker_that_missed_generations_converges(nginx, backends, missed):
    client = set_up(nginx, backends)
    start = client.read()["generation"]
    late, other = sorted(generations(client))
    expected = dict.fromkeys(NAMES, "blue")
    with stopped(late):
        for i in range(missed):  # one service, then two at once, in turn; delta never changes
            names = ["alpha"] if i % 2 == 0 else ["beta", "gamma"]
            for name in names:
                expected[name] = "green" if expected[name] == "blue" else "blue"
            client.apply({name: [server(backends, expected[name])] for name in names})
        gens = generations(client)  # the other worker answers
        assert gens == {late: start, other: start + missed}, gens
    # resumed: its timer (or its next request) brings it to the last generation
    wait_for(lambda: generations(client)[late] == start + missed, 10, "the late worker")
    with stopped(other):  # only the late worker serves now
        for name in NAMES:
            assert get(nginx.port, f"/{name}") == (200, expected[name]), name
    served = client.read()
    assert {n: s[0]["port"] for n, s in served["services"].items()} == {
        n: backends[c].port for n, c in expected.items()}


def test_a_change_of_several_services_is_seen_all_at_once(nginx, backends):
    """Readers of the routes (the filtered read-back, the full GET) while changes of alpha
    and beta together go on: never one changed without the other; each change is one
    generation."""
    client = set_up(nginx, backends)
    seen: list[tuple[int, int, int]] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def read(full: bool) -> None:
        try:
            while not stop.is_set():
                doc = client.read() if full else client.read_services(["alpha", "beta"])
                s = doc["services"]
                seen.append((doc["generation"], s["alpha"][0]["port"], s["beta"][0]["port"]))
        except BaseException as exc:  # the test's thread: reported below
            failures.append(exc)

    readers = [threading.Thread(target=read, args=(full,)) for full in (False, True, False)]
    for t in readers:
        t.start()
    try:
        gen = client.read()["generation"]
        for i in range(40):
            color = "green" if i % 2 == 0 else "blue"
            new = client.apply({"alpha": [server(backends, color)], "beta": [server(backends, color)]})
            assert new == gen + 1
            gen = new
    finally:
        stop.set()
        for t in readers:
            t.join(30)
    assert not failures, failures
    assert len(seen) > 40
    mixed = [s for s in seen if s[1] != s[2]]
    assert not mixed, mixed[:5]
    # the other services never moved
    served = client.read()["services"]
    assert {served[n][0]["port"] for n in ("gamma", "delta")} == {backends["blue"].port}


def test_a_full_dict_refuses_a_change_before_any_of_it_is_seen(nginx, backends):
    """Services with 256 servers each are posted ten at a time, with alpha switched in the
    same change, until the dict cannot hold them: that change is refused (507), alpha still
    serves blue, nothing of it is seen; once the big routes are replaced by small ones, their
    old keys are gone and the same change fits again."""
    proxy = nginx.proxy()
    big = [f"big-{i:03d}" for i in range(100)]
    proxy.apply([route(backends, "alpha", "blue")] +
                [route(backends, name, "blue", location="") for name in big])
    client = proxy.client
    many = [server(backends, "green")] + [Server(f"127.0.{i // 250}.{i % 250 + 1}", 9, 0)
                                          for i in range(255)]
    refused = None
    applied: list[str] = []
    for group in range(10):  # 10 x 10 x 256 servers: more than the dict holds
        names = big[group * 10:group * 10 + 10]
        before = client.read()
        try:
            client.apply({"alpha": [server(backends, "green")]} | {n: many for n in names})
        except OperationFailed as exc:
            refused = (group, names, str(exc))
            break
        applied += names
        client.apply({"alpha": [server(backends, "blue")]})
    assert refused and refused[0] > 0, refused
    assert "(507)" in refused[2] and "cannot hold the routes" in refused[2], refused[2]
    after = client.read()
    assert after["generation"] == before["generation"]
    assert after["services"] == before["services"]
    assert get(nginx.port, "/alpha") == (200, "blue")
    # the big routes replaced by small ones: their keys go, and the refused change now fits
    client.apply({n: [server(backends, "blue")] for n in applied})
    client.apply({"alpha": [server(backends, "green")]} | {n: many for n in refused[1]})
    assert get(nginx.port, "/alpha") == (200, "green")
    assert len(client.read_services(refused[1])["services"][refused[1][0]]) == 256


def test_the_read_back_reads_only_the_services_it_names(nginx, backends):
    client = set_up(nginx, backends)
    client.apply({"beta": [server(backends, "green")]})
    status, doc = control_get(nginx, "?services=beta,alpha")
    assert status == 200, doc
    assert set(doc) == {"generation", "services", "chains", "releases", "locations", "workers"}
    assert doc["locations"] == {}  # locations of the routing table's only
    assert doc["services"] == {"alpha": [{"address": "127.0.0.1", "port": backends["blue"].port,
                                          "weight": 100}],
                               "beta": [{"address": "127.0.0.1", "port": backends["green"].port,
                                         "weight": 100}]}
    assert doc["generation"] == client.read()["generation"]
    assert len(doc["workers"]) == nginx.workers
    assert client.read_services(["beta"])["services"].keys() == {"beta"}
    for query, why in [
            ("?services=", "services must be one list"),
            ("?services", "services must be one list"),
            ("?services=alpha&services=beta", "services must be one list"),
            ("?services=Alpha", "invalid service name"),
            ("?services=alpha,,beta", "invalid service name"),
            ("?services=alpha,", "invalid service name"),
            ("?services=..%2Fetc", "invalid service name"),
            ("?services=alpha%20", "invalid service name"),
            ("?services=alpha,alpha", "named twice"),
            ("?services=nosuch", "unknown service nosuch"),
            ("?services=alpha&view=figures", "view must be figures"),
            ("?other=1", "unknown query argument"),
            ("?a=1&b=2&c=3&d=4", "too many query arguments")]:
        status, doc = control_get(nginx, query)
        assert status == 400 and why in doc["error"], (query, status, doc)
    c = http.client.HTTPConnection("127.0.0.1", int(nginx.control.rpartition(":")[2]), timeout=10)
    c.request("GET", CONTROL_PATH + "?services=alpha")  # no secret
    assert c.getresponse().status == 403
    c.close()
