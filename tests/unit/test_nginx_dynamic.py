"""Rendering and validation of the dynamic nginx mode (no nginx needed)."""

from __future__ import annotations

import json

import pytest

from bluegreen.errors import OperationFailed, Unreachable, UsageError
from bluegreen.model import Chain, Route, Server
from bluegreen.proxy import dynamic as nd
from bluegreen.proxy import dynamic_state as ds
from bluegreen_dev.sandbox import free_port


def write_base(path, text: str) -> None:
    """A base written as bluegreen writes one: its (empty) journal made first."""
    for name, content in ds.base_files(path, text).items():
        ds.write_atomic(name, content)


def test_render_has_one_balanced_upstream_per_service_and_a_loopback_control_server(tmp_path):
    text = nd.render_http(["web", "books-ms", "web"], "127.0.0.1:9000", tmp_path / "routes.json")
    assert nd.configured_services(text) == {"books-ms", "web"}
    assert text.count("upstream ") == 2
    for name in ("books-ms", "web"):
        assert f'upstream {name} {{\n    server 0.0.0.1:1 down;' in text
        assert f'balance("{name}")' in text
    assert 'services = {\n            "books-ms",\n            "web",\n        },' in text
    assert f'state_file = "{tmp_path}/routes.json"' in text
    assert f'last_good_file = "{tmp_path}/routes.last-good.json"' in text
    assert f'secret_file = "{tmp_path}/routes.secret"' in text
    assert f'lua_package_path "{nd.lua_dir()}/?.lua;;";' in text
    assert "lua_shared_dict bluegreen 1m;" in text
    assert max(len(line) for line in text.splitlines()) < 200
    assert text.count("listen ") == 1 and "listen 127.0.0.1:9000;" in text
    assert f"location = {nd.CONTROL_PATH} {{" in text
    assert "deny all;" in text


def test_render_with_the_lua_module_elsewhere(tmp_path):
    text = nd.render_http(["web"], "127.0.0.1:9000", "/var/lib/bluegreen/routes.json",
                          lua_path="/etc/nginx/lua@2+x")
    assert 'lua_package_path "/etc/nginx/lua@2+x/?.lua;;";' in text


def test_render_without_services_keeps_the_control_server(tmp_path):
    text = nd.render_http([], "unix:/run/bluegreen/control.sock", tmp_path / "s.json")
    assert nd.configured_services(text) == set()
    assert "upstream" not in text and "listen unix:/run/bluegreen/control.sock;" in text
    assert nd.configured_services(None) == set()


@pytest.mark.parametrize("value", ["127.0.0.1:8081", "127.9.9.9:1", "unix:/tmp/bg.sock"])
def test_control_addresses_on_loopback_or_a_socket(value):
    assert nd.control_address(value) == value


@pytest.mark.parametrize("value", [
    "0.0.0.0:8081", "10.0.0.1:8081", "localhost:8081", "[::1]:8081", "127.0.0.1:0",
    "127.0.0.1:65536", "127.0.0.1", "127.0.0.1:80;", "unix:relative.sock", "unix:/tmp/a b",
    "unix:/tmp/../etc/x", 'unix:/tmp/x";', "",
])
def test_other_control_addresses_are_refused(value):
    with pytest.raises(UsageError):
        nd.control_address(value)


@pytest.mark.parametrize("kwargs", [
    {"services": ["Bad"]}, {"services": ["a;b"]}, {"services": ["_x"]},
    {"state_file": "relative.json"}, {"state_file": '/tmp/x".json'}, {"state_file": "/tmp/a\nb"},
    {"dict_size": "1g"}, {"dict_size": "10"}, {"dict_size": "1m;"}, {"lua_path": "/opt/lua;"},
    {"lua_path": '/opt/"lua'}, {"lua_path": "/opt/../lua"},
])
def test_render_refuses_unsafe_values(kwargs):
    args = {"services": ["web"], "control": "127.0.0.1:9000", "state_file": "/tmp/s.json"} | kwargs
    with pytest.raises(UsageError):
        nd.render_http(**args)


