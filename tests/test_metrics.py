"""Classification, bootstrap and out-of-distribution metrics against hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from skinclf.contracts.predictions import Predictions
from skinclf.errors import DataError
from skinclf.evaluate import metrics as M
from skinclf.evaluate.bootstrap import (
    compare_predictions,
    metric_ci,
    paired_bootstrap,
    stratified_indices,
)
from skinclf.evaluate.ood import (
    detection_auroc,
    fpr_at_tpr,
    ood_detection,
    semantic_ood_at_threshold,
)

Y = np.array([0, 0, 1, 1, 1, 2])
PRED = np.array([0, 1, 1, 1, 0, 2])


def test_classification_metrics_by_hand() -> None:
    assert M.accuracy(Y, PRED) == pytest.approx(4 / 6)
    np.testing.assert_allclose(M.recall_per_class(Y, PRED, 4), [1 / 2, 2 / 3, 1, np.nan])
    np.testing.assert_allclose(M.precision_per_class(Y, PRED, 4), [1 / 2, 2 / 3, 1, np.nan])
    assert M.balanced_accuracy(Y, PRED) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert M.macro_f1(Y, PRED) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    cm = M.confusion_matrix(Y, PRED, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [1, 2, 0], [0, 0, 1]])
    np.testing.assert_allclose(
        M.confusion_matrix(Y, PRED, 4, normalize=True)[:3, :3],
        [[0.5, 0.5, 0], [1 / 3, 2 / 3, 0], [0, 0, 1]],
    )
    assert np.isnan(M.confusion_matrix(Y, PRED, 4, normalize=True)[3]).all()


def test_balanced_accuracy_equals_sklearn_also_with_absent_classes() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(5, 60))
        y = rng.choice(7, size=n, p=[0.05, 0.05, 0.1, 0.0, 0.1, 0.6, 0.1])
        pred = rng.integers(0, 7, size=n)  # predicts classes absent from y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = balanced_accuracy_score(y, pred)
            expected_f1 = f1_score(y, pred, average="macro", zero_division=0)
        assert M.balanced_accuracy(y, pred) == pytest.approx(expected), trial
        assert M.macro_f1(y, pred) == pytest.approx(expected_f1)
    # the majority class alone: recall 1 for nv, 0 elsewhere -> 1 / (classes present)
    y = np.array([5] * 67 + [4] * 11 + [2] * 11 + [0] * 3 + [1] * 5 + [6] * 2 + [3] * 1)
    assert M.balanced_accuracy(y, np.full(len(y), 5)) == pytest.approx(1 / 7)
    assert M.accuracy(y, np.full(len(y), 5)) == pytest.approx(0.67)


def test_auroc_ovr_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
    # class 0 positives score 0.9, 0.4; negatives 0.6, 0.1 -> 3 of 4 pairs ordered
    np.testing.assert_allclose(M.auroc_ovr(y, probs), [0.75, 0.75])
    out = M.auroc_ovr(np.array([0, 0]), np.array([[0.6, 0.4], [0.3, 0.7]]))
    assert np.isnan(out).all()  # no negatives / no positives


def test_nll_brier_by_hand() -> None:
    probs = np.array([[0.5, 0.5], [0.25, 0.75]])
    y = np.array([0, 1])
    assert M.nll(probs, y) == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    assert M.brier(probs, y) == pytest.approx((0.5 + 0.125) / 2)


def test_ece_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.62, 0.38], [0.56, 0.44]])
    y = np.array([0, 1, 0, 1])
    # bins: {0.9, 0.9} acc 0.5 -> gap 0.4 (weight 1/2); {0.62} acc 1 -> 0.38; {0.56} acc 0 -> 0.56
    assert M.ece(probs, y) == pytest.approx(0.5 * 0.4 + 0.25 * 0.38 + 0.25 * 0.56)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert M.ece(perfect, np.array([0, 1])) == pytest.approx(0.0)
    edges, conf, acc, count = M.calibration_bins(np.array([0.0, 1 / 15, 1.0]), [1, 0, 1])
    assert len(edges) == 16 and count[0] == 2 and count[-1] == 1
    assert acc[0] == pytest.approx(0.5) and conf[0] == pytest.approx(1 / 30)


# ----------------------------------------------------------------- bootstrap


def test_stratified_indices_keep_class_sizes_and_are_seeded() -> None:
    strata = np.array([0] * 10 + [1] * 3 + [2] * 1)
    idx = stratified_indices(strata, 50, seed=3)
    assert idx.shape == (50, 14)
    for row in idx:
        np.testing.assert_array_equal(np.bincount(strata[row], minlength=3), [10, 3, 1])
    np.testing.assert_array_equal(idx, stratified_indices(strata, 50, seed=3))
    assert not np.array_equal(idx, stratified_indices(strata, 50, seed=4))


def test_metric_ci_brackets_the_estimate_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)

    def data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        pred = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
        return y, pred, rng.random(n) + (pred == y)

    y, pred, conf = data(300)
    lo, hi = metric_ci("balanced_accuracy", y, pred, n_resamples=300)
    assert lo < M.balanced_accuracy(y, pred) < hi
    assert metric_ci("balanced_accuracy", y, pred, n_resamples=300) == (lo, hi)
    lo_a, hi_a = metric_ci("aurc", y, pred, conf, n_resamples=200)
    assert 0 <= lo_a < hi_a
    y2, pred2, _ = data(3000)
    lo2, hi2 = metric_ci("balanced_accuracy", y2, pred2, n_resamples=300)
    assert hi2 - lo2 < hi - lo


def _predictions(y: np.ndarray, pred: np.ndarray, ids: list[str]) -> Predictions:
    probs = np.full((len(y), 7), 0.05)
    probs[np.arange(len(y)), pred] = 0.7
    return Predictions(
        image_ids=np.array(ids, dtype=object),
        dataset=np.array(["d"] * len(y), dtype=object),
        y=y,
        semantic_ood=np.zeros(len(y), bool),
        logits=np.log(probs),
        probs=probs,
    )


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 7, n)
    good = np.where(rng.random(n) < 0.8, y, (y + 1) % 7)
    worse = good.copy()
    flip = (good == y) & (rng.random(n) < 0.2)
    worse[flip] = (y[flip] + 2) % 7
    ids = [f"i{i}" for i in range(n)]
    a = _predictions(y, good, ids)
    order = rng.permutation(n)  # same images in another order
    b = _predictions(y[order], worse[order], [ids[i] for i in order])
    res = compare_predictions(a, b, "balanced_accuracy", n_resamples=200)
    assert res.p_a_greater > 0.99
    assert res.difference == pytest.approx(
        M.balanced_accuracy(y, good) - M.balanced_accuracy(y, worse)
    )
    assert 0 < res.difference_ci95[0] <= res.difference <= res.difference_ci95[1]
    same = compare_predictions(a, a, "accuracy", n_resamples=50)
    assert same.p_a_greater == 0.5 and same.difference == 0.0
    low = compare_predictions(a, b, "aurc", n_resamples=50)
    assert not low.higher_is_better
    other = _predictions(y[:-1], good[:-1], ids[:-1])
    with pytest.raises(DataError):
        compare_predictions(a, other)
    res2 = paired_bootstrap(lambda i: 1.0, lambda i: 0.0, y, n_resamples=10)
    assert res2.p_a_greater == 1.0 and res2.difference_ci95 == (1.0, 1.0)


# ----------------------------------------------------------------- out-of-distribution


def test_fpr_at_95_tpr_by_hand() -> None:
    conf_id = np.arange(1, 21, dtype=float)  # 19 of 20 kept: threshold 2
    conf_ood = np.array([0.0, 1.5, 2.0, 3.0])
    assert fpr_at_tpr(conf_id, conf_ood) == pytest.approx(0.5)
    assert fpr_at_tpr(conf_id, conf_ood, tpr=1.0) == pytest.approx(0.75)


def test_detection_auroc_by_hand_and_vs_sklearn() -> None:
    # pairs: 3>1, 3=3 (half), 4>1, 4>3 -> 3.5 / 4
    assert detection_auroc(np.array([3.0, 4.0]), np.array([1.0, 3.0])) == pytest.approx(0.875)
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 50), rng.normal(0, 1, 40)
    out = ood_detection(a, b)
    assert out["auroc"] == pytest.approx(
        roc_auc_score(np.r_[np.ones(50), np.zeros(40)], np.r_[a, b])
    )
    assert 0 <= out["fpr_at_95_tpr"] <= 1


def test_semantic_ood_should_abstain_by_hand() -> None:
    out = semantic_ood_at_threshold(
        conf_known=np.array([0.9, 0.8, 0.3]),
        residuals_known=np.array([0.0, 1.0, 0.0]),
        conf_semantic=np.array([0.95, 0.2, 0.1, 0.6]),
        threshold=0.5,
    )
    # semantic: 2 of 4 accepted (0.95, 0.6) -> abstention 0.5
    # accepted: 2 known (1 error) + 2 semantic (errors) = 3 errors of 4 accepted, of 7 rows
    assert out == {
        "n": 4,
        "abstention_rate": 0.5,
        "coverage_with_semantic_ood": pytest.approx(4 / 7),
        "risk_with_semantic_ood_as_errors": pytest.approx(0.75),
    }
    none = semantic_ood_at_threshold(np.array([0.9]), np.array([0.0]), np.array([0.9]), None)
    assert none["abstention_rate"] == 1.0 and none["risk_with_semantic_ood_as_errors"] is None
