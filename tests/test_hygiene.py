"""Repository hygiene: no dataset images, ISIC_*/PAT_* files or big binaries are tracked,
and tests never read the shared real-data folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 1_000_000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm"}
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".cfg", ".toml", ".txt", ".csv", ".json", ".md"}
SHARED = ".." + "/shared"  # built by concatenation so this file does not mention it itself
EMBEDDED_JPEG = "data:image/jpeg;" + "base64,"


def _tracked() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    names = out.stdout.decode().split("\0")
    return [ROOT / n for n in names if n and (ROOT / n).is_file()]


def _is_binary(path: Path) -> bool:
    with path.open("rb") as f:
        return b"\0" in f.read(8192)


def dataset_names(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.name.upper().startswith(("ISIC_", "PAT_"))]


def big_images_or_binaries(paths: list[Path]) -> list[Path]:
    return [
        p
        for p in paths
        if p.stat().st_size > MAX_BYTES and (p.suffix.lower() in IMAGE_SUFFIXES or _is_binary(p))
    ]


def reports_with_images(paths: list[Path]) -> list[Path]:
    return [
        p
        for p in paths
        if p.suffix.lower() in {".html", ".htm"} and EMBEDDED_JPEG in p.read_text(errors="ignore")
    ]


def mentions_shared(paths: list[Path]) -> list[Path]:
    return [
        p for p in paths if p.suffix in TEXT_SUFFIXES and SHARED in p.read_text(errors="ignore")
    ]


def test_no_dataset_file_names_are_tracked() -> None:
    bad = dataset_names(_tracked())
    assert not bad, f"dataset files are tracked (git rm --cached them): {bad}"


def test_no_large_images_or_binaries_are_tracked() -> None:
    bad = big_images_or_binaries(_tracked())
    assert not bad, f"images or binaries over 1 MB are tracked: {bad}"


def test_no_report_with_embedded_images_is_tracked() -> None:
    bad = reports_with_images(_tracked())
    assert not bad, f"reports embedding dataset images are tracked: {bad}"


def test_tests_never_read_the_shared_data() -> None:
    bad = mentions_shared(sorted(p for p in (ROOT / "tests").rglob("*") if p.is_file()))
    assert not bad, f"tests must not depend on {SHARED} (a fresh clone lacks it): {bad}"


def test_the_rules_catch_what_they_should(tmp_path: Path) -> None:
    """Each rule flags a bad file and passes a good one (so the checks above are not vacuous)."""
    files = {
        "isic_0024306.jpg": b"x",
        "PAT_46_881_939.png": b"x",
        "big.png": b"x" * (MAX_BYTES + 1),
        "model.bin": b"\0" * (MAX_BYTES + 1),
        "big.csv": b"a,b\n" * (MAX_BYTES // 4 + 1),  # big text is fine
        "small.png": b"x" * 100,
        "eda.html": f"<img src='{EMBEDDED_JPEG}AAAA'>".encode(),
        "page.html": b"<img src='data:image/png;base64,AAAA'>",
        "test_bad.py": f"ROOT = '{SHARED}/data'".encode(),
        "test_ok.py": b"ROOT = 'tmp'",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = sorted(tmp_path.iterdir())
    names = lambda ps: sorted(p.name for p in ps)  # noqa: E731
    assert names(dataset_names(paths)) == ["PAT_46_881_939.png", "isic_0024306.jpg"]
    assert names(big_images_or_binaries(paths)) == ["big.png", "model.bin"]
    assert names(reports_with_images(paths)) == ["eda.html"]
    assert names(mentions_shared(paths)) == ["test_bad.py"]
