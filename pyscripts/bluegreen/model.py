"""The domain: colors and their rules, and the values that pass between the layers.

Nothing here reaches a backend; every other module may import it.
"""

from __future__ import annotations

from bluegreen.record import Record, factory

COLORS = ("blue", "green")
# The phases of every release, in order (``--until`` pauses after any but the last; the Jenkins
# steps run one stage per phase). The promotion and the stop of the old colors follow them.
PHASES = ("deploy", "pre-test", "switch", "post-test")
PHASE_TITLES = {"deploy": "Deploy", "pre-test": "Run pre-integration tests",
                "switch": "Update proxy", "post-test": "Run post-integration tests"}
# What an application's containers carry besides their service and color, so that its records
# can be rebuilt from them (``bluegreen.app.target``).
LABEL_APP, LABEL_RELEASE, LABEL_RECORD = "bluegreen.app", "bluegreen.release", "bluegreen.record"
APP_LABELS = (LABEL_APP, LABEL_RELEASE, LABEL_RECORD)
# Upper bounds (ms) of the proxy's latency histogram (upstream response time); one more bucket
# counts what is above the last.
LATENCY_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def stages() -> list[dict[str, str]]:
    """The phases in order with their stage titles: what ``run --json`` tells the Jenkins step
    ``blueGreenDeploy``, which runs one stage per phase."""
    return [{"name": p, "title": PHASE_TITLES[p]} for p in PHASES]


def next_color(current: str | None) -> str:
    """The book's rule: green when the current color is blue, otherwise blue."""
    return "green" if current == "blue" else "blue"


def other_color(color: str) -> str:
    """The color that is not ``color`` (which must be one of ``COLORS``)."""
    if color not in COLORS:
        raise ValueError(color)
    return "green" if color == "blue" else "blue"


def color_name(service: str, color: str) -> str:
    """``<service>-<color>``: the registry's service, the containers' base name, the book's
    ``SERVICE_NAME``. Built here only."""
    return f"{service}-{color}"


def container_names(service: str, color: str, scale: int) -> list[str]:
    """The names of a color's ``scale`` containers (one: ``<service>-<color>``; else ``-1``..)."""
    base = color_name(service, color)
    return [base] if scale == 1 else [f"{base}-{n}" for n in range(1, scale + 1)]


class Instance(Record, frozen=True):
    """One registered instance of a color."""

    id: str
    service: str
    color: str
    address: str
    port: int
    check_url: str = ""
    status: str = "unknown"  # passing | warning | critical | unknown

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"


class Container(Record, frozen=True):
    """One instance of a color as the runtime sees it (a container or a Swarm task)."""

    name: str
    id: str
    service: str
    color: str
    image: str
    state: str  # running | exited | created | ...
    address: str
    port: int | None  # published host port, when running
    container_port: int
    health_path: str
    private_address: str | None = None  # its address on its Docker network (as a caller)
    labels: tuple[tuple[str, str], ...] = ()  # its APP_LABELS, when an application's

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def up(self) -> bool:
        """Running, with its port published if it has one (a worker may have none)."""
        return self.running and (self.port is not None or not self.container_port)

    @property
    def health_url(self) -> str:
        return f"http://{self.address}:{self.port}{self.health_path}"


class DeploySpec(Record, frozen=True):
    """What a color runs: validated at the edge before it gets here."""

    image: str
    port: int = 8080  # 0: none (a worker that serves nothing)
    env: dict[str, str] = factory(dict)
    scale: int = 1
    network: str | None = None
    health_path: str = "/"
    pull: bool = True
    hosts: tuple[tuple[str, str], ...] = ()  # extra /etc/hosts entries (internal endpoints)
    labels: tuple[tuple[str, str], ...] = ()  # APP_LABELS of an application's containers


class Server(Record, frozen=True):
    address: str
    port: int
    weight: int | None = None
    color: str | None = None  # which color the server is of (the proxy counts per color)

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"


class Chain(Record, frozen=True):
    """Callers kept on one release: requests from ``callers`` (container addresses) to a
    service's internal endpoint reach ``servers`` (its ``color``) only. ``side``: new | old."""

    side: str
    color: str
    callers: tuple[str, ...]
    servers: tuple[Server, ...] = ()


class Route(Record, frozen=True):
    """The desired route of one service: ``weight`` percent to ``color``'s servers, the rest
    to the other color's (their weights are in ``servers``). No servers: the service is
    removed from the proxy."""

    service: str
    color: str | None
    servers: tuple[Server, ...] = ()
    weight: int = 100
    location: str | None = None  # the public location; None: the proxy's default, "": none
    endpoint: str | None = None  # an internal name (servicea.local) other services call
    chains: tuple[Chain, ...] = ()  # callers of the endpoint kept on their own release
    sticky: bool = False  # each client kept on one release by a bucket cookie (while split)

    @property
    def removed(self) -> bool:
        return not self.servers


class Move(Record, frozen=True):
    """Route ``service`` to ``color`` at ``weight`` percent (the rest stays on the other
    color), exposed at ``location`` and/or as the internal ``endpoint``."""

    service: str
    color: str
    weight: int = 100
    location: str | None = None
    endpoint: str | None = None
    chains: tuple[Chain, ...] = ()  # servers are filled in from the registry
    sticky: bool = False  # each client kept on one release by a bucket cookie (while split)


class Counts(Record, frozen=True):
    """What the proxy counted for one color of a service since ``epoch`` (cumulative; a
    window is ``after - before`` of one epoch, or ``after`` when the epoch changed): the
    responses served (``requests``), of them the 5xx (``errors``), the tries on a peer that
    failed to connect or timed out (``failures``), and the responses per latency bucket
    (``buckets``: one per bound of ``LATENCY_BOUNDS_MS``, then one above the last)."""

    requests: int = 0
    errors: int = 0
    failures: int = 0
    buckets: tuple[int, ...] = ()
    epoch: str = ""


class Serving(Record, frozen=True):
    """What the proxy routes a service to."""

    color: str | None
    weight: int
    servers: tuple[str, ...]


class Target(Record, frozen=True):
    """What one lock, one run record and one proxy change cover: a service, or the services of
    an application. Records and the lock live under ``name`` (a single service's own name)."""

    name: str
    services: tuple[str, ...]

    @classmethod
    def single(cls, service: str) -> Target:
        return cls(service, (service,))
