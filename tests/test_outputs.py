"""Output paths are checked before any work: one sentence, nothing left behind (CI runs as root,
which ignores permission bits, so "cannot write" is a parent that is a file, or the write probe
patched to raise PermissionError)."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

from skinclf.cli import main
from skinclf.errors import ConfigError
from skinclf.outputs import check_output


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["skinclf", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    return int(info.value.code or 0), capsys.readouterr().err


def _no_permission(folder: Path) -> None:
    raise PermissionError(errno.EACCES, "Permission denied", str(folder))


def test_check_output_names_each_unwritable_path(tmp_path: Path, monkeypatch) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is a file; give a folder"):
        check_output(a_file)
    with pytest.raises(ConfigError, match="a_file is a file, so nothing can be written under it"):
        check_output(a_file / "run")
    with pytest.raises(ConfigError, match="is a folder; give a file name"):
        check_output(tmp_path, kind="file")
    check_output(tmp_path / "new" / "deeper")  # creatable: fine, and nothing created
    check_output(tmp_path / "preds.csv", kind="file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    monkeypatch.setattr("skinclf.outputs.write_probe", _no_permission)
    with pytest.raises(ConfigError, match="cannot write in .* \\(Permission denied\\)"):
        check_output(tmp_path / "new")


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data", "DATA", "--out", "FILE"],
        ["train", "--data", "DATA", "--out", "FILE/run"],
        ["run", "--sample", "--out", "FILE/run"],
        ["data", "sample", "--out", "FILE/sample"],
    ],
)
def test_commands_refuse_an_output_under_a_file_at_once(
    args, ham_sample: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args = [str(a).replace("DATA", str(ham_sample)).replace("FILE", str(a_file)) for a in args]
    code, err = _cli(monkeypatch, capsys, *args)
    assert code == 1 and "error: --out" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize("command", ["train", "run", "data sample"])
def test_commands_refuse_an_output_they_may_not_write(
    command: str, ham_sample: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("skinclf.outputs.write_probe", _no_permission)
    out = tmp_path / "out"
    extra = {"train": ["--data", ham_sample], "run": ["--sample"], "data sample": []}[command]
    code, err = _cli(monkeypatch, capsys, *command.split(), *extra, "--out", out)
    assert code == 1 and "cannot write in" in err and "Permission denied" in err
    assert not out.exists()


def test_predict_refuses_a_folder_as_its_output_before_predicting(
    trained_run: Path, ham_sample: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "preds"
    out.mkdir()
    code, err = _cli(
        monkeypatch, capsys, "predict", trained_run, "--data", ham_sample, "--out", out
    )
    assert code == 1 and "is a folder; give a file name" in err
    assert list(tmp_path.iterdir()) == [out] and not any(out.iterdir())  # no .errors.csv
