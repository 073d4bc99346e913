"""Every command and option, each declared once: its default, environment variable and help.

An option ``--foo-bar`` is read from the command line, else ``BLUEGREEN_FOO_BAR``, else the
ecosystem's own variable where it has one (``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``,
``DOCKER_HOST``), else key ``foo-bar`` (or ``foo_bar``) of the TOML config file (``--config``,
``$BLUEGREEN_CONFIG``, or ``./bluegreen.toml`` when it exists), else its default. The parser,
the help, the resolution and the README's tables all come from the tables below.

The command line is read by :func:`parse`: options before or after the command, ``--name
value`` or ``--name=value``, ``--`` before positionals that start with ``-``. The help
(``-h``, ``--help``) and ``--version`` are argparse's, built from the same tables when asked:
argparse's import and parser cost about 8 ms of every command, a tenth of a rollback's budget.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping

from bluegreen import __version__, validate
from bluegreen.errors import UsageError
from bluegreen.model import PHASES
from bluegreen.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, NoReturn

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


class Option(Record, frozen=True):
    """One option. ``commands``: where it applies (none: every command). ``flag``: False for
    a secret, read from the environment or the config file only (``ps`` shows flags)."""

    name: str
    default: Any
    help: str
    kind: str = "str"  # str | int | float | flag | list
    commands: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    env: str | None = None
    flag: bool = True
    cli: str | None = None  # the flag when it is not --<name> (--no-pull, --from)
    metavar: str | None = None
    group: str | None = None

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def variable(self) -> str:
        return "BLUEGREEN_" + self.dest.upper()


class Command(Record, frozen=True):
    help: str
    positionals: tuple[tuple[str, dict[str, Any]], ...] = (("service", {"metavar": "SERVICE"}),)


SERVICE = (("service", {"metavar": "SERVICE"}),)
JOB = (("job", {"metavar": "JOB"}),)
APP = (("app", {"metavar": "APP"}),)
COMMANDS: dict[str, Command] = {
    "color": Command("the current or next color (get-color.sh)", (
        ("which", {"choices": ["current", "next"]}),
        ("service", {"metavar": "SERVICE", "nargs": "?",
                     "help": "the service (not needed for next with --current)"}))),
    "deploy": Command("start a color's instances, healthy and registered (deployBG)"),
    "address": Command("host:port of a color's instances (get-port.sh)"),
    "switch": Command("route the proxy to a color and record it (updateBGProxy)"),
    "stop": Command("deregister and stop a color's instances (stopBG)"),
    "status": Command("recorded color, instances, health, proxy; flags disagreements"),
    "pre-test": Command("test the new color directly; stop it on failure"),
    "post-test": Command("test through the proxy; roll back on failure, else stop the old color"),
    "run": Command("the whole blue-green release of an image (one service: an application of "
                   "one)"),
    "rollback": Command("route back to the previous color (starting it when stopped)"),
    "history": Command("the last deployments and rollbacks"),
    "record": Command("append a history record (for flows run step by step)"),
    "recover": Command("undo what an interrupted or paused run left; rebuild lost records"),
    "app check": Command("validate an application file (contacts nothing)", ()),
    "app deploy": Command("release the changed services of an application file as one", ()),
    "app promote": Command("finish a paused application release (100%, old colors stopped)",
                           APP),
    "app resume": Command("go on with a paused application release's next phase (--until: "
                          "pause again after it)", APP),
    "app abort": Command("return an unfinished application release to the old one", APP),
    "app recover": Command("rebuild the application's lost records from its containers and "
                           "the proxy; undo an interrupted release", APP),
    "app status": Command("each service's colors, weights and health; disagreements", APP),
    "app history": Command("the last application releases", APP),
    "app rollback": Command("back to the previous release, all its services in one proxy change",
                            APP),
    "consul policy": Command("print the least-privilege Consul ACL policy (HCL) a token needs for "
                             "these services (and --app's)", (("services", {
                                 "metavar": "SERVICE", "nargs": "*"}),)),
    "jenkins job": Command("create or update the multibranch job", JOB),
    "jenkins index": Command("trigger branch indexing", JOB),
    "jenkins build": Command("build one branch, stream its console, exit with its result", JOB),
}
FAMILIES = {
    "consul": "Consul ACLs: the policy a deploy token needs",
    "app": "application releases: several services in one Compose file",
    "jenkins": "manage the multibranch job with python-jenkins "
               "($JENKINS_URL, $JENKINS_USER, $JENKINS_API_TOKEN)",
}

DEPLOY = ("deploy", "run")
TESTS = ("pre-test", "post-test", "run")
LOCKING = ("run", "rollback", "recover", "post-test", "pre-test", "deploy", "switch", "stop")
RELEASES = ("run", "app deploy")  # a new release: its weight steps
FINISHING = ("run", "app deploy", "app promote", "app resume")  # the phases to the end
WATCHING = ("status", "app status")  # live figures
APP_LOCKING = ("app deploy", "app promote", "app resume", "app abort", "app rollback",
               "app recover")
OPTIONS: tuple[Option, ...] = (
    # -- common: where things are --------------------------------------------------------
    Option("config", None, "TOML config file (default ./bluegreen.toml if present)"),
    Option("registry", "consul", "registry backend", choices=("consul", "file")),
    Option("runtime", "docker", "runtime backend", choices=("docker", "swarm")),
    Option("consul-addr", "127.0.0.1:8500", "Consul HTTP address ([scheme://]host:port; https "
           "also with CONSUL_HTTP_SSL=true)", env="CONSUL_HTTP_ADDR"),
    Option("consul-token", None, "Consul ACL token", env="CONSUL_HTTP_TOKEN", flag=False),
    Option("kv-prefix", "", "prefix of the KV keys ('' gives books-ms/color)"),
    Option("state-file", ".bluegreen/state.json", "the file registry's state"),
    Option("docker-host", None, "Docker engine (a Swarm manager with --runtime swarm)",
           env="DOCKER_HOST"),
    Option("publish-ip", "0.0.0.0", "host IP that container ports are published on"),  # noqa: S104
    Option("advertise-addr", None, "address registered for the instances [the DOCKER_HOST "
           "host, else 127.0.0.1]"),
    Option("nginx-mode", "local", "how nginx is reached and changed: local and container reload "
           "it (the book's way); dynamic changes a local nginx's upstreams in process (Lua), "
           "reloading only when a service is added or removed",
           choices=("local", "container", "dynamic")),
    Option("nginx-routing", "locations", "dynamic mode: how a request finds its service: "
           "locations (an nginx location per service; adding one is a checked reload) or table "
           "(one location /, each service's path prefix in its route, matched as nginx matches "
           "prefix locations; adding one is a POST)", choices=("locations", "table")),
    Option("proxy", [], "route through several proxies, all or nothing (repeat): NAME=MODE "
           "with MODE local, container or dynamic, then ,KEY=VALUE for what differs from the "
           "single-proxy options (conf, prefix, pid-file, bin, container, upstream-dir, "
           "include-dir, control, state-file, control-secret-file, routing); in the config "
           "file also [[proxy]] tables (name, mode, keys). A key not given is the single-proxy "
           "option's value",
           kind="list", metavar="NAME=MODE[,KEY=VALUE...]"),
    Option("nginx-control", "127.0.0.1:8079", "dynamic mode: nginx's control endpoint "
           "(127.x.y.z:PORT or unix:/path; never public)"),
    Option("nginx-state-file", "/var/lib/bluegreen/nginx-routes.json", "dynamic mode: the routes "
           "nginx restores when it starts (written before each change)"),
    Option("nginx-control-secret-file", None, "dynamic mode: the owner-only file of the "
           "secret every control request carries (bluegreen creates it) [beside "
           "--nginx-state-file: <name>.secret]"),
    Option("preview-secret", None, "dynamic mode: requests with the header "
           "X-Bluegreen-Preview: <secret> (or the cookie ?bluegreen-preview=<secret> sets) are "
           "served by a release's new color at any weight, 0 included; 16-256 of "
           "[A-Za-z0-9._~+/=-] [none: no preview]", env="BLUEGREEN_PREVIEW_SECRET", flag=False),
    Option("nginx-bin", "nginx", "local nginx binary"),
    Option("nginx-conf", "/etc/nginx/nginx.conf", "nginx main config (in the container in "
           "container mode)"),
    Option("nginx-prefix", None, "nginx prefix (-p)"),
    Option("nginx-pid-file", "/run/nginx.pid", "local nginx pid file"),
    Option("nginx-container", "nginx", "nginx container name"),
    Option("upstream-dir", "/data/nginx/upstreams", "upstream files"),
    Option("include-dir", "/data/nginx/includes", "include files"),
    Option("location", "/", "location proxied to the service"),
    Option("internal-listen", "172.17.0.1:80", "where nginx serves internal endpoints "
           "(servicea.local), an address the containers reach: Docker's bridge gateway; on Swarm "
           "the nginx host's address on the nodes' network"),
    Option("include-file", None, "your own include file instead of the generated one"),
    Option("check-interval", "1s", "Consul HTTP check interval"),
    Option("health-timeout", 60.0, "seconds to wait for health", kind="float"),
    Option("drain-timeout", 30.0, "seconds to let the proxy finish old requests", kind="float"),
    Option("json", False, "JSON output", kind="flag"),
    Option("dry-run", False, "print what would change; change nothing", kind="flag"),
    Option("debug", False, "traceback on errors", kind="flag"),
    Option("policy-app", None, "the application (its records and services) the policy also "
           "covers", commands=("consul policy",), cli="--app", metavar="APP"),
    # -- what a color runs -------------------------------------------------------------------
    Option("color", None, "the color", commands=("deploy", "address", "switch", "stop",
                                                   "pre-test")),
    Option("image", None, "image reference", commands=(*DEPLOY, "record")),
    Option("port", 8080, "container port", kind="int", commands=DEPLOY),
    Option("env", [], "container env (repeat)", kind="list", commands=DEPLOY, metavar="K=V"),
    Option("scale", 1, "instances", kind="int", commands=DEPLOY),
    Option("network", None, "Docker network", commands=DEPLOY),
    Option("health-path", "/", "HTTP path of the health check", commands=DEPLOY),
    Option("pull", True, "fail instead of pulling a missing image", kind="flag", commands=DEPLOY,
           cli="--no-pull"),
    # -- switch, stop, rollback ---------------------------------------------------------------
    Option("weight", 100, "percent of traffic to the color, 0-100", kind="int",
           commands=("switch",)),
    # -- status ------------------------------------------------------------------------------
    Option("watch", False, "dynamic mode: refresh the live figures (weight, req/s, error rate, "
           "p50/p99 per color) until interrupted or --watch-count", kind="flag",
           commands=WATCHING),
    Option("watch-interval", 2.0, "seconds between two refreshes of --watch", kind="float",
           commands=WATCHING),
    Option("watch-count", 0, "refreshes of --watch (0: until interrupted)", kind="int",
           commands=WATCHING),
    Option("force", False, "even if it is live", kind="flag", commands=("stop",)),
    Option("stop", False, "stop the rolled-back color afterwards", kind="flag",
           commands=("rollback",)),
    Option("partial", False, "several proxies (--proxy), some unreachable: change the reachable "
           "ones and record the others as behind (<target>/proxies-behind), brought in line "
           "when back by recover or the next run, switch or rollback", kind="flag",
           commands=("switch", "rollback", "run", "recover", "app deploy", "app rollback",
                     "app abort", "app recover")),
    # -- tests ------------------------------------------------------------------------------
    Option("cmd", None, "test command (no shell), run with DOMAIN=http://host:port",
           commands=TESTS, group="tests"),
    Option("http", [], "HTTP check of PATH (repeat)", kind="list", commands=TESTS,
           metavar="PATH", group="tests"),
    Option("expect-status", 200, "expected HTTP status", kind="int", commands=TESTS,
           group="tests"),
    Option("expect-body", None, "regex the body must match", commands=TESTS, metavar="REGEX",
           group="tests"),
    Option("test-timeout", 5.0, "seconds per request or for the command", kind="float",
           commands=TESTS, group="tests"),
    Option("retries", 3, "attempts per check", kind="int", commands=TESTS, group="tests"),
    Option("outcome", None, "the result of tests run elsewhere (a Jenkins closure); with run "
           "--resume and app resume, of the next test phase", choices=("passed", "failed"),
           commands=(*TESTS, "app resume")),
    # -- the pipeline -----------------------------------------------------------------------
    Option("current", None, "the old color ('' for a first deployment); with color next: the "
           "color after this one, the registry is not asked", commands=("color", "post-test")),
    Option("next", None, "the new color", commands=("post-test",)),
    Option("proxy-url", "http://127.0.0.1", "the proxy's base URL for post-tests",
           commands=("post-test", *FINISHING)),
    Option("keep-old", 0.0, "seconds before stopping the old color", kind="float",
           commands=("post-test", *FINISHING)),
    Option("lock-wait", 0.0, "seconds to wait for the deploy lock", kind="float",
           commands=(*LOCKING, *APP_LOCKING)),
    Option("until", None, "pause after this phase (a promotion gate; after the last one: no "
           "pause); go on with run --resume or app resume", choices=PHASES,
           commands=("run", "app deploy", "app resume")),
    Option("resume", False, "go on with the paused run's next phase (--image not needed)",
           kind="flag", commands=("run",)),
    # -- record -----------------------------------------------------------------------------
    Option("action", "run", "what is recorded", choices=("run", "rollback"), commands=("record",)),
    Option("from-color", "", "the color before", cli="--from", commands=("record",)),
    Option("to-color", "", "the color after", cli="--to", commands=("record",)),
    Option("result", None, "the result", choices=("ok", "failed"), commands=("record",)),
    Option("failed-phase", "", "the phase that failed", commands=("record",)),
    Option("start", None, "start time, seconds since the epoch", kind="float",
           commands=("record",)),
    # -- app --------------------------------------------------------------------------------
    Option("file", None, "the application's Compose file", commands=("app check", "app deploy"),
           metavar="FILE"),
    Option("steps", "100", "weights of the new release, in order (e.g. 10,50,100)",
           commands=RELEASES),
    Option("step-wait", 0.0, "seconds to wait at each step after its tests passed", kind="float",
           commands=(*RELEASES, "app promote", "app resume")),
    Option("confirm", False, "stop before 100%: promote (app promote, run --resume) or abort "
           "(app abort, recover) decides", kind="flag", commands=RELEASES),
    # -- gates and sessions (dynamic mode) ------------------------------------------------
    Option("sticky", False, "keep each client on one release by a bucket cookie while both "
           "colors are routed (an application's service also by label bluegreen.sticky)",
           kind="flag", commands=RELEASES),
    Option("max-error-rate", None, "gate: after each step's wait, fail the release when more "
           "than this percent of the new color's requests got a 5xx or a failed try (none: no "
           "such gate, also to take a recorded one off a continued release)",
           kind="float", commands=FINISHING, metavar="PERCENT", group="gates"),
    Option("max-latency-ratio", None, "gate: fail when the new color's p99 is more than this "
           "times the old color's over the same window", kind="float", commands=FINISHING,
           metavar="RATIO", group="gates"),
    Option("min-requests", 0, "gate: requests the new color must serve in a step's window "
           "(the old one too, for the latency ratio)", kind="int", commands=FINISHING,
           group="gates"),
    Option("min-requests-wait", 0.0, "gate: seconds a step may wait beyond --step-wait for "
           "--min-requests (0: fail at once)", kind="float", commands=FINISHING, group="gates"),
    Option("gate-query", None, "gate: a Prometheus query after each step's wait, passing when "
           "its result is not empty and no sample is 0 (put the condition in the query)",
           commands=FINISHING, metavar="QUERY", group="gates"),
    Option("prometheus-url", None, "the Prometheus that --gate-query asks (http(s)://host[:port]"
           "[/path])", commands=FINISHING, metavar="URL", group="gates"),
    # -- jenkins ----------------------------------------------------------------------------
    Option("git-url", None, "the repository of the job", commands=("jenkins job",)),
    Option("include", "*blue-green*", "branch filter", commands=("jenkins job",)),
    Option("exclude", "", "branches left out", commands=("jenkins job",)),
    Option("script-path", "Jenkinsfile", "the pipeline script", commands=("jenkins job",)),
    Option("credentials-id", "", "Jenkins credentials of the repository",
           commands=("jenkins job",)),
    Option("print-only", False, "print the config.xml; contact nobody", kind="flag",
           cli="--print", commands=("jenkins job",)),
    Option("branch", None, "the branch to build", commands=("jenkins build",)),
    Option("timeout", 3600.0, "seconds to wait for the build", kind="float",
           commands=("jenkins build",)),
    Option("wait", True, "return once the build is queued", kind="flag", cli="--no-wait",
           commands=("jenkins build",)),
)
# float options that are not seconds: their bounds
NUMBERS = {"max-error-rate": (0.0, 100.0), "max-latency-ratio": (0.01, 1000.0)}
REQUIRED = {"record": ("result",), "jenkins job": ("git_url",), "jenkins build": ("branch",),
            "app check": ("file",), "app deploy": ("file",)}


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter at the terminal's width, found as ``shutil`` would but without
    importing it."""
    import argparse

    try:
        columns = int(os.environ.get("COLUMNS", "")) if os.environ.get("COLUMNS") \
            else os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (ValueError, OSError, AttributeError):
        columns = 80
    return argparse.HelpFormatter(prog, width=max(columns - 2, 20))