def test_load_module_lines_use_absolute_paths():
    assert nd.load_module_lines() == ("load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
                                      "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n")


def test_check_routes_gives_the_payload():
    routes = {"web": [Server("127.0.0.1", 8080, 30), Server("localhost", 8081, 70)],
              "api": [Server("10.0.0.5", 80)]}
    assert nd.check_routes(routes) == {
        "web": [{"address": "127.0.0.1", "port": 8080, "weight": 30},
                {"address": "127.0.0.1", "port": 8081, "weight": 70}],  # resolved: IPv4 only
        "api": [{"address": "10.0.0.5", "port": 80, "weight": nd.DEFAULT_WEIGHT}],
    }
    # a weight of 0 is allowed beside a live server (stepped weights)
    assert nd.check_routes({"web": [Server("127.0.0.1", 1, 0), Server("127.0.0.1", 2, 100)]})


@pytest.mark.parametrize("routes", [
    {}, {"web": []}, {"Web": [Server("127.0.0.1", 80)]}, {"../x": [Server("127.0.0.1", 80)]},
    {"web": [Server("127.0.0.1;", 80)]}, {"web": [Server("127.0.0.1}", 80)]},
    {"web": [Server("127.0.0.1 backup", 80)]}, {"web": [Server("[::1]", 80)]},
    {"web": [Server("127.0.0.1", 0)]}, {"web": [Server("127.0.0.1", 65536)]},
    {"web": [Server("127.0.0.1", 80, 101)]}, {"web": [Server("127.0.0.1", 80, -1)]},
    {"web": [Server("127.0.0.1", 80, 0)]}, {"web": [Server("127.0.0.1", 80)] * 2},
])
def test_check_routes_refuses(routes):
    with pytest.raises(UsageError):
        nd.check_routes(routes)


def test_state_file_merges_and_is_written_atomically(tmp_path):
    path = tmp_path / "state" / "routes.json"
    assert ds.read_state(path) == {}
    web = nd.check_routes({"web": [Server("127.0.0.1", 8080)]})
    write_base(path, nd.merged_state(path, web))
    api = nd.check_routes({"api": [Server("127.0.0.1", 9090, 5)]})
    write_base(path, nd.merged_state(path, api))
    assert ds.read_state(path) == web | api
    assert json.loads(path.read_text()) == {"id": ds.base_id_of(path), "services": api | web,
                                            "colors": {}}
    write_base(path, nd.merged_state(path, {}, drop=["web"]))
    assert ds.read_state(path) == api
    assert sorted(p.name for p in path.parent.iterdir()) == ["routes.journal", "routes.json"]
    ds.write_atomic(path, None)
    assert not path.exists()


def test_a_refused_or_unreachable_apply_leaves_the_state_file(tmp_path):
    path = tmp_path / "routes.json"
    path.write_text('{"services": {}}\n')
    client = nd.DynamicControl(f"127.0.0.1:{free_port()}", path, timeout=2)  # nothing listens
    with pytest.raises(UsageError):
        client.apply({"web": [Server("127.0.0.1", 0)]})
    with pytest.raises(Unreachable, match="nginx control endpoint"):
        client.apply({"web": [Server("127.0.0.1", 8080)]})
    assert path.read_text() == '{"services": {}}\n'
    with pytest.raises(Unreachable):
        client.read()


def test_render_serves_each_internal_endpoint_through_its_chained_upstream(tmp_path):
    text = nd.render_http(["web", "api"], "127.0.0.1:9000", tmp_path / "s.json",
                          endpoints={"api": "api.local"}, internal_listen="172.17.0.1:80")
    assert nd.configured_services(text) == {"api", "web"}
    assert nd.configured_endpoints(text) == {"api": "api.local"}
    assert 'endpoints = {\n            "api",\n        },' in text
    assert 'balance("api", true)' in text and 'balance("web", true)' not in text
    assert "listen 172.17.0.1:80;\n    server_name api.local;" in text
    assert "proxy_pass http://_bg_internal.api;" in text
    assert nd.configured_endpoints(nd.render_http(["web"], "127.0.0.1:9000", "/tmp/s.json")) == {}


