"""Command line: parse, resolve options, build the toolkit, dispatch, map errors to exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from bluegreen import __version__, config, validate
from bluegreen.errors import BlueGreenError, ExitStatus, UsageError, add_secret, redact

# dest -> (default, kind); kind is str, int, float, flag or list. Every one of these may
# also come from BLUEGREEN_<DEST> or the config file.
GLOBAL_OPTIONS: dict[str, tuple[Any, str]] = {
    "registry": ("consul", "str"),
    "consul_addr": ("http://127.0.0.1:8500", "str"),
    "consul_token": (None, "str"),  # env or config file only: never a flag (ps shows flags)
    "kv_prefix": ("", "str"),
    "state_file": (".bluegreen/state.json", "str"),
    "docker_host": (None, "str"),
    "publish_ip": ("0.0.0.0", "str"),  # noqa: S104 - the book publishes on all interfaces
    "advertise_addr": (None, "str"),
    "nginx_mode": ("local", "str"),
    "nginx_bin": ("nginx", "str"),
    "nginx_conf": ("/etc/nginx/nginx.conf", "str"),
    "nginx_prefix": (None, "str"),
    "nginx_pid_file": ("/run/nginx.pid", "str"),
    "nginx_container": ("nginx", "str"),
    "upstream_dir": ("/data/nginx/upstreams", "str"),
    "include_dir": ("/data/nginx/includes", "str"),
    "location": ("/", "str"),
    "include_file": (None, "str"),
    "check_interval": ("1s", "str"),
    "health_timeout": (60.0, "float"),
    "drain_timeout": (30.0, "float"),
    "json": (False, "flag"),
    "dry_run": (False, "flag"),
    "debug": (False, "flag"),
}
COMMAND_OPTIONS: dict[str, tuple[Any, str]] = {
    "color": (None, "str"),
    "image": (None, "str"),
    "port": (8080, "int"),
    "env": ([], "list"),
    "scale": (1, "int"),
    "network": (None, "str"),
    "health_path": ("/", "str"),
    "pull": (True, "flag"),
    "weight": (100, "int"),
    "force": (False, "flag"),
    "cmd": (None, "str"),
    "http": ([], "list"),
    "expect_status": (200, "int"),
    "expect_body": (None, "str"),
    "test_timeout": (5.0, "float"),
    "retries": (3, "int"),
    "current": (None, "str"),
    "next": (None, "str"),
    "keep_old": (0.0, "float"),
    "proxy_url": ("http://127.0.0.1", "str"),
    "lock_wait": (0.0, "float"),
    "stop": (False, "flag"),
    "outcome": (None, "str"),
    "until": (None, "str"),
    "resume": (False, "flag"),
}


class Parser(argparse.ArgumentParser):
    """One-line errors (exit 2 via UsageError); no abbreviated options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _global_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    g = p.add_argument_group("common options (each also BLUEGREEN_<NAME> or config file)")
    g.add_argument("--config", help="TOML config file (default ./bluegreen.toml if present)")
    g.add_argument("--registry", choices=["consul", "file"], help="registry backend [consul]")
    g.add_argument("--consul-addr", help="Consul HTTP address [$CONSUL_HTTP_ADDR or 127.0.0.1:8500]")
    g.add_argument("--kv-prefix", help="prefix of the KV keys ['' so books-ms/color]")
    g.add_argument("--state-file", help="file registry's state [.bluegreen/state.json]")
    g.add_argument("--docker-host", help="Docker engine [$DOCKER_HOST or the local socket]")
    g.add_argument("--publish-ip", help="host IP that container ports are published on [0.0.0.0]")
    g.add_argument("--advertise-addr", help="address registered for the containers "
                   "[the DOCKER_HOST host, else 127.0.0.1]")
    g.add_argument("--nginx-mode", choices=["local", "container"], help="how nginx is reached")
    g.add_argument("--nginx-bin", help="local nginx binary [nginx]")
    g.add_argument("--nginx-conf", help="nginx main config, in the container in container mode "
                   "[/etc/nginx/nginx.conf]")
    g.add_argument("--nginx-prefix", help="nginx prefix (-p)")
    g.add_argument("--nginx-pid-file", help="local nginx pid file [/run/nginx.pid]")
    g.add_argument("--nginx-container", help="nginx container name [nginx]")
    g.add_argument("--upstream-dir", help="upstream files [/data/nginx/upstreams]")
    g.add_argument("--include-dir", help="include files [/data/nginx/includes]")
    g.add_argument("--location", help="location proxied to the service [/]")
    g.add_argument("--include-file", help="your own include file instead of the generated one")
    g.add_argument("--check-interval", help="Consul HTTP check interval [1s]")
    g.add_argument("--health-timeout", help="seconds to wait for health [60]")
    g.add_argument("--drain-timeout", help="seconds to let nginx finish old requests [30]")
    g.add_argument("--json", action="store_const", const=True, help="JSON output")
    g.add_argument("--dry-run", action="store_const", const=True,
                   help="print what would change; change nothing")
    g.add_argument("--debug", action="store_const", const=True, help="traceback on errors")
    return p


