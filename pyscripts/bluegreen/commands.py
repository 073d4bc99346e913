"""One function per command: validate the inputs, build what is needed, call the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bluegreen import validate
from bluegreen.cli import emit
from bluegreen.errors import ExitStatus, UsageError

if TYPE_CHECKING:
    from bluegreen import checks
    from bluegreen.core import Toolkit
    from bluegreen.pipeline import Pipeline

# Quick commands start fast: the core, the pipeline and the client libraries are imported
# by the commands that use them.


def _pipeline(kit: Toolkit) -> Pipeline:
    from bluegreen.pipeline import Pipeline

    return Pipeline(kit)


def make_registry(opts: dict[str, Any]) -> Any:
    from bluegreen.registry import ConsulRegistry, FileRegistry

    if opts["registry"] == "file":
        path = validate.directory(opts["state_file"], "--state-file")
        return FileRegistry(path, prefix=opts["kv_prefix"])
    if opts["registry"] != "consul":
        raise UsageError(f"invalid --registry {opts['registry']!r}: use consul or file")
    return ConsulRegistry(opts["consul_addr"], token=opts.get("consul_token"),
                          prefix=opts["kv_prefix"])


def make_runtime(opts: dict[str, Any]) -> Any:
    from bluegreen.runtime import DockerRuntime

    validate.host(opts["publish_ip"])
    if opts.get("advertise_addr"):
        validate.host(opts["advertise_addr"])
    return DockerRuntime(opts.get("docker_host"), opts["publish_ip"], opts.get("advertise_addr"))


def make_proxy(opts: dict[str, Any], runtime: Any) -> Any:
    from bluegreen.proxy import ContainerNginx, LocalNginx, Proxy

    if opts["nginx_mode"] == "container":
        controller: Any = ContainerNginx(runtime or make_runtime(opts), opts["nginx_container"],
                                         opts["nginx_conf"], opts.get("nginx_prefix"))
    elif opts["nginx_mode"] == "local":
        controller = LocalNginx(opts["nginx_bin"], opts["nginx_conf"], opts.get("nginx_prefix"),
                                opts["nginx_pid_file"])
    else:
        raise UsageError(f"invalid --nginx-mode {opts['nginx_mode']!r}: use local or container")
    include_file = opts.get("include_file")
    if include_file:
        validate.readable_file(include_file, "--include-file")
    return Proxy(controller, validate.directory(opts["upstream_dir"], "--upstream-dir"),
                 validate.directory(opts["include_dir"], "--include-dir"),
                 location=opts["location"], include_file=include_file)


def toolkit(opts: dict[str, Any], runtime: bool = False, proxy: bool = False,
            lazy_runtime: bool = False, ping: bool = True) -> Toolkit:
    """Build and ping only what the command uses, before anything is changed. With
    ``lazy_runtime`` Docker is reached only if needed (and then before any change); without
    ``ping`` nothing is reached yet (status reports each part on its own)."""
    from bluegreen.core import Toolkit

    reg = make_registry(opts)
    rt = make_runtime(opts) if runtime else None
    px = make_proxy(opts, rt) if proxy else None
    if not opts.get("check_interval", "1s").rstrip("sm").isdigit():
        raise UsageError(f"invalid --check-interval {opts['check_interval']!r}: use e.g. 1s")
    if ping:
        reg.ping()
        if rt and not lazy_runtime:
            rt.ping()
        if px:
            px.controller.ping()
    return Toolkit(registry=reg, runtime=rt, proxy=px, dry_run=bool(opts["dry_run"]),
                   check_interval=opts["check_interval"], health_timeout=opts["health_timeout"],
                   drain_timeout=opts["drain_timeout"])


def _need(opts: dict[str, Any], name: str) -> Any:
    if opts.get(name) in (None, ""):
        raise UsageError(f"--{name.replace('_', '-')} is required")
    return opts[name]


def _env(opts: dict[str, Any]) -> dict[str, str]:
    return dict(validate.env_pair(item) for item in opts.get("env") or [])


def _tests(opts: dict[str, Any]) -> checks.TestSpec:
    from bluegreen import checks

    return checks.TestSpec.build(cmd=opts.get("cmd"), http=opts.get("http") or [],
                                 expect_status=opts["expect_status"],
                                 body_regex=opts.get("expect_body"),
                                 timeout=opts["test_timeout"], retries=opts["retries"])


def _deploy_args(opts: dict[str, Any]) -> dict[str, Any]:
    return {"image": validate.image(_need(opts, "image")), "port": validate.port(opts["port"]),
            "env": _env(opts), "scale": validate.scale(opts["scale"]),
            "network": validate.network(opts["network"]) if opts.get("network") else None,
            "health_path": validate.http_path(opts["health_path"]), "pull": opts["pull"]}


# -- commands -------------------------------------------------------------------------


def cmd_color(opts: dict[str, Any]) -> int:
    if opts["which"] == "next" and opts.get("current") is not None:
        # the book's getNextColor(currentColor): no service, no registry
        value = validate.next_color(validate.color(opts["current"]) if opts["current"] else None)
        emit(opts, {"service": opts.get("service"), "next": value}, value)
        return ExitStatus.OK
    if not opts.get("service"):
        raise UsageError("SERVICE is required (or, for next, --current COLOR)")
    service = validate.service(opts["service"])
    current = make_registry(opts).get_color(service)  # the read itself says if Consul answers
    if current is None:
        current = _proxy_color(opts, service)  # a registry that lost the record: the proxy knows
    value = current if opts["which"] == "current" else validate.next_color(current)
    emit(opts, {"service": service, opts["which"]: value}, value or "")
    return ExitStatus.OK


def _proxy_color(opts: dict[str, Any], service: str) -> str | None:
    """The color the proxy's files route to (a file read: nginx itself is not asked)."""
    from bluegreen.proxy import read_serving

    return read_serving(validate.directory(opts["upstream_dir"], "--upstream-dir"), service).color


