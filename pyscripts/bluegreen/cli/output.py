"""What a command prints: a plain value, or JSON with ``--json``; never a secret."""

from __future__ import annotations

import json

from bluegreen.errors import redact

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def emit(opts: dict[str, Any], value: Any, plain: str | None = None) -> None:
    if opts.get("json"):
        print(redact(json.dumps(value, indent=2, sort_keys=True, default=str)))
    elif plain:
        print(redact(plain))
