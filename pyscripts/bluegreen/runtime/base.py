"""The runtime interface: what runs a color's instances (Docker containers, Swarm tasks)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from bluegreen.model import Container, DeploySpec


class Runtime(ABC):
    """Start, stop, restart, remove and list a color's instances; wait until they are healthy.
    Every method is keyed by (service, color); backends label what they start so that
    ``containers`` finds it again."""

    where: str
    client_modules: tuple[str, ...] = ()  # what changing instances imports (bluegreen.preload)
    # the proxy tells each instance apart by its source address (``Container.private_address``):
    # version-consistent chains route the callers of each release by it
    callers_by_address: bool = True

    @abstractmethod
    def ping(self) -> None:
        """Raise ``Unreachable`` when the runtime cannot be reached."""

    @abstractmethod
    def containers(self, service: str, color: str | None = None) -> list[Container]:
        """The service's instances (of one color), running or not, sorted by name."""

    def app_containers(self, app: str) -> list[Container]:
        """Every instance of an application's services (label ``bluegreen.app``), sorted."""
        raise NotImplementedError

    @abstractmethod
    def ensure_image(self, image: str, pull: bool = True) -> None:
        """Make ``image`` available, before anything is changed."""

    @abstractmethod
    def start(self, service: str, color: str, spec: DeploySpec) -> list[Container]:
        """Replace the color's instances by ``spec.scale`` new ones; return them started (not
        yet known healthy)."""

    @abstractmethod
    def create(self, service: str, color: str, spec: DeploySpec) -> list[Container]:
        """Replace the color's instances by ``spec.scale`` new ones, not started: ``restart``
        starts them (a worker's next color, started when it is swapped in)."""

    @abstractmethod
    def restart(self, service: str, color: str) -> list[Container]:
        """Start a stopped color's instances again (a rollback to a stopped color)."""

    @abstractmethod
    def wait_healthy(self, containers: list[Container], timeout: float) -> list[Container]:
        """Wait until each instance runs and answers its health path below 400 (one without
        a port: runs)."""

    @abstractmethod
    def stop(self, service: str, color: str, timeout: int = 10) -> list[str]:
        """Stop the color's instances, keeping them for a rollback; return their names."""

    @abstractmethod
    def remove(self, service: str, color: str) -> list[str]:
        """Remove the color's instances; return their names."""
