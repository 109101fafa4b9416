"""The cross-validation folder as a model (DESIGN.md's run folder): which trained runs a
`skinclf cv` folder, or a `skinclf cv-ensemble` folder of several cvs, stands for.

A `skinclf cv` folder holds `folds.csv` and one run folder per fold (`fold_<k>/`). A
`skinclf cv-ensemble` folder holds `folds.csv` too and, instead of fold runs, `cv_members.json`
naming its member cv folders (relative to itself); its runs are every member's fold runs, in the
order the members are named. `skinclf predict` and `skinclf export` read both the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skinclf.contracts.run_folder import InFolder
from skinclf.errors import DataError

FOLDS_FILE = "folds.csv"  # marks a cross-validation folder
MEMBERS_FILE = "cv_members.json"  # marks an ensemble of cross-validations
OOF_FILE = "oof_predictions.csv"  # every image by the fold model that did not train on it
SUMMARY_FILE = "cv_summary.json"
HELD_OUT_FILE = "val_predictions.csv"  # in each fold run: its held-out fold, predicted by it
CALIB_SET = "calib"  # folds.csv's name for the calibration part (`skinclf cv --calib`)
CHECKPOINT = Path("checkpoints") / "best.ckpt"


FOLD_PREFIX = "fold_"  # fold_<k>/: fold k's run folder


@dataclass(frozen=True)
class CvFolder:
    """The files of a `skinclf cv` (or `cv-ensemble`) folder, named once: the folds, the fold
    runs and their splits, the out-of-fold predictions, the summary, an ensemble's members.
    Its run state and eval/ are a `skinclf run` output's (`contracts.run_folder.RunOutput`)."""

    path: Path
    folds = InFolder(FOLDS_FILE)
    members = InFolder(MEMBERS_FILE)
    oof = InFolder(OOF_FILE)
    summary = InFolder(SUMMARY_FILE)

    def fold(self, k: int) -> Path:
        """Fold k's run folder (trained on the other folds)."""
        return self.path / f"{FOLD_PREFIX}{k}"

    def fold_split(self, k: int) -> Path:
        """Fold k's split.csv (train: the other folds; val: fold k), written before training."""
        return self.path / "splits" / f"{FOLD_PREFIX}{k}.csv"


def is_cv_folder(path: Path | str) -> bool:
    """Whether `path` is a `skinclf cv` or `skinclf cv-ensemble` folder."""
    return CvFolder(Path(path)).folds.is_file()


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def fold_folders(path: Path | str) -> list[Path]:
    """The fold_* folders of `path`, in fold order (fold_2 before fold_10)."""
    return sorted((p for p in Path(path).glob(f"{FOLD_PREFIX}*") if p.is_dir()), key=_natural)


def member_cvs(path: Path | str) -> list[Path]:
    """The member cv folders of a `skinclf cv-ensemble` folder ([] for any other folder);
    DataError naming a member that is missing or is itself an ensemble."""
    path = Path(path)
    file = CvFolder(path).members
    if not file.is_file():
        return []
    try:
        names = json.loads(file.read_text(encoding="utf-8"))["members"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: is not a readable list of member cv folders ({exc}).") from None
    members = [(path / name).resolve() for name in names]
    for member in members:
        if not is_cv_folder(member):
            raise DataError(f"{file} names {member}, which is not a cross-validation folder.")
        if CvFolder(member).members.is_file():
            raise DataError(f"{file} names {member}, itself an ensemble: name its members.")
    return members


def cv_runs(path: Path | str) -> list[Path]:
    """The trained runs a cross-validation folder stands for: its fold runs, or each member
    cv's fold runs for an ensemble of cvs. DataError naming the first unfinished fold."""
    members = member_cvs(path)
    runs = [r for m in members for r in fold_folders(m)] if members else fold_folders(path)
    if not runs:
        raise DataError(f"{path} has no fold_<k>/ run folders: finish it with `skinclf cv`.")
    unfinished = [r for r in runs if not (r / CHECKPOINT).is_file()]
    if unfinished:
        raise DataError(
            f"{path}: its folds are not all trained ({unfinished[0]} has no "
            f"{CHECKPOINT.as_posix()}); finish them with `skinclf cv` first."
        )
    return runs


def same_folds(a: Path, b: Path) -> pd.DataFrame:
    """The folds (image_id, fold) two cross-validations share; DataError naming the first
    image they put in different folds."""
    fa, fb = (
        pd.read_csv(CvFolder(p).folds, dtype=str).set_index("image_id")["fold"] for p in (a, b)
    )
    if set(fa.index) != set(fb.index):
        raise DataError(f"{a} and {b} cross-validate different images; use one dataset.")
    differs = fa != fb.loc[fa.index]
    if differs.any():
        image = differs[differs].index[0]
        raise DataError(
            f"{a} and {b} use different folds (image {image!r} is in fold {fa[image]} and "
            f"{fb[image]}); run both with the same --folds and seed."
        )
    return fa.reset_index()
