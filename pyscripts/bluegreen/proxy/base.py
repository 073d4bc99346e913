"""The proxy interface: apply the desired routes of one or more services as ONE change, say
what a service is routed to, and let requests sent to an old route finish."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from bluegreen.errors import UsageError
from bluegreen.model import Counts, Instance, Route, Server, Serving

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Proxy(ABC):
    where: str
    location: str = "/"  # the public location of a route that names none

    def exposures(self) -> dict[str, str]:
        """What the proxy exposes, each owned by one service: ``route:<location>`` and
        ``endpoint:<name>`` -> service."""
        return {}

    def exposed(self, service: str) -> set[str]:
        """What :meth:`exposures` gives ``service`` (backends read just its own files)."""
        return {k for k, s in self.exposures().items() if s == service}

    @abstractmethod
    def ping(self) -> None:
        """Raise ``Unreachable`` when the proxy cannot be reached."""

    @abstractmethod
    def serving(self, service: str) -> Serving:
        """What the proxy routes the service to now."""

    @abstractmethod
    def diff(self, routes: Sequence[Route]) -> str:
        """What ``apply`` would change, as text ('' when nothing): for ``--dry-run``."""

    @abstractmethod
    def apply(self, routes: Sequence[Route]) -> bool:
        """Route every service as given, in one validated change, all or nothing: on any
        failure the proxy keeps what it had. False when nothing had to change."""

    @abstractmethod
    def drain(self, timeout: float) -> bool:
        """Wait until requests sent to replaced routes have finished; False on timeout."""

    def current(self, service: str) -> Route:
        """The route the proxy applies now, to put back after a failed change (no servers:
        the service is not routed). Backends that know each server's weight override it."""
        now = self.serving(service)
        servers = tuple(Server(hp.rpartition(":")[0], int(hp.rpartition(":")[2]))
                        for hp in now.servers)
        return Route(service, now.color if servers else None, servers, now.weight)

    def figures(self, services: Sequence[str]) -> dict[str, dict[str, Counts]]:
        """Service -> color -> what the proxy counted since its epoch (cumulative): only the
        dynamic mode counts."""
        raise UsageError("live figures and gates need --nginx-mode dynamic")

    def disagreements(self, service: str) -> list[str]:
        """Where proxies that should route alike do not (one proxy: never)."""
        return []

    def repair(self, service: str, trusted: Callable[[Serving], bool],
               recorded: str | None = None) -> list[str]:
        """Make every proxy route the service alike, on the record's color (``recorded``) or
        the majority's when ``trusted`` accepts it; what was done (one proxy: nothing to do)."""
        return []

    # -- several proxies, some left behind (--partial); one proxy: none of this applies -----

    def names(self) -> list[str]:
        """The names of several proxies (one proxy: none)."""
        return []

    def skipped(self) -> dict[str, str]:
        """Proxies set aside as unreachable (``--partial``) -> why."""
        return {}

    def missed(self) -> dict[str, list[Route]]:
        """Proxy -> the routes it missed, set aside, since the last call (taken once)."""
        return {}

    def hold_back(self, names: set[str]) -> None:
        """The proxies recorded as behind: they never count in the majority's choice."""
        return None

    def held_back(self) -> set[str]:
        """The proxies recorded as behind (:meth:`hold_back`) and not brought in line."""
        return set()

    def bring_in_line(self, name: str, routes: Sequence[Route]) -> bool | None:
        """Apply ``routes`` to the proxy ``name`` alone; None when it is still unreachable."""
        raise NotImplementedError(f"no proxy named {name}")


def weighted_route(service: str, color: str, new: Sequence[Instance], old: Sequence[Instance],
                   weight: int, **exposure: Any) -> Route:
    """``weight`` percent of the service's traffic on ``color``'s instances ``new``, the rest
    on the other color's ``old``; weights are the smallest integers with that ratio. Each
    server carries its color. At weight 0 the route is the old color's, with the new color's
    servers listed at weight 0 (no share of the traffic; a preview request reaches them)."""
    if weight == 100 or not old:
        return Route(service, color, tuple(Server(i.address, i.port, color=color) for i in new),
                     **exposure)
    if weight == 0:
        return Route(service, old[0].color,
                     tuple(Server(i.address, i.port, color=i.color) for i in old)
                     + tuple(Server(i.address, i.port, 0, color) for i in new), **exposure)
    import math  # a weight step only: not on a switch's or a rollback's path

    w_new, w_old = weight * len(old), (100 - weight) * len(new)
    g = math.gcd(w_new, w_old)
    servers = ([Server(i.address, i.port, w_new // g, color) for i in new]
               + [Server(i.address, i.port, w_old // g, i.color) for i in old])
    return Route(service, color, tuple(servers), weight, **exposure)
