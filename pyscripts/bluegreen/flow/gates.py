"""Steps gated by the proxy's own figures: the new color against the old one over one window.

Pure logic but for :func:`prometheus` (one GET through ``bluegreen.wire``) and :func:`watch`,
which reads the figures through a function it is given. The proxy counts, per service and
color, cumulative :class:`~bluegreen.model.Counts` since an *epoch* (nginx's counters start
again from zero when it restarts): a window is ``after - before`` in one epoch, or ``after``
alone when the epoch changed.

- error rate: ``(errors + failures) / requests`` in percent (100 when nothing was served but
  tries failed); the *tries* of a color are ``requests + failures``;
- p50 / p99: from the latency histogram (``model.LATENCY_BOUNDS_MS``), linear inside a bucket
  as Prometheus' ``histogram_quantile`` does; infinite in the bucket above the last bound;
- a verdict: ``--max-error-rate`` (absolute, percent), ``--max-latency-ratio`` (p99 new / p99
  old; skipped with a note when the old color had fewer than ``--min-requests`` in the
  window), ``--min-requests`` (tries of the new color; below it the step waits up to
  ``--min-requests-wait`` more seconds, reading again, then fails).
"""

from __future__ import annotations

import time

from bluegreen import interrupts
from bluegreen.record import Record

INF = float("inf")  # a latency above the last bound (math costs the switch path an import)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from bluegreen.model import Counts

    Figures = Mapping[str, Mapping[str, Counts]]  # service -> color -> cumulative counts


class Window(Record, frozen=True):
    """What one color served between two readings."""

    requests: int = 0
    errors: int = 0
    failures: int = 0
    buckets: tuple[int, ...] = ()
    seconds: float = 0.0
    reset: bool = False  # the epoch changed: ``after`` alone (counted since nginx restarted)

    @property
    def tries(self) -> int:
        return self.requests + self.failures

    @property
    def error_rate(self) -> float:
        """Percent of requests answered 5xx or whose try failed."""
        bad = self.errors + self.failures
        if not self.requests:
            return 100.0 if bad else 0.0
        return min(100.0, 100.0 * bad / self.requests)

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0-1) of the latency in ms; None without requests."""
        return percentile(self.buckets, q)


def _bounds() -> tuple[int, ...]:
    from bluegreen.model import LATENCY_BOUNDS_MS

    return LATENCY_BOUNDS_MS


def percentile(buckets: Sequence[int], q: float, bounds: Sequence[int] | None = None
               ) -> float | None:
    """The ``q`` quantile (0-1) of a histogram (counts per bucket, the last one above the last
    bound) in ms: linear inside its bucket (from 0 for the first); ``inf`` in the last one."""
    bounds = _bounds() if bounds is None else bounds
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return INF
            low = bounds[i - 1] if i else 0
            return low + (bounds[i] - low) * max(rank - seen, 0) / count
        seen += count
    return INF


def window(before: Counts | None, after: Counts, seconds: float) -> Window:
    """``after - before`` in one epoch; ``after`` alone when the epoch changed (or the counts
    went down: counters started again)."""
    size = max(len(after.buckets), len(before.buckets) if before else 0)
    post = tuple(after.buckets) + (0,) * (size - len(after.buckets))
    if before is not None and before.epoch == after.epoch:
        pre = tuple(before.buckets) + (0,) * (size - len(before.buckets))
        diff = (after.requests - before.requests, after.errors - before.errors,
                after.failures - before.failures, *(a - b for a, b in zip(post, pre, strict=True)))
        if min(diff, default=0) >= 0:
            return Window(diff[0], diff[1], diff[2], tuple(diff[3:]), seconds)
    return Window(after.requests, after.errors, after.failures, post, seconds,
                  reset=before is not None)


class Limits(Record, frozen=True):
    """The gates of a release's steps (none given: no gate)."""

    max_error_rate: float | None = None  # percent, absolute
    max_latency_ratio: float | None = None  # p99 new / p99 old
    min_requests: int = 0  # tries of the new color in the window
    min_requests_wait: float = 0.0  # seconds a step may wait beyond the step wait
    query: str | None = None  # a Prometheus query, passing when every sample is non-zero
    prometheus_url: str | None = None

    @property
    def active(self) -> bool:
        return (self.max_error_rate is not None or self.max_latency_ratio is not None
                or self.min_requests > 0 or self.query is not None)


