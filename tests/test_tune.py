"""`skinclf tune`: an Optuna study on cached features that resumes and yields a config."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from skinclf.config import load_config
from skinclf.contracts.predictions import read_predictions
from skinclf.errors import ConfigError
from skinclf.tune import TuneOptions, tune


def test_study_resumes_and_writes_a_usable_config(
    learnable_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    cfg = load_config("sample")
    out = tmp_path / "study"
    quiet = {"progress": False, "log": lambda *_: None}
    study = tune(learnable_sample, out, cfg, TuneOptions(trials=2, cache_dir=train_cache), **quiet)
    assert len(study.trials) == 2
    first = study.trials[0]  # the untuned baseline: the preset's own values, enqueued first
    assert first.user_attrs == {"baseline": True}
    assert first.params["loss.name"] == cfg.loss.name
    assert first.params["transfer.lr"] == pytest.approx(cfg.transfer.lr)
    assert not study.trials[1].user_attrs
    with warnings.catch_warnings():  # optuna: heartbeats are meant for optimize(), as tune does
        warnings.simplefilter("ignore", UserWarning)
        study.ask()  # a trial left unfinished, as by an interrupted search: it is not counted
    study = tune(learnable_sample, out, cfg, TuneOptions(trials=3, cache_dir=train_cache), **quiet)
    assert len(study.trials) == 4  # the interrupted/continued study kept its trials
    assert [t.state.name for t in study.trials].count("COMPLETE") == 3
    assert 0.0 <= study.best_value <= 1.0
    assert study.best_value > 0.5  # far above chance (1/7) on the learnable sample
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and trials["value"].max() == pytest.approx(study.best_value)
    best = load_config("sample", out / "best.yaml")
    head = (out / "best.yaml").read_text().splitlines()[0]
    assert f"the preset's own settings (trial 0): {first.value:.4f}" in head
    assert best.loss.name == study.best_params["loss.name"]
    assert best.transfer.lr == pytest.approx(study.best_params["transfer.lr"])


def test_zero_trials_is_an_error(ham_sample: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        tune(ham_sample, tmp_path, load_config("sample"), TuneOptions(trials=0), progress=False)


FINETUNE = ["train.frozen_cache=true", "train.unfreeze=4", "train.frozen_views=2"]


def test_finetune_study_runs_trials_and_writes_a_usable_config(
    learnable_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    cfg = load_config("sample", overrides=[*FINETUNE, "transfer.epochs=5"])
    out = tmp_path / "ft"
    lines: list[str] = []
    options = TuneOptions(trials=2, cache_dir=train_cache, stage="finetune")
    study = tune(learnable_sample, out, cfg, options, progress=False, log=lines.append)
    assert len(study.trials) == 2 and len(lines) == 3
    # the sample preset's fine-tuning weight decay lies below the space: no baseline trial
    assert (
        lines[0]
        == "no baseline trial: the preset's train.weight_decay=0.0001 lies outside the space"
    )
    assert not any(t.user_attrs for t in study.trials)
    for t in study.trials:  # each trial is a whole run with its own settings
        run = out / "trials" / f"{t.number:04d}"
        trial_cfg = load_config("sample", run / "config.yaml")
        assert trial_cfg.train.backbone_lr == pytest.approx(t.params["train.backbone_lr"])
        assert trial_cfg.train.unfreeze == 4 and trial_cfg.train.frozen_cache  # fixed ones kept
        metrics = json.loads((run / "metrics.json").read_text())
        val = read_predictions(run / "val_predictions.csv")  # the objective's, via the Predictor
        assert t.value == pytest.approx(balanced_accuracy_score(val.y, val.pred))
        assert "val" not in metrics  # training ended at its checkpoint
        assert (run / "split.csv").read_text() == (out / "split.csv").read_text()
        assert "test" not in metrics and not (run / "test_predictions.csv").exists()  # unseen
        assert (run / "val_predictions.csv").is_file()
    assert study.best_value > 0.3  # chance: 1/7; one short epoch
    best = load_config("sample", out / "best.yaml")
    params = study.best_params
    assert best.train.lr == pytest.approx(params["train.lr"])
    assert best.augment.cutmix == params["augment.cutmix"]
    ema = params["train.ema_decay"]
    assert best.train.ema_decay == (None if ema == "none" else float(ema))
    assert best.train.epochs == 1 and best.transfer.epochs == 5 and best.train.frozen_cache


def test_pruning_stops_a_training_run(ham_sample: Path, train_cache: Path, tmp_path: Path) -> None:
    """The callback reports each epoch's validation score and stops the run when told to."""
    import optuna

    from skinclf.train.training import FitOptions, fit
    from skinclf.tune import PruneOnValidation

    class Trial:  # the two methods of optuna.Trial the callback uses
        def __init__(self) -> None:
            self.reports: list[tuple[int, float]] = []

        def report(self, value: float, step: int) -> None:
            self.reports.append((step, value))

        def should_prune(self) -> bool:
            return len(self.reports) >= 2

    trial = Trial()
    cfg = load_config("sample", overrides=["train.epochs=4"])
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        fit(
            ham_sample,
            tmp_path / "run",
            cfg,
            cache_dir=train_cache,
            progress=False,
            log=lambda *_: None,
            options=FitOptions(callbacks=[PruneOnValidation(trial)]),
        )
    assert [step for step, _ in trial.reports] == [0, 1]
    assert all(0.0 <= v <= 1.0 for _, v in trial.reports)


