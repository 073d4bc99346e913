"""Which application a service belongs to, and the refusal of single-service commands that
would change it behind its application's back. Light: on the path of every single-service
command (a switch, a rollback)."""

from __future__ import annotations

from bluegreen.errors import InvalidRecord, OperationFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bluegreen.flow.records import Records

LIVE, PREVIOUS, INFLIGHT = "app-live", "app-previous", "app-inflight"


def records_of(app: str) -> str:
    """Where an application's lock and records live (never a service's name)."""
    return f"{app}._app"


def refuse_outside(steps: Any, records: Records, service: str) -> None:
    """A single-service command that would change a service of an application is refused,
    naming the application (and its unfinished release): only the application's commands
    keep its records true."""
    app, dot, name = service.partition(".")
    if not dot or not app:
        return
    target = records_of(app)
    try:
        inflight = records.get(target, INFLIGHT)
        live = records.get(target, LIVE)
    except InvalidRecord:
        inflight = live = {"release": "?", "services": {name: {}}}
    if inflight and name in (inflight.get("units") or inflight.get("services") or {}):
        raise OperationFailed(
            f"{service} is part of the unfinished application release {app} "
            f"#{inflight.get('release')} ({inflight.get('state')} at {inflight.get('weight')}%): "
            f"use bluegreen app promote|abort {app}")
    if (live and name in live.get("services", {})) or (steps.runtime is not None and any(
            c.service == service for c in steps.runtime.app_containers(app))):
        raise OperationFailed(f"{service} belongs to application {app}: it changes with its "
                              f"application (bluegreen app deploy|rollback|recover {app})")
