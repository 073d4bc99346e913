"""Service registry: the color record, color instances, small JSON records, the deploy lock.

Two backends share one interface and one contract test suite:

- ``ConsulRegistry``: Consul KV ``<prefix><service>/color`` (``books-ms/color`` as in the
  book), services ``<service>-<color>`` registered on the agent with an HTTP check, and a
  session-based lock.
- ``FileRegistry``: the same data in one local JSON file, for local runs and the demo;
  health is checked live over HTTP and the lock is a ``flock``. Chosen explicitly,
  never as a fallback for an unreachable Consul.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bluegreen import validate
from bluegreen.errors import (
    InvalidRecord,
    LockHeld,
    OperationFailed,
    Unreachable,
    add_secret,
    reaching,
    redact,
)

LOCK_TTL_SECONDS = 15


@dataclass(frozen=True)
class Instance:
    """One registered instance of a color."""

    id: str
    service: str
    color: str
    address: str
    port: int
    check_url: str = ""
    status: str = "unknown"  # passing | warning | critical | unknown

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"


def _is_color_or_none(value: Any) -> bool:
    return value is None or value in validate.COLORS


# The shape of each JSON record bluegreen writes: (test, what it must be).
_RECORDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "history": (lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v),
                "a list of entries"),
    "inflight": (lambda v: isinstance(v, dict) and v.get("to") in validate.COLORS
                 and _is_color_or_none(v.get("from")), "a run record with from and to colors"),
    "release": (lambda v: isinstance(v, dict) and isinstance(v.get("verified"), bool)
                and isinstance(v.get("image"), (str, type(None))),
                "a release record with image and verified"),
    "scale-down": (lambda v: isinstance(v, dict) and v.get("color") in validate.COLORS
                   and isinstance(v.get("not_before"), (int, float)),
                   "a scale-down record with color and not_before"),
}


def _check_record(name: str, value: Any) -> str | None:
    """What is wrong with a decoded record, or None."""
    test, what = _RECORDS.get(name.split("-")[0] if name.startswith("release-") else name,
                              (lambda v: True, ""))
    return None if test(value) else f"not {what}"


@dataclass
class Lease:
    """A held deploy lock. ``lost`` says why it is no longer held (the registry lost it and
    another holder took it); ``renewed`` counts re-acquisitions after the registry lost it."""

    lost: str | None = None
    renewed: int = 0

    def verify(self) -> bool:
        """Check the lock is still ours (re-acquire it if the registry forgot it); True when it
        was re-acquired since the last call, so the holder rewrites what it keeps there."""
        return False


def holder_info() -> dict[str, Any]:
    """Who holds a lock: host, pid (with its start time, against pid reuse), build URL."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _pid_start(os.getpid()),
        "since": time.time(),
    }
    for var in ("BUILD_URL", "USER"):
        if os.environ.get(var):
            info[var.lower()] = os.environ[var]
    return info


def describe_holder(info: dict[str, Any]) -> str:
    text = f"host {info.get('host', '?')} pid {info.get('pid', '?')}"
    if info.get("build_url"):
        text += f" build {info['build_url']}"
    return text


