"""`skinclf tune`: Optuna search for the settings that maximise validation balanced accuracy.

Two stages, one study each; neither ever looks at the test split.
- `head` (default): on the cached frozen-backbone features (stage 1), with the same
  `train_head` a training run uses, so each trial takes seconds on a CPU; trials that trail
  the others are pruned after an epoch (`--pruner`, from the 6th epoch).
- `finetune`: whole training runs (`fit`, stage 1 then fine-tuning), each in
  `OUT/trials/NNNN/`, scored by the run's final validation balanced accuracy; unpromising
  trials are pruned after each epoch (`--pruner`). The searched settings do not change the
  feature or activation caches, so every trial reuses them.
What is searched is the preset's `tune:` section (`skinclf.tune.space`). The study lives in
`OUT/study.db` (SQLite) or any Optuna storage (`skinclf.tune.storage`); processes and machines
given the same storage and study name share it, each running trials until the study has
`trials` finished ones. `OUT/best.yaml` is a config file for `skinclf train --config`.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from skinclf import atomic
from skinclf.config import RunConfig, SearchSpaces, load_config, load_search_space
from skinclf.data.cache import default_cache_dir
from skinclf.errors import ConfigError, SkinclfError
from skinclf.faults import fault_point
from skinclf.inference.precision import resolve_precision
from skinclf.predict import predict_held_out
from skinclf.tune.prune import PruneOnValidation
from skinclf.tune.space import check_space, overrides_on, suggest, value_text
from skinclf.tune.storage import first_heartbeat, open_storage, storage_url
from skinclf.tune.study import open_study

Stage = Literal["head", "finetune"]
STAGES: tuple[str, ...] = get_args(Stage)
PRUNERS = ("median", "hyperband", "none")
STUDY_NAMES = {"head": "skinclf", "finetune": "skinclf-finetune"}


@dataclass(frozen=True)
class TuneJob:
    """Everything a worker process needs to join the study (picklable)."""

    data: str
    out: str
    cfg: RunConfig
    space: SearchSpaces
    stage: str
    trials: int
    split_file: str | None
    cache_dir: str
    url: str
    study_name: str
    pruner: str
    heartbeat: int
    timeout: float | None
    shared: bool  # a storage other processes may use too: seeds differ per process
    worker: int = 0
    baseline: bool = True  # a new study's first trial: the preset's own values


@dataclass(frozen=True)
class TuneOptions:
    """How to search (`skinclf tune`'s options): the stage and trial budget, the split and
    caches, the study's storage and name, worker processes, time limit, pruner, heartbeat,
    the search space (default: the preset's `tune:` section; `space_origin` names where it
    came from in errors) and whether a new study's first trial is the preset's own values."""

    trials: int = 30
    stage: Stage = "head"
    split_file: Path | str | None = None
    cache_dir: Path | str | None = None
    storage: str | None = None
    study_name: str | None = None
    workers: int = 1
    timeout: float | None = None
    pruner: str = "median"
    heartbeat: int = 60
    space: SearchSpaces | None = None
    space_origin: str | None = None
    baseline: bool = True


def tune(
    data: Path | str,
    out: Path | str,
    cfg: RunConfig,
    options: TuneOptions = TuneOptions(),
    progress: bool = True,
    log: Callable[[str], None] = print,
):
    """Run (or join, or continue) the study of `options.stage` with `options.workers`
    processes here; returns it. `cfg` gives everything not searched."""
    o, workers = options, options.workers
    _check_arguments(o.trials, o.stage, cfg, workers, o.timeout, o.pruner, o.heartbeat)
    space = o.space if o.space is not None else load_search_space(cfg.preset)
    check_space(getattr(space, o.stage), cfg, o.stage, o.space_origin or f"preset {cfg.preset}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = _job(data, out, cfg, space, o)
    study, objective = _join(job, progress, log)  # caches and split ready before the others
    ctx = multiprocessing.get_context("spawn")
    others = [ctx.Process(target=work, args=(_worker(job, i),)) for i in range(1, workers)]
    for p in others:
        p.start()
    try:
        _optimize(study, objective, job, progress)
    finally:
        for p in others:
            p.join()
    failed = [p.exitcode for p in others if p.exitcode != 0]
    if failed:
        raise SkinclfError(
            f"{len(failed)} of {workers - 1} other tuning workers stopped with an error (exit "
            f"codes {', '.join(map(str, failed))}); their messages are above."
        )
    return _finish(study, out, cfg, job.stage)


def _job(
    data: Path | str, out: Path, cfg: RunConfig, space: SearchSpaces, o: TuneOptions
) -> TuneJob:
    """What every worker process of the study needs (a continued study keeps its split)."""

    split_file = o.split_file
    if split_file is None and (out / "split.csv").is_file():
        split_file = out / "split.csv"
    return TuneJob(
        str(data), str(out), cfg, space, o.stage, o.trials,
        None if split_file is None else str(split_file),
        str(o.cache_dir if o.cache_dir is not None else default_cache_dir()),
        storage_url(out, o.storage), o.study_name or STUDY_NAMES[o.stage], o.pruner,
        o.heartbeat, o.timeout, shared=o.storage is not None or o.workers > 1,
        baseline=o.baseline,
    )  # fmt: skip


def _worker(job: TuneJob, index: int) -> TuneJob:
    return replace(job, split_file=str(Path(job.out) / "split.csv"), worker=index)


def work(job: TuneJob) -> None:
    """A worker process of `tune(workers=N)`: join the study and run trials until it is done."""
    study, objective = _join(job, False, lambda line: print(f"[worker {job.worker}] {line}"))
    _optimize(study, objective, job, progress=False)


def _check_arguments(trials, stage, cfg, workers, timeout, pruner, heartbeat) -> None:
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}.")
    if stage not in STAGES:
        raise ConfigError(f"Unknown --stage '{stage}'; choose one of: {', '.join(STAGES)}.")
    if stage == "finetune" and cfg.train.epochs < 1:
        raise ConfigError("--stage finetune needs train.epochs of at least 1.")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}.")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}.")
    if pruner not in PRUNERS:
        raise ConfigError(f"Unknown --pruner '{pruner}'; choose one of: {', '.join(PRUNERS)}.")
    if heartbeat < 1:
        raise ConfigError(f"--heartbeat must be at least 1 second, got {heartbeat}.")


def _join(job: TuneJob, progress: bool, log: Callable[[str], None]):
    """Prepare the data (split, caches) and open the study; returns (study, objective)."""
    from skinclf.train.datamodule import prepare_data
    from skinclf.train.training import quiet_lightning

    quiet_lightning()
    out, cache_dir = Path(job.out), Path(job.cache_dir)
    prepared = prepare_data(
        job.data, job.cfg, out, job.split_file, cache_dir=cache_dir, progress=progress
    )
    split_text = prepared.table[["image_id", "split"]].to_csv(index=False)
    atomic.write_text(out / "split.csv", split_text)
    study = open_study(
        open_storage(job.url, job.heartbeat),
        job,
        hashlib.sha256(split_text.encode()).hexdigest(),
        log,
    )
    if job.stage == "finetune":
        return study, _finetune_objective(job, log)
    return study, _head_objective(job, prepared, progress, log)


def _head_objective(job: TuneJob, prepared, progress: bool, log):
    """Each trial trains the head on the cached frozen-backbone features."""
    from skinclf.train.datamodule import frozen_features
    from skinclf.train.distill import distill_targets
    from skinclf.train.losses import build_loss, class_counts
    from skinclf.train.training import build_model

    cfg, out, base = job.cfg, Path(job.out), job.cfg.model_dump(mode="json")
    model, _ = build_model(cfg, prepared)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator, training=False)
    feats = frozen_features(model, cfg, prepared, Path(job.cache_dir), precision, progress)
    counts = class_counts(prepared.labels["train"], 7)
    targets = distill_targets(cfg, prepared.ids["train"], prepared.labels["train"])

    def objective(trial) -> float:
        first_heartbeat(trial)
        overrides = suggest(trial, job.space.head, cfg)
        fault_point("tune-trial")
        trial_cfg = load_config(cfg.preset, None, overrides_on(base, overrides))
        loss = build_loss(trial_cfg.loss, counts)
        with logged_pruning(trial, overrides, log):
            _, score = head_trial(
                trial_cfg, loss, feats, prepared.labels, model.num_features, out, trial, targets
            )
        log(f"trial {trial.number}: val balanced accuracy {score:.4f}  {' '.join(overrides)}")
        return score

    return objective


def head_trial(
    cfg: RunConfig,
    loss,
    feats: dict,
    labels: dict,
    in_features: int,
    out: Path,
    trial=None,
    targets=None,
):
    """One head-stage trial: the head trained from `cfg.seed`, so that its value depends on its
    settings only, not on the trials run before it in the same process (whose steps move the
    global random state the head's initial weights are drawn from). With `trial`, each epoch's
    validation score goes to it and the study's pruner may stop it (optuna.TrialPruned)."""
    import torch

    from skinclf.train.stages import HeadFeatures, train_head

    torch.manual_seed(cfg.seed)
    callbacks = [] if trial is None else [PruneOnValidation(trial)]
    data = HeadFeatures(feats, labels, targets)
    return train_head(cfg, loss, data, in_features, out, False, callbacks)


@contextmanager
def logged_pruning(trial, overrides: list[str], log: Callable[[str], None]) -> Iterator[None]:
    """A trial the pruner stops gets its log line, like a finished one, then stops."""
    from optuna import TrialPruned

    try:
        yield
    except TrialPruned as pruned:
        log(f"trial {trial.number}: {pruned}  {' '.join(overrides)}")
        raise


def _finetune_objective(job: TuneJob, log):
    """Each trial is a whole run in OUT/trials/NNNN, pruned on per-epoch validation."""
    from skinclf.train.training import FitOptions, fit

    cfg, out, base = job.cfg, Path(job.out), job.cfg.model_dump(mode="json")
    split_file = out / "split.csv"  # every trial on the study's split

    def objective(trial) -> float:
        first_heartbeat(trial)
        overrides = suggest(trial, job.space.finetune, cfg)
        fault_point("tune-trial")
        trial_cfg = load_config(cfg.preset, None, overrides_on(base, overrides))
        with logged_pruning(trial, overrides, log):
            result = fit(
                job.data,
                out / "trials" / f"{trial.number:04d}",
                trial_cfg,
                cache_dir=Path(job.cache_dir),
                progress=False,
                log=lambda *_: None,
                options=FitOptions(
                    split_file=split_file,
                    # the objective, whatever train.monitor is
                    callbacks=[PruneOnValidation(trial)],
                    predict_splits=(),  # training ends at its checkpoint
                ),
            )
            # the objective: the trial's val split through its Predictor, once
            score = float(predict_held_out(result.out, "val", Path(job.cache_dir), False))
        log(
            f"trial {trial.number}: val balanced accuracy {score:.4f} "
            f"({result.seconds / 60:.1f} min)  {' '.join(overrides)}"
        )
        return score

    return objective


def _optimize(study, objective, job: TuneJob, progress: bool) -> None:
    """Trials until the study has `job.trials` finished ones (complete or pruned, counted over
    every worker: Optuna's MaxTrialsCallback) or `job.timeout` seconds have passed."""
    import optuna
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done >= job.trials:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            objective,
            n_trials=job.trials - done,
            timeout=job.timeout,
            callbacks=[optuna.study.MaxTrialsCallback(job.trials, states=finished)],
            show_progress_bar=progress,
        )


def _finish(study, out: Path, cfg: RunConfig, stage: str):
    """trials.csv and best.yaml of a finished (or continued) study."""
    from optuna.trial import TrialState

    atomic.write_text(out / "trials.csv", study.trials_dataframe().to_csv(index=False))
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise SkinclfError(f"No trial of study '{study.study_name}' has completed yet.")
    what = "head on frozen features" if stage == "head" else "fine-tuning runs"
    base = cfg.model_dump(mode="json")
    best = load_config(cfg.preset, None, overrides_on(base, suggest_fixed(study.best_params)))
    base_trial = baseline_trial(study)
    against = (
        ""
        if base_trial is None
        else f"; the preset's own settings (trial {base_trial.number}): {base_trial.value:.4f}"
    )
    atomic.write_text(
        out / "best.yaml",
        f"# Best of {len(study.trials)} trials: validation balanced accuracy "
        f"{study.best_value:.4f} ({what}){against}\n"
        + yaml.safe_dump(best.model_dump(mode="json"), sort_keys=False),
    )
    return study


def baseline_trial(study):
    """The study's completed baseline trial (the preset's own settings), or None."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((t for t in done if t.user_attrs.get("baseline")), None)


def suggest_fixed(params: dict[str, Any]) -> list[str]:
    """Best params of a study as overrides (older studies named null 'none')."""
    return [f"{k}={'null' if v == 'none' else value_text(v)}" for k, v in params.items()]
