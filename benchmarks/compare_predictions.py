"""Compare two predictions files of the same test images (e.g. an ensemble from
`skinclf predict RUN RUN --split test` against a run's test_predictions.csv): balanced accuracy
with a stratified-bootstrap 95 % interval for each, accuracy, macro-F1, per-class recall, the
AURC and AUGRC of the maximum softmax probability (lower is better), and a paired bootstrap
P(A > B).

    .venv/bin/python benchmarks/compare_predictions.py ens/test.csv \
        runs/paper/test_predictions.csv --out benchmarks/results/ensemble_vs_paper.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import date
from pathlib import Path

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.evaluate.bootstrap import compare_predictions, metric_ci
from skinclf.evaluate.metrics import accuracy, balanced_accuracy, macro_f1, recall_per_class
from skinclf.evaluate.ood import ood_detection
from skinclf.evaluate.selective import augrc, aurc


def summarise(path: Path, p: Predictions) -> dict:
    lo, hi = metric_ci("balanced_accuracy", p.y, p.pred, n_resamples=1000, seed=0)
    recall = recall_per_class(p.y, p.pred)
    msp, errors = p.probs.max(axis=1), (p.pred != p.y).astype(float)
    return {
        "file": str(path),
        "n": p.n,
        "balanced_accuracy": balanced_accuracy(p.y, p.pred),
        "balanced_accuracy_ci95": [lo, hi],
        "accuracy": accuracy(p.y, p.pred),
        "macro_f1": macro_f1(p.y, p.pred),
        "aurc_msp": aurc(msp, errors),
        "augrc_msp": augrc(msp, errors),
        "recall": {c: float(r) for c, r in zip(CLASSES, recall, strict=True)},
    }


RESAMPLES_HELP = "Paired-bootstrap resamples (10,000 for a decision near a threshold)."


def write_comparison(
    a: Predictions, b: Predictions, summary_a: dict, summary_b: dict, out: Path, resamples=1000
):
    """Paired bootstrap of balanced accuracy (`resamples` stratified resamples of the same
    images; P(A > B) moves by about 0.01 between seeds at 1,000) next to both summaries, written
    to `out` as JSON and printed."""
    from bench_backbone import cpu_description  # next to this script
    from bench_speed import versions

    paired = compare_predictions(a, b, metric="balanced_accuracy", n_resamples=resamples, seed=0)
    result = {
        "date": date.today().isoformat(),
        "machine": cpu_description(),
        "versions": versions(),
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
    parser.add_argument(
        "--ood",
        type=Path,
        nargs=2,
        metavar=("A_OOD", "B_OOD"),
        help="each model's predictions of an out-of-distribution set: adds the OOD detection "
        "AUROC and FPR at 95 %% TPR of the maximum softmax probability (A and B as the "
        "in-distribution images)",
    )
    parser.add_argument("--resamples", type=int, default=1000, help=RESAMPLES_HELP)
    args = parser.parse_args()
    a, b = read_predictions(args.a), read_predictions(args.b)
    summary_a, summary_b = summarise(args.a, a), summarise(args.b, b)
    if args.ood is not None:
        summary_a["ood_msp"] = ood_summary(a, args.ood[0])
        summary_b["ood_msp"] = ood_summary(b, args.ood[1])
    write_comparison(a, b, summary_a, summary_b, args.out, args.resamples)


def ood_summary(in_dist: Predictions, ood_file: Path) -> dict:
    """OOD detection by the maximum softmax probability: `in_dist`'s images against every
    image of `ood_file` (semantic OOD ones included)."""
    ood = read_predictions(ood_file)
    scores = ood_detection(in_dist.probs.max(axis=1), ood.probs.max(axis=1))
    return {"file": str(ood_file), "n": ood.n, **scores}


if __name__ == "__main__":
    main()
