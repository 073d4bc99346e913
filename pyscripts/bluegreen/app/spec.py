"""The application file: a Compose file read strictly, and the plan of an application release.

bluegreen reads a subset of the Compose format (the seed's orchestration template):

* top level: ``name`` (required: the application's KV prefix), ``services``, ``x-*`` extensions;
* per service: ``image``, ``environment`` (map or ``KEY=VALUE`` list), ``deploy.replicas`` or
  ``scale`` (1-64), ``labels`` (map or ``key=value`` list), ``x-*`` extensions.

What Compose has no word for is said with labels under ``bluegreen.`` (see ``LABELS``). Every
other key, at any level, and every other label is refused by name; nothing is silently ignored.
All problems are collected, so ``bluegreen app check`` prints one line per problem.

Values are interpolated from the process environment as Compose does (``interpolate``) before
they are validated. Only a regular file is read (a FIFO or a device is refused, never waited
on), and reading is linear in the file's size.

A service with a public route or an internal endpoint is *routed* (blue-green with weights); one
with neither is a *worker* (swapped at promotion: not blue-green).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from bluegreen import model, validate
from bluegreen.errors import UsageError
from bluegreen.record import Record, factory, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bluegreen.flow import checks

MAX_BYTES = 8 * 1024 * 1024
MAX_NODES = 20_000  # YAML nodes after alias expansion (a billion laughs stops here)
MAX_DEPTH = 32
MAX_SERVICES = 64
DEFAULT_PORT = 8080

# label -> what it says (README of examples/hello-world lists the same)
LABELS: dict[str, str] = {
    "bluegreen.port": "container port the service listens on (routed services: default 8080)",
    "bluegreen.route": "public location path on the proxy, e.g. /",
    "bluegreen.endpoint": "internal endpoint name other services call, e.g. servicea.local",
    "bluegreen.health-path": "HTTP path of the health check (default /; needs a port)",
    "bluegreen.depends-on": "endpoints this service calls, space separated (also found in env URLs)",
    "bluegreen.test.http": "paths tested through the proxy at each step, space separated",
    "bluegreen.test.expect-status": "expected HTTP status of the tests (default 200)",
    "bluegreen.test.expect-body": "regular expression each tested body must match",
    "bluegreen.sticky": "\"true\": during a release each client stays on one release "
                        "(a bucket cookie; dynamic mode), \"false\" (default): per request",
}
_HINTS = {
    "ports": "the proxy publishes the service: use labels bluegreen.port and bluegreen.route",
    "expose": "use label bluegreen.port",
    "healthcheck": "use label bluegreen.health-path",
    "links": "not needed: a bluegreen.endpoint name resolves in every container",
    "external_links": "not needed: a bluegreen.endpoint name resolves in every container",
    "container_name": "bluegreen names the containers <app>.<service>-<color>-N",
    "build": "build and push the image first; bluegreen deploys images",
    "version": "obsolete in Compose too: remove it",
}
_APP_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")  # Compose's project name rule (no dots)
_ENDPOINT_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
# A URL's host in an environment value: a run of scheme characters before ``://`` (only at the
# start of a run, so each run is scanned once: linear), its first letter starts the scheme.
_SCHEME_RUN_RE = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z0-9+.-]+://")
_LETTER_RE = re.compile(r"[A-Za-z]")
_URL_HOST_RE = re.compile(r"(?:[^@/?#]*@)?([^/:?#\[\]]+)")  # after ://
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed
_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_OR_BRACE_RE = re.compile(r"[$}]")
MAX_PROBLEM = 300  # characters of a problem line (a value may be megabytes)
_IPV4_RE = re.compile(r"[0-9.]+")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class HttpTests(Record, frozen=True):
    """HTTP checks run through the proxy (``bluegreen.test.*`` labels)."""

    __test__ = False  # not a pytest class

    paths: tuple[str, ...] = ()
    expect_status: int = 200
    expect_body: str | None = None

    def to_test_spec(self) -> checks.TestSpec:
        from bluegreen.flow import checks

        return checks.TestSpec.build(http=list(self.paths), expect_status=self.expect_status,
                                     body_regex=self.expect_body)


class ServiceSpec(Record, frozen=True):
    """One service of the application file, validated."""

    name: str
    image: str
    env: tuple[tuple[str, str], ...] = ()  # sorted by key
    scale: int = 1
    port: int | None = None  # None: a worker without an HTTP port
    endpoint: str | None = None
    route: str | None = None
    health_path: str = "/"
    depends_on: tuple[str, ...] = ()  # endpoints it calls
    tests: HttpTests = factory(HttpTests)
    sticky: bool = False  # its clients stay on one release during a release (bucket cookie)

    @property
    def kind(self) -> str:
        """``routed`` (weights move between colors) or ``worker`` (swapped at promotion)."""
        return "routed" if self.route or self.endpoint else "worker"

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.env)

    def record(self, color: str, hashed: bool = True) -> dict[str, Any]:
        """This service's entry of a release record (the ``live`` argument of ``changed``).
        With ``hashed`` the environment values are ``sha256:<hex>`` (they may be secrets; the
        KV record need not hold them, and ``changed`` compares either form)."""
        env = {k: env_digest(v) for k, v in self.env} if hashed else self.environment
        return {"image": self.image, "env": env, "scale": self.scale, "port": self.port,
                "health_path": self.health_path, "color": color}


def env_digest(value: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


class AppSpec(Record, frozen=True):
    name: str
    services: Mapping[str, ServiceSpec]  # read-only, in file order
    source: str = ""

    def qualified(self, service: str) -> str:
        """The service's name in the registry, the proxy and Docker: ``<app>.<service>``."""
        return f"{self.name}.{self.services[service].name}"

    @property
    def endpoints(self) -> dict[str, str]:
        """Internal endpoint name -> the service that answers it."""
        return {s.endpoint: s.name for s in self.services.values() if s.endpoint}


