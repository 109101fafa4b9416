"""The wheel carries every data file the package reads: configs, data sources, report templates."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "skinclf"
DATA_FILES = [
    *sorted(PACKAGE.glob("configs/*.yaml")),
    PACKAGE / "data" / "sources.yaml",
    *sorted(PACKAGE.glob("templates/*.html")),
    PACKAGE / "templates" / "style.css",
]


def _build_wheel(tmp_path: Path) -> Path:
    """Build the wheel offline from a copy of the sources (no build/ in the shared tree)."""
    src = tmp_path / "project"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = tmp_path / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "--quiet", "-w", str(out), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("skinclf-*.whl")
    return wheel


def test_wheel_holds_the_templates_stylesheet_and_yaml_files(tmp_path: Path) -> None:
    assert len(DATA_FILES) >= 8 and all(f.is_file() for f in DATA_FILES)
    with zipfile.ZipFile(_build_wheel(tmp_path)) as whl:
        names = set(whl.namelist())
    expected = {f.relative_to(PACKAGE.parent).as_posix() for f in DATA_FILES}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert "skinclf/templates/__init__.py" in names


def test_templates_are_not_git_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(f.relative_to(ROOT)) for f in DATA_FILES]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *files], cwd=ROOT, capture_output=True, text=True
    )
    assert done.stdout == "", f"git ignores package data: {done.stdout}"
    generated = ["report.html", "eda.html", "runs/x/eval/report.html", "src/skinclf/report.html"]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *generated], cwd=ROOT, capture_output=True, text=True
    )
    assert done.stdout.split() == generated  # generated reports stay ignored
