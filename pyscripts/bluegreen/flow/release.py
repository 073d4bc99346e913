"""The one orchestrator: every release, of one service (``bluegreen run``) or of an
application's changed services (``bluegreen app deploy``), moves a target through the same
phases under the same guarantees.

Phases (``model.PHASES``): **deploy** (the new color of every moving unit started together,
healthy and registered; a worker's created), **pre-test** (each new color tested directly;
callers kept on their own release through internal endpoints from here on), **switch** (the
traffic of every moving unit moved in ONE proxy change per weight step, tests through the
proxy at each intermediate step), **post-test** (the tests through the proxy at the last
step), then the promotion (colors verified, workers swapped, the release recorded as live)
and the stop of the old colors (after ``--keep-old``, under a scale-down record).

Guarantees, for every target: one deploy lock, whose lease is checked at each phase (taken
again, with the release's record rewritten, when the registry lost it); the records rebuilt
from reality (what runs, what the proxy routes) before anything is decided; SIGTERM/SIGINT at
safe points only; a release killed (kill -9) undone by the next command; ``--until PHASE`` /
``--resume``; a history that names who ran it. Invariant after every command, successful or
not: every proxy routes to running, healthy colors, and no clean-up stops or unroutes a color
the proxy routed before the release.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from bluegreen import interrupts, model
from bluegreen.errors import Interrupted, OperationFailed, Unreachable, UsageError, redact
from bluegreen.flow import behind, checks, gates
from bluegreen.flow.gates import Limits
from bluegreen.flow.reconcile import Reality, scale_down_colors
from bluegreen.flow.records import Records, who
from bluegreen.flow.steps import Steps
from bluegreen.flow.target import Target, Unit
from bluegreen.model import PHASE_TITLES, PHASES, Chain, Move
from bluegreen.record import Record, factory
from bluegreen.registry.base import Lease, hostname

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ReleaseOptions(Record):
    steps: tuple[int, ...] = (100,)  # the weights of the new colors, in order, ending at 100
    step_wait: float = 0.0  # seconds at each step below the last, after its tests
    confirm: bool = False  # pause before the last step (promote or abort decides)
    keep_old: float = 0.0
    proxy_url: str = "http://127.0.0.1"
    lock_wait: float = 0.0
    until: str | None = None  # pause after this phase
    outcome: bool | None = None  # with resume: the result of the next test phase, run elsewhere
    gates: Limits = factory(Limits)  # each step's gate on the proxy's figures
    sticky: bool = False  # a new release keeps each client on one release (bucket cookie)
    preview: str | None = None  # the preview secret: the tests at a 0% step send it
    dynamic: bool = False  # every proxy counts (the dynamic nginx): gates can work
    # a continued release: the gates, step wait, steps given on this command (field -> where
    # from), in place of those recorded when it started
    given: dict[str, str] = factory(dict)


class Release(Record):
    steps: Steps
    records: Records
    target: Target
    opts: ReleaseOptions = factory(ReleaseOptions)
    phases: list[dict[str, Any]] = factory(list)
    lease: Lease | None = None
    applied: bool = False  # this process changed a proxy for the release
    caught_up: list[str] = factory(list)  # proxies left behind, brought in line at the lock
    _written: dict[str, Any] | None = None  # the release's record as last written

    @property
    def say(self) -> Any:
        return self.steps.say

    @property
    def reality(self) -> Reality:
        return Reality(self.steps, self.records)

    @property
    def dry_run(self) -> bool:
        return self.steps.dry_run

    # -- helpers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str, what: str) -> Iterator[None]:
        self.say(f"==> {name}: {what}")
        start = time.monotonic()
        entry = {"phase": name, "what": what}
        self.phases.append(entry)
        try:
            yield
        except BaseException as exc:
            entry.update(result="failed", seconds=round(time.monotonic() - start, 3),
                         error=str(exc))
            self.say(f"<== {name}: FAILED after {time.monotonic() - start:.2f}s: {exc}")
            raise
        entry.update(result="ok", seconds=round(time.monotonic() - start, 3))
        self.say(f"<== {name}: ok in {time.monotonic() - start:.2f}s")

    @contextlib.contextmanager
    def locked(self, wait: float | None = None) -> Iterator[None]:
        with self.records.lock(self.target.name, self.opts.lock_wait if wait is None
                               else wait) as lease:
            self.lease = lease
            try:
                with behind.watch(self.steps, self.records, self.target.name) as caught_up:
                    self.caught_up = caught_up
                    yield
            finally:
                self.lease = None

    def checkpoint(self, point: str, inflight: dict[str, Any] | None = None) -> None:
        """Between two steps: a fault test's hold point; the lock still ours (taken again,
        with the release's records rebuilt, when the registry restarted empty)."""
        interrupts.hold(point)
        self._still_ours(inflight)

    def _still_ours(self, inflight: dict[str, Any] | None) -> None:
        if self.lease is None:
            return
        if self.lease.lost:
            raise OperationFailed(f"{self.target.label}: lost the deploy lock "
                                  f"({self.lease.lost})")
        if self.lease.verify():
            self.say(f"{self.target.label}: the registry had lost the deploy lock; taken again")
            for unit in _units(inflight) if inflight else ():
                self.reality.reconcile(unit.service, in_release=True)
            if inflight:
                self.records.put(self.target.name, self.target.inflight_key, inflight)

    def _write(self, inflight: dict[str, Any]) -> dict[str, Any]:
        self.records.put(self.target.name, self.target.inflight_key, inflight)
        self._written = inflight
        return inflight

    def _of(self, unit: Unit) -> str:
        """`` of <service>`` in messages, unless the target is that one service."""
        return "" if unit.service == self.target.name else f" of {unit.service}"

    # -- a new release -----------------------------------------------------------------------

    def deploy(self, units: list[Unit], fields: dict[str, Any] | None = None
               ) -> dict[str, Any]:
        """Release ``units`` (planned by the caller from records read under the lock: use
        :meth:`start` with a planner)."""
        return self.start(lambda: (units, fields or {}))

    def start(self, plan: Any) -> dict[str, Any]:
        """A new release: under the lock, what an interrupted one left is undone (a paused
        one is refused), ``plan()`` says the units and the record's extra fields, then every
        phase up to ``--until`` (or the ``--confirm`` gate) runs. Returns the summary."""
        if not self.dry_run:
            self.steps.preload()  # loads while the lock, recovery and the registry are waited on
        with self.locked():
            recovered = self.recover(undo_paused=False)
            units, fields = plan()
            inflight = self._new(units, fields)
            summary = self._summary(inflight) | ({"recovered": recovered} if recovered else {})
            if not any(u.moving or u.removed for u in units):
                return summary | {"result": "unchanged"}
            if self.dry_run:
                return self._dry_run(inflight, summary)
            summary, old = self._run(inflight, PHASES, summary)
        return self._finish(summary, old)

    def resume(self) -> dict[str, Any]:
        """Go on with a paused release from its next phase (past a ``--confirm`` gate)."""
        with self.locked():
            inflight = self._paused()
            todo = self._remaining(inflight)
            self._apply_outcome(todo[0])
            # the --confirm gate is passed when resuming from it or to the end (promote); a
            # resume --until a phase before it keeps it (one Jenkins stage per phase)
            keep_gate = bool(self.opts.until) and todo[0] != inflight["paused_after"]
            inflight = self._continued(inflight) | {
                "confirm": bool(inflight.get("confirm")) and keep_gate}
            summary = self._summary(inflight)
            self.say(f"{self.target.label}: resuming {_describe(inflight)} with {todo[0]}")
            if self.dry_run:
                return self._dry_resume(inflight, todo, summary)
            summary, old = self._run(inflight, todo, summary)
        return self._finish(summary, old)

    def _new(self, units: list[Unit], fields: dict[str, Any]) -> dict[str, Any]:
        routed_before = {u.name: self.steps.serving_color(u.service) for u in units
                         if u.routed and (u.moving or u.removed)}
        inflight = {"id": os.urandom(6).hex(), "state": "running", "phase": None,
                    "paused_after": None, "weight": 0, "steps": list(self.opts.steps),
                    "confirm": self.opts.confirm, "started": time.time(), "host": hostname(),
                    "pid": os.getpid(), "by": who(), "routed_before": routed_before,
                    "sticky": self.opts.sticky, "step_wait": self.opts.step_wait,
                    "gates": gates.to_record(self.opts.gates),
                    "units": {u.name: u.to_json() for u in units}} | fields
        return inflight | self.target.fields(inflight)

    def _continued(self, inflight: dict[str, Any]) -> dict[str, Any]:
        """A paused release goes on with the gates and step wait it recorded (a record
        without them: none, as before they were recorded), and ``run --resume`` with its
        steps; each given on this command overrides the record (one line) and is recorded
        for the rest of the release. What cannot work is refused (exit 2): gates without the
        dynamic nginx or a step wait, a preview step still to come without a preview secret."""
        o, given = self.opts, self.opts.given
        limits, wait = gates.from_record(inflight)
        limits, wait, changed = gates.continued(limits, wait, o.gates, o.step_wait, given)
        steps = inflight["steps"]
        if "steps" in given and list(o.steps) != steps:
            where = "" if given["steps"] == "--steps" else f" (from {given['steps']})"
            changed.append(f"--steps {','.join(map(str, o.steps))}{where} in place of "
                           f"{','.join(map(str, steps))}")
            steps = list(o.steps)
        gates.refuse(limits, wait, o.dynamic, recorded=True)
        if steps[0] == 0 and not inflight.get("switched") and not (o.preview and o.dynamic):
            raise UsageError("the release's first step is 0%, reached by preview requests "
                             "only: it needs --nginx-mode dynamic and a preview secret "
                             "($BLUEGREEN_PREVIEW_SECRET)")
        if changed:
            self.say(f"{self.target.label}: options given override the release's record: "
                     f"{', '.join(changed)}")
        self.opts.gates, self.opts.step_wait = limits, wait
        return inflight | {"gates": gates.to_record(limits), "step_wait": wait, "steps": steps}

    def _summary(self, inflight: dict[str, Any]) -> dict[str, Any]:
        return {"result": "failed"} | self.target.fields(inflight)

    def _remaining(self, inflight: dict[str, Any]) -> tuple[str, ...]:
        """The phases a paused release has left: the switch again when it stopped before its
        last step."""
        after = inflight["paused_after"]
        if after == "switch" and inflight["weight"] < inflight["steps"][-1]:
            return PHASES[PHASES.index("switch"):]
        return PHASES[PHASES.index(after) + 1:]

    def _apply_outcome(self, phase: str) -> None:
        if self.opts.outcome is None:
            return
        if phase not in ("pre-test", "post-test"):
            raise UsageError(f"--outcome: the next phase, {phase}, runs no tests")
        self.target.decide("pre" if phase == "pre-test" else "proxy", self.opts.outcome)

    def _paused(self) -> dict[str, Any]:
        t = self.target
        self.recover(undo_paused=False, paused_ok=True)
        inflight = self.records.get(t.name, t.inflight_key)
        if not inflight or not inflight.get("paused_after"):
            raise OperationFailed(f"{t.label}: no paused {t.noun} to resume")
        return dict(inflight)

    def _run(self, inflight: dict[str, Any], todo: tuple[str, ...], summary: dict[str, Any]
             ) -> tuple[dict[str, Any], dict[str, str]]:
        """The phases ``todo`` and the promotion, or the undo of everything on any failure.
        Returns the summary and the old colors to stop."""
        self.say(f"{self.target.label}: {_describe(inflight)}")
        phase = todo[0]
        try:
            for phase in todo:
                self.checkpoint(f"{phase}:before", inflight)
                inflight = self._write(inflight | {"phase": phase, "paused_after": None,
                                                   "state": "running"})
                inflight, gate = self._phase(phase, inflight)
                if gate or (phase == self.opts.until and phase != PHASES[-1]):
                    inflight = self._write(inflight | {"state": "paused", "paused_after": phase})
                    at = f" at {inflight['weight']}%" if gate else ""
                    self.say(f"{self.target.label}: {_describe(inflight)} paused after {phase}"
                             f"{at}; {self.target.paused_hint()}")
                    return summary | {"result": "paused", "paused_after": phase,
                                      "weight": inflight["weight"], "gate": gate}, {}
            self.checkpoint("verified:before", inflight)
            old = self._promote(inflight)
        except BaseException as exc:
            aborted = isinstance(exc, (Interrupted, KeyboardInterrupt))
            inflight = self._written or inflight  # with the weight a step wrote before failing
            self._undo(inflight, exc, failed_phase=phase)
            summary |= {"result": "aborted" if aborted else "failed", "failed_phase": phase,
                        "error": str(exc)}
            raise
        return summary | {"result": "ok"}, old

    def _finish(self, summary: dict[str, Any], old: dict[str, str]) -> dict[str, Any]:
        """After the lock: the old colors stopped (a rollback may happen while they are kept)."""
        if summary["result"] == "ok":
            with self.phase("stop-old", ", ".join(f"stop {s}-{c}" for s, c in sorted(old.items()))
                            or "nothing to stop"):
                self.stop_old(old)
        return summary | {"phases": self.phases}

    # -- the phases ----------------------------------------------------------------------------

    def _phase(self, phase: str, inflight: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """One phase; returns the record and whether the release stopped at its gate."""
        units = _units(inflight)
        moving = [u for u in units if u.moving]
        title = PHASE_TITLES[phase]  # the book's stage name, in the output and the summary
        if phase == "deploy":
            with self.phase(title, ", ".join(f"{u.service}-{u.color} from {u.image}"
                                             for u in moving)):
                self._deploy(moving)
        elif phase == "pre-test":
            with self.phase(title, self._describe_tests(moving, "pre")):
                self._pre_test(inflight, moving)
        elif phase == "switch":
            what = ", ".join(f"{u.service} to {u.color}" for u in moving if u.routed) or \
                "nothing routed moves"
            with self.phase(title, what):
                return self._switch(inflight)
        elif phase == "post-test":
            with self.phase(title, self._describe_tests(units, "proxy")):
                self._proxy_tests(units, inflight["weight"], final=True)
        return inflight, False

    def _deploy(self, moving: list[Unit]) -> None:
        """Every moving unit's new color together: routed ones started, healthy, registered;
        workers created (started when swapped in at promotion)."""
        t = self.target
        self.steps.deploy_many([(u.service, u.color, t.deploy_spec(u))
                                for u in moving if u.routed])
        for u in moving:
            if not u.routed:
                self.say(f"==> Create {u.service}-{u.color} from {u.image} (started at "
                         f"promotion)")
                self.steps.create(u.service, u.color, t.deploy_spec(u))

    def _pre_test(self, inflight: dict[str, Any], moving: list[Unit]) -> None:
        """Before any test: new endpoints served (nothing to protect) and the callers of each
        release kept on its own release (chains); then each new color tested directly,
        the services answering an endpoint first (their callers need them)."""
        endpoints = [m for m in self._moves(inflight, 0) if m.endpoint]
        if endpoints:
            self._route(endpoints)
            self._still_ours(inflight)  # a registry lost meanwhile: registrations back first
        for u in sorted(moving, key=lambda u: u.endpoint is None):
            tests = self.target.tests(u, "pre")
            if not u.routed or tests.empty:
                continue
            if tests.outcome is None:
                domain = self.steps.test_domain(u.service, u.color)
                result = checks.run(tests, domain)
                self.say(f"pre-integration tests{self._of(u)} {_verdict(result)} against "
                         f"{domain}: {result.detail}")
            else:
                result = checks.run(tests, "")
            if not result.ok:
                raise OperationFailed(f"Pre-integration tests{self._of(u)} failed: "
                                      f"{result.detail}")

    def _switch(self, inflight: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Each weight step in ONE proxy change for every moving unit (removed services leave
        the proxy in the change to 100), the tests through the proxy after each step below
        the last. The weight is recorded before the change it names. True: stopped at the
        ``--confirm`` gate, before the last step."""
        steps, last = inflight["steps"], inflight["steps"][-1]
        units = _units(inflight)
        todo = [w for w in steps if w > inflight["weight"]
                or (w == 0 and not inflight.get("switched"))]  # 0: a preview step
        for weight in todo or [last]:
            if weight == last and inflight.get("confirm"):
                return inflight, True
            inflight = self._write(inflight | {"weight": weight, "switched": True})
            self.say(f"==> {self.target.label}: {weight}% to the new "
                     f"{'release' if len(units) > 1 else 'color'}")
            leaving = tuple(u.service for u in units if u.removed and u.routed) \
                if weight == 100 else ()
            # a new color whose containers are gone may still pass in the registry (until its
            # next check): never more traffic to it
            gone = [f"{u.service}-{u.color}" for u in units if u.moving and u.routed
                    and self.steps.runtime is not None
                    and not self.steps.running(u.service, u.color)]
            if gone:
                raise OperationFailed(f"{', '.join(gone)}: no container runs; proxy left as it is")
            self._route(self._moves(inflight, weight), unrouted=leaving)
            self.checkpoint(f"switch:at-{weight}", inflight)
            if weight != last:
                self._proxy_tests(units, weight, final=False)
                if self.opts.gates.active and weight > 0:  # at 0 no user reaches the new one
                    self._gate(units, weight)
                elif self.opts.step_wait:
                    self._wait(units, weight)
        return inflight, False

    def _gate(self, units: list[Unit], weight: int) -> None:
        """The step's wait, judged: the new color of each moving routed service against its
        old one over the window (one line of figures); a breach fails the release."""
        passed, text = gates.watch(self.steps.figures, _gated(units), self.opts.gates,
                                   self.opts.step_wait, weight, self.say)
        if not passed:
            raise OperationFailed(f"{self.target.label}: gate failed: {text}")

    def _wait(self, units: list[Unit], weight: int) -> None:
        """The step's wait without gates: one line of the figures, when the proxy counts
        (the dynamic nginx); never a reason to fail."""
        start = time.monotonic()
        try:
            gates.watch(self.steps.figures, _gated(units), gates.Limits(),
                        self.opts.step_wait, weight, self.say)
        except UsageError:  # a proxy that does not count (the reload mode): just the wait
            pass
        except (OperationFailed, Unreachable) as exc:  # only the line is lost
            self.say(f"no figures at {weight}%: {exc}")
        time.sleep(max(0.0, self.opts.step_wait - (time.monotonic() - start)))

    def _route(self, moves: list[Move], unrouted: tuple[str, ...] = ()) -> None:
        """A change of the release's own: remembered, so that an undo in this process knows
        whether the proxy holds anything of it (a change that failed was put back, unless
        the error names proxies left changed)."""
        done = self.steps.proxy_changes
        try:
            self.steps.route(moves, unrouted=unrouted)
        except BaseException as exc:
            self.applied = self.applied or bool(getattr(exc, "stuck", None))
            raise
        finally:  # applied, even when what came after it (a record, a signal) failed
            self.applied = self.applied or self.steps.proxy_changes > done

    def _proxy_tests(self, units: list[Unit], weight: int, final: bool) -> None:
        """The tests through the proxy of every unit that has them (unchanged ones too: their
        callees may have changed)."""
        for u in units:
            tests = self.target.tests(u, "proxy")
            if tests.empty or u.removed:
                continue
            preview = self.opts.preview if weight == 0 and not final else None
            result = checks.run(tests, self.opts.proxy_url, preview=preview)
            where = self.opts.proxy_url if final else f"the proxy at {weight}%" + (
                " (preview requests)" if preview else "")
            self.say(f"post-integration tests{self._of(u)} {_verdict(result)} against {where}: "
                     f"{result.detail}")
            if not result.ok:
                raise OperationFailed(f"Post-integration tests{self._of(u)} failed"
                                      f"{'' if final else f' at {weight}%'}: {result.detail}")

    def _describe_tests(self, units: list[Unit], where: str) -> str:
        found = [f"{u.service}: {t.describe()}" if len(units) > 1 else t.describe()
                 for u in units if not (t := self.target.tests(u, where)).empty]
        return "; ".join(found) or "no tests"

    # -- routes --------------------------------------------------------------------------------

    def _moves(self, inflight: dict[str, Any], weight: int, back: bool = False,
               chained: bool = True) -> list[Move]:
        """Every moving routed unit at ``weight`` (a new one at 100), or, ``back``, on its old
        color with the removed units routed again. Until the colors left stop (at 100 too,
        and back), each moving endpoint keeps the callers of each release on that release
        (version-consistent chains: a request already inside a caller finishes on its
        release); the unchanged callers get the weights. Going back, a chain to a new color
        that is not healthy is left out."""
        units = _units(inflight)
        callers = self._callers(units) if chained else {}
        sticky = set() if back else {u.name for u in units if inflight.get("sticky")} | set(
            inflight.get("sticky_services") or ())
        moves = []
        for u in units:
            color = u.before if back else u.color
            if not u.routed or color is None or (not u.moving and not (back and u.removed)):
                continue
            if u.removed:
                moves.append(Move(u.service, color, 100, location=u.location,
                                  endpoint=u.endpoint))
                continue
            w = 100 if back or u.before is None else weight
            chains: tuple[Chain, ...] = ()
            if u.endpoint and u.before and callers:
                ends = {"new": u.color, "old": u.before}
                chains = tuple(Chain(side, ends[side], tuple(callers[side]))
                               for side in ("new", "old") if callers[side] and not (
                                   back and side == "new"
                                   and not self.steps.healthy(u.service, ends[side])))
            moves.append(Move(u.service, color, w, location=u.location, endpoint=u.endpoint,
                              chains=chains, sticky=u.name in sticky))
        return moves

    def _callers(self, units: list[Unit]) -> dict[str, list[str]]:
        """The addresses of the moving units' containers, by release side (none when no moving
        unit has an endpoint: nothing to chain)."""
        if not any(u.endpoint and u.moving for u in units):
            return {}
        sides: dict[str, list[str]] = {"new": [], "old": []}
        for u in units:
            if u.moving:
                for side, color in (("new", u.color), ("old", u.before)):
                    if color:
                        sides[side] += self.steps.addresses(u.service, color)
        return sides

    # -- promotion and the old colors ------------------------------------------------------

    def _promote(self, inflight: dict[str, Any]) -> dict[str, str]:
        """The new colors verified, the workers swapped, the release recorded as live with
        the old colors due to stop (a scale-down record: recovery stops them if this process
        dies). Returns service -> old color to stop."""
        units = _units(inflight)
        for u in units:
            if u.moving:
                self.steps.verify_release(u.service, u.color)
                if u.routed:
                    self.steps.record_color(u.service, u.color)
        self._swap_workers(inflight)
        self._still_ours(inflight)  # a registry lost during the swap: registrations back first
        old = {u.service: u.before for u in units
               if u.routed and u.before and (u.moving or u.removed)}
        chained = {u.service: {"location": u.location, "endpoint": u.endpoint}
                   for u in units if u.routed and u.endpoint and u.moving and u.before}
        t = self.target
        with interrupts.shielded():
            t.promoted(self.records, inflight)
            if old:
                self.records.put(t.name, "scale-down", {
                    "not_before": time.time() + self.opts.keep_old, "colors": old,
                    "chained": chained})
            self.records.put(t.name, t.inflight_key, None)
            self._history(inflight, "ok")
        self.say(f"{t.label}: {_describe(inflight)} is live")
        return old

    def _swap_workers(self, inflight: dict[str, Any]) -> None:
        """The workers' promotion (recorded first: a kill during it is undone): each moving
        one's new color started, then its old one stopped; removed ones stopped."""
        units = [u for u in _units(inflight) if not u.routed and (u.moving or u.removed)]
        if units:
            self._write(inflight | {"state": "swapping"})
            self.settle_workers(units)

    def settle_workers(self, units: list[Unit]) -> None:
        """Each worker of ``units`` runs its ``color``, and only it (none when removed): that
        color is started (and healthy, if it has a port) before the other one stops, so a
        kill between leaves both running for the next command to settle. A swap, not
        blue-green: both run for a moment."""
        for u in units:
            if u.routed:
                continue
            if u.color and not self.steps.running(u.service, u.color):
                self.say(f"==> {u.service}: starting {u.color} (a worker is swapped, not "
                         f"blue-green)")
                self.steps.bring_up(u.service, u.color)
                interrupts.hold("app:worker-started")
            for color in model.COLORS:
                if color != u.color and self.steps.running(u.service, color):
                    self.say(f"==> {u.service}: stopping {color}")
                    self.steps.stop(u.service, color, drain=False)

    def stop_old(self, old: dict[str, str]) -> None:
        """After ``--keep-old`` seconds: the old colors stopped, unless a rollback made them
        live again (callers first: a request in an old caller finishes on the old callee),
        then the chains removed."""
        if not old:
            return
        if self.dry_run:
            for service, color in sorted(old.items()):
                self.say(f"would stop {service}-{color} (after --keep-old)")
            return
        if self.opts.keep_old > 0:
            self.say(f"keeping {', '.join(f'{s}-{c}' for s, c in sorted(old.items()))} for "
                     f"{self.opts.keep_old:g}s (a rollback is proxy-only)")
            time.sleep(self.opts.keep_old)
        with self.locked(wait=600):
            self._scale_down(due_only=False)

    def _scale_down(self, due_only: bool) -> list[str]:
        """Carry out the target's scale-down record (when due, with ``due_only``)."""
        t = self.target
        pending = self.records.get(t.name, "scale-down")
        if not pending or (due_only and pending["not_before"] > time.time()):
            return []
        colors = {s or t.name: c for s, c in scale_down_colors(pending).items()}
        if held := behind.names(self.records, t.name):  # they may route the old colors still
            actions = [f"keeping {', '.join(f'{s}-{c}' for s, c in sorted(colors.items()))}: "
                       f"proxy {', '.join(held)} is behind and may still route it; the "
                       f"command that brings it in line stops it"]
            if not due_only:
                self.say(actions[0])
            return actions
        chained = pending.get("chained") or {}
        stop = [(s, c) for s, c in colors.items()
                if self.steps.live_color(s) != c and self.steps.running(s, c)]
        actions = [f"{s}-{c} is live again (rolled back); not stopping it"
                   for s, c in colors.items() if self.steps.live_color(s) == c]
        actions += [f"stopped {s}-{c}" + (" (its keep-old time had passed)" if due_only else "")
                    for s, c in stop]
        if not self.dry_run:
            for batch in ([sc for sc in stop if sc[0] not in chained],
                          [sc for sc in stop if sc[0] in chained]):
                if batch:
                    self.steps.stop_many(batch)
            unchain = [Move(s, live, 100, location=r["location"], endpoint=r["endpoint"])
                       for s, r in chained.items() if (live := self.steps.live_color(s))]
            if unchain:  # the old callers are gone (their addresses free for others)
                self.steps.route(unchain)
            self.records.put(t.name, "scale-down", None)
        if not due_only:
            for line in actions:
                self.say(line)
        return actions

    # -- undo ------------------------------------------------------------------------------

    def abort(self) -> dict[str, Any]:
        """Undo an unfinished (paused or interrupted) release."""
        t = self.target
        with self.locked():
            self.recover(undo_paused=False, paused_ok=True)
            inflight = self.records.get(t.name, t.inflight_key)
            if not inflight:
                raise OperationFailed(f"{t.label}: no unfinished {t.noun} to abort")
            self._undo(inflight, None)
        return self._summary(inflight) | {"result": "aborted"}

    def _undo(self, inflight: dict[str, Any], why: BaseException | None,
              failed_phase: str | None = None, history: bool = True,
              recovered: bool = False) -> None:
        """Every moving unit back on its old color and every removed one routed again, new
        ones out of the proxy, in ONE proxy change (an old color that stopped is started
        first; with none healthy a unit keeps its new color rather than nothing); the new
        colors stopped (callers first); the workers on their old colors. Never stops or
        unroutes a color the proxy routed before the release. Best effort when ``why`` is the
        failure being reported: it is the error that surfaces."""
        steps, units = self.steps, _units(inflight)
        before = inflight.get("routed_before") or {}
        try:
            kept_new: set[str] = set()
            for u in units:
                if u.moving and u.routed and u.before and not steps.healthy(u.service, u.before):
                    if steps.has_instances(u.service, u.before):
                        self.say(f"starting {u.service}-{u.before} again")
                        try:
                            steps.bring_up(u.service, u.before)
                            continue
                        except OperationFailed as exc:
                            self.say(f"{u.service}-{u.before}: {exc}")
                    if steps.serving_color(u.service) == u.color and \
                            steps.healthy(u.service, u.color):
                        kept_new.add(u.name)
                        self.say(f"{u.service}: no healthy old color; it stays on {u.color}")
            # what the release changed on the proxy: a new color served, a removed service
            # unrouted, callers chained; the rest is left as it is (nothing to undo there).
            # A failure in this process before any change of the release reached a proxy
            # needs no proxy to undo (it may be the proxy that is gone).
            untouched = why is not None and not self.applied
            served = {} if untouched else {
                u.service: steps.serving_color(u.service) for u in units
                if u.routed and (u.moving or u.removed)}
            at_zero = inflight.get("switched") and inflight.get("weight") == 0  # a preview step
            touched = set() if untouched else {
                u.service for u in units if u.name not in kept_new and (
                    (u.moving and (served.get(u.service) == u.color or at_zero))
                    or (u.removed and served.get(u.service) is None)
                    or (u.endpoint and u.moving and steps.proxy_chains(u.service)))}
            back = [m for m in self._moves(inflight, 100, back=True) if m.service in touched]
            new = tuple(u.service for u in units if u.moving and u.routed and u.before is None
                        and before.get(u.name) is None and served.get(u.service))
            steps.route(back, unrouted=new)
            for m in back:
                if served.get(m.service) != m.color:
                    self.say(f"proxy switched back to {m.service}-{m.color}")
            for service in new:
                self.say(f"first deployment: {service} removed from the proxy")
            self._stop_new(units, kept_new, before, drain=not untouched)
            if any(m.chains for m in back):  # the new callers are gone: no chains
                steps.route(self._moves(inflight, 100, back=True, chained=False))
            self.settle_workers([Unit(u.name, u.service, u.kind, u.before, u.before)
                                 for u in units if not u.routed and u.moving])
            with interrupts.shielded():
                self.records.put(self.target.name, self.target.inflight_key, None)
                result = "recovered" if recovered else "aborted" if why is None or isinstance(
                    why, (Interrupted, KeyboardInterrupt)) else "failed"
                if history:
                    self._history(inflight, result, why, failed_phase or inflight.get("phase"),
                                  action="recover" if recovered else None)
            if not self.dry_run:
                self.say(f"{self.target.label}: {_describe(inflight)} undone; the old "
                         f"{'release' if len(units) > 1 else 'color'} serves")
        except Exception as exc:
            self.say(f"{self.target.label}: undoing {_describe(inflight)}: {redact(str(exc))}; "
                     f"it stays recorded as unfinished: {self.target.recover_hint()} settles it")
            if why is None:
                raise

    def _stop_new(self, units: list[Unit], kept: set[str], before: dict[str, Any],
                  drain: bool = True) -> None:
        """The new colors stopped, callers first (a request inside a new caller finishes on
        the new callee), never one the proxy routed before the release; a color never
        started is only deregistered."""
        stop: list[tuple[Unit, bool]] = []
        for u in units:
            if not u.moving or not u.routed or u.name in kept or before.get(u.name) == u.color:
                continue
            if self.steps.running(u.service, u.color):
                stop.append((u, u.endpoint is not None))
            elif not self.dry_run:
                self.steps.deregister(u.service, u.color)
        if stop and (held := behind.names(self.records, self.target.name)):
            self._stop_later([u for u, _e in stop], held)
            return
        for callee in (False, True):
            batch = [(u.service, u.color) for u, e in stop if e == callee]
            if batch:
                self.steps.stop_many(batch, drain=drain)
                for service, color in batch:
                    self.say(f"stopped the unverified {service}-{color}")

    def _stop_later(self, units: list[Unit], held: list[str]) -> None:
        """A proxy behind (``--partial``) may route the new colors (one lost while a failed
        change was put back serves them when it returns): they keep running, added to the
        scale-down record, which the command that brings it in line carries out."""
        names = ", ".join(f"{u.service}-{u.color}" for u in units)
        self.say(f"keeping {names}: proxy {', '.join(held)} is behind and may still route "
                 f"it; the command that brings it in line stops it")
        if self.dry_run:
            return
        t = self.target

        def merged(old: Any) -> dict[str, Any]:
            colors = {s or t.name: c for s, c in scale_down_colors(old).items()}
            return {"not_before": (old or {}).get("not_before", time.time()),
                    "colors": colors | {u.service: u.color for u in units},
                    "chained": (old or {}).get("chained") or {}}

        self.records.update(t.name, "scale-down", merged)

    # -- recovery --------------------------------------------------------------------------

    def recover(self, undo_paused: bool = True, paused_ok: bool = False) -> list[str]:
        """Rebuild lost records from reality, undo what an interrupted (or, with
        ``undo_paused``, a paused) release left, settle workers, finish a due scale-down.
        A paused release raises unless ``undo_paused`` or ``paused_ok`` (it is left as it is).
        Returns what was (or, on a dry run, would be) done."""
        t = self.target
        with self.records.snapshot(t.name, t.family):
            inflight = self._inflight_or_aside()
            actions: list[str] = []
            done: set[str] = set()
            for service in sorted({*t.services(self.records),
                                   *(u.service for u in _units(inflight or {}))}):
                actions += self.reality.reconcile(service, in_release=bool(inflight))
                done.add(service)
            actions += t.rebuild(self.reality, self.records)
            inflight = self._inflight_or_aside()
            for service in sorted({*t.services(self.records),  # known from rebuilt records
                                   *(u.service for u in _units(inflight or {}))} - done):
                actions += self.reality.reconcile(service, in_release=bool(inflight))
            if inflight and inflight.get("paused_after") and not undo_paused:
                if paused_ok:
                    return actions
                at = f" at {inflight['weight']}%" if inflight.get("weight") else ""
                raise OperationFailed(f"{t.label}: {_describe(inflight)} is paused{at} after "
                                      f"{inflight['paused_after']}; {t.paused_hint()}")
            if inflight:
                state = "paused" if inflight.get("paused_after") else "interrupted"
                actions.append(f"{state} {t.noun} found ({_describe(inflight)}, phase "
                               f"{inflight.get('phase')}, at {inflight.get('weight')}%)")
                if not self.dry_run:
                    self._undo(inflight, None, recovered=True)
            else:
                actions += self._settle_live_workers()
                actions += self._unchain_live()
            actions += self._scale_down(due_only=True)
        for line in actions:
            self.say(f"recover: {line}")
        return actions

    def _inflight_or_aside(self) -> dict[str, Any] | None:
        from bluegreen.errors import InvalidRecord

        t = self.target
        try:
            return self.records.get(t.name, t.inflight_key)
        except InvalidRecord:
            self.say(f"{t.label}: {self.records.set_aside(t.name, t.inflight_key)}")
            return None

    def _settle_live_workers(self) -> list[str]:
        """Workers left both running (a swap killed half-way) settled on their live color."""
        found = [u for u in self.target.live_units(self.records)
                 if not u.routed and u.color and any(
                     self.steps.running(u.service, c) != (c == u.color) for c in model.COLORS)]
        if found and not self.dry_run:
            self.settle_workers(found)
        return [f"worker {u.service} settled on {u.color}" for u in found]

    def _unchain_live(self) -> list[str]:
        """Callers left chained by a command stopped before it removed its chains (a rollback
        interrupted after its switch), with no release or stop of old colors under way:
        routed like every other caller again."""
        pending = self.records.get(self.target.name, "scale-down") or {}
        found = [u for u in self.target.live_units(self.records)
                 if u.routed and u.endpoint and u.color and u.service not in (
                     pending.get("chained") or {}) and self.steps.proxy_chains(u.service)]
        if found and not self.dry_run:
            self.steps.route([Move(u.service, u.color, 100, location=u.location,
                                   endpoint=u.endpoint) for u in found])
        return [f"{u.service}: callers chained with no release under way: chains removed"
                for u in found]

    def _history(self, inflight: dict[str, Any], result: str,
                 why: BaseException | None = None, failed_phase: str | None = None,
                 action: str | None = None) -> None:
        entry = self.target.entry(inflight, result) | ({"action": action} if action else {}) | {
            "weight": inflight.get("weight"), "start": inflight.get("started"),
            "end": time.time(), "by": inflight.get("by") or who()}
        if result != "ok":
            entry["failed_phase"] = failed_phase
        if why is not None:
            entry["error"] = str(why)
        self.records.add_history(self.target.name, entry)

    # -- dry runs ---------------------------------------------------------------------------

    def _dry_run(self, inflight: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
        """What each phase would do, and the proxy change of the first step against what the
        proxy routes now (new colors, not deployed, shown by their containers' names and
        port); nothing is locked, written, started or posted."""
        units = _units(inflight)
        moving = [u for u in units if u.moving]
        self.say(f"{self.target.label}: {_describe(inflight)}")
        self.steps.deploy_many([(u.service, u.color, self.target.deploy_spec(u))
                                for u in moving if u.routed])
        self.say(f"would run pre-integration tests: {self._describe_tests(moving, 'pre')}")
        first = next((w for w in self.opts.steps if not (self.opts.confirm and w == 100)), 0)
        self.say(f"==> {self.target.label}: the proxy at {first}% (the first step), against "
                 f"what it routes now")
        leaving = tuple(u.service for u in units if u.removed and u.routed) if first == 100 else ()
        self.steps.route(self._moves(inflight, first), unrouted=leaving, planned={
            (u.service, u.color): self.target.deploy_spec(u) for u in moving if u.routed})
        self.say(f"would run post-integration tests: {self._describe_tests(units, 'proxy')} on "
                 f"{self.opts.proxy_url}")
        old = [f"{u.service}-{u.before}" for u in units
               if u.routed and u.before and (u.moving or u.removed)]
        self.say(f"would stop {', '.join(old)}" if old else "no old color to stop")
        return summary | {"result": "dry-run"}

    def _dry_resume(self, inflight: dict[str, Any], todo: tuple[str, ...],
                    summary: dict[str, Any]) -> dict[str, Any]:
        """What a resumed release would do next: the proxy change of its next step and the
        records it would write."""
        units = _units(inflight)
        if "switch" in todo:
            weight = next((w for w in inflight["steps"] if w > inflight["weight"]), 100)
            leaving = tuple(u.service for u in units if u.removed and u.routed) \
                if weight == 100 else ()
            self.say(f"==> {self.target.label}: the proxy at {weight}%")
            self.steps.route(self._moves(inflight, weight), unrouted=leaving)
        for u in units:
            if not u.routed and (u.moving or u.removed):
                self.say(f"would {'start' if u.color else 'stop'} worker {u.service}"
                         f"{f'-{u.color}' if u.color else ''}")
        self.records.put(self.target.name, self.target.inflight_key, None)
        self.stop_old({u.service: u.before for u in units
                       if u.routed and u.before and (u.moving or u.removed)})
        return summary | {"result": "dry-run"}

    # -- the book's single test steps ----------------------------------------------------

    def pre_test(self, color: str) -> None:
        """``runBGPreIntegrationTests``: the color tested directly; on failure it is stopped
        and the proxy left as it is."""
        t = self.target
        unit = Unit(t.name, t.name, "routed", None, color)
        with self.locked():
            try:
                self._pre_test({"units": {t.name: unit.to_json()}}, [unit])
            except OperationFailed:
                self.steps.stop(t.name, color)
                raise

    def post_test(self, current: str | None, nxt: str) -> None:
        """``runBGPostIntegrationTests``: the tests through the proxy; on failure the proxy
        back on ``current`` (a first deployment: out of the proxy) and ``nxt`` stopped; else
        ``current`` stopped after ``--keep-old``."""
        t = self.target
        unit = Unit(t.name, t.name, "routed", current, nxt)
        inflight = {"units": {t.name: unit.to_json()}, "routed_before": {}}
        with self.locked():
            try:
                self._proxy_tests([unit], 100, final=True)
            except OperationFailed as exc:
                self._undo(inflight, exc, "post-test", history=False)
                raise
            old = {t.name: current} if current and current != nxt else {}
            if old:
                self.records.put(t.name, "scale-down", {
                    "not_before": time.time() + self.opts.keep_old, "colors": old})
        self.stop_old(old)

    # -- rollback ---------------------------------------------------------------------------

    def rollback(self, stop_current: bool = False) -> dict[str, Any]:
        """Back to what was live before: every unit whose color differs in ONE proxy change
        (its color started first when it stopped), chains kept for the callers left behind
        until their requests finish. A single service that is settled, with its other color
        running, registered and passing, is switched before anything else is read (a
        rollback's budget is 100 ms); recovery runs after."""
        t = self.target
        started = time.time()
        with self.locked(), contextlib.ExitStack() as snap:
            snap.enter_context(self.records.snapshot(t.name))
            plan = t.rollback_plan(self, snap)
            summary = plan.summary | {"result": "failed"}
            units = plan.units
            try:
                with self.phase("Rollback", plan.what):
                    for u in units:
                        if u.routed and u.name not in plan.ready and not self.steps.healthy(
                                u.service, u.color):
                            self.say(f"starting {u.service}-{u.color} again")
                            self.steps.bring_up(u.service, u.color)
                    inflight = {"units": {u.name: u.to_json() for u in units}}
                    moves = [m for m in self._moves(inflight, 100)]
                    dropped = tuple(u.service for u in plan.dropped if u.routed)
                    # the callers kept on their release before any caller moves: a request
                    # passes nginx twice, and a reload does not change every worker at once
                    first = [m for m in self._moves(inflight, 0) if m.endpoint and m.chains]
                    if first:
                        self.steps.route(first)
                    self.steps.route(moves, unrouted=dropped, ready={
                        (u.service, u.color): plan.ready[u.name] for u in units
                        if u.name in plan.ready})
                summary["result"] = "ok"
            finally:
                snap.close()  # the switch read the color from the records read with the lock
                if not self.dry_run:
                    t.rolled_back(self.records, plan, summary["result"])
                    self.records.add_history(t.name, t.rollback_entry(plan) | {
                        "result": summary["result"], "start": started, "end": time.time()})
            if any(m.chains for m in moves) and not self.dry_run:
                self.steps.proxy.drain(self.steps.drain_timeout)  # requests in the callers left
                self.steps.route(self._moves(inflight, 100, chained=False))
            self.settle_workers([*(u for u in units if not u.routed),
                                 *(Unit(u.name, u.service, u.kind, u.before, None)
                                   for u in plan.dropped if not u.routed)]) \
                if not self.dry_run else None
            if plan.ready and not self.dry_run:  # after the switch: a failure is said, it stands
                interrupts.hold("rollback:switched")
                try:
                    self.recover()
                except (OperationFailed, Unreachable) as exc:
                    self.say(f"{t.label}: recovery after the rollback failed, the next run, "
                             f"rollback or recover repeats it: {exc}")
            if stop_current and not self.dry_run:
                self.steps.stop_many([(u.service, u.before) for u in units
                                      if u.routed and u.before])
        return summary | {"phases": self.phases}


def _units(inflight: dict[str, Any]) -> list[Unit]:
    return [Unit.from_json(name, data) for name, data in (inflight.get("units") or {}).items()]


def _describe(inflight: dict[str, Any]) -> str:
    """A release in a message: ``release 3 (...)`` or ``run blue -> green (image)``."""
    units = _units(inflight)
    moves = ", ".join(f"{u.service} {u.before or '-'} -> {u.color or '-'}" for u in units
                      if u.moving or u.removed)
    if inflight.get("release") is not None:
        return f"release {inflight['release']} ({moves})"
    if len(units) == 1:
        u = units[0]
        return f"run {u.before or '(none)'} -> {u.color} ({u.image})"
    return f"release ({moves})"


def _gated(units: list[Unit]) -> dict[str, tuple[str, str | None]]:
    """Service -> (new color, old color) of each moving routed unit: what a step's figures
    compare."""
    return {u.service: (u.color, u.before) for u in units if u.moving and u.routed and u.color}


def _verdict(result: checks.TestResult) -> str:
    return "passed" if result.ok else "failed"
