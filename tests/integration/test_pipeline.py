"""The safe pipeline's fault matrix on real Docker, Consul and nginx.

After each case: the proxy routes to a running, healthy color and the recorded color agrees.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent
HTTP = ["--http", "/api/v1/books"]


def run(svc, image, *extra):
    return svc.bg("run", svc.service, "--image", f"bluegreen-sample:{image}", *extra)


@pytest.fixture
def live_v1(svc):
    r = run(svc, "v1", *HTTP)
    assert r.code == 0, r.err
    assert svc.version() == "v1"
    return svc


def test_run_alternates_colors_and_records_history(svc):
    r = run(svc, "v1", *HTTP, "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert (summary["from"], summary["to"], summary["result"]) == (None, "blue", "ok")
    assert [p["phase"] for p in summary["phases"]] == [
        "Deploy", "Run pre-integration tests", "Update proxy", "Run post-integration tests",
        "stop-old"]
    assert "==> Deploy" in r.err and "<== Update proxy: ok in" in r.err
    r = run(svc, "v2", *HTTP, "--expect-body", '"version":"v2"')
    assert r.code == 0, r.err
    assert svc.version() == "v2"
    assert svc.containers() == {f"{svc.service}-blue": "exited", f"{svc.service}-green": "running"}
    hist = json.loads(svc.bg("history", svc.service, "--json").out)
    assert [(h["action"], h["from"], h["to"], h["result"]) for h in hist] == [
        ("run", None, "blue", "ok"), ("run", "blue", "green", "ok")]
    assert hist[1]["image"] == "bluegreen-sample:v2" and hist[1]["end"] >= hist[1]["start"]
    assert "run blue -> green ok" in svc.bg("history", svc.service).out
    svc.assert_safe()


def test_pre_test_failure_keeps_old_color(live_v1):
    svc = live_v1
    r = run(svc, "broken", *HTTP)
    assert r.code == 1
    assert "Pre-integration tests failed" in r.err
    assert svc.version() == "v1"
    assert svc.containers()[f"{svc.service}-green"] == "exited"
    assert svc.kv("color") == "blue"
    hist = json.loads(svc.bg("history", svc.service, "--json").out)
    assert hist[-1]["result"] == "failed" and hist[-1]["failed_phase"] == "pre-test"
    # green now holds the refused release: rollback refuses it rather than serve it
    r = svc.bg("rollback", svc.service)
    assert r.code == 1 and "bluegreen-sample:broken" in r.err and "did not pass" in r.err
    assert svc.version() == "v1"
    svc.assert_safe()


def test_post_test_failure_switches_back(live_v1):
    svc = live_v1
    r = run(svc, "v2", "--cmd", f"{sys.executable} {HERE / 'through_proxy.py'} fail")
    assert r.code == 1
    assert "Post-integration tests failed" in r.err
    assert "proxy switched back to" in r.err
    assert svc.version() == "v1"
    assert svc.kv("color") == "blue"
    assert svc.containers()[f"{svc.service}-green"] == "exited"
    svc.assert_safe()


def test_post_test_failure_on_first_deployment_serves_nothing(svc):
    r = run(svc, "v1", "--cmd", f"{sys.executable} {HERE / 'through_proxy.py'} fail")
    assert r.code == 1 and "Post-integration tests failed" in r.err
    assert svc.get().status_code == 404
    assert svc.kv("color") is None
    assert svc.containers() == {f"{svc.service}-blue": "exited"}
    svc.assert_safe()


def test_image_that_exits_at_start(live_v1):
    svc = live_v1
    r = run(svc, "crash", *HTTP)
    assert r.code == 1 and "exited with code 3" in r.err
    assert svc.version() == "v1"
    assert f"{svc.service}-green" not in svc.containers()
    svc.assert_safe()


def test_health_check_that_never_passes(live_v1):
    svc = live_v1
    r = run(svc, "unhealthy", *HTTP, "--health-timeout", "3")
    assert r.code == 1 and "not healthy within 3s" in r.err
    assert svc.version() == "v1"
    assert f"{svc.service}-green" not in svc.containers()
    svc.assert_safe()


def test_nginx_validation_failure(live_v1, tmp_path):
    svc = live_v1
    broken = tmp_path / "broken-include.conf"
    broken.write_text("location /api/v1/books { proxy_pass http://nowhere-upstream }\n")
    files = svc.proxy_files()
    r = run(svc, "v2", *HTTP, "--include-file", str(broken))
    assert r.code == 1 and "nginx rejected the configuration" in r.err
    assert svc.proxy_files() == files
    assert svc.version() == "v1"
    assert svc.containers()[f"{svc.service}-green"] == "exited"
    svc.assert_safe()


def test_consul_unreachable_before_start_changes_nothing(live_v1):
    from bluegreen_dev.sandbox import free_port

    svc = live_v1
    before = svc.snapshot()
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v2",
               env=svc.env | {"CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"})
    assert r.code == 3 and "Consul unreachable" in r.err
    assert svc.snapshot() == before
    svc.assert_safe()


def _kill_at(svc, marker, image, *extra):
    """SIGKILL the run once it printed ``marker`` (a phase that then waits on its tests)."""
    proc = svc.popen("run", svc.service, "--image", f"bluegreen-sample:{image}", *extra)
    svc.wait_for_line(proc, marker)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return proc


def _kill_held(svc, tmp_path, point, image, *extra):
    """SIGKILL the run while it holds at ``point``: exactly that much is done."""
    from tests.integration.test_reliability import Held

    held = Held(svc, tmp_path, [point], "run", svc.service, "--image",
                f"bluegreen-sample:{image}", *extra)
    held.kill(point)


def _rerun_recovers(svc, old_version):
    # The interrupted run left the proxy on a running, healthy color...
    assert svc.version() in (old_version, "v2")
    # ...and the next run notices the leftovers, deals with them, and deploys.
    r = run(svc, "v3", *HTTP)
    assert r.code == 0, r.err
    assert "freed the stale lock" in r.err
    assert "recover: interrupted run found" in r.err
    assert svc.version() == "v3"
    svc.assert_safe()


def test_kill_during_deploy_then_run(live_v1, tmp_path):
    svc = live_v1
    _kill_held(svc, tmp_path, "deploy:started", "v2", *HTTP)
    assert svc.version() == "v1"
    status = json.loads(svc.bg("status", svc.service, "--json").out)
    assert any("interrupted" in p for p in status["problems"])
    _rerun_recovers(svc, "v1")


@pytest.mark.parametrize("point", ["switch:before", "switch:proxy-applied", "post-test:before"])
def test_kill_during_switch_then_run(live_v1, tmp_path, point):
    svc = live_v1
    _kill_held(svc, tmp_path, point, "v2", *HTTP)
    assert svc.version() == ("v1" if point == "switch:before" else "v2")
    _rerun_recovers(svc, "v1")


def test_kill_during_post_test_then_run(live_v1):
    svc = live_v1
    _kill_at(svc, "==> Run post-integration tests", "v2", "--cmd",
             f"{sys.executable} {HERE / 'through_proxy.py'} hang", "--test-timeout", "60")
    assert svc.version() == "v2"  # switched, but never verified
    _rerun_recovers(svc, "v1")
    hist = json.loads(svc.bg("history", svc.service, "--json").out)
    assert any(h["action"] == "recover" and h["failed_phase"] == "post-test" for h in hist)


def test_rollback_alone_recovers_a_killed_run(live_v1):
    svc = live_v1
    _kill_at(svc, "==> Run post-integration tests", "v2", "--cmd",
             f"{sys.executable} {HERE / 'through_proxy.py'} hang", "--test-timeout", "60")
    r = svc.bg("recover", svc.service)
    assert r.code == 0 and "interrupted run found" in r.out
    assert svc.version() == "v1"
    svc.assert_safe()


def test_two_concurrent_runs_on_one_service(live_v1):
    svc = live_v1
    procs = [svc.popen("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP)
             for _ in range(2)]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert f"{svc.service} is locked by host" in loser and "pid" in loser
    assert svc.version() == "v2"
    svc.assert_safe()


def test_concurrent_runs_on_two_services(svc, sandbox):
    from bluegreen_dev.sandbox import Nginx
    from tests.integration.conftest import Env, cleanup, service_name

    name = service_name("second")
    other = Env(sandbox, name, Nginx(sandbox.root / f"nginx-{name}").start())
    try:
        procs = [e.popen("run", e.service, "--image", "bluegreen-sample:v1", *HTTP)
                 for e in (svc, other)]
        assert [p.wait(120) for p in procs] == [0, 0]
        assert svc.version() == "v1" and other.version() == "v1"
        svc.assert_safe()
        other.assert_safe()
    finally:
        cleanup(sandbox, name, other.nginx)


def test_rollback_after_run_with_old_color_stopped(live_v1):
    svc = live_v1
    assert run(svc, "v2", *HTTP).code == 0
    r = svc.bg("rollback", svc.service, "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert (summary["from"], summary["to"], summary["proxy_only"]) == ("green", "blue", False)
    assert svc.version() == "v1" and svc.kv("color") == "blue"
    svc.assert_safe()


def test_rollback_within_keep_old_is_proxy_only(live_v1):
    svc = live_v1
    proc = svc.popen("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP, "--keep-old", "4")
    svc.wait_for_line(proc, "keeping")
    assert svc.version() == "v2"
    r = svc.bg("rollback", svc.service, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["proxy_only"] is True
    assert svc.version() == "v1"
    assert proc.wait(60) == 0
    assert "live again" in proc.stderr.read()
    # the run did not stop the color it had kept, which is live again
    assert svc.containers()[f"{svc.service}-blue"] == "running"
    svc.assert_safe()


def test_rollback_sees_a_dead_container_that_the_registry_still_passes(svc):
    """Consul passes a color until its next check: a rollback goes by the containers too. The
    old color's container is killed while Consul (checking every 5 minutes) still passes it;
    the rollback starts it again before routing to it, rather than switching at once."""
    import subprocess

    slow = ("--check-interval", "300s")
    assert run(svc, "v1", *HTTP, *slow).code == 0
    r = svc.bg("deploy", svc.service, "--color", "green", "--image", "bluegreen-sample:v2", *slow)
    assert r.code == 0, r.err
    assert svc.bg("switch", svc.service, "--color", "green").code == 0
    assert svc.version() == "v2"
    subprocess.run(["docker", "kill", f"{svc.service}-blue"], check=True, capture_output=True)
    assert svc.containers()[f"{svc.service}-blue"] == "exited"
    r = svc.bg("rollback", svc.service, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["proxy_only"] is False
    assert "(starting it first)" in r.err
    assert svc.version() == "v1" and svc.kv("color") == "blue"
    svc.assert_safe()


def test_a_rollback_with_nothing_to_recover_switches_first(live_v1):
    """Both colors running and agreeing records: the proxy is switched before recovery runs
    (the rollback's budget), and what recovery finds is still repaired, after the switch."""
    svc = live_v1
    r = svc.bg("deploy", svc.service, "--color", "green", "--image", "bluegreen-sample:v2")
    assert r.code == 0, r.err
    assert svc.bg("switch", svc.service, "--color", "green").code == 0
    import requests

    requests.put(f"{svc.consul_addr}/v1/kv/{svc.service}/release-green", data="not json",
                 timeout=5).raise_for_status()  # a broken record of the color left
    r = svc.bg("rollback", svc.service, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["proxy_only"] is True
    assert r.err.index("<== Rollback: ok") < r.err.index("release-green")
    assert svc.version() == "v1" and svc.kv("color") == "blue"
    svc.assert_safe()


def test_a_local_run_does_without_the_docker_sdk(svc):
    """On the engine's unix socket a run speaks the Engine API itself: the SDK (with requests,
    more to import than a container takes to start) is never imported."""
    import subprocess

    code = ("import sys\nfrom bluegreen.cli.main import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('SDK imported:', 'docker' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, "run", svc.service, "--image",
                           "bluegreen-sample:v1", *HTTP], env=svc.env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "SDK imported: False", proc.stderr
    assert svc.version() == "v1"
    svc.assert_safe()
