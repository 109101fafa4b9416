"""The classification metrics dict: by hand, and the same as the training run's metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import softmax
from skinclf.evaluate import metrics as M
from skinclf.evaluate.classification import classification_metrics, classification_summary

# every class once, nv (index 5) three times; two nv images are called mel (index 4)
Y = np.array([0, 1, 2, 3, 4, 5, 5, 5, 6])
PRED = np.array([0, 1, 2, 3, 4, 5, 4, 4, 6])
LOGITS = np.where(np.eye(7)[PRED] > 0, 2.0, 0.0)


def test_summary_by_hand() -> None:
    probs = softmax(LOGITS)
    out = classification_summary(Y, probs)
    assert list(out) == ["n", "accuracy", "balanced_accuracy", "macro_f1", "recall", "nll"]
    assert out["n"] == 9
    assert out["accuracy"] == pytest.approx(7 / 9)
    assert out["recall"] == pytest.approx({c: 1 / 3 if c == "nv" else 1.0 for c in CLASSES})
    assert out["balanced_accuracy"] == pytest.approx((6 + 1 / 3) / 7)
    # F1: mel 2 * (1/3 * 1) / (1/3 + 1) = 1/2, nv 2 * (1 * 1/3) / (1 + 1/3) = 1/2, others 1
    assert out["macro_f1"] == pytest.approx((5 + 0.5 + 0.5) / 7)
    p_right = math.exp(2) / (math.exp(2) + 6)
    p_wrong = 1 / (math.exp(2) + 6)
    assert out["nll"] == pytest.approx(-(7 * math.log(p_right) + 2 * math.log(p_wrong)) / 9)


def _training_run_summary(y: np.ndarray, logits: np.ndarray) -> dict:
    """What train/report.py computed from logits before it used `classification_summary`."""
    pred = logits.argmax(1)
    recall = M.recall_per_class(y, pred)
    return {
        "n": int(len(y)),
        "accuracy": M.accuracy(y, pred),
        "balanced_accuracy": M.balanced_accuracy(y, pred),
        "macro_f1": M.macro_f1(y, pred),
        "recall": {c: float(r) for c, r in zip(CLASSES, recall, strict=True)},
        "nll": M.nll(softmax(logits), y),
    }


def test_training_run_summary_is_the_same_dict() -> None:
    rng = np.random.default_rng(0)
    for y, logits in ((Y, LOGITS), (rng.integers(0, 6, 40), rng.normal(0, 2, (40, 7)))):
        mine, theirs = classification_summary(y, softmax(logits)), _training_run_summary(y, logits)
        assert list(mine) == list(theirs)
        assert mine.pop("recall") == pytest.approx(theirs.pop("recall"), nan_ok=True)
        assert mine == pytest.approx(theirs)


def test_evaluate_metrics_build_on_the_summary() -> None:
    y, probs = Y[:6], softmax(LOGITS)[:6]  # nv once and right, vasc absent
    summary = classification_summary(y, probs)
    full = classification_metrics(y, probs)
    assert list(full) == [
        "n",
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "recall",
        "precision",
        "auroc_ovr",
        "auroc_ovr_macro",
        "nll",
        "brier",
        "ece",
        "confusion_matrix",
    ]
    for key in ("n", "accuracy", "balanced_accuracy", "macro_f1", "nll"):
        assert full[key] == summary[key]
    assert math.isnan(summary["recall"]["vasc"]) and full["recall"]["vasc"] is None
    assert full["recall"]["nv"] == summary["recall"]["nv"] == 1.0
    assert full["confusion_matrix"][5][5] == 1
