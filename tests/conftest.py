"""Shared test settings. With BLUEGREEN_REQUIRE_ALL=1 (scripts/test.sh, CI) any skip fails the run."""

from __future__ import annotations

import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("BLUEGREEN_REQUIRE_ALL") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(f"FAILED: {skipped} test(s) skipped; nothing may be skipped here",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
