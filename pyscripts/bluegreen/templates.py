"""Find the project's ``resources/`` directory and render its Jinja2 templates."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

from bluegreen.errors import OperationFailed


def resource_dir() -> Path:
    """``$BLUEGREEN_RESOURCES``, else the ``resources/`` beside ``pyscripts/`` (a checkout or an
    editable install), else the copy a wheel installs under ``<prefix>/share/bluegreen``."""
    env = os.environ.get("BLUEGREEN_RESOURCES")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "resources")
    candidates.append(Path(sys.prefix) / "share" / "bluegreen" / "resources")
    for path in candidates:
        if (path / "nginx").is_dir():
            return path
    raise OperationFailed("resources/ not found: set BLUEGREEN_RESOURCES to the library's resources dir")


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - nginx/XML templates take validated values only
    )


def render(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(**context)


KEY_PREFIX = "# bluegreen-template "


def fingerprint(name: str, **context: Any) -> str:
    """A key of what ``render(name, **context)`` produces, found without Jinja2: the context
    itself (JSON) and a checksum of every template of the same top directory (the included
    ones with them)."""
    import json
    import zlib

    top = resource_dir() / name.split("/", 1)[0]
    crc = 0
    for path in sorted(top.rglob("*.j2")):
        crc = zlib.crc32(path.read_bytes(), crc)
    return f"{crc:08x} " + json.dumps(context, sort_keys=True, default=str, separators=(",", ":"))


def render_keyed(name: str, **context: Any) -> str:
    """``render`` with its :func:`fingerprint` as the first line (an nginx comment): a later
    :func:`is_current` tells the text is still what it would render, without importing Jinja2
    (its import costs more than a switch of the dynamic mode)."""
    return f"{KEY_PREFIX}{fingerprint(name, **context)}\n" + render(name, **context)


def is_current(text: str | None, name: str, **context: Any) -> bool:
    """True when ``text`` is what ``render_keyed(name, **context)`` would produce now."""
    return bool(text) and text.startswith(f"{KEY_PREFIX}{fingerprint(name, **context)}\n")
