"""Several proxies as one: a change is applied to every proxy, all or nothing.

The proxies are applied to in order. When one fails, those already changed get the routes
they had before back (the last change first) and the error names the failing proxy; the
routes to put back are read from every proxy before anything changes, so a proxy that cannot
be read fails the change before any proxy is touched. ``serving`` answers for the first
proxy; ``disagreements`` says which proxies route a service differently from the first, and
``repair`` makes them agree again on the winner: the record's color when it is healthy and a
proxy routes to it, else the color a strict majority of the proxies route to when healthy,
else none (never one proxy alone against the record and the others).

``partial`` (``--partial``): a proxy found unreachable is set aside (``down``) instead of
failing the command, as long as one proxy is left, whichever call finds it (the ping, a read,
a change, a repair: every call on a proxy goes through :meth:`FanoutProxy._ask`); reads and
changes go to the others, and the routes each one set aside missed are kept (``missed``) for
the caller to record as behind. A proxy recorded as behind (``hold_back``) never counts in
:meth:`winner`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

from bluegreen import interrupts
from bluegreen.errors import BlueGreenError, OperationFailed, Unreachable
from bluegreen.model import Counts, Route, Serving
from bluegreen.proxy.base import Proxy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _named(name: str, proxy: Proxy, exc: BaseException) -> BaseException:
    """``exc`` with the proxy's name in front (same class, so the same exit status)."""
    if isinstance(exc, Unreachable):
        return Unreachable(f"proxy {name} ({exc.what})", exc.where, str(exc).partition(": ")[2])
    if isinstance(exc, BlueGreenError):
        new = type(exc).__new__(type(exc))
        new.__dict__.update(exc.__dict__)
        new.args = (f"proxy {name}: {exc}",)
        return new
    return OperationFailed(f"proxy {name} ({proxy.where}): {type(exc).__name__}: {exc}")


ASIDE = object()  # what FanoutProxy._ask gives for a proxy it has just set aside


def _same(a: Serving, b: Serving) -> bool:
    return (a.color, a.weight if a.servers else 0, set(a.servers)) == \
        (b.color, b.weight if b.servers else 0, set(b.servers))


def _describe(s: Serving) -> str:
    if not s.servers:
        return "nothing"
    return f"{s.color or '(no color)'} {s.weight}% ({', '.join(sorted(s.servers))})"