class AppSpecError(UsageError):
    """An invalid application file (exit 2); ``problems`` holds every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {problems[0]}{more}")


# -- reading ----------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        line = f"{where}: {message}" if where else message
        self.items.append(line if len(line) <= MAX_PROBLEM else line[:MAX_PROBLEM] + "...")

    def check(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or None after recording its UsageError at ``where``."""
        try:
            return fn(*args)
        except UsageError as exc:
            self.add(where, str(exc))
            return None


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> AppSpec:
    """Read and validate an application file, its values interpolated from ``environ`` (the
    process environment by default); ``AppSpecError`` lists every problem."""
    problems = _Problems()
    return _finish(_read_yaml(Path(path), problems), problems, str(path), environ)


def loads(text: str, source: str = "<text>", environ: Mapping[str, str] | None = None
          ) -> AppSpec:
    """As ``load``, from a string."""
    problems = _Problems()
    return _finish(_parse_yaml(text, problems), problems, source, environ)


def _finish(data: Any, problems: _Problems, source: str,
            environ: Mapping[str, str] | None) -> AppSpec:
    import os

    if data is not None and not problems.items:
        data = _interpolated(data, os.environ if environ is None else environ, "", problems)
        if problems.items:  # every interpolation problem; the values are validated after
            raise AppSpecError(source, problems.items)
    # data is None after an unreadable file, and for a document that is just ``null``
    spec = _parse(data, problems, source) if data is not None or not problems.items else None
    if problems.items or spec is None:
        raise AppSpecError(source, problems.items or ["not a valid application file"])
    return spec


def check_file(path: str | Path) -> list[str]:
    """Every problem of the file as ``FILE: WHERE: MESSAGE`` lines; empty when it is valid."""
    try:
        load(path)
    except AppSpecError as exc:
        return [f"{exc.source}: {p}" for p in exc.problems]
    return []


