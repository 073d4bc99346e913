"""Proxy faults on the real thing: a dynamic nginx whose control endpoint is down, nginx killed
during a switch, one of two proxies unreachable or refusing the change, two proxies that
disagree. Each leaves every proxy on a running, healthy color and says what happened. The
moment of each fault is a hold point of the run (``BLUEGREEN_TEST_HOLD``), never a sleep."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from bluegreen_dev.dynamic_nginx import DynamicNginx
from bluegreen_dev.sandbox import Nginx, free_port
from tests.integration.conftest import Env, cleanup, service_name
from tests.integration.test_reliability import Held

pytestmark = pytest.mark.integration
HTTP = ["--http", "/api/v1/books"]


def version(nginx: Nginx) -> str | None:
    r = requests.get(nginx.url + "/api/v1/books", timeout=5)
    return json.loads(r.text)[0]["version"] if r.status_code == 200 else None


def run_args(svc: Env, image: str) -> list[str]:
    return ["run", svc.service, "--image", f"bluegreen-sample:{image}", *HTTP]


def run_with_fault(svc: Env, tmp_path: Path, fault: Callable[[], object]) -> tuple[int, str]:
    """A run to v2 held before its switch while ``fault`` happens, then let go to its end."""
    held = Held(svc, tmp_path, ["switch:before"], *run_args(svc, "v2"))
    held.wait("switch:before")
    fault()
    held.release("switch:before")
    return held.finish()


def dynamic_env(sandbox, name: str, nginx: DynamicNginx, **extra: str) -> Env:
    return Env(sandbox, name, nginx, extra_env=nginx.cli_env() | extra)


def proxy_b(nginx: Nginx) -> str:
    return (f"b=local,conf={nginx.conf},prefix={nginx.prefix},pid-file={nginx.pid_file},"
            f"upstream-dir={nginx.upstream_dir},include-dir={nginx.include_dir}")


@pytest.fixture
def dyn(sandbox, request) -> Iterator[Env]:
    """One dynamic nginx, v1 live."""
    name = service_name(request.node.name.removeprefix("test_"))
    nginx = DynamicNginx(sandbox.root / f"nginx-{name}").start()
    env = dynamic_env(sandbox, name, nginx)
    r = env.bg(*run_args(env, "v1"))
    assert r.code == 0, r.err
    yield env
    cleanup(sandbox, name, nginx)


@pytest.fixture
def pair(sandbox, request) -> Iterator[tuple[Env, Nginx]]:
    """Proxy a: a dynamic nginx; proxy b: an nginx reloaded; v1 live on both."""
    name = service_name(request.node.name.removeprefix("test_"))
    a = DynamicNginx(sandbox.root / f"nginx-{name}-a").start()
    b = Nginx(sandbox.root / f"nginx-{name}-b").start()
    env = dynamic_env(sandbox, name, a, BLUEGREEN_PROXY=f"a=dynamic\n{proxy_b(b)}")
    r = env.bg(*run_args(env, "v1"))
    assert r.code == 0, r.err
    assert version(a) == version(b) == "v1"
    yield env, b
    b.stop()
    cleanup(sandbox, name, a)


def only_b(env: Env, b: Nginx) -> dict[str, str]:
    """The environment of a CLI that knows proxy b alone."""
    return env.sandbox.env(b) | {"CONSUL_HTTP_ADDR": env.consul_addr}


def set_color(env: Env, color: str) -> None:
    """The color record set behind bluegreen's back (what a switch of one proxy alone wrote
    undone)."""
    put = requests.put(f"{env.consul_addr}/v1/kv/{env.service}/color", data=color,
                       **env.consul_kwargs)
    assert put.status_code == 200 and env.kv("color") == color


# -- one dynamic nginx ------------------------------------------------------------------------


def test_control_endpoint_down_changes_nothing(dyn):
    svc = dyn
    before = svc.snapshot()
    down = f"127.0.0.1:{free_port()}"
    r = svc.bg(*run_args(svc, "v2"), env=svc.env | {"BLUEGREEN_NGINX_CONTROL": down})
    assert r.code == 3, r.err
    assert f"nginx control endpoint unreachable at {down}" in r.err
    assert svc.snapshot() == before and svc.version() == "v1"
    svc.assert_safe()


def test_nginx_killed_and_restarted_during_a_switch(dyn, tmp_path):
    svc = dyn

    def restart() -> None:
        svc.nginx.kill()
        svc.nginx.start()  # the routes come back from the state file
        assert svc.version() == "v1"

    code, err = run_with_fault(svc, tmp_path, restart)
    assert code == 0, err
    assert svc.version() == "v2"
    svc.assert_safe()


def test_nginx_killed_during_a_switch_fails_cleanly(dyn, tmp_path):
    svc = dyn
    code, err = run_with_fault(svc, tmp_path, svc.nginx.kill)
    assert code == 3, err
    assert "nginx control endpoint unreachable" in err and "Update proxy" in err
    svc.nginx.start()
    assert svc.version() == "v1"
    svc.assert_safe()


def test_payload_nginx_rejects_changes_nothing(dyn):
    """The Lua control server refuses what bluegreen never sends: the routes stay."""
    svc = dyn
    before = svc.nginx.proxy().read()["services"]
    host, _, port = svc.nginx.control.rpartition(":")
    for body in ({"services": {svc.service: [{"address": "127.0.0.1", "port": 70000}]}},
                 {"services": {"unknown-svc": [{"address": "127.0.0.1", "port": 80}]}},
                 {"services": {svc.service: [{"address": "127.0.0.1", "port": 80, "weight": 0}]}}):
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST", "/bluegreen/routes", json.dumps(body),
                     {"Content-Type": "application/json"} | svc.nginx.secret_headers())
        resp = conn.getresponse()
        assert resp.status == 400, resp.read()
        assert "error" in json.loads(resp.read())
        conn.close()
    assert svc.nginx.proxy().read()["services"] == before
    svc.assert_safe()


# -- two proxies ------------------------------------------------------------------------------


def test_one_of_two_proxies_unreachable_changes_nothing(pair):
    svc, b = pair
    b.stop()
    before = svc.snapshot()
    r = svc.bg(*run_args(svc, "v2"))
    assert r.code == 3, r.err
    assert "proxy b (nginx) unreachable" in r.err
    assert svc.snapshot() == before and svc.version() == "v1"
    b.start()
    assert version(b) == "v1"
    svc.assert_safe()


def test_proxy_lost_mid_switch_puts_the_other_back(pair, tmp_path):
    svc, b = pair
    code, err = run_with_fault(svc, tmp_path, b.stop)
    assert code == 3, err
    assert "proxy b (nginx) unreachable" in err and "proxy a put back as it was" in err
    assert svc.version() == "v1"  # a is not left switched alone
    b.start()
    assert version(b) == "v1"
    svc.assert_safe()


def test_proxy_refusing_the_change_puts_the_other_back(pair, tmp_path):
    svc, b = pair
    broken = b.include_dir / "zz-broken.conf"
    code, err = run_with_fault(svc, tmp_path,
                               lambda: broken.write_text("this_is_not_a_directive;\n"))
    broken.unlink()
    assert code == 1, err
    assert "proxy b: nginx rejected the configuration" in err and "proxy a put back" in err
    assert svc.version() == version(b) == "v1"
    svc.assert_safe()


def test_status_flags_disagreeing_proxies_and_recover_repairs_them(pair):
    svc, b = pair
    alone = only_b(svc, b)
    assert svc.bg("deploy", svc.service, "--color", "green", "--image",
                  "bluegreen-sample:v2").code == 0
    r = svc.bg("switch", svc.service, "--color", "green", env=alone)  # b alone, behind a's back
    assert r.code == 0, r.err
    set_color(svc, "blue")  # the record still names a's color (the switch of b alone wrote it)
    assert version(b) == "v2" and svc.version() == "v1"
    status = json.loads(svc.bg("status", svc.service, "--json").out)
    assert any("proxies disagree: a routes" in p and "b to green" in p
               for p in status["problems"]), status["problems"]
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    assert "proxy b routed like proxy a: blue" in r.err
    assert svc.version() == version(b) == "v1" and svc.kv("color") == "blue"
    svc.assert_safe()


def test_a_proxy_switched_alone_goes_back_to_the_record_and_the_other(pair):
    """a switched behind the record's back while b and the record agree: the record and b
    win, a is put back, and the record is not rewritten from a."""
    svc, b = pair
    alone_a = {k: v for k, v in svc.env.items() if k != "BLUEGREEN_PROXY"}
    assert svc.bg("deploy", svc.service, "--color", "green", "--image",
                  "bluegreen-sample:v2").code == 0
    r = svc.bg("switch", svc.service, "--color", "green", env=alone_a)
    assert r.code == 0, r.err
    set_color(svc, "blue")  # the record still names b's color (the switch of a alone wrote it)
    assert svc.version() == "v2" and version(b) == "v1"
    status = json.loads(svc.bg("status", svc.service, "--json").out)
    assert any("proxies disagree: a routes" in p and "b to blue" in p
               for p in status["problems"]), status["problems"]
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    assert "proxy a routed like proxy b: blue" in r.err and "color record" not in r.err
    assert svc.version() == version(b) == "v1" and svc.kv("color") == "blue"
    svc.assert_safe()


# -- one of two proxies down: --partial ------------------------------------------------------


def behind(svc: Env) -> dict:
    raw = svc.kv("proxies-behind")
    assert raw is not None and "secret" not in raw.lower()
    return json.loads(raw)["proxies"]


def test_without_partial_one_proxy_down_refuses_and_says_partial_exists(pair):
    svc, b = pair
    b.stop()
    before = svc.snapshot()
    for args in (("switch", svc.service, "--color", "green"), ("rollback", svc.service)):
        r = svc.bg(*args)
        assert r.code == 3, r.err
        assert "proxy b (nginx) unreachable" in r.err and "--partial" in r.err
    assert svc.snapshot() == before and svc.version() == "v1"  # nothing changed on a
    b.start()
    assert version(b) == "v1"
    svc.assert_safe()


def test_switch_partial_records_b_behind_and_recover_brings_it_in_line(pair):
    svc, b = pair
    assert svc.bg("deploy", svc.service, "--color", "green", "--image",
                  "bluegreen-sample:v2").code == 0
    b.stop()
    r = svc.bg("switch", svc.service, "--color", "green", "--partial")
    assert r.code == 0, r.err
    assert "proxy b left behind" in r.err
    assert svc.version() == "v2" and svc.kv("color") == "green"
    entry = behind(svc)["b"]
    assert [(x["service"], x["color"], x["weight"]) for x in entry["routes"]] == [
        (svc.service, "green", 100)]
    assert entry["since"] > 0
    r = svc.bg("status", svc.service)
    assert r.code == 3, r.out  # b unreachable still
    assert "PROBLEM: proxy b is behind since" in r.out
    b.start()
    assert version(b) == "v1"  # it kept what it had
    r = svc.bg("status", svc.service, "--json")
    assert r.code == 1, r.out
    (line,) = [p for p in json.loads(r.out)["problems"] if "proxy b is behind" in p]
    assert f"it must route {svc.service} to green 100%" in line and " UTC" in line
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    assert "proxy b, behind since" in r.out and "brought in line" in r.out
    assert "to green 100%); its proxies-behind record deleted" in r.err
    assert version(b) == svc.version() == "v2" and svc.kv("proxies-behind") is None
    svc.assert_safe()


def test_rollback_partial_then_run_brings_b_in_line_first(pair, tmp_path):
    svc, b = pair
    assert svc.bg("deploy", svc.service, "--color", "green", "--image",
                  "bluegreen-sample:v2").code == 0
    r = svc.bg("switch", svc.service, "--color", "green")  # v1 kept: a proxy-only rollback
    assert r.code == 0, r.err
    assert version(b) == svc.version() == "v2"
    b.stop()
    r = svc.bg("rollback", svc.service, "--partial")
    assert r.code == 0, r.err
    assert svc.version() == "v1" and svc.kv("color") == "blue"
    assert [(x["service"], x["color"]) for x in behind(svc)["b"]["routes"]] == [
        (svc.service, "blue")]
    b.start()
    assert version(b) == "v2"  # behind
    held = Held(svc, tmp_path, ["deploy:before"], *run_args(svc, "v3"))
    held.wait("deploy:before")
    assert version(b) == "v1" and svc.kv("proxies-behind") is None  # before the run's change
    assert svc.version() == "v1"
    held.release("deploy:before")
    code, err = held.finish()
    assert code == 0, err
    assert "proxy b, behind since" in err and "brought in line" in err
    assert svc.version() == version(b) == "v3"
    svc.assert_safe()


def test_run_partial_with_b_down_then_b_back_and_recover(pair):
    svc, b = pair
    b.stop()
    r = svc.bg(*run_args(svc, "v2"), "--partial")
    assert r.code == 0, r.err
    assert "proxy b unreachable, left out of this command (--partial)" in r.err
    assert svc.version() == "v2" and svc.kv("color") == "green"
    assert [(x["color"], x["weight"]) for x in behind(svc)["b"]["routes"]] == [("green", 100)]
    assert "proxy b is behind and may still route it" in r.err  # v1 kept running
    b.start()
    assert version(b) == "v1"  # b routes to v1, still running: behind, as status says
    assert svc.bg("status", svc.service).code == 1
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    assert "brought in line" in r.out and svc.kv("proxies-behind") is None
    assert f"stopped {svc.service}-blue" in r.out + r.err  # once no proxy routes it
    assert svc.version() == version(b) == "v2"
    svc.assert_safe()


def test_b_lost_after_the_ping_before_the_repair_partial_carries_on_and_records_it(
        pair, tmp_path):
    """a and the record on blue, b on green: a recover holds once it has found them
    disagreeing (hold point repair:before, after the ping) while b's nginx is stopped. Without
    --partial it fails naming --partial; with it, a keeps blue, b is recorded as behind with
    a's route, and once b is back the next command brings it in line."""
    svc, b = pair
    assert svc.bg("deploy", svc.service, "--color", "green", "--image",
                  "bluegreen-sample:v2").code == 0
    r = svc.bg("switch", svc.service, "--color", "green", env=only_b(svc, b))
    assert r.code == 0, r.err
    set_color(svc, "blue")
    assert svc.version() == "v1" and version(b) == "v2"

    def recover_losing_b(*extra: str) -> tuple[int, str]:
        holds = tmp_path / f"holds{len(extra)}"  # each run its own hold files
        holds.mkdir()
        held = Held(svc, holds, ["repair:before"], "recover", svc.service, *extra)
        held.wait("repair:before")
        b.stop()
        held.release("repair:before")
        return held.finish()

    code, err = recover_losing_b()
    assert code == 3, err
    assert "proxy b (nginx) unreachable" in err and "--partial" in err
    b.start()
    assert svc.version() == "v1" and version(b) == "v2" and svc.kv("proxies-behind") is None

    code, err = recover_losing_b("--partial")
    assert code == 0, err
    assert "proxy b left behind (unreachable, --partial)" in err
    assert svc.version() == "v1" and svc.kv("color") == "blue"
    assert [(x["service"], x["color"], x["weight"]) for x in behind(svc)["b"]["routes"]] == [
        (svc.service, "blue", 100)]
    b.start()
    assert version(b) == "v2"  # it kept what it had
    r = svc.bg("status", svc.service, "--json")
    assert r.code == 1, r.out
    assert any("proxy b is behind" in p and f"must route {svc.service} to blue 100%" in p
               for p in json.loads(r.out)["problems"])
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    assert "proxy b, behind since" in r.out and "brought in line" in r.out
    assert svc.version() == version(b) == "v1" and svc.kv("proxies-behind") is None
    svc.assert_safe()


