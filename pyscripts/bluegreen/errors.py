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
      nothing was changed.
    """

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3


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


class Unreachable(BlueGreenError):
    """A dependency cannot be reached (exit 3). The message names which and where."""

    status = ExitStatus.UNREACHABLE

    def __init__(self, what: str, where: str, detail: str = "") -> None:
        self.what, self.where = what, where
        msg = f"{what} unreachable at {where}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


@contextlib.contextmanager
def reaching(what: str, where: str) -> Iterator[None]:
    """Turn a connection failure of an HTTP client (requests) into ``Unreachable``."""
    import requests

    try:
        yield
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise Unreachable(what, where, type(exc).__name__) from exc
