"""An application as the target of a release: the services of one Compose file, released as
one by the one orchestrator (``bluegreen.flow.release``).

The deploy unit is a container, the release unit is the application. Each changed (or new)
service gets a new color beside its live one; unchanged services keep serving old and new
releases alike; a service the file no longer has serves until the change to 100%. Workers
(services with neither route nor endpoint) are swapped at promotion: not blue-green.

Records (under ``<app>._app/``, beside no service's): ``app-live`` (release N: each service's
color and what it runs), ``app-previous``, ``app-inflight`` (an unfinished release: only the
application's commands change its services), ``history``, ``scale-down``. Every container of
the application carries its application, release and service record (labels), so that these
records are rebuilt from what runs and what the proxy routes when they are lost.
"""

from __future__ import annotations

import contextlib
import json
import time

from bluegreen import model
from bluegreen.app.owner import INFLIGHT, LIVE, PREVIOUS, records_of
from bluegreen.app.spec import AppSpec, ServiceSpec, changed, kind_of, live_conflicts
from bluegreen.errors import InvalidRecord, OperationFailed, UsageError
from bluegreen.flow.target import RollbackPlan, Target, Unit
from bluegreen.model import LABEL_APP, LABEL_RECORD, LABEL_RELEASE, Container, DeploySpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bluegreen.flow import checks
    from bluegreen.flow.reconcile import Reality
    from bluegreen.flow.records import Records

    Release = Any  # bluegreen.flow.release.Release


