"""The steps `skinclf run` and `skinclf cv` build alike, written once: **train** a run (resumed
when its folder was started with the same settings and split), **predict** one set with
every confidence score (a training run's split or a cv's calibration part, or a dataset
folder), **calibrate** (fit the policy on held-out predictions) and **evaluate** (measure every
set under it). Each command says which model, which files and what its fingerprint covers; the
step's work is the same.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from skinclf.config import RESUMABLE_KEYS, RunConfig, flat_settings, read_config
from skinclf.contracts.run_folder import RunOutput, TrainingRun
from skinclf.errors import ConfigError
from skinclf.pipeline.posthoc import PolicyData, PredictionSets, evaluate_policy, fit_policy
from skinclf.pipeline.steps import Step, StepContext
from skinclf.predict import PredictOptions, errors_file, predict_file


@dataclass(frozen=True)
class StepInfo:
    """What a step says of itself (`about`), the settings its fingerprint covers, the files it
    reads (`inputs`) and the steps it follows (`needs`)."""

    about: str
    settings: dict
    inputs: list[Path] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)


def train_settings(cfg: RunConfig) -> dict:
    """The settings a training run's results depend on (all but threads, workers, logger)."""
    return {k: v for k, v in flat_settings(cfg).items() if k not in RESUMABLE_KEYS}


def teacher_file(cfg: RunConfig) -> list[Path]:
    """The teacher's predictions file of `loss.distill` (an input of training), if any."""
    return [Path(cfg.loss.distill)] if cfg.loss.distill else []


def same_run(run: Path, cfg: RunConfig, split: Path) -> bool:
    """Whether the run folder was started with `cfg`'s results-changing settings (a kill may
    come between recording a new fingerprint and clearing the old run)."""
    files = TrainingRun(run)
    if not files.config.is_file() or not _same_split(files.split, split):
        return False
    try:
        return train_settings(read_config(files.config)) == train_settings(cfg)
    except ConfigError:
        return False  # unreadable: start afresh


def _same_split(run_split: Path, split: Path) -> bool:
    """Whether the run folder was trained on the pipeline's current split (same image ids in
    the same splits)."""
    if not (run_split.is_file() and split.is_file()):
        return False
    cols = ["image_id", "split"]
    mine, theirs = (pd.read_csv(p, dtype=str)[cols].sort_values(cols) for p in (run_split, split))
    return mine.to_numpy().tolist() == theirs.to_numpy().tolist()


@dataclass(frozen=True)
class TrainRun:
    """A training run: `cfg` on the images of `data`, split as `split` says, into the folder
    `run`; it ends at its checkpoint (the predict steps infer once); `cache_splits`: the splits
    the caches cover (a cv's folds share them)."""

    data: Path
    run: Path
    cfg: RunConfig
    split: Path
    cache_splits: tuple[str, ...] | None = None


def train(ctx: StepContext, spec: TrainRun, cache_dir: Path | None) -> None:
    """Fit the run, resumed where its folder holds the same settings and split, else afresh."""
    from skinclf.train.training import FitOptions, fit  # Lightning: only when a run trains

    resume = ctx.resume and same_run(spec.run, spec.cfg, spec.split)
    if not resume and spec.run.exists():
        ctx.reporter.log(f"starting {spec.run} afresh")
        shutil.rmtree(spec.run)
    options = FitOptions(split_file=spec.split, predict_splits=(), cache_splits=spec.cache_splits)
    fit(spec.data, spec.run, spec.cfg, cache_dir=cache_dir, resume=resume,
        progress=ctx.progress, log=ctx.reporter.log, options=options)  # fmt: skip


@dataclass(frozen=True)
class PredictSet:
    """One predictions file, `out`, of the model folder `model`: the images of `data` (a dataset
    folder), or else of the model's own `split`, predicted as `options` says."""

    name: str  # the step is predict-<name>
    model: Path
    out: Path
    data: Path | None
    split: str | None
    options: PredictOptions


def predict_settings(options: PredictOptions) -> dict:
    """The settings every predict step's fingerprint covers."""
    return {"scores": list(options.scores or ()), "mc_dropout": options.mc_dropout,
            "tta": options.tta}  # fmt: skip


def predict_set_step(spec: PredictSet, info: StepInfo, cache_dir: Path | None) -> Step:
    """The step that writes `spec.out`; unreadable images are skipped and listed beside it."""

    def function(ctx: StepContext) -> list[Path]:
        split = None if spec.data is not None else spec.split
        frame = predict_file(
            [spec.model], spec.out, spec.data, split, spec.options, cache_dir, ctx.progress
        )
        skipped = frame.attrs.get("skipped", [])
        listed = errors_file(spec.out)
        note = f" ({len(skipped)} unreadable, listed in {listed})" if skipped else ""
        ctx.reporter.log(f"{len(frame):,} images -> {spec.out}{note}")
        return [listed] if skipped else []

    return Step(f"predict-{spec.name}", info.about, function, info.settings,
                inputs=info.inputs, outputs=[spec.out], needs=info.needs)  # fmt: skip


def policy_settings(target_risk: float | str, id_keep: float, shifted: str) -> dict:
    """The settings every calibrate step's fingerprint covers (`shifted`: the set's name)."""
    return {"target_risk": target_risk, "id_keep": id_keep, "choose_gate": True,
            "shifted": shifted}  # fmt: skip


def fit_policy_step(out: RunOutput, data: PolicyData, info: StepInfo) -> Step:
    """The policy fitted once into OUT/eval/selective.json (`info.settings`: target_risk and
    id_keep, as `policy_settings` builds them)."""

    def function(ctx: StepContext) -> None:
        risk, keep = info.settings["target_risk"], info.settings["id_keep"]
        fit_policy(out.eval, data, risk, keep)

    return Step("calibrate", info.about, function, info.settings, inputs=info.inputs,
                outputs=[out.policy], needs=info.needs)  # fmt: skip


def evaluate_policy_step(out: RunOutput, sets: PredictionSets, info: StepInfo) -> Step:
    """Every set measured under the calibrate step's policy (it fits nothing): metrics.json,
    report.html (`info.settings`: bootstrap and seed)."""

    def function(ctx: StepContext) -> None:
        boot, seed = info.settings["bootstrap"], info.settings["seed"]
        evaluate_policy(out.eval, sets, boot, seed, ctx.reporter.sub)

    return Step("evaluate", info.about, function, info.settings, inputs=info.inputs,
                outputs=[out.metrics, out.report], needs=info.needs)  # fmt: skip
