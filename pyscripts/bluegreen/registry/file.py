"""The file registry: the same records in one local JSON file, for trials and the demo.
Health is checked live over HTTP and the lock is a ``flock``. Chosen by name, never as a
fallback for an unreachable Consul."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator

from bluegreen import validate
from bluegreen.errors import LockHeld, OperationFailed, Unreachable
from bluegreen.model import Instance
from bluegreen.record import asdict
from bluegreen.registry.base import Lease, Registry, describe_holder, holder_info

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class FileRegistry(Registry):
    """The registry in one local JSON file; health is checked live over HTTP."""

    def __init__(self, path: str | os.PathLike[str], prefix: str = "") -> None:
        super().__init__(prefix)
        self.path = self.where = os.fspath(path)

    @contextlib.contextmanager
    def _state(self, write: bool = False) -> Iterator[dict[str, Any]]:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            lockfile = open(f"{self.path}.lock", "a+")  # noqa: SIM115
        except OSError as exc:
            raise Unreachable("state file", self.path, exc.strerror or str(exc)) from exc
        with lockfile:
            fcntl.flock(lockfile, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            try:
                with open(self.path) as fh:
                    state = json.loads(fh.read())
            except FileNotFoundError:
                state = {}
            except ValueError as exc:
                raise OperationFailed(f"state file {self.path} is corrupt: {exc}") from exc
            state.setdefault("kv", {})
            state.setdefault("services", {})
            yield state
            if write:
                where, name = os.path.split(self.path)
                tmp = os.path.join(where, f".{name}.{os.getpid()}.tmp")
                with open(tmp, "w") as fh:
                    fh.write(json.dumps(state, indent=1, sort_keys=True))
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

    def kv_list(self, prefix: str) -> dict[str, str]:
        with self._state() as st:
            return {k: v for k, v in st["kv"].items() if k.startswith(prefix)}

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
        path = f"{self.path}.{validate.service(service)}.deploy-lock"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
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
    from bluegreen import wire

    try:
        ok = wire.get(url, timeout=1.0)[0] < 400
    except OSError:
        return "critical"
    return "passing" if ok else "critical"
