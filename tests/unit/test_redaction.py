"""The Consul token never appears in any output, even inside a server's reply that echoes it."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

TOKEN = "9f1c2d3e-token-never-printed"


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    """Answers every request with HTTP 500 and the request's headers in the body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _echo(self) -> None:
            body = "".join(f"{k}={v}\n" for k, v in self.headers.items()).encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_DELETE = _echo

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("args", [["color", "current", "svc"], ["history", "svc"],
                                  ["history", "svc", "--json", "--debug"]])
def test_token_in_an_echoed_reply_is_redacted(echo_server, args, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "CONSUL_HTTP_ADDR": echo_server, "CONSUL_HTTP_TOKEN": TOKEN,
           "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "bluegreen", *args], env=env, capture_output=True,
                       text=True, timeout=60, cwd=tmp_path, check=False)
    assert p.returncode == 1, p.stderr
    assert "HTTP 500" in p.stderr  # the reply was reported...
    assert "X-Consul-Token=<redacted>" in p.stderr  # ...with the token taken out
    assert TOKEN not in p.stdout + p.stderr
