"""What a gated selective classifier did on a set of images: coverage, accepted (balanced)
accuracy, silent failures, semantic OOD abstention and the reasons (`unfamiliar`: the OOD gate,
`uncertain`: the confidence gate). The gates themselves are fitted by `skinclf.policy.gates`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from skinclf.contracts.selective import UNCERTAIN, UNFAMILIAR
from skinclf.evaluate.metrics import accuracy, balanced_accuracy
from skinclf.policy.gates import silent_failure_rate


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
    return PolicyOutcome(
        n=len(accepted),
        coverage=float(accepted.mean()) if len(accepted) else 0.0,
        accepted_accuracy=accuracy(y[acc_l], pred[acc_l]) if acc_l.any() else None,
        accepted_balanced_accuracy=(
            balanced_accuracy(y[acc_l], pred[acc_l]) if acc_l.any() else None
        ),
        silent_failure_rate=silent_failure_rate(abstain, y, pred, labelled, semantic_ood),
        semantic_ood_abstention=(
            float(1.0 - accepted[semantic_ood].mean()) if semantic_ood.any() else None
        ),
        reasons={
            "accepted": int(accepted.sum()),
            UNFAMILIAR: int((reason == UNFAMILIAR).sum()),
            UNCERTAIN: int((reason == UNCERTAIN).sum()),
        },
    )
