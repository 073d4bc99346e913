"""The gates of a release's steps (flow/gates.py): windows, epochs, percentiles, verdicts, the
step's wait with --min-requests-wait, the Prometheus query; and their refusals at the edge."""

from __future__ import annotations

import http.server
import json
import math
import threading
from collections.abc import Iterator

import pytest

from bluegreen.cli import commands, options
from bluegreen.errors import UsageError
from bluegreen.flow import gates
from bluegreen.flow.gates import Limits, Window
from bluegreen.model import LATENCY_BOUNDS_MS, Counts

N = len(LATENCY_BOUNDS_MS) + 1


def hist(**at: int) -> tuple[int, ...]:
    """Counts per bucket by its upper bound: hist(b10=3, over=1)."""
    buckets = [0] * N
    for key, count in at.items():
        index = N - 1 if key == "over" else LATENCY_BOUNDS_MS.index(int(key[1:]))
        buckets[index] = count
    return tuple(buckets)


def counts(requests: int = 0, errors: int = 0, failures: int = 0, epoch: str = "e1",
           **at: int) -> Counts:
    return Counts(requests=requests, errors=errors, failures=failures,
                  buckets=hist(**at) if at else (0,) * N, epoch=epoch)


# -- windows -------------------------------------------------------------------------------


def test_a_window_is_after_minus_before_in_one_epoch():
    w = gates.window(counts(100, 2, 1, b10=100), counts(150, 5, 1, b10=140, b25=10), 10.0)
    assert (w.requests, w.errors, w.failures, w.reset) == (50, 3, 0, False)
    assert w.buckets == hist(b10=40, b25=10)
    assert w.rate == 5.0


def test_a_new_epoch_is_after_alone():
    w = gates.window(counts(1000, 50, epoch="e1"), counts(20, 1, epoch="e2"), 5.0)
    assert (w.requests, w.errors, w.reset) == (20, 1, True)


def test_counts_that_went_down_started_again():
    w = gates.window(counts(1000, epoch="e1"), counts(7, epoch="e1"), 5.0)
    assert (w.requests, w.reset) == (7, True)


def test_no_reading_before_is_after_alone_without_a_reset():
    w = gates.window(None, counts(9), 1.0)
    assert (w.requests, w.reset) == (9, False)


# -- figures ---------------------------------------------------------------------------------


def test_error_rate_counts_5xx_and_failed_tries():
    assert Window(requests=200, errors=3, failures=1).error_rate == 2.0
    assert Window(requests=0, failures=4).error_rate == 100.0
    assert Window().error_rate == 0.0
    assert Window(requests=10, failures=4).tries == 14


def test_percentiles_from_the_histogram():
    assert gates.percentile((0,) * N, 0.5) is None
    # 100 requests in the bucket (5, 10]: linear inside it
    assert gates.percentile(hist(b10=100), 0.5) == pytest.approx(7.5)
    assert gates.percentile(hist(b10=100), 0.99) == pytest.approx(9.95)
    # 99 fast, 1 in (250, 500]: the p99 is still in the fast bucket, the p99.5 is not
    assert gates.percentile(hist(b5=99, b500=1), 0.99) == pytest.approx(5.0)
    assert 250 < gates.percentile(hist(b5=99, b500=1), 0.995) <= 500
    assert gates.percentile(hist(b5=1), 0.5) == pytest.approx(2.5)  # from 0 in the first one
    assert gates.percentile(hist(b5=50, over=50), 0.99) == math.inf


# -- verdicts --------------------------------------------------------------------------------


def judge(new: Window, old: Window | None, **limits: object) -> gates.Verdict:
    return gates.judge("api", "green", new, "blue" if old else None, old, Limits(**limits))


GOOD = Window(100, 0, 0, hist(b10=90, b25=10), 10.0)
OLD = Window(900, 0, 0, hist(b10=810, b25=90), 10.0)


def test_a_healthy_new_color_passes_with_one_line_of_figures():
    v = judge(GOOD, OLD, max_error_rate=1.0, max_latency_ratio=1.5, min_requests=50)
    assert v.ok and not v.reasons and not v.notes
    assert v.text == ("api: green 100 req 10.0/s err 0.0% p50 7.8ms p99 24ms | "
                      "blue 900 req 90.0/s err 0.0% p50 7.8ms p99 24ms")


def test_an_error_rate_above_the_limit_fails():
    v = judge(Window(100, 4, 1, hist(b10=100), 10.0), OLD, max_error_rate=1.0)
    assert not v.ok and v.reasons == ("error rate 5.00% of green above --max-error-rate 1%",)
    assert "err 5.0%" in v.text


