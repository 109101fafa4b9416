"""Classification metrics of one labelled set, as stored in metrics.json.

`classification_summary` holds the headline numbers (the training run's metrics.json);
`classification_metrics` adds what `skinclf evaluate` reports (precision, one-vs-rest AUROC,
Brier, ECE, confusion matrix); `baselines` gives the majority-class and prior predictors.
"""

from __future__ import annotations

import numpy as np

from skinclf.classes import CLASSES, NUM_CLASSES
from skinclf.evaluate import metrics as M


def _by_class(values: np.ndarray) -> dict[str, float]:
    return {c: float(v) for c, v in zip(CLASSES, values, strict=True)}


def _none_for_nan(values: dict[str, float]) -> dict[str, float | None]:
    return {c: None if np.isnan(v) else v for c, v in values.items()}


def classification_summary(y: np.ndarray, probs: np.ndarray) -> dict:
    """n, accuracy, balanced accuracy, macro-F1, recall per class (NaN: class absent) and NLL
    of class probabilities `probs` (N, C) against class indices `y`."""
    pred = probs.argmax(axis=1)
    return {
        "n": int(len(y)),
        "accuracy": M.accuracy(y, pred),
        "balanced_accuracy": M.balanced_accuracy(y, pred),
        "macro_f1": M.macro_f1(y, pred),
        "recall": _by_class(M.recall_per_class(y, pred)),
        "nll": M.nll(probs, y),
    }


def classification_metrics(y: np.ndarray, probs: np.ndarray) -> dict:
    """The summary plus precision and one-vs-rest AUROC per class, Brier, ECE and the
    confusion matrix; an undefined per-class value is None."""
    summary = classification_summary(y, probs)
    pred = probs.argmax(axis=1)
    auroc = M.auroc_ovr(y, probs)
    head = {k: summary[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1")}
    return {
        **head,
        "recall": _none_for_nan(summary["recall"]),
        "precision": _none_for_nan(_by_class(M.precision_per_class(y, pred))),
        "auroc_ovr": _none_for_nan(_by_class(auroc)),
        "auroc_ovr_macro": float(np.nanmean(auroc)) if not np.isnan(auroc).all() else None,
        "nll": summary["nll"],
        "brier": M.brier(probs, y),
        "ece": M.ece(probs, y),
        "confusion_matrix": M.confusion_matrix(y, pred).tolist(),
    }


def baselines(y_test: np.ndarray, y_prior: np.ndarray, prior_from: str) -> dict:
    """Majority-class and prior-sampling predictors, as expected values (no random draws)."""
    prior = np.bincount(y_prior, minlength=NUM_CLASSES) / len(y_prior)
    freq = np.bincount(y_test, minlength=NUM_CLASSES) / len(y_test)
    present = freq > 0
    majority = int(prior.argmax())
    constant = np.full(len(y_test), majority)
    return {
        "prior_from": prior_from,
        "majority": {
            "class": CLASSES[majority],
            "accuracy": M.accuracy(y_test, constant),
            "balanced_accuracy": M.balanced_accuracy(y_test, constant),
            "macro_f1": M.macro_f1(y_test, constant),
        },
        "prior_sampling": {
            # predict class c with probability prior_c, independently of the image
            "accuracy": float((freq * prior).sum()),
            "balanced_accuracy": float(prior[present].mean()),
        },
    }
