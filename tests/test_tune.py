"""`skinclf tune`: an Optuna study on cached features that resumes and yields a config."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from skinclf.config import load_config
from skinclf.errors import ConfigError
from skinclf.tune import tune


def test_study_resumes_and_writes_a_usable_config(
    learnable_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    cfg = load_config("sample")
    out = tmp_path / "study"
    quiet = {"cache_dir": train_cache, "progress": False, "log": lambda *_: None}
    study = tune(learnable_sample, out, cfg, trials=2, **quiet)
    assert len(study.trials) == 2
    study = tune(learnable_sample, out, cfg, trials=3, **quiet)
    assert len(study.trials) == 3  # the interrupted/continued study kept its trials
    assert 0.0 <= study.best_value <= 1.0
    assert study.best_value > 0.5  # far above chance (1/7) on the learnable sample
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and trials["value"].max() == pytest.approx(study.best_value)
    best = load_config("sample", out / "best.yaml")
    assert best.loss.name == study.best_params["loss.name"]
    assert best.transfer.lr == pytest.approx(study.best_params["transfer.lr"])


def test_zero_trials_is_an_error(ham_sample: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        tune(ham_sample, tmp_path, load_config("sample"), trials=0, progress=False)
