"""Risk-coverage metrics: hand-computed cases and a brute-force threshold sweep."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.integrate import trapezoid
from sklearn.metrics import balanced_accuracy_score

from skinclf.evaluate.selective import (
    augrc,
    augrc_balanced,
    aurc,
    aurc_balanced,
    aurc_optimal,
    coverage_at_risk,
    e_aurc,
    failure_auroc,
    metrics_at_coverage,
    selective_summary,
)
from skinclf.policy.risk_coverage import risk_coverage_curve, threshold_at_coverage

CONF = np.array([0.9, 0.8, 0.7, 0.6])
ERR = np.array([0.0, 1.0, 0.0, 1.0])


def test_curve_and_areas_by_hand() -> None:
    curve = risk_coverage_curve(CONF, ERR)
    np.testing.assert_allclose(curve.coverage, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0, 0, 0.5, 1 / 3, 0.5])
    np.testing.assert_allclose(curve.threshold, [np.inf, 0.9, 0.8, 0.7, 0.6])
    # trapezoids: 0 + 0.25*(0+0.5)/2 + 0.25*(0.5+1/3)/2 + 0.25*(1/3+0.5)/2
    assert aurc(CONF, ERR) == pytest.approx(0.0625 + 2 * 0.25 * (5 / 6) / 2)
    # generalized risk: 0, 0, 1/4, 1/4, 2/4
    assert augrc(CONF, ERR) == pytest.approx(0.25 * 0.25 / 2 + 0.25 * 0.25 + 0.25 * 0.75 / 2)
    # oracle (both correct first): risks 0, 0, 1/3, 1/2 -> 7/48
    assert aurc_optimal(ERR) == pytest.approx(7 / 48)
    assert e_aurc(CONF, ERR) == pytest.approx(0.2708333333 - 7 / 48)
    # correct scores 0.9, 0.7 vs wrong 0.8, 0.6: 3 of 4 pairs ordered
    assert failure_auroc(CONF, ERR) == pytest.approx(0.75)
    assert np.isnan(failure_auroc(CONF, np.zeros(4)))


def test_balanced_variants_by_hand() -> None:
    labels = np.array([0, 1, 1, 0])
    # accepted risks per coverage: 0; (0 + 1)/2; (0 + 1/2)/2; (1/2 + 1/2)/2
    curve = risk_coverage_curve(CONF, ERR, "selective_balanced", labels)
    np.testing.assert_allclose(curve.risk, [0, 0, 0.5, 0.25, 0.5])
    assert aurc_balanced(CONF, ERR, labels) == pytest.approx(0.0625 + 0.09375 + 0.09375)
    # weights n/(K n_c): class 0 has 3 samples -> 4/6, class 1 has 1 -> 2
    labels = np.array([0, 0, 0, 1])
    curve = risk_coverage_curve(CONF, ERR, "generalized_balanced", labels)
    np.testing.assert_allclose(curve.risk, [0, 0, 1 / 6, 1 / 6, 2 / 3])
    assert augrc_balanced(CONF, ERR, labels) == pytest.approx(1 / 6)
    # balanced classes: the weights are all 1 and AUGRC is unchanged
    assert augrc_balanced(CONF, ERR, np.array([0, 1, 0, 1])) == pytest.approx(augrc(CONF, ERR))


def test_ties_are_accepted_together() -> None:
    conf = np.array([0.9, 0.9, 0.5, 0.5])
    err = np.array([0.0, 1.0, 0.0, 0.0])
    curve = risk_coverage_curve(conf, err)
    np.testing.assert_allclose(curve.coverage, [0, 0.5, 1.0])
    np.testing.assert_allclose(curve.risk, [0.5, 0.5, 0.25])
    assert aurc(conf, err) == pytest.approx(0.25 + 0.1875)
    assert augrc(conf, err) == pytest.approx(0.0625 + 0.125)
    # the order of tied samples does not matter
    assert aurc(conf[::-1], err[::-1]) == pytest.approx(aurc(conf, err))
    assert aurc(conf, err[[1, 0, 2, 3]]) == pytest.approx(aurc(conf, err))
    # constant confidence: one point, the full-coverage risk everywhere
    assert aurc(np.ones(4), err) == pytest.approx(0.25)
    assert augrc(np.ones(4), err) == pytest.approx(0.25 / 2)


def _sweep(conf, err, labels, kind):
    """Brute force: accept conf >= t for every distinct t and integrate with trapezoids."""
    n = len(conf)
    classes = np.unique(labels)
    weights = np.array([n / (len(classes) * np.sum(labels == c)) for c in labels])
    points = []
    for t in np.unique(conf):
        a = conf >= t
        if kind == "selective":
            r = err[a].mean()
        elif kind == "generalized":
            r = err[a].sum() / n
        elif kind == "selective_balanced":
            r = np.mean(
                [err[a & (labels == c)].mean() for c in classes if (a & (labels == c)).any()]
            )
        else:
            r = (err * weights)[a].sum() / n
        points.append((a.mean(), r))
    points.sort()
    cov = np.array([0.0] + [p[0] for p in points])
    first = points[0][1] if kind.startswith("selective") else 0.0
    risk = np.array([first] + [p[1] for p in points])
    return trapezoid(risk, cov)


@pytest.mark.parametrize("seed", range(6))
def test_areas_match_brute_force_sweep(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    labels = rng.choice(4, size=n, p=[0.6, 0.2, 0.15, 0.05])
    conf = np.round(rng.random(n), 1 if seed % 2 else 3)  # many ties for odd seeds
    err = (rng.random(n) < 0.6 - 0.5 * conf).astype(float)
    assert aurc(conf, err) == pytest.approx(_sweep(conf, err, labels, "selective"))
    assert augrc(conf, err) == pytest.approx(_sweep(conf, err, labels, "generalized"))
    assert aurc_balanced(conf, err, labels) == pytest.approx(
        _sweep(conf, err, labels, "selective_balanced")
    )
    assert augrc_balanced(conf, err, labels) == pytest.approx(
        _sweep(conf, err, labels, "generalized_balanced")
    )
    assert e_aurc(conf, err) >= -0.02  # tie groups can dip slightly below the oracle


def test_metrics_at_coverage_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    n = 150
    y = rng.choice(5, size=n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, 5, n))
    conf = np.round(rng.random(n) + 0.3 * (pred == y), 2)
    for target in (1.0, 0.9, 0.8, 0.7, 0.5, 0.13):
        # brute force: the highest threshold whose coverage reaches the target
        best = max(t for t in np.unique(conf) if (conf >= t).mean() >= target - 1e-12)
        keep = conf >= best
        out = metrics_at_coverage(conf, y, pred, target)
        assert out["threshold"] == best
        assert out["coverage"] == pytest.approx(keep.mean())
        assert out["coverage"] >= target
        assert out["accuracy"] == pytest.approx(np.mean(y[keep] == pred[keep]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = balanced_accuracy_score(y[keep], pred[keep])
        assert out["balanced_accuracy"] == pytest.approx(expected)
    assert metrics_at_coverage(conf, y, pred, 1.0)["coverage"] == 1.0


def test_coverage_at_risk_by_hand() -> None:
    # selective risks at coverage 0.25, 0.5, 0.75, 1: 0, 0.5, 1/3, 0.5
    assert coverage_at_risk(CONF, ERR, 0.34)["coverage"] == 0.75
    assert coverage_at_risk(CONF, ERR, 0.1) == {"coverage": 0.25, "threshold": 0.9, "risk": 0.0}
    assert coverage_at_risk(CONF, ERR, 0.5)["coverage"] == 1.0
    assert coverage_at_risk(CONF, np.ones(4), 0.5) == {
        "coverage": 0.0,
        "threshold": None,
        "risk": None,
    }


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_targets_outside_unit_interval_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        threshold_at_coverage(CONF, bad)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        coverage_at_risk(CONF, ERR, bad)


def test_selective_summary_keys() -> None:
    y = np.array([0, 1, 1, 0, 2, 2])
    pred = np.array([0, 1, 0, 0, 2, 1])
    conf = np.array([0.9, 0.8, 0.3, 0.7, 0.6, 0.2])
    out = selective_summary(conf, y, pred, (1.0, 0.5), target_risk=0.1)
    assert set(out["balanced_accuracy_at_coverage"]) == {"1.0", "0.5"}
    assert out["accuracy_at_coverage"]["0.5"] == 1.0
    assert out["accuracy_at_coverage"]["1.0"] == pytest.approx(4 / 6)
    assert out["aurc"] == pytest.approx(aurc(conf, y != pred))
    assert out["coverage_at_risk"]["0.1"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        risk_coverage_curve(conf, y != pred, "selective_balanced")  # labels needed
