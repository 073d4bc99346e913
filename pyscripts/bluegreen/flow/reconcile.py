"""Reality before records: a service's records rebuilt from what runs and what the proxy
routes, when the registry lost them (a Consul restarted empty) or they contradict it (a record
someone broke). Records that cannot be rebuilt are set aside, never lost."""

from __future__ import annotations

import time

from bluegreen import model
from bluegreen.errors import InvalidRecord
from bluegreen.flow.records import Records
from bluegreen.flow.steps import Steps
from bluegreen.model import Container
from bluegreen.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def scale_down_colors(record: Any) -> dict[str, str]:
    """Service -> old color of a scale-down record (``{"colors": ...}``, or the older
    ``{"color": ...}`` of a service's own record, keyed ``""``)."""
    if not record:
        return {}
    if "colors" in record:
        return dict(record["colors"])
    return {"": record["color"]}


class Reality(Record):
    """Rebuilds and reads a service's records against the runtime and the proxy."""

    steps: Steps
    records: Records

    @property
    def say(self) -> Any:
        return self.steps.say

    def due_scale_down(self, target: str) -> dict[str, Any] | None:
        """The target's scale-down record (old colors to stop) once its time has come."""
        pending = self.records.get(target, "scale-down")
        return pending if pending and pending["not_before"] <= time.time() else None

    def settled(self, service: str) -> str | None:
        """The live color when nothing waits for :meth:`reconcile` or a release's recovery
        (no release in flight, no scale-down due, readable records, the recorded color the one
        every proxy routes to); else None."""
        registry, proxy = self.steps.registry, self.steps.proxy
        try:
            if registry.get_json(service, "inflight") or self.due_scale_down(service):
                return None
            recorded = registry.get_color(service)
        except InvalidRecord:
            return None
        if not recorded or not proxy or proxy.disagreements(service):
            return None
        return recorded if proxy.serving(service).color == recorded else None

    def reconcile(self, service: str, in_release: bool = False) -> list[str]:
        """Rebuild registry state that was lost or contradicts what runs and what the proxy
        routes to. ``in_release``: a release of the service is unfinished (its new color is
        not verified). Returns what was done; changes nothing on a dry run."""
        steps, reg, actions = self.steps, self.steps.registry, []
        dry = steps.dry_run
        split = False  # the proxies still disagree: none of them speaks for the record
        if steps.proxy:
            agreed, split = self._agree(service)
            actions += agreed
        serving = steps.proxy.serving(service) if steps.proxy else None
        if serving is not None and not serving.servers and not in_release:
            routed = self._route_again(service)
            if routed:
                actions += routed
                serving = steps.proxy.serving(service) if steps.proxy else None
        every = steps.runtime.containers(service) if steps.runtime else []
        listed = {c: [x for x in every if x.color == c] for c in model.COLORS} \
            if steps.runtime else {}
        running = {color: [c for c in found if c.running and c.port]
                   for color, found in listed.items()}
        for color, found in listed.items():
            actions += steps.refresh(service, color, wait=False, listed=found)
        live = serving.color if serving else None
        try:
            inflight = reg.get_json(service, "inflight")
        except InvalidRecord:
            inflight = None
            actions.append(self.records.set_aside(service, "inflight"))
        inflight = inflight or in_release
        try:
            recorded = reg.get_color(service)
        except InvalidRecord as exc:
            recorded = None
            actions.append(f"{exc.key} was invalid")
            if not dry:
                reg.set_color(service, None)
        if live and recorded != live and not inflight and not split \
                and _any_running(running, live):
            actions.append(f"color record {recorded or '(none)'} set to {live}, which the proxy "
                           f"routes to")
            if not dry:
                reg.set_color(service, live)
        for color in model.COLORS:
            actions += self._rebuild_release(service, color, live, inflight, listed.get(color, []))
        for name in ("history", "scale-down"):
            try:
                reg.get_json(service, name)
            except InvalidRecord:
                actions.append(self.records.set_aside(service, name))
        if actions:
            self.say(f"{service}: the registry had lost or contradicted its state; rebuilt from "
                     f"the proxy and the containers: {'; '.join(actions)}")
        return actions

    def _route_again(self, service: str) -> list[str]:
        """The proxy serves nothing for the service (an nginx restarted without its routes)
        while its recorded color is healthy and no run is in flight: route it there again."""
        steps, reg = self.steps, self.steps.registry
        if not steps.proxy or not steps.proxy.exposed(service):
            return []  # not routed at all (a worker, a service removed): nothing to route again
        try:
            recorded = reg.get_color(service)
            inflight = reg.get_json(service, "inflight")
        except InvalidRecord:
            return []
        if not recorded or inflight or not steps.healthy(service, recorded):
            return []
        if steps.dry_run:
            return [f"would route {service} to {recorded} again (the proxy served nothing)"]
        steps.switch(service, recorded)
        return [f"the proxy served nothing for {service}: routed to {recorded} again"]

    def _agree(self, service: str) -> tuple[list[str], bool]:
        """Proxies that disagree routed alike on the winner (``FanoutProxy.winner``: the
        record's healthy color, else the majority's); what was done, and whether they
        still disagree (then the color record is not rewritten from the first proxy)."""
        steps = self.steps
        assert steps.proxy
        found = steps.proxy.disagreements(service)
        if not found or steps.dry_run:
            return [f"would repair: {line}" for line in found], bool(found)
        try:
            recorded = steps.registry.get_color(service)
        except InvalidRecord:
            recorded = None
        done = steps.repair(service, recorded)
        return done, bool(steps.proxy.disagreements(service))

    def _rebuild_release(self, service: str, color: str, live: str | None,
                         inflight: Any, listed: list[Container]) -> list[str]:
        """A color's release record, from its containers when missing or invalid. Only the
        color the proxy routes to, with no release in flight, counts as verified."""
        name = f"release-{color}"
        try:
            if self.steps.registry.get_json(service, name) is not None:
                return []
            problem = "missing"
        except InvalidRecord:
            problem = "invalid"
        images = {c.image for c in listed}
        if len(images) != 1:
            return [self.records.set_aside(service, name)] if problem == "invalid" else []
        image = images.pop()
        verified = color == live and not inflight
        if not self.steps.dry_run:
            if problem == "invalid":
                self.steps.registry.set_aside(service, name)
            self.steps.set_release(service, color, image, verified=verified, rebuilt=True)
        return [f"{name} ({problem}) rebuilt: {image}, {'verified' if verified else 'unverified'}"]


def _any_running(running: dict[str, list[Container]], color: str) -> bool:
    return bool(running.get(color)) or not running  # no runtime: trust the proxy