def build_parser() -> argparse.ArgumentParser:
    """argparse's parser of every command, for the help and ``--version``."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["allow_abbrev"] = False
            kwargs.setdefault("formatter_class", _formatter)
            super().__init__(*args, **kwargs)

        def error(self, message: str) -> NoReturn:
            raise UsageError(message)

    common = Parser(add_help=False)
    group = common.add_argument_group("common options (each also BLUEGREEN_<NAME> or the "
                                      "config file; before or after the command)")
    for opt in OPTIONS:
        if not opt.commands and opt.flag:
            _add(group, opt)
    parser = Parser(prog="bluegreen", description="Zero-downtime blue-green deployments "
                    "with Docker, Consul and nginx.", parents=[common])
    parser.add_argument("--version", action="version", version=f"bluegreen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    families: dict[str, Any] = {}
    for path, command in COMMANDS.items():
        family, _, action = path.partition(" ")
        if action:
            if family not in families:
                fam = sub.add_parser(family, help=_escaped(FAMILIES[family]), parents=[common])
                families[family] = fam.add_subparsers(dest=f"{family}_command", metavar="ACTION",
                                                      parser_class=Parser)
            p = families[family].add_parser(action, help=_escaped(command.help),
                                            description=command.help, parents=[common])
        else:
            families[family] = p = sub.add_parser(path, help=_escaped(command.help),
                                                  description=command.help, parents=[common])
        for name, kwargs in command.positionals:
            p.add_argument(name, **kwargs)
        groups: dict[str, Any] = {}
        for opt in OPTIONS:
            if path in opt.commands:
                target = groups.setdefault(opt.group, p.add_argument_group(opt.group)) \
                    if opt.group else p
                _add(target, opt)
    return parser


def _escaped(help_: str) -> str:
    """A help text as argparse takes it: ``%`` is its formatting character (``100%``)."""
    return help_.replace("%", "%%")


def _add(parser: Any, opt: Option) -> None:
    default = opt.default if opt.default not in (None, "", []) else None
    help_ = opt.help + (f" [{default}]" if default is not None and opt.kind != "flag" else "")
    kwargs: dict[str, Any] = {"dest": opt.dest, "help": _escaped(help_), "default": None}
    if opt.kind == "flag":
        kwargs |= {"action": "store_const", "const": not opt.default}
    elif opt.kind == "list":
        kwargs |= {"action": "append", "metavar": opt.metavar}
    else:
        kwargs["metavar"] = opt.metavar
        if opt.choices:
            kwargs["choices"] = list(opt.choices)
    parser.add_argument(opt.cli or f"--{opt.name}", **kwargs)


def parse(args: list[str]) -> dict[str, Any]:
    """The command (``command``, and ``<family>_command`` for ``app`` and ``jenkins``), its
    positionals and the options given, as text (``True``/``False`` for a flag, a list for a
    repeated option); :func:`resolve` types them. ``-h``, ``--help`` and ``--version`` print
    and exit."""
    ends = args.index("--") if "--" in args else len(args)
    if {"-h", "--help", "--version"} & set(args[:ends]):
        build_parser().parse_args(args)  # prints the help or the version, exits 0
    flags = {opt.cli or f"--{opt.name}": opt for opt in OPTIONS}
    words: list[str] = []
    given: list[tuple[str, Option, Any]] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            words += rest
        elif not arg.startswith("-") or arg == "-":
            words.append(arg)
        else:
            name, eq, value = arg.partition("=")
            opt = flags.get(name)
            if opt is None:
                raise UsageError(f"unrecognized arguments: {arg}")
            if not opt.flag:
                raise UsageError(f"{name} is a secret, read from ${opt.env or opt.variable} or "
                                 f"the config file only (a command line shows in ps)")
            if opt.kind == "flag":
                if eq:
                    raise UsageError(f"argument {name}: ignored explicit argument {value!r}")
                value = not opt.default
            elif not eq:
                value = next(rest, None)
                if value is None or (value.startswith("-") and not _number(value)):
                    raise UsageError(f"argument {name}: expected one argument")
            given.append((name, opt, value))
    values = _command(words)
    path = command_path(values)
    for name, opt, value in given:
        if opt.commands and path not in opt.commands:
            raise UsageError(f"{name} is not an option of {path}")
        if opt.kind == "list":
            value = [*(values.get(opt.dest) or []), value]
        values[opt.dest] = value
    return values


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _command(words: list[str]) -> dict[str, Any]:
    """The command and its positionals from the words of the command line."""
    if not words:
        raise UsageError("the following arguments are required: COMMAND")
    family, *words = words
    actions = [p.partition(" ")[2] for p in COMMANDS if p.partition(" ")[0] == family]
    if not actions:
        _invalid("COMMAND", family, dict.fromkeys(p.partition(" ")[0] for p in COMMANDS))
    values: dict[str, Any] = {"command": family}
    if actions != [""]:
        if not words:
            raise UsageError("the following arguments are required: ACTION")
        action, *words = words
        if action not in actions:
            _invalid("ACTION", action, actions)
        values[f"{family}_command"] = action
    missing = []
    for name, spec in COMMANDS[command_path(values)].positionals:
        if spec.get("nargs") == "*":
            values[name], words = words, []
            continue
        value = words.pop(0) if words else None
        if value is None and spec.get("nargs") != "?":
            missing.append(spec.get("metavar", name))
        elif value is not None and "choices" in spec and value not in spec["choices"]:
            _invalid(name, value, spec["choices"])
        values[name] = value
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)}")
    if words:
        raise UsageError(f"unrecognized arguments: {' '.join(words)}")
    return values


def _invalid(what: str, value: str, choices: Iterable[str]) -> NoReturn:
    raise UsageError(f"argument {what}: invalid choice: {value!r} (choose from "
                     f"{', '.join(repr(c) for c in choices)})")


def command_path(values: Mapping[str, Any]) -> str:
    family = values["command"]
    action = values.get(f"{family}_command")
    return f"{family} {action}" if action else family


def resolve(given: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every option's value (``given``: :func:`parse`'s): flag, else environment, else config
    file, else default; typed and range-checked (exit 2 on nonsense). ``values["given"]``:
    where each option that is not its default came from (``--name``, ``$VAR``, ``the config
    file``): a continued release takes its recorded gates unless one is given."""
    env = os.environ if env is None else env
    values = dict(given)
    values["command_path"] = path = command_path(given)
    file_values = load_file(values.get("config"), env)
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        if values.get(opt.dest) is None:
            values[opt.dest], source = _from_outside(opt, env, file_values)
        else:
            source = opt.cli or f"--{opt.name}"
        values[opt.dest] = _typed(opt, values[opt.dest])
        if source:
            sources[opt.dest] = source
    values["given"] = sources
    for dest in REQUIRED.get(path, ()):
        if values.get(dest) in (None, ""):
            raise UsageError(f"--{dest.replace('_', '-')} is required")
    return values


