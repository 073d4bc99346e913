"""nginx without reloads: each service's servers live in a Lua shared dict, set by a POST.

nginx (Debian's, with ``libnginx-mod-http-lua`` and ``lua-cjson``) includes one generated file
in ``http {}`` (:func:`render_http`): per service an ``upstream`` whose ``balancer_by_lua``
picks a peer per request (smooth weighted round robin, retrying another peer on a connection
failure), per internal endpoint a server on the internal listener whose upstream's balancer
keeps the callers of each release on that release (chains), and a control server on
loopback or a unix socket (``resources/nginx/dynamic/``).

The public surface:

- :class:`DynamicControl` posts the full routes of one or more services in one request, all
  applied or none, and reads what nginx serves. It records the routes in the state file
  first (a journal line, :mod:`bluegreen.proxy.dynamic_state`), from which nginx restores
  them when it (re)starts, and checks the read-back in the POST's answer (``served``).
- :class:`DynamicProxy` adds that a service or an internal endpoint new to nginx (or removed
  from it, or a location changed) is a config change: render, ``nginx -t``, reload, restore on
  failure. Everything else (servers, weights, chains) is a POST.

Control protocol (``CONTROL_PATH`` on the control listener). Every request carries the
control secret in ``X-Bluegreen-Secret`` (:func:`ensure_secret`; nginx's master reads the
file at start and reload): without it 403, and 503 when nginx has no secret loaded; a request
with an ``Origin`` header is refused (403), a POST that is not ``application/json`` too (415);
JSON is strict (what Python's ``json`` refuses is refused).

- ``POST {"services": {NAME: [{"address": IPv4, "port": 1-65535, "weight": 0-100,
  "color": "blue"|"green" (optional: what its responses are counted as)}, ...]},
  "chains": {NAME: [{"side": "new"|"old", "color": "blue"|"green", "callers": [IPv4, ...],
  "servers": [...]}, ...]}}``: every named service gets exactly these servers (at least one
  with weight > 0) and these chains (none when not named; only for a service with an
  internal endpoint: a request entering it from a caller's address goes to that chain's
  servers); services not named keep theirs. ``"releases": {NAME: {"new": "blue"|"green",
  "weight": 0-100, "sticky": true|false}}`` (optional, only of posted services, each of
  whose servers then carry their color, both colors present; none when not named): the split
  of a release, derived by :func:`release_of` from the route's color, weight and ``sticky``
  (a weight-0 route lists the new color's servers at weight 0). Sticky: a request without a
  valid ``bg_bucket`` cookie ("0".."99"; anything else counts as none) gets a random bucket,
  set on its response (``Path=/; HttpOnly; SameSite=Lax``), and every request is served by
  the new color's servers when its bucket is below the weight, else by the old color's: a
  rising weight moves clients from old to new only; clients that never send the cookie back
  get a new bucket each time (per-request weights). The state file records the releases too
  (nginx restores them). Sticky is the dynamic mode's only: the reload mode routes by weights.
  200 ``{"generation": G, "services": <applied>, "chains": <applied>, "releases":
  <applied>, "served": <as GET ?services= of the posted services, read from the dict after
  the change>}``; 400 ``{"error": ...}`` for any invalid payload (unknown service or key, bad
  value, malformed JSON), and nothing changes; 507 when the change lock stays held
  5 s or the shared dict cannot hold the new routes (nothing changes: routes are never
  evicted).
- ``GET``: 200 ``{"generation": G, "services": {...}, "chains": {...}, "releases": {...},
  "known": [NAME...], "endpoints": [NAME...], "workers": [{"id", "pid", "generation"}...],
  "active": {"ADDRESS:PORT": N}}``: each worker's generation is the one it routes with (a
  worker checks the generation on every request and every second); ``active`` counts the
  requests in flight per peer (draining).
- ``GET ?services=NAME,NAME...``: 200 ``{"generation": G, "services": {...}, "chains":
  {...}, "releases": {...}, "workers": [...]}`` of those services only (what a change reads
  back: its cost does not grow with the services nginx holds); 400 for a name that is not a
  valid service name, not a service of this nginx, or named twice, and for any other query
  argument.
- ``GET ?view=figures``: 200 ``{"epoch": E, "bounds": LATENCY_BOUNDS_MS, "figures": {NAME:
  {COLOR: {"requests", "errors", "failures", "buckets": [...]}}}}``: what nginx counted per
  service and color (log_by_lua, the shared dict ``bluegreen_figures``, sized by
  :func:`figures_size_for` so nothing is evicted) since epoch ``E``, which a reload keeps and a
  restart changes (:class:`bluegreen.model.Counts`). Each worker counts in a Lua table (no
  lock per request) and adds its counts to the dict every 0.25 s, when it exits (a reload or
  a stop: nothing it counted is lost) and, for the worker answering it, at the GET; the GET
  answers once every current worker has added its counts after the GET began: it holds every
  request logged before it and takes up to 0.25 s. Bounds: a worker whose timer runs over 1 s
  late (blocked) is read as it last added; during a reload, the workers being replaced add
  theirs when the master tells them to exit (milliseconds after the new ones start). A
  gate's window of seconds is unaffected (both its readings wait alike).

Preview (``--preview-secret``, from ``BLUEGREEN_PREVIEW_SECRET`` or the config file only):
bluegreen writes the secret to an owner-only file beside the state file (:func:`preview_path`;
removed when no secret is given), which nginx's master reads at start and reload (a changed
secret: a checked reload before the change). A request with ``X-Bluegreen-Preview: <secret>``
(compared in constant time), or with the cookie ``bg_preview`` that a request with
``?bluegreen-preview=<secret>`` gets (an HMAC of the secret, ``Path=/; HttpOnly;
SameSite=Lax``), is served by the new color of a service in a release at any weight, 0
included. Without a secret the header, the cookie and the query do nothing. The secret never
reaches a backend: the Lua's rewrite phase (http level) takes the header out and answers the
preview URL with a 302 to itself without the secret, setting the cookie. nginx's access log
records a preview URL's query as it records any URL: use the header, or a log format without
the query, where that matters.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from bluegreen import templates, validate, wire
from bluegreen.errors import OperationFailed, Unreachable, UsageError, redact
from bluegreen.model import COLORS, LATENCY_BOUNDS_MS, Chain, Counts, Route, Server, Serving
from bluegreen.proxy import dynamic_state
from bluegreen.proxy.base import Proxy
from bluegreen.proxy.dynamic_state import (
    Undo,
    journal_path,
    last_good_path,
    merged_state,
    read_document,
    releases_of,
    state_lock,
)
from bluegreen.proxy.nginx import (
    NginxController,
    apply_files,
    files_diff,
    located,
    read_text,
)
from bluegreen.record import replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONTROL_PATH = "/bluegreen/routes"
INCLUDE_NAME = "_bluegreen-dynamic.conf"  # a service name cannot start with '_'
MODULES_DIR = "/usr/lib/nginx/modules"
MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")  # Debian's, in this order
DEFAULT_WEIGHT = 100  # a Server without a weight
MAX_CALLERS = 1024  # addresses of one chain (as the Lua side)
SIDES = ("new", "old")
_PATH_RE = re.compile(r"/[A-Za-z0-9._/@+-]*")
_SIZE_RE = re.compile(r"[1-9][0-9]{0,5}[km]")
_SERVICE_LINE_RE = re.compile(r"^# service (?P<name>\S+)(?: endpoint=(?P<endpoint>\S+))?$", re.M)
MAX_QUERY = 4000  # a read-back's "?services=..." (nginx's request line: 8 KiB by default)
SECRET_HEADER = "X-Bluegreen-Secret"  # noqa: S105 (a header name)
_SECRET_RE = re.compile(r"[0-9a-f]{64}")
_PREVIEW_RE = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")  # as the Lua reads it
DICT_BASE_KB, DICT_SERVICE_KB, DICT_ENDPOINT_KB = 256, 4, 64  # the routes' dict, per route
FIGURES_BASE_KB, FIGURES_SERVICE_KB = 64, 8  # the counts' dict: 2 colors x 15 counts a service
# the routing table adds services by a POST: both dicts start with room for some 4,000
# services (a dict that must grow is a checked reload), reserved, touched only as they fill
TABLE_DICT_KB = 32 * 1024


def _stderr(line: str) -> None:
    print(redact(line), file=sys.stderr, flush=True)


# -- configuration ------------------------------------------------------------------------


def safe_path(value: str | os.PathLike[str], what: str) -> str:
    """An absolute path of ``[A-Za-z0-9._/@+-]`` without ``..``: safe in an nginx/Lua string."""
    text = str(value)
    if not _PATH_RE.fullmatch(text) or "/../" in text + "/":
        raise UsageError(f"invalid {what} {text!r}: use an absolute path of [A-Za-z0-9._/@+-]")
    return text


def control_address(value: str) -> str:
    """``127.x.y.z:PORT`` or ``unix:/absolute/path``: the only places a control server listens."""
    if value.startswith("unix:"):
        return "unix:" + safe_path(value[5:], "control socket")
    host, _, port = value.rpartition(":")
    if not (validate.ipv4(host) or "").startswith("127."):
        raise UsageError(f"invalid control address {value!r}: use 127.0.0.1:PORT or unix:/path")
    return f"{host}:{validate.port(port, 'control port')}"


def load_module_lines(modules_dir: str = MODULES_DIR) -> str:
    """The main-context directives that load the Lua module (Debian's ``/etc/nginx/nginx.conf``
    does it through ``modules-enabled``; a private ``nginx.conf`` needs these)."""
    base = safe_path(modules_dir, "modules directory")
    return "".join(f"load_module {base}/{name};\n" for name in MODULES)


def lua_dir() -> str:
    """Where ``bluegreen_dynamic.lua`` is in this installation."""
    return os.path.join(templates.resource_root(), "nginx", "dynamic")


HTTP_TEMPLATE = "nginx/dynamic/http.conf.j2"
TABLE_TEMPLATE = "nginx/dynamic/table.conf.j2"
TABLE_NAME = "_bluegreen-table.conf"  # in include-dir (in server {}): the routing table's location
ROUTINGS = ("locations", "table")


def secret_path(state_file: str | os.PathLike[str]) -> str:
    """Where the control secret is kept by default: beside the state file."""
    return os.path.splitext(os.fspath(state_file))[0] + ".secret"


def preview_path(state_file: str | os.PathLike[str]) -> str:
    """Where the preview secret is kept for nginx (owner-only): beside the state file."""
    return os.path.splitext(os.fspath(state_file))[0] + ".preview"


def check_preview_secret(value: str | None) -> str | None:
    """A preview secret (16-256 of ``[A-Za-z0-9._~+/=-]``), taken out of every message
    bluegreen prints; None (no preview) for none."""
    if not value:
        return None
    if not _PREVIEW_RE.fullmatch(value):  # the message never shows the value
        raise UsageError("invalid preview secret (BLUEGREEN_PREVIEW_SECRET): use 16 to 256 "
                         "characters of A-Z a-z 0-9 . _ ~ + / = -")
    from bluegreen.errors import add_secret

    add_secret(value)
    return value


def write_private(path: str | os.PathLike[str], text: str | None) -> None:
    """Write (``None``: remove) an owner-only file atomically."""
    path = os.fspath(path)
    if text is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_secret(path: str | os.PathLike[str]) -> str | None:
    """The control secret of ``path`` (None when there is none); refused when other users can
    read the file. Taken out of every message bluegreen prints."""
    from bluegreen.errors import add_secret

    try:
        with open(path) as fh:
            mode = os.fstat(fh.fileno()).st_mode
            text = fh.read(200).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OperationFailed(f"cannot read the control secret file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise OperationFailed(f"the control secret file {path} is open to other users: "
                              f"chmod 600 it (or remove it: bluegreen writes a new one)")
    if not _SECRET_RE.fullmatch(text):
        raise OperationFailed(f"the control secret file {path} does not hold a bluegreen secret "
                              f"(remove it: bluegreen writes a new one)")
    add_secret(text)
    return text


def ensure_secret(path: str | os.PathLike[str]) -> str:
    """The control secret of ``path``, created (random, owner-only, atomically) when missing."""
    found = read_secret(path)
    if found:
        return found
    import binascii

    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(binascii.hexlify(os.urandom(32)).decode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process made one first: use it
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return read_secret(path) or ""


def private_socket_dir(control: str) -> None:
    """For a unix-socket control address: its directory exists and only its owner can enter
    it (nginx creates the socket itself ``srw-rw-rw-``)."""
    if not control.startswith("unix:"):
        return
    where = os.path.dirname(control[5:])
    os.makedirs(where, mode=0o700, exist_ok=True)
    st = os.stat(where)
    if st.st_mode & 0o077:
        raise UsageError(f"the control socket's directory {where} is open to other users: use a "
                         f"directory only its owner can enter (chmod 700 {where})")


def _stepped(need_kb: int) -> str:
    """The least power of two megabytes (1m at least) that holds ``need_kb``: a dict's size
    changes only when the need crosses one, so adding a service (a reload) keeps the dicts
    (nginx gives a shared dict of a new size a new, empty zone)."""
    mb = 1
    while mb * 1024 < need_kb:
        mb *= 2
    return f"{mb}m"


def _at_least(size: str, kb: int) -> str:
    """A dict size of ``size`` (``512k``, ``8m``), or ``kb`` kilobytes when more."""
    if not kb or not _SIZE_RE.fullmatch(size):
        return size
    given = int(size[:-1]) * (1024 if size.endswith("m") else 1)
    return size if given >= kb else f"{kb // 1024}m"


def dict_size_for(services: int, endpoints: int, minimum: str = "1m") -> str:
    """The routes' shared dict for that many services and internal endpoints (``minimum``
    at least): room for two copies of the routes (a change writes the new one first)."""
    if not _SIZE_RE.fullmatch(minimum):
        raise UsageError(f"invalid shared dict size {minimum!r}: use e.g. 1m or 512k")
    given = int(minimum[:-1]) * (1024 if minimum.endswith("m") else 1)
    need = DICT_BASE_KB + DICT_SERVICE_KB * services + DICT_ENDPOINT_KB * endpoints
    return minimum if given >= need else _stepped(need)


def figures_size_for(services: int, minimum_kb: int = 0) -> str:
    """The counts' shared dict for that many services (at least 1m): room for every count of
    every service and color, so that none is ever evicted."""
    return _stepped(max(minimum_kb, FIGURES_BASE_KB + FIGURES_SERVICE_KB * services))


def render_http(services: Iterable[str], control: str, state_file: str | os.PathLike[str],
                dict_size: str = "1m", lua_path: str | os.PathLike[str] | None = None,
                endpoints: Mapping[str, str] | None = None,
                internal_listen: str = "172.17.0.1:80",
                secret_file: str | os.PathLike[str] | None = None, table: bool = False) -> str:
    """The http-level include: Lua settings, one upstream per service, the server of each
    internal endpoint (``endpoints``: service -> name, served on ``internal_listen``), the
    control server. ``lua_path``: the directory of ``bluegreen_dynamic.lua`` as nginx sees it
    (default :func:`lua_dir`; another for an nginx in a container or on another host).
    ``table``: the routing table (``services``: those with an internal endpoint only)."""
    return templates.render_keyed(HTTP_TEMPLATE, **http_context(
        services, control, state_file, dict_size, lua_path, endpoints, internal_listen,
        secret_file, table))


def http_context(services: Iterable[str], control: str, state_file: str | os.PathLike[str],
                 dict_size: str = "1m", lua_path: str | os.PathLike[str] | None = None,
                 endpoints: Mapping[str, str] | None = None,
                 internal_listen: str = "172.17.0.1:80",
                 secret_file: str | os.PathLike[str] | None = None,
                 table: bool = False, routed: int = 0) -> dict[str, Any]:
    """The validated values :func:`render_http` renders (``dict_size``: the least size of
    the routes' shared dict, grown with the number of services, or ``routed`` when more;
    ``secret_file``: default :func:`secret_path`)."""
    names = list(_checked_services(frozenset(services)))
    named = {validate.service(s): validate.host(e) for s, e in sorted((endpoints or {}).items())}
    if set(named) - set(names):
        raise UsageError(f"internal endpoints of unknown services: {', '.join(set(named) - set(names))}")
    host, _, port = internal_listen.rpartition(":")
    return {"services": names, "control_listen": control_address(control),
            "control_path": CONTROL_PATH, "state_file": safe_path(state_file, "state file"),
            "last_good_file": safe_path(last_good_path(state_file), "state file"),
            "journal_file": safe_path(journal_path(state_file), "state file"),
            "last_good_journal_file": safe_path(journal_path(last_good_path(state_file)),
                                                "state file"),
            "secret_file": safe_path(secret_file or secret_path(state_file), "secret file"),
            "preview_file": safe_path(preview_path(state_file), "state file"),
            "lua_dir": safe_path(lua_path or lua_dir(), "Lua directory"),
            "dict_size": dict_size_for(max(len(names), routed), len(named),
                                       _at_least(dict_size, TABLE_DICT_KB if table else 0)),
            "figures_size": figures_size_for(max(len(names), routed),
                                             TABLE_DICT_KB if table else 0),
            "endpoints": named, "table": table,
            "table_file": TABLE_NAME,
            "internal_listen": f"{validate.host(host)}:{validate.port(port)}"}


@functools.lru_cache(maxsize=8)
def _checked_services(names: frozenset[str]) -> tuple[str, ...]:
    """The names, validated and sorted (kept: a switch at 1,000 services checks the same
    names on each change, 1.7 ms a time)."""
    return tuple(sorted(validate.service(s) for s in names))


_parsed_include: list[Any] = ["", set(), {}]  # the last include parsed, its services and endpoints


def _include_header(text: str | None) -> tuple[set[str], dict[str, str]]:
    """The services and internal endpoints of a rendered include (its header: one line per
    service); the last text's parse is kept (a change reads it several times: at 1,000 services
    each parse took 1.5-2.5 ms)."""
    text = text or ""
    last = _parsed_include
    if text != last[0]:
        services, endpoints = set(), {}
        for m in _SERVICE_LINE_RE.finditer(text):
            services.add(m.group("name"))
            if m.group("endpoint"):
                endpoints[m.group("name")] = m.group("endpoint")
        last = [text, services, endpoints]
        _parsed_include[:] = last
    return set(last[1]), dict(last[2])


def configured_services(text: str | None) -> set[str]:
    """The services of a rendered include (its header: one line per service)."""
    return _include_header(text)[0]


def configured_endpoints(text: str | None) -> dict[str, str]:
    """Service -> internal endpoint, of a rendered include (its header)."""
    return _include_header(text)[1]


# -- routes and the state file -------------------------------------------------------------


def _ipv4(address: str, port: int) -> str:
    validate.host(address)
    if validate.ipv4(address):
        return address
    if address.startswith("["):
        raise UsageError(f"invalid address {address!r}: the dynamic mode routes to IPv4 only")
    import socket  # a host name, not an address: rare (containers are addressed by IP)

    try:
        infos = socket.getaddrinfo(address, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise OperationFailed(f"cannot resolve {address}: {exc}") from exc
    return str(infos[0][4][0])


def _check_servers(service: str, servers: Sequence[Server]) -> list[dict[str, Any]]:
    """Servers as the payload has them: validated, host names resolved to IPv4 (nginx's
    balancer takes addresses only). A server without a weight gets ``DEFAULT_WEIGHT``."""
    entries, seen = [], set()
    for s in servers:
        port = validate.port(s.port)
        weight = DEFAULT_WEIGHT if s.weight is None else validate.weight(s.weight)
        address = _ipv4(s.address, port)
        if (address, port) in seen:
            raise UsageError(f"{service}: server {address}:{port} listed twice")
        seen.add((address, port))
        entries.append({"address": address, "port": port, "weight": weight}
                       | ({"color": validate.color(s.color)} if s.color else {}))
    if not any(e["weight"] > 0 for e in entries):
        raise UsageError(f"{service}: no server with a weight above 0")
    return entries


def check_routes(routes: Mapping[str, Sequence[Server]]) -> dict[str, list[dict[str, Any]]]:
    """The POST payload's ``services``: each service's servers, validated."""
    if not routes:
        raise UsageError("no service to route")
    return {validate.service(name): _check_servers(name, servers)
            for name, servers in routes.items()}


def check_chains(service: str, chains: Sequence[Chain]) -> list[dict[str, Any]]:
    """The POST payload's chains of one service: each side once, each caller an IPv4
    address (the caller container's, as nginx sees it) on one side only."""
    out, sides, callers = [], set(), set()
    for c in chains:
        if c.side not in SIDES or c.side in sides:
            raise UsageError(f"{service}: invalid chain side {c.side!r}: new or old, each once")
        sides.add(c.side)
        if not 0 < len(c.callers) <= MAX_CALLERS:
            raise UsageError(f"{service}: a chain needs 1 to {MAX_CALLERS} callers")
        for ip in c.callers:
            if not validate.ipv4(ip):
                raise UsageError(f"{service}: invalid caller {ip!r}: use an IPv4 address")
            if ip in callers:
                raise UsageError(f"{service}: caller {ip} listed twice")
            callers.add(ip)
        out.append({"side": c.side, "color": validate.color(c.color), "callers": list(c.callers),
                    "servers": _check_servers(service, c.servers)})
    return out


def check_payload(routes: Sequence[Route]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The POST payload (``services``, ``chains``) of routes that are not removals."""
    services = check_routes({r.service: r.servers for r in routes})
    chains = {}
    for r in routes:
        if r.chains and not r.endpoint:
            raise UsageError(f"{r.service}: chains need an internal endpoint")
        if r.chains:
            chains[r.service] = check_chains(r.service, r.chains)
    return services, chains


def route_colors(routes: Sequence[Route]) -> dict[str, dict[str, Any]]:
    """The state file's ``colors`` of routes: which color each service is routed to, at what
    weight, and ``sticky`` when it is (routes without a color have none)."""
    return {r.service: {"color": validate.color(r.color), "weight": validate.weight(r.weight)}
            | ({"sticky": True} if r.sticky else {}) for r in routes if r.color}


# -- the control client ---------------------------------------------------------------------


class DynamicControl:
    """Client of one nginx's control endpoint (``127.0.0.1:PORT`` or ``unix:/path``)."""

    def __init__(self, control: str, state_file: str | os.PathLike[str] | None = None,
                 timeout: float = 5.0, secret_file: str | os.PathLike[str] | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.control = control_address(control)
        self.state_file = os.fspath(state_file) if state_file else None
        self.secret_file = (os.fspath(secret_file) if secret_file else
                            secret_path(state_file) if state_file else None)
        self.timeout = timeout
        self.where = f"{self.control}{CONTROL_PATH}"
        self.say = say or _stderr
        self.damage: str | None = None  # what was wrong with the state file, last read

    def _request(self, method: str, body: bytes | None = None,
                 query: str = "") -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        secret = read_secret(self.secret_file) if self.secret_file else None
        if secret:
            headers[SECRET_HEADER] = secret
        try:
            status, data = wire.request(self.control, method, CONTROL_PATH + query, body,
                                        headers, self.timeout)
        except (ConnectionRefusedError, FileNotFoundError) as exc:  # nothing was sent
            raise Unreachable("nginx control endpoint", self.where,
                              exc.strerror or type(exc).__name__) from exc
        except OSError as exc:
            raise OperationFailed(f"nginx control endpoint {self.where}: {type(exc).__name__} "
                                  f"{exc} (the change may have been applied)") from exc
        try:
            doc = json.loads(data)
        except ValueError:
            raise OperationFailed(f"nginx control endpoint {self.where} answered "
                                  f"{status} without JSON") from None
        if status in (403, 503) and isinstance(doc, dict) and (
                SECRET_HEADER in str(doc.get("error")) or "secret" in str(doc.get("error"))):
            raise OperationFailed(f"nginx at {self.where} refused bluegreen's control secret "
                                  f"({status}: {doc.get('error')}); the secret file is "
                                  f"{self.secret_file}, which nginx reads when it (re)loads")
        return status, doc

    def read(self) -> dict[str, Any]:
        """What nginx serves: ``generation``, ``services``, ``chains``, ``known``,
        ``endpoints``, ``workers``, ``active``."""
        status, doc = self._request("GET")
        if status != 200:
            raise OperationFailed(f"nginx control endpoint {self.where}: {status} {doc.get('error')}")
        doc = _routes_view(doc)
        for key, kind in (("known", list), ("endpoints", list), ("active", dict)):
            doc[key] = kind(doc.get(key) or kind())  # Lua's cjson writes an empty list as {}
        return doc

    def read_services(self, names: Iterable[str]) -> dict[str, Any]:
        """What nginx serves for the services ``names`` only (``GET ?services=a,b``):
        ``generation``, ``services``, ``chains``, ``releases`` (of those services) and
        ``workers``; everything (:meth:`read`) when the names would not fit in one URL."""
        names = sorted(set(names))
        query = "?services=" + ",".join(validate.service(n) for n in names)
        if not names or len(query) > MAX_QUERY:
            return self.read()
        status, doc = self._request("GET", query=query)
        if status != 200:
            raise OperationFailed(f"nginx control endpoint {self.where}: {status} {doc.get('error')}")
        return _routes_view(doc)

    def figures(self) -> dict[str, Any]:
        """What nginx counted: ``epoch``, ``bounds`` (the latency buckets' upper bounds, ms)
        and ``figures`` (service -> color -> ``requests``, ``errors``, ``failures``,
        ``buckets``)."""
        status, doc = self._request("GET", query="?view=figures")
        if status != 200:
            raise OperationFailed(f"nginx control endpoint {self.where}: {status} {doc.get('error')}")
        if not isinstance(doc.get("figures"), dict):  # Lua's cjson writes an empty object as {}
            doc["figures"] = {}
        return doc

    def drain(self, servers: Iterable[Server], timeout: float) -> bool:
        """Wait until no request is in flight to any of ``servers`` (once routed away from
        them); False if some still are after ``timeout`` seconds."""
        keys = {f"{_ipv4(s.address, s.port)}:{validate.port(s.port)}" for s in servers}
        deadline = time.monotonic() + timeout
        while keys & set(self.read()["active"]):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def apply(self, routes: Mapping[str, Sequence[Server]]) -> int:
        """Route each named service to exactly its servers, in one change; the generation."""
        return self.apply_checked(check_routes(routes))

    def apply_checked(self, services: Mapping[str, list[dict[str, Any]]],
                      chains: Mapping[str, list[dict[str, Any]]] | None = None,
                      colors: Mapping[str, dict[str, Any]] | None = None,
                      locations: Mapping[str, str] | None = None) -> int:
        """:meth:`apply` for a payload from :func:`check_payload`: record it in the state file
        (with the ``colors`` of :func:`route_colors`), POST it; on any failure the state file
        is restored and nothing was applied (except when the answer was lost, which the
        error says). ``locations``: the routing table's (None: nginx has locations of its own)."""
        with state_lock(self.state_file):
            return self._post(services, chains or {}, colors or {}, locations)

    def _post(self, services: Mapping[str, list[dict[str, Any]]],
              chains: Mapping[str, list[dict[str, Any]]],
              colors: Mapping[str, dict[str, Any]],
              locations: Mapping[str, str] | None = None) -> int:
        """:meth:`apply_checked` under the state file's lock: record, POST, check that nginx
        serves exactly that, keep the state file as the last good copy."""
        undo = self.record(services, chains, colors, locations)
        releases = releases_of(services, colors)
        body = ({"services": services} | ({"chains": chains} if chains else {})
                | ({"releases": releases} if releases else {})
                | ({"locations": locations} if locations else {}))
        try:
            status, doc = self._request("POST", json.dumps(body).encode())
            if status != 200:
                raise OperationFailed(f"nginx at {self.where} refused the routes ({status}): "
                                      f"{str(doc.get('error'))[:300]}")
            generation = int(doc["generation"])
            self.verify(services, chains, colors, doc.get("served"), locations)
        except BaseException:
            if undo:
                undo()
            raise
        self.keep_last_good(undo)
        return generation

    def verify(self, services: Mapping[str, list[dict[str, Any]]],
               chains: Mapping[str, list[dict[str, Any]]],
               colors: Mapping[str, dict[str, Any]] | None = None,
               served: Mapping[str, Any] | None = None,
               locations: Mapping[str, str] | None = None) -> int:
        """Fail unless nginx serves exactly ``services`` with exactly ``chains`` (and the
        releases of ``colors``, the routing table's ``locations``) now; the generation it
        serves them in. ``served``: what a POST's answer read back (``served``), else a GET
        of those services."""
        served = _routes_view(served) if isinstance(served, Mapping) else \
            self.read_services(services)
        releases = releases_of(services, colors or {})
        locations = locations or {}
        wrong = sorted(n for n, servers in services.items()
                       if served["services"].get(n) != servers
                       or list(served["chains"].get(n) or []) != list(chains.get(n) or [])
                       or served["releases"].get(n) != releases.get(n)
                       or served["locations"].get(n) != locations.get(n))
        if wrong:
            raise OperationFailed(f"nginx at {self.where} does not serve what was posted for "
                                  f"{', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}")
        return int(served["generation"])

    def keep_last_good(self, undo: Undo | None = None) -> None:
        """Make the last good copy what the state file holds (nginx confirmed it): ``undo``'s
        journal line appended to it, or the whole state copied."""
        if self.state_file:
            dynamic_state.keep_last_good(self.state_file, undo)

    def document(self) -> dict[str, dict[str, Any]]:
        """The state file's document; when it is damaged, or missing while nginx serves
        routes, what nginx serves (or, unreachable, the last good copy) with the last good
        copy's colors, ``damage`` saying what was wrong. Missing with nothing served: empty."""
        self.damage = None
        if not self.state_file:
            return {"services": {}, "chains": {}, "colors": {}, "locations": {}}
        missing = False
        try:
            if os.path.exists(self.state_file):
                return read_document(self.state_file)
            missing = True
        except OperationFailed as exc:
            self.damage = str(exc)
        good: dict[str, dict[str, Any]] = {"services": {}, "chains": {}, "colors": {},
                                           "locations": {}}
        with contextlib.suppress(OperationFailed):
            good = read_document(last_good_path(self.state_file))
        try:
            live = self.read()
            base = {"services": live["services"], "chains": live["chains"], "colors": {},
                    "locations": live["locations"]}
        except (Unreachable, OperationFailed):
            base = dict(good, colors={})
        base["colors"] = {n: c for n, c in good["colors"].items() if n in base["services"]}
        if missing and base["services"]:
            self.damage = f"the state file {self.state_file} is missing"
        return base

    def rebuild(self) -> str | None:
        """Rewrite a damaged (or lost) state file from what nginx serves (colors from the last
        good copy); the line that says so, or None when the file was fine."""
        if not self.state_file:
            return None
        with state_lock(self.state_file):
            doc = self.document()
            if not self.damage:
                return None
            dynamic_state.rewrite(self.state_file, doc)
        return f"{self.damage}: rebuilt it from what nginx serves"

    def record(self, services: Mapping[str, list[dict[str, Any]]],
               chains: Mapping[str, list[dict[str, Any]]],
               colors: Mapping[str, dict[str, Any]],
               locations: Mapping[str, str] | None = None) -> Undo | None:
        """Record ``services`` (with their ``chains`` and ``colors``) in the state file (a
        journal line); what takes it back. A damaged state file is rebuilt (from what nginx
        serves), saying so."""
        if not self.state_file:
            return None
        if os.path.exists(self.state_file) and not os.path.exists(last_good_path(self.state_file)):
            with contextlib.suppress(OperationFailed):  # a state file of an older bluegreen
                read_document(self.state_file)
                dynamic_state.keep_last_good(self.state_file)
        base = self.document()
        undo = dynamic_state.record(self.state_file, base, services, chains, colors,
                                    rewrite=bool(self.damage), locations=locations)
        if self.damage:
            self.say(f"{self.damage}: rebuilt it from what nginx serves and the change")
        return undo


def _routes_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A read-back of routes (a GET ``?services=``, or a POST's ``served``) with its parts
    as Python types (Lua's cjson writes an empty object as ``{}`` and an empty list too)."""
    out = dict(doc)
    for key in ("chains", "services", "releases", "locations"):
        out[key] = dict(doc.get(key) or {})
    out["workers"] = list(doc.get("workers") or [])
    return out


# -- the proxy: POST, or reload when the set of services changes ------------------------------


class DynamicProxy:
    """An nginx in dynamic mode: ``include_path`` (in ``http {}``) holds the upstreams, the
    internal endpoints' servers (on ``internal_listen``) and the control server;
    ``include_dir/<service>.conf`` (in ``server {}``) the locations, as in the reload mode.
    ``routing`` "table": no upstream or location per service; one ``location /``
    (``include_dir/_bluegreen-table.conf``) and each service's location in its route, so
    adding a service is a POST (a reload only for an internal endpoint or a larger dict)."""

    def __init__(self, controller: NginxController, include_path: str | os.PathLike[str],
                 include_dir: str | os.PathLike[str], control: str,
                 state_file: str | os.PathLike[str], location: str = "/",
                 include_file: str | None = None, dict_size: str = "1m",
                 lua_path: str | None = None, internal_listen: str = "172.17.0.1:80",
                 secret_file: str | os.PathLike[str] | None = None,
                 preview_secret: str | None = None, routing: str = "locations") -> None:
        if routing not in ROUTINGS:
            raise UsageError(f"invalid --nginx-routing {routing!r}: use {' or '.join(ROUTINGS)}")
        if routing == "table" and include_file:
            raise UsageError("--include-file writes a location per service: it does not go "
                             "with --nginx-routing table")
        self.table = routing == "table"
        self.controller = controller
        self.include_path, self.include_dir = os.fspath(include_path), os.fspath(include_dir)
        self.location = validate.location(location)
        self.include_file = os.fspath(include_file) if include_file else None
        self.dict_size, self.lua_path = dict_size, lua_path
        self.internal_listen = internal_listen
        self.client = DynamicControl(control, safe_path(state_file, "state file"),
                                     secret_file=secret_file and safe_path(secret_file,
                                                                           "secret file"))
        self.state_file = os.fspath(state_file)
        self.preview_secret = check_preview_secret(preview_secret)
        self.preview_file = preview_path(self.state_file)
        self.table_path = os.path.join(self.include_dir, TABLE_NAME)

    def _preview_change(self) -> tuple[str | None, str | None] | None:
        """(the preview file's text, what it should be) when they differ: no secret, no file
        (``--preview-secret`` unset turns the preview off)."""
        have = read_text(self.preview_file)
        want = f"{self.preview_secret}\n" if self.preview_secret else None
        return (have, want) if have != want else None

    def ready(self) -> bool:
        """nginx has bluegreen's include and the control secret exists (else
        :meth:`ensure_control` sets them up)."""
        return os.path.exists(self.include_path) and os.path.exists(str(self.client.secret_file))

    def ensure_control(self, reload_timeout: float = 10.0) -> bool:
        """On an nginx without bluegreen's include (the first run) or without the control
        secret: write the secret and the include (the control server, the services it has),
        ``nginx -t``, reload. True if it did."""
        with state_lock(self.state_file):
            if self.ready():
                return False
            plan: dict[str, str | None] = {self.include_path: self._render(
                self.services(), self.endpoints(), len(self.routed()))}
            if self.table:
                self._refuse_locations()
                plan[self.table_path] = templates.render_keyed(TABLE_TEMPLATE)
            self._reload(plan, reload_timeout)
        return True

    def services(self) -> set[str]:
        """The services nginx's configuration has an upstream for (routing table: those with
        an internal endpoint)."""
        return configured_services(read_text(self.include_path))

    def routed(self) -> set[str]:
        """The services routed: those with an upstream, or (routing table) those recorded."""
        if self.table:
            return set(self.client.document()["services"])
        return self.services()

    def endpoints(self) -> dict[str, str]:
        """Service -> the internal endpoint nginx's configuration serves for it."""
        return configured_endpoints(read_text(self.include_path))

    def read(self) -> dict[str, Any]:
        return self.client.read()

    def serving(self, service: str) -> list[dict[str, Any]]:
        """The servers nginx routes ``service`` to now (empty when none)."""
        return list(self.read()["services"].get(validate.service(service)) or [])

    def apply(self, routes: Mapping[str, Sequence[Server]] | Sequence[Route],
              reload_timeout: float = 10.0) -> int:
        """Route each service to exactly its servers (and chains), as one change; the
        generation. A POST, or a checked reload when the configuration changes (a service or
        an internal endpoint new, changed or gone, a location). ``routes``: Routes, or
        service -> servers (no endpoint; the location kept, the default when new)."""
        if isinstance(routes, Mapping):
            routes = [Route(name, None, tuple(servers)) for name, servers in routes.items()]
        services, chains = check_payload(routes)
        colors = route_colors(routes)
        self.ensure_control(reload_timeout)  # the first change on this nginx
        with state_lock(self.state_file):
            plan = self.config_changes(routes)
            locations = self.table_locations(routes) if self.table else None
            preview = self._preview_change()  # nginx reads it as it (re)loads
            if preview:
                write_private(self.preview_file, preview[1])
                if not plan:
                    try:
                        apply_files(self.controller, {}, reload_timeout)  # nginx -t, reload
                    except BaseException:
                        write_private(self.preview_file, preview[0])
                        raise
            if not plan:
                return self.client._post(services, chains, colors, locations)
            plan.update(dynamic_state.base_files(self.state_file, merged_state(
                self.state_file, services, chains=chains, colors=colors,
                base=self.client.document(), locations=locations)))
            if self.client.damage:
                self.client.say(f"{self.client.damage}: rebuilt it from what nginx serves and "
                                f"the change")
            try:
                self._reload(plan, reload_timeout)  # nginx loads the state file as it starts
            except BaseException:
                if preview:
                    write_private(self.preview_file, preview[0])
                raise
            generation = self.client.verify(services, chains, colors, locations=locations)
            self.client.keep_last_good()
            return generation

    def config_changes(self, routes: Sequence[Route]) -> dict[str, str | None]:
        """The files that routing as ``routes`` changes (none: a POST is enough)."""
        endpoints = self.endpoints()
        for r in routes:
            endpoints.pop(r.service, None)
            if r.endpoint:
                endpoints[r.service] = r.endpoint
        plan: dict[str, str | None] = {}
        names = self.services() | {r.service for r in routes}
        if self.table:
            context = self._context(set(endpoints), endpoints, len(self.routed() | names))
            if not templates.is_current(read_text(self.table_path), TABLE_TEMPLATE):
                self._refuse_locations()  # once the table is there, locations mode refuses
                plan[self.table_path] = templates.render_keyed(TABLE_TEMPLATE)
        else:
            if os.path.exists(self.table_path):
                raise UsageError(f"{self.table_path} exists: this nginx routes by the routing "
                                 f"table; give --nginx-routing table")
            context = self._context(names, endpoints)
            plan.update({self._location_path(r.service): self._location(r) for r in routes})
        if not templates.is_current(read_text(self.include_path), HTTP_TEMPLATE, **context):
            plan[self.include_path] = templates.render_keyed(HTTP_TEMPLATE, **context)
        return {path: text for path, text in plan.items() if read_text(path) != text}

    def _refuse_locations(self) -> None:
        """The routing table next to locations of services (``--nginx-routing locations``)
        is refused: those would win over it, and their upstreams are gone."""
        found = located(self.include_dir)
        if found:
            raise UsageError(f"--nginx-routing table: {self.include_dir} holds the locations of "
                             f"{', '.join(sorted(set(found.values())))} (--nginx-routing "
                             f"locations); route those services with it, or remove them first")

    def table_locations(self, routes: Sequence[Route]) -> dict[str, str]:
        """The routing table's location of each route's service: its own, or (None) the one
        recorded for it, else the default (as a location file is kept, else written); ``""``:
        none."""
        doc = self.client.document()
        out = {}
        for r in routes:
            location = r.location
            if location is None:
                location = doc["locations"].get(r.service) or self.location
            if location:
                out[r.service] = validate.location(location)
        return out

    def remove(self, services: Iterable[str], reload_timeout: float = 10.0) -> bool:
        """Take services out of nginx (a checked reload); False if none was there."""
        names = {validate.service(s) for s in services}
        with state_lock(self.state_file):
            gone = names & self.routed()
            if not gone:
                return False
            endpoints = {s: e for s, e in self.endpoints().items() if s not in gone}
            plan: dict[str, str | None] = {
                self.include_path: self._render(self.services() - gone, endpoints,
                                                len(self.routed() - gone)),
                **dynamic_state.base_files(self.state_file, merged_state(
                    self.state_file, {}, gone, base=self.client.document()))}
            if not self.table:
                plan.update(dict.fromkeys((self._location_path(s) for s in gone), None))
            self._reload(plan, reload_timeout)
            self.client.keep_last_good()
        return True

    def _location_path(self, service: str) -> str:
        return os.path.join(self.include_dir, f"{service}.conf")

    def _render(self, services: Iterable[str], endpoints: Mapping[str, str],
                routed: int = 0) -> str:
        if self.table:  # upstreams for the internal endpoints only
            services = set(endpoints)
        return templates.render_keyed(HTTP_TEMPLATE, **self._context(services, endpoints, routed))

    def _context(self, services: Iterable[str], endpoints: Mapping[str, str],
                 routed: int = 0) -> dict[str, Any]:
        return http_context(services, self.client.control, self.state_file, self.dict_size,
                            self.lua_path, endpoints, self.internal_listen,
                            self.client.secret_file, self.table, routed)

    def _location(self, route: Route) -> str | None:
        """The service's public location file: none for location ``""``; for ``None`` the
        one it has (the default, or the include file, when it has none)."""
        if route.location == "":
            return None
        if route.location is None:
            existing = read_text(self._location_path(route.service))
            if existing is not None:
                return existing
            if self.include_file:
                try:
                    with open(self.include_file) as fh:
                        return fh.read()
                except OSError as exc:
                    raise UsageError(f"cannot read include file {self.include_file}: "
                                     f"{exc.strerror}") from exc
        return templates.render("nginx/include.conf.j2", service=route.service,
                                location=validate.location(route.location or self.location))

    def _reload(self, plan: Mapping[str, str | None], timeout: float) -> None:
        """A checked reload with these files; the control secret (which nginx reads as it
        loads) and an owner-only directory for a unix control socket made first."""
        ensure_secret(str(self.client.secret_file))
        private_socket_dir(self.client.control)
        apply_files(self.controller, plan, timeout)


# -- behind the proxy interface ---------------------------------------------------------------


def _scaled(servers: Sequence[Server]) -> list[Server]:
    """Weights within 0-100 with (nearly) the same ratios: the balancer's range."""
    top = max((s.weight or DEFAULT_WEIGHT) for s in servers) if servers else 0
    if top <= 100:
        return list(servers)
    return [replace(s, weight=0 if s.weight == 0 else
                    max(1, round((s.weight or DEFAULT_WEIGHT) * 100 / top))) for s in servers]


def _shown_servers(entries: Iterable[tuple[str, int, int]]) -> str:
    return " ".join(f"{a}:{p}*{w}" for a, p, w in sorted(entries)) or "(none)"


def _entries(servers: Iterable[Server]) -> list[tuple[str, int, int]]:
    """(address, port, weight) of the servers, an address that is not IPv4 shown as given (a
    dry run's placeholder for an instance not started yet)."""
    out = []
    for s in servers:
        address = s.address
        with contextlib.suppress(UsageError, OperationFailed):
            address = _ipv4(s.address, s.port)
        out.append((address, s.port, DEFAULT_WEIGHT if s.weight is None else s.weight))
    return out


def _served_entries(entries: Iterable[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    return [(e["address"], e["port"], e.get("weight", DEFAULT_WEIGHT)) for e in entries]


def _shown_chains(chains: Iterable[tuple[str, str, Sequence[str], str]]) -> str:
    return "; ".join(f"{side} callers {' '.join(sorted(callers))} -> {color} {servers}"
                     for side, color, callers, servers in sorted(chains)) or "(none)"


def _route_chains(route: Route) -> str:
    return _shown_chains((c.side, c.color, c.callers, _shown_servers(_entries(c.servers)))
                         for c in route.chains)


def _served_chains(chains: Iterable[Mapping[str, Any]]) -> str:
    return _shown_chains((c["side"], c["color"], c["callers"],
                          _shown_servers(_served_entries(c["servers"]))) for c in chains)


class NginxDynamicProxy(Proxy):
    """``--nginx-mode dynamic``: switches, weight steps, chain changes and rollbacks are one
    POST to nginx's control endpoint (no reload, no new workers, client connections untouched);
    adding or removing a service or an internal endpoint is a checked reload. Which color each
    service is routed to, and at what weight, is kept in the state file with its servers
    (``colors``), written before the POST in the same write."""

    def __init__(self, engine: DynamicProxy) -> None:
        self.engine = engine
        self.where = f"{engine.controller.where}, control {engine.client.where}"

    @property
    def location(self) -> str:  # type: ignore[override]
        return self.engine.location

    def ping(self) -> None:
        """nginx answers, and its control endpoint too once bluegreen has set it up (the
        first change does, :meth:`DynamicProxy.ensure_control`)."""
        self.engine.controller.ping()
        if self.engine.ready():
            self.engine.read()

    def _located(self, service: str | None = None) -> dict[str, str]:
        """``route:<location>`` -> service: the location files, or the routing table's (as
        recorded: what nginx confirmed serving)."""
        if not self.engine.table:
            return located(self.engine.include_dir, service)
        return {f"route:{loc}": s for s, loc in self.engine.client.document()["locations"].items()
                if service is None or s == service}

    def exposures(self) -> dict[str, str]:
        return self._located() | {
            f"endpoint:{e}": s for s, e in self.engine.endpoints().items()}

    def exposed(self, service: str) -> set[str]:
        endpoint = self.engine.endpoints().get(service)
        return set(self._located(service)) | (
            {f"endpoint:{endpoint}"} if endpoint else set())

    def _served(self) -> dict[str, Any]:
        """The ``services`` and ``chains`` nginx routes with now, with the ``colors`` recorded
        for them in the state file; all three as recorded when nginx cannot be asked (nginx
        restores exactly that when it starts)."""
        recorded = self.engine.client.document()
        if not self.engine.ready():
            return recorded
        try:
            return self.engine.read() | {"colors": recorded["colors"]}
        except Unreachable:
            return recorded

    def disagreements(self, service: str) -> list[str]:
        """A damaged state file; a service nginx has an upstream for but no servers (502)."""
        problems = []
        served = self._served()
        if self.engine.client.damage:
            problems.append(f"{self.engine.client.damage}; the next run, switch, rollback or "
                            f"recover rewrites it")
        if service in self.engine.services() and not served["services"].get(service):
            problems.append(f"nginx has an upstream for {service} but no servers for it "
                            f"(it answers 502)")
        return problems

    def repair(self, service: str, trusted: Callable[[Serving], bool],
               recorded: str | None = None) -> list[str]:
        """A damaged state file rewritten from what nginx serves (a service nginx serves
        nothing for is the flow's to route: only it knows the instances)."""
        line = self.engine.client.rebuild() if self.engine.ready() else None
        return [line] if line else []

    def serving(self, service: str) -> Serving:
        served = self._served()
        route = served["colors"].get(validate.service(service)) or {}
        servers = tuple(f"{s['address']}:{s['port']}"
                        for s in served["services"].get(service) or []
                        if s.get("weight", DEFAULT_WEIGHT) > 0)
        color = route.get("color") if servers else None
        return Serving(color if color in COLORS else None, int(route.get("weight", 100)), servers)

    def current(self, service: str, served: Mapping[str, Any] | None = None) -> Route:
        """What nginx routes the service to: each server's weight, its internal endpoint and
        its chains included (``served``: what :meth:`_served` just read)."""
        served = served or self._served()
        route = served["colors"].get(validate.service(service)) or {}
        servers = tuple(Server(e["address"], e["port"], e.get("weight", DEFAULT_WEIGHT),
                               e.get("color")) for e in served["services"].get(service) or [])
        chains = tuple(Chain(c["side"], c["color"], tuple(c["callers"]),
                             tuple(Server(a, p, w) for a, p, w in _served_entries(c["servers"])))
                       for c in served["chains"].get(service) or [])
        location = (served.get("locations") or {}).get(service, "") if self.engine.table \
            else None  # the routing table's; location files stay as they are
        return Route(service, route.get("color") if servers else None, servers,
                     int(route.get("weight", 100)), endpoint=self.engine.endpoints().get(service),
                     chains=chains, sticky=bool(route.get("sticky")), location=location)

    def diff(self, routes: Sequence[Route], served: Mapping[str, Any] | None = None) -> str:
        """One line per service whose servers, color or weight change, one per service whose
        chains change, then the unified diff of the configuration files a reload rewrites
        (``served``: what :meth:`_served` just read)."""
        lines = self._route_lines(routes, served)
        live = [r for r in routes if not r.removed]
        return lines + (files_diff(self.engine.config_changes(live)) if live else "")

    def _route_lines(self, routes: Sequence[Route], served: Mapping[str, Any] | None = None
                     ) -> str:
        """:meth:`diff` without the configuration files."""
        served = served or self._served()
        lines = []
        for r in routes:
            now = served["colors"].get(r.service) or {}
            entries = served["services"].get(r.service) or []
            have = (f"{now.get('color')} {now.get('weight', 100)}%"
                    f"{' sticky' if now.get('sticky') else ''} "
                    f"{_shown_servers(_served_entries(entries))}" if entries else "(none)")
            want = "(removed)" if r.removed else (
                f"{r.color} {r.weight}%{' sticky' if r.sticky else ''} "
                f"{_shown_servers(_entries(_scaled(r.servers)))}")
            if have != want and not (r.removed and not entries):
                lines.append(f"{r.service}: {have} -> {want}\n")
            have_chains = _served_chains(served["chains"].get(r.service) or [])
            if not r.removed and have_chains != _route_chains(r):
                lines.append(f"{r.service} chains: {have_chains} -> {_route_chains(r)}\n")
            if self.engine.table and not r.removed:
                have_at = (served.get("locations") or {}).get(r.service)
                want_at = self.engine.table_locations([r]).get(r.service)
                if have_at != want_at:
                    lines.append(f"{r.service} location: {have_at or '(none)'} -> "
                                 f"{want_at or '(none)'}\n")
        return "".join(lines)

    def apply(self, routes: Sequence[Route]) -> bool:
        """One POST for every routed service, with its color in the state file (or a checked
        reload when the configuration changes), then one reload for the removed ones; the
        services already posted go back on any failure."""
        served = self._served()  # read once for the diff and for what to put back
        live = [r for r in routes if not r.removed]
        # the configuration files are compared again under the state file's lock
        if not self._route_lines(routes, served) and not (
                live and self.engine.config_changes(live)):
            return False
        live = [replace(r, servers=tuple(_scaled(r.servers))) for r in live]
        gone = [r.service for r in routes if r.removed]
        previous = [p for p in (self.current(r.service, served) for r in live) if not p.removed]
        if live:
            self.engine.apply(live)
        try:
            if gone:
                self.engine.remove(gone)
        except BaseException:
            with contextlib.suppress(Exception):
                if previous:
                    self.engine.apply(previous)
            raise
        return True

    def figures(self, services: Sequence[str]) -> dict[str, dict[str, Counts]]:
        """Service -> color -> what nginx counted since its epoch (both colors, zeros when
        nothing was counted)."""
        doc = self.engine.client.figures()
        epoch, counted = str(doc.get("epoch") or ""), doc["figures"]
        width = len(LATENCY_BOUNDS_MS) + 1
        out: dict[str, dict[str, Counts]] = {}
        for service in services:
            colors = counted.get(validate.service(service))
            colors = colors if isinstance(colors, dict) else {}
            out[service] = {}
            for color in COLORS:
                c = colors.get(color) if isinstance(colors.get(color), dict) else {}
                buckets = [int(n) for n in c.get("buckets") or []][:width]
                out[service][color] = Counts(int(c.get("requests", 0)), int(c.get("errors", 0)),
                                             int(c.get("failures", 0)),
                                             tuple(buckets + [0] * (width - len(buckets))), epoch)
        return out

    def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight to a peer that is no longer routed to."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.engine.read()
            lists = [*doc["services"].values(),
                     *(c["servers"] for chains in doc["chains"].values() for c in chains)]
            routed = {f"{e['address']}:{e['port']}" for servers in lists
                      for e in servers or [] if e.get("weight", DEFAULT_WEIGHT) > 0}
            if not set(k for k, n in doc["active"].items() if n) - routed:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
