"""The Consul registry: KV ``<prefix><service>/color`` (``books-ms/color`` as in the book),
services ``<service>-<color>`` on the agent with an HTTP check, a session lock.

KV, health reads and the lock go over ``bluegreen.wire`` (``http.client`` for ``https://``
agents): they are on the switch and rollback hot path, and importing ``requests`` (which
py-consul needs) takes longer than an nginx reload. Agent registration, with its check, uses py-consul.
"""

from __future__ import annotations

import _thread  # not threading: 1 ms of every start of the CLI for one renewer
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator

from bluegreen import validate, wire
from bluegreen.errors import LockHeld, OperationFailed, Unreachable, add_secret, reaching, redact
from bluegreen.model import Instance
from bluegreen.registry.base import (
    LOCK_TTL_SECONDS,
    Lease,
    Registry,
    describe_holder,
    holder_info,
    holder_is_dead,
)

RENEW_EVERY = LOCK_TTL_SECONDS / 3  # seconds between two renewals of a held lock's session

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LEADERLESS_WAIT = 15.0  # seconds: Consul's elections take ~1-2 s (raft_multiplier 1) to ~10 s
# Consul's 500 answers while its servers elect a leader or one is unreachable.
LEADERLESS = validate.Lazy(r"No cluster leader|leadership lost|rpc error|Raft leader not found",
                        re.IGNORECASE)


class _Leaderless(Exception):
    """A 500 from Consul servers without a leader (retried, never raised to the user)."""


def parse_consul_addr(addr: str) -> tuple[str, str, int]:
    """``CONSUL_HTTP_ADDR`` forms: ``host:port``, ``http://host:port``, ``https://host``."""
    if "://" not in addr:
        scheme = "https" if os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true") else "http"
        addr = f"{scheme}://{addr}"
    try:
        scheme, host, port, rest = wire.split_url(addr)
    except ValueError:
        raise validate.UsageError(f"invalid Consul address {addr!r}") from None
    if scheme not in ("http", "https") or rest not in ("", "/"):
        raise validate.UsageError(f"invalid Consul address {addr!r}")
    return scheme, host, port or (443 if scheme == "https" else 8500)


def _decoded(value: str) -> str:
    """A KV value as Consul's JSON has it (base64; ``base64`` itself costs 2 ms to import)."""
    import binascii

    return binascii.a2b_base64(value.encode("ascii")).decode()


class ConsulRegistry(Registry):
    """The registry on a Consul agent (``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``,
    ``CONSUL_CACERT``, ``CONSUL_HTTP_SSL_VERIFY``)."""

    client_modules = ("consul",)

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

    def _http(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        """One request; while the servers have no leader (an election after a server was
        lost: Consul answers 500 naming the leader or a failed server RPC), it is sent again
        for up to ``LEADERLESS_WAIT`` seconds, then ``Unreachable`` (exit 3). Every request
        bluegreen sends may be sent twice: KV writes are whole values or check-and-set, a
        session that was created twice expires unused."""
        deadline = time.monotonic() + LEADERLESS_WAIT
        while True:
            try:
                return self._http_once(method, path, body)
            except _Leaderless as exc:
                if time.monotonic() >= deadline:
                    raise Unreachable("Consul", self.where, f"no cluster leader after "
                                      f"{LEADERLESS_WAIT:g}s ({exc})") from None
                time.sleep(0.25)

    def _http_once(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        headers = {"X-Consul-Token": self._token} if self._token else {}
        payload = body.encode() if body is not None else None
        try:
            if self.scheme == "https":
                status, data = self._https(method, path, payload, headers)
            else:
                status, data = wire.request(f"{self.host}:{self.port}", method, path, payload,
                                            headers, self._timeout)
        except OSError as exc:
            raise Unreachable("Consul", self.where, type(exc).__name__) from exc
        if status == 403:
            raise OperationFailed(f"Consul at {self.where} denied the request (ACL)")
        if status == 500 and LEADERLESS.search(data.decode(errors="replace")):
            raise _Leaderless(redact(data.decode(errors="replace").strip())[:120])
        if status >= 400 and status != 404:
            # The reply is the server's text: it may echo our headers, so the token goes.
            detail = redact(data.decode(errors="replace").strip())[:200]
            raise OperationFailed(f"Consul at {self.where}: HTTP {status} {method} "
                                  f"{path.split('?')[0]}: {detail}")
        return status, data

    def _https(self, method: str, path: str, body: bytes | None,
               headers: dict[str, str]) -> tuple[int, bytes]:
        """One request to an ``https://`` agent, with ``http.client`` and ``ssl``."""
        import http.client
        import ssl

        cafile, check = self._tls()
        ctx = ssl.create_default_context(cafile=cafile)
        if not check:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self._timeout,
                                           context=ctx)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    @staticmethod
    def _kv_path(key: str) -> str:
        return "/v1/kv/" + wire.quote(key)

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

    def kv_list(self, prefix: str) -> dict[str, str]:
        status, data = self._http("GET", self._kv_path(prefix) + "?recurse")
        if status == 404:
            return {}
        return {e["Key"]: _decoded(e["Value"]) if e.get("Value") else ""
                for e in json.loads(data)}

    def _kv_entry(self, key: str) -> dict[str, Any] | None:
        """The key's entry (Value decoded, ModifyIndex, Session), or None."""
        status, data = self._http("GET", self._kv_path(key))
        if status == 404:
            return None
        entry: dict[str, Any] = json.loads(data)[0]
        raw = entry.get("Value")
        entry["Value"] = _decoded(raw) if raw is not None else None
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
        path = f"/v1/health/service/{wire.quote(name)}" + ("?passing=1" if passing else "")
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
        stop = _thread.allocate_lock()
        stop.acquire()  # released with the lock: the renewer's wait ends

        def renew() -> None:
            while not stop.acquire(timeout=RENEW_EVERY):
                with contextlib.suppress(Exception):
                    lease.renew()

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
            _thread.start_new_thread(renew, ())  # ends with the process, as a daemon thread
            yield lease
        finally:
            stop.release()
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
        self._mutex = _thread.allocate_lock()

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
