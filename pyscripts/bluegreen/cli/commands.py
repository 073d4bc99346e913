"""One function per command: validate the inputs at the edge, build what is needed (through
``bluegreen.settings``), call the steps or the pipeline, print the result."""

from __future__ import annotations

from collections.abc import Callable

from bluegreen import model, settings, validate
from bluegreen.cli.output import emit
from bluegreen.errors import ExitStatus, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bluegreen.flow import checks
    from bluegreen.flow.records import Records
    from bluegreen.flow.release import Release, ReleaseOptions
    from bluegreen.flow.steps import Steps
    from bluegreen.flow.target import Target

# Quick commands start fast: the steps, the orchestrator and the client libraries are imported
# by the commands that use them.


def _steps(opts: dict[str, Any], runtime: bool = False, proxy: bool = False,
           lazy_runtime: bool = False, ping: bool = True) -> Steps:
    return settings.steps(opts, runtime, proxy, lazy_runtime, ping)


def _records(steps: Steps) -> Records:
    from bluegreen.flow.records import Records

    return Records(steps.registry, steps.say, steps.dry_run)


def _release(steps: Steps, target: Target, ropts: ReleaseOptions | None = None) -> Release:
    """The one orchestrator, for a service or an application."""
    from bluegreen.flow.release import Release, ReleaseOptions

    return Release(steps, _records(steps), target, ropts or ReleaseOptions())


def _service_release(opts: dict[str, Any], steps: Steps, **target: Any) -> Release:
    from bluegreen.flow.release import ReleaseOptions
    from bluegreen.flow.target import ServiceTarget

    return _release(steps, ServiceTarget(validate.service(opts["service"]), **target),
                    ReleaseOptions(keep_old=opts.get("keep_old") or 0.0,
                                   lock_wait=opts.get("lock_wait") or 0.0,
                                   proxy_url=validate.base_url(opts.get("proxy_url")
                                                               or "http://127.0.0.1")))


def _guard(steps: Steps, service: str) -> None:
    """A command that changes one service: refused for a service of an application (its
    application's commands change it) and while a run of it is unfinished (paused or
    interrupted: run --resume or recover ends it)."""
    from bluegreen.app.owner import refuse_outside
    from bluegreen.errors import OperationFailed

    records = _records(steps)
    refuse_outside(steps, records, service)
    inflight = records.get(service, "inflight")
    if inflight:
        state = f"paused after {inflight['paused_after']}" if inflight.get("paused_after") \
            else "in progress or was interrupted"
        raise OperationFailed(f"{service}: a run ({inflight.get('from') or '(none)'} -> "
                              f"{inflight.get('to')}, {inflight.get('image')}) is {state}; go on "
                              f"with run --resume, or undo it with recover")


def _locked_step(opts: dict[str, Any], steps: Steps, service: str) -> Any:
    """The service's lock for a single step (none on a dry run), after :func:`_guard`."""
    import contextlib

    from bluegreen.flow import behind

    _guard(steps, service)
    records = _records(steps)

    @contextlib.contextmanager
    def locked() -> Any:
        with records.lock(service, opts.get("lock_wait") or 0.0), \
                behind.watch(steps, records, service):  # proxies left behind brought in line
            yield

    return locked()


def _need(opts: dict[str, Any], name: str) -> Any:
    if opts.get(name) in (None, ""):
        raise UsageError(f"--{name.replace('_', '-')} is required")
    return opts[name]


def _env(opts: dict[str, Any]) -> dict[str, str]:
    return dict(validate.env_pair(item) for item in opts.get("env") or [])


def _tests(opts: dict[str, Any]) -> checks.TestSpec:
    from bluegreen.flow import checks

    return checks.TestSpec.build(cmd=opts.get("cmd"), http=opts.get("http") or [],
                                 expect_status=opts["expect_status"],
                                 body_regex=opts.get("expect_body"),
                                 timeout=opts["test_timeout"], retries=opts["retries"])


