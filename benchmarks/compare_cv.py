"""Compare two `skinclf cv` results on the same folds: out-of-fold balanced accuracy of each
with a stratified-bootstrap 95 % interval, accuracy, macro-F1, per-class recall, AURC/AUGRC of
the maximum softmax probability, and a paired bootstrap over the out-of-fold images
(A - B with its interval and P(A > B)). `--offsets` compares both after their cross-fitted logit
offsets (cv_summary.json's `pooled_offsets`: each fold's offsets fitted on the other folds).
With `--external NAME` the two ensembles' predictions of that --test set (OUT/eval/NAME.csv,
each with its cv's logit offsets, whatever `--offsets` says) are compared too. P(A > B) is
P(A better): pass the candidate as A. `--resamples 10000` for a decision near a threshold.

While either cv is unfinished (no oof_predictions.csv), the comparison is on the held-out
images of the folds both have finished (FOLD/val_predictions.csv; a finished cv's, or a kept
copy's, from its oof_predictions.csv), and `--external` compares each such fold model of A
with the same fold's model of B (FOLD/eval/NAME.csv, written and kept by cv_result.py). The
JSON names the folds it rests on.

    .venv/bin/python benchmarks/compare_cv.py runs/cv3-new runs/cv3-default \
        --external isic2018-test-dev --out benchmarks/results/cv3_new_vs_default.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from compare_predictions import RESAMPLES_HELP, summarise, write_comparison  # next to this script
from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.contracts.scores import with_logits
from skinclf.errors import DataError
from skinclf.evaluate.offsets import cross_fitted
from skinclf.pipeline.cv import HELD_OUT_FILE
from skinclf.pipeline.cv import OOF_FILE as OOF
from skinclf.pipeline.cv_ensemble import same_folds


def check_same_folds(a: Path, b: Path) -> pd.DataFrame:
    """The folds both cross-validations share; SystemExit naming the first image they put in
    different folds (a paired comparison needs the same held-out images per fold)."""
    try:
        return same_folds(a, b)
    except DataError as exc:
        raise SystemExit(str(exc)) from None


def with_offsets(p: Predictions, folds: pd.DataFrame) -> Predictions:
    """`p` with cross-fitted logit offsets (each fold's fitted on the other folds)."""
    fold_of = dict(zip(folds["image_id"], folds["fold"], strict=True))
    logits = cross_fitted(p.logits, p.y, np.array([fold_of[i] for i in p.image_ids]))
    return with_logits(p, logits, [])  # (no confidence column: summarise takes the MSP)


def finished_folds(cv: Path, folds: pd.DataFrame) -> list[str]:
    """The folds of `cv` (its folds.csv: `folds`) whose held-out predictions exist (all of them
    once it has finished)."""
    if (cv / OOF).is_file():
        return sorted(f"fold_{k}" for k in set(folds["fold"]) if k.isdigit())
    return sorted(p.parent.name for p in cv.glob(f"fold_*/{HELD_OUT_FILE}"))


def shared_folds(a: Path, b: Path, folds: pd.DataFrame) -> list[str] | None:
    """None when both cvs have finished; else the folds both have finished (SystemExit if none)."""
    if (a / OOF).is_file() and (b / OOF).is_file():
        return None
    shared = sorted(set(finished_folds(a, folds)) & set(finished_folds(b, folds)))
    if not shared:
        raise SystemExit(f"{a} and {b} have no finished fold in common; nothing to compare.")
    return shared


def stacked(files: list[Path]) -> Predictions:
    """Several predictions files as one (rows in file order; conf columns all of them share)."""
    parts = [read_predictions(f) for f in files]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    shared = set.intersection(*(set(p.conf) for p in parts))
    return Predictions(
        image_ids=cat("image_ids"), dataset=cat("dataset"), y=cat("y"),
        semantic_ood=cat("semantic_ood"), logits=cat("logits"), probs=cat("probs"),
        conf={k: np.concatenate([p.conf[k] for p in parts]) for k in sorted(shared)},
        path=files[0].parent.parent,
    )  # fmt: skip


def out_of_fold(cv: Path, folds: pd.DataFrame, only: list[str] | None) -> tuple[Path, Predictions]:
    """The out-of-fold predictions of `cv` (its folds.csv: `folds`), or the held-out ones of the
    folds `only` (from its out-of-fold file when it has finished, else from the folds' files)."""
    if (cv / OOF).is_file():
        oof = read_predictions(cv / OOF)
        if only is None:
            return cv / OOF, oof
        fold_of = folds.set_index("image_id")["fold"]
        held = np.isin("fold_" + fold_of.loc[oof.image_ids].to_numpy(), only)
        return cv / OOF, oof.subset(held)
    return cv, stacked([cv / fold / HELD_OUT_FILE for fold in only or []])


def compare_files(file_a: Path, file_b: Path, out: Path, resamples: int = 1000) -> dict:
    """Two predictions files of the same images, compared (SystemExit naming a missing one)."""
    for f in (file_a, file_b):
        if not f.is_file():
            raise SystemExit(f"{f} is missing; run cv_result.py --external on its cv first.")
    a, b = read_predictions(file_a), read_predictions(file_b)
    return write_comparison(a, b, summarise(file_a, a), summarise(file_b, b), out, resamples)


def external_by_fold(a: Path, b: Path, folds: list[str], name: str, out: Path) -> dict:
    """Fold k of A against fold k of B on the external set NAME, for each shared fold."""
    return {
        f: compare_files(*(cv / f / "eval" / f"{name}.csv" for cv in (a, b)), out) for f in folds
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="A `skinclf cv` output folder.")
    parser.add_argument("b", type=Path, help="Another, on the same folds.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--offsets", action="store_true", help="Both with cross-fitted offsets.")
    parser.add_argument("--external", help="Also compare the ensembles on OUT/eval/NAME.csv.")
    parser.add_argument("--resamples", type=int, default=1000, help=RESAMPLES_HELP)
    args = parser.parse_args()
    folds = check_same_folds(args.a, args.b)
    partial = shared_folds(args.a, args.b, folds)
    (file_a, a), (file_b, b) = (out_of_fold(p, folds, partial) for p in (args.a, args.b))
    if args.offsets:
        a, b = with_offsets(a, folds), with_offsets(b, folds)
    n = args.resamples
    result = write_comparison(a, b, summarise(file_a, a), summarise(file_b, b), args.out, n)
    result["offsets"] = args.offsets
    result["folds"] = partial or "all"
    if args.external and partial:
        by_fold = external_by_fold(args.a, args.b, partial, args.external, args.out)
        result = {"out_of_fold": result, f"{args.external}_by_fold": by_fold}
    elif args.external:
        files = (p / "eval" / f"{args.external}.csv" for p in (args.a, args.b))
        external = compare_files(*files, args.out, n)
        external["offsets"] = "each ensemble's own, as its eval file holds them"
        result = {"out_of_fold": result, args.external: external}
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
