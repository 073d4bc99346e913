"""The file registry passes the registry contract."""

from __future__ import annotations

import pytest

from bluegreen.registry.file import FileRegistry
from tests.contract import RegistryContract, health_server  # noqa: F401


class TestFileRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, tmp_path):
        return FileRegistry(tmp_path / "state.json")


def test_file_registry_prefix(tmp_path):
    reg = FileRegistry(tmp_path / "s.json", prefix="team/")
    reg.set_color("books-ms", "green")
    assert reg.kv_get("team/books-ms/color") == "green"
