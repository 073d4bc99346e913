"""The Consul registry: KV ``<prefix><service>/color`` (``books-ms/color`` as in the book),
services ``<service>-<color>`` on the agent with an HTTP check, a session lock.

Every call (KV, health, the lock, agent registration) goes through one ``wire.Client``: http
or https with the consul CLI's variables (``CONSUL_CACERT``, ``CONSUL_CAPATH``,
``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``, ``CONSUL_TLS_SERVER_NAME``, ``CONSUL_HTTP_SSL``,
``CONSUL_HTTP_SSL_VERIFY``) and the proxy variables, the same for every call. No client
library: importing ``requests`` (which py-consul needs) takes longer than an nginx reload.
"""

from __future__ import annotations

import _thread  # not threading: 1 ms of every start of the CLI for one renewer
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping

from bluegreen import model, validate, wire
from bluegreen.errors import (
    AccessDenied,
    LockHeld,
    OperationFailed,
    TLSFailed,
    TLSFileError,
    Unreachable,
    add_secret,
    redact,
)
from bluegreen.model import COLORS, Instance
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
# Consul's 403: "Permission denied: token with AccessorID '...' lacks permission 'key:write'
# on \"books-ms/color\"" (older agents: "Permission denied").
LACKS = validate.Lazy(r"lacks permission '([a-z_]+:[a-z]+)'(?: on \"?([^\"]*)\"?)?")


class _Leaderless(Exception):
    """A 500 from Consul servers without a leader (retried, never raised to the user)."""


def _bool(env: Mapping[str, str], name: str) -> bool | None:
    """A boolean variable as Go's ``strconv.ParseBool`` reads it (the consul CLI does)."""
    value = env.get(name)
    if value is None or value == "":
        return None
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise validate.UsageError(f"invalid {name} {value!r}: use true or false")


def parse_consul_addr(addr: str, env: Mapping[str, str] | None = None) -> tuple[str, str, int]:
    """``CONSUL_HTTP_ADDR`` forms: ``host:port``, ``http://host:port``, ``https://host``,
    ``[::1]:8500``; ``CONSUL_HTTP_SSL=true`` makes any of them https, as for the consul CLI."""
    env = os.environ if env is None else env
    if "://" not in addr:
        addr = f"http://{addr}"
    try:
        scheme, host, port, rest = wire.split_url(addr)
    except ValueError:
        raise validate.UsageError(f"invalid Consul address {addr!r}") from None
    if scheme not in ("http", "https") or rest not in ("", "/"):
        raise validate.UsageError(f"invalid Consul address {addr!r}")
    if _bool(env, "CONSUL_HTTP_SSL"):
        scheme = "https"
    return scheme, host, port or (443 if addr.startswith("https://") else 8500)


def consul_tls(env: Mapping[str, str] | None = None) -> wire.TLS:
    """TLS settings from the consul CLI's variables."""
    env = os.environ if env is None else env
    return wire.TLS(cafile=env.get("CONSUL_CACERT") or None, capath=env.get("CONSUL_CAPATH") or None,
                    certfile=env.get("CONSUL_CLIENT_CERT") or None,
                    keyfile=env.get("CONSUL_CLIENT_KEY") or None,
                    server_name=env.get("CONSUL_TLS_SERVER_NAME") or None,
                    verify=_bool(env, "CONSUL_HTTP_SSL_VERIFY") is not False)


def _decoded(value: str) -> str:
    """A KV value as Consul's JSON has it (base64; ``base64`` itself costs 2 ms to import)."""
    import binascii

    return binascii.a2b_base64(value.encode("ascii")).decode()


def _denied(where: str, method: str, path: str, text: str) -> AccessDenied:
    """Consul's 403 as one line: the permission missing and what it was for."""
    found = LACKS.search(text)
    if found:
        perm, on = found.group(1), found.group(2)
    else:
        perm, on = _permission_of(method, path)
    on_text = f" on {on!r}" if on else ""
    return AccessDenied(f"Consul at {where} denied {method} {path.split('?')[0]}: the token lacks "
                        f"{perm}{on_text} (bluegreen consul policy prints the policy it needs)")


def _permission_of(method: str, path: str) -> tuple[str, str]:
    """What a request needs, when Consul's answer does not say."""
    path = path.split("?")[0]
    write = method in ("PUT", "POST", "DELETE")
    if path.startswith("/v1/kv/"):
        return ("key:write" if write else "key:read"), path[7:]
    if path.startswith("/v1/agent/service/deregister/"):
        return "service:write", path.rsplit("/", 1)[-1]  # the instance's ID
    if path.startswith("/v1/agent/service/"):
        return "service:write", ""  # the name is in the body; Consul's answer names it
    if path.startswith("/v1/health/service/"):
        return "service:read", path.rsplit("/", 1)[-1]
    if path.startswith("/v1/session/"):
        return ("session:write" if write else "session:read"), ""
    return "an ACL permission", ""


def policy(prefix: str, services: list[str], app: str | None = None) -> list[tuple[str, str, str]]:
    """The least-privilege ACL rules (resource, name, access) a token needs to release
    ``services`` (and the application ``app``) under the KV ``prefix``: its keys, its colors'
    agent services, sessions for the lock, node read for health. Names are validated."""
    prefix = validate.kv_prefix(prefix)
    rules = []
    if app:
        rules += [("key_prefix", f"{prefix}{app}.", "write"), ("service_prefix", f"{app}.", "write")]
    for service in services:
        service = validate.service(service)
        rules.append(("key_prefix", f"{prefix}{service}/", "write"))
        rules += [("service", model.color_name(service, c), "write") for c in COLORS]
    return [*rules, ("session_prefix", "", "write"), ("node_prefix", "", "read")]


