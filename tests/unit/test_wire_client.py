"""bluegreen.wire.Client, the one client of every Consul call, against real servers on
loopback: IPv6 Host headers, TLS with client certificates (certificates made by openssl),
proxies as curl and requests read them (a tiny proxy server here), redirects refused,
chunked bodies."""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bluegreen import wire
from bluegreen_dev.certs import CA
from tests.unit.test_wire import one_answer, serving


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers with the request line's target, the Host header and the body."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = f"{self.command} {self.path} host={self.headers['Host']} ".encode() + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_PUT = do_GET

    def log_message(self, *args: object) -> None:
        pass


class Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def test_an_ipv6_literal_is_bracketed_in_the_host_header():
    server = Server6(("::1", 0), Echo)
    port = server.server_port
    with serving(server):
        status, _, body = wire.Client("http", "::1", port, environ={}).request("PUT", "/v1/kv/a",
                                                                               b"x")
        assert (status, body) == (200, f"PUT /v1/kv/a host=[::1]:{port} x".encode())
        assert wire.request(f"[::1]:{port}", "GET", "/")[1] == f"GET / host=[::1]:{port} ".encode()


def test_a_redirect_is_refused_not_followed():
    where, t = one_answer(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/x\r\n"
                          b"Content-Length: 0\r\n\r\n")
    host, port = where.rsplit(":", 1)
    with pytest.raises(wire.Redirected, match="307 redirect to http://elsewhere/x refused"):
        wire.Client("http", host, int(port), environ={}).request("GET", "/v1/kv/a")
    t.join(5)


def test_a_chunked_body_is_read():
    where, t = one_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
                          b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    host, port = where.rsplit(":", 1)
    status, fields, body = wire.Client("http", host, int(port), environ={}).request("GET", "/")
    assert (status, fields["x-a"], body) == (200, "b", b"hello world")
    t.join(5)


# -- a tiny http proxy: absolute URIs forwarded, CONNECT tunnelled ----------------------------


class TinyProxy:
    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.seen: list[tuple[str, str | None]] = []  # (request line, Proxy-Authorization)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        line, *headers = head.decode().split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in headers)}
        self.seen.append((line, fields.get("proxy-authorization")))
        method, target, _ = line.split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host.strip("[]"), int(port)))
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            hostport = target.split("://", 1)[1].split("/", 1)[0]
            host, port = hostport.rsplit(":", 1)
            upstream = socket.create_connection((host.strip("[]"), int(port)))
            path = "/" + target.split("://", 1)[1].split("/", 1)[1]
            kept = [h for h in headers if not h.lower().startswith("proxy-")]
            upstream.sendall("\r\n".join([f"{method} {path} HTTP/1.1", *kept]).encode()
                             + b"\r\n\r\n" + rest)
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxy() -> Iterator[TinyProxy]:
    p = TinyProxy()
    yield p
    p.close()


@pytest.fixture
def echo() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    with serving(server):
        yield server.server_port


def test_http_goes_through_the_proxy_with_an_absolute_uri(proxy, echo):
    env = {"http_proxy": f"http://user:p%40ss@127.0.0.1:{proxy.port}", "HTTP_PROXY": "http://unused:1"}
    status, _, body = wire.Client("http", "127.0.0.1", echo, environ=env).request("GET", "/v1/x")
    assert (status, body) == (200, f"GET /v1/x host=127.0.0.1:{echo} ".encode())
    assert proxy.seen == [(f"GET http://127.0.0.1:{echo}/v1/x HTTP/1.1", "Basic dXNlcjpwQHNz")]


def test_no_proxy_sends_it_direct(proxy, echo):
    env = {"HTTP_PROXY": f"127.0.0.1:{proxy.port}", "NO_PROXY": "example.com, 127.0.0.0/8"}
    status, _, _ = wire.Client("http", "127.0.0.1", echo, environ=env).request("GET", "/")
    assert status == 200 and proxy.seen == []


@pytest.mark.parametrize("host, port, no_proxy, bypassed", [
    ("consul.example.com", 8500, "*", True),
    ("consul.example.com", 8500, "example.com", True),
    ("consul.example.com", 8500, ".example.com", True),
    ("badexample.com", 8500, "example.com", False),
    ("example.com", 8500, "example.com:8500", True),
    ("example.com", 8501, "example.com:8500", False),
    ("10.1.2.3", 8500, "10.0.0.0/8", True),
    ("11.1.2.3", 8500, "10.0.0.0/8", False),
    ("::1", 8500, "[::1]:8500", True),
    ("::1", 8500, "::1", True),
    ("fd00::5", 8500, "fd00::/8", True),
    ("127.0.0.1", 8500, "", False),
])
def test_no_proxy_as_curl_and_requests_read_it(host, port, no_proxy, bypassed):
    env = {"HTTP_PROXY": "http://proxy.example:3128", "NO_PROXY": no_proxy}
    assert (wire.proxy_for("http", host, port, env) is None) == bypassed


