"""The hardened dynamic mode through the CLI on real Docker, Consul and nginx with the Lua
module (issue 19): the first run sets nginx up, `status` fails on a route that is not ours,
a damaged or lost state file is reported, then repaired by `recover`, and the control
secret appears in no output nor record."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bluegreen.model import Server
from bluegreen.proxy import dynamic as nd
from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx
from tests.integration.conftest import Env, cleanup, service_name

pytestmark = pytest.mark.integration
HTTP = ["--http", "/api/v1/books"]


def dynamic_env(sandbox, request, setup: bool = True) -> tuple[Env, DynamicNginx]:
    name = service_name(request.node.name.removeprefix("test_"))
    nginx = DynamicNginx(sandbox.root / f"nginx-{name}", setup=setup).start()
    return Env(sandbox, name, nginx, extra_env=nginx.cli_env()), nginx


@pytest.fixture
def dsvc(sandbox, request) -> Iterator[Env]:
    env, nginx = dynamic_env(sandbox, request)
    yield env
    cleanup(sandbox, env.service, nginx)


def test_the_first_run_on_an_nginx_without_bluegreen_sets_it_up(sandbox, request):
    """An nginx as the README sets it up (nothing of bluegreen's in it): the first run writes
    the control server and the secret, checks, reloads, then routes by POST."""
    env, nginx = dynamic_env(sandbox, request, setup=False)
    try:
        assert not nginx.include_path.exists() and not nginx.secret_file.exists()
        r = env.bg("run", env.service, "--image", "bluegreen-sample:v1", *HTTP)
        assert r.code == 0, r.err
        assert env.version() == "v1"
        assert nginx.secret_file.stat().st_mode & 0o777 == 0o600
        r = env.bg("run", env.service, "--image", "bluegreen-sample:v2", *HTTP)
        assert r.code == 0, r.err
        assert env.version() == "v2"
        secret = nginx.secret_headers()[nd.SECRET_HEADER]
        history = env.bg("history", env.service, "--json")
        status = env.bg("status", env.service, "--json")
        for text in (r.out, r.err, history.out, status.out, nginx.state_file.read_text(),
                     env.kv("history") or ""):
            assert secret not in text
        env.assert_safe()
    finally:
        cleanup(sandbox, env.service, nginx)


def test_status_fails_when_nginx_routes_to_something_not_ours(dsvc):
    svc = dsvc
    assert svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", *HTTP).code == 0
    assert svc.bg("status", svc.service).code == 0
    stranger = Backend("stranger").start()
    try:  # what a hijack (or a stale route) leaves: nginx routes elsewhere
        nd.DynamicControl(svc.nginx.control, svc.nginx.state_file).apply(
            {svc.service: [Server("127.0.0.1", stranger.port)]})
        r = svc.bg("status", svc.service)
        assert r.code == 1, r.out
        assert f"PROBLEM: the proxy routes to 127.0.0.1:{stranger.port} which is not a passing " \
               f"instance of {svc.service}" in r.out
    finally:
        stranger.stop()


def test_a_damaged_state_file_is_reported_then_rebuilt_by_recover(dsvc):
    svc = dsvc
    assert svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", *HTTP).code == 0
    svc.nginx.state_file.write_bytes(b"\x00\x01garbage")
    r = svc.bg("status", svc.service)
    assert r.code == 1 and "Traceback" not in r.err
    assert f"PROBLEM: cannot read the state file {svc.nginx.state_file}" in r.out
    assert "proxy routes to: blue" in r.out  # what nginx serves, its color from the last good copy
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    assert [line for line in r.err.splitlines() if "rebuilt it from what nginx serves" in line]
    doc = nd.read_document(svc.nginx.state_file)
    assert doc["colors"][svc.service]["color"] == "blue"
    svc.nginx.kill()
    svc.nginx.start()
    assert svc.version() == "v1"
    svc.assert_safe()


@pytest.mark.parametrize(("command", "then"), [("recover", "v2"), ("rollback", "v1")])
def test_a_restart_without_any_state_is_repaired(dsvc, command, then):
    """State file and last good copy gone, nginx restarted: 502; `status` says so (exit 1),
    and `recover` routes the recorded color again (never "nothing to recover"); `rollback`
    does so first, then rolls back."""
    svc = dsvc
    assert svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", *HTTP).code == 0
    assert svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP).code == 0
    svc.nginx.state_file.unlink()
    os.unlink(nd.last_good_path(svc.nginx.state_file))
    svc.nginx.kill()
    svc.nginx.start()
    assert svc.get().status_code == 502
    r = svc.bg("status", svc.service)
    assert r.code == 1 and "answers 502" in r.out, r.out
    r = svc.bg(command, svc.service)
    assert r.code == 0, r.err
    assert "routed to green again" in r.err, r.err
    assert svc.version() == then
    svc.assert_safe()
