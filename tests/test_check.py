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
from skinclf.data.formats import MAX_PIXELS_ENV
from skinclf.errors import ConfigError, DataError

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


def write_png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A tiny real PNG whose IHDR chunk declares width x height (CRC fixed): a cheap bomb."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"  # after the 8-byte signature and the chunk length
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def _bomb_dataset(make_sample, format: str) -> tuple[Path, Path]:
    root = make_sample(format)
    if format == "folder":
        return root, write_png_bomb(root / "nv" / "bomb.png")
    victim = sorted(root.rglob("*.jpg"))[3]
    victim.unlink()
    return root, write_png_bomb(victim.with_suffix(".png"))


@pytest.mark.parametrize("format", ["ham10000", "folder"])
def test_cli_check_reports_a_decompression_bomb_in_one_line(make_sample, format: str) -> None:
    import warnings

    root, bomb = _bomb_dataset(make_sample, format)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, ["data", "check", str(root)], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an exception
    assert "Traceback" not in result.output and "DecompressionBomb" not in result.output
    assert not [w for w in caught if "DecompressionBomb" in w.category.__name__]
    lines = [line for line in result.output.splitlines() if bomb.name in line]
    assert len(lines) == 1, result.output
    assert "30000 x 30000 pixels (900 megapixels)" in lines[0]
    assert "over the limit of 180 megapixels" in lines[0]
    assert lines[0].endswith(f"raise it with {MAX_PIXELS_ENV}=PIXELS or --max-pixels PIXELS.")
    assert "not usable" in result.output


def test_image_limit_is_configurable_and_pillow_never_warns(
    make_sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JPEG over Pillow's warning threshold (emulated by lowering it to 3000 pixels for the
    64 px images): accepted silently under skinclf's limit, one problem line over it."""
    import warnings

    root = make_sample("ham10000", n=1, size=64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 64 x 64 = 4096: Pillow would warn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = runner.invoke(app, ["data", "check", str(root)])
        env = runner.invoke(app, ["data", "check", str(root)], env={MAX_PIXELS_ENV: "4000"})
        option = runner.invoke(app, ["data", "check", str(root), "--max-pixels", "4000"])
    assert not [w for w in caught if "DecompressionBomb" in w.category.__name__]
    assert ok.exit_code == 0, ok.output
    for result in (env, option):
        assert result.exit_code == 1, result.output
        assert "DecompressionBomb" not in result.output
        assert "64 x 64 pixels (0.0041 megapixels), over the limit of 0.004 megapixels" in (
            result.output
        )
    bad = runner.invoke(app, ["data", "check", str(root)], env={MAX_PIXELS_ENV: "lots"})
    assert isinstance(bad.exception, ConfigError) and MAX_PIXELS_ENV in str(bad.exception)


def test_training_names_the_bomb_in_one_sentence(make_sample, tmp_path: Path) -> None:
    from skinclf.data.cache import build_cache
    from skinclf.data.formats import load_dataset

    root, bomb = _bomb_dataset(make_sample, "folder")
    with pytest.raises(DataError, match=r"bomb\.png: the file declares 30000 x 30000 pixels") as e:
        build_cache(load_dataset(root), 16, cache_dir=tmp_path / "c", progress=False)
    message = str(e.value)  # one remedy, and one that works outside `data check`
    assert message.endswith(f"180 megapixels; raise it with {MAX_PIXELS_ENV}=PIXELS and run again.")
    assert "--max-pixels" not in message and "remove" not in message and "\n" not in message
