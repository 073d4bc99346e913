#!/usr/bin/env python3
"""Pack the bluegreen CLI's source (pyproject.toml, pyscripts/, the data files that pyproject.toml
names, a stub readme) into resources/bluegreen/bluegreen-cli.tar.gz, byte for byte the same on
every run: sorted entries under ``bluegreen-cli/``, mtime 0, owner root, modes 644/755, gzip
without a name or timestamp. The Jenkins step bluegreenInstall pip-installs this archive, so the
CLI on an agent is the one of the library version Jenkins loaded. Rerun after Python changes.

Usage: python scripts/pack-cli.py [--output PATH]
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "resources" / "bluegreen" / "bluegreen-cli.tar.gz"
TOP = "bluegreen-cli"


README = b"The bluegreen CLI, packed from the bluegreen Jenkins library by scripts/pack-cli.py.\n"


def _pyproject(root: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads((root / "pyproject.toml").read_text())


def _readme(root: Path) -> str:
    return _pyproject(root)["project"]["readme"]


def source_files(root: Path = ROOT) -> list[Path]:
    """The repository files pip needs to build the package (the readme aside), sorted."""
    meta = _pyproject(root)
    files = {Path("pyproject.toml")}
    for path in (root / "pyscripts").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed"):
            files.add(path.relative_to(root))
    for patterns in meta["tool"]["setuptools"].get("data-files", {}).values():
        for pattern in patterns:
            files.update(p.relative_to(root) for p in root.glob(pattern) if p.is_file())
    return sorted(files, key=lambda p: p.as_posix())


def tar_bytes(root: Path = ROOT) -> bytes:
    """The uncompressed tar stream: deterministic for the same file contents and modes."""
    buf = io.BytesIO()
    # pyproject's readme is a fixed stub, so editing README.md does not stale the archive.
    entries = [(Path(_readme(root)), README, 0o644)]
    entries += [(rel, (root / rel).read_bytes(), 0o755 if (root / rel).stat().st_mode & 0o100 else 0o644)
                for rel in source_files(root)]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel, data, mode in sorted(entries, key=lambda e: e[0].as_posix()):
            info = tarfile.TarInfo(f"{TOP}/{rel.as_posix()}")
            info.size, info.mtime, info.mode = len(data), 0, mode
            info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pack(root: Path = ROOT) -> bytes:
    """The gzip archive: no file name, mtime 0, fixed level."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(tar_bytes(root))
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ARCHIVE)
    args = parser.parse_args(argv)
    data = pack()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.output)
    print(f"{args.output}: {len(data)} bytes, {len(source_files())} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
