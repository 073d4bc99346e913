"""Heavy client libraries imported in the background while a command waits on the network.

``run`` needs the Docker SDK to create containers on a remote engine, and its
import (with ``requests``) costs more than an nginx reload on the machines we measured
(docs/benchmarks.md). Started at the beginning of a run, they load while the main thread
waits for the lock, the registry and the new containers' health; a later ``import`` of one
waits for that import (Python's import lock) instead of starting it again.
"""

from __future__ import annotations

import sys


def preload(*modules: str) -> None:
    """Import ``modules`` one after the other in a daemon thread (none already imported)."""
    todo = [m for m in modules if m not in sys.modules]
    if not todo:
        return
    import threading

    threading.Thread(target=_import, args=(todo,), name="bluegreen-preload", daemon=True).start()


def _import(modules: list[str]) -> None:
    import contextlib

    for name in modules:
        with contextlib.suppress(Exception):  # the import where it is needed raises it
            __import__(name)
