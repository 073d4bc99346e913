"""A release's gates kept in its record (flow/gates.py, Release._new and _continued): a
continued release (run --resume, app resume|promote) goes on with them unless an option is
given; a preview secret that a reload mode ignores is warned about; a URL's credentials are
refused without being printed."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bluegreen import validate
from bluegreen.cli import commands, options
from bluegreen.errors import OperationFailed, UsageError
from bluegreen.flow import gates
from bluegreen.flow.gates import Limits
from bluegreen.flow.release import Release, ReleaseOptions
from bluegreen.flow.target import ServiceTarget
from bluegreen.record import replace

SECRET = "preview-secret-of-the-unit-tests"
GATED = Limits(max_error_rate=1.0, max_latency_ratio=2.0, min_requests=20,
               min_requests_wait=30.0, query="up == 1", prometheus_url="http://127.0.0.1:9090/p")


def resolved(*args: str, env: dict[str, str] | None = None) -> dict:
    return options.resolve(options.parse(list(args)), env=env or {})


def release_options(*args: str, env: dict[str, str] | None = None) -> ReleaseOptions:
    return commands._release_options(resolved(*args, env=env))


def release(ropts: ReleaseOptions) -> tuple[Release, list[str]]:
    """A release whose steps only speak (what _new and _continued use)."""
    said: list[str] = []
    steps = SimpleNamespace(say=said.append, serving_color=lambda _s: None)
    return Release(steps, None, ServiceTarget("books"), ropts), said  # type: ignore[arg-type]


def paused(**fields: object) -> dict:
    """A paused run's record (written by an older bluegreen when it has no gates)."""
    return {"id": "x", "state": "paused", "paused_after": "pre-test", "weight": 0,
            "steps": [50, 100], "units": {}, **fields}


# -- where an option came from -------------------------------------------------------------


