"""nginx reloaded: upstream and include files per service, validated and reloaded safely.

Files are written atomically, checked with ``nginx -t`` before every reload, and the
previous files are restored when the check or the reload fails. A reload returns only
once nginx runs workers with the new configuration, so a switch is effective when
``apply`` returns.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from bluegreen import templates, validate
from bluegreen.errors import OperationFailed, Unreachable
from bluegreen.model import COLORS, Chain, Route, Server, Serving
from bluegreen.proxy.base import Proxy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from bluegreen.runtime.docker import DockerEngine

HEADER_RE = validate.Lazy(
    r"^# Managed by bluegreen: service=(?P<service>\S+) color=(?P<color>blue|green|none)"
    r"(?: weight=(?P<weight>\d+))?$", re.M)
SERVER_RE = validate.Lazy(r"^\s*server\s+(?P<hostport>[^\s;{]+:\d+)(?:\s+weight=(?P<weight>\d+))?",
                       re.M)
# an internal endpoint's server and chains (resources/nginx/endpoint.conf.j2)
ENDPOINT_RE = validate.Lazy(r"^    server_name (?P<name>\S+);$", re.M)
CHAIN_RE = validate.Lazy(r"^# (?P<side>new|old) release: its callers reach \S+-(?P<color>blue|green) "
                      r"only\nupstream \S+ \{\n(?P<servers>[^}]*)\}", re.M)
CALLER_RE = validate.Lazy(r"^    (?P<ip>\S+) (?P<side>new|old);$", re.M)
# a public location's file (resources/nginx/include.conf.j2)
INCLUDE_RE = validate.Lazy(r"\A# Managed by bluegreen: service=(?P<service>\S+)\n"
                           r"location (?P<location>\S+) \{", re.M)


def located(include_dir: str | os.PathLike[str], service: str | None = None
            ) -> dict[str, str]:
    """``route:<location>`` -> service, of the location files bluegreen wrote (of one
    service's file only, given ``service``)."""
    found = {}
    with contextlib.suppress(OSError):
        names = [f"{validate.service(service)}.conf"] if service else \
            sorted(n for n in os.listdir(include_dir) if n.endswith(".conf"))
        for name in names:
            m = INCLUDE_RE.match(read_text(os.path.join(include_dir, name)) or "")
            if m:
                found[f"route:{m['location']}"] = m["service"]
    return found


def _endpoint_of(text: str | None) -> tuple[str, str] | None:
    """(service, internal endpoint) of an upstream file that serves one."""
    head, endpoint = HEADER_RE.search(text or ""), ENDPOINT_RE.search(text or "")
    return (head["service"], endpoint["name"]) if head and endpoint else None


class NginxController(ABC):
    """How to validate and reload one nginx."""

    where: str

    @abstractmethod
    def ping(self) -> None: ...

    @abstractmethod
    def test(self) -> tuple[bool, str]:
        """Run ``nginx -t``; return (ok, output)."""

    @abstractmethod
    def workers(self) -> dict[int, bool]:
        """Worker pid -> whether it is shutting down."""

    @abstractmethod
    def signal_reload(self) -> None: ...

    def reload(self, timeout: float = 10.0) -> None:
        """HUP nginx and wait until workers of the new configuration serve alone."""
        before = set(self.workers())
        self.signal_reload()
        deadline = time.monotonic() + timeout
        while True:
            now = self.workers()
            fresh = [pid for pid, leaving in now.items() if pid not in before and not leaving]
            old_serving = [pid for pid in before if pid in now and not now[pid]]
            if fresh and not old_serving:
                return
            if time.monotonic() >= deadline:
                raise OperationFailed(f"nginx ({self.where}) did not load the new configuration "
                                      f"within {timeout:g}s; see its error log")
            time.sleep(0.005)

    def drain(self, timeout: float) -> bool:
        """Wait until workers of older configurations have finished their requests."""
        deadline = time.monotonic() + timeout
        while any(self.workers().values()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


def _proc_children(ppid: int) -> list[int]:
    try:
        return [int(p) for p in _read_proc(f"/proc/{ppid}/task/{ppid}/children").split()]
    except OSError:
        pass
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_read_proc(f"/proc/{name}/stat").rsplit(")", 1)[1].split()[1]) == ppid:
                    kids.append(int(name))
    return kids


def _read_proc(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode(errors="replace")


def _listening() -> dict[str, str]:
    """Socket inode -> ``address:port`` of every listening TCP socket (IPv4) on this host."""
    found = {}
    with contextlib.suppress(OSError):
        for line in _read_proc("/proc/net/tcp").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # LISTEN
                hexaddr, _, hexport = fields[1].partition(":")
                octets = bytes.fromhex(hexaddr)[::-1]  # little-endian on the hosts we run on
                found[fields[9]] = f"{'.'.join(str(b) for b in octets)}:{int(hexport, 16)}"
    return found


def orphan_workers() -> list[tuple[int, list[str]]]:
    """nginx workers whose master is gone (killed with -9: they go on serving and hold the
    ports a new master needs), each with the addresses it listens on."""
    listening = _listening()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if not _read_proc(f"/proc/{entry}/cmdline").startswith("nginx: worker process"):
                continue
            ppid = _read_proc(f"/proc/{entry}/stat").rsplit(")", 1)[1].split()[1]
            if _read_proc(f"/proc/{ppid}/cmdline").startswith("nginx: master process"):
                continue
            ports = set()
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{entry}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in listening:
                        ports.add(listening[link[8:-1]])
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        out.append((int(entry), sorted(ports)))
    return sorted(out)


def orphans_note() -> str:
    """What a message about a dead master adds when its workers still serve."""
    found = orphan_workers()
    if not found:
        return ""
    shown = ", ".join(f"{pid} ({' '.join(ports) or 'no port'})" for pid, ports in found)
    return (f"; orphan nginx workers still serve (pid and port: {shown}): stop them "
            f"(kill {' '.join(str(pid) for pid, _ in found)}) before starting nginx again")


class LocalNginx(NginxController):
    """An nginx on this host: its binary, main config, optional prefix and pid file."""

    def __init__(self, binary: str = "nginx", conf: str = "/etc/nginx/nginx.conf",
                 prefix: str | None = None, pid_file: str = "/run/nginx.pid") -> None:
        self.binary, self.conf, self.prefix, self.pid_file = binary, conf, prefix, pid_file
        self.where = f"{conf} (pid file {pid_file})"

    def _argv(self, *extra: str) -> list[str]:
        argv = [self.binary]
        if self.prefix:
            argv += ["-p", self.prefix]
        return [*argv, "-c", self.conf, *extra]

    def master_pid(self) -> int:
        """The running master's pid. A master killed while its workers still serve can stay
        behind as a zombie that answers kill(0): its process state says it is gone."""
        try:
            pid = int(_read_proc(self.pid_file).strip())
            state = _read_proc(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError) as exc:
            raise Unreachable("nginx", self.where, "not running" + orphans_note()) from exc
        if state in ("Z", "X"):
            raise Unreachable("nginx", self.where, "its master process is gone" + orphans_note())
        return pid

    def ping(self) -> None:
        self.master_pid()

    def test(self) -> tuple[bool, str]:
        try:
            import subprocess

            proc = subprocess.run(self._argv("-t", "-q"), capture_output=True, text=True,
                                  timeout=30, check=False)
        except FileNotFoundError as exc:
            raise Unreachable("nginx", self.binary, "binary not found") from exc
        return proc.returncode == 0, (proc.stderr or proc.stdout).strip()

    def workers(self) -> dict[int, bool]:
        result = {}
        for pid in _proc_children(self.master_pid()):
            with contextlib.suppress(OSError):
                title = _read_proc(f"/proc/{pid}/cmdline").replace("\0", " ")
                if "worker process" in title:
                    result[pid] = "shutting down" in title
        return result

    def signal_reload(self) -> None:
        import signal  # a reload only: not on the dynamic mode's path

        os.kill(self.master_pid(), signal.SIGHUP)


class ContainerNginx(NginxController):
    """nginx in a container: ``docker exec nginx -t``, reload by HUP (``docker kill -s HUP``)."""

    def __init__(self, engine: DockerEngine, container: str = "nginx",
                 conf: str = "/etc/nginx/nginx.conf", prefix: str | None = None) -> None:
        self.engine, self.container = engine, validate.network(container)
        self.conf, self.prefix = conf, prefix  # paths inside the container
        self.where = f"container {container} on {engine.where}"

    def _get(self) -> Any:
        import docker

        with self.engine.call():
            try:
                return self.engine.client.containers.get(self.container)
            except docker.errors.NotFound as exc:
                raise Unreachable("nginx", self.where, "no such container") from exc

    def ping(self) -> None:
        if self._get().status != "running":
            raise Unreachable("nginx", self.where, "not running")

    def test(self) -> tuple[bool, str]:
        with self.engine.call():
            argv = ["nginx", *(["-p", self.prefix] if self.prefix else []), "-c", self.conf, "-t", "-q"]
            code, out = self._get().exec_run(argv)
        return code == 0, out.decode(errors="replace").strip()

    def workers(self) -> dict[int, bool]:
        with self.engine.call():
            top = self._get().top(ps_args="-eo pid,args")
        titles = top.get("Titles", [])
        pid_i = titles.index("PID") if "PID" in titles else 0
        result = {}
        for row in top.get("Processes") or []:
            cmd = " ".join(row[pid_i + 1:]) if len(row) > pid_i + 1 else ""
            if "worker process" in cmd:
                result[int(row[pid_i])] = "shutting down" in cmd
        return result

    def signal_reload(self) -> None:
        with self.engine.call():
            self._get().kill(signal="HUP")


def read_serving(upstream_dir: str | os.PathLike[str], service: str) -> Serving:
    """What the service's upstream file routes to (a file read; nginx is not asked)."""
    text = read_text(os.path.join(upstream_dir, f"{validate.service(service)}.conf"))
    if text is None:
        return Serving(None, 0, ())
    m = HEADER_RE.search(text)
    color = m.group("color") if m and m.group("color") in COLORS else None
    weight = int(m.group("weight")) if m and m.group("weight") else 100
    upstream = text.split("\n}", 1)[0]  # the service's own upstream, the file's first block
    return Serving(color, weight, tuple(s.group("hostport") for s in SERVER_RE.finditer(upstream)))


class NginxProxy(Proxy):
    """Per-service files in ``upstream_dir`` and ``include_dir`` of one nginx, reached by its
    controller (local or in a container)."""

    def __init__(self, controller: NginxController, upstream_dir: str | os.PathLike[str],
                 include_dir: str | os.PathLike[str], location: str = "/",
                 include_file: str | None = None, internal_listen: str = "172.17.0.1:80") -> None:
        from pathlib import Path  # the reload mode's: a dynamic switch goes without its import

        self.controller = controller
        self.internal_listen = internal_listen  # where internal endpoints are served
        self.where = controller.where
        self.upstream_dir, self.include_dir = Path(upstream_dir), Path(include_dir)
        self.location = validate.location(location)
        self.include_file = Path(include_file) if include_file else None

    def ping(self) -> None:
        self.controller.ping()

    def drain(self, timeout: float) -> bool:
        return self.controller.drain(timeout)

    def serving(self, service: str) -> Serving:
        return read_serving(self.upstream_dir, service)

    def exposures(self) -> dict[str, str]:
        found = located(self.include_dir)
        for path in sorted(self.upstream_dir.glob("*.conf")):
            pair = _endpoint_of(read_text(path))
            if pair:
                found[f"endpoint:{pair[1]}"] = pair[0]
        return found

    def exposed(self, service: str) -> set[str]:
        pair = _endpoint_of(read_text(self.paths(service)[0]))
        return set(located(self.include_dir, service)) | ({f"endpoint:{pair[1]}"} if pair
                                                           else set())

    def current(self, service: str) -> Route:
        """The route of the upstream file: each server's weight, the internal endpoint and its
        chains included."""
        now = read_serving(self.upstream_dir, service)
        text = read_text(self.paths(service)[0]) or ""
        servers = _servers(text.split("\n}", 1)[0])  # its own upstream, the first block
        callers = CALLER_RE.findall(text)
        chains = tuple(Chain(m["side"], m["color"], tuple(ip for ip, s in callers if s == m["side"]),
                             _servers(m["servers"])) for m in CHAIN_RE.finditer(text))
        endpoint = ENDPOINT_RE.search(text)
        return Route(service, now.color if servers else None, servers, now.weight,
                     endpoint=endpoint["name"] if endpoint else None, chains=chains)

    def paths(self, service: str) -> tuple[Path, Path]:
        name = f"{validate.service(service)}.conf"
        return self.upstream_dir / name, self.include_dir / name

    def plan(self, routes: Sequence[Route]) -> dict[Path, str | None]:
        """The files of every route (``None``: remove the file): the upstream (and the internal
        endpoint's server, at http level) and the public location (in ``server {}``)."""
        plan: dict[Path, str | None] = {}
        for route in routes:
            up, inc = self.paths(route.service)
            if route.removed:
                plan |= {up: None, inc: None}
                continue
            for s in route.servers:
                validate.host(s.address)
                validate.port(s.port)
            text = templates.render("nginx/upstream.conf.j2", service=route.service,
                                    color=route.color, weight=validate.weight(route.weight),
                                    servers=route.servers)
            if route.endpoint:
                text += self._endpoint(route)
            plan[up] = text
            plan[inc] = self._include(route.service, route.location)
        return plan

    def _endpoint(self, route: Route) -> str:
        """The internal endpoint's server; with chains, callers of each release are kept on
        the callee's matching color (by their address) and the others get the weights."""
        import hashlib

        for chain in route.chains:
            if chain.side not in ("new", "old") or not chain.servers:
                raise OperationFailed(f"invalid chain of {route.service}: {chain.side}")
            for address in chain.callers:
                validate.host(address)
            for s in chain.servers:
                validate.host(s.address)
                validate.port(s.port)
        var = "$bg_" + hashlib.sha1(route.service.encode(), usedforsecurity=False).hexdigest()[:12]
        return templates.render("nginx/endpoint.conf.j2", service=route.service,
                                endpoint=validate.host(route.endpoint or ""),
                                listen=self.internal_listen, chains=route.chains, var=var)

    def _include(self, service: str, location: str | None) -> str | None:
        if location == "":
            return None  # an internal endpoint only: no public location
        if self.include_file and location is None:
            try:
                return self.include_file.read_text()
            except OSError as exc:
                raise validate.UsageError(f"cannot read include file {self.include_file}: "
                                          f"{exc.strerror}") from exc
        return templates.render("nginx/include.conf.j2", service=service,
                                location=validate.location(location or self.location))

    def _changes(self, plan: dict[Path, str | None]) -> dict[Path, str | None]:
        return {p: text for p, text in plan.items() if read_text(p) != text}

    def diff(self, routes: Sequence[Route]) -> str:
        return files_diff(self._changes(self.plan(routes)))

    def apply(self, routes: Sequence[Route], reload_timeout: float = 10.0) -> bool:
        """Write every file, one ``nginx -t``, one reload; restore and re-reload on any failure."""
        changes = self._changes(self.plan(routes))
        if not changes:
            return False
        apply_files(self.controller, changes, reload_timeout)
        return True


def apply_files(controller: NginxController, changes: Mapping[Any, str | None],
                timeout: float = 10.0) -> None:
    """Write the files (``None``: remove), ``nginx -t``, reload and wait for the new workers;
    on any failure put every file back as it was and make nginx load that again."""
    controller.ping()
    backup = {p: read_text(p) for p in changes}
    reloading = False
    try:
        for path, text in changes.items():
            write_atomic(path, text)
        ok, output = controller.test()
        if not ok:
            raise OperationFailed(f"nginx rejected the configuration: {_first_error(output)}")
        reloading = True
        controller.reload(timeout)
    except BaseException:
        for path, text in backup.items():
            write_atomic(path, text)
        if reloading:  # nginx may have seen the new files: make it load the old ones
            with contextlib.suppress(Exception):
                if controller.test()[0]:
                    controller.reload(timeout)
        raise


def _servers(text: str) -> tuple[Server, ...]:
    """The ``server`` lines of an upstream block."""
    found = []
    for m in SERVER_RE.finditer(text):
        host, _, port = m.group("hostport").rpartition(":")
        found.append(Server(host, int(port), int(m.group("weight")) if m.group("weight") else None))
    return tuple(found)


def files_diff(changes: Mapping[Any, str | None]) -> str:
    """The unified diff of writing ``changes`` (``None``: removing the file)."""
    if not changes:
        return ""
    import difflib

    out: list[str] = []
    for path, text in changes.items():
        old = read_text(path)
        out += difflib.unified_diff((old or "").splitlines(True), (text or "").splitlines(True),
                                    f"a{path}" if old is not None else "/dev/null",
                                    f"b{path}" if text is not None else "/dev/null")
    return "".join(out)


def read_text(path: str | os.PathLike[str]) -> str | None:
    """The file's text (None when there is none); bytes that are not UTF-8 come back as they
    were through :func:`write_atomic` (a damaged file is put back exactly)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _first_error(output: str) -> str:
    for line in output.splitlines():
        if "[emerg]" in line or "[error]" in line or "failed" in line:
            return line.strip()[:300]
    return (output.strip().splitlines() or ["nginx -t failed"])[0][:300]


def write_atomic(path: str | os.PathLike[str], text: str | None) -> None:
    """Write (``None``: remove) a file by temp file + fsync + rename (the temp name never
    matches ``*.conf``)."""
    if text is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    where, name = os.path.split(os.fspath(path))
    os.makedirs(where or ".", exist_ok=True)
    tmp = os.path.join(where, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