def test_the_error_rate_is_absolute_even_when_the_old_color_fails_too():
    v = judge(Window(100, 2, 0, hist(b10=100), 10.0), Window(100, 5, 0, hist(b10=100), 10.0),
              max_error_rate=1.0)
    assert not v.ok


def test_a_p99_above_the_ratio_fails():
    slow = Window(100, 0, 0, hist(b10=50, b500=50), 10.0)
    v = judge(slow, OLD, max_latency_ratio=1.5)
    assert not v.ok and "above --max-latency-ratio 1.5" in v.reasons[0]
    assert "p99 495ms of green is 21.06 times blue's 24ms" in v.reasons[0]


def test_the_ratio_is_skipped_with_a_note_when_the_old_color_saw_too_little():
    slow = Window(100, 0, 0, hist(b500=100), 10.0)
    v = judge(slow, Window(3, 0, 0, hist(b10=3), 10.0), max_latency_ratio=1.5, min_requests=10)
    assert v.ok and v.notes == ("latency ratio not checked: 3 requests to blue, fewer than "
                                "--min-requests 10",)
    assert judge(slow, None, max_latency_ratio=1.5).notes[0].startswith(
        "latency ratio not checked: 0 requests to no old color")


def test_too_few_requests_is_short_and_fails():
    v = judge(Window(4, 0, 0, hist(b10=4), 10.0), OLD, min_requests=10, max_error_rate=1.0)
    assert not v.ok and v.short
    assert v.reasons == ("4 requests to green, fewer than --min-requests 10",)


def test_an_unbounded_p99_fails_against_a_bounded_one():
    v = judge(Window(100, 0, 0, hist(over=100), 10.0), OLD, max_latency_ratio=2.0)
    assert not v.ok and ">10000ms" in v.text


# -- a step's gate -------------------------------------------------------------------------


class Proxy:
    """Figures that grow by ``per_read`` at each reading (after ``quiet`` quiet readings)."""

    def __init__(self, per_read: dict[str, Counts], quiet: int = 0) -> None:
        self.per_read, self.quiet, self.reads = per_read, quiet, 0
        self.now: dict[str, Counts] = {c: counts() for c in per_read}

    def read(self, services: list[str]) -> dict[str, dict[str, Counts]]:
        if self.reads > self.quiet:
            self.now = {c: Counts(n.requests + d.requests, n.errors + d.errors,
                                  n.failures + d.failures,
                                  tuple(a + b for a, b in zip(n.buckets, d.buckets, strict=True)), n.epoch)
                        for (c, n), d in zip(self.now.items(), self.per_read.values(), strict=True)}
        self.reads += 1
        return {s: dict(self.now) for s in services}


class Clock:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def watch(proxy: Proxy, limits: Limits, wait: float = 10.0) -> tuple[bool, str, list[str], Clock]:
    said: list[str] = []
    clock = Clock()
    ok, text = gates.watch(proxy.read, {"api": ("green", "blue")}, limits, wait, 10, said.append,
                           sleep=clock.sleep, clock=clock)
    return ok, text, said, clock


def test_a_step_passes_and_prints_one_line():
    proxy = Proxy({"green": counts(50, b10=50), "blue": counts(450, b10=450)})
    ok, _, said, clock = watch(proxy, Limits(max_error_rate=1.0, min_requests=20))
    assert ok and clock.slept == [10.0] and proxy.reads == 2
    assert said == ["gate at 10% over 10.0s: api: green 50 req 5.0/s err 0.0% p50 7.5ms "
                    "p99 9.9ms | blue 450 req 45.0/s err 0.0% p50 7.5ms p99 9.9ms: passed"]


def test_a_breach_fails_with_the_figures_in_the_message():
    proxy = Proxy({"green": counts(100, 6, b10=100), "blue": counts(900, b10=900)})
    ok, text, said, _ = watch(proxy, Limits(max_error_rate=1.0))
    assert not ok and said[0].endswith(": FAILED")
    assert text.startswith("gate at 10% over 10.0s: api: green 100 req 10.0/s err 6.0%")
    assert text.endswith("error rate 6.00% of green above --max-error-rate 1%")


def test_too_few_requests_waits_up_to_min_requests_wait_then_fails():
    proxy = Proxy({"green": counts(1, b10=1), "blue": counts(9, b10=9)})
    ok, text, _, clock = watch(proxy, Limits(min_requests=100, min_requests_wait=3.0))
    assert not ok and "fewer than --min-requests 100" in text
    assert clock.slept == [10.0, 1.0, 1.0, 1.0] and proxy.reads == 5


