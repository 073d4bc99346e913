"""The safe pipeline: tests beside the old color, verified switch, rollback, lock, history,
and recovery of whatever an interrupted run left behind.

Invariant after every command, successful or not: the proxy routes to a running, healthy
color (or, before any successful first deployment, to nothing), and the recorded color
matches the proxy.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from bluegreen import interrupts, model, validate
from bluegreen.errors import Interrupted, OperationFailed, Unreachable, UsageError, redact
from bluegreen.flow import checks
from bluegreen.flow.steps import Steps
from bluegreen.model import DeploySpec
from bluegreen.record import Record, factory, replace
from bluegreen.registry.base import Lease, hostname

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HISTORY_KEEP = 50
PHASES = ("deploy", "pre-test", "switch", "post-test")


class RunOptions(Record):
    spec: DeploySpec
    pre: checks.TestSpec = factory(checks.TestSpec)
    post: checks.TestSpec = factory(checks.TestSpec)
    keep_old: float = 0.0
    proxy_url: str = "http://127.0.0.1"
    lock_wait: float = 0.0
    outcome: bool | None = None  # with resume: the result of the next test phase, run elsewhere
    outcome: bool | None = None  # with resume: the result of the next test phase, run elsewhere


class Pipeline(Record):
    steps: Steps
    phases: list[dict[str, Any]] = factory(list)
    lease: Lease | None = None

    @property
    def say(self) -> Any:
        return self.steps.say

    # -- helpers -----------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str, what: str) -> Iterator[None]:
        self.say(f"==> {name}: {what}")
        start = time.monotonic()
        record = {"phase": name, "what": what}
        self.phases.append(record)
        try:
            yield
        except BaseException as exc:
            record.update(result="failed", seconds=round(time.monotonic() - start, 3),
                          error=str(exc))
            self.say(f"<== {name}: FAILED after {time.monotonic() - start:.2f}s: {exc}")
            raise
        record.update(result="ok", seconds=round(time.monotonic() - start, 3))
        self.say(f"<== {name}: ok in {time.monotonic() - start:.2f}s")

    @contextlib.contextmanager
    def locked(self, service: str, wait: float) -> Iterator[None]:
        if self.steps.dry_run:
            yield
            return
        with self.steps.lock(service, wait, on_stale=self.say) as lease:
            self.lease = lease
            try:
                yield
            finally:
                self.lease = None

    def checkpoint(self, service: str, point: str, inflight: dict[str, Any] | None = None) -> None:
        """Between two steps of a run: a fault test's hold point; the lock still ours (taken
        again, with the run's records rewritten, when the registry restarted empty)."""
        interrupts.hold(point)
        if self.lease is None:
            return
        if self.lease.lost:
            raise OperationFailed(f"{service}: lost the deploy lock ({self.lease.lost})")
        if self.lease.verify():
            self.say(f"{service}: the registry had lost the deploy lock; taken again")
            self.steps.reconcile(service)
            if inflight:
                self.steps.set_record(service, "inflight", inflight)

    def record(self, service: str, entry: dict[str, Any]) -> None:
        """Append a history entry under the service's KV prefix (the last 50 are kept)."""
        self._history(validate.service(service), entry)

    def _history(self, service: str, entry: dict[str, Any]) -> None:
        entry.setdefault("by", os.environ.get("BUILD_URL") or os.environ.get("USER") or
                         hostname())
        if entry.get("error"):
            entry["error"] = redact(str(entry["error"]))
        with interrupts.shielded():
            self.steps.append_history(service, entry, HISTORY_KEEP)

    def history(self, service: str) -> list[dict[str, Any]]:
        items = self.steps.record(validate.service(service), "history")
        return items if isinstance(items, list) else []

    # -- pre- and post-integration tests -------------------------------------------------

    def _run_tests(self, kind: str, spec: checks.TestSpec, domain: str) -> checks.TestResult | None:
        """Run and report; ``None`` on a dry run."""
        if self.steps.dry_run:
            self.say(f"would run {spec.describe()} with DOMAIN={domain}")
            return None
        result = checks.run(spec, domain)
        verdict = "passed" if result.ok else "failed"
        self.say(f"{kind}-integration tests {verdict} against {domain}: {result.detail}")
        return result

    def pre_test(self, service: str, color: str, spec: checks.TestSpec) -> None:
        """Test the new color directly; on failure stop it and leave the proxy as it is."""
        validate.service(service)
        validate.color(color)
        result = self._run_tests("pre", spec, self.steps.test_domain(service, color))
        if result is None or result.ok:
            return
        self.steps.stop(service, color)
        raise OperationFailed(f"Pre-integration tests failed: {result.detail}")

    def post_test(self, service: str, current: str | None, nxt: str, spec: checks.TestSpec,
                  proxy_url: str) -> None:
        """Test through the proxy; on failure route back to ``current`` and stop ``nxt``.

        With no ``current`` (a first deployment) a failure removes the service from the
        proxy, clears the recorded color and stops ``nxt``: nothing unverified is served.
        """
        validate.service(service)
        validate.color(nxt)
        result = self._run_tests("post", spec, proxy_url)
        if result is None or result.ok:
            return
        if current and self.steps.healthy(service, current):
            self.steps.switch(service, current)
            self.say(f"proxy switched back to {service}-{current}")
        elif current:
            self.steps.bring_up(service, current)
            self.steps.switch(service, current)
            self.say(f"restarted and switched back to {service}-{current}")
        else:
            self.steps.unroute(service)
            self.say(f"first deployment: {service} removed from the proxy")
        self.steps.stop(service, nxt, force=True)
        raise OperationFailed(f"Post-integration tests failed: {result.detail}")

    def stop_old(self, service: str, old: str | None, keep_old: float) -> None:
        """Stop the old color, after ``keep_old`` seconds, unless it became live again."""
        if not old:
            return
        if keep_old > 0:
            self.steps.set_record(service, "scale-down",
                                       {"color": old, "not_before": time.time() + keep_old})
            self.say(f"keeping {service}-{old} for {keep_old:g}s (rollback is proxy-only)")
            time.sleep(keep_old)
        with self.locked(service, wait=600):
            self.steps.set_record(service, "scale-down", None)
            if self.steps.live_color(service) == old:
                self.say(f"{service}-{old} is live again (rolled back); not stopping it")
                return
            if self.steps.running(service, old):
                self.steps.stop(service, old)

    # -- the whole deployment --------------------------------------------------------------

    def run(self, service: str, opts: RunOptions, until: str | None = None,
            resume: bool = False) -> dict[str, Any]:
        """Deploy, pre-test, switch, post-test, then stop the old color. ``until``: pause after
        that phase (a promotion gate); ``resume``: go on with a paused run's next phase."""
        validate.service(service)
        summary: dict[str, Any] = {"service": service, "image": opts.spec.image, "result": "failed"}
        if not self.steps.dry_run:
            self.steps.preload()  # loads while the lock, recovery and the registry are waited on
        self.steps.refuse_if_in_release(service)
        with self.locked(service, opts.lock_wait):
            if resume:
                inflight = self._paused(service)
                current, nxt = inflight["from"], inflight["to"]
                todo = PHASES[PHASES.index(inflight["paused_after"]) + 1:]
                self._apply_outcome(opts, todo[0])
                opts.spec = replace(opts.spec, image=inflight.get("image") or opts.spec.image)
                summary["image"] = opts.spec.image
                started = inflight.get("started") or time.time()
            else:
                actions = self.recover(service, undo_paused=False)
                if actions:
                    summary["recovered"] = actions
                current = self.steps.live_color(service)
                nxt, todo, started = model.next_color(current), PHASES, time.time()
                inflight = {"id": os.urandom(6).hex(), "image": opts.spec.image, "from": current,
                            "to": nxt, "started": started, "host": hostname(),
                            "pid": os.getpid()}
            old = current if current and self.steps.healthy(service, current) else None
            summary.update({"from": current, "to": nxt})
            self.say(f"{service}: current color {current or '(none)'}, "
                     f"{'resuming' if resume else 'deploying'} {opts.spec.image} as {nxt}")
            if self.steps.dry_run:
                return self._plan(service, current, nxt, old, opts, summary)
            phase = todo[0]
            try:
                for phase in todo:
                    self.checkpoint(service, f"{phase}:before", inflight)
                    inflight = inflight | {"phase": phase, "paused_after": None}
                    with interrupts.shielded():
                        self.steps.set_record(service, "inflight", inflight)
                    self._phase(service, phase, current, nxt, opts)
                    if phase == until and phase != PHASES[-1]:
                        with interrupts.shielded():
                            self.steps.set_record(service, "inflight",
                                                       inflight | {"paused_after": phase})
                        self.say(f"{service}: paused after {phase}; go on with run --resume, "
                                 f"or undo with recover")
                        return summary | {"result": "paused", "paused_after": phase}
                self.checkpoint(service, "verified:before", inflight)
            except BaseException as exc:
                aborted = isinstance(exc, (Interrupted, KeyboardInterrupt))
                summary.update(result="aborted" if aborted else "failed", failed_phase=phase,
                               error=str(exc))
                self._undo(service, current, nxt)
                with interrupts.shielded():
                    self.steps.set_record(service, "inflight", None)
                    self._history(service, self._entry(summary, started))
                raise
            summary["result"] = "ok"
            with interrupts.shielded():
                self.steps.verify_release(service, nxt)
                # Done under the lock: the record is cleared, so a later lock holder never
                # takes this live run for an interrupted one; the old color's stop is a
                # scale-down record that recovery completes if this process dies.
                if old:
                    self.steps.set_record(service, "scale-down", {
                        "color": old, "not_before": time.time() + opts.keep_old})
                self.steps.set_record(service, "inflight", None)
                self._history(service, self._entry(summary, started))
        # Outside the lock: a rollback may happen while the old color is kept.
        with self.phase("stop-old", f"stop {service}-{old}" if old else "nothing to stop"):
            self.stop_old(service, old, opts.keep_old)
        summary["phases"] = self.phases
        return summary

    @staticmethod
    def _apply_outcome(opts: RunOptions, phase: str) -> None:
        if opts.outcome is None:
            return
        decided = checks.TestSpec.decided(opts.outcome)
        if phase == "pre-test":
            opts.pre = decided
        elif phase == "post-test":
            opts.post = decided
        else:
            raise UsageError(f"--outcome: the next phase, {phase}, runs no tests")

    def _paused(self, service: str) -> dict[str, Any]:
        inflight = self.steps.record(service, "inflight")
        if not inflight or not inflight.get("paused_after") or \
                inflight["paused_after"] not in PHASES[:-1]:
            raise OperationFailed(f"{service}: no paused run to resume")
        self.steps.reconcile(service)
        return dict(inflight)

    def _plan(self, service: str, current: str | None, nxt: str, old: str | None,
              opts: RunOptions, summary: dict[str, Any]) -> dict[str, Any]:
        """``run --dry-run``: say what each phase would do; change nothing."""
        self.steps.deploy(service, nxt, opts.spec)
        self.say(f"would run pre-integration tests: {opts.pre.describe()}")
        self.say(f"would route {service} to {nxt} and record {nxt}")
        self.say(f"would run post-integration tests: {opts.post.describe()} on {opts.proxy_url}")
        self.say(f"would stop {service}-{old}" if old else "no old color to stop")
        summary["result"] = "dry-run"
        return summary

    def _phase(self, service: str, phase: str, current: str | None, nxt: str,
               opts: RunOptions) -> None:
        if phase == "deploy":
            with self.phase("Deploy", f"{service}-{nxt} from {opts.spec.image}"):
                self.steps.deploy(service, nxt, opts.spec)
        elif phase == "pre-test":
            with self.phase("Run pre-integration tests", opts.pre.describe()):
                if not opts.pre.empty:
                    self.pre_test(service, nxt, opts.pre)
        elif phase == "switch":
            with self.phase("Update proxy", f"route {service} to {nxt}"):
                self.steps.switch(service, nxt)
                self.checkpoint(service, "switch:applied")
        elif phase == "post-test":
            with self.phase("Run post-integration tests", opts.post.describe()):
                if not opts.post.empty:
                    self.post_test(service, current, nxt, opts.post, opts.proxy_url)

    def _undo(self, service: str, current: str | None, nxt: str) -> None:
        """After any failure before the new color was verified: users are on ``current``
        (routed back there if this run had switched) and ``nxt`` is stopped. The color the
        proxy routed to before the run is never stopped nor unrouted: ``nxt`` is the other
        one. A failure here is reported; the original error is the one that surfaces."""
        steps = self.steps
        try:
            routed = steps.serving_color(service) == nxt
            if routed:
                if current and not self.steps.healthy(service, current):
                    steps.bring_up(service, current)
                if current:
                    steps.switch(service, current)
                    self.say(f"proxy switched back to {service}-{current}")
                else:
                    steps.unroute(service)
                    self.say(f"first deployment: {service} removed from the proxy")
            if steps.running(service, nxt):
                steps.stop(service, nxt, force=True, drain=routed)
                self.say(f"stopped the unverified {service}-{nxt}")
            else:
                steps.deregister(service, nxt)
        except Exception as exc:
            self.say(f"cleanup after the failed phase: {redact(str(exc))}")

    @staticmethod
    def _entry(summary: dict[str, Any], started: float) -> dict[str, Any]:
        return {"action": "run", "image": summary.get("image"), "from": summary.get("from"),
                "to": summary.get("to"), "result": summary["result"],
                "failed_phase": summary.get("failed_phase"), "error": summary.get("error"),
                "start": started, "end": time.time()}

    # -- rollback ----------------------------------------------------------------------

    def rollback(self, service: str, lock_wait: float = 0.0, stop_current: bool = False
                 ) -> dict[str, Any]:
        """Route back to the other color; start it first if it was stopped. When nothing
        waits for recovery and every container of the other color runs, registered and
        passing, the proxy is switched first and recovery runs after (a rollback's budget is
        100 ms); else recovery runs first."""
        validate.service(service)
        started = time.time()
        self.steps.refuse_if_in_release(service)
        with self.locked(service, lock_wait), contextlib.ExitStack() as records:
            records.enter_context(self.steps.snapshot(service))
            current = self.steps.settled(service)
            ready = self.steps.ready(service, model.other_color(current)) if current else None
            if not ready:
                self.recover(service)
                current = self.steps.live_color(service)
            release = self.steps.record(service, f"release-{model.next_color(current)}")
            if not ready:
                records.close()  # containers start first: what follows reads the records anew
            if not current:
                raise OperationFailed(f"{service} has no live color to roll back from")
            previous = model.other_color(current)
            proxy_only = bool(ready) or self.steps.healthy(service, previous)
            if not proxy_only and not self.steps.has_instances(service, previous):
                raise OperationFailed(f"no containers of {service}-{previous} to roll back to")
            release = release or {}
            if release and not release.get("verified"):
                why = ("its release record was lost and rebuilt from its containers, so it "
                       "counts as unverified" if release.get("rebuilt")
                       else "whose deployment did not pass")
                raise OperationFailed(f"{service}-{previous} holds {release.get('image')}, {why}; "
                                      f"nothing verified to roll back to")
            summary = {"service": service, "from": current, "to": previous,
                       "proxy_only": proxy_only, "result": "failed"}
            try:
                with self.phase("Rollback", f"{service} {current} -> {previous}"
                                + (" (proxy only)" if proxy_only else " (starting it first)")):
                    if not proxy_only:
                        self.steps.bring_up(service, previous)
                    self.steps.switch(service, previous, ready=ready)
                summary["result"] = "ok"
            finally:
                records.close()  # the switch read the color from the records read with the lock
                if not self.steps.dry_run:
                    self._history(service, {"action": "rollback", "from": current,
                                            "to": previous, "result": summary["result"],
                                            "start": started, "end": time.time()})
            if ready:  # after the switch: a failure here is said, the rollback stands
                interrupts.hold("rollback:switched")
                try:
                    self.recover(service)
                except (OperationFailed, Unreachable) as exc:
                    self.say(f"{service}: recovery after the rollback failed, the next run, "
                             f"rollback or recover repeats it: {exc}")
            if stop_current and not self.steps.dry_run:
                self.steps.stop(service, current)
        summary["phases"] = self.phases
        return summary

    # -- recovery ----------------------------------------------------------------------

    def recover(self, service: str, undo_paused: bool = True) -> list[str]:
        """Rebuild lost records from reality, undo what an interrupted (or, with
        ``undo_paused``, a paused) run left, finish a due scale-down. Returns what was (or on a
        dry run would be) done."""
        with self.steps.snapshot(service):
            return self._recover(service, undo_paused)

    def _recover(self, service: str, undo_paused: bool) -> list[str]:
        actions = self.steps.reconcile(service)
        inflight = self.steps.record(service, "inflight")
        if inflight and inflight.get("paused_after") and not undo_paused:
            raise OperationFailed(
                f"{service}: a run ({inflight.get('from') or '(none)'} -> {inflight['to']}, "
                f"{inflight.get('image')}) is paused after {inflight['paused_after']}; go on with "
                f"run --resume, or undo it with recover")
        if inflight:
            actions += self._undo_interrupted(service, inflight)
        actions += self._finish_scale_down(service)
        for line in actions:
            self.say(f"recover: {line}")
        return actions

    def _undo_interrupted(self, service: str, inflight: dict[str, Any]) -> list[str]:
        """The color live before the run serves again (it was verified; the new one was not)."""
        steps, act = self.steps, not self.steps.dry_run
        serving = steps.serving_color(service)
        recorded = steps.recorded_color(service)
        before, new = inflight.get("from"), inflight["to"]
        state = "paused" if inflight.get("paused_after") else "interrupted"
        actions = [f"{state} run found ({before} -> {new}, phase {inflight.get('phase')})"]
        target = next((c for c in (before, serving, recorded)
                       if c in model.COLORS and self.steps.healthy(service, c)), None)
        if target:
            actions.append(f"proxy and record set to {target}")
            if act:
                steps.switch(service, target)
        elif not before:
            actions.append("no healthy color: removed from the proxy")
            if act:
                steps.unroute(service)
        else:
            actions.append("no healthy color to route to: proxy left as it is")
        other = new if target != new else before
        if other and other != steps.live_color(service) and self.steps.running(service, other):
            actions.append(f"stopped {service}-{other}")
            if act:
                steps.stop(service, other)
        if act:
            with interrupts.shielded():
                steps.set_record(service, "inflight", None)
                self._history(service, {"action": "recover", "from": before, "to": target,
                                        "result": "recovered", "image": inflight.get("image"),
                                        "failed_phase": inflight.get("phase"),
                                        "start": inflight.get("started"), "end": time.time()})
        return actions

    def _finish_scale_down(self, service: str) -> list[str]:
        pending = self.steps.due_scale_down(service)
        if not pending:
            return []
        color, actions = pending["color"], []
        if color != self.steps.live_color(service) and self.steps.running(service, color):
            actions.append(f"stopped {service}-{color} (its keep-old time had passed)")
            if not self.steps.dry_run:
                self.steps.stop(service, color)
        if not self.steps.dry_run:
            self.steps.set_record(service, "scale-down", None)
        return actions