def _test_options(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("tests")
    t.add_argument("--cmd", help="test command (no shell), run with DOMAIN=http://host:port")
    t.add_argument("--http", action="append", metavar="PATH", help="HTTP check of PATH (repeat)")
    t.add_argument("--expect-status", help="expected HTTP status [200]")
    t.add_argument("--expect-body", metavar="REGEX", help="regex the body must match")
    t.add_argument("--test-timeout", help="seconds per request or for the command [5]")
    t.add_argument("--retries", help="attempts per check [3]")


def _deploy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image reference")
    p.add_argument("--port", help="container port [8080]")
    p.add_argument("--env", action="append", metavar="K=V", help="container env (repeat)")
    p.add_argument("--scale", help="instances [1]")
    p.add_argument("--network", help="Docker network")
    p.add_argument("--health-path", help="HTTP path of the health check [/]")
    p.add_argument("--no-pull", dest="pull", action="store_const", const=False,
                   help="fail instead of pulling a missing image")


COMMANDS = ("color", "deploy", "address", "switch", "stop", "status", "pre-test", "post-test",
            "run", "rollback", "history", "record", "recover", "jenkins")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, the other commands are stubs (quick commands start faster)."""
    common = _global_parser()
    parser = Parser(prog="bluegreen", description="Zero-downtime blue-green deployments "
                    "with Docker, Consul and nginx.", parents=[common])
    parser.add_argument("--version", action="version", version=f"bluegreen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        if only and name != only:
            stub = Parser(add_help=False)  # never parses: argv names another command
            sub.add_parser(name, help=help_)
            return stub
        p = sub.add_parser(name, help=help_, description=help_, parents=[common])
        if name not in ("color",):
            p.add_argument("service", metavar="SERVICE")
        return p

    color = cmd("color", "the current or next color (get-color.sh)")
    color.add_argument("which", choices=["current", "next"])
    color.add_argument("service", metavar="SERVICE", nargs="?",
                       help="the service (not needed for next with --current)")
    color.add_argument("--current", help="with next: the color after this one ('' = none); "
                       "the registry is not asked")

    p = cmd("deploy", "start a color's containers, healthy and registered (deployBG)")
    p.add_argument("--color")
    _deploy_options(p)
    p = cmd("address", "host:port of a color's instances (get-port.sh)")
    p.add_argument("--color")
    p = cmd("switch", "route the proxy to a color and record it (updateBGProxy)")
    p.add_argument("--color")
    p.add_argument("--weight", help="percent of traffic to the color, 0-100 [100]")
    p = cmd("stop", "deregister and stop a color's containers (stopBG)")
    p.add_argument("--color")
    p.add_argument("--force", action="store_const", const=True, help="even if it is live")
    cmd("status", "recorded color, containers, health, proxy; flags disagreements")
    p = cmd("pre-test", "test the new color directly; stop it on failure")
    p.add_argument("--color")
    p.add_argument("--outcome", choices=["passed", "failed"],
                   help="the result of tests run elsewhere (a Jenkins closure): apply it")
    _test_options(p)
    p = cmd("post-test", "test through the proxy; roll back on failure, else stop the old color")
    p.add_argument("--current", help="the old color ('' for a first deployment)")
    p.add_argument("--next", help="the new color")
    p.add_argument("--proxy-url", help="the proxy's base URL [http://127.0.0.1]")
    p.add_argument("--keep-old", help="seconds before stopping the old color [0]")
    p.add_argument("--outcome", choices=["passed", "failed"],
                   help="the result of tests run elsewhere (a Jenkins closure): apply it")
    _test_options(p)
    p = cmd("run", "the whole blue-green deployment of an image")
    _deploy_options(p)
    _test_options(p)
    p.add_argument("--proxy-url", help="the proxy's base URL for post-tests [http://127.0.0.1]")
    p.add_argument("--keep-old", help="seconds before stopping the old color [0]")
    p.add_argument("--lock-wait", help="seconds to wait for the deploy lock [0]")
    p.add_argument("--until", choices=["deploy", "pre-test", "switch"],
                   help="pause after this phase (a promotion gate); go on with --resume")
    p.add_argument("--resume", action="store_const", const=True,
                   help="go on with the paused run's next phase (--image not needed)")
    p.add_argument("--outcome", choices=["passed", "failed"],
                   help="with --resume: the result of the next test phase, run elsewhere")
    p = cmd("rollback", "route back to the previous color (starting it when stopped)")
    p.add_argument("--lock-wait", help="seconds to wait for the deploy lock [0]")
    p.add_argument("--stop", action="store_const", const=True,
                   help="stop the rolled-back color afterwards")
    cmd("history", "the last deployments and rollbacks")
    p = cmd("record", "append a history record (for flows run step by step)")
    p.add_argument("--action", default="run", choices=["run", "rollback"])
    p.add_argument("--image", help="the image deployed")
    p.add_argument("--from", dest="from_color", default="")
    p.add_argument("--to", dest="to_color", default="")
    p.add_argument("--result", required=True, choices=["ok", "failed"])
    p.add_argument("--failed-phase", default="")
    p.add_argument("--start", type=float, help="start time, seconds since the epoch")
    cmd("recover", "undo what an interrupted run left behind")

    if only in (None, "jenkins"):
        from bluegreen import jenkins_cli

        jenkins_cli.add_parser(sub, common)
    else:
        sub.add_parser("jenkins", help="manage the multibranch job with python-jenkins")
    return parser


def resolve_options(ns: argparse.Namespace) -> dict[str, Any]:
    values = vars(ns).copy()
    defaults = {k: v for k, (v, _) in {**GLOBAL_OPTIONS, **COMMAND_OPTIONS}.items()}
    kinds = {k: kind for k, (_, kind) in {**GLOBAL_OPTIONS, **COMMAND_OPTIONS}.items()}
    opts = config.resolve(values, defaults, kinds)
    for dest, kind in kinds.items():
        value = opts.get(dest)
        if value is None:
            continue
        if kind == "int":
            opts[dest] = validate.bounded_int(value, "--" + dest.replace("_", "-"), 0, 10**6)
        elif kind == "float":
            opts[dest] = validate.seconds(value, "--" + dest.replace("_", "-"))
        elif kind == "flag" and not isinstance(value, bool):
            opts[dest] = config._from_env(str(value), "flag", dest)
    return opts


def parse(args: list[str]) -> argparse.Namespace:
    only = next((a for a in args if a in COMMANDS), None)
    if only is None or "-h" in args or "--help" in args:
        return build_parser().parse_args(args)
    try:
        return build_parser(only).parse_args(args)
    except UsageError:
        return build_parser().parse_args(args)  # the guess was wrong: the full parser decides


def argv_from_env(args: list[str]) -> list[str]:
    """``--argv-json-env NAME``: the arguments are a JSON list in $NAME (the Jenkins steps pass
    user values this way, so no value is ever part of a shell command line)."""
    if args[:1] != ["--argv-json-env"]:
        return args
    if len(args) != 2:
        raise UsageError("--argv-json-env takes one variable name and nothing else")
    import os

    try:
        value = json.loads(os.environ[args[1]])
    except KeyError:
        raise UsageError(f"--argv-json-env: ${args[1]} is not set") from None
    except ValueError:
        raise UsageError(f"--argv-json-env: ${args[1]} is not JSON") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"--argv-json-env: ${args[1]} must be a JSON list of strings")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    from bluegreen import interrupts

    interrupts.install()  # SIGTERM/SIGINT: stop at a safe point, undo, exit 143/130
    try:
        args = argv_from_env(args)
        debug = "--debug" in args
        ns = parse(args)
        opts = resolve_options(ns)
        add_secret(opts.get("consul_token"))
        debug = bool(opts.get("debug"))
        from bluegreen import commands

        return int(commands.dispatch(opts))
    except BlueGreenError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"bluegreen: error: {redact(str(exc))}", file=sys.stderr)
        return int(exc.status)
    except KeyboardInterrupt:
        print("bluegreen: interrupted", file=sys.stderr)
        return int(ExitStatus.SIGINT)


def emit(opts: dict[str, Any], value: Any, plain: str | None = None) -> None:
    """Print a result: JSON with --json, else a plain value."""
    if opts.get("json"):
        print(redact(json.dumps(value, indent=2, sort_keys=True, default=str)))
    elif plain:
        print(redact(plain))


__all__ = ["ExitStatus", "build_parser", "emit", "main"]
