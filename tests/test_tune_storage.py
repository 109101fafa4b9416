"""Study storages of `skinclf tune`: URLs, the journal file, pruners and argument errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinclf.config import load_config
from skinclf.errors import ConfigError
from skinclf.tune import TuneOptions, tune
from skinclf.tune.storage import heartbeat_enabled, open_storage, storage_url


def test_storage_urls(tmp_path: Path) -> None:
    assert storage_url(tmp_path, None) == f"sqlite:///{tmp_path / 'study.db'}"
    assert storage_url(None, "postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert storage_url(tmp_path, "sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="needs --out DIR or --storage URL"):
        storage_url(None, None)
    assert heartbeat_enabled(open_storage(storage_url(tmp_path, None), heartbeat=5))
    assert not heartbeat_enabled(open_storage(storage_url(tmp_path, None), heartbeat=None))
    with pytest.raises(ConfigError, match="is not a storage URL"):
        open_storage("nonsense-db://x")


def test_a_journal_file_holds_a_study_without_heartbeat(tmp_path: Path) -> None:
    """journal:FILE: Optuna's JournalStorage (no server, no heartbeat), also for --show."""
    import optuna

    from skinclf.tune.show import show

    url = f"journal:{tmp_path / 'j' / 'study.log'}"
    storage = open_storage(url)
    assert isinstance(storage, optuna.storages.JournalStorage) and not heartbeat_enabled(storage)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("transfer.lr", 1e-4, 1e-2, log=True), n_trials=3)
    again = optuna.load_study(
        study_name="s", storage=open_storage(f"journal://{tmp_path}/j/study.log")
    )
    assert len(again.trials) == 3  # journal:///abs/FILE is the same file
    board = show(str(tmp_path / "j" / "study.log"))
    assert board.counts["COMPLETE"] == 3 and (tmp_path / "j" / "history.png").is_file()


def test_pruners() -> None:
    import optuna

    from skinclf.tune.study import make_pruner

    cfg = load_config("sample", overrides=["train.epochs=9"])
    hyperband = make_pruner("hyperband", cfg)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert hyperband._max_resource == 9
    assert isinstance(make_pruner("median", cfg), optuna.pruners.MedianPruner)
    assert make_pruner("median", cfg)._n_warmup_steps == 1


def test_head_stage_pruners() -> None:
    import optuna

    from skinclf.tune.study import HEAD_WARMUP_EPOCHS, make_pruner

    cfg = load_config("sample")
    median = make_pruner("median", cfg, "head")
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert median._n_warmup_steps == HEAD_WARMUP_EPOCHS
    assert make_pruner("hyperband", cfg, "head")._max_resource == "auto"  # epochs are searched
    assert isinstance(make_pruner("none", cfg, "head"), optuna.pruners.NopPruner)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"pruner": "asha"}, "Unknown --pruner 'asha'; choose one of: median, hyperband, none."),
        ({"workers": 0}, "--workers must be at least 1, got 0."),
        ({"timeout": -1.0}, "--timeout must be a positive number of seconds, got -1.0."),
        ({"heartbeat": 0}, "--heartbeat must be at least 1 second, got 0."),
    ],
)
def test_bad_arguments_are_one_sentence(
    arguments: dict, message: str, ham_sample: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        tune(ham_sample, tmp_path / "s", load_config("sample"), TuneOptions(**arguments), False)
    assert str(err.value) == message and not (tmp_path / "s").exists()
