"""Option values: command-line flag, else environment, else config file, else default.

Every option ``--foo-bar`` may come from ``BLUEGREEN_FOO_BAR`` or from key ``foo-bar``
(or ``foo_bar``) of the TOML config file (``--config``, ``$BLUEGREEN_CONFIG``, or
``./bluegreen.toml`` when it exists). The ecosystem's variables are honored too:
``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``, ``DOCKER_HOST`` (and Docker's TLS variables).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bluegreen.errors import UsageError

# Options whose value may come from a standard variable of the ecosystem, after BLUEGREEN_*.
ECOSYSTEM_ENV = {
    "consul_addr": "CONSUL_HTTP_ADDR",
    "consul_token": "CONSUL_HTTP_TOKEN",
    "docker_host": "DOCKER_HOST",
}
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


def load_file(path: str | None, env: Mapping[str, str]) -> dict[str, Any]:
    explicit = path or env.get("BLUEGREEN_CONFIG")
    candidate = Path(explicit) if explicit else Path("bluegreen.toml")
    if not candidate.exists():
        if explicit:
            raise UsageError(f"config file {candidate} not found")
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(candidate.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read config file {candidate}: {exc}") from None
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve(values: dict[str, Any], defaults: Mapping[str, Any], kinds: Mapping[str, str],
            env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fill every option still ``None`` in ``values`` from env, then file, then defaults."""
    env = os.environ if env is None else env
    file_values = load_file(values.get("config"), env)
    out = dict(values)
    for dest, default in defaults.items():
        if out.get(dest) is not None:
            continue
        kind = kinds.get(dest, "str")
        raw: Any = None
        for var in (f"BLUEGREEN_{dest.upper()}", ECOSYSTEM_ENV.get(dest)):
            if var and env.get(var) is not None:
                raw = _from_env(env[var], kind, var)
                break
        if raw is None and dest in file_values:
            raw = file_values[dest]
        out[dest] = default if raw is None else raw
    return out


def _from_env(text: str, kind: str, var: str) -> Any:
    if kind == "flag":
        low = text.strip().lower()
        if low in TRUE:
            return True
        if low in FALSE:
            return False
        raise UsageError(f"invalid {var}={text!r}: use true or false")
    if kind == "list":
        if text.lstrip().startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise UsageError(f"invalid {var}: not a JSON list") from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise UsageError(f"invalid {var}: use a JSON list of strings")
            return items
        return [line for line in text.splitlines() if line]
    return text
