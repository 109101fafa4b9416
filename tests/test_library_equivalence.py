"""The library calls that replaced hand-written metrics give the old results.

Each `_old_*` is a verbatim copy of the hand-written implementation it replaced (commit
234ad6a); the randomized tests compare it with today's function on inputs with the edge cases
the old code handled (classes absent from `y_true` or never predicted, zero probabilities,
rows off 1 by the predictions file's tolerance, tied confidences).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from skinclf.contracts.predictions import softmax
from skinclf.evaluate import metrics as M
from skinclf.evaluate.ood import fpr_at_tpr

# ----------------------------------------------------------------- the old implementations


def _old_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def _old_recall_per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    support = np.bincount(y_true, minlength=num_classes).astype(np.float64)
    hits = np.bincount(y_true[y_true == y_pred], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, hits / support, np.nan)


def _old_precision_per_class(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> np.ndarray:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    predicted = np.bincount(y_pred, minlength=num_classes).astype(np.float64)
    hits = np.bincount(y_pred[y_true == y_pred], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, hits / predicted, np.nan)


def _old_balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return float("nan")
    k = int(max(np.max(y_true), np.max(y_pred))) + 1
    return float(np.nanmean(_old_recall_per_class(y_true, y_pred, k)))


def _old_nll(probs: np.ndarray, y_true: np.ndarray) -> float:
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(y_true)), y_true]
    return float(-np.mean(np.log(np.clip(p, 1e-12, None))))


def _old_brier(probs: np.ndarray, y_true: np.ndarray) -> float:
    p = np.asarray(probs, dtype=np.float64)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y_true)), y_true] = 1.0
    return float(np.mean(((p - onehot) ** 2).sum(axis=1)))


def _old_fpr_at_tpr(conf_id: np.ndarray, conf_ood: np.ndarray, tpr: float = 0.95) -> float:
    c_id = np.sort(np.asarray(conf_id, dtype=np.float64))[::-1]
    k = max(1, math.ceil(tpr * len(c_id) - 1e-9))
    threshold = c_id[k - 1]
    return float(np.mean(np.asarray(conf_ood, dtype=np.float64) >= threshold))


def _old_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------- random inputs

_PRIOR = np.array([0.05, 0.05, 0.1, 0.0, 0.1, 0.6, 0.1])  # class 3 never in y_true


def _labels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True classes (some absent) and predictions (some never made, some not in y_true)."""
    n = int(rng.integers(1, 80))
    y = rng.choice(7, size=n, p=_PRIOR)
    pred = np.where(rng.random(n) < 0.6, y, rng.choice([0, 2, 3, 5], size=n))
    return y, pred


