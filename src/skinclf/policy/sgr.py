"""Selection with guaranteed risk (SGR): fitting the confidence gate of selective.json.

SGR is Algorithm 1 of Geifman & El-Yaniv, "Selective Classification for Deep Neural Networks",
NeurIPS 2017: on a calibration set of m samples sorted by confidence, a binary search of
k = ceil(log2 m) steps over thresholds; at each step the Clopper-Pearson (binomial) upper bound
on the selective risk at confidence level 1 - delta/k is compared with the target r*. The union
bound over the k steps makes every tested bound hold simultaneously with probability at least
1 - delta, so we return the tested threshold with the largest coverage whose bound is below r*
(the paper outputs the last step, which is one of those when any exists). When no tested
threshold meets the target, no solution exists and the classifier abstains on everything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from skinclf.policy.risk_coverage import check_fraction, threshold_at_coverage


def binomial_upper_bound(errors: int, n: int, delta: float) -> float:
    """Clopper-Pearson one-sided upper bound b: P(Binomial(n, b) <= errors) = delta.

    This is B*(r, delta, S) of Geifman & El-Yaniv; 1.0 when every sample is an error.
    """
    if n <= 0:
        return 1.0
    if errors >= n:
        return 1.0
    return float(beta.ppf(1.0 - delta, errors + 1, n - errors))


@dataclass(frozen=True)
class SGRResult:
    """The SGR selective classifier fitted on a calibration set."""

    target_risk: float
    delta: float
    solution_exists: bool
    threshold: float | None  # accept conf >= threshold; None: abstain on everything
    risk: float | None  # empirical selective risk on the calibration set
    coverage: float  # on the calibration set
    bound: float | None  # upper bound on the true selective risk (prob. >= 1 - delta)
    n: int
    n_accepted: int
    steps: int  # k = ceil(log2 m)


def sgr(
    conf: np.ndarray, residuals: np.ndarray, target_risk: float, delta: float = 0.05
) -> SGRResult:
    """Fit the SGR threshold (Geifman & El-Yaniv 2017, Algorithm 1) for `target_risk` r*.

    With probability at least 1 - delta over the calibration sample, the true selective risk
    of the returned threshold is at most `bound` < r*.
    """
    target_risk = check_fraction(target_risk, "target risk")
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta:g}")
    conf = np.asarray(conf, dtype=np.float64)
    residuals = np.asarray(residuals, dtype=np.float64)
    m = len(conf)
    if m < 2 or conf.shape != residuals.shape:
        raise ValueError("SGR needs at least 2 calibration samples with one residual each")
    order = np.argsort(conf, kind="stable")  # ascending, as in the paper
    sorted_conf = conf[order]
    k = math.ceil(math.log2(m))
    z_min, z_max = 1, m
    best: tuple[float, float, float, int, float] | None = None  # coverage, thr, risk, n, bound
    for _ in range(k):
        z = math.ceil((z_min + z_max) / 2)
        theta = sorted_conf[z - 1]
        accepted = conf >= theta
        n_acc = int(accepted.sum())
        errors = int(round(residuals[accepted].sum()))
        risk = errors / n_acc
        bound = binomial_upper_bound(errors, n_acc, delta / k)
        if bound < target_risk:
            z_max = z
            if best is None or n_acc > best[3]:
                best = (n_acc / m, float(theta), risk, n_acc, bound)
        else:
            z_min = z
    if best is None:
        return SGRResult(target_risk, delta, False, None, None, 0.0, None, m, 0, k)
    coverage, theta, risk, n_acc, bound = best
    return SGRResult(target_risk, delta, True, theta, risk, coverage, bound, m, n_acc, k)


def fit_coverage(
    conf: np.ndarray, residuals: np.ndarray, coverage: float, delta: float, target_risk: float
) -> SGRResult:
    """The confidence gate at a target `coverage` instead of a target risk: the threshold
    keeping that share of the calibration images, and what it states: their error rate and its
    binomial upper bound (probability 1 - delta). `target_risk` is only recorded."""
    conf = np.asarray(conf, dtype=np.float64)
    residuals = np.asarray(residuals, dtype=np.float64)
    threshold = threshold_at_coverage(conf, coverage)
    keep = conf >= threshold
    n_acc, errors = int(keep.sum()), int(residuals[keep].sum())
    return SGRResult(
        target_risk, delta, True, threshold, float(residuals[keep].mean()),
        float(keep.mean()), binomial_upper_bound(errors, n_acc, delta), len(conf), n_acc, 0,
    )  # fmt: skip


@dataclass(frozen=True)
class ThresholdOutcome:
    """What a fixed threshold achieves on a labelled set."""

    coverage: float
    risk: float | None  # None when nothing is accepted
    n: int
    n_accepted: int
    target_met: bool  # risk <= target (vacuously true when nothing is accepted)


def apply_threshold(
    conf: np.ndarray, residuals: np.ndarray, threshold: float | None, target_risk: float
) -> ThresholdOutcome:
    """Accept conf >= threshold (None: accept nothing) and measure coverage and risk."""
    conf = np.asarray(conf, dtype=np.float64)
    residuals = np.asarray(residuals, dtype=np.float64)
    accepted = np.zeros(len(conf), bool) if threshold is None else conf >= threshold
    n_acc = int(accepted.sum())
    risk = float(residuals[accepted].mean()) if n_acc else None
    return ThresholdOutcome(
        coverage=n_acc / len(conf) if len(conf) else 0.0,
        risk=risk,
        n=len(conf),
        n_accepted=n_acc,
        target_met=risk is None or risk <= target_risk + 1e-12,
    )


# `--target-risk auto`: the lowest risk of this grid that SGR certifies at a minimum coverage.
RISK_GRID = (0.02, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50)
AUTO_MIN_COVERAGE = 0.70
AUTO = "auto"


@dataclass(frozen=True)
class RiskChoice:
    """The target risk `--target-risk auto` chose, and how."""

    target_risk: float
    delta: float  # the SGR delta of each grid risk: the overall delta over the grid's size
    overall_delta: float
    min_coverage: float
    reached: bool  # whether a grid risk reached the minimum coverage on the calibration data
    coverages: dict[float, float]  # grid risk -> SGR coverage on the calibration data (0: none)

    @property
    def certified(self) -> bool:
        """Whether SGR certified any risk of the grid (else the data are too few or too wrong)."""
        return any(self.coverages.values())


def lowest_certified_risk(
    conf: np.ndarray,
    residuals: np.ndarray,
    delta: float = 0.05,
    grid: tuple[float, ...] = RISK_GRID,
    min_coverage: float = AUTO_MIN_COVERAGE,
) -> RiskChoice:
    """The lowest target risk of `grid` whose SGR threshold accepts at least `min_coverage` of
    the calibration images; none reaching it, the one of the highest coverage (the lowest risk
    among ties). Each grid risk is fitted at delta / len(grid), so the chosen one's guarantee
    holds with probability at least 1 - delta although it was chosen on the same data (a union
    bound over the grid). None certified at all: the grid's highest risk, `certified` False."""
    each = delta / len(grid)
    coverages = {}
    for risk in grid:
        fit = sgr(conf, residuals, risk, each)
        coverages[risk] = fit.coverage if fit.solution_exists else 0.0
    reached = [r for r in grid if coverages[r] >= min_coverage]
    if reached:
        chosen = min(reached)
    elif any(coverages.values()):
        chosen = max(grid, key=lambda r: (coverages[r], -r))
    else:  # nothing certified: the least strict risk (`certified` False)
        chosen = max(grid)
    return RiskChoice(chosen, each, float(delta), min_coverage, bool(reached), coverages)


def parse_target_risk(value: str | float) -> float | str:
    """`--target-risk`: "auto", or a risk in (0, 1]; ValueError in one sentence otherwise."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        risk = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"--target-risk {value!r} is neither auto nor a number; use auto or e.g. 0.2."
        ) from None
    if not 0.0 < risk <= 1.0:
        raise ValueError(
            f"target risk {risk:g} (--target-risk) is outside (0, 1]; use auto or 0.2."
        )
    return risk
