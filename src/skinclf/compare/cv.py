"""Two cross-validations on the same folds, compared on their out-of-fold predictions (and,
with `external`, on an external set both ensembles predicted).

While either cv is unfinished (no oof_predictions.csv), the comparison rests on the held-out
images of the folds both have finished (FOLD/val_predictions.csv, or a finished cv's
out-of-fold rows of those folds), and the external set is compared fold model by fold model
(FOLD/eval/NAME.csv). The result names the folds it rests on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from skinclf.compare.summary import compare_files, paired, summarise
from skinclf.contracts.cv_folder import FOLD_PREFIX, HELD_OUT_FILE, OOF_FILE, same_folds
from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.contracts.scores import with_logits
from skinclf.errors import DataError
from skinclf.evaluate.offsets import cross_fitted


def with_offsets(p: Predictions, folds: pd.DataFrame) -> Predictions:
    """`p` with cross-fitted logit offsets (each fold's fitted on the other folds)."""
    fold_of = dict(zip(folds["image_id"], folds["fold"], strict=True))
    logits = cross_fitted(p.logits, p.y, np.array([fold_of[i] for i in p.image_ids]))
    return with_logits(p, logits, [])  # (no confidence column: the summary takes the MSP)


def finished_folds(cv: Path, folds: pd.DataFrame) -> list[str]:
    """The folds of `cv` (its folds.csv: `folds`) whose held-out predictions exist (all of
    them once it has finished)."""
    if (cv / OOF_FILE).is_file():
        return sorted(f"{FOLD_PREFIX}{k}" for k in set(folds["fold"]) if k.isdigit())
    return sorted(p.parent.name for p in cv.glob(f"{FOLD_PREFIX}*/{HELD_OUT_FILE}"))


def shared_folds(a: Path, b: Path, folds: pd.DataFrame) -> list[str] | None:
    """None when both cvs have finished; else the folds both have finished (DataError if
    none)."""
    if (a / OOF_FILE).is_file() and (b / OOF_FILE).is_file():
        return None
    shared = sorted(set(finished_folds(a, folds)) & set(finished_folds(b, folds)))
    if not shared:
        raise DataError(f"{a} and {b} have no finished fold in common; nothing to compare yet.")
    return shared


def stacked(files: list[Path]) -> Predictions:
    """Several predictions files as one (rows in file order; the conf columns all share)."""
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
    """The out-of-fold predictions of `cv` (its folds.csv: `folds`), or the held-out ones of
    the folds `only` (from its out-of-fold file when it has finished, else the folds' files)."""
    if (cv / OOF_FILE).is_file():
        oof = read_predictions(cv / OOF_FILE)
        if only is None:
            return cv / OOF_FILE, oof
        fold_of = folds.set_index("image_id")["fold"]
        held = np.isin(FOLD_PREFIX + fold_of.loc[oof.image_ids].to_numpy(), only)
        return cv / OOF_FILE, oof.subset(held)
    return cv, stacked([cv / fold / HELD_OUT_FILE for fold in only or []])


def external_file(folder: Path, name: str) -> Path:
    """FOLDER/eval/NAME.csv, the predictions of the --test set NAME; DataError if missing."""
    file = folder / "eval" / f"{name}.csv"
    if not file.is_file():
        raise DataError(
            f"{file} is missing: {folder} has no predictions of the set {name!r} (give it to "
            "`skinclf cv`/`skinclf run` with --test, or predict it with `skinclf predict`)."
        )
    return file


def compare_cvs(
    a: Path,
    b: Path,
    offsets: bool = False,
    external: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """A against B out of fold (both with cross-fitted logit offsets when `offsets`), and on
    the external set `external` (each ensemble with its own offsets, as its eval file holds
    them; fold by fold while either cv is unfinished). DataError when the folds differ."""
    folds = same_folds(a, b)
    partial = shared_folds(a, b, folds)
    (file_a, pa), (file_b, pb) = (out_of_fold(cv, folds, partial) for cv in (a, b))
    if offsets:
        pa, pb = with_offsets(pa, folds), with_offsets(pb, folds)
    result = paired(pa, pb, summarise(file_a, pa), summarise(file_b, pb), resamples, seed)
    result["offsets"] = offsets
    result["folds"] = partial or "all"
    if external is None:
        return result
    if partial:
        files = {fold: [external_file(cv / fold, external) for cv in (a, b)] for fold in partial}
        by_fold = {fold: compare_files(*pair, resamples, seed) for fold, pair in files.items()}
        return {"out_of_fold": result, f"{external}_by_fold": by_fold}
    ext = compare_files(external_file(a, external), external_file(b, external), resamples, seed)
    ext["offsets"] = "each ensemble's own, as its eval file holds them"
    return {"out_of_fold": result, external: ext}
