"""PAD-UFES-20: `metadata.csv` + PNG images under `images/` or `images/imgs_part_{1,2,3}/`.

`diagnostic` maps to the HAM10000 classes (ACK->akiec, BCC->bcc, MEL->mel, NEV->nv,
SEK->bkl); SCC has no HAM10000 class: empty label, `semantic_ood` true. Group = `patient_id`.
The official columns keep their spelling (`fitspatrick`, with empty values).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from skinclf.classes import PAD_UFES_SEMANTIC_OOD, PAD_UFES_TO_HAM
from skinclf.data.formats import (
    LoadResult,
    duplicate_problems,
    empty_to_missing,
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

DATASET = "pad-ufes-20"
METADATA_NAME = "metadata.csv"
REQUIRED: tuple[str, ...] = ("patient_id", "img_id", "diagnostic")
NUMERIC: tuple[str, ...] = ("lesion_id", "age", "fitspatrick", "diameter_1", "diameter_2")
DIAGNOSTICS: tuple[str, ...] = tuple(sorted({*PAD_UFES_TO_HAM, *PAD_UFES_SEMANTIC_OOD}))


def read_pad_ufes(root: Path) -> LoadResult:
    """Read PAD-UFES-20 at `root` (folder or metadata.csv), collecting every problem."""
    root = Path(root)
    data_root = root.parent if root.is_file() else root
    files = [root] if root.is_file() else find_metadata(root, [METADATA_NAME])
    result = LoadResult(make_table([], [], [], [], DATASET), DATASET, root)
    if not files:
        result.problems.append(error("missing-metadata", f"{root}: no metadata.csv found."))
        return result
    meta = files[0]
    df, problems = read_csv_file(meta, REQUIRED, "PAD-UFES-20 metadata")
    result.problems += problems
    if df is None:
        return result
    index, problems = image_index(data_root, "name")
    result.problems += problems

    labels, ood, paths = [], [], []
    for i, (img_id, diagnostic) in enumerate(zip(df.img_id, df.diagnostic, strict=True)):
        code = diagnostic.upper()
        if code not in DIAGNOSTICS:
            result.problems.append(
                error(
                    "unknown-label",
                    f"{meta} line {line_no(i)}: diagnostic {diagnostic or '(empty)'!r} is not a "
                    f"PAD-UFES-20 diagnostic; allowed: {', '.join(DIAGNOSTICS)}.",
                )
            )
        labels.append(PAD_UFES_TO_HAM.get(code, ""))
        ood.append(code in PAD_UFES_SEMANTIC_OOD)
        path = index.get(img_id)
        if path is None:
            result.problems.append(missing_image_problem(meta, i, "img_id", img_id, data_root))
        paths.append(os.path.abspath(path) if path is not None else "")
    result.problems += duplicate_problems(df.img_id, meta, "img_id")
    named = set(df.img_id)
    result.problems += extra_image_problems(
        (p for name, p in index.items() if name not in named), meta
    )
    groups = [p or i for p, i in zip(df.patient_id, df.img_id, strict=True)]
    own = empty_to_missing(df, numeric=NUMERIC)
    if "lesion_id" in own.columns and (own["lesion_id"].dropna() % 1 == 0).all():
        own["lesion_id"] = own["lesion_id"].astype("Int64")
    result.table = make_table(list(df.img_id), paths, labels, groups, DATASET, ood, own)
    return result


def load_pad_ufes(root: Path) -> pd.DataFrame:
    """The dataset table of PAD-UFES-20 at `root`; DataError listing the problems if unusable."""
    return raise_for_problems(read_pad_ufes(root))