def policy_hcl(rules: list[tuple[str, str, str]]) -> str:
    """The rules as a Consul policy in HCL (``consul acl policy create -rules @FILE``)."""
    return "".join(f'{kind} "{name}" {{\n  policy = "{access}"\n}}\n' for kind, name, access in rules)


class ConsulRegistry(Registry):
    """The registry on a Consul agent (``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``, the TLS
    variables of ``consul_tls``, the proxy variables)."""

    def __init__(self, addr: str, token: str | None = None, prefix: str = "",
                 timeout: float = 5.0, env: Mapping[str, str] | None = None) -> None:
        super().__init__(prefix)
        env = os.environ if env is None else env
        self.scheme, self.host, self.port = parse_consul_addr(addr, env)
        try:
            self.wire = wire.Client(self.scheme, self.host, self.port,
                                    consul_tls(env) if self.scheme == "https" else None,
                                    timeout, env)
        except wire.ProxyError as exc:
            where = wire.host_header(self.host, self.port)
            raise validate.UsageError(f"Consul at {self.scheme}://{where}: {exc}") from None
        self.where = self.wire.url
        self._token = token or None
        add_secret(self._token)
        self._timeout = timeout
        self._authorized: set[str] = set()

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
            status, fields, data = self.wire.request(method, path, payload, headers)
        except wire.TLSFileError as exc:
            raise TLSFileError(f"Consul at {self.where}: {exc}") from None
        except wire.TLSError as exc:
            hint = ""
            if "certificate required" in exc.reason or "client certificate" in exc.reason \
                    or "bad certificate" in exc.reason:
                hint = " (set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY to a certificate it trusts)"
            elif "verify failed" in exc.reason:
                hint = " (CONSUL_CACERT or CONSUL_CAPATH: the CA that signed it; " \
                       "CONSUL_TLS_SERVER_NAME: the name in it)"
            raise TLSFailed("Consul", self.where, exc.reason + hint) from None
        except wire.Redirected as exc:
            raise OperationFailed(f"Consul at {self.where}: {method} {path.split('?')[0]}: "
                                  f"{exc}") from None
        except OSError as exc:
            detail = str(exc) if isinstance(exc, wire.WireError) else type(exc).__name__
            raise Unreachable("Consul", self.where, redact(detail)[:200]) from exc
        text = data.decode(errors="replace") if status >= 400 else ""
        if status == 403:
            raise _denied(self.where, method, path, redact(text))
        if status == 500 and LEADERLESS.search(text):
            raise _Leaderless(redact(text.strip())[:120])
        if status >= 400 and status != 404:
            # The reply is the server's text: it may echo our headers, so the token goes.
            detail = redact(text.strip())[:200]
            raise OperationFailed(f"Consul at {self.where}: HTTP {status} {method} "
                                  f"{path.split('?')[0]}: {detail}")
        if fields.get("x-consul-results-filtered-by-acls", "").lower() == "true":
            # A read the ACLs filtered: what is hidden would be taken for absent.
            perm, on = _permission_of(method, path)
            raise AccessDenied(f"Consul at {self.where} hid part of {path.split('?')[0]} "
                               f"from the token: it lacks {perm} on {on!r} or node:read "
                               f"(bluegreen consul policy prints the policy it needs)")
        return status, data

    def authorize(self, service: str) -> None:
        """Ask Consul, before anything changes, whether the token may do what a release of
        ``service`` does (``/v1/internal/acl/authorize``); ``AccessDenied`` names the first
        permission missing. Once per service; called by ``lock`` when a token is set."""
        if service in self._authorized:
            return
        checks = [{"Resource": "key", "Segment": self.key(service, "color"), "Access": "write"},
                  {"Resource": "session", "Segment": "", "Access": "write"}]
        checks += [{"Resource": "service", "Segment": self.color_service(service, c),
                    "Access": "write"} for c in COLORS]
        checks.append({"Resource": "node", "Segment": "", "Access": "read"})
        status, data = self._http("POST", "/v1/internal/acl/authorize", json.dumps(checks))
        if status == 404:  # an agent older than 1.11: the first refused call will say
            return
        for check, answer in zip(checks, json.loads(data or b"[]"), strict=False):
            if not answer.get("Allow"):
                what = check["Segment"] or "this agent's node"
                raise AccessDenied(
                    f"Consul at {self.where}: the token lacks {check['Resource']}:"
                    f"{check['Access']} on {what!r}, which {service} needs (bluegreen consul "
                    f"policy prints the policy it needs); nothing was changed")
        self._authorized.add(service)

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
        body: dict[str, Any] = {
            "Name": self.color_service(inst.service, inst.color), "ID": inst.id,
            "Address": inst.address, "Port": inst.port, "Tags": ["bluegreen", inst.color],
            "Meta": {"bluegreen_service": inst.service, "bluegreen_color": inst.color}}
        if inst.check_url:
            body["Check"] = {"HTTP": inst.check_url, "Interval": interval, "Timeout": "1s",
                             "DeregisterCriticalServiceAfter": "10m"}
            if passing:
                body["Check"]["Status"] = "passing"  # Consul goes on checking it from here
        self._http("PUT", "/v1/agent/service/register", json.dumps(body))

    def deregister(self, instance_id: str) -> None:
        self._http("PUT", f"/v1/agent/service/deregister/{wire.quote(instance_id, '')}")

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
        if self._token:
            self.authorize(service)  # a token missing a permission fails before any change
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
