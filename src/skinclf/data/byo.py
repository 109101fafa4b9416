"""Bring your own data: one folder per class, or a CSV with `path,label[,group]`.

Labels must be class names (case-insensitive): akiec, bcc, bkl, df, mel, nv, vasc.
Folder: image_id = path relative to the root, group = image_id.
CSV: paths relative to the CSV's folder (or absolute); group = the `group` column, or the
image itself when there is none.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from skinclf.classes import CLASSES
from skinclf.data.formats import (
    ALLOWED_LABELS,
    IMAGE_EXTENSIONS,
    LoadResult,
    duplicate_problems,
    empty_to_missing,
    error,
    extra_image_problems,
    iter_image_files,
    label_problem,
    line_no,
    make_table,
    raise_for_problems,
    read_csv_file,
)

REQUIRED: tuple[str, ...] = ("path", "label")


def read_folder(root: Path) -> LoadResult:
    """Read a folder-per-class dataset (`root/<class>/**/image`), collecting every problem."""
    root = Path(root)
    result = LoadResult(make_table([], [], [], [], "folder"), "folder", root)
    if not root.is_dir():
        result.problems.append(error("not-a-folder", f"{root} is not a folder of class folders."))
        return result
    ids, paths, labels = [], [], []
    loose = [p for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    result.problems += extra_image_problems(loose, None)
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = list(iter_image_files(sub))
        if sub.name.lower() not in CLASSES:
            if images:
                result.problems.append(
                    error(
                        "unknown-label",
                        f"{sub}: folder name {sub.name!r} ({len(images)} images) is not a class; "
                        f"allowed folder names: {ALLOWED_LABELS}.",
                    )
                )
            continue
        for p in images:
            ids.append(p.relative_to(root).as_posix())
            paths.append(os.path.abspath(p))
            labels.append(sub.name.lower())
    if not ids and not result.errors:
        result.problems.append(
            error(
                "no-images",
                f"{root}: no images in class folders; expected {root}/<class>/*.jpg with "
                f"<class> one of {ALLOWED_LABELS}.",
            )
        )
    result.table = make_table(ids, paths, labels, ids, "folder")
    return result


def _find_csv(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    csvs = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".tsv"))
    if len(csvs) > 1:  # keep those that have the required columns
        usable = [p for p in csvs if read_csv_file(p, REQUIRED, "labels CSV")[0] is not None]
        return usable or csvs
    return csvs


def read_csv_labels(root: Path) -> LoadResult:
    """Read a `path,label[,group]` CSV (root = the CSV, or a folder holding exactly one)."""
    root = Path(root)
    result = LoadResult(make_table([], [], [], [], "csv"), "csv", root)
    files = _find_csv(root)
    if len(files) != 1:
        names = ", ".join(p.name for p in files) or "none"
        result.problems.append(
            error(
                "missing-metadata",
                f"{root}: expected one CSV with path,label[,group] columns, found {names}; give "
                "the CSV itself as the path.",
            )
        )
        return result
    meta = files[0]
    base = meta.parent
    df, problems = read_csv_file(meta, REQUIRED, "labels CSV")
    result.problems += problems
    if df is None:
        return result
    ids, paths, labels = [], [], []
    for i, (rel, raw_label) in enumerate(zip(df.path, df.label, strict=True)):
        label = raw_label.lower()
        if label not in CLASSES:
            result.problems.append(label_problem(meta, i, "label", raw_label))
        labels.append(label if label in CLASSES else "")
        if not rel:
            result.problems.append(error("missing-image", f"{meta} line {line_no(i)}: empty path."))
            ids.append("")
            paths.append("")
            continue
        path = Path(rel) if os.path.isabs(rel) else base / rel
        try:
            image_id = path.relative_to(base).as_posix()
        except ValueError:
            image_id = rel
        ids.append(image_id)
        if path.is_file():
            paths.append(os.path.abspath(path))
        else:
            paths.append("")
            result.problems.append(
                error("missing-image", f"{meta} line {line_no(i)}: image {rel!r} does not exist.")
            )
    result.problems += duplicate_problems(pd.Series(ids), meta, "path")
    result.problems += extra_image_problems(_unlisted_images(paths), meta)
    has_group = "group" in df.columns
    groups = [g or i for g, i in zip(df.group, ids, strict=True)] if has_group else ids
    own = empty_to_missing(df.drop(columns=[c for c in ("path", "label", "group") if c in df]))
    result.table = make_table(ids, paths, labels, groups, "csv", own=own)
    return result


def _unlisted_images(paths: list[str]) -> list[Path]:
    """Images in the folders of the listed images that the CSV does not list."""
    listed = {p for p in paths if p}
    folders = sorted({os.path.dirname(p) for p in listed})
    return [
        Path(folder) / name
        for folder in folders
        for name in sorted(os.listdir(folder))
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        and os.path.join(folder, name) not in listed
    ]


def load_folder(root: Path) -> pd.DataFrame:
    """The dataset table of a folder-per-class dataset; DataError listing the problems."""
    return raise_for_problems(read_folder(root))


def load_csv_labels(root: Path) -> pd.DataFrame:
    """The dataset table of a path,label[,group] CSV; DataError listing the problems."""
    return raise_for_problems(read_csv_labels(root))
