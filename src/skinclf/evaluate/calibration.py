"""Calibration measured: reliability-diagram data and the summary of a temperature's effect
(the temperature itself is fitted by `skinclf.policy.temperature`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skinclf.contracts.predictions import softmax
from skinclf.evaluate.metrics import calibration_bins, ece, nll


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