def test_resolve_says_where_each_option_not_at_its_default_came_from(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("min-requests = 5\n")
    opts = resolved("app", "resume", "shop", "--config", str(conf), "--max-error-rate", "2",
                    env={"BLUEGREEN_STEP_WAIT": "30"})
    assert opts["given"]["max_error_rate"] == "--max-error-rate"
    assert opts["given"]["step_wait"] == "$BLUEGREEN_STEP_WAIT"
    assert opts["given"]["min_requests"] == "the config file"
    assert "max_latency_ratio" not in opts["given"] and "gate_query" not in opts["given"]


# -- the record ------------------------------------------------------------------------------


def test_a_new_release_records_its_gates_and_step_wait():
    r, _ = release(ReleaseOptions(steps=(10, 100), step_wait=60.0, gates=GATED))
    inflight = r._new([r.target.unit(None, "x:1")], {})
    assert inflight["step_wait"] == 60.0 and inflight["steps"] == [10, 100]
    assert inflight["gates"] == {"max_error_rate": 1.0, "max_latency_ratio": 2.0,
                                 "min_requests": 20, "min_requests_wait": 30.0,
                                 "query": "up == 1", "prometheus_url": "http://127.0.0.1:9090/p"}
    assert json.loads(json.dumps(inflight))["gates"] == inflight["gates"]  # as the registry
    assert gates.from_record(json.loads(json.dumps(inflight))) == (GATED, 60.0)
    ungated, _ = release(ReleaseOptions())
    assert ungated._new([ungated.target.unit(None, "x:1")], {})["gates"] == {}


def test_a_record_without_gates_is_a_release_without_gates():
    assert gates.from_record(paused()) == (Limits(), 0.0)
    assert gates.from_record(paused(gates={}, step_wait=0.0)) == (Limits(), 0.0)


@pytest.mark.parametrize("bad", [
    {"max_error_rate": 500}, {"min_requests": -1}, {"min_requests": "x"},
    {"query": "up\n"}, {"prometheus_url": "ftp://p"}, {"token": "x"}, {"step_wait": 5},
    ["max_error_rate"]])
def test_unreadable_recorded_gates_fail_and_say_what_to_do(bad):
    with pytest.raises(OperationFailed, match="the release record's gates cannot be read"):
        gates.from_record(paused(gates=bad))
    with pytest.raises(OperationFailed, match="--step-wait"):
        gates.from_record(paused(step_wait=-3))


def test_status_shows_the_gates_a_release_goes_on_with():
    assert gates.shown(paused(gates=gates.to_record(GATED), step_wait=60.0)) == (
        "--max-error-rate 1 --max-latency-ratio 2 --min-requests 20 --min-requests-wait 30 "
        "--gate-query 'up == 1' --prometheus-url 'http://127.0.0.1:9090/p' --step-wait 60")
    assert gates.shown(paused()) == ""
    assert gates.shown(paused(gates={"token": "x"})).startswith(
        "the release record's gates cannot be read")


# -- a continued release ---------------------------------------------------------------------


def test_a_continued_release_goes_on_with_its_recorded_gates():
    ropts = release_options("app", "resume", "shop", "--nginx-mode", "dynamic")
    r, said = release(ropts)
    inflight = r._continued(paused(gates=gates.to_record(GATED), step_wait=60.0))
    assert r.opts.gates == GATED and r.opts.step_wait == 60.0 and r.opts.gates.active
    assert inflight["gates"] == gates.to_record(GATED) and inflight["step_wait"] == 60.0
    assert said == []  # nothing given: nothing overridden


def test_an_option_given_overrides_the_record_in_one_line():
    ropts = release_options("app", "promote", "shop", "--nginx-mode", "dynamic",
                            "--max-error-rate", "5", "--gate-query", "up > bool 0",
                            env={"BLUEGREEN_STEP_WAIT": "10", "BLUEGREEN_MIN_REQUESTS": "20"})
    r, said = release(ropts)
    inflight = r._continued(paused(gates=gates.to_record(GATED), step_wait=60.0))
    # the query given, with the recorded Prometheus; the other gates as recorded
    assert r.opts.gates == replace(GATED, max_error_rate=5.0, query="up > bool 0")
    assert r.opts.step_wait == 10.0 and inflight["step_wait"] == 10.0
    assert inflight["gates"]["max_error_rate"] == 5.0  # recorded for the rest of the release
    assert said == ["books: options given override the release's record: --step-wait 10 (from "
                    "$BLUEGREEN_STEP_WAIT) in place of 60, --max-error-rate 5 in place of 1, "
                    "--gate-query 'up > bool 0' in place of 'up == 1'"]


def test_none_takes_a_recorded_gate_off_a_continued_release():
    ropts = release_options("app", "promote", "shop", "--nginx-mode", "dynamic",
                            "--max-error-rate", "none", "--gate-query", "none",
                            "--min-requests", "0")
    r, said = release(ropts)
    inflight = r._continued(paused(gates=gates.to_record(GATED), step_wait=60.0))
    # the query off, and with it its Prometheus; the latency ratio as recorded
    assert r.opts.gates == replace(GATED, max_error_rate=None, query=None, prometheus_url=None,
                                   min_requests=0)
    assert inflight["gates"] == {"max_latency_ratio": 2.0, "min_requests_wait": 30.0}
    assert said == ["books: options given override the release's record: --max-error-rate "
                    "none in place of 1, --min-requests 0 in place of 20, --gate-query none "
                    "in place of 'up == 1'"]


def test_jenkins_giving_the_same_gates_again_says_nothing():
    ropts = release_options("app", "resume", "shop", "--nginx-mode", "dynamic", "--step-wait",
                            "60", "--max-error-rate", "1", "--min-requests", "20")
    r, said = release(ropts)
    r._continued(paused(gates={"max_error_rate": 1.0, "min_requests": 20}, step_wait=60.0))
    assert said == [] and r.opts.gates.max_error_rate == 1.0


def test_an_old_record_takes_the_gates_given_as_before():
    ropts = release_options("run", "books", "--resume", "--nginx-mode", "dynamic",
                            "--step-wait", "5", "--min-requests", "3")
    r, said = release(ropts)
    inflight = r._continued(paused())
    assert r.opts.gates.min_requests == 3 and r.opts.step_wait == 5.0
    assert inflight["gates"] == {"min_requests": 3}
    assert said == ["books: options given override the release's record: --step-wait 5 in "
                    "place of 0, --min-requests 3 in place of 0"]


def test_run_resume_steps_override_the_recorded_ones():
    r, said = release(release_options("run", "books", "--resume", "--steps", "25,100"))
    assert r._continued(paused())["steps"] == [25, 100]
    assert said == ["books: options given override the release's record: --steps 25,100 in "
                    "place of 50,100"]
    r, said = release(release_options("run", "books", "--resume"))
    assert r._continued(paused())["steps"] == [50, 100] and said == []


def test_recorded_gates_in_a_reload_mode_are_refused():
    r, _ = release(release_options("app", "promote", "shop"))  # --nginx-mode local
    with pytest.raises(UsageError, match=r"the release's gates .* need --nginx-mode dynamic"):
        r._continued(paused(gates={"max_error_rate": 1.0}, step_wait=5.0))


@pytest.mark.parametrize(("args", "record", "error"), [
    (("--step-wait", "0"), {"gates": {"min_requests": 5}, "step_wait": 5.0},
     "give --step-wait > 0"),
    (("--gate-query", "up"), {}, "--gate-query and --prometheus-url go together"),
    (("--prometheus-url", "http://p:9090"), {}, "go together"),
])
def test_what_cannot_work_after_the_record_is_refused(args, record, error):
    r, _ = release(release_options("app", "resume", "shop", "--nginx-mode", "dynamic", *args))
    with pytest.raises(UsageError, match=error):
        r._continued(paused(**record))


def test_a_query_given_alone_on_resume_uses_the_recorded_prometheus():
    ropts = release_options("app", "resume", "shop", "--nginx-mode", "dynamic", "--gate-query",
                            "up")  # not refused at the edge: the record may have the URL
    r, _ = release(ropts)
    r._continued(paused(gates={"query": "x", "prometheus_url": "http://p:9090"}, step_wait=1.0))
    assert (r.opts.gates.query, r.opts.gates.prometheus_url) == ("up", "http://p:9090")


def test_explicit_gates_on_resume_in_a_reload_mode_are_refused_at_the_edge():
    with pytest.raises(UsageError, match="they need --nginx-mode dynamic"):
        release_options("app", "resume", "shop", "--max-error-rate", "1")


def test_a_preview_step_still_to_come_needs_the_secret_on_resume():
    record = paused(steps=[0, 100])
    r, _ = release(release_options("run", "books", "--resume", "--nginx-mode", "dynamic"))
    with pytest.raises(UsageError, match=r"first step is 0%.*preview secret"):
        r._continued(record)
    r, _ = release(release_options("run", "books", "--resume", "--nginx-mode", "dynamic",
                                   env={"BLUEGREEN_PREVIEW_SECRET": SECRET}))
    assert r._continued(record)["steps"] == [0, 100]
    r, _ = release(release_options("run", "books", "--resume", "--nginx-mode", "dynamic"))
    assert r._continued(record | {"switched": True, "weight": 0})["steps"] == [0, 100]


# -- the preview secret in a reload mode ------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("run", "books", "--image", "x:1"), ("run", "books", "--resume"),
    ("app", "promote", "shop"), ("app", "resume", "shop"),
    ("run", "books", "--image", "x:1", "--nginx-mode", "container")])
