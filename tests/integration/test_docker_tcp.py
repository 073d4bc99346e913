"""DOCKER_HOST=tcp://host:port, as the book's DOCKER_HOST=tcp://prod:2375: a loopback TCP port
forwarded to the real engine's unix socket."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def docker_tcp():
    """127.0.0.1:<port> -> /var/run/docker.sock, one thread pair per connection."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect("/var/run/docker.sock")
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()


def test_run_through_a_tcp_docker_host(svc, docker_tcp):
    env = svc.env | {"DOCKER_HOST": docker_tcp}
    env.pop("BLUEGREEN_PUBLISH_IP")  # published on 0.0.0.0; registered at the DOCKER_HOST's host
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", "--http", "/api/v1/books", env=env)
    assert r.code == 0, r.err
    assert svc.version() == "v1"
    addrs = svc.bg("address", svc.service, "--color", "blue", env=env).out.split()
    assert len(addrs) == 1 and addrs[0].startswith("127.0.0.1:")
    svc.assert_safe()
