"""bluegreen.preload: imports in a background thread, failures left to the real import."""

from __future__ import annotations

import sys
import threading

import pytest

from bluegreen.preload import preload


def _finished() -> None:
    for thread in threading.enumerate():
        if thread.name == "bluegreen-preload":
            thread.join(30)


def test_modules_are_imported_in_the_background(tmp_path, monkeypatch):
    (tmp_path / "bg_preload_ok.py").write_text(
        "import threading\nWHERE = threading.current_thread().name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    preload("bg_preload_ok")
    _finished()
    assert sys.modules["bg_preload_ok"].WHERE == "bluegreen-preload"
    monkeypatch.delitem(sys.modules, "bg_preload_ok")


def test_a_failing_import_is_raised_where_the_module_is_needed(tmp_path, monkeypatch):
    (tmp_path / "bg_preload_bad.py").write_text("raise ImportError('not here')\n")
    (tmp_path / "bg_preload_after.py").write_text("OK = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    preload("bg_preload_bad", "bg_preload_after")
    _finished()
    assert "bg_preload_bad" not in sys.modules and sys.modules["bg_preload_after"].OK
    with pytest.raises(ImportError, match="not here"):
        import bg_preload_bad  # noqa: F401
    monkeypatch.delitem(sys.modules, "bg_preload_after")


def test_nothing_is_started_for_modules_already_imported():
    before = threading.active_count()
    preload("json", "sys")
    assert threading.active_count() == before
