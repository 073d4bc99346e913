"""nginx reload mode: rendering, weights, diff, and the write/test/reload/restore protocol of ONE
change for one or more services, with a controller double."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bluegreen.errors import OperationFailed, UsageError
from bluegreen.model import Route, Server
from bluegreen.proxy.base import weighted_route
from bluegreen.proxy.nginx import NginxController, NginxProxy


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
    return NginxProxy(Controller([up, inc]), up, inc, location="/api/v1/books")


def route(color, *servers, service="books-ms", weight=100):
    return [Route(service, color, tuple(Server(*s) for s in servers), weight)]


def broken_twin(proxy, tmp_path):
    """The same nginx files, but every service's include is one nginx -t refuses."""
    bad = tmp_path / "broken.conf"
    bad.write_text("BROKEN {\n")
    return NginxProxy(proxy.controller, proxy.upstream_dir, proxy.include_dir,
                      include_file=str(bad))


def test_render_upstream_and_include(proxy):
    plan = proxy.plan(route("blue", ("10.0.0.1", 32768), ("10.0.0.1", 32769)))
    up, inc = proxy.paths("books-ms")
    assert plan[up] == ("# Managed by bluegreen: service=books-ms color=blue weight=100\n"
                        "upstream books-ms {\n    server 10.0.0.1:32768;\n"
                        "    server 10.0.0.1:32769;\n}\n")
    assert "location /api/v1/books {\n    proxy_pass http://books-ms;" in plan[inc]


def test_render_refuses_unsafe_servers(proxy):
    with pytest.raises(UsageError):
        proxy.plan(route("blue", ("1.2.3.4;}", 80)))
    with pytest.raises(UsageError):
        proxy.plan(route("blue", ("1.2.3.4", 0)))


def test_user_include_file(tmp_path):
    own = tmp_path / "nginx-includes.conf"
    own.write_text("location /api/v1/books { proxy_pass http://books-ms/api/v1/books; }\n")
    p = NginxProxy(Controller([]), tmp_path / "u", tmp_path / "i", include_file=str(own))
    plan = p.plan(route("green", ("h", 1)))
    assert plan[p.paths("books-ms")[1]] == own.read_text()


def test_weighted_route():
    new = [SimpleNamespace(address="n", port=1, color="green")]
    old = [SimpleNamespace(address="o", port=1, color="blue"),
           SimpleNamespace(address="o", port=2, color="blue")]
    G, B = "green", "blue"
    assert weighted_route("s", "green", new, old, 100).servers == (Server("n", 1, color=G),)
    zero = weighted_route("s", "green", new, old, 0)  # the new servers kept, at weight 0
    assert (zero.color, zero.weight, zero.servers) == (
        "blue", 100, (Server("o", 1, color=B), Server("o", 2, color=B), Server("n", 1, 0, G)))
    # 50% on 1 new instance vs 50% on 2 old ones: the new one weighs as much as both.
    assert weighted_route("s", "green", new, old, 50).servers == (
        Server("n", 1, 2, G), Server("o", 1, 1, B), Server("o", 2, 1, B))
    twenty = weighted_route("s", "green", new, old, 20, sticky=True)
    assert (twenty.weight, twenty.sticky, twenty.servers) == (
        20, True, (Server("n", 1, 1, G), Server("o", 1, 2, B), Server("o", 2, 2, B)))


def test_the_reload_mode_leaves_a_weight_0_server_out(tmp_path):
    new = [SimpleNamespace(address="10.0.0.2", port=2, color="green")]
    old = [SimpleNamespace(address="10.0.0.1", port=1, color="blue")]
    p = NginxProxy(Controller([]), tmp_path / "u", tmp_path / "i")
    text = p.plan([weighted_route("s", "green", new, old, 0)])[p.paths("s")[0]]
    assert "10.0.0.1:1;" in text and "10.0.0.2" not in text and "weight=0" not in text
    assert "color=blue weight=100" in text


def test_the_dynamic_release_of_a_route():
    from bluegreen.proxy.dynamic_state import release_of

    g = {"address": "1.1.1.1", "port": 1, "weight": 20, "color": "green"}
    b = {"address": "1.1.1.2", "port": 1, "weight": 80, "color": "blue"}
    assert release_of({"color": "green", "weight": 20, "sticky": True}, [g, b]) == {
        "new": "green", "weight": 20, "sticky": True}
    assert release_of({"color": "blue", "weight": 100}, [g | {"weight": 0}, b]) == {
        "new": "green", "weight": 0, "sticky": False}  # a weight-0 route: a preview
    assert release_of({"color": "green", "weight": 100}, [g]) is None
    assert release_of({"color": "green", "weight": 20}, [g, b | {"color": None}]) is None
    assert release_of(None, [g, b]) is None


def test_apply_writes_tests_reloads_and_serving(proxy):
    routes = route("blue", ("127.0.0.1", 5000))
    assert proxy.apply(routes) is True
    assert proxy.controller.calls == ["ping", "test", "reload"]
    serving = proxy.serving("books-ms")
    assert (serving.color, serving.weight, serving.servers) == ("blue", 100, ("127.0.0.1:5000",))
    proxy.controller.calls.clear()
    assert proxy.apply(routes) is False  # unchanged: no reload
    assert proxy.controller.calls == []


def test_several_services_are_one_change(proxy):
    routes = route("blue", ("127.0.0.1", 5000)) + route("green", ("127.0.0.1", 6000), service="web")
    assert proxy.apply(routes) is True
    assert proxy.controller.calls == ["ping", "test", "reload"]  # one test, one reload
    assert proxy.serving("web").color == "green" and proxy.serving("books-ms").color == "blue"


