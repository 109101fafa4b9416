"""Loaders: every format returns the dataset table of DESIGN.md; layouts and quirks."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinclf.classes import CLASSES
from skinclf.data.formats import (
    detect_format,
    load_dataset,
    open_rgb,
    read_dataset,
)
from skinclf.data.table import TABLE_COLUMNS
from skinclf.errors import DataError


def _check_table(table: pd.DataFrame, dataset: str) -> None:
    assert tuple(table.columns[: len(TABLE_COLUMNS)]) == TABLE_COLUMNS
    assert set(table.dataset) == {dataset}
    assert table.image_id.is_unique
    assert all(Path(p).is_file() for p in table.path)
    assert set(table.label) <= {*CLASSES, ""}
    assert (table.label[table.label == ""].index == table.index[table.semantic_ood]).all()
    assert table.semantic_ood.dtype == bool


@pytest.mark.parametrize(
    ("fixture", "dataset"),
    [
        ("ham_sample", "ham10000"),
        ("pad_sample", "pad-ufes-20"),
        ("isic_sample", "isic2018"),
        ("folder_sample", "folder"),
        ("csv_sample", "csv"),
    ],
)
def test_each_format_is_detected_and_loaded(
    fixture: str, dataset: str, request: pytest.FixtureRequest
) -> None:
    root = request.getfixturevalue(fixture)
    assert detect_format(root) == dataset
    table = load_dataset(root)
    _check_table(table, dataset)
    assert table.equals(load_dataset(str(root), format=dataset))


def test_ham10000_table(ham_sample: Path) -> None:
    table = load_dataset(ham_sample)
    meta = pd.read_csv(ham_sample / "HAM10000_metadata.csv")
    # the official columns follow, in official order (image_id is already a table column)
    assert list(table.columns[6:]) == [c for c in meta.columns if c != "image_id"]
    assert (table.group == table.lesion_id).all()
    assert (table.label == table.dx).all()
    assert table.label.value_counts().to_dict() == {c: 4 for c in CLASSES}
    assert table.age.dtype.kind == "f"  # empty age -> NaN, like pandas reads the file
    row = table.set_index("image_id").loc[meta.image_id.iloc[0]]
    assert Path(row.path).stem == meta.image_id.iloc[0]


def test_ham10000_tab_separated_and_single_folder(ham_sample: Path, tmp_path: Path) -> None:
    """The Dataverse tab-separated metadata, and all images in one HAM10000_images/ folder."""
    root = tmp_path / "ham"
    (root / "HAM10000_images").mkdir(parents=True)
    for p in ham_sample.rglob("*.jpg"):
        shutil.copy(p, root / "HAM10000_images" / p.name)
    with (ham_sample / "HAM10000_metadata.csv").open() as f:
        rows = list(csv.reader(f))
    with (root / "HAM10000_metadata.tab").open("w", newline="") as f:
        csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONNUMERIC).writerows(rows)
    assert detect_format(root) == "ham10000"
    table = load_dataset(root)
    expected = load_dataset(ham_sample)
    assert table.image_id.tolist() == expected.image_id.tolist()
    assert table.label.tolist() == expected.label.tolist()
    assert table.group.tolist() == expected.group.tolist()


def test_ham10000_kaggle_duplicate_folders_warn_once(ham_sample: Path, tmp_path: Path) -> None:
    """The Kaggle download has every image twice (HAM10000_images_part_1 and lower case)."""
    root = shutil.copytree(ham_sample, tmp_path / "kaggle")
    shutil.copytree(root / "HAM10000_images_part_1", root / "ham10000_images_part_1")
    result = read_dataset(root)
    assert not result.errors
    assert [p.kind for p in result.warnings] == ["duplicate-file"]
    assert len(result.table) == len(load_dataset(ham_sample))


def test_load_from_the_metadata_file_itself(ham_sample: Path) -> None:
    table = load_dataset(ham_sample / "HAM10000_metadata.csv")
    assert len(table) == 28 and set(table.dataset) == {"ham10000"}


def test_pad_ufes_20_table(pad_sample: Path) -> None:
    table = load_dataset(pad_sample)
    meta = pd.read_csv(pad_sample / "metadata.csv")
    assert list(table.columns[6:]) == list(meta.columns)
    assert (table.group == table.patient_id).all()
    assert (table.image_id == table.img_id).all()
    mapping = {"ACK": "akiec", "BCC": "bcc", "MEL": "mel", "NEV": "nv", "SEK": "bkl", "SCC": ""}
    assert (table.label == table.diagnostic.map(mapping)).all()
    assert (table.semantic_ood == (table.diagnostic == "SCC")).all()
    assert table.semantic_ood.sum() >= 1
    assert table.fitspatrick.isna().any() and table.fitspatrick.dtype.kind == "f"


def test_pad_ufes_20_official_imgs_part_layout(pad_sample: Path, tmp_path: Path) -> None:
    root = shutil.copytree(pad_sample, tmp_path / "pad")
    images = sorted((root / "images").glob("*.png"))
    for i, p in enumerate(images):
        part = root / "images" / f"imgs_part_{i % 3 + 1}"
        part.mkdir(exist_ok=True)
        p.rename(part / p.name)
    table = load_dataset(root)
    assert len(table) == len(images)
    assert {Path(p).parent.name for p in table.path} == {
        "imgs_part_1",
        "imgs_part_2",
        "imgs_part_3",
    }


def test_isic2018_table(isic_sample: Path) -> None:
    table = load_dataset(isic_sample)
    truth = pd.read_csv(isic_sample / "ISIC2018_Task3_Test_GroundTruth.csv")
    one_hot = truth.set_index("image")[["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]]
    expected = one_hot.idxmax(axis=1).str.lower()
    assert (table.set_index("image_id").label == expected).all()
    assert (table.group == table.image_id).all()


def test_folder_table(folder_sample: Path) -> None:
    table = load_dataset(folder_sample)
    assert table.label.value_counts().to_dict() == {c: 4 for c in CLASSES}
    for image_id, label, path in zip(table.image_id, table.label, table.path, strict=True):
        assert image_id.split("/")[0] == label
        assert Path(path).resolve() == (folder_sample / image_id).resolve()
    assert (table.group == table.image_id).all()


def test_folder_class_names_are_case_insensitive(tmp_path: Path) -> None:
    for name in ("NV", "Mel"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "a.png")
    table = load_dataset(tmp_path, format="folder")
    assert sorted(table.label) == ["mel", "nv"]


def test_csv_table_paths_relative_to_the_csv(csv_sample: Path) -> None:
    table = load_dataset(csv_sample / "labels.csv")
    labels = pd.read_csv(csv_sample / "labels.csv")
    assert table.image_id.tolist() == labels.path.tolist()
    assert table.group.tolist() == labels.group.tolist()
    assert table.label.tolist() == labels.label.tolist()


def test_csv_labels_case_insensitive_and_group_optional(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    (tmp_path / "mine.csv").write_text("path,label\na.jpg,NV\nb.jpg, Mel \n")
    table = load_dataset(tmp_path)
    assert table.label.tolist() == ["nv", "mel"]
    assert table.group.tolist() == ["a.jpg", "b.jpg"]  # no group column: each image alone


def test_unknown_label_error_lists_allowed_labels(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    (tmp_path / "mine.csv").write_text("path,label\na.jpg,melanoma\n")
    with pytest.raises(DataError, match=r"'melanoma' is not a class; allowed labels: akiec, bcc"):
        load_dataset(tmp_path)


def test_load_dataset_raises_listing_all_errors(make_sample) -> None:
    root = make_sample("ham10000")
    meta = root / "HAM10000_metadata.csv"
    lines = meta.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split(",")[2], "cancer", 1)
    meta.write_text("\n".join(lines) + "\n")
    next(root.rglob("*.jpg")).unlink()
    with pytest.raises(DataError) as info:
        load_dataset(root)
    message = str(info.value)
    assert "2 error(s)" in message and "'cancer' is not a class" in message
    assert "no image file" in message and "skinclf data check" in message


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown format 'dicom'"):
        load_dataset(tmp_path, format="dicom")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="empty folder"):
        load_dataset(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_dataset(tmp_path)


def test_open_rgb_converts_modes(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (200, 100, 50, 255))
    rgba.save(tmp_path / "rgba.png")
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("L", (4, 4), 77).save(tmp_path / "grey.png")
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "grey16.png")
    Image.new("P", (4, 4), 3).save(tmp_path / "palette.png")
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    expected = {
        "rgba.png": (200, 100, 50),  # opaque alpha: colours kept
        "clear.png": (255, 255, 255),  # transparent: white background
        "grey.png": (77, 77, 77),
        "grey16.png": (255, 255, 255),  # 16-bit scaled to 8-bit
    }
    for name in ("rgba.png", "clear.png", "grey.png", "grey16.png", "palette.png", "cmyk.jpg"):
        img = open_rgb(tmp_path / name)
        assert img.mode == "RGB" and img.size == (4, 4), name
        if name in expected:
            assert img.getpixel((1, 1)) == expected[name], name


def test_open_rgb_draft_decodes_jpeg_smaller(tmp_path: Path) -> None:
    Image.new("RGB", (400, 300), (10, 120, 200)).save(tmp_path / "big.jpg")
    img = open_rgb(tmp_path / "big.jpg", draft=(100, 100))
    assert img.mode == "RGB" and 100 <= min(img.size) < 300