def test_too_few_requests_passes_once_traffic_comes_within_the_wait():
    proxy = Proxy({"green": counts(40, b10=40), "blue": counts(360, b10=360)}, quiet=1)
    ok, text, _, clock = watch(proxy, Limits(min_requests=30, min_requests_wait=60.0))
    assert ok and clock.slept == [10.0, 1.0] and "green 40 req" in text


def test_without_min_requests_wait_too_few_fails_at_once():
    proxy = Proxy({"green": counts(0), "blue": counts(0)})
    ok, _, _, clock = watch(proxy, Limits(min_requests=1))
    assert not ok and clock.slept == [10.0]


# -- Prometheus ----------------------------------------------------------------------------


@pytest.fixture
def prometheus() -> Iterator[tuple[str, dict[str, object]]]:
    """A stand-in answering /api/v1/query with ``answer['body']`` (status ``answer['status']``)
    and keeping the query it got."""
    answer: dict[str, object] = {"status": 200, "body": {}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer["path"] = self.path
            data = json.dumps(answer["body"]).encode()
            self.send_response(int(answer["status"]))  # type: ignore[call-overload]
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer
    finally:
        server.shutdown()
        server.server_close()


def vector(*values: str) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)]}}


def test_a_query_passes_when_every_sample_is_non_zero(prometheus):
    url, answer = prometheus
    answer["body"] = vector("1", "0.5")
    assert gates.prometheus(url, 'rate(x{job="a b"}[1m]) < bool 0.01') == (
        True, "--gate-query: 2 samples, none zero")
    assert answer["path"] == ("/api/v1/query?query=rate%28x%7Bjob%3D%22a%20b%22%7D%5B1m%5D%29"
                              "%20%3C%20bool%200.01")


@pytest.mark.parametrize(("status", "body", "why"), [
    (200, vector("1", "0"), "1 of 2 samples are zero"),
    (200, vector(), "empty result"),
    (200, vector("NaN"), "1 of 1 samples are zero"),
    (200, {"status": "error", "error": "parse error", "data": {"result": []}}, "parse error"),
    (200, {"nothing": 1}, "not a query answer"),
    (503, {}, "answered 503"),
])
def test_a_query_fails(prometheus, status, body, why):
    url, answer = prometheus
    answer.update(status=status, body=body)
    ok, text = gates.prometheus(url, "up")
    assert not ok and why in text


