"""A private, loopback-only environment: dockerd, a Consul dev agent, nginx, sample images.

Used by the demo (the README's main job), the integration tests and the benchmarks.
Everything is started idempotently and torn down by ``close()``; nothing listens beyond
127.0.0.1 except the Docker-published sample ports, which are bound to 127.0.0.1 too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen import templates
from bluegreen.errors import OperationFailed, Unreachable

CACHE = Path(os.environ.get("BLUEGREEN_CACHE_DIR") or
             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bluegreen")
SAMPLE_IMAGE = "bluegreen-sample"
SAMPLE_TAGS = {  # tag -> (VERSION, MODE)
    "v1": ("v1", "ok"), "v2": ("v2", "ok"), "v3": ("v3", "ok"),
    "crash": ("v-crash", "crash"), "unhealthy": ("v-unhealthy", "unhealthy"),
    "broken": ("v-broken", "broken"), "flaky": ("v-flaky", "flaky"),
}


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (their sockets held open together while chosen: two
    ports chosen one after the other may be the same one)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return
        if time.monotonic() >= deadline:
            raise OperationFailed(f"{what} not ready after {timeout:g}s")
        time.sleep(interval)


def repo_root() -> Path:
    return templates.resource_dir().parent


# -- Docker -----------------------------------------------------------------------------


def docker_ok() -> bool:
    import docker

    try:
        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


def ensure_dockerd(timeout: float = 60.0) -> None:
    """Start Debian's dockerd when no engine answers (needs root)."""
    if docker_ok():
        return
    if os.environ.get("DOCKER_HOST", "").startswith("tcp://"):
        raise Unreachable("Docker", os.environ["DOCKER_HOST"], "does not answer")
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        raise Unreachable("Docker", "unix:///var/run/docker.sock",
                          "no engine and no dockerd binary (run scripts/bootstrap.sh)")
    CACHE.mkdir(parents=True, exist_ok=True)
    log = open(CACHE / "dockerd.log", "ab")  # noqa: SIM115 - handed to the daemon
    subprocess.Popen([dockerd], stdout=log, stderr=log, start_new_session=True)
    wait_for(docker_ok, timeout, "dockerd", 0.5)


