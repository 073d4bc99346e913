"""``--runtime swarm``: each color is a Docker Swarm service ``<service>-<color>`` with N replicas.

The same public interface as ``runtime.DockerRuntime`` (which it extends for the client, the
error mapping and the image checks); ``DOCKER_HOST`` must name a swarm **manager**.

- ``start`` replaces the color's service by a new one of ``scale`` replicas and returns once
  each replica has a running task with its published port (a task that fails raises
  ``OperationFailed`` with Docker's error, as an exited container does); ``stop`` scales it to
  0 and waits until its tasks are gone, keeping the service for a rollback; ``restart``
  scales it back to the replicas it was started with (label ``bluegreen.scale``); ``remove``
  deletes the service.
- **Addressing: published ports in ``mode: host``**, one Container per task: the task's node
  address (``Status.Addr``, or the manager's address when Docker reports ``0.0.0.0``; a node
  label ``bluegreen.addr`` overrides it; ``advertise_addr`` overrides all) and the port Docker
  picked on that node. Consul then registers each task on its own and checks it, so nginx
  points at individual tasks and no route depends on a node other than the task's own.
  Rejected alternatives: the ingress routing mesh and VIPs need IPVS (absent on the test
  machine's kernel; see ``devswarm``) and would hide a dead task behind a node that is alive;
  overlay addresses are unreachable from a proxy that is not itself a swarm task.
  Services use ``endpoint_mode: dnsrr`` (no IPVS). ``network`` attaches an overlay network
  (for the service's own peers); addressing stays the published port.
- ``containers()``: tasks whose desired state is ``running``; a task is ``running`` only when
  Docker reports it running **and** its node is ``ready``, so a task on a node the manager has
  marked down is never reported running (its state reads ``node-down``). A service scaled to 0
  is listed as ``bluegreen.scale`` stopped placeholders (state ``exited``, no port), as stopped
  containers are. Names: ``<service>-<color>.<slot>.<task id[:12]>`` (the Consul instance id:
  a task rescheduled elsewhere is a new instance).
- Images: tasks start from the image present on each node (no registry needed when every node
  has it, e.g. ``docker load``); ``ensure_image`` looks on the manager, and pulls there when
  allowed (workers then pull the same reference themselves).
- Labels on the service and its containers: ``bluegreen.service``, ``bluegreen.color``,
  ``bluegreen.port``, ``bluegreen.health-path``, ``bluegreen.scale``, ``SERVICE_IGNORE=true``.
"""

from __future__ import annotations

import contextlib
import re
import time

