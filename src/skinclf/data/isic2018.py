"""ISIC 2018 Task 3 ground truth: one-hot `image,MEL,NV,BCC,AKIEC,BKL,DF,VASC` + image folder.

The official test set is `ISIC2018_Task3_Test_GroundTruth.csv` with images in
`ISIC2018_Task3_Test_Input/`; images are found by `image` anywhere under the folder.
One image per lesion is not guaranteed, but no lesion ids are published: group = image id.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from skinclf.data.formats import (
    LoadResult,
    duplicate_problems,
    error,
    extra_image_problems,
    find_metadata,
    image_index,
    line_no,
    make_table,
    missing_image_problem,
    raise_for_problems,
    read_csv_file,
)

DATASET = "isic2018"
ONE_HOT: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
REQUIRED: tuple[str, ...] = ("image", *ONE_HOT)


def find_ground_truth(root: Path) -> list[Path]:
    """CSV files at or below root whose header is the ISIC 2018 Task 3 one-hot header."""
    if root.is_file():
        return [root]
    found = []
    for p in find_metadata(root, ["ISIC2018_Task3"], prefix=True):
        if p.suffix.lower() == ".csv" and "groundtruth" in p.name.lower():
            found.append(p)
    if not found:  # any top-level CSV with the one-hot header
        for p in sorted(root.glob("*.csv")):
            df, _ = read_csv_file(p, REQUIRED, "ground truth")
            if df is not None:
                found.append(p)
    return found


def _one_hot_label(row: pd.Series) -> tuple[str, str | None]:
    """(label, reason it is not valid one-hot or None)."""
    try:
        values = [float(row[c]) for c in ONE_HOT]
    except ValueError:
        return "", "has a value that is not a number"
    if any(v not in (0.0, 1.0) for v in values):
        return "", "has a value other than 0 or 1"
    if sum(values) != 1.0:
        return "", f"has {int(sum(values))} ones instead of exactly one"
    return ONE_HOT[values.index(1.0)].lower(), None


def read_isic2018(root: Path) -> LoadResult:
    """Read an ISIC 2018 Task 3 ground-truth set at `root` (folder or CSV), all problems."""
    root = Path(root)
    data_root = root.parent if root.is_file() else root
    result = LoadResult(make_table([], [], [], [], DATASET), DATASET, root)
    files = find_ground_truth(root)
    if not files:
        result.problems.append(
            error(
                "missing-metadata",
                f"{root}: no ISIC 2018 ground-truth CSV (image,{','.join(ONE_HOT)}) found.",
            )
        )
        return result
    if len(files) > 1:
        result.problems.append(
            error(
                "several-metadata",
                f"{root}: several ground-truth CSVs ({', '.join(p.name for p in files)}); give "
                "the one to use as the path.",
            )
        )
        return result
    meta = files[0]
    df, problems = read_csv_file(meta, REQUIRED, "ISIC 2018 ground truth")
    result.problems += problems
    if df is None:
        return result
    index, problems = image_index(data_root, "stem")
    result.problems += problems

    labels, paths = [], []
    for i, row in df.iterrows():
        label, reason = _one_hot_label(row)
        if reason is not None:
            values = ",".join(row[c] for c in ONE_HOT)
            result.problems.append(
                error(
                    "unknown-label",
                    f"{meta} line {line_no(int(i))}: one-hot label {values!r} {reason}.",
                )
            )
        labels.append(label)
        path = index.get(row["image"])
        if path is None:
            result.problems.append(
                missing_image_problem(meta, int(i), "image", row["image"], data_root)
            )
        paths.append(os.path.abspath(path) if path is not None else "")
    result.problems += duplicate_problems(df["image"], meta, "image")
    named = set(df["image"])
    result.problems += extra_image_problems(
        (p for k, p in index.items() if k not in named and not k.endswith("_segmentation")), meta
    )
    own = df.copy()
    for c in ONE_HOT:
        own[c] = pd.to_numeric(own[c], errors="coerce")
    ids = list(df["image"])
    result.table = make_table(ids, paths, labels, ids, DATASET, own=own)
    return result


def load_isic2018(root: Path) -> pd.DataFrame:
    """The dataset table of an ISIC 2018 ground-truth set; DataError listing problems."""
    return raise_for_problems(read_isic2018(root))