@pytest.mark.parametrize("kwargs", [
    {"endpoints": {"api": "api.local; listen 0.0.0.0:80"}}, {"endpoints": {"api": "a b"}},
    {"endpoints": {"api": "api.local\nserver_name x"}}, {"endpoints": {"other": "o.local"}},
    {"internal_listen": "172.17.0.1:80; allow all"}, {"internal_listen": "172.17.0.1"},
    {"internal_listen": "172.17.0.1:0"}, {"internal_listen": "a b:80"},
])
def test_render_refuses_unsafe_endpoints(kwargs):
    args = {"services": ["api"], "control": "127.0.0.1:9000", "state_file": "/tmp/s.json",
            "endpoints": {"api": "api.local"}} | kwargs
    with pytest.raises(UsageError):
        nd.render_http(**args)


def _route(*chains: Chain, endpoint: str | None = "api.local") -> Route:
    return Route("api", "green", (Server("127.0.0.1", 8080, 50), Server("127.0.0.1", 8081, 50)),
                 endpoint=endpoint, chains=chains)


NEW = Chain("new", "green", ("172.17.0.5", "172.17.0.6"), (Server("127.0.0.1", 8081),))
OLD = Chain("old", "blue", ("172.17.0.7",), (Server("127.0.0.1", 8080),))


def test_check_payload_gives_the_chains():
    services, chains = nd.check_payload([_route(NEW, OLD), Route("web", "blue", (Server("127.0.0.1", 9),))])
    assert set(services) == {"api", "web"}
    assert chains == {"api": [
        {"side": "new", "color": "green", "callers": ["172.17.0.5", "172.17.0.6"],
         "servers": [{"address": "127.0.0.1", "port": 8081, "weight": nd.DEFAULT_WEIGHT}]},
        {"side": "old", "color": "blue", "callers": ["172.17.0.7"],
         "servers": [{"address": "127.0.0.1", "port": 8080, "weight": nd.DEFAULT_WEIGHT}]}]}
    assert nd.check_payload([_route()])[1] == {}


@pytest.mark.parametrize("route", [
    _route(Chain("new", "green", ("172.17.0.5; deny all",), NEW.servers)),   # injected
    _route(Chain("new", "green", ("172.17.0.0/16",), NEW.servers)),
    _route(Chain("new", "green", ("servicea.local",), NEW.servers)),
    _route(Chain("new", "green", ("::1",), NEW.servers)),
    _route(Chain("new", "green", (), NEW.servers)),
    _route(Chain("new", "green", ("172.17.0.5",) * 2, NEW.servers)),
    _route(NEW, Chain("old", "blue", ("172.17.0.5",), OLD.servers)),        # a caller on two sides
    _route(NEW, NEW),                                                      # a side twice
    _route(Chain("shared", "green", ("172.17.0.5",), NEW.servers)),
    _route(Chain("new", "red", ("172.17.0.5",), NEW.servers)),
    _route(Chain("new", "green", ("172.17.0.5",), (Server("127.0.0.1;", 80),))),
    _route(Chain("new", "green", ("172.17.0.5",), (Server("127.0.0.1", 0),))),
    _route(Chain("new", "green", ("172.17.0.5",), ())),
    _route(Chain("new", "green", tuple(f"10.0.{i // 256}.{i % 256}" for i in range(nd.MAX_CALLERS + 1)),
                 NEW.servers)),
    _route(NEW, endpoint=None),                                            # chains need an endpoint
])
def test_check_payload_refuses(route):
    with pytest.raises(UsageError):
        nd.check_payload([route])


