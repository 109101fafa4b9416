"""Classification metrics: small pure functions, arrays in, numbers out.

`y_true`/`y_pred` are class indices in `CLASSES` order; `probs` has shape (N, C).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix
from sklearn.metrics import f1_score, roc_auc_score

from skinclf.classes import NUM_CLASSES

_EPS = 1e-12


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def recall_per_class(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Recall of each class; NaN for a class with no true samples."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    support = np.bincount(y_true, minlength=num_classes).astype(np.float64)
    hits = np.bincount(y_true[y_true == y_pred], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, hits / support, np.nan)


def precision_per_class(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Precision of each class; NaN for a class that is never predicted."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    predicted = np.bincount(y_pred, minlength=num_classes).astype(np.float64)
    hits = np.bincount(y_pred[y_true == y_pred], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, hits / predicted, np.nan)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y_true` (= sklearn `balanced_accuracy_score`).

    Like sklearn, a class absent from `y_true` does not count, even when it is predicted.
    """
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return float("nan")
    k = int(max(np.max(y_true), np.max(y_pred))) + 1
    return float(np.nanmean(recall_per_class(y_true, y_pred, k)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over classes seen in `y_true` or `y_pred` (sklearn; 0 if undefined)."""
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES, normalize: bool = False
) -> np.ndarray:
    """Counts with true classes as rows; `normalize` divides each row by its total (NaN if 0)."""
    cm = _sk_confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
    if not normalize:
        return cm
    totals = cm.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, cm / totals, np.nan)


def auroc_ovr(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of each class's probability; NaN without positives or negatives."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        positive = y_true == c
        if 0 < positive.sum() < len(y_true):
            out[c] = roc_auc_score(positive, probs[:, c])
    return out


def nll(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(y_true)), y_true]
    return float(-np.mean(np.log(np.clip(p, _EPS, None))))


def brier(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Multi-class Brier score: mean over samples of sum_c (p_c - 1[y = c])^2."""
    p = np.asarray(probs, dtype=np.float64)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y_true)), y_true] = 1.0
    return float(np.mean(((p - onehot) ** 2).sum(axis=1)))


def calibration_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins (lo, hi] on [0, 1]: edges, mean confidence, accuracy, count per bin.

    Empty bins have NaN confidence and accuracy. A confidence of exactly 0 falls in the first bin.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=ok, minlength=n_bins) / count
    return edges, mean_conf, acc, count


def ece(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al., 2017): 15 equal-width bins on the max probability.

    ECE = sum over bins of (n_bin / n) * |accuracy_bin - mean confidence_bin|.
    """
    p = np.asarray(probs, dtype=np.float64)
    correct = p.argmax(axis=1) == np.asarray(y_true)
    _, conf, acc, count = calibration_bins(p.max(axis=1), correct, n_bins)
    used = count > 0
    return float(np.sum(count[used] / count.sum() * np.abs(acc[used] - conf[used])))
