"""The dataset table every loader returns (DESIGN.md)."""

from __future__ import annotations

import pandas as pd

# Required columns, in this order; a loader appends the dataset's own columns after them.
TABLE_COLUMNS: tuple[str, ...] = ("image_id", "path", "label", "group", "dataset", "semantic_ood")
DATASET_NAMES: tuple[str, ...] = ("ham10000", "pad-ufes-20", "isic2018", "folder", "csv")


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in TABLE_COLUMNS}).astype(
        {"semantic_ood": bool}
    )
