"""The Consul registry's settings as the consul CLI reads them, its ACL errors and the policy
``bluegreen consul policy`` prints (no agent needed: the agents are in tests/integration)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bluegreen import wire
from bluegreen.errors import UsageError
from bluegreen.registry import consul


@pytest.mark.parametrize("addr, env, expected", [
    ("127.0.0.1:8500", {}, ("http", "127.0.0.1", 8500)),
    ("127.0.0.1:8500", {"CONSUL_HTTP_SSL": "true"}, ("https", "127.0.0.1", 8500)),
    ("http://consul:8500", {"CONSUL_HTTP_SSL": "1"}, ("https", "consul", 8500)),  # never back to http
    ("https://consul", {}, ("https", "consul", 443)),
    ("[::1]:8501", {"CONSUL_HTTP_SSL": "T"}, ("https", "::1", 8501)),
    ("https://[fd00::10]:8501/", {"CONSUL_HTTP_SSL": "false"}, ("https", "fd00::10", 8501)),
])
def test_the_address_as_the_consul_cli_reads_it(addr, env, expected):
    assert consul.parse_consul_addr(addr, env) == expected


@pytest.mark.parametrize("env", [{"CONSUL_HTTP_SSL": "yes"}, {"CONSUL_HTTP_SSL_VERIFY": "nope"}])
def test_a_boolean_go_would_refuse_is_refused(env):
    with pytest.raises(UsageError, match="use true or false"):
        consul.ConsulRegistry("https://127.0.0.1:8501", env=env)


def test_tls_settings_from_the_environment():
    t = consul.consul_tls({"CONSUL_CACERT": "/ca.pem", "CONSUL_CAPATH": "/cas",
                           "CONSUL_CLIENT_CERT": "/c.pem", "CONSUL_CLIENT_KEY": "/k.pem",
                           "CONSUL_TLS_SERVER_NAME": "server.dc1.consul",
                           "CONSUL_HTTP_SSL_VERIFY": "0"})
    assert t == wire.TLS("/ca.pem", "/cas", "/c.pem", "/k.pem", "server.dc1.consul", False)
    assert consul.consul_tls({}).verify


def test_the_ipv6_address_is_bracketed_where_it_is_shown():
    reg = consul.ConsulRegistry("http://[::1]:8500", env={})
    assert reg.where == "http://[::1]:8500" and reg.wire.authority == "[::1]:8500"


def test_an_unsupported_proxy_is_a_usage_error_naming_the_variable():
    with pytest.raises(UsageError, match="HTTPS_PROXY=socks5://p:1080: only an http:// proxy"):
        consul.ConsulRegistry("https://127.0.0.1:8501", env={"HTTPS_PROXY": "socks5://p:1080"})


@pytest.mark.parametrize("text, method, path, says", [
    ("Permission denied: token with AccessorID 'a1' lacks permission 'key:write' on \"x/color\"",
     "PUT", "/v1/kv/x/color", "lacks key:write on 'x/color'"),
    ("Permission denied: anonymous token lacks permission 'session:write' on \"node-1\". The "
     "anonymous token is used implicitly", "PUT", "/v1/session/create",
     "lacks session:write on 'node-1'"),
    ("Permission denied", "PUT", "/v1/agent/service/register", "lacks service:write"),
    ("Permission denied", "GET", "/v1/kv/x/color?raw", "lacks key:read on 'x/color'"),
])
def test_a_403_names_the_permission_and_what_it_was_for(text, method, path, says):
    err = consul._denied("http://c:8500", method, path, text)
    assert says in str(err) and err.status == 6 and "a1" not in str(err)
    assert "bluegreen consul policy" in str(err) and "\n" not in str(err)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bluegreen", *args], capture_output=True,
                          text=True, check=False, timeout=60)


def test_the_printed_policy():
    r = run("consul", "policy", "books-ms", "--kv-prefix", "bg/")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ('key_prefix "bg/books-ms/" {\n  policy = "write"\n}\n'
                        'service "books-ms-blue" {\n  policy = "write"\n}\n'
                        'service "books-ms-green" {\n  policy = "write"\n}\n'
                        'session_prefix "" {\n  policy = "write"\n}\n'
                        'node_prefix "" {\n  policy = "read"\n}\n')
    r = run("consul", "policy", "a", "b", "--app", "shop", "--json")
    rules = json.loads(r.stdout)["rules"]
    assert [(x["resource"], x["name"]) for x in rules[:4]] == [
        ("key_prefix", "shop."), ("service_prefix", "shop."), ("key_prefix", "a/"),
        ("service", "a-blue")]
    assert ("key_prefix", "b/") in [(x["resource"], x["name"]) for x in rules]


@pytest.mark.parametrize("args, says", [
    ((), "name at least one SERVICE or --app APP"),
    (("bad;name",), "invalid service name"),
    (("--app", "Bad App"), "invalid application name"),
])
def test_the_policy_command_refuses_bad_names(args, says):
    r = run("consul", "policy", *args)
    assert r.returncode == 2 and says in r.stderr, r.stderr
