"""Session-scoped clusters on this machine: a 1-node and a 3-node Docker Swarm lab
(``bluegreen_dev.swarm_lab``) and a 3-server Consul cluster (``bluegreen_dev.consul_cluster``).

Imported by the test modules that use them; each starts once per session and is torn down at
its end. A lab that cannot start is an error, never a skip. Start-up times go to stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from bluegreen_dev.consul_cluster import ConsulCluster
from bluegreen_dev.sandbox import build_sample_images, ensure_dockerd
from bluegreen_dev.swarm_lab import SwarmLab


def _lab(root: pytest.TempPathFactory, nodes: int, name: str, subnet: str) -> Iterator[SwarmLab]:
    ensure_dockerd()
    build_sample_images()
    lab = SwarmLab(root.mktemp(name), nodes, name, subnet)
    t0 = time.monotonic()
    try:
        lab.start()
        print(f"\nswarm lab {name}: {nodes} node(s) up in {time.monotonic() - t0:.1f}s "
              f"{ {k: round(v, 1) for k, v in lab.timings.items()} }", file=sys.stderr)
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def swarm1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmLab]:
    """A single-node swarm (the fast tests)."""
    yield from _lab(tmp_path_factory, 1, "bgsone", "10.213.1")


@pytest.fixture(scope="session")
def swarm3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmLab]:
    """One manager and two workers, each dockerd in its own network namespace."""
    yield from _lab(tmp_path_factory, 3, "bgsthree", "10.213.3")


@pytest.fixture(scope="session")
def consul_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulCluster]:
    cluster = ConsulCluster(tmp_path_factory.mktemp("consul-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture
def swarm3_own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmLab]:
    """A 3-node lab of the test's own, for a test that kills a node: the node need not come
    back for the tests after it (under load a revived dockerd can take minutes)."""
    yield from _lab(tmp_path_factory, 3, "bgskill", "10.213.5")


@pytest.fixture
def consul_cluster_own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulCluster]:
    """A 3-server cluster of the test's own (127.0.0.31-34), for a test that kills its leader:
    nothing an earlier test did to the shared cluster can change its verdict."""
    cluster = ConsulCluster(tmp_path_factory.mktemp("consul-cluster-own"), base=30)
    try:
        yield cluster.start()
    finally:
        cluster.close()
