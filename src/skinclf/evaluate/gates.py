"""Abstention under shift: an out-of-distribution gate before the confidence gate.

A gated selective classifier decides in two steps:

1. the **OOD gate** accepts an image when a gate score (a feature-space score such as
   Mahalanobis, or a combination) is at least a threshold chosen so that a stated share
   (`id_keep`, e.g. 0.95) of in-distribution calibration images pass; a rejected image is
   `unfamiliar`;
2. the **confidence gate** accepts what passed gate 1 when its confidence score is at least an
   SGR threshold (or a target-coverage threshold) fitted on the calibration images that passed
   gate 1; a rejected image is `uncertain`.

A combined score ranks each component against its stored calibration values (the empirical
CDF) and averages the ranks, so one image gets the same decision alone or in a batch. Policies
are fitted on in-distribution data only; nothing here looks at OOD labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from skinclf.contracts.selective import (
    UNCERTAIN,
    UNFAMILIAR,
    OODGate,
    RankCombination,
    combination_parts,
)
from skinclf.evaluate.metrics import accuracy, balanced_accuracy
from skinclf.evaluate.selective import threshold_at_coverage


def fit_combination(name: str, values: Mapping[str, np.ndarray]) -> RankCombination:
    parts = combination_parts(name)
    return RankCombination(
        tuple(parts), tuple(np.sort(np.asarray(values[p], dtype=np.float64)) for p in parts)
    )


# The highest threshold that accepts (conf >= threshold) at least `keep` of `conf`.
keep_threshold = threshold_at_coverage


def fit_ood_gate(
    score: str,
    component_values: Mapping[str, np.ndarray],
    id_keep: float,
    fitted_on: str,
    stats_file: str | None = None,
    chosen_by: str = "",
) -> OODGate:
    """Fit gate 1 on in-distribution calibration values of each component score."""
    combination = None
    if len(combination_parts(score)) > 1:
        comb = fit_combination(score, component_values)
        values = comb.score(component_values)
        combination = comb.to_json()
    else:
        values = np.asarray(component_values[score], dtype=np.float64)
    threshold = keep_threshold(values, id_keep)
    return OODGate(
        score=score,
        threshold=threshold,
        id_keep=float(id_keep),
        id_kept=float(np.mean(values >= threshold)),
        fitted_on=fitted_on,
        n=len(values),
        combination=combination,
        stats_file=stats_file,
        chosen_by=chosen_by,
    )


@dataclass
class PolicyOutcome:
    """What a policy did on one set of images (all rows, labelled or not)."""

    n: int
    coverage: float
    accepted_accuracy: float | None
    accepted_balanced_accuracy: float | None
    silent_failure_rate: float | None  # accepted and wrong / all (semantic OOD accepted: wrong)
    semantic_ood_abstention: float | None
    reasons: dict[str, int] = field(default_factory=dict)


def policy_outcome(
    abstain: np.ndarray,
    reason: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    labelled: np.ndarray,
    semantic_ood: np.ndarray,
) -> PolicyOutcome:
    """Coverage, accepted (balanced) accuracy on labelled rows, silent failures, reasons.

    Rows that are neither labelled nor semantic OOD (plain unlabelled images) count in the
    coverage only.
    """
    accepted = ~np.asarray(abstain, bool)
    labelled, semantic_ood = np.asarray(labelled, bool), np.asarray(semantic_ood, bool)
    acc_l = accepted & labelled
    wrong = labelled & (np.asarray(pred) != np.asarray(y))
    judged = labelled | semantic_ood
    silent = (accepted & (wrong | semantic_ood)).sum()
    return PolicyOutcome(
        n=len(accepted),
        coverage=float(accepted.mean()) if len(accepted) else 0.0,
        accepted_accuracy=accuracy(y[acc_l], pred[acc_l]) if acc_l.any() else None,
        accepted_balanced_accuracy=(
            balanced_accuracy(y[acc_l], pred[acc_l]) if acc_l.any() else None
        ),
        silent_failure_rate=float(silent / judged.sum()) if judged.any() else None,
        semantic_ood_abstention=(
            float(1.0 - accepted[semantic_ood].mean()) if semantic_ood.any() else None
        ),
        reasons={
            "accepted": int(accepted.sum()),
            UNFAMILIAR: int((reason == UNFAMILIAR).sum()),
            UNCERTAIN: int((reason == UNCERTAIN).sum()),
        },
    )
