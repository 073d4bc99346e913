"""Validation of every value that reaches a container, an nginx file or a KV path.

Values are rejected at the edge, never escaped later: anything accepted here is
safe to place in an nginx block, a KV key, a container name or a label.
"""

from __future__ import annotations

import os
import re

from bluegreen.errors import UsageError
from bluegreen.model import COLORS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Lazy:
    """A regular expression compiled on first use (a command uses few of the package's; each
    compiled costs a fraction of a millisecond of its start). ``fullmatch``, ``search``,
    ``finditer`` and the other methods are the compiled pattern's."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern, self.flags = pattern, flags
        self._compiled: re.Pattern[str] | None = None

    def compiled(self) -> re.Pattern[str]:
        if self._compiled is None:
            self._compiled = re.compile(self.pattern, self.flags)
        return self._compiled

    def fullmatch(self, value: str) -> re.Match[str] | None:
        return self.compiled().fullmatch(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.compiled(), name)


SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# Docker image reference: [registry[:port]/]path[:tag][@digest]
_IMAGE_RE = Lazy(
    r"(?:(?P<registry>[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}))?"
)
_ENV_KEY_RE = Lazy(r"[A-Za-z_][A-Za-z0-9_]*")
_LOCATION_RE = Lazy(r"/[A-Za-z0-9._~/-]*")
_HTTP_PATH_RE = Lazy(r"/[A-Za-z0-9._~/%?&=+:@,;!*'()-]*")
_HOST_RE = Lazy(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9a-fA-F:]+\]")
_PREFIX_RE = Lazy(r"(?:[A-Za-z0-9_-]+/)*")
_NETWORK_RE = Lazy(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_URL_PATH_RE = Lazy(r"(?:/[A-Za-z0-9._~-]*)+")


def service(value: str) -> str:
    """A service name: ``[a-z0-9][a-z0-9._-]*``, at most 63 characters, no ``..``."""
    if not isinstance(value, str) or not SERVICE_RE.fullmatch(value) or len(value) > 63:
        raise UsageError(
            f"invalid service name {value!r}: use [a-z0-9][a-z0-9._-]*, at most 63 characters"
        )
    if ".." in value:
        raise UsageError(f"invalid service name {value!r}: '..' is not allowed")
    return value


def color(value: str) -> str:
    if value not in COLORS:
        raise UsageError(f"invalid color {value!r}: use blue or green")
    return value


def image(value: str) -> str:
    m = _IMAGE_RE.fullmatch(value) if isinstance(value, str) and len(value) <= 255 else None
    registry = m.group("registry") if m else None
    # As Docker: a first component is a registry only with a '.' or ':' or as 'localhost'.
    if not m or (registry and not ("." in registry or ":" in registry or registry == "localhost")
                 and registry != registry.lower()):
        raise UsageError(f"invalid image reference {value!r}")
    return value


def port(value: int | str, what: str = "port") -> int:
    try:
        number = int(str(value), 10)
    except ValueError:
        raise UsageError(f"invalid {what} {value!r}: use a number from 1 to 65535") from None
    if not 1 <= number <= 65535:
        raise UsageError(f"invalid {what} {value!r}: use a number from 1 to 65535")
    return number


def bounded_int(value: int | str, what: str, low: int, high: int) -> int:
    try:
        number = int(str(value), 10)
    except ValueError:
        raise UsageError(f"invalid {what} {value!r}: use a whole number") from None
    if not low <= number <= high:
        raise UsageError(f"invalid {what} {value!r}: use a number from {low} to {high}")
    return number


def scale(value: int | str) -> int:
    return bounded_int(value, "scale", 1, 64)


def weight(value: int | str) -> int:
    """A route weight, 0 to 100 (the multi-service seed's 0 -> 100 switch)."""
    return bounded_int(value, "weight", 0, 100)


def number(value: float | str, what: str, low: float, high: float) -> float:
    """A finite number from ``low`` to ``high`` (a percent, a ratio)."""
    try:
        result = float(str(value))
    except ValueError:
        raise UsageError(f"invalid {what} {value!r}: use a number") from None
    if not low <= result <= high:  # NaN fails too
        raise UsageError(f"invalid {what} {value!r}: use a number from {low:g} to {high:g}")
    return result


def seconds(value: float | str, what: str, high: float = 86400.0) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise UsageError(f"invalid {what} {value!r}: use a number of seconds") from None
    if not 0 <= number <= high or number != number:
        raise UsageError(f"invalid {what} {value!r}: use 0 to {high:g} seconds")
    return number


def env_pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not _ENV_KEY_RE.fullmatch(key):
        raise UsageError(f"invalid --env {value!r}: use KEY=VALUE with KEY of [A-Za-z_][A-Za-z0-9_]*")
    if "\x00" in val:
        raise UsageError(f"invalid --env {key}: NUL byte in value")
    return key, val


def matching(regex: re.Pattern[str] | Lazy, value: str, what: str, hint: str = "") -> str:
    """``value`` if ``regex`` matches all of it; else a usage error naming ``what``."""
    if not isinstance(value, str) or not regex.fullmatch(value):
        raise UsageError(f"invalid {what} {value!r}" + (f": {hint}" if hint else ""))
    return value


def location(value: str) -> str:
    """An nginx location path: only characters that cannot leave the block."""
    hint = "use a path of [A-Za-z0-9._~/-] starting with /"
    if "//" in value or "/../" in value + "/":
        raise UsageError(f"invalid location {value!r}: {hint}")
    return matching(_LOCATION_RE, value, "location", hint)


def http_path(value: str) -> str:
    return matching(_HTTP_PATH_RE, value, "HTTP path")


def host(value: str) -> str:
    return matching(_HOST_RE, value, "host")


def kv_prefix(value: str) -> str:
    """A KV prefix: empty, or path segments each ending in ``/``."""
    return matching(_PREFIX_RE, value, "KV prefix", "use segments of [A-Za-z0-9_-] ending in /")


def network(value: str) -> str:
    return matching(_NETWORK_RE, value, "network name")


def base_url(value: str, what: str = "--proxy-url") -> str:
    """``http(s)://host[:port]`` with nothing after it (tests append their paths)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(value)
    if "@" in parts.netloc:  # never printed: it may hold a password
        raise UsageError(f"invalid {what}: credentials in the URL (user:password@) are not "
                         f"taken: they would be kept in records and shown in logs")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or parts.username or port == -1):
        raise UsageError(f"invalid {what} {value!r}: use http(s)://host[:port]")
    host(parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]")
    return value.rstrip("/")


def prefix_url(value: str, what: str) -> str:
    """``http(s)://host[:port][/path]`` (a server under a path prefix), no query or user info."""
    import urllib.parse

    parts = urllib.parse.urlsplit(value)
    path = parts.path
    if "@" in parts.netloc:
        base_url(value, what)  # refused without printing the credentials
    if not _URL_PATH_RE.fullmatch(path or "/"):
        raise UsageError(f"invalid {what} {value!r}: use http(s)://host[:port][/path]")
    base_url(value[:len(value) - len(path)] if path else value, what)
    return value.rstrip("/")


def text(value: str, what: str, most: int = 4000) -> str:
    """A free text given to another program as one argument: printable, bounded."""
    if not value.strip() or len(value) > most or not value.isprintable():
        raise UsageError(f"invalid {what}: printable text of 1 to {most} characters")
    return value


def ipv4(value: str) -> str | None:
    """``value`` if it is an IPv4 address in dotted-decimal form (as ``ipaddress`` and
    ``inet_pton``: four numbers from 0 to 255, no leading zeros), else None. (``ipaddress``
    costs 3 ms of every start of the CLI, ``socket`` 4 ms.)"""
    parts = value.split(".") if isinstance(value, str) else ()
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 and
                               (p == "0" or p[0] != "0") and int(p) <= 255 for p in parts):
        return value
    return None


def readable_file(value: str, what: str) -> str:
    path = directory(value, what)
    if not os.path.isfile(path):
        raise UsageError(f"invalid {what} {value!r}: not a readable file")
    return path


def directory(value: str | os.PathLike[str], what: str) -> str:
    """A file or directory path option (``str``: pathlib costs 6 ms of every start)."""
    text = os.fspath(value) if value else ""
    if not text or "\x00" in text or "\n" in text:
        raise UsageError(f"invalid {what} {value!r}")
    return text
