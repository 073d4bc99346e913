"""Several proxies as one (``proxy/fanout.py``) over reload-mode proxies with a controller
double, and the ``--proxy`` option's parsing and validation (``settings.proxy_specs``)."""

from __future__ import annotations

import pytest

from bluegreen import settings
from bluegreen.errors import OperationFailed, UsageError
from bluegreen.model import Route, Server
from bluegreen.proxy.fanout import FanoutProxy
from bluegreen.proxy.nginx import NginxProxy
from tests.unit.test_proxy import Controller


def nginx(tmp_path, name: str, reload_fails: bool = False) -> NginxProxy:
    up, inc = tmp_path / name / "up", tmp_path / name / "inc"
    return NginxProxy(Controller([up, inc], reload_fails), up, inc)


def blue_green(color: str, weight: int = 100) -> list[Route]:
    servers = (Server("127.0.0.1", 9001 if color == "blue" else 9002, None),)
    if weight < 100:
        servers = (Server("127.0.0.1", 9002, 3), Server("127.0.0.1", 9001, 1))
    return [Route("books-ms", color, servers, weight)]


@pytest.fixture
def fan(tmp_path) -> FanoutProxy:
    return FanoutProxy([("a", nginx(tmp_path, "a")), ("b", nginx(tmp_path, "b"))])


def test_applies_to_every_proxy(fan):
    assert fan.apply(blue_green("blue")) is True
    assert [p.serving("books-ms").color for _n, p in fan.proxies] == ["blue", "blue"]
    assert fan.apply(blue_green("blue")) is False
    assert fan.disagreements("books-ms") == []


def test_a_failure_puts_the_changed_proxies_back_and_names_the_proxy(fan, tmp_path):
    fan.apply(blue_green("green", 75))
    before = fan.proxies[0][1].current("books-ms")
    fan.proxies[1][1].controller.reload_fails = True
    with pytest.raises(OperationFailed, match=r"^proxy b: .*proxy a put back as it was"):
        fan.apply(blue_green("blue"))
    assert fan.proxies[0][1].current("books-ms") == before  # weights included
    assert fan.serving("books-ms").weight == 75


def test_disagreements_and_repair(fan):
    fan.apply(blue_green("blue"))
    fan.proxies[1][1].apply(blue_green("green"))
    (line,) = fan.disagreements("books-ms")
    assert "a routes books-ms to blue 100%" in line and "b to green 100%" in line
    assert fan.repair("books-ms", lambda s: s.color == "green", recorded="green") == [
        "proxy a routed like proxy b: green 100% (127.0.0.1:9002)"]
    assert fan.disagreements("books-ms") == []


def test_the_record_and_one_proxy_win_over_the_other(fan):
    fan.apply(blue_green("blue"))
    fan.proxies[0][1].apply(blue_green("green"))  # a switched behind the record's back
    healthy = lambda s: True  # noqa: E731
    assert fan.repair("books-ms", healthy, recorded="blue") == [
        "proxy a routed like proxy b: blue 100% (127.0.0.1:9001)"]
    assert fan.disagreements("books-ms") == []


def test_no_record_and_no_majority_repairs_nothing(fan):
    fan.apply(blue_green("blue"))
    fan.proxies[1][1].apply(blue_green("green"))
    (line,) = fan.repair("books-ms", lambda s: True, recorded=None)
    assert "neither the record (none) nor a majority" in line
    assert [p.serving("books-ms").color for _n, p in fan.proxies] == ["blue", "green"]
    (line,) = fan.repair("books-ms", lambda s: s.color != "green", recorded="green")
    assert "neither the record (green)" in line  # the record's color is not healthy


def test_a_strict_majority_wins_when_the_record_is_not_healthy(tmp_path):
    fan = FanoutProxy([(n, nginx(tmp_path, n)) for n in "abc"])
    fan.apply(blue_green("green"))
    fan.proxies[0][1].apply(blue_green("blue"))
    assert fan.winner("books-ms", "blue", lambda s: s.color == "green")[0] == "b"
    assert fan.repair("books-ms", lambda s: s.color == "green", recorded="blue") == [
        "proxy a routed like proxy b: green 100% (127.0.0.1:9002)"]
    assert fan.winner("books-ms", None, lambda s: s.color == "blue") is None  # unhealthy


def test_diff_names_each_proxy(fan):
    assert fan.diff(blue_green("blue")).count("proxy ") == 2


def test_proxy_specs():
    assert settings.proxy_specs(["edge=dynamic,control=127.0.0.1:9000",
                                 {"name": "b", "mode": "local", "conf": "/b/nginx.conf"}]) == [
        ("edge", "dynamic", {"nginx_control": "127.0.0.1:9000"}),
        ("b", "local", {"nginx_conf": "/b/nginx.conf"})]


@pytest.mark.parametrize("item, message", [
    ("a=dynamic,colour=x", "unknown key 'colour'"),
    ("a=fast", "invalid --proxy a mode 'fast'"),
    ("A B=local", "invalid --proxy name"),
    ("a=local,conf", "is not KEY=VALUE"),
    ({"name": "a", "mode": "local", "conf": 3}, "invalid conf 3"),
])
def test_proxy_specs_refuse(item, message):
    with pytest.raises(UsageError, match=message):
        settings.proxy_specs([item])


def test_two_proxies_never_share_files(tmp_path):
    opts = {"proxy": ["a=local", "b=local"], "upstream_dir": str(tmp_path),
            "include_dir": str(tmp_path), "nginx_mode": "local"}
    with pytest.raises(UsageError, match="same upstream-dir"):
        settings.proxy(opts)
    with pytest.raises(UsageError, match="given twice"):
        settings.proxy_specs(["a=local", "a=dynamic"])
