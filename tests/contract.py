"""The registry contract: one suite that every backend must pass (file and Consul)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from bluegreen.errors import InvalidRecord, LockHeld
from bluegreen.model import Instance
from bluegreen.registry.base import Registry


@pytest.fixture(scope="module")
def health_server() -> Iterator[str]:
    """A loopback HTTP server: /ok answers 200, anything else 500."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def wait_until(fn, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


class RegistryContract:
    """Subclasses provide a ``registry`` fixture returning a fresh, empty registry."""

    def test_color_record(self, registry: Registry):
        assert registry.get_color("books-ms") is None
        registry.set_color("books-ms", "blue")
        assert registry.get_color("books-ms") == "blue"
        assert registry.kv_get(registry.key("books-ms", "color")) == "blue"
        registry.set_color("books-ms", None)
        assert registry.get_color("books-ms") is None

    @pytest.mark.parametrize("junk", ["purple", "green\n}", "x" * 10240, ""])
    def test_invalid_color_record_is_an_error_not_an_absence(self, registry: Registry, junk):
        registry.kv_put(registry.key("books-ms", "color"), junk)
        with pytest.raises(InvalidRecord, match=r"invalid record \S*books-ms/color: .* is not blue"):
            registry.get_color("books-ms")

    @pytest.mark.parametrize(("name", "junk"), [
        ("history", "{not json"), ("history", '{"a": 1}'), ("inflight", "[1]"),
        ("inflight", '{"to": "purple"}'), ("release-blue", '{"image": 3, "verified": true}'),
        ("scale-down", '{"color": "blue"}')])
    def test_invalid_json_record_is_an_error(self, registry: Registry, name, junk):
        registry.kv_put(registry.key("svc", name), junk)
        with pytest.raises(InvalidRecord, match=rf"invalid record \S*svc/{name}: not "):
            registry.get_json("svc", name)
        if name == "history":  # nothing is appended over it: it would be lost
            with pytest.raises(InvalidRecord):
                registry.append_json("svc", "history", {"n": 1}, keep=5)
            assert registry.kv_get(registry.key("svc", name)) == junk
            aside = registry.set_aside("svc", name)
            assert registry.kv_get(registry.key("svc", aside)) == junk
            assert registry.get_json("svc", name) is None

    def test_json_records_and_append_keeps_last(self, registry: Registry):
        run = {"from": None, "to": "blue", "phase": "deploy"}
        registry.put_json("svc", "inflight", run)
        assert registry.get_json("svc", "inflight") == run
        registry.put_json("svc", "inflight", None)
        assert registry.get_json("svc", "inflight") is None
        for i in range(7):
            registry.append_json("svc", "history", {"n": i}, keep=5)
        assert [e["n"] for e in registry.get_json("svc", "history")] == [2, 3, 4, 5, 6]

    def test_concurrent_appends_lose_nothing(self, registry: Registry):
        threads = [threading.Thread(target=lambda i=i: registry.append_json(
            "svc", "history", {"n": i}, keep=100)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(e["n"] for e in registry.get_json("svc", "history")) == list(range(8))

    def test_instances_and_health(self, registry: Registry, health_server: str):
        port = int(health_server.rsplit(":", 1)[1])
        good = Instance("svc-blue-1", "svc", "blue", "127.0.0.1", port, f"{health_server}/ok")
        bad = Instance("svc-blue-2", "svc", "blue", "127.0.0.1", port, f"{health_server}/bad")
        registry.register(good)
        registry.register(bad)
        assert [i.id for i in registry.instances("svc", "blue")] == ["svc-blue-1", "svc-blue-2"]
        passing = wait_until(lambda: registry.instances("svc", "blue", passing=True))
        assert [i.id for i in passing] == ["svc-blue-1"]
        assert passing[0].hostport == f"127.0.0.1:{port}"
        assert registry.instances("svc", "green") == []
        registry.deregister("svc-blue-1")
        registry.deregister("svc-blue-2")
        assert registry.instances("svc", "blue") == []

    def test_lock_excludes_and_names_holder(self, registry: Registry):
        with registry.lock("svc"):
            with pytest.raises(LockHeld, match=r"svc is locked by host \S+ pid \d+"):  # noqa: SIM117
                with registry.lock("svc"):
                    pass
            with registry.lock("other-svc"):  # other services are independent
                pass
        with registry.lock("svc"):  # released on exit
            pass

    def test_lock_wait(self, registry: Registry):
        held = threading.Event()
        release = threading.Event()

        def holder() -> None:
            with registry.lock("svc"):
                held.set()
                release.wait(5)

        t = threading.Thread(target=holder)
        t.start()
        held.wait(5)
        threading.Timer(0.5, release.set).start()
        start = time.monotonic()
        with registry.lock("svc", wait=10):
            waited = time.monotonic() - start
        t.join()
        assert waited > 0.2
