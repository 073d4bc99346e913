"""One HTTP request over a socket, for the loopback and unix-socket endpoints on the switch and
rollback path: the Consul agent, nginx's control endpoint, the Docker engine's socket.

Why not ``http.client``: its import (with ``email`` and ``ssl``) costs about 30 ms at every
start of the CLI, a third of a rollback's budget (docs/benchmarks.md). A request here is
HTTP/1.1 with ``Connection: close``; the answer is read to its end (``Content-Length``,
chunked, or until the server closes).

:class:`Client` is the one client of a remote HTTP API (the Consul agent): http or https
(``ssl`` is imported only for https: a CA, client certificates, a server name), through the
proxy that ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` name as curl and requests read
them (an http proxy: absolute URIs for http, a ``CONNECT`` tunnel for https), redirects
refused, IPv6 literals in brackets.

The sockets are ``_socket``'s, the C module that ``socket`` wraps: ``socket``'s import (its
enum classes, ``selectors``, ``array``) costs about 4 ms of every start of the CLI, and a
request here needs only connect, send, receive and close.
"""

from __future__ import annotations

import _socket
import os

from bluegreen.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

MAX_BODY = 64 * 1024 * 1024  # an answer larger than this is refused, not buffered


class WireError(OSError):
    """The peer answered with something that is not HTTP, or broke off."""


class TLSError(WireError):
    """The TLS handshake or session failed: a certificate that does not verify, a client
    certificate the server wants or refuses. ``reason``: what the TLS library said."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Redirected(WireError):
    """The server answered with a redirect; redirects are refused, not followed."""

    def __init__(self, status: int, location: str) -> None:
        self.status, self.location = status, location
        super().__init__(f"HTTP {status} redirect to {location or '(no Location)'} refused")


class TLSFileError(Exception):
    """A CA, certificate or key file (or CA directory) that is missing, unreadable or not
    PEM. Not an ``OSError``: the server was never contacted."""

    def __init__(self, what: str, path: str, reason: str) -> None:
        self.what, self.path, self.reason = what, path, reason
        super().__init__(f"{what} {path}: {reason}")


class ProxyError(ValueError):
    """A proxy variable this client does not speak (an https:// or socks proxy, a bad URL)."""


def host_header(host: str, port: int | str) -> str:
    """``host:port`` as the ``Host`` header and a request target need it: an IPv6 literal in
    brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def request(where: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send one request to ``where`` (``host:port`` or ``unix:/path``); the status and body.
    Raises ``OSError`` (``WireError`` included) when the peer cannot be reached or answers
    badly."""
    if where.startswith("unix:"):
        host = "localhost"
    else:
        name, _, port = where.rpartition(":")
        host = host_header(name.strip("[]"), port)
    sock = _connect(where, timeout)
    try:
        sock.sendall(_head(method, path, host, body, headers) + (body or b""))
        return _response(sock)
    finally:
        sock.close()


def _head(method: str, target: str, host: str, body: bytes | None,
          headers: Mapping[str, str] | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close",
             "User-Agent: bluegreen"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


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


def _response(sock: Any) -> tuple[int, bytes]:
    status, _, body = _answer(sock)
    return status, body


def _headers(sock: Any) -> tuple[str, dict[str, str], bytes]:
    """The status line, the header fields (names lowercased) and what followed them."""
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
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        raise WireError(f"not an HTTP answer: {status_line[:60]!r}")
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status_line, fields, rest


def _answer(sock: Any) -> tuple[int, dict[str, str], bytes]:
    """The status, the header fields (names lowercased) and the body of an answer."""
    status_line, fields, rest = _headers(sock)
    status = int(status_line.split(" ", 2)[1])
    if fields.get("transfer-encoding", "").lower() == "chunked":
        return status, fields, _chunked(sock, rest)
    length = fields.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit()):
        raise WireError(f"bad Content-Length {length[:20]!r}")
    return status, fields, _read(sock, rest, int(length) if length is not None else None)


def _read(sock: Any, data: bytes, length: int | None) -> bytes:
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


def _chunked(sock: Any, data: bytes) -> bytes:
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


def get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None
        ) -> tuple[int, bytes]:
    """GET an ``http://`` or ``https://`` URL (redirects are answers, not followed); health
    probes and HTTP tests (``headers``: extra ones). ``https`` goes through ``http.client``
    with the system's CAs.
    Raises ``OSError`` when the URL cannot be reached or answers badly, ``ValueError`` for a
    URL that is neither."""
    scheme, host, port, rest = split_url(url)
    if scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = rest.split("#", 1)[0]
    path = path if path.startswith("/") else "/" + path
    port = port or (443 if scheme == "https" else 80)
    if scheme == "http":
        return request(f"{host}:{port}", "GET", path, headers=headers, timeout=timeout)
    import http.client
    import ssl

    conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                       context=ssl.create_default_context())
    try:
        conn.request("GET", path, headers={"User-Agent": "bluegreen"} | (headers or {}))
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