class Verdict(Record, frozen=True):
    """One service's gate over one window. ``short``: too few requests (a wait may help)."""

    service: str
    ok: bool
    text: str  # one line of figures
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    short: bool = False


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value == INF:
        return f">{_bounds()[-1]}ms"
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def figures(color: str, w: Window) -> str:
    """``green 52 req 5.2/s err 1.9% p50 12ms p99 48ms``."""
    reset = " (counters restarted)" if w.reset else ""
    return (f"{color} {w.requests} req {w.rate:.1f}/s err {w.error_rate:.1f}% "
            f"p50 {_ms(w.percentile(0.5))} p99 {_ms(w.percentile(0.99))}{reset}")


def judge(service: str, new_color: str, new: Window, old_color: str | None,
          old: Window | None, limits: Limits) -> Verdict:
    """The new color against the old one over the same window."""
    text = f"{service}: {figures(new_color, new)}"
    if old_color is not None and old is not None:
        text += f" | {figures(old_color, old)}"
    reasons: list[str] = []
    notes: list[str] = []
    if new.tries < limits.min_requests:
        reasons.append(f"{new.tries} requests to {new_color}, fewer than --min-requests "
                       f"{limits.min_requests}")
        return Verdict(service, False, text, tuple(reasons), short=True)
    if limits.max_error_rate is not None and new.error_rate > limits.max_error_rate:
        reasons.append(f"error rate {new.error_rate:.2f}% of {new_color} above "
                       f"--max-error-rate {limits.max_error_rate:g}%")
    if limits.max_latency_ratio is not None:
        p_new, p_old = new.percentile(0.99), old.percentile(0.99) if old else None
        if old is None or old_color is None or old.tries < max(limits.min_requests, 1) \
                or p_old is None:
            notes.append(f"latency ratio not checked: {old.tries if old else 0} requests to "
                         f"{old_color or 'no old color'}, fewer than --min-requests "
                         f"{max(limits.min_requests, 1)}")
        elif p_new is not None:
            ratio = _ratio(p_new, p_old)
            if ratio > limits.max_latency_ratio:
                reasons.append(f"p99 {_ms(p_new)} of {new_color} is {ratio:.2f} times "
                               f"{old_color}'s {_ms(p_old)}, above --max-latency-ratio "
                               f"{limits.max_latency_ratio:g}")
    return Verdict(service, not reasons, text, tuple(reasons), tuple(notes))


def _ratio(new: float, old: float) -> float:
    if new == INF:
        return 1.0 if old == INF else INF
    if old == INF:
        return 0.0
    return new / old if old > 0 else (1.0 if new <= 0 else INF)


def judge_all(before: Figures, after: Figures, colors: Mapping[str, tuple[str, str | None]],
              seconds: float, limits: Limits) -> list[Verdict]:
    """Every moving service (``colors``: service -> (new color, old color or None)) judged
    over the window between two readings."""
    verdicts = []
    for service, (new_color, old_color) in colors.items():
        pre, post = before.get(service) or {}, after.get(service) or {}
        new = _window(pre, post, new_color, seconds)
        old = _window(pre, post, old_color, seconds) if old_color else None
        verdicts.append(judge(service, new_color, new, old_color, old, limits))
    return verdicts


def _window(pre: Mapping[str, Counts], post: Mapping[str, Counts], color: str,
            seconds: float) -> Window:
    """A color's window; a color the proxy has no counts of served nothing."""
    return window(pre.get(color), post.get(color) or pre.get(color) or _empty(), seconds)


def _empty() -> Counts:
    from bluegreen.model import Counts

    return Counts()


def line(weight: int, verdicts: Sequence[Verdict], seconds: float, what: str = "gate") -> str:
    """The one line of figures a step prints (and a breach's message carries); ``what``:
    "gate", or "figures" for a step without gates."""
    return f"{what} at {weight}% over {seconds:.1f}s: " + "; ".join(v.text for v in verdicts)


# -- live figures (status --watch) ----------------------------------------------------------


