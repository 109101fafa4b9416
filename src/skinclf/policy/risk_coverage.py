"""Risk-coverage curves, AURC and thresholds at a coverage: what fitting a policy ranks by.

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
