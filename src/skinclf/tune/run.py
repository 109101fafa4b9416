"""`skinclf tune`: Optuna search for the settings that maximise validation balanced accuracy.

Two stages, one study each; neither ever looks at the test split.
- `head` (default): on the cached frozen-backbone features (stage 1), with the same
  `train_head` a training run uses, so each trial takes seconds on a CPU: loss, sampler, head
  and stage-1 optimiser.
- `finetune`: whole training runs (`fit`, stage 1 then fine-tuning), each in
  `OUT/trials/NNNN/`, scored by the run's final validation balanced accuracy; unpromising
  trials are pruned after each epoch (median rule). The searched settings do not change the
  feature or activation caches, so every trial reuses them: with `train.frozen_cache` a trial
  costs only its fine-tuning epochs.
The study lives in `OUT/study.db` (SQLite): an interrupted search resumes with the trials it
has (the trial it was running is marked failed and its parameters are run again), and
`OUT/best.yaml` is a config file for `skinclf train --config`.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

import lightning as L
import yaml

from skinclf import atomic
from skinclf.atomic import process_alive
from skinclf.config import RunConfig, load_config
from skinclf.errors import ConfigError
from skinclf.faults import fault_point

Stage = Literal["head", "finetune"]
STAGES: tuple[str, ...] = get_args(Stage)
MAX_RETRIES = 2  # a trial whose process keeps dying (e.g. out of memory) is not run forever

SEARCH_SPACE_HELP = {
    "head": "loss.name (ce, weighted_ce, focal, logit_adjusted), loss.tau, loss.label_smoothing, "
    "train.sampler, model.head, model.dropout, transfer.lr, transfer.weight_decay, "
    "transfer.epochs",
    "finetune": "train.lr, train.backbone_lr, train.weight_decay, train.ema_decay, "
    "model.dropout, model.drop_path_rate, loss.label_smoothing, loss.tau (logit_adjusted), "
    "augment.mixup, augment.cutmix",
}


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


def suggest_finetune(trial, cfg: RunConfig) -> list[str]:
    """One point of the fine-tuning search space, as key=value overrides.

    Only settings that leave the caches valid: not the backbone, resolution, `train.unfreeze`,
    views or image augmentation (those are fixed by the preset and the command line).
    """
    ema = trial.suggest_categorical("train.ema_decay", ["none", "0.99", "0.995", "0.998"])
    overrides = [
        f"train.lr={trial.suggest_float('train.lr', 3e-4, 3e-3, log=True)}",
        f"train.backbone_lr={trial.suggest_float('train.backbone_lr', 3e-5, 1e-3, log=True)}",
        f"train.weight_decay={trial.suggest_float('train.weight_decay', 1e-3, 0.2, log=True)}",
        f"train.ema_decay={'null' if ema == 'none' else ema}",
        f"model.dropout={trial.suggest_float('model.dropout', 0.0, 0.5)}",
        f"model.drop_path_rate={trial.suggest_float('model.drop_path_rate', 0.0, 0.3)}",
        f"loss.label_smoothing={trial.suggest_float('loss.label_smoothing', 0.0, 0.15)}",
        f"augment.mixup={trial.suggest_categorical('augment.mixup', [0.0, 0.2, 0.4])}",
        f"augment.cutmix={trial.suggest_categorical('augment.cutmix', [0.0, 1.0])}",
    ]
    if cfg.loss.name == "logit_adjusted":
        overrides.append(f"loss.tau={trial.suggest_float('loss.tau', 0.5, 1.5)}")
    return overrides


class PruneOnValidation(L.Callback):
    """Reports each epoch's validation score to the trial and stops it when the pruner says so
    (Optuna's pruning protocol, as optuna-integration's Lightning callback does it)."""

    def __init__(self, trial, monitor: str = "val_balanced_accuracy") -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        import optuna

        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")


def tune(
    data: Path | str,
    out: Path | str,
    cfg: RunConfig,
    trials: int = 30,
    split_file: Path | str | None = None,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stage: Stage = "head",
):
    """Run (or continue) the study of `stage`; returns it. `cfg` gives everything not
    searched."""
    from skinclf.data.cache import default_cache_dir
    from skinclf.inference.precision import resolve_precision
    from skinclf.train.datamodule import frozen_features, prepare_data
    from skinclf.train.losses import build_loss, class_counts
    from skinclf.train.run import build_model, quiet_lightning
    from skinclf.train.stages import train_head

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}.")
    if stage not in STAGES:
        raise ConfigError(f"Unknown --stage '{stage}'; choose one of: {', '.join(STAGES)}.")
    if stage == "finetune" and cfg.train.epochs < 1:
        raise ConfigError("--stage finetune needs train.epochs of at least 1.")
    quiet_lightning()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if split_file is None and (out / "split.csv").is_file():
        split_file = out / "split.csv"  # a continued study keeps its split
    prepared = prepare_data(data, cfg, out, split_file, cache_dir=cache_dir, progress=progress)
    atomic.write_text(out / "split.csv", prepared.table[["image_id", "split"]].to_csv(index=False))
    base = cfg.model_dump(mode="json")
    if stage == "finetune":
        return _tune_finetune(data, out, cfg, base, trials, cache_dir, progress, log)
    model, _ = build_model(cfg, prepared)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator, training=False)
    feats = frozen_features(model, cfg, prepared, cache_dir, precision, progress)
    counts = class_counts(prepared.labels["train"], 7)

    def objective(trial) -> float:
        _claim(trial)
        overrides = suggest(trial)
        fault_point("tune-trial")
        trial_cfg = load_config(cfg.preset, None, overrides_on(base, overrides))
        loss = build_loss(trial_cfg.loss, counts)
        _, score = train_head(
            trial_cfg, loss, feats, prepared.labels, model.num_features, out, progress=False
        )
        log(f"trial {trial.number}: val balanced accuracy {score:.4f}  {' '.join(overrides)}")
        return score

    study = _study(out, "skinclf", cfg.seed)
    study.optimize(objective, n_trials=_remaining(study, trials), show_progress_bar=progress)
    return _finish(study, out, cfg, base, "head on frozen features")


def _tune_finetune(data, out: Path, cfg: RunConfig, base: dict, trials, cache_dir, progress, log):
    """The `finetune` study: whole runs in OUT/trials/NNNN, pruned on per-epoch validation."""
    import optuna

    from skinclf.train.run import fit

    split_file = out / "split.csv"  # every trial on the study's split

    def objective(trial) -> float:
        _claim(trial)
        overrides = suggest_finetune(trial, cfg)
        fault_point("tune-trial")
        trial_cfg = load_config(cfg.preset, None, overrides_on(base, overrides))
        result = fit(
            data,
            out / "trials" / f"{trial.number:04d}",
            trial_cfg,
            split_file=split_file,
            cache_dir=cache_dir,
            progress=False,
            callbacks=[PruneOnValidation(trial, trial_cfg.train.monitor)],
            log=lambda *_: None,
            predict_splits=("val",),
        )
        score = float(result.metrics["val"]["balanced_accuracy"])
        log(
            f"trial {trial.number}: val balanced accuracy {score:.4f} "
            f"({result.seconds / 60:.1f} min)  {' '.join(overrides)}"
        )
        return score

    study = _study(
        out,
        "skinclf-finetune",
        cfg.seed,
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    study.optimize(objective, n_trials=_remaining(study, trials), show_progress_bar=progress)
    return _finish(study, out, cfg, base, "fine-tuning runs")


def _study(out: Path, name: str, seed: int, pruner=None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A trial an interrupted search left running is marked failed and its parameters are run
    # again (Optuna's retry callback): at once when its process, on this machine, is gone
    # (`_fail_dead_trials`), else by the heartbeat after its grace period (another machine).
    with warnings.catch_warnings():  # heartbeats and retries are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
            on_stale = {"heartbeat_stale_trial_callback": retry}
        else:
            retry = optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)
            on_stale = {"failed_trial_callback": retry}
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{out / 'study.db'}", heartbeat_interval=60, grace_period=180, **on_stale
        )
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
    )
    _fail_dead_trials(study, retry)
    if study.trials:  # a continued study: not the first run's random draws over again
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def _claim(trial) -> None:
    """Record which process runs `trial`, so that a continued study knows when it died."""
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")


def _fail_dead_trials(study, retry) -> None:
    """Fail the trials left running by a killed search on this machine (their process is gone)
    and queue their parameters again.

    Runs before this process starts a trial, so a trial recorded with this process's own pid
    is dead too: a restarted container often gives the same command the same pid."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            continue
        if int(pid) != os.getpid() and process_alive(int(pid)):
            continue
        try:
            failed = study.tell(t.number, state=TrialState.FAIL)
        except RuntimeError:  # another process failed it first
            continue
        retry(study, failed)


def _remaining(study, trials: int) -> int:
    """Trials still to run: `trials` counts finished ones (complete or pruned), so the trials an
    interrupted search left unfinished are run again."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return max(0, trials - len(done))


def _finish(study, out: Path, cfg: RunConfig, base: dict, what: str):
    """trials.csv and best.yaml of a finished (or continued) study."""
    atomic.write_text(out / "trials.csv", study.trials_dataframe().to_csv(index=False))
    best = load_config(cfg.preset, None, overrides_on(base, suggest_fixed(study.best_params)))
    atomic.write_text(
        out / "best.yaml",
        f"# Best of {len(study.trials)} trials: validation balanced accuracy "
        f"{study.best_value:.4f} ({what})\n"
        + yaml.safe_dump(best.model_dump(mode="json"), sort_keys=False),
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
    """Best params of a study as overrides ('none' is the search spaces' name for null)."""
    return [f"{k}={'null' if v == 'none' else v}" for k, v in params.items()]
