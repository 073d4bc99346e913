"""Fixtures of the dynamic nginx's own tests: two local backends, and a fresh nginx with the
Lua module per test. A test module takes them by assignment (``backends =
dynamic_fixtures.backends``), as with ``cluster_fixtures``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bluegreen_dev.dynamic_nginx import Backend, DynamicNginx


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: Backend(name).start() for name in ("blue", "green")}
    yield started
    for b in started.values():
        b.stop()


@pytest.fixture
def nginx(tmp_path) -> Iterator[DynamicNginx]:
    n = DynamicNginx(tmp_path / "nginx").start()
    yield n
    n.stop()


@pytest.fixture(params=["locations", "table"])
def any_nginx(tmp_path, request) -> Iterator[DynamicNginx]:
    """A fresh nginx with each ``--nginx-routing``, for what does not depend on it."""
    n = DynamicNginx(tmp_path / "nginx", routing=request.param).start()
    yield n
    n.stop()
