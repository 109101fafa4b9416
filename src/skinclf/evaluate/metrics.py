"""Classification metrics: small pure functions, arrays in, numbers out.

`y_true`/`y_pred` are class indices in `CLASSES` order; `probs` has shape (N, C).
Per-class, F1 and confusion counts, NLL and Brier are scikit-learn's, with NaN on zero samples
(where sklearn raises). Own code remains where scikit-learn lacks something: accuracy and
balanced accuracy are numpy for speed in the bootstrap (same results), plus NaN rows of the
normalised confusion matrix, per-class AUROC with NaN where undefined, and equal-width ECE.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from sklearn.metrics import (
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix

from skinclf.classes import NUM_CLASSES

_EPS = 1e-12
# sklearn warns when a row is off 1; predictions files allow 1e-3 (PROB_SUM_TOLERANCE).
_OFF_ONE = r"The y_(prob|pred) values do not sum to one"


@contextmanager
def _ignoring(message: str) -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message, UserWarning)
        yield


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions (= sklearn `accuracy_score`); NaN without samples.

    numpy, not sklearn: it runs once per bootstrap resample, where sklearn is ~100x slower.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def _per_class(
    score: Callable[..., np.ndarray], y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> np.ndarray:
    if len(y_true) == 0:
        return np.full(num_classes, np.nan)
    labels = list(range(num_classes))
    out = score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    return np.asarray(out, dtype=np.float64)


def recall_per_class(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Recall of each class (sklearn `recall_score`); NaN for a class with no true samples."""
    return _per_class(recall_score, y_true, y_pred, num_classes)


def precision_per_class(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Precision of each class (sklearn `precision_score`); NaN for a class never predicted."""
    return _per_class(precision_score, y_true, y_pred, num_classes)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y_true` (= sklearn `balanced_accuracy_score`).

    A class absent from `y_true` does not count, even when it is predicted; NaN without samples.
    numpy, not sklearn: it runs once per bootstrap resample, where sklearn is ~30x slower.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return float("nan")
    support = np.bincount(y_true)
    hits = np.bincount(y_true[y_true == y_pred], minlength=len(support))
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over classes seen in `y_true` or `y_pred` (sklearn; 0 if undefined)."""
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES, normalize: bool = False
) -> np.ndarray:
    """Counts with true classes as rows; `normalize` divides each row by its total (NaN if 0).

    Own normalisation: sklearn's `normalize="true"` gives 0, not NaN, for a class with no rows.
    """
    cm = _sk_confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
    if not normalize:
        return cm
    totals = cm.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, cm / totals, np.nan)


def auroc_ovr(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of each class's probability; NaN without positives or negatives.

    A loop over `roc_auc_score`: sklearn's `multi_class="ovr"` raises unless every class occurs.
    """
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        positive = y_true == c
        if 0 < positive.sum() < len(y_true):
            out[c] = roc_auc_score(positive, probs[:, c])
    return out


def nll(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (sklearn `log_loss`); NaN without samples.

    Probabilities are floored at 1e-12 first: sklearn's floor (machine epsilon) would give a
    zero probability a loss of 36 instead of 27.6.
    """
    if len(y_true) == 0:
        return float("nan")
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, None)
    with _ignoring(_OFF_ONE):
        return float(log_loss(y_true, p, labels=np.arange(p.shape[1])))


def brier(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Multi-class Brier score: mean over samples of sum_c (p_c - 1[y = c])^2.

    sklearn `brier_score_loss` without its halving (`scale_by_half=False`, also for 2 classes);
    NaN without samples.
    """
    if len(y_true) == 0:
        return float("nan")
    p = np.asarray(probs, dtype=np.float64)
    labels = np.arange(p.shape[1])
    with _ignoring(_OFF_ONE):
        return float(brier_score_loss(y_true, p, labels=labels, scale_by_half=False))


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
    Own code: scikit-learn has no ECE (`calibration_curve` is binary and drops empty bins).
    """
    p = np.asarray(probs, dtype=np.float64)
    correct = p.argmax(axis=1) == np.asarray(y_true)
    _, conf, acc, count = calibration_bins(p.max(axis=1), correct, n_bins)
    used = count > 0
    return float(np.sum(count[used] / count.sum() * np.abs(acc[used] - conf[used])))