def _pid_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def holder_is_dead(info: dict[str, Any]) -> bool:
    """True only when the holder ran on this host and its process is gone."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    return _pid_start(info["pid"]) != info.get("pid_start")


class Registry(ABC):
    """What the toolkit needs from a service registry."""

    where: str

    def __init__(self, prefix: str = "") -> None:
        self.prefix = validate.kv_prefix(prefix)

    def key(self, service: str, name: str) -> str:
        return f"{self.prefix}{validate.service(service)}/{name}"

    @staticmethod
    def color_service(service: str, color: str) -> str:
        return f"{validate.service(service)}-{validate.color(color)}"

    @abstractmethod
    def ping(self) -> None:
        """Raise ``Unreachable`` when the registry cannot be reached."""

    @abstractmethod
    def kv_get(self, key: str) -> str | None: ...

    @abstractmethod
    def kv_put(self, key: str, value: str) -> None: ...

    @abstractmethod
    def kv_delete(self, key: str) -> None: ...

    @abstractmethod
    def kv_update(self, key: str, fn: Callable[[str | None], str | None]) -> None:
        """Atomically replace the value with ``fn(old)`` (``None`` deletes)."""

    @abstractmethod
    def register(self, inst: Instance, interval: str = "1s", passing: bool = False) -> None:
        """Register with an HTTP check; ``passing``: its first status (bluegreen saw it healthy
        itself), so routing need not wait for the registry's first check."""

    @abstractmethod
    def deregister(self, instance_id: str) -> None: ...

    @abstractmethod
    def instances(self, service: str, color: str, passing: bool = False,
                  foreign: bool = False) -> list[Instance]:
        """bluegreen's own instances of the color (``foreign``: only the others registered
        under the same name, which are never routed to)."""

    @abstractmethod
    def lock(self, service: str, wait: float = 0.0, on_stale: Callable[[str], None] | None = None
             ) -> contextlib.AbstractContextManager[Lease]:
        """Hold the service's deploy lock; raise ``LockHeld`` naming the holder."""

    # -- records built on the KV primitives --------------------------------------------

    def get_color(self, service: str) -> str | None:
        """The recorded color; ``None`` when there is no record, ``InvalidRecord`` when the
        record is not a color (never taken for an absent one)."""
        key = self.key(service, "color")
        value = self.kv_get(key)
        if value is None:
            return None
        if value.strip() not in validate.COLORS:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise InvalidRecord(key, f"{shown!r} is not blue or green")
        return value.strip()

    def set_color(self, service: str, color: str | None) -> None:
        if color is None:
            self.kv_delete(self.key(service, "color"))
        else:
            self.kv_put(self.key(service, "color"), validate.color(color))

    def get_json(self, service: str, name: str) -> Any:
        """A JSON record, ``None`` when absent, ``InvalidRecord`` when unreadable."""
        key = self.key(service, name)
        return _decode(key, name, self.kv_get(key))

    def put_json(self, service: str, name: str, value: Any) -> None:
        if value is None:
            self.kv_delete(self.key(service, name))
        else:
            self.kv_put(self.key(service, name), json.dumps(value, sort_keys=True))

    def append_json(self, service: str, name: str, item: Any, keep: int) -> None:
        """Append to a JSON list atomically (CAS); an unreadable list is an error, not lost."""
        key = self.key(service, name)

        def add(old: str | None) -> str:
            items = _decode(key, name, old) or []
            return json.dumps([*items, item][-keep:], sort_keys=True)

        self.kv_update(key, add)

    def set_aside(self, service: str, name: str) -> str:
        """Keep an unreadable record under ``<name>.invalid-<time>`` and delete it."""
        key = self.key(service, name)
        value = self.kv_get(key)
        aside = f"{name}.invalid-{int(time.time())}"
        if value is not None:
            self.kv_put(self.key(service, aside), value)
        self.kv_delete(key)
        return aside


def _decode(key: str, name: str, raw: str | None) -> Any:
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidRecord(key, "not JSON") from None
    problem = _check_record(name, value)
    if problem:
        raise InvalidRecord(key, problem)
    return value


# ---------------------------------------------------------------------------- Consul


