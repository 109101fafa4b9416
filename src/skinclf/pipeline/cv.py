"""`skinclf cv`: K-fold lesion-grouped, class-stratified cross-validation as resumable steps
(the steps and manifest of `skinclf run`, skinclf.pipeline.steps / .state).

Output folder (OUT)::

    run_state.json        what ran, under which fingerprint
    data_check.json       the summary of each dataset checked
    folds.csv             image_id,fold: 0 .. K-1, or calib (outside every fold, with --calib)
    splits/fold_<k>.csv   fold k's split file: its held-out fold val, the other folds train
    fold_<k>/             fold k's training run folder (config.yaml, checkpoints/, ...);
                          val_predictions.csv: its held-out fold, predicted by it
    oof_predictions.csv   every image of the folds once, by the model that did not train on it
    logit_offsets.json    per-class logit offsets that maximise balanced accuracy, fitted on the
                          out-of-fold predictions, or with --calib on the ensemble's
                          predictions of the calibration part (eval/calib_no_offsets.csv)
    eval/<set>.csv        the K fold models as an ensemble (mean probabilities, offsets added)
                          on calib, on calib after synthetic corruption (calib_corrupted) and
                          on every --ood / --test set
    eval/                 with --calib: metrics.json, selective.json, report.html (after the
                          offsets, the temperature, scores and gates fitted on the ensemble's
                          calib predictions; the OOD gate chosen, as `skinclf run` chooses it,
                          by the silent failures on the corrupted calibration images) and
                          out_of_fold.csv, the evaluation's test set: the out-of-fold
                          predictions with the offsets and each fold model's feature scores
                          (fold_<k>/val_scored.csv: its held-out fold, scored by it)
    cv_summary.json       per-fold and pooled out-of-fold balanced accuracy [95 % CI], per-class
                          recall, the same with cross-fitted offsets, and each --test set

Each fold trains for a fixed number of epochs and keeps its last one (`train.checkpoint=last`):
its validation split is its held-out fold, and choosing an epoch (or a head) on it would make
the out-of-fold numbers optimistic; an inner validation slice would cost every fold training
images instead. The per-image caches (decoded images, stage-1 features, frozen-stage
activations) cover all the folds' images at once and are shared by every fold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from skinclf import atomic
from skinclf.classes import CLASSES
from skinclf.config import RunConfig
from skinclf.contracts.cv_folder import (
    CALIB_SET,
    HELD_OUT_FILE,
    CvFolder,
)
from skinclf.contracts.predictions import read_predictions, save_predictions
from skinclf.contracts.run_folder import FEATURE_STATS_FILE, TrainingRun
from skinclf.contracts.score_registry import AVERAGE_SCORES, FEATURE_SCORES
from skinclf.contracts.scores import with_logits
from skinclf.data.split import fold_split, fold_split_file, group_leaks
from skinclf.errors import ConfigError, DataError
from skinclf.evaluate.crossval import out_of_fold_summary, set_summary
from skinclf.evaluate.offsets import (
    OFFSETS_FILE,
    apply_offsets,
    fit_logit_offsets,
    read_offsets,
    write_offsets,
)
from skinclf.pipeline.job import (
    CALIB_CORRUPTED,
    CALIB_RAW,
    MC_DROPOUT,
    OOF_SET,
    SHIFT_CORRUPTION,
    Layout,
    RunOptions,
    cache_step,
    check_step,
    labelled_table,
    sample_step,
    scores,
)
from skinclf.pipeline.posthoc import PolicyData, PredictionSets
from skinclf.pipeline.set_steps import (
    PredictSet,
    StepInfo,
    TrainRun,
    evaluate_policy_step,
    fit_policy_step,
    policy_settings,
    predict_set_step,
    predict_settings,
    teacher_file,
    train,
    train_settings,
)
from skinclf.pipeline.steps import Step, StepContext
from skinclf.predict import PredictOptions, fit_feature_statistics, predict_file, predict_held_out

EVALUATION_SETS = (CALIB_SET, CALIB_CORRUPTED, OOF_SET)  # eval/ files that are no --test set
SCORED_HELD_OUT = "val_scored.csv"  # in each fold run: its held-out fold with feature scores


@dataclass
class CvOptions:
    """Everything `skinclf cv` was asked for (the run options, plus the folds)."""

    run: RunOptions
    folds: int = 5
    calib: float = 0.0
    merge_duplicates: Path | None = None

    @property
    def cfg(self) -> RunConfig:
        return self.run.cfg


@dataclass
class CvLayout:
    """The paths of a cross-validation folder."""

    base: Layout
    folds: int
    out: Path = field(init=False)

    def __post_init__(self) -> None:
        self.out = self.base.out
        self.cv = CvFolder(self.out)
        self.folds_file, self.oof, self.summary = self.cv.folds, self.cv.oof, self.cv.summary
        self.eval = self.base.folder.eval

    def fold(self, k: int) -> Path:
        return self.cv.fold(k)

    def split(self, k: int) -> Path:
        return self.cv.fold_split(k)

    def predictions(self, name: str) -> Path:
        return self.base.folder.predictions(name)

    @property
    def offsets(self) -> Path:
        return self.out / OFFSETS_FILE


def fold_config(cfg: RunConfig) -> RunConfig:
    """The settings every fold trains with: `cfg`, keeping the last epoch. Refuses settings that
    would choose on the held-out fold (early stopping, a plateau schedule)."""
    if cfg.train.early_stopping_patience:
        raise ConfigError(
            "train.early_stopping_patience stops on the validation split, which in a "
            "cross-validation is the held-out fold; set it to null (fixed epoch counts)."
        )
    if cfg.train.schedule == "plateau":
        raise ConfigError(
            "train.schedule=plateau follows the validation split, which in a cross-validation "
            "is the held-out fold; choose cosine or step."
        )
    fold = cfg.model_copy(deep=True)
    fold.train.checkpoint = "last"
    return fold


def _merge_pairs(path: Path | None):
    if path is None:
        return None

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"Cannot read the merge-duplicates file {path} ({exc}).") from None


# ------------------------------------------------------------------------------ the steps


def folds_step(opts: CvOptions, lay: CvLayout) -> Step:
    cfg = opts.cfg

    def function(ctx: StepContext) -> list[Path]:
        table = labelled_table(lay.base.data, cfg)
        pairs = _merge_pairs(opts.merge_duplicates)
        folds = fold_split(table, opts.folds, opts.calib, cfg.seed, pairs)
        atomic.write_text(lay.folds_file, folds.to_csv(index=False))
        for k in range(opts.folds):
            split = fold_split_file(folds, k)
            leaks = group_leaks(table, split, pairs)
            assert not leaks, f"lesion {leaks[0]} in two parts of fold {k}"
            lay.split(k).parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(lay.split(k), split.to_csv(index=False))
        counts = folds["fold"].value_counts()
        sizes = ", ".join(f"{name} {counts[name]:,}" for name in sorted(counts.index))
        ctx.reporter.log(f"{opts.folds} folds, no lesion in two: {sizes} images")
        return [lay.split(k) for k in range(opts.folds)]

    settings = {
        "folds": opts.folds,
        "calib": opts.calib,
        "seed": cfg.seed,
        "format": cfg.data.format,
    }
    inputs = [lay.base.data] + ([opts.merge_duplicates] if opts.merge_duplicates else [])
    return Step(
        "folds",
        f"{opts.folds} lesion-grouped, class-stratified folds"
        + (f" and a calibration part ({opts.calib:g})" if opts.calib else ""),
        function,
        settings,
        inputs=inputs,
        outputs=[lay.folds_file],  # (no need of the check: see job.split_step)
    )


def train_fold_step(opts: CvOptions, lay: CvLayout, k: int) -> Step:
    cfg = fold_config(opts.cfg)
    run, split = lay.fold(k), lay.split(k)
    # the same images in every fold: the caches cover train and val, shared by the folds
    spec = TrainRun(lay.base.data, run, cfg, split, cache_splits=("train", "val"))

    def function(ctx: StepContext) -> None:
        train(ctx, spec, opts.run.cache_dir)
        # the held-out fold (its out-of-fold predictions), through the fold model's Predictor
        ba = predict_held_out(run, "val", opts.run.cache_dir, ctx.progress)
        ctx.reporter.log(f"fold {k}: held-out balanced accuracy {ba:.3f}")

    return Step(
        f"train-fold_{k}",
        f"train fold {k} of {opts.folds} ({cfg.model.backbone}, last epoch kept)",
        function,
        train_settings(cfg),
        inputs=[lay.base.data, split, *teacher_file(cfg)],
        outputs=[TrainingRun(run).best, run / HELD_OUT_FILE],
        needs=["folds", "cache"],
    )


def oof_step(opts: CvOptions, lay: CvLayout) -> Step:
    files = [lay.fold(k) / HELD_OUT_FILE for k in range(opts.folds)]

    def function(ctx: StepContext) -> None:
        folds = pd.read_csv(lay.folds_file, dtype=str)
        fold_of = dict(zip(folds["image_id"], folds["fold"], strict=True))
        frame = pd.concat([pd.read_csv(f, dtype={"image_id": str}) for f in files])
        expected = folds.loc[folds["fold"] != CALIB_SET, "image_id"]
        check_every_image_once(
            frame["image_id"], expected, files, "delete a fold's folder to train it again"
        )
        order = {image: i for i, image in enumerate(expected)}
        frame = frame.sort_values("image_id", key=lambda s: s.map(order))
        atomic.write_text(lay.oof, frame.to_csv(index=False))
        oof = read_predictions(lay.oof)
        if opts.calib == 0:  # (with a calibration part, the ensemble's offsets are fitted on it)
            offsets = fit_logit_offsets(oof.logits, oof.y)
            write_offsets(lay.offsets, offsets, "out-of-fold predictions", oof.n)
        folds_of = [fold_of[i] for i in oof.image_ids]
        ctx.reporter.log(f"{oof.n:,} out-of-fold predictions of {len(set(folds_of))} folds")

    title = "out-of-fold predictions (each image by the fold model that did not train on it)"
    if not opts.calib:
        title += " and the logit offsets that maximise their balanced accuracy"
    return Step(
        "oof",
        title,
        function,
        {},
        inputs=[lay.folds_file, *files],
        outputs=[lay.oof] + ([] if opts.calib else [lay.offsets]),
        needs=[f"train-fold_{k}" for k in range(opts.folds)],
    )


def offsets_step(opts: CvOptions, lay: CvLayout) -> Step:
    """With a calibration part: the ensemble's logit offsets, fitted on its calib predictions
    without offsets (first of offsets, temperature, scores, gates, all fitted on calib)."""
    raw = lay.predictions(CALIB_RAW)

    def function(ctx: StepContext) -> None:
        p = read_predictions(raw)
        p = p.subset(p.labelled)
        write_offsets(lay.offsets, fit_logit_offsets(p.logits, p.y), "calibration part", p.n)
        ctx.reporter.log(f"logit offsets fitted on {p.n:,} calibration images")

    return Step(
        "offsets",
        "the ensemble's logit offsets that maximise balanced accuracy on the calibration part",
        function,
        {},
        inputs=[raw],
        outputs=[lay.offsets],
        needs=[f"predict-{CALIB_RAW}"],
    )


def scored_out_of_fold(oof, scored: list, offsets):
    """The out-of-fold predictions `oof` with `offsets` added (their logit scores recomputed,
    with the `tta` score of `scored`) and the feature scores of `scored` (each fold's held-out
    images, predicted by that fold's model with the scores fitted on its training images)."""

    where = {image: (k, j) for k, p in enumerate(scored) for j, image in enumerate(p.image_ids)}
    check_every_image_once(
        [i for p in scored for i in p.image_ids], oof.image_ids, [p.path for p in scored],
        "delete them to predict the folds again",
    )  # fmt: skip
    averaged = [name for name in scored[0].conf if name in AVERAGE_SCORES]
    names = list(dict.fromkeys([*oof.conf, *averaged]))
    out = with_logits(oof, apply_offsets(oof.logits, offsets), names)
    for name in (n for n in scored[0].conf if n in FEATURE_SCORES):
        out.conf[name] = np.array(
            [scored[k].conf[name][j] for k, j in map(where.get, oof.image_ids)]
        )
    return out


def scored_oof_step(opts: CvOptions, lay: CvLayout) -> Step:
    """With --calib: the out-of-fold predictions as the ensemble's evaluation needs its test
    set: the ensemble's offsets added, and each image's feature scores (the OOD gate's) from the
    fold model that did not train on it, fitted on that fold's training images."""

    held_out = [lay.fold(k) / SCORED_HELD_OUT for k in range(opts.folds)]
    out, tta = lay.predictions(OOF_SET), opts.cfg.predict.tta

    def function(ctx: StepContext) -> None:
        options = PredictOptions(tta=tta, scores=list(FEATURE_SCORES))
        for k, path in enumerate(held_out):
            predict_file([lay.fold(k)], path, split="val", options=options,
                         cache_dir=opts.run.cache_dir, progress=ctx.progress)  # fmt: skip
        scored = [read_predictions(f) for f in held_out]
        p = scored_out_of_fold(read_predictions(lay.oof), scored, read_offsets(lay.offsets))
        save_predictions(out, p)
        ctx.reporter.log(f"{p.n:,} out-of-fold images with feature scores -> {out}")

    best = [TrainingRun(lay.fold(k)).best for k in range(opts.folds)]
    return Step(
        f"predict-{OOF_SET}",
        "feature scores of each held-out fold by its fold model; the out-of-fold predictions "
        "with them and the ensemble's offsets (the evaluation's test set)",
        function,
        {"tta": tta, "scores": list(FEATURE_SCORES)},
        inputs=[lay.oof, lay.offsets, *best],
        outputs=[*held_out, out],
        needs=["offsets"],
    )


def check_every_image_once(predicted, expected, files, remedy: str) -> None:
    """DataError, naming an image, the `files` it was read from and the `remedy`, unless
    `predicted` lists every image of `expected` exactly once."""

    predicted, expected = pd.Series(list(predicted), dtype=str), set(map(str, expected))
    where = " ".join(["the held-out predictions", ", ".join(str(f) for f in files if f)]).strip()
    twice = predicted[predicted.duplicated()]
    if len(twice):
        raise DataError(f"Image {twice.iloc[0]} is predicted twice in {where}; {remedy}.")
    missing, extra = sorted(expected - set(predicted)), sorted(set(predicted) - expected)
    if missing or extra:
        first = f"image {missing[0]} is missing" if missing else f"image {extra[0]} is extra"
        raise DataError(
            f"{where[0].upper()}{where[1:]} do not hold every image of the folds once: {first} "
            f"({len(missing)} missing, {len(extra)} extra); {remedy}."
        )


def ensemble_predict_step(
    opts: CvOptions,
    lay: CvLayout,
    name: str,
    data: Path | None,
    offsets: bool = True,
    corrupt: str | None = None,
) -> Step:
    """The K fold models as an ensemble (`offsets` added) on `data`, or on the calib split
    (after the synthetic corruptions `corrupt`, as `skinclf predict --corrupt`)."""
    options = PredictOptions(tta=opts.cfg.predict.tta, scores=scores(), mc_dropout=MC_DROPOUT,
                             corrupt=corrupt, apply_offsets=offsets)  # fmt: skip
    source = "the calibration part" if data is None else str(data)
    if corrupt:
        source += f" after synthetic corruption ({corrupt})"
    settings = predict_settings(options)
    if corrupt:
        settings["corrupt"] = corrupt
    best = [TrainingRun(lay.fold(k)).best for k in range(opts.folds)]
    info = StepInfo(
        f"predict {source} with the {opts.folds} fold models (mean probabilities"
        + (", logit offsets added)" if offsets else ", no offsets)"),
        settings if offsets else {**settings, "offsets": False},
        inputs=[
            *best,
            *([lay.offsets] if offsets else []),
            *([lay.base.data, lay.folds_file] if data is None else [data]),
        ],
        needs=[("offsets" if opts.calib else "oof") if offsets else "oof"],
    )
    spec = PredictSet(name, lay.out, lay.predictions(name), data, CALIB_SET, options)
    return predict_set_step(spec, info, opts.run.cache_dir)


def ensemble_policy_data(eval_dir: Path, gate_stats: Path) -> PolicyData:
    """A fold ensemble's policy data: its calib predictions (eval_dir/calib.csv) for the
    temperature and the confidence gate, the corrupted ones to choose the OOD gate by their
    silent failures (as `skinclf run` chooses it on its corrupted validation images)."""
    calib = eval_dir / f"{CALIB_SET}.csv"
    return PolicyData(calib, calib, eval_dir / f"{CALIB_CORRUPTED}.csv", gate_stats)


def ensemble_sets(eval_dir: Path, ood_names: list[str], test_names: list[str]) -> PredictionSets:
    """A fold ensemble's sets for its evaluation: the out-of-fold predictions
    (eval_dir/out_of_fold.csv) stand in for the test set, its calib predictions for val."""
    calib = eval_dir / f"{CALIB_SET}.csv"
    return PredictionSets(
        test=eval_dir / f"{OOF_SET}.csv",
        val=calib,
        calib=calib,
        ood=[eval_dir / f"{n}.csv" for n in ood_names],
        external=[eval_dir / f"{n}.csv" for n in test_names],
        shifted=eval_dir / f"{CALIB_CORRUPTED}.csv",
        names={eval_dir / f"{n}.csv": n for n in [*ood_names, *test_names]},
    )


def calibrate_step(opts: CvOptions, lay: CvLayout) -> Step:
    """With --calib: the ensemble's policy fitted on its calib predictions."""
    info = StepInfo(
        "fit the ensemble's policy on its calibration predictions: the temperature, the OOD "
        "gate (chosen on the corrupted calibration images) and the confidence gate",
        policy_settings(opts.run.target_risk, opts.run.id_keep, CALIB_CORRUPTED),
        inputs=[lay.predictions(CALIB_SET), lay.predictions(CALIB_CORRUPTED)],
        needs=[f"predict-{CALIB_SET}", f"predict-{CALIB_CORRUPTED}"],
    )
    data = ensemble_policy_data(lay.eval, lay.fold(0) / FEATURE_STATS_FILE)
    return fit_policy_step(lay.base.folder, data, info)


def evaluate_step(opts: CvOptions, lay: CvLayout) -> Step:
    """With --calib: every set measured under the ensemble's policy; the out-of-fold
    predictions stand in for the in-distribution test set."""
    base = lay.base
    sets = [*EVALUATION_SETS, *base.ood_names, *base.test_names]
    info = StepInfo(
        "evaluate every set under the ensemble's policy (it fits nothing); write report.html",
        {"bootstrap": opts.run.bootstrap, "seed": opts.cfg.seed},
        inputs=[*(lay.predictions(n) for n in sets), lay.base.folder.policy],
        needs=["calibrate", *(f"predict-{n}" for n in sets)],
    )
    evaluated = ensemble_sets(lay.eval, base.ood_names, base.test_names)
    return evaluate_policy_step(base.folder, evaluated, info)


def summary_step(opts: CvOptions, lay: CvLayout) -> Step:
    tests = [lay.predictions(n) for n in lay.base.test_names]

    def function(ctx: StepContext) -> None:
        oof = read_predictions(lay.oof)
        folds = pd.read_csv(lay.folds_file, dtype=str)
        fold_of = dict(zip(folds["image_id"], folds["fold"], strict=True))
        fold = [fold_of[i] for i in oof.image_ids]
        n, seed = opts.run.bootstrap, opts.cfg.seed
        summary = {
            "folds": opts.folds,
            "settings": {"preset_seed": seed, "checkpoint": "last", "bootstrap": n},
            "out_of_fold": out_of_fold_summary(oof.logits, oof.y, fold, n, seed),
        }
        offsets = read_offsets(lay.offsets)
        summary["logit_offsets"] = dict(zip(CLASSES, offsets.tolist(), strict=True))
        summary["ensemble"] = {}
        for name, path in zip(lay.base.test_names, tests, strict=True):
            p = read_predictions(path)
            summary["ensemble"][name] = set_summary(p.logits, p.y, offsets, n, seed)
        atomic.write_text(lay.summary, json.dumps(summary, indent=2) + "\n")
        pooled = summary["out_of_fold"]["pooled"]
        lo, hi = pooled["balanced_accuracy_ci95"]
        ctx.reporter.log(
            f"out-of-fold balanced accuracy {pooled['balanced_accuracy']:.3f} "
            f"[{lo:.3f}, {hi:.3f}] over {pooled['n']:,} images"
        )

    return Step(
        "summary",
        "per-fold and pooled out-of-fold balanced accuracy, per-class recall, each --test set",
        function,
        {"bootstrap": opts.run.bootstrap, "seed": opts.cfg.seed},
        inputs=[lay.oof, lay.offsets, *tests],
        outputs=[lay.summary],
        needs=["oof", *[f"predict-{n}" for n in lay.base.test_names]],
    )


def features_step(opts: CvOptions, lay: CvLayout) -> Step:
    """Each fold model's feature statistics, fitted on its training folds (fold_<k>/
    feature_stats.npz), before the ensemble (whose feature scores are the first fold model's)
    or the scored out-of-fold predictions (each image by its own fold model) read them."""
    runs = [lay.fold(k) for k in range(opts.folds)]

    def function(ctx: StepContext) -> None:
        for run in runs:
            fit_feature_statistics(run, opts.run.cache_dir, ctx.progress)

    return Step(
        "features",
        "fit each fold model's feature statistics on its training folds",
        function,
        {},
        inputs=[TrainingRun(r).best for r in runs],
        outputs=[r / FEATURE_STATS_FILE for r in runs],
        needs=["oof"],
    )


def build_cv_steps(opts: CvOptions, lay: CvLayout) -> list[Step]:
    """The steps of the cross-validation, in order."""
    base, run = lay.base, opts.run
    steps = [sample_step(run, base)] if run.sample is not None else []
    steps += [check_step(run, base), folds_step(opts, lay), cache_step(run, base)]
    steps += [train_fold_step(opts, lay, k) for k in range(opts.folds)]
    steps.append(oof_step(opts, lay))
    if opts.calib > 0 or base.ood or base.tests:
        steps.append(features_step(opts, lay))
    if opts.calib > 0:
        steps.append(ensemble_predict_step(opts, lay, CALIB_RAW, None, offsets=False))
        steps.append(offsets_step(opts, lay))
        steps.append(ensemble_predict_step(opts, lay, CALIB_SET, None))
        shifted = ensemble_predict_step(opts, lay, CALIB_CORRUPTED, None, corrupt=SHIFT_CORRUPTION)
        steps.append(shifted)
        steps.append(scored_oof_step(opts, lay))
    for names, paths in ((base.ood_names, base.ood), (base.test_names, base.tests)):
        steps += [ensemble_predict_step(opts, lay, n, p) for n, p in zip(names, paths, strict=True)]
    if opts.calib > 0:
        steps.append(calibrate_step(opts, lay))
        steps.append(evaluate_step(opts, lay))
    steps.append(summary_step(opts, lay))
    return steps
