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
from tests.integration.conftest import Env, cleanup, dynamic_service
from tests.integration.test_reliability import Held

pytestmark = pytest.mark.integration
SECRET = "preview-secret-of-the-tests-0123"
HTTP = ["--http", "/api/v1/books"]


@pytest.fixture
def psvc(sandbox, request) -> Iterator[Env]:
    with dynamic_service(sandbox, request, live="bluegreen-sample:v1",
                         BLUEGREEN_PREVIEW_SECRET=SECRET) as env:
        yield env


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


def test_a_paused_preview_step_is_not_resumed_without_the_secret(psvc):
    svc = psvc
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP, "--steps", "0,100",
               "--until", "pre-test")
    assert r.code == 0, r.err
    env = {k: v for k, v in svc.env.items() if k != "BLUEGREEN_PREVIEW_SECRET"}
    r = svc.bg("run", svc.service, "--resume", *HTTP, env=env)
    assert r.code == 2 and "the release's first step is 0%, reached by preview requests only: " \
        "it needs --nginx-mode dynamic and a preview secret" in r.err, r.err
    assert version(svc) == "v1"  # nothing moved
    r = svc.bg("run", svc.service, "--resume", *HTTP, "--expect-body", '"v2"')
    assert r.code == 0, r.err
    assert "passed against the proxy at 0% (preview requests)" in r.err
    assert version(svc) == "v2"
    svc.assert_safe()


def test_a_preview_secret_in_a_reload_mode_is_a_warning_never_printed(svc):
    """Set for several jobs (a Jenkins folder's credentials): the reload-mode run goes on,
    with one line saying its preview secret does nothing there."""
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v2", *HTTP,
               env=svc.env | {"BLUEGREEN_PREVIEW_SECRET": SECRET})
    assert r.code == 0, r.err
    warnings = [x for x in r.err.splitlines() if x.startswith("bluegreen: warning:")]
    assert warnings == ["bluegreen: warning: the preview secret ($BLUEGREEN_PREVIEW_SECRET, "
                        "--preview-secret) is ignored by --nginx-mode local: the preview needs "
                        "--nginx-mode dynamic"]
    assert SECRET not in r.out + r.err
    assert svc.version() == "v2"
    svc.assert_safe()


APP_COMPOSE = """name: {app}
services:
  servicea:
    image: bluegreen-servicea:{v}
    labels:
      bluegreen.port: "5000"
      bluegreen.endpoint: servicea.local
      bluegreen.health-path: /health
  serviceb:
    image: bluegreen-serviceb:{v}
    environment:
      - dep_endpoint=http://servicea.local:{port}
    labels:
      bluegreen.port: "5001"
      bluegreen.route: /
      bluegreen.health-path: /health
      bluegreen.test.http: /
      bluegreen.test.expect-body: "{expect}"
"""


def test_an_application_previewed_end_to_end_at_zero_then_promoted(sandbox, tmp_path):
    """Both services change: a preview request reaches the new frontend, whose calls reach
    the new backend (the chains), while every user stays on the old release."""
    from bluegreen_dev.sample_app import build_sample_app_images
    from bluegreen_dev.sandbox import free_port
    from tests.integration.test_app_faults import BODIES, GATEWAY

    build_sample_app_images()
    app = "previewapp"
    nginx = DynamicNginx(tmp_path / "nginx").start()
    listen = f"{GATEWAY}:{free_port()}"
    env = Env(sandbox, app, nginx, extra_env=nginx.cli_env() | {
        "BLUEGREEN_INTERNAL_LISTEN": listen, "BLUEGREEN_PREVIEW_SECRET": SECRET})

    def compose(v: str) -> str:
        path = tmp_path / f"{v}.yaml"
        path.write_text(APP_COMPOSE.format(app=app, v=v, port=listen.rpartition(":")[2],
                                           expect=BODIES[v]))
        return str(path)

    def answer(preview: bool = False) -> str:
        r = requests.get(nginx.url + "/", timeout=10,
                         headers={"X-Bluegreen-Preview": SECRET} if preview else {})
        return r.text.strip() if r.status_code == 200 else f"HTTP {r.status_code}"

    try:
        assert env.bg("app", "deploy", "--file", compose("v1")).code == 0
        r = env.bg("app", "deploy", "--file", compose("v2"), "--steps", "0,100", "--confirm")
        assert r.code == 0, r.err
        assert "passed against the proxy at 0% (preview requests)" in r.err  # expects v2's body
        assert {answer() for _ in range(10)} == {BODIES["v1"]}
        assert {answer(preview=True) for _ in range(10)} == {BODIES["v2"]}
        r = env.bg("app", "promote", app)
        assert r.code == 0, r.err
        assert {answer() for _ in range(10)} == {BODIES["v2"]}
    finally:
        for name in ("servicea", "serviceb"):
            cleanup(sandbox, f"{app}.{name}", nginx)
        requests.delete(f"{sandbox.consul.addr}/v1/kv/{app}._app?recurse=1", timeout=5)