def parse_consul_addr(addr: str) -> tuple[str, str, int]:
    """``CONSUL_HTTP_ADDR`` forms: ``host:port``, ``http://host:port``, ``https://host``."""
    if "://" not in addr:
        scheme = "https" if os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true") else "http"
        addr = f"{scheme}://{addr}"
    parts = urllib.parse.urlsplit(addr)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise validate.UsageError(f"invalid Consul address {addr!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8500)
    except ValueError:
        raise validate.UsageError(f"invalid Consul address {addr!r}") from None
    return parts.scheme, parts.hostname, port


class ConsulRegistry(Registry):
    """The registry on a Consul agent (``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``,
    ``CONSUL_CACERT``, ``CONSUL_HTTP_SSL_VERIFY``)."""

    def __init__(self, addr: str, token: str | None = None, prefix: str = "",
                 timeout: float = 5.0) -> None:
        super().__init__(prefix)
        self.scheme, self.host, self.port = parse_consul_addr(addr)
        self.where = f"{self.scheme}://{self.host}:{self.port}"
        self._token = token or None
        add_secret(self._token)
        self._timeout = timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import consul  # heavy: imported on first use

            cafile, check = self._tls()
            verify: bool | str = (cafile or True) if check else False
            self._client = consul.Consul(host=self.host, port=self.port, scheme=self.scheme,
                                         token=self._token, verify=verify,
                                         connections_timeout=self._timeout)
        return self._client

    @staticmethod
    def _tls() -> tuple[str | None, bool]:
        """(CA file, whether to verify) from Consul's own environment variables."""
        check = os.environ.get("CONSUL_HTTP_SSL_VERIFY", "").lower() not in ("0", "false")
        return os.environ.get("CONSUL_CACERT") or None, check

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        import consul

        try:
            with reaching("Consul", self.where):
                yield
        except consul.ACLPermissionDenied as exc:
            raise OperationFailed(f"Consul at {self.where} denied the request (ACL)") from exc
        except consul.ConsulException as exc:
            raise OperationFailed(f"Consul at {self.where}: {redact(str(exc))[:200]}") from exc

    # KV, health reads and the lock go over the standard library's http.client: they are on
    # the switch and rollback hot path, and importing requests (which py-consul needs) takes
    # longer than an nginx reload. Agent registration (with its check) uses py-consul.

    def _http(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        import http.client

        headers = {"X-Consul-Token": self._token} if self._token else {}
        if self.scheme == "https":
            import ssl

            cafile, check = self._tls()
            ctx = ssl.create_default_context(cafile=cafile)
            if not check:
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self._timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self._timeout)
        try:
            conn.request(method, path, body=body.encode() if body is not None else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            raise Unreachable("Consul", self.where, type(exc).__name__) from exc
        finally:
            conn.close()
        if resp.status == 403:
            raise OperationFailed(f"Consul at {self.where} denied the request (ACL)")
        if resp.status >= 400 and resp.status != 404:
            # The reply is the server's text: it may echo our headers, so the token goes.
            detail = redact(data.decode(errors="replace").strip())[:200]
            raise OperationFailed(f"Consul at {self.where}: HTTP {resp.status} {method} "
                                  f"{path.split('?')[0]}: {detail}")
        return resp.status, data

    @staticmethod
    def _kv_path(key: str) -> str:
        return "/v1/kv/" + urllib.parse.quote(key)

    def ping(self) -> None:
        _, data = self._http("GET", "/v1/status/leader")
        if not json.loads(data or b'""'):
            raise Unreachable("Consul", self.where, "no cluster leader")

    def kv_get(self, key: str) -> str | None:
        status, data = self._http("GET", self._kv_path(key) + "?raw")
        return None if status == 404 else data.decode()

    def kv_put(self, key: str, value: str) -> None:
        _, data = self._http("PUT", self._kv_path(key), value)
        if data.strip() != b"true":
            raise OperationFailed(f"Consul refused to write {key}")

    def kv_delete(self, key: str) -> None:
        self._http("DELETE", self._kv_path(key))

    def _kv_entry(self, key: str) -> dict[str, Any] | None:
        """The key's entry (Value decoded, ModifyIndex, Session), or None."""
        import base64

        status, data = self._http("GET", self._kv_path(key))
        if status == 404:
            return None
        entry: dict[str, Any] = json.loads(data)[0]
        raw = entry.get("Value")
        entry["Value"] = base64.b64decode(raw).decode() if raw is not None else None
        return entry

    def kv_update(self, key: str, fn: Callable[[str | None], str | None]) -> None:
        for _ in range(50):
            entry = self._kv_entry(key)
            index = entry["ModifyIndex"] if entry else 0
            new = fn(entry["Value"] if entry else None)
            if new is None:
                if entry is None:
                    return
                _, data = self._http("DELETE", f"{self._kv_path(key)}?cas={index}")
            else:
                _, data = self._http("PUT", f"{self._kv_path(key)}?cas={index}", new)
            if data.strip() == b"true":
                return
        raise OperationFailed(f"could not update {key}: too many concurrent writers")

    def register(self, inst: Instance, interval: str = "1s", passing: bool = False) -> None:
        import consul

        check = consul.Check.http(inst.check_url, interval=interval, timeout="1s",
                                  deregister="10m") if inst.check_url else None
        if check is not None and passing:
            check["Status"] = "passing"  # Consul goes on checking it from here
        with self._call():
            self.client.agent.service.register(
                self.color_service(inst.service, inst.color), service_id=inst.id,
                address=inst.address, port=inst.port, check=check,
                tags=["bluegreen", inst.color],
                meta={"bluegreen_service": inst.service, "bluegreen_color": inst.color},
            )

    def deregister(self, instance_id: str) -> None:
        with self._call():
            self.client.agent.service.deregister(instance_id)

    def instances(self, service: str, color: str, passing: bool = False,
                  foreign: bool = False) -> list[Instance]:
        name = self.color_service(service, color)
        path = f"/v1/health/service/{urllib.parse.quote(name)}" + ("?passing=1" if passing else "")
        _, data = self._http("GET", path)
        result = []
        for node in json.loads(data or b"[]"):
            svc = node["Service"]
            meta = svc.get("Meta") or {}
            ours = ("bluegreen" in (svc.get("Tags") or []) and meta.get("bluegreen_service") == service
                    and meta.get("bluegreen_color") == color)
            if ours == foreign:
                continue
            checks = node.get("Checks", [])
            statuses = [c["Status"] for c in checks]
            status = ("critical" if "critical" in statuses else
                      "warning" if "warning" in statuses else "passing")
            address = svc.get("Address") or node["Node"]["Address"]
            own = [c for c in checks if c.get("ServiceID") == svc["ID"]]
            url = (own[0].get("Definition") or {}).get("HTTP", "") if own else ""
            result.append(Instance(id=svc["ID"], service=service, color=color, address=address,
                                   port=int(svc.get("Port") or 0), check_url=url, status=status))
        return sorted(result, key=lambda i: i.id)

    def _session(self, service: str) -> str:
        _, data = self._http("PUT", "/v1/session/create", json.dumps({
            "Name": f"bluegreen {service}", "TTL": f"{LOCK_TTL_SECONDS}s", "LockDelay": "0s",
            "Behavior": "delete"}))
        return str(json.loads(data)["ID"])

    @contextlib.contextmanager
    def lock(self, service: str, wait: float = 0.0,
             on_stale: Callable[[str], None] | None = None) -> Iterator[Lease]:
        """A session lock on ``<prefix><service>/lock`` (TTL, renewed, deleted on release)."""
        path = self._kv_path(self.key(service, "lock"))
        me = json.dumps(holder_info())
        lease = _ConsulLease(self, service, path, me)
        sid = lease.sid = self._session(service)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(LOCK_TTL_SECONDS / 3):
                with contextlib.suppress(Exception):
                    lease.renew()

        renewer = threading.Thread(target=renew, name="bluegreen-lock-renew", daemon=True)
        deadline = time.monotonic() + wait
        try:
            while True:
                if self._http("PUT", f"{path}?acquire={sid}", me)[1].strip() == b"true":
                    break
                entry = self._kv_entry(self.key(service, "lock")) or {}
                holder: dict[str, Any] = {}
                with contextlib.suppress(ValueError, TypeError):
                    holder = json.loads(entry.get("Value") or "{}")
                if entry.get("Session") and holder and holder_is_dead(holder):
                    self._http("PUT", f"/v1/session/destroy/{entry['Session']}")
                    if on_stale:
                        on_stale(f"freed the stale lock of {describe_holder(holder)} (process gone)")
                    continue
                if time.monotonic() >= deadline:
                    who = describe_holder(holder) if holder else "another process"
                    raise LockHeld(f"{service} is locked by {who}")
                time.sleep(0.25)
            renewer.start()
            yield lease
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                # behavior=delete removes the key
                self._http("PUT", f"/v1/session/destroy/{lease.sid or sid}")


class _ConsulLease(Lease):
    """The Consul session behind a held lock. A Consul that restarted empty (or lost the
    session) forgot the lock: it is taken again with a new session when still free."""

    def __init__(self, registry: ConsulRegistry, service: str, path: str, holder: str) -> None:
        super().__init__()
        self._reg, self._service, self._path, self._holder = registry, service, path, holder
        self.sid = ""
        self._seen = 0
        self._mutex = threading.Lock()

    def renew(self) -> None:
        with self._mutex:
            status, _ = self._reg._http("PUT", f"/v1/session/renew/{self.sid}")
            if status == 404 and not self.lost:
                self._reacquire()

    def _reacquire(self) -> None:
        sid = self._reg._session(self._service)
        if self._reg._http("PUT", f"{self._path}?acquire={sid}", self._holder)[1].strip() == b"true":
            self.sid = sid
            self.renewed += 1
        else:
            self._reg._http("PUT", f"/v1/session/destroy/{sid}")
            self.lost = "Consul lost the lock's session and another holder took the lock"

    def verify(self) -> bool:
        with self._mutex:
            if not self.lost:
                status, data = self._reg._http("GET", f"/v1/session/info/{self.sid}")
                if status == 404 or not json.loads(data or b"null"):
                    self._reacquire()
            fresh, self._seen = self.renewed != self._seen, self.renewed
            return fresh


# ------------------------------------------------------------------------------- file


class FileRegistry(Registry):
    """The registry in one local JSON file; health is checked live over HTTP."""

    def __init__(self, path: str | os.PathLike[str], prefix: str = "") -> None:
        super().__init__(prefix)
        self.path = Path(path)
        self.where = str(self.path)

    @contextlib.contextmanager
    def _state(self, write: bool = False) -> Iterator[dict[str, Any]]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lockfile = open(f"{self.path}.lock", "a+")  # noqa: SIM115
        except OSError as exc:
            raise Unreachable("state file", str(self.path), exc.strerror or str(exc)) from exc
        with lockfile:
            fcntl.flock(lockfile, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            try:
                state = json.loads(self.path.read_text()) if self.path.exists() else {}
            except ValueError as exc:
                raise OperationFailed(f"state file {self.path} is corrupt: {exc}") from exc
            state.setdefault("kv", {})
            state.setdefault("services", {})
            yield state
            if write:
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
                os.replace(tmp, self.path)

    def ping(self) -> None:
        with self._state():
            pass

    def kv_get(self, key: str) -> str | None:
        with self._state() as st:
            return st["kv"].get(key)

    def kv_put(self, key: str, value: str) -> None:
        with self._state(write=True) as st:
            st["kv"][key] = value

    def kv_delete(self, key: str) -> None:
        with self._state(write=True) as st:
            st["kv"].pop(key, None)

    def kv_update(self, key: str, fn: Callable[[str | None], str | None]) -> None:
        with self._state(write=True) as st:
            new = fn(st["kv"].get(key))
            if new is None:
                st["kv"].pop(key, None)
            else:
                st["kv"][key] = new

    def register(self, inst: Instance, interval: str = "1s", passing: bool = False) -> None:
        with self._state(write=True) as st:
            st["services"][inst.id] = asdict(inst) | {"status": "unknown"}

    def deregister(self, instance_id: str) -> None:
        with self._state(write=True) as st:
            st["services"].pop(instance_id, None)

    def instances(self, service: str, color: str, passing: bool = False,
                  foreign: bool = False) -> list[Instance]:
        self.color_service(service, color)
        if foreign:
            return []  # the file holds only what bluegreen registered
        with self._state() as st:
            found = [Instance(**d) for d in st["services"].values()
                     if d["service"] == service and d["color"] == color]
        result = []
        for inst in sorted(found, key=lambda i: i.id):
            status = _http_status(inst.check_url) if inst.check_url else "passing"
            if passing and status != "passing":
                continue
            result.append(Instance(**(asdict(inst) | {"status": status})))
        return result

    @contextlib.contextmanager
    def lock(self, service: str, wait: float = 0.0,
             on_stale: Callable[[str], None] | None = None) -> Iterator[Lease]:
        path = Path(f"{self.path}.{validate.service(service)}.deploy-lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        with open(path, "a+") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        fh.seek(0)
                        try:
                            who = describe_holder(json.loads(fh.read() or "{}"))
                        except ValueError:
                            who = "another process"
                        raise LockHeld(f"{service} is locked by {who}") from None
                    time.sleep(0.25)
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(holder_info()))
            fh.flush()
            try:
                yield Lease()
            finally:
                fh.truncate(0)
                fcntl.flock(fh, fcntl.LOCK_UN)


def _http_status(url: str) -> str:
    import requests

    try:
        ok = requests.get(url, timeout=1.0, allow_redirects=False).status_code < 400
    except requests.RequestException:
        return "critical"
    return "passing" if ok else "critical"
