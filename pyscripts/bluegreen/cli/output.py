"""What a command prints: a plain value, or JSON with ``--json``; never a secret."""

from __future__ import annotations

import json
from typing import Any

from bluegreen.errors import redact


def emit(opts: dict[str, Any], value: Any, plain: str | None = None) -> None:
    if opts.get("json"):
        print(redact(json.dumps(value, indent=2, sort_keys=True, default=str)))
    elif plain:
        print(redact(plain))
