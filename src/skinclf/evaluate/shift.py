"""Measuring a gated selective classifier on a predictions file: its outcome with bootstrap
intervals, and its selective balanced accuracy against a single score at the same coverage.
The policy is fitted by `skinclf.policy` (in-distribution rows only)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from skinclf.contracts.predictions import Predictions
from skinclf.contracts.selective import Selective
from skinclf.evaluate.bootstrap import bootstrap_ci, paired_bootstrap
from skinclf.evaluate.gates import policy_outcome
from skinclf.evaluate.metrics import balanced_accuracy
from skinclf.policy.gates import apply_to


def _strata(p: Predictions) -> np.ndarray:
    """Bootstrap strata: the class, -2 for semantic OOD, -1 for unlabelled rows."""
    return np.where(p.semantic_ood, -2, p.y)


def outcome(
    selective: Selective, p: Predictions, n_bootstrap: int, seed: int
) -> tuple[dict, np.ndarray, np.ndarray]:
    """The policy's outcome on `p` with bootstrap intervals, plus its abstain and reasons."""
    _, abstain, reason = apply_to(selective, p)
    y, pred, lab, sem = p.y, p.pred, p.labelled, p.semantic_ood
    result = asdict(policy_outcome(abstain, reason, y, pred, lab, sem))

    def stat(key: str):
        def f(i: np.ndarray) -> float:
            value = getattr(
                policy_outcome(abstain[i], reason[i], y[i], pred[i], lab[i], sem[i]), key
            )
            return np.nan if value is None else value

        return f

    for key in ("coverage", "silent_failure_rate", "accepted_balanced_accuracy"):
        if result[key] is not None:
            result[f"{key}_ci95"] = list(bootstrap_ci(stat(key), _strata(p), n_bootstrap, seed))
    return result, abstain, reason


def same_coverage_comparison(
    p: Predictions, accepted: np.ndarray, score: np.ndarray, n_bootstrap: int, seed: int
) -> dict:
    """Selective balanced accuracy of the gated policy vs a single score accepting the same
    number of images (its most confident ones), paired bootstrap over the labelled rows."""
    m = p.labelled
    y, pred, acc, s = p.y[m], p.pred[m], np.asarray(accepted)[m], np.asarray(score)[m]
    k = int(acc.sum())
    if k == 0:
        return {"coverage": 0.0, "note": "the gated policy accepts no labelled image"}

    def top_k(i: np.ndarray) -> np.ndarray:
        kk = max(1, round(k * len(i) / len(y)))
        return i[np.argsort(-s[i], kind="stable")[:kk]]

    def gated(i: np.ndarray) -> float:
        j = i[acc[i]]
        return balanced_accuracy(y[j], pred[j]) if len(j) else np.nan

    def single(i: np.ndarray) -> float:
        j = top_k(i)
        return balanced_accuracy(y[j], pred[j])

    cmp = paired_bootstrap(gated, single, y, n_bootstrap, seed, "selective_balanced_accuracy")
    return {"coverage": k / len(y), **asdict(cmp)}
