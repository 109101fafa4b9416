"""Side-by-side comparison of two finished runs on the same test split (e.g. `default` vs
`paper`): balanced accuracy with stratified-bootstrap 95 % intervals, accuracy, macro-F1,
per-class recall, AURC/AUGRC of the maximum softmax probability, training time and speed, the
time the run took to reach a validation balanced accuracy of 0.70, and a paired bootstrap
P(A > B) on the same test images.

    .venv/bin/python benchmarks/compare_presets.py runs/default runs/paper \
        --out benchmarks/results/presets.json

A run is a `skinclf run` output folder (its eval/test.csv and eval/val.csv, its run/metrics.json)
or a training run folder (`skinclf train --out`: its test_ and val_predictions.csv).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from skinclf.compare import paired, run_predictions
from skinclf.compare import summarise as summarise_predictions
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


def val_balanced_accuracy(run: Path) -> float:
    """The run's balanced accuracy on its validation images (its val predictions)."""
    val = run_predictions(run, "val")
    return summarise_predictions(val, read_predictions(val))["balanced_accuracy"]


def summarise(run: Path, test: Predictions) -> dict:
    folder = training_folder(run)
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "run": str(run),
        "preset": metrics["preset"],
        "backbone": metrics["backbone"],
        "tta": metrics["tta"],
        **{f"test_{k}": v for k, v in summarise_predictions(folder, test).items() if k != "file"},
        "val_balanced_accuracy": val_balanced_accuracy(run),
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
    a, b = (read_predictions(run_predictions(run, "test")) for run in (args.run_a, args.run_b))
    result = paired(a, b, summarise(args.run_a, a), summarise(args.run_b, b))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
