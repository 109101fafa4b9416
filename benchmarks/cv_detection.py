"""OOD detection by cross-validation ensembles: how well each confidence score separates the
images of an in-distribution set from those of a shifted set, both predicted by the same
ensemble (its OUT/eval/<set>.csv, as `skinclf cv --test/--ood` or `skinclf cv-ensemble` write
them). In-distribution rows (labelled, not semantic OOD) are positive; every row of the shifted
set is negative. Per score: AUROC with a stratified-bootstrap 95 % interval (the two sets
resampled apart), FPR at 95 % TPR, and, for every folder after the first, the paired-bootstrap
difference of its AUROC against the first folder's on the same images.

    .venv/bin/python benchmarks/cv_detection.py runs/cv3-default runs/cv3-pair \
        --id isic2018-test-dev --ood pad-ufes-20-300 --out benchmarks/results/cv3_detection.json
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.evaluate.bootstrap import bootstrap_ci, paired_bootstrap
from skinclf.evaluate.ood import detection_auroc, fpr_at_tpr


def scores_of(path: Path, id_set: str, ood_set: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each score's values over the ID rows then the OOD rows, and the rows' image ids."""
    p_id = read_predictions(path / "eval" / f"{id_set}.csv")
    p_id = p_id.subset(p_id.labelled)
    p_ood: Predictions = read_predictions(path / "eval" / f"{ood_set}.csv", require_labels=False)
    shared = sorted(set(p_id.conf) & set(p_ood.conf))
    values = {s: np.r_[p_id.conf[s], p_ood.conf[s]] for s in shared}
    ids = [f"id:{i}" for i in p_id.image_ids] + [f"ood:{i}" for i in p_ood.image_ids]
    return values, ids


def rank_auroc(values: np.ndarray, positive: np.ndarray) -> float:
    """AUROC by the Mann-Whitney statistic on average ranks (ties count half): the value of
    sklearn's roc_auc_score, about 20 times faster on a few hundred rows (the bootstraps)."""
    ranks = rankdata(values)
    n_pos = int(positive.sum())
    n_neg = len(values) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_of(values: np.ndarray, is_id: np.ndarray):
    return lambda rows: rank_auroc(values[rows], is_id[rows])


def folder_entry(values: dict[str, np.ndarray], is_id: np.ndarray, n: int, seed: int) -> dict:
    out = {}
    for score, v in values.items():
        if not np.isfinite(v).all():
            continue
        out[score] = {
            "auroc": detection_auroc(v[is_id], v[~is_id]),
            "auroc_ci95": bootstrap_ci(auroc_of(v, is_id), is_id, n, seed),
            "fpr_at_95_tpr": fpr_at_tpr(v[is_id], v[~is_id]),
        }
    return out


def aligned(folder: Path, id_set: str, ood_set: str, ids: list[str]) -> dict[str, np.ndarray]:
    """`folder`'s score values in the row order `ids`; SystemExit when it predicted others."""
    values, own = scores_of(folder, id_set, ood_set)
    order = {image: k for k, image in enumerate(own)}
    if sorted(order) != sorted(ids):
        raise SystemExit(f"{folder} predicted other images than the first folder.")
    return {s: v[[order[i] for i in ids]] for s, v in values.items()}


def paired(values: dict, first: dict, is_id: np.ndarray, n: int, seed: int) -> dict:
    """AUROC of each score shared with the first folder, paired against it."""
    return {
        s: vars(
            paired_bootstrap(auroc_of(v, is_id), auroc_of(first[s], is_id), is_id, n, seed, "auroc")
        )  # fmt: skip
        for s, v in values.items()
        if s in first and np.isfinite(v).all()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="cv or cv-ensemble folders.")
    parser.add_argument("--id", dest="id_set", required=True, help="eval/<set>.csv: positives.")
    parser.add_argument("--ood", dest="ood_set", required=True, help="eval/<set>.csv: negatives.")
    parser.add_argument("--out", type=Path, required=True, help="Results JSON.")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    first, ids = scores_of(args.folders[0], args.id_set, args.ood_set)
    is_id = np.array([i.startswith("id:") for i in ids])
    result: dict = {
        "benchmark": "cv_detection",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "id": args.id_set,
        "ood": args.ood_set,
        "n_id": int(is_id.sum()),
        "n_ood": int((~is_id).sum()),
        "bootstrap": args.bootstrap,
        "folders": {},
    }
    for k, folder in enumerate(args.folders):
        values = first if k == 0 else aligned(folder, args.id_set, args.ood_set, ids)
        entry = {"scores": folder_entry(values, is_id, args.bootstrap, args.seed)}
        if k > 0:
            entry["vs_first"] = paired(values, first, is_id, args.bootstrap, args.seed)
        result["folders"][str(folder)] = entry
        main_scores = [s for s in ("msp", "energy", "knn", "mahalanobis") if s in entry["scores"]]
        print(folder, ", ".join(f"{s} {entry['scores'][s]['auroc']:.3f}" for s in main_scores))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