def test_failed_validation_restores_every_service(proxy, tmp_path):
    proxy.apply(route("blue", ("127.0.0.1", 5000)))
    before = {p: p.read_text() for d in (proxy.upstream_dir, proxy.include_dir)
              for p in d.glob("*.conf")}
    proxy.controller.calls.clear()
    bad = broken_twin(proxy, tmp_path)
    with pytest.raises(OperationFailed, match="nginx rejected the configuration"):
        bad.apply(route("green", ("127.0.0.1", 6000)) + route("blue", ("127.0.0.1", 7), service="web"))
    after = {p: p.read_text() for d in (proxy.upstream_dir, proxy.include_dir)
             for p in d.glob("*.conf")}
    assert after == before  # all or nothing: web's new files are gone too
    assert proxy.controller.calls == ["ping", "test"]  # never reloaded
    assert proxy.serving("books-ms").color == "blue"


def test_failed_reload_restores_previous_files(proxy):
    proxy.apply(route("blue", ("127.0.0.1", 5000)))
    proxy.controller.reload_fails = True
    with pytest.raises(OperationFailed, match="did not load"):
        proxy.apply(route("green", ("127.0.0.1", 6000)))
    assert proxy.serving("books-ms").color == "blue"


def test_first_failure_removes_new_files(proxy, tmp_path):
    with pytest.raises(OperationFailed):
        broken_twin(proxy, tmp_path).apply(route("blue", ("127.0.0.1", 5000)))
    assert not any(p.exists() for p in proxy.paths("books-ms"))


def test_diff_and_removal(proxy):
    routes = route("blue", ("127.0.0.1", 5000))
    diff = proxy.diff(routes)
    assert diff.startswith("--- /dev/null\n+++ b")
    proxy.apply(routes)
    assert proxy.diff(routes) == ""
    removal = [Route("books-ms", None)]
    assert "+++ /dev/null" in proxy.diff(removal)
    proxy.apply(removal)
    assert proxy.serving("books-ms").color is None


def test_temp_files_never_match_the_include_glob(proxy, monkeypatch):
    import bluegreen.proxy.nginx as mod

    seen = []
    real = mod.os.replace

    def spy(src, dst):
        seen.append(str(src))
        return real(src, dst)

    monkeypatch.setattr(mod.os, "replace", spy)
    proxy.apply(route("blue", ("127.0.0.1", 5000)))
    assert seen and not any(s.endswith(".conf") for s in seen)


def test_internal_endpoint_with_chains(proxy):
    from bluegreen.model import Chain

    chains = (Chain("new", "green", ("172.17.0.9",), (Server("127.0.0.1", 7002),)),
              Chain("old", "blue", ("172.17.0.8", "172.17.0.7"), (Server("127.0.0.1", 7001),)))
    route = Route("app.a", "green", (Server("127.0.0.1", 7001, 1), Server("127.0.0.1", 7002, 1)),
                  50, location="", endpoint="servicea.local", chains=chains)
    plan = proxy.plan([route])
    up, inc = proxy.paths("app.a")
    text = plan[up]
    assert plan[inc] is None  # an internal endpoint only: no public location
    assert "upstream app.a--new {\n    server 127.0.0.1:7002;\n}" in text
    assert "    172.17.0.8 old;\n    172.17.0.7 old;" in text and "    172.17.0.9 new;" in text
    assert "server_name servicea.local;" in text and "listen 172.17.0.1:80;" in text
    assert proxy.serving("app.a").servers == ()  # nothing applied yet
    with pytest.raises(UsageError):  # caller addresses are validated like servers
        proxy.plan([Route("app.a", "green", route.servers, 50, endpoint="servicea.local",
                          chains=(Chain("new", "green", ("1.2.3.4; }",), chains[0].servers),))])
    proxy.apply([route])  # what the proxy keeps is read back (status, putting back)
    now = proxy.current("app.a")
    assert (now.endpoint, now.chains, now.weight) == ("servicea.local", chains, 50)


def test_a_dry_run_routes_a_planned_color_by_its_containers_names(proxy, tmp_path):
    from bluegreen.flow.steps import Steps
    from bluegreen.model import DeploySpec, Instance, Move
    from bluegreen.registry.file import FileRegistry

    registry = FileRegistry(tmp_path / "registry.json")
    registry.register(Instance("books-ms-blue", "books-ms", "blue", "127.0.0.1", 8080),
                      passing=True)
    proxy.apply(route("blue", ("127.0.0.1", 8080)))
    files = {p: p.read_text() for p in tmp_path.rglob("*.conf")}
    said: list[str] = []
    planned = {("books-ms", "green"): DeploySpec("books-ms:2", port=5001, scale=2)}
    steps = Steps(registry, proxy=proxy, say=said.append, dry_run=True)
    assert steps.route([Move("books-ms", "green", 50)], planned=planned)
    diff = "\n".join(said)
    assert "+    server books-ms-green-1:5001 weight=1;" in diff
    assert "+    server books-ms-green-2:5001 weight=1;" in diff
    assert "+    server 127.0.0.1:8080 weight=2;" in diff
    assert {p: p.read_text() for p in tmp_path.rglob("*.conf")} == files
    assert proxy.controller.calls.count("reload") == 1  # the first apply only
    with pytest.raises(OperationFailed, match="no passing instance of books-ms-green"):
        Steps(registry, proxy=proxy, say=said.append).route([Move("books-ms", "green", 50)],
                                                            planned=planned)  # a real run
