"""One HTTP request over a socket, for the loopback and unix-socket endpoints on the switch and
rollback path: the Consul agent, nginx's control endpoint, the Docker engine's socket.

Why not ``http.client``: its import (with ``email`` and ``ssl``) costs about 30 ms at every
start of the CLI, a third of a rollback's budget (docs/benchmarks.md). A request here is
HTTP/1.1 with ``Connection: close``; the answer is read to its end (``Content-Length``,
chunked, or until the server closes). HTTPS is not spoken here: callers that need it use
``http.client`` (the Consul registry does, for ``https://`` agents).

The sockets are ``_socket``'s, the C module that ``socket`` wraps: ``socket``'s import (its
enum classes, ``selectors``, ``array``) costs about 4 ms of every start of the CLI, and a
request here needs only connect, send, receive and close.
"""

from __future__ import annotations

import _socket

MAX_BODY = 64 * 1024 * 1024  # an answer larger than this is refused, not buffered


class WireError(OSError):
    """The peer answered with something that is not HTTP, or broke off."""


def request(where: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send one request to ``where`` (``host:port`` or ``unix:/path``); the status and body.
    Raises ``OSError`` (``WireError`` included) when the peer cannot be reached or answers
    badly."""
    host = "localhost" if where.startswith("unix:") else where
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close",
             "User-Agent: bluegreen"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body or b'')}")
    sock = _connect(where, timeout)
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        return _response(sock)
    finally:
        sock.close()


def _connect(where: str, timeout: float) -> _socket.socket:
    """A connected socket: to each address ``host:port`` resolves to in turn (as
    ``socket.create_connection``), or to the unix socket ``unix:/path``."""
    if where.startswith("unix:"):
        return _connected(_socket.AF_UNIX, where[5:], timeout)
    host, _, port = where.rpartition(":")
    host = host.strip("[]")  # as bytes, an ASCII name skips the idna codec's import
    infos = _socket.getaddrinfo(host.encode() if host.isascii() else host, int(port), 0,
                                _socket.SOCK_STREAM)
    error: OSError = OSError(f"{where}: no address")
    for family, kind, proto, _, address in infos:
        try:
            return _connected(family, address, timeout, kind, proto)
        except OSError as exc:
            error = exc
    raise error


def _connected(family: int, address: str | tuple[str, int], timeout: float,
               kind: int = _socket.SOCK_STREAM, proto: int = 0) -> _socket.socket:
    sock = _socket.socket(family, kind, proto)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _response(sock: _socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise WireError("the peer closed the connection before its answer's headers")
        data += chunk
        if len(data) > 65536 and b"\r\n\r\n" not in data:
            raise WireError("answer headers too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise WireError(f"not an HTTP answer: {status_line[:60]!r}")
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding", "").lower() == "chunked":
        return int(parts[1]), _chunked(sock, rest)
    length = fields.get("content-length")
    return int(parts[1]), _read(sock, rest, int(length) if length is not None else None)


def _read(sock: _socket.socket, data: bytes, length: int | None) -> bytes:
    """The body: ``length`` bytes, or (None) everything until the peer closes."""
    while length is None or len(data) < length:
        if len(data) > MAX_BODY:
            raise WireError("answer too large")
        chunk = sock.recv(65536)
        if not chunk:
            if length is None:
                break
            raise WireError("the peer closed the connection in the middle of its answer")
        data += chunk
    return data if length is None else data[:length]


def _chunked(sock: _socket.socket, data: bytes) -> bytes:
    """A chunked body, decoded (trailers ignored)."""
    data = _read(sock, data, None)  # Connection: close: the peer closes after the last chunk
    body, pos = bytearray(), 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise WireError("truncated chunked answer")
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            raise WireError("bad chunk size in a chunked answer") from None
        if size == 0:
            return bytes(body)
        if end + 2 + size > len(data):
            raise WireError("truncated chunked answer")
        body += data[end + 2:end + 2 + size]
        pos = end + 2 + size + 2


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET an ``http://`` or ``https://`` URL (redirects are answers, not followed); health
    probes and HTTP tests. ``https`` goes through ``http.client`` with the system's CAs.
    Raises ``OSError`` when the URL cannot be reached or answers badly, ``ValueError`` for a
    URL that is neither."""
    scheme, host, port, rest = split_url(url)
    if scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = rest.split("#", 1)[0]
    path = path if path.startswith("/") else "/" + path
    port = port or (443 if scheme == "https" else 80)
    if scheme == "http":
        return request(f"{host}:{port}", "GET", path, timeout=timeout)
    import http.client
    import ssl

    conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                       context=ssl.create_default_context())
    try:
        conn.request("GET", path, headers={"User-Agent": "bluegreen"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except http.client.HTTPException as exc:
        raise WireError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def split_url(url: str) -> tuple[str, str, int | None, str]:
    """``scheme://host[:port][rest]``: the scheme and the host lowercased (an IPv6 host
    without its brackets), the port (None when not given) and the rest from the first ``/``,
    ``?`` or ``#``. ``ValueError`` for anything else, user info included. (``urllib.parse``
    with ``ipaddress`` costs 4 ms of every start of the CLI.)"""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.isascii() or not scheme.isalpha():
        raise ValueError(f"not a URL: {url!r}")
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0] or [len(rest)])
    netloc, rest = rest[:end], rest[end:]
    if netloc.startswith("["):
        host, bracket, after = netloc[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"bad IPv6 host in {url!r}")
        port_text = after[1:]
    else:
        host, _, port_text = netloc.partition(":")
    if not host or "@" in netloc:
        raise ValueError(f"no host, or user info, in {url!r}")
    if port_text and not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"bad port in {url!r}")
    return scheme.lower(), host.lower(), int(port_text) if port_text else None, rest


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str, safe: str = "/") -> str:
    """Percent-encode ``text`` (UTF-8) except unreserved characters and ``safe``: as
    ``urllib.parse.quote``."""
    keep = _UNRESERVED.union(safe.encode())
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in text.encode())


def query(pairs: dict[str, str]) -> str:
    """A query string of ``pairs``, every key and value percent-encoded."""
    return "&".join(f"{quote(k, '')}={quote(v, '')}" for k, v in pairs.items())
