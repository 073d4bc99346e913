"""Rendering, weights, diff, and the write/test/reload/restore protocol with a controller double."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bluegreen.errors import OperationFailed, UsageError
from bluegreen.proxy import NginxController, Proxy, Server, weighted_servers


class Controller(NginxController):
    """A stand-in nginx: records calls; ``nginx -t`` fails when a file contains 'BROKEN'."""

    where = "test"

    def __init__(self, proxy_dirs, reload_fails=False):
        self.dirs, self.reload_fails, self.calls = proxy_dirs, reload_fails, []

    def ping(self):
        self.calls.append("ping")

    def test(self):
        self.calls.append("test")
        broken = any("BROKEN" in p.read_text() for d in self.dirs for p in d.glob("*.conf"))
        return (not broken, "nginx: [emerg] unexpected BROKEN" if broken else "")

    def workers(self):
        return {}

    def signal_reload(self):
        self.calls.append("reload")

    def reload(self, timeout=10.0):
        self.calls.append("reload")
        if self.reload_fails:
            self.reload_fails = False
            raise OperationFailed("nginx did not load the new configuration")


@pytest.fixture
def proxy(tmp_path):
    up, inc = tmp_path / "up", tmp_path / "inc"
    return Proxy(Controller([up, inc]), up, inc, location="/api/v1/books")


def test_render_upstream_and_include(proxy):
    plan = proxy.render("books-ms", "blue", [Server("10.0.0.1", 32768), Server("10.0.0.1", 32769)])
    up, inc = proxy.paths("books-ms")
    assert plan[up] == ("# Managed by bluegreen: service=books-ms color=blue weight=100\n"
                        "upstream books-ms {\n    server 10.0.0.1:32768;\n"
                        "    server 10.0.0.1:32769;\n}\n")
    assert "location /api/v1/books {\n    proxy_pass http://books-ms;" in plan[inc]


def test_render_refuses_unsafe_servers_and_empty(proxy):
    with pytest.raises(UsageError):
        proxy.render("books-ms", "blue", [Server("1.2.3.4;}", 80)])
    with pytest.raises(OperationFailed):
        proxy.render("books-ms", "blue", [])


def test_user_include_file(tmp_path):
    own = tmp_path / "nginx-includes.conf"
    own.write_text("location /api/v1/books { proxy_pass http://books-ms/api/v1/books; }\n")
    p = Proxy(Controller([]), tmp_path / "u", tmp_path / "i", include_file=str(own))
    plan = p.render("books-ms", "green", [Server("h", 1)])
    assert plan[p.paths("books-ms")[1]] == own.read_text()


def test_weighted_servers():
    new = [SimpleNamespace(address="n", port=1)]
    old = [SimpleNamespace(address="o", port=1), SimpleNamespace(address="o", port=2)]
    assert weighted_servers(new, old, 100) == [Server("n", 1)]
    assert weighted_servers(new, old, 0) == [Server("o", 1), Server("o", 2)]
    # 50% on 1 new instance vs 50% on 2 old ones: the new one weighs as much as both.
    assert weighted_servers(new, old, 50) == [Server("n", 1, 2), Server("o", 1, 1), Server("o", 2, 1)]
    assert weighted_servers(new, old, 20) == [Server("n", 1, 1), Server("o", 1, 2), Server("o", 2, 2)]


def test_apply_writes_tests_reloads_and_serving(proxy):
    plan = proxy.render("books-ms", "blue", [Server("127.0.0.1", 5000)])
    assert proxy.apply(plan) is True
    assert proxy.controller.calls == ["ping", "test", "reload"]
    serving = proxy.serving("books-ms")
    assert (serving.color, serving.weight, serving.servers) == ("blue", 100, ("127.0.0.1:5000",))
    proxy.controller.calls.clear()
    assert proxy.apply(plan) is False  # unchanged: no reload
    assert proxy.controller.calls == []


def test_failed_validation_restores_previous_files(proxy):
    good = proxy.render("books-ms", "blue", [Server("127.0.0.1", 5000)])
    proxy.apply(good)
    before = {p: p.read_text() for p in good}
    bad = proxy.render("books-ms", "green", [Server("127.0.0.1", 6000)])
    inc = proxy.paths("books-ms")[1]
    bad[inc] = "BROKEN {"
    proxy.controller.calls.clear()
    with pytest.raises(OperationFailed, match="nginx rejected the configuration"):
        proxy.apply(bad)
    assert {p: p.read_text() for p in good} == before
    assert proxy.controller.calls == ["ping", "test"]  # never reloaded
    assert proxy.serving("books-ms").color == "blue"


def test_failed_reload_restores_previous_files(proxy):
    good = proxy.render("books-ms", "blue", [Server("127.0.0.1", 5000)])
    proxy.apply(good)
    proxy.controller.reload_fails = True
    with pytest.raises(OperationFailed, match="did not load"):
        proxy.apply(proxy.render("books-ms", "green", [Server("127.0.0.1", 6000)]))
    assert proxy.serving("books-ms").color == "blue"


def test_first_failure_removes_new_files(proxy):
    plan = proxy.render("books-ms", "blue", [Server("127.0.0.1", 5000)])
    plan[proxy.paths("books-ms")[1]] = "BROKEN"
    with pytest.raises(OperationFailed):
        proxy.apply(plan)
    assert not any(p.exists() for p in plan)


def test_diff_and_removal(proxy):
    plan = proxy.render("books-ms", "blue", [Server("127.0.0.1", 5000)])
    diff = proxy.diff(plan)
    assert diff.startswith("--- /dev/null\n+++ b")
    proxy.apply(plan)
    assert proxy.diff(plan) == ""
    removal = proxy.render_removal("books-ms")
    assert "+++ /dev/null" in proxy.diff(removal)
    proxy.apply(removal)
    assert proxy.serving("books-ms").color is None


def test_temp_files_never_match_the_include_glob(proxy, monkeypatch):
    import bluegreen.proxy as mod

    seen = []
    real = mod.os.replace

    def spy(src, dst):
        seen.append(str(src))
        return real(src, dst)

    monkeypatch.setattr(mod.os, "replace", spy)
    proxy.apply(proxy.render("books-ms", "blue", [Server("127.0.0.1", 5000)]))
    assert seen and not any(s.endswith(".conf") for s in seen)