def _deploy_spec(opts: dict[str, Any]) -> model.DeploySpec:
    return model.DeploySpec(
        image=validate.image(_need(opts, "image")), port=validate.port(opts["port"]),
        env=_env(opts), scale=validate.scale(opts["scale"]),
        network=validate.network(opts["network"]) if opts.get("network") else None,
        health_path=validate.http_path(opts["health_path"]), pull=opts["pull"])


# -- commands -------------------------------------------------------------------------


def cmd_color(opts: dict[str, Any]) -> int:
    if opts["which"] == "next" and opts.get("current") is not None:
        # the book's getNextColor(currentColor): no service, no registry
        value = model.next_color(validate.color(opts["current"]) if opts["current"] else None)
        emit(opts, {"service": opts.get("service"), "next": value}, value)
        return ExitStatus.OK
    if not opts.get("service"):
        raise UsageError("SERVICE is required (or, for next, --current COLOR)")
    service = validate.service(opts["service"])
    current = settings.registry(opts).get_color(service)  # the read itself says if Consul answers
    if current is None:
        current = _proxy_color(opts, service)  # a registry that lost the record: the proxy knows
    value = current if opts["which"] == "current" else model.next_color(current)
    emit(opts, {"service": service, opts["which"]: value}, value or "")
    return ExitStatus.OK


def _proxy_color(opts: dict[str, Any], service: str) -> str | None:
    """The color the proxy routes to, read without reaching anything else."""
    return settings.proxy(opts).serving(service).color


