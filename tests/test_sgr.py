"""Selection with guaranteed risk: a hand-checked case, the bound, and the violation rate."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from skinclf.contracts.predictions import softmax
from skinclf.contracts.selective import (
    OODGate,
    Selective,
    apply_selective,
    load_selective,
    save_selective,
)
from skinclf.errors import DataError
from skinclf.evaluate.selective import coverage_at_risk
from skinclf.policy.sgr import apply_threshold, binomial_upper_bound, sgr


def test_binomial_upper_bound() -> None:
    # no errors: (1 - b)^n = delta
    assert binomial_upper_bound(0, 10, 0.05) == pytest.approx(1 - 0.05 ** (1 / 10))
    b = binomial_upper_bound(3, 50, 0.01)
    assert binom.cdf(3, 50, b) == pytest.approx(0.01)
    assert binomial_upper_bound(5, 5, 0.05) == 1.0
    assert binomial_upper_bound(2, 100, 0.05) > 0.02


def test_small_case_by_hand() -> None:
    conf = np.arange(1, 9) / 10  # ascending: 0.1 ... 0.8
    err = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    # m = 8 -> k = 3 steps at level delta / 3 = 0.1
    # z = 5: accept 0.5..0.8 (4 correct)  bound 1 - 0.1^(1/4) = 0.438 < 0.5 -> go lower
    # z = 3: accept 0.3..0.8 (6 correct)  bound 1 - 0.1^(1/6) = 0.319 < 0.5 -> go lower
    # z = 2: accept 0.2..0.8 (7, 1 error) bound b with P(Bin(7, b) <= 1) = 0.1: 0.453 < 0.5
    res = sgr(conf, err, target_risk=0.5, delta=0.3)
    assert res.steps == 3 and res.solution_exists
    assert res.threshold == 0.2
    assert res.n_accepted == 7 and res.coverage == pytest.approx(7 / 8)
    assert res.risk == pytest.approx(1 / 7)
    assert binom.cdf(1, 7, res.bound) == pytest.approx(0.1)
    assert res.bound == pytest.approx(0.4526, abs=1e-4)
    # target 0.44: steps 1 and 2 pass, step 3 (0.453) fails -> the 6 correct ones
    res = sgr(conf, err, target_risk=0.44, delta=0.3)
    assert res.threshold == 0.3 and res.bound == pytest.approx(1 - 0.1 ** (1 / 6))
    # target 0.35: step 1 (0.438) fails, so the search moves to fewer samples, whose bounds
    # are larger still: the binary search finds nothing (as Algorithm 1 does)
    assert not sgr(conf, err, target_risk=0.35, delta=0.3).solution_exists
    # impossible target: no solution, abstain on everything
    res = sgr(conf, err, target_risk=0.01, delta=0.05)
    assert not res.solution_exists and res.threshold is None and res.coverage == 0.0


def test_apply_threshold_by_hand() -> None:
    conf = np.array([0.9, 0.8, 0.8, 0.2])
    err = np.array([0.0, 1.0, 0.0, 1.0])
    out = apply_threshold(conf, err, 0.8, target_risk=0.4)
    assert (out.coverage, out.n_accepted, out.n) == (0.75, 3, 4)
    assert out.risk == pytest.approx(1 / 3) and out.target_met
    assert not apply_threshold(conf, err, 0.8, target_risk=0.3).target_met
    none = apply_threshold(conf, err, None, target_risk=0.1)
    assert none.coverage == 0.0 and none.risk is None and none.target_met


def _draw(rng: np.random.Generator, reps: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidence ~ U(0, 1), P(error | c) = 0.4 (1 - c): true risk above t is 0.2 (1 - t)."""
    conf = rng.random((reps, m))
    err = (rng.random((reps, m)) < 0.4 * (1 - conf)).astype(float)
    return conf, err


def _true_risk(threshold: float) -> float:
    return 0.2 * (1 - threshold)


def test_guarantee_holds_in_about_one_minus_delta_of_draws() -> None:
    rng = np.random.default_rng(2017)
    reps, m, target, delta = 300, 2000, 0.10, 0.05
    calib_conf, calib_err = _draw(rng, reps, m)
    test_conf, test_err = _draw(rng, reps, 4000)
    violated_true = violated_test = naive_violated = solved = 0
    coverages = []
    for i in range(reps):
        res = sgr(calib_conf[i], calib_err[i], target, delta)
        out = apply_threshold(test_conf[i], test_err[i], res.threshold, target)
        violated_test += not out.target_met
        if res.solution_exists:  # otherwise it abstains on everything: no violation
            solved += 1
            coverages.append(res.coverage)
            violated_true += _true_risk(res.threshold) > target
        # without the bound: the largest coverage with empirical risk <= target
        t = coverage_at_risk(calib_conf[i], calib_err[i], target)["threshold"]
        naive_violated += _true_risk(t) > target
    margin = 3 * math.sqrt(reps * delta * (1 - delta))
    assert violated_true <= delta * reps + margin
    assert violated_test <= delta * reps + margin
    # the test has power: choosing by the empirical risk alone violates the target often
    assert naive_violated > 0.25 * reps
    # and SGR is not trivially safe: it usually finds a threshold with a useful coverage
    # (the ideal one, where the true risk equals the target, is 0.5)
    assert solved > 0.9 * reps
    assert 0.2 < np.mean(coverages) < 0.5