def live(before: Figures, after: Figures, seconds: float,
         weights: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Service -> color -> weight, requests, req/s, error rate, p50/p99 (ms; a string
    ``">10000"`` above the last bound, None without requests) over the window between two
    readings; colors with neither weight nor requests are left out."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for service, colors in after.items():
        pre = before.get(service) or {}
        out[service] = {}
        for color in sorted(colors):
            w = _window(pre, colors, color, seconds)
            weight = (weights.get(service) or {}).get(color, 0)
            if not weight and not w.tries:
                continue
            out[service][color] = {
                "weight": weight, "requests": w.requests, "rate": round(w.rate, 2),
                "error_rate": round(w.error_rate, 2), "p50": _json_ms(w.percentile(0.5)),
                "p99": _json_ms(w.percentile(0.99)), "reset": w.reset}
    return out


def _json_ms(value: float | None) -> float | str | None:
    if value is None:
        return None
    return f">{_bounds()[-1]}" if value == INF else round(value, 1)


def live_lines(report: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """One line per service: ``api: blue 90% 45.0 req/s err 0.0% p50 7.5ms p99 9.9ms | ...``."""
    def ms(value: Any) -> str:
        return "-" if value is None else f"{value}ms"

    return [f"{service}: " + (" | ".join(
        f"{color} {c['weight']}% {c['rate']:.1f} req/s err {c['error_rate']:.1f}% "
        f"p50 {ms(c['p50'])} p99 {ms(c['p99'])}" for color, c in colors.items())
        or "no traffic") for service, colors in report.items()]


# -- Prometheus ---------------------------------------------------------------------------


def prometheus(url: str, query: str, timeout: float = 10.0) -> tuple[bool, str]:
    """``GET <url>/api/v1/query?query=<query>``: passes when the result is not empty and
    every sample's value is non-zero (write the condition into the query, e.g.
    ``rate(errors[1m]) < bool 0.01``). Returns (passed, why); a Prometheus that cannot be
    reached or answers anything else does not pass."""
    import json

    from bluegreen import wire

    target = f"{url.rstrip('/')}/api/v1/query?{wire.query({'query': query})}"
    try:
        status, body = wire.get(target, timeout=timeout)
    except (OSError, ValueError) as exc:
        return False, f"Prometheus at {url} cannot be reached: {exc}"
    if status != 200:
        return False, f"Prometheus at {url} answered {status}: {body[:200]!r}"
    try:
        data = json.loads(body)
        result = data["data"]["result"]
        kind = data["data"].get("resultType")
    except (ValueError, KeyError, TypeError):
        return False, f"Prometheus at {url}: not a query answer: {body[:200]!r}"
    if data.get("status") != "success":
        return False, f"Prometheus at {url}: {data.get('error') or data.get('status')}"
    try:
        samples = [result[1]] if kind in ("scalar", "string") else \
            [s["value"][1] for s in result]
        values = [float(v) for v in samples]
    except (ValueError, KeyError, TypeError, IndexError):
        return False, f"Prometheus at {url}: unreadable samples in {body[:200]!r}"
    if not values:
        return False, f"--gate-query {query!r}: empty result"
    zero = sum(1 for v in values if v == 0 or v != v)
    if zero:
        return False, f"--gate-query {query!r}: {zero} of {len(values)} samples are zero"
    return True, f"--gate-query: {len(values)} samples, none zero"


# -- one step's gate ------------------------------------------------------------------------


def watch(read: Callable[[Sequence[str]], Figures],
          colors: Mapping[str, tuple[str, str | None]], limits: Limits, wait: float,
          weight: int, say: Callable[[str], Any],
          sleep: Callable[[float], Any] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> tuple[bool, str]:
    """One step's gate: read the figures, wait ``wait`` seconds, read again; while the new
    color of a service has too few requests, read again each second up to
    ``min_requests_wait`` more. Prints one line of figures. Returns (passed, the line and
    why it failed)."""
    services = list(colors)
    before = read(services)
    start = clock()
    interrupts.hold("gate:window")  # a test sends its traffic here
    sleep(wait)
    deadline = start + wait + limits.min_requests_wait
    while True:
        after = read(services)
        seconds = clock() - start
        verdicts = judge_all(before, after, colors, seconds, limits)
        left = deadline - clock()
        if not any(v.short for v in verdicts) or left <= 0:
            break
        interrupts.hold("gate:short")  # too few requests yet: a test sends them here
        sleep(min(1.0, left))
    text = line(weight, verdicts, seconds, "gate" if limits.active else "figures")
    failed = [r for v in verdicts for r in v.reasons]
    notes = [n for v in verdicts for n in v.notes]
    if not failed and limits.query:
        assert limits.prometheus_url is not None
        passed, why = prometheus(limits.prometheus_url, limits.query)
        notes.append(why)
        if not passed:
            failed.append(why)
    say(text + (f" [{'; '.join(notes)}]" if notes else "")
        + (": FAILED" if failed else ": passed" if limits.active else ""))
    if failed:
        return False, f"{text}: {'; '.join(failed)}"
    return True, text


# -- the release record: the gates a release goes on with ----------------------------------

# each field of Limits (and the step wait) and the option that gives it
FLAGS = {"step_wait": "--step-wait", "max_error_rate": "--max-error-rate",
         "max_latency_ratio": "--max-latency-ratio", "min_requests": "--min-requests",
         "min_requests_wait": "--min-requests-wait", "query": "--gate-query",
         "prometheus_url": "--prometheus-url"}


def to_record(limits: Limits) -> dict[str, Any]:
    """The gates that are set, as the release record keeps them (none: ``{}``). No secret
    is in them: a Prometheus URL with credentials is refused at the edge."""
    default = Limits()
    return {name: getattr(limits, name) for name in FLAGS if name != "step_wait"
            and getattr(limits, name) != getattr(default, name)}


def shown(inflight: Mapping[str, Any]) -> str:
    """The gates and step wait an unfinished release goes on with, as the options that set
    them (``--max-error-rate 1 --step-wait 30``); empty when it has none. A record that
    cannot be read says so."""
    from bluegreen.errors import OperationFailed

    try:
        limits, wait = from_record(inflight)
    except OperationFailed as exc:
        return str(exc)
    values = to_record(limits) | ({"step_wait": wait} if wait else {})
    return " ".join(f"{FLAGS[k]} {_shown(v)}" for k, v in values.items())


def from_record(inflight: Mapping[str, Any]) -> tuple[Limits, float]:
    """The gates and step wait a release record keeps, checked as the options are (a record
    written before they were recorded: none, and no wait)."""
    from bluegreen import validate
    from bluegreen.errors import OperationFailed, UsageError

    data, wait = inflight.get("gates") or {}, inflight.get("step_wait") or 0.0
    try:
        if not isinstance(data, dict) or set(data) - set(FLAGS) or "step_wait" in data:
            raise UsageError(f"unknown gates {sorted(data) if isinstance(data, dict) else data}")
        rate, ratio = data.get("max_error_rate"), data.get("max_latency_ratio")
        query, url = data.get("query"), data.get("prometheus_url")
        limits = Limits(
            max_error_rate=None if rate is None else validate.number(
                rate, "--max-error-rate", 0.0, 100.0),
            max_latency_ratio=None if ratio is None else validate.number(
                ratio, "--max-latency-ratio", 0.01, 1000.0),
            min_requests=validate.bounded_int(data.get("min_requests", 0), "--min-requests",
                                              0, 10**6),
            min_requests_wait=validate.seconds(data.get("min_requests_wait", 0.0),
                                               "--min-requests-wait"),
            query=None if query is None else validate.text(query, "--gate-query"),
            prometheus_url=None if url is None else validate.prefix_url(url, "--prometheus-url"))
        return limits, validate.seconds(wait, "--step-wait")
    except UsageError as exc:
        raise OperationFailed(f"the release record's gates cannot be read ({exc}): abort "
                              f"the release, or recover") from None


def continued(recorded: Limits, recorded_wait: float, given: Limits, given_wait: float,
              names: Mapping[str, str]) -> tuple[Limits, float, list[str]]:
    """What a continued release (``run --resume``, ``app resume|promote``) is gated by: its
    recorded gates and step wait, each option given on this command (``names``: field ->
    where it came from) in place of its recorded value. Returns them and what differs from
    the record (``--max-error-rate 5 in place of 1``)."""
    from bluegreen.record import asdict

    values = asdict(recorded) | {"step_wait": recorded_wait}
    new = asdict(given) | {"step_wait": given_wait}
    changed = []
    for name in FLAGS:
        if name in names and new[name] != values[name]:
            where = "" if names[name] == FLAGS[name] else f" (from {names[name]})"
            changed.append(f"{FLAGS[name]} {_shown(new[name])}{where} in place of "
                           f"{_shown(values[name])}")
            values[name] = new[name]
    if "query" in names and values["query"] is None and "prometheus_url" not in names:
        values["prometheus_url"] = None  # the query taken off: nothing asks its Prometheus
    wait = values.pop("step_wait")
    return Limits(**values), wait, changed


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else repr(value) \
        if isinstance(value, str) else str(value)


def refuse(limits: Limits, step_wait: float, dynamic: bool, recorded: bool = False,
           mode_only: bool = False) -> None:
    """Gates that cannot work, refused (exit 2): they need the dynamic nginx's figures and a
    window (``step_wait``); a query needs its Prometheus. ``recorded``: the gates a continued
    release goes on with (the record's, and the options given); ``mode_only``: the mode
    alone (a continued release's options, before its record is read)."""
    from bluegreen.errors import UsageError

    whose = "the release's gates (recorded when it started, or given)" if recorded else \
        "gates (--max-error-rate, --max-latency-ratio, --min-requests, --gate-query)"
    if limits.active and not dynamic:
        raise UsageError(f"{whose} read the proxy's figures: they need --nginx-mode dynamic")
    if mode_only:
        return
    if bool(limits.query) != bool(limits.prometheus_url):
        raise UsageError("--gate-query and --prometheus-url go together")
    if not limits.active:
        if limits.min_requests_wait:
            raise UsageError("--min-requests-wait goes with --min-requests")
        return
    if step_wait <= 0:
        raise UsageError(f"{whose} compare the colors over each step's window: give "
                         f"--step-wait > 0 (seconds)")
