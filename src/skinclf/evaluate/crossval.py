"""The numbers of a cross-validation: out-of-fold balanced accuracy, per fold and pooled, with
a stratified-bootstrap interval, per-class recall, and the same after balanced-accuracy
calibration (cross-fitted logit offsets, `evaluate.offsets`)."""

from __future__ import annotations

import numpy as np

from skinclf.classes import CLASSES
from skinclf.evaluate.bootstrap import metric_ci
from skinclf.evaluate.metrics import accuracy, balanced_accuracy, macro_f1, recall_per_class
from skinclf.evaluate.offsets import cross_fitted


def _numbers(y: np.ndarray, pred: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    lo, hi = metric_ci("balanced_accuracy", y, pred, n_resamples=n_bootstrap, seed=seed)
    recall = recall_per_class(y, pred)
    return {
        "n": int(len(y)),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "balanced_accuracy_ci95": [lo, hi],
        "accuracy": accuracy(y, pred),
        "macro_f1": macro_f1(y, pred),
        "recall": {
            c: None if np.isnan(r) else float(r) for c, r in zip(CLASSES, recall, strict=True)
        },
    }


def out_of_fold_summary(
    logits: np.ndarray, y: np.ndarray, folds: np.ndarray, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """Pooled and per-fold numbers of out-of-fold predictions (`folds`: each image's held-out
    fold), as predicted and with cross-fitted logit offsets."""
    folds = np.asarray(folds).astype(str)
    pred = np.argmax(logits, axis=1)
    adjusted = np.argmax(cross_fitted(logits, y, folds), axis=1)
    per_fold = {}
    for fold in sorted(np.unique(folds), key=int):
        inside = folds == fold
        per_fold[fold] = {
            "n": int(inside.sum()),
            "balanced_accuracy": balanced_accuracy(y[inside], pred[inside]),
            "balanced_accuracy_offsets": balanced_accuracy(y[inside], adjusted[inside]),
        }
    values = [f["balanced_accuracy"] for f in per_fold.values()]
    return {
        "pooled": _numbers(y, pred, n_bootstrap, seed),
        "pooled_offsets": _numbers(y, adjusted, n_bootstrap, seed),
        "folds": per_fold,
        "fold_balanced_accuracy_mean": float(np.mean(values)),
        "fold_balanced_accuracy_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
    }


def set_summary(
    logits: np.ndarray,
    y: np.ndarray,
    offsets: np.ndarray | None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """A labelled set predicted by the ensemble, whose `logits` include `offsets` (None: none):
    its numbers with the offsets, and without them (the offsets taken off again)."""
    labelled = y >= 0
    logits, y = logits[labelled], y[labelled]
    out = {"offsets": _numbers(y, np.argmax(logits, axis=1), n_bootstrap, seed)}
    raw = logits - offsets[None, :] if offsets is not None else logits
    out["no_offsets"] = _numbers(y, np.argmax(raw, axis=1), n_bootstrap, seed)
    return out
