"""The registry interface: the color record, color instances, JSON records, the deploy lock.

Backends (one module each, chosen by name in ``bluegreen.settings``) implement the KV
primitives, registration, instance reads and the lock; the records are built here on top of
them, and one contract test suite (tests/contract.py) holds every backend to the same rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from bluegreen import model, validate
from bluegreen.errors import InvalidRecord
from bluegreen.model import Instance
from bluegreen.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LOCK_TTL_SECONDS = 15


def _is_color_or_none(value: Any) -> bool:
    return value is None or value in model.COLORS


# The shape of each JSON record bluegreen writes: (test, what it must be).
_RECORDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "history": (lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v),
                "a list of entries"),
    "inflight": (lambda v: isinstance(v, dict) and v.get("to") in model.COLORS
                 and _is_color_or_none(v.get("from")), "a run record with from and to colors"),
    "release": (lambda v: isinstance(v, dict) and isinstance(v.get("verified"), bool)
                and isinstance(v.get("image"), (str, type(None))),
                "a release record with image and verified"),
    "scale-down": (lambda v: isinstance(v, dict) and isinstance(v.get("not_before"), (int, float))
                   and (v.get("color") in model.COLORS or (
                       isinstance(v.get("colors"), dict)
                       and all(c in model.COLORS for c in v["colors"].values()))),
                   "a scale-down record with colors and not_before"),
    "proxies-behind": (lambda v: isinstance(v, dict) and isinstance(v.get("proxies"), dict)
                       and all(isinstance(e, dict) and isinstance(e.get("routes"), list)
                               for e in v["proxies"].values()),
                       "a proxies-behind record with each proxy's routes"),
}


def _check_record(name: str, value: Any) -> str | None:
    """What is wrong with a decoded record, or None."""
    test, what = _RECORDS.get(name.split("-")[0] if name.startswith("release-") else name,
                              (lambda v: True, ""))
    return None if test(value) else f"not {what}"


class Lease(Record):
    """A held deploy lock. ``lost`` says why it is no longer held (the registry lost it and
    another holder took it); ``renewed`` counts re-acquisitions after the registry lost it."""

    lost: str | None = None
    renewed: int = 0

    def verify(self) -> bool:
        """Check the lock is still ours (re-acquire it if the registry forgot it); True when it
        was re-acquired since the last call, so the holder rewrites what it keeps there."""
        return False


def hostname() -> str:
    """This host's name, as ``socket.gethostname()`` (without ``socket``'s 4 ms import)."""
    return os.uname().nodename


def holder_info() -> dict[str, Any]:
    """Who holds a lock: host, pid (with its start time, against pid reuse), build URL."""
    info: dict[str, Any] = {
        "host": hostname(),
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
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def holder_is_dead(info: dict[str, Any]) -> bool:
    """True only when the holder ran on this host and its process is gone."""
    if info.get("host") != hostname() or not isinstance(info.get("pid"), int):
        return False
    return _pid_start(info["pid"]) != info.get("pid_start")


class Registry(ABC):
    """What the toolkit needs from a service registry."""

    where: str
    client_modules: tuple[str, ...] = ()  # what registering imports (bluegreen.preload)

    def __init__(self, prefix: str = "") -> None:
        self.prefix = validate.kv_prefix(prefix)
        self._snapshot: tuple[str, dict[str, str], set[str]] | None = None

    def key(self, service: str, name: str) -> str:
        return f"{self.prefix}{validate.service(service)}/{name}"

    @staticmethod
    def color_service(service: str, color: str) -> str:
        return model.color_name(validate.service(service), validate.color(color))

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
    def kv_list(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its value, in one read."""

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

    @contextlib.contextmanager
    def snapshot(self, service: str, family: bool = False) -> Iterator[None]:
        """Within: the service's records are read in ONE request and served from that copy (a
        recovery reads each of them, a rollback's budget is 100 ms); a record written meanwhile
        is read again from the registry. For short sections under the service's lock only.
        ``family``: the records of every ``<stem>.*`` too, ``service`` being ``<stem>.<x>``
        (an application's own records and its services')."""
        if self._snapshot is not None:
            yield
            return
        prefix = self.key(service, "")
        if family:
            prefix = f"{self.prefix}{validate.service(service).partition('.')[0]}."
        self._snapshot = (prefix, self.kv_list(prefix), set())
        try:
            yield
        finally:
            self._snapshot = None

    def _read(self, key: str) -> str | None:
        snap = self._snapshot
        if snap and key.startswith(snap[0]) and key not in snap[2]:
            return snap[1].get(key)
        return self.kv_get(key)

    def _written(self, key: str) -> None:
        if self._snapshot:
            self._snapshot[2].add(key)

    def get_color(self, service: str) -> str | None:
        """The recorded color; ``None`` when there is no record, ``InvalidRecord`` when the
        record is not a color (never taken for an absent one)."""
        key = self.key(service, "color")
        value = self._read(key)
        if value is None:
            return None
        if value.strip() not in model.COLORS:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise InvalidRecord(key, f"{shown!r} is not blue or green")
        return value.strip()

    def set_color(self, service: str, color: str | None) -> None:
        self._written(self.key(service, "color"))
        if color is None:
            self.kv_delete(self.key(service, "color"))
        else:
            self.kv_put(self.key(service, "color"), validate.color(color))

    def get_json(self, service: str, name: str) -> Any:
        """A JSON record, ``None`` when absent, ``InvalidRecord`` when unreadable."""
        key = self.key(service, name)
        return _decode(key, name, self._read(key))

    def put_json(self, service: str, name: str, value: Any) -> None:
        self._written(self.key(service, name))
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

        self._written(key)
        self.kv_update(key, add)

    def update_json(self, service: str, name: str, fn: Callable[[Any], Any]) -> None:
        """Replace a JSON record with ``fn(old)`` atomically (CAS; ``None`` deletes); an
        unreadable record is an error, not lost."""
        key = self.key(service, name)

        def change(old: str | None) -> str | None:
            new = fn(_decode(key, name, old))
            return None if new is None else json.dumps(new, sort_keys=True)

        self._written(key)
        self.kv_update(key, change)

    def set_aside(self, service: str, name: str) -> str:
        """Keep an unreadable record under ``<name>.invalid-<time>`` and delete it."""
        key = self.key(service, name)
        value = self._read(key)
        aside = f"{name}.invalid-{int(time.time())}"
        self._written(key)
        self._written(self.key(service, aside))
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
