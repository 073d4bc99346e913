"""The dynamic mode on the real nginx (Debian's, with the Lua module): switches by POST,
no reload, zero failed requests on keep-alive connections."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import threading

import pytest

from bluegreen.errors import OperationFailed, UsageError
from bluegreen.model import Chain, Route, Server
from bluegreen.proxy import dynamic as nginx_dynamic
from bluegreen.proxy.dynamic import CONTROL_PATH, DynamicControl
from bluegreen.proxy.dynamic_state import read_state
from bluegreen.proxy.nginx import write_atomic
from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx, KeepAliveClient, parse_wrk
from bluegreen_dev.sandbox import free_port, wait_for
from tests.integration import dynamic_fixtures

pytestmark = pytest.mark.integration
SVC = "books-ms"


backends = dynamic_fixtures.backends
nginx = dynamic_fixtures.nginx


def route(backends: dict[str, Backend], **weights: int) -> dict[str, list[Server]]:
    return {SVC: [Server("127.0.0.1", backends[c].port, w) for c, w in weights.items()]}


def get(port: int, path: str = "/", conn: http.client.HTTPConnection | None = None) -> tuple[int, str]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read().decode()
    if conn is None:
        c.close()
    return r.status, body


def post_raw(control: str, body: bytes, port: int | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port or int(control.rpartition(":")[2]), timeout=10)
    c.request("POST", CONTROL_PATH, body=body,
              headers={"Content-Type": "application/json"} | (headers or {}))
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, {"text": text}


def test_a_switch_is_a_post_without_reload(nginx, backends):
    proxy = nginx.proxy()
    assert get(nginx.port)[0] == 404  # no service yet
    gen1 = proxy.apply(route(backends, blue=100))  # a new service: a checked reload
    assert get(nginx.port) == (200, "blue")
    ctl = nginx.controller()
    wait_for(lambda: list(ctl.workers().values()) == [False] * nginx.workers, 10, "new workers")
    workers = ctl.workers()
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    assert get(nginx.port, conn=conn) == (200, "blue")
    for i, color in enumerate(["green", "blue", "green"] * 3):
        gen = proxy.apply(route(backends, **{color: 100}))
        assert gen > gen1 + i
        # the very next request, on the same keep-alive connection and on a new one
        assert get(nginx.port, conn=conn) == (200, color)
        assert get(nginx.port) == (200, color)
    assert nginx.controller().workers() == workers  # the same workers: no reload
    state = proxy.read()
    assert state["services"][SVC] == [{"address": "127.0.0.1", "port": backends["green"].port,
                                       "weight": 100}]
    # every worker, even one without a request since, comes to the last generation
    wait_for(lambda: {w["generation"] for w in proxy.read()["workers"]} == {gen}, 10, "workers")
    assert proxy.serving(SVC) == state["services"][SVC]


def test_weights_spread_the_requests(nginx, backends):
    proxy = nginx.proxy()
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)  # one worker
    for blue, green in ((50, 50), (80, 20), (100, 0), (1, 99)):
        proxy.apply(route(backends, blue=blue, green=green))
        seen = [get(nginx.port, conn=conn)[1] for _ in range(100)]
        assert (seen.count("blue"), seen.count("green")) == (blue, green)


def test_a_dead_peer_is_retried_on_another(nginx, backends):
    dead, dead2 = Backend("dead").start(), Backend("dead2").start()  # two ports, not one twice
    dead.stop()  # their ports now refuse connections
    dead2.stop()
    proxy = nginx.proxy()
    proxy.apply({SVC: [Server("127.0.0.1", dead.port, 50), Server("127.0.0.1", backends["blue"].port, 50)]})
    assert [get(nginx.port) for _ in range(20)] == [(200, "blue")] * 20
    proxy.apply({SVC: [Server("127.0.0.1", dead.port), Server("127.0.0.1", dead2.port),
                       Server("127.0.0.1", backends["green"].port)]})
    assert [get(nginx.port) for _ in range(20)] == [(200, "green")] * 20
    proxy.apply({SVC: [Server("127.0.0.1", dead.port), Server("127.0.0.1", dead2.port)]})
    log = nginx.prefix / "logs" / "error.log"
    before = len(log.read_text())
    assert [get(nginx.port)[0] for _ in range(4)] == [502] * 4
    assert log.read_text()[before:].count("connect() failed") == 4 * 2  # each peer once, then 502


BAD_SERVICES = [
    {"other": [{"address": "127.0.0.1", "port": 80, "weight": 100}]},      # no upstream for it
    {"../x": [{"address": "127.0.0.1", "port": 80, "weight": 100}]},
    {SVC: [{"address": "127.0.0.1;", "port": 80, "weight": 100}]},
    {SVC: [{"address": "127.0.0.1}", "port": 80, "weight": 100}]},
    {SVC: [{"address": "127.0.0.1 ", "port": 80, "weight": 100}]},
    {SVC: [{"address": "127.0.0.1 backup", "port": 80, "weight": 100}]},
    {SVC: [{"address": "localhost", "port": 80, "weight": 100}]},       # the balancer takes IPs
    {SVC: [{"address": "127.0.0.256", "port": 80, "weight": 100}]},
    {SVC: [{"address": "127.0.0.01", "port": 80, "weight": 100}]},
    {SVC: [{"address": "127.0.0.1", "port": 0, "weight": 100}]},
    {SVC: [{"address": "127.0.0.1", "port": 65536, "weight": 100}]},
    {SVC: [{"address": "127.0.0.1", "port": "80", "weight": 100}]},
    {SVC: [{"address": "127.0.0.1", "port": 80.5, "weight": 100}]},
    {SVC: [{"address": "127.0.0.1", "port": 80, "weight": 101}]},
    {SVC: [{"address": "127.0.0.1", "port": 80, "weight": -1}]},
    {SVC: [{"address": "127.0.0.1", "port": 80, "weight": True}]},
    {SVC: [{"address": "127.0.0.1", "port": 80}]},
    {SVC: [{"address": "127.0.0.1", "port": 80, "weight": 100, "backup": True}]},
    {SVC: [{"address": "127.0.0.1", "port": 80, "weight": 0}]},          # nothing to serve
    {SVC: [{"address": "127.0.0.1", "port": 80, "weight": 50}] * 2},     # listed twice
    {SVC: []},
    {SVC: {"address": "127.0.0.1", "port": 80, "weight": 100}},
    {SVC: ["127.0.0.1:80"]},
    {},
]
# What Python's json refuses, nginx refuses too (strict JSON, finding 6)
NOT_JSON = (b'{"services": {"books-ms": [{"address": "127.0.0.1", "port": %s, "weight": 100}]}}')
NOT_JSON_VALUES = [b"0x50", b"080", b"+80", b"80 /* c */", b"'80'", b".5e3", b"80.",
                   b"0x50, ", b"80, \"weight\": 100, "]  # the last two: trailing commas
TRAILING_COMMAS = [b'{"services": {"books-ms": [{"address": "127.0.0.1", "port": 80, '
                   b'"weight": 100},]}}',
                   b'{"services": {"books-ms": [{"address": "127.0.0.1", "port": 80, '
                   b'"weight": 100}]},}']


def test_the_strict_bodies_are_not_json():
    for body in [NOT_JSON % v for v in NOT_JSON_VALUES] + TRAILING_COMMAS:
        with pytest.raises(ValueError):
            json.loads(body)


BAD_BODIES = [json.dumps({"services": s}).encode() for s in BAD_SERVICES] + [
    b"", b"{", b"not json", b"null", b"[]", b"{\"services\": []}",
    json.dumps({"services": {SVC: [{"address": "127.0.0.1", "port": 80, "weight": 100}]},
                "generation": 3}).encode(),                                 # unknown key
    json.dumps({"services": {SVC: [{"address": "127.0.0.1", "port": 80, "weight": 100}]},
                "colors": {SVC: {"color": "blue", "weight": 100}}}).encode(),  # state file only
] + [NOT_JSON % v for v in NOT_JSON_VALUES] + TRAILING_COMMAS + [
    NOT_JSON % v for v in (b"NaN", b"Infinity", b"-Infinity", b"1e400")]  # JSON to Python, no port


def test_invalid_payloads_are_refused_and_change_nothing(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply(route(backends, blue=100))
    before = proxy.read()
    for body in BAD_BODIES:
        status, doc = post_raw(nginx.control, body, headers=nginx.secret_headers())
        assert status == 400, body
        assert doc.get("error"), body
    assert proxy.read() == before
    assert get(nginx.port) == (200, "blue")


def test_nginx_refusal_restores_the_state_file(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply(route(backends, blue=100))
    proxy.apply(route(backends, blue=100))  # a POST: one line in the journal
    journal = nginx.state_file.with_suffix(".journal")

    def files() -> tuple[str, str]:
        return nginx.state_file.read_text(), journal.read_text()

    recorded = files()
    assert recorded[1].count("\n") == 1
    client = DynamicControl(nginx.control, nginx.state_file)
    with pytest.raises(OperationFailed, match="unknown service other"):  # not in this nginx
        client.apply({"other": [Server("127.0.0.1", backends["green"].port)]})
    assert files() == recorded  # the journal cut back to its size before
    # refused before sending: nothing written either
    with pytest.raises(UsageError):
        client.apply({SVC: [Server("127.0.0.1;", backends["green"].port)]})
    assert files() == recorded


def test_the_control_server_is_not_on_the_public_port(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply(route(backends, blue=100))
    before = proxy.read()
    body = json.dumps({"services": {SVC: [{"address": "127.0.0.1", "port": backends["green"].port,
                                           "weight": 100}]}}).encode()
    # the public server proxies the control path to the service, like any other path
    assert post_raw(nginx.control, body, port=nginx.port) == (200, {"text": "blue"})
    assert get(nginx.port, CONTROL_PATH) == (200, "blue")
    assert proxy.read() == before
    text = nginx.include_path.read_text()
    assert f"listen 127.0.0.1:{nginx.control_port};" in text
    assert text.count("listen ") == 1 and text.count("content_by_lua") == 1


def test_control_over_a_unix_socket(tmp_path, backends):
    n = DynamicNginx(tmp_path / "nginx", control_unix=True).start()
    try:
        proxy = n.proxy()
        proxy.apply(route(backends, blue=100))
        assert proxy.client.control.startswith("unix:")
        proxy.apply(route(backends, green=100))
        assert get(n.port) == (200, "green")
        assert "listen unix:" in n.include_path.read_text()
    finally:
        n.stop()


def test_routes_come_back_after_a_restart_and_a_reload(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply(route(backends, blue=100))
    proxy.apply(route(backends, blue=30, green=70))
    served = proxy.read()["services"]
    nginx.kill()
    with pytest.raises(Exception):  # noqa: B017 - down: any connection error
        get(nginx.port)
    nginx.start()
    assert proxy.read()["services"] == served  # from the state file, before any request
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    seen = [get(nginx.port, conn=conn)[1] for _ in range(10)]
    assert (seen.count("blue"), seen.count("green")) == (3, 7)
    nginx.controller().reload()
    assert proxy.read()["services"] == served
    # a state file gone bad: a reload keeps what nginx served, never an empty upstream
    nginx.state_file.write_text("{broken")
    nginx.controller().reload()
    assert proxy.read()["services"] == served
    assert get(nginx.port)[0] == 200


def test_adding_and_removing_a_service_reload_with_a_check(nginx, backends, tmp_path):
    proxy = nginx.proxy()
    proxy.apply(route(backends, blue=100))
    second = nginx_dynamic.DynamicProxy(nginx.controller(), nginx.include_path, nginx.include_dir,
                                        nginx.control, nginx.state_file, location="/second")
    second.apply({"second": [Server("127.0.0.1", backends["green"].port)]})
    assert proxy.services() == {SVC, "second"}
    assert get(nginx.port, "/second") == (200, "green")
    assert get(nginx.port, "/") == (200, "blue")
    # a location nginx refuses: nothing changes, files and state file restored
    files = {p: p.read_text() for p in (nginx.include_path, nginx.state_file)}
    broken = tmp_path / "broken.conf"
    broken.write_text("location / { proxy_pass http://nowhere }\n")
    third = nginx_dynamic.DynamicProxy(nginx.controller(), nginx.include_path, nginx.include_dir,
                                       nginx.control, nginx.state_file, include_file=str(broken))
    with pytest.raises(OperationFailed, match="nginx rejected"):
        third.apply({"third": [Server("127.0.0.1", backends["green"].port)]})
    assert {p: p.read_text() for p in files} == files
    assert not (nginx.include_dir / "third.conf").exists()
    assert proxy.remove(["second"])
    assert get(nginx.port, "/second") == (200, "blue")  # now under the "/" location
    assert "second" not in proxy.read()["services"]
    assert not proxy.remove(["second"])


def test_keepalive_clients_see_zero_errors_across_switches(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply(route(backends, blue=100))
    clients = [KeepAliveClient(nginx.port) for _ in range(4)]
    wrk = None
    if shutil.which("wrk") is None:
        raise AssertionError("wrk is not installed (scripts/bootstrap.sh installs it)")
    wrk = subprocess.Popen(["wrk", "-t", "1", "-c", "4", "-d", "600s", "--latency",
                            f"http://127.0.0.1:{nginx.port}/"], stdout=subprocess.PIPE, text=True)
    for c in clients:
        c.start()
    try:
        for i in range(40):
            color = ("green", "blue")[i % 2]
            proxy.apply(route(backends, **{color: 100}))
            for c in clients:
                c.wait_requests(5)  # each switch lands among requests in flight
                assert c.errors == 0, c.error_kinds
    finally:
        for c in clients:
            c.stop()
        wrk.send_signal(signal.SIGINT)
        out = wrk.communicate(timeout=30)[0]
    stats = parse_wrk(out)
    assert sum(c.errors for c in clients) == 0
    assert all(c.seen["blue"] and c.seen["green"] for c in clients)
    assert stats["requests"] > 0, out
    assert (stats["socket_errors"], stats["non_2xx"]) == (0, 0), out


def test_a_service_without_servers_answers_502(nginx, backends):
    dead = Backend("dead").start()
    dead.stop()
    proxy = nginx.proxy()
    proxy.apply({SVC: [Server("127.0.0.1", dead.port)]})
    assert get(nginx.port)[0] == 502  # the only peer refuses: no placeholder, no hang
    # an upstream the state file does not name (a hand-made include): 502, never a placeholder
    write_atomic(nginx.include_path, nginx_dynamic.render_http(
        [SVC, "ghost"], nginx.control, nginx.state_file))
    (nginx.include_dir / "ghost.conf").write_text("location /ghost { proxy_pass http://ghost; }\n")
    nginx.controller().reload()
    assert proxy.read()["known"] == ["books-ms", "ghost"]
    assert get(nginx.port, "/ghost")[0] == 502
    assert "ghost" not in proxy.read()["services"]


def test_concurrent_writers_keep_the_state_file_whole(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply({SVC: [Server("127.0.0.1", backends["blue"].port)]})
    nginx_dynamic.DynamicProxy(nginx.controller(), nginx.include_path, nginx.include_dir, nginx.control,
                               nginx.state_file, location="/other").apply(
        {"other": [Server("127.0.0.1", backends["blue"].port)]})
    errors: list[BaseException] = []

    def flip(service: str) -> None:
        client = nginx_dynamic.DynamicControl(nginx.control, nginx.state_file)  # as another process
        try:
            for i in range(30):
                client.apply({service: [Server("127.0.0.1", backends[("green", "blue")[i % 2]].port)]})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flip, args=(s,)) for s in (SVC, "other")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    served = proxy.read()["services"]
    assert read_state(nginx.state_file) == served
    assert {s[0]["port"] for s in served.values()} == {backends["blue"].port}


def test_drain_waits_for_the_requests_in_flight_to_the_old_color(nginx, backends, tmp_path):
    gate = tmp_path / "gate"
    slow = Backend("slow", gate=str(gate)).start()
    try:
        proxy = nginx.proxy()
        old = [Server("127.0.0.1", slow.port)]
        proxy.apply({SVC: old})
        held: list[tuple[int, str]] = []
        request = threading.Thread(target=lambda: held.append(get(nginx.port, "/hold")))
        request.start()
        wait_for(lambda: proxy.read()["active"] == {f"127.0.0.1:{slow.port}": 1}, 10, "in flight")
        proxy.apply(route(backends, green=100))
        assert get(nginx.port) == (200, "green")
        assert not proxy.client.drain(old, timeout=0)  # still held by the old color
        gate.touch()
        assert proxy.client.drain(old, timeout=30)
        request.join(10)
        assert held == [(200, "slow")]  # finished on the old color, untouched by the switch
        assert proxy.read()["active"] == {}
    finally:
        slow.stop()


# -- internal endpoints and version-consistent chains ------------------------------------------

ENDPOINT = "books.internal"
NEW_CALLER, OLD_CALLER, SHARED_CALLER = "127.0.0.2", "127.0.0.3", "127.0.0.1"


def chain(backends: dict[str, Backend], side: str, color: str, caller: str) -> Chain:
    return Chain(side, color, (caller,), (Server("127.0.0.1", backends[color].port),))


def endpoint_route(backends: dict[str, Backend], chains: tuple[Chain, ...] = (),
                   **weights: int) -> Route:
    return Route(SVC, "green", tuple(Server("127.0.0.1", backends[c].port, w)
                                     for c, w in weights.items()), endpoint=ENDPOINT, chains=chains)


def bodies_from(caller: str, port: int, n: int = 20) -> set[str]:
    """The bodies of ``n`` requests to the endpoint, each on a new connection from ``caller``
    (a loopback address: nginx tells callers apart by theirs)."""
    seen = set()
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(caller, 0))
        c.request("GET", "/", headers={"Host": ENDPOINT})
        r = c.getresponse()
        seen.add(r.read().decode() if r.status == 200 else f"HTTP {r.status}")
        c.close()
    return seen


@pytest.fixture
def internal(nginx) -> tuple[nginx_dynamic.DynamicProxy, int]:
    port = free_port()
    return nginx.proxy(internal_listen=f"127.0.0.1:{port}"), port


def test_an_endpoint_keeps_each_release_on_its_chain_and_changes_without_reload(
        nginx, backends, internal):
    proxy, port = internal
    both = (chain(backends, "new", "green", NEW_CALLER), chain(backends, "old", "blue", OLD_CALLER))
    proxy.apply([endpoint_route(backends, both, blue=50, green=50)])  # a new endpoint: a reload
    ctl = nginx.controller()
    wait_for(lambda: list(ctl.workers().values()) == [False] * nginx.workers, 10, "new workers")
    workers = ctl.workers()
    assert bodies_from(NEW_CALLER, port) == {"green"}
    assert bodies_from(OLD_CALLER, port) == {"blue"}
    assert bodies_from(SHARED_CALLER, port) == {"blue", "green"}  # a shared caller: the weights
    assert bodies_from(NEW_CALLER, nginx.port) == {"blue", "green"}  # the public route: no chains
    # one chain left, then none: POSTs only
    proxy.apply([endpoint_route(backends, (chain(backends, "new", "blue", NEW_CALLER),),
                                blue=50, green=50)])
    assert bodies_from(NEW_CALLER, port) == {"blue"}
    assert bodies_from(OLD_CALLER, port) == {"blue", "green"}
    assert proxy.read()["chains"][SVC][0]["callers"] == [NEW_CALLER]
    proxy.apply([endpoint_route(backends, green=100)])
    assert bodies_from(NEW_CALLER, port) == bodies_from(OLD_CALLER, port) == {"green"}
    assert proxy.read()["chains"] == {}
    assert ctl.workers() == workers  # the same workers throughout: no reload
    # the endpoint goes away with its route's endpoint: a reload, then nothing listens there
    proxy.apply({SVC: [Server("127.0.0.1", backends["green"].port)]})
    assert proxy.endpoints() == {}
    with pytest.raises(OSError):
        bodies_from(NEW_CALLER, port, 1)


def test_chains_come_back_after_a_restart(nginx, backends, internal):
    proxy, port = internal
    both = (chain(backends, "new", "green", NEW_CALLER), chain(backends, "old", "blue", OLD_CALLER))
    proxy.apply([endpoint_route(backends, both, blue=50, green=50)])
    served = proxy.read()
    nginx.kill()
    nginx.start()
    after = proxy.read()
    assert (after["services"], after["chains"]) == (served["services"], served["chains"])
    assert bodies_from(NEW_CALLER, port) == {"green"}
    assert bodies_from(OLD_CALLER, port) == {"blue"}


_SERVER = {"address": "127.0.0.1", "port": 80, "weight": 100}
_CHAIN = {"side": "new", "color": "green", "callers": [NEW_CALLER], "servers": [_SERVER]}
BAD_CHAINS = [
    {SVC: [_CHAIN | {"callers": [NEW_CALLER + "; deny all"]}]},     # injected
    {SVC: [_CHAIN | {"callers": ["127.0.0.0/8"]}]},
    {SVC: [_CHAIN | {"callers": ["localhost"]}]},
    {SVC: [_CHAIN | {"callers": ["127.0.0.02"]}]},
    {SVC: [_CHAIN | {"callers": [2130706434]}]},
    {SVC: [_CHAIN | {"callers": []}]},
    {SVC: [_CHAIN | {"callers": NEW_CALLER}]},
    {SVC: [_CHAIN | {"callers": [NEW_CALLER, NEW_CALLER]}]},
    {SVC: [_CHAIN, _CHAIN | {"side": "old"}]},                       # one caller on two sides
    {SVC: [_CHAIN, _CHAIN | {"callers": [OLD_CALLER]}]},             # one side twice
    {SVC: [_CHAIN | {"side": "shared"}]},
    {SVC: [_CHAIN | {"color": "red"}]},
    {SVC: [_CHAIN | {"servers": [_SERVER | {"address": "127.0.0.1;"}]}]},
    {SVC: [_CHAIN | {"servers": [_SERVER | {"weight": 0}]}]},
    {SVC: [_CHAIN | {"servers": []}]},
    {SVC: [_CHAIN | {"upstream": "evil"}]},
    {SVC: [{k: v for k, v in _CHAIN.items() if k != "color"}]},
    {SVC: []},
    {SVC: _CHAIN},
    {"other": [_CHAIN]},                                               # not a posted service
    {"plain": [_CHAIN]},                                               # no internal endpoint
    [_CHAIN],
]


def test_invalid_chains_are_refused_and_change_nothing(nginx, backends, internal):
    proxy, port = internal
    proxy.apply([endpoint_route(backends, (chain(backends, "old", "blue", OLD_CALLER),), blue=100)])
    nginx.proxy("/plain", internal_listen=f"127.0.0.1:{port}").apply(
        {"plain": [Server("127.0.0.1", backends["green"].port)]})
    before = proxy.read()
    services = {SVC: [_SERVER], "plain": [_SERVER]}
    for chains in BAD_CHAINS:
        body = json.dumps({"services": services, "chains": chains}).encode()
        status, doc = post_raw(nginx.control, body, headers=nginx.secret_headers())
        assert status == 400, chains
        assert doc.get("error"), chains
    assert proxy.read() == before
