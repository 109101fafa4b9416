"""Compare two predictions files of the same test images (e.g. an ensemble from
`skinclf predict RUN RUN --split test` against a run's test_predictions.csv): balanced accuracy
with a stratified-bootstrap 95 % interval for each, accuracy, per-class recall, and a paired
bootstrap P(A > B).

    .venv/bin/python benchmarks/compare_predictions.py ens/test.csv \
        runs/paper/test_predictions.csv --out benchmarks/results/ensemble_vs_paper.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.evaluate.bootstrap import compare_predictions, metric_ci
from skinclf.evaluate.metrics import accuracy, balanced_accuracy, recall_per_class


def summarise(path: Path, p: Predictions) -> dict:
    lo, hi = metric_ci("balanced_accuracy", p.y, p.pred, n_resamples=1000, seed=0)
    recall = recall_per_class(p.y, p.pred)
    return {
        "file": str(path),
        "n": p.n,
        "balanced_accuracy": balanced_accuracy(p.y, p.pred),
        "balanced_accuracy_ci95": [lo, hi],
        "accuracy": accuracy(p.y, p.pred),
        "recall": {c: float(r) for c, r in zip(CLASSES, recall, strict=True)},
    }


def write_comparison(a: Predictions, b: Predictions, summary_a: dict, summary_b: dict, out: Path):
    """Paired bootstrap of balanced accuracy (1,000 resamples of the same images) next to both
    summaries, written to `out` as JSON and printed."""
    paired = compare_predictions(a, b, metric="balanced_accuracy", n_resamples=1000, seed=0)
    result = {
        "a": summary_a,
        "b": summary_b,
        "paired_bootstrap_balanced_accuracy": asdict(paired),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    a, b = read_predictions(args.a), read_predictions(args.b)
    write_comparison(a, b, summarise(args.a, a), summarise(args.b, b), args.out)


if __name__ == "__main__":
    main()