def cmd_address(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    addrs = toolkit(opts).address(service, color)
    emit(opts, addrs, "\n".join(addrs))
    return ExitStatus.OK if addrs else ExitStatus.FAILED


def cmd_deploy(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    args = _deploy_args(opts)
    kit = toolkit(opts, runtime=True, proxy=True)
    started = kit.deploy(service, color, **args)
    emit(opts, [{"name": c.name, "address": f"{c.address}:{c.port}"} for c in started],
         "\n".join(f"{c.name} {c.address}:{c.port}" for c in started))
    return ExitStatus.OK


def cmd_switch(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    weight = validate.weight(opts["weight"])
    kit = toolkit(opts, runtime=opts["nginx_mode"] == "container", proxy=True)
    changed = kit.switch(service, color, weight)
    if weight == 100 and not opts["dry_run"]:
        kit.verify_release(service, color)  # the operator routed users to it
    emit(opts, {"service": service, "color": color, "weight": weight, "changed": changed},
         f"{service} -> {color}" + (f" ({weight}%)" if weight != 100 else "")
         + (" (dry run: nothing changed)" if opts["dry_run"] else "" if changed else " (unchanged)"))
    return ExitStatus.OK


def cmd_stop(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    color = validate.color(_need(opts, "color"))
    kit = toolkit(opts, runtime=True, proxy=True)
    stopped = kit.stop(service, color, force=bool(opts["force"]))
    emit(opts, stopped, "\n".join(stopped))
    return ExitStatus.OK


def cmd_status(opts: dict[str, Any]) -> int:
    """Everything that can be reached; exit 3 after the report when a part cannot."""
    service = validate.service(opts["service"])
    kit = toolkit(opts, runtime=True, proxy=True, ping=False)
    report = kit.status(service)
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
    _pipeline(toolkit(opts, runtime=True, proxy=True)).pre_test(service, color, spec)
    return ExitStatus.OK


def _outcome_or_tests(opts: dict[str, Any]) -> checks.TestSpec:
    from bluegreen import checks

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
    kit = toolkit(opts, runtime=True, proxy=True)
    pipe = _pipeline(kit)
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
    spec = _tests(opts)
    from bluegreen.pipeline import RunOptions

    # resuming: the paused run's image (its deploy phase is behind it)
    deploy = {"image": ""} if resume and not opts.get("image") else _deploy_args(opts)
    ropts = RunOptions(**deploy, pre=spec, post=spec, keep_old=opts["keep_old"],
                       proxy_url=validate.base_url(opts["proxy_url"]), lock_wait=opts["lock_wait"],
                       outcome=None if not opts.get("outcome") else opts["outcome"] == "passed")
    summary = _pipeline(toolkit(opts, runtime=True, proxy=True)).run(
        service, ropts, until=opts.get("until"), resume=resume)
    plain = {"ok": f"{service}: {summary['to']} is live",
             "paused": f"{service}: {summary['to']} paused after {summary.get('paused_after')}",
             }.get(summary["result"], f"{service}: dry run, nothing changed")
    emit(opts, summary, plain)
    return ExitStatus.OK


def cmd_rollback(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    kit = toolkit(opts, runtime=True, proxy=True, lazy_runtime=True)
    summary = _pipeline(kit).rollback(service, opts["lock_wait"], bool(opts["stop"]))
    emit(opts, summary, f"{service}: {summary['to']} is live")
    return ExitStatus.OK


def cmd_history(opts: dict[str, Any]) -> int:
    import time

    service = validate.service(opts["service"])
    items = _pipeline(toolkit(opts)).history(service)
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
    from bluegreen.pipeline import PHASES

    if phase and phase not in (*PHASES, "gate", "build", "test"):
        raise UsageError(f"invalid --failed-phase {phase!r}")
    entry = {"action": opts["action"], "image": image, "from": opts.get("from_color") or None,
             "to": opts.get("to_color") or None, "result": opts["result"], "failed_phase": phase,
             "start": opts.get("start") or time.time(), "end": time.time()}
    pipe = _pipeline(toolkit(opts))
    if not opts["dry_run"]:
        pipe.record(service, entry)
    emit(opts, entry, "")
    return ExitStatus.OK


def cmd_recover(opts: dict[str, Any]) -> int:
    service = validate.service(opts["service"])
    pipe = _pipeline(toolkit(opts, runtime=True, proxy=True))
    with pipe.locked(service, opts["lock_wait"]):
        actions = pipe.recover(service)
    emit(opts, actions, "\n".join(actions) or "nothing to recover")
    return ExitStatus.OK


COMMANDS: dict[str, Callable[[dict[str, Any]], int]] = {
    "color": cmd_color, "address": cmd_address, "deploy": cmd_deploy, "switch": cmd_switch,
    "stop": cmd_stop, "status": cmd_status, "pre-test": cmd_pre_test,
    "post-test": cmd_post_test, "run": cmd_run, "rollback": cmd_rollback,
    "history": cmd_history, "recover": cmd_recover, "record": cmd_record,
}


def dispatch(opts: dict[str, Any]) -> int:
    if opts["command"] == "jenkins":
        from bluegreen import jenkins_cli

        return jenkins_cli.dispatch(opts)
    return COMMANDS[opts["command"]](opts)
