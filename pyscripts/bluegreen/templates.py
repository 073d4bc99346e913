"""Find the project's ``resources/`` directory and render its Jinja2 templates."""

from __future__ import annotations

import functools
import os
import sys

from bluegreen.errors import OperationFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def resource_root() -> str:
    """``$BLUEGREEN_RESOURCES``, else the ``resources/`` beside ``pyscripts/`` (a checkout or an
    editable install), else the copy a wheel installs under ``<prefix>/share/bluegreen``."""
    env = os.environ.get("BLUEGREEN_RESOURCES")
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    candidates = [env] if env else []
    candidates += [os.path.join(here, "resources"),
                   os.path.join(sys.prefix, "share", "bluegreen", "resources")]
    for path in candidates:
        if os.path.isdir(os.path.join(path, "nginx")):
            return path
    raise OperationFailed("resources/ not found: set BLUEGREEN_RESOURCES to the library's resources dir")


def resource_dir() -> Path:
    """:func:`resource_root` as a ``Path`` (for the tools; the switch path keeps to ``str``)."""
    from pathlib import Path

    return Path(resource_root())


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(resource_root()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - nginx/XML templates take validated values only
    )


def render(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(**context)


KEY_PREFIX = "# bluegreen-template "


def fingerprint(name: str, **context: Any) -> str:
    """A key of what ``render(name, **context)`` produces, found without Jinja2: checksums of
    the context (JSON) and a checksum of every template of the same top directory (the included
    ones with them) and of its Lua (an upgraded Lua needs a reload to run)."""
    import binascii
    import json

    text = json.dumps(context, sort_keys=True, default=str, separators=(",", ":")).encode()
    # a digest, not the context: one line stays short at any number of services (nginx
    # refuses a line of 4 KiB); two CRCs and the length tell any real change
    return (f"{_templates_crc(name.split('/', 1)[0]):08x} {binascii.crc32(text):08x}"
            f"{binascii.crc32(text[::-1]):08x} {len(text)}")


# the last CRC of _templates_crc per directory, with the files' (path, mtime, size) it was of
_known_crc: dict[str, tuple[list[tuple[str, int, int]], int]] = {}


def _templates_crc(top: str) -> int:
    """The CRC-32 of every ``*.j2`` and ``*.lua`` under ``resources/<top>``, in path order:
    the templates and what their rendered configuration loads (the dynamic mode's Lua). Read
    again only when a file's path, time or size changed (a change reads it twice or more)."""
    import binascii

    found = []
    pending = [os.path.join(resource_root(), top)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for e in entries:
                if e.is_dir():
                    pending.append(e.path)
                elif e.name.endswith((".j2", ".lua")):
                    st = e.stat()
                    found.append((e.path, st.st_mtime_ns, st.st_size))
    found.sort(key=lambda f: f[0].split(os.sep))  # as sorted Paths
    known = _known_crc.get(top)
    if known and known[0] == found:
        return known[1]
    crc = 0
    for path, _mtime, _size in found:
        with open(path, "rb") as fh:
            crc = binascii.crc32(fh.read(), crc)
    _known_crc[top] = (found, crc)
    return crc


def render_keyed(name: str, **context: Any) -> str:
    """``render`` with its :func:`fingerprint` as the first line (an nginx comment): a later
    :func:`is_current` tells the text is still what it would render, without importing Jinja2
    (its import costs more than a switch of the dynamic mode)."""
    return f"{KEY_PREFIX}{fingerprint(name, **context)}\n" + render(name, **context)


def is_current(text: str | None, name: str, **context: Any) -> bool:
    """True when ``text`` is what ``render_keyed(name, **context)`` would produce now."""
    return bool(text) and text.startswith(f"{KEY_PREFIX}{fingerprint(name, **context)}\n")