# -- a remote API's client: TLS and proxies ------------------------------------------------


class TLS(Record, frozen=True):
    """How to speak TLS to a server: CA file or directory (else the system's), a client
    certificate and key, the name to verify (else the host), or no verification at all."""

    cafile: str | None = None
    capath: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    server_name: str | None = None
    verify: bool = True

    def context(self) -> Any:
        """The ``ssl.SSLContext``; ``TLSFileError`` names a file that cannot be used."""
        import ssl

        for what, path, is_dir in (("CA file", self.cafile, False), ("CA directory", self.capath, True),
                                   ("client certificate", self.certfile, False),
                                   ("client key", self.keyfile, False)):
            if path:
                _readable(what, path, is_dir)
        try:
            ctx = ssl.create_default_context(cafile=self.cafile, capath=self.capath)
        except ssl.SSLError as exc:
            raise TLSFileError("CA file", str(self.cafile or self.capath),
                               f"not a PEM certificate ({exc.reason or exc})") from None
        if self.certfile:
            try:
                ctx.load_cert_chain(self.certfile, self.keyfile)
            except ssl.SSLError as exc:
                raise TLSFileError("client certificate", self.certfile if not self.keyfile else
                                   f"{self.certfile} / key {self.keyfile}",
                                   f"not a PEM certificate and its key ({exc.reason or exc})") from None
        elif self.keyfile:
            raise TLSFileError("client key", self.keyfile, "given without a client certificate")
        if not self.verify:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return ctx


def _readable(what: str, path: str, is_dir: bool) -> None:
    try:
        if is_dir:
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
    except OSError as exc:
        raise TLSFileError(what, path, exc.strerror or type(exc).__name__) from None


class Proxy(Record, frozen=True):
    """An http proxy: where it listens, and its ``Proxy-Authorization`` (from user info)."""

    host: str
    port: int
    authorization: str | None = None
    variable: str = ""

    def __repr__(self) -> str:  # the authorization is a secret
        return f"Proxy({self.variable}: {host_header(self.host, self.port)})"