def build_busybox_image(client: Any, ref: str, src: Path, files: list[str],
                        buildargs: dict[str, str]) -> bool:
    """Build ``ref`` from static busybox and ``files`` of ``src`` (no registry); False when it
    exists already."""
    import docker

    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(ref)
        return False
    busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if Path(p).exists()), None)
    if busybox is None:
        raise OperationFailed("static busybox not found (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(busybox, Path(ctx) / "busybox")
        for name in files:
            shutil.copy(src / name, ctx)
        client.images.build(path=ctx, tag=ref, buildargs=buildargs, rm=True, pull=False)
    return True


def build_sample_images(tags: list[str] | None = None) -> list[str]:
    """Build ``bluegreen-sample:<tag>`` from static busybox; skip the tags that exist."""
    import docker

    client = docker.from_env(timeout=120)
    src = templates.resource_dir() / "sample"
    built = []
    for tag in tags or list(SAMPLE_TAGS):
        version, mode = SAMPLE_TAGS[tag]
        ref = f"{SAMPLE_IMAGE}:{tag}"
        if build_busybox_image(client, ref, src, ["Dockerfile", "start.sh"],
                               {"VERSION": version, "MODE": mode}):
            built.append(ref)
    return built


# -- Consul -----------------------------------------------------------------------------


def consul_binary() -> Path:
    """The cached agent built by scripts/build-consul.sh (built now when missing)."""
    env = os.environ.get("BLUEGREEN_CONSUL_BIN")
    if env:
        return Path(env)
    found = sorted(CACHE.glob("consul-v*"))
    if found:
        return found[-1]
    script = repo_root() / "scripts" / "build-consul.sh"
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise OperationFailed(f"cannot build the Consul agent: {out.stderr.strip()[-300:]}")
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class ConsulAgent:
    """``consul agent -dev`` on free loopback ports; DNS, gRPC and UI off. ``tls``: HTTPS only,
    with this server certificate and CA, client certificates verified (``verify_incoming``).
    ``client``: the address the API listens on (``::1`` for IPv6). ``acl_token``: ACLs on,
    ``default_policy = "deny"``, this management token."""

    workdir: Path
    http_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    tls: Any = None  # (CA file, server certificate pair): bluegreen_dev.certs
    client: str = "127.0.0.1"
    acl_token: str | None = None
    operator_cert: Any = None  # the client certificate the operator's requests use

    @property
    def addr(self) -> str:
        host = f"[{self.client}]" if ":" in self.client else self.client
        return f"{'https' if self.tls else 'http'}://{host}:{self.http_port}"

    def config(self) -> str:
        """The agent's extra HCL configuration (TLS, ACLs)."""
        hcl = ""
        if self.tls:
            ca, pair = self.tls
            hcl += (f'ports {{ http = -1, https = {self.http_port} }}\n'
                    f'tls {{ defaults {{ ca_file = "{ca}", cert_file = "{pair.cert}", '
                    f'key_file = "{pair.key}", verify_incoming = true }} }}\n')
        if self.acl_token:
            hcl += ('acl { enabled = true, default_policy = "deny", enable_token_persistence = '
                    f'false, tokens {{ initial_management = "{self.acl_token}", agent = '
                    f'"{self.acl_token}" }} }}\n')
        return hcl

    def requests_kwargs(self, client: Any = None) -> dict[str, Any]:
        """``requests`` arguments that reach this agent as its operator: the CA, a client
        certificate (``client``, a certs pair) and the management token."""
        kwargs: dict[str, Any] = {"timeout": 5}
        client = client or self.operator_cert
        if self.tls:
            kwargs["verify"] = str(self.tls[0])
            if client is not None:
                kwargs["cert"] = (str(client.cert), str(client.key))
        if self.acl_token:
            kwargs["headers"] = {"X-Consul-Token": self.acl_token}
        return kwargs

    def start(self, client_cert: Any = None) -> ConsulAgent:
        self.operator_cert = client_cert or self.operator_cert
        fresh = free_ports(4)  # an agent that finds two of its ports alike exits
        self.http_port = self.http_port or fresh[0]
        ports = [p for p in fresh if p != self.http_port][:3]
        self.workdir.mkdir(parents=True, exist_ok=True)
        extra: list[str] = []
        if self.tls or self.acl_token:
            (self.workdir / "extra.hcl").write_text(self.config())
            extra = [f"-config-file={self.workdir / 'extra.hcl'}"]
        log = open(self.workdir / "consul.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(consul_binary()), "agent", "-dev", "-bind=127.0.0.1", f"-client={self.client}",
             *([] if self.tls else [f"-http-port={self.http_port}"]), "-dns-port=-1", "-grpc-port=-1",
             "-grpc-tls-port=-1", f"-serf-lan-port={ports[0]}", f"-serf-wan-port={ports[1]}",
             f"-server-port={ports[2]}", "-ui=false", "-log-level=warn",
             f"-node=bluegreen-{self.http_port}", *extra],
            stdout=log, stderr=log, start_new_session=True)
        kwargs = self.requests_kwargs(client_cert)
        kwargs.pop("timeout")

        def leader() -> bool:
            import requests

            if self.proc and self.proc.poll() is not None:
                raise OperationFailed(f"consul exited; see {self.workdir / 'consul.log'}")
            return bool(requests.get(f"{self.addr}/v1/status/leader", timeout=1,
                                     **kwargs).json())

        try:
            wait_for(leader, 60, "Consul agent")
        except OperationFailed:
            if self.proc.poll() is None:
                raise
            last = (self.workdir / "consul.log").read_text(errors="replace").strip()
            raise OperationFailed(f"consul exited: {last.splitlines()[-1:]}") from None
        if self.acl_token:  # the management token works once the ACL system is bootstrapped
            wait_for(lambda: requests_ok_with(f"{self.addr}/v1/acl/token/self", kwargs), 60,
                     "Consul ACLs")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- nginx ------------------------------------------------------------------------------