def test_state_file_keeps_each_services_chains(tmp_path):
    path = tmp_path / "routes.json"
    services, chains = nd.check_payload([_route(NEW)])
    write_base(path, nd.merged_state(path, services, chains=chains))
    web = nd.check_routes({"web": [Server("127.0.0.1", 9)]})
    write_base(path, nd.merged_state(path, web))  # another service: the chains stay
    assert nd.read_document(path) == {"services": services | web, "chains": chains, "colors": {},
                                      "locations": {}}
    write_base(path, nd.merged_state(path, services))  # posted without chains: none
    assert nd.read_document(path)["chains"] == {}
    assert "chains" not in json.loads(path.read_text())
    write_base(path, nd.merged_state(path, services, chains=chains))
    write_base(path, nd.merged_state(path, {}, drop=["api"]))
    assert nd.read_document(path) == {"services": web, "chains": {}, "colors": {},
                                      "locations": {}}


def test_state_file_keeps_each_services_color_in_the_same_write(tmp_path):
    """Color and weight go with the servers, in one atomic write: set with them, gone when
    posted without one or dropped; a state file from before takes them from
    ``<state>.colors.json``, where they were kept."""
    path = tmp_path / "routes.json"
    legacy = tmp_path / "routes.colors.json"
    web = nd.check_routes({"web": [Server("127.0.0.1", 9)]})
    api = nd.check_routes({"api": [Server("127.0.0.1", 8)]})
    path.write_text(json.dumps({"services": web | api}))
    legacy.write_text(json.dumps({"web": {"color": "blue", "weight": 100}}))
    assert nd.read_document(path)["colors"] == {"web": {"color": "blue", "weight": 100}}
    colors = nd.route_colors([Route("api", "green", (Server("127.0.0.1", 8),), 40)])
    assert colors == {"api": {"color": "green", "weight": 40}}
    write_base(path, nd.merged_state(path, api, colors=colors))
    assert json.loads(path.read_text())["colors"] == {"api": {"color": "green", "weight": 40},
                                                      "web": {"color": "blue", "weight": 100}}
    legacy.write_text("{}")  # read no more once the state file has colors
    assert nd.read_document(path)["colors"]["web"] == {"color": "blue", "weight": 100}
    write_base(path, nd.merged_state(path, web))  # routed without a color: none
    write_base(path, nd.merged_state(path, {}, drop=["api"]))
    assert nd.read_document(path) == {"services": web, "chains": {}, "colors": {},
                                      "locations": {}}
    assert nd.route_colors([Route("web", None, (Server("127.0.0.1", 9),))]) == {}
    with pytest.raises(UsageError):
        nd.route_colors([Route("web", "red", (Server("127.0.0.1", 9),))])


