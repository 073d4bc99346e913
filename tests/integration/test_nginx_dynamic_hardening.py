"""The dynamic mode hardened, on the real nginx with Debian's Lua module (issue 19): only the
deployer can route (the control secret, no browser, owner-only socket), a bad state file
never costs users (last good copy at a restart, rebuilt at the next change), strict JSON,
1,000 services and a full shared dict refused before anything changes."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.errors import OperationFailed
from bluegreen.model import Route, Server
from bluegreen.proxy import dynamic as nd
from bluegreen.proxy.dynamic import CONTROL_PATH, SECRET_HEADER
from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx
from bluegreen_dev.sandbox import wait_for
from tests.integration import dynamic_fixtures

pytestmark = pytest.mark.integration
SVC = "books-ms"
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


backends = dynamic_fixtures.backends
nginx = dynamic_fixtures.nginx
any_nginx = dynamic_fixtures.any_nginx


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory every user may enter (pytest's own is owner-only, which would hide what
    the tests check: that bluegreen's own files and socket keep others out)."""
    root = Path(tempfile.mkdtemp(prefix="bg-hardening-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def routes(backends: dict[str, Backend], color: str) -> dict[str, list[Server]]:
    return {SVC: [Server("127.0.0.1", backends[color].port, 100)]}


def body_to(backends: dict[str, Backend], color: str) -> bytes:
    return json.dumps({"services": {SVC: [{"address": "127.0.0.1",
                                           "port": backends[color].port,
                                           "weight": 100}]}}).encode()


def request(control: str, method: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", int(control.rpartition(":")[2]), timeout=10)
    c.request(method, CONTROL_PATH, body=body, headers=headers or {})
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    return r.status, json.loads(text)


def get(port: int, path: str = "/") -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


# -- 1. only the deployer can route ----------------------------------------------------------


def test_every_control_request_needs_the_secret(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply(routes(backends, "blue"))
    secret = nginx.secret_headers()[SECRET_HEADER]
    assert len(secret) == 64
    assert nginx.secret_file.stat().st_mode & 0o777 == 0o600
    json_type = {"Content-Type": "application/json"}
    wrong = [{}, {SECRET_HEADER: ""}, {SECRET_HEADER: secret[:-1]},
             {SECRET_HEADER: secret[:-1] + ("0" if secret[-1] != "0" else "1")},
             {SECRET_HEADER: secret + "0"}, {SECRET_HEADER: "0" * 64}]
    for headers in wrong:
        assert request(nginx.control, "POST", body_to(backends, "green"),
                       json_type | headers)[0] == 403
        assert request(nginx.control, "GET", None, headers)[0] == 403
    assert get(nginx.port) == (200, "blue")
    # the right secret routes (the test can fail: the same request, with it)
    status, _ = request(nginx.control, "POST", body_to(backends, "green"),
                        json_type | {SECRET_HEADER: secret})
    assert status == 200 and get(nginx.port) == (200, "green")


def test_a_browser_cannot_route(nginx, backends):
    """A page can send a text/plain POST with its Origin (no CORS preflight): refused, even
    with the secret (so the refusal is the Origin's, or the content type's)."""
    nginx.proxy().apply(routes(backends, "blue"))
    secret = nginx.secret_headers()
    for headers, status in [
            ({"Origin": "https://evil.example", "Content-Type": "text/plain"}, 403),
            ({"Origin": "https://evil.example", "Content-Type": "application/json"}, 403),
            ({"Origin": "null", "Content-Type": "application/json"}, 403),
            ({"Content-Type": "text/plain"}, 415),
            ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
            ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
            ({}, 415)]:
        assert request(nginx.control, "POST", body_to(backends, "green"),
                       headers | secret)[0] == status, headers
    assert request(nginx.control, "GET", None, {"Origin": "https://evil.example"} | secret
                   )[0] == 403
    assert get(nginx.port) == (200, "blue")
    assert request(nginx.control, "POST", body_to(backends, "green"),
                   {"Content-Type": "application/json; charset=utf-8"} | secret)[0] == 200
    assert get(nginx.port) == (200, "green")


def run_as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AS_NOBODY, *argv], capture_output=True, text=True, timeout=30,
                          check=False)


def test_another_local_user_cannot_route_over_tcp(open_root, backends):
    n = DynamicNginx(open_root / "nginx").start()
    try:
        n.proxy().apply(routes(backends, "blue"))
        assert run_as_nobody("cat", str(n.secret_file)).returncode != 0
        assert run_as_nobody("test", "-r", str(n.secret_file)).returncode != 0
        url = f"http://{n.control}{CONTROL_PATH}"
        posted = run_as_nobody("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X",
                               "POST", "-H", "Content-Type: application/json", "--data-binary",
                               body_to(backends, "green").decode(), url)
        assert posted.stdout == "403"
        # with the secret the same user could (the test can fail)
        secret = n.secret_headers()[SECRET_HEADER]
        allowed = run_as_nobody("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X",
                                "POST", "-H", "Content-Type: application/json", "-H",
                                f"{SECRET_HEADER}: {secret}", "--data-binary",
                                body_to(backends, "blue").decode(), url)
        assert allowed.stdout == "200"
        assert get(n.port) == (200, "blue")
    finally:
        n.stop()


def test_the_unix_socket_is_reachable_by_its_owner_only(open_root, backends):
    n = DynamicNginx(open_root / "nginx", control_unix=True).start()
    try:
        proxy = n.proxy()
        proxy.apply(routes(backends, "blue"))
        sock = n.control.removeprefix("unix:")
        assert Path(sock).parent.stat().st_mode & 0o777 == 0o700
        assert Path(sock).stat().st_mode & 0o777 == 0o666  # as nginx makes it: the dir guards
        curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock,
                "-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                body_to(backends, "green").decode(), f"http://localhost{CONTROL_PATH}"]
        refused = run_as_nobody(*curl)
        assert refused.returncode == 7 and refused.stdout == "000"  # cannot even connect
        Path(sock).parent.chmod(0o755)  # what the directory prevents (the test can fail)
        try:
            assert run_as_nobody(*curl).stdout == "403"  # ...and then the secret does
        finally:
            Path(sock).parent.chmod(0o700)
        proxy.apply(routes(backends, "green"))
        assert get(n.port) == (200, "green")
    finally:
        n.stop()


def test_a_socket_directory_open_to_others_is_refused(tmp_path):
    where = tmp_path / "open"
    where.mkdir(mode=0o755)
    where.chmod(0o755)
    with pytest.raises(Exception, match="open to other users"):
        nd.private_socket_dir(f"unix:{where}/control.sock")
    nd.private_socket_dir(f"unix:{tmp_path}/new/control.sock")
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700


def test_a_secret_file_others_can_read_is_refused(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply(routes(backends, "blue"))
    nginx.secret_file.chmod(0o644)
    with pytest.raises(OperationFailed, match="open to other users"):
        proxy.apply(routes(backends, "green"))
    nginx.secret_file.chmod(0o600)
    proxy.apply(routes(backends, "green"))
    assert get(nginx.port) == (200, "green")


def test_the_secret_is_never_logged_nor_recorded(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply(routes(backends, "blue"))
    proxy.apply(routes(backends, "green"))
    secret = nginx.secret_headers()[SECRET_HEADER]
    request(nginx.control, "POST", b"{", {"Content-Type": "application/json",
                                          SECRET_HEADER: secret})  # an error logged, maybe
    request(nginx.control, "POST", b"{}", {SECRET_HEADER: secret[::-1]})
    nginx.stop()  # flushes the logs
    for path in nginx.prefix.rglob("*"):
        if path.is_file() and path != nginx.secret_file:
            assert secret not in path.read_text(errors="replace"), path
    nginx.start()


def test_a_first_secret_reaches_an_nginx_that_had_none(nginx, backends):
    """nginx started with bluegreen's include but no secret file (removed): every control
    request is refused; the next change writes a secret and reloads first."""
    proxy = nginx.proxy()
    proxy.apply(routes(backends, "blue"))
    nginx.secret_file.unlink()
    nginx.controller().reload()
    assert request(nginx.control, "GET")[0] == 503  # no secret loaded: refuses everything
    proxy.apply(routes(backends, "green"))
    assert get(nginx.port) == (200, "green")
    assert request(nginx.control, "GET", None, nginx.secret_headers())[0] == 200


# -- 2. a bad state file never costs users -------------------------------------------------


DAMAGE = {
    "empty": b"",
    "cut": None,  # the first 60 bytes of the file
    "binary": bytes(range(256)) * 4,
    "no services": b'{"services":[]}',
    "missing": None,
    "journal missing": None,  # the base kept: every change since it would be lost
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_restart_serves_the_last_good_routes_whatever_the_state_file_holds(
        any_nginx, backends, damage):
    nginx = any_nginx
    proxy = nginx.proxy()
    proxy.apply(routes(backends, "blue"))
    proxy.apply(routes(backends, "green"))
    assert nd.read_document(nd.last_good_path(nginx.state_file))["services"] == \
        nd.read_document(nginx.state_file)["services"]
    text = nginx.state_file.read_bytes()
    if damage == "missing":
        nginx.state_file.unlink()
    elif damage == "journal missing":
        nginx.state_file.with_suffix(".journal").unlink()
    else:
        nginx.state_file.write_bytes(text[:60] if damage == "cut" else DAMAGE[damage])
    nginx.kill()
    nginx.start()
    assert get(nginx.port) == (200, "green")
    log = (nginx.prefix / "logs" / "error.log").read_text()
    assert f"rejected the state file {nginx.state_file}" in log
    assert "routes restored from" in log
    # the next change rewrites the state file from what nginx serves, saying so in one line
    said: list[str] = []
    proxy.client.say = said.append
    proxy.apply(routes(backends, "blue"))
    assert get(nginx.port) == (200, "blue")
    assert nd.read_document(nginx.state_file)["services"] == proxy.read()["services"]
    assert len(said) == 1 and "rebuilt it from what nginx serves" in said[0], said


def test_a_restart_replays_the_journal_and_skips_a_line_cut_short(nginx, backends):
    """Switches are journal lines (the base stays as the service's addition wrote it); nginx
    at a start applies them in order, skips a last line a crash cut short, and the next
    change rewrites the base."""
    proxy = nginx.proxy()
    proxy.apply(routes(backends, "blue"))  # a reload: the base
    base = nginx.state_file.read_text()
    for color in ("green", "blue", "green"):
        proxy.apply(routes(backends, color))  # a POST each: one line each
    journal = nginx.state_file.with_suffix(".journal")
    assert nginx.state_file.read_text() == base and journal.read_text().count("\n") == 3
    to_blue = journal.read_text().splitlines()[1]  # a line to blue, written again, cut short
    with journal.open("a") as fh:
        fh.write(to_blue[:-2])
    nginx.kill()
    nginx.start()
    assert get(nginx.port) == (200, "green")
    log = (nginx.prefix / "logs" / "error.log").read_text()
    assert f"skipped the last line of {journal}, cut short" in log
    assert "rejected" not in log
    proxy.apply(routes(backends, "blue"))
    assert get(nginx.port) == (200, "blue")
    assert nginx.state_file.read_text() != base and journal.read_text() == ""
    nginx.kill()
    nginx.start()
    assert get(nginx.port) == (200, "blue")


def test_a_damaged_journal_is_read_around_from_the_last_good_copy(any_nginx, backends):
    nginx = any_nginx
    proxy = nginx.proxy()
    proxy.apply(routes(backends, "blue"))
    proxy.apply(routes(backends, "green"))
    journal = nginx.state_file.with_suffix(".journal")
    journal.write_text("garbage\n" + journal.read_text())
    nginx.kill()
    nginx.start()
    assert get(nginx.port) == (200, "green")
    log = (nginx.prefix / "logs" / "error.log").read_text()
    assert f"rejected the state file {nginx.state_file}: journal {journal} line 1" in log
    client = proxy.client
    client.document()
    assert f"journal {journal}: line 1" in str(client.damage)
    said: list[str] = []
    client.say = said.append
    proxy.apply(routes(backends, "blue"))  # rebuilt from what nginx serves, in one line
    assert get(nginx.port) == (200, "blue") and len(said) == 1, said
    assert nd.read_document(nginx.state_file)["services"] == proxy.read()["services"]


def test_a_change_posted_while_a_reload_reads_the_state_is_not_lost(nginx, backends):
    """A reload not made by bluegreen (``nginx -s reload``, so without its lock): a change
    posted to the old workers after the master read the state file, before it stored the
    routes, is read again, not overwritten by the older routes."""
    proxy = nginx.proxy()
    proxy.apply(routes(backends, "blue"))
    controller = nginx.controller()
    before = set(controller.workers())
    hold, held = (Path(f"{nginx.state_file}.test-hold-init"),
                  Path(f"{nginx.state_file}.test-held-init"))
    hold.touch()
    try:
        controller.signal_reload()
        wait_for(held.exists, 30, "nginx's init at its hold point")
        nd.DynamicControl(nginx.control, nginx.state_file).apply(routes(backends, "green"))
        assert get(nginx.port) == (200, "green")  # an old worker, from the dict
    finally:
        hold.unlink()

    def reloaded() -> bool:
        now = controller.workers()
        return any(p not in before for p in now) and not any(
            p in now and not now[p] for p in before)

    wait_for(reloaded, 30, "the new workers")
    assert get(nginx.port) == (200, "green")
    assert proxy.read()["services"][SVC] == nd.check_routes(routes(backends, "green"))[SVC]
    log = (nginx.prefix / "logs" / "error.log").read_text()
    assert "routes changed while nginx read them; reading them again" in log


def test_a_service_the_state_file_lost_comes_back_from_the_last_good_copy(nginx, backends):
    proxy = nginx.proxy()
    proxy.apply([Route(SVC, "blue", (Server("127.0.0.1", backends["blue"].port),)),
                 Route("other", "green", (Server("127.0.0.1", backends["green"].port),),
                       location="/other")])
    doc = json.loads(nginx.state_file.read_text())
    del doc["services"]["other"]
    nginx.state_file.write_text(json.dumps(doc))  # valid, but without a service nginx has
    nginx.kill()
    nginx.start()
    assert get(nginx.port) == (200, "blue") and get(nginx.port, "/other") == (200, "green")
    log = (nginx.prefix / "logs" / "error.log").read_text()
    assert "the state file has no servers for other; restored from" in log


def test_without_any_good_copy_the_service_is_a_problem_to_repair(nginx, backends):
    """State file and last good copy gone, nginx restarted: 502, and the proxy says so (a
    problem, not "nothing to recover"); the next change routes again."""
    engine = nginx.proxy()
    proxy = nd.NginxDynamicProxy(engine)
    proxy.apply([Route(SVC, "blue", (Server("127.0.0.1", backends["blue"].port),))])
    nginx.state_file.unlink()
    Path(nd.last_good_path(nginx.state_file)).unlink()
    nginx.kill()
    nginx.start()
    assert get(nginx.port)[0] == 502
    problems = proxy.disagreements(SVC)
    assert any("no servers for it (it answers 502)" in p for p in problems), problems
    assert proxy.serving(SVC).servers == ()
    proxy.apply([Route(SVC, "blue", (Server("127.0.0.1", backends["blue"].port),))])
    assert get(nginx.port) == (200, "blue")
    assert proxy.disagreements(SVC) == []
    assert proxy.serving(SVC).color == "blue"


def test_a_damaged_state_file_is_reported_and_read_around(nginx, backends):
    engine = nginx.proxy()
    proxy = nd.NginxDynamicProxy(engine)
    proxy.apply([Route(SVC, "green", (Server("127.0.0.1", backends["green"].port),))])
    nginx.state_file.write_bytes(b"\x00\xff garbage")
    serving = proxy.serving(SVC)  # what nginx serves, the color from the last good copy
    assert serving.color == "green" and serving.servers == (f"127.0.0.1:{backends['green'].port}",)
    problems = proxy.disagreements(SVC)
    assert any(f"cannot read the state file {nginx.state_file}" in p for p in problems), problems


# -- 3. 1,000 services, the shared dict ------------------------------------------------------


def test_a_thousand_services_behind_one_nginx(nginx, backends):
    """1,000 services, 100 of them with an internal endpoint (on a loopback port here)."""
    internal = free_port()
    proxy = nginx.proxy(internal_listen=f"127.0.0.1:{internal}")
    names = [f"svc-{i:04d}" for i in range(1000)]
    ports = [backends["blue"].port, backends["green"].port]

    def every(color: str) -> list[Route]:
        port = ports[0] if color == "blue" else ports[1]
        return [Route(n, color, (Server("127.0.0.1", port),), location="",
                      endpoint=f"{n}.local" if i % 10 == 0 else None)
                for i, n in enumerate(names)]

    proxy.apply(every("blue"))  # one checked reload; no public location needed
    assert proxy.services() == set(names) and len(proxy.endpoints()) == 100

    def internal_get(endpoint: str) -> tuple[int, str]:
        c = http.client.HTTPConnection("127.0.0.1", internal, timeout=10)
        c.request("GET", "/", headers={"Host": endpoint})
        r = c.getresponse()
        return r.status, r.read().decode()

    assert internal_get("svc-0990.local") == (200, "blue")
    text = nginx.include_path.read_text()
    assert max(len(line) for line in text.splitlines()) < 200
    served = proxy.read()
    assert len(served["services"]) == 1000
    # a switch of every service at once is one POST, checked against what nginx serves
    generation = proxy.read()["generation"]
    include = nginx.include_path.read_text()
    proxy.apply(every("green"))
    assert nginx.include_path.read_text() == include  # no reload: one POST
    assert proxy.read()["generation"] == generation + 1
    assert {s[0]["port"] for s in proxy.read()["services"].values()} == {ports[1]}
    assert internal_get("svc-0000.local") == (200, "green")
    # and one more service is a reload that keeps the thousand
    proxy.apply([Route("svc-extra", "blue", (Server("127.0.0.1", ports[0]),))])
    assert len(proxy.read()["services"]) == 1001
    assert get(nginx.port) == (200, "blue")


def test_a_full_shared_dict_refuses_the_change_and_keeps_the_routes(nginx, backends):
    """Services with 256 servers each (far above the 4 KiB a service is given) are added ten
    at a time until the dict cannot hold the routes: that change is refused, nothing of it
    is applied, every earlier route still serves and the state file is as before."""
    proxy = nginx.proxy()
    names = [f"big-{i:03d}" for i in range(100)]
    proxy.apply([Route(n, "blue", (Server("127.0.0.1", backends["blue"].port),), location="")
                 for n in names])  # the upstreams: one reload, a dict sized for 100 services
    many = tuple([Server("127.0.0.1", backends["green"].port, 100)] +
                 [Server(f"127.0.{i // 250}.{i % 250 + 1}", 9, 0) for i in range(255)])
    refused = None
    for group in range(10):  # 10 x 10 x 256 servers: about 1.3 MB, more than the dict
        before, recorded = proxy.read(), nginx.state_file.read_text()
        try:
            proxy.apply([Route(n, "green", many, location="")
                         for n in names[group * 10:group * 10 + 10]])
        except OperationFailed as exc:
            refused = (group, str(exc))
            break
    assert refused and refused[0] > 0, refused
    assert "cannot hold the routes" in refused[1]
    after = proxy.read()
    assert after["services"] == before["services"] and after["generation"] == before["generation"]
    assert nginx.state_file.read_text() == recorded
    assert nd.read_document(nd.last_good_path(nginx.state_file)) == nd.read_document(
        nginx.state_file)


# -- 4. orphan workers -------------------------------------------------------------------------


def test_orphan_workers_are_named_and_the_documented_restart_works(nginx, backends):
    """kill -9 of the master: its workers go on serving and hold the ports, so a start fails;
    bluegreen names them (pids, ports); killing them, then starting, works."""
    from bluegreen.errors import Unreachable

    nginx.proxy().apply(routes(backends, "blue"))
    ctl = nginx.controller()
    workers = sorted(ctl.workers())
    master = int(nginx.pid_file.read_text())
    os.kill(master, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{master}").exists(), 10, "the master's death")
    assert get(nginx.port) == (200, "blue")  # the orphans serve
    with pytest.raises(Unreachable) as caught:
        ctl.ping()
    message = str(caught.value)
    assert "orphan nginx workers still serve" in message
    for pid in workers:
        assert f"{pid} (" in message and str(pid) in message.rsplit("kill ", 1)[1]
    assert f"127.0.0.1:{nginx.port}" in message and nginx.control in message
    with pytest.raises(subprocess.CalledProcessError):  # bind(): address already in use
        nginx.start()
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    for pid in workers:
        wait_for(lambda p=pid: not Path(f"/proc/{p}").exists(), 10, "the orphans' exit")
    nginx.start()
    assert get(nginx.port) == (200, "blue")


# -- 0. a first run that works, from the README's nginx.conf -----------------------------------


def readme_nginx_conf() -> str:
    """The nginx.conf of the README's dynamic-mode section, exactly."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    marker = "<!-- dynamic nginx.conf -->"
    assert marker in text, "the README lost its dynamic nginx.conf"
    block = text.split(marker, 1)[1].split("```nginx\n", 1)[1].split("```", 1)[0]
    return block


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("routing", ["locations", "table"])
def test_the_first_change_on_the_readme_nginx_sets_up_the_control_server(tmp_path, backends,
                                                                         routing):
    """nginx set up exactly as the README says (its paths moved into a private directory,
    its port a free one): the first change writes the control server and the secret (and,
    with the routing table, its `location /`), checks, reloads, then routes."""
    from bluegreen.proxy.nginx import LocalNginx

    root = tmp_path / "data"
    port, control = free_port(), f"127.0.0.1:{free_port()}"
    conf = readme_nginx_conf().replace("/data/", f"{root}/").replace(
        "listen 80;", f"listen 127.0.0.1:{port};")
    for d in ("nginx/upstreams", "nginx/includes", "nginx/logs", "bluegreen"):
        (root / d).mkdir(parents=True)
    (root / "nginx" / "nginx.conf").write_text(conf)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    conf_path, pid = str(root / "nginx" / "nginx.conf"), root / "nginx" / "nginx.pid"
    subprocess.run([binary, "-c", conf_path], check=True, capture_output=True, timeout=30)
    try:
        engine = nd.DynamicProxy(LocalNginx(binary, conf_path, None, str(pid)),
                                 root / "nginx" / "upstreams" / nd.INCLUDE_NAME,
                                 root / "nginx" / "includes", control,
                                 root / "bluegreen" / "nginx-routes.json", routing=routing)
        proxy = nd.NginxDynamicProxy(engine)
        proxy.ping()  # nginx answers; its control endpoint is not there yet, and that is fine
        assert proxy.serving(SVC).servers == ()
        assert proxy.apply([Route(SVC, "blue", (Server("127.0.0.1", backends["blue"].port),))])
        assert get(port) == (200, "blue")
        assert (root / "bluegreen" / "nginx-routes.secret").stat().st_mode & 0o777 == 0o600
        assert proxy.apply([Route(SVC, "green", (Server("127.0.0.1", backends["green"].port),))])
        assert get(port) == (200, "green")
    finally:
        master = int(pid.read_text())
        os.kill(master, signal.SIGQUIT)
        wait_for(lambda: not Path(f"/proc/{master}").exists(), 10, "nginx exit")