def test_selective_json_round_trip_and_apply(tmp_path: Path) -> None:
    sel = Selective(
        score="msp_ts",
        temperature=2.0,
        threshold=0.6,
        target_risk=0.1,
        delta=0.05,
        solution_exists=True,
        fitted_on="calib",
        n_calib=500,
        calib_coverage=0.7,
        calib_risk=0.05,
        bound=0.09,
    )
    path = save_selective(sel, tmp_path / "eval" / "selective.json")
    loaded = load_selective(path)
    assert loaded == sel and loaded.score == "msp_ts"
    logits = np.array([[6.0, 0, 0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0, 0, 0]])
    conf, abstain = apply_selective(loaded, logits)
    np.testing.assert_allclose(conf, softmax(logits / 2.0).max(1))
    assert abstain.tolist() == [conf[0] < 0.6, conf[1] < 0.6] == [False, True]
    no_solution = Selective(**{**sel.__dict__, "threshold": None, "solution_exists": False})
    assert apply_selective(no_solution, logits)[1].all()


def test_load_selective_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such"):
        load_selective(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_selective(bad)
    bad.write_text('{"score": "msp"}')
    with pytest.raises(DataError, match="missing key"):
        load_selective(bad)


def test_selective_json_is_read_through_its_schema(tmp_path: Path) -> None:
    """A format 1 file (no format_version, no gates' keys) still reads; each malformed file is
    refused in one sentence naming the file, the key and the value; other keys are ignored."""
    sel = Selective("msp", None, 0.6, 0.1, 0.05, True, "calib", 50, 0.7, 0.05, 0.09)
    good = asdict(sel)
    path = tmp_path / "selective.json"
    format2_keys = ("format_version", "confidence_gate", "target_coverage", "ood_gate")
    path.write_text(json.dumps({k: v for k, v in good.items() if k not in format2_keys}))
    assert load_selective(path) == sel
    gate = dict(score="knn", threshold=-1.5, id_keep=0.95, id_kept=0.96, fitted_on="calib", n=50)
    path.write_text(json.dumps({**good, "ood_gate": gate, "fit": {"anything": 1}}))
    assert load_selective(path).gate == OODGate(**gate)
    cases = [
        ({"threshold": "abc"}, "threshold must be a number, not 'abc'; fit it again."),
        ({"delta": None}, "delta must be a number, not None"),
        ({"bound": True}, "bound must be a number, not True"),
        ({"fitted_on": 1}, "fitted_on must be a string, not 1"),
        ({"format_version": 3}, "selective.json format 3 is not one this skinclf reads (1 or 2)"),
        ({"confidence_gate": "maybe"}, "confidence_gate 'maybe' is not one of sgr, coverage, off."),
        ({"score": "vibes"}, "score 'vibes' cannot be computed from logits"),
        ({"temperature": 0}, "temperature must be a positive number or null."),
        ({"score": "msp_ts"}, "score msp_ts needs a temperature, but it is null."),
        ({"ood_gate": {"score": "knn"}}, "ood_gate must be an object with score, threshold"),
        ({"ood_gate": {**gate, "b": 1, "a": 2}}, "ood_gate has unknown key(s) a, b."),
        ({"ood_gate": {**gate, "n": "50"}}, "ood_gate.n must be an integer, not '50'"),
    ]
    for change, words in cases:
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(DataError, match=re.escape(f"{path}: {words}")):
            load_selective(path)
    path.write_text(json.dumps({k: v for k, v in good.items() if k not in ("bound", "delta")}))
    with pytest.raises(DataError, match=r"missing key\(s\) bound, delta in selective.json"):
        load_selective(path)


def test_lowest_certified_risk_by_hand() -> None:
    from skinclf.policy.sgr import lowest_certified_risk

    # 200 images: the 100 most confident are all right, the 100 least confident half wrong
    conf = np.arange(200) / 200
    residuals = np.zeros(200)
    residuals[:100:2] = 1.0
    grid = (0.1, 0.2, 0.3, 0.4)
    each = 0.05 / len(grid)  # the union bound over the grid
    fits = {r: sgr(conf, residuals, r, each) for r in grid}
    # the error-free half alone certifies 0.1 (0 errors in 100: bound 1 - (each/7)^(1/100))
    assert fits[0.1].solution_exists and fits[0.1].coverage >= 0.5
    for min_coverage, expected in ((0.4, 0.1), (0.6, 0.2), (0.8, 0.3), (0.9, 0.4)):
        choice = lowest_certified_risk(conf, residuals, 0.05, grid, min_coverage)
        assert choice.target_risk == expected and choice.reached
        assert fits[expected].coverage >= min_coverage
        assert all(fits[r].coverage < min_coverage for r in grid if r < expected)
        assert choice.delta == pytest.approx(each) and choice.overall_delta == 0.05
    never = lowest_certified_risk(conf, residuals, 0.05, grid, min_coverage=1.0)
    assert not never.reached and never.target_risk == 0.4  # the highest coverage (0.995)
