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
    from bluegreen.flow.pipeline import Pipeline
    from bluegreen.flow.steps import Steps

# Quick commands start fast: the steps, the pipeline and the client libraries are imported
# by the commands that use them.


def _pipeline(steps: Steps) -> Pipeline:
    from bluegreen.flow.pipeline import Pipeline

    return Pipeline(steps)


def _steps(opts: dict[str, Any], runtime: bool = False, proxy: bool = False,
           lazy_runtime: bool = False, ping: bool = True) -> Steps:
    return settings.steps(opts, runtime, proxy, lazy_runtime, ping)


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
    started = _steps(opts, runtime=True, proxy=True).deploy(service, color, spec)
    emit(opts, [{"name": c.name, "address": f"{c.address}:{c.port}"} for c in started],
         "\n".join(f"{c.name} {c.address}:{c.port}" for c in started))
    return ExitStatus.OK


def cmd_switch(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    weight = validate.weight(opts["weight"])
    steps = _steps(opts, runtime=opts["nginx_mode"] == "container", proxy=True)
    steps.refuse_if_in_release(service)
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
    stopped = steps.stop(service, color, force=bool(opts["force"]))
    emit(opts, stopped, "\n".join(stopped))
    return ExitStatus.OK


def cmd_status(opts: dict[str, Any]) -> int:
    """Everything that can be reached; exit 3 after the report when a part cannot."""
    service = validate.service(opts["service"])
    steps = _steps(opts, runtime=True, proxy=True, ping=False)
    report = steps.status(service)
    done = ExitStatus.UNREACHABLE if report["unreachable"] else ExitStatus.OK
    if opts["json"]:
        emit(opts, report)
        return done
    proxy = report.get("proxy") or {}
    print(f"service: {service}")
    print(f"recorded color: {report['recorded_color'] or '(none)'}")
    print(f"proxy routes to: {proxy.get('color') or '(nothing)'}"
          + (f" {proxy['weight']}%" if proxy.get("weight", 100) != 100 else "")
          + (f" [{', '.join(proxy.get('servers', []))}]" if proxy.get("servers") else ""))
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


def cmd_pre_test(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    spec = _outcome_or_tests(opts)
    _pipeline(_steps(opts, runtime=True, proxy=True)).pre_test(service, color, spec)
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
    proxy_url = validate.base_url(opts["proxy_url"])
    steps = _steps(opts, runtime=True, proxy=True)
    pipe = _pipeline(steps)
    with pipe.locked(service, opts["lock_wait"]):
        pipe.post_test(service, current, nxt, spec, proxy_url)
    if current != nxt:
        pipe.stop_old(service, current, opts["keep_old"])
    return ExitStatus.OK


def cmd_run(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    resume = bool(opts.get("resume"))
    if opts.get("outcome") and not resume:
        raise UsageError("--outcome goes with --resume (it is the result of the next test phase)")
    spec_tests = _tests(opts)
    from bluegreen.flow.pipeline import RunOptions

    # resuming: the paused run's image (its deploy phase is behind it)
    spec = model.DeploySpec("") if resume and not opts.get("image") else _deploy_spec(opts)
    ropts = RunOptions(spec, pre=spec_tests, post=spec_tests, keep_old=opts["keep_old"],
                       proxy_url=validate.base_url(opts["proxy_url"]), lock_wait=opts["lock_wait"],
                       outcome=None if not opts.get("outcome") else opts["outcome"] == "passed")
    summary = _pipeline(_steps(opts, runtime=True, proxy=True)).run(
        service, ropts, until=opts.get("until"), resume=resume)
    plain = {"ok": f"{service}: {summary['to']} is live",
             "paused": f"{service}: {summary['to']} paused after {summary.get('paused_after')}",
             }.get(summary["result"], f"{service}: dry run, nothing changed")
    emit(opts, summary, plain)
    return ExitStatus.OK


def cmd_rollback(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    steps = _steps(opts, runtime=True, proxy=True, lazy_runtime=True)
    summary = _pipeline(steps).rollback(service, opts["lock_wait"], bool(opts["stop"]))
    emit(opts, summary, f"{service}: {summary['to']} is live")
    return ExitStatus.OK


def cmd_history(opts: dict[str, Any]) -> int:
    import time

    service = validate.service(opts["service"])
    items = _pipeline(_steps(opts)).history(service)
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
    from bluegreen.flow.pipeline import PHASES

    if phase and phase not in (*PHASES, "gate", "build", "test"):
        raise UsageError(f"invalid --failed-phase {phase!r}")
    entry = {"action": opts["action"], "image": image, "from": opts.get("from_color") or None,
             "to": opts.get("to_color") or None, "result": opts["result"], "failed_phase": phase,
             "start": opts.get("start") or time.time(), "end": time.time()}
    pipe = _pipeline(_steps(opts))
    if not opts["dry_run"]:
        pipe.record(service, entry)
    emit(opts, entry, "")
    return ExitStatus.OK


def cmd_recover(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    pipe = _pipeline(_steps(opts, runtime=True, proxy=True))
    with pipe.locked(service, opts["lock_wait"]):
        actions = pipe.recover(service)
    emit(opts, actions, "\n".join(actions) or "nothing to recover")
    return ExitStatus.OK


def cmd_app_check(opts: dict[str, Any]) -> int:
    from bluegreen.app import spec

    return spec.cmd_app_check(opts)


def _app(opts: dict[str, Any]) -> Any:
    from bluegreen.app.release import AppOptions, AppRelease

    listen = settings.internal_listen(opts)
    aopts = AppOptions(steps=_weights(opts["steps"]), step_wait=opts["step_wait"],
                       confirm=bool(opts["confirm"]), keep_old=opts["keep_old"],
                       proxy_url=validate.base_url(opts["proxy_url"]),
                       internal_addr=listen.rpartition(":")[0], lock_wait=opts["lock_wait"])
    return AppRelease(_steps(opts, runtime=True, proxy=True), aopts)


def _weights(text: str) -> tuple[int, ...]:
    """``--steps``: increasing weights from 1 to 100, ending at 100."""
    import itertools

    try:
        weights = tuple(validate.weight(w) for w in str(text).split(","))
    except UsageError:
        raise UsageError(f"invalid --steps {text!r}: use weights like 10,50,100") from None
    if weights[-1] != 100 or any(b <= a for a, b in itertools.pairwise(weights)) \
            or weights[0] == 0:
        raise UsageError(f"invalid --steps {text!r}: increasing weights ending at 100")
    return weights


def cmd_app_deploy(opts: dict[str, Any]) -> int:
    from bluegreen.app import spec

    app_spec = spec.load(opts["file"])
    summary = _app(opts).deploy(app_spec)
    plain = {"ok": f"{app_spec.name}: release {summary['release']} is live",
             "paused": f"{app_spec.name}: release {summary['release']} paused at "
                       f"{summary.get('weight')}%",
             "unchanged": f"{app_spec.name}: nothing changed"}.get(
                 summary["result"], f"{app_spec.name}: dry run, nothing changed")
    emit(opts, summary, plain)
    return ExitStatus.OK


def _app_name(opts: dict[str, Any]) -> str:
    from bluegreen.app import spec

    return validate.matching(spec._APP_RE, opts["app"], "application name")


# app promote | abort | rollback: the release method, and what the release is afterwards
_APP_ACTIONS = {"app promote": ("promote", "is live"), "app abort": ("abort", "undone"),
                "app rollback": ("rollback", "is live again")}


def cmd_app_action(opts: dict[str, Any]) -> int:
    method, outcome = _APP_ACTIONS[opts["command_path"]]
    name = _app_name(opts)  # at the edge, before anything is contacted
    summary = getattr(_app(opts), method)(name)
    if opts["dry_run"]:
        summary["result"], outcome = "dry-run", f"would be {outcome} (dry run, nothing changed)"
    emit(opts, summary, f"{summary['app']}: release {summary['release']} {outcome}")
    return ExitStatus.OK


def cmd_app_status(opts: dict[str, Any]) -> int:
    name = _app_name(opts)  # at the edge, before anything is contacted
    report = _app(opts).status(name)
    if opts["json"]:
        emit(opts, report)
        return ExitStatus.OK
    print(f"application: {report['app']}, live release {report['live_release']}")
    if report["inflight"]:
        i = report["inflight"]
        print(f"unfinished release {i['release']}: {i['state']} at {i['weight']}%")
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
    return ExitStatus.OK


def cmd_app_history(opts: dict[str, Any]) -> int:
    import time

    name = _app_name(opts)  # at the edge, before anything is contacted
    items = _app(opts).history(name)
    if opts["json"]:
        emit(opts, items)
        return ExitStatus.OK
    for e in items:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("start") or 0))
        moved = ", ".join(f"{n} {c}" for n, c in (e.get("changed") or {}).items())
        print(f"{when} release {e.get('release')} {e.get('result')} at {e.get('weight')}%: "
              f"{moved}" + (f" ({e['error']})" if e.get("error") else ""))
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
    "app abort": cmd_app_action, "app status": cmd_app_status, "app history": cmd_app_history,
    "app rollback": cmd_app_action,
    "jenkins job": cmd_jenkins, "jenkins index": cmd_jenkins,
    "jenkins build": cmd_jenkins,
}


def dispatch(opts: dict[str, Any]) -> int:
    return COMMANDS[opts["command_path"]](opts)
