"""Integration tests of a color: built-in HTTP checks or the user's test command.

A test command is split with ``shlex`` and executed without a shell; it receives
``DOMAIN=http://host:port`` of what it tests, as the book's ``runTests(..., "-e DOMAIN=...")``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time

from bluegreen import validate
from bluegreen.errors import UsageError
from bluegreen.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess


class TestSpec(Record, frozen=True):
    """What to run against a color: a command, or HTTP checks on paths."""

    __test__ = False  # not a pytest class

    command: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    outcome: bool | None = None  # decided elsewhere (a Jenkins test closure)
    expect_status: int = 200
    body_regex: str | None = None
    timeout: float = 5.0
    retries: int = 3
    retry_interval: float = 1.0
    _compiled: re.Pattern[str] | None = None  # a cache: not compared, not shown

    @classmethod
    def build(cls, cmd: str | None = None, http: list[str] | None = None, expect_status: int = 200,
              body_regex: str | None = None, timeout: float = 5.0, retries: int = 3) -> TestSpec:
        if cmd and http:
            raise UsageError("use either --cmd or --http, not both")
        argv: tuple[str, ...] = ()
        if cmd:
            try:
                import shlex

                argv = tuple(shlex.split(cmd))
            except ValueError as exc:
                raise UsageError(f"invalid --cmd: {exc}") from None
            if not argv:
                raise UsageError("invalid --cmd: empty command")
        compiled = None
        if body_regex:
            try:
                compiled = re.compile(body_regex)
            except re.error as exc:
                raise UsageError(f"invalid --expect-body regex: {exc}") from None
        if not 100 <= expect_status <= 599:
            raise UsageError(f"invalid --expect-status {expect_status}: use 100 to 599")
        return cls(command=argv, paths=tuple(validate.http_path(p) for p in (http or [])),
                   expect_status=expect_status, body_regex=body_regex,
                   timeout=validate.seconds(timeout, "--test-timeout", 3600),
                   retries=validate.bounded_int(retries, "--retries", 1, 100),
                   _compiled=compiled)

    @classmethod
    def decided(cls, passed: bool) -> TestSpec:
        return cls(outcome=passed)

    @property
    def empty(self) -> bool:
        return not self.command and not self.paths and self.outcome is None

    def describe(self) -> str:
        if self.outcome is not None:
            return "tests run by the caller"
        if self.command:
            import shlex

            return "command " + shlex.join(self.command)
        return "HTTP " + ", ".join(self.paths) if self.paths else "no tests"


class TestResult(Record, frozen=True):
    __test__ = False

    ok: bool
    detail: str


PREVIEW_HEADER = "X-Bluegreen-Preview"


def run(spec: TestSpec, domain: str, preview: str | None = None) -> TestResult:
    """Run ``spec`` against ``domain`` (``http://host:port``); with ``preview`` (the preview
    secret), as a preview request: the HTTP checks send it in ``X-Bluegreen-Preview``, a
    test command gets it as ``$BLUEGREEN_PREVIEW_SECRET``."""
    if spec.outcome is not None:
        return TestResult(spec.outcome, "the caller's tests " + ("passed" if spec.outcome else "failed"))
    if spec.command:
        return _run_command(spec, domain, preview)
    headers = {PREVIEW_HEADER: preview} if preview else None
    for path in spec.paths:
        result = _check_path(spec, domain + path, headers)
        if not result.ok:
            return result
    return TestResult(True, spec.describe() + " passed")


def _check_path(spec: TestSpec, url: str, headers: dict[str, str] | None = None) -> TestResult:
    from bluegreen import wire

    detail = ""
    for attempt in range(spec.retries):
        if attempt:
            time.sleep(spec.retry_interval)
        try:
            status, body = wire.get(url, timeout=spec.timeout, headers=headers)
        except OSError as exc:
            detail = f"GET {url}: {type(exc).__name__}"
            continue
        if status != spec.expect_status:
            detail = f"GET {url}: status {status}, expected {spec.expect_status}"
            continue
        if spec._compiled and not spec._compiled.search(body.decode(errors="replace")):
            detail = f"GET {url}: body does not match {spec.body_regex!r}"
            continue
        return TestResult(True, f"GET {url}: {status}")
    return TestResult(False, detail)


def _run_command(spec: TestSpec, domain: str, preview: str | None = None) -> TestResult:
    """Run the test command in a process group of its own: when the run is stopped (SIGTERM,
    a timeout), the whole group goes, so no test outlives the run."""
    import subprocess  # only here: a rollback or a switch never pays for its import

    env = dict(os.environ, DOMAIN=domain) | ({"BLUEGREEN_PREVIEW_SECRET": preview} if preview
                                              else {})
    limit = spec.timeout * spec.retries
    try:
        proc = subprocess.Popen(list(spec.command), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except FileNotFoundError:
        return TestResult(False, f"test command not found: {spec.command[0]}")
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        return TestResult(False, f"test command timed out after {limit:g}s")
    except BaseException:
        _end_group(proc)
        raise
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-1:] or [""]
        return TestResult(False, f"test command exited {proc.returncode}: {tail[0][:200]}")
    return TestResult(True, "test command passed")


def _end_group(proc: subprocess.Popen[str], grace: float = 3.0) -> None:
    """SIGTERM the command's process group, SIGKILL what is left after ``grace`` seconds."""
    import signal
    import subprocess

    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            break
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue
        if signum == signal.SIGTERM:
            # the leader is gone; its children may not be
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        break
    with contextlib.suppress(Exception):
        proc.communicate(timeout=1)
