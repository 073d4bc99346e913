"""An installed wheel finds its templates without the repository (agents install it with pip)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from bluegreen import templates

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_the_templates(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("bluegreen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for rel in ("nginx/upstream.conf.j2", "nginx/include.conf.j2", "nginx/nginx.conf.j2",
                "jenkins/multibranch-config.xml.j2", "sample/Dockerfile", "sample/start.sh"):
        assert any(n.endswith(f".data/data/share/bluegreen/resources/{rel}") for n in names), rel
    assert "bluegreen/cli/main.py" in names and "bluegreen/settings.py" in names


def test_resources_are_found_under_the_install_prefix(tmp_path, monkeypatch):
    installed = tmp_path / "share" / "bluegreen" / "resources"
    (installed / "nginx").mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(templates, "__file__", str(tmp_path / "site" / "bluegreen" / "templates.py"))
    monkeypatch.delenv("BLUEGREEN_RESOURCES", raising=False)
    assert templates.resource_dir() == installed