from bluegreen import validate
from bluegreen.errors import OperationFailed
from bluegreen.model import LABEL_APP, Container, DeploySpec, color_name
from bluegreen.runtime.docker import (
    LABEL_COLOR,
    LABEL_HEALTH,
    LABEL_PORT,
    LABEL_SERVICE,
    DockerRuntime,
    _app_labels,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LABEL_SCALE = "bluegreen.scale"
NODE_ADDR_LABEL = "bluegreen.addr"
FAILED = ("failed", "rejected")
STOP_GRACE_NS = 10_000_000_000  # as DockerRuntime.stop's default
SETTLE_TIMEOUT = 120.0  # start/restart: until every replica runs (image start, not health)
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class SwarmRuntime(DockerRuntime):
    """Colors as swarm services on the manager at ``DOCKER_HOST``."""

    client_modules = ("docker",)  # services and nodes: the SDK, on any engine
    # a task reaches the proxy through its node's NAT: every caller on a node has the node's
    # address (and the tasks' bridge addresses repeat from node to node)
    callers_by_address = False

    def __init__(self, docker_host: str | None = None, advertise_addr: str | None = None,
                 settle_timeout: float = SETTLE_TIMEOUT) -> None:
        super().__init__(docker_host)
        self.advertise_addr = advertise_addr or ""
        self.settle_timeout = settle_timeout

    def ping(self) -> None:
        with self.call():
            swarm = self.client.info().get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            raise OperationFailed(f"Docker at {self.where} is not a swarm manager "
                                  f"(node state {swarm.get('LocalNodeState', '?')})")

    # -- reading ---------------------------------------------------------------------

    def _services(self, service: str | None, color: str | None = None,
                  app: str | None = None) -> list[Any]:
        filters = [f"{LABEL_SERVICE}={validate.service(service)}"] if service else \
            [f"{LABEL_APP}={validate.service(app or '')}"]
        if color:
            filters.append(f"{LABEL_COLOR}={validate.color(color)}")
        with self.call():
            return list(self.client.services.list(filters={"label": filters}))

    def _nodes(self) -> dict[str, tuple[str, bool]]:
        """Node id -> (address, ready)."""
        with self.call():
            nodes = self.client.nodes.list()
        result = {}
        for n in nodes:
            status, spec = n.attrs.get("Status", {}), n.attrs.get("Spec", {})
            addr = (spec.get("Labels") or {}).get(NODE_ADDR_LABEL) or status.get("Addr") or ""
            if addr in ("", "0.0.0.0"):  # noqa: S104 - Docker's placeholder for some managers
                addr = (n.attrs.get("ManagerStatus") or {}).get("Addr", "").rsplit(":", 1)[0]
            result[n.id] = (self.advertise_addr or addr, status.get("State") == "ready")
        return result

    def _tasks(self, svc: Any, desired: str | None = "running") -> list[dict[str, Any]]:
        with self.call():
            return list(svc.tasks(filters={"desired-state": desired} if desired else None))

    def _task_info(self, svc: Any, task: dict[str, Any], nodes: dict[str, tuple[str, bool]]) -> Container:
        labels = svc.attrs["Spec"].get("Labels") or {}
        cport = int(labels.get(LABEL_PORT, "0") or 0)
        addr, ready = nodes.get(task.get("NodeID", ""), ("", False))
        state = task["Status"]["State"]
        if state == "running" and not ready:
            state = "node-down"
        port = None
        for p in (task["Status"].get("PortStatus") or {}).get("Ports") or []:
            if p.get("TargetPort") == cport and p.get("PublishedPort"):
                port = int(p["PublishedPort"])
        name = f"{svc.name}.{task.get('Slot', 0)}.{task['ID'][:12]}"
        return Container(name=name, id=task["ID"], service=labels.get(LABEL_SERVICE, ""),
                         color=labels.get(LABEL_COLOR, ""), image=_image(svc),
                         state=state, address=addr, port=port if state == "running" else None,
                         container_port=cport, health_path=labels.get(LABEL_HEALTH, "/"),
                         labels=_app_labels(labels))

    def _service_containers(self, svc: Any, nodes: dict[str, tuple[str, bool]]) -> list[Container]:
        labels = svc.attrs["Spec"].get("Labels") or {}
        replicas = _replicas(svc)
        if replicas == 0:
            return [Container(name=f"{svc.name}.{slot}", id=svc.id,
                              service=labels.get(LABEL_SERVICE, ""),
                              color=labels.get(LABEL_COLOR, ""), image=_image(svc), state="exited",
                              address="", port=None,
                              container_port=int(labels.get(LABEL_PORT, "0") or 0),
                              health_path=labels.get(LABEL_HEALTH, "/"),
                              labels=_app_labels(labels))
                    for slot in range(1, int(labels.get(LABEL_SCALE, "1") or 1) + 1)]
        return [self._task_info(svc, t, nodes) for t in self._tasks(svc)]

    def containers(self, service: str, color: str | None = None) -> list[Container]:
        return self._containers(self._services(service, color))

    def app_containers(self, app: str) -> list[Container]:
        return self._containers(self._services(None, app=app))

    def _containers(self, services: list[Any]) -> list[Container]:
        if not services:
            return []
        nodes = self._nodes()
        found = [c for svc in services for c in self._service_containers(svc, nodes)]
        return sorted(found, key=lambda c: c.name)

    # -- changing --------------------------------------------------------------------

    def create(self, service: str, color: str, spec: DeploySpec) -> list[Container]:
        """Replace the color's service by one of 0 replicas (``restart`` scales it to
        ``spec.scale``); ``spec.port`` 0: nothing published."""
        self._create(service, color, spec, 0)
        return self.containers(service, color)

    def start(self, service: str, color: str, spec: DeploySpec) -> list[Container]:
        """Replace the color's service by one of ``spec.scale`` replicas; return its tasks once
        each runs and has published its port."""
        return self._settle(self._create(service, color, spec, spec.scale), spec.scale)

    def _create(self, service: str, color: str, spec: DeploySpec, replicas: int) -> str:
        import docker

        image, port, env, scale = spec.image, spec.port, spec.env, spec.scale
        network, health_path = spec.network, spec.health_path
        self.remove(service, color)
        name = swarm_name(validate.service(service), validate.color(color))
        environment = {**env, "SERVICE_NAME": color_name(service, color)}
        labels = {LABEL_SERVICE: service, LABEL_COLOR: color, LABEL_PORT: str(port),
                  LABEL_HEALTH: health_path, LABEL_SCALE: str(scale), "SERVICE_IGNORE": "true",
                  **dict(spec.labels)}
        ports = [{"TargetPort": port, "Protocol": "tcp", "PublishMode": "host"}] if port else []
        with self.call():
            svc = self.client.services.create(
                image, name=name, env=[f"{k}={v}" for k, v in environment.items()],
                labels=labels, container_labels=labels, init=True,
                hosts=dict(spec.hosts) or None,
                mode=docker.types.ServiceMode("replicated", replicas=replicas),
                endpoint_spec=docker.types.EndpointSpec(mode="dnsrr", ports=ports),
                networks=[network] if network else None, stop_grace_period=STOP_GRACE_NS,
                restart_policy=docker.types.RestartPolicy(condition="any", delay=1_000_000_000))
        return str(svc.id)

    def _settle(self, service_id: str, replicas: int) -> list[Container]:
        """Wait until ``replicas`` tasks run with a published port on ready nodes."""
        deadline = time.monotonic() + self.settle_timeout
        while True:
            with self.call():
                svc = self.client.services.get(service_id)
            self._raise_failed(svc)
            nodes = self._nodes()
            current = [self._task_info(svc, t, nodes) for t in self._tasks(svc)]
            up = [c for c in current if c.up]
            if len(up) >= replicas:
                return sorted(up, key=lambda c: c.name)
            if time.monotonic() >= deadline:
                states = ", ".join(sorted(c.state for c in current)) or "no task"
                raise OperationFailed(f"{svc.name}: {len(up)} of {replicas} task(s) running after "
                                      f"{self.settle_timeout:g}s ({states})")
            time.sleep(0.2)

    def _raise_failed(self, svc: Any) -> None:
        """A task that failed since the service's last change, on a node still ready (not one
        lost with its node), fails the deployment with Docker's error."""
        updated = _when(svc.attrs.get("UpdatedAt", ""))
        nodes = self._nodes()
        for t in self._tasks(svc, desired=None):
            ready = nodes.get(t.get("NodeID", ""), ("", True))[1]
            if t["Status"]["State"] in FAILED and ready and _when(t.get("CreatedAt", "")) >= updated:
                err = t["Status"].get("Err") or t["Status"]["State"]
                raise OperationFailed(f"{svc.name}: task {t.get('Slot', '?')} {err}")

    def restart(self, service: str, color: str) -> list[Container]:
        """Scale a stopped color back to the replicas it was started with."""
        result = []
        for svc in self._services(service, color):
            scale = int((svc.attrs["Spec"].get("Labels") or {}).get(LABEL_SCALE, "1") or 1)
            if _replicas(svc) != scale:
                with self.call():
                    svc.scale(scale)
            result += self._settle(svc.id, scale)
        return sorted(result, key=lambda c: c.name)

    def wait_healthy(self, containers: list[Container], timeout: float) -> list[Container]:
        """Wait until each of the colors' services has its replicas running on ready nodes,
        each answering its health path below 400; return those tasks (a task rescheduled
        meanwhile is followed to its replacement)."""
        from bluegreen import wire

        deadline = time.monotonic() + timeout
        wanted = sorted({(c.service, c.color) for c in containers})
        healthy: dict[str, Container] = {}
        while True:
            result, missing = [], []
            for service, color in wanted:
                for svc in self._services(service, color):
                    self._raise_failed(svc)
                    nodes = self._nodes()
                    up = [self._task_info(svc, t, nodes) for t in self._tasks(svc)]
                    up = [c for c in up if c.up]
                    for c in up:
                        if c.id not in healthy and not c.container_port:
                            healthy[c.id] = c  # nothing to ask: running is all it can say
                        elif c.id not in healthy:
                            with contextlib.suppress(OSError):
                                status, _ = wire.get(c.health_url, timeout=1.0)
                                if status < 400:
                                    healthy[c.id] = c
                    ok = [c for c in up if c.id in healthy]
                    result += ok
                    if len(ok) < _replicas(svc):
                        missing.append(f"{svc.name} ({len(ok)} of {_replicas(svc)})")
            if not missing:
                return sorted(result, key=lambda c: c.name)
            if time.monotonic() >= deadline:
                path = containers[0].health_path if containers else "/"
                raise OperationFailed(f"{', '.join(missing)} not healthy within {timeout:g}s "
                                      f"(health path {path})")
            time.sleep(0.2)

    def stop(self, service: str, color: str, timeout: int = 10) -> list[str]:
        """Scale to 0 (the service is kept); return once its tasks on ready nodes stopped."""
        stopped = []
        for svc in self._services(service, color):
            stopped += [c.name for c in self._service_containers(svc, self._nodes()) if c.running]
            if _replicas(svc):
                with self.call():
                    svc.scale(0)
            deadline = time.monotonic() + timeout + 30
            while any(c.state in ("running", "starting") for c in self._all_tasks(svc)):
                if time.monotonic() >= deadline:
                    raise OperationFailed(f"{svc.name}: tasks still running {timeout + 30}s "
                                          f"after scaling to 0")
                time.sleep(0.2)
        return sorted(stopped)

    def _all_tasks(self, svc: Any) -> list[Container]:
        """Every task of ``svc`` on a ready node, whatever its desired state."""
        nodes = self._nodes()
        return [c for c in (self._task_info(svc, t, nodes) for t in self._tasks(svc, desired=None))
                if c.state != "node-down"]

    def remove(self, service: str, color: str) -> list[str]:
        import docker

        removed = []
        for svc in self._services(service, color):
            removed += [c.name for c in self._service_containers(svc, self._nodes())]
            with self.call(), contextlib.suppress(docker.errors.NotFound):
                svc.remove()
        return sorted(removed)


def swarm_name(service: str, color: str) -> str:
    """The swarm service's name: ``<service>-<color>`` when that is a DNS label (Swarm's rule:
    an application's ``hello-world.servicea`` is not), else that name with each other character
    as ``-``, cut to fit, and a digest of the real name (unique; nothing looks it up: labels do)."""
    import hashlib

    name = color_name(service, color)
    if _DNS_LABEL.fullmatch(name):
        return name
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{re.sub(r'[^a-z0-9-]', '-', name)[:54].strip('-')}-{digest}"


def _replicas(svc: Any) -> int:
    return int(((svc.attrs["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0))


def _image(svc: Any) -> str:
    image = svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    return str(image).split("@", 1)[0]


def _when(stamp: str) -> tuple[str, int]:
    """Docker's RFC 3339 time (nanoseconds, trailing zeros trimmed) as a comparable value."""
    base, _, frac = stamp.rstrip("Z").partition(".")
    return base, int((frac + "000000000")[:9] or 0)
