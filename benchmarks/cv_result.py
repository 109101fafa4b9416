"""The result of one `skinclf cv` as a benchmark JSON: out-of-fold balanced accuracy (pooled
with its interval, per fold, with cross-fitted logit offsets), the K-fold ensemble on each
external set (with and without offsets), each fold model alone on the same set (predicted here
into FOLD/eval/NAME.csv when missing), and the wall time of every fold's training. While the cv
is unfinished (no cv_summary.json), its finished folds: each one's held-out balanced accuracy and
its model alone on the external sets. `--keep DIR` copies what `skinclf compare` and `skinclf
cv-ensemble` read (folds, out-of-fold and ensemble predictions, offsets, summary, each fold
model's external predictions: a few MB, no images) to DIR, so a paired comparison outlives the
run folder.

    .venv/bin/python benchmarks/cv_result.py runs/cv3-default \
        --external ../shared/data/isic2018-test-dev --out benchmarks/results/cv3_default.json \
        --keep benchmarks/results/cv/cv3-default
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from bench_backbone import cpu_description  # next to this script
from bench_speed import versions
from skinclf.compare import summarise
from skinclf.contracts.cv_folder import (
    CALIB_SET,
    FOLDS_FILE,
    HELD_OUT_FILE,
    OOF_FILE,
    SUMMARY_FILE,
)
from skinclf.contracts.predictions import read_predictions
from skinclf.contracts.run_folder import set_name
from skinclf.scoring.offsets import OFFSETS_FILE


def fold_prediction(fold: Path, data: Path, name: str) -> Path:
    """FOLD/eval/NAME.csv: the fold model alone on `data` (predicted once, then reused)."""
    out = fold / "eval" / f"{name}.csv"
    if not out.is_file():
        cmd = [sys.executable, "-m", "skinclf", "predict", str(fold), "--data", str(data),
               "--out", str(out), "--scores", "msp", "--no-progress"]  # fmt: skip
        subprocess.run(cmd, check=True)
    return out


def single_models(folds: list[Path], data: Path, name: str) -> dict:
    """Each fold model alone on `data`, and their mean balanced accuracy."""
    singles = [summarise(p, read_predictions(p)) for p in
               (fold_prediction(f, data, name) for f in folds)]  # fmt: skip
    mean = float(np.mean([s["balanced_accuracy"] for s in singles]))
    return {"single_models": singles, "single_model_balanced_accuracy_mean": mean}


def step_seconds(cv: Path) -> dict[str, float]:
    steps = json.loads((cv / "run_state.json").read_text())["steps"]
    return {name: round(float(s.get("seconds") or 0.0), 1) for name, s in steps.items()}


def held_out(folds: list[Path]) -> dict:
    """An unfinished cv (no cv_summary.json yet): each finished fold's held-out predictions."""
    return {
        "finished": [f.name for f in folds],
        "folds": {
            f.name: summarise(f / HELD_OUT_FILE, read_predictions(f / HELD_OUT_FILE)) for f in folds
        },
    }


def fold_count(cv: Path) -> int:
    """K of the cv (folds.csv's folds, not counting the calibration part)."""
    folds = pd.read_csv(cv / FOLDS_FILE, dtype=str)["fold"]
    return int(folds[folds != CALIB_SET].nunique())


def cv_result(cv: Path, externals: list[Path], singles: bool = True) -> dict:
    """The result of `cv`; of its finished folds only while it has no cv_summary.json."""
    folds = sorted(cv.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    finished = (cv / SUMMARY_FILE).is_file()
    summary = json.loads((cv / SUMMARY_FILE).read_text()) if finished else {"ensemble": {}}
    folds = folds if finished else [f for f in folds if (f / HELD_OUT_FILE).is_file()]
    if not folds:
        raise SystemExit(f"{cv} has no finished fold yet.")
    seconds = step_seconds(cv)
    result = {
        "date": date.today().isoformat(),
        "machine": cpu_description(),
        "versions": versions(),
        "cv": str(cv),
        "folds": fold_count(cv),
        "config": (folds[0] / "config.yaml").read_text(),
        "out_of_fold": summary["out_of_fold"] if finished else held_out(folds),
        "logit_offsets": summary.get("logit_offsets"),
        "train_seconds": {f.name: seconds.get(f"train-{f.name}") for f in folds},
        "step_seconds": seconds,
        "external": {},
    }
    for data in externals:
        name = set_name(data, set())  # as `skinclf cv` names a --test set
        if finished and name not in summary["ensemble"]:
            known = list(summary["ensemble"])
            raise SystemExit(f"{cv} has no --test set {name!r} (it has {known})")
        ensemble = {"ensemble": summary["ensemble"][name]} if finished else {}
        result["external"][name] = ensemble | (single_models(folds, data, name) if singles else {})
    return result


def keep_predictions(cv: Path, dest: Path) -> list[Path]:
    """Copy the files a comparison of `cv` with another needs into `dest`; the copies."""
    files = [cv / name for name in (FOLDS_FILE, OOF_FILE, OFFSETS_FILE, SUMMARY_FILE)]
    files = [f for f in files if f.is_file()] + sorted((cv / "eval").glob("*.csv"))
    files += sorted(cv.glob("fold_*/eval/*.csv"))  # each fold model alone on the external sets
    if not (cv / SUMMARY_FILE).is_file():  # unfinished: the finished folds' held-out predictions
        files += sorted(cv.glob(f"fold_*/{HELD_OUT_FILE}"))
    kept = []
    for f in files:
        target = dest / f.relative_to(cv)
        target.parent.mkdir(parents=True, exist_ok=True)
        kept.append(Path(shutil.copy2(f, target)))
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv", type=Path, help="A `skinclf cv` output folder.")
    parser.add_argument("--external", type=Path, nargs="*", default=[],
                        help="The --test dataset folders the cv predicted.")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-single", action="store_true",
                        help="On --external only the ensemble (no fold model alone).")  # fmt: skip
    parser.add_argument(
        "--keep", type=Path, help="Copy the predictions `skinclf compare` reads here."
    )
    args = parser.parse_args()
    result = cv_result(args.cv, args.external, singles=not args.no_single)
    if args.keep is not None:
        result["kept"] = [str(p) for p in keep_predictions(args.cv, args.keep)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("out_of_fold", "external")}, indent=2)[:4000])


if __name__ == "__main__":
    main()
