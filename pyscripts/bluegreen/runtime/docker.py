"""The Docker runtime: a color's instances are containers on one engine (the Engine API on
a local unix socket; the Docker SDK for TCP, TLS and SSH engines).

Containers are named ``<service>-<color>`` (``-1`` .. ``-N`` with ``--scale N``), carry
labels ``bluegreen.service`` / ``bluegreen.color``, get ``SERVICE_NAME=<service>-<color>``
(the name Registrator would register), carry ``SERVICE_IGNORE=true`` so that a Registrator
running on the host does not register them a second time, and publish the container port on a free host port.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

from bluegreen import validate, wire
from bluegreen.errors import (
    OperationFailed,
    TLSFailed,
    TLSFileError,
    Unreachable,
    reaching,
    tls_reason,
)
from bluegreen.model import APP_LABELS, LABEL_APP, Container, DeploySpec, color_name, container_names
from bluegreen.runtime.base import Runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LABEL_SERVICE = "bluegreen.service"
LABEL_COLOR = "bluegreen.color"
LABEL_PORT = "bluegreen.port"
LABEL_HEALTH = "bluegreen.health-path"


@contextlib.contextmanager
def _no_ca_bundle(env: dict[str, str]) -> Iterator[None]:
    """While the SDK's client is made (it asks the engine its API version): without
    ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` when DOCKER_CERT_PATH's CA is to be used."""
    if not env.get("DOCKER_TLS_VERIFY"):
        yield
        return
    saved = {k: os.environ.pop(k) for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
             if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _own_ca(api: Any) -> None:
    """Verify the engine with DOCKER_CERT_PATH's ``ca.pem``, as the docker CLI does: requests
    would take ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` instead, when they are set."""
    ca = api.verify
    if ca in (True, False, None):
        return
    merge = api.merge_environment_settings

    def merged(url: str, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = merge(url, proxies, stream, verify, cert)
        settings["verify"] = ca
        return settings

    api.merge_environment_settings = merged


class DockerEngine:
    """A Docker engine, reached like the docker CLI does (``DOCKER_HOST``, TLS env vars): the
    client and the mapping of its errors, shared by the Docker runtimes and containerized
    nginx."""

    client_modules = ("docker",)

    def __init__(self, docker_host: str | None = None) -> None:
        self.docker_host = docker_host or os.environ.get("DOCKER_HOST") or ""
        self.where = self.docker_host or "unix:///var/run/docker.sock"
        self._client: Any = None

    def _default_advertise(self, publish_ip: str = "") -> str:
        try:
            scheme, host, _, _ = wire.split_url(self.docker_host)
        except ValueError:
            scheme = host = ""
        if scheme in ("tcp", "http", "https"):
            return host
        if publish_ip not in ("", "0.0.0.0", "::"):  # noqa: S104
            return publish_ip
        return "127.0.0.1"

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker  # heavy: imported on first use

            env = dict(os.environ)
            if self.docker_host:
                env["DOCKER_HOST"] = self.docker_host
            try:
                with _no_ca_bundle(env):
                    self._client = docker.from_env(environment=env, timeout=30)
            except docker.errors.TLSParameterError as exc:
                where = env.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker")
                missing = [p for p in (os.path.join(where, f) for f in ("ca.pem", "cert.pem",
                                                                        "key.pem"))
                           if not os.path.isfile(p)]
                raise TLSFileError(f"Docker at {self.where}: TLS file(s) missing: "
                                   f"{', '.join(missing) or where} (DOCKER_CERT_PATH)") from exc
            except docker.errors.DockerException as exc:
                reason = tls_reason(exc)
                if reason:
                    raise TLSFailed("Docker", self.where, reason) from exc
                raise Unreachable("Docker", self.where, str(exc)[:200]) from exc
            _own_ca(self._client.api)
        return self._client

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Map the SDK's errors: unreachable (exit 3) or failed (exit 1)."""
        import docker

        try:
            with reaching("Docker", self.where):
                yield
        except docker.errors.APIError as exc:
            raise OperationFailed(f"Docker: {exc.explanation or exc}") from exc
        except docker.errors.DockerException as exc:
            raise OperationFailed(f"Docker: {exc}") from exc

    def ping(self) -> None:
        local = self._local()
        if local is None:
            with self.call():
                self.client.ping()
        else:
            try:
                found = local.send("GET", "/_ping", raw=True) is not None
            except OperationFailed as exc:
                raise Unreachable("Docker", self.where, str(exc)) from exc
            if not found:
                raise Unreachable("Docker", self.where, "/_ping found nothing")

    def _local(self) -> LocalEngine | None:
        """The engine's API on its unix socket; None when it is reached otherwise (TCP, TLS,
        SSH) or the SDK's client is already in use."""
        if self._client is not None or not self.where.startswith("unix://"):
            return None
        return LocalEngine(self.where[len("unix://"):], self.where)


