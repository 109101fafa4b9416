"""Side-by-side comparison of two finished runs on the same test split (e.g. `default` vs
`paper`): balanced accuracy with stratified-bootstrap 95 % intervals, accuracy, per-class
recall, training time and speed, and a paired bootstrap P(A > B) on the same test images.

    .venv/bin/python benchmarks/compare_presets.py runs/default runs/paper \
        --out benchmarks/results/presets.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compare_predictions import write_comparison  # next to this script
from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.evaluate.bootstrap import metric_ci


def summarise(run: Path, test: Predictions) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    lo, hi = metric_ci("balanced_accuracy", test.y, test.pred, n_resamples=1000, seed=0)
    return {
        "run": str(run),
        "preset": metrics["preset"],
        "backbone": metrics["backbone"],
        "tta": metrics["tta"],
        "test_n": test.n,
        "test_balanced_accuracy": metrics["test"]["balanced_accuracy"],
        "test_balanced_accuracy_ci95": [lo, hi],
        "test_accuracy": metrics["test"]["accuracy"],
        "test_recall": metrics["test"]["recall"],
        "val_balanced_accuracy": metrics["val"]["balanced_accuracy"],
        "epochs_done": metrics.get("epochs_done"),
        "train_seconds": metrics.get("seconds"),
        "train_images_per_second": metrics.get("train_images_per_second"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/presets.json"))
    args = parser.parse_args()
    a = read_predictions(args.run_a / "test_predictions.csv")
    b = read_predictions(args.run_b / "test_predictions.csv")
    write_comparison(a, b, summarise(args.run_a, a), summarise(args.run_b, b), args.out)


if __name__ == "__main__":
    main()
