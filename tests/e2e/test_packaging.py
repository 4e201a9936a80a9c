"""What a non-editable install needs: the wheel carries the templates and migrations,
and the renderer finds templates where a wheel puts them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.render.environment import REQUIRED_TEMPLATES, shipped_templates

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy, so the checkout gets no build/ directory whose leftovers could
    # end up in a later wheel; --no-build-isolation: this venv's setuptools, no download.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for folder in ("pipeline", "templates"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [built] = out.glob("paperpost-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_carries_every_shipped_template(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for template in REQUIRED_TEMPLATES:
        assert any(n.endswith(f".data/data/share/paperpost/templates/{template}") for n in names), (
            template
        )


def test_the_wheel_carries_the_migrations(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "pipeline/store/migrations/env.py" in names
    assert "pipeline/store/migrations/script.py.mako" in names
    assert "pipeline/store/migrations/versions/0001_initial_schema.py" in names


def test_templates_are_found_where_a_wheel_installs_them(tmp_path: Path) -> None:
    installed = tmp_path / "share" / "paperpost" / "templates"
    installed.mkdir(parents=True)
    missing_checkout = tmp_path / "checkout" / "templates"
    assert shipped_templates((missing_checkout, installed)) == installed
    # A checkout's own directory wins when both exist.
    missing_checkout.mkdir(parents=True)
    assert shipped_templates((missing_checkout, installed)) == missing_checkout
