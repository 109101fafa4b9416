"""Balanced-accuracy calibration: per-class additive logit offsets.

A model trained on imbalanced classes (nv is 2/3 of HAM10000) may still favour the frequent
classes at its decision boundary. Adding an offset b_c to each class's logit before the argmax
moves that boundary; `fit_logit_offsets` chooses b to maximise balanced accuracy on labelled
predictions (out-of-fold or validation), by coordinate ascent over a grid, class by class, a few
rounds. Probabilities become softmax(logits + b), so confidence scores follow the shifted
decision. `cross_fitted` gives an honest estimate: the offsets applied to each fold are fitted on
the other folds only.

The file `logit_offsets.json` (`write_offsets` / `read_offsets`) holds them beside a model
(a cross-validation folder); `skinclf predict` applies them.
"""

from __future__ import annotations

import numpy as np

from skinclf.errors import DataError
from skinclf.evaluate.metrics import balanced_accuracy
from skinclf.scoring.offsets import (  # noqa: F401  (re-exported: the fitting's file)
    OFFSETS_FILE,
    apply_offsets,
    read_offsets,
    write_offsets,
)

GRID = np.round(np.arange(-3.0, 3.0001, 0.1), 10)
ROUNDS = 3


def fit_logit_offsets(
    logits: np.ndarray, y: np.ndarray, grid: np.ndarray = GRID, rounds: int = ROUNDS
) -> np.ndarray:
    """Offsets (mean 0) maximising the balanced accuracy of argmax(logits + offsets) on
    labels `y`; of equal balanced accuracies the offset nearest to 0 wins, so classes the data
    says nothing about keep 0."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    if len(y) == 0:
        raise DataError("Cannot fit logit offsets on no labelled predictions.")
    b = np.zeros(logits.shape[1])
    order = np.argsort(np.abs(grid), kind="stable")  # ties: the smallest |offset| first
    for _ in range(rounds):
        changed = False
        for c in range(logits.shape[1]):
            best_value, best_score = b[c], -1.0
            for value in grid[order]:
                b[c] = value
                score = balanced_accuracy(y, np.argmax(logits + b, axis=1))
                if score > best_score + 1e-12:
                    best_value, best_score = value, score
            changed |= best_value != b[c]
            b[c] = best_value
        if not changed:
            break
    return b - b.mean()


def cross_fitted(logits: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """logits + offsets where each fold's offsets were fitted on the other folds only."""
    out = np.asarray(logits, dtype=np.float64).copy()
    for fold in np.unique(folds):
        inside = folds == fold
        b = fit_logit_offsets(logits[~inside], y[~inside])
        out[inside] = apply_offsets(logits[inside], b)
    return out
