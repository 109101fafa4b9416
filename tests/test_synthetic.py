"""Generated sample data: real file names and columns, class-dependent and learnable images."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinclf.classes import CLASSES
from skinclf.data.synthetic import (
    BROKEN_KINDS,
    LESION_LABELS,
    PAD_COLUMNS,
    make_lesion_image,
    write_broken,
    write_sample,
)


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_make_lesion_image_size_mode_and_variation() -> None:
    rng = np.random.default_rng(0)
    a = make_lesion_image("mel", rng, size=40)
    b = make_lesion_image("mel", rng, size=40)
    assert a.size == (40, 40) and a.mode == "RGB"
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # no two images identical
    again = make_lesion_image("mel", np.random.default_rng(0), size=40)
    assert np.array_equal(np.asarray(a), np.asarray(again))  # deterministic for a seed


def test_make_lesion_image_rejects_unknown_label() -> None:
    with pytest.raises(ValueError, match="unknown lesion label"):
        make_lesion_image("melanoma", np.random.default_rng(0))


def test_classes_differ_in_colour() -> None:
    rng = np.random.default_rng(1)
    means = {
        c: np.mean([np.asarray(make_lesion_image(c, rng, 32), float) for _ in range(6)], axis=0)
        for c in LESION_LABELS
    }
    # melanoma is darker than a nevus, vascular lesions are redder than nevi
    centre = slice(12, 20)
    assert means["mel"][centre, centre].mean() < means["nv"][centre, centre].mean()
    red = {c: m[centre, centre, 0] - m[centre, centre, 1] for c, m in means.items()}
    assert red["vasc"].mean() > red["nv"].mean()


def test_linear_model_learns_the_classes() -> None:
    """Balanced accuracy of a linear model on simple colour features is far above chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(img: Image.Image) -> np.ndarray:
        a = np.asarray(img, np.float32) / 255
        small = np.asarray(img.resize((8, 8)), np.float32).ravel() / 255
        pct = np.percentile(a.reshape(-1, 3), [5, 25, 50], axis=0).ravel()
        return np.concatenate([a.mean((0, 1)), a.std((0, 1)), pct, small])

    rng = np.random.default_rng(0)
    x = np.array([features(make_lesion_image(c, rng, 32)) for c in CLASSES for _ in range(24)])
    y = np.repeat(np.arange(len(CLASSES)), 24)
    train = np.tile(np.arange(24) < 16, len(CLASSES))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x[train], y[train])
    score = balanced_accuracy_score(y[~train], model.predict(x[~train]))
    assert score > 0.6  # chance is 1/7 = 0.14


def test_ham10000_sample_has_official_layout(ham_sample: Path) -> None:
    header, rows = _rows(ham_sample / "HAM10000_metadata.csv")
    assert header == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    assert {c: sum(r["dx"] == c for r in rows) for c in CLASSES} == {c: 4 for c in CLASSES}
    part1 = {p.stem for p in (ham_sample / "HAM10000_images_part_1").glob("*.jpg")}
    part2 = {p.stem for p in (ham_sample / "HAM10000_images_part_2").glob("*.jpg")}
    assert part1 and part2 and part1 | part2 == {r["image_id"] for r in rows}
    assert all(re.fullmatch(r"ISIC_\d{7}", r["image_id"]) for r in rows)
    assert all(re.fullmatch(r"HAM_\d{7}", r["lesion_id"]) for r in rows)
    per_lesion = {}
    for r in rows:
        per_lesion[r["lesion_id"]] = per_lesion.get(r["lesion_id"], 0) + 1
    assert set(per_lesion.values()) <= {1, 2, 3} and max(per_lesion.values()) > 1


def test_ham10000_sample_has_the_real_quirks(tmp_path: Path) -> None:
    _, rows = _rows(write_sample(tmp_path, "ham10000", n=20, size=16) / "HAM10000_metadata.csv")
    assert any(r["age"] == "" for r in rows)
    assert any(r["sex"] == "unknown" for r in rows)
    assert all(r["age"] == "" or r["age"].endswith(".0") for r in rows)  # written like 80.0