def _from_outside(opt: Option, env: Mapping[str, str], file_values: dict[str, Any]
                  ) -> tuple[Any, str | None]:
    """The value and where it came from (None: the default)."""
    for var in (opt.variable, opt.env):
        if var and env.get(var) is not None:
            return _from_text(env[var], opt, var), f"${var}"
    if opt.dest in file_values:
        return file_values[opt.dest], "the config file"
    return opt.default, None


def _typed(opt: Option, value: Any) -> Any:
    if value is None:
        return None
    if opt.group == "gates" and isinstance(value, str) and value.strip().lower() in ("none", ""):
        return None  # no such gate: on a continued release, the recorded one taken away
    what = opt.cli or f"--{opt.name}"
    if opt.kind == "int":
        return validate.bounded_int(value, what, 0, 10**6)
    if opt.kind == "float" and opt.name in NUMBERS:
        return validate.number(value, what, *NUMBERS[opt.name])
    if opt.kind == "float":
        return validate.seconds(value, what, 10**10 if opt.name == "start" else 86400.0)
    if opt.kind == "flag" and not isinstance(value, bool):
        return _from_text(str(value), opt, what)
    if opt.choices and value not in opt.choices:
        raise UsageError(f"invalid {what} {value!r}: use {' or '.join(opt.choices)}")
    return value


def _from_text(text: str, opt: Option, where: str) -> Any:
    if opt.kind == "flag":
        low = text.strip().lower()
        if low in TRUE:
            return True
        if low in FALSE:
            return False
        raise UsageError(f"invalid {where}={text!r}: use true or false")
    if opt.kind == "list":
        if text.lstrip().startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise UsageError(f"invalid {where}: not a JSON list") from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise UsageError(f"invalid {where}: use a JSON list of strings")
            return items
        return [line for line in text.splitlines() if line]
    return text


def load_file(path: str | None, env: Mapping[str, str]) -> dict[str, Any]:
    """The TOML config file's keys (``foo-bar`` or ``foo_bar``); unknown keys are refused."""
    explicit = path or env.get("BLUEGREEN_CONFIG")
    candidate = explicit or "bluegreen.toml"
    if not os.path.exists(candidate):
        if explicit:
            raise UsageError(f"config file {candidate} not found")
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(candidate, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read config file {candidate}: {exc}") from None
    values = {k.replace("-", "_"): v for k, v in data.items()}
    known = {opt.dest for opt in OPTIONS}
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise UsageError(f"config file {candidate}: unsupported key {unknown[0]!r}")
    return values
