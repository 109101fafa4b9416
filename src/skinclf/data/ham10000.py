"""HAM10000: `HAM10000_metadata.csv` (or the tab-separated download) + images by `image_id`.

Images are found anywhere under the folder: the Kaggle layout (`HAM10000_images_part_1/`,
`HAM10000_images_part_2/`), unzipped Dataverse archives, or one `HAM10000_images/` folder.
Group = `lesion_id` (the full set has several images per lesion).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from skinclf.classes import CLASSES
from skinclf.data.formats import (
    LoadResult,
    duplicate_problems,
    empty_to_missing,
    error,
    extra_image_problems,
    find_metadata,
    image_index,
    label_problem,
    make_table,
    missing_image_problem,
    raise_for_problems,
    read_csv_file,
    warning,
)

DATASET = "ham10000"
METADATA_NAME = "HAM10000_metadata"
COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
REQUIRED: tuple[str, ...] = ("lesion_id", "image_id", "dx")


def find_ham10000_metadata(root: Path) -> list[Path]:
    """HAM10000_metadata files (.csv, .tab, .txt or none) at or below root, shallowest first."""
    if root.is_file():
        return [root]
    return find_metadata(root, [METADATA_NAME], prefix=True)


def read_ham10000(root: Path) -> LoadResult:
    """Read HAM10000 at `root` (folder or metadata file), collecting every problem."""
    root = Path(root)
    files = find_ham10000_metadata(root)
    data_root = root.parent if root.is_file() else root
    result = LoadResult(make_table([], [], [], [], DATASET), DATASET, root)
    if not files:
        result.problems.append(
            error("missing-metadata", f"{root}: no HAM10000_metadata.csv found in this folder.")
        )
        return result
    meta = files[0]
    if len(files) > 1:
        others = ", ".join(str(p) for p in files[1:])
        result.problems.append(
            warning("several-metadata", f"{meta}: used this metadata file; ignored {others}.")
        )
    df, problems = read_csv_file(meta, REQUIRED, "HAM10000 metadata")
    result.problems += problems
    if df is None:
        return result
    index, problems = image_index(data_root, "stem")
    result.problems += problems

    labels, paths, groups = [], [], []
    for i, (image_id, dx, lesion_id) in enumerate(
        zip(df.image_id, df.dx, df.lesion_id, strict=True)
    ):
        label = dx.lower()
        if label not in CLASSES:
            result.problems.append(label_problem(meta, i, "dx", dx))
        if not image_id:
            result.problems.append(error("missing-id", f"{meta} line {i + 2}: empty image_id."))
        path = index.get(image_id)
        if path is None and image_id:
            result.problems.append(missing_image_problem(meta, i, "image_id", image_id, data_root))
        labels.append(label if label in CLASSES else "")
        paths.append(os.path.abspath(path) if path is not None else "")
        groups.append(lesion_id or image_id)
    result.problems += duplicate_problems(df.image_id, meta, "image_id")
    named = set(df.image_id)
    result.problems += extra_image_problems(
        (p for k, p in index.items() if k not in named and not k.endswith("_segmentation")), meta
    )

    own = empty_to_missing(df, numeric=("age",))
    result.table = make_table(list(df.image_id), paths, labels, groups, DATASET, own=own)
    return result


def load_ham10000(root: Path) -> pd.DataFrame:
    """The dataset table of HAM10000 at `root`; DataError listing the problems if unusable."""
    return raise_for_problems(read_ham10000(root))
