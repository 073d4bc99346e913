"""Consul as production runs it, on real agents: HTTPS with client certificates verified
(``verify_incoming``) on 127.0.0.1 and on ::1, certificates made by the test; ACLs with
``default_policy = "deny"`` and a token made from exactly the policy ``bluegreen consul
policy`` prints. Each error is one line with its own exit status, and changes nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from bluegreen_dev.certs import CA
from bluegreen_dev.sample_app import build_sample_app_images
from bluegreen_dev.sandbox import ConsulAgent, Nginx, free_port
from tests.integration.conftest import Env, cleanup, service_name

pytestmark = pytest.mark.integration

MANAGEMENT = "6a1f2c3d-4b5e-4f60-8a7b-9c0d1e2f3a4b"  # the ACL agent's management token


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("certs")
    ca, other = CA.make(d, "ca"), CA.make(d, "other")
    return SimpleNamespace(ca=ca, server=ca.issue("server", dns=("localhost", "server.dc1.consul")),
                           client=ca.issue("client"), stranger=other.issue("stranger"),
                           other=other)


@pytest.fixture(scope="module", params=["127.0.0.1", "::1"])
def tls_consul(certs, tmp_path_factory, request) -> Iterator[ConsulAgent]:
    agent = ConsulAgent(tmp_path_factory.mktemp("consul-tls"), tls=(certs.ca.cert, certs.server),
                        client=request.param).start(client_cert=certs.client)
    yield agent
    agent.stop()


def tls_vars(certs: SimpleNamespace) -> dict[str, str]:
    return {"CONSUL_CACERT": str(certs.ca.cert), "CONSUL_CLIENT_CERT": str(certs.client.cert),
            "CONSUL_CLIENT_KEY": str(certs.client.key)}


def app_file(path: Path, app: str, version: str = "v1") -> str:
    """An application of one routed service (no internal endpoint: those bind the bridge
    gateway's port 80, which one nginx on the machine can hold at a time)."""
    path.write_text(f"""name: {app}
services:
  servicea:
    image: bluegreen-servicea:{version}
    labels:
      bluegreen.port: "5000"
      bluegreen.route: /
      bluegreen.health-path: /health
      bluegreen.test.http: /
      bluegreen.test.expect-body: "world!"
""")
    return str(path)


def make_env(sandbox, consul: ConsulAgent, hint: str, extra: dict[str, str]) -> Env:
    name = service_name(hint)
    return Env(sandbox, name, Nginx(sandbox.root / f"nginx-{name}").start(), consul=consul,
               extra_env=extra)


@pytest.fixture
def tsvc(sandbox, tls_consul, certs, request) -> Iterator[Env]:
    env = make_env(sandbox, tls_consul, request.node.name.removeprefix("test_"), tls_vars(certs))
    yield env
    cleanup(sandbox, env.service, env.nginx, tls_consul)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bluegreen: error: "), err
    return lines[0]


# -- HTTPS with client certificates ---------------------------------------------------------


def test_run_rollback_and_the_single_steps_over_https(tsvc):
    s = tsvc.service
    assert tsvc.consul_addr.startswith("https://")
    for image in ("v1", "v2"):
        r = tsvc.bg("run", s, "--image", f"bluegreen-sample:{image}", "--http", "/api/v1/books")
        assert r.code == 0, r.err
    assert tsvc.version() == "v2" and tsvc.kv("color") == "green"
    r = tsvc.bg("rollback", s)
    assert r.code == 0, r.err
    assert tsvc.version() == "v1" and tsvc.kv("color") == "blue"
    tsvc.assert_safe()
    # the single steps, registration included (the IPv6 traceback of issue 20 was there)
    r = tsvc.bg("deploy", s, "--color", "green", "--image", "bluegreen-sample:v3")
    assert r.code == 0, r.err
    assert tsvc.passing("green")
    assert tsvc.bg("switch", s, "--color", "green").code == 0
    assert tsvc.version() == "v3"
    r = tsvc.bg("stop", s, "--color", "blue")
    assert r.code == 0, r.err
    assert not tsvc.passing("blue")
    tsvc.assert_safe()


def test_app_deploy_over_https(sandbox, tls_consul, certs, tmp_path):
    build_sample_app_images()
    app = f"tlsapp{os.getpid() % 10000}-{free_port() % 1000}"
    env = make_env(sandbox, tls_consul, "app", tls_vars(certs))
    try:
        r = env.bg("app", "deploy", "--file", app_file(tmp_path / "a.yaml", app))
        assert r.code == 0, r.err
        assert requests.get(env.nginx.url + "/", timeout=10).text == "world!"
        r = env.bg("app", "status", app, "--json")
        assert r.code == 0, r.err
        assert json.loads(r.out)["services"]["servicea"]["live_color"] == "blue"
    finally:
        cleanup(sandbox, f"{app}.servicea", env.nginx, tls_consul)


def test_consul_http_ssl_makes_a_plain_address_https(tsvc):
    addr = tsvc.consul_addr.removeprefix("https://")
    r = tsvc.bg("color", "current", tsvc.service,
                env=tsvc.env | {"CONSUL_HTTP_ADDR": addr, "CONSUL_HTTP_SSL": "true"})
    assert r.code == 0, r.err


def test_verification_can_be_turned_off(tsvc):
    env = tsvc.env | {"CONSUL_HTTP_SSL_VERIFY": "false"}
    env.pop("CONSUL_CACERT")
    r = tsvc.bg("color", "current", tsvc.service, env=env)
    assert r.code == 0, r.err


# -- each error: one line, its exit status, nothing changed ---------------------------------


def refused(tsvc: Env, env: dict[str, str], status: int) -> str:
    """``run`` with ``env`` exits ``status`` with one line, and changes nothing."""
    before = tsvc.snapshot()
    r = tsvc.bg("run", tsvc.service, "--image", "bluegreen-sample:v1", "--http", "/api/v1/books",
                env=env)
    assert r.code == status, (r.code, r.err)
    assert tsvc.snapshot() == before
    return one_line(r.err)


def test_without_a_client_certificate_exit_4(tsvc):
    env = tsvc.env
    del env["CONSUL_CLIENT_CERT"], env["CONSUL_CLIENT_KEY"]
    line = refused(tsvc, env, 4)
    assert f"TLS with Consul at {tsvc.consul_addr} failed" in line
    assert "CONSUL_CLIENT_CERT" in line


def test_a_client_certificate_of_another_ca_exit_4(tsvc, certs):
    env = tsvc.env | {"CONSUL_CLIENT_CERT": str(certs.stranger.cert),
                      "CONSUL_CLIENT_KEY": str(certs.stranger.key)}
    line = refused(tsvc, env, 4)
    assert f"TLS with Consul at {tsvc.consul_addr} failed" in line


def test_a_server_certificate_that_does_not_verify_exit_4(tsvc, certs):
    line = refused(tsvc, tsvc.env | {"CONSUL_CACERT": str(certs.other.cert)}, 4)
    assert f"TLS with Consul at {tsvc.consul_addr} failed: certificate verify failed" in line


def test_a_server_name_the_certificate_does_not_have_exit_4(tsvc):
    line = refused(tsvc, tsvc.env | {"CONSUL_TLS_SERVER_NAME": "consul.example"}, 4)
    assert "certificate verify failed" in line and "consul.example" in line


@pytest.mark.parametrize("variable", ["CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY",
                                      "CONSUL_CAPATH"])
@pytest.mark.parametrize("problem", ["missing", "directory", "not-pem"])
def test_a_missing_or_unusable_tls_file_exit_5(tsvc, tmp_path, variable, problem):
    path = {"missing": tmp_path / "nowhere.pem", "directory": tmp_path,
            "not-pem": tmp_path / "junk.pem"}[problem]
    if problem == "not-pem":
        path.write_text("not a certificate\n")
    env = tsvc.env | {variable: str(path)}
    if variable == "CONSUL_CAPATH":
        env.pop("CONSUL_CACERT")
        if problem == "directory":  # what it names: an empty one verifies nothing
            line = refused(tsvc, env, 4)
            assert "certificate verify failed" in line
            return
    line = refused(tsvc, env, 5)
    assert str(path) in line and tsvc.consul_addr in line


def test_unreachable_stays_exit_3(tsvc):
    line = refused(tsvc, tsvc.env | {"CONSUL_HTTP_ADDR": f"https://127.0.0.1:{free_port()}"}, 3)
    assert "Consul unreachable at https://127.0.0.1:" in line


# -- ACLs: default deny, a token from exactly the printed policy ----------------------------


@pytest.fixture(scope="module")
def acl_consul(tmp_path_factory) -> Iterator[ConsulAgent]:
    agent = ConsulAgent(tmp_path_factory.mktemp("consul-acl"), acl_token=MANAGEMENT).start()
    yield agent
    agent.stop()


def token_for(agent: ConsulAgent, rules: str, name: str) -> str:
    """A token whose only policy is ``rules`` (made with the management token)."""
    kw = agent.requests_kwargs()
    r = requests.put(f"{agent.addr}/v1/acl/policy", json={"Name": name, "Rules": rules}, **kw)
    assert r.status_code == 200, r.text
    r = requests.put(f"{agent.addr}/v1/acl/token", json={"Policies": [{"Name": name}]}, **kw)
    assert r.status_code == 200, r.text
    return r.json()["SecretID"]


def printed_policy(env: Env, *args: str) -> str:
    r = env.bg("consul", "policy", *args)
    assert r.code == 0, r.err
    return r.out


@pytest.fixture
def asvc(sandbox, acl_consul, request) -> Iterator[Env]:
    env = make_env(sandbox, acl_consul, request.node.name.removeprefix("test_"), {})
    yield env
    cleanup(sandbox, env.service, env.nginx, acl_consul)


def test_every_command_works_with_exactly_the_printed_policy(asvc):
    s = asvc.service
    rules = printed_policy(asvc, s)
    asvc.extra_env["CONSUL_HTTP_TOKEN"] = token_for(asvc.consul, rules, f"p-{s}")
    ok = [("run", s, "--image", "bluegreen-sample:v1", "--http", "/api/v1/books"),
          ("color", "current", s), ("color", "next", s), ("address", s, "--color", "blue"),
          ("deploy", s, "--color", "green", "--image", "bluegreen-sample:v2"),
          ("pre-test", s, "--color", "green", "--http", "/api/v1/books"),
          ("switch", s, "--color", "green"),
          ("post-test", s, "--next", "green", "--http", "/api/v1/books"),
          ("run", s, "--image", "bluegreen-sample:v3", "--http", "/api/v1/books"),
          ("rollback", s), ("stop", s, "--color", "blue"), ("recover", s), ("history", s),
          ("status", s)]
    for args in ok:
        r = asvc.bg(*args)
        assert r.code == 0, (args, r.err)
    assert asvc.version() == "v2"
    asvc.assert_safe()


def test_an_application_with_exactly_the_printed_policy(sandbox, acl_consul, tmp_path):
    build_sample_app_images()
    app = f"aclapp{os.getpid() % 10000}-{free_port() % 1000}"
    env = make_env(sandbox, acl_consul, "aclapp", {})
    env.extra_env["CONSUL_HTTP_TOKEN"] = token_for(acl_consul, printed_policy(env, "--app", app),
                                                   f"p-{app}")
    try:
        for version in ("v1", "v2"):
            r = env.bg("app", "deploy", "--file", app_file(tmp_path / f"{version}.yaml", app,
                                                            version))
            assert r.code == 0, r.err
        for action in ("rollback", "status", "history"):
            r = env.bg("app", action, app)
            assert r.code == 0, (action, r.err)
        assert requests.get(env.nginx.url + "/", timeout=10).text == "world!"
    finally:
        cleanup(sandbox, f"{app}.servicea", env.nginx, acl_consul)


def rule_blocks(rules: str) -> list[str]:
    blocks = [b + "}\n" for b in rules.split("}\n") if b.strip()]
    assert "".join(blocks) == rules
    return blocks


@pytest.mark.parametrize("missing, says", [
    (0, "lacks key:write on '{s}/color'"),
    (1, "lacks service:write on '{s}-blue'"),
    (2, "lacks service:write on '{s}-green'"),
    (3, "lacks session:write"),
    (4, "lacks node:read"),
])
def test_a_token_missing_a_permission_exit_6_and_nothing_changes(asvc, missing, says):
    s = asvc.service
    blocks = rule_blocks(printed_policy(asvc, s))
    assert len(blocks) == 5
    rules = "".join(b for i, b in enumerate(blocks) if i != missing)
    asvc.extra_env["CONSUL_HTTP_TOKEN"] = token = token_for(asvc.consul, rules, f"m{missing}-{s}")
    before = asvc.snapshot()
    for args in (("run", s, "--image", "bluegreen-sample:v1", "--http", "/api/v1/books"),
                 ("rollback", s)):
        r = asvc.bg(*args)
        assert r.code == 6, (args, r.code, r.err)
        line = one_line(r.err)
        assert says.format(s=s) in line and "bluegreen consul policy" in line
        assert token not in r.err
    assert asvc.snapshot() == before


def test_a_token_that_cannot_read_the_keys_exit_6(asvc):
    s = asvc.service
    asvc.extra_env["CONSUL_HTTP_TOKEN"] = token_for(asvc.consul, 'key_prefix "other/" { policy = '
                                                    '"read" }\n', f"r-{s}")
    r = asvc.bg("color", "current", s)
    assert r.code == 6, r.err
    assert f"lacks key:read on '{s}/color'" in one_line(r.err)


# -- plain http on ::1, and every call through a proxy ----------------------------------------


@pytest.fixture(scope="module")
def v6_consul(tmp_path_factory) -> Iterator[ConsulAgent]:
    agent = ConsulAgent(tmp_path_factory.mktemp("consul-v6"), client="::1").start()
    yield agent
    agent.stop()


@pytest.fixture
def v6svc(sandbox, v6_consul, request) -> Iterator[Env]:
    env = make_env(sandbox, v6_consul, request.node.name.removeprefix("test_"), {})
    yield env
    cleanup(sandbox, env.service, env.nginx, v6_consul)


def test_deploy_run_and_stop_over_http_on_ipv6(v6svc):
    """Issue 20's first finding: these ended in a traceback from the registration path."""
    s = v6svc.service
    assert v6svc.consul_addr.startswith("http://[::1]:")
    r = v6svc.bg("run", s, "--image", "bluegreen-sample:v1", "--http", "/api/v1/books")
    assert r.code == 0, r.err
    r = v6svc.bg("deploy", s, "--color", "green", "--image", "bluegreen-sample:v2")
    assert r.code == 0, r.err
    r = v6svc.bg("stop", s, "--color", "green")
    assert r.code == 0, r.err
    r = v6svc.bg("recover", s)
    assert r.code == 0, r.err
    v6svc.assert_safe()


def test_every_consul_call_of_a_run_goes_through_the_proxy(svc):
    """Issue 20's third finding: registration used the proxy variables, KV, health and the
    lock did not. Now one client: every call of a run, registration included, is proxied."""
    from tests.unit.test_wire_client import TinyProxy

    proxy = TinyProxy()
    try:
        env = svc.env | {"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "",
                         "http_proxy": "", "no_proxy": ""}
        r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", "--http",
                   "/api/v1/books", env=env)
        assert r.code == 0, r.err
    finally:
        proxy.close()
    agent = svc.consul_addr
    paths = {line.split(" ")[1].removeprefix(agent).split("?")[0] for line, _ in proxy.seen}
    assert all(line.split(" ")[1].startswith(agent) for line, _ in proxy.seen)
    for wanted in (f"/v1/kv/{svc.service}/color", f"/v1/kv/{svc.service}/lock",
                   "/v1/session/create", "/v1/agent/service/register",
                   f"/v1/health/service/{svc.service}-blue"):
        assert wanted in paths, sorted(paths)
    assert svc.version() == "v1"