def test_which_variable_names_the_proxy():
    assert wire.proxy_for("https", "h", 1, {"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:1"}
                          ).host == "a"
    assert wire.proxy_for("https", "h", 1, {"HTTP_PROXY": "http://a:1"}) is None
    assert wire.proxy_for("https", "h", 1, {"ALL_PROXY": "http://c:3"}).port == 3
    assert wire.proxy_for("http", "h", 1, {"http_proxy": "d"}).port == 80


@pytest.mark.parametrize("url", ["https://proxy.example:3128", "socks5://127.0.0.1:1080",
                                 "socks5h://u:secret@127.0.0.1:1080"])
def test_a_proxy_spoken_to_over_tls_or_socks_is_refused_clearly(url):
    with pytest.raises(wire.ProxyError, match="only an http:// proxy is supported") as info:
        wire.Client("https", "127.0.0.1", 8501, environ={"HTTPS_PROXY": url})
    assert "secret" not in str(info.value)


# -- TLS: client certificates, verification, files ---------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("pki")
    ca, other = CA.make(d, "ca"), CA.make(d, "other")
    return SimpleNamespace(ca=ca, other=other, server=ca.issue("server"), client=ca.issue("client"))


@contextlib.contextmanager
def https_echo(pki: SimpleNamespace, family: int = socket.AF_INET) -> Iterator[int]:
    """An HTTPS server that wants a client certificate of the test CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server.cert, pki.server.key)
    ctx.load_verify_locations(pki.ca.cert)
    ctx.verify_mode = ssl.CERT_REQUIRED

    class TLSServer(http.server.ThreadingHTTPServer):
        address_family = family

        def get_request(self):  # the handshake in the handler's thread, errors swallowed
            conn, addr = self.socket.accept()
            return ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr

        def handle_error(self, *args: object) -> None:
            pass

    server = TLSServer(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0), Echo)
    with serving(server):
        yield server.server_port


def tls(pki: SimpleNamespace, **changes: object) -> wire.TLS:
    base = {"cafile": str(pki.ca.cert), "certfile": str(pki.client.cert),
            "keyfile": str(pki.client.key)}
    return wire.TLS(**(base | changes))


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_https_with_a_client_certificate(pki, family, host):
    with https_echo(pki, family) as port:
        client = wire.Client("https", host, port, tls(pki), environ={})
        status, _, body = client.request("PUT", "/v1/kv/k", b"v")
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert (status, body) == (200, f"PUT /v1/kv/k host={authority} v".encode())


def test_https_through_a_connect_tunnel(pki, proxy):
    with https_echo(pki) as port:
        env = {"HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}"}
        status, _, body = wire.Client("https", "127.0.0.1", port, tls(pki), environ=env).request(
            "GET", "/v1/status/leader")
    assert status == 200 and body.startswith(b"GET /v1/status/leader")
    assert proxy.seen == [(f"CONNECT 127.0.0.1:{port} HTTP/1.1", None)]


@pytest.mark.parametrize("changes, says", [
    ({"cafile": "OTHER"}, "certificate verify failed"),
    ({"server_name": "consul.example"}, "certificate verify failed"),
    ({"certfile": None, "keyfile": None}, "certificate"),
])
def test_a_tls_failure_is_a_tls_error(pki, changes, says):
    if changes.get("cafile") == "OTHER":
        changes["cafile"] = str(pki.other.cert)
    with https_echo(pki) as port, pytest.raises(wire.TLSError, match=says):
        wire.Client("https", "127.0.0.1", port, tls(pki, **changes), environ={}).request("GET", "/")


def test_without_verification_any_server_certificate_is_taken(pki):
    with https_echo(pki) as port:
        t = tls(pki, cafile=str(pki.other.cert), verify=False)
        assert wire.Client("https", "127.0.0.1", port, t, environ={}).request("GET", "/")[0] == 200


@pytest.mark.parametrize("field", ["cafile", "capath", "certfile", "keyfile"])
def test_a_missing_or_bad_file_is_named_before_connecting(pki, tmp_path: Path, field):
    missing = tmp_path / "missing.pem"
    client = wire.Client("https", "127.0.0.1", 1, tls(pki, **{field: str(missing)}), environ={})
    with pytest.raises(wire.TLSFileError, match=str(missing)):
        client.request("GET", "/")  # port 1: a connection would be refused, not this
    if field != "capath":
        junk = tmp_path / "junk.pem"
        junk.write_text("junk\n")
        client = wire.Client("https", "127.0.0.1", 1, tls(pki, **{field: str(junk)}), environ={})
        with pytest.raises(wire.TLSFileError, match="not a PEM"):
            client.request("GET", "/")
