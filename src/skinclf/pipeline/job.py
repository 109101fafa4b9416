"""The steps of `skinclf run`: (sample data ->) check data -> grouped split -> decode cache ->
train -> predict every set with every confidence score -> evaluate (the temperature fitted on
validation data, the OOD gate and the selective classifier on calibration data; metrics.json,
selective.json, report.html).

Output folder (OUT)::

    run_state.json   what ran, under which fingerprint (skinclf.pipeline.state)
    data_check.json  the summary of each dataset checked
    split.csv        the grouped split (train / val / test / calib)
    run/             the training run folder (config.yaml, checkpoints/, feature_stats.npz, ...)
    eval/<set>.csv   predictions of val, calib, test and each --ood / --test set
    eval/            metrics.json, selective.json, report.html (and the gate's files)
    data/            with --sample: the generated datasets
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from skinclf import atomic
from skinclf.config import RunConfig
from skinclf.contracts.run_folder import (  # noqa: F401 (the names other steps import from here)
    CALIB_CORRUPTED,
    CALIB_RAW,
    CORRUPTED_SET,
    MC_DROPOUT,
    OOF_SET,
    POLICY_FILE,
    RESERVED_SETS,
    SHIFT_CORRUPTION,
    SPLIT_SETS,
    STATE_FILE,
    RunOutput,
    TrainingRun,
    set_name,
)
from skinclf.contracts.score_registry import score_names
from skinclf.data.cache import build_cache
from skinclf.data.check import check_dataset
from skinclf.data.formats import load_dataset
from skinclf.data.split import group_leaks, share_deviation, split_dataset
from skinclf.data.synthetic import write_sample
from skinclf.errors import ConfigError, DataError
from skinclf.outputs import check_output
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
from skinclf.predict import PredictOptions, fit_feature_statistics

LOCK_FILE = ".run.lock"  # held while a `skinclf run` works in the folder


@dataclass(frozen=True)
class SampleData:
    """The generated data of `skinclf run --sample`: HAM10000- and PAD-UFES-20-format sets."""

    n: int = 30  # images per class
    size: int = 64  # pixels
    ood_n: int = 8  # images per PAD-UFES-20 diagnostic
    seed: int = 0


@dataclass
class RunOptions:
    """Everything `skinclf run` was asked for."""

    out: Path
    cfg: RunConfig
    data: Path | None = None
    ood: list[Path] = field(default_factory=list)
    tests: list[Path] = field(default_factory=list)
    sample: SampleData | None = None
    cache_dir: Path | None = None
    target_risk: float | str = "auto"  # a risk, or auto (evaluate.sgr.lowest_certified_risk)
    id_keep: float = 0.95
    bootstrap: int = 1000


def scores() -> list[str]:
    """Every confidence score of one model's forward pass: the logit and feature scores."""

    return list(score_names("logits", "features", "stages"))


def check_options(opts: RunOptions) -> None:
    """ConfigError, in one sentence, for options no run can start from: an OUT that is no run
    output folder (`check_out`), neither --data nor --sample, a dataset folder that does not
    exist, or an OUT inside a dataset folder."""
    out = Path(opts.out)
    check_out(out)
    if opts.sample is None and opts.data is None:
        raise ConfigError("Give --data PATH (a dataset folder) or --sample.")
    given = [("--data", opts.data), *[("--ood", p) for p in opts.ood]]
    given += [("--test", p) for p in opts.tests]
    for option, path in given:
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{option} {path} does not exist; give a dataset folder.")
    for option, path in given:
        if path is not None and out.resolve().is_relative_to(Path(path).resolve()):
            raise ConfigError(
                f"--out {out} is inside {option} {path}: every step would see its own "
                "outputs as changed data; give an output folder outside the datasets."
            )


class Layout:
    """The paths of an output folder (`check_options` has checked the options)."""

    def __init__(self, opts: RunOptions):
        self.out = Path(opts.out)
        self.folder = RunOutput(self.out)
        self.split, self.check, self.eval = self.folder.split, self.folder.check, self.folder.eval
        self.run = self.folder.run.path
        self.best, self.stats = self.folder.run.best, self.folder.run.feature_stats
        if opts.sample is not None:
            self.data = self.out / "data" / "ham10000"
            self.ood = [self.out / "data" / "pad-ufes-20", *opts.ood]
        else:
            assert opts.data is not None, "check_options(opts) first"
            self.data, self.ood = Path(opts.data), list(opts.ood)
        self.tests = list(opts.tests)
        used: set[str] = set()
        self.ood_names = [set_name(p, used) for p in self.ood]
        self.test_names = [set_name(p, used) for p in self.tests]

    def predictions(self, name: str) -> Path:
        return self.folder.predictions(name)