def _read_yaml(path: Path, problems: _Problems) -> Any:
    """A regular file's text: opened without blocking (a FIFO has no writer to wait for), then
    refused by its type when it is not a regular file."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        problems.add("", f"cannot read: {exc.strerror or exc}")
        return None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "of an unknown type")
            problems.add("", f"not a regular file ({kind})")
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        problems.add("", f"cannot read: {exc.strerror or exc}")
        return None
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        problems.add("", f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add("", f"not UTF-8 text (byte {exc.start})")
        return None
    return _parse_yaml(text, problems)


def _parse_yaml(text: str, problems: _Problems) -> Any:
    """YAML with PyYAML's safe loader; one document, bounded size, no duplicate keys."""
    import yaml

    if len(text) > MAX_BYTES:
        problems.add("", f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
        return None
    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            problems.add("", "empty file: expected a mapping with name and services")
            return None
        if not _check_nodes(node, problems):
            return None
        return loader.construct_document(node)  # after a duplicate key: the last one, as PyYAML
    except yaml.YAMLError as exc:
        problems.add("", "invalid YAML: " + " ".join(str(exc).split()))
    except RecursionError:
        problems.add("", f"nested more than {MAX_DEPTH} levels deep")
    finally:
        loader.dispose()
    return None


@functools.lru_cache(maxsize=1)
def _loader_class() -> Any:
    """PyYAML's safe loader with YAML 1.2's plain scalars, as Compose reads them: ``yes``/``on``,
    ``1:20``, ``010`` and dates stay strings; booleans are only true/false, integers decimal."""
    import yaml

    dropped = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp")

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present: faster

    class Loader(base):  # type: ignore[misc,valid-type]
        yaml_implicit_resolvers = {
            first: [(tag, rx) for tag, rx in resolvers if tag not in dropped]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                                 re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"),
                                 list("-+0123456789"))
    return Loader


def _check_nodes(root: Any, problems: _Problems) -> bool:
    """Count nodes with aliases expanded (False past MAX_NODES or MAX_DEPTH: unreadable); report
    duplicate keys (PyYAML would keep the last one silently)."""
    import yaml

    count = 0

    def walk(node: Any, where: str, depth: int) -> bool:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            problems.add("", f"more than {MAX_NODES} YAML nodes (aliases expanded)")
            return False
        if depth > MAX_DEPTH:
            problems.add(where, f"nested more than {MAX_DEPTH} levels deep")
            return False
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if name in seen:
                        problems.add(_join(where, name),
                                     f"duplicate key (line {key.start_mark.line + 1})")
                    seen.add(name)
                if not walk(key, where, depth + 1) or not walk(value, _join(where, name), depth + 1):
                    return False
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                if not walk(item, f"{where}[{i}]", depth + 1):
                    return False
        return True

    return walk(root, "", 0)


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


# -- interpolation ----------------------------------------------------------------------

MAX_NESTING = 8  # ${A:-${B:-...}} levels


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """One value interpolated as Compose does: ``$$`` is ``$``; ``$VAR`` and ``${VAR}`` its
    value; ``${VAR:-default}`` (unset or empty) and ``${VAR-default}`` (unset); ``${VAR:?msg}``
    and ``${VAR?msg}`` refuse with msg; ``${VAR:+alt}`` and ``${VAR+alt}``; defaults may nest.
    A ``$`` before anything else stays (a regex's ``$``). An unset variable without a default
    is a UsageError naming it (Compose would warn and pass an empty string). Linear time."""
    if "$" not in text:
        return text
    value, _ = _expand(text, 0, environ, 0, True)
    return value


def _expand(text: str, i: int, env: Mapping[str, str], depth: int, use: bool
            ) -> tuple[str, int]:
    """``text`` from ``i`` to its end (depth 0) or to the ``}`` closing a nested default
    (returned index just past it); ``use`` False only parses (a default that is not taken)."""
    out: list[str] = []
    n = len(text)
    while True:
        if depth:
            m = _DOLLAR_OR_BRACE_RE.search(text, i)
            j = m.start() if m else -1
        else:
            j = text.find("$", i)
        if j < 0:
            if depth:
                raise UsageError(f"invalid interpolation: no }} closes {text[:40]!r}")
            out.append(text[i:])
            return "".join(out), n
        out.append(text[i:j])
        if text[j] == "}":
            return "".join(out), j + 1
        nxt = text[j + 1] if j + 1 < n else ""
        if nxt == "$":
            out.append("$")
            i = j + 2
        elif nxt == "{":
            value, i = _braced(text, j + 2, env, depth, use)
            out.append(value)
        elif (m := _VAR_RE.match(text, j + 1)) is not None:
            out.append(_variable(m.group(), env, use))
            i = m.end()
        else:
            out.append("$")  # as Compose: a $ before anything else stays
            i = j + 1


def _braced(text: str, i: int, env: Mapping[str, str], depth: int, use: bool
            ) -> tuple[str, int]:
    """``${...}`` from just after ``${``: its value and the index past its ``}``."""
    m = _VAR_RE.match(text, i)
    if m is None:
        raise UsageError(f"invalid interpolation {text[i - 2:i + 20]!r}: use ${{NAME}} with "
                         "NAME of [A-Za-z_][A-Za-z0-9_]*, or $$ for a literal $")
    name, i = m.group(), m.end()
    if text.startswith("}", i):
        return _variable(name, env, use), i + 1
    op = text[i:i + 2] if text.startswith(":", i) else text[i:i + 1]
    if op not in (":-", "-", ":?", "?", ":+", "+"):
        raise UsageError(f"invalid interpolation {text[i - len(name) - 2:i + 20]!r}: after "
                         "${NAME use }, :-, -, :?, ?, :+ or +")
    if depth >= MAX_NESTING:
        raise UsageError(f"interpolation nested more than {MAX_NESTING} levels deep")
    value = env.get(name)
    unset = value is None or (op.startswith(":") and value == "")
    taken = use and (unset if op[-1] in "-?" else not unset)
    arg, end = _expand(text, i + len(op), env, depth + 1, taken)
    if not use:
        return "", end
    if op[-1] == "-":
        return (arg if unset else str(value)), end
    if op[-1] == "+":
        return ("" if unset else arg), end
    if unset:
        raise UsageError(f"required variable {name} is "
                         + ("empty" if value == "" else "not set") + (f": {arg}" if arg else ""))
    return str(value), end


def _variable(name: str, env: Mapping[str, str], use: bool) -> str:
    if not use:
        return ""
    if name not in env:
        raise UsageError(f"variable {name} is not set (set it, or give a default: "
                         f"${{{name}:-default}})")
    return env[name]


_INTEGERS = ("scale", "replicas")  # a number after interpolation, as Compose casts it


def _interpolated(data: Any, env: Mapping[str, str], where: str, problems: _Problems) -> Any:
    """Every string value of the document interpolated (keys are not, as in Compose)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            at = _join(where, key)
            new = _interpolated(value, env, at, problems)
            if (key in _INTEGERS and isinstance(value, str) and "$" in value
                    and isinstance(new, str) and new.isascii() and new.isdigit()):
                new = int(new)
            out[key] = new
        return out
    if isinstance(data, list):
        return [_interpolated(v, env, f"{where}[{i}]", problems) for i, v in enumerate(data)]
    if isinstance(data, str) and "$" in data:
        found = problems.check(where, interpolate, data, env)
        return data if found is None else found
    return data


# -- validating -------------------------------------------------------------------------


def _unsupported(problems: _Problems, where: str, key: Any) -> None:
    hint = _HINTS.get(str(key))
    problems.add(_join(where, key), "not supported by bluegreen" + (f" ({hint})" if hint else ""))


def _keys(mapping: dict[Any, Any], allowed: tuple[str, ...], where: str,
          problems: _Problems) -> bool:
    """Refuse keys outside ``allowed`` (``x-*`` extensions are allowed, as in Compose)."""
    ok = True
    for key in mapping:
        if not isinstance(key, str):
            problems.add(where, f"key {key!r} is not a string")
            ok = False
        elif key not in allowed and not key.startswith("x-"):
            _unsupported(problems, where, key)
            ok = False
    return ok


def _scalar(value: Any, where: str, problems: _Problems) -> str | None:
    """A label or environment value as Compose passes it: strings, whole numbers, booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        text = str(value)
        if "\x00" in text:
            problems.add(where, "NUL byte in value")
            return None
        return text
    if value is None:
        problems.add(where, "no value (taking it from the deploying shell is not supported)")
    else:
        problems.add(where, f"use a string, not {type(value).__name__} (quote it)")
    return None


def _pairs(value: Any, where: str, problems: _Problems, what: str,
           key_check: Callable[[str], Any]) -> dict[str, str]:
    """``environment`` or ``labels``: a mapping, or a list of ``KEY=VALUE`` strings."""
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, val in value.items():
            if not isinstance(key, str):
                problems.add(where, f"{what} key {key!r} is not a string")
            else:
                items.append((key, val))
    elif isinstance(value, list):
        seen: set[str] = set()
        for i, entry in enumerate(value):
            if not isinstance(entry, str) or "=" not in entry:
                problems.add(f"{where}[{i}]", f"use KEY=VALUE, not {entry!r}")
                continue
            key, _, val = entry.partition("=")
            if key in seen:
                problems.add(_join(where, key), "given twice")
            seen.add(key)
            items.append((key, val))
    else:
        problems.add(where, "use a mapping or a list of KEY=VALUE")
    out: dict[str, str] = {}
    for key, val in items:
        at = _join(where, key)
        if problems.check(at, key_check, key) is None:
            continue
        text = _scalar(val, at, problems)
        if text is not None:
            out[key] = text
    return out


def _env_key(key: str) -> str:
    return validate.matching(_ENV_KEY_RE, key, "environment variable name",
                             "use [A-Za-z_][A-Za-z0-9_]*")


def _label_key(key: str) -> str:
    if not key.startswith("bluegreen."):
        raise UsageError("not supported by bluegreen (only bluegreen.* labels are read; "
                         "container labels are not applied)")
    if key not in LABELS:
        raise UsageError("unknown bluegreen label (known: " + ", ".join(LABELS) + ")")
    return key


def _endpoint(value: str) -> str:
    if len(value) > 253 or not _ENDPOINT_RE.fullmatch(value) or _IPV4_RE.fullmatch(value):
        raise UsageError(f"invalid endpoint {value!r}: use a lowercase host name such as "
                         "servicea.local")
    return validate.host(value)


def _replicas(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"invalid scale {value!r}: use a whole number from 1 to 64")
    return validate.scale(value)


def _status(value: str) -> int:
    return validate.bounded_int(value, "expected status", 100, 599)


def _boolean(value: str) -> bool:
    if value not in ("true", "false"):
        raise UsageError(f"invalid value {value!r}: use \"true\" or \"false\"")
    return value == "true"


def _regex(value: str) -> str:
    if len(value) > 1000:
        raise UsageError("regular expression longer than 1000 characters")
    try:
        re.compile(value)
    except re.error as exc:
        raise UsageError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _parse(data: Any, problems: _Problems, source: str) -> AppSpec | None:
    if not isinstance(data, dict):
        problems.add("", "the document must be a mapping with name and services")
        return None
    _keys(data, ("name", "services"), "", problems)
    name = data.get("name")
    if name is None:
        problems.add("name", "missing (the application's name keys its release records)")
    elif not isinstance(name, str) or not _APP_RE.fullmatch(name) or len(name) > 40:
        problems.add("name", f"invalid application name {name!r}: use [a-z0-9][a-z0-9_-]*, "
                     "at most 40 characters")
        name = None
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        problems.add("services", "missing or empty: give at least one service")
        return None
    if len(services) > MAX_SERVICES:
        problems.add("services", f"more than {MAX_SERVICES} services")
        return None
    parsed: dict[str, ServiceSpec] = {}
    for key, body in services.items():
        spec = _service(key, body, problems, str(name or "app"))
        if spec is not None:
            parsed[spec.name] = spec
    _check_cross(parsed, problems)
    if problems.items or name is None:
        return None
    return AppSpec(name, types.MappingProxyType(parsed), source)


def _service(key: Any, body: Any, problems: _Problems, app: str) -> ServiceSpec | None:
    where = _join("services", key)
    if not isinstance(key, str):
        problems.add("services", f"service name {key!r} is not a string")
        return None
    name_ok = problems.check(where, validate.service, key) is not None
    if not name_ok and key.lower() != key and validate.SERVICE_RE.fullmatch(key.lower()):
        problems.items[-1] += f" (use {key.lower()!r})"
    if name_ok and len(f"{app}.{key}") > 63:
        problems.add(where, f"'{app}.{key}' is longer than 63 characters")
        name_ok = False
    if not isinstance(body, dict):
        problems.add(where, "use a mapping with image, environment, deploy, labels")
        return None
    _keys(body, ("image", "environment", "deploy", "scale", "labels"), where, problems)

    image = body.get("image")
    if image is None:
        problems.add(_join(where, "image"), "missing (bluegreen deploys images)")
    else:
        image = problems.check(_join(where, "image"), validate.image, image)
    env = _pairs(body.get("environment", {}), _join(where, "environment"), problems,
                 "environment", _env_key)
    for var, value in list(env.items()):
        if (bad := _CONTROL_RE.search(value)) is not None:
            char = {"\n": "a newline", "\r": "a carriage return"}.get(
                bad.group(), f"control character U+{ord(bad.group()):04X}")
            problems.add(_join(_join(where, "environment"), var),
                         f"{char} in the value of {var} of service {key} (environment values "
                         "are one line)")
            del env[var]
    labels = _pairs(body.get("labels", {}), _join(where, "labels"), problems, "label", _label_key)
    scale = _scale(body, where, problems)
    fields = _labels(labels, _join(where, "labels"), problems)
    if not name_ok or image is None or scale is None or fields is None:
        return None
    return ServiceSpec(name=key, image=image, env=tuple(sorted(env.items())), scale=scale, **fields)


def _scale(body: dict[str, Any], where: str, problems: _Problems) -> int | None:
    replicas = None
    deploy = body.get("deploy")
    if deploy is not None:
        if not isinstance(deploy, dict):
            problems.add(_join(where, "deploy"), "use a mapping with replicas")
            return None
        _keys(deploy, ("replicas",), _join(where, "deploy"), problems)
        if "replicas" in deploy:
            replicas = problems.check(_join(where, "deploy.replicas"), _replicas, deploy["replicas"])
    scale = None
    if "scale" in body:
        scale = problems.check(_join(where, "scale"), _replicas, body["scale"])
    if ("scale" in body and scale is None) or (deploy and "replicas" in deploy and replicas is None):
        return None
    if scale is not None and replicas is not None and scale != replicas:
        problems.add(_join(where, "scale"), f"{scale} differs from deploy.replicas {replicas}")
        return None
    return scale or replicas or 1


def _labels(labels: dict[str, str], where: str, problems: _Problems) -> dict[str, Any] | None:
    """The ServiceSpec fields said by ``bluegreen.*`` labels; None after a problem."""
    before = len(problems.items)

    def get(label: str, fn: Callable[[str], Any]) -> Any:
        return problems.check(_join(where, label), fn, labels[label]) if label in labels else None

    def words(label: str, fn: Callable[[str], Any]) -> tuple[Any, ...]:
        found = [problems.check(_join(where, label), fn, w) for w in labels.get(label, "").split()]
        return tuple(w for w in found if w is not None)

    route = get("bluegreen.route", validate.location)
    endpoint = get("bluegreen.endpoint", _endpoint)
    port = get("bluegreen.port", validate.port)
    health = get("bluegreen.health-path", validate.http_path)
    paths = words("bluegreen.test.http", validate.http_path)
    status = get("bluegreen.test.expect-status", _status)
    body = get("bluegreen.test.expect-body", _regex)
    deps = words("bluegreen.depends-on", _endpoint)
    sticky = get("bluegreen.sticky", _boolean)
    routed = "bluegreen.route" in labels or "bluegreen.endpoint" in labels
    if not routed:
        for label in ("bluegreen.test.http", "bluegreen.test.expect-status",
                      "bluegreen.test.expect-body"):
            if label in labels:
                problems.add(_join(where, label), "a worker (no bluegreen.route or "
                             "bluegreen.endpoint) has no route to test through")
        if "bluegreen.health-path" in labels and "bluegreen.port" not in labels:
            problems.add(_join(where, "bluegreen.health-path"), "needs bluegreen.port")
        if sticky:
            problems.add(_join(where, "bluegreen.sticky"), "a worker (no bluegreen.route or "
                         "bluegreen.endpoint) serves no client to keep")
    if len(problems.items) > before:
        return None
    if routed and port is None:
        port = DEFAULT_PORT
    return {"port": port, "endpoint": endpoint, "route": route, "health_path": health or "/",
            "depends_on": deps, "sticky": bool(sticky),
            "tests": HttpTests(paths, status if status is not None else 200, body)}


def _url_hosts(env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(variable, host) of every URL in the environment values; linear in their size."""
    for key, value in env.items():
        if "://" not in value:
            continue
        for run in _SCHEME_RUN_RE.finditer(value):
            if _LETTER_RE.search(value, run.start(), run.end() - 3) is None:
                continue  # no letter to start a scheme
            host = _URL_HOST_RE.match(value, run.end())
            if host is not None:
                yield key, host.group(1).lower()


def _check_cross(services: dict[str, ServiceSpec], problems: _Problems) -> None:
    """Unique endpoints and routes; every endpoint a service calls is declared."""
    endpoints: dict[str, str] = {}
    routes: dict[str, str] = {}
    for s in services.values():
        for value, seen, label in ((s.endpoint, endpoints, "endpoint"), (s.route, routes, "route")):
            if value is None:
                continue
            if value in seen:
                problems.add(f"services.{s.name}.labels.bluegreen.{label}",
                             f"{value!r} is already the {label} of service {seen[value]}")
            else:
                seen[value] = s.name
    domains = {e.rsplit(".", 1)[1] for e in endpoints if "." in e}
    found: dict[str, tuple[str, ...]] = {}
    for s in services.values():
        for dep in s.depends_on:
            if dep not in endpoints:
                problems.add(f"services.{s.name}.labels.bluegreen.depends-on",
                             f"no service declares endpoint {dep!r} (bluegreen.endpoint)")
        calls = list(s.depends_on)
        for key, host in _url_hosts(s.environment):
            if host in endpoints:
                calls.append(host)
            elif "." in host and host.rsplit(".", 1)[1] in domains:
                problems.add(f"services.{s.name}.environment.{key}",
                             f"no service declares endpoint {host!r} (bluegreen.endpoint)")
        found[s.name] = tuple(sorted(set(calls)))
    for s in list(services.values()):
        if found[s.name] != s.depends_on:
            services[s.name] = replace(s, depends_on=found[s.name])


# -- the plan of a release --------------------------------------------------------------


class ServicePlan(Record, frozen=True):
    """What a release does to one service."""

    name: str
    action: str  # new | change | keep | remove
    reasons: tuple[str, ...] = ()  # why it changes, e.g. "image a:1 -> a:2"
    live_color: str | None = None
    color: str | None = None  # the color that serves it after the release (None: removed)
    kind: str = "routed"  # routed | worker (ServiceSpec.kind)

    def describe(self) -> str:
        """The plan's line for this service, as ``app deploy`` and its dry run print it."""
        line = self.name + " " + self.action
        if self.reasons:
            line += f" ({'; '.join(self.reasons)})"
        if self.action != "keep":
            line += f" {self.live_color or '-'} -> {self.color or '-'}"
        if self.action == "remove":
            line += (" [serves until promotion, then leaves the proxy and stops]"
                     if self.kind == "routed" else " [stops at promotion]")
        elif self.kind == "worker" and self.action != "keep":
            line += " [worker: swapped at promotion, not blue-green]"
        return line


class Plan(Record, frozen=True):
    app: str
    services: tuple[ServicePlan, ...]

    def named(self, action: str) -> tuple[str, ...]:
        return tuple(s.name for s in self.services if s.action == action)

    @property
    def new(self) -> tuple[str, ...]:
        return self.named("new")

    @property
    def changed(self) -> tuple[str, ...]:
        return self.named("change")

    @property
    def kept(self) -> tuple[str, ...]:
        """Unchanged services: shared by the old and the new release."""
        return self.named("keep")

    @property
    def removed(self) -> tuple[str, ...]:
        return self.named("remove")

    @property
    def nothing(self) -> bool:
        return all(s.action == "keep" for s in self.services)


def changed(spec: AppSpec, live: Mapping[str, Mapping[str, Any]]) -> Plan:
    """Compare each service's image, environment and scale (and port and health path when the
    live record has them) with the live release record ``{service: {image, env, scale, color,
    ...}}``. A changed or new service gets the next color; a kept one keeps its live color."""
    plans = []
    for s in spec.services.values():
        record = live.get(s.name)
        if record is None:
            plans.append(ServicePlan(s.name, "new", ("not in the live release",), None,
                                     model.next_color(None), s.kind))
            continue
        live_color = record.get("color")
        reasons = tuple(_differences(s, record))
        if reasons:
            plans.append(ServicePlan(s.name, "change", reasons, live_color,
                                     model.next_color(live_color), s.kind))
        else:
            plans.append(ServicePlan(s.name, "keep", (), live_color, live_color, s.kind))
    for name, record in live.items():
        if name not in spec.services:
            plans.append(ServicePlan(name, "remove", ("not in the file",), record.get("color"),
                                     None, kind_of(record)))
    return Plan(spec.name, tuple(plans))


def kind_of(record: Mapping[str, Any]) -> str:
    """``routed`` or ``worker``: a release record's service, as ``ServiceSpec.kind``."""
    return "routed" if record.get("route") or record.get("endpoint") else "worker"


def live_conflicts(spec: AppSpec, live: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What no release can do from ``live`` to this file (``app check`` cannot know: only
    the live release tells): a service that still calls the endpoint of a service the file
    removes; a service that takes the route or endpoint of another live service (removed or
    not: both serve during the release); a service that turns from routed to worker or back
    (remove it in one release, add it in the next)."""
    gone = {r["endpoint"]: name for name, r in live.items()
            if name not in spec.services and r.get("endpoint")}
    owners = {(kind, r[kind]): name for name, r in live.items()
              for kind in ("route", "endpoint") if r.get(kind)}
    found = []
    for s in spec.services.values():
        calls = set(s.depends_on) | {host for _, host in _url_hosts(s.environment)}
        found += [f"{s.name} calls {e}, the endpoint of {gone[e]}, which the file removes"
                  for e in sorted(calls & gone.keys())]
        for kind, value in (("route", s.route), ("endpoint", s.endpoint)):
            owner = owners.get((kind, value))
            if value and owner and owner != s.name:
                how = ("which the file removes (it serves until promotion)"
                       if owner not in spec.services else "in the live release")
                found.append(f"{s.name} takes {kind} {value} of {owner}, {how}: the proxy "
                             f"cannot serve both; move it in two releases")
        was = kind_of(live[s.name]) if s.name in live else s.kind
        if was != s.kind:
            found.append(f"{s.name} would turn from {was} to {s.kind}: remove it in one "
                         f"release and add it in the next")
    return found


def _differences(s: ServiceSpec, record: Mapping[str, Any]) -> Iterator[str]:
    if record.get("color") not in model.COLORS:
        yield f"live color {record.get('color')!r} unknown"
    if record.get("image") != s.image:
        yield f"image {record.get('image')} -> {s.image}"
    live_env = record.get("env")
    if not isinstance(live_env, Mapping):
        yield "environment not recorded"
    else:
        keys = sorted(set(live_env) | set(s.environment))
        mine = s.environment
        diff = [k for k in keys if k not in mine or k not in live_env
                or live_env[k] not in (mine[k], env_digest(mine[k]))]
        if diff:
            yield "environment " + ", ".join(diff)  # names only: values may be secrets
    if record.get("scale") != s.scale:
        yield f"scale {record.get('scale')} -> {s.scale}"
    for key in ("port", "health_path"):
        if key in record and record[key] != getattr(s, key):
            yield f"{key} {record[key]} -> {getattr(s, key)}"


# -- version-consistent chains ---------------------------------------------------------


def chain_routes(spec: AppSpec, plan: Plan, weight: int) -> dict[tuple[str, str], dict[str, dict]]:
    """Where each caller's containers reach each internal endpoint at step ``weight`` (0-100).

    Returns ``{(caller, caller_color): {endpoint: {callee_color: weight}}}``. The rule: a caller
    color that belongs to the new release reaches the callee's new color, one of the old release
    the callee's old color, and an unchanged (shared) caller both, by ``weight``; an unchanged
    callee has one color for everybody. So a request never mixes releases along a chain."""
    validate.weight(weight)
    by = {p.name: p for p in plan.services}
    table: dict[tuple[str, str], dict[str, dict]] = {}
    for caller in spec.services.values():
        cp = by[caller.name]
        sides = {"keep": {cp.color: "shared"}, "new": {cp.color: "new"},
                 "change": {cp.live_color: "old", cp.color: "new"}}[cp.action]
        for color, side in sides.items():
            routes = {}
            for endpoint in caller.depends_on:
                tp = by[spec.endpoints[endpoint]]
                if tp.action == "keep" or tp.live_color is None or side == "new":
                    routes[endpoint] = {tp.color: 100}
                elif side == "old":
                    routes[endpoint] = {tp.live_color: 100}
                else:
                    routes[endpoint] = {k: v for k, v in ((tp.live_color, 100 - weight),
                                                          (tp.color, weight)) if v}
            if routes and color:
                table[(caller.name, color)] = routes
    return table


def per_color_conflicts(table: dict[tuple[str, str], dict[str, dict]]) -> list[str]:
    """With one internal listener per caller color, callers of one color must agree on every
    endpoint; the disagreements (empty: one listener per color is enough for this release)."""
    seen: dict[tuple[str, str], tuple[str, dict]] = {}
    conflicts = []
    for (caller, color), routes in table.items():
        for endpoint, target in routes.items():
            first = seen.setdefault((color, endpoint), (caller, target))
            if first[1] != target:
                conflicts.append(f"{color} callers of {endpoint}: {first[0]} needs {first[1]}, "
                                 f"{caller} needs {target}")
    return conflicts


# -- the command ------------------------------------------------------------------------


def cmd_app_check(opts: dict[str, Any]) -> int:
    """``bluegreen app check --file F``: validate without contacting anything; exit 0 or 2
    with one line per problem on stderr. ``--json`` names the release's phases (for one
    Jenkins stage per phase: blueGreenDeployApp)."""
    import json
    import sys

    path = opts.get("file")
    if not path:
        raise UsageError("app check needs --file FILE")
    try:
        spec = load(validate.directory(path, "--file"))
    except AppSpecError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        if opts.get("json"):
            print(json.dumps({"file": exc.source, "valid": False, "problems": exc.problems},
                             indent=2))
        return int(exc.status)
    summary = {"file": str(path), "valid": True, "name": spec.name,
               "services": {s.name: s.kind for s in spec.services.values()},
               "phases": list(model.PHASES)}  # what app deploy --until / app resume go through
    if opts.get("json"):
        print(json.dumps(summary, indent=2))
    else:
        kinds = ", ".join(f"{s.name} ({s.kind})" for s in spec.services.values())
        print(f"{path}: ok: application {spec.name}: {kinds}")
    return 0
