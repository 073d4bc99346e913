"""The CLI archive the Jenkins library ships (resources/bluegreen/bluegreen-cli.tar.gz) is a fresh
pack of this checkout's Python package, and it pip-installs into a fresh venv.

When the first test fails, regenerate the archive: ``python scripts/pack-cli.py``.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = ROOT / "resources" / "bluegreen" / "bluegreen-cli.tar.gz"


def _pack_module():
    spec = importlib.util.spec_from_file_location("pack_cli", ROOT / "scripts" / "pack-cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_archive_is_a_fresh_pack():
    pack = _pack_module()
    committed = ARCHIVE.read_bytes()
    # The tar stream exactly (zlib versions may compress the same bytes differently).
    assert gzip.decompress(committed) == pack.tar_bytes(), \
        "resources/bluegreen/bluegreen-cli.tar.gz is stale: run python scripts/pack-cli.py"
    assert committed[4:8] == b"\0\0\0\0", "gzip header carries a timestamp"
    assert not committed[3] & 0x08, "gzip header carries a file name"


def test_packing_twice_gives_the_same_bytes():
    pack = _pack_module()
    assert pack.pack() == pack.pack()


def test_the_archive_holds_the_package_and_its_templates():
    import tarfile

    with tarfile.open(ARCHIVE) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())
    for rel in ("pyproject.toml", "README.md", "pyscripts/bluegreen/cli/main.py",
                "resources/nginx/upstream.conf.j2", "resources/sample/start.sh"):
        assert f"bluegreen-cli/{rel}" in names, rel
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert names == sorted(names)


@pytest.mark.integration
def test_the_install_script_pip_installs_the_archive_into_a_fresh_venv(tmp_path):
    """What bluegreenInstall runs on an agent (needs the package index for the dependencies)."""
    venv = tmp_path / "venv"
    env = {**os.environ, "BLUEGREEN_VENV": str(venv), "BLUEGREEN_PIP_SPEC": str(ARCHIVE),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    script = ROOT / "resources" / "bluegreen" / "install-cli.sh"
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    version = subprocess.run([str(venv / "bin" / "bluegreen"), "--version"], env=env,
                             capture_output=True, text=True, check=True)
    assert version.stdout.startswith("bluegreen ")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import bluegreen; print(bluegreen.__file__)"
                            ], env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(venv))
    again = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=True)
    assert "already in" in again.stdout
