"""Selective classification: risk-coverage curves and the areas under them.

A selective classifier accepts a sample when its confidence is at least a threshold; samples
with equal confidence are accepted or rejected together, so the curve has one point per
distinct confidence value (plus coverage 0). Definitions follow FD-Shifts
(`fd_shifts/analysis/rc_stats.py`, Traub et al., "Overcoming Common Flaws in the Evaluation of
Selective Classification Systems", NeurIPS 2024):

- selective risk at threshold t: sum of residuals of accepted samples / number accepted;
  at coverage 0 it repeats the risk of the smallest non-empty selection;
- generalized risk: sum of residuals of accepted samples / number of all samples (0 at
  coverage 0);
- AURC / AUGRC: trapezoidal area under (coverage, risk) over [0, 1] (FD-Shifts' default
  "linear" interpolation). Values are on the [0, 1] scale (FD-Shifts displays them x1000).

Residuals are 0/1 errors here (any values in [0, 1] work).
Own code: no library dependency has risk-coverage curves, AURC/AUGRC or their balanced
variants; the areas use scipy `trapezoid` and the failure AUROC sklearn `roc_auc_score`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import trapezoid
from sklearn.metrics import roc_auc_score

from skinclf.evaluate.metrics import accuracy, balanced_accuracy

DEFAULT_COVERAGES: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.5)


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Points of a risk-coverage curve in ascending coverage; the first point is coverage 0.

    `threshold[i]` is the confidence threshold (accept conf >= threshold) giving `coverage[i]`;
    it is +inf at coverage 0.
    """

    coverage: np.ndarray
    risk: np.ndarray
    threshold: np.ndarray

    def area(self) -> float:
        """Trapezoidal area under the curve."""
        return float(trapezoid(self.risk, self.coverage))


def _groups(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort by descending confidence; return the order, the number accepted at each distinct
    threshold (ascending) and those thresholds."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 1 or len(conf) == 0:
        raise ValueError("confidence must be a non-empty 1-D array")
    if not np.isfinite(conf).all():
        raise ValueError("confidence values must be finite")
    order = np.argsort(-conf, kind="stable")
    c = conf[order]
    # last index of each run of equal confidence
    ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True])
    return order, ends + 1, c[ends]


def _check(conf: np.ndarray, residuals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(conf, dtype=np.float64)
    residuals = np.asarray(residuals, dtype=np.float64)
    if conf.shape != residuals.shape:
        raise ValueError(f"confidence {conf.shape} and residuals {residuals.shape} differ in shape")
    return conf, residuals


def risk_coverage_curve(
    conf: np.ndarray,
    residuals: np.ndarray,
    risk: str = "selective",
    labels: np.ndarray | None = None,
) -> RiskCoverageCurve:
    """Risk-coverage curve of `conf` (higher = more confident) for 0/1 `residuals` (errors).

    `risk` is one of
    - "selective": accepted errors / accepted;
    - "generalized": accepted errors / all samples (Traub et al. 2024);
    - "selective_balanced": mean, over the classes present among the accepted samples, of
      their error rate (the issue's definition; FD-Shifts' `selective_risk_ba_stats`
      instead averages over all classes, counting a fully rejected class as 0);
    - "generalized_balanced": generalized risk with each residual weighted n / (K n_c), K the
      number of classes present and n_c the size of the sample's class (FD-Shifts'
      `generalized_risk_ba_stats`).
    The balanced risks need `labels` (class index per sample).
    """
    conf, residuals = _check(conf, residuals)
    n = len(conf)
    order, accepted, thresholds = _groups(conf)
    if risk in ("selective_balanced", "generalized_balanced"):
        if labels is None:
            raise ValueError(f"risk={risk!r} needs the class labels")
        labels = np.asarray(labels)
        if labels.shape != conf.shape:
            raise ValueError("labels must have the same shape as confidence")
    if risk == "generalized_balanced":
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        residuals = residuals * (n / (len(classes) * counts[inverse]))
        risk = "generalized"
    if risk in ("selective", "generalized"):
        errors = np.cumsum(residuals[order])[accepted - 1]
        r = errors / accepted if risk == "selective" else errors / n
        first = r[0] if risk == "selective" else 0.0
    elif risk == "selective_balanced":
        classes, inverse = np.unique(labels, return_inverse=True)
        onehot = np.zeros((n, len(classes)))
        onehot[np.arange(n), inverse] = 1.0
        count = np.cumsum(onehot[order], axis=0)[accepted - 1]
        errs = np.cumsum(onehot[order] * residuals[order, None], axis=0)[accepted - 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.nanmean(np.where(count > 0, errs / count, np.nan), axis=1)
        first = r[0]
    else:
        raise ValueError(f"unknown risk {risk!r}")
    return RiskCoverageCurve(
        coverage=np.r_[0.0, accepted / n],
        risk=np.r_[first, r],
        threshold=np.r_[np.inf, thresholds],
    )


def aurc(conf: np.ndarray, residuals: np.ndarray) -> float:
    """Area under the selective risk-coverage curve (Geifman et al. 2019; FD-Shifts `aurc`)."""
    return risk_coverage_curve(conf, residuals, "selective").area()


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


def check_fraction(value: float, what: str) -> float:
    """`value` as a float in (0, 1], else ValueError naming `what`."""
    value = float(value)
    if not (0.0 < value <= 1.0) or math.isnan(value):
        raise ValueError(f"{what} must be in (0, 1], got {value:g}")
    return value


def threshold_at_coverage(conf: np.ndarray, coverage: float) -> float:
    """The highest threshold whose coverage (accept conf >= threshold) is at least `coverage`.

    With ties the achieved coverage can exceed the target.
    """
    coverage = check_fraction(coverage, "coverage")
    c = np.sort(np.asarray(conf, dtype=np.float64))[::-1]
    k = max(1, math.ceil(coverage * len(c) - 1e-9))
    return float(c[k - 1])


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
