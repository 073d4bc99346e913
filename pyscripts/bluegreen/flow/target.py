"""What a release moves: a *target* (one service, or the services of an application) made of
*units* (each service the release deploys, keeps or removes).

The orchestrator (``bluegreen.flow.release``) runs every release the same way whatever its
target; a target says where its records live, what each unit's new color runs and is tested
with, what its history entry holds, and what it records at promotion. ``ServiceTarget`` is the
book's single service (``bluegreen run``); ``bluegreen.app.target.AppTarget`` is an
application (``bluegreen app deploy``).
"""

from __future__ import annotations

import contextlib

from bluegreen import model
from bluegreen.errors import OperationFailed
from bluegreen.model import DeploySpec
from bluegreen.record import Record, factory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bluegreen.flow.checks import TestSpec
    from bluegreen.flow.reconcile import Reality
    from bluegreen.flow.records import Records

    Release = Any  # bluegreen.flow.release.Release (which imports this module)


class Unit(Record, frozen=True):
    """One service of a release. ``before``: its color live before the release (None: new);
    ``color``: the color live after it (None: the release removes it). A unit *moves* when
    the two differ and it is not removed."""

    name: str  # its name in the target (an application's service; the service itself)
    service: str  # its name in the registry, the proxy and Docker
    kind: str = "routed"  # routed (blue-green, weights) | worker (swapped at promotion)
    before: str | None = None
    color: str | None = None
    location: str | None = None  # public location: None the proxy's default, "" none
    endpoint: str | None = None  # internal endpoint name (servicea.local)
    image: str | None = None
    tests: dict[str, Any] = factory(dict)  # HTTP tests kept with the release (applications)

    @property
    def moving(self) -> bool:
        return self.color is not None and self.color != self.before

    @property
    def removed(self) -> bool:
        return self.color is None

    @property
    def routed(self) -> bool:
        return self.kind == "routed"

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "kind": self.kind, "from": self.before,
                "to": self.color, "location": self.location, "endpoint": self.endpoint,
                "image": self.image, "tests": self.tests}

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> Unit:
        return cls(name, data["service"], data.get("kind") or "routed", data.get("from"),
                   data.get("to"), data.get("location"), data.get("endpoint"),
                   data.get("image"), data.get("tests") or {})


class RollbackPlan(Record):
    """What a rollback does: ``units`` from their color now (``before``) to the one they go
    back to (``color``); ``dropped``: services the live release added, out of the proxy;
    ``ready``: units whose color runs, registered and passing (their instances)."""

    units: list[Unit]
    what: str
    summary: dict[str, Any]
    dropped: list[Unit] = factory(list)
    ready: dict[str, Any] = factory(dict)
    data: dict[str, Any] = factory(dict)  # the target's own (records to swap)


class Target:
    """The part of a release that depends on what is released. ``name``: where its lock and
    records live; ``inflight_key``: the name of its unfinished-release record."""

    name: str
    inflight_key: str = "inflight"
    label: str  # how messages name it
    noun: str = "release"  # what one release is called in messages
    family: bool = False  # its services' records share its name's stem (<app>.*): one read
    override: dict[str, TestSpec]  # where -> the outcome of tests run elsewhere

    def decide(self, where: str, passed: bool) -> None:
        """The next test phase's result comes from elsewhere (a Jenkins closure)."""
        from bluegreen.flow.checks import TestSpec

        self.override = {where: TestSpec.decided(passed)}

    def deploy_spec(self, unit: Unit) -> DeploySpec:
        """What a moving unit's new color runs (only the first command of a release deploys)."""
        raise NotImplementedError

    def tests(self, unit: Unit, where: str) -> TestSpec:
        """A unit's tests: ``pre`` on its new color directly, ``proxy`` through the proxy."""
        raise NotImplementedError

    def fields(self, inflight: dict[str, Any]) -> dict[str, Any]:
        """The fields of the release record and summary that are the target's own."""
        return {}

    def live_units(self, records: Records) -> list[Unit]:
        """The units of what is live (each on its live color)."""
        return []

    def rollback_plan(self, release: Release, snapshot: contextlib.ExitStack) -> RollbackPlan:
        """What a rollback does, read under the lock (``snapshot``: the records read once;
        closed by the plan when what follows must read them anew)."""
        raise NotImplementedError

    def rolled_back(self, records: Records, plan: RollbackPlan, result: str) -> None:
        """Record a rollback's result (the target's own records)."""

    def rollback_entry(self, plan: RollbackPlan) -> dict[str, Any]:
        raise NotImplementedError

    def promoted(self, records: Records, inflight: dict[str, Any]) -> None:
        """Record the release as live (after its units' colors were recorded)."""

    def entry(self, inflight: dict[str, Any], result: str) -> dict[str, Any]:
        """The history entry of a release that ended with ``result``."""
        raise NotImplementedError

    def rebuild(self, reality: Reality, records: Records) -> list[str]:
        """Rebuild the target's own records from what runs and what the proxy routes (they
        were lost, or contradict it); what was done. Each unit's records are rebuilt by
        ``Reality.reconcile`` before."""
        return []

    def services(self, records: Records) -> list[str]:
        """The services whose records recovery checks (beyond those of a release in flight)."""
        return []

    def paused_hint(self) -> str:
        raise NotImplementedError

    def recover_hint(self) -> str:
        """The command that settles an unfinished release."""
        raise NotImplementedError


