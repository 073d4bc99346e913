"""The routing table (``--nginx-routing table``) on real nginx: the same answers as nginx's own
prefix locations for every URI tried (the longest prefix wins, a location's path without its
trailing slash is redirected, nothing matched is 404), services added and changed by a POST
without a reload, the table restored from the state file at a restart, a location held by
one service refused to another, and the routing table refused next to per-service location
files."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from bluegreen.errors import OperationFailed, UsageError
from bluegreen.model import Route, Server
from bluegreen.proxy.dynamic import TABLE_NAME
from bluegreen.proxy.dynamic_state import read_document
from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx

pytestmark = pytest.mark.integration

LOCATIONS = {"root": "/", "api": "/api/", "apiv2": "/api/v2", "docs": "/docs", "deep": "/a/b/c/",
             "dot": "/x.y/", "tilde": "/~u/", "dash": "/a-b_c/"}
URIS = ["/", "/x", "/api", "/api/", "/api/v1", "/api/v2", "/api/v2/", "/api/v20", "/apix",
        "/docs", "/docs/", "/docsx", "/a", "/a/", "/a/b", "/a/b/c", "/a/b/c/", "/a/b/c/d",
        "/a/b/cd", "/x.y", "/x.y/z", "/x-y/", "/~u", "/~u/", "/%7Eu/", "//api/", "/api//v2/x",
        "/api/../docs", "/api/%2e%2e/docs/", "/API/", "/api?q=1", "/a/b/c?x=1&y=%2F",
        "/%61pi/", "/a-b_c", "/a-b_c/d", "/a/./b/c/", "/docs%2Fx"]


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: Backend(name).start() for name in LOCATIONS}
    yield started
    for b in started.values():
        b.stop()


def routes(backends: dict[str, Backend], names: list[str]) -> list[Route]:
    return [Route(n, "blue", (Server("127.0.0.1", backends[n].port, 100, "blue"),),
                  location=LOCATIONS[n]) for n in names]


def answer(port: int, uri: str) -> tuple[int, str, str]:
    """Status, body (a backend's name, or nginx's page) and Location (its path and query)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", uri)
        r = c.getresponse()
        body = r.read().decode(errors="replace")
        location = r.getheader("Location") or ""
        return r.status, body, location.replace(f"http://127.0.0.1:{port}", "http://HOST")
    finally:
        c.close()


@pytest.mark.parametrize("names", [list(LOCATIONS), [n for n in LOCATIONS if n != "root"]],
                         ids=["with-root", "without-root"])
def test_the_table_answers_as_nginx_locations_do(sandbox, backends, names, tmp_path):
    """One nginx with a location per service, one with the routing table, the same services
    and locations: every URI gets the same status, body and Location from both."""
    answers = {}
    for routing in ("locations", "table"):
        nginx = DynamicNginx(tmp_path / routing, routing=routing).start()
        try:
            nginx.proxy().apply(routes(backends, names))
            answers[routing] = {uri: answer(nginx.port, uri) for uri in URIS}
        finally:
            nginx.stop()
    differ = {uri: (answers["locations"][uri], answers["table"][uri]) for uri in URIS
              if answers["table"][uri] != answers["locations"][uri]}
    assert not differ, "\n".join(f"{u}: nginx {a[:1] + a[2:]}, table {b[:1] + b[2:]}"
                                  for u, (a, b) in differ.items())
    seen = {a[0] for a in answers["table"].values()}
    assert {200, 301} <= seen and (404 in seen) == ("root" not in names)  # each case met


@pytest.fixture
def table(sandbox, backends, tmp_path) -> Iterator[DynamicNginx]:
    nginx = DynamicNginx(tmp_path / "table", routing="table").start()
    yield nginx
    nginx.stop()


def test_services_are_added_moved_and_changed_without_a_reload(table, backends):
    proxy = table.proxy()
    proxy.apply(routes(backends, ["root"]))
    workers = sorted(table.controller().workers())
    include = table.include_path.read_text()
    proxy.apply(routes(backends, ["api", "docs"]))  # two services added
    assert answer(table.port, "/api/x")[:2] == (200, "api")
    proxy.apply([Route("docs", "blue", (Server("127.0.0.1", backends["dot"].port, 100, "blue"),),
                       location="/d/")])  # moved, to another server
    assert answer(table.port, "/docs")[:2] == (200, "root")
    assert answer(table.port, "/d/1")[:2] == (200, "dot")
    proxy.apply([Route("docs", "blue", (Server("127.0.0.1", backends["dot"].port, 100, "blue"),),
                       location="")])  # no public location: out of the table
    assert answer(table.port, "/d/1")[:2] == (200, "root")
    assert sorted(table.controller().workers()) == workers  # never a reload
    assert table.include_path.read_text() == include
    doc = proxy.read()
    assert doc["locations"] == {"root": "/", "api": "/api/"}
    assert set(doc["services"]) == {"root", "api", "docs"}


def test_a_location_is_one_services_and_a_clash_changes_nothing(table, backends):
    proxy = table.proxy()
    proxy.apply(routes(backends, ["root", "api"]))
    before = proxy.read()
    thief = Route("docs", "blue", (Server("127.0.0.1", backends["docs"].port, 100, "blue"),),
                  location="/api/")
    with pytest.raises(OperationFailed, match=r"refused the routes \(409\): location /api/ is "
                                              r"api's"):
        proxy.apply([thief])
    after = proxy.read()
    assert after["services"] == before["services"] and after["locations"] == before["locations"]
    assert answer(table.port, "/api/")[:2] == (200, "api")
    # the same location handed over in one change: allowed
    proxy.apply([thief, Route("api", "blue", routes(backends, ["api"])[0].servers,
                              location="/api2/")])
    assert answer(table.port, "/api/")[:2] == (200, "docs")
    assert answer(table.port, "/api2/")[:2] == (200, "api")


def test_a_restart_serves_the_table_of_the_state_file(table, backends):
    proxy = table.proxy()
    proxy.apply(routes(backends, ["root", "api", "deep"]))
    table.kill()
    table.start()
    for uri, name in (("/q", "root"), ("/api/z", "api"), ("/a/b/c/d", "deep")):
        assert answer(table.port, uri)[:2] == (200, name), uri
    assert read_document(table.state_file)["locations"] == {
        "root": "/", "api": "/api/", "deep": "/a/b/c/"}


def test_removing_a_service_takes_its_location_out(table, backends):
    proxy = table.proxy()
    proxy.apply(routes(backends, ["root", "api"]))
    assert proxy.remove(["api"]) is True
    assert answer(table.port, "/api/x")[:2] == (200, "root")
    assert proxy.read()["locations"] == {"root": "/"}


def test_the_table_next_to_per_service_locations_is_refused(sandbox, backends, tmp_path):
    nginx = DynamicNginx(tmp_path / "mixed").start()
    try:
        nginx.proxy().apply(routes(backends, ["api"]))
        nginx.routing = "table"
        with pytest.raises(UsageError, match=r"holds the locations of api \(--nginx-routing "
                                             r"locations\)"):
            nginx.proxy().apply(routes(backends, ["docs"]))
        assert not (nginx.include_dir / TABLE_NAME).exists()
    finally:
        nginx.stop()
