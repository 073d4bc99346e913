"""The seed's sample application on the real Docker engine: serviceB reaches serviceA by the
internal endpoint name ``servicea.local`` (a network alias, or ``extra_hosts``) and answers
``Hello world!``; each release names itself in ``X-Version``."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from bluegreen_dev.sample_app import APP_IMAGES, build_sample_app_images, sample_app_refs
from bluegreen_dev.sandbox import ensure_dockerd, wait_for

pytestmark = pytest.mark.integration
_n = itertools.count()


@dataclass
class AppNet:
    """A user-defined bridge network and the containers started on it (removed at the end)."""

    client: Any
    network: Any
    containers: list[Any] = field(default_factory=list)

    def run(self, ref: str, aliases: tuple[str, ...] = (), env: dict[str, str] | None = None,
            extra_hosts: dict[str, str] | None = None) -> Any:
        port = APP_IMAGES[ref.partition(":")[0]][1]
        name = f"{self.network.name}-{next(_n)}"
        config = {self.network.name: self.client.api.create_endpoint_config(aliases=list(aliases))}
        c = self.client.containers.run(ref, detach=True, name=name, environment=env or {},
                                       network=self.network.name, networking_config=config,
                                       extra_hosts=extra_hosts or {},
                                       ports={f"{port}/tcp": ("127.0.0.1", None)},
                                       labels={"bluegreen.test": "sample-app"})
        self.containers.append(c)
        c.reload()
        c.url = f"http://127.0.0.1:{c.ports[f'{port}/tcp'][0]['HostPort']}"
        wait_for(lambda: requests.get(c.url + "/health", timeout=1).ok, 30, f"{ref} health")
        return c

    def ip(self, container: Any) -> str:
        container.reload()
        return container.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"]


@pytest.fixture(scope="module")
def appnet() -> Iterator[AppNet]:
    import docker

    ensure_dockerd()
    build_sample_app_images()
    client = docker.from_env()
    network = client.networks.create(f"bg-sample-app-{os.getpid()}", driver="bridge")
    net = AppNet(client, network)
    try:
        yield net
    finally:
        for c in net.containers:
            c.remove(force=True)
        network.remove()


def test_images_exist_and_rebuild_is_skipped() -> None:
    ensure_dockerd()
    build_sample_app_images()
    assert build_sample_app_images() == []  # every tag exists: nothing is rebuilt
    assert len(sample_app_refs()) == 4


def test_servicea_answers_world_and_names_its_version(appnet: AppNet) -> None:
    a1 = appnet.run("bluegreen-servicea:v1")
    r = requests.get(a1.url + "/", timeout=5)
    assert (r.status_code, r.text, r.headers["X-Version"]) == (200, "world!", "servicea/v1")
    a2 = appnet.run("bluegreen-servicea:v2")
    r = requests.get(a2.url + "/", timeout=5)
    assert (r.text, r.headers["X-Version"]) == ("new world!", "servicea/v2")
    health = requests.get(a2.url + "/health", timeout=5)
    assert (health.status_code, health.text) == (200, "ok servicea v2\n")


def test_serviceb_calls_servicea_local_by_network_alias(appnet: AppNet) -> None:
    appnet.run("bluegreen-servicea:v1", aliases=("servicea.local",))
    b1 = appnet.run("bluegreen-serviceb:v1", env={"dep_endpoint": "http://servicea.local:5000"})
    r = requests.get(b1.url + "/", timeout=10)
    assert r.status_code == 200, r.text
    assert r.text == "Hello world!"
    assert (r.headers["X-Version"], r.headers["X-Dep-Version"]) == ("serviceb/v1", "servicea/v1")


def test_serviceb_v2_calls_servicea_local_by_extra_hosts(appnet: AppNet) -> None:
    # The name is mapped per container: how one color's containers reach one listener.
    a2 = appnet.run("bluegreen-servicea:v2")
    b2 = appnet.run("bluegreen-serviceb:v2", env={"dep_endpoint": "http://servicea.local:5000"},
                    extra_hosts={"servicea.local": appnet.ip(a2)})
    r = requests.get(b2.url + "/", timeout=10)
    assert (r.status_code, r.text) == (200, "Welcome to the new world!")
    assert (r.headers["X-Version"], r.headers["X-Dep-Version"]) == ("serviceb/v2", "servicea/v2")


def test_serviceb_answers_502_when_its_dependency_is_missing(appnet: AppNet) -> None:
    b = appnet.run("bluegreen-serviceb:v1", env={"dep_endpoint": "http://nowhere.local:5000"})
    r = requests.get(b.url + "/", timeout=15)
    assert r.status_code == 502
    assert "nowhere.local" in r.text
