"""The records a release keeps in the registry, beside a target's services: the lock, the
unfinished release (``inflight``), the history, the scale-down of old colors, and (for an
application) the live and previous release. What they mean is the orchestrator's
(``bluegreen.flow.release``); here they are read and written: never on a dry run, never
half-way through a signal."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from bluegreen import interrupts
from bluegreen.errors import redact
from bluegreen.record import Record
from bluegreen.registry.base import Lease, Registry, hostname

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HISTORY_KEEP = 50


def who() -> str:
    """Who runs this command, for the history: the Jenkins build, else the user, else the
    host."""
    return os.environ.get("BUILD_URL") or os.environ.get("USER") or hostname()


class Records(Record):
    """A target's records (``target``: a service's name, or ``<app>._app``)."""

    registry: Registry
    say: Callable[[str], None]
    dry_run: bool = False

    def lock(self, target: str, wait: float) -> contextlib.AbstractContextManager[Lease | None]:
        """The target's deploy lock; none on a dry run (it changes nothing)."""
        if self.dry_run:
            return contextlib.nullcontext()
        return self.registry.lock(target, wait, on_stale=self.say)

    def snapshot(self, target: str, family: bool = False
                 ) -> contextlib.AbstractContextManager[None]:
        """Read ``target``'s records once for the section (see ``Registry.snapshot``);
        ``family``: those of every service ``<stem>.*`` of the target ``<stem>.<x>`` too."""
        return self.registry.snapshot(target, family)

    def get(self, target: str, name: str) -> Any:
        """A JSON record (``InvalidRecord`` when unreadable, None when absent)."""
        return self.registry.get_json(target, name)

    def put(self, target: str, name: str, value: Any) -> None:
        """Write (``None``: delete) a record; a signal waits until it is written. A dry run
        says so and writes nothing."""
        if self.dry_run:
            self.say(f"would {'delete' if value is None else 'write'} the {name} record of "
                     f"{target}")
            return
        with interrupts.shielded():
            self.registry.put_json(target, name, value)

    def update(self, target: str, name: str, fn: Callable[[Any], Any]) -> None:
        """Replace a record with ``fn(old)`` atomically (CAS; ``None`` deletes); a signal waits
        until it is written. A dry run writes nothing."""
        if self.dry_run:
            self.say(f"would update the {name} record of {target}")
            return
        with interrupts.shielded():
            self.registry.update_json(target, name, fn)

    def history(self, target: str) -> list[dict[str, Any]]:
        items = self.registry.get_json(target, "history")
        return items if isinstance(items, list) else []

    def add_history(self, target: str, entry: dict[str, Any]) -> None:
        """Append an entry naming who ran it (the last ``HISTORY_KEEP`` are kept); errors
        redacted."""
        entry = dict(entry)
        entry.setdefault("by", who())
        if entry.get("error"):
            entry["error"] = redact(str(entry["error"]))
        if self.dry_run:
            self.say(f"would add {entry.get('action', 'an entry')} to the history of {target}")
            return
        with interrupts.shielded():
            self.registry.append_json(target, "history", entry, HISTORY_KEEP)

    def set_aside(self, target: str, name: str) -> str:
        """Keep an unreadable record aside (never lost); what was done, or would be."""
        if self.dry_run:
            return f"would set the invalid {name} record aside"
        return f"invalid {name} record kept as {self.registry.set_aside(target, name)}"