def test_a_lost_while_a_refused_change_is_put_back_is_recorded_and_green_kept_for_it(
        pair, tmp_path):
    """A run to v2 with --partial: a (dynamic) is switched, b refuses the change (a broken
    file in its include dir), and a's nginx is killed before a is put back (hold point
    fanout:restore). a is recorded as behind with the route it had (blue); the run fails and
    keeps green running, since a serves it again when it comes back from its state file; once
    a is back, recover brings it in line, then stops green."""
    svc, b = pair
    broken = b.include_dir / "zz-broken.conf"
    held = Held(svc, tmp_path, ["switch:before", "fanout:restore"], *run_args(svc, "v2"),
                "--partial")
    held.wait("switch:before")
    broken.write_text("this_is_not_a_directive;\n")
    held.release("switch:before")
    held.wait("fanout:restore")
    svc.nginx.kill()
    broken.unlink()
    held.release("fanout:restore")
    code, err = held.finish()
    assert code == 1, err
    assert "proxy b: nginx rejected the configuration" in err
    assert "proxy a became unreachable before it was put back: left behind (--partial)" in err
    assert f"keeping {svc.service}-green: proxy a is behind and may still route it" in err
    assert [(x["service"], x["color"], x["weight"]) for x in behind(svc)["a"]["routes"]] == [
        (svc.service, "blue", 100)]
    assert svc.kv("color") == "blue" and version(b) == "v1"
    svc.nginx.start()
    assert svc.version() == "v2"  # a's state file kept the change: green runs, it answers
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    assert "brought in line" in r.out
    assert f"stopped {svc.service}-green" in r.out + r.err
    assert svc.version() == version(b) == "v1" and svc.kv("proxies-behind") is None
    svc.assert_safe()


def test_run_partial_with_every_proxy_down_is_unreachable(pair):
    svc, b = pair
    b.stop()
    svc.nginx.kill()
    r = svc.bg(*run_args(svc, "v2"), "--partial")
    assert r.code == 3, r.err
    assert "unreachable" in r.err and svc.kv("proxies-behind") is None
    svc.nginx.start()
    b.start()
    assert svc.version() == version(b) == "v1"
    svc.assert_safe()
