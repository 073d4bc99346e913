"""nginx in a container, as the book runs it: nginx -t through docker exec, reload by HUP."""

from __future__ import annotations

import pytest

from bluegreen_dev.sandbox import ContainerizedNginx
from tests.integration.conftest import Env, cleanup, service_name

pytestmark = pytest.mark.integration


@pytest.fixture
def csvc(sandbox):
    name = service_name("container-nginx")
    nginx = ContainerizedNginx(sandbox.root / f"nginx-{name}", name=f"nginx-{name}").start()
    env = Env(sandbox, name, nginx)
    yield env
    cleanup(sandbox, name, nginx)


def cli_env(env):
    return env.env | {"BLUEGREEN_NGINX_MODE": "container",
                      "BLUEGREEN_NGINX_CONTAINER": env.nginx.name}


def test_full_cycle_through_a_containerized_nginx(csvc, tmp_path):
    s, env = csvc.service, cli_env(csvc)
    assert csvc.get().status_code == 404
    r = csvc.bg("run", s, "--image", "bluegreen-sample:v1", "--http", "/api/v1/books", env=env)
    assert r.code == 0, r.err
    assert csvc.version() == "v1"
    r = csvc.bg("run", s, "--image", "bluegreen-sample:v2", "--http", "/api/v1/books", env=env)
    assert r.code == 0, r.err
    assert csvc.version() == "v2"
    # a broken include is refused by nginx -t inside the container; nothing changes
    broken = tmp_path / "broken.conf"
    broken.write_text("location / { proxy_pass http://no-such-upstream }\n")
    files = csvc.proxy_files()
    r = csvc.bg("run", s, "--image", "bluegreen-sample:v3", "--http", "/api/v1/books",
                "--include-file", str(broken), env=env)
    assert r.code == 1 and "nginx rejected the configuration" in r.err
    assert csvc.proxy_files() == files
    assert csvc.version() == "v2"
    # the other color now holds the refused v3: a rollback must not bring it back
    r = csvc.bg("rollback", s, env=env)
    assert r.code == 1 and "did not pass" in r.err
    assert csvc.version() == "v2"
    r = csvc.bg("run", s, "--image", "bluegreen-sample:v3", "--http", "/api/v1/books", env=env)
    assert r.code == 0, r.err
    r = csvc.bg("rollback", s, env=env)
    assert r.code == 0, r.err
    assert csvc.version() == "v2"


def test_missing_nginx_container_is_exit_3(csvc):
    env = cli_env(csvc) | {"BLUEGREEN_NGINX_CONTAINER": "no-such-nginx"}
    r = csvc.bg("switch", csvc.service, "--color", "blue", env=env)
    assert r.code == 3 and "nginx unreachable at container no-such-nginx" in r.err