def test_a_scalar_answer_counts_as_one_sample(prometheus):
    url, answer = prometheus
    answer["body"] = {"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}
    assert gates.prometheus(url, "scalar(up)")[0]


def test_a_prometheus_that_cannot_be_reached_fails_the_step():
    from bluegreen_dev.sandbox import free_port

    ok, text = gates.prometheus(f"http://127.0.0.1:{free_port()}", "up")
    assert not ok and "cannot be reached" in text


def test_the_query_runs_after_the_figures_passed(prometheus):
    url, answer = prometheus
    answer["body"] = vector("0")
    proxy = Proxy({"green": counts(50, b10=50), "blue": counts(450, b10=450)})
    ok, text, said, _ = watch(proxy, Limits(query="up", prometheus_url=url))
    assert not ok and text.endswith("--gate-query 'up': 1 of 1 samples are zero")
    assert said[0].endswith(": FAILED")


# -- the edge --------------------------------------------------------------------------------


def release_options(*args: str) -> object:
    return commands._release_options(options.resolve(options.parse(list(args)), env={}))


DYNAMIC = ("--nginx-mode", "dynamic", "--steps", "10,100", "--step-wait", "5")


def test_gates_reach_the_release_options():
    ropts = release_options("run", "s", *DYNAMIC, "--max-error-rate", "1.5",
                            "--max-latency-ratio", "2", "--min-requests", "10",
                            "--min-requests-wait", "30", "--gate-query", "up == 1",
                            "--prometheus-url", "http://127.0.0.1:9090/prom/", "--sticky")
    assert ropts.gates == Limits(1.5, 2.0, 10, 30.0, "up == 1", "http://127.0.0.1:9090/prom")
    assert ropts.sticky and ropts.gates.active
    assert not release_options("run", "s").gates.active


@pytest.mark.parametrize(("args", "error"), [
    (("--max-error-rate", "1", "--steps", "10,100", "--step-wait", "5"),
     "they need --nginx-mode dynamic"),
    (("--min-requests", "5", "--nginx-mode", "dynamic", "--steps", "10,100"),
     "give --step-wait > 0"),
    (("--max-error-rate", "1", "--nginx-mode", "dynamic", "--step-wait", "5"),
     "give --steps, e.g. 10,50,100"),
    ((*DYNAMIC, "--max-error-rate", "101"), "invalid --max-error-rate '101'"),
    ((*DYNAMIC, "--max-error-rate", "-1"), "invalid --max-error-rate '-1'"),
    ((*DYNAMIC, "--max-error-rate", "nan"), "invalid --max-error-rate 'nan'"),
    ((*DYNAMIC, "--max-error-rate", "x"), "invalid --max-error-rate 'x': use a number"),
    ((*DYNAMIC, "--max-latency-ratio", "0"), "invalid --max-latency-ratio '0'"),
    ((*DYNAMIC, "--min-requests", "1.5"), "invalid --min-requests '1.5'"),
    ((*DYNAMIC, "--min-requests-wait", "9"), "--min-requests-wait goes with --min-requests"),
    ((*DYNAMIC, "--gate-query", "up"), "--gate-query and --prometheus-url go together"),
    ((*DYNAMIC, "--prometheus-url", "http://p:9090"), "go together"),
    ((*DYNAMIC, "--gate-query", "up\n", "--prometheus-url", "http://p:9090"),
     "invalid --gate-query"),
    ((*DYNAMIC, "--gate-query", "up", "--prometheus-url", "ftp://p"), "invalid --prometheus-url"),
    ((*DYNAMIC, "--gate-query", "up", "--prometheus-url", "http://p/x?y=1"),
     "invalid --prometheus-url"),
    (("--proxy", "a=dynamic", "--proxy", "b=local", "--max-error-rate", "1", "--steps", "10,100",
      "--step-wait", "5"), "they need --nginx-mode dynamic"),
])
def test_gates_that_cannot_work_are_refused_at_the_edge(args, error):
    with pytest.raises(UsageError, match=None) as info:
        release_options("run", "s", *args)
    assert error in str(info.value)


def test_dynamic_proxies_given_by_proxy_pass():
    ropts = release_options("run", "s", "--proxy", "a=dynamic,control=127.0.0.1:1", "--proxy",
                            "b=dynamic", "--max-error-rate", "1", "--steps", "10,100",
                            "--step-wait", "5")
    assert ropts.gates.max_error_rate == 1.0


def test_a_resumed_release_keeps_its_steps():
    ropts = release_options("app", "resume", "shop", "--nginx-mode", "dynamic", "--step-wait",
                            "5", "--min-requests", "3")
    assert ropts.gates.min_requests == 3


def test_a_refusal_is_exit_2_before_anything_is_contacted():
    from bluegreen_dev.sandbox import free_port
    from tests.unit.test_cli import run

    code, out, err = run("run", "s", "--image", "x:1", "--max-error-rate", "1", "--steps",
                         "10,100", env={"CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"})
    assert code == 2 and out == "" and "they need --nginx-mode dynamic" in err
    code, _, err = run("status", "s", "--watch-count", "-3")
    assert code == 2


# -- live figures --------------------------------------------------------------------------


def test_live_figures_per_color_over_the_last_interval():
    before = {"api": {"blue": counts(100, b10=100), "green": counts(0)}}
    after = {"api": {"blue": counts(190, b10=190), "green": counts(10, 1, over=10)}}
    report = gates.live(before, after, 2.0, {"api": {"green": 10, "blue": 90}})
    assert report == {"api": {
        "blue": {"weight": 90, "requests": 90, "rate": 45.0, "error_rate": 0.0, "p50": 7.5,
                 "p99": 9.9, "reset": False},
        "green": {"weight": 10, "requests": 10, "rate": 5.0, "error_rate": 10.0,
                  "p50": ">10000", "p99": ">10000", "reset": False}}}
    assert gates.live_lines(report) == [
        "api: blue 90% 45.0 req/s err 0.0% p50 7.5ms p99 9.9ms | green 10% 5.0 req/s err 10.0% "
        "p50 >10000ms p99 >10000ms"]


def test_a_color_without_weight_or_traffic_is_left_out():
    quiet = {"api": {"blue": counts(5), "green": counts(0)}}
    report = gates.live(quiet, quiet, 1.0, {"api": {"blue": 100, "green": 0}})
    assert list(report["api"]) == ["blue"] and report["api"]["blue"]["p50"] is None
    assert gates.live_lines({"api": {}}) == ["api: no traffic"]