def _probs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Softmax rows, some with exact zeros and ones, some off 1 by up to the file's 1e-3."""
    p = softmax(rng.normal(size=(n, 7)) * rng.choice([1.0, 5.0, 400.0]))
    p[rng.random(n) < 0.1] = np.eye(7)[rng.integers(0, 7)]
    off = rng.random(n) < 0.3
    p[off] *= 1.0 + rng.uniform(-9e-4, 9e-4, size=(int(off.sum()), 1))
    return np.clip(p, 0.0, 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_counting_metrics_equal_the_old_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        y, pred = _labels(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the library calls stay quiet
            assert M.accuracy(y, pred) == pytest.approx(_old_accuracy(y, pred), abs=1e-15)
            assert M.balanced_accuracy(y, pred) == pytest.approx(
                _old_balanced_accuracy(y, pred), abs=1e-15
            )
            np.testing.assert_allclose(
                M.recall_per_class(y, pred), _old_recall_per_class(y, pred, 7), atol=1e-15
            )
            np.testing.assert_allclose(
                M.precision_per_class(y, pred), _old_precision_per_class(y, pred, 7), atol=1e-15
            )


@pytest.mark.parametrize("seed", range(5))
def test_nll_and_brier_equal_the_old_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        y, _ = _labels(rng)
        p = _probs(rng, len(y))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # rows off 1 within tolerance do not warn
            assert M.nll(p, y) == pytest.approx(_old_nll(p, y), rel=1e-12, abs=1e-14)
            assert M.brier(p, y) == pytest.approx(_old_brier(p, y), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("seed", range(5))
def test_fpr_at_tpr_equals_the_old_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(60):
        # few distinct values: ties within ID, within OOD and across them
        scale = rng.choice([3, 10, 1000])
        conf_id = rng.integers(0, scale, size=int(rng.integers(1, 60))) / scale
        conf_ood = rng.integers(0, scale, size=int(rng.integers(1, 60))) / scale - 0.1
        for tpr in (0.0, 0.5, 0.8, 0.9, 0.95, 1.0, float(rng.random())):
            assert fpr_at_tpr(conf_id, conf_ood, tpr) == _old_fpr_at_tpr(conf_id, conf_ood, tpr)


def test_softmax_equals_the_old_code() -> None:
    rng = np.random.default_rng(0)
    for scale, t in ((1.0, 1.0), (30.0, 0.5), (800.0, 2.0)):
        logits = rng.normal(size=(50, 7)) * scale
        np.testing.assert_array_equal(softmax(logits, t), _old_softmax(logits, t))
    np.testing.assert_array_equal(softmax(logits[0], 3.0), _old_softmax(logits[0], 3.0))


# ----------------------------------------------------------------- hand cases


def test_softmax_by_hand() -> None:
    np.testing.assert_allclose(softmax(np.array([[0.0, math.log(3.0)]])), [[0.25, 0.75]])
    # temperature 2 halves the logits; a huge logit gap gives an exact 0 and 1
    np.testing.assert_allclose(softmax(np.array([0.0, 2 * math.log(3.0)]), 2.0), [0.25, 0.75])
    np.testing.assert_array_equal(softmax(np.array([[0.0, 1000.0]])), [[0.0, 1.0]])


def test_nll_and_brier_edge_cases_by_hand() -> None:
    # a zero probability on the true class counts as 1e-12, as before
    probs = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    y = np.array([0, 2])
    assert M.nll(probs, y) == pytest.approx(-(math.log(1e-12) + math.log(0.5)) / 2)
    # (1 + 1 + 0) and (0.04 + 0.09 + 0.25) summed over the 3 classes
    assert M.brier(probs, y) == pytest.approx((2.0 + 0.38) / 2)
    # a class that no row has still has its column
    assert M.brier(probs[:1], y[:1]) == pytest.approx(2.0)


def test_no_samples_give_nan() -> None:
    empty, probs = np.array([], dtype=np.int64), np.zeros((0, 7))
    assert math.isnan(M.accuracy(empty, empty))
    assert math.isnan(M.balanced_accuracy(empty, empty))
    assert np.isnan(M.recall_per_class(empty, empty)).all()
    assert np.isnan(M.precision_per_class(empty, empty)).all()
    assert len(M.recall_per_class(empty, empty)) == 7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's mean of an empty slice in the old code
        assert math.isnan(_old_nll(probs, empty)) and math.isnan(_old_brier(probs, empty))
    assert math.isnan(M.nll(probs, empty))
    assert math.isnan(M.brier(probs, empty))


def test_fpr_at_tpr_ties_and_edges_by_hand() -> None:
    conf_id, conf_ood = np.array([1.0, 2.0, 2.0, 3.0]), np.array([2.0, 0.0])
    # keep >= 2 of 4 ID: threshold 2 (both 2s kept, TPR 3/4) accepts the OOD 2.0
    assert fpr_at_tpr(conf_id, conf_ood, 0.5) == 0.5
    # one ID sample is always kept: threshold 3 accepts no OOD sample
    assert fpr_at_tpr(conf_id, conf_ood, 0.25) == 0.0
    assert fpr_at_tpr(conf_id, conf_ood, 0.0) == 0.0
    assert fpr_at_tpr(conf_id, conf_ood, 1.0) == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no OOD samples: FPR undefined
        assert math.isnan(fpr_at_tpr(conf_id, np.array([])))
    with pytest.raises(ValueError, match="in-distribution"):
        fpr_at_tpr(np.array([]), conf_ood)
