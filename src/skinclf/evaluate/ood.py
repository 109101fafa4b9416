"""Out-of-distribution metrics: detection of shifted images, and semantic OOD (e.g. SCC).

Detection treats in-distribution test images as the positive class: a good confidence score
is higher on them than on out-of-distribution images. Detection metrics are read off
scikit-learn's ROC; the semantic-OOD counts at a threshold are own code (no library has them).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def fpr_at_tpr(conf_id: np.ndarray, conf_ood: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD samples accepted at the highest threshold that keeps >= `tpr` of ID samples.

    Accept conf >= threshold; ties are accepted together, so the achieved TPR may exceed `tpr`.
    At least one ID sample is kept. Read off sklearn `roc_curve` with every threshold kept.
    """
    n_id = len(conf_id)
    if n_id == 0:
        raise ValueError("fpr_at_tpr needs at least one in-distribution sample")
    labels = np.r_[np.ones(n_id), np.zeros(len(conf_ood))]
    scores = np.r_[np.asarray(conf_id, dtype=np.float64), np.asarray(conf_ood, dtype=np.float64)]
    fpr, tpr_curve, _ = roc_curve(labels, scores, drop_intermediate=False)
    kept = np.rint(tpr_curve * n_id)  # ID samples accepted at each threshold, highest first
    return float(fpr[np.argmax(kept >= max(1.0, tpr * n_id - 1e-9))])


def detection_auroc(conf_id: np.ndarray, conf_ood: np.ndarray) -> float:
    """AUROC of confidence separating ID (positive) from OOD samples."""
    conf_id, conf_ood = np.asarray(conf_id), np.asarray(conf_ood)
    labels = np.r_[np.ones(len(conf_id)), np.zeros(len(conf_ood))]
    return float(roc_auc_score(labels, np.r_[conf_id, conf_ood]))


def ood_detection(conf_id: np.ndarray, conf_ood: np.ndarray) -> dict[str, float]:
    """`auroc` and `fpr_at_95_tpr` of one score."""
    return {
        "auroc": detection_auroc(conf_id, conf_ood),
        "fpr_at_95_tpr": fpr_at_tpr(conf_id, conf_ood, 0.95),
    }


def semantic_ood_at_threshold(
    conf_known: np.ndarray,
    residuals_known: np.ndarray,
    conf_semantic: np.ndarray,
    threshold: float | None,
) -> dict:
    """Semantic OOD samples (no valid class) counted as "should abstain" at a threshold.

    Returns the abstention rate on the semantic OOD samples and, over known + semantic samples
    together, the coverage and the selective risk when every accepted semantic sample counts
    as an error. `threshold` None means abstain on everything.
    """
    conf_known = np.asarray(conf_known, dtype=np.float64)
    conf_semantic = np.asarray(conf_semantic, dtype=np.float64)
    residuals_known = np.asarray(residuals_known, dtype=np.float64)
    if threshold is None:
        acc_known = np.zeros(len(conf_known), bool)
        acc_sem = np.zeros(len(conf_semantic), bool)
    else:
        acc_known, acc_sem = conf_known >= threshold, conf_semantic >= threshold
    n_acc = int(acc_known.sum() + acc_sem.sum())
    n_all = len(conf_known) + len(conf_semantic)
    errors = residuals_known[acc_known].sum() + acc_sem.sum()
    return {
        "n": len(conf_semantic),
        "abstention_rate": float(1.0 - acc_sem.mean()) if len(conf_semantic) else None,
        "coverage_with_semantic_ood": n_acc / n_all if n_all else None,
        "risk_with_semantic_ood_as_errors": float(errors / n_acc) if n_acc else None,
    }
