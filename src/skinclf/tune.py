"""`skinclf tune`: Optuna search for the settings that maximise validation balanced accuracy.

The search runs where it is cheap: on the cached frozen-backbone features (stage 1), with the
same `train_head` a training run uses, so each trial takes seconds on a CPU. It never looks
at the test split. The study lives in `OUT/study.db` (SQLite): an interrupted search resumes
with the trials it has, and `OUT/best.yaml` is a config file for `skinclf train --config`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from skinclf.config import RunConfig, load_config
from skinclf.errors import ConfigError

SEARCH_SPACE_HELP = (
    "loss.name (ce, weighted_ce, focal, logit_adjusted), loss.tau, loss.label_smoothing, "
    "train.sampler, model.head, model.dropout, transfer.lr, transfer.weight_decay, "
    "transfer.epochs"
)


def suggest(trial) -> list[str]:
    """One point of the search space, as key=value overrides."""
    loss = trial.suggest_categorical("loss.name", ["ce", "weighted_ce", "focal", "logit_adjusted"])
    overrides = [
        f"loss.name={loss}",
        f"loss.label_smoothing={trial.suggest_float('loss.label_smoothing', 0.0, 0.15)}",
        f"train.sampler={trial.suggest_categorical('train.sampler', ['uniform', 'class_balanced', 'sqrt_balanced'])}",  # noqa: E501
        f"model.head={trial.suggest_categorical('model.head', ['linear', 'mlp'])}",
        f"model.dropout={trial.suggest_float('model.dropout', 0.0, 0.5)}",
        f"transfer.lr={trial.suggest_float('transfer.lr', 1e-4, 1e-2, log=True)}",
        f"transfer.weight_decay={trial.suggest_float('transfer.weight_decay', 1e-6, 1e-2, log=True)}",  # noqa: E501
        f"transfer.epochs={trial.suggest_int('transfer.epochs', 10, 60, step=10)}",
    ]
    if loss == "logit_adjusted":
        overrides.append(f"loss.tau={trial.suggest_float('loss.tau', 0.25, 2.0)}")
    if loss == "weighted_ce":
        weights = trial.suggest_categorical("loss.class_weights", ["inverse", "sqrt_inverse"])
        overrides.append(f"loss.class_weights={weights}")
    return overrides


def tune(
    data: Path | str,
    out: Path | str,
    cfg: RunConfig,
    trials: int = 30,
    split_file: Path | str | None = None,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
):
    """Run (or continue) the study; returns it. `cfg` gives everything not searched."""
    import optuna

    from skinclf.data.cache import default_cache_dir
    from skinclf.train.losses import build_loss, class_counts
    from skinclf.train.run import (
        build_model,
        frozen_features,
        prepare_data,
        quiet_lightning,
        resolve_precision,
        train_head,
    )

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}.")
    quiet_lightning()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    prepared = prepare_data(data, cfg, out, split_file, cache_dir=cache_dir, progress=progress)
    prepared.table[["image_id", "split"]].to_csv(out / "split.csv", index=False)
    model, _ = build_model(cfg, prepared)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator, training=False)
    feats = frozen_features(model, cfg, prepared, cache_dir, precision, progress)
    counts = class_counts(prepared.labels["train"], 7)
    base = cfg.model_dump(mode="json")

    def objective(trial) -> float:
        overrides = suggest(trial)
        trial_cfg = load_config(cfg.preset, None, overrides_on(base, overrides))
        loss = build_loss(trial_cfg.loss, counts)
        _, score = train_head(
            trial_cfg, loss, feats, prepared.labels, model.num_features, out, progress=False
        )
        log(f"trial {trial.number}: val balanced accuracy {score:.4f}  {' '.join(overrides)}")
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="skinclf",
        storage=f"sqlite:///{out / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
    )
    remaining = max(0, trials - len(study.trials))
    study.optimize(objective, n_trials=remaining, show_progress_bar=progress)
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    best = load_config(cfg.preset, None, overrides_on(base, suggest_fixed(study.best_params)))
    (out / "best.yaml").write_text(
        f"# Best of {len(study.trials)} trials: validation balanced accuracy "
        f"{study.best_value:.4f} (head on frozen features)\n"
        + yaml.safe_dump(best.model_dump(mode="json"), sort_keys=False)
    )
    return study


def overrides_on(base: dict, overrides: list[str]) -> list[str]:
    """The base config as overrides, then the trial's: a complete, validated config."""

    def flatten(d: dict, prefix: str = "") -> list[str]:
        items = []
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                items.extend(flatten(v, key + "."))
            else:
                items.append(f"{key}={json.dumps(v)}")  # JSON is valid YAML
        return items

    return [i for i in flatten(base) if not i.startswith("preset=")] + overrides


def suggest_fixed(params: dict) -> list[str]:
    """Best params of a study as overrides."""
    return [f"{k}={v}" for k, v in params.items()]
