"""Application releases: the services of one Compose file released as one.

The deploy unit is a container, the release unit is the application. ``deploy`` compares the
file with the live release; each changed (or new) service gets a new color beside its live
one, started, healthy and tested directly; then the traffic of ALL changed services moves
together, one proxy change per weight step (``--steps 10,50,100``), with the tests run through
the proxy at each step; a failing test returns all of them to the old release. ``--confirm``
stops before 100: ``promote`` finishes, ``abort`` goes back. Unchanged services keep serving
old and new releases alike. Internal endpoints (``servicea.local``) are served by the proxy on
``--internal-listen``; every container of the application resolves them there.

Workers (services with neither route nor endpoint) have no weights: a changed worker's new
color is created at deploy and *swapped* at promotion (started, then the old color stopped):
not blue-green. A service the file no longer has serves until promotion, then leaves the proxy
(in the change to 100%) and stops. ``rollback`` does the reverse of both.

Records (under ``<app>._app/``, beside no service's): ``app-live`` (release N: each service's
color and what it runs), ``app-previous``, ``app-inflight`` (an unfinished release, which
blocks single-service commands on its services), ``history``. One application lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from bluegreen import interrupts, model
from bluegreen.app.spec import AppSpec, ServiceSpec, changed, kind_of, live_conflicts
from bluegreen.errors import Interrupted, OperationFailed, UsageError, redact
from bluegreen.flow import checks
from bluegreen.flow.steps import APP_INFLIGHT, Steps
from bluegreen.model import Chain, DeploySpec, Move
from bluegreen.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LIVE, PREVIOUS, INFLIGHT = "app-live", "app-previous", APP_INFLIGHT
HISTORY_KEEP = 50


def target(app: str) -> str:
    """Where an application's lock and records live (never a service's name)."""
    return f"{app}._app"


class AppOptions(Record):
    steps: tuple[int, ...] = (100,)
    step_wait: float = 0.0
    confirm: bool = False
    keep_old: float = 0.0
    proxy_url: str = "http://127.0.0.1"
    internal_addr: str = "172.17.0.1"
    lock_wait: float = 0.0


class AppRelease(Record):
    steps: Steps
    opts: AppOptions

    def say(self, line: str) -> None:
        self.steps.say(line)

    # -- deploy ------------------------------------------------------------------------------

    def deploy(self, spec: AppSpec) -> dict[str, Any]:
        app = spec.name
        with self.steps.lock(target(app), self.opts.lock_wait, on_stale=self.say):
            self._recover(app, undo_paused=False)
            live = self.steps.record(target(app), LIVE) or {"release": 0, "services": {}}
            plan = changed(spec, live["services"])
            for p in plan.services:
                self.say(f"{app}: {p.describe()}")
            conflicts = live_conflicts(spec, live["services"])
            if conflicts:
                raise UsageError(f"{app}: {'; '.join(conflicts)}")
            summary: dict[str, Any] = {"app": app, "release": live["release"] + 1,
                                       "changed": [*plan.new, *plan.changed],
                                       "kept": list(plan.kept), "removed": list(plan.removed)}
            if plan.nothing:
                self.say(f"{app}: nothing changed (release {live['release']} is live)")
                return summary | {"release": live["release"], "result": "unchanged"}
            inflight = {"release": summary["release"], "state": "deploying", "weight": 0,
                        "started": time.time(),
                        "moving": {p.name: {"from": p.live_color, "to": p.color}
                                   for p in plan.services if p.action in ("new", "change")},
                        "removing": {name: live["services"][name] for name in plan.removed},
                        "services": {name: _record(spec, s, plan_color(plan, name))
                                     for name, s in spec.services.items()}}
            if self.steps.dry_run:
                self._dry_run(app, spec, inflight)
                return summary | {"result": "dry-run"}
            self.steps.set_record(target(app), INFLIGHT, inflight)
            try:
                self._start_new(app, spec, inflight)
                interrupts.hold("app:started")
                last = self.opts.steps[-1]
                for weight in self.opts.steps:
                    if self.opts.confirm and weight == last == 100:
                        break
                    inflight = self._shift(app, inflight, weight)
                if self.opts.confirm:
                    inflight = inflight | {"state": "paused"}
                    self.steps.set_record(target(app), INFLIGHT, inflight)
                    self.say(f"{app}: release {inflight['release']} paused at "
                             f"{inflight['weight']}%: bluegreen app promote {app} | "
                             f"bluegreen app abort {app}")
                    return summary | {"result": "paused", "weight": inflight["weight"]}
                old = self._promote(app, inflight)
            except BaseException as exc:
                self._abort(app, inflight, exc)
                raise
        self._stop_old(app, old)
        return summary | {"result": "ok"}

    def _start_new(self, app: str, spec: AppSpec, inflight: dict[str, Any]) -> None:
        """Each moving routed service's new color, healthy, registered and tested directly
        (services with an internal endpoint first: their callers need them); each moving
        worker's new color created, started when it is swapped in at promotion."""
        order = sorted(inflight["moving"], key=lambda n: spec.services[n].endpoint is None)
        for name in order:
            s, color = spec.services[name], inflight["moving"][name]["to"]
            deploy_spec = self._deploy_spec(spec, name)
            if s.kind == "worker":
                self.say(f"==> Create {app}.{name}-{color} from {s.image} (started at promotion)")
                self.steps.create(f"{app}.{name}", color, deploy_spec)
            else:
                self.say(f"==> Deploy {app}.{name}-{color} from {s.image}")
                self.steps.deploy(f"{app}.{name}", color, deploy_spec)
        # Before any test: new services' endpoints served (no old release to protect), and
        # the new colors of callers kept on the new colors of their callees (chains).
        self.steps.route(self._moves(app, inflight, 0))
        for name in order:
            tests = _tests(inflight["services"][name])
            if tests.empty:
                continue
            color = inflight["moving"][name]["to"]
            domain = self.steps.test_domain(f"{app}.{name}", color)
            result = checks.run(tests, domain)
            self.say(f"pre-integration tests of {app}.{name}-{color}: {result.detail}")
            if not result.ok:
                raise OperationFailed(f"Pre-integration tests of {app}.{name} failed: "
                                      f"{result.detail}")

    def _deploy_spec(self, spec: AppSpec, name: str) -> DeploySpec:
        """What a service's new color runs; every internal endpoint resolves to the proxy."""
        s = spec.services[name]
        hosts = tuple((o.endpoint, self.opts.internal_addr) for o in spec.services.values()
                      if o.endpoint)
        return DeploySpec(s.image, port=s.port or 0, env=s.environment, scale=s.scale,
                          health_path=s.health_path, hosts=hosts)

    def _dry_run(self, app: str, spec: AppSpec, inflight: dict[str, Any]) -> None:
        """The proxy change of the first step against what the proxy routes now (the new
        colors, not deployed, shown by their containers' names and port)."""
        weight = next((w for w in self.opts.steps if not (self.opts.confirm and w == 100)), 0)
        self.say(f"==> {app}: the proxy at {weight}% (the first step), against what it routes "
                 f"now")
        self.steps.route(self._moves(app, inflight, weight), planned={
            (f"{app}.{name}", move["to"]): self._deploy_spec(spec, name)
            for name, move in inflight["moving"].items()})

    def _moves(self, app: str, inflight: dict[str, Any], weight: int, back: bool = False,
               chained: bool = True) -> list[Move]:
        """Every moving service at ``weight`` (new services at 100), or all back on their old
        colors; until the colors left stop (at 100 too, and back), each moving endpoint keeps
        the callers of each release on its own release (version-consistent chains: a request
        already inside a caller finishes on its release), the unchanged callers get the
        weights. Going back, a chain to a new color that is not healthy is left out."""
        moves = []
        callers = self._callers(app, inflight) if chained else {}
        for name, move in inflight["moving"].items():
            record = inflight["services"][name]
            color = move["from"] if back else move["to"]
            if color is None or kind_of(record) == "worker":
                continue  # a new service has nothing to go back to; a worker has no route
            w = 100 if back or move["from"] is None else weight
            chains = ()
            if record.get("endpoint") and move["from"] and callers:
                chains = tuple(Chain(side, move[end], tuple(callers[side]))
                               for side, end in (("new", "to"), ("old", "from"))
                               if callers[side] and not (back and side == "new" and not
                                                         self.steps.healthy(f"{app}.{name}",
                                                                            move[end])))
            moves.append(Move(f"{app}.{name}", color, w, location=record.get("route") or "",
                              endpoint=record.get("endpoint"), chains=chains))
        if back:  # the removed services routed again
            moves += [_move(app, name, r) for name, r in _routed(_removing(inflight))]
        return moves

    def _callers(self, app: str, inflight: dict[str, Any]) -> dict[str, list[str]]:
        """The addresses of the moving services' containers, by release side."""
        sides: dict[str, list[str]] = {"new": [], "old": []}
        for name, move in inflight["moving"].items():
            for side, end in (("new", "to"), ("old", "from")):
                if move[end]:
                    sides[side] += self.steps.addresses(f"{app}.{name}", move[end])
        return sides

    def _shift(self, app: str, inflight: dict[str, Any], weight: int) -> dict[str, Any]:
        """ONE proxy change for every moving service, then the tests through the proxy."""
        self.say(f"==> {app}: {weight}% to the new release")
        leaving = tuple(f"{app}.{n}" for n, _ in _routed(_removing(inflight))) \
            if weight == 100 else ()
        self.steps.route(self._moves(app, inflight, weight), unrouted=leaving)
        inflight = inflight | {"weight": weight}
        self.steps.set_record(target(app), INFLIGHT, inflight)
        interrupts.hold(f"app:at-{weight}")
        for name, record in inflight["services"].items():
            tests = _tests(record)
            if tests.empty or not record.get("route"):
                continue
            if self.steps.dry_run:
                self.say(f"would test {app}.{name} through the proxy at {weight}%")
                continue
            result = checks.run(tests, self.opts.proxy_url)
            self.say(f"tests of {app}.{name} through the proxy at {weight}%: {result.detail}")
            if not result.ok:
                raise OperationFailed(f"{app}.{name} failed its tests at {weight}%: "
                                      f"{result.detail}")
        if self.opts.step_wait and weight != 100 and not self.steps.dry_run:
            time.sleep(self.opts.step_wait)
        return inflight

    def _promote(self, app: str, inflight: dict[str, Any]) -> dict[str, str]:
        """All moving services at 100, workers swapped; the release is live. Returns the old
        colors of routed services to stop (after ``--keep-old``)."""
        if inflight["weight"] != 100:
            inflight = self._shift(app, inflight, 100)
        for name, move in inflight["moving"].items():
            self.steps.verify_release(f"{app}.{name}", move["to"])
        self._swap_workers(app, inflight)
        with interrupts.shielded():
            live = self.steps.record(target(app), LIVE)
            if live:
                self.steps.set_record(target(app), PREVIOUS, live)
            self.steps.set_record(target(app), LIVE, {"release": inflight["release"],
                                                      "services": inflight["services"]})
            self.steps.set_record(target(app), INFLIGHT, None)
            self._history(app, inflight, "ok")
        if not self.steps.dry_run:
            self.say(f"{app}: release {inflight['release']} is live")
        old = {n: m["from"] for n, m in inflight["moving"].items()
               if m["from"] and kind_of(inflight["services"][n]) == "routed"}
        return old | {n: r["color"] for n, r in _routed(_removing(inflight))}

    def _swap_workers(self, app: str, inflight: dict[str, Any]) -> None:
        """The promotion of the workers (recorded first: a kill during it is undone): each
        moving one's new color started, then its old one stopped; removed ones stopped."""
        moving = [n for n in inflight["moving"] if kind_of(inflight["services"][n]) == "worker"]
        gone = [n for n, r in _removing(inflight).items() if kind_of(r) == "worker"]
        if not moving and not gone:
            return
        self.steps.set_record(target(app), INFLIGHT, inflight | {"state": "swapping"})
        self._settle_workers(app, {n: inflight["services"][n] for n in moving}, gone)

    def _settle_workers(self, app: str, services: Mapping[str, dict[str, Any]],
                        gone: Iterable[str] = ()) -> None:
        """Each worker of ``services`` runs its recorded color, and only it: that color is
        started (and healthy, if it has a port) before the other one stops, so a kill between
        leaves both running for the next command to settle; the workers in ``gone`` stop.
        A swap, not blue-green: both run for a moment."""
        for name, record in services.items():
            if kind_of(record) != "worker":
                continue
            service, color = f"{app}.{name}", record["color"]
            if not self.steps.running(service, color):
                self.say(f"==> {service}: starting {color} (a worker is swapped, not blue-green)")
                self.steps.bring_up(service, color)
                interrupts.hold("app:worker-started")
            self._stop_worker(service, model.other_color(color))
        for name in gone:
            for color in model.COLORS:
                self._stop_worker(f"{app}.{name}", color)

    def _stop_worker(self, service: str, color: str) -> None:
        if self.steps.running(service, color):
            self.say(f"==> {service}: stopping {color}")
            self.steps.stop(service, color, drain=False)

    def _stop_old(self, app: str, old: dict[str, str]) -> None:
        if not old:
            return
        if self.steps.dry_run:
            for name, color in sorted(old.items()):
                self.say(f"would stop {app}.{name}-{color} (after --keep-old)")
            return
        if self.opts.keep_old and not self.steps.dry_run:
            self.say(f"keeping the old colors for {self.opts.keep_old:g}s (abort is proxy-only)")
            time.sleep(self.opts.keep_old)
        with self.steps.lock(target(app), 600, on_stale=self.say):
            live = self.steps.record(target(app), LIVE) or {"services": {}}
            records = {name: live["services"].get(name, {}) for name in old}
            # callers first: a request in an old caller finishes on the old callee
            for name in sorted(old, key=lambda n: bool(records[n].get("endpoint"))):
                if records[name].get("color") != old[name] and \
                        self.steps.running(f"{app}.{name}", old[name]):
                    self.steps.stop(f"{app}.{name}", old[name])
            # the old release's callers are gone (their addresses free for others): no chains
            unchained = [_move(app, n, r) for n, r in records.items() if r.get("endpoint")]
            if unchained:
                self.steps.route(unchained)

    # -- abort, promote, recover ---------------------------------------------------------------

    def _abort(self, app: str, inflight: dict[str, Any], why: BaseException | None = None) -> None:
        """Every moving service back on its old color and every removed one routed again, new
        services out of the proxy, in ONE proxy change; the new colors stopped; the workers
        of the live release on their colors again. Best effort: the original error surfaces."""
        try:
            routed = dict(_routed({n: inflight["services"][n] for n in inflight["moving"]}))
            new = tuple(f"{app}.{n}" for n, m in inflight["moving"].items()
                        if m["from"] is None and n in routed
                        and self.steps.serving_color(f"{app}.{n}"))
            back = self._moves(app, inflight, 100, back=True)
            self.steps.route(back, unrouted=new)
            # callers first: a request inside a new caller finishes on the new callee
            for name in sorted(routed, key=lambda n: bool(routed[n].get("endpoint"))):
                service, color = f"{app}.{name}", inflight["moving"][name]["to"]
                if self.steps.running(service, color):
                    self.steps.stop(service, color, force=True)
            if any(m.chains for m in back):  # the new callers are gone: no chains
                self.steps.route(self._moves(app, inflight, 100, back=True, chained=False))
            live = self.steps.record(target(app), LIVE) or {"services": {}}
            self._settle_workers(app, live["services"], gone=[
                n for n, m in inflight["moving"].items() if m["from"] is None and n not in routed])
            with interrupts.shielded():
                self.steps.set_record(target(app), INFLIGHT, None)
                result = "aborted" if why is None or isinstance(why, Interrupted) else "failed"
                self._history(app, inflight, result, why)
            if not self.steps.dry_run:
                self.say(f"{app}: release {inflight['release']} undone; the old release serves")
        except Exception as exc:
            self.say(f"{app}: undoing release {inflight['release']}: {redact(str(exc))}")
            if why is None:
                raise

    def promote(self, app: str) -> dict[str, Any]:
        with self.steps.lock(target(app), self.opts.lock_wait, on_stale=self.say):
            inflight = self._paused(app)
            try:
                old = self._promote(app, inflight)
            except BaseException as exc:
                self._abort(app, inflight, exc)
                raise
        self._stop_old(app, old)
        return {"app": app, "release": inflight["release"], "result": "ok"}

    def abort(self, app: str) -> dict[str, Any]:
        with self.steps.lock(target(app), self.opts.lock_wait, on_stale=self.say):
            inflight = self.steps.record(target(app), INFLIGHT)
            if not inflight:
                raise OperationFailed(f"{app}: no unfinished release to abort")
            self._abort(app, inflight)
        return {"app": app, "release": inflight["release"], "result": "aborted"}

    def rollback(self, app: str) -> dict[str, Any]:
        """Back to the previous release: every routed service whose color differs (or that
        the live release removed) in ONE proxy change, services the live release added out
        of it; instant when the old colors still run (else they are started first). The
        routed release left keeps running, so a second rollback goes forward again at once;
        workers are swapped back (started, then the current color stopped)."""
        with self.steps.lock(target(app), self.opts.lock_wait, on_stale=self.say):
            self._recover(app, undo_paused=False)
            live = self.steps.record(target(app), LIVE)
            previous = self.steps.record(target(app), PREVIOUS)
            if not live or not previous:
                raise OperationFailed(f"{app}: no previous release to roll back to")
            now, then = live["services"], previous["services"]
            back = {n: r for n, r in then.items() if now.get(n, {}).get("color") != r["color"]}
            dropped = {n: r for n, r in now.items() if n not in then}
            for name, record in back.items():
                self._check_holds(app, name, record)
            for name, record in _routed(back):
                if not self.steps.healthy(f"{app}.{name}", record["color"]):
                    self.say(f"starting {app}.{name}-{record['color']} again")
                    self.steps.bring_up(f"{app}.{name}", record["color"])
            self.steps.route([_move(app, n, r) for n, r in _routed(back)],
                             unrouted=tuple(f"{app}.{n}" for n, _ in _routed(dropped)))
            with interrupts.shielded():
                self.steps.set_record(target(app), LIVE, previous)
                self.steps.set_record(target(app), PREVIOUS, live)
                self.steps.append_history(target(app), {
                    "action": "app rollback", "release": previous["release"], "result": "ok",
                    "weight": 100, "start": time.time(), "end": time.time(),
                    "changed": {n: f"{now.get(n, {}).get('color') or '-'} -> {r['color']}"
                                for n, r in back.items()}
                    | {n: f"{r['color']} -> -" for n, r in dropped.items()}}, HISTORY_KEEP)
            self._settle_workers(app, back, gone=[n for n, r in dropped.items()
                                                  if kind_of(r) == "worker"])
        if not self.steps.dry_run:
            self.say(f"{app}: release {previous['release']} is live again")
        return {"app": app, "release": previous["release"], "result": "ok",
                "services": sorted(back), "dropped": sorted(dropped)}

    def _check_holds(self, app: str, name: str, record: dict[str, Any]) -> None:
        """The previous release's color of a service still holds its image."""
        service, color = f"{app}.{name}", record["color"]
        images = self.steps.images(service, color)
        if images != {record["image"]}:
            raise OperationFailed(f"{service}-{color} no longer holds {record['image']} "
                                  f"(it holds {', '.join(sorted(images)) or 'nothing'}); deploy "
                                  f"the previous file instead")

    def _paused(self, app: str) -> dict[str, Any]:
        inflight = self.steps.record(target(app), INFLIGHT)
        if not inflight or inflight.get("state") != "paused":
            raise OperationFailed(f"{app}: no paused release to promote")
        return dict(inflight)

    def _recover(self, app: str, undo_paused: bool) -> None:
        """A release whose command died (kill -9) is undone; a paused one blocks a new one.
        Workers left both running by a killed swap are settled on the live release."""
        inflight = self.steps.record(target(app), INFLIGHT)
        if not inflight:
            live = self.steps.record(target(app), LIVE) or {"services": {}}
            self._settle_workers(app, live["services"])
            return
        if inflight.get("state") == "paused" and not undo_paused:
            raise OperationFailed(f"{app}: release {inflight['release']} is paused at "
                                  f"{inflight['weight']}%: bluegreen app promote {app} | "
                                  f"bluegreen app abort {app}")
        if self.steps.dry_run:
            self.say(f"{app}: release {inflight['release']} was interrupted; it would be undone "
                     f"first")
            return
        self.say(f"{app}: release {inflight['release']} was interrupted at "
                 f"{inflight['weight']}%; undoing it")
        self._abort(app, inflight)

    # -- reading -------------------------------------------------------------------------------

    def status(self, app: str) -> dict[str, Any]:
        live = self.steps.record(target(app), LIVE) or {"release": 0, "services": {}}
        inflight = self.steps.record(target(app), INFLIGHT)
        report: dict[str, Any] = {"app": app, "live_release": live["release"],
                                  "inflight": inflight, "services": {}, "problems": []}
        coming = {**_removing(inflight or {}), **(inflight or {}).get("services", {})}
        for name in sorted(set(live["services"]) | set(coming)):
            record = live["services"].get(name) or coming[name]
            entry = self._service_status(app, name, kind_of(record),
                                         live["services"].get(name, {}).get("color"))
            if inflight and name in inflight["moving"]:
                entry["moving"] = inflight["moving"][name]
            if inflight and name in _removing(inflight):
                entry["removing"] = True
            report["services"][name] = entry
            report["problems"] += [f"{name}: {p}" for p in
                                   _disagreements(entry, live["release"], bool(inflight))]
        return report

    def _service_status(self, app: str, name: str, kind: str, live_color: str | None
                        ) -> dict[str, Any]:
        service = f"{app}.{name}"
        serving = self.steps.proxy.serving(service) if self.steps.proxy else None
        return {"kind": kind, "live_color": live_color,
                "proxy_color": serving.color if serving else None,
                "proxy_weight": serving.weight if serving else None,
                "proxy_chains": self.steps.proxy_chains(service),
                "healthy": {c: self.steps.healthy(service, c) for c in model.COLORS},
                "running": {c: self.steps.running(service, c) for c in model.COLORS}}

    def history(self, app: str) -> list[dict[str, Any]]:
        return self.steps.record(target(app), "history") or []

    def _history(self, app: str, inflight: dict[str, Any], result: str,
                 why: BaseException | None = None) -> None:
        entry = {"action": "app deploy", "release": inflight["release"], "result": result,
                 "weight": inflight["weight"], "start": inflight["started"], "end": time.time(),
                 "changed": {n: f"{m['from'] or '-'} -> {m['to']}"
                             for n, m in inflight["moving"].items()}
                 | {n: f"{r['color']} -> -" for n, r in _removing(inflight).items()},
                 "images": {n: r["image"] for n, r in inflight["services"].items()}}
        if why is not None:
            entry["error"] = redact(str(why))
        self.steps.append_history(target(app), entry, HISTORY_KEEP)


