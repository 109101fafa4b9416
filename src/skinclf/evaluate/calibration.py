"""Temperature scaling (Guo et al., ICML 2017) and reliability-diagram data.

Own code: scikit-learn's calibrators (sigmoid, isotonic) do not include temperature scaling,
which is a one-parameter NLL fit here with scipy's bounded Brent search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from skinclf.contracts.predictions import softmax
from skinclf.contracts.scores import log_probs
from skinclf.evaluate.metrics import calibration_bins, ece, nll

T_MIN, T_MAX = 0.01, 100.0


def temperature_nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    """Mean NLL of softmax(logits / temperature)."""
    lp = log_probs(logits, temperature)
    return float(-lp[np.arange(len(y_true)), y_true].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature T in [0.01, 100] minimising the NLL of softmax(logits / T).

    Optimised over log T with bounded Brent search (the NLL is smooth and unimodal in log T).
    """
    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        raise ValueError("cannot fit a temperature on zero samples")
    res = minimize_scalar(
        lambda log_t: temperature_nll(logits, y_true, float(np.exp(log_t))),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin mean confidence, accuracy and count (15 equal-width bins on max probability)."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float


def reliability_diagram(
    probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15
) -> ReliabilityDiagram:
    """Reliability-diagram data and ECE of the arg-max prediction (the bins of `ece`)."""
    probs = np.asarray(probs, dtype=np.float64)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges, conf, acc, count = calibration_bins(probs.max(axis=1), correct, n_bins)
    return ReliabilityDiagram(edges, conf, acc, count, ece(probs, y_true, n_bins))


def calibration_summary(
    logits: np.ndarray, y_true: np.ndarray, temperature: float, probs: np.ndarray | None = None
) -> dict:
    """NLL and ECE before (`probs`, default softmax(logits)) and after temperature scaling."""
    before = softmax(logits) if probs is None else probs
    after = softmax(logits, temperature)
    return {
        "temperature": float(temperature),
        "nll_before": nll(before, y_true),
        "nll_after": nll(after, y_true),
        "ece_before": ece(before, y_true),
        "ece_after": ece(after, y_true),
    }