def test_pad_ufes_20_sample_has_official_columns(pad_sample: Path) -> None:
    header, rows = _rows(pad_sample / "metadata.csv")
    assert header == list(PAD_COLUMNS) and len(header) == 26 and "fitspatrick" in header
    counts = {d: sum(r["diagnostic"] == d for r in rows) for d in ("ACK", "BCC", "MEL", "NEV",
                                                                   "SEK", "SCC")}  # fmt: skip
    assert all(counts[d] == 4 for d in ("ACK", "BCC", "MEL", "NEV", "SEK"))
    assert 1 <= counts["SCC"] < 4
    assert any(r["fitspatrick"] == "" for r in rows)
    for r in rows:
        assert re.fullmatch(rf"{r['patient_id']}_{r['lesion_id']}_\d+\.png", r["img_id"])
        assert (pad_sample / "images" / r["img_id"]).is_file()
    modes = {Image.open(pad_sample / "images" / r["img_id"]).mode for r in rows}
    assert "RGBA" in modes


def test_isic2018_sample_uses_official_names(isic_sample: Path) -> None:
    header, rows = _rows(isic_sample / "ISIC2018_Task3_Test_GroundTruth.csv")
    assert header == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert len(rows) == 4 * 7
    for r in rows:
        assert sorted(r[c] for c in header[1:]) == ["0.0"] * 6 + ["1.0"]
        assert (isic_sample / "ISIC2018_Task3_Test_Input" / f"{r['image']}.jpg").is_file()
    assert rows[0]["image"] == "ISIC_0034524"  # first image id of the official test set


def test_folder_and_csv_samples(folder_sample: Path, csv_sample: Path) -> None:
    assert sorted(p.name for p in folder_sample.iterdir()) == sorted(CLASSES)
    assert all(len(list((folder_sample / c).glob("*.jpg"))) == 4 for c in CLASSES)
    header, rows = _rows(csv_sample / "labels.csv")
    assert header == ["path", "label", "group"]
    assert all((csv_sample / r["path"]).is_file() for r in rows)
    assert len({r["group"] for r in rows}) < len(rows)  # some groups hold several images


def test_write_sample_is_deterministic(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a", "pad-ufes-20", n=2, seed=3, size=16)
    b = write_sample(tmp_path / "b", "pad-ufes-20", n=2, seed=3, size=16)
    c = write_sample(tmp_path / "c", "pad-ufes-20", n=2, seed=4, size=16)
    assert (a / "metadata.csv").read_bytes() == (b / "metadata.csv").read_bytes()
    assert (a / "metadata.csv").read_bytes() != (c / "metadata.csv").read_bytes()


def test_write_sample_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sample format"):
        write_sample(tmp_path, "dicom")


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_write_broken_writes_each_kind(tmp_path: Path, kind: str) -> None:
    root = write_broken(tmp_path / kind, kind, format="ham10000")
    if kind == "no-such-path":
        assert not root.exists()
    elif kind == "empty-folder":
        assert root.is_dir() and not any(root.iterdir())
    else:
        assert (root / "HAM10000_metadata.csv").exists()


def test_write_broken_zero_byte_and_truncated(tmp_path: Path) -> None:
    zero = write_broken(tmp_path / "z", "zero-byte-image", format="folder")
    assert any(p.stat().st_size == 0 for p in zero.rglob("*.jpg"))
    trunc = write_broken(tmp_path / "t", "truncated-image", format="pad-ufes-20")
    sizes = sorted(p.stat().st_size for p in trunc.rglob("*.png"))
    assert sizes[0] < sizes[len(sizes) // 2] / 1.5


def test_write_broken_rejects_kinds_a_folder_cannot_have(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metadata file"):
        write_broken(tmp_path, "duplicate-id", format="folder")