def proxy_for(scheme: str, host: str, port: int,
              environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy for ``scheme://host:port`` from the environment, as curl and requests read
    it: ``http_proxy`` / ``https_proxy`` (lowercase first), else ``all_proxy``; none when
    ``no_proxy`` names the host (``*``, a name and its subdomains, an address, a CIDR range,
    each optionally with ``:port``). ``ProxyError`` for a proxy that is not ``http://``."""
    env = os.environ if environ is None else environ
    for name in (f"{scheme}_proxy", "all_proxy"):
        for variable in (name, name.upper()):
            url = env.get(variable)
            if url:
                break
        else:
            continue
        break
    else:
        return None
    if _bypassed(host, port, env.get("no_proxy") or env.get("NO_PROXY") or ""):
        return None
    return _parse_proxy(variable, url.strip())


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, want_port = entry, None
        if entry.startswith("["):  # [v6]:port
            name, _, after = entry[1:].partition("]")
            want_port = after[1:] or None
        elif entry.count(":") == 1:
            name, want_port = entry.split(":")
        if want_port is not None and want_port != str(port):
            continue
        name = name.lstrip(".")
        if "/" in name:
            if _in_network(host, name):
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


def _in_network(host: str, cidr: str) -> bool:
    import ipaddress  # only for a CIDR entry of NO_PROXY while a proxy is set

    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _parse_proxy(variable: str, url: str) -> Proxy:
    scheme = url.partition("://")[0].lower() if "://" in url else "http"
    rest = url.partition("://")[2] if "://" in url else url
    netloc = rest.split("/", 1)[0]
    userinfo, at, hostport = netloc.rpartition("@")
    shown = f"{scheme}://{hostport}"
    if scheme != "http":
        raise ProxyError(f"{variable}={shown}: only an http:// proxy is supported (an {scheme} "
                         f"proxy is not); use http://HOST:PORT or name the host in NO_PROXY")
    try:
        _, host, port, _ = split_url(f"http://{hostport}")
    except ValueError:
        raise ProxyError(f"{variable}: not a proxy URL ({shown})") from None
    auth = None
    if at:
        import binascii

        user, _, password = userinfo.partition(":")
        raw = f"{_unquote(user)}:{_unquote(password)}".encode()
        auth = "Basic " + binascii.b2a_base64(raw, newline=False).decode("ascii")
    return Proxy(host, port or 80, auth, variable)


def _unquote(text: str) -> str:
    if "%" not in text:
        return text
    parts = text.split("%")
    out = bytearray(parts[0].encode())
    for part in parts[1:]:
        try:
            out += bytes([int(part[:2], 16)]) + part[2:].encode()
        except ValueError:
            out += b"%" + part.encode()
    return out.decode(errors="replace")


class Client:
    """Requests to one server, ``scheme://host:port`` (http or https), each on its own
    connection, through the environment's proxy; redirects refused."""

    def __init__(self, scheme: str, host: str, port: int, tls: TLS | None = None,
                 timeout: float = 5.0, environ: Mapping[str, str] | None = None) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"not http or https: {scheme!r}")
        self.scheme, self.host, self.port, self.timeout = scheme, host.strip("[]"), port, timeout
        self.tls = tls or TLS()
        self.proxy = proxy_for(scheme, self.host, port, environ)
        self.authority = host_header(self.host, port)
        self._context: Any = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}"

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """The status, header fields (lowercased) and body. Raises ``TLSFileError`` before
        connecting, ``TLSError``, ``Redirected``, or another ``OSError`` when the server
        cannot be reached or answers badly."""
        extra = dict(headers or {})
        target = path
        proxy = self.proxy
        if proxy is not None and self.scheme == "http":
            target = self.url + path  # absolute URI: the proxy forwards it
            if proxy.authorization:
                extra["Proxy-Authorization"] = proxy.authorization
        where = host_header(proxy.host, proxy.port) if proxy else self.authority
        if self.scheme == "https":
            ctx = self._ssl_context()  # files first: nothing is contacted when one is missing
            sock = _connect(where, self.timeout)
            try:
                if proxy is not None:
                    self._tunnel(sock, proxy)
                return self._tls_exchange(ctx, sock, method, target, body, extra)
            finally:
                sock.close()
        sock = _connect(where, self.timeout)
        try:
            sock.sendall(_head(method, target, self.authority, body, extra) + (body or b""))
            return self._checked(*_answer(sock))
        finally:
            sock.close()

    def _ssl_context(self) -> Any:
        if self._context is None:
            self._context = self.tls.context()
        return self._context

    def _tunnel(self, sock: _socket.socket, proxy: Proxy) -> None:
        extra = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else {}
        sock.sendall(_head("CONNECT", self.authority, self.authority, None, extra))
        status_line, _, _ = _headers(sock)
        status = status_line.split(" ", 2)[1]
        if status != "200":
            raise WireError(f"the proxy {host_header(proxy.host, proxy.port)} ({proxy.variable}) "
                            f"refused to connect to {self.authority}: {status_line[9:60]}")

    def _tls_exchange(self, ctx: Any, raw: _socket.socket, method: str, target: str,
                      body: bytes | None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        import socket
        import ssl

        sock = socket.socket(fileno=raw.detach())
        sock.settimeout(self.timeout)
        try:
            name = self.tls.server_name or self.host
            with ctx.wrap_socket(sock, server_hostname=name) as tls:
                tls.sendall(_head(method, target, self.authority, body, headers) + (body or b""))
                return self._checked(*_answer(tls))
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(f"certificate verify failed: {exc.verify_message}") from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            raise TLSError(f"the server closed the TLS session ({exc.reason or exc}); does it "
                           f"want a client certificate?") from None
        except ssl.SSLError as exc:
            raise TLSError(str(exc.reason or exc).replace("_", " ").lower()) from None
        finally:
            sock.close()

    @staticmethod
    def _checked(status: int, fields: dict[str, str],
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
        if status in (301, 302, 303, 307, 308):
            raise Redirected(status, fields.get("location", "")[:200])
        return status, fields, body
