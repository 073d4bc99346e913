"""The dynamic mode's state file: the routes nginx restores when it (re)starts.

Two files, so that a change costs what it changes, not the number of services:

- the **base** ``<state>.json``: every service's servers, chains and color, one line each,
  and an ``id`` (random, new at each rewrite) on its first line;
- the **journal** ``<state>.journal``: one JSON line per change since the base was written,
  ``{"base": ID, "services": {...}, "chains": {...}, "colors": {...}, "releases": {...},
  "drop": [...]}``. A line sets each service it names to exactly what it holds (its chains,
  color and release: none when not named) and removes those of ``drop``.

The document is the base with its journal's lines applied in order; lines of another base
(left by a rewrite that stopped before the journal was emptied) are skipped, so reading
twice what a rewrite already holds changes nothing. A change appends one line and fsyncs it
(the journal's size before is kept: a change nginx refused is cut off again); the base is
rewritten whole, and the journal emptied after it, only when the journal has grown larger
than the base, at a checked reload, or to rebuild a damaged state. A last line without its
newline is a write cut short (the change was never sent): readers skip it and the next
writer rewrites.

The last good copy (``<state>.last-good.json`` and ``.last-good.journal``, what nginx
confirmed serving) is the same pair: a confirmed change appends the same line to it when it
holds the same base, else the pair is copied whole. nginx's Lua reads both pairs the same
way (``bluegreen_dynamic.lua``: ``load_state``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from bluegreen.errors import OperationFailed
from bluegreen.model import COLORS
from bluegreen.proxy.nginx import read_text, write_atomic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PARTS = ("services", "chains", "colors", "locations")  # locations: the routing table's
LINE_KEYS = frozenset({"base", "services", "chains", "colors", "releases", "locations", "drop"})
MIN_JOURNAL = 64 * 1024  # a journal is rewritten into its base beyond max(this, the base's size)
_ID_RE = re.compile(rb'\A\{\n "id": "([0-9a-f]{16})",\n')


def journal_path(path: str | os.PathLike[str]) -> str:
    """The journal of a state file (or of its last good copy)."""
    return os.path.splitext(os.fspath(path))[0] + ".journal"


def last_good_path(state_file: str | os.PathLike[str]) -> str:
    """The last good copy of a state file (what nginx confirmed serving)."""
    return os.path.splitext(os.fspath(state_file))[0] + ".last-good.json"


# -- releases (what the Lua splits by), derived from colors and servers -----------------------


def release_of(entry: Mapping[str, Any] | None, servers: Sequence[Mapping[str, Any]]
               ) -> dict[str, Any] | None:
    """The ``release`` of a service (the Lua's split between its colors) from its ``colors``
    entry and its servers (each with its color): at a weight below 100 the routed color is the
    new one; at 100 with the other color's servers all at weight 0, the other color is new, at
    weight 0 (a preview). None when the servers are not of both colors."""
    if not entry or entry.get("color") not in COLORS:
        return None
    color, weight = entry["color"], int(entry.get("weight", 100))
    if not {s.get("color") for s in servers} >= set(COLORS):
        return None
    if weight < 100:
        return {"new": color, "weight": weight, "sticky": bool(entry.get("sticky"))}
    other = "green" if color == "blue" else "blue"
    if all(s.get("weight") == 0 for s in servers if s.get("color") == other):
        return {"new": other, "weight": 0, "sticky": bool(entry.get("sticky"))}
    return None


def releases_of(services: Mapping[str, Sequence[Mapping[str, Any]]],
                colors: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`release_of` of every service that has one."""
    out = {}
    for name, servers in services.items():
        rel = release_of(colors.get(name), servers or [])
        if rel:
            out[name] = rel
    return out


# -- reading -----------------------------------------------------------------------------------

# the base text last read or written by this process, its id and document (a base of 1,000
# services is parsed once, not at every change: 1-1.5 ms)
_known_base: list[Any] = [None, "", {}]


def _copy(doc: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: dict(doc.get(k) or {}) for k in PARTS}


def _parse_base(path: str | os.PathLike[str], text: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """The id and the document of a base's text."""
    if text == _known_base[0]:
        return _known_base[1], _copy(_known_base[2])
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and "colors" not in doc:  # written before colors were kept
            legacy = read_text(os.path.splitext(os.fspath(path))[0] + ".colors.json")
            doc["colors"] = json.loads(legacy) if legacy is not None else {}
    except (OSError, ValueError) as exc:
        raise OperationFailed(f"cannot read the state file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k, {}), dict) for k in PARTS) \
            or not isinstance(doc.get("id", ""), str):
        raise OperationFailed(f"cannot read the state file {path}: not a bluegreen state file")
    base_id, out = doc.get("id", ""), _copy(doc)
    _known_base[:] = [text, base_id, _copy(out)]
    return base_id, out


# the journal a read last replayed: (state file, its base's text, the journal's complete
# lines read, the document they made); a later read of the same pair replays only the lines
# appended since (a journal grows to 64 KiB, some 400 lines, before it is folded into its base)
_known_journal: list[Any] = [None, None, "", {}]


def _journal_lines(path: str, text: str, first: int = 1) -> Iterator[tuple[int, dict[str, Any]]]:
    """The journal's complete lines (number, object), numbered from ``first``; a last line
    without its newline is a write cut short, skipped."""
    lines = text.split("\n")
    for number, line in enumerate(lines[:-1], first):
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise OperationFailed(f"cannot read the state file's journal {path}: line {number}: "
                                  f"{exc}") from exc
        if not isinstance(entry, dict) or set(entry) - LINE_KEYS \
                or not isinstance(entry.get("services"), dict) \
                or not all(isinstance(entry.get(k, {}), dict) for k in ("chains", "colors")) \
                or not isinstance(entry.get("drop", []), list):
            raise OperationFailed(f"cannot read the state file's journal {path}: line {number}: "
                                  f"not a bluegreen change")
        yield number, entry


def apply_change(doc: dict[str, dict[str, Any]], entry: Mapping[str, Any]) -> None:
    """Apply one journal line (or a change of the same shape) to a document, in place."""
    for name in entry.get("drop", ()):
        for part in PARTS:
            doc[part].pop(name, None)
    for name, servers in entry["services"].items():
        doc["services"][name] = servers
        for part in ("chains", "colors", "locations"):
            given = entry.get(part) or {}
            if name in given:
                doc[part][name] = given[name]
            else:
                doc[part].pop(name, None)


def read_document(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The ``services``, ``chains`` and ``colors`` recorded in a state file (or its last good
    copy) and its journal (empty when there is no base); read again when a writer rewrote the
    base meanwhile (its old journal may be gone). A state file written before ``colors`` were
    kept in it takes them from ``<state>.colors.json``, where they were."""
    jpath = journal_path(path)
    for _attempt in range(3):
        text = read_text(path)
        if text is None:
            return {k: {} for k in PARTS}
        base_id, doc = _parse_base(path, text)
        journal = read_text(jpath)
        if base_id_of(path) == (base_id or None):
            break
    if journal is None and base_id:
        raise OperationFailed(f"cannot read the state file {path}: its journal {jpath} is "
                              f"missing (changes since the base would be lost)")
    journal = journal or ""
    known_path, known_base, known_lines, known_doc = _known_journal
    done = ""
    if known_path == os.fspath(path) and known_base == text and journal.startswith(known_lines):
        done, doc = known_lines, _copy(known_doc)
    for _n, entry in _journal_lines(jpath, journal[len(done):], done.count("\n") + 1):
        if entry.get("base") == base_id:
            apply_change(doc, entry)
    complete = journal[:journal.rfind("\n") + 1]
    _known_journal[:] = [os.fspath(path), text, complete, _copy(doc)]
    return doc


def read_state(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """The servers recorded in a state file (empty when there is none)."""
    return read_document(path)["services"]


# -- writing -----------------------------------------------------------------------------------


def _line_encoder() -> Callable[[Any], str]:
    """One value as compact JSON with ``, `` and ``: `` (as ``json.dumps``), by json's C
    encoder made once: ``json.dumps`` sets one up per call, 2,000 calls of 2-4 us at 1,000
    services (the pure-Python ``json.dumps`` where the C encoder is missing)."""
    from json import encoder

    if encoder.c_make_encoder is None:
        return json.dumps
    make = encoder.c_make_encoder(None, json.JSONEncoder().default, encoder.encode_basestring_ascii,
                                  None, ": ", ", ", False, False, True)
    return lambda value: "".join(make(value, 0))


# (part, service) -> (the value as last encoded, a copy; its line): a rewrite re-encodes only
# the entries that changed (2,000 lines at 1,000 services: 2 ms each time)
_state_lines: dict[tuple[str, str], tuple[Any, str]] = {}


def new_id() -> str:
    return os.urandom(8).hex()


def state_text(doc: Mapping[str, Mapping[str, Any]], base_id: str | None = None) -> str:
    """A base's JSON: its id on the first line, then one line per service in each part
    (json's C encoder for each line: an indented document goes through its Python encoder,
    10 ms at 1,000 services). A new id unless one is given."""
    dumps = _line_encoder()
    base_id = base_id or new_id()

    def line(key: str, name: str, value: Any) -> str:
        cached = _state_lines.get((key, name))
        if cached is not None and cached[0] == value:
            return cached[1]
        text = f"  {dumps(name)}: {dumps(value)}"
        _state_lines[(key, name)] = (json.loads(text.split(": ", 1)[1]), text)  # a copy
        return text

    def part(key: str, entries: Mapping[str, Any]) -> str:
        lines = ",\n".join(line(key, name, value) for name, value in sorted(entries.items()))
        return f' "{key}": {{\n{lines}\n }}' if lines else f' "{key}": {{}}'

    services, chains, colors, locations = (doc.get(k) or {} for k in PARTS)
    releases = releases_of(services, colors)  # what nginx reads; bluegreen derives them again
    parts = [f' "id": "{base_id}"', part("services", services)] + (
        [part("chains", chains)] if chains else []) + [part("colors", colors)] + (
        [part("releases", releases)] if releases else []) + (
        [part("locations", locations)] if locations else [])
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    _known_base[:] = [text, base_id, _copy(doc)]
    return text


def change_line(base_id: str, services: Mapping[str, list[dict[str, Any]]],
                chains: Mapping[str, Any], colors: Mapping[str, Any],
                drop: Iterable[str] = (), locations: Mapping[str, str] | None = None) -> str:
    """The journal line of a change (``chains``, ``colors`` and, routing table, ``locations``
    of the services it sets)."""
    entry: dict[str, Any] = {"base": base_id, "services": dict(services)}
    for key, given in (("chains", chains), ("colors", colors),
                       ("releases", releases_of(services, colors)),
                       ("locations", locations or {})):
        named = {n: v for n, v in given.items() if n in services and v}
        if named:
            entry[key] = named
    dropped = sorted(set(drop) - set(services))
    if dropped:
        entry["drop"] = dropped
    return json.dumps(entry, separators=(",", ":")) + "\n"


def merged_state(path: str | os.PathLike[str], services: Mapping[str, list[dict[str, Any]]],
                 drop: Iterable[str] = (),
                 chains: Mapping[str, list[dict[str, Any]]] | None = None,
                 colors: Mapping[str, dict[str, Any]] | None = None,
                 base: Mapping[str, dict[str, Any]] | None = None,
                 locations: Mapping[str, str] | None = None) -> str:
    """The text of a new base: state file ``path`` (or the document ``base``) with
    ``services`` set (each with exactly its ``chains``, its entry of ``colors`` and of
    ``locations``: none when not named) and ``drop`` removed. Its journal must be emptied
    with it."""
    doc = _copy(base) if base is not None else read_document(path)
    apply_change(doc, {"services": services, "chains": chains or {}, "colors": colors or {},
                       "locations": locations or {}, "drop": list(drop)})
    return state_text(doc)


def _tail_ok(path: str) -> bool:
    """Whether a journal is empty or ends with a whole line."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            return size == 0 or os.pread(fh.fileno(), 1, size - 1) == b"\n"
    except FileNotFoundError:
        return True


def _append(path: str, line: str, sync: bool = True) -> int:
    """Append one line (fsynced unless ``sync`` is false); the file's size before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        os.write(fd, line.encode())
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return size


def base_id_of(path: str | os.PathLike[str]) -> str | None:
    """The id on a base's first line, without parsing it (None: none, or not ours)."""
    try:
        with open(path, "rb") as fh:
            m = _ID_RE.match(fh.read(40))
    except OSError:
        return None
    return m.group(1).decode() if m else None


class Undo:
    """How to take back one recorded change: cut the journal at its size before, or put a
    rewritten pair back."""

    def __init__(self, state_file: str, line: str | None, size: int = 0,
                 files: Mapping[str, str | None] | None = None) -> None:
        self.state_file, self.line, self.size = state_file, line, size
        self.files = dict(files or {})

    def __call__(self) -> None:
        if self.line is not None:
            os.truncate(journal_path(self.state_file), self.size)
        for path, text in self.files.items():
            write_atomic(path, text)


def record(state_file: str, doc: Mapping[str, Mapping[str, Any]],
           services: Mapping[str, list[dict[str, Any]]], chains: Mapping[str, Any],
           colors: Mapping[str, Any], rewrite: bool = False,
           locations: Mapping[str, str] | None = None) -> Undo:
    """Record a change (under the state lock): one journal line, or the base rewritten with
    an empty journal (``rewrite``, no usable base, a journal cut short or grown past its
    base). ``doc``: the document now (for a rewrite)."""
    jpath = journal_path(state_file)
    base_id = None if rewrite else base_id_of(state_file)
    if base_id and _tail_ok(jpath) and not _outgrown(state_file, jpath):
        line = change_line(base_id, services, chains, colors, locations=locations)
        return Undo(state_file, line, _append(jpath, line))
    undo = Undo(state_file, None, files={state_file: read_text(state_file),
                                         jpath: read_text(jpath)})
    _write(base_files(state_file, merged_state(state_file, services, chains=chains,
                                               colors=colors, base=doc, locations=locations)))
    return undo


def _outgrown(state_file: str, jpath: str) -> bool:
    """Whether a journal has grown past its base (and :data:`MIN_JOURNAL`)."""
    try:
        return os.stat(jpath).st_size > max(MIN_JOURNAL, os.stat(state_file).st_size)
    except FileNotFoundError:
        return False


def base_files(state_file: str | os.PathLike[str], text: str) -> dict[str, str]:
    """The files a new base ``text`` is written as, in this order: the base, then its journal
    emptied (a reader between the two skips the old lines as another base's). A journal is
    made first where there is none: a base with an id and no journal reads as damaged (its
    journal lost)."""
    jpath = journal_path(state_file)
    if not os.path.exists(jpath):
        write_atomic(jpath, "")
    return {os.fspath(state_file): text, jpath: ""}


def _write(files: Mapping[str, str]) -> None:
    for path, text in files.items():
        write_atomic(path, text)


def rewrite(state_file: str, doc: Mapping[str, Mapping[str, Any]]) -> None:
    """Write a new base of ``doc`` and empty its journal."""
    _write(base_files(state_file, state_text(doc)))


def keep_last_good(state_file: str, undo: Undo | None = None) -> None:
    """Make the last good copy what the state file holds (nginx confirmed it): the change's
    line appended when both hold the same base, else the pair copied."""
    good = last_good_path(state_file)
    good_journal = journal_path(good)
    if undo is not None and undo.line is not None and os.path.exists(good_journal) \
            and _tail_ok(good_journal):
        base_id = base_id_of(state_file)
        if base_id and base_id == base_id_of(good) and f'"base":"{base_id}"' in undo.line:
            # not fsynced: lost in a crash, the copy is one change older (a line cut short
            # is skipped by readers, and the next confirmed change copies the pair whole)
            _append(good_journal, undo.line, sync=False)
            return
    text = read_text(state_file)
    if text is not None:  # the journal first: until the base follows, its lines are skipped
        write_atomic(good_journal, read_text(journal_path(state_file)) or "")
        write_atomic(good, text)


@contextlib.contextmanager
def state_lock(state_file: str | None) -> Iterator[None]:
    """Serialize the processes (and threads) that change one state file (``flock`` of
    ``<file>.lock``)."""
    if state_file is None:
        yield
        return
    import fcntl

    os.makedirs(os.path.dirname(state_file) or ".", exist_ok=True)
    with open(f"{state_file}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
