"""Compare two `skinclf cv` results on the same folds: out-of-fold balanced accuracy of each
with a stratified-bootstrap 95 % interval, accuracy, macro-F1, per-class recall, AURC/AUGRC of
the maximum softmax probability, and a paired bootstrap over the out-of-fold images
(A - B with its interval and P(A > B)). `--offsets` compares both after their cross-fitted logit
offsets (cv_summary.json's `pooled_offsets`: each fold's offsets fitted on the other folds).
With `--external NAME` the two ensembles' predictions of that --test set (OUT/eval/NAME.csv)
are compared too.

    .venv/bin/python benchmarks/compare_cv.py runs/cv3-new runs/cv3-default \
        --external isic2018-test-dev --out benchmarks/results/cv3_new_vs_default.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from compare_predictions import summarise, write_comparison  # next to this script
from skinclf.contracts.predictions import Predictions, read_predictions, softmax
from skinclf.evaluate.offsets import cross_fitted

OOF = "oof_predictions.csv"
FOLDS = "folds.csv"


def check_same_folds(a: Path, b: Path) -> pd.DataFrame:
    """The folds both cross-validations share; SystemExit naming the first image they put in
    different folds (a paired comparison needs the same held-out images per fold)."""
    fa, fb = (pd.read_csv(p / FOLDS, dtype=str).set_index("image_id")["fold"] for p in (a, b))
    if set(fa.index) != set(fb.index):
        raise SystemExit(f"{a} and {b} cross-validate different images; compare on one dataset.")
    differs = fa != fb.loc[fa.index]
    if differs.any():
        image = differs[differs].index[0]
        raise SystemExit(
            f"{a} and {b} use different folds (image {image!r} is in fold {fa[image]} and "
            f"{fb[image]}); run both with the same --folds and seed."
        )
    return fa.reset_index()


def with_offsets(p: Predictions, folds: pd.DataFrame) -> Predictions:
    """`p` with cross-fitted logit offsets (each fold's fitted on the other folds)."""
    fold_of = dict(zip(folds["image_id"], folds["fold"], strict=True))
    logits = cross_fitted(p.logits, p.y, np.array([fold_of[i] for i in p.image_ids]))
    out = p.subset(np.arange(p.n))
    out.logits, out.probs, out.conf = logits, softmax(logits), {}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="A `skinclf cv` output folder.")
    parser.add_argument("b", type=Path, help="Another, on the same folds.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--offsets", action="store_true", help="Both with cross-fitted offsets.")
    parser.add_argument("--external", help="Also compare the ensembles on OUT/eval/NAME.csv.")
    args = parser.parse_args()
    folds = check_same_folds(args.a, args.b)
    a, b = (read_predictions(p / OOF) for p in (args.a, args.b))
    if args.offsets:
        a, b = with_offsets(a, folds), with_offsets(b, folds)
    result = write_comparison(
        a, b, summarise(args.a / OOF, a), summarise(args.b / OOF, b), args.out
    )
    result["offsets"] = args.offsets
    if args.external:
        files = [p / "eval" / f"{args.external}.csv" for p in (args.a, args.b)]
        ea, eb = (read_predictions(f) for f in files)
        external = write_comparison(
            ea, eb, summarise(files[0], ea), summarise(files[1], eb), args.out
        )
        result = {"out_of_fold": result, args.external: external}
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
