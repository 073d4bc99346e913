"""Proxies left behind: with several proxies and ``--partial``, a change reaches the reachable
ones only; each proxy that missed it is recorded under the target's records
(``<target>/proxies-behind``: the routes it must get, and since when), and brought in line
FIRST by the next command that takes the target's lock (``recover``, ``run``, ``switch``,
``rollback``, the ``app`` commands) once it answers again; ``status`` reports it meanwhile.

The record holds no secret: each proxy's name, when it fell behind, and its routes (service,
color, weight, servers, exposure).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from bluegreen.errors import InvalidRecord
from bluegreen.flow.records import Records
from bluegreen.flow.steps import Steps
from bluegreen.model import Chain, Route, Server
from bluegreen.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME = "proxies-behind"


def _servers(servers: tuple[Server, ...]) -> list[list[Any]]:
    return [[s.address, s.port, s.weight, s.color] for s in servers]


def route_json(r: Route) -> dict[str, Any]:
    return {"service": r.service, "color": r.color, "weight": r.weight,
            "servers": _servers(r.servers), "location": r.location, "endpoint": r.endpoint,
            "chains": [{"side": c.side, "color": c.color, "callers": list(c.callers),
                        "servers": _servers(c.servers)} for c in r.chains],
            "sticky": r.sticky}


def route_of(data: dict[str, Any]) -> Route:
    def servers(items: list[list[Any]]) -> tuple[Server, ...]:
        # [address, port, weight, color]; records written before servers had a color: 3 items
        return tuple(Server(str(a), int(p), None if w is None else int(w), c)
                     for a, p, w, c in (list(i) + [None] * (4 - len(i)) for i in items))

    return Route(data["service"], data.get("color"), servers(data.get("servers") or []),
                 int(data.get("weight", 100)), data.get("location"), data.get("endpoint"),
                 tuple(Chain(c["side"], c["color"], tuple(c["callers"]), servers(c["servers"]))
                       for c in data.get("chains") or []),
                 bool(data.get("sticky", False)))


def describe(entry: dict[str, Any]) -> str:
    """What a proxy behind must route: ``svc to green 100%, other removed``."""
    parts = []
    for r in entry.get("routes") or []:
        parts.append(f"{r['service']} to {r['color']} {r.get('weight', 100)}%"
                     if r.get("servers") else f"{r['service']} removed")
    return ", ".join(parts) or "nothing"


def since(entry: dict[str, Any]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.get("since") or 0))


def problems(records: Records, target: str) -> list[str]:
    """``status``: one line per proxy recorded as behind (its name, what it must route, since
    when)."""
    try:
        record = records.get(target, NAME) or {}
    except InvalidRecord as exc:
        return [f"{exc}"]
    return [f"proxy {name} is behind since {since(entry)} (a change made with --partial while "
            f"it was unreachable): it must route {describe(entry)}; recover (or the next run, "
            f"switch or rollback) brings it in line"
            for name, entry in sorted((record.get("proxies") or {}).items())]


def names(records: Records, target: str) -> list[str]:
    """The proxies recorded as behind for ``target`` (an unreadable record: all of them,
    as far as anyone can tell: ``["?"]``)."""
    try:
        record = records.get(target, NAME) or {}
    except InvalidRecord:
        return ["?"]
    return sorted(record.get("proxies") or {})


class Behind(Record):
    """The proxies-behind record of one target (``target``: a service, or ``<app>._app``)."""

    steps: Steps
    records: Records
    target: str

    def read(self) -> dict[str, Any]:
        try:
            record = self.records.get(self.target, NAME) or {}
        except InvalidRecord:
            self.steps.say(f"{self.target}: {self.records.set_aside(self.target, NAME)}")
            return {}
        return dict(record.get("proxies") or {})

    def catch_up(self) -> list[str]:
        """Each proxy recorded as behind that answers now gets its recorded routes (checked
        like every change), then leaves the record (CAS); one still unreachable stays
        recorded. What was (or, on a dry run, would be) done, each said in one line."""
        steps = self.steps
        if not steps.proxy or not steps.proxy.names():
            return []
        for name, why in steps.proxy.skipped().items():
            steps.say(f"proxy {name} unreachable, left out of this command (--partial): {why}")
        behind = self.read()
        steps.proxy.hold_back(set(behind))
        lines = []
        for name, entry in sorted(behind.items()):
            what = f"proxy {name}, behind since {since(entry)}"
            if name not in steps.proxy.names():
                lines.append(f"{what}, is not configured (--proxy): record kept")
            elif steps.dry_run:
                lines.append(f"would bring {what} in line: {describe(entry)}")
            elif steps.bring_in_line(name, [route_of(r) for r in entry["routes"]]) is not None:
                self.records.update(self.target, NAME, lambda old, n=name: _without(old, n))
                lines.append(f"{what}, brought in line ({describe(entry)}); its "
                             f"{NAME} record deleted")
        steps.proxy.hold_back({n for n in behind if n not in steps.proxy.names()
                               or n in steps.proxy.skipped() or steps.dry_run})
        for line in lines:
            steps.say(f"{self.target}: {line}")
        return lines

    def note(self, missed: dict[str, list[Route]]) -> None:
        """Record the routes each proxy left behind missed (CAS), merged per service with
        what it missed before; since: when it first fell behind."""
        now = time.time()

        def merge(old: Any) -> dict[str, Any]:
            proxies = dict((old or {}).get("proxies") or {})
            for name, routes in missed.items():
                entry = dict(proxies.get(name) or {"since": now, "routes": []})
                by_service = {r["service"]: r for r in entry["routes"]}
                by_service |= {r.service: route_json(r) for r in routes}
                entry["routes"] = [by_service[s] for s in sorted(by_service)]
                proxies[name] = entry
            return {"proxies": proxies}

        self.records.update(self.target, NAME, merge)
        for name, routes in sorted(missed.items()):
            self.steps.say(f"{self.target}: proxy {name} left behind (unreachable, --partial); "
                           f"recorded in {NAME}: "
                           f"{describe({'routes': [route_json(r) for r in routes]})}")


def _without(old: Any, name: str) -> dict[str, Any] | None:
    proxies = {n: e for n, e in ((old or {}).get("proxies") or {}).items() if n != name}
    return {"proxies": proxies} if proxies else None


@contextlib.contextmanager
def watch(steps: Steps, records: Records, target: str) -> Iterator[list[str]]:
    """Under the target's lock: the proxies left behind brought in line first, then every
    proxy change of the section that some proxy misses recorded. Yields the lines said."""
    behind = Behind(steps, records, target)
    done = behind.catch_up()
    previous, steps.on_behind = steps.on_behind, behind.note
    try:
        yield done
    finally:
        steps.on_behind = previous