class ServiceTarget(Target):
    """The book's single service: its records stay where the book and ``blueGreenDeploy``
    read them (``<service>/color``, ``<service>/inflight``, ``<service>/history``)."""

    noun = "run"

    def __init__(self, service: str, spec: DeploySpec | None = None,
                 pre: TestSpec | None = None, post: TestSpec | None = None) -> None:
        self.name = self.label = service
        self.spec, self.pre, self.post = spec, pre, post
        self.override = {}

    def unit(self, before: str | None, image: str | None) -> Unit:
        """The one unit of a run from ``before`` to the next color."""
        return Unit(self.name, self.name, "routed", before, model.next_color(before),
                    image=image)

    def deploy_spec(self, unit: Unit) -> DeploySpec:
        assert self.spec is not None
        return self.spec

    def tests(self, unit: Unit, where: str) -> TestSpec:
        from bluegreen.flow.checks import TestSpec

        spec = self.override.get(where) or (self.pre if where == "pre" else self.post)
        return spec or TestSpec()

    def fields(self, inflight: dict[str, Any]) -> dict[str, Any]:
        unit = inflight["units"][self.name]
        return {"service": self.name, "image": unit.get("image"), "from": unit.get("from"),
                "to": unit.get("to")}

    def entry(self, inflight: dict[str, Any], result: str) -> dict[str, Any]:
        unit = inflight["units"][self.name]
        return {"action": "run", "image": unit.get("image"), "from": unit.get("from"),
                "to": unit.get("to"), "result": result}

    def services(self, records: Records) -> list[str]:
        return [self.name]

    def paused_hint(self) -> str:
        return "go on with run --resume, or undo it with recover"

    def recover_hint(self) -> str:
        return f"bluegreen recover {self.name}"

    def rollback_plan(self, release: Release, snapshot: contextlib.ExitStack) -> RollbackPlan:
        """The other color. Switched first (before recovery) when the service is settled and
        the other color ready; else recovery runs first, and a stopped color is started."""
        steps, service = release.steps, self.name
        current = release.reality.settled(service)
        ready = steps.ready(service, model.other_color(current)) if current else None
        if not ready:
            release.recover(undo_paused=False)
            current = steps.live_color(service)
        record = release.records.get(service, f"release-{model.next_color(current)}") or {}
        if not ready:
            snapshot.close()  # containers start first: what follows reads the records anew
        if not current:
            raise OperationFailed(f"{service} has no live color to roll back from")
        previous = model.other_color(current)
        proxy_only = bool(ready) or steps.healthy(service, previous)
        if not proxy_only and not steps.has_instances(service, previous):
            raise OperationFailed(f"no containers of {service}-{previous} to roll back to")
        if record and not record.get("verified"):
            why = ("its release record was lost and rebuilt from its containers, so it counts "
                   "as unverified" if record.get("rebuilt") else "whose deployment did not pass")
            raise OperationFailed(f"{service}-{previous} holds {record.get('image')}, {why}; "
                                  f"nothing verified to roll back to")
        unit = Unit(service, service, "routed", current, previous)
        return RollbackPlan([unit], f"{service} {current} -> {previous}" +
                            (" (proxy only)" if proxy_only else " (starting it first)"),
                            {"service": service, "from": current, "to": previous,
                             "proxy_only": proxy_only},
                            ready={service: ready} if ready else {})

    def rollback_entry(self, plan: RollbackPlan) -> dict[str, Any]:
        return {"action": "rollback", "from": plan.summary["from"], "to": plan.summary["to"]}
