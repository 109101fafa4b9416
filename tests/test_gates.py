"""Out-of-distribution gate scores and the gated selective classifier, against hand-computed
cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp

from skinclf.contracts.scores import SCORES, energy
from skinclf.contracts.selective import UNCERTAIN, UNFAMILIAR, RankCombination, decide
from skinclf.evaluate.gates import policy_outcome
from skinclf.policy.gates import fit_ood_gate, keep_threshold
from skinclf.scoring.feature_scores import (
    FeatureStats,
    RelativeMahalanobis,
    ViM,
    fit_feature_stats,
    fit_relative_mahalanobis,
    fit_vim,
)


def test_energy_by_hand() -> None:
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    np.testing.assert_allclose(energy(logits), [math.log(2.0), math.log(4.0)])
    np.testing.assert_allclose(energy(logits, 2.0), 2 * np.log(np.exp(logits / 2).sum(1)))
    np.testing.assert_allclose(SCORES["energy"](logits), energy(logits))


def test_relative_mahalanobis_by_hand() -> None:
    # identity precisions: class means (0,0) and (4,0), background mean (2,0)
    rmd = RelativeMahalanobis(
        means=np.array([[0.0, 0.0], [4.0, 0.0]]),
        precision=np.eye(2),
        background_mean=np.array([2.0, 0.0]),
        background_precision=np.eye(2) * 0.5,
    )
    x = np.array([[1.0, 1.0], [2.0, 3.0]])
    # x1: MD = (2, 10), MD0 = 0.5 * (1 + 1) = 1 -> min(1, 9) = 1 -> -1
    # x2: MD = (13, 13), MD0 = 0.5 * 9 = 4.5 -> 8.5 -> -8.5
    np.testing.assert_allclose(rmd.score(x), [-1.0, -8.5])


def test_relative_mahalanobis_fit_uses_all_features_as_background() -> None:
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (200, 3)), rng.normal(5, 1, (200, 3))]
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    rmd = fit_relative_mahalanobis(x, y)
    np.testing.assert_allclose(rmd.background_mean, x.mean(0))
    # at a class mean the class term is 0, so the score is the background distance there
    mu = rmd.means[:1]
    d = mu[0] - rmd.background_mean
    np.testing.assert_allclose(rmd.score(mu), [d @ rmd.background_precision @ d])


def test_vim_by_hand() -> None:
    # 2-D features, principal axis e1, residual axis e2, origin 0, alpha 2
    vim = ViM(
        origin=np.zeros(2),
        residual_basis=np.array([[0.0], [1.0]]),
        alpha=2.0,
        weight=np.eye(2),
        bias=np.zeros(2),
    )
    x = np.array([[1.0, 0.0], [1.0, 3.0]])
    expected = logsumexp(x, axis=1) - 2.0 * np.abs(x[:, 1])
    np.testing.assert_allclose(vim.score(x), expected)
    np.testing.assert_allclose(vim.residual_norm(x), [0.0, 3.0])


def test_vim_fit_subspace_and_alpha() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)) * np.array([5, 4, 3, 2, 0.1, 0.1, 0.1, 0.1])
    w, b = rng.normal(size=(3, 8)), rng.normal(size=3)
    vim = fit_vim(x, w, b, dim=4)
    basis = vim.residual_basis
    np.testing.assert_allclose(basis.T @ basis, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(vim.origin, -np.linalg.pinv(w) @ b)
    resid = np.linalg.norm((x - vim.origin) @ basis, axis=1)
    max_logit = (x @ w.T + b).max(1)
    assert vim.alpha == pytest.approx(max_logit.mean() / resid.mean())
    # the residual space holds the small directions: a large step along them costs score
    far = x[:1] + np.array([[0, 0, 0, 0, 10, 10, 10, 10]])
    assert vim.score(far)[0] < vim.score(x[:1])[0]


def test_rank_combination_same_alone_or_in_batch() -> None:
    comb = RankCombination(("a", "b"), (np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])))
    # a = 2.5: 2 of 4 calibration values <= it; b = 40: 4 of 4 -> (0.5 + 1) / 2
    np.testing.assert_allclose(comb.score({"a": [2.5], "b": [40.0]}), [0.75])
    batch = comb.score({"a": [2.5, 0.0, 9.0], "b": [40.0, 5.0, 15.0]})
    np.testing.assert_allclose(batch, [0.75, 0.0, 0.625])
    again = RankCombination.from_json(comb.to_json())
    np.testing.assert_allclose(again.score({"a": [9.0], "b": [15.0]}), [0.625])


@pytest.mark.parametrize("keep", [0.9, 0.95, 0.5])
def test_gate_keeps_the_stated_share_within_one_image(keep: float) -> None:
    values = np.random.default_rng(2).normal(size=101)
    gate = fit_ood_gate("mahalanobis", {"mahalanobis": values}, keep, "calib")
    kept = int(gate.accept({"mahalanobis": values}).sum())
    assert math.ceil(keep * 101) <= kept <= math.ceil(keep * 101) + 1
    assert gate.id_kept == pytest.approx(kept / 101)
    assert keep_threshold(values, keep) == gate.threshold


def test_combined_gate_fitted_and_applied() -> None:
    rng = np.random.default_rng(3)
    vals = {"mahalanobis": rng.normal(size=50), "msp": rng.uniform(size=50)}
    gate = fit_ood_gate("mahalanobis+msp", vals, 0.9, "val")
    assert gate.components == ["mahalanobis", "msp"] and gate.combination is not None
    assert gate.accept(vals).sum() >= 45
    one = {k: v[:1] for k, v in vals.items()}
    assert gate.accept(one)[0] == gate.accept(vals)[0]  # alone == in the batch


def test_decide_reasons() -> None:
    accept = np.array([True, True, False, False])
    conf = np.array([0.9, 0.2, 0.9, 0.2])
    abstain, reason = decide(accept, conf, 0.5, on=True)
    assert abstain.tolist() == [False, True, True, True]
    assert reason.tolist() == ["", UNCERTAIN, UNFAMILIAR, UNFAMILIAR]
    abstain, reason = decide(None, conf, 0.5, on=True)  # the single-score classifier
    assert reason.tolist() == ["", UNCERTAIN, "", UNCERTAIN]
    abstain, reason = decide(accept, conf, None, on=False)  # gate only
    assert abstain.tolist() == [False, False, True, True]
    assert decide(accept, conf, None, on=True)[0].all()  # no SGR solution: all abstain


def test_policy_outcome_counts_silent_failures() -> None:
    # 4 labelled (2 right, 2 wrong), 2 semantic OOD; accepted: one right, one wrong, one SCC
    y = np.array([0, 1, 2, 3, -1, -1])
    pred = np.array([0, 1, 0, 0, 4, 5])
    labelled = y >= 0
    sem = ~labelled
    abstain = np.array([False, True, False, True, False, True])
    reason = np.array(["", UNCERTAIN, "", UNFAMILIAR, "", UNFAMILIAR], dtype=object)
    out = policy_outcome(abstain, reason, y, pred, labelled, sem)
    assert out.coverage == pytest.approx(3 / 6)
    assert out.silent_failure_rate == pytest.approx(2 / 6)  # the wrong one and the SCC
    assert out.semantic_ood_abstention == pytest.approx(0.5)
    assert out.accepted_accuracy == pytest.approx(0.5)
    assert out.reasons == {"accepted": 3, UNFAMILIAR: 2, UNCERTAIN: 1}


def test_feature_stats_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 6))
    y = rng.integers(0, 3, size=60)
    w, b = rng.normal(size=(3, 6)), rng.normal(size=3)
    stats = fit_feature_stats(x, y, w, b, knn_k=5, fingerprint="abc")
    stats.save(tmp_path / "s.npz")
    loaded = FeatureStats.load(tmp_path / "s.npz")
    q = rng.normal(size=(7, 6))
    for name, values in stats.scores(q).items():
        np.testing.assert_allclose(loaded.scores(q)[name], values, rtol=1e-6, err_msg=name)
    assert set(stats.scores(q)) == {"mahalanobis", "rel_mahalanobis", "knn", "vim"} | {
        f"knn_k{k}" for k in (1, 5, 20, 50, 100, 200)
    }
    assert loaded.fingerprint == "abc" and loaded.knn.k == 5
    no_vim = fit_feature_stats(x, y)
    assert "vim" not in no_vim.scores(q)


def test_stage_scores_by_hand() -> None:
    from skinclf.scoring.feature_scores import Mahalanobis, StageMahalanobis

    # two stages of widths 1 and 2, identity precisions, one class mean each at 0
    stages = StageMahalanobis(
        dims=(1, 2),
        stages=(Mahalanobis(np.zeros((1, 1)), np.eye(1)), Mahalanobis(np.zeros((1, 2)), np.eye(2))),
        score_mean=np.array([-1.0, -2.0, 0.0]),
        score_std=np.array([1.0, 2.0, 1.0]),
    )
    pooled = Mahalanobis(np.zeros((1, 2)), np.eye(2))
    base = fit_feature_stats(np.eye(2).repeat(3, 0), np.array([0, 0, 0, 1, 1, 1]))
    stats = FeatureStats(pooled, base.rel_mahalanobis, base.knn, None, 6, stages=stages)
    # one image: pooled (3, 4) -> -5; stage 0 (2) -> -2; stage 1 (0, 1) -> -1
    x = np.array([[3.0, 4.0, 2.0, 0.0, 1.0]])
    got = stats.scores(x, ("mahalanobis_block0", "mahalanobis_block1", "mahalanobis_stages"))
    np.testing.assert_allclose(got["mahalanobis_block0"], [-2.0])
    np.testing.assert_allclose(got["mahalanobis_block1"], [-1.0])
    # standardised: (-2 + 1) / 1 = -1, (-1 + 2) / 2 = 0.5, (-5 - 0) / 1 = -5 -> mean -11/6
    np.testing.assert_allclose(got["mahalanobis_stages"], [(-1.0 + 0.5 - 5.0) / 3])
    assert stats.supports("mahalanobis_block1") and not stats.supports("mahalanobis_block2")
    assert "mahalanobis_block2" not in stats.scores(x, ("mahalanobis_block2",))
    with pytest.raises(ValueError, match="stages' pooled outputs"):
        stats.scores(x[:, :2], ("mahalanobis_stages",))


def test_stage_stats_round_trip_and_standardised_on_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x, stages = rng.normal(size=(80, 4)), rng.normal(size=(80, 5))
    y = rng.integers(0, 3, size=80)
    stats = fit_feature_stats(x, y, stages=stages, stage_dims=(2, 3))
    train = stats.scores(np.c_[x, stages], ("mahalanobis_stages",))["mahalanobis_stages"]
    assert abs(train.mean()) < 1e-9  # every part standardised on these very images
    stats.save(tmp_path / "s.npz")
    loaded = FeatureStats.load(tmp_path / "s.npz")
    q = np.c_[rng.normal(size=(6, 4)), rng.normal(size=(6, 5))]
    names = ("mahalanobis", "mahalanobis_block0", "mahalanobis_block1", "mahalanobis_stages")
    for name in names:
        np.testing.assert_allclose(
            loaded.scores(q, names)[name], stats.scores(q, names)[name], err_msg=name
        )
    assert loaded.stages is not None and loaded.stages.dims == (2, 3)
    assert fit_feature_stats(x, y).stages is None  # fitted without stages: none of them
