"""Temperature scaling and reliability-diagram data."""

from __future__ import annotations

import numpy as np
import pytest

from skinclf.contracts.predictions import softmax
from skinclf.evaluate.calibration import calibration_summary, reliability_diagram
from skinclf.evaluate.metrics import ece, nll
from skinclf.policy.temperature import fit_temperature, temperature_nll


def _sample(rng: np.random.Generator, n: int, true_t: float) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / true_t)."""
    logits = rng.normal(size=(n, 7)) * 3.0
    p = softmax(logits, true_t)
    y = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1)
    return logits, np.minimum(y, 6)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_generating_temperature(true_t: float) -> None:
    logits, y = _sample(np.random.default_rng(0), 6000, true_t)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(true_t, rel=0.1)
    # it is a minimum of the NLL
    assert temperature_nll(logits, y, t) <= temperature_nll(logits, y, t * 1.2)
    assert temperature_nll(logits, y, t) <= temperature_nll(logits, y, t / 1.2)


def test_temperature_nll_matches_nll_of_softmax() -> None:
    logits, y = _sample(np.random.default_rng(1), 50, 1.0)
    assert temperature_nll(logits, y, 1.7) == pytest.approx(nll(softmax(logits, 1.7), y))


def test_scaling_an_overconfident_model_lowers_ece_and_nll() -> None:
    logits, y = _sample(np.random.default_rng(2), 4000, 2.0)  # model logits 2x too sharp
    t = fit_temperature(logits[:2000], y[:2000])
    out = calibration_summary(logits[2000:], y[2000:], t)
    assert t > 1.0
    assert out["ece_after"] < out["ece_before"]
    assert out["nll_after"] < out["nll_before"]
    assert out["temperature"] == t


def test_reliability_diagram_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.62, 0.38], [0.56, 0.44]])
    y = np.array([0, 1, 0, 1])
    d = reliability_diagram(probs, y)
    assert len(d.edges) == 16 and d.count.sum() == 4
    i = int(np.flatnonzero(d.count == 2)[0])
    assert d.edges[i] < 0.9 <= d.edges[i + 1]
    assert d.accuracy[i] == pytest.approx(0.5) and d.confidence[i] == pytest.approx(0.9)
    assert np.isnan(d.accuracy[d.count == 0]).all()
    assert d.ece == pytest.approx(ece(probs, y))
