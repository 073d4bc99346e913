"""The steps layer: the book's single steps (deploy, address, switch, stop, status), the
records the pipeline keeps, and the rebuilding of lost records. The only code that calls the
registry, the runtime and the proxy."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping

from bluegreen import interrupts, model, validate
from bluegreen.errors import InvalidRecord, OperationFailed, Unreachable, UsageError, redact
from bluegreen.model import Container, DeploySpec, Instance, Move, Route, Server
from bluegreen.proxy.base import Proxy, weighted_route
from bluegreen.record import Record, replace
from bluegreen.registry.base import Registry
from bluegreen.runtime.base import Runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _stderr(line: str) -> None:
    print(redact(line), file=sys.stderr, flush=True)


class Steps(Record):
    """The registry, the runtime and the proxy (built by ``bluegreen.settings``), and how to
    report."""

    registry: Registry
    runtime: Runtime | None = None
    proxy: Proxy | None = None
    say: Callable[[str], None] = _stderr
    dry_run: bool = False
    check_interval: str = "1s"
    health_timeout: float = 60.0
    drain_timeout: float = 30.0
    stop_timeout: int = 10
    proxy_changes: int = 0  # changes this object made to the proxy (applied, not put back)
    # called with the routes each proxy left behind (--partial) missed, after each change
    on_behind: Callable[[dict[str, list[Route]]], None] | None = None

    def preload(self) -> None:
        """Start importing, in the background, the client libraries that changing containers
        and registering them need (``bluegreen.preload``)."""
        from bluegreen.preload import preload

        preload(*(self.runtime.client_modules if self.runtime else ()),
                *self.registry.client_modules)

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

    def deploy(self, service: str, color: str, spec: DeploySpec) -> list[Container]:
        """Start ``spec.scale`` instances of ``spec.image`` as ``color``, healthy and
        registered."""
        return self.deploy_many([(service, color, spec)])

    def deploy_many(self, colors: list[tuple[str, str, DeploySpec]]) -> list[Container]:
        """Start every color of ``(service, color, spec)`` together: all created and started,
        then waited for at once, healthy and registered. On any failure every color this
        started is removed (the others, and what the proxy routes, are left as they were)."""
        assert self.runtime
        for service, color, spec in colors:
            validate.service(service)
            validate.color(color)
            validate.image(spec.image)
            if self.live_color(service) == color and self.running(service, color):
                raise OperationFailed(f"{service}-{color} is live (the proxy routes to it); "
                                      f"deploy the other color")
        if self.dry_run:
            for service, color, spec in colors:
                old = [c.name for c in self.runtime.containers(service, color)]
                if old:
                    self.say(f"would remove {', '.join(old)}")
                self.say(f"would start {spec.scale} instance(s) {service}-{color} of "
                         f"{spec.image} (port {spec.port}, health {spec.health_path}) and "
                         f"register them")
            return []
        for _service, _color, spec in colors:  # every image present before anything changes
            self.runtime.ensure_image(spec.image, spec.pull)
        begun: list[tuple[str, str]] = []
        try:
            for service, color, spec in colors:
                begun.append((service, color))
                self._forget(service, color, spec.image)
            started = self._start_all(colors)
            interrupts.hold("deploy:started")
            started = self.runtime.wait_healthy(started, self.health_timeout)
            for service, color in begun:
                self.register_healthy(service, color, [c for c in started if
                                                       (c.service, c.color) == (service, color)])
        except BaseException:
            for service, color in begun:
                self.say(f"deploy of {service}-{color} failed: removing its containers")
                self.discard(service, color)
            raise
        return started

    def create(self, service: str, color: str, spec: DeploySpec) -> list[Container]:
        """Create ``spec.scale`` instances of ``spec.image`` as ``color``, not started:
        ``bring_up`` starts them (a worker's next color, swapped in at promotion)."""
        assert self.runtime
        validate.service(service)
        validate.color(color)
        image = validate.image(spec.image)
        if self.running(service, color):
            raise OperationFailed(f"{service}-{color} runs; it is not replaced by a color "
                                  f"that waits to be started")
        if self.dry_run:
            self.say(f"would create {spec.scale} instance(s) {service}-{color} of {image}, "
                     f"started when swapped in")
            return []
        self.runtime.ensure_image(image, spec.pull)
        self._forget(service, color, image)
        return self.runtime.create(service, color, spec)

    def _forget(self, service: str, color: str, image: str) -> None:
        """Before a color is replaced: the color recorded as holding ``image`` unverified, its
        old instances deregistered."""
        self.set_release(service, color, image, verified=False)
        self.deregister(service, color)

    def discard(self, service: str, color: str) -> None:
        """Deregister and remove a failed color; each step runs even if another fails."""
        assert self.runtime
        for step in (self.deregister, self.runtime.remove):
            try:
                step(service, color)
            except Exception as exc:
                self.say(f"cleanup of {service}-{color}: {exc}")

    def set_release(self, service: str, color: str, image: str | None, verified: bool,
                    rebuilt: bool = False) -> None:
        """What a color holds and whether it passed a deployment (``rollback`` needs it);
        ``rebuilt``: from its containers, after the registry lost the record."""
        record = {"image": image, "verified": verified, "at": time.time()}
        if self.dry_run:
            self.say(f"would record {service}-{color} as {image}, "
                     f"{'verified' if verified else 'unverified'}")
            return
        self.registry.put_json(service, f"release-{color}", record | ({"rebuilt": True}
                                                                      if rebuilt else {}))

    def verify_release(self, service: str, color: str) -> None:
        release = self.registry.get_json(service, f"release-{color}") or {}
        if not release.get("verified"):
            self.set_release(service, color, release.get("image"), verified=True)

    def register(self, containers: list[Container], passing: bool = False) -> list[Instance]:
        """Register the containers that publish a port (one without has already exited)."""
        insts = [Instance(id=c.name, service=c.service, color=c.color, address=c.address,
                          port=c.port, check_url=c.health_url) for c in containers if c.port]
        for inst in insts:
            self.registry.register(inst, interval=self.check_interval, passing=passing)
        return insts

    def register_healthy(self, service: str, color: str, containers: list[Container]
                         ) -> list[Instance]:
        """Register containers bluegreen has just seen answer their health path: passing from
        the start, and the registry goes on checking them. Registered once, after that probe:
        Consul keeps the status a check already had when it is registered again, so an early
        registration would wait for Consul's first check (a random part of its interval)."""
        self.register(containers, passing=True)
        return self.wait_passing(service, color, containers)

    def deregister(self, service: str, color: str) -> list[str]:
        ids = [i.id for i in self.registry.instances(service, color)]
        for instance_id in ids:
            self.registry.deregister(instance_id)
        return ids

    def wait_passing(self, service: str, color: str, containers: list[Container]
                     ) -> list[Instance]:
        """Wait until the registry passes every container; one it forgot (a registry that
        restarted empty) is registered again."""
        deadline = time.monotonic() + self.health_timeout
        count = len([c for c in containers if c.container_port])  # a worker may have no port
        while True:
            found = self.registry.instances(service, color)
            passing = [i for i in found if i.status == "passing"]
            if len(passing) >= count:
                return passing
            known = {i.id for i in found}
            self.register([c for c in containers if c.name not in known])
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
            if len(passing) >= len([c for c in containers if c.container_port]):
                return passing
        if self.dry_run:
            self.say(f"would start {', '.join(c.name for c in containers)}")
            return []
        self.deregister(service, color)
        started = self.runtime.restart(service, color)
        started = self.runtime.wait_healthy(started, self.health_timeout)
        return self.register_healthy(service, color, started)

    def refresh(self, service: str, color: str, wait: bool = True,
                listed: list[Container] | None = None) -> list[str]:
        """Make the color's registered instances its running containers: one registered whose
        container no longer runs (its node down, its task rescheduled) is deregistered; one
        running but not registered (a task rescheduled elsewhere) is registered, passing once
        it answers (``wait``: after waiting for the color to be healthy again, as far as the
        runtime can tell). ``listed``: the color's containers, when the caller just listed
        them. Returns what was done (would be done, on a dry run)."""
        if self.runtime is None:
            return []
        if listed is None:
            listed = self.runtime.containers(service, color)
        if not listed:
            return []  # the runtime runs nothing of this color: its registry checks decide
        running = {c.name: c for c in listed if c.running and c.port}
        registered = {i.id for i in self.registry.instances(service, color)}
        stale = sorted(registered - running.keys())
        missing = [c for name, c in sorted(running.items()) if name not in registered]
        actions = []
        if stale:
            actions.append(f"deregistered {len(stale)} {service}-{color} instance(s) whose "
                           f"container no longer runs: {', '.join(stale)}")
        if self.dry_run or not (stale or missing):
            return actions + ([f"registered {len(missing)} running {service}-{color} "
                               f"instance(s)"] if missing else [])
        for instance_id in stale:
            self.registry.deregister(instance_id)
        healthy: list[Container] = []
        if wait and running:
            try:  # a rescheduled task is followed to its replacement (swarm)
                healthy = self.runtime.wait_healthy(list(running.values()), self.health_timeout)
            except OperationFailed as exc:
                self.say(f"{service}-{color}: {exc}")
        healthy_names = {c.name for c in healthy}
        missing += [c for c in healthy if c.name not in registered and c.name not in running]
        passing = [c for c in missing if c.name in healthy_names or _answers(c.health_url)]
        self.register(passing, passing=True)
        self.register([c for c in missing if c not in passing])
        if missing:
            actions.append(f"registered {len(missing)} running {service}-{color} instance(s)")
        return actions

    # -- proxy -----------------------------------------------------------------------

    def switch(self, service: str, color: str, weight: int = 100,
               ready: list[Instance] | None = None) -> bool:
        """Route the service to ``color`` (``weight`` percent of it); record it at 100.
        ``ready``: the color's instances as :meth:`ready` has just found them."""
        return self.route([Move(service, color, weight)],
                          ready={(service, color): ready} if ready else None)

    def route(self, moves: list[Move], unrouted: tuple[str, ...] = (),
              planned: Mapping[tuple[str, str], DeploySpec] | None = None,
              ready: Mapping[tuple[str, str], list[Instance]] | None = None) -> bool:
        """Apply every move, and remove the ``unrouted`` services, in ONE proxy change, all or
        nothing; record the color of each service moved to 100 (none for those removed).
        False when the proxy already routed so (or nothing was asked). ``planned``: on a dry
        run, the colors (service, color) that would be deployed first, shown by their
        containers' names and port. ``ready``: colors (service, color) whose instances
        :meth:`ready` has just found, routed to without reading them again."""
        assert self.proxy
        if not moves and not unrouted:
            return False
        ready = ready or {}
        if not self.dry_run:  # route to what runs now, not to what was registered earlier
            for m in moves:
                for c in {m.color, model.other_color(m.color)} if m.weight < 100 or m.chains \
                        else {m.color}:
                    for line in () if (m.service, c) in ready else self.refresh(m.service, c):
                        self.say(f"{m.service}: {line}")
        routes = [self._route(move, planned or {}, ready.get((move.service, move.color)))
                  for move in moves]
        routes += [Route(validate.service(s), None) for s in unrouted]
        self._refuse_clashes(routes)
        records: list[tuple[str, str | None]] = [
            (m.service, m.color) for m in moves
            if m.weight == 100 and self._recorded(m.service) != m.color]
        records += [(s, None) for s in unrouted]
        if self.dry_run:
            diff = self.proxy.diff(routes)
            self.say(diff.rstrip("\n") if diff else "proxy unchanged")
            for service, color in records:
                self.say(f"would record {service} color {color}")
            return bool(diff)
        interrupts.hold("switch:before")
        with interrupts.shielded():  # the proxy and the records change together
            try:
                changed = self.proxy.apply(routes)
            except BaseException:
                self._note_behind()  # a proxy that could not be put back (--partial)
                raise
            self.proxy_changes += 1
            self._note_behind()
            interrupts.hold("switch:proxy-applied")
            for service, color in records:
                self.registry.set_color(service, color)
        return changed

    def repair(self, service: str, recorded: str | None) -> list[str]:
        """Proxies that disagree routed alike on the winner (``FanoutProxy.repair``: the
        record's healthy color, else the majority's); like a change, the route a proxy set
        aside (``--partial``) missed is recorded as behind. What was done."""
        assert self.proxy
        interrupts.hold("repair:before")
        with interrupts.shielded():  # the proxies and the record of those behind together
            done = self.proxy.repair(service, lambda s: self.healthy(service, s.color), recorded)
            self._note_behind()
        return done

    def _note_behind(self) -> None:
        """The routes the proxies set aside missed, to ``on_behind`` (when watched)."""
        missed = self.proxy.missed() if self.proxy and self.on_behind else None
        if missed:
            self.on_behind(missed)  # type: ignore[misc]

    def figures(self, services: list[str] | tuple[str, ...]) -> dict[str, dict[str, model.Counts]]:
        """Service -> color -> what the proxy counted (cumulative, since its epoch)."""
        if not self.proxy:
            raise UsageError("live figures need a proxy")
        return self.proxy.figures([validate.service(s) for s in services])

    def bring_in_line(self, name: str, routes: list[Route]) -> bool | None:
        """Apply ``routes`` to the proxy ``name`` alone (one left behind), checked like every
        change; None when it is still unreachable (``--partial``)."""
        assert self.proxy
        with interrupts.shielded():
            return self.proxy.bring_in_line(name, routes)

    def _refuse_clashes(self, routes: list[Route]) -> None:
        """A public location or an internal endpoint belongs to one service: a change that
        would give one to a second service is refused (exit 2) before anything is written
        (nginx would refuse a duplicate location, and serve only one of two server names).
        Only a route that exposes something its service does not yet have is looked at."""
        assert self.proxy
        wanted: dict[str, set[str]] = {}
        for r in routes:
            if r.removed:
                continue
            own = self.proxy.exposed(r.service)
            location = r.location
            if location is None:
                location = next((k[6:] for k in own if k.startswith("route:")),
                                self.proxy.location)
            keys = {f"route:{location}"} if location else set()
            keys |= {f"endpoint:{r.endpoint}"} if r.endpoint else set()
            if keys - own:
                wanted[r.service] = keys
        if not wanted:
            return
        changed = {r.service for r in routes}
        owners = {k: s for k, s in self.proxy.exposures().items() if s not in changed}
        problems = []
        for service, keys in wanted.items():
            for key in sorted(keys):
                owner = owners.setdefault(key, service)
                if owner != service:
                    kind, _, value = key.partition(":")
                    problems.append(f"{service}: {kind} {value} belongs to {owner}")
        if problems:
            raise UsageError("; ".join(problems) + " (one service per public location and "
                             "per internal endpoint on a proxy); nothing changed")

    def _route(self, move: Move, planned: Mapping[tuple[str, str], DeploySpec],
               ready: list[Instance] | None = None) -> Route:
        service, color = validate.service(move.service), validate.color(move.color)
        weight = validate.weight(move.weight)
        new = ready or (self._passing(service, color, planned, "") if weight > 0 else
                        self._instances(service, color, planned))
        old: list[Instance] = []
        if weight < 100:
            old = self._passing(service, model.other_color(color), planned,
                                f" to keep {100 - weight}% on")
        chains = tuple(replace(c, servers=tuple(
            Server(i.address, i.port, color=c.color)  # counted as its color (gates)
            for i in self._passing(service, c.color, planned, "")))
            for c in move.chains)
        return weighted_route(service, color, new, old, weight, location=move.location,
                              endpoint=move.endpoint, chains=chains, sticky=move.sticky)

    def _instances(self, service: str, color: str,
                   planned: Mapping[tuple[str, str], DeploySpec]) -> list[Instance]:
        """The color's passing instances; on a dry run, a planned color's would-be containers,
        or a stopped color's containers (the command would start them first), by name."""
        spec = planned.get((service, color)) if self.dry_run else None
        if spec:
            return [Instance(name, service, color, name, spec.port)
                    for name in model.container_names(service, color, spec.scale)]
        found = self.registry.instances(service, color, passing=True)
        if not found and self.dry_run and self.runtime:
            found = [Instance(c.name, service, color, c.name, c.container_port)
                     for c in self.runtime.containers(service, color)]
        return found

    def _passing(self, service: str, color: str, planned: Mapping[tuple[str, str], DeploySpec],
                 why: str) -> list[Instance]:
        found = self._instances(service, color, planned)
        if not found:
            raise OperationFailed(f"no passing instance of {service}-{color}{why}; proxy left as "
                                  f"it is")
        return found

    def record_color(self, service: str, color: str) -> None:
        """The color record set to ``color`` unless it says so already (a registry that
        restarted empty after the switch lost it)."""
        if self._recorded(service) != color and not self.dry_run:
            self.registry.set_color(service, color)

    def _recorded(self, service: str) -> str | None:
        """The recorded color, an unreadable record counting as none (it is overwritten)."""
        try:
            return self.registry.get_color(service)
        except InvalidRecord:
            return None

    def unroute(self, service: str) -> bool:
        """Remove the service from the proxy (no color serves) and its color record."""
        return self.route([], unrouted=(service,))

    # -- stop ------------------------------------------------------------------------

    def stop(self, service: str, color: str, force: bool = False, drain: bool = True
             ) -> list[str]:
        """Deregister and stop a color's containers (kept for rollback). ``drain``: first let
        the proxy finish requests sent to it (not needed for a color never routed to)."""
        validate.service(service)
        validate.color(color)
        if not force and self.proxy and self.proxy.serving(service).color == color:
            raise OperationFailed(f"{service}-{color} is live (the proxy routes to it); "
                                  f"switch first, or use --force")
        if not force and self.proxy and (held := self.proxy.held_back()):
            raise OperationFailed(f"{service}-{color}: proxy {', '.join(sorted(held))} is behind "
                                  f"(--partial) and may still route it when it answers again; "
                                  f"bring it in line first (bluegreen recover {service}), or "
                                  f"use --force")
        return self.stop_many([(service, color)], drain)

    def _start_all(self, colors: list[tuple[str, str, DeploySpec]]) -> list[Container]:
        """Each color's containers started, several colors at the same time (the engine
        creates and starts them in parallel); the first failure is raised after all ended."""
        assert self.runtime
        if len(colors) < 2:
            return [c for sc in colors for c in self.runtime.start(*sc)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(len(colors), 8)) as pool:
            futures = [pool.submit(self.runtime.start, *sc) for sc in colors]
        errors = [f.exception() for f in futures if f.exception()]
        if errors:
            raise errors[0]  # type: ignore[misc]
        return [c for f in futures for c in f.result()]

    def stop_many(self, colors: list[tuple[str, str]], drain: bool = True) -> list[str]:
        """Stop several colors together: each deregistered, the proxy drained once, then
        their containers stopped at the same time (kept for rollback). Every color is tried;
        the first failure is raised after."""
        assert self.runtime
        running = {sc: [c.name for c in self.runtime.containers(*sc) if c.running]
                   for sc in colors}
        if self.dry_run:
            for names in running.values():
                self.say(f"would deregister and stop {', '.join(names) or 'nothing'}")
            return [n for names in running.values() for n in names]
        for service, color in colors:
            self.deregister(service, color)
        if drain and self.proxy and any(running.values()) and \
                not self.proxy.drain(self.drain_timeout):
            self.say(f"nginx still finishing old requests after {self.drain_timeout:g}s; stopping")
        todo = [sc for sc in colors if running[sc]]
        if len(todo) < 2:
            return [n for sc in todo for n in self.runtime.stop(*sc, self.stop_timeout)]
        from concurrent.futures import ThreadPoolExecutor  # several: a stop waits for its exit

        with ThreadPoolExecutor(min(len(todo), 8)) as pool:
            futures = [pool.submit(self.runtime.stop, *sc, self.stop_timeout) for sc in todo]
        errors = [f.exception() for f in futures if f.exception()]
        if errors:
            raise errors[0]  # type: ignore[misc]
        return [n for f in futures for n in f.result()]

    # -- reading ---------------------------------------------------------------------

    def recorded_color(self, service: str) -> str | None:
        return self.registry.get_color(service)

    def serving_color(self, service: str) -> str | None:
        return self.proxy.serving(service).color if self.proxy else None

    def proxy_chains(self, service: str) -> dict[str, str]:
        """Side -> color of the chains the proxy keeps the callers of ``service`` on."""
        return {c.side: c.color for c in self.proxy.current(service).chains} if self.proxy else {}

    def ready(self, service: str, color: str) -> list[Instance] | None:
        """The color's instances when each of its containers runs, is registered and passes
        (routing to it needs no :meth:`refresh` first); else None."""
        registered = self.registry.instances(service, color)
        if not registered or any(i.status != "passing" for i in registered):
            return None
        if self.runtime is not None:
            running = {c.name for c in self.runtime.containers(service, color)
                       if c.running and c.port}
            if running != {i.id for i in registered}:
                return None
        return registered

    def healthy(self, service: str, color: str | None) -> bool:
        """Every registered instance of the color passes its check (so it runs and answers).
        Instances are deregistered before they are stopped."""
        if not color:
            return False
        registered = self.registry.instances(service, color)
        return bool(registered) and all(i.status == "passing" for i in registered)

    def running(self, service: str, color: str) -> bool:
        return self.runtime is not None and any(c.running for c in
                                                self.runtime.containers(service, color))

    def addresses(self, service: str, color: str) -> list[str]:
        """The private addresses of the color's running instances (as callers of others)."""
        if self.runtime is None:
            return []
        return [c.private_address for c in self.runtime.containers(service, color)
                if c.running and c.private_address]

    def images(self, service: str, color: str) -> set[str]:
        """The images the color's instances hold (running or not)."""
        return {c.image for c in self.runtime.containers(service, color)} if self.runtime else set()

    def has_instances(self, service: str, color: str) -> bool:
        """The color has instances to start (no runtime to ask: assume so)."""
        return self.runtime is None or bool(self.runtime.containers(service, color))

    def test_domain(self, service: str, color: str) -> str:
        """``http://host:port`` of a passing instance, for tests of the color itself."""
        passing = self.registry.instances(service, color, passing=True)
        if not passing:
            raise OperationFailed(f"no passing instance of {service}-{color} to test")
        return f"http://{passing[0].hostport}"

    # -- status ----------------------------------------------------------------------

    def status(self, service: str) -> dict[str, Any]:
        """What each part says, and the problems; a part that cannot be reached is one line in
        ``unreachable`` and the others are still reported."""
        validate.service(service)
        report: dict[str, Any] = {"service": service, "recorded_color": None, "colors": {},
                                  "problems": [], "unreachable": []}
        problems = report["problems"]

        def part(fn: Callable[[], Any], default: Any) -> Any:
            try:
                return fn()
            except Unreachable as exc:
                if str(exc) not in report["unreachable"]:
                    report["unreachable"].append(str(exc))
            except InvalidRecord as exc:
                problems.append(str(exc))
            return default

        recorded = part(lambda: self.registry.get_color(service), None)
        report["recorded_color"] = recorded
        serving = part(lambda: self.proxy.serving(service), None) if self.proxy else None
        if self.proxy:
            part(self.proxy.ping, None)
            problems += part(lambda: self.proxy.disagreements(service), [])
        if serving:
            report["proxy"] = {"color": serving.color, "weight": serving.weight,
                               "servers": list(serving.servers)}
        for color in model.COLORS:
            containers = part(lambda c=color: self.runtime.containers(service, c), []) \
                if self.runtime else []
            insts = part(lambda c=color: self.registry.instances(service, c), [])
            foreign = part(lambda c=color: self.registry.instances(service, c, foreign=True), [])
            for f in foreign:
                problems.append(f"{f.id} ({f.hostport}) is registered as {service}-{color} but "
                                f"not by bluegreen: never routed to")
            report["colors"][color] = {
                "containers": [{"name": c.name, "state": c.state, "image": c.image,
                                "port": c.port} for c in containers],
                "instances": [{"id": i.id, "address": i.hostport, "status": i.status}
                              for i in insts],
            }
            part(lambda c=color: self.registry.get_json(service, f"release-{c}"), None)
        part(lambda: self.registry.get_json(service, "history"), None)
        if serving is not None and not report["unreachable"]:
            if (serving.color or recorded) and serving.color != recorded:
                problems.append(f"recorded color {recorded} but the proxy routes to "
                                f"{serving.color}")
            if serving.color:
                live = report["colors"][serving.color]
                if not any(c["state"] == "running" for c in live["containers"]) and self.runtime:
                    problems.append(f"the proxy routes to {serving.color} but none of its "
                                    f"containers runs")
            # anything routed that is not a passing instance of ours (at any weight, with or
            # without a recorded color): a hijacked or stale route
            passing = {i["address"] for info in report["colors"].values()
                       for i in info["instances"] if i["status"] == "passing"}
            if set(serving.servers) - passing:
                problems.append(f"the proxy routes to {', '.join(sorted(set(serving.servers) - passing))}"
                                f" which is not a passing instance of {service}")
        inflight = part(lambda: self.registry.get_json(service, "inflight"), None)
        if inflight:
            report["inflight"] = inflight
            state = "paused" if inflight.get("paused_after") else "in progress or was interrupted"
            problems.append(f"a run ({inflight.get('from')} -> {inflight.get('to')}, phase "
                            f"{inflight.get('phase')}) is {state}; the next run, rollback or "
                            f"recover deals with it")
        return report


def _answers(url: str) -> bool:
    """The health path answers below 400 (bluegreen's own probe)."""
    from bluegreen import wire

    try:
        return wire.get(url, timeout=2)[0] < 400
    except OSError:
        return False
