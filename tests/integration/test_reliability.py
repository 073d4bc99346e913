"""The live color survives registry loss, bad records, aborted builds and a dead nginx.

Real Docker, Consul and nginx. This module brings its own Consul dev agent, which the tests
restart empty (a dev agent keeps nothing), as an operator's rebuilt Consul would be. Kill and
restart points are hold points (``BLUEGREEN_TEST_HOLD``): the run waits there until the test
has acted, so the verdict is the same on a fast or a slow machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bluegreen_dev.sandbox import ConsulAgent, Nginx, wait_for
from tests.integration.conftest import Env, cleanup, service_name

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent
HTTP = ["--http", "/api/v1/books"]


@pytest.fixture(scope="module")
def consul(sandbox, tmp_path_factory) -> Iterator[ConsulAgent]:
    agent = ConsulAgent(tmp_path_factory.mktemp("consul-own")).start()
    yield agent
    agent.stop()


def restart_empty(agent: ConsulAgent) -> None:
    """Stop the dev agent and start a new one on the same HTTP port: everything is gone."""
    agent.stop()
    agent.start()
    assert requests.get(f"{agent.addr}/v1/kv/?recurse=1", timeout=5).status_code == 404


@pytest.fixture
def rsvc(sandbox, consul, request) -> Iterator[Env]:
    name = service_name(request.node.name.removeprefix("test_"))
    env = Env(sandbox, name, Nginx(sandbox.root / f"nginx-{name}").start(), consul)
    yield env
    cleanup(sandbox, name, env.nginx, consul)


def run(svc: Env, image: str, *extra: str):
    return svc.bg("run", svc.service, "--image", f"bluegreen-sample:{image}", *extra)


@pytest.fixture
def live_v1(rsvc) -> Env:
    r = run(rsvc, "v1", *HTTP)
    assert r.code == 0, r.err
    assert rsvc.version() == "v1"
    return rsvc


class Traffic:
    """Requests through the proxy in a thread, as users would send them, until stopped."""

    def __init__(self, svc: Env) -> None:
        self.svc, self.ok, self.failed = svc, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                status = self.svc.get().status_code
            except requests.RequestException as exc:
                self.failed.append(type(exc).__name__)
                continue
            if status == 200:
                self.ok += 1
            else:
                self.failed.append(status)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class Held:
    """A run started with hold points; ``wait(point)`` returns once it holds there."""

    def __init__(self, svc: Env, tmp: Path, points: list[str], *args: str) -> None:
        self.dir = tmp
        env = svc.env | {"BLUEGREEN_TEST_HOLD": ",".join(points),
                         "BLUEGREEN_TEST_HOLD_DIR": str(tmp)}
        self.proc = subprocess.Popen([sys.executable, "-m", "bluegreen", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self, point: str) -> None:
        held = self.dir / f"{point}.held"

        def there() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended before {point}: {self.proc.stderr.read()}")
            return held.exists()

        wait_for(there, 120, f"hold point {point}", 0.02)

    def release(self, point: str) -> None:
        (self.dir / f"{point}.release").touch()

    def kill(self, point: str | None = None) -> None:
        """kill -9 the run (once it holds at ``point``, when given), and reap it."""
        if point:
            self.wait(point)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def finish(self) -> tuple[int, str]:
        _out, err = self.proc.communicate(timeout=180)
        return self.proc.returncode, err


def history(svc: Env) -> list[dict]:
    r = svc.bg("history", svc.service, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


# -- 1. a registry that lost its data ---------------------------------------------------------


def test_registry_restarted_empty_then_run_keeps_serving(live_v1, consul):
    svc = live_v1
    restart_empty(consul)
    # The quick commands read the proxy when the record is gone: never the live color as next.
    assert svc.bg("color", "current", svc.service).out.strip() == "blue"
    assert svc.bg("color", "next", svc.service).out.strip() == "green"
    with Traffic(svc) as traffic:
        r = run(svc, "v2", *HTTP)
    assert r.code == 0, r.err
    assert "rebuilt from the proxy and the containers" in r.err
    assert "color record (none) set to blue" in r.err
    assert traffic.failed == [] and traffic.ok > 0
    assert svc.version() == "v2"
    svc.assert_safe()
    # blue was live when its record was rebuilt: a verified release, so rollback takes it.
    r = svc.bg("rollback", svc.service)
    assert r.code == 0, r.err
    assert svc.version() == "v1"
    svc.assert_safe()


def test_rollback_after_registry_restart_refuses_an_unverifiable_color(live_v1, consul):
    svc = live_v1
    assert run(svc, "v2", *HTTP).code == 0
    restart_empty(consul)
    r = svc.bg("rollback", svc.service)
    assert r.code == 1
    assert "rebuilt from its containers, so it counts as unverified" in r.err
    assert svc.version() == "v2"
    svc.assert_safe()


def test_a_registry_lost_after_a_rollback_switched_first_leaves_the_rollback(live_v1, consul,
                                                                            tmp_path):
    """A rollback with nothing to recover switches first and recovers after: Consul lost at
    that moment is said in one line, the rollback stands (exit 0), and the next command
    repeats the recovery."""
    svc = live_v1
    r = svc.bg("deploy", svc.service, "--color", "green", "--image", "bluegreen-sample:v2")
    assert r.code == 0, r.err
    assert svc.bg("switch", svc.service, "--color", "green").code == 0
    held = Held(svc, tmp_path, ["rollback:switched"], "rollback", svc.service)
    held.wait("rollback:switched")
    assert svc.version() == "v1"  # switched before recovery
    consul.stop()
    held.release("rollback:switched")
    code, err = held.finish()
    assert code == 0, err
    assert "recovery after the rollback failed" in err and "Consul unreachable" in err
    consul.start()  # empty: the next command rebuilds the records from the proxy
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    assert "color record (none) set to blue" in r.err + r.out
    assert svc.version() == "v1"
    svc.assert_safe()


# -- 2. bad records are errors, never absences ------------------------------------------------


@pytest.mark.parametrize("junk", ["purple", "green\n}", "x" * 10240])
def test_invalid_color_record(live_v1, junk):
    svc = live_v1
    requests.put(f"{svc.consul_addr}/v1/kv/{svc.service}/color", data=junk, timeout=5)
    for which in ("current", "next"):
        r = svc.bg("color", which, svc.service)
        assert r.code == 1 and r.out == "", (which, r.out)
        assert f"invalid record {svc.service}/color" in r.err
    status = svc.bg("status", svc.service)
    assert f"PROBLEM: invalid record {svc.service}/color" in status.out
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    assert svc.kv("color") == "blue"
    assert svc.bg("color", "next", svc.service).out.strip() == "green"
    svc.assert_safe()


def test_invalid_history_is_kept_aside_not_lost(live_v1):
    svc = live_v1
    requests.put(f"{svc.consul_addr}/v1/kv/{svc.service}/history", data="{broken", timeout=5)
    r = svc.bg("history", svc.service)
    assert r.code == 1 and f"invalid record {svc.service}/history: not JSON" in r.err
    assert f"PROBLEM: invalid record {svc.service}/history" in svc.bg("status", svc.service).out
    r = run(svc, "v2", *HTTP)  # recovery sets it aside, then the run records itself
    assert r.code == 0, r.err
    assert "invalid history record kept as history.invalid-" in r.err
    assert [h["to"] for h in history(svc)] == ["green"]
    keys = requests.get(f"{svc.consul_addr}/v1/kv/{svc.service}/?keys", timeout=5).json()
    aside = [k for k in keys if "/history.invalid-" in k]
    assert len(aside) == 1
    assert requests.get(f"{svc.consul_addr}/v1/kv/{aside[0]}?raw", timeout=5).text == "{broken"
    svc.assert_safe()


def test_invalid_inflight_and_release_records(live_v1):
    svc = live_v1
    assert run(svc, "v2", *HTTP).code == 0  # green live, blue (v1, verified) stopped
    requests.put(f"{svc.consul_addr}/v1/kv/{svc.service}/inflight", data="[1, 2]", timeout=5)
    requests.put(f"{svc.consul_addr}/v1/kv/{svc.service}/release-blue", data="{x", timeout=5)
    status = svc.bg("status", svc.service)
    assert f"PROBLEM: invalid record {svc.service}/inflight" in status.out
    assert f"PROBLEM: invalid record {svc.service}/release-blue" in status.out
    # rollback repairs first, and a release it cannot verify is not rolled back to
    r = svc.bg("rollback", svc.service)
    assert r.code == 1 and "counts as unverified" in r.err
    assert "invalid inflight record kept as" in r.err
    assert svc.version() == "v2"
    svc.assert_safe()


# -- 3. SIGTERM and SIGINT: a safe stop -----------------------------------------------------


@pytest.mark.parametrize(("point", "signum"), [
    ("deploy:started", signal.SIGTERM),
    ("pre-test:before", signal.SIGTERM),
    ("switch:proxy-applied", signal.SIGTERM),
    ("post-test:before", signal.SIGTERM),
    ("post-test:before", signal.SIGINT),
])
def test_signal_stops_at_a_safe_point(live_v1, tmp_path, point, signum):
    svc = live_v1
    held = Held(svc, tmp_path, [point], "run", svc.service, "--image", "bluegreen-sample:v2",
                *HTTP)
    held.wait(point)
    held.proc.send_signal(signum)
    held.release(point)  # a shielded hold point raises once its critical section ends
    code, err = held.finish()
    assert code == (143 if signum == signal.SIGTERM else 130), err
    assert f"stopped by {signal.Signals(signum).name}" in err
    assert svc.version() == "v1"
    assert svc.kv("color") == "blue"
    assert svc.containers().get(f"{svc.service}-green") != "running"
    assert svc.passing("green") == []
    last = history(svc)[-1]
    assert (last["result"], last["to"]) == ("aborted", "green")
    svc.assert_safe()
    r = run(svc, "v3", *HTTP)  # the lock was released and nothing is left to recover
    assert r.code == 0, r.err
    assert "freed the stale lock" not in r.err and "recover:" not in r.err


def test_sigterm_during_test_command_ends_its_process_group(live_v1, tmp_path):
    svc = live_v1
    pidfile = tmp_path / "test.pid"
    proc = svc.popen("run", svc.service, "--image", "bluegreen-sample:v2", "--cmd",
                     f"{sys.executable} {HERE / 'through_proxy.py'} hang {pidfile}",
                     "--test-timeout", "120")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 120, "test command")
    pids = [int(p) for p in pidfile.read_text().split()]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    for pid in pids:  # the test command and the child it started
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    assert svc.version() == "v1"
    svc.assert_safe()


# -- 4. nginx down: exit 3 means nothing changed --------------------------------------------


def kill_nginx_master(nginx: Nginx) -> list[int]:
    """SIGKILL the master; its workers keep serving. Returns the workers' pids."""
    master = int(nginx.pid_file.read_text())
    workers = [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    os.kill(master, signal.SIGKILL)
    return workers


@pytest.fixture
def orphans() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_nginx_down_before_the_run_changes_nothing(live_v1, orphans):
    svc = live_v1
    before = svc.snapshot()
    orphans += kill_nginx_master(svc.nginx)
    r = run(svc, "v2", *HTTP)
    assert r.code == 3 and "nginx unreachable" in r.err
    assert svc.snapshot() == before
    status = svc.bg("status", svc.service)
    assert status.code == 3
    assert "recorded color: blue" in status.out
    assert f"blue: {svc.service}-blue running" in status.out
    assert "UNREACHABLE: nginx unreachable" in status.out


def test_nginx_lost_during_the_run_undoes_the_new_color(live_v1, orphans, tmp_path):
    svc = live_v1
    held = Held(svc, tmp_path, ["switch:before"], "run", svc.service, "--image",
                "bluegreen-sample:v2", *HTTP)
    held.wait("switch:before")
    orphans += kill_nginx_master(svc.nginx)
    held.release("switch:before")
    code, err = held.finish()
    assert code == 3 and "nginx unreachable" in err, err
    assert svc.containers().get(f"{svc.service}-green") != "running"
    assert svc.passing("green") == []
    assert svc.kv("color") == "blue" and svc.kv("inflight") is None
    assert svc.version() == "v1"  # the orphaned workers still serve blue


# -- 5. the token never appears ---------------------------------------------------------------


# -- 6. only our own instances count -----------------------------------------------------------


def test_foreign_instance_is_ignored_and_flagged(live_v1):
    svc = live_v1
    assert run(svc, "v2", *HTTP).code == 0  # green live, blue stopped
    agent = f"{svc.consul_addr}/v1/agent"
    requests.put(f"{agent}/service/register", timeout=5, json={
        "Name": f"{svc.service}-blue", "ID": f"{svc.service}-intruder", "Address": "127.0.0.1",
        "Port": 9, "Check": {"TTL": "10m", "Status": "passing"}}).raise_for_status()
    status = svc.bg("status", svc.service)
    assert f"{svc.service}-intruder (127.0.0.1:9) is registered as {svc.service}-blue but not " \
           f"by bluegreen" in status.out
    r = svc.bg("rollback", svc.service, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["proxy_only"] is False  # blue was started, not taken as running
    assert svc.version() == "v1"
    requests.put(f"{agent}/service/deregister/{svc.service}-intruder", timeout=5)
    svc.assert_safe()


# -- 7. a Consul restart in the middle of each phase ------------------------------------------


@pytest.mark.parametrize("point", ["deploy:started", "pre-test:before", "switch:before",
                                   "switch:proxy-applied", "post-test:before", "verified:before"])
def test_consul_restart_in_each_phase(live_v1, consul, tmp_path, point):
    svc = live_v1
    held = Held(svc, tmp_path, [point], "run", svc.service, "--image", "bluegreen-sample:v2",
                *HTTP)
    held.wait(point)
    restart_empty(consul)
    held.release(point)
    code, err = held.finish()
    assert code == 0, err
    assert svc.version() == "v2"
    svc.assert_safe()
    r = run(svc, "v3", *HTTP)
    assert r.code == 0, r.err
    assert svc.version() == "v3"
    svc.assert_safe()