def _removing(inflight: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The live records of the services a release removes (none in older records)."""
    return inflight.get("removing") or {}


def _routed(services: Mapping[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The routed services (not workers) of ``{name: release record}``."""
    return [(name, r) for name, r in services.items() if kind_of(r) == "routed"]


def _move(app: str, name: str, record: dict[str, Any]) -> Move:
    """A routed service of a release record, all on its recorded color."""
    return Move(f"{app}.{name}", record["color"], 100, location=record.get("route") or "",
                endpoint=record.get("endpoint"))


def plan_color(plan: Any, name: str) -> str | None:
    return next(p.color for p in plan.services if p.name == name)


def _record(spec: AppSpec, s: ServiceSpec, color: str | None) -> dict[str, Any]:
    """A service's entry of a release: what ``changed`` compares, plus how it is exposed and
    tested."""
    assert color
    return s.record(color) | {"route": s.route, "endpoint": s.endpoint,
                              "tests": {"paths": list(s.tests.paths),
                                        "expect_status": s.tests.expect_status,
                                        "expect_body": s.tests.expect_body}}


def _tests(record: dict[str, Any]) -> checks.TestSpec:
    t = record.get("tests") or {}
    return checks.TestSpec.build(http=list(t.get("paths") or []),
                                 expect_status=int(t.get("expect_status") or 200),
                                 body_regex=t.get("expect_body"), retries=3)


def _disagreements(entry: dict[str, Any], release: int, inflight: bool) -> list[str]:
    """What is wrong with one service of ``app status``: a routed one's proxy route, a
    worker's colors (with no release in flight, exactly its live color runs)."""
    found = []
    live, color = entry["live_color"], entry["proxy_color"]
    if entry["kind"] == "worker":
        running = [c for c, up in entry["running"].items() if up]
        if not inflight and live and running != [live]:
            found.append(f"worker: release {release} says {live}, running: "
                         f"{', '.join(running) or 'none'}")
        return found
    if not inflight and live and color != live:
        found.append(f"release {release} says {live}, the proxy routes to {color}")
    if color and not entry["healthy"][color]:
        found.append(f"the proxy routes to {color}, which is not healthy")
    return found
