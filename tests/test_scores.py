"""Confidence scores against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from skinclf.contracts.predictions import Predictions, softmax
from skinclf.contracts.scores import (
    SCORES,
    compute_score,
    doctor,
    ensemble_msp,
    margin,
    max_logit,
    mc_dropout_msp,
    mc_dropout_neg_mutual_information,
    msp,
    msp_ts,
    neg_entropy,
    score_values,
    tta_msp,
    with_logits,
)
from skinclf.scoring.feature_scores import fit_knn, fit_mahalanobis

P = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])


def test_probability_scores_by_hand() -> None:
    np.testing.assert_allclose(msp(P), [0.7, 1 / 3])
    np.testing.assert_allclose(margin(P), [0.5, 0.0], atol=1e-12)
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    np.testing.assert_allclose(neg_entropy(P), [-h, -math.log(3)])
    # DOCTOR: sum p^2 = 0.54 -> -(1 - 0.54) / 0.54; uniform: sum p^2 = 1/3 -> -2
    np.testing.assert_allclose(doctor(P), [-(0.46 / 0.54), -2.0])


def test_logit_scores_and_temperature() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(max_logit(logits), [2.0, 0.0])
    e = np.exp([2.0, 0.0, -1.0])
    np.testing.assert_allclose(msp_ts(logits, 1.0)[0], e[0] / e.sum())
    e2 = np.exp(np.array([2.0, 0.0, -1.0]) / 2)
    np.testing.assert_allclose(msp_ts(logits, 2.0)[0], e2[0] / e2.sum())
    # a higher temperature flattens the distribution; uniform logits stay uniform
    assert msp_ts(logits, 2.0)[0] < msp_ts(logits, 1.0)[0]
    np.testing.assert_allclose(msp_ts(logits, 5.0)[1], 1 / 3)


def test_registry_matches_probability_functions() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 7)) * 3
    probs = softmax(logits)
    assert set(SCORES) == {"msp", "max_logit", "margin", "neg_entropy", "doctor", "energy"}
    np.testing.assert_allclose(SCORES["msp"](logits), msp(probs))
    np.testing.assert_allclose(SCORES["margin"](logits), margin(probs))
    np.testing.assert_allclose(SCORES["neg_entropy"](logits), neg_entropy(probs))
    np.testing.assert_allclose(SCORES["doctor"](logits), doctor(probs))
    np.testing.assert_allclose(compute_score("msp_ts", logits, 1.7), msp_ts(logits, 1.7))
    with pytest.raises(ValueError):
        compute_score("msp_ts", logits)
    with pytest.raises(KeyError):
        compute_score("nonsense", logits)
    # for every score, a confident row scores higher than a flat one
    rows = np.array([[6.0, 0, 0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0, 0, 0]])
    for fn in SCORES.values():
        values = fn(rows)
        assert values[0] > values[1]


def test_mc_dropout_tta_and_ensemble() -> None:
    agree = np.stack([P, P, P])
    np.testing.assert_allclose(mc_dropout_msp(agree), msp(P))
    np.testing.assert_allclose(mc_dropout_neg_mutual_information(agree), 0.0, atol=1e-12)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (K=2, N=1, C=2)
    np.testing.assert_allclose(mc_dropout_msp(disagree), [0.5])
    np.testing.assert_allclose(mc_dropout_neg_mutual_information(disagree), [-math.log(2)])
    views = np.array([[[0.9, 0.1]], [[0.5, 0.5]], [[0.7, 0.3]], [[0.7, 0.3]]])
    np.testing.assert_allclose(tta_msp(views), [0.7])
    np.testing.assert_allclose(ensemble_msp(views[:2]), [0.7])


def test_mahalanobis_by_hand() -> None:
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 0.6], [0.6, 1.0]])
    chol = np.linalg.cholesky(cov)
    a = rng.normal(size=(400, 2)) @ chol.T + [5.0, 0.0]
    b = rng.normal(size=(400, 2)) @ chol.T + [-5.0, 0.0]
    model = fit_mahalanobis(np.r_[a, b], np.r_[np.zeros(400, int), np.ones(400, int)])
    np.testing.assert_allclose(model.means, [a.mean(0), b.mean(0)])
    query = np.array([[5.0, 0.0], [0.0, 0.0], [5.0, 3.0], [30.0, 0.0]])
    expected = [
        -min(scipy_mahalanobis(q, mu, model.precision) for mu in model.means) for q in query
    ]
    np.testing.assert_allclose(model.score(query), expected)
    # the shrunk shared covariance is close to the true one with this much data
    np.testing.assert_allclose(np.linalg.inv(model.precision), cov, atol=0.3)
    s = model.score(query)
    assert s[0] > s[2] > s[3]


def test_mahalanobis_is_stable_with_more_dimensions_than_samples() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 64))
    y = np.arange(20) % 4
    scores = fit_mahalanobis(x, y).score(rng.normal(size=(5, 64)))
    assert np.isfinite(scores).all() and (scores <= 0).all()


def test_knn_by_hand() -> None:
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    q = np.array([[3.0, 0.0]])
    # cosine similarities to the bank: 1, 0, 1/sqrt(2), -1
    np.testing.assert_allclose(fit_knn(bank, k=1).score(q), [1.0])
    np.testing.assert_allclose(fit_knn(bank, k=2).score(q), [1 / math.sqrt(2)])
    np.testing.assert_allclose(fit_knn(bank, k=3).score(q), [0.0], atol=1e-12)
    assert fit_knn(bank).k == 10
    np.testing.assert_allclose(fit_knn(bank, k=10).score(q), [-1.0])  # k capped at bank size
    with pytest.raises(ValueError):
        fit_knn(bank, k=0)


def _predictions(logits: np.ndarray, conf: dict[str, np.ndarray]) -> Predictions:
    n = len(logits)
    return Predictions(
        image_ids=np.array([f"i{i}" for i in range(n)]),
        dataset=np.array(["d"] * n),
        y=np.zeros(n, dtype=int),
        semantic_ood=np.zeros(n, dtype=bool),
        logits=logits,
        probs=softmax(logits),
        conf=conf,
    )


def test_score_values_column_first_then_logits() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.4, 0.3]])
    stored = np.array([0.11, 0.22])
    p = _predictions(logits, {"msp": stored, "knn": -stored, "msp_ts": stored / 2})
    np.testing.assert_array_equal(score_values(p, "msp"), stored)  # the column wins
    np.testing.assert_array_equal(score_values(p, "knn"), -stored)
    np.testing.assert_allclose(score_values(p, "energy"), SCORES["energy"](logits))
    assert score_values(p, "vim") is None  # neither a column nor a logit score
    # msp_ts: the stored column by default (gates, comparisons) ...
    np.testing.assert_array_equal(score_values(p, "msp_ts", 2.0), stored / 2)
    # ... recomputed at the fitted temperature when asked (evaluate), None without one
    fresh = score_values(p, "msp_ts", 2.0, stored_msp_ts=False)
    np.testing.assert_allclose(fresh, msp_ts(logits, 2.0))
    assert score_values(p, "msp_ts", None, stored_msp_ts=False) is None
    bare = _predictions(logits, {})
    np.testing.assert_allclose(score_values(bare, "msp_ts", 1.5), msp_ts(logits, 1.5))
    assert score_values(bare, "msp_ts") is None


def test_with_logits_recomputes_logit_and_average_scores_keeps_feature_scores() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.4, 0.3]])
    stale = np.array([0.11, 0.22])
    p = _predictions(logits, {"msp": stale, "tta": stale, "knn": -stale, "msp_ts": stale})
    p.abstain = np.array([True, False])
    new = logits + np.array([0.0, 3.0, 0.0])  # an offset that changes the arg-max of row 0
    out = with_logits(p, new)
    np.testing.assert_allclose(out.probs, softmax(new))
    np.testing.assert_allclose(out.conf["msp"], msp(softmax(new)))
    np.testing.assert_allclose(out.conf["tta"], msp(softmax(new)))  # not the stale column
    np.testing.assert_array_equal(out.conf["knn"], -stale)  # feature scores do not move
    assert "msp_ts" not in out.conf and out.abstain is None  # another temperature's, stale
    np.testing.assert_array_equal(p.conf["msp"], stale)  # the input is not changed
    asked = with_logits(p, new, ["energy", "knn"])
    assert set(asked.conf) == {"energy", "knn"}
    np.testing.assert_allclose(asked.conf["energy"], SCORES["energy"](new))
