"""Selective classification measured: AUGRC, balanced AURC/AUGRC, excess AURC, failure AUROC
and metrics at a coverage or a target risk.

The risk-coverage curve, AURC and the threshold at a coverage (their definitions, after
FD-Shifts and Traub et al., NeurIPS 2024) live in `skinclf.policy.risk_coverage`, because
fitting a policy ranks scores by them; they are imported here as part of the measuring API.
Own code: no library dependency has these areas; the failure AUROC uses sklearn `roc_auc_score`.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from skinclf.evaluate.metrics import accuracy, balanced_accuracy
from skinclf.policy.risk_coverage import (
    aurc,
    check_fraction,
    risk_coverage_curve,
    threshold_at_coverage,
)

DEFAULT_COVERAGES: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.5)


def augrc(conf: np.ndarray, residuals: np.ndarray) -> float:
    """Area under the generalized risk-coverage curve (Traub et al., NeurIPS 2024).

    Generalized risk = accepted errors / all samples; equivalently the probability that a
    sample is both accepted and wrong, averaged over all thresholds.
    """
    return risk_coverage_curve(conf, residuals, "generalized").area()


def aurc_balanced(conf: np.ndarray, residuals: np.ndarray, labels: np.ndarray) -> float:
    """AURC with selective risk = mean error rate over the classes present among the accepted."""
    return risk_coverage_curve(conf, residuals, "selective_balanced", labels).area()


def augrc_balanced(conf: np.ndarray, residuals: np.ndarray, labels: np.ndarray) -> float:
    """AUGRC with each residual weighted n / (K n_c) (FD-Shifts `augrc_ba`)."""
    return risk_coverage_curve(conf, residuals, "generalized_balanced", labels).area()


def _oracle_conf(residuals: np.ndarray) -> np.ndarray:
    """Distinct confidences that rank samples by ascending residual (the best possible order)."""
    n = len(residuals)
    conf = np.empty(n)
    conf[np.argsort(residuals, kind="stable")] = np.linspace(1.0, 0.0, n)
    return conf


def aurc_optimal(residuals: np.ndarray) -> float:
    """AURC of an oracle that accepts all correct samples before any error, computed with the
    same points and integration as `aurc` (FD-Shifts uses the continuous formula
    err + (1 - err) ln(1 - err) for 0/1 residuals, which differs by O(1/n))."""
    residuals = np.asarray(residuals, dtype=np.float64)
    return aurc(_oracle_conf(residuals), residuals)


def e_aurc(conf: np.ndarray, residuals: np.ndarray) -> float:
    """Excess AURC (Geifman et al., ICLR 2019): AURC minus the oracle's AURC."""
    return aurc(conf, residuals) - aurc_optimal(residuals)


def failure_auroc(conf: np.ndarray, residuals: np.ndarray) -> float:
    """AUROC of confidence separating correct (positive) from wrong predictions; NaN if one kind."""
    correct = np.asarray(residuals) == 0
    if correct.all() or not correct.any():
        return float("nan")
    return float(roc_auc_score(correct, np.asarray(conf, dtype=np.float64)))


def metrics_at_coverage(
    conf: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, coverage: float
) -> dict[str, float]:
    """Accuracy and balanced accuracy of the accepted samples at a target coverage.

    Returns `coverage` (achieved), `threshold`, `accuracy`, `balanced_accuracy`.
    """
    conf = np.asarray(conf, dtype=np.float64)
    t = threshold_at_coverage(conf, coverage)
    keep = conf >= t
    y_true, y_pred = np.asarray(y_true)[keep], np.asarray(y_pred)[keep]
    return {
        "coverage": float(keep.mean()),
        "threshold": t,
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
    }


def coverage_at_risk(conf: np.ndarray, residuals: np.ndarray, target_risk: float) -> dict:
    """Largest coverage whose empirical selective risk is at most `target_risk`.

    Returns `coverage` (0.0 if no threshold reaches the target), `threshold` (None then)
    and `risk`. This is the empirical working point, without any guarantee (see `sgr`).
    """
    target_risk = check_fraction(target_risk, "target risk")
    curve = risk_coverage_curve(conf, residuals, "selective")
    ok = np.flatnonzero(curve.risk[1:] <= target_risk + 1e-12) + 1
    if len(ok) == 0:
        return {"coverage": 0.0, "threshold": None, "risk": None}
    i = ok[-1]
    return {
        "coverage": float(curve.coverage[i]),
        "threshold": float(curve.threshold[i]),
        "risk": float(curve.risk[i]),
    }


def selective_summary(
    conf: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    coverages: tuple[float, ...] = DEFAULT_COVERAGES,
    target_risk: float | None = None,
) -> dict:
    """All selective metrics of one confidence score, keyed as in metrics.json."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    residuals = (y_true != y_pred).astype(np.float64)
    at = {str(float(c)): metrics_at_coverage(conf, y_true, y_pred, c) for c in coverages}
    out = {
        "aurc": aurc(conf, residuals),
        "e_aurc": e_aurc(conf, residuals),
        "augrc": augrc(conf, residuals),
        "aurc_balanced": aurc_balanced(conf, residuals, y_true),
        "augrc_balanced": augrc_balanced(conf, residuals, y_true),
        "failure_auroc": failure_auroc(conf, residuals),
        "accuracy_at_coverage": {k: v["accuracy"] for k, v in at.items()},
        "balanced_accuracy_at_coverage": {k: v["balanced_accuracy"] for k, v in at.items()},
        "achieved_coverage": {k: v["coverage"] for k, v in at.items()},
    }
    if target_risk is not None:
        out["coverage_at_risk"] = {
            str(float(target_risk)): coverage_at_risk(conf, residuals, target_risk)["coverage"]
        }
    return out
