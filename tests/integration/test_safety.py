"""--dry-run changes nothing; bad input exits 2 and unreachable dependencies exit 3, unchanged."""

from __future__ import annotations

import pytest

from bluegreen_dev.sandbox import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(module_svc):
    """blue live (v1); green (v2) running beside it, once live (a verified release).
    Tests here must leave it so."""
    svc = module_svc
    s = svc.service
    assert svc.bg("deploy", s, "--color", "blue", "--image", "bluegreen-sample:v1").code == 0
    assert svc.bg("switch", s, "--color", "blue").code == 0
    assert svc.bg("deploy", s, "--color", "green", "--image", "bluegreen-sample:v2").code == 0
    assert svc.bg("switch", s, "--color", "green").code == 0
    assert svc.bg("switch", s, "--color", "blue").code == 0
    return svc


def test_dry_run_changes_nothing(live):
    s = live.service
    before = live.snapshot()
    r = live.bg("switch", s, "--color", "green", "--dry-run")
    assert r.code == 0, r.err
    assert "-    server 127.0.0.1:" in r.err and "+    server 127.0.0.1:" in r.err
    assert "color=green" in r.err
    for args in (["deploy", s, "--color", "green", "--image", "bluegreen-sample:v3"],
                 ["stop", s, "--color", "green"],
                 ["run", s, "--image", "bluegreen-sample:v3", "--http", "/api/v1/books"],
                 ["rollback", s],
                 ["recover", s]):
        r = live.bg(*args, "--dry-run")
        assert r.code == 0, (args, r.err)
        assert live.snapshot() == before, args
    assert live.version() == "v1"


BAD = [
    (["color", "next", "Books"], "invalid service name"),
    (["color", "next", "x; touch /tmp/pwned"], "invalid service name"),
    (["color", "next", "$(id)"], "invalid service name"),
    (["color", "next", "a..b"], "'..'"),
    (["color", "next", "a" * 64], "at most 63"),
    (["color", "next", "../etc"], "invalid service name"),
    (["switch", "{s}", "--color", "red"], "invalid color"),
    (["switch", "{s}", "--color", "green", "--weight", "101"], "invalid weight"),
    (["switch", "{s}", "--color", "green", "--weight", "x"], "invalid --weight"),
    (["deploy", "{s}", "--color", "green", "--image", "UPPER/case"], "invalid image"),
    (["deploy", "{s}", "--color", "green", "--image", "a b"], "invalid image"),
    (["deploy", "{s}", "--color", "green", "--image", "x;rm"], "invalid image"),
    (["deploy", "{s}", "--color", "green", "--image", "i:1", "--port", "70000"], "invalid port"),
    (["deploy", "{s}", "--color", "green", "--image", "i:1", "--port", "0"], "invalid port"),
    (["deploy", "{s}", "--color", "green", "--image", "i:1", "--scale", "0"], "invalid scale"),
    (["deploy", "{s}", "--color", "green", "--image", "i:1", "--scale", "two"], "invalid --scale"),
    (["deploy", "{s}", "--color", "green", "--image", "i:1", "--env", "1X=y"], "invalid --env"),
    (["deploy", "{s}", "--color", "green"], "--image is required"),
    (["switch", "{s}", "--color", "green", "--location", "/x; }"], "invalid location"),
    (["switch", "{s}", "--color", "green", "--location", "/a\n}"], "invalid location"),
    (["switch", "{s}", "--color", "green", "--kv-prefix", "../x/"], "invalid KV prefix"),
    (["run", "{s}", "--image", "i:1", "--cmd", "'unclosed"], "invalid --cmd"),
    (["run", "{s}", "--image", "i:1", "--keep-old", "-1"], "invalid --keep-old"),
    (["run", "{s}", "--image", "i:1", "--proxy-url", "127.0.0.1"], "invalid --proxy-url"),
    (["run", "{s}", "--image", "i:1", "--proxy-url", "http://x/y"], "invalid --proxy-url"),
    (["post-test", "{s}", "--next", "green", "--http", "/", "--proxy-url", "ftp://x"],
     "invalid --proxy-url"),
    (["run", "{s}", "--image", "i:1", "--include-file", "/nonexistent.conf"],
     "invalid --include-file"),
    (["switch", "{s}", "--color", "green", "--check-interval", "fast"], "invalid --check-interval"),
    (["switch", "{s}", "--color", "green", "--nginx-mode", "remote"], "invalid --nginx-mode"),
    (["nonsense"], "invalid choice"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_bad_input_exit_2_and_no_change(live, args, message):
    before = live.snapshot()
    r = live.bg(*[a.replace("{s}", live.service) for a in args])
    assert r.code == 2, r
    assert message in r.err
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert live.snapshot() == before


def test_unreachable_dependencies_exit_3(live):
    s = live.service
    before = live.snapshot()
    port = free_port()
    cases = [
        ({"CONSUL_HTTP_ADDR": f"127.0.0.1:{port}"}, f"Consul unreachable at http://127.0.0.1:{port}"),
        ({"DOCKER_HOST": f"tcp://127.0.0.1:{port}"}, f"Docker unreachable at tcp://127.0.0.1:{port}"),
        ({"BLUEGREEN_NGINX_PID_FILE": "/nonexistent/nginx.pid"}, "nginx unreachable at"),
    ]
    for extra, message in cases:
        env = live.env | extra
        for args in (["run", s, "--image", "bluegreen-sample:v3"], ["switch", s, "--color", "green"],
                     ["rollback", s]):
            if "DOCKER_HOST" in extra and args[0] in ("switch", "rollback"):
                continue  # a local-nginx switch, and a rollback to a running color, need no Docker
            r = live.bg(*args, env=env)
            assert r.code == 3, (args, extra, r)
            assert message in r.err, r.err
            assert len(r.err.strip().splitlines()) == 1
            assert live.snapshot() == before
    assert live.version() == "v1"


def test_debug_prints_a_traceback(live):
    r = live.bg("color", "next", "BAD", "--debug")
    assert r.code == 2 and "Traceback" in r.err


def test_options_from_env_and_config_file(svc, tmp_path):
    s = svc.service
    assert svc.bg("deploy", s, "--color", "blue", "--image", "bluegreen-sample:v1").code == 0
    assert svc.bg("switch", s, "--color", "blue").code == 0
    assert svc.bg("deploy", s, "--color", "green", "--image", "bluegreen-sample:v2").code == 0
    live = svc
    env = live.env
    # BLUEGREEN_* variables
    assert live.bg("switch", s, env=env | {"BLUEGREEN_COLOR": "green",
                                           "BLUEGREEN_DRY_RUN": "1"}).code == 0
    assert live.version() == "v1"
    # a config file; a flag wins over it
    conf = tmp_path / "bluegreen.toml"
    conf.write_text('color = "green"\nweight = 0\n')
    r = live.bg("switch", s, "--config", str(conf))
    assert r.code == 0, r.err
    assert live.version() == "v1"  # weight 0: all traffic stays on blue
    r = live.bg("switch", s, "--config", str(conf), "--weight", "100")
    assert r.code == 0, r.err
    assert live.version() == "v2"