class DockerRuntime(DockerEngine, Runtime):
    """Each instance of a color is a container ``<service>-<color>[-N]`` on one engine, its
    port published on a free host port of ``publish_ip``."""

    def __init__(self, docker_host: str | None = None, publish_ip: str = "0.0.0.0",  # noqa: S104 - as docker run -p
                 advertise_addr: str | None = None) -> None:
        super().__init__(docker_host)
        self.publish_ip = publish_ip
        self.advertise_addr = advertise_addr or self._default_advertise(publish_ip)

    @property
    def client_modules(self) -> tuple[str, ...]:  # type: ignore[override]
        return () if self._local() else ("docker",)

    def _info(self, c: Any) -> Container:
        """A container of the SDK."""
        return self._inspected(c.attrs)

    def _inspected(self, attrs: dict[str, Any]) -> Container:
        """A container as ``GET /containers/{id}/json`` has it (the SDK's ``attrs``)."""
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        state = (attrs.get("State") or {}).get("Status", "")
        cport = int(labels.get(LABEL_PORT, "0") or 0)
        port = None
        bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{cport}/tcp")
        if state == "running" and bindings:
            port = int(bindings[0]["HostPort"])
        networks = ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).values()
        private = next((n.get("IPAddress") for n in networks if n.get("IPAddress")), None)
        return Container(name=attrs.get("Name", "").lstrip("/"), id=attrs["Id"],
                         service=labels.get(LABEL_SERVICE, ""), color=labels.get(LABEL_COLOR, ""),
                         image=(attrs.get("Config") or {}).get("Image", ""), state=state,
                         address=self.advertise_addr, port=port, container_port=cport,
                         health_path=labels.get(LABEL_HEALTH, "/"), private_address=private,
                         labels=_app_labels(labels))

    def _inspect(self, container_id: str) -> Container:
        local = self._local()
        if local:
            attrs = local.get(f"/containers/{container_id}/json")
            if attrs is None:
                raise OperationFailed(f"Docker: no such container {container_id[:12]}")
            return self._inspected(attrs)
        with self.call():
            return self._info(self.client.containers.get(container_id))

    def _act(self, container_id: str, action: str, timeout: int = 10) -> None:
        """``start``, ``stop`` (after ``timeout`` seconds, killed) or ``remove`` (forced)."""
        local = self._local()
        if local:
            method, path = {"start": ("POST", "/start"), "stop": ("POST", f"/stop?t={timeout}"),
                            "remove": ("DELETE", "?force=1")}[action]
            local.send(method, f"/containers/{container_id}{path}", wait=timeout + 30)
            return
        with self.call():
            c = self.client.containers.get(container_id)
            if action == "stop":
                c.stop(timeout=timeout)
            elif action == "remove":
                c.remove(force=True)
            else:
                c.start()

    def _exit_detail(self, container_id: str) -> tuple[Any, str]:
        """An exited container's exit code and the last line of its output."""
        local = self._local()
        if local:
            attrs = local.get(f"/containers/{container_id}/json") or {}
            logs = _demuxed(local.send("GET", f"/containers/{container_id}/logs?stdout=1&stderr=1"
                                              f"&tail=1", raw=True) or b"")
        else:
            with self.call():
                raw = self.client.containers.get(container_id)
                attrs, logs = raw.attrs, raw.logs(tail=1)
        return (attrs.get("State") or {}).get("ExitCode"), logs.decode(errors="replace").strip()

    def containers(self, service: str, color: str | None = None) -> list[Container]:
        filters = [f"{LABEL_SERVICE}={validate.service(service)}"]
        if color:
            filters.append(f"{LABEL_COLOR}={validate.color(color)}")
        return self._find(filters)

    def app_containers(self, app: str) -> list[Container]:
        return self._find([f"{LABEL_APP}={validate.service(app)}"])

    def _find(self, filters: list[str]) -> list[Container]:
        listed = self._list_unix(filters)
        if listed is not None:
            return sorted(listed, key=lambda c: c.name)
        with self.call():
            found = self.client.containers.list(all=True, filters={"label": filters})
        return sorted((self._info(c) for c in found), key=lambda c: c.name)

    def _list_unix(self, labels: list[str]) -> list[Container] | None:
        """One ``GET /containers/json`` on a local engine's unix socket, without the SDK (its
        import and one inspect per container cost more than a quick command's whole budget);
        ``None`` for an engine reached otherwise (TCP, TLS, SSH): the SDK lists."""
        local = self._local()
        if local is None:
            return None
        query = wire.query({"all": "1", "filters": json.dumps({"label": labels})})
        return [self._listed(c) for c in local.get(f"/containers/json?{query}") or []]

    def _listed(self, c: dict[str, Any]) -> Container:
        """A container of ``GET /containers/json`` (what :meth:`_info` makes of the SDK's)."""
        labels = c.get("Labels") or {}
        cport = int(labels.get(LABEL_PORT, "0") or 0)
        state = c.get("State", "")
        port = next((int(p["PublicPort"]) for p in c.get("Ports") or []
                     if p.get("PrivatePort") == cport and p.get("Type") == "tcp"
                     and p.get("PublicPort")), None) if state == "running" else None
        networks = ((c.get("NetworkSettings") or {}).get("Networks") or {}).values()
        private = next((n.get("IPAddress") for n in networks if n.get("IPAddress")), None)
        return Container(name=(c.get("Names") or ["/"])[0].lstrip("/"), id=c["Id"],
                         service=labels.get(LABEL_SERVICE, ""), color=labels.get(LABEL_COLOR, ""),
                         image=c.get("Image", ""), state=state, address=self.advertise_addr,
                         port=port, container_port=cport, health_path=labels.get(LABEL_HEALTH, "/"),
                         private_address=private, labels=_app_labels(labels))

    def image_exists(self, image: str) -> bool:
        local = self._local()
        if local:
            return local.get(f"/images/{wire.quote(image, '/:@')}/json") is not None
        import docker

        with self.call():
            try:
                self.client.images.get(image)
                return True
            except docker.errors.ImageNotFound:
                return False

    def ensure_image(self, image: str, pull: bool = True) -> None:
        if not self.image_exists(image):
            if not pull:
                raise OperationFailed(f"image {image} is not present on {self.where}")
            with self.call():
                self.client.images.pull(image)

    def create(self, service: str, color: str, spec: DeploySpec) -> list[Container]:
        """Replace the color's containers by ``spec.scale`` new ones, created and not started
        (the image is present: see ``ensure_image``). ``spec.port`` 0: nothing published."""
        self.remove(service, color)
        image, port, network, health_path = spec.image, spec.port, spec.network, spec.health_path
        environment = dict(spec.env)
        environment["SERVICE_NAME"] = color_name(service, color)
        # SERVICE_IGNORE: Registrator, where it runs too, leaves these containers to us.
        labels = {LABEL_SERVICE: service, LABEL_COLOR: color, LABEL_PORT: str(port),
                  LABEL_HEALTH: health_path, "SERVICE_IGNORE": "true", **dict(spec.labels)}

        def create(name: str) -> Container:
            local = self._local()
            if local:  # what the SDK's containers.create sends for these arguments
                host: dict[str, Any] = {"Init": True}
                body: dict[str, Any] = {"Image": image, "Labels": labels, "HostConfig": host,
                                        "Env": [f"{k}={v}" for k, v in environment.items()]}
                if port:
                    body["ExposedPorts"] = {f"{port}/tcp": {}}
                    host["PortBindings"] = {f"{port}/tcp": [{"HostIp": self.publish_ip,
                                                             "HostPort": ""}]}
                if network:
                    host["NetworkMode"] = network
                    body["NetworkingConfig"] = {"EndpointsConfig": {network: {}}}
                if spec.hosts:
                    host["ExtraHosts"] = [f"{h}:{ip}" for h, ip in dict(spec.hosts).items()]
                made = local.send("POST", f"/containers/create?name={name}", body)
                return self._inspect(made["Id"])
            with self.call():
                c = self.client.containers.create(
                    image, detach=True, name=name, environment=environment, labels=labels,
                    ports={f"{port}/tcp": (self.publish_ip, None)} if port else None,
                    network=network, init=True, extra_hosts=dict(spec.hosts) or None,
                )
            return self._info(c)

        return self._each(create, container_names(validate.service(service), validate.color(color),
                                                  spec.scale))

    def start(self, service: str, color: str, spec: DeploySpec) -> list[Container]:
        """Replace the color's containers by ``spec.scale`` new ones, started."""
        self.create(service, color, spec)
        return self.restart(service, color)

    def _each(self, fn: Any, items: list[Any]) -> list[Any]:
        """``fn`` over ``items``, concurrently when there are several (scaled colors)."""
        if len(items) <= 1:
            return [fn(i) for i in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
            return list(pool.map(fn, items))

    def restart(self, service: str, color: str) -> list[Container]:
        """Start a color's stopped containers again (a rollback to a stopped color)."""
        def start(c: Container) -> None:
            if not c.running:
                self._act(c.id, "start")

        self._each(start, self.containers(service, color))
        return self.containers(service, color)

    def wait_healthy(self, containers: list[Container], timeout: float) -> list[Container]:
        """Wait until each container runs and answers its health path below 400."""
        deadline = time.monotonic() + timeout
        pending = {c.name for c in containers}
        current = {c.name: c for c in containers}
        while pending:
            for name in sorted(pending):
                c = current[name] = self._inspect(current[name].id)
                if c.state in ("exited", "dead"):
                    code, logs = self._exit_detail(c.id)
                    tail = f": {logs[:160]}" if logs else ""
                    raise OperationFailed(f"container {name} exited with code {code}{tail}")
                if c.running and not c.container_port:
                    pending.discard(name)  # nothing to ask: running is all it can say
                elif c.running and c.port:
                    with contextlib.suppress(OSError):
                        status, _ = wire.get(c.health_url, timeout=1.0)
                        if status < 400:
                            pending.discard(name)
            if not pending:
                break
            if time.monotonic() >= deadline:
                raise OperationFailed(
                    f"{', '.join(sorted(pending))} not healthy within {timeout:g}s "
                    f"(health path {containers[0].health_path})")
            time.sleep(0.05)  # a local start takes a few tenths: poll finely
        return [current[c.name] for c in containers]

    def stop(self, service: str, color: str, timeout: int = 10) -> list[str]:
        def stop(c: Container) -> str:
            self._act(c.id, "stop", timeout)
            return c.name

        return self._each(stop, [c for c in self.containers(service, color) if c.running])

    def remove(self, service: str, color: str) -> list[str]:
        def remove(c: Container) -> str:
            self._act(c.id, "remove")
            return c.name

        return self._each(remove, self.containers(service, color))


class LocalEngine:
    """The Docker Engine API on a local unix socket (bluegreen.wire), for the calls of a local
    deploy: importing the SDK with ``requests`` costs more here than a container takes to start
    (docs/benchmarks.md). Engines reached over TCP, TLS or SSH, the Swarm runtime and nginx in
    a container use the SDK."""

    def __init__(self, socket_path: str, where: str) -> None:
        self.socket, self.where = f"unix:{socket_path}", where

    def get(self, path: str) -> Any:
        """The JSON answer; None for 404."""
        return self.send("GET", path)

    def send(self, method: str, path: str, body: dict[str, Any] | None = None,
             wait: float = 30.0, raw: bool = False) -> Any:
        """One request; the JSON answer (the bytes with ``raw``), None when empty or, for a
        GET, 404. A refused request is ``OperationFailed`` with the engine's message."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            status, answer = wire.request(self.socket, method, path, data, headers, wait)
        except OSError as exc:
            raise Unreachable("Docker", self.where, exc.strerror or str(exc)) from exc
        if status == 404 and method == "GET":
            return None
        if status >= 400:
            try:
                message = json.loads(answer).get("message")
            except (ValueError, AttributeError):
                message = answer[:200].decode(errors="replace")
            raise OperationFailed(f"Docker: {status} {message}")
        if raw:
            return answer
        return json.loads(answer) if answer.strip() else None


def _demuxed(stream: bytes) -> bytes:
    """The payload of a non-TTY container's log stream (8-byte frame headers taken out)."""
    out, pos = bytearray(), 0
    while pos + 8 <= len(stream):
        size = int.from_bytes(stream[pos + 4:pos + 8], "big")
        out += stream[pos + 8:pos + 8 + size]
        pos += 8 + size
    return bytes(out)


def _app_labels(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, labels[k]) for k in APP_LABELS if k in labels)
