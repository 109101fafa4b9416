"""One model's numbers on a set of images, and a paired bootstrap of two models on the same
images: the JSON `skinclf compare` prints and writes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from pathlib import Path

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.evaluate.bootstrap import compare_predictions, metric_ci
from skinclf.evaluate.metrics import accuracy, balanced_accuracy, macro_f1, recall_per_class
from skinclf.evaluate.ood import ood_detection
from skinclf.evaluate.selective import augrc
from skinclf.policy.risk_coverage import aurc
from skinclf.provenance import machine, versions

CI_RESAMPLES = 1000  # the bootstrap of each model's own interval (seed 0)


def summarise(source: Path | str, p: Predictions) -> dict:
    """Balanced accuracy with its stratified-bootstrap 95 % interval, accuracy, macro-F1, the
    AURC and AUGRC of the maximum softmax probability, and recall per class; `source` names
    the file (or folder) the predictions came from. Measured on the labelled rows (an OOD set's
    semantic-OOD images, e.g. PAD-UFES-20's SCC, have no class to be right on)."""
    p = p.subset(p.labelled)
    lo, hi = metric_ci("balanced_accuracy", p.y, p.pred, n_resamples=CI_RESAMPLES, seed=0)
    recall = recall_per_class(p.y, p.pred)
    msp, errors = p.probs.max(axis=1), (p.pred != p.y).astype(float)
    return {
        "file": str(source),
        "n": p.n,
        "balanced_accuracy": balanced_accuracy(p.y, p.pred),
        "balanced_accuracy_ci95": [lo, hi],
        "accuracy": accuracy(p.y, p.pred),
        "macro_f1": macro_f1(p.y, p.pred),
        "aurc_msp": aurc(msp, errors),
        "augrc_msp": augrc(msp, errors),
        "recall": {c: float(r) for c, r in zip(CLASSES, recall, strict=True)},
    }


def ood_summary(in_dist: Predictions, ood_file: Path) -> dict:
    """OOD detection by the maximum softmax probability: `in_dist`'s images against every
    image of `ood_file` (semantic OOD ones included): AUROC and FPR at 95 % TPR."""
    ood = read_predictions(ood_file)
    scores = ood_detection(in_dist.probs.max(axis=1), ood.probs.max(axis=1))
    return {"file": str(ood_file), "n": ood.n, **scores}


def paired(
    a: Predictions,
    b: Predictions,
    summary_a: dict,
    summary_b: dict,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Both summaries and a paired bootstrap of balanced accuracy (`resamples` stratified
    resamples of the same images; P(A > B) moves by about 0.01 between seeds at 1,000), with
    the date, the machine and the versions that computed them."""
    comparison = compare_predictions(
        a, b, metric="balanced_accuracy", n_resamples=resamples, seed=seed
    )
    return {
        "date": date.today().isoformat(),
        "machine": machine(),
        "versions": versions(("skinclf", "numpy", "scikit-learn")),
        "a": summary_a,
        "b": summary_b,
        "paired_bootstrap_balanced_accuracy": asdict(comparison),
    }


def compare_files(
    file_a: Path,
    file_b: Path,
    resamples: int = 1000,
    seed: int = 0,
    ood: tuple[Path, Path] | None = None,
) -> dict:
    """Two predictions files of the same labelled images, compared; with `ood` (each model's
    predictions of an out-of-distribution set) each summary gains the MSP's OOD detection."""
    a, b = read_predictions(file_a), read_predictions(file_b)
    summary_a, summary_b = summarise(file_a, a), summarise(file_b, b)
    if ood is not None:
        summary_a["ood_msp"] = ood_summary(a, ood[0])
        summary_b["ood_msp"] = ood_summary(b, ood[1])
    return paired(a, b, summary_a, summary_b, resamples, seed)
