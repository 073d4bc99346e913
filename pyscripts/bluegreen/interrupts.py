"""SIGTERM and SIGINT as an exception at a safe point, and named hold points for fault tests.

Jenkins aborts a build by sending SIGTERM to the ``sh`` step's processes, then kills them.
``install`` turns the first SIGTERM or SIGINT into ``Interrupted`` raised in the main thread,
except inside a ``shielded`` block (a proxy change, a record write), where it waits until the
block ends. Later signals are ignored so that the clean-up runs to its end; SIGKILL is left to
recovery.
"""

from __future__ import annotations

import _signal  # signal's C module, loaded at every start: signal.py's enums cost 1 ms
import contextlib
import os
import sys
import time
from collections.abc import Iterator

from bluegreen.errors import Interrupted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_shield_depth = 0
_pending: int | None = None
_stopping = False


def install() -> None:
    """Handle SIGTERM and SIGINT from now on (call from the main thread)."""
    global _pending, _stopping, _shield_depth
    _pending, _stopping, _shield_depth = None, False, 0
    for signum in (_signal.SIGTERM, _signal.SIGINT):
        _signal.signal(signum, _handler)


def _handler(signum: int, _frame: Any) -> None:
    global _pending, _stopping
    if _stopping:
        return
    if _shield_depth:
        _pending = signum
        return
    _stopping = True
    raise Interrupted(signum)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """A critical section: a signal that arrives inside it is raised when it ends."""
    global _shield_depth, _pending, _stopping
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
        if not _shield_depth and _pending is not None and not _stopping:
            signum, _pending, _stopping = _pending, None, True
            raise Interrupted(signum)


def stopping() -> bool:
    """True once a signal has been turned into ``Interrupted`` (clean-up is under way)."""
    return _stopping


def hold(point: str) -> None:
    """A fault test's kill point. With ``BLUEGREEN_TEST_HOLD`` naming ``point`` (comma-separated
    list) this writes ``$BLUEGREEN_TEST_HOLD_DIR/<point>.held`` and waits for
    ``<point>.release``, so a test acts when the run has done exactly this much."""
    names = os.environ.get("BLUEGREEN_TEST_HOLD")
    if not names or point not in names.split(","):
        return
    where = os.environ.get("BLUEGREEN_TEST_HOLD_DIR") or "."
    with open(os.path.join(where, f"{point}.held"), "w") as fh:
        fh.write(str(os.getpid()))
    print(f"bluegreen: holding at {point}", file=sys.stderr, flush=True)
    while not os.path.exists(os.path.join(where, f"{point}.release")):
        time.sleep(0.02)
