"""Grouped, stratified train/val/test[/calib] splits and the split file of DESIGN.md.

How rows are stratified: each row's stratum is its class; rows with ``semantic_ood`` true form
their own stratum ``"ood"`` and rows with an empty label (and no OOD flag) the stratum
``"unlabelled"``. So OOD rows (PAD-UFES-20 SCC) are spread over the splits in the same
proportions as everything else, and a later step decides whether to use or drop them.

Groups (``group``: ``lesion_id`` / ``patient_id``) never straddle two splits. Rows with an empty
group are their own group. Groups are assigned greedily, largest first (ties in a seeded random
order), each to the split whose per-class counts are furthest below their targets, which keeps
every split's class shares within a fraction of a point of the whole on HAM10000-sized data;
of a few seeded random orders the one with the smallest deviation is kept (helps small data).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from skinclf.errors import ConfigError, DataError

SPLITS: tuple[str, ...] = ("train", "val", "test", "calib")
OOD_STRATUM = "ood"
UNLABELLED_STRATUM = "unlabelled"
_TRIES = 8


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == ""


def strata(table: pd.DataFrame) -> pd.Series:
    """Each row's stratum: its label, ``"ood"`` for semantic OOD rows, ``"unlabelled"``."""
    labels = table["label"].map(lambda v: "" if _is_empty(v) else str(v))
    if "semantic_ood" in table.columns:
        ood = table["semantic_ood"].fillna(False).astype(bool)
    else:
        ood = pd.Series(False, index=table.index)
    out = labels.where(labels != "", UNLABELLED_STRATUM)
    return out.where(~ood, OOD_STRATUM).rename("stratum")


def merged_groups(table: pd.DataFrame, merge_pairs: pd.DataFrame | None = None) -> pd.Series:
    """Each row's group after joining the groups named together in ``merge_pairs``.

    ``merge_pairs`` has (at least) two columns, read as pairs of group values that are the same
    lesion/patient; joins are transitive (union-find). Values not in the table are ignored.
    Rows with an empty group get a group of their own (their ``image_id``).
    """
    groups = [
        f"image:{iid}" if _is_empty(g) else str(g)
        for g, iid in zip(table["group"], table["image_id"], strict=True)
    ]
    parent: dict[str, str] = {g: g for g in groups}

    def find(x: str) -> str:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    if merge_pairs is not None:
        if merge_pairs.shape[1] < 2:
            raise DataError(
                "The merge-duplicates file needs two columns (e.g. lesion_id_a,lesion_id_b), "
                f"found {list(merge_pairs.columns)}."
            )
        for a, b in merge_pairs.iloc[:, :2].itertuples(index=False):
            if _is_empty(a) or _is_empty(b):
                continue
            a, b = str(a), str(b)
            if a in parent and b in parent:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    return pd.Series([find(g) for g in groups], index=table.index, name="group")


def _check_fractions(val: float, test: float, calib: float) -> dict[str, float]:
    fractions = {"val": val, "test": test, "calib": calib}
    for name, f in fractions.items():
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"The {name} fraction must be in [0, 1), got {f}.")
    train = 1.0 - val - test - calib
    if train <= 0.0:
        raise ConfigError(
            f"val + test + calib = {val + test + calib:g} leaves nothing for train; "
            "make the fractions sum to less than 1."
        )
    return {"train": train, **{k: v for k, v in fractions.items() if v > 0}}


def _check_table(table: pd.DataFrame) -> None:
    missing = [c for c in ("image_id", "label", "group") if c not in table.columns]
    if missing:
        raise DataError(f"The dataset table lacks the column(s) {missing}.")
    if table.empty:
        raise DataError("The dataset table has no rows to split.")
    dup = table["image_id"][table["image_id"].duplicated()]
    if not dup.empty:
        raise DataError(
            f"image_id {dup.iloc[0]!r} appears more than once in the dataset table; "
            "every image needs a unique id."
        )


