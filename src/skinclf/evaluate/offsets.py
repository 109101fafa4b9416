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

import json
from pathlib import Path

import numpy as np

from skinclf.classes import CLASSES
from skinclf.errors import DataError
from skinclf.evaluate.metrics import balanced_accuracy

OFFSETS_FILE = "logit_offsets.json"
GRID = np.round(np.arange(-3.0, 3.0001, 0.1), 10)
ROUNDS = 3


def apply_offsets(logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`logits + offsets` (one offset per class, in CLASSES order)."""
    return np.asarray(logits, dtype=np.float64) + np.asarray(offsets, dtype=np.float64)[None, :]


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


def write_offsets(path: Path | str, offsets: np.ndarray, fitted_on: str, n: int) -> Path:
    """`logit_offsets.json`: {"offsets": {class: value}, "fitted_on": ..., "n": ...}."""
    from skinclf.atomic import write_text

    body = {
        "offsets": {c: float(v) for c, v in zip(CLASSES, offsets, strict=True)},
        "fitted_on": fitted_on,
        "n": int(n),
    }
    path = Path(path)
    write_text(path, json.dumps(body, indent=2) + "\n")
    return path


def read_offsets(path: Path | str) -> np.ndarray:
    """The offsets of a `logit_offsets.json`, in CLASSES order; DataError naming the file when
    it is not one."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())["offsets"]
        return np.array([float(values[c]) for c in CLASSES])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path} is not a logit offsets file (a JSON object with an offset for each of "
            f"{', '.join(CLASSES)}): {exc}."
        ) from None
