"""A release's preview step (``--steps 0,...``) on real Docker, Consul and the dynamic nginx:
at 0% no user reaches the new color, a preview request does, and so do the through-the-proxy
tests (they send the preview secret); the release then goes on, or is undone (abort, a failed
test at 0%, kill -9 at the step) with nothing of it left in the proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from bluegreen_dev.dynamic_nginx import DynamicNginx
from tests.integration.conftest import Env, cleanup, service_name
from tests.integration.test_reliability import Held

pytestmark = pytest.mark.integration
SECRET = "preview-secret-of-the-tests-0123"
HTTP = ["--http", "/api/v1/books"]


@pytest.fixture
def psvc(sandbox, request) -> Iterator[Env]:
    name = service_name(request.node.name.removeprefix("test_"))
    nginx = DynamicNginx(sandbox.root / f"nginx-{name}").start()
    env = Env(sandbox, name, nginx, extra_env={
        "BLUEGREEN_NGINX_MODE": "dynamic", "BLUEGREEN_NGINX_CONTROL": nginx.control,
        "BLUEGREEN_NGINX_STATE_FILE": str(nginx.state_file),
        "BLUEGREEN_PREVIEW_SECRET": SECRET})
    assert env.bg("run", name, "--image", "bluegreen-sample:v1", *HTTP).code == 0
    yield env
    cleanup(sandbox, name, nginx)


def version(env: Env, preview: bool = False) -> str | None:
    r = requests.get(env.nginx.url + "/api/v1/books", timeout=5,
                     headers={"X-Bluegreen-Preview": SECRET} if preview else {})
    return json.loads(r.text)[0]["version"] if r.status_code == 200 else None


def nothing_left_of_the_release(env: Env) -> None:
    """Only blue in the proxy (no server of green, no split), preview requests on v1 too."""
    served = env.nginx.proxy().read()
    assert {s.get("color") for s in served["services"][env.service]} == {"blue"}, served
    assert env.service not in (served.get("releases") or {}), served
    assert version(env) == version(env, preview=True) == "v1"
    env.assert_safe()


def test_a_preview_step_tests_the_new_color_through_the_proxy_then_promotes(psvc, tmp_path):
    svc = psvc
    run = Held(svc, tmp_path, ["switch:at-0"], "run", svc.service, "--image",
               "bluegreen-sample:v2", *HTTP, "--expect-body", '"v2"', "--steps", "0,100")
    run.wait("switch:at-0")
    assert [version(svc) for _ in range(20)] == ["v1"] * 20  # no user on the new color
    assert version(svc, preview=True) == "v2"
    run.release("switch:at-0")
    code, err = run.finish()
    assert code == 0, err
    assert "passed against the proxy at 0% (preview requests)" in err  # they expect v2
    assert version(svc) == "v2"
    svc.assert_safe()


def test_a_test_failing_at_the_preview_step_undoes_the_release(psvc):
    """The test command fails through the proxy only (it passes against the container): the
    release is undone at 0%, which no user had reached."""
    svc = psvc
    check = f'test "$DOMAIN" != "{svc.nginx.url}" && test -n "$BLUEGREEN_PREVIEW_SECRET"'
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", "--cmd",
               f"sh -c '{check}'", "--steps", "0,100", "--retries", "1")
    assert r.code == 1, r.err
    assert "Post-integration tests failed at 0%" in r.err
    nothing_left_of_the_release(svc)


def test_a_release_paused_at_zero_is_aborted_with_nothing_left(psvc):
    svc = psvc
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP, "--steps", "0,100",
               "--confirm")
    assert r.code == 0, r.err
    assert version(svc) == "v1" and version(svc, preview=True) == "v2"
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    nothing_left_of_the_release(svc)


def test_kill_at_the_preview_step_is_undone_by_the_next_command(psvc, tmp_path):
    svc = psvc
    run = Held(svc, tmp_path, ["switch:at-0"], "run", svc.service, "--image",
               "bluegreen-sample:v2", *HTTP, "--steps", "0,100")
    run.kill("switch:at-0")
    assert version(svc) == "v1" and version(svc, preview=True) == "v2"
    r = svc.bg("recover", svc.service)
    assert r.code == 0, r.err
    nothing_left_of_the_release(svc)


def test_a_step_at_zero_without_a_preview_secret_is_refused(psvc):
    svc = psvc
    env = {k: v for k, v in svc.env.items() if k != "BLUEGREEN_PREVIEW_SECRET"}
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP, "--steps", "0,100",
               env=env)
    assert r.code == 2 and "needs --nginx-mode dynamic and a preview secret" in r.err
    assert version(svc) == "v1"