@dataclass
class Nginx:
    """Debian's nginx with a private prefix, listening on a free loopback port."""

    prefix: Path
    port: int = 0
    workers: int = 2

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def upstream_dir(self) -> Path:
        return self.prefix / "upstreams"

    @property
    def include_dir(self) -> Path:
        return self.prefix / "includes"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise Unreachable("nginx", binary, "not installed (run scripts/bootstrap.sh)")
        self.write_conf(daemon=True)
        subprocess.run([binary, "-p", str(self.prefix), "-c", str(self.conf)], check=True,
                       capture_output=True)
        wait_for(lambda: self.pid_file.exists(), 10, "nginx")
        return self

    def write_conf(self, daemon: bool) -> None:
        self.port = self.port or free_port()
        for d in ("logs", "tmp", self.upstream_dir, self.include_dir):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(templates.render(
            "nginx/nginx.conf.j2", prefix=self.prefix, workers=self.workers, daemon=daemon,
            listen=f"127.0.0.1:{self.port}", upstream_dir=self.upstream_dir,
            include_dir=self.include_dir))

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pid_file.read_text())
            os.kill(pid, signal.SIGQUIT)
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "nginx exit")


NGINX_IMAGE = "bluegreen-nginx:local"


def build_nginx_image() -> str:
    """An nginx image made of this host's Debian nginx and its libraries (no registry)."""
    import docker

    client = docker.from_env(timeout=120)
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(NGINX_IMAGE)
        return NGINX_IMAGE
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = [p for p in (part.split("=>")[-1].split("(")[0].strip() for part in ldd.splitlines())
            if p.startswith("/")]
    with tempfile.TemporaryDirectory() as ctx:
        rootfs = Path(ctx) / "rootfs"
        for path in [binary, *libs]:
            dest = rootfs / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(path).resolve(), dest)
        for d in ("var/log/nginx", "var/lib/nginx", "run", "tmp", "etc/nginx"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        (rootfs / "etc/passwd").write_text("root:x:0:0::/:/nonexistent\n"
                                           "nobody:x:65534:65534::/:/nonexistent\n")
        (rootfs / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (Path(ctx) / "Dockerfile").write_text(
            "FROM scratch\nCOPY rootfs/ /\nSTOPSIGNAL SIGQUIT\n"
            'ENTRYPOINT ["/usr/sbin/nginx"]\n')
        client.images.build(path=ctx, tag=NGINX_IMAGE, rm=True, pull=False)
    return NGINX_IMAGE


@dataclass
class ContainerizedNginx(Nginx):
    """The same private nginx, run as a container named ``name`` (host network, the prefix
    bind-mounted at the same path): the book's ``nginx`` container."""

    name: str = "bluegreen-nginx"

    def start(self) -> ContainerizedNginx:
        import docker

        self.write_conf(daemon=False)
        client = docker.from_env()
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(self.name).remove(force=True)
        client.containers.run(build_nginx_image(), ["-p", str(self.prefix), "-c", str(self.conf)],
                              name=self.name, detach=True, network_mode="host",
                              volumes={str(self.prefix): {"bind": str(self.prefix), "mode": "rw"}})
        wait_for(lambda: requests_ok(self.url), 15, "nginx container")
        return self

    def stop(self) -> None:
        import docker

        with contextlib.suppress(docker.errors.DockerException):
            docker.from_env().containers.get(self.name).remove(force=True)


def container_answering(image: str, port: int = 8080) -> tuple[str, int]:
    """``docker run -d --init -p 127.0.0.1::PORT IMAGE`` with the docker CLI, returned once the
    container answers on ``/``: its id and host port (the benchmarks' primitive of a start)."""
    import requests

    cid = subprocess.run(["docker", "run", "-d", "--init", "-p", f"127.0.0.1::{port}", image],
                         capture_output=True, text=True, check=True).stdout.strip()
    host_port = int(subprocess.run(["docker", "port", cid, str(port)], capture_output=True,
                                   text=True, check=True).stdout.split(":")[-1].strip())
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{host_port}/", timeout=1).ok:
                return cid, host_port
        except requests.RequestException:
            time.sleep(0.02)


def primitive_cycle(image: str, path: str, reload: Any) -> dict[str, float]:
    """A deployment done with the primitives alone, the yardstick of ``bluegreen run``: a
    container started until it answers, two test requests, ``reload()`` (the proxy's change),
    ``docker stop``. The seconds of each step."""
    import requests

    took: dict[str, float] = {}
    t0 = time.perf_counter()
    cid, port = container_answering(image)
    took["start"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(2):  # pre- and post-integration tests
        requests.get(f"http://127.0.0.1:{port}{path}", timeout=2)
    took["tests"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["docker", "stop", cid], capture_output=True, check=True)
    took["stop"] = time.perf_counter() - t0
    subprocess.run(["docker", "rm", cid], capture_output=True, check=True)
    t0 = time.perf_counter()
    reload()
    took["reload"] = time.perf_counter() - t0
    return took


def requests_ok_with(url: str, kwargs: dict[str, Any]) -> bool:
    import requests

    return requests.get(url, timeout=1, **kwargs).status_code == 200


def requests_ok(url: str) -> bool:
    import requests

    return requests.get(url, timeout=1).status_code in (200, 404)


# -- all of it --------------------------------------------------------------------------


@dataclass
class Sandbox:
    root: Path
    consul: ConsulAgent = field(init=False)
    nginx: Nginx = field(init=False)

    def __post_init__(self) -> None:
        self.consul = ConsulAgent(self.root / "consul")
        self.nginx = Nginx(self.root / "nginx")

    def start(self, images: bool = True) -> Sandbox:
        ensure_dockerd()
        if images:
            build_sample_images()
        self.consul.start()
        self.nginx.start()
        return self

    def env(self, nginx: Nginx | None = None) -> dict[str, str]:
        """Environment for the ``bluegreen`` CLI against this sandbox (or another nginx)."""
        nginx = nginx or self.nginx
        env = dict(os.environ)
        env.update({"CONSUL_HTTP_ADDR": self.consul.addr, "BLUEGREEN_PUBLISH_IP": "127.0.0.1",
                    "BLUEGREEN_NGINX_MODE": "local", "BLUEGREEN_NGINX_CONF": str(nginx.conf),
                    "BLUEGREEN_NGINX_PREFIX": str(nginx.prefix),
                    "BLUEGREEN_NGINX_PID_FILE": str(nginx.pid_file),
                    "BLUEGREEN_UPSTREAM_DIR": str(nginx.upstream_dir),
                    "BLUEGREEN_INCLUDE_DIR": str(nginx.include_dir),
                    "BLUEGREEN_PROXY_URL": nginx.url})
        return env

    def remove_containers(self, service: str) -> None:
        import docker

        client = docker.from_env()
        for c in client.containers.list(all=True, filters={"label": f"bluegreen.service={service}"}):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)

    def close(self) -> None:
        self.nginx.stop()
        self.consul.stop()


# -- a sandbox for another process (the Groovy end-to-end tests) ---------------------------


def up(state: Path) -> dict[str, str]:
    """Start a sandbox that outlives this process; write ``env.json`` for its users."""
    import json

    sb = Sandbox(state).start()
    assert sb.consul.proc is not None
    (state / "consul.pid").write_text(str(sb.consul.proc.pid))
    keys = ("CONSUL_HTTP_ADDR", "BLUEGREEN_PROXY_URL")
    env = {k: v for k, v in sb.env().items() if k in keys or k.startswith("BLUEGREEN_NGINX")
           or k in ("BLUEGREEN_PUBLISH_IP", "BLUEGREEN_UPSTREAM_DIR", "BLUEGREEN_INCLUDE_DIR")}
    (state / "env.json").write_text(json.dumps(env, indent=1))
    return env


def down(state: Path, service_prefix: str = "groovy-") -> None:
    """Stop what ``up`` started and remove the containers of services named ``<prefix>*``."""
    import docker

    Nginx(state / "nginx").stop()
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((state / "consul.pid").read_text()), signal.SIGINT)
    client = docker.from_env()
    for c in client.containers.list(all=True, filters={"label": "bluegreen.service"}):
        if c.labels.get("bluegreen.service", "").startswith(service_prefix):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) != 3 or sys.argv[1] not in ("up", "down"):
        sys.exit("usage: python -m bluegreen_dev.sandbox up|down STATE_DIR")
    if sys.argv[1] == "up":
        print(json.dumps(up(Path(sys.argv[2])), indent=1))
    else:
        down(Path(sys.argv[2]))
