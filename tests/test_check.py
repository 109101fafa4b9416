"""`skinclf data check`: every bad-input case, all problems in one pass, exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from skinclf.classes import CLASSES
from skinclf.cli import app
from skinclf.data.check import check_dataset, verify_image

runner = CliRunner()

# kind -> (level, problem kind, text the message must contain)
EXPECTED = {
    "missing-image": ("error", "missing-image", "line"),
    "extra-image": ("warning", "extra-image", "ISIC_9999999.jpg"),
    "unknown-label": ("error", "unknown-label", "line 3"),
    "duplicate-id": ("error", "duplicate-id", "is duplicated (also on line 2)"),
    "unreadable-image": ("error", "bad-image", "not a readable image"),
    "truncated-image": ("error", "bad-image", "truncated"),
    "zero-byte-image": ("error", "bad-image", "empty (0 bytes)"),
    "missing-column": ("error", "missing-column", "has no column"),
    "not-a-csv": ("error", "not-a-csv", "not a CSV"),
    "empty-folder": ("error", "unreadable", "empty folder"),
    "no-such-path": ("error", "unreadable", "does not exist"),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_bad_input_is_reported(make_broken, kind: str) -> None:
    root = make_broken(kind, "ham10000")
    result = check_dataset(root, progress=False)
    level, problem_kind, text = EXPECTED[kind]
    assert [(p.level, p.kind) for p in result.problems] == [(level, problem_kind)]
    assert text in result.problems[0].message
    assert result.usable == (level == "warning")


@pytest.mark.parametrize("format", ["pad-ufes-20", "isic2018", "csv"])
@pytest.mark.parametrize(
    "kind", ["missing-image", "unknown-label", "duplicate-id", "missing-column", "not-a-csv"]
)
def test_metadata_problems_in_other_formats(make_broken, format: str, kind: str) -> None:
    result = check_dataset(make_broken(kind, format), progress=False)
    assert not result.usable
    assert [p.kind for p in result.errors] == [EXPECTED[kind][1]]


@pytest.mark.parametrize("kind", ["unknown-label", "extra-image", "truncated-image"])
def test_folder_format_problems(make_broken, kind: str) -> None:
    result = check_dataset(make_broken(kind, "folder"), progress=False)
    assert [p.kind for p in result.problems] == [EXPECTED[kind][1]]
    if kind == "unknown-label":
        assert "'angioma'" in result.problems[0].message
        assert "allowed folder names: akiec" in result.problems[0].message


def test_messages_name_file_row_and_value(make_broken) -> None:
    result = check_dataset(make_broken("unknown-label", "csv"), progress=False)
    message = result.errors[0].message
    assert "labels.csv line 3" in message and "'melanocytic'" in message
    assert "allowed labels: " + ", ".join(CLASSES) in message


def test_all_problems_in_one_pass(make_sample) -> None:
    root = make_sample("ham10000")
    meta = root / "HAM10000_metadata.csv"
    lines = meta.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[2], "cancer", 1)
    lines.append(lines[1])  # duplicated image_id
    meta.write_text("\n".join(lines) + "\n")
    images = sorted(root.rglob("*.jpg"))
    images[0].unlink()  # a row without its image
    images[1].write_bytes(b"")  # a zero-byte image
    images[2].write_bytes(images[2].read_bytes()[:100])  # a truncated image
    result = check_dataset(root, progress=False)
    kinds = sorted(p.kind for p in result.errors)
    assert kinds == ["bad-image", "bad-image", "duplicate-id", "missing-image", "unknown-label"]


def test_summary_counts(pad_sample: Path) -> None:
    result = check_dataset(pad_sample, progress=False)
    s = result.summary
    table = result.table
    assert result.usable and not result.problems
    assert s["rows"] == s["images_found"] == s["images_readable"] == len(table)
    assert s["class_counts"] == {c: (4 if c not in ("df", "vasc") else 0) for c in CLASSES}
    assert s["semantic_ood"] == s["unlabelled"] == int(table.semantic_ood.sum()) >= 1
    assert s["group_column"] == "patient_id" and s["groups"] == table.patient_id.nunique()
    assert sum(k * v for k, v in s["images_per_group"].items()) == len(table)
    assert s["image_sizes"] == {"32x32": len(table)}
    assert set(s["image_modes"]) <= {"RGB", "RGBA"} and "RGBA" in s["image_modes"]


def test_no_verify_skips_decoding(make_broken) -> None:
    root = make_broken("truncated-image")
    assert check_dataset(root, verify_images=False, progress=False).usable
    assert not check_dataset(root, verify_images=True, progress=False).usable


def test_verify_image_cases(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / "ok.jpg")
    Image.new("L", (20, 10)).save(tmp_path / "ok.png")
    assert verify_image(str(tmp_path / "ok.jpg")) == ((40, 30), "RGB", None)
    assert verify_image(str(tmp_path / "ok.png")) == ((20, 10), "L", None)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "truncated" in verify_image(str(tmp_path / "cut.jpg"))[2]
    assert "not a readable image" in verify_image(str(tmp_path / "text.png"))[2]
    assert "0 bytes" in verify_image(str(tmp_path / "empty.jpg"))[2]


def test_cli_check_usable_sample_exits_0(ham_sample: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(ham_sample)])
    assert result.exit_code == 0, result.output
    assert "usable" in result.output and "not usable" not in result.output
    assert "lesion_id" in result.output and "nv" in result.output


def test_cli_check_broken_exits_1_without_traceback(make_broken) -> None:
    result = runner.invoke(app, ["data", "check", str(make_broken("missing-image"))])
    assert result.exit_code == 1
    assert "no image file for image_id" in result.output and "not usable" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an exception


def test_cli_check_missing_path_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_cli_check_format_option_and_report(csv_sample: Path, tmp_path: Path) -> None:
    report = tmp_path / "eda.html"
    result = runner.invoke(
        app, ["data", "check", str(csv_sample), "--format", "csv", "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    assert report.is_file() and "<html" in report.read_text()


def test_cli_check_wrong_format_is_reported(ham_sample: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(ham_sample), "--format", "pad-ufes-20"])
    assert result.exit_code == 1 and "no metadata.csv" in result.output


def test_cli_sample_writes_a_checkable_dataset(tmp_path: Path) -> None:
    out = tmp_path / "sample"
    result = runner.invoke(
        app, ["data", "sample", "--format", "isic2018", "--out", str(out), "--n", "2"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "ISIC2018_Task3_Test_GroundTruth.csv").is_file()
    assert check_dataset(out, progress=False).summary["images_found"] == 14


def test_cli_sample_refuses_a_non_empty_folder(ham_sample: Path, tmp_path: Path) -> None:
    from skinclf.errors import ConfigError

    target = shutil.copytree(ham_sample, tmp_path / "existing")
    result = runner.invoke(app, ["data", "sample", "--out", str(target)])
    assert isinstance(result.exception, ConfigError)
    assert "not empty" in str(result.exception)
