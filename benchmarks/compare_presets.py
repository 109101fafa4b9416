"""Side-by-side comparison of two finished runs on the same test split (e.g. `default` vs
`paper`): balanced accuracy with stratified-bootstrap 95 % intervals, accuracy, macro-F1,
per-class recall, AURC/AUGRC of the maximum softmax probability, training time and speed, the
time the run took to reach a validation balanced accuracy of 0.70, and a paired bootstrap
P(A > B) on the same test images.

    .venv/bin/python benchmarks/compare_presets.py runs/default runs/paper \
        --out benchmarks/results/presets.json

A run is a training run folder (`skinclf train --out`) or a `skinclf run` output (its run/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from compare_predictions import summarise as summarise_predictions  # next to this script
from compare_predictions import write_comparison
from skinclf.contracts.predictions import Predictions, read_predictions

TARGET_VAL_BA = 0.70
STAGE_SECONDS = ("features_seconds", "transfer_seconds", "activations_seconds")


def training_folder(run: Path) -> Path:
    """The training run folder of `run` (itself, or a `skinclf run` output's run/)."""
    return run / "run" if (run / "run" / "metrics.json").is_file() else run


def seconds_to_target(folder: Path, metrics: dict, target: float = TARGET_VAL_BA) -> float | None:
    """Seconds of training until the first fine-tuning epoch with validation balanced accuracy
    >= `target` (None if none reached it): the stage-1 and cache steps, then that many epochs,
    each taken as `finetune_seconds / epochs_done` (epochs of one run are equally long)."""
    per_epoch = folder / "metrics.csv"
    epochs, finetune = metrics.get("epochs_done"), metrics.get("finetune_seconds")
    if not per_epoch.is_file() or not epochs or finetune is None:
        return None
    history = pd.read_csv(per_epoch)
    reached = history.index[history.get("val_balanced_accuracy", pd.Series()) >= target]
    if len(reached) == 0:
        return None
    before = sum(metrics.get(k, 0.0) for k in STAGE_SECONDS)
    return round(before + (int(reached[0]) + 1) * finetune / epochs, 1)


def summarise(run: Path, test: Predictions) -> dict:
    folder = training_folder(run)
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "run": str(run),
        "preset": metrics["preset"],
        "backbone": metrics["backbone"],
        "tta": metrics["tta"],
        **{f"test_{k}": v for k, v in summarise_predictions(folder, test).items() if k != "file"},
        "val_balanced_accuracy": metrics["val"]["balanced_accuracy"],
        "epochs_done": metrics.get("epochs_done"),
        "train_seconds": metrics.get("seconds"),
        "train_images_per_second": metrics.get("train_images_per_second"),
        f"seconds_to_val_balanced_accuracy_{TARGET_VAL_BA:.2f}": seconds_to_target(folder, metrics),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/presets.json"))
    args = parser.parse_args()
    a = read_predictions(training_folder(args.run_a) / "test_predictions.csv")
    b = read_predictions(training_folder(args.run_b) / "test_predictions.csv")
    write_comparison(a, b, summarise(args.run_a, a), summarise(args.run_b, b), args.out)


if __name__ == "__main__":
    main()
