"""bluegreen.wire against real servers on loopback and a unix socket (the standard library's
http.server and raw sockets that answer in the forms HTTP allows)."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen import wire


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = f"{self.command} {self.path} {self.headers['X-Token']} ".encode() + body
        self.send_response(201)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_PUT

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(server: http.server.HTTPServer) -> Iterator[None]:
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_a_request_and_its_body_on_tcp():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    with serving(server):
        status, body = wire.request(f"127.0.0.1:{server.server_port}", "PUT", "/v1/kv/a?cas=3",
                                    b"payload", {"X-Token": "t"})
    assert (status, body) == (201, b"PUT /v1/kv/a?cas=3 t payload")


def one_answer(raw: bytes) -> tuple[str, threading.Thread]:
    """A loopback server that reads a request, writes ``raw`` and closes."""
    srv = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(raw)
        srv.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    return f"127.0.0.1:{srv.getsockname()[1]}", t


@pytest.mark.parametrize(("raw", "expected"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n",
     b"abcdefg"),
    (b"HTTP/1.0 404 Not Found\r\n\r\nno length, until close", b"no length, until close"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", b"abc"),
])
def test_the_forms_of_an_answer(raw, expected):
    where, t = one_answer(raw)
    status, body = wire.request(where, "GET", "/")
    t.join(5)
    assert body == expected and status in (200, 404)


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Le",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_a_broken_answer_is_an_oserror(raw):
    where, t = one_answer(raw)
    with pytest.raises(wire.WireError):
        wire.request(where, "GET", "/")
    t.join(5)


def test_a_unix_socket(tmp_path: Path):
    path = tmp_path / "s.sock"

    class Unix(http.server.ThreadingHTTPServer):
        address_family = socket.AF_UNIX

        def server_bind(self) -> None:
            self.socket.bind(self.server_address)

    server = Unix(str(path), Echo)
    with serving(server):
        status, body = wire.request(f"unix:{path}", "GET", "/x", headers={"X-Token": "u"})
    assert (status, body) == (201, b"GET /x u ")


def test_nothing_listening_is_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        wire.request(f"127.0.0.1:{port}", "GET", "/")


def test_each_address_of_a_name_is_tried_in_turn(monkeypatch):
    """As ``socket.create_connection``: a name's addresses are tried in order, the first that
    accepts is used; when none does, the last error is raised."""
    import _socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    asked = []

    def addresses(*ports: int):
        def getaddrinfo(host, port, *args):
            asked.append((host, port))
            return [(_socket.AF_INET, _socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))
                    for p in ports]
        return getaddrinfo

    with serving(server):
        monkeypatch.setattr(_socket, "getaddrinfo", addresses(refused, server.server_port))
        assert wire.request("db.example:8500", "GET", "/", headers={"X-Token": "n"}) == (
            201, b"GET / n ")
        monkeypatch.setattr(_socket, "getaddrinfo", addresses(refused, refused))
        with pytest.raises(ConnectionRefusedError):
            wire.request("db.example:8500", "GET", "/")
    assert asked == [(b"db.example", 8500)] * 2


@pytest.mark.parametrize("url, parts", [
    ("http://127.0.0.1:8500", ("http", "127.0.0.1", 8500, "")),
    ("HTTPS://Consul.Example:8501/", ("https", "consul.example", 8501, "/")),
    ("http://[::1]:8500/v1?x=1#f", ("http", "::1", 8500, "/v1?x=1#f")),
    ("tcp://10.0.0.5", ("tcp", "10.0.0.5", None, "")),
    ("http://host:", ("http", "host", None, "")),
    ("http://host?q", ("http", "host", None, "?q")),
])
def test_a_url_split_as_urllib_splits_it(url, parts):
    import urllib.parse

    assert wire.split_url(url) == parts
    u = urllib.parse.urlsplit(url)
    assert (u.scheme, u.hostname, u.port) == parts[:3]


@pytest.mark.parametrize("url", ["127.0.0.1:8500", "http://", "http://user:pw@host",
                                 "http://host:99999", "http://host:8o", "http://[::1", "http://[::1]x",
                                 "1http://host", "http://host:\u0661"])
def test_a_url_that_is_not_one_is_refused(url):
    with pytest.raises(ValueError):
        wire.split_url(url)


def test_quote_and_query_encode_as_urllib_does():
    import random
    import urllib.parse

    rng = random.Random(7)
    chars = "abcXYZ019 /?#&=+%~._-é€\x00\n:@[]"
    for _ in range(5000):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 12)))
        assert wire.quote(text) == urllib.parse.quote(text)
        assert wire.quote(text, "") == urllib.parse.quote(text, "")
    pairs = {"all": "1", "filters": '{"label": ["a=b c"]}'}
    assert urllib.parse.parse_qs(wire.query(pairs)) == {k: [v] for k, v in pairs.items()}