class AppTarget(Target):
    family = True
    inflight_key = INFLIGHT

    def __init__(self, app: str, spec: AppSpec | None = None,
                 internal_addr: str = "172.17.0.1") -> None:
        self.app, self.spec, self.internal_addr = app, spec, internal_addr
        self.name, self.label = records_of(app), app
        self.release = 0
        self.override = {}

    def qualified(self, name: str) -> str:
        return f"{self.app}.{name}"

    # -- planning ---------------------------------------------------------------------------

    def plan(self, release: Release) -> tuple[list[Unit], dict[str, Any]]:
        """The units of the next release: the file against the live release (read under the
        lock, after recovery); a file no release can reach from it is refused (exit 2)."""
        assert self.spec is not None
        spec, say = self.spec, release.say
        live = release.records.get(self.name, LIVE) or {"release": 0, "services": {}}
        plan = changed(spec, live["services"])
        for p in plan.services:
            say(f"{self.app}: {p.describe()}")
        problems = live_conflicts(spec, live["services"]) + self.clashes(release) + \
            unchainable(spec, plan, release.steps.runtime)
        if problems:
            raise UsageError(f"{self.app}: {'; '.join(problems)}")
        # never the number of a release that was live (one rolled back from, kept to go forward)
        went_live = [h.get("release") or 0 for h in release.records.history(self.name)
                     if h.get("result") == "ok"]
        previous: dict[str, Any] = {}
        with contextlib.suppress(InvalidRecord):
            previous = release.records.get(self.name, PREVIOUS) or {}
        self.release = max(live["release"], int(previous.get("release") or 0), *went_live) + 1
        units = []
        for p in plan.services:
            if p.action == "remove":
                r = live["services"][p.name]
                units.append(Unit(p.name, self.qualified(p.name), kind_of(r), p.live_color, None,
                                  r.get("route") or "", r.get("endpoint"), r.get("image")))
                continue
            s = spec.services[p.name]
            units.append(Unit(p.name, self.qualified(p.name), s.kind, p.live_color, p.color,
                              s.route or "", s.endpoint, s.image, _tests(s)))
        services = {name: _record(s, next(p.color for p in plan.services if p.name == name))
                    for name, s in spec.services.items()}
        return units, {"release": self.release, "services": services,
                       "removing": {n: live["services"][n] for n in plan.removed},
                       "sticky_services": sorted(n for n, s in spec.services.items() if s.sticky)}

    def clashes(self, release: Release) -> list[str]:
        """Public routes and internal endpoints of the file that the proxy gives to a service
        of another application (or to a single service): each belongs to one service."""
        assert self.spec is not None
        proxy = release.steps.proxy
        if proxy is None:
            return []
        owners = proxy.exposures()
        found = []
        for s in self.spec.services.values():
            for kind, value in (("route", s.route), ("endpoint", s.endpoint)):
                owner = owners.get(f"{kind}:{value}") if value else None
                if owner and not owner.startswith(f"{self.app}."):
                    found.append(f"{s.name}: {kind} {value} belongs to {owner} on the proxy")
        return found

    def deploy_spec(self, unit: Unit) -> DeploySpec:
        """What a service's new color runs; every internal endpoint resolves to the proxy; the
        containers carry the application, the release and the service's record."""
        assert self.spec is not None
        s = self.spec.services[unit.name]
        hosts = tuple((o.endpoint, self.internal_addr) for o in self.spec.services.values()
                      if o.endpoint)
        record = _record(s, None) | {"name": s.name, "services": sorted(self.spec.services)}
        record.pop("color")
        labels = ((LABEL_APP, self.app), (LABEL_RELEASE, str(self.release)),
                  (LABEL_RECORD, json.dumps(record, sort_keys=True)))
        return DeploySpec(s.image, port=s.port or 0, env=s.environment, scale=s.scale,
                          health_path=s.health_path, hosts=hosts, labels=labels)

    def tests(self, unit: Unit, where: str) -> checks.TestSpec:
        from bluegreen.flow import checks

        if where in self.override:
            return self.override[where] if unit.tests.get("paths") else checks.TestSpec()
        t = unit.tests
        if not t.get("paths") or (where == "proxy" and not unit.location) or \
                (where == "pre" and not unit.moving):
            return checks.TestSpec()
        return checks.TestSpec.build(http=list(t["paths"]),
                                     expect_status=int(t.get("expect_status") or 200),
                                     body_regex=t.get("expect_body"), retries=3)

    # -- records ---------------------------------------------------------------------------

    def fields(self, inflight: dict[str, Any]) -> dict[str, Any]:
        units = inflight.get("units") or {}
        return {"app": self.app, "release": inflight.get("release"),
                "changed": sorted(n for n, u in units.items() if u["to"] and u["to"] != u["from"]),
                "kept": sorted(n for n, u in units.items() if u["to"] and u["to"] == u["from"]),
                "removed": sorted(n for n, u in units.items() if not u["to"])}

    def promoted(self, records: Records, inflight: dict[str, Any]) -> None:
        live = records.get(self.name, LIVE)
        if live:
            records.put(self.name, PREVIOUS, live)
        records.put(self.name, LIVE, {"release": inflight["release"],
                                      "services": inflight["services"]})

    def entry(self, inflight: dict[str, Any], result: str) -> dict[str, Any]:
        units = inflight.get("units") or {}
        return {"action": "app deploy", "release": inflight["release"], "result": result,
                "changed": {n: f"{u['from'] or '-'} -> {u['to'] or '-'}"
                            for n, u in units.items() if u["to"] != u["from"]},
                "images": {n: r["image"] for n, r in (inflight.get("services") or {}).items()}}

    def services(self, records: Records) -> list[str]:
        try:
            live = records.get(self.name, LIVE) or {}
        except InvalidRecord:
            return []
        return [self.qualified(n) for n in live.get("services") or {}]

    def live_units(self, records: Records) -> list[Unit]:
        live = records.get(self.name, LIVE) or {"services": {}}
        return [Unit(n, self.qualified(n), kind_of(r), r["color"], r["color"],
                     r.get("route") or "", r.get("endpoint"), r.get("image"))
                for n, r in live["services"].items()]

    def paused_hint(self) -> str:
        return f"bluegreen app promote {self.app} | bluegreen app abort {self.app}"

    def recover_hint(self) -> str:
        return f"bluegreen app recover {self.app}"

    # -- reality before records -----------------------------------------------------------

    def rebuild(self, reality: Reality, records: Records) -> list[str]:
        """``app-live`` and ``app-inflight`` from the application's containers (their labels)
        and what the proxy routes, when they are missing, unreadable or contradict them."""
        steps = reality.steps
        if steps.runtime is None:
            return []
        seen = _by_service(steps.runtime.app_containers(self.app))
        if not seen:
            return []
        actions: list[str] = []
        live = self._readable(records, LIVE, actions)
        inflight = self._readable(records, INFLIGHT, actions)
        found = self._reality(steps, seen)
        if live is not None and not any(0 < w < 100 for _, _, w in found["unfinished"].values()):
            # with the live release recorded, a newer color beside a live one at no weight is a
            # release rolled back from (kept to go forward again), not one under way
            found["unfinished"] = {}
        if live is None and found["live"]["services"]:
            live = found["live"]
            actions.append(f"{LIVE} (missing) rebuilt: release {live['release']} {_colors(live)}")
            records.put(self.name, LIVE, live)
        elif live and inflight is None and not found["unfinished"] and \
                _colors(live) != _colors(found["live"]):
            actions.append(f"{LIVE} (said release {live['release']} {_colors(live)}) rebuilt: "
                           f"release {found['live']['release']} {_colors(found['live'])}")
            records.put(self.name, LIVE, found["live"])
        if inflight is None and found["unfinished"]:
            inflight = self._unfinished(found, live or found["live"])
            state = f"paused at {inflight['weight']}%" if inflight["paused_after"] else \
                "interrupted before any traffic moved"
            actions.append(f"{INFLIGHT} rebuilt: release {inflight['release']} {state}")
            records.put(self.name, INFLIGHT, inflight)
        if actions:
            reality.say(f"{self.app}: the registry had lost or contradicted the application's "
                        f"records; rebuilt from its containers and the proxy: {'; '.join(actions)}")
        return actions

    def _readable(self, records: Records, name: str, actions: list[str]) -> Any:
        try:
            return records.get(self.name, name)
        except InvalidRecord:
            actions.append(records.set_aside(self.name, name))
            return None

    def _reality(self, steps: Any, seen: dict[str, dict[str, list[Container]]]
                 ) -> dict[str, Any]:
        """The live release as the proxy routes it and the containers run it, and the
        release under way, if any: a service split between its colors, or the newest release's
        color running beside a service's live one (``unfinished``: name -> (from, to,
        weight))."""
        live_color: dict[str, str] = {}
        split: dict[str, tuple[str | None, str, int]] = {}
        running: dict[str, set[str]] = {}
        for name, colors in seen.items():
            running[name] = {c for c, cs in colors.items() if any(x.running for x in cs)}
            if kind_of(_label(next(c for cs in colors.values() for c in cs))) == "routed":
                serving = steps.proxy.serving(self.qualified(name)) if steps.proxy else None
                if serving and serving.color and serving.weight < 100:
                    live_color[name] = model.other_color(serving.color)
                    split[name] = (live_color[name], serving.color, serving.weight)
                elif serving and serving.color:
                    live_color[name] = serving.color
            elif running[name]:
                live_color[name] = min(running[name], key=lambda c: _release(colors[c]))
        rel = {(n, c): _release(cs) for n, colors in seen.items() for c, cs in colors.items()}
        newest = max((rel[n, c] for n, cs in running.items() for c in cs), default=0)
        unfinished = dict(split)
        for name, colors in running.items():
            for color in colors - {live_color.get(name)}:
                if name not in split and rel[name, color] == newest and (
                        name not in live_color or rel[name, live_color[name]] < newest):
                    unfinished[name] = (live_color.get(name), color, 0)
        if unfinished:  # services already on the newest release belong to it
            for name, color in list(live_color.items()):
                if name not in unfinished and rel[name, color] == newest:
                    older = [c for c in running[name] if rel[name, c] < newest]
                    unfinished[name] = (older[0] if older else None, color, 100)
                    if not older:
                        del live_color[name]
        live = {n: _clean(_label(seen[n][c][0])) | {"color": c} for n, c in live_color.items()}
        number = max((rel[n, c] for n, c in live_color.items()
                      if not unfinished or rel[n, c] < newest), default=0)
        return {"live": {"release": number, "services": live}, "unfinished": unfinished,
                "seen": seen}

    def _unfinished(self, found: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        """The record of a release whose record was lost: paused at the weight the proxy
        shows (promote or abort decides), or, before any traffic moved, interrupted (the next
        command undoes it)."""
        seen, moving = found["seen"], found["unfinished"]
        labels = {n: _label(seen[n][to][0]) for n, (_, to, _) in moving.items()}
        number = max(int(label["release"]) for label in labels.values())
        names = next(label["services"] for label in labels.values()
                     if int(label["release"]) == number)
        weight = max((w for _, _, w in moving.values() if w < 100), default=0)
        services, units = {}, {}
        for n in names:
            if n in moving:
                services[n] = _clean(labels[n]) | {"color": moving[n][1]}
            elif n in live["services"]:
                services[n] = live["services"][n]
            else:
                continue
            r = services[n]
            before = moving[n][0] if n in moving else r["color"]
            units[n] = Unit(n, self.qualified(n), kind_of(r), before, r["color"],
                            r.get("route") or "", r.get("endpoint"), r.get("image"),
                            r.get("tests") or {}).to_json()
        removing = {n: r for n, r in live["services"].items() if n not in services}
        for n, r in removing.items():
            units[n] = Unit(n, self.qualified(n), kind_of(r), r["color"], None,
                            r.get("route") or "", r.get("endpoint"), r.get("image")).to_json()
        paused = weight > 0
        return {"id": "rebuilt", "release": number, "state": "paused" if paused else "running",
                "phase": "switch" if paused else "deploy",
                "paused_after": "switch" if paused else None, "weight": weight,
                "steps": [weight, 100] if paused else [100], "confirm": False,
                "started": time.time(), "by": "rebuilt from the containers", "units": units,
                "routed_before": {n: f for n, (f, _, _) in moving.items()},
                "services": services, "removing": removing, "rebuilt": True, "app": self.app}

    # -- rollback ---------------------------------------------------------------------------

    def rollback_plan(self, release: Release, snapshot: contextlib.ExitStack) -> RollbackPlan:
        """Back to the previous release: every service whose color differs (or that the live
        release removed), the services the live release added out of the proxy; workers
        swapped back. The release left keeps running, so a second rollback goes forward."""
        release.recover(undo_paused=False)
        records = release.records
        live, previous = records.get(self.name, LIVE), records.get(self.name, PREVIOUS)
        if not live or not previous:
            raise OperationFailed(f"{self.app}: no previous release to roll back to")
        now, then = live["services"], previous["services"]
        back = {n: r for n, r in then.items() if now.get(n, {}).get("color") != r["color"]}
        dropped = {n: r for n, r in now.items() if n not in then}
        for name, record in back.items():
            service, color = self.qualified(name), record["color"]
            images = release.steps.images(service, color)
            if images != {record["image"]}:
                raise OperationFailed(f"{service}-{color} no longer holds {record['image']} (it "
                                      f"holds {', '.join(sorted(images)) or 'nothing'}); deploy "
                                      f"the previous file instead")
        units = [Unit(n, self.qualified(n), kind_of(r), now.get(n, {}).get("color"), r["color"],
                      r.get("route") or "", r.get("endpoint"), r.get("image"))
                 for n, r in back.items()]
        gone = [Unit(n, self.qualified(n), kind_of(r), r["color"], None, r.get("route") or "",
                     r.get("endpoint"), r.get("image")) for n, r in dropped.items()]
        return RollbackPlan(units, f"{self.app}: release {live['release']} -> "
                            f"{previous['release']}",
                            {"app": self.app, "release": previous["release"],
                             "services": sorted(back), "dropped": sorted(dropped)},
                            dropped=gone, data={"live": live, "previous": previous})

    def rolled_back(self, records: Records, plan: RollbackPlan, result: str) -> None:
        if result == "ok":
            records.put(self.name, LIVE, plan.data["previous"])
            records.put(self.name, PREVIOUS, plan.data["live"])

    def rollback_entry(self, plan: RollbackPlan) -> dict[str, Any]:
        return {"action": "app rollback", "release": plan.summary["release"], "weight": 100,
                "changed": {u.name: f"{u.before or '-'} -> {u.color}" for u in plan.units}
                | {u.name: f"{u.before} -> -" for u in plan.dropped}}

    # -- status ---------------------------------------------------------------------------

    def status(self, release: Release) -> dict[str, Any]:
        """Each service's records against reality, and every disagreement as a problem."""
        steps, records = release.steps, release.records
        problems: list[str] = []
        live = self._readable(records, LIVE, problems) or {"release": 0, "services": {}}
        inflight = self._readable(records, INFLIGHT, problems)
        report: dict[str, Any] = {"app": self.app, "live_release": live["release"],
                                  "inflight": inflight, "services": {}, "problems": problems}
        units = {n: Unit.from_json(n, u) for n, u in (inflight or {}).get("units", {}).items()}
        seen = _by_service(steps.runtime.app_containers(self.app)) if steps.runtime else {}
        running = {n for n, colors in seen.items()
                   if any(c.running for cs in colors.values() for c in cs)}
        for name in sorted(set(live["services"]) | set(units) | running):
            record = live["services"].get(name) or (inflight or {}).get("services", {}).get(name) \
                or (_label(next(c for cs in seen[name].values() for c in cs)) if name in seen
                    else {})
            entry = _service_status(steps, self.qualified(name), kind_of(record),
                                    live["services"].get(name, {}).get("color"))
            u = units.get(name)
            if u and (u.moving or u.removed):
                entry["moving" if u.moving else "removing"] = \
                    {"from": u.before, "to": u.color} if u.moving else True
            report["services"][name] = entry
            problems += [f"{name}: {p}" for p in _disagreements(entry, live, inflight, u)]
        if not live["services"] and seen and not inflight:
            problems.append(f"containers of {self.app} run but no release is recorded: the "
                            f"next app command rebuilds the records")
        if inflight:
            problems += _unfinished_problems(inflight)
        else:
            chained = (records.get(self.name, "scale-down") or {}).get("chained") or {}
            problems += [f"{n}: callers chained with no release under way (a command was "
                         f"stopped before removing them): bluegreen app recover {self.app}"
                         for n, e in report["services"].items()
                         if e.get("proxy_chains") and self.qualified(n) not in chained]
        problems += self._clash_problems(steps, live)
        return report

    def _clash_problems(self, steps: Any, live: dict[str, Any]) -> list[str]:
        if steps.proxy is None:
            return []
        owners = steps.proxy.exposures()
        found = []
        for name, r in live["services"].items():
            for kind in ("route", "endpoint"):
                value = r.get(kind)
                owner = owners.get(f"{kind}:{value}") if value else None
                if owner and owner != self.qualified(name):
                    found.append(f"{name}: its {kind} {value} is served by {owner}")
        return found


def unchainable(spec: AppSpec, plan: Any, runtime: Any) -> list[str]:
    """The calls that need version-consistent chains (a changed or new service calling the
    endpoint of a changed one), on a runtime whose callers the proxy cannot tell apart by their
    address (``--runtime swarm``): refused, never routed by weight in their place."""
    if runtime is None or runtime.callers_by_address:
        return []
    by = {p.name: p for p in plan.services}
    found = []
    for caller in spec.services.values():
        for endpoint in caller.depends_on if by[caller.name].action in ("change", "new") else ():
            callee = spec.endpoints[endpoint]
            if by[callee].action == "change":
                found.append(f"{caller.name} calls {endpoint} and both change: keeping each "
                             f"release's callers on its release needs the proxy to tell them "
                             f"apart by address, which tasks on --runtime swarm do not allow "
                             f"(they reach it through their node's address); release {callee} "
                             f"first, then {caller.name}")
    return found


def _service_status(steps: Any, service: str, kind: str, live_color: str | None
                    ) -> dict[str, Any]:
    serving = steps.proxy.serving(service) if steps.proxy else None
    return {"kind": kind, "live_color": live_color,
            "proxy_color": serving.color if serving else None,
            "proxy_weight": serving.weight if serving else None,
            "proxy_chains": steps.proxy_chains(service),
            "healthy": {c: steps.healthy(service, c) for c in model.COLORS},
            "running": {c: steps.running(service, c) for c in model.COLORS}}


def _disagreements(entry: dict[str, Any], live: dict[str, Any], inflight: Any,
                   unit: Unit | None) -> list[str]:
    """What is wrong with one service: a routed one's proxy route against the records (the
    live release, or the unfinished release's weight), a worker's colors."""
    found = []
    color, proxy = entry["live_color"], entry["proxy_color"]
    release = live["release"]
    if entry["kind"] == "worker":
        running = [c for c, up in entry["running"].items() if up]
        if not inflight and color and running != [color]:
            found.append(f"worker: release {release} says {color}, running: "
                         f"{', '.join(running) or 'none'}")
        return found
    if not inflight and color and (proxy != color or entry["proxy_weight"] != 100):
        found.append(f"release {release} says {color}, the proxy routes "
                     f"{proxy or 'nothing'}" + (f" at {entry['proxy_weight']}%"
                                                if proxy and entry["proxy_weight"] != 100 else ""))
    if not inflight and not color and proxy:
        found.append(f"no release records it, the proxy routes it to {proxy}")
    if inflight and unit and unit.moving and unit.before and proxy:
        expect = inflight.get("weight") or 0
        at = entry["proxy_weight"] if proxy == unit.color else 100 - entry["proxy_weight"]
        if proxy not in (unit.color, unit.before) or at != expect:
            found.append(f"the unfinished release {inflight.get('release')} is at {expect}%, the "
                         f"proxy routes {at}% to {unit.color}")
    if proxy and not entry["healthy"][proxy]:
        found.append(f"the proxy routes to {proxy}, which is not healthy")
    return found


def _unfinished_problems(inflight: dict[str, Any]) -> list[str]:
    """A release whose process is gone (killed) is a problem; a paused one, or one whose
    process still runs, is a state."""
    from bluegreen.registry.base import hostname

    if inflight.get("paused_after") or inflight.get("state") == "paused":
        return []
    pid, host = inflight.get("pid"), inflight.get("host")
    if host == hostname() and isinstance(pid, int):
        try:
            import os

            os.kill(pid, 0)
            return []
        except ProcessLookupError:
            pass
        except PermissionError:
            return []
    elif host and host != hostname():
        return [f"release {inflight.get('release')} is unfinished ({inflight.get('state')} at "
                f"{inflight.get('weight')}%), run by {inflight.get('by')} on {host}"]
    return [f"release {inflight.get('release')} was interrupted at {inflight.get('weight')}% "
            f"(phase {inflight.get('phase')}; its process is gone): the next app command "
            f"undoes it"]


def _by_service(containers: list[Container]) -> dict[str, dict[str, list[Container]]]:
    """name -> color -> containers, of the containers that carry a readable record."""
    found: dict[str, dict[str, list[Container]]] = {}
    for c in containers:
        record = _label(c)
        if record and c.color in model.COLORS:
            found.setdefault(record["name"], {}).setdefault(c.color, []).append(c)
    return found


def _label(c: Container) -> dict[str, Any]:
    """The service record a container carries, with its release; {} when unreadable."""
    try:
        record = json.loads(c.label(LABEL_RECORD) or "")
        record["release"] = int(c.label(LABEL_RELEASE) or 0)
    except (ValueError, TypeError):
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("name"), str) else {}


def _release(containers: list[Container]) -> int:
    return max((int(c.label(LABEL_RELEASE) or 0) for c in containers), default=0)


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("name", "services", "release")}


def _colors(live: dict[str, Any]) -> dict[str, str]:
    return {n: r.get("color") for n, r in sorted(live["services"].items())}


def _record(s: ServiceSpec, color: str | None) -> dict[str, Any]:
    """A service's entry of a release: what ``changed`` compares, plus how it is exposed and
    tested."""
    return s.record(color or "") | {"route": s.route, "endpoint": s.endpoint, "tests": _tests(s)}


def _tests(s: ServiceSpec) -> dict[str, Any]:
    return {"paths": list(s.tests.paths), "expect_status": s.tests.expect_status,
            "expect_body": s.tests.expect_body}