def test_a_preview_secret_ignored_by_a_reload_mode_is_a_warning(args, capsys):
    ropts = release_options(*args, env={"BLUEGREEN_PREVIEW_SECRET": SECRET})
    assert ropts.preview == SECRET  # the release goes on (no preview in this mode)
    out, err = capsys.readouterr()
    mode = "container" if "container" in args else "local"
    assert out == "" and err.count("\n") == 1
    assert err.startswith("bluegreen: warning: the preview secret ($BLUEGREEN_PREVIEW_SECRET, "
                          f"--preview-secret) is ignored by --nginx-mode {mode}")
    assert SECRET not in err


def test_no_warning_where_the_preview_works_or_is_not_used(capsys):
    env = {"BLUEGREEN_PREVIEW_SECRET": SECRET}
    release_options("run", "books", "--image", "x:1", "--nginx-mode", "dynamic", env=env)
    release_options("app", "abort", "shop", env=env)  # ends a release: no preview there
    release_options("app", "status", "shop", env=env)
    release_options("run", "books", "--image", "x:1")  # no secret
    assert capsys.readouterr().err == ""


def test_several_proxies_name_those_without_a_preview(capsys):
    release_options("run", "books", "--image", "x:1", "--proxy", "a=dynamic", "--proxy",
                    "b=local", env={"BLUEGREEN_PREVIEW_SECRET": SECRET})
    err = capsys.readouterr().err
    assert "is ignored by --proxy b (local):" in err and "--proxy a" not in err


def test_a_preview_step_in_a_reload_mode_is_still_refused():
    with pytest.raises(UsageError, match="needs --nginx-mode dynamic and a preview secret"):
        release_options("run", "books", "--steps", "0,100",
                        env={"BLUEGREEN_PREVIEW_SECRET": SECRET})


def test_the_cli_warns_once_and_never_prints_the_secret():
    from bluegreen_dev.sandbox import free_port
    from tests.unit.test_cli import run

    env = {"BLUEGREEN_PREVIEW_SECRET": SECRET, "CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"}
    code, out, err = run("run", "s", "--image", "x:1", env=env)
    assert code == 3 and SECRET not in out + err  # the warning, then Consul is not there
    assert err.splitlines()[0] == (
        "bluegreen: warning: the preview secret ($BLUEGREEN_PREVIEW_SECRET, --preview-secret) "
        "is ignored by --nginx-mode local: the preview needs --nginx-mode dynamic")
    code, out, err = run("run", "s", "--image", "x:1", "--steps", "0,100", env=env)
    assert code == 2 and SECRET not in out + err and "warning" not in err
    assert "needs --nginx-mode dynamic and a preview secret" in err


# -- credentials in a URL ---------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://user:hunter2-pw@p:9090", "http://:hunter2-pw@p/prom",
                                 "https://user@p:9090/x"])
def test_credentials_in_the_prometheus_url_are_refused_without_being_printed(url):
    with pytest.raises(UsageError) as info:
        validate.prefix_url(url, "--prometheus-url")
    assert "credentials in the URL (user:password@) are not taken" in str(info.value)
    assert "hunter2" not in str(info.value) and "user@" not in str(info.value)
    with pytest.raises(UsageError, match="credentials in the URL") as info:
        release_options("run", "s", "--nginx-mode", "dynamic", "--steps", "10,100",
                        "--step-wait", "5", "--gate-query", "up", "--prometheus-url", url)
    assert "hunter2" not in str(info.value)
