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