def split_dataset(
    table: pd.DataFrame,
    val: float = 0.15,
    test: float = 0.15,
    calib: float = 0.0,
    seed: int = 0,
    merge_pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Split ``table`` into the split file of DESIGN.md: columns ``image_id,split``.

    Stratified by class (see the module docstring for OOD/unlabelled rows), grouped by
    ``group`` (joined by ``merge_pairs``), deterministic for ``seed``; rows in table order.
    ``calib`` > 0 adds a ``calib`` split; train gets the rest.
    """
    _check_table(table)
    fractions = _check_fractions(val, test, calib)
    names = list(fractions)
    frac = np.array([fractions[n] for n in names])

    split = _assign_groups(table, names, frac, seed, merge_pairs)
    return pd.DataFrame({"image_id": table["image_id"].to_numpy(), "split": split})


def _assign_groups(
    table: pd.DataFrame,
    names: list[str],
    frac: np.ndarray,
    seed: int,
    merge_pairs: pd.DataFrame | None,
) -> np.ndarray:
    """Each row's part (a name of ``names``, fractions ``frac``): whole groups, stratified."""
    stratum = strata(table).to_numpy()
    group = merged_groups(table, merge_pairs).to_numpy()
    group_ids, group_idx = np.unique(group, return_inverse=True)
    if len(group_ids) < len(names):
        raise DataError(
            f"The table has {len(group_ids)} group(s), too few for the {len(names)} splits "
            f"{names}; add data or drop a split (set its fraction to 0)."
        )
    classes, class_idx = np.unique(stratum, return_inverse=True)

    # counts[g, c]: images of stratum c in group g.
    counts = np.zeros((len(group_ids), len(classes)), dtype=np.int64)
    np.add.at(counts, (group_idx, class_idx), 1)
    totals = counts.sum(axis=0).astype(float)
    target = frac[:, None] * totals[None, :]  # (splits, classes)

    rng = np.random.default_rng(seed)
    sizes = counts.sum(axis=1)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(_TRIES):  # a few random orders; keep the one closest to the class shares
        order = rng.permutation(len(group_ids))
        order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, random ties
        assignment, current = _assign_greedy(counts, order, target, totals)
        if (current.sum(axis=1) == 0).any():
            continue
        shares = current / current.sum(axis=1, keepdims=True)
        deviation = float(np.abs(shares - totals / totals.sum()).max())
        if best is None or deviation < best[0]:
            best = (deviation, assignment)
    if best is None:
        raise DataError(
            f"Could not give every split {names} at least one group ({len(group_ids)} groups); "
            "add data or drop a split (set its fraction to 0)."
        )
    assignment = best[1]

    return np.array(names, dtype=object)[assignment[group_idx]]


def fold_split(
    table: pd.DataFrame,
    folds: int = 5,
    calib: float = 0.0,
    seed: int = 0,
    merge_pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """K lesion-grouped, class-stratified folds: columns ``image_id,fold``, ``fold`` in
    ``0 .. folds-1``, or ``calib`` for a grouped calibration part (fraction ``calib``) that lies
    outside every fold. The same greedy assignment as `split_dataset` (equal fractions)."""
    if folds < 2:
        raise ConfigError(f"Cross-validation needs at least 2 folds, got {folds}.")
    if not 0.0 <= calib < 1.0:
        raise ConfigError(f"The calib fraction must be in [0, 1), got {calib}.")
    _check_table(table)
    names = [str(k) for k in range(folds)] + (["calib"] if calib > 0 else [])
    frac = np.array([(1.0 - calib) / folds] * folds + ([calib] if calib > 0 else []))
    assignment = _assign_groups(table, names, frac, seed, merge_pairs)
    return pd.DataFrame({"image_id": table["image_id"].to_numpy(), "fold": assignment})


def fold_split_file(folds: pd.DataFrame, k: int) -> pd.DataFrame:
    """The split file of fold ``k``: its held-out fold is ``val``, the other folds ``train``, the
    calibration part ``calib``."""
    fold = folds["fold"].astype(str)
    split = np.where(fold == "calib", "calib", np.where(fold == str(k), "val", "train"))
    return pd.DataFrame({"image_id": folds["image_id"].to_numpy(), "split": split})


def _assign_greedy(
    counts: np.ndarray, order: np.ndarray, target: np.ndarray, totals: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Give each group (in ``order``) to the split where it lowers the class-count error most."""
    current = np.zeros_like(target)
    weight = 1.0 / totals**2  # errors relative to each class's size, so rare classes count
    assignment = np.empty(len(counts), dtype=np.int64)
    for g in order:
        gc = counts[g].astype(float)
        # Increase of sum_c w_c (current - target)^2 if the group joins each split.
        cost = ((2 * (current - target) * gc + gc**2) * weight).sum(axis=1)
        # Break exact ties towards the split most below its total size target.
        size_gap = (current.sum(axis=1) - target.sum(axis=1)) / totals.sum()
        s = int(np.lexsort((size_gap, cost))[0])
        assignment[g] = s
        current[s] += gc
    return assignment, current


def split_class_counts(table: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Images per stratum (rows) and split (columns), plus an ``all`` column."""
    merged = _join(table, split)
    counts = pd.crosstab(merged["stratum"], merged["split"])
    order = [s for s in SPLITS if s in counts.columns]
    counts = counts[order]
    counts["all"] = counts.sum(axis=1)
    counts.columns.name = None
    counts.index.name = "class"
    return counts


def share_deviation(table: pd.DataFrame, split: pd.DataFrame) -> float:
    """Largest |share of a class in a split - its share in the whole|, in percentage points."""
    counts = split_class_counts(table, split)
    shares = counts / counts.sum(axis=0)
    dev = shares.drop(columns="all").sub(shares["all"], axis=0).abs()
    return float(dev.to_numpy().max() * 100.0)


def group_leaks(
    table: pd.DataFrame, split: pd.DataFrame, merge_pairs: pd.DataFrame | None = None
) -> list[str]:
    """Groups (after merging) whose images lie in more than one split; empty when clean."""
    merged = _join(table, split)
    merged["group"] = merged_groups(table, merge_pairs).to_numpy()
    n_splits = merged.groupby("group")["split"].nunique()
    return sorted(n_splits[n_splits > 1].index)


def _join(table: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    lookup = dict(zip(split["image_id"], split["split"], strict=True))
    out = pd.DataFrame({"image_id": table["image_id"].to_numpy()})
    out["stratum"] = strata(table).to_numpy()
    out["split"] = [lookup.get(i) for i in out["image_id"]]
    if out["split"].isna().any():
        missing = out.loc[out["split"].isna(), "image_id"].iloc[0]
        raise DataError(f"image_id {missing!r} of the dataset table has no split.")
    return out


def write_split(split: pd.DataFrame, path: Path | str) -> Path:
    """Write the split file (``image_id,split``) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    split[["image_id", "split"]].to_csv(path, index=False)
    return path


def _examples(values: Iterable[object], k: int = 3) -> str:
    values = list(values)
    shown = ", ".join(repr(str(v)) for v in values[:k])
    return shown + (f" and {len(values) - k} more" if len(values) > k else "")


def read_split(path: Path | str, table: pd.DataFrame) -> pd.DataFrame:
    """Read a split file and check it against ``table``; rows come back in table order.

    Raises DataError naming every problem found: not a CSV / missing columns, bad split values,
    duplicated image_id, image_id not in the table, images of the table not in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Split file {path} does not exist; create one with `skinclf data split`.")
    try:
        split = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # pandas ends it with "\n"
        raise DataError(f"Split file {path} is not a readable CSV ({reason}).") from None
    missing_cols = [c for c in ("image_id", "split") if c not in split.columns]
    if missing_cols:
        raise DataError(
            f"Split file {path} lacks the column(s) {missing_cols}; "
            "it needs the header `image_id,split`."
        )
    problems: list[str] = []
    bad = split[~split["split"].isin(SPLITS)]
    if not bad.empty:
        row = int(bad.index[0]) + 2  # 1-based, after the header
        problems.append(
            f"row {row} has split {bad['split'].iloc[0]!r} ({len(bad)} bad row(s) in all); "
            f"allowed values are {', '.join(SPLITS)}"
        )
    dup = split["image_id"][split["image_id"].duplicated()].unique()
    if len(dup):
        problems.append(f"image_id listed more than once: {_examples(dup)}")
    known = set(table["image_id"].astype(str))
    unknown = [i for i in split["image_id"].unique() if i not in known]
    if unknown:
        problems.append(f"image_id not in the dataset: {_examples(unknown)}")
    listed = set(split["image_id"])
    absent = [i for i in table["image_id"].astype(str) if i not in listed]
    if absent:
        problems.append(f"images of the dataset missing from the file: {_examples(absent)}")
    if problems:
        raise DataError(
            f"Split file {path} does not match the dataset: " + "; ".join(problems) + "."
        )
    lookup = dict(zip(split["image_id"], split["split"], strict=True))
    ids = table["image_id"].astype(str).to_numpy()
    return pd.DataFrame({"image_id": ids, "split": [lookup[i] for i in ids]})