def test_unknown_stage_is_an_error(ham_sample: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown --stage 'backbone'"):
        tune(ham_sample, tmp_path, load_config("sample"), TuneOptions(stage="backbone"), False)


def test_none_in_best_params_becomes_null() -> None:
    from skinclf.tune import suggest_fixed

    assert suggest_fixed({"train.ema_decay": "none", "train.lr": 0.001}) == [
        "train.ema_decay=null",
        "train.lr=0.001",
    ]


def test_a_trial_whose_heartbeat_stopped_is_failed_and_run_again(tmp_path: Path) -> None:
    """A killed worker's trial stops beating: after the grace period the next trial any worker
    starts fails it (Optuna's heartbeat), and the retry callback queues its parameters again."""
    import time

    import optuna
    from optuna.trial import TrialState

    from skinclf.tune.storage import GRACE_BEATS, open_storage, storage_url

    url = storage_url(tmp_path, None)
    storage = open_storage(url, heartbeat=1)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    with warnings.catch_warnings():  # optuna: heartbeats are meant for optimize()
        warnings.simplefilter("ignore", UserWarning)
        dead = study.ask()
    dead.suggest_float("transfer.lr", 1e-4, 1e-2, log=True)
    storage.record_heartbeat(dead._trial_id)  # its last beat, then the process is gone
    time.sleep(GRACE_BEATS + 2)  # past the grace period (SQLite's clock has 1 s steps)
    seen: list[float] = []

    def objective(trial) -> float:
        seen.append(trial.suggest_float("transfer.lr", 1e-4, 1e-2, log=True))
        return 0.5

    again = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat=1))
    again.optimize(objective, n_trials=1)
    failed, retried = again.trials
    assert failed.state == TrialState.FAIL and retried.state == TrialState.COMPLETE
    assert retried.params == failed.params and seen == [failed.params["transfer.lr"]]
    assert retried.system_attrs["failed_trial"] == failed.number


def test_a_pruned_finetune_trial_is_logged(monkeypatch, tmp_path: Path) -> None:
    import optuna

    import skinclf.train.training as train_training
    from skinclf.config import load_search_space
    from skinclf.tune.search import TuneJob, _finetune_objective

    def pruned_fit(*args, **kwargs):
        raise optuna.TrialPruned("pruned after epoch 4")

    monkeypatch.setattr(train_training, "fit", pruned_fit)
    cfg = load_config("default")
    job = TuneJob(
        "data", str(tmp_path), cfg, load_search_space("default"), "finetune", 1, None,
        str(tmp_path), "sqlite://", "s", "median", 60, None, False,
    )  # fmt: skip
    lines: list[str] = []
    study = optuna.create_study(direction="maximize")
    study.optimize(_finetune_objective(job, lines.append), n_trials=1)
    assert study.trials[0].state.name == "PRUNED"
    assert lines and lines[0].startswith("trial 0: pruned after epoch 4  train.lr=")
