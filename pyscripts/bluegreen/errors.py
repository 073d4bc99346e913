"""The exception hierarchy and the documented exit statuses."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator


class ExitStatus(enum.IntEnum):
    """Exit status of every ``bluegreen`` command.

    0 OK: the operation succeeded.
    1 FAILED: the operation ran and failed (a test failed, a container did not
      become healthy, nginx rejected the configuration, the lock is held...).
    2 USAGE: bad usage or input; nothing was changed.
    3 UNREACHABLE: a dependency (Consul, Docker, nginx) cannot be reached;
      nothing was changed (what a run had started is undone first).
    4 TLS: a TLS session with Consul failed: its certificate does not verify, or it
      wants (or refuses) a client certificate. The message names the address and why.
    5 TLS_FILE: a CA, client certificate or key file (CONSUL_CACERT, CONSUL_CAPATH,
      CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY) is missing, unreadable or not PEM; named.
    6 DENIED: Consul's ACLs refused the token: the message names the permission missing
      and the key, service or session it was for (``bluegreen consul policy`` prints the
      policy a token needs).
    130 / 143: stopped by SIGINT / SIGTERM (a Jenkins abort) at a safe point, after
      routing users back to the old color and undoing the unverified one.
    """

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    TLS = 4
    TLS_FILE = 5
    DENIED = 6
    SIGINT = 130
    SIGTERM = 143


class BlueGreenError(Exception):
    """Base class of every expected error; carries its exit status."""

    status: ExitStatus = ExitStatus.FAILED


class UsageError(BlueGreenError):
    """Bad usage or input (exit 2)."""

    status = ExitStatus.USAGE


class OperationFailed(BlueGreenError):
    """An operation ran and failed (exit 1)."""

    status = ExitStatus.FAILED


class LockHeld(OperationFailed):
    """Another pipeline holds the service's deploy lock (exit 1)."""


class InvalidRecord(OperationFailed):
    """A registry record exists but cannot be read (exit 1): never taken for an absent one."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"invalid record {key}: {problem} (bluegreen recover rebuilds it)")


class Interrupted(BlueGreenError):
    """SIGTERM or SIGINT arrived; raised at a safe point (exit 143 or 130)."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.status = ExitStatus.SIGTERM if signum == signal.SIGTERM else ExitStatus.SIGINT
        super().__init__(f"stopped by {signal.Signals(signum).name}")


# Secrets (the Consul token) are registered here once read, and every text bluegreen prints
# or records passes through ``redact``: a server that echoes request headers cannot leak them.
_SECRETS: set[str] = set()


def add_secret(value: str | None) -> None:
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, "<redacted>")
    return text


class Unreachable(BlueGreenError):
    """A dependency cannot be reached (exit 3). The message names which and where."""

    status = ExitStatus.UNREACHABLE

    def __init__(self, what: str, where: str, detail: str = "") -> None:
        self.what, self.where = what, where
        msg = f"{what} unreachable at {where}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class TLSFailed(BlueGreenError):
    """A TLS session failed: a certificate that does not verify, a client certificate
    wanted or refused (exit 4)."""

    status = ExitStatus.TLS

    def __init__(self, what: str, where: str, reason: str) -> None:
        super().__init__(f"TLS with {what} at {where} failed: {reason}")


class TLSFileError(BlueGreenError):
    """A CA, client certificate or key file that cannot be used, named (exit 5)."""

    status = ExitStatus.TLS_FILE


class AccessDenied(BlueGreenError):
    """An ACL refused the token: which permission, on what (exit 6)."""

    status = ExitStatus.DENIED


@contextlib.contextmanager
def reaching(what: str, where: str) -> Iterator[None]:
    """Turn a connection failure of an HTTP client (requests) into ``Unreachable``, a TLS
    failure into ``TLSFailed``."""
    import requests

    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise TLSFailed(what, where, tls_reason(exc) or str(exc)[:200]) from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise Unreachable(what, where, type(exc).__name__) from exc


def tls_reason(exc: BaseException) -> str | None:
    """The TLS library's reason when ``exc`` is, or wraps, a TLS failure; else None."""
    import ssl

    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {e.verify_message}"
        if isinstance(e, ssl.SSLError):
            return str(e.reason or e).replace("_", " ").lower()
        todo += [x for x in (e.__cause__, e.__context__, getattr(e, "reason", None),
                             *getattr(e, "args", ())) if isinstance(x, BaseException)]
    return None
