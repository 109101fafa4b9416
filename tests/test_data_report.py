"""The data report: one self-contained HTML page with the sections users need."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from skinclf.data.formats import load_dataset
from skinclf.data.report import write_report


def _report(table: pd.DataFrame, path: Path, **kwargs) -> str:
    assert write_report(table, path, **kwargs) == path
    return path.read_text(encoding="utf-8")


def _sources(page: str) -> list[str]:
    return re.findall(r"src=['\"]([^'\"]+)['\"]", page)


def test_ham10000_report_sections_and_self_contained(ham_sample: Path, tmp_path: Path) -> None:
    table = load_dataset(ham_sample)
    page = _report(table, tmp_path / "eda.html", examples_per_class=3)
    for heading in ("Class distribution", "Example images", "Metadata per class",
                    "Age per class", "Images per lesion_id"):  # fmt: skip
        assert heading in page
    sources = _sources(page)
    assert sources and all(s.startswith("data:image/") for s in sources)  # nothing external
    assert "<link" not in page and "<script" not in page
    thumbs = [s for s in sources if s.startswith("data:image/jpeg")]
    assert len(thumbs) == 3 * 7  # examples_per_class for each of the 7 classes
    plots = [s for s in sources if s.startswith("data:image/png")]
    assert len(plots) >= 4  # distribution, age, sex, localization (+ images per lesion)
    assert "25.0%" not in page and "14.3%" in page  # 4 of 28 images per class


def test_pad_report_shows_region_fitspatrick_and_scc(pad_sample: Path, tmp_path: Path) -> None:
    table = load_dataset(pad_sample)
    page = _report(table, tmp_path / "pad.html")
    assert "Region per class" in page and "fitspatrick" in page
    assert "scc (OOD)" in page and "Images per patient_id" in page
    n_scc = int(table.semantic_ood.sum())
    assert f"<b>{n_scc}</b><span>semantic OOD" in page


def test_report_survives_a_broken_image(make_sample, tmp_path: Path) -> None:
    table = load_dataset(make_sample("folder", n=2))
    Path(table.path.iloc[0]).write_bytes(b"")
    page = _report(table, tmp_path / "sub" / "r.html", examples_per_class=2)
    thumbs = [s for s in _sources(page) if s.startswith("data:image/jpeg")]
    assert len(thumbs) == 2 * 7 - 1  # the broken image is skipped, the page still written


def test_report_thumbnails_honour_the_pixel_limit(make_sample, tmp_path: Path) -> None:
    """`data check --report --max-pixels N` shows no image larger than N (32 x 32 here)."""
    from typer.testing import CliRunner

    from skinclf.cli import app

    root = make_sample("folder", n=1)
    table = load_dataset(root)

    def jpegs(page: str) -> list[str]:
        return [s for s in _sources(page) if s.startswith("data:image/jpeg")]

    assert len(jpegs(_report(table, tmp_path / "all.html", max_pixels=32 * 32))) == 7
    assert jpegs(_report(table, tmp_path / "none.html", max_pixels=32 * 32 - 1)) == []
    report = tmp_path / "cli.html"
    args = ["data", "check", str(root), "--report", str(report), "--max-pixels", "1000"]
    assert CliRunner().invoke(app, args).exit_code == 1  # every image over the limit
    assert jpegs(report.read_text(encoding="utf-8")) == []
