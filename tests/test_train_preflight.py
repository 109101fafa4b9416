"""What `skinclf train` settles before it writes anything: resume settings, optional logger
packages, unreachable hub weights, and --print-config (which writes nothing at all)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skinclf.config import load_config
from skinclf.errors import ConfigError
from skinclf.train.run import fit

QUIET = {"progress": False, "log": lambda *_: None}


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


# --- --resume ------------------------------------------------------------------------------
def test_fit_refuses_to_resume_with_changed_settings(
    trained_run: Path, learnable_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = _files(run)
    longer = load_config("sample", overrides=["train.epochs=3"])
    with pytest.raises(ConfigError) as err:
        fit(learnable_sample, run, longer, resume=True, cache_dir=train_cache, **QUIET)
    message = str(err.value)
    assert "train.epochs=3" in message and "train.epochs=1" in message
    assert "start a new run" in message
    assert _files(run) == before  # nothing trained, config.yaml not rewritten


def test_fit_refuses_to_resume_with_another_split(
    trained_run: Path, learnable_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    import pandas as pd

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    split = pd.read_csv(run / "split.csv")
    split.loc[0, "split"] = "test" if split.loc[0, "split"] != "test" else "val"
    other = tmp_path / "other.csv"
    split.to_csv(other, index=False)
    with pytest.raises(ConfigError, match="differs from the run's own split.csv"):
        fit(
            learnable_sample,
            run,
            load_config("sample"),
            split_file=other,
            resume=True,
            cache_dir=train_cache,
            **QUIET,
        )

