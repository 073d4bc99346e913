"""Steps gated by the proxy's own figures (issue 21), on real Docker, Consul and the dynamic
nginx: a new color that fails a share of requests is undone by --max-error-rate with the figures
in the message and the history; a step below --min-requests fails, or passes once traffic
comes within --min-requests-wait; the live figures of status --watch.

The traffic is the test's own, sent while the run holds at the gate's window
(``gate:window``, after its first reading) or while it waits for more requests
(``gate:short``): the window holds exactly that traffic, whatever the machine's speed."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bluegreen_dev.dynamic_nginx import DynamicNginx
from tests.integration.conftest import Env, cleanup, dynamic_service, service_name
from tests.integration.test_reliability import Held

pytestmark = pytest.mark.integration
HTTP = ["--http", "/api/v1/books"]


@pytest.fixture
def dsvc(sandbox, request) -> Iterator[Env]:
    with dynamic_service(sandbox, request, live="bluegreen-sample:v1") as env:
        yield env


def send(env: Env, count: int, fail_every: int = 0) -> dict[int, int]:
    """``count`` requests through the proxy, every ``fail_every``-th one to /cgi-bin/fail
    (500 from the flaky sample, 404 from the others); statuses counted."""
    seen: dict[int, int] = {}
    conn = http.client.HTTPConnection("127.0.0.1", env.nginx.port, timeout=10)
    for i in range(1, count + 1):
        path = "/cgi-bin/fail" if fail_every and i % fail_every == 0 else "/api/v1/books"
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        seen[resp.status] = seen.get(resp.status, 0) + 1
    conn.close()
    return seen


def proxy(env: Env) -> dict:
    return json.loads(env.bg("status", env.service, "--json").out)["proxy"]


def test_a_new_color_failing_a_share_of_requests_is_undone_with_its_figures(dsvc, tmp_path):
    svc = dsvc
    run = Held(svc, tmp_path, ["gate:window"], "run", svc.service, "--image",
               "bluegreen-sample:flaky", *HTTP, "--steps", "50,100", "--step-wait", "0.1",
               "--max-error-rate", "1", "--min-requests", "20")
    run.wait("gate:window")
    seen = send(svc, 400, fail_every=7)  # 57 to /cgi-bin/fail: about half reach green (odd:
    # whatever order the balancer takes the colors in)
    run.release("gate:window")
    code, err = run.finish()
    assert code == 1, err
    assert seen.get(500), seen  # green answered some of them with 500
    line = next(x for x in err.splitlines() if x.startswith("gate at 50% over"))
    assert line.endswith(": FAILED") and f"{svc.service}: green " in line and "| blue " in line
    error = err.strip().splitlines()[-1]
    assert error.startswith(f"bluegreen: error: {svc.service}: gate failed: gate at 50% over")
    assert "of green above --max-error-rate 1%" in error
    assert "err " in error and "p99 " in error
    last = json.loads(svc.bg("history", svc.service, "--json").out)[-1]
    assert last["result"] == "failed" and last["failed_phase"] == "switch"
    assert "above --max-error-rate 1%" in last["error"] and "p50 " in last["error"]
    assert proxy(svc)["color"] == "blue" and proxy(svc)["weight"] == 100
    assert svc.version() == "v1" and "running" not in svc.containers().get(
        f"{svc.service}-green", "")
    svc.assert_safe()


def _paused_with_gates(svc: Env) -> None:
    """A progressive run with gates (--max-error-rate 1, --min-requests 20), paused before
    its pre-integration tests."""
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:flaky", *HTTP, "--until",
               "pre-test", "--steps", "50,100", "--step-wait", "0.1", "--max-error-rate", "1",
               "--min-requests", "20")
    assert r.code == 0, r.err


def _resumed_under_failures(svc: Env, tmp_path: Path, *extra: str) -> tuple[int, str, dict]:
    """``run --resume`` (with ``extra``), 400 requests sent (every 7th a 5xx) while its gate's
    window is held; its exit code, stderr and the statuses seen."""
    run = Held(svc, tmp_path, ["gate:window"], "run", svc.service, "--resume", *HTTP, *extra)
    run.wait("gate:window")
    seen = send(svc, 400, fail_every=7)
    run.release("gate:window")
    code, err = run.finish()
    return code, err, seen


def test_a_step_below_min_requests_fails_and_the_old_color_serves(dsvc):
    svc = dsvc
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP, "--steps", "10,100",
               "--step-wait", "0.1", "--min-requests", "20", "--max-error-rate", "1")
    assert r.code == 1, r.err
    assert "0 requests to green, fewer than --min-requests 20" in r.err.splitlines()[-1]
    assert proxy(svc)["color"] == "blue" and svc.version() == "v1"
    svc.assert_safe()


def test_a_healthy_release_passes_its_gates_once_traffic_comes(dsvc, tmp_path):
    svc = dsvc
    run = Held(svc, tmp_path, ["gate:short"], "run", svc.service, "--image",
               "bluegreen-sample:v2", *HTTP, "--steps", "50,100", "--step-wait", "0.1",
               "--max-error-rate", "1", "--max-latency-ratio", "100", "--min-requests", "20",
               "--min-requests-wait", "300")
    run.wait("gate:short")  # the window had too few requests: the step waits for more
    assert send(svc, 200) == {200: 200}
    run.release("gate:short")
    code, err = run.finish()
    assert code == 0, err
    line = next(x for x in err.splitlines() if x.startswith("gate at 50% over"))
    assert line.endswith(": passed") and "err 0.0%" in line
    assert svc.version() == "v2"
    last = json.loads(svc.bg("history", svc.service, "--json").out)[-1]
    assert last["result"] == "ok"
    svc.assert_safe()


def test_a_resumed_run_keeps_the_gates_recorded_when_it_started(dsvc, tmp_path):
    """The gates are given to the first call only (paused after its pre-tests): the resume,
    given none, is judged by them and undone by the breach."""
    svc = dsvc
    _paused_with_gates(svc)
    record = json.loads(svc.kv("inflight") or "{}")
    assert record["gates"] == {"max_error_rate": 1.0, "min_requests": 20}, record
    assert record["step_wait"] == 0.1 and record["steps"] == [50, 100]
    assert "the unfinished run goes on with: --max-error-rate 1 --min-requests 20 " \
        "--step-wait 0.1" in svc.bg("status", svc.service).out.splitlines()
    code, err, seen = _resumed_under_failures(svc, tmp_path)
    assert code == 1, err
    assert seen.get(500), seen
    assert "override" not in err  # nothing given: the record's gates, said by nothing else
    error = err.strip().splitlines()[-1]
    assert error.startswith(f"bluegreen: error: {svc.service}: gate failed: gate at 50% over")
    assert "of green above --max-error-rate 1%" in error
    assert proxy(svc)["color"] == "blue" and proxy(svc)["weight"] == 100
    assert svc.version() == "v1" and svc.kv("inflight") is None
    svc.assert_safe()


def test_a_gate_given_on_resume_overrides_the_recorded_one_and_says_so(dsvc, tmp_path):
    svc = dsvc
    _paused_with_gates(svc)
    code, err, seen = _resumed_under_failures(svc, tmp_path, "--max-error-rate", "100")  # all
    assert code == 0, err
    assert seen.get(500), seen
    assert f"{svc.service}: options given override the release's record: --max-error-rate " \
        f"100 in place of 1" in err.splitlines()
    line = next(x for x in err.splitlines() if x.startswith("gate at 50% over"))
    assert line.endswith(": passed")  # judged: --min-requests 20 of the record still applies
    assert svc.version() == "v-flaky"
    svc.assert_safe()


def test_recorded_gates_are_refused_by_a_resume_in_a_reload_mode(dsvc):
    svc = dsvc
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP, "--until",
               "pre-test", "--steps", "50,100", "--step-wait", "0.1", "--min-requests", "1")
    assert r.code == 0, r.err
    reload_env = svc.env | {"BLUEGREEN_NGINX_MODE": "local"}
    r = svc.bg("run", svc.service, "--resume", *HTTP, env=reload_env)
    assert r.code == 2, r.err
    assert "the release's gates (recorded when it started, or given) read the proxy's " \
        "figures: they need --nginx-mode dynamic" in r.err
    assert json.loads(svc.kv("inflight") or "{}")["paused_after"] == "pre-test"  # untouched
    assert proxy(svc)["color"] == "blue" and proxy(svc)["weight"] == 100
    assert svc.bg("recover", svc.service).code == 0
    svc.assert_safe()


def test_an_ungated_step_prints_its_figures_and_never_fails_on_them(dsvc, tmp_path):
    svc = dsvc
    run = Held(svc, tmp_path, ["gate:window"], "run", svc.service, "--image",
               "bluegreen-sample:flaky", *HTTP, "--steps", "50,100", "--step-wait", "0.1")
    run.wait("gate:window")
    seen = send(svc, 200, fail_every=5)
    run.release("gate:window")
    code, err = run.finish()
    assert code == 0, err  # no gate: 5xx are shown, not judged
    assert seen.get(500), seen
    line = next(x for x in err.splitlines() if x.startswith("figures at 50% over"))
    assert f"{svc.service}: green " in line and "| blue " in line
    assert not line.endswith((": passed", ": FAILED"))
    assert svc.version() == "v-flaky"
    svc.assert_safe()


def test_an_ungated_step_in_the_reload_mode_just_waits(svc):
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP, "--steps", "50,100",
               "--step-wait", "0.1")
    assert r.code == 0, r.err
    assert "figures at" not in r.err and "no figures" not in r.err
    assert svc.version() == "v2"
    svc.assert_safe()


def test_status_watch_prints_the_live_figures(dsvc):
    svc = dsvc
    send(svc, 5)
    r = svc.bg("status", svc.service, "--watch", "--watch-count", "2", "--watch-interval",
               "0.2", "--json")
    assert r.code == 0, r.err
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert len(lines) == 2
    blue = lines[0]["services"][svc.service]["blue"]
    assert blue["weight"] == 100 and set(blue) >= {"requests", "rate", "error_rate", "p50", "p99"}
    r = svc.bg("status", svc.service, "--watch", "--watch-count", "1", "--watch-interval", "0.1")
    assert r.code == 0 and f"{svc.service}: " in r.out and "blue 100%" in r.out


def test_live_figures_and_gates_need_the_dynamic_nginx(svc):
    r = svc.bg("status", svc.service, "--watch", "--watch-count", "1")
    assert r.code == 2 and "need --nginx-mode dynamic" in r.err


def bucket_and_versions(env: Env, count: int) -> tuple[int, set[str]]:
    """A client with a cookie jar: its bucket (set at its first request) and the versions it
    saw in ``count`` requests."""
    conn = http.client.HTTPConnection("127.0.0.1", env.nginx.port, timeout=10)
    cookie, versions = "", set()
    for _ in range(count):
        conn.request("GET", "/api/v1/books", headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        versions.add(json.loads(resp.read())[0]["version"])
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie" and value.startswith("bg_bucket="):
                cookie = value.split(";")[0]
    conn.close()
    assert cookie, "no bucket cookie during a sticky release"
    return int(cookie.partition("=")[2]), versions


def test_a_sticky_run_keeps_each_client_on_one_color(dsvc, tmp_path):
    svc = dsvc
    run = Held(svc, tmp_path, ["switch:at-50"], "run", svc.service, "--image",
               "bluegreen-sample:v2", *HTTP, "--steps", "50,100", "--sticky")
    run.wait("switch:at-50")
    for _ in range(6):
        bucket, versions = bucket_and_versions(svc, 10)
        assert versions == {"v2" if bucket < 50 else "v1"}, (bucket, versions)
    run.release("switch:at-50")
    code, err = run.finish()
    assert code == 0, err
    assert svc.version() == "v2"


@pytest.fixture
def gated_app(sandbox, request) -> Iterator[tuple[Env, str]]:
    """The seed's application under a name of this test's, on a dynamic nginx of its own, its
    routed service sticky by label."""
    from bluegreen_dev.sample_app import build_sample_app_images

    build_sample_app_images()
    name = service_name(request.node.name.removeprefix("test_"))[:30].rstrip("-.")
    nginx = DynamicNginx(sandbox.root / f"nginx-{name}").start()
    env = Env(sandbox, name, nginx, extra_env=nginx.cli_env())
    yield env, name
    for service in ("servicea", "serviceb"):
        cleanup(sandbox, f"{name}.{service}", nginx)
    import requests

    for prefix in (f"{name}._app", f"{name}.servicea", f"{name}.serviceb"):
        requests.delete(f"{sandbox.consul.addr}/v1/kv/{prefix}?recurse=1", timeout=5)


def app_file(tmp_path, name: str, version: str) -> str:
    from tests.integration.test_app_release import EXAMPLE

    text = EXAMPLE.read_text().replace("name: hello-world", f"name: {name}")
    text = text.replace(":v1", f":{version}").replace(
        "      bluegreen.route: /\n", "      bluegreen.route: /\n      bluegreen.sticky: \"true\"\n")
    text = text.replace('bluegreen.test.expect-body: "world!$"', 'bluegreen.test.expect-body: "world!"')
    path = tmp_path / f"compose-{version}.yaml"
    path.write_text(text)
    return str(path)


def test_a_gated_sticky_application_release(gated_app, tmp_path):
    """Both services move; the gate judges each over the same window (serviceA's requests
    come from serviceB's calls through its internal endpoint); the routed one is sticky by
    label: a client keeps one release while both are routed."""
    env, name = gated_app
    assert env.bg("app", "deploy", "--file", app_file(tmp_path, name, "v1")).code == 0
    run = Held(env, tmp_path, ["gate:window"], "app", "deploy", "--file",
               app_file(tmp_path, name, "v2"), "--steps", "50,100", "--step-wait", "0.1",
               "--max-error-rate", "1", "--min-requests", "5")
    run.wait("gate:window")
    conn = http.client.HTTPConnection("127.0.0.1", env.nginx.port, timeout=10)
    cookies = []
    for _ in range(40):  # 40 new clients: each its bucket, each one release end to end
        conn.request("GET", "/")
        resp = conn.getresponse()
        text = resp.read().decode()
        assert resp.status == 200 and text in ("Hello world!", "Welcome to the new world!"), text
        cookies.append(resp.getheader("Set-Cookie") or "")
    conn.close()
    assert all(c.startswith("bg_bucket=") for c in cookies), cookies[:3]
    run.release("gate:window")
    code, err = run.finish()
    assert code == 0, err
    line = next(x for x in err.splitlines() if x.startswith("gate at 50% over"))
    assert f"{name}.serviceb: green " in line and f"{name}.servicea: green " in line, line
    assert line.endswith(": passed")
    r = env.bg("app", "status", name, "--watch", "--watch-count", "1", "--watch-interval", "0.1",
               "--json")
    assert r.code == 0, r.err
    services = json.loads(r.out)["services"]
    assert set(services) == {f"{name}.servicea", f"{name}.serviceb"}
    assert services[f"{name}.serviceb"]["green"]["weight"] == 100


def test_app_promote_goes_on_with_the_gates_recorded_by_app_deploy(gated_app, tmp_path):
    """The gates are given to app deploy (paused after its pre-tests); app promote, given
    only one of them, is judged by the recorded ones with that one in place."""
    env, name = gated_app
    assert env.bg("app", "deploy", "--file", app_file(tmp_path, name, "v1")).code == 0
    r = env.bg("app", "deploy", "--file", app_file(tmp_path, name, "v2"), "--until",
               "pre-test", "--steps", "50,100", "--step-wait", "0.1", "--max-error-rate", "1",
               "--min-requests", "5")
    assert r.code == 0, r.err
    raw = requests.get(f"{env.consul_addr}/v1/kv/{name}._app/app-inflight?raw", timeout=5)
    record = raw.json()
    assert record["gates"] == {"max_error_rate": 1.0, "min_requests": 5}, record
    assert record["step_wait"] == 0.1
    assert "it goes on with: --max-error-rate 1 --min-requests 5 --step-wait 0.1" in \
        env.bg("app", "status", name).out.splitlines()
    run = Held(env, tmp_path, ["gate:window"], "app", "promote", name, "--min-requests", "10")
    run.wait("gate:window")
    conn = http.client.HTTPConnection("127.0.0.1", env.nginx.port, timeout=10)
    for _ in range(60):
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
    conn.close()
    run.release("gate:window")
    code, err = run.finish()
    assert code == 0, err
    assert f"{name}: options given override the release's record: --min-requests 10 in place " \
        f"of 5" in err.splitlines()
    line = next(x for x in err.splitlines() if x.startswith("gate at 50% over"))
    assert f"{name}.serviceb: green " in line and line.endswith(": passed"), line
    history = json.loads(env.bg("app", "history", name, "--json").out)
    assert history[-1]["result"] == "ok"
