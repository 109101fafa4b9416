"""Bootstrap uncertainty: stratified percentile intervals and paired comparisons.

Resamples are stratified by true class (each class keeps its size), so rare classes are
present in every resample and balanced accuracy stays defined. Seeded: the same inputs give the
same interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from skinclf.contracts.predictions import Predictions
from skinclf.contracts.scores import score_values
from skinclf.errors import DataError
from skinclf.evaluate.metrics import accuracy, balanced_accuracy, macro_f1
from skinclf.evaluate.selective import augrc, augrc_balanced, aurc_balanced
from skinclf.policy.risk_coverage import aurc

N_RESAMPLES = 1000

MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]
"""A metric of (y_true, y_pred, confidence or None)."""

METRICS: dict[str, MetricFn] = {
    "accuracy": lambda y, p, c: accuracy(y, p),
    "balanced_accuracy": lambda y, p, c: balanced_accuracy(y, p),
    "macro_f1": lambda y, p, c: macro_f1(y, p),
    "aurc": lambda y, p, c: aurc(c, y != p),
    "augrc": lambda y, p, c: augrc(c, y != p),
    "aurc_balanced": lambda y, p, c: aurc_balanced(c, y != p, y),
    "augrc_balanced": lambda y, p, c: augrc_balanced(c, y != p, y),
}
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "balanced_accuracy": True,
    "macro_f1": True,
    "aurc": False,
    "augrc": False,
    "aurc_balanced": False,
    "augrc_balanced": False,
}


def stratified_indices(strata: np.ndarray, n_resamples: int, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) indices; each row resamples every stratum with replacement at its size."""
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, len(strata)), dtype=np.int64)
    start = 0
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        out[:, start : start + len(members)] = members[
            rng.integers(0, len(members), size=(n_resamples, len(members)))
        ]
        start += len(members)
    return out


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).all():
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    strata: np.ndarray,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of `statistic(indices)` over stratified bootstrap resamples."""
    idx = stratified_indices(strata, n_resamples, seed)
    return _percentile_interval(np.array([statistic(row) for row in idx]), level)


def metric_ci(
    metric: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    conf: np.ndarray | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Stratified bootstrap interval of a metric in `METRICS` (conf needed for the areas)."""
    fn = METRICS[metric]
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    c = None if conf is None else np.asarray(conf, dtype=np.float64)
    return bootstrap_ci(
        lambda i: fn(y_true[i], y_pred[i], None if c is None else c[i]),
        y_true,
        n_resamples,
        seed,
        level,
    )


@dataclass(frozen=True)
class PairedComparison:
    """Paired bootstrap of metric(A) - metric(B) on the same images."""

    metric: str
    a: float
    b: float
    difference: float  # a - b
    difference_ci95: tuple[float, float]
    p_a_greater: float  # share of resamples with metric(A) > metric(B) (ties count half)
    higher_is_better: bool
    n_resamples: int


def paired_bootstrap(
    statistic_a: Callable[[np.ndarray], float],
    statistic_b: Callable[[np.ndarray], float],
    strata: np.ndarray,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    metric: str = "metric",
    higher_is_better: bool = True,
) -> PairedComparison:
    """Evaluate both statistics on the same stratified resamples of shared indices."""
    idx = stratified_indices(strata, n_resamples, seed)
    a_bs = np.array([statistic_a(row) for row in idx])
    b_bs = np.array([statistic_b(row) for row in idx])
    all_idx = np.arange(len(strata))
    a, b = float(statistic_a(all_idx)), float(statistic_b(all_idx))
    diff = a_bs - b_bs
    return PairedComparison(
        metric=metric,
        a=a,
        b=b,
        difference=a - b,
        difference_ci95=_percentile_interval(diff, 0.95),
        p_a_greater=float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0)),
        higher_is_better=higher_is_better,
        n_resamples=n_resamples,
    )


def _confidence(p: Predictions, score: str) -> np.ndarray:
    values = score_values(p, score)
    if values is None:
        raise DataError(f"{p.path}: no conf_{score} column and {score!r} is not a logit score.")
    return values


def compare_predictions(
    a: Predictions,
    b: Predictions,
    metric: str = "balanced_accuracy",
    score: str = "msp",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Paired bootstrap of two prediction sets on the same labelled images (matched by image_id).

    `score` names the confidence used by the area metrics (a conf_ column or a logit score).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    a, b = a.subset(a.labelled), b.subset(b.labelled)
    if set(a.image_ids) != set(b.image_ids):
        only = sorted(set(a.image_ids) ^ set(b.image_ids))
        raise DataError(
            f"{a.path} and {b.path} do not hold the same labelled images "
            f"({len(only)} differ, e.g. {only[0]!r}); compare predictions on one split."
        )
    b = b.subset(np.argsort(b.image_ids)[np.argsort(np.argsort(a.image_ids))])
    if not np.array_equal(a.y, b.y):
        raise DataError(f"{a.path} and {b.path} disagree on some labels of the same images.")
    fn = METRICS[metric]
    ca, cb = _confidence(a, score), _confidence(b, score)
    pa, pb, y = a.pred, b.pred, a.y
    return paired_bootstrap(
        lambda i: fn(y[i], pa[i], ca[i]),
        lambda i: fn(y[i], pb[i], cb[i]),
        y,
        n_resamples,
        seed,
        metric=metric,
        higher_is_better=HIGHER_IS_BETTER[metric],
    )