def cmd_address(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    addrs = _steps(opts).address(service, color)
    emit(opts, addrs, "\n".join(addrs))
    return ExitStatus.OK if addrs else ExitStatus.FAILED


def cmd_deploy(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    spec = _deploy_spec(opts)
    steps = _steps(opts, runtime=True, proxy=True)
    with _locked_step(opts, steps, service):
        started = steps.deploy(service, color, spec)
    emit(opts, [{"name": c.name, "address": f"{c.address}:{c.port}"} for c in started],
         "\n".join(f"{c.name} {c.address}:{c.port}" for c in started))
    return ExitStatus.OK


def cmd_switch(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    weight = validate.weight(opts["weight"])
    steps = _steps(opts, runtime=opts["nginx_mode"] == "container", proxy=True)
    with _locked_step(opts, steps, service):
        changed = steps.switch(service, color, weight)
        if weight == 100 and not opts["dry_run"]:
            steps.verify_release(service, color)  # the operator routed users to it
    emit(opts, {"service": service, "color": color, "weight": weight, "changed": changed},
         f"{service} -> {color}" + (f" ({weight}%)" if weight != 100 else "")
         + (" (dry run: nothing changed)" if opts["dry_run"] else "" if changed else " (unchanged)"))
    return ExitStatus.OK


def cmd_stop(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    steps = _steps(opts, runtime=True, proxy=True)
    with _locked_step(opts, steps, service):
        stopped = steps.stop(service, color, force=bool(opts["force"]))
    emit(opts, stopped, "\n".join(stopped))
    return ExitStatus.OK


def _watch(opts: dict[str, Any], steps: Steps, services: list[str]) -> int:
    """The live figures of ``services`` (dynamic mode) every --watch-interval seconds over
    the last interval: one line per service, or one JSON object per refresh."""
    import json
    import time

    from bluegreen.flow import gates

    interval, count = opts["watch_interval"], opts["watch_count"]
    if interval <= 0:
        raise UsageError("invalid --watch-interval 0: use a number of seconds above 0")
    assert steps.proxy is not None
    before, start, done = steps.figures(services), time.monotonic(), 0
    while not count or done < count:
        time.sleep(interval)
        after, now = steps.figures(services), time.monotonic()
        weights = {}
        for service in services:
            serving = steps.proxy.serving(service)
            weights[service] = {} if serving.color is None else {
                serving.color: serving.weight, model.other_color(serving.color):
                    100 - serving.weight}
        report = gates.live(before, after, now - start, weights)
        if opts["json"]:
            print(json.dumps({"time": round(time.time(), 3), "seconds": round(now - start, 3),
                              "services": report}), flush=True)
        else:
            stamp = time.strftime("%H:%M:%S", time.gmtime())
            print("\n".join(f"{stamp} {line}" for line in gates.live_lines(report)), flush=True)
        before, start, done = after, now, done + 1
    return ExitStatus.OK


def cmd_status(opts: dict[str, Any]) -> int:
    """Everything that can be reached; exit 3 after the report when a part cannot."""
    from bluegreen.flow import gates

    service = validate.service(opts["service"])
    steps = _steps(opts, runtime=True, proxy=True, ping=False)
    if opts.get("watch"):
        return _watch(opts, steps, [service])
    report = steps.status(service)
    report["problems"] += _behind(steps, service)
    done = ExitStatus.UNREACHABLE if report["unreachable"] else \
        ExitStatus.FAILED if report["problems"] else ExitStatus.OK
    if opts["json"]:
        emit(opts, report)
        return done
    proxy = report.get("proxy") or {}
    print(f"service: {service}")
    print(f"recorded color: {report['recorded_color'] or '(none)'}")
    print(f"proxy routes to: {proxy.get('color') or '(nothing)'}"
          + (f" {proxy['weight']}%" if proxy.get("weight", 100) != 100 else "")
          + (f" [{', '.join(proxy.get('servers', []))}]" if proxy.get("servers") else ""))
    if (inflight := report.get("inflight")) and (gated := gates.shown(inflight)):
        print(f"the unfinished run goes on with: {gated}")
    for color, info in report["colors"].items():
        health = {i["id"]: i["status"] for i in info["instances"]}
        for c in info["containers"]:
            print(f"{color}: {c['name']} {c['state']} {c['image']} "
                  f"port={c['port'] or '-'} health={health.get(c['name'], 'unregistered')}")
        if not info["containers"]:
            print(f"{color}: no containers")
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}")
    for line in report["unreachable"]:
        print(f"UNREACHABLE: {line}")
    return done


def _behind(steps: Steps, target: str) -> list[str]:
    """The proxies recorded as left behind (``--partial``): problems of ``status``."""
    from bluegreen.errors import BlueGreenError
    from bluegreen.flow import behind

    try:
        return behind.problems(_records(steps), target)
    except BlueGreenError:
        return []  # the registry's own failure is reported by the status itself


def cmd_pre_test(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    spec = _outcome_or_tests(opts)
    steps = _steps(opts, runtime=True, proxy=True)
    _guard(steps, service)
    _service_release(opts, steps, pre=spec).pre_test(color)
    return ExitStatus.OK


def _outcome_or_tests(opts: dict[str, Any]) -> checks.TestSpec:
    from bluegreen.flow import checks

    if opts.get("outcome"):
        if opts.get("cmd") or opts.get("http"):
            raise UsageError("use --outcome or tests (--cmd, --http), not both")
        return checks.TestSpec.decided(opts["outcome"] == "passed")
    spec = _tests(opts)
    if spec.empty:
        raise UsageError("give --cmd, --http or --outcome")
    return spec


def cmd_post_test(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    nxt = validate.color(_need(opts, "next"))
    current = validate.color(opts["current"]) if opts.get("current") else None
    spec = _outcome_or_tests(opts)
    steps = _steps(opts, runtime=True, proxy=True)
    _guard(steps, service)
    _service_release(opts, steps, post=spec).post_test(current, nxt)
    return ExitStatus.OK


def _release_options(opts: dict[str, Any]) -> ReleaseOptions:
    """What every release takes from the command line (``run`` and ``app``)."""
    from bluegreen.flow.release import ReleaseOptions

    outcome = opts.get("outcome")
    if outcome and not opts.get("resume"):
        raise UsageError("--outcome goes with --resume (it is the result of the next test phase)")
    steps = opts.get("steps")
    weights = _weights("100" if steps is None else steps)
    preview = opts.get("preview_secret") or None
    if weights[0] == 0 and not (preview and _modes(opts) == {"dynamic"}):
        raise UsageError("a step at 0% reaches the new release by preview requests only: "
                             "it needs --nginx-mode dynamic and a preview secret "
                             "($BLUEGREEN_PREVIEW_SECRET)")
    if preview and opts["command_path"] in FINISHING:
        _preview_unused(opts)
    return ReleaseOptions(steps=weights, preview=preview,
                          step_wait=opts.get("step_wait") or 0.0,
                          confirm=bool(opts.get("confirm")), keep_old=opts.get("keep_old") or 0.0,
                          proxy_url=validate.base_url(opts.get("proxy_url") or "http://127.0.0.1"),
                          lock_wait=opts.get("lock_wait") or 0.0, until=opts.get("until"),
                          outcome=None if not outcome else outcome == "passed",
                          gates=_gates(opts, weights), sticky=bool(opts.get("sticky")),
                          dynamic=_modes(opts) == {"dynamic"}, given=_given(opts))


# the commands that start or continue a release's steps
FINISHING = ("run", "app deploy", "app resume", "app promote")


def _continuing(opts: dict[str, Any]) -> bool:
    """``run --resume``, ``app resume``, ``app promote``: a paused release goes on with the
    gates and step wait it recorded."""
    return bool(opts.get("resume")) or opts["command_path"] in ("app resume", "app promote")


def _given(opts: dict[str, Any]) -> dict[str, str]:
    """On a continued release: the gates, step wait and (``run --resume``) steps given on
    this command, each with where it came from; they override the release's record."""
    from bluegreen.cli.options import OPTIONS
    from bluegreen.flow.gates import FLAGS

    if not _continuing(opts):
        return {}
    given, path = opts.get("given") or {}, opts["command_path"]
    fields = {"gate_query": "query", **{f: f for f in (*FLAGS, "steps")}}
    return {fields[o.dest]: given[o.dest] for o in OPTIONS
            if o.dest in fields and o.dest in given and path in o.commands}


def _preview_unused(opts: dict[str, Any]) -> None:
    """A preview secret with proxies that have no preview (the reload modes): a warning, not
    a refusal. The secret is read from the environment or the config file only, so it is
    often set once for several jobs (a Jenkins folder's credentials, a shared bluegreen.toml),
    some of them in a reload mode; where a preview is needed (a 0% step) it is refused."""
    import sys

    specs = settings.proxy_specs(opts.get("proxy") or [])
    reload = [f"--proxy {name} ({mode})" for name, mode, _ in specs if mode != "dynamic"] \
        if specs else [] if opts.get("nginx_mode") == "dynamic" else \
        [f"--nginx-mode {opts.get('nginx_mode')}"]
    if reload:
        print(f"bluegreen: warning: the preview secret ($BLUEGREEN_PREVIEW_SECRET, "
              f"--preview-secret) is ignored by {', '.join(reload)}: the preview needs "
              f"--nginx-mode dynamic", file=sys.stderr, flush=True)


def _modes(opts: dict[str, Any]) -> set[str]:
    """The nginx modes of the proxies a command changes."""
    return {spec.partition("=")[2].partition(",")[0] for spec in opts.get("proxy") or []} \
        or {opts.get("nginx_mode")}


def _gates(opts: dict[str, Any], weights: tuple[int, ...]) -> Any:
    """The gates of a release's steps, refused at the edge when they cannot work: they need
    the dynamic nginx's figures, a window (--step-wait) and, for a new release, a step below
    100. A continued release is checked again with the gates it recorded (the release does)."""
    from bluegreen.flow import gates

    query, url = opts.get("gate_query"), opts.get("prometheus_url")
    limits = gates.Limits(
        max_error_rate=opts.get("max_error_rate"),
        max_latency_ratio=opts.get("max_latency_ratio"),
        min_requests=opts.get("min_requests") or 0,
        min_requests_wait=opts.get("min_requests_wait") or 0.0,
        query=validate.text(query, "--gate-query") if query else None,
        prometheus_url=validate.prefix_url(url, "--prometheus-url") if url else None)
    dynamic = _modes(opts) == {"dynamic"}
    if _continuing(opts):  # the rest with the record's: a query's URL, the step wait
        gates.refuse(limits, 0.0, dynamic, mode_only=True)
        return limits
    gates.refuse(limits, opts.get("step_wait") or 0.0, dynamic)
    if limits.active and opts["command_path"] in ("run", "app deploy") and len(weights) < 2:
        raise UsageError("gates judge the steps below 100: give --steps, e.g. 10,50,100")
    return limits


def cmd_run(opts: dict[str, Any]) -> int:
    from bluegreen.flow.target import ServiceTarget

    service = validate.service(opts["service"])
    resume = bool(opts.get("resume"))
    ropts = _release_options(opts)
    tests = _tests(opts)
    # resuming: the paused run's image (its deploy phase is behind it)
    spec = None if resume and not opts.get("image") else _deploy_spec(opts)
    steps = _steps(opts, runtime=True, proxy=True)
    _refuse_app_service(steps, service)
    target = ServiceTarget(service, spec, pre=tests, post=tests)
    release = _release(steps, target, ropts)
    if resume:
        summary = release.resume()
    else:
        assert spec is not None
        summary = release.start(lambda: ([target.unit(steps.live_color(service), spec.image)],
                                         {}))
    plain = {"ok": f"{service}: {summary.get('to')} is live",
             "paused": f"{service}: {summary.get('to')} paused after {summary.get('paused_after')}",
             }.get(summary["result"], f"{service}: dry run, nothing changed")
    emit(opts, summary | {"stages": model.stages()}, plain)  # blueGreenDeploy's stages
    return ExitStatus.OK


def _refuse_app_service(steps: Steps, service: str) -> None:
    from bluegreen.app.owner import refuse_outside

    refuse_outside(steps, _records(steps), service)


def cmd_rollback(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    steps = _steps(opts, runtime=True, proxy=True, lazy_runtime=True)
    _refuse_app_service(steps, service)
    summary = _service_release(opts, steps).rollback(bool(opts["stop"]))
    emit(opts, summary, f"{service}: {summary['to']} is live")
    return ExitStatus.OK


def cmd_history(opts: dict[str, Any]) -> int:
    import time

    service = validate.service(opts["service"])
    items = _records(_steps(opts)).history(service)
    if opts["json"]:
        emit(opts, items)
        return ExitStatus.OK
    for e in items:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("start") or 0))
        took = (e.get("end") or 0) - (e.get("start") or 0)
        line = (f"{when} {e.get('action')} {e.get('from') or '-'} -> {e.get('to') or '-'} "
                f"{e.get('result')} {took:.1f}s {e.get('image') or ''} by {e.get('by', '?')}")
        if e.get("failed_phase"):
            line += f" (failed in {e['failed_phase']}: {e.get('error') or ''})"
        print(line.rstrip())
    return ExitStatus.OK


def cmd_record(opts: dict[str, Any]) -> int:
    import time

    service = validate.service(opts["service"])
    for key in ("from_color", "to_color"):
        if opts.get(key):
            validate.color(opts[key])
    image = validate.image(opts["image"]) if opts.get("image") else None
    phase = opts.get("failed_phase") or None
    if phase and phase not in (*model.PHASES, "gate", "build", "test"):
        raise UsageError(f"invalid --failed-phase {phase!r}")
    entry = {"action": opts["action"], "image": image, "from": opts.get("from_color") or None,
             "to": opts.get("to_color") or None, "result": opts["result"], "failed_phase": phase,
             "start": opts.get("start") or time.time(), "end": time.time()}
    if not opts["dry_run"]:
        _records(_steps(opts)).add_history(service, entry)
    emit(opts, entry, "")
    return ExitStatus.OK


def cmd_recover(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    steps = _steps(opts, runtime=True, proxy=True)
    _refuse_app_service(steps, service)
    release = _service_release(opts, steps)
    with release.locked():
        actions = [*release.caught_up, *release.recover()]
    emit(opts, actions, "\n".join(actions) or "nothing to recover")
    return ExitStatus.OK


def cmd_app_check(opts: dict[str, Any]) -> int:
    from bluegreen.app import spec

    return spec.cmd_app_check(opts)


def _app(opts: dict[str, Any], name: str, spec: Any = None) -> tuple[Release, Any]:
    """The orchestrator for an application (``spec``: its file, to deploy)."""
    from bluegreen.app.target import AppTarget

    listen = settings.internal_listen(opts)
    target = AppTarget(name, spec, internal_addr=listen.rpartition(":")[0])
    ropts = _release_options(opts)  # at the edge, before anything is contacted
    return _release(_steps(opts, runtime=True, proxy=True), target, ropts), target


def _weights(text: str) -> tuple[int, ...]:
    """``--steps``: increasing weights from 0 (a preview step: only preview requests reach
    the new release) to 100, ending at 100."""
    import itertools

    try:
        weights = tuple(validate.weight(w) for w in str(text).split(","))
    except UsageError:
        raise UsageError(f"invalid --steps {text!r}: use weights like 10,50,100") from None
    if weights[-1] != 100 or any(b <= a for a, b in itertools.pairwise(weights)):
        raise UsageError(f"invalid --steps {text!r}: increasing weights ending at 100")
    return weights


def _app_summary(opts: dict[str, Any], summary: dict[str, Any], outcome: str = "") -> int:
    name, release = summary["app"], summary.get("release")
    plain = {"ok": f"{name}: release {release} is live",
             "paused": f"{name}: release {release} paused at {summary.get('weight')}%"
                       + (f" after {summary['paused_after']}"
                          if summary.get("paused_after") not in (None, "switch") else ""),
             "unchanged": f"{name}: nothing changed",
             "aborted": f"{name}: release {release} undone"}.get(
                 summary["result"], f"{name}: dry run, nothing changed" if not outcome else
                 f"{name}: release {release} would be {outcome} (dry run, nothing changed)")
    emit(opts, summary, plain)
    return ExitStatus.OK


def cmd_app_deploy(opts: dict[str, Any]) -> int:
    from bluegreen.app import spec

    app_spec = spec.load(opts["file"])
    release, target = _app(opts, app_spec.name, app_spec)
    summary = release.start(lambda: target.plan(release))
    if summary["result"] == "unchanged":
        summary["release"] -= 1
    return _app_summary(opts, summary)


def _app_name(opts: dict[str, Any]) -> str:
    from bluegreen.app import spec

    return validate.matching(spec._APP_RE, opts["app"], "application name")


def cmd_app_action(opts: dict[str, Any]) -> int:
    """app promote | resume | abort | rollback | recover."""
    action = opts["command_path"].split()[1]
    name = _app_name(opts)  # at the edge, before anything is contacted
    release, _ = _app(opts, name)
    if action == "promote" and opts.get("until"):
        raise UsageError("app promote goes to the end: use app resume --until PHASE")
    if action in ("promote", "resume"):
        summary = release.resume()
    elif action == "abort":
        summary = release.abort()
    elif action == "rollback":
        summary = release.rollback()
    else:
        with release.locked():
            actions = [*release.caught_up, *release.recover()]
        emit(opts, actions, "\n".join(actions) or "nothing to recover")
        return ExitStatus.OK
    if opts["dry_run"]:
        summary["result"] = "dry-run"
    outcome = {"promote": "live", "resume": "resumed", "abort": "undone",
               "rollback": "live again"}[action]
    if action == "rollback" and summary["result"] == "ok":
        emit(opts, summary, f"{name}: release {summary['release']} is live again")
        return ExitStatus.OK
    return _app_summary(opts, summary, outcome)


def cmd_app_status(opts: dict[str, Any]) -> int:
    """Every disagreement between the records and reality is a problem: exit 1."""
    from bluegreen.flow import gates

    name = _app_name(opts)  # at the edge, before anything is contacted
    release, target = _app(opts, name)
    report = target.status(release)
    if opts.get("watch"):
        return _watch(opts, release.steps, [target.qualified(n) for n, e in
                                            report["services"].items() if e["kind"] != "worker"])
    report["problems"] += _behind(release.steps, target.name)
    done = ExitStatus.FAILED if report["problems"] else ExitStatus.OK
    if opts["json"]:
        emit(opts, report)
        return done
    print(f"application: {report['app']}, live release {report['live_release']}")
    if report["inflight"]:
        i = report["inflight"]
        print(f"unfinished release {i['release']}: {i['state']} at {i['weight']}%"
              + (f" (paused after {i['paused_after']})" if i.get("paused_after") else ""))
        if gated := gates.shown(i):
            print(f"it goes on with: {gated}")
    for name, e in report["services"].items():
        moving = f" moving {e['moving']['from'] or '-'} -> {e['moving']['to']}" \
            if e.get("moving") else ""
        moving += " (removed at promotion)" if e.get("removing") else ""
        if e["kind"] == "worker":
            print(f"{name}: worker (swapped at promotion, not blue-green), live "
                  f"{e['live_color'] or '-'}{moving}, running "
                  f"{','.join(c for c, up in e['running'].items() if up) or 'none'}")
            continue
        chains = "".join(f", {side} callers on {color}" for side, color in e["proxy_chains"].items())
        print(f"{name}: live {e['live_color'] or '-'}, proxy {e['proxy_color'] or '-'}"
              f" {e['proxy_weight']}%{moving}{chains}, healthy "
              f"{','.join(c for c, ok in e['healthy'].items() if ok) or 'none'}")
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}")
    return done


def cmd_app_history(opts: dict[str, Any]) -> int:
    import time

    from bluegreen.app.owner import records_of

    name = _app_name(opts)  # at the edge, before anything is contacted
    items = _records(_steps(opts)).history(records_of(name))
    if opts["json"]:
        emit(opts, items)
        return ExitStatus.OK
    for e in items:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("start") or 0))
        moved = ", ".join(f"{n} {c}" for n, c in (e.get("changed") or {}).items())
        print(f"{when} {e.get('action')} release {e.get('release')} {e.get('result')} at "
              f"{e.get('weight')}%: {moved} by {e.get('by', '?')}"
              + (f" ({e['error']})" if e.get("error") else ""))
    return ExitStatus.OK


def cmd_consul_policy(opts: dict[str, Any]) -> int:
    services, app = opts.get("services") or [], opts.get("policy_app")
    if not services and not app:
        raise UsageError("name at least one SERVICE or --app APP")
    if app:
        app = _app_name({"app": app})
    rules, hcl = settings.consul_policy(opts["kv_prefix"], services, app)
    emit(opts, {"policy": hcl, "rules": [{"resource": k, "name": n, "policy": p}
                                         for k, n, p in rules]}, hcl.rstrip("\n"))
    return ExitStatus.OK


def cmd_jenkins(opts: dict[str, Any]) -> int:
    from bluegreen.jenkins import jobs

    return jobs.dispatch(opts)


COMMANDS: dict[str, Callable[[dict[str, Any]], int]] = {
    "color": cmd_color, "address": cmd_address, "deploy": cmd_deploy, "switch": cmd_switch,
    "stop": cmd_stop, "status": cmd_status, "pre-test": cmd_pre_test,
    "post-test": cmd_post_test, "run": cmd_run, "rollback": cmd_rollback,
    "history": cmd_history, "recover": cmd_recover, "record": cmd_record,
    "app check": cmd_app_check, "app deploy": cmd_app_deploy, "app promote": cmd_app_action,
    "app resume": cmd_app_action, "app abort": cmd_app_action, "app rollback": cmd_app_action,
    "app recover": cmd_app_action, "app status": cmd_app_status,
    "app history": cmd_app_history,
    "jenkins job": cmd_jenkins, "jenkins index": cmd_jenkins,
    "jenkins build": cmd_jenkins, "consul policy": cmd_consul_policy,
}


def dispatch(opts: dict[str, Any]) -> int:
    return COMMANDS[opts["command_path"]](opts)