def check_out(out: Path) -> None:
    """OUT is new, empty or an earlier `skinclf run` output, and can be written; anything else
    is refused."""

    check_output(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder.")
    others = [p for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []
    if others and not (out / STATE_FILE).is_file():
        raise ConfigError(
            f"--out {out} holds files but no {STATE_FILE}: it is not a `skinclf run` output "
            "folder; give a new folder (or an earlier run's, to continue it)."
        )


# ------------------------------------------------------------------------------ the steps


def sample_step(opts: RunOptions, lay: Layout) -> Step:
    sample = opts.sample
    assert sample is not None
    plan = [(lay.data, "ham10000", sample.n), (lay.ood[0], "pad-ufes-20", sample.ood_n)]

    def function(ctx: StepContext) -> None:
        for folder, fmt, n in plan:
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            write_sample(partial, format=fmt, n=n, seed=sample.seed, size=sample.size)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(partial, folder)
            ctx.reporter.log(f"generated a {fmt}-format sample in {folder}")

    settings = {"n": sample.n, "size": sample.size, "ood_n": sample.ood_n, "seed": sample.seed}
    return Step(
        "sample",
        "generate a HAM10000-format set and a PAD-UFES-20-format OOD set (synthetic)",
        function,
        settings,
        outputs=[folder for folder, _, _ in plan],
    )


def check_step(opts: RunOptions, lay: Layout) -> Step:
    sets = [(lay.data, opts.cfg.data.format)] + [(p, "auto") for p in [*lay.ood, *lay.tests]]

    def function(ctx: StepContext) -> None:
        summaries = {}
        for path, fmt in sets:
            result = check_dataset(path, format=fmt, progress=ctx.progress)
            if not result.usable:
                first = result.errors[0].message if result.errors else "no images found"
                raise DataError(
                    f"{path} is not usable: {first.rstrip('.')} ({len(result.errors)} error(s)); "
                    f"`skinclf data check {path}` lists them."
                )
            n_warn = len(result.warnings)
            summaries[str(path)] = {**result.summary, "warnings": n_warn}
            s = result.summary
            ctx.reporter.log(
                f"{path}: {result.format}, {s['images_found']:,} images, {n_warn} warning(s)"
            )
        atomic.write_text(lay.check, json.dumps(summaries, indent=2) + "\n")

    return Step(
        "check",
        "check every dataset (metadata, labels, each image decodes)",
        function,
        {"format": opts.cfg.data.format},
        inputs=[p for p, _ in sets],
        outputs=[lay.check],
        needs=["sample"] if opts.sample else [],
    )


def labelled_table(data: Path, cfg: RunConfig):
    """The dataset's metadata table, without its unlabelled rows (what a split is drawn from)."""

    table = load_dataset(data, cfg.data.format)
    return table[table["label"].astype(str) != ""].reset_index(drop=True)


def split_step(opts: RunOptions, lay: Layout) -> Step:
    d = opts.cfg.data

    def function(ctx: StepContext) -> None:
        table = labelled_table(lay.data, opts.cfg)
        split = split_dataset(table, val=d.val, test=d.test, calib=d.calib, seed=opts.cfg.seed)
        atomic.write_text(lay.split, split[["image_id", "split"]].to_csv(index=False))
        counts = split["split"].value_counts()
        sizes = ", ".join(f"{s} {counts.get(s, 0):,}" for s in ("train", *SPLIT_SETS))
        ctx.reporter.log(
            f"{sizes} images; class shares within {share_deviation(table, split):.1f} points; "
            f"{len(group_leaks(table, split))} lesion(s) in two splits"
        )

    return Step(
        "split",
        f"grouped, stratified split (val {d.val:g}, test {d.test:g}, calib {d.calib:g})",
        function,
        {"val": d.val, "test": d.test, "calib": d.calib, "seed": opts.cfg.seed, "format": d.format},
        inputs=[lay.data],
        outputs=[lay.split],
        # not `needs=["check"]`: nothing reads the check's summary, and the check also covers
        # the --ood/--test sets, whose change must not redo the split and the training after it
    )


def cache_step(opts: RunOptions, lay: Layout) -> Step:
    d = opts.cfg.data

    def function(ctx: StepContext) -> list[Path]:
        table = labelled_table(lay.data, opts.cfg)
        images = build_cache(
            table, d.image_size, d.resize, cache_dir=opts.cache_dir, progress=ctx.progress
        )
        ctx.reporter.log(f"{len(table):,} images at {d.image_size} px in {images.path}")
        return [images.path, images.path.with_suffix(".json")]

    return Step(
        "cache",
        f"decode every image once ({d.image_size} px, {d.resize})",
        function,
        {"image_size": d.image_size, "resize": d.resize, "format": d.format},
        inputs=[lay.data],  # (no need of the check: as the split's)
    )


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def train_step(opts: RunOptions, lay: Layout) -> Step:
    cfg = opts.cfg
    info = StepInfo(
        f"train {cfg.model.backbone}: head on frozen features ({_epochs(cfg.transfer.epochs)}), "
        f"then fine-tuning ({_epochs(cfg.train.epochs)})",
        train_settings(cfg),
        inputs=[lay.data, lay.split, *teacher_file(cfg)],
        needs=["split", "cache"],
    )
    spec = TrainRun(lay.data, lay.run, cfg, lay.split)

    def function(ctx: StepContext) -> None:
        train(ctx, spec, opts.cache_dir)

    outputs = [lay.best, lay.folder.run.metrics]
    return Step("train", info.about, function, info.settings, inputs=info.inputs,
                outputs=outputs, needs=info.needs)  # fmt: skip


def features_step(opts: RunOptions, lay: Layout) -> Step:
    """The feature statistics of the feature scores (Mahalanobis, kNN, ViM, stage scores),
    fitted on the training split's features into run/feature_stats.npz, before any set is
    predicted with them: predicting reads them and never fits."""

    def function(ctx: StepContext) -> None:
        fit_feature_statistics(lay.run, opts.cache_dir, ctx.progress)

    return Step(
        "features",
        "fit the feature statistics of the feature scores on the training split",
        function,
        {},
        inputs=[lay.best],
        outputs=[lay.stats],
        needs=["train"],
    )


def predict_step(
    opts: RunOptions, lay: Layout, name: str, data: Path | None, corrupt: str | None = None
) -> Step:
    """Predictions of one set with every confidence score: a split of the run (`data` None)
    or a dataset folder; `corrupt`: the validation split after synthetic corruption."""
    tta, split = opts.cfg.predict.tta, "val" if corrupt else name
    options = PredictOptions(tta=tta, scores=scores(), mc_dropout=MC_DROPOUT, corrupt=corrupt)
    source = f"the {split} split" if data is None else str(data)
    source += f" after synthetic corruption ({corrupt})" if corrupt else ""
    info = StepInfo(
        f"predict {source} with every confidence score",
        {**predict_settings(options), "corrupt": corrupt},
        inputs=[lay.best, *([lay.data, lay.split] if data is None else [data])],
        needs=["train"],
    )
    spec = PredictSet(name, lay.run, lay.predictions(name), data, split, options)
    return predict_set_step(spec, info, opts.cache_dir)


def calibrate_step(opts: RunOptions, lay: Layout, splits: list[str]) -> Step:
    """The policy: temperature (val), OOD gate (chosen on the corrupted val images) and
    confidence gate (calib, else val), fitted once into OUT/eval/selective.json."""
    calib = lay.predictions("calib") if "calib" in splits else None
    val, shifted = lay.predictions("val"), lay.predictions(CORRUPTED_SET)
    fitted_on = "calibration" if calib is not None else "validation"
    info = StepInfo(
        f"fit the policy: the temperature (validation data), the OOD gate (chosen on the "
        f"corrupted validation images) and the confidence gate ({fitted_on} data)",
        policy_settings(opts.target_risk, opts.id_keep, CORRUPTED_SET),
        inputs=[val, *([calib] if calib else []), lay.stats],
        needs=[f"predict-{n}" for n in ["val", *(["calib"] if calib else []), CORRUPTED_SET]],
    )
    return fit_policy_step(lay.folder, PolicyData(val, calib, shifted, lay.stats), info)


def evaluate_step(opts: RunOptions, lay: Layout, splits: list[str]) -> Step:
    """Every set measured under the calibrate step's policy; report.html."""
    ood = [lay.predictions(n) for n in lay.ood_names]
    external = [lay.predictions(n) for n in lay.test_names]
    files = [lay.predictions(n) for n in splits] + ood + external
    sets = PredictionSets(
        test=lay.predictions("test"),
        val=lay.predictions("val"),
        calib=lay.predictions("calib") if "calib" in splits else None,
        ood=ood,
        external=external,
        shifted=lay.predictions(CORRUPTED_SET),
        names={lay.predictions(n): n for n in [*lay.ood_names, *lay.test_names]},
    )
    info = StepInfo(
        "evaluate every set under the policy (it fits nothing); write report.html",
        {"bootstrap": opts.bootstrap, "seed": opts.cfg.seed},
        inputs=[*files, lay.predictions(CORRUPTED_SET), lay.folder.policy],
        needs=["calibrate", *(f"predict-{n}" for n in [*splits, *lay.ood_names, *lay.test_names])],
    )
    return evaluate_policy_step(lay.folder, sets, info)


def build_steps(opts: RunOptions, lay: Layout) -> list[Step]:
    """The steps of the run, in order."""
    steps = [sample_step(opts, lay)] if opts.sample is not None else []
    steps += [check_step(opts, lay), split_step(opts, lay), cache_step(opts, lay)]
    steps.append(train_step(opts, lay))
    steps.append(features_step(opts, lay))
    splits = [s for s in SPLIT_SETS if s != "calib" or opts.cfg.data.calib > 0]
    steps += [predict_step(opts, lay, s, None) for s in splits]
    steps.append(predict_step(opts, lay, CORRUPTED_SET, None, corrupt=SHIFT_CORRUPTION))
    for names, paths in ((lay.ood_names, lay.ood), (lay.test_names, lay.tests)):
        steps += [predict_step(opts, lay, n, p) for n, p in zip(names, paths, strict=True)]
    steps.append(calibrate_step(opts, lay, splits))
    steps.append(evaluate_step(opts, lay, splits))
    return steps
