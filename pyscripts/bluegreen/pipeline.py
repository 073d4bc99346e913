"""The safe pipeline: tests beside the old color, verified switch, rollback, lock, history,
and recovery of whatever an interrupted run left behind.

Invariant after every command, successful or not: the proxy routes to a running, healthy
color (or, before any successful first deployment, to nothing), and the recorded color
matches the proxy.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bluegreen import checks, validate
from bluegreen.core import Toolkit
from bluegreen.errors import OperationFailed

HISTORY_KEEP = 50
PHASES = ("deploy", "pre-test", "switch", "post-test")


@dataclass
class RunOptions:
    image: str
    port: int = 8080
    env: dict[str, str] = field(default_factory=dict)
    scale: int = 1
    network: str | None = None
    health_path: str = "/"
    pre: checks.TestSpec = field(default_factory=checks.TestSpec)
    post: checks.TestSpec = field(default_factory=checks.TestSpec)
    keep_old: float = 0.0
    proxy_url: str = "http://127.0.0.1"
    lock_wait: float = 0.0
    pull: bool = True


@dataclass
class Pipeline:
    kit: Toolkit
    phases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def say(self) -> Any:
        return self.kit.say

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
        if self.kit.dry_run:
            yield
            return
        with self.kit.registry.lock(service, wait, on_stale=self.say):
            yield

    def healthy(self, service: str, color: str | None) -> bool:
        """Every registered instance of the color passes its Consul HTTP check (so its
        container runs and answers). Instances are deregistered before they are stopped."""
        if not color:
            return False
        registered = self.kit.registry.instances(service, color)
        return bool(registered) and all(i.status == "passing" for i in registered)

    def record(self, service: str, entry: dict[str, Any]) -> None:
        """Append a history entry under the service's KV prefix (the last 50 are kept)."""
        self._history(validate.service(service), entry)

    def _history(self, service: str, entry: dict[str, Any]) -> None:
        entry.setdefault("by", os.environ.get("BUILD_URL") or os.environ.get("USER") or
                         socket.gethostname())
        self.kit.registry.append_json(service, "history", entry, HISTORY_KEEP)

    def history(self, service: str) -> list[dict[str, Any]]:
        items = self.kit.registry.get_json(validate.service(service), "history")
        return items if isinstance(items, list) else []

    def _domain(self, service: str, color: str) -> str:
        passing = self.kit.registry.instances(service, color, passing=True)
        if not passing:
            raise OperationFailed(f"no passing instance of {service}-{color} to test")
        return f"http://{passing[0].hostport}"

    # -- pre- and post-integration tests -------------------------------------------------

    def _run_tests(self, kind: str, spec: checks.TestSpec, domain: str) -> checks.TestResult | None:
        """Run and report; ``None`` on a dry run."""
        if self.kit.dry_run:
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
        result = self._run_tests("pre", spec, self._domain(service, color))
        if result is None or result.ok:
            return
        self.kit.stop(service, color)
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
        if current and self.healthy(service, current):
            self.kit.switch(service, current)
            self.say(f"proxy switched back to {service}-{current}")
        elif current:
            self.kit.bring_up(service, current)
            self.kit.switch(service, current)
            self.say(f"restarted and switched back to {service}-{current}")
        else:
            self.kit.unroute(service)
            self.say(f"first deployment: {service} removed from the proxy")
        self.kit.stop(service, nxt, force=True)
        raise OperationFailed(f"Post-integration tests failed: {result.detail}")

    def stop_old(self, service: str, old: str | None, keep_old: float) -> None:
        """Stop the old color, after ``keep_old`` seconds, unless it became live again."""
        if not old or self.kit.runtime is None:
            return
        if keep_old > 0:
            self.kit.registry.put_json(service, "scale-down",
                                       {"color": old, "not_before": time.time() + keep_old})
            self.say(f"keeping {service}-{old} for {keep_old:g}s (rollback is proxy-only)")
            time.sleep(keep_old)
        with self.locked(service, wait=600):
            self.kit.registry.put_json(service, "scale-down", None)
            if self.kit.live_color(service) == old:
                self.say(f"{service}-{old} is live again (rolled back); not stopping it")
                return
            if any(c.running for c in self.kit.runtime.containers(service, old)):
                self.kit.stop(service, old)

    # -- the whole deployment --------------------------------------------------------------

    def run(self, service: str, opts: RunOptions) -> dict[str, Any]:
        validate.service(service)
        summary: dict[str, Any] = {"service": service, "image": opts.image, "result": "failed"}
        started = time.time()
        old: str | None = None
        with self.locked(service, opts.lock_wait):
            actions = self.recover(service)
            if actions:
                summary["recovered"] = actions
            current = self.kit.registry.get_color(service)
            nxt = validate.next_color(current)
            old = current if current and self.healthy(service, current) else None
            summary.update({"from": current, "to": nxt})
            self.say(f"{service}: current color {current or '(none)'}, deploying {opts.image} "
                     f"as {nxt}")
            if self.kit.dry_run:
                return self._plan(service, current, nxt, old, opts, summary)
            inflight = {"id": uuid.uuid4().hex[:12], "image": opts.image, "from": current,
                        "to": nxt, "phase": "deploy", "started": started,
                        "host": socket.gethostname(), "pid": os.getpid()}
            phase = "deploy"
            try:
                for phase in PHASES:
                    self.kit.registry.put_json(service, "inflight", inflight | {"phase": phase})
                    self._phase(service, phase, current, nxt, opts)
            except BaseException as exc:
                summary.update(failed_phase=phase, error=str(exc))
                if phase in ("deploy", "switch"):
                    self._undo_new(service, nxt, current)
                self.kit.registry.put_json(service, "inflight", None)
                self._history(service, self._entry(summary, started))
                raise
            summary["result"] = "ok"
            self.kit.verify_release(service, nxt)
            # Done under the lock: the record is cleared, so a later lock holder never takes
            # this live run for an interrupted one; the old color's stop is a scale-down
            # record that recovery completes if this process dies.
            if old:
                self.kit.registry.put_json(service, "scale-down",
                                           {"color": old, "not_before": time.time() + opts.keep_old})
            self.kit.registry.put_json(service, "inflight", None)
            self._history(service, self._entry(summary, started))
        # Outside the lock: a rollback may happen while the old color is kept.
        with self.phase("stop-old", f"stop {service}-{old}" if old else "nothing to stop"):
            self.stop_old(service, old, opts.keep_old)
        summary["phases"] = self.phases
        return summary

    def _plan(self, service: str, current: str | None, nxt: str, old: str | None,
              opts: RunOptions, summary: dict[str, Any]) -> dict[str, Any]:
        """``run --dry-run``: say what each phase would do; change nothing."""
        self.kit.deploy(service, nxt, opts.image, opts.port, opts.env, opts.scale, opts.network,
                        opts.health_path, opts.pull)
        self.say(f"would run pre-integration tests: {opts.pre.describe()}")
        self.say(f"would route {service} to {nxt} and record {nxt}")
        self.say(f"would run post-integration tests: {opts.post.describe()} on {opts.proxy_url}")
        self.say(f"would stop {service}-{old}" if old else "no old color to stop")
        summary["result"] = "dry-run"
        return summary

    def _phase(self, service: str, phase: str, current: str | None, nxt: str,
               opts: RunOptions) -> None:
        if phase == "deploy":
            with self.phase("Deploy", f"{service}-{nxt} from {opts.image}"):
                self.kit.deploy(service, nxt, opts.image, opts.port, opts.env, opts.scale,
                                opts.network, opts.health_path, opts.pull)
        elif phase == "pre-test":
            with self.phase("Run pre-integration tests", opts.pre.describe()):
                if not opts.pre.empty and not self.kit.dry_run:
                    self.pre_test(service, nxt, opts.pre)
        elif phase == "switch":
            with self.phase("Update proxy", f"route {service} to {nxt}"):
                self.kit.switch(service, nxt)
        elif phase == "post-test":
            with self.phase("Run post-integration tests", opts.post.describe()):
                if not opts.post.empty:
                    self.post_test(service, current, nxt, opts.post, opts.proxy_url)

    def _undo_new(self, service: str, nxt: str, current: str | None) -> None:
        """After a failed deploy or switch: the proxy stays on (or returns to) ``current``.
        A failure here is reported, and the original error is the one that surfaces."""
        try:
            serving = self.kit.proxy.serving(service).color if self.kit.proxy else None
            if serving == nxt:
                if current and self.healthy(service, current):
                    self.kit.switch(service, current)
                else:
                    self.kit.unroute(service)
            self.kit.stop(service, nxt, force=True)
        except Exception as exc:
            self.say(f"cleanup after the failed phase: {exc}")

    @staticmethod
    def _entry(summary: dict[str, Any], started: float) -> dict[str, Any]:
        return {"action": "run", "image": summary.get("image"), "from": summary.get("from"),
                "to": summary.get("to"), "result": summary["result"],
                "failed_phase": summary.get("failed_phase"), "error": summary.get("error"),
                "start": started, "end": time.time()}

    # -- rollback ----------------------------------------------------------------------

    def rollback(self, service: str, lock_wait: float = 0.0, stop_current: bool = False
                 ) -> dict[str, Any]:
        """Route back to the other color; start it first if it was stopped."""
        validate.service(service)
        started = time.time()
        with self.locked(service, lock_wait):
            self.recover(service)
            current = self.kit.live_color(service)
            if not current:
                raise OperationFailed(f"{service} has no live color to roll back from")
            previous = validate.other_color(current)
            proxy_only = self.healthy(service, previous)
            if not proxy_only and self.kit.runtime and not self.kit.runtime.containers(service, previous):
                raise OperationFailed(f"no containers of {service}-{previous} to roll back to")
            release = self.kit.registry.get_json(service, f"release-{previous}") or {}
            if release and not release.get("verified"):
                raise OperationFailed(f"{service}-{previous} holds {release.get('image')}, whose "
                                      f"deployment did not pass; nothing verified to roll back to")
            summary = {"service": service, "from": current, "to": previous,
                       "proxy_only": proxy_only, "result": "failed"}
            try:
                with self.phase("Rollback", f"{service} {current} -> {previous}"
                                + (" (proxy only)" if proxy_only else " (starting it first)")):
                    if not proxy_only:
                        self.kit.bring_up(service, previous)
                    self.kit.switch(service, previous)
                summary["result"] = "ok"
            finally:
                if not self.kit.dry_run:
                    self._history(service, {"action": "rollback", "from": current,
                                            "to": previous, "result": summary["result"],
                                            "start": started, "end": time.time()})
            if stop_current and not self.kit.dry_run:
                self.kit.stop(service, current)
        summary["phases"] = self.phases
        return summary

    # -- recovery ----------------------------------------------------------------------

    def recover(self, service: str, apply: bool = True) -> list[str]:
        """Find and undo what an interrupted run left; return what was (or would be) done."""
        kit, reg = self.kit, self.kit.registry
        actions: list[str] = []
        inflight = reg.get_json(service, "inflight")
        serving = kit.proxy.serving(service).color if kit.proxy else None
        recorded = reg.get_color(service)
        act = apply and not kit.dry_run

        if inflight:
            # Unverified until post-test passed: prefer the color that was live before.
            order = [inflight.get("from"), serving, recorded]
            target = next((c for c in order if c in validate.COLORS and self.healthy(service, c)),
                          None)
            actions.append(f"interrupted run found ({inflight.get('from')} -> "
                           f"{inflight.get('to')}, phase {inflight.get('phase')})")
            if act:
                if target:
                    kit.switch(service, target)
                elif not inflight.get("from"):
                    kit.unroute(service)
            actions.append(f"proxy and record set to {target}" if target else
                           "no healthy color: removed from the proxy" if not inflight.get("from")
                           else "no healthy color to route to: proxy left as it is")
            other = inflight.get("to") if target != inflight.get("to") else inflight.get("from")
            if other in validate.COLORS and other != kit.live_color(service) and kit.runtime \
                    and any(c.running for c in kit.runtime.containers(service, other)):
                actions.append(f"stopped {service}-{other}")
                if act:
                    kit.stop(service, other)
            if act:
                reg.put_json(service, "inflight", None)
                self._history(service, {"action": "recover", "from": inflight.get("from"),
                                        "to": target, "result": "recovered",
                                        "image": inflight.get("image"),
                                        "failed_phase": inflight.get("phase"),
                                        "start": inflight.get("started"), "end": time.time()})
        elif serving and recorded != serving and self.healthy(service, serving):
            actions.append(f"recorded color {recorded} set to {serving}, which the proxy routes to")
            if act:
                reg.set_color(service, serving)

        pending = reg.get_json(service, "scale-down")
        if pending and pending.get("not_before", 0) <= time.time():
            color = pending.get("color")
            if color in validate.COLORS and color != kit.live_color(service) and kit.runtime and any(
                    c.running for c in kit.runtime.containers(service, color)):
                actions.append(f"stopped {service}-{color} (its keep-old time had passed)")
                if act:
                    kit.stop(service, color)
            if act:
                reg.put_json(service, "scale-down", None)
        for line in actions:
            self.say(f"recover: {line}")
        return actions
