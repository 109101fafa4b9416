"""`skinclf calibrate RUN`: the policy of a run trained by `skinclf train`, as `skinclf run`
fits its own. The feature statistics are fitted on its training split
(RUN/feature_stats.npz), then its own held-out images are predicted through its `Predictor` with
every confidence score (val, calib when the split has one, test, and val after synthetic
corruption), then the policy is fitted, as `skinclf run`'s calibrate step fits it: the
temperature (val), the OOD gate (chosen without OOD labels by the silent failures on the
corrupted val images) and the confidence gate (calib, else val), into RUN/eval/selective.json;
the evaluate step then measures it into metrics.json and report.html. Afterwards
`skinclf predict RUN`, `skinclf export RUN`, `skinclf serve` and `skinclf.load(RUN)` all abstain
by that policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skinclf.contracts.run_folder import FEATURE_STATS_FILE, RunOutput, TrainingRun
from skinclf.errors import DataError
from skinclf.pipeline.job import CORRUPTED_SET, MC_DROPOUT, SHIFT_CORRUPTION, SPLIT_SETS, scores
from skinclf.pipeline.posthoc import PolicyData, PredictionSets, evaluate_policy, fit_policy
from skinclf.predict import PredictOptions, fit_feature_statistics, predict_file
from skinclf.predictor.core import model_kind


@dataclass(frozen=True)
class CalibrateOptions:
    run: Path
    target_risk: float | str = "auto"
    id_keep: float = 0.95
    bootstrap: int = 1000
    cache_dir: Path | None = None
    progress: bool = True


def _splits(run: Path) -> list[str]:
    """The run's held-out splits, in SPLIT_SETS order; DataError without val and test."""
    path = TrainingRun(run).split
    if not path.is_file():
        raise DataError(f"{path} is missing: is {run} a run folder written by `skinclf train`?")
    present = set(pd.read_csv(path, dtype=str)["split"])
    missing = [s for s in ("val", "test") if s not in present]
    if missing:
        raise DataError(
            f"{path} has no {missing[0]} images: calibrate needs val (for the temperature and "
            "the gate choice) and test (to measure the policy)."
        )
    return [s for s in SPLIT_SETS if s in present]


def calibrate(opts: CalibrateOptions, log: Callable[[str], None] = print):  # -> EvaluationResult
    """Predict the run's held-out splits and fit its policy into RUN/eval/ (see the module)."""

    run = Path(opts.run)
    if model_kind(run) != "run":
        raise DataError(
            f"{run} is not a run folder of `skinclf train` (a `skinclf run` or `skinclf cv` "
            "folder fits its policy itself: run its command again with the settings you want)."
        )
    splits, folder = _splits(run), RunOutput(run).eval
    log(f"fitting the feature statistics on the training split -> {run / FEATURE_STATS_FILE}")
    fit_feature_statistics(run, opts.cache_dir, opts.progress)
    files = {name: folder / f"{name}.csv" for name in [*splits, CORRUPTED_SET]}
    for name, out in files.items():
        log(f"predicting {name} -> {out}")
        corrupt = SHIFT_CORRUPTION if name == CORRUPTED_SET else None
        options = PredictOptions(scores=scores(), mc_dropout=MC_DROPOUT, corrupt=corrupt)
        split = "val" if name == CORRUPTED_SET else name
        predict_file([run], out, None, split, options, opts.cache_dir, opts.progress)
    log("fitting the policy: the temperature, the OOD gate and the confidence gate")
    data = PolicyData(
        files["val"], files.get("calib"), files[CORRUPTED_SET], run / FEATURE_STATS_FILE
    )
    fit_policy(folder, data, opts.target_risk, opts.id_keep)
    log(f"evaluating under it -> {folder}")
    sets = PredictionSets(
        files["test"], files["val"], files.get("calib"), shifted=files[CORRUPTED_SET]
    )
    return evaluate_policy(folder, sets, n_bootstrap=opts.bootstrap, seed=0)
