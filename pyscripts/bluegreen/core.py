"""The book's single steps on plain arguments: colors, deploy, address, switch, stop, status."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bluegreen import validate
from bluegreen.errors import OperationFailed
from bluegreen.proxy import Proxy, weighted_servers
from bluegreen.registry import Instance, Registry
from bluegreen.runtime import Container, DockerRuntime


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Toolkit:
    """The registry, the runtime and the proxy, and how to report."""

    registry: Registry
    runtime: DockerRuntime | None = None
    proxy: Proxy | None = None
    say: Callable[[str], None] = _stderr
    dry_run: bool = False
    check_interval: str = "1s"
    health_timeout: float = 60.0
    drain_timeout: float = 30.0
    stop_timeout: int = 10

    # -- colors ----------------------------------------------------------------------

    def address(self, service: str, color: str) -> list[str]:
        validate.color(color)
        return [i.hostport for i in self.registry.instances(validate.service(service), color)]

    # -- deploy ----------------------------------------------------------------------

    def live_color(self, service: str) -> str | None:
        """The color users reach: what the proxy routes to, else the recorded color."""
        serving = self.proxy.serving(service) if self.proxy else None
        if serving and serving.color:
            return serving.color
        return self.registry.get_color(service)

    def deploy(self, service: str, color: str, image: str, port: int = 8080,
               env: dict[str, str] | None = None, scale: int = 1, network: str | None = None,
               health_path: str = "/", pull: bool = True) -> list[Container]:
        """Start ``scale`` containers of ``image`` as ``color``, healthy and registered."""
        assert self.runtime
        validate.service(service)
        validate.color(color)
        validate.image(image)
        if self.live_color(service) == color and any(
                c.running for c in self.runtime.containers(service, color)):
            raise OperationFailed(f"{service}-{color} is live (the proxy routes to it); "
                                  f"deploy the other color")
        if self.dry_run:
            old = [c.name for c in self.runtime.containers(service, color)]
            if old:
                self.say(f"would remove {', '.join(old)}")
            self.say(f"would start {scale} container(s) {service}-{color} of {image} "
                     f"(port {port}, health {health_path}) and register them as {service}-{color}")
            return []
        self.runtime.ensure_image(image, pull)  # before anything is changed
        self.set_release(service, color, image, verified=False)
        self.deregister(service, color)
        try:
            started = self.runtime.start(service, color, image, port, env or {}, scale, network,
                                         health_path)
            # Registered at once, critical until Consul's own check passes (nothing routes to
            # it before): Consul's first-check delay overlaps the container's start-up.
            self.register(started)
            started = self.runtime.wait_healthy(started, self.health_timeout)
            self.wait_passing(service, color, len(started))
        except BaseException:
            self.say(f"deploy of {service}-{color} failed: removing its containers")
            self.discard(service, color)
            raise
        return started

    def discard(self, service: str, color: str) -> None:
        """Deregister and remove a failed color; each step runs even if another fails."""
        assert self.runtime
        for step in (self.deregister, self.runtime.remove):
            try:
                step(service, color)
            except Exception as exc:
                self.say(f"cleanup of {service}-{color}: {exc}")

    def set_release(self, service: str, color: str, image: str | None, verified: bool) -> None:
        """What a color holds and whether it passed a deployment (``rollback`` needs it)."""
        self.registry.put_json(service, f"release-{color}",
                               {"image": image, "verified": verified, "at": time.time()})

    def verify_release(self, service: str, color: str) -> None:
        release = self.registry.get_json(service, f"release-{color}") or {}
        if not release.get("verified"):
            self.set_release(service, color, release.get("image"), verified=True)

    def register(self, containers: list[Container]) -> list[Instance]:
        """Register the containers that publish a port (one without has already exited)."""
        insts = [Instance(id=c.name, service=c.service, color=c.color, address=c.address,
                          port=c.port, check_url=c.health_url) for c in containers if c.port]
        for inst in insts:
            self.registry.register(inst, interval=self.check_interval)
        return insts

    def deregister(self, service: str, color: str) -> list[str]:
        ids = [i.id for i in self.registry.instances(service, color)]
        for instance_id in ids:
            self.registry.deregister(instance_id)
        return ids

    def wait_passing(self, service: str, color: str, count: int) -> list[Instance]:
        deadline = time.monotonic() + self.health_timeout
        while True:
            passing = self.registry.instances(service, color, passing=True)
            if len(passing) >= count:
                return passing
            if time.monotonic() >= deadline:
                raise OperationFailed(f"{service}-{color}: {len(passing)} of {count} instance(s) "
                                      f"passing in {self.registry.where} after "
                                      f"{self.health_timeout:g}s")
            time.sleep(0.1)

    def bring_up(self, service: str, color: str) -> list[Instance]:
        """Make a color serve again: start its stopped containers, wait, register."""
        assert self.runtime
        containers = self.runtime.containers(service, color)
        if not containers:
            raise OperationFailed(f"no containers of {service}-{color} to start")
        if all(c.running for c in containers):
            passing = self.registry.instances(service, color, passing=True)
            if len(passing) >= len(containers):
                return passing
        if self.dry_run:
            self.say(f"would start {', '.join(c.name for c in containers)}")
            return []
        self.deregister(service, color)
        started = self.runtime.restart(service, color)
        self.register(started)
        started = self.runtime.wait_healthy(started, self.health_timeout)
        return self.wait_passing(service, color, len(started))

    # -- proxy -----------------------------------------------------------------------

    def switch(self, service: str, color: str, weight: int = 100) -> bool:
        """Route the service to ``color`` (``weight`` percent of it); record it at 100."""
        assert self.proxy
        validate.service(service)
        validate.color(color)
        weight = validate.weight(weight)
        new = self.registry.instances(service, color, passing=True)
        if not new and weight > 0:
            raise OperationFailed(f"no passing instance of {service}-{color}; proxy left as it is")
        old: list[Instance] = []
        if weight < 100:
            old = self.registry.instances(service, validate.other_color(color), passing=True)
            if not old:
                raise OperationFailed(f"no passing instance of {service}-"
                                      f"{validate.other_color(color)} to keep {100 - weight}% on")
        servers = weighted_servers(new, old, weight)
        plan = self.proxy.render(service, color if weight else validate.other_color(color),
                                 servers, weight if weight else 100)
        if self.dry_run:
            diff = self.proxy.diff(plan)
            self.say(diff.rstrip("\n") if diff else "proxy files unchanged")
            if weight == 100 and self.registry.get_color(service) != color:
                self.say(f"would record {service} color {color}")
            return bool(diff)
        changed = self.proxy.apply(plan)
        if weight == 100 and self.registry.get_color(service) != color:
            self.registry.set_color(service, color)
        return changed

    def unroute(self, service: str) -> bool:
        """Remove the service's proxy files (no color serves) and the color record."""
        assert self.proxy
        plan = self.proxy.render_removal(service)
        if self.dry_run:
            diff = self.proxy.diff(plan)
            self.say(diff.rstrip("\n") if diff else "proxy files unchanged")
            return bool(diff)
        changed = self.proxy.apply(plan)
        self.registry.set_color(service, None)
        return changed

    # -- stop ------------------------------------------------------------------------

    def stop(self, service: str, color: str, force: bool = False) -> list[str]:
        """Deregister and stop a color's containers (kept for rollback)."""
        assert self.runtime
        validate.service(service)
        validate.color(color)
        if not force and self.proxy and self.proxy.serving(service).color == color:
            raise OperationFailed(f"{service}-{color} is live (the proxy routes to it); "
                                  f"switch first, or use --force")
        running = [c.name for c in self.runtime.containers(service, color) if c.running]
        if self.dry_run:
            self.say(f"would deregister and stop {', '.join(running) or 'nothing'}")
            return running
        self.deregister(service, color)
        if self.proxy and running and not self.proxy.controller.drain(self.drain_timeout):
            self.say(f"nginx still finishing old requests after {self.drain_timeout:g}s; stopping")
        return self.runtime.stop(service, color, self.stop_timeout)

    # -- status ----------------------------------------------------------------------

    def status(self, service: str) -> dict[str, Any]:
        validate.service(service)
        recorded = self.registry.get_color(service)
        report: dict[str, Any] = {"service": service, "recorded_color": recorded, "colors": {},
                                  "problems": []}
        serving = self.proxy.serving(service) if self.proxy else None
        if serving:
            report["proxy"] = {"color": serving.color, "weight": serving.weight,
                               "servers": list(serving.servers)}
        for color in validate.COLORS:
            containers = self.runtime.containers(service, color) if self.runtime else []
            insts = self.registry.instances(service, color)
            report["colors"][color] = {
                "containers": [{"name": c.name, "state": c.state, "image": c.image,
                                "port": c.port} for c in containers],
                "instances": [{"id": i.id, "address": i.hostport, "status": i.status}
                              for i in insts],
            }
        problems = report["problems"]
        if serving is not None:
            if (serving.color or recorded) and serving.color != recorded:
                problems.append(f"recorded color {recorded} but the proxy routes to "
                                f"{serving.color}")
            if serving.color:
                live = report["colors"][serving.color]
                if not any(c["state"] == "running" for c in live["containers"]) and self.runtime:
                    problems.append(f"the proxy routes to {serving.color} but none of its "
                                    f"containers runs")
                passing = {i["address"] for i in live["instances"] if i["status"] == "passing"}
                if serving.weight == 100 and set(serving.servers) - passing:
                    problems.append(f"the proxy routes to {', '.join(sorted(set(serving.servers) - passing))}"
                                    f" which is not a passing instance of {serving.color}")
        inflight = self.registry.get_json(service, "inflight")
        if inflight:
            report["inflight"] = inflight
            problems.append(f"a run ({inflight.get('from')} -> {inflight.get('to')}, phase "
                            f"{inflight.get('phase')}) is in progress or was interrupted; the next "
                            f"run, rollback or recover deals with it")
        return report
