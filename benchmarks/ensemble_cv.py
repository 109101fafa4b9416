"""Several `skinclf cv` results on the same folds as one ensemble (recipes, backbones or
resolutions): their out-of-fold probabilities averaged image by image (each image still
predicted only by models that did not train on it), the logit offsets refitted on that, and the
ensembles' external predictions (each CV's OUT/eval/NAME.csv, its own offsets taken off first)
averaged the same way. OUT is laid out like a cv folder (folds.csv, oof_predictions.csv,
logit_offsets.json, eval/NAME.csv, cv_summary.json), so compare_cv.py compares it with any of
its members:

    .venv/bin/python benchmarks/ensemble_cv.py runs/cv3-default runs/cv3-sog --out runs/cv3-both
    .venv/bin/python benchmarks/compare_cv.py runs/cv3-both runs/cv3-default \
        --external isic2018-test-dev --out benchmarks/results/cv3_both_vs_default.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from compare_cv import FOLDS, OOF, check_same_folds  # next to this script
from skinclf.classes import CLASSES
from skinclf.contracts.predictions import Predictions, read_predictions, softmax, write_predictions
from skinclf.evaluate.crossval import out_of_fold_summary, set_summary
from skinclf.evaluate.offsets import (
    OFFSETS_FILE,
    apply_offsets,
    fit_logit_offsets,
    read_offsets,
    write_offsets,
)


def own_offsets(cv: Path) -> np.ndarray:
    """The offsets a cv added to its ensemble's predictions (zeros when it has none)."""
    path = cv / OFFSETS_FILE
    return read_offsets(path) if path.is_file() else np.zeros(len(CLASSES))


def mean_probabilities(members: list[Predictions]) -> np.ndarray:
    """The members' probabilities averaged row by row, aligned on the first one's image ids;
    SystemExit naming an image some member lacks."""
    first = members[0]
    total = np.zeros_like(first.probs)
    for p in members:
        row = {image: i for i, image in enumerate(p.image_ids)}
        missing = [image for image in first.image_ids if image not in row]
        if missing:
            raise SystemExit(f"{p.path} has no prediction of image {missing[0]!r}.")
        total += p.probs[[row[image] for image in first.image_ids]]
    return total / len(members)


def write_mean(path: Path, members: list[Predictions], logits: np.ndarray) -> Predictions:
    """A predictions file of the first member's rows with `logits`, read back."""
    first = members[0]
    write_predictions(path, first.image_ids, first.dataset, first.y, first.semantic_ood, logits)
    return read_predictions(path, require_labels=False)


def raw(p: Predictions, offsets: np.ndarray) -> Predictions:
    """`p` with `offsets` taken off its logits (probabilities recomputed)."""
    out = p.subset(np.arange(p.n))
    out.logits = apply_offsets(p.logits, -offsets)
    out.probs = softmax(out.logits)
    return out


def external_sets(cvs: list[Path]) -> list[str]:
    """The eval/NAME.csv names every cv has."""
    names = [{f.stem for f in (cv / "eval").glob("*.csv")} for cv in cvs]
    return sorted(set.intersection(*names))


def ensemble(cvs: list[Path], out: Path) -> dict:
    folds = check_same_folds(cvs[0], cvs[1])
    for cv in cvs[2:]:
        check_same_folds(cvs[0], cv)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cvs[0] / FOLDS, out / FOLDS)
    oof_members = [read_predictions(cv / OOF) for cv in cvs]
    oof = write_mean(out / OOF, oof_members, np.log(mean_probabilities(oof_members)))
    offsets = fit_logit_offsets(oof.logits, oof.y)
    write_offsets(out / OFFSETS_FILE, offsets, "out-of-fold predictions", oof.n)
    fold_of = dict(zip(folds["image_id"], folds["fold"], strict=True))
    summary = {
        "members": [str(cv) for cv in cvs],
        "out_of_fold": out_of_fold_summary(
            oof.logits, oof.y, np.array([fold_of[i] for i in oof.image_ids])
        ),
        "logit_offsets": dict(zip(CLASSES, offsets.tolist(), strict=True)),
        "ensemble": {},
    }
    for name in external_sets(cvs):
        files = [cv / "eval" / f"{name}.csv" for cv in cvs]
        members = [
            raw(read_predictions(f, require_labels=False), own_offsets(cv))
            for f, cv in zip(files, cvs, strict=True)
        ]
        logits = apply_offsets(np.log(mean_probabilities(members)), offsets)
        p = write_mean(out / "eval" / f"{name}.csv", members, logits)
        summary["ensemble"][name] = set_summary(p.logits, p.y, offsets)
    (out / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cvs", type=Path, nargs="+", help="`skinclf cv` folders, same folds.")
    parser.add_argument("--out", type=Path, required=True, help="The ensemble's folder.")
    args = parser.parse_args()
    if len(args.cvs) < 2:
        raise SystemExit("Give at least two cv folders to average.")
    summary = ensemble(args.cvs, args.out)
    pooled = summary["out_of_fold"]["pooled"]
    lo, hi = pooled["balanced_accuracy_ci95"]
    print(f"out-of-fold balanced accuracy {pooled['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]")
    for name, result in summary["ensemble"].items():
        r = result["no_offsets"]
        lo, hi = r["balanced_accuracy_ci95"]
        print(f"{name}: {r['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] (no offsets)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
