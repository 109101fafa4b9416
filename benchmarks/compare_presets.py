"""Side-by-side comparison of two finished runs on the same test split (e.g. `default` vs
`paper`): balanced accuracy with stratified-bootstrap 95 % intervals, accuracy, per-class
recall, training time and speed, and a paired bootstrap P(A > B) on the same test images.

    .venv/bin/python benchmarks/compare_presets.py runs/default runs/paper \
        --out benchmarks/results/presets.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from skinclf.evaluate.bootstrap import compare_predictions, metric_ci
from skinclf.evaluate.predictions import read_predictions


def summarise(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    test = read_predictions(run / "test_predictions.csv")
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
    paired = compare_predictions(a, b, metric="balanced_accuracy", n_resamples=1000, seed=0)
    result = {
        "a": summarise(args.run_a),
        "b": summarise(args.run_b),
        "paired_bootstrap_balanced_accuracy": asdict(paired),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