def test_the_state_lock_excludes_another_process(tmp_path):
    """While one process changes a state file, another cannot take its lock (asked without
    waiting); once the first is done, it can."""
    import fcntl
    import subprocess
    import sys

    state = tmp_path / "state" / "routes.json"
    code = ("import sys\nfrom bluegreen.proxy.dynamic import state_lock\n"
            f"with state_lock({str(state)!r}):\n"
            "    print('held', flush=True)\n    sys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with open(f"{state}.lock", "a") as fh, pytest.raises(OSError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        with nd.state_lock(str(state)):
            pass
    finally:
        holder.kill()


def test_the_header_names_a_thousand_services_on_short_lines(tmp_path):
    names = [f"service-{i:04d}" for i in range(1000)]
    text = nd.render_http(names, "127.0.0.1:9000", tmp_path / "s.json",
                          endpoints={"service-0001": "one.local"})
    assert nd.configured_services(text) == set(names)
    assert nd.configured_endpoints(text) == {"service-0001": "one.local"}
    assert max(len(line) for line in text.splitlines()) < 200


def test_the_routes_dict_grows_with_the_services():
    assert nd.dict_size_for(1, 0) == "1m"
    assert nd.dict_size_for(1000, 0) == "8m"  # 4,256k needed: sized in steps of powers of 2
    assert nd.dict_size_for(10, 100) == "8m"  # 6,696k
    assert nd.dict_size_for(190, 0) == "1m" and nd.dict_size_for(193, 0) == "2m"
    sizes = {nd.dict_size_for(n, 0) for n in range(500, 900)}  # adding a service keeps it
    assert sizes == {"4m"} and nd.figures_size_for(1000) == "8m"
    assert {nd.figures_size_for(n) for n in range(121, 249)} == {"2m"}
    assert nd.dict_size_for(1000, 0, "64m") == "64m"
    with pytest.raises(UsageError):
        nd.dict_size_for(1, 0, "1g")


def test_the_secret_is_created_owner_only_once_and_redacted(tmp_path):
    from bluegreen.errors import redact

    path = tmp_path / "dir" / "routes.secret"
    assert nd.read_secret(path) is None
    secret = nd.ensure_secret(path)
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert nd.ensure_secret(path) == secret  # kept
    assert redact(f"x {secret} y") == "x <redacted> y"
    assert nd.secret_path("/var/lib/bluegreen/nginx-routes.json") == \
        "/var/lib/bluegreen/nginx-routes.secret"


@pytest.mark.parametrize(("mode", "text", "match"), [
    (0o640, None, "open to other users"), (0o600, "short\n", "does not hold"),
    (0o600, "g" * 64, "does not hold")])
def test_a_doubtful_secret_file_is_refused(tmp_path, mode, text, match):
    from bluegreen.errors import OperationFailed

    path = tmp_path / "routes.secret"
    nd.ensure_secret(path)
    if text is not None:
        path.write_text(text)
    path.chmod(mode)
    with pytest.raises(OperationFailed, match=match):
        nd.read_secret(path)


def test_a_damaged_state_file_is_read_around_from_the_last_good_copy(tmp_path):
    state = tmp_path / "routes.json"
    good = {"services": {"web": [{"address": "127.0.0.1", "port": 8080, "weight": 100}]},
            "colors": {"web": {"color": "blue", "weight": 100}}}
    (tmp_path / "routes.last-good.json").write_text(json.dumps(good))
    state.write_bytes(b"\xff\x00 not json")
    client = nd.DynamicControl(f"127.0.0.1:{free_port()}", state, timeout=1)  # nginx is down
    doc = client.document()
    assert client.damage and "cannot read the state file" in client.damage
    assert doc["services"] == good["services"] and doc["colors"] == good["colors"]
    line = client.rebuild()
    assert line and "rebuilt it" in line
    assert nd.read_document(state)["services"] == good["services"]
    assert client.rebuild() is None  # fine now


def test_the_state_text_is_one_json_dumps_line_per_service():
    services = {"web": [{"address": "10.0.0.1", "port": 80, "weight": 100}],
                "caf\u00e9": [{"address": "10.0.0.2", "port": 81, "weight": 0.5, "x": None}]}
    chains = {"web": [{"side": "new", "color": "blue", "callers": ["10.0.0.9"], "servers": []}]}
    colors = {"web": {"color": "blue", "weight": 100}}
    text = ds.state_text({"services": services, "chains": chains, "colors": colors})
    assert json.loads(text) == {"id": text.split('"')[3], "services": services,
                                "chains": chains, "colors": colors}
    assert text.split('"')[3] != ds.state_text({"services": services}).split('"')[3]  # new id
    lines = text.splitlines()
    for name, value in [*services.items(), *chains.items()]:
        assert f"  {json.dumps(name)}: {json.dumps(value)}" in {line.rstrip(",") for line in lines}


def test_the_include_header_parse_is_kept_but_never_shared(tmp_path):
    one = nd.render_http(["web", "api"], "127.0.0.1:9000", tmp_path / "s.json",
                         endpoints={"api": "api.local"})
    two = nd.render_http(["web"], "127.0.0.1:9000", tmp_path / "s.json")
    got = nd.configured_services(one)
    got.add("changed by the caller")
    nd.configured_endpoints(one).pop("api")
    assert nd.configured_services(one) == {"web", "api"}
    assert nd.configured_endpoints(one) == {"api": "api.local"}
    assert nd.configured_services(two) == {"web"}
    assert nd.configured_endpoints(two) == {}
    assert nd.configured_services(one) == {"web", "api"}


def test_a_state_text_written_here_reads_back_as_parsed_and_a_changed_file_is_parsed(tmp_path):
    state = tmp_path / "routes.json"
    write_base(state, nd.merged_state(state, {"web": [{"address": "10.0.0.1", "port": 80,
                                                            "weight": 100}]}, colors={}))
    text = nd.merged_state(state, {"api": [{"address": "10.0.0.2", "port": 81, "weight": 100}]},
                           colors={"api": {"color": "green", "weight": 100}})
    ds.write_atomic(state, text)
    expected = {"services": json.loads(text)["services"], "chains": {},
                "colors": {"api": {"color": "green", "weight": 100}}, "locations": {}}
    assert nd.read_document(state) == expected
    nd.read_document(state)["services"].clear()  # a caller's copy
    assert nd.read_document(state) == expected
    state.write_text(text.replace("10.0.0.2", "10.0.0.3"))  # changed by hand: parsed again
    assert nd.read_document(state)["services"]["api"][0]["address"] == "10.0.0.3"
    state.write_text(text[:60])
    with pytest.raises(Exception, match="cannot read the state file"):
        nd.read_document(state)


class _FakeControl:
    """A control endpoint on loopback answering a POST with ``served`` as given once
    ``wrong`` is set (before: what was posted; None: no read-back in the answer, as an older
    Lua), and a GET with what was posted; ``reads``: the GETs of posted services."""

    def __init__(self, served: object) -> None:
        import http.server
        import threading

        fake = self
        self.posted: dict = {}
        self.reads, self.wrong = 0, False

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def _send(self, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                fake.posted = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                doc = {"generation": 2, **fake.posted}
                if served is not None:
                    doc["served"] = served if fake.wrong else dict(doc)
                self._send(doc)

            def do_GET(self) -> None:
                fake.reads += "services=" in self.path
                self._send({"generation": 2, **fake.posted})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize("served", [
    {"generation": 2, "services": {}},  # the route not stored (evicted, dropped)
    {"generation": 2, "services": {"web": [{"address": "127.0.0.1", "port": 1, "weight": 100}]}},
])
def test_a_post_whose_read_back_differs_fails_and_takes_the_change_back(tmp_path, served):
    path = tmp_path / "routes.json"
    fake = _FakeControl(served)
    try:
        client = nd.DynamicControl(fake.address, path)
        client.apply({"web": [Server("127.0.0.1", 8080)]})
        client.apply({"web": [Server("127.0.0.1", 8082)]})  # a journal line
        before = ds.read_document(path)
        fake.wrong = True
        with pytest.raises(OperationFailed, match="does not serve what was posted for web"):
            client.apply({"web": [Server("127.0.0.1", 8081)]})
        assert ds.read_document(path) == before and fake.reads == 0
    finally:
        fake.server.shutdown()


def test_a_post_without_a_read_back_in_its_answer_is_checked_by_a_get(tmp_path):
    fake = _FakeControl(None)
    try:
        nd.DynamicControl(fake.address, tmp_path / "routes.json").apply(
            {"web": [Server("127.0.0.1", 8080)]})
        assert fake.reads == 1
    finally:
        fake.server.shutdown()


# -- the routing table (--nginx-routing table) -------------------------------------------------


def table_proxy(tmp_path, **kwargs) -> nd.DynamicProxy:
    (tmp_path / "up").mkdir(exist_ok=True)
    (tmp_path / "inc").mkdir(exist_ok=True)
    return nd.DynamicProxy(None, tmp_path / "up" / nd.INCLUDE_NAME, tmp_path / "inc",
                           f"127.0.0.1:{free_port()}", tmp_path / "routes.json",
                           location="/default/", routing="table", **kwargs)


def test_the_table_renders_one_balanced_upstream_and_no_service_of_its_own(tmp_path):
    text = nd.render_http(["api"], "127.0.0.1:9000", tmp_path / "routes.json",
                          endpoints={"api": "api.local"}, table=True)
    assert "upstream _bg_table {" in text and "balance_table()" in text
    assert "table = true," in text and "# service api endpoint=api.local" in text
    assert "table = false," in nd.render_http([], "127.0.0.1:9000", tmp_path / "r.json")
    # both dicts start with room for some 4,000 services: adding one stays a POST
    assert "lua_shared_dict bluegreen 32m;" in text
    assert "lua_shared_dict bluegreen_figures 32m;" in text
    assert nd.http_context([], "127.0.0.1:9000", tmp_path / "r.json", table=True,
                           routed=5000)["figures_size"] == "64m"


def test_a_tables_locations_are_given_kept_defaulted_or_none(tmp_path):
    proxy = table_proxy(tmp_path)
    servers = (Server("127.0.0.1", 8080),)
    write_base(tmp_path / "routes.json", ds.state_text(
        {"services": {"web": [{"address": "127.0.0.1", "port": 8080, "weight": 100}],
                      "bare": [{"address": "127.0.0.1", "port": 8081, "weight": 100}]},
         "locations": {"web": "/web/"}}))
    assert proxy.table_locations([
        Route("web", "blue", servers),  # kept
        Route("bare", "blue", servers),  # none recorded: the default, as a location file
        Route("new", "blue", servers),  # new: the default
        Route("moved", "blue", servers, location="/m/"),
        Route("off", "blue", servers, location="")]) == {
            "web": "/web/", "bare": "/default/", "new": "/default/", "moved": "/m/"}
    with pytest.raises(UsageError, match="invalid location"):
        proxy.table_locations([Route("bad", "blue", servers, location="/a/../b")])


def test_the_table_is_refused_with_an_include_file_a_reload_mode_or_location_files(tmp_path):
    include = tmp_path / "loc.conf"
    include.write_text("location /x { }\n")
    with pytest.raises(UsageError, match="does not go with --nginx-routing table"):
        table_proxy(tmp_path, include_file=str(include))
    with pytest.raises(UsageError, match="invalid --nginx-routing 'tables'"):
        nd.DynamicProxy(None, tmp_path / "i.conf", tmp_path, "127.0.0.1:9000",
                        tmp_path / "r.json", routing="tables")
    from bluegreen import settings
    from bluegreen.cli.options import resolve

    opts = resolve({"command": "status", "service": "web", "nginx_routing": "table",
                    "upstream_dir": str(tmp_path), "include_dir": str(tmp_path)}, env={})
    with pytest.raises(UsageError, match="--nginx-routing table needs --nginx-mode dynamic"):
        settings.proxy(opts)
    proxy = table_proxy(tmp_path)
    (tmp_path / "inc" / "web.conf").write_text(nd.templates.render(
        "nginx/include.conf.j2", service="web", location="/web/"))
    with pytest.raises(UsageError, match=r"holds the locations of web \(--nginx-routing "
                                         r"locations\)"):
        proxy.config_changes([Route("api", "blue", (Server("127.0.0.1", 8080),))])
    (tmp_path / "inc" / "web.conf").unlink()
    (tmp_path / "inc" / nd.TABLE_NAME).write_text("location / { }\n")
    locations = nd.DynamicProxy(None, tmp_path / "up" / nd.INCLUDE_NAME, tmp_path / "inc",
                                "127.0.0.1:9000", tmp_path / "routes.json")
    with pytest.raises(UsageError, match="routes by the routing table; give --nginx-routing "
                                         "table"):
        locations.config_changes([Route("api", "blue", (Server("127.0.0.1", 8080),))])