class FanoutProxy(Proxy):
    """N named proxies (local, container, dynamic, or a mix) that route every service alike."""

    def __init__(self, proxies: Sequence[tuple[str, Proxy]], partial: bool = False) -> None:
        if not proxies:
            raise ValueError("no proxy")
        self.proxies = list(proxies)
        self.where = "; ".join(f"proxy {n}: {p.where}" for n, p in self.proxies)
        self.partial = partial
        self.down: dict[str, str] = {}  # partial: proxies set aside as unreachable -> why
        self.held: set[str] = set()  # proxies recorded as behind
        self._missed: dict[str, dict[str, Route]] = {}

    @property
    def live(self) -> list[tuple[str, Proxy]]:
        """The proxies not set aside as unreachable."""
        return [(n, p) for n, p in self.proxies if n not in self.down]

    def _set_aside(self, name: str, exc: BaseException) -> bool:
        """Partial mode: an unreachable proxy is set aside (True) while another one is left."""
        if not self.partial or not isinstance(exc, Unreachable) or \
                all(n == name or n in self.down for n, _p in self.proxies):
            return False
        self.down[name] = str(exc)
        return True

    def _error(self, name: str, proxy: Proxy, exc: BaseException) -> BaseException:
        err = _named(name, proxy, exc)
        if isinstance(err, Unreachable) and not self.partial and len(self.proxies) > 1:
            err.args = (f"{err.args[0]} (--partial changes the reachable proxies and records "
                        f"this one as behind)",)
        return err

    def _ask(self, name: str, proxy: Proxy, fn: Callable[[Proxy], Any]) -> Any:
        """``fn(proxy)``; :data:`ASIDE` when it is unreachable and partial mode sets it aside;
        any other failure raised with the proxy's name (and, unreachable, ``--partial``'s)."""
        try:
            return fn(proxy)
        except Exception as exc:
            if self._set_aside(name, exc):
                return ASIDE
            raise self._error(name, proxy, exc) from exc

    def _each(self, fn: Callable[[Proxy], object]) -> list[tuple[str, Any]]:
        """``fn`` of every live proxy: (name, answer), those set aside meanwhile left out."""
        answers = [(name, self._ask(name, proxy, fn)) for name, proxy in self.live]
        return [(name, answer) for name, answer in answers if answer is not ASIDE]

    def _first(self, fn: Callable[[Proxy], Any]) -> Any:
        """``fn`` of the first proxy that answers (partial: the next when one is unreachable)."""
        for name, proxy in self.live:
            answer = self._ask(name, proxy, fn)
            if answer is not ASIDE:
                return answer
        raise AssertionError("no proxy left")  # _set_aside always leaves one

    def ping(self) -> None:
        self._each(lambda p: p.ping())

    def skipped(self) -> dict[str, str]:
        return dict(self.down)

    def names(self) -> list[str]:
        return [n for n, _p in self.proxies]

    def hold_back(self, names: set[str]) -> None:
        self.held = set(names)

    def held_back(self) -> set[str]:
        return set(self.held)

    def missed(self) -> dict[str, list[Route]]:
        missed, self._missed = self._missed, {}
        return {n: list(routes.values()) for n, routes in missed.items()}

    def bring_in_line(self, name: str, routes: Sequence[Route]) -> bool | None:
        """Apply ``routes`` to proxy ``name`` alone (one left behind); None when it is still
        unreachable (partial mode)."""
        proxy = dict(self.proxies).get(name)
        if proxy is None:
            raise OperationFailed(f"proxy {name} is recorded as behind but not configured "
                                  f"(--proxy)")
        if name in self.down:
            return None
        done = self._ask(name, proxy, lambda p: p.apply(routes))
        return None if done is ASIDE else done

    @property
    def location(self) -> str:  # type: ignore[override]
        return self.live[0][1].location

    def exposures(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for _name, exposures in self._each(lambda p: p.exposures()):
            found.update(exposures)
        return found

    def serving(self, service: str) -> Serving:
        return self._first(lambda p: p.serving(service))

    def diff(self, routes: Sequence[Route]) -> str:
        texts = self._each(lambda p: p.diff(routes))
        out = [f"proxy {name}: unreachable, left behind (--partial)\n" for name in self.down]
        out += [f"proxy {name}:\n{text}" if len(self.proxies) > 1 else text
                for name, text in texts if text]
        return "".join(out)

    def apply(self, routes: Sequence[Route]) -> bool:
        """Every proxy or none: on a failure the proxies already changed get their previous
        routes back, and the error names the proxy that failed (and any left changed)."""
        before = dict(self._each(lambda p: [p.current(r.service) for r in routes]))
        done: list[tuple[str, Proxy]] = []
        for name, proxy in self.live:
            try:
                if proxy.apply(routes):
                    done.append((name, proxy))
            except BaseException as exc:
                if isinstance(exc, Exception) and self._set_aside(name, exc):
                    continue  # partial: it keeps what it had (a proxy's apply is all or nothing)
                if done:
                    interrupts.hold("fanout:restore")  # a fault test's moment
                stuck = self._restore(done, before)
                if not isinstance(exc, Exception):
                    raise
                err = self._error(name, proxy, exc)
                err.stuck = stuck  # type: ignore[attr-defined]  # proxies left changed
                aside = [n for n, _p in done if n in self._missed]
                if aside:
                    err.args = (f"{err.args[0]}; proxy {', '.join(aside)} became unreachable "
                                f"before it was put back: left behind (--partial), the next "
                                f"command that reaches it puts it back",)
                if stuck:
                    err.args = (f"{err.args[0]}; could not put back {', '.join(stuck)}: "
                                f"the next run or recover repairs them",)
                elif done and not aside:
                    err.args = (f"{err.args[0]} (proxy {', '.join(n for n, _ in done)} put back "
                                f"as it was)",)
                raise err from exc
        if done:  # the proxies set aside missed this change: they are behind
            for name in self.down:
                self._missed.setdefault(name, {}).update({r.service: r for r in routes})
        return bool(done)

    def _restore(self, done: list[tuple[str, Proxy]], before: dict[str, list[Route]]) -> list[str]:
        """Put back the routes of the changed proxies; the names of those that failed. Partial:
        one found unreachable meanwhile is set aside, its routes before kept as what it missed
        (the caller records it as behind, and the next command brings it back in line)."""
        stuck = []
        for name, proxy in reversed(done):
            try:
                proxy.apply(before[name])
            except Exception as exc:
                if self._set_aside(name, exc):
                    self._missed.setdefault(name, {}).update({r.service: r for r in before[name]})
                    continue
                stuck.append(f"proxy {name} ({exc})")
        return stuck

    def figures(self, services: Sequence[str]) -> dict[str, dict[str, Counts]]:
        """Each service's and color's counts summed over the proxies (the epoch: theirs,
        joined with ",")."""
        each = [figures for _n, figures in self._each(lambda p: p.figures(services))]
        out: dict[str, dict[str, Counts]] = {}
        for service in services:
            colors = sorted({c for figures in each for c in figures.get(service, {})})
            out[service] = {}
            for color in colors:
                parts = [f[service][color] for f in each if color in f.get(service, {})]
                width = max(len(c.buckets) for c in parts)
                out[service][color] = Counts(
                    sum(c.requests for c in parts), sum(c.errors for c in parts),
                    sum(c.failures for c in parts),
                    tuple(sum(c.buckets[i] for c in parts if i < len(c.buckets))
                          for i in range(width)),
                    ",".join(c.epoch for c in parts))
        return out

    def drain(self, timeout: float) -> bool:
        """Every live proxy drained (one set aside meanwhile is not waited for)."""
        deadline = time.monotonic() + timeout
        return all([drained for _n, drained in
                    self._each(lambda p: p.drain(max(0.0, deadline - time.monotonic())))])

    def current(self, service: str) -> Route:
        return self._first(lambda p: p.current(service))

    def disagreements(self, service: str) -> list[str]:
        """One line per proxy that routes ``service`` unlike the first (or cannot say);
        partial: the proxies set aside are not read."""
        want = self.serving(service)
        (first_name, _first), *others = self.live
        lines = []
        for name, proxy in others:
            try:
                have = proxy.serving(service)
            except BlueGreenError as exc:
                if self._set_aside(name, exc):
                    continue
                lines.append(f"proxy {name} cannot say what it routes {service} to: {exc}")
                continue
            if not _same(have, want):
                lines.append(f"proxies disagree: {first_name} routes {service} to "
                             f"{_describe(want)}, {name} to {_describe(have)}")
        for name, proxy in self.live:  # each one's own (a damaged state file)
            with contextlib.suppress(BlueGreenError):  # said above, or by serving
                found = self._ask(name, proxy, lambda p: p.disagreements(service))
                lines += [f"proxy {name}: {line}" for line in (() if found is ASIDE else found)]
        return lines

    def winner(self, service: str, recorded: str | None,
               trusted: Callable[[Serving], bool]) -> tuple[str, Proxy, Serving] | None:
        """Which proxy's route wins when they disagree: one routing the record's color, when
        that color is healthy (``trusted``); else one routing the color a strict majority of
        the proxies route to, when healthy; else none (never one proxy alone against the
        record and the others). Proxies recorded as behind (``held``) and those set aside
        (before or while they are asked) are not asked; those set aside still count in the
        majority's total."""
        asked = [(n, p, self._ask(n, p, lambda q: q.serving(service)))
                 for n, p in self.live if n not in self.held]
        routed = [(n, p, s) for n, p, s in asked if s is not ASIDE and s.servers]
        total = sum(1 for n, _p in self.proxies if n not in self.held)
        if recorded:
            hit = next((r for r in routed if r[2].color == recorded and trusted(r[2])), None)
            if hit:
                return hit
        for _n, _p, serving in routed:
            votes = sum(1 for r in routed if r[2].color == serving.color)
            if serving.color and 2 * votes > total:
                hit = next(r for r in routed if r[2].color == serving.color)
                return hit if trusted(hit[2]) else None
        return None

    def repair(self, service: str, trusted: Callable[[Serving], bool],
               recorded: str | None = None) -> list[str]:
        """Re-apply the winning route (:meth:`winner`) to every proxy that routes the service
        differently; with no winner nothing is changed and the line says so.

        Partial: a proxy found unreachable on the way is set aside (the winner chosen again
        when it was the winner's); with a winner, each proxy set aside during the repair, and
        each one set aside before it when the repair changed a proxy, missed the winning
        route (``missed``), as it would have missed a change."""
        before = set(self.down)
        done = [f"proxy {n}: {line}" for n, lines in
                self._each(lambda p: p.repair(service, trusted, recorded)) for line in lines]
        while True:  # each round sets a proxy aside or ends; _set_aside always leaves one
            win = self.winner(service, recorded, trusted)
            if win is None:
                first = self.serving(service)
                if any(not _same(have, first) for _n, have in
                       self._each(lambda p: p.serving(service))):
                    done.append(f"proxies disagree on {service} and neither the record "
                                f"({recorded or 'none'}) nor a majority of them routes to a "
                                f"healthy color: left as they are (switch to choose)")
                return done
            name, source, want = win
            route = self._ask(name, source, lambda p: p.current(service))
            if route is not ASIDE:
                break
        changed = False
        for other, proxy in self.live:
            if proxy is source:
                continue
            have = self._ask(other, proxy, lambda p: p.serving(service))
            if have is ASIDE or _same(have, want) or \
                    self._ask(other, proxy, lambda p: p.apply([route])) is ASIDE:
                continue
            changed = True
            done.append(f"proxy {other} routed like proxy {name}: {_describe(want)}")
        for lost in self.down:
            if changed or lost not in before:
                self._missed.setdefault(lost, {})[service] = route
        return done
