"""Progressive delivery at the dynamic nginx (issue 21), on the real nginx with Debian's Lua
module: the counts per service and color (kept by a reload, a new epoch at a restart), sticky
buckets (forward only, the split of fresh clients, bad cookies), the preview secret (with and
without, at weight 0), strict validation of the new keys."""

from __future__ import annotations

import http.client
import json
import shutil
import time

import pytest

from bluegreen.errors import UsageError
from bluegreen.model import LATENCY_BOUNDS_MS, Counts, Route, Server
from bluegreen.proxy.dynamic import CONTROL_PATH, DynamicProxy, NginxDynamicProxy, lua_dir
from bluegreen.proxy.fanout import FanoutProxy
from bluegreen.proxy.nginx import NginxProxy
from bluegreen_dev.dynamic_nginx import Backend
from tests.integration import dynamic_fixtures

pytestmark = pytest.mark.integration
SVC = "books-ms"

backends = dynamic_fixtures.backends
nginx = dynamic_fixtures.nginx


def get(port: int, path: str = "/", headers: dict[str, str] | None = None
        ) -> tuple[int, str, http.client.HTTPResponse]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body, r


def control(nginx, query: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", nginx.control_port, timeout=10)
    c.request("GET", CONTROL_PATH + query, headers=headers or {})
    r = c.getresponse()
    doc = json.loads(r.read().decode())
    c.close()
    return r.status, doc


def split(backends: dict[str, Backend], new: str = "green", weight: int = 50,
          sticky: bool = False) -> Route:
    old = "blue" if new == "green" else "green"
    return Route(SVC, new, (Server("127.0.0.1", backends[new].port, weight, new),
                            Server("127.0.0.1", backends[old].port, 100 - weight, old)),
                 weight, sticky=sticky)


def failed_connects(nginx, since: int) -> int:
    return (nginx.prefix / "logs" / "error.log").read_text()[since:].count("connect() failed")


def test_counts_per_color_kept_by_a_reload_anew_after_a_restart(nginx, backends):
    proxy = NginxDynamicProxy(nginx.proxy())
    proxy.apply([split(backends)])
    seen = {"blue": 0, "green": 0}
    for path in ["/"] * 20 + ["/fail"] * 10:
        status, body, _ = get(nginx.port, path)
        assert status == (500 if path == "/fail" else 200)
        seen[body] += 1
    first = proxy.figures([SVC])[SVC]
    assert set(first) == {"blue", "green"}
    assert first["blue"].epoch == first["green"].epoch != ""
    for color in ("blue", "green"):
        c = first[color]
        assert c.requests == seen[color]
        assert c.failures == 0
        assert len(c.buckets) == len(LATENCY_BOUNDS_MS) + 1
        assert sum(c.buckets) == c.requests
    assert first["blue"].errors + first["green"].errors == 10

    # a dead green peer: each failed try is counted for green, the response for blue
    dead = Backend("dead").start()
    dead.stop()
    proxy.apply([Route(SVC, "green", (Server("127.0.0.1", dead.port, 50, "green"),
                                      Server("127.0.0.1", backends["blue"].port, 50, "blue")),
                       50)])
    log = nginx.prefix / "logs" / "error.log"
    since = len(log.read_text())
    assert [get(nginx.port)[:2] for _ in range(20)] == [(200, "blue")] * 20
    tried_dead = failed_connects(nginx, since)
    assert tried_dead > 0  # smooth round robin gives the dead peer its turns
    second = proxy.figures([SVC])[SVC]
    assert second["green"].failures == tried_dead
    assert second["green"].requests == first["green"].requests
    assert second["blue"].requests == first["blue"].requests + 20
    # only the dead peer: the request ends on it, 502, counted as green's
    proxy.apply([Route(SVC, "green", (Server("127.0.0.1", dead.port, 100, "green"),))])
    assert [get(nginx.port)[0] for _ in range(4)] == [502] * 4
    third = proxy.figures([SVC])[SVC]
    assert third["green"].requests == second["green"].requests + 4
    assert third["green"].errors == second["green"].errors + 4
    assert third["green"].failures == second["green"].failures + 4
    assert sum(third["green"].buckets) == first["green"].requests  # no response, no latency

    nginx.controller().reload()  # the counts and their epoch survive a reload
    assert proxy.figures([SVC])[SVC] == third
    nginx.kill()
    nginx.start()  # a restart: counted anew, under a new epoch
    after = proxy.figures([SVC, "other"])
    assert after[SVC]["green"].epoch not in ("", third["green"].epoch)
    zero = Counts(0, 0, 0, (0,) * (len(LATENCY_BOUNDS_MS) + 1), after[SVC]["green"].epoch)
    assert after == {SVC: {"blue": zero, "green": zero}, "other": {"blue": zero, "green": zero}}


def figures_when(proxy: NginxDynamicProxy, ready, what: str, timeout: float = 60.0
                 ) -> dict[str, Counts]:
    """The figures of SVC once ``ready(figures)`` holds (read again until then)."""
    deadline = time.monotonic() + timeout
    while True:
        figures = proxy.figures([SVC])[SVC]
        if ready(figures):
            return figures
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s: {figures}"
        time.sleep(0.05)


def test_counts_made_just_before_a_reload_are_not_lost(nginx, backends, tmp_path):
    """The workers count in Lua tables; a worker that a reload replaces adds what it counted
    when it exits. Its periodic flush is off here (a copy of the Lua whose timer waits an
    hour), so only the flush at exit can bring these counts to the dict."""
    lua = tmp_path / "lua"
    shutil.copytree(lua_dir(), lua)
    source = lua / "bluegreen_dynamic.lua"
    text = source.read_text()
    interval = "local FLUSH_INTERVAL = 0.25"
    assert text.count(interval) == 1
    source.write_text(text.replace(interval, "local FLUSH_INTERVAL = 3600"))
    proxy = NginxDynamicProxy(DynamicProxy(nginx.controller(), nginx.include_path,
                                           nginx.include_dir, nginx.control, nginx.state_file,
                                           lua_path=str(lua)))
    proxy.apply([split(backends, weight=100)])  # a new service: the include, a reload
    assert [get(nginx.port)[:2] for _ in range(30)] == [(200, "green")] * 30
    nginx.controller().reload()  # no figures read before: the 30 are only in the old workers
    green = figures_when(proxy, lambda f: f["green"].requests >= 30,
                         "the counts of the replaced workers")["green"]
    assert green.requests == 30 and sum(green.buckets) == 30 and green.errors == 0


def test_figures_are_summed_over_proxies_and_refused_in_the_reload_mode(nginx, backends,
                                                                        tmp_path):
    proxy = NginxDynamicProxy(nginx.proxy())
    proxy.apply([split(backends, weight=100)])
    for _ in range(3):
        get(nginx.port)
    one = proxy.figures([SVC])[SVC]["green"]
    both = FanoutProxy([("a", proxy), ("b", proxy)]).figures([SVC])[SVC]["green"]
    assert both == Counts(2 * one.requests, 0, 0, tuple(2 * n for n in one.buckets),
                          f"{one.epoch},{one.epoch}")
    reload_mode = NginxProxy(nginx.controller(), tmp_path / "u", tmp_path / "i")
    with pytest.raises(UsageError, match="--nginx-mode dynamic"):
        reload_mode.figures([SVC])
    with pytest.raises(UsageError, match="--nginx-mode dynamic"):
        FanoutProxy([("a", proxy), ("b", reload_mode)]).figures([SVC])


def test_the_figures_need_the_secret_and_no_origin(nginx, backends):
    NginxDynamicProxy(nginx.proxy()).apply([split(backends)])
    assert control(nginx, "?view=figures")[0] == 403
    assert control(nginx, "?view=figures", {"X-Bluegreen-Secret": "0" * 64})[0] == 403
    assert control(nginx, "?view=figures",
                   nginx.secret_headers() | {"Origin": "http://example.com"})[0] == 403
    assert control(nginx, "?view=other", nginx.secret_headers())[0] == 400
    status, doc = control(nginx, "?view=figures", nginx.secret_headers())
    assert status == 200 and doc["bounds"] == list(LATENCY_BOUNDS_MS)


def test_a_bad_color_is_refused(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply({SVC: [Server("127.0.0.1", backends["blue"].port, 100, "blue")]})
    before = proxy.read()["services"]
    assert before[SVC][0]["color"] == "blue"
    for color in ("red", "", 1, None, ["blue"]):
        body = {"services": {SVC: [{"address": "127.0.0.1", "port": backends["green"].port,
                                    "weight": 100, "color": color}]}}
        c = http.client.HTTPConnection("127.0.0.1", nginx.control_port, timeout=10)
        c.request("POST", CONTROL_PATH, body=json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"} | nginx.secret_headers())
        r = c.getresponse()
        doc = json.loads(r.read().decode())
        c.close()
        assert r.status == 400, (color, doc)
        assert "color" in doc["error"] or color is None
    assert proxy.read()["services"] == before
    with pytest.raises(UsageError):
        proxy.apply({SVC: [Server("127.0.0.1", backends["green"].port, 100, "red")]})


# -- sticky buckets ---------------------------------------------------------------------------


def bucket_cookie(response: http.client.HTTPResponse) -> str | None:
    """The ``bg_bucket`` value a response sets (None: it sets none)."""
    for name, value in response.getheaders():
        if name.lower() == "set-cookie" and value.startswith("bg_bucket="):
            assert value.endswith("; Path=/; HttpOnly; SameSite=Lax"), value
            return value.split(";", 1)[0].partition("=")[2]
    return None


def sticky_at(backends: dict[str, Backend], weight: int) -> Route:
    if weight == 100:  # promoted: the new color only
        return Route(SVC, "green", (Server("127.0.0.1", backends["green"].port, 100, "green"),),
                     sticky=True)
    return split(backends, "green", weight, sticky=True)


def test_a_bucket_only_ever_moves_forward(nginx, backends):
    proxy = NginxDynamicProxy(nginx.proxy())
    buckets = (0, 1, 9, 10, 24, 25, 49, 50, 74, 99)
    seen: dict[int, list[str]] = {b: [] for b in buckets}
    for weight in (0, 1, 10, 25, 50, 75, 99, 100):
        proxy.apply([sticky_at(backends, weight)])
        for b in buckets:
            for _ in range(3):  # on each worker's turn of its round robin
                status, body, r = get(nginx.port, headers={"Cookie": f"bg_bucket={b}"})
                assert status == 200 and bucket_cookie(r) is None  # a valid bucket is kept
                assert body == ("green" if b < weight else "blue"), (b, weight, body)
                seen[b].append(body)
    for b, bodies in seen.items():  # old, then new, never back
        assert bodies == sorted(bodies, key=lambda c: c == "green"), (b, bodies)
    proxy.apply([split(backends, "green", 50)])  # not sticky: no cookie, per-request weights
    answers = [get(nginx.port, headers={"Cookie": "bg_bucket=99"}) for _ in range(20)]
    assert all(bucket_cookie(r) is None for _, _, r in answers)
    assert {body for _, body, _ in answers} == {"blue", "green"}


def test_the_split_of_fresh_clients_and_bad_cookies(nginx, backends):
    proxy = NginxDynamicProxy(nginx.proxy())
    weight, n = 30, 1000
    proxy.apply([sticky_at(backends, weight)])
    new = 0
    for _ in range(n):
        status, body, r = get(nginx.port)
        bucket = bucket_cookie(r)
        assert status == 200 and bucket is not None and 0 <= int(bucket) <= 99
        assert body == ("green" if int(bucket) < weight else "blue"), (bucket, body)
        new += body == "green"
    sigma = (n * weight / 100 * (1 - weight / 100)) ** 0.5
    assert abs(new - n * weight / 100) <= 4 * sigma, new  # 4 sigma: 1 run in 15,000 off
    for bad in ("-1", "100", "1e2", "abc", "05", "", "1.0", "7a", "0x1"):
        status, body, r = get(nginx.port, headers={"Cookie": f"bg_bucket={bad}"})
        bucket = bucket_cookie(r)
        assert bucket is not None, bad  # treated as no cookie: a new bucket
        assert body == ("green" if int(bucket) < weight else "blue")
    # the release is in the state file: a restart keeps each client where it was
    nginx.kill()
    nginx.start()
    assert get(nginx.port, headers={"Cookie": "bg_bucket=29"})[1] == "green"
    assert get(nginx.port, headers={"Cookie": "bg_bucket=30"})[1] == "blue"


def post(nginx, body: dict) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", nginx.control_port, timeout=10)
    c.request("POST", CONTROL_PATH, body=json.dumps(body).encode(),
              headers={"Content-Type": "application/json"} | nginx.secret_headers())
    r = c.getresponse()
    doc = json.loads(r.read().decode())
    c.close()
    return r.status, doc


def test_invalid_releases_are_refused_and_change_nothing(nginx, backends):
    proxy = NginxDynamicProxy(nginx.proxy())
    proxy.apply([sticky_at(backends, 20)])
    before = nginx.proxy().read()
    assert before["releases"] == {SVC: {"new": "green", "weight": 20, "sticky": True}}
    servers = [{"address": "127.0.0.1", "port": backends["green"].port, "weight": 50,
                "color": "green"},
               {"address": "127.0.0.1", "port": backends["blue"].port, "weight": 50,
                "color": "blue"}]
    good = {"new": "green", "weight": 50, "sticky": True}
    bad = [{SVC: good | {"new": "red"}}, {SVC: good | {"weight": 101}},
           {SVC: good | {"weight": -1}}, {SVC: good | {"weight": "50"}},
           {SVC: good | {"weight": 50.5}}, {SVC: good | {"sticky": "true"}},
           {SVC: good | {"sticky": 1}}, {SVC: good | {"cookie": "x"}},
           {SVC: {k: v for k, v in good.items() if k != "sticky"}},
           {SVC: [good]}, {"other": good}, [good]]
    for releases in bad:
        assert post(nginx, {"services": {SVC: servers}, "releases": releases})[0] == 400, releases
    colorless = [{k: v for k, v in s.items() if k != "color"} for s in servers]
    assert post(nginx, {"services": {SVC: colorless}, "releases": {SVC: good}})[0] == 400
    one_color = [servers[0]]
    assert post(nginx, {"services": {SVC: one_color}, "releases": {SVC: good}})[0] == 400
    assert nginx.proxy().read()["releases"] == before["releases"]
    assert post(nginx, {"services": {SVC: servers}, "releases": {SVC: good}})[0] == 200


# -- preview ----------------------------------------------------------------------------------

PREVIEW = "preview-Secret_0123+/="


def preview_at_0(backends: dict[str, Backend]) -> Route:
    """The route of a release at weight 0: the old color's (blue), green's servers at 0."""
    return Route(SVC, "blue", (Server("127.0.0.1", backends["blue"].port, None, "blue"),
                               Server("127.0.0.1", backends["green"].port, 0, "green")))


def with_preview(nginx, secret: str) -> DynamicProxy:
    return DynamicProxy(nginx.controller(), nginx.include_path, nginx.include_dir, nginx.control,
                        nginx.state_file, preview_secret=secret)


def preview_cookie(response: http.client.HTTPResponse) -> str | None:
    for name, value in response.getheaders():
        if name.lower() == "set-cookie" and value.startswith("bg_preview="):
            assert value.endswith("; Path=/; HttpOnly; SameSite=Lax"), value
            return value.split(";", 1)[0].partition("=")[2]
    return None


def test_a_preview_reaches_the_new_color_at_weight_0_with_the_secret_only(nginx, backends):
    from urllib.parse import quote

    proxy = NginxDynamicProxy(with_preview(nginx, PREVIEW))
    proxy.apply([preview_at_0(backends)])
    preview_file = nginx.state_file.with_suffix(".preview")
    assert preview_file.stat().st_mode & 0o777 == 0o600
    assert proxy.serving(SVC).color == "blue" and proxy.serving(SVC).weight == 100
    assert {get(nginx.port)[1] for _ in range(10)} == {"blue"}
    right = {"X-Bluegreen-Preview": PREVIEW}
    assert {get(nginx.port, headers=right)[1] for _ in range(10)} == {"green"}
    for wrong in (PREVIEW[:-1], PREVIEW + "x", PREVIEW.upper(), ""):
        assert get(nginx.port, headers={"X-Bluegreen-Preview": wrong})[1] == "blue", wrong
    status, _body, r = get(nginx.port, "/?bluegreen-preview=" + quote(PREVIEW, safe=""))
    token = preview_cookie(r)
    assert (status, r.getheader("Location")) == (302, "/") and token and PREVIEW not in token
    assert get(nginx.port, headers={"Cookie": f"bg_preview={token}"})[1] == "green"
    assert get(nginx.port, headers={"Cookie": f"bg_preview={PREVIEW}"})[1] == "blue"
    assert get(nginx.port, headers={"Cookie": f"bg_preview={token[:-1]}0"})[1] == "blue"
    assert get(nginx.port, "/?bluegreen-preview=wrong-secret-0123456")[1] == "blue"
    # a sticky split: the preview wins over the bucket
    proxy.apply([sticky_at(backends, 10)])
    assert get(nginx.port, headers=right | {"Cookie": "bg_bucket=99"})[1] == "green"
    assert get(nginx.port, headers={"Cookie": "bg_bucket=99"})[1] == "blue"
    # the secret is in no file bluegreen or nginx keeps but its own
    for path in nginx.prefix.rglob("*"):
        if path.is_file() and path != preview_file:
            assert PREVIEW.encode() not in path.read_bytes(), path
    # no secret given: the preview is off (the file removed, a checked reload)
    NginxDynamicProxy(nginx.proxy()).apply([preview_at_0(backends)])
    assert not preview_file.exists()
    assert {get(nginx.port, headers=right)[1] for _ in range(10)} == {"blue"}
    assert get(nginx.port, headers={"Cookie": f"bg_preview={token}"})[1] == "blue"


def test_the_preview_secret_never_reaches_a_backend(nginx, backends):
    """The header is taken out of the request; the preview URL answers 302 to itself without
    the secret (other arguments kept), setting the cookie; a wrong secret in the URL is taken
    out too."""
    from urllib.parse import quote

    proxy = NginxDynamicProxy(with_preview(nginx, PREVIEW))
    proxy.apply([preview_at_0(backends)])
    status, body, _r = get(nginx.port, "/echo", headers={"X-Bluegreen-Preview": PREVIEW})
    assert status == 200 and body.startswith("green /echo ") and PREVIEW not in body
    assert "x-bluegreen-preview" not in body.lower()
    status, body, _r = get(nginx.port, "/echo", headers={"X-Bluegreen-Preview": "wrong-0123456789"})
    assert body.startswith("blue /echo ") and "x-bluegreen-preview" not in body.lower()
    secret = quote(PREVIEW, safe="")
    status, _body, r = get(nginx.port, f"/echo/a%20b?x=1&bluegreen-preview={secret}")
    assert (status, r.getheader("Location")) == (302, "/echo/a%20b?x=1")
    token = preview_cookie(r)
    status, body, _r = get(nginx.port, "/echo/a%20b?x=1", headers={"Cookie": f"bg_preview={token}"})
    assert body.startswith("green /echo/a%20b?x=1 ")
    status, body, _r = get(nginx.port, "/echo?bluegreen-preview=wrong-secret-0123456&y=2")
    assert status == 200 and body.startswith("blue /echo?y=2 ")
    many = "&".join(f"a{i}={i}" for i in range(150))  # every other argument kept
    status, body, _r = get(nginx.port, f"/echo?{many}&bluegreen-preview=wrong-secret-0123456")
    kept = body.split(" ")[1].split("?")[1].split("&")
    assert status == 200 and sorted(kept) == sorted(many.split("&"))


def test_a_bad_preview_secret_is_refused_without_showing_it(nginx):
    for bad in ("short", "x" * 257, "has space 0123456789", "semi;colon-0123456789"):
        with pytest.raises(UsageError) as info:
            with_preview(nginx, bad)
        assert bad not in str(info.value)


def test_counts_kept_when_a_service_is_added_to_many(nginx, backends):
    """Adding a service is a reload; at 130 services the shared dicts are over 1m, sized in
    steps so that an addition keeps them (nginx makes a new, empty zone for a new size):
    the counts and their epoch survive it, as any reload's."""
    proxy = NginxDynamicProxy(nginx.proxy())
    blue = Server("127.0.0.1", backends["blue"].port, 100, "blue")
    many = [Route(f"svc-{i:03d}", "blue", (blue,), location=f"/svc-{i:03d}") for i in range(130)]
    proxy.apply([split(backends), *many])
    for _ in range(10):
        assert get(nginx.port)[0] == 200
    before = proxy.figures([SVC])[SVC]
    assert sum(c.requests for c in before.values()) == 10
    proxy.apply([Route("extra", "blue", (blue,), location="/extra")])  # a checked reload
    assert get(nginx.port, "/extra")[:2] == (200, "blue")
    assert proxy.figures([SVC])[SVC] == before
